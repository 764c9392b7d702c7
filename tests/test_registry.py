"""Tuning, the champion gate, the alias audit log, rollback and reproduce, on one project whose registry grows."""
import json, subprocess
from pathlib import Path
import pandas as pd, pytest
from mlpipeline.config import load_config
from mlpipeline import registry
from mlpipeline.pipeline import STAGES
from conftest import write_project, client_for, mlpipeline, run_in_process


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A git-versioned project with a tuned champion (version 1)."
    p = write_project(tmp_path_factory.mktemp('registry')/'project', mlflow={'model_name': 'churn'})
    git = lambda *a: subprocess.run(['git', *a], cwd=p, check=True, capture_output=True)
    git('init', '-q')
    git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '--allow-empty', '-m', 'start')
    rd = run_in_process(p, 'tuning.method=bayes', 'tuning.trials=6')
    return p, rd


def test_a_tuned_run_registers_a_champion_with_full_lineage(project):
    p, rd = project
    client = client_for(p)
    mv = client.get_model_version_by_alias('churn', 'champion')
    assert str(mv.version) == '1'
    t = mv.tags
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=p, capture_output=True, text=True).stdout.strip()
    assert t['git_commit'] == head and t['git_dirty'] in ('true', 'false') and t['seed'] == '42' and t['task'] == 'binary'
    assert t['data_sha256'] == json.loads((rd/'manifest.json').read_text())['stages']['01_ingest']['data_sha256']
    assert t['run_folder'] == str(rd) and t['gate_passed'] == 'true' and {f'notebook.{s}' for s in STAGES} <= set(t)
    for uri in ('schema_uri', 'config_uri'): assert Path(__import__('mlflow').artifacts.download_artifacts(t[uri])).stat().st_size > 0
    tuning = json.loads((rd/'artifacts/tuning.json').read_text())
    assert tuning['method'] == 'bayes' and len(tuning['trials']) == 6 and tuning['best_params']
    train_run = json.loads((rd/'manifest.json').read_text())['stages']['04_train']['mlflow_run_id']
    trials = client.search_runs([client.get_run(train_run).info.experiment_id], f"tags.mlflow.parentRunId = '{train_run}'")
    assert len(trials) == 6 and all('max_depth' in r.data.params for r in trials)
    page = (rd/'artifacts/evaluation.html').read_text()
    # five evaluation plots, the learning curve, the contributions beeswarm and the top three features' dependence plots
    assert page.count('data:image/png;base64,') == 10 and 'Gate: passed' in page
    assert page.count('<figcaption>dependence_') == 3 and '<figcaption>contributions</figcaption>' in page
    arts = {a.path for a in client.list_artifacts(json.loads((rd/'manifest.json').read_text())['stages']['05_evaluate']['mlflow_run_id'], 'plots')}
    assert {'plots/roc.png', 'plots/calibration.png', 'plots/importance.png'} <= arts


def test_a_weakened_candidate_is_refused_and_the_champion_stays(project):
    p, _ = project
    rd = run_in_process(p, 'model.max_depth=1', 'model.n_estimators=2', 'model.early_stopping_rounds=null')
    gate = json.loads((rd/'artifacts/gate.json').read_text())
    assert not gate['passed'] and gate['comparison']['version'] == '1'  # not shown to be no worse: refused
    assert any(l.startswith('FAIL roc_auc against champion version 1') for l in gate['checks'])
    client = client_for(p)
    assert str(client.get_model_version_by_alias('churn', 'champion').version) == '1'
    assert str(client.get_model_version_by_alias('churn', 'challenger').version) == '2'
    assert client.get_model_version('churn', '2').tags['gate_passed'] == 'false'


def test_promote_and_rollback_are_in_the_audit_log(project):
    p, _ = project
    r = mlpipeline('promote', '2', '--why', 'trying the small model', cwd=p)
    assert r.returncode == 0 and 'champion 1 -> 2' in r.stdout, r.stderr
    r = mlpipeline('rollback', '--why', 'bad data', cwd=p)
    assert r.returncode == 0 and 'champion 2 -> 1' in r.stdout, r.stderr
    assert str(client_for(p).get_model_version_by_alias('churn', 'champion').version) == '1'
    log = registry.audit_log(load_config(project=p), 'champion')
    assert list(zip(log.from_version, log.to_version)) == [('2', '1'), ('1', '2'), ('', '1')]
    assert log.why[0] == 'rollback from version 2: bad data' and log.why[1] == 'trying the small model' and log.who.str.contains('@').all()
    assert mlpipeline('rollback', cwd=p).returncode == 2  # version 1 replaced no one
    assert mlpipeline('promote', '9', cwd=p).returncode == 2
    listing = mlpipeline('models', 'list', cwd=p).stdout.splitlines()
    assert listing[1].split()[:2] == ['2', 'challenger'] and listing[2].split()[:2] == ['1', 'champion']


