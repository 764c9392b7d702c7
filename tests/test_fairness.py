"""Bias checks: group shares and class balance in the data (02_validate), per-group gaps and the fairness gate (05_evaluate)."""
import json
import numpy as np, pandas as pd, pytest, yaml
from mlpipeline.config import load_config
from mlpipeline.errors import ConfigError
from mlpipeline.runfolder import create_run, read_manifest
from mlpipeline.pipeline import open_parent_run, close_parent_run
from conftest import write_project, client_for, SAMPLE

GROUPS = 'validation.groups=[senior_citizen, female]'


def run_stages(project, *overrides, upto='evaluate'):
    "The stages up to `upto` called in this process; the run folder."
    from mlpipeline import ingest, validate, features, train, evaluate
    stages = [ingest.run_ingest, validate.run_validate, features.run_features, train.run_train, evaluate.run_evaluate]
    cfg = load_config(project=project, overrides=list(overrides))
    rd = create_run(cfg)
    rid = open_parent_run(rd, cfg)
    try:
        for f in stages[:[s.__module__.split('.')[-1] for s in stages].index(upto) + 1]: f(rd)
    finally: close_parent_run(rd, rid, 'FINISHED')
    return rd


@pytest.fixture(scope='module')
def skewed(tmp_path_factory):
    "The sample with a planted disparity: every senior citizen churns, so the model predicts churn for them all."
    d = tmp_path_factory.mktemp('skewed')
    df = pd.read_csv(SAMPLE)
    df.loc[df.senior_citizen == 1, 'churn'] = 'Yes'
    df.to_csv(d/'skewed.csv', index=False)
    project = write_project(d/'project', data={'path': str(d/'skewed.csv'), 'id_column': 'rownames'})
    return project, run_stages(project, GROUPS, 'validation.min_group_rows=5', 'gate.max_fairness_gap=0.3')


def test_a_planted_disparity_is_flagged_and_refused_by_the_gate(skewed):
    project, rd = skewed
    fair = json.loads((rd/'artifacts/fairness.json').read_text())
    senior = fair['columns']['senior_citizen']
    assert senior['groups']['1']['selection_rate'] > senior['groups']['0']['selection_rate'] + 0.5, senior
    assert senior['gaps']['demographic_parity_difference'] > 0.5 and fair['largest']['column'] == 'senior_citizen'
    assert fair['columns']['female']['gaps']['demographic_parity_difference'] < senior['gaps']['demographic_parity_difference']
    gate = json.loads((rd/'artifacts/gate.json').read_text())
    line = next(l for l in gate['checks'] if 'fairness' in l)
    assert not gate['passed'] and line.startswith(f"FAIL fairness: {fair['largest']['measure']} on 'senior_citizen' = {fair['largest']['gap']:.4f} (<= 0.3)")
    m = read_manifest(rd)['stages']['05_evaluate']
    assert 'fairness' in m['outputs'] and m['gate_passed'] is False
    page = (rd/'artifacts/evaluation.html').read_text()
    assert '<h2>Fairness</h2>' in page and '<h3>senior_citizen</h3>' in page and '<h2>Leakage</h2>' in page
    logged = client_for(project).get_run(m['mlflow_run_id']).data.metrics
    assert logged['fairness/senior_citizen/demographic_parity_difference'] == pytest.approx(senior['gaps']['demographic_parity_difference'])


def test_the_gate_passes_the_same_model_without_a_bound_or_with_a_loose_one(skewed):
    from mlpipeline.evaluate import run_gate, evaluate
    from mlpipeline.train import load_transform
    from mlpipeline.runfolder import open_run, mlflow_experiment, stage_output
    import xgboost as xgb
    project, rd = skewed
    _, cfg = open_run(rd)
    mlflow_experiment(cfg)
    tf, test = load_transform(rd), pd.read_parquet(rd/'data/test.parquet')
    metrics, proba = evaluate(xgb.Booster(model_file=stage_output(rd, '04_train', 'model')), tf, test)
    fair = json.loads((rd/'artifacts/fairness.json').read_text())
    for bound, passed in ((0.3, False), (None, True), (0.99, True)):
        cfg['gate']['max_fairness_gap'] = bound
        gate = run_gate(cfg, tf, test, metrics, proba, fair)
        assert gate['passed'] is passed, gate['checks']
        assert any(l.startswith('pass fairness') for l in gate['checks']) == (bound == 0.99)
    # a bound that cannot be measured (no group column, or no group with enough rows) does not pass
    cfg['gate']['max_fairness_gap'] = 0.99
    for missing in (None, fair | {'largest': None}):
        gate = run_gate(cfg, tf, test, metrics, proba, missing)
        assert gate['passed'] is False and any(l.startswith('FAIL fairness: gate.max_fairness_gap is set but no gap') for l in gate['checks']), gate['checks']


