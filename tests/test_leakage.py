"""Leakage checks through the real stages: planted leaks flagged and reported, id-like columns dropped, strict mode
refusing the run, shared rows counted, group-aware splits, and no false alarm on the demo data."""
import json
import numpy as np, pandas as pd, pytest
from conftest import SAMPLE, write_project, client_for, registered_models

STAGES = ['ingest.run_ingest', 'validate.run_validate', 'features.run_features', 'train.run_train', 'evaluate.run_evaluate']


def run_stages(project, *overrides, upto='features.run_features'):
    "The stages up to `upto`, called in this process on a new run folder; the run folder."
    import importlib
    from mlpipeline.config import load_config
    from mlpipeline.runfolder import create_run
    from mlpipeline.pipeline import open_parent_run, close_parent_run
    cfg = load_config(project=project, overrides=list(overrides))
    rd = create_run(cfg)
    rid = open_parent_run(rd, cfg)
    try:
        for f in STAGES[:STAGES.index(upto) + 1]:
            mod, fn = f.split('.')
            getattr(importlib.import_module(f'mlpipeline.{mod}'), fn)(rd)
    finally: close_parent_run(rd, rid, 'FINISHED')
    return rd


def planted(tmp_path, noise=0.003, seed=0):
    "The test sample with a noisy copy of the target, a category mapping one to one to it, and a row number."
    df = pd.read_csv(SAMPLE)
    rng = np.random.default_rng(seed)
    df = df.assign(leak=df.churn.eq('Yes').astype(int) ^ (rng.random(len(df)) < noise).astype(int),
                   tier=df.churn.map({'Yes': 'gold', 'No': 'basic'}), rowno=np.arange(len(df)))
    path = tmp_path/'planted.csv'
    df.to_csv(path, index=False)
    return write_project(tmp_path/'project', data={'path': str(path), 'id_column': 'rownames'})


def test_planted_leaks_are_flagged_reported_and_the_row_number_dropped(tmp_path):
    project = planted(tmp_path)
    rd = run_stages(project, upto='evaluate.run_evaluate')
    leak = json.loads((rd/'artifacts/leakage.json').read_text())
    found = {(v['column'], v['rule']) for v in leak['violations']}
    assert {('leak', 'single_feature_leak'), ('tier', 'single_feature_leak'), ('tier', 'target_mapping'), ('rowno', 'id_like_column')} <= found
    assert leak['single_feature']['leak'] >= 0.95 and leak['single_feature']['tier'] == 1.0 and leak['single_feature']['tenure'] < 0.9
    assert all(v['severity'] == 'warning' for v in leak['violations'])
    assert leak['leaks'] == ['tier', 'leak'] and leak['other_features'] < 0.9  # each copy left out of the other's reference
    gate = json.loads((rd/'artifacts/gate.json').read_text())
    assert not gate['passed'] and gate['checks'][-2].startswith("FAIL leakage: column 'tier' is a near-certain leak (alone 1.0000"), gate
    tf = json.loads((rd/'artifacts/transform.json').read_text())
    assert 'rowno' not in tf['inputs'] and 'leak' in tf['inputs']  # warned, not dropped
    assert json.loads((rd/'manifest.json').read_text())['stages']['03_features']['dropped_id_like'] == ['rowno']
    page = (rd/'artifacts/evaluation.html').read_text()
    assert '<h2>Leakage</h2>' in page and '<td>leak</td><td>single_feature_leak</td>' in page and '<td>dropped</td>' in page
    assert '<td>not champion</td>' in page and '<h3>Mapping of tier to the target' in page
    import mlflow
    client_for(project)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="metrics.leakage_findings > 0")
    assert len(runs) == 1 and runs['metrics.leakage_single_feature/leak'].iloc[0] >= 0.95


def test_strict_mode_refuses_the_run_before_training(tmp_path):
    from mlpipeline.errors import DataValidationError
    project = planted(tmp_path)
    with pytest.raises(DataValidationError) as e:
        run_stages(project, 'leakage.strict=true', upto='evaluate.run_evaluate')
    text = str(e.value.describe())
    assert "column 'leak': single_feature_leak" in text and "column 'tier': target_mapping" in text and e.value.exit_code == 3
    rd = next(p for p in (project/'runs').iterdir() if p.is_dir())
    m = json.loads((rd/'manifest.json').read_text())
    assert m['stages']['03_features']['status'] != 'complete' and '04_train' not in m['stages']
    assert (rd/'artifacts/leakage.html').exists() and not (rd/'artifacts/transform.json').exists()
    assert registered_models(project) == []


