"""Importing a stage's module and calling its functions gives what the notebook gives, for every task kind."""
import json
import pandas as pd, pytest
from mlpipeline.runfolder import read_manifest
from mlpipeline.pipeline import STAGES
from conftest import write_project, client_for, SAMPLE, run_in_process

def test_same_outputs_as_the_papermill_run(finished):
    project, nb_run, _ = finished
    rd = run_in_process(project)
    for name in ('data/raw.parquet', 'data/train.parquet', 'data/test.parquet', 'data/test_predictions.parquet'):
        pd.testing.assert_frame_equal(pd.read_parquet(rd/name), pd.read_parquet(nb_run/name), obj=name)
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith('latency')}
    assert strip(json.loads((rd/'artifacts/metrics.json').read_text())) == strip(json.loads((nb_run/'artifacts/metrics.json').read_text()))
    assert (rd/'artifacts/transform.json').read_text() == (nb_run/'artifacts/transform.json').read_text()


@pytest.mark.parametrize('target, task, metric', [('contract', 'multiclass', 'f1'), ('monthly_charges', 'regression', 'r2')])
def test_multiclass_and_regression_run_through_every_stage(tmp_path, target, task, metric):
    rd = run_in_process(write_project(tmp_path/'p', target=target), f'mlflow.model_name={task}-model')
    m = read_manifest(rd)
    assert all(m['stages'][s]['status'] == 'complete' for s in STAGES) and m['stages']['03_features']['task'] == task
    metrics = json.loads((rd/'artifacts/metrics.json').read_text())
    assert metrics[metric] > 0.5, metrics
    serve = json.loads((rd/'artifacts/serve_check.json').read_text())
    assert serve['max_diff'] <= 1e-6 and serve['rows'] == 20
    mv = client_for(tmp_path/'p').get_model_version_by_alias(f'{task}-model', 'champion')
    assert mv.tags['task'] == task


def test_a_time_split_with_every_feature_option_runs_through_every_stage(tmp_path):
    sample = pd.read_csv(SAMPLE)
    sample['signed_up'] = (pd.Timestamp('2022-01-01') + pd.to_timedelta(sample.rownames, unit='h')).astype(str)
    sample.to_csv(tmp_path/'timed.csv', index=False)
    rd = run_in_process(write_project(tmp_path/'p', data={'path': str(tmp_path/'timed.csv'), 'id_column': 'rownames', 'time_column': 'signed_up'}),
                        'features.impute={numeric: median, categorical: mode, ffill: true}', 'features.outliers.method=iqr',
                        'features.encoding=onehot', 'features.scaling=standard', 'features.interactions=[[tenure, monthly_charges]]')
    tf = json.loads((rd/'artifacts/transform.json').read_text())
    assert 'signed_up_month' in tf['outputs'] and 'tenure*monthly_charges' in tf['outputs'] and tf['ffill']
    t = {k: pd.to_datetime(pd.read_parquet(rd/f'data/{k}.parquet').signed_up) for k in ('train', 'test')}
    assert t['train'].max() < t['test'].min()
    assert json.loads((rd/'artifacts/serve_check.json').read_text())['max_diff'] <= 1e-6
