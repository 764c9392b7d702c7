"""The fitted transform across processes, and the splits, on the test sample."""
import json, subprocess, sys
import numpy as np, pandas as pd, pytest
from mlpipeline.features import fit_transform, split_frame, Transform
from conftest import SAMPLE

OPTIONS = [{}, {'impute': {'numeric': 'median', 'categorical': 'mode'}, 'outliers': {'method': 'zscore'}, 'encoding': 'onehot',
                'scaling': 'standard', 'interactions': [['tenure', 'monthly_charges']]}, {'encoding': 'frequency', 'scaling': 'minmax'}]


@pytest.mark.parametrize('opts', OPTIONS, ids=['defaults', 'onehot-standard', 'frequency-minmax'])
def test_transform_saved_in_one_process_gives_identical_output_in_another(tmp_path, opts):
    sample = pd.read_csv(SAMPLE)
    parts = split_frame(sample, 'churn', 'binary')
    tf = fit_transform(parts['train'], 'churn', 'binary', opts, drop=['rownames'])
    (tmp_path/'transform.json').write_text(tf.to_json())
    parts['test'].to_parquet(tmp_path/'test.parquet')
    code = (f"import pandas as pd; from pathlib import Path; from mlpipeline.features import Transform;"
            f"tf = Transform.from_json(Path('{tmp_path/'transform.json'}').read_text());"
            f"tf.apply(pd.read_parquet('{tmp_path/'test.parquet'}')).to_parquet('{tmp_path/'out.parquet'}')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path/'out.parquet'), tf.apply(parts['test']))


def test_splits_never_share_a_row_and_are_seeded():
    sample = pd.read_csv(SAMPLE)
    for task, target in (('binary', 'churn'), ('regression', 'monthly_charges')):
        a, b = split_frame(sample, target, task, seed=3), split_frame(sample, target, task, seed=3)
        ids = [set(a[k].rownames) for k in ('train', 'valid', 'test')]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and sum(map(len, ids)) == 400
        for k in a: pd.testing.assert_frame_equal(a[k], b[k])
    assert set(split_frame(sample, 'churn', 'binary', seed=4)['test'].rownames) != ids[2]


def test_time_split_puts_every_test_timestamp_after_every_training_one():
    sample = pd.read_csv(SAMPLE)
    sample['signup'] = (pd.Timestamp('2023-01-01') + pd.to_timedelta(sample.rownames % 53, unit='h') * 24).astype(str)  # ties
    parts = split_frame(sample, 'churn', 'binary', time_column='signup')
    t = {k: pd.to_datetime(v.signup) for k, v in parts.items()}
    assert t['train'].max() < t['valid'].min() and t['valid'].max() < t['test'].min()
    assert sum(map(len, parts.values())) == 400 and min(map(len, parts.values())) > 30