@pytest.mark.slow  # 25-70 s on 2 cores: kept out of the everyday run; CI runs it
def test_reproduce_reports_a_match_and_refuses_a_changed_snapshot(project):
    p, rd = project
    r = mlpipeline('reproduce', 'champion', '--quiet', '--engine', 'warm', cwd=p)
    assert r.returncode == 0 and 'churn version 1 reproduces' in r.stdout, r.stderr
    out = json.loads(next((p/'runs').glob('*/artifacts/reproduce.json')).read_text())
    assert out['match'] and out['max_diff'] == 0.0 and out['rows'] == 60
    status = mlpipeline('status', Path(out['run_folder']).name, cwd=p).stdout.splitlines()
    assert 'reproduces churn/1' in status[0] and len(status) == 6  # the five stages it plans
    raw = rd/'data/raw.parquet'
    pd.read_parquet(raw).assign(tenure=lambda d: d.tenure + 1).to_parquet(raw)
    r = mlpipeline('reproduce', 'churn/1', cwd=p)
    assert r.returncode == 2 and 'has changed since version 1 was trained' in r.stderr


def test_a_champion_promoted_while_a_run_evaluates_is_not_silently_replaced(tmp_path):
    "Two runs of one project: the slower one's gate was judged with no champion, and must not promote over the faster one."
    from mlpipeline import ingest, validate, features, train, evaluate, registry as reg
    from mlpipeline.runfolder import create_run
    p = write_project(tmp_path/'p', mlflow={'model_name': 'race'})
    slow = create_run(load_config(project=p))
    for stage in (ingest.run_ingest, validate.run_validate, features.run_features, train.run_train, evaluate.run_evaluate): stage(slow)
    assert json.loads((slow/'artifacts/gate.json').read_text())['champion_version'] is None
    run_in_process(p)  # the fast run: version 1, champion
    out = reg.run_register(slow)
    assert out['version'] == 2 and out['aliases'] == ['challenger'] and not out['gate_passed']
    assert any('the champion moved since evaluation' in c for c in out['gate'])
    assert str(client_for(p).get_model_version_by_alias('race', 'champion').version) == '1'


def test_a_candidate_of_another_task_is_not_compared_and_not_promoted(tmp_path):
    p = write_project(tmp_path/'p', mlflow={'model_name': 'mixed'})
    run_in_process(p)  # a churn classifier: version 1, champion
    rd = run_in_process(p, 'target=monthly_charges')
    gate = json.loads((rd/'artifacts/gate.json').read_text())
    assert not gate['passed'] and any(c.startswith('FAIL champion version 1: the champion') for c in gate['checks'])  # cannot score, or not a regressor
    assert str(client_for(p).get_model_version_by_alias('mixed', 'champion').version) == '1'


@pytest.mark.slow
def test_a_retried_registration_registers_no_second_version(tmp_path):
    "Issue 22 item 11: a crash between registering and moving the aliases left an orphan, and the resume registered again."
    from conftest import only_run
    project = write_project(tmp_path/'project')
    assert mlpipeline('run', '--quiet', cwd=project).returncode == 0
    rd, client = only_run(project), client_for(project)
    for alias in ('champion', 'challenger'): client.delete_registered_model_alias('test-model', alias)  # as if killed there
    for _ in range(2):  # the retry, then a second one
        r = mlpipeline('run', '--quiet', '--resume', rd.name, '--only', registry.STAGE.name, '--force', cwd=project)
        assert r.returncode == 0, r.stderr
    versions = client_for(project).search_model_versions("name='test-model'")
    assert [str(v.version) for v in versions] == ['1'], [v.version for v in versions]
    assert {a: str(client.get_model_version_by_alias('test-model', a).version) for a in ('champion', 'challenger')} == {'champion': '1', 'challenger': '1'}
    assert json.loads((rd/'artifacts/registered.json').read_text())['aliases'] == ['challenger', 'champion']
