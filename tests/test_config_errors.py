"""Config mistakes are refused with exit 2, naming the key and the fix, before any stage or MLflow run exists."""
import time
import pytest
from conftest import write_project, mlpipeline

CASES = [
    (['-p', 'target=churned'], 'target', "no column 'churned'"),
    (['-p', 'validation.groups=[senior, female]'], 'validation.groups', "no column 'senior'"),
    (['-p', 'features.drop=[plan]'], 'features.drop', "no column 'plan'"),
    (['-p', 'target=monthly_charges', '-p', 'gate.thresholds={roc_auc: 0.8}'], 'gate.thresholds.roc_auc', 'not a regression metric'),
    (['-p', 'task=binary', '-p', 'target=contract'], 'task', 'binary, but the target'),
    (['-p', 'model.max_depth=deep'], 'model.max_depth', "'deep' is not a number"),
    (['-p', 'validation.groups=female'], 'validation.groups', 'is not a list'),
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
    plain = mlpipeline('config', '--show', cwd=project)  # as the README prints it
    assert plain.returncode == 0 and 'seed = 42  # default' in plain.stdout.splitlines(), plain.stderr
    ok = mlpipeline('config', cwd=project)
    assert ok.returncode == 0 and ok.stdout.startswith('config ok'), ok.stderr
    bad = mlpipeline('config', '-p', 'target=nope', cwd=project)
    assert bad.returncode == 2 and "config key 'target': no column 'nope'" in bad.stderr
