"""Cross-validation (04_train) and the fit diagnosis (05_evaluate), on the 400-row sample, in this process."""
import json, re, shutil
import numpy as np, pandas as pd, pytest
from mlpipeline.config import load_config, save_config
from mlpipeline.errors import ConfigError
from mlpipeline.features import split_frame, fit_transform
from mlpipeline.runfolder import create_run, read_manifest, new_run_id
from mlpipeline.pipeline import open_parent_run, close_parent_run
from mlpipeline import ingest, validate, features, train, evaluate
from conftest import write_project, client_for, SAMPLE


@pytest.fixture(scope='module')
def featured(tmp_path_factory):
    "A run of the sample through 01_ingest, 02_validate and 03_features, done once for this file."
    project = write_project(tmp_path_factory.mktemp('fit')/'p')
    cfg = load_config(project=project)
    rd = create_run(cfg)
    rid = open_parent_run(rd, cfg)
    for stage in (ingest.run_ingest, validate.run_validate, features.run_features): stage(rd)
    close_parent_run(rd, rid, 'FINISHED')
    return project, rd


def train_and_evaluate(featured, *overrides) -> tuple:
    "A copy of the featured run whose config takes `overrides` (keys only 04 and 05 read), through 04_train and 05_evaluate."
    project, base = featured
    rd = shutil.copytree(base, base.parent/new_run_id())
    save_config(load_config(project=project, overrides=list(overrides)), rd/'config.yaml')
    train.run_train(rd)
    evaluate.run_evaluate(rd)
    stages = read_manifest(rd)['stages']
    client = client_for(project)
    return rd, client, client.get_run(stages['04_train']['mlflow_run_id']), client.get_run(stages['05_evaluate']['mlflow_run_id'])


def numbers(line:str) -> list[float]:
    return [float(x) for x in re.findall(r'\d+\.\d+', line)]


def sample_parts(target='churn', task='binary'):
    parts = split_frame(pd.read_csv(SAMPLE), target, task)
    tf = fit_transform(parts['train'], target, task, drop=['rownames'])
    return tf, parts, pd.concat([parts['train'], parts['valid']], ignore_index=True)


def test_cv_reports_k_scores_in_cv_json_mlflow_and_the_report(featured):
    rd, client, run04, run05 = train_and_evaluate(featured, 'cv.folds=3')
    cv = json.loads((rd/'artifacts/cv.json').read_text())
    pooled = sum(read_manifest(rd)['stages']['03_features']['outputs'][k]['rows'] for k in ('train', 'valid'))
    assert (cv['kind'], cv['folds']) == ('stratified', 3) and set(cv['metrics']) == {'logloss', 'roc_auc'}
    assert sum(f['held_out'] for f in cv['fold_sizes']) == pooled and all(f['train'] + f['held_out'] == pooled for f in cv['fold_sizes'])
    for name, s in cv['metrics'].items():
        assert len(s['scores']) == 3 and len(set(s['scores'])) == 3
        assert s['mean'] == pytest.approx(np.mean(s['scores'])) and s['std'] == pytest.approx(np.std(s['scores'], ddof=1))
        assert run04.data.metrics[f'cv_{name}_mean'] == pytest.approx(s['mean']) and run04.data.metrics[f'cv_{name}_std'] == pytest.approx(s['std'])
        history = client.get_metric_history(run04.info.run_id, f'cv_{name}')
        history = sorted((h.step, h.value) for h in history)
        assert [h[0] for h in history] == [0, 1, 2] and [h[1] for h in history] == pytest.approx(s['scores'])
    assert 'cv' in read_manifest(rd)['stages']['04_train']['outputs']
    assert f"roc_auc {cv['metrics']['roc_auc']['mean']:.4f} &plusmn; {cv['metrics']['roc_auc']['std']:.4f}" in (rd/'artifacts/evaluation.html').read_text()


def test_stratified_folds_keep_class_shares_and_group_folds_keep_groups():
    tf, _, pool = sample_parts()
    kind, splits = train.cv_splits(pool, tf, 3, seed=7)
    share = (pool.churn == 'Yes').mean()
    assert kind == 'stratified' and len(splits) == 3
    for tr, te in splits:
        assert not set(tr) & set(te) and len(tr) + len(te) == len(pool)
        assert abs((pool.churn.iloc[te] == 'Yes').mean() - share) < 1 / len(te) + 1e-9  # at most one row off the pooled share
    pool['customer'] = pool.rownames % 40
    kind, splits = train.cv_splits(pool, tf, 4, group='customer')
    assert kind == 'group' and all(not set(pool.customer.iloc[tr]) & set(pool.customer.iloc[te]) for tr, te in splits)
    with pytest.raises(ConfigError, match='cv.folds'): train.cv_splits(pool, tf, 1)


def test_time_folds_keep_order():
    tf, _, pool = sample_parts()
    pool['signed_up'] = (pd.Timestamp('2022-01-01') + pd.to_timedelta(pool.rownames, unit='h')).astype(str)
    pool = pool.sample(frac=1, random_state=0).reset_index(drop=True)  # rows out of time order: the folds must sort them
    kind, splits = train.cv_splits(pool, tf, 3, time_column='signed_up')
    t = pd.to_datetime(pool.signed_up)
    assert kind == 'time' and len(splits) == 3
    for tr, te in splits: assert t.iloc[tr].max() < t.iloc[te].min()
    assert [len(tr) for tr, _ in splits] == sorted(len(tr) for tr, _ in splits)  # the past grows fold by fold


