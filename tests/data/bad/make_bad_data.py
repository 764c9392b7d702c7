"""Write the bad-data corpus from the test sample: `python tests/data/bad/make_bad_data.py`.

Each file holds one real defect; `corpus.yaml` names the rule that must stop it and the stage that stops it.
`schema.yaml` is the curated reference schema the corpus is checked against (inferred once from the sample).
"""
from pathlib import Path
import numpy as np, pandas as pd
from mlpipeline.config import load_config
from mlpipeline.validate import infer_schema

here = Path(__file__).resolve().parent
s = pd.read_csv(here.parent/'telco_sample.csv')
rng = np.random.default_rng(0)
rows = lambda k: rng.choice(len(s), k, replace=False)

def csv(name, df): df.to_csv(here/name, index=False)
def with_values(col, idx, value, df=None):
    d = (s if df is None else df).copy().astype({col: object}); d.loc[idx, col] = value; return d

schema = infer_schema(s, load_config(project=here))
schema.source = 'curated: tests/data/bad/schema.yaml'
(here/'schema.yaml').write_text(schema.to_yaml())

(here/'header_only.csv').write_text(','.join(s.columns) + '\n')
(here/'zero_bytes.csv').write_text('')
(here/'malformed.csv').write_text(s.head(30).to_csv(index=False) + '1,No,1,0,0,0,5,1,No,DSL,No,No,No,No,No,No,One year,0,Mailed check,50.0,250.0,extra,fields\n')
s.to_csv(here/'semicolon_delimiter.csv', sep=';', index=False)
(here/'latin1_encoding.csv').write_bytes(with_values('payment_method', [0, 1], 'Chèque postal').to_csv(index=False).encode('latin-1'))
csv('single_class_target.csv', s.assign(churn='No'))
csv('missing_target_column.csv', s.drop(columns='churn'))
csv('missing_target_values.csv', with_values('churn', rows(12), None))
csv('new_target_class.csv', with_values('churn', rows(5), 'Maybe'))
csv('rare_target_class.csv', pd.concat([s[s.churn == 'No'], s[s.churn == 'Yes'].head(1)]))
csv('missing_feature_column.csv', s.drop(columns='contract'))
csv('text_in_numeric_column.csv', with_values('tenure', rows(6), 'twelve'))
csv('out_of_range_values.csv', with_values('monthly_charges', rows(4), -50.0))
csv('infinite_values.csv', with_values('total_charges', rows(3), np.inf))
csv('unseen_category.csv', with_values('contract', rows(8), 'Ten year'))
csv('too_many_missing.csv', with_values('total_charges', rows(160), None))
csv('all_missing_column.csv', s.assign(payment_method=None))
csv('duplicate_ids.csv', with_values('rownames', rows(5), int(s.rownames.iloc[0])))
csv('too_few_rows.csv', s.head(30))
csv('duplicate_rows.csv', pd.concat([s, s.head(25).assign(rownames=s.rownames.head(25) + 100000)]))
csv('constant_feature.csv', s.assign(phone_service=1))
csv('unexpected_column.csv', s.assign(customer_notes='called twice'))
s.assign(contract=s.contract.map({'Month-to-month': 0, 'One year': 1, 'Two year': 2})).to_parquet(here/'integer_codes_for_categories.parquet', index=False)
csv('boolean_words_in_numeric.csv', with_values('senior_citizen', rows(40), 'yes'))
# what got through before (issue 21): a numeric column turned true/false, the target's name twice, not tables at all
csv('true_false_in_numeric.csv', s.assign(senior_citizen=s.senior_citizen.astype(bool)))
(here/'duplicate_column_names.csv').write_text(s.assign(churn_again=s.churn).to_csv(index=False).replace('churn_again', 'churn', 1))
(here/'html_error_page.csv').write_text('<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n'
                                        '<body><h1>Bad Gateway</h1></body></html>\n')
(here/'binary_garbage.csv').write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
(here/'unclosed_quote.csv').write_text(s.head(50).to_csv(index=False) + '9999,"No,1,0\n' + s.iloc[50:60].to_csv(index=False, header=False))
print(f'{len(list(here.glob("*.csv")) + list(here.glob("*.parquet")))} files')