def test_columns_declared_after_the_outcome_are_dropped_not_refused(tmp_path):
    "Both names of the declaration (after_outcome, and after_prediction before it) drop the column; an unknown one is refused."
    from mlpipeline.errors import ConfigError
    project = write_project(tmp_path/'project')
    rd = run_stages(project, 'leakage.after_outcome=[total_charges]', 'leakage.after_prediction=[tenure]')
    assert not {'total_charges', 'tenure'} & set(json.loads((rd/'artifacts/transform.json').read_text())['inputs'])
    assert json.loads((rd/'manifest.json').read_text())['stages']['03_features']['after_outcome'] == ['total_charges', 'tenure']
    leak = json.loads((rd/'artifacts/leakage.json').read_text())
    assert leak['after_outcome'] == ['total_charges', 'tenure'] and 'total_charges' not in leak['single_feature']
    with pytest.raises(ConfigError, match="leakage.after_outcome.*'total_charge'"):
        run_stages(project, 'leakage.after_outcome=[total_charge]')


def test_rows_shared_across_splits_are_counted(tmp_path):
    df = pd.read_csv(SAMPLE)
    dup = pd.concat([df, df.head(100).assign(rownames=df.rownames.head(100) + 10_000)])  # the same customers under new ids
    path = tmp_path/'dup.csv'
    dup.to_csv(path, index=False)
    project = write_project(tmp_path/'project', data={'path': str(path), 'id_column': 'rownames'})
    rd = run_stages(project, 'features.drop_duplicates=false')
    leak = json.loads((rd/'artifacts/leakage.json').read_text())
    valid, test = (pd.read_parquet(rd/f'data/{k}.parquet') for k in ('valid', 'test'))
    train = pd.read_parquet(rd/'data/train.parquet')
    feats = [c for c in df if c not in ('rownames', 'churn')]
    also_in_train = lambda d: len(d[feats].merge(train[feats].drop_duplicates(), on=feats))  # pandas matches missing keys too
    assert leak['shared_rows'] == {'valid': also_in_train(valid), 'test': also_in_train(test)}
    assert leak['shared_rows']['test'] > 0 and any(v['rule'] == 'rows_shared_across_splits' for v in leak['violations'])


def test_group_split_keeps_an_entity_in_one_split(tmp_path):
    df = pd.read_csv(SAMPLE)
    dup = pd.concat([df, df.head(100).assign(rownames=df.rownames.head(100) + 10_000)]).assign(customer=lambda d: d.rownames % 10_000)
    path = tmp_path/'dup.csv'
    dup.to_csv(path, index=False)
    project = write_project(tmp_path/'project', data={'path': str(path), 'id_column': 'rownames'}, features={'drop': ['customer']})
    rd = run_stages(project, 'features.drop_duplicates=false', 'split.group=customer')
    parts = {k: set(pd.read_parquet(rd/f'data/{k}.parquet').customer) for k in ('train', 'valid', 'test')}
    assert not parts['train'] & parts['test'] and not parts['train'] & parts['valid'] and not parts['valid'] & parts['test']
    assert json.loads((rd/'artifacts/leakage.json').read_text())['shared_rows'] == {'valid': 0, 'test': 0}


def test_the_demo_data_raises_no_leakage_finding():
    from importlib.resources import files
    from mlpipeline.leakage import leakage_checks
    from mlpipeline.features import split_frame, drop_duplicates
    from mlpipeline.config import DEFAULTS
    df, _ = drop_duplicates(pd.read_parquet(files('mlpipeline')/'data/telco_churn.parquet'), 'rownames')
    parts = split_frame(df, 'churn', 'binary')
    found, facts = leakage_checks(df, parts, [c for c in df if c not in ('churn', 'rownames')], 'churn', 'binary', DEFAULTS['leakage'])
    assert found == [], found
    assert max(facts['single_feature'].values()) < 0.8 < facts['all_features']