def test_cv_tune_needs_folds(featured):
    project, _ = featured
    tf, parts, pool = sample_parts()
    with pytest.raises(ConfigError, match='cv.tune'): train.train_cv(tf, pool, load_config(project=project, overrides=['cv.tune=true']))


def test_a_deliberately_overfit_model_is_diagnosed_overfitting(featured):
    rd, _, _, run05 = train_and_evaluate(featured, 'model={n_estimators: 300, max_depth: 12, min_child_weight: 0, learning_rate: 0.3, early_stopping_rounds: null}',
                                         )  # 280 training rows: few for trees this deep
    diag = json.loads((rd/'artifacts/diagnosis.json').read_text())
    line, m = run05.data.tags['diagnosis'], run05.data.metrics
    assert line == diag['line'] and line.startswith('overfitting: train roc_auc ')
    train_auc, valid_auc, gap, threshold = numbers(line)
    assert (train_auc, valid_auc, gap, threshold) == (round(m['train_roc_auc'], 4), round(m['valid_roc_auc'], 4), round(m['fit_gap'], 4), 0.1)
    assert train_auc == 1.0 and gap > 0.15
    assert 'Fit: overfitting' in (rd/'artifacts/evaluation.html').read_text()


def test_a_healthy_model_with_a_train_valid_gap_is_not_called_overfitting(featured):
    rd, _, _, run05 = train_and_evaluate(featured)  # the test project's own 40 trees of depth 3
    diag = json.loads((rd/'artifacts/diagnosis.json').read_text())
    assert diag['gap']['gap'] > 0.1 and diag['metrics']['test']['roc_auc'] > 0.75, diag['gap']  # a gap over overfit_gap
    assert diag['diagnosis'] == 'good fit' and diag['kept_gain']['kept'] >= 0.25, diag['line']
    assert ", but valid log_loss keeps " in diag['line'] and 'normal for boosted trees' in diag['line']
    assert 'Fit: good fit' in (rd/'artifacts/evaluation.html').read_text()


def test_a_stump_is_diagnosed_underfitting(featured):
    rd, _, _, run05 = train_and_evaluate(featured, 'model.n_estimators=1', 'model.max_depth=1')
    line, m = run05.data.tags['diagnosis'], run05.data.metrics
    assert line.startswith('underfitting: test log_loss ') and 'of baseline <' in line
    test_loss, base_loss, gain, margin = numbers(line)
    assert (test_loss, base_loss, gain, margin) == (round(m['test_log_loss'], 4), round(m['baseline_log_loss'], 4), round(m['fit_improvement'], 4), 0.1)
    assert m['baseline_roc_auc'] == 0.5 and m['valid_roc_auc'] > 0.6  # it ranks rows, yet its probabilities barely move
    diag = json.loads((rd/'artifacts/diagnosis.json').read_text())
    assert set(diag['metrics']) == {'train', 'valid', 'test', 'baseline'} and diag['metrics']['test']['log_loss'] == m['test_log_loss']
    assert all(set(diag['metrics'][s]) == set(diag['metrics']['test']) for s in diag['metrics'])


def test_learning_curve_has_every_round_and_does_not_change_the_model():
    tf, parts, _ = sample_parts()
    dtrain, dvalid = train.dmatrix(tf, parts['train']), train.dmatrix(tf, parts['valid'])
    for model in ({'n_estimators': 25, 'max_depth': 4, 'nthread': 2}, {'n_estimators': 200, 'max_depth': 4, 'early_stopping_rounds': 5, 'nthread': 2}):
        history = {}
        plain, recorded = train.boost(tf, dtrain, dvalid, model), train.boost(tf, dtrain, dvalid, model, history=history)
        assert np.array_equal(train.predict(plain, tf, parts['test']), train.predict(recorded, tf, parts['test']))
        assert plain.attr('best_iteration') == recorded.attr('best_iteration') and plain.save_raw() == recorded.save_raw()
        curve = train.learning_curve(history, recorded)
        rounds = 25 if 'early_stopping_rounds' not in model else int(recorded.attr('best_iteration')) + 6
        assert curve['rounds'] == len(curve['train']) == len(curve['valid']) == rounds
        assert curve['valid'][curve['best_iteration']] == pytest.approx(float(recorded.attr('best_score')))
        assert curve['train'][-1] < curve['train'][0]


def test_a_run_keeps_its_learning_curve(featured):
    rd, _, run04, _ = train_and_evaluate(featured)
    curve = json.loads((rd/'artifacts/learning_curve.json').read_text())
    assert curve['rounds'] == len(curve['train']) and curve['best_iteration'] == run04.data.metrics['best_iteration']
    assert curve['valid'][curve['best_iteration']] == pytest.approx(run04.data.metrics['valid_logloss'])
    assert 'learning_curve' in read_manifest(rd)['stages']['04_train']['outputs'] and (rd/'artifacts/plots/learning_curve.png').exists()
