"""Leakage that protects the champion (issue 21), through the real CLI: a near-certain leak keeps the version from
becoming champion unless accepted, a strong honest feature is no leak, and columns declared as recorded after the
outcome are left out of the model and kept in its lineage."""
import json
import numpy as np, pandas as pd, pytest
from conftest import mlpipeline, write_project, client_for, SAMPLE

FAST = ['-p', 'tuning.method=none', '-p', 'cv.folds=0']


def table(n=800, seed=0) -> tuple[pd.DataFrame, np.random.Generator]:
    "Three numeric features and a region, with an id."
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'id': np.arange(n) + 1000, 'x1': rng.standard_normal(n), 'x2': rng.standard_normal(n),
                         'x3': rng.standard_normal(n), 'region': rng.choice(['north', 'south', 'east', 'west'], n)}), rng


def leaky(n=800, seed=0) -> pd.DataFrame:
    "A modest target (x1 and x2 plus noise) and `sub_grade`, whose categories each map to one target value."
    d, rng = table(n, seed)
    y = (d.x1 + 0.5 * d.x2 + 1.2 * rng.standard_normal(n)) > 0
    grade = np.where(y, rng.choice(['A1', 'A2', 'A3'], n), rng.choice(['B1', 'B2', 'B3'], n))
    return d.assign(sub_grade=grade, defaulted=np.where(y, 'yes', 'no'))


def honest(n=800, seed=0) -> pd.DataFrame:
    "A target that x1 decides with a little noise: a strong, genuine feature beside weak ones."
    d, rng = table(n, seed)
    y = (d.x1 + 0.15 * d.x2 + 0.2 * rng.standard_normal(n)) > 0
    return d.assign(defaulted=np.where(y, 'yes', 'no'))


def project_on(tmp_path, df: pd.DataFrame):
    path = tmp_path/'table.csv'
    df.to_csv(path, index=False)
    return write_project(tmp_path/'project', data={'path': str(path), 'id_column': 'id'}, target='defaulted')


def run(project, *params):
    r = mlpipeline('run', '--quiet', '--engine', 'warm', *FAST, *[x for p in params for x in ('-p', p)], cwd=project)
    assert r.returncode == 0, r.stderr
    return r


def aliases(project) -> dict:
    "alias -> version of the test model."
    return {a: str(v) for a, v in client_for(project).get_registered_model('test-model').aliases.items()}


def leakage_of(project) -> dict:
    rd = max(p for p in (project/'runs').iterdir() if p.is_dir())
    return json.loads((rd/'artifacts/leakage.json').read_text())


@pytest.mark.slow  # whole CLI runs: a minute or more each
def test_a_near_certain_leak_is_registered_but_never_champion_unless_accepted(tmp_path):
    project = project_on(tmp_path, leaky())
    r = run(project)
    assert aliases(project) == {'challenger': '1'}  # registered, not champion
    out = r.stdout.splitlines()
    assert any(l.startswith("leakage: column 'sub_grade' predicts the target almost by itself") and 'features.drop: [sub_grade]' in l
               and 'leakage.action: warn' in l for l in out), r.stdout
    assert out[-1].startswith("champion: not version 1, registered as challenger only: leakage: column 'sub_grade' is a near-certain leak"), r.stdout
    leak = leakage_of(project)
    assert leak['leaks'] == ['sub_grade'] and leak['single_feature']['sub_grade'] == 1.0 and leak['other_features'] < 0.85, leak
    assert sorted(m['target'] for m in leak['mapping_tables']['sub_grade']) == ['no'] * 3 + ['yes'] * 3, leak['mapping_tables']
    rd = max(p for p in (project/'runs').iterdir() if p.is_dir())
    page = (rd/'artifacts/leakage.html').read_text()
    assert '<td>sub_grade</td><td>single_feature_leak</td>' in page and '<td>not champion</td>' in page and 'Mapping of sub_grade' in page
    assert client_for(project).get_model_version('test-model', '1').tags['leakage.leaks'] == 'sub_grade'
    r = run(project, 'leakage.action=warn')
    assert aliases(project) == {'challenger': '2', 'champion': '2'}
    assert r.stdout.splitlines()[-1] == 'champion: version 2 is the champion', r.stdout


@pytest.mark.slow  # whole CLI runs: a minute or more each
def test_a_strong_honest_feature_is_no_leak_and_its_model_becomes_champion(tmp_path):
    project = project_on(tmp_path, honest())
    r = run(project)
    leak = leakage_of(project)
    assert {v['rule'] for v in leak['violations']} <= {'close_to_model'} and leak['leaks'] == [], leak['violations']
    assert 0.95 < leak['single_feature']['x1'] < 0.99 and leak['single_feature']['x1'] < leak['all_features'], leak
    assert aliases(project) == {'challenger': '1', 'champion': '1'}
    assert r.stdout.splitlines()[-1] == 'champion: version 1 is the champion', r.stdout


@pytest.mark.slow  # whole CLI runs: a minute or more each
def test_columns_recorded_after_the_outcome_are_dropped_and_kept_in_the_lineage(tmp_path):
    import mlflow
    project = write_project(tmp_path/'project')
    run(project, 'leakage.after_outcome=[total_charges]')
    client = client_for(project)
    mv = client.get_model_version('test-model', '1')
    assert json.loads(mv.tags['leakage.after_outcome']) == ['total_charges']
    inputs = mlflow.models.get_model_info('models:/test-model/1').signature.inputs.input_names()
    assert 'total_charges' not in inputs and 'monthly_charges' in inputs, inputs
    assert client.get_run(mv.run_id).data.params.get('leakage.after_outcome') is None  # logged by 03_features' own run
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="params.`leakage.after_outcome` = '[\"total_charges\"]'")
    assert len(runs) == 1, runs
