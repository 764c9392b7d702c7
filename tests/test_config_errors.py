"""Config mistakes are refused with exit 2, naming the key and the fix, before any stage or MLflow run exists."""
import time
import pytest
from conftest import write_project, mlpipeline

CASES = [
    (['-p', 'target=churned'], 'target', "no column 'churned'"),
    (['-p', 'validation.groups=[senior, female]'], 'validation.groups', "no column 'senior'"),
    (['-p', 'features.dates=[signup]'], 'features.dates', "no column 'signup'"),
    (['-p', 'target=monthly_charges', '-p', 'gate.thresholds={roc_auc: 0.8}'], 'gate.thresholds.roc_auc', 'not a regression metric'),
    (['-p', 'task=binary', '-p', 'target=contract'], 'task', 'binary, but the target'),
    (['-p', 'model.max_depth=deep'], 'model.max_depth', "'deep' is not a number"),
    (['-p', 'features.drop=plan'], 'features.drop', 'is not a list'),
    (['-p', 'tuning.methd=grid'], 'tuning.methd', "did you mean 'tuning.method'"),
]


@pytest.mark.parametrize('args,key,words', CASES, ids=[c[1] + ':' + c[2][:12] for c in CASES])
def test_a_config_mistake_exits_2_before_any_stage(tmp_path, args, key, words):
    project = write_project(tmp_path/'project')
    t = time.perf_counter()
    r = mlpipeline('run', *args, cwd=project)
    took = time.perf_counter() - t
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert f"config key '{key}'" in r.stderr and words in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (project/'runs').exists() or not any((project/'runs').iterdir())  # no run folder
    assert not (project/'mlruns.db').exists()  # no MLflow run, parent or child
    assert took < 30, took  # before any stage: no kernel, no MLflow


def test_config_show_and_check(tmp_path):
    project = write_project(tmp_path/'project')
    r = mlpipeline('config', '--show', '-p', 'seed=7', cwd=project)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert 'seed = 7  # -p' in lines and 'target = churn  # pipeline.yaml' in lines and 'task = auto  # default' in lines, lines[:12]
    assert 'model.max_depth = 3  # pipeline.yaml' in lines and 'model.learning_rate = 0.1  # default' in lines
    plain = mlpipeline('config', '--show', cwd=project)  # as docs/using.md prints it
    assert plain.returncode == 0 and 'seed = 42  # default' in plain.stdout.splitlines(), plain.stderr
    ok = mlpipeline('config', cwd=project)
    assert ok.returncode == 0 and ok.stdout.startswith('config ok'), ok.stderr
    bad = mlpipeline('config', '-p', 'target=nope', cwd=project)
    assert bad.returncode == 2 and "config key 'target': no column 'nope'" in bad.stderr


@pytest.mark.parametrize('args', [['-p', 'gate.thresholds={pr_auc: 0.4, latency_row_p95_ms: 50}'], ['-p', 'model.learning_rate=1e-3'],
                                  ['-p', 'validation.groups=female'], ['-p', 'features.drop=[not_in_data]'], ['-p', 'gate.thresholds=null'],
                                  ['-p', 'target=senior_citizen', '-p', 'gate.metric=rmse']])
def test_what_the_pipeline_accepts_is_not_refused(tmp_path, args):
    "Configs the stages take: gate metrics beyond the task's headline ones, YAML 1.1 numbers, one group by name, ..."
    r = mlpipeline('config', *args, cwd=write_project(tmp_path/'project'))
    assert r.returncode == 0 and r.stdout.startswith('config ok'), r.stderr


def test_a_query_source_is_checked_once_ingestion_has_its_header(tmp_path):
    "A SQL source's columns are unknown before the query runs: a missing column is refused right after 01_ingest, exit 2."
    import sqlite3
    import pandas as pd
    from conftest import SAMPLE, only_run, manifest
    db = tmp_path/'source.db'
    with sqlite3.connect(db) as con: pd.read_csv(SAMPLE).to_sql('customers', con, index=False)
    data = {'path': f'sqlite:///{db}', 'query': 'select * from customers', 'id_column': 'rownames'}
    project = write_project(tmp_path/'project', data=data, validation={'groups': ['senior_citizen_x']})
    r = mlpipeline('run', cwd=project)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "config key 'validation.groups'" in r.stderr and "no column 'senior_citizen_x'" in r.stderr, r.stderr
    stages = manifest(only_run(project))['stages']
    assert stages['01_ingest']['status'] == 'complete' and all(s.get('status') != 'complete' for n, s in stages.items() if n != '01_ingest')