def test_an_under_represented_group_and_a_skewed_target_are_warned(tmp_path):
    df = pd.read_csv(SAMPLE)
    from mlpipeline.validate import infer_schema, bias_checks
    # the reference: the whole sample (65 of 400 rows senior citizens)
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=[GROUPS])
    ref = infer_schema(df, cfg)
    bias_checks(df, ref, ['senior_citizen', 'female'], cfg)
    (tmp_path/'p/schema.yaml').write_text(ref.to_yaml())
    # the new data: 8 senior citizens left, and far fewer churners (24% -> under 10%)
    base = df[df.senior_citizen == 0]
    new = pd.concat([base.drop(base[base.churn == 'Yes'].index[10:]), df[df.senior_citizen == 1].head(8)])
    n, yes = len(new), int((new.churn == 'Yes').sum())
    new.to_csv(tmp_path/'new.csv', index=False)
    project = write_project(tmp_path/'p', data={'path': str(tmp_path/'new.csv'), 'id_column': 'rownames'}, validation={'schema': 'schema.yaml'})
    rd = run_stages(project, GROUPS, upto='validate')
    report = {v['rule']: v for v in json.loads((rd/'artifacts/validation.json').read_text())}
    u = report['group_under_represented']
    assert (u['column'], u['severity'], u['rows']) == ('senior_citizen', 'warning', 8)
    assert u['observed'] == f"group '1': share {8 / n:.1%} (8 of {n} rows)" and "reference 16.2%: 65 of 400 rows" in u['expected']
    i = report['class_imbalance']
    assert i['column'] == 'churn' and f"'No' {n - yes} rows" in i['observed'] and f"'Yes' {yes} rows" in i['observed']
    m = read_manifest(rd)['stages']['02_validate']
    assert m['status'] == 'complete' and m['group_shares']['senior_citizen']['1'] == round(8 / n, 6)
    groups = json.loads((rd/'artifacts/groups.json').read_text())
    assert groups['reference']['senior_citizen']['counts'] == {'0': 335, '1': 65}
    assert '<h2>Classes and groups</h2>' in (rd/'artifacts/validation.html').read_text()
    logged = client_for(project).get_run(m['mlflow_run_id']).data.metrics
    assert logged['group_share/senior_citizen/1'] == pytest.approx(8 / n, abs=1e-6) and 'target_rate/female/0' in logged
    # the written schema keeps the reference's shares, so the next run compares against the same numbers
    assert yaml.safe_load((rd/'artifacts/schema.yaml').read_text())['groups']['senior_citizen']['counts']['1'] == 65


def test_severity_turns_the_bias_warnings_off_or_into_errors(tmp_path):
    from mlpipeline.validate import infer_schema, bias_checks, apply_severity, errors_in
    df = pd.read_csv(SAMPLE)  # 305 'No' / 95 'Yes': a ratio of 3.2
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=['validation.imbalance_ratio=3.0'])
    _, found = bias_checks(df, infer_schema(df, cfg), [], cfg)
    assert [v['rule'] for v in found] == ['class_imbalance']
    assert apply_severity([dict(v) for v in found], {'class_imbalance': 'off'}) == []
    assert errors_in(apply_severity([dict(v) for v in found], {'class_imbalance': 'error'}))[0]['rule'] == 'class_imbalance'


def test_a_missing_group_column_is_a_config_error_naming_it(tmp_path):
    from mlpipeline.validate import group_columns  # what run_validate calls first
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=['validation.groups=[senior_citizen, gender]'])
    with pytest.raises(ConfigError, match=r"validation.groups': no column 'gender' in the data \(400 rows; columns: rownames, churn"):
        group_columns(pd.read_csv(SAMPLE), cfg)
    from mlpipeline.fairness import fairness_report
    with pytest.raises(ConfigError, match="no column 'gender' in the 3 test rows"):
        fairness_report('binary', np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]), pd.DataFrame({'female': [0, 1, 1]}), ['gender'])
