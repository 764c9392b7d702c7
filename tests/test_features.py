"""The fitted transform across processes, row by row against the batch, its new cleaning, text and selection steps, and the splits, on the test sample."""
import json, logging, subprocess, sys
import numpy as np, pandas as pd, pytest
from mlpipeline.features import fit_transform, split_frame, Transform, RowEncoder, codes_matrix, records_columns, fit_iterative, impute_iterative
from conftest import SAMPLE, write_project

WORDS = np.array('router bill refund slow outage price upgrade fibre speed happy angry moving competitor offer support'.split())


def rich_sample() -> pd.DataFrame:
    "The sample with a free-text column, a column missing in 80% of rows, a near copy, a city to map and holes in tenure."
    s, rng = pd.read_csv(SAMPLE), np.random.default_rng(0)
    return s.assign(notes=[None if i % 9 == 0 else ' '.join(rng.choice(WORDS, 8)) + f' ticket {i}' for i in range(len(s))],
                    mostly_missing=np.where(rng.random(len(s)) < 0.8, np.nan, rng.normal(size=len(s))),
                    charges_copy=s.monthly_charges * 1.0001 + 0.01, city=rng.choice(['NY', ' ny', 'New York', 'Boston', 'boston '], len(s)),
                    tenure=s.tenure.mask(rng.random(len(s)) < 0.15))


EVERY = {'max_missing_share': 0.5, 'impute': {'numeric': 'iterative', 'max_iter': 5, 'categorical': 'mode'}, 'outliers': {'method': 'log'},
         'normalise': {'strip': True, 'case': 'lower', 'mapping': {'NY': 'New York'}}, 'text': {'method': 'tfidf', 'max_features': 12},
         'aggregates': [{'by': 'contract', 'column': 'monthly_charges', 'stats': ['mean', 'count', 'std']}],
         'select': {'max_correlation': 0.95, 'mutual_info': True}}
OPTIONS = [{}, {'impute': {'numeric': 'median', 'categorical': 'mode'}, 'outliers': {'method': 'zscore'}, 'encoding': 'onehot',
                'scaling': 'standard', 'interactions': [['tenure', 'monthly_charges']]}, {'encoding': 'frequency', 'scaling': 'minmax'}, EVERY,
           {'outliers': {'method': 'winsorize', 'winsor': [0.05, 0.95]}, 'encoding': 'onehot', 'scaling': 'minmax', 'text': {'method': 'drop'},
            'normalise': {'strip': True, 'case': 'none', 'mapping': {'NY': 'New York', 'ny': 'New York'}}, 'impute': {'numeric': 'iterative', 'max_iter': 3},
            'aggregates': [{'by': 'senior_citizen', 'column': 'tenure', 'stats': ['median', 'max']}], 'select': {'max_correlation': 0.9}}]
IDS = ['defaults', 'onehot-standard', 'frequency-minmax', 'iterative-log-tfidf-aggregates-select', 'winsorize-onehot-textdrop']


@pytest.mark.parametrize('opts', OPTIONS, ids=IDS)
def test_transform_saved_in_one_process_gives_identical_output_in_another(tmp_path, opts):
    parts = split_frame(rich_sample(), 'churn', 'binary')
    tf = fit_transform(parts['train'], 'churn', 'binary', opts, drop=['rownames'])
    (tmp_path/'transform.json').write_text(tf.to_json())
    parts['test'].to_parquet(tmp_path/'test.parquet')
    code = (f"import pandas as pd; from pathlib import Path; from mlpipeline.features import Transform;"
            f"tf = Transform.from_json(Path('{tmp_path/'transform.json'}').read_text());"
            f"tf.apply(pd.read_parquet('{tmp_path/'test.parquet'}')).to_parquet('{tmp_path/'out.parquet'}')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path/'out.parquet'), tf.apply(parts['test']))


@pytest.mark.parametrize('opts', OPTIONS, ids=IDS)
def test_the_serving_fast_path_gives_the_batch_matrix_row_by_row(opts):
    parts = split_frame(rich_sample(), 'churn', 'binary')
    tf = Transform.from_json(fit_transform(parts['train'], 'churn', 'binary', opts, drop=['rownames']).to_json())
    test = pd.concat([parts['test'], parts['test'].head(2).assign(contract='Ten years', city=' NY', notes='a refund never seen', tenure=None)], ignore_index=True)
    records = json.loads(test.to_json(orient='records'))
    batch = codes_matrix(tf.apply(pd.DataFrame.from_records(records)))
    enc = RowEncoder(tf)
    assert enc.fast and batch.shape == (len(records), len(tf.outputs))
    np.testing.assert_array_equal(enc.matrix(records_columns(records, tf.inputs)), batch)
    for i, r in enumerate(records):
        np.testing.assert_array_equal(enc.matrix(records_columns([r], tf.inputs))[0], batch[i], err_msg=f'row {i}')


def test_iterative_imputation_replays_scikit_learns_fitted_imputer_on_the_training_data():
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    train = split_frame(rich_sample(), 'churn', 'binary')['train']
    tf = fit_transform(train, 'churn', 'binary', {'impute': {'numeric': 'iterative', 'max_iter': 5}, 'max_missing_share': 0.5}, drop=['rownames', 'charges_copy'])
    assert train.tenure.isna().sum() > 20 and tf.iterative['columns'] == tf.numeric and 'mostly_missing' not in tf.iterative['columns']
    want = IterativeImputer(max_iter=5, random_state=42).fit_transform(train[tf.numeric].astype('float64'))
    np.testing.assert_allclose(tf.apply(train)[tf.numeric].to_numpy(), want, rtol=1e-9)
    assert not np.allclose(want[:, tf.numeric.index('tenure')], train.tenure.fillna(train.tenure.mean()))  # not a plain mean fill
    spec = fit_iterative(train[tf.numeric].astype('float64'), tf.numeric, 5)
    np.testing.assert_array_equal(impute_iterative(train[tf.numeric].to_numpy('float64'), spec), tf.apply(train)[tf.numeric].to_numpy())


@pytest.mark.parametrize('encoding', ['native', 'onehot'])
def test_free_text_becomes_bounded_tfidf_columns_or_is_dropped_never_a_category(encoding, caplog):
    from sklearn.feature_extraction.text import TfidfVectorizer
    train = split_frame(rich_sample(), 'churn', 'binary')['train']
    tf = fit_transform(train, 'churn', 'binary', {'encoding': encoding, 'text': {'method': 'tfidf', 'max_features': 12}}, drop=['rownames'])
    cols = [c for c in tf.outputs if c.startswith('notes')]
    assert len(cols) == 12 and all(c.startswith('notes_tfidf_') for c in cols) and 'notes' not in tf.categories
    v = TfidfVectorizer(max_features=12).fit(train.notes.fillna(''))
    np.testing.assert_allclose(tf.apply(train)[[f'notes_tfidf_{t}' for t in v.get_feature_names_out()]].to_numpy(), v.transform(train.notes.fillna('')).toarray(), rtol=1e-12)
    with caplog.at_level(logging.WARNING, 'mlpipeline.features'):
        td = fit_transform(train, 'churn', 'binary', {'encoding': encoding}, drop=['rownames'])  # the default: detected, dropped
    assert td.dropped['notes']['step'] == 'text' and 'notes' not in td.inputs and not any(c.startswith('notes') for c in td.outputs)
    assert "dropped 'notes': free text" in caplog.text
    short = train.assign(notes=train.notes.str[:12])  # too short to be detected: declared instead
    assert 'notes' in fit_transform(short, 'churn', 'binary', drop=['rownames']).categories
    assert 'notes' in fit_transform(short, 'churn', 'binary', {'text': {'columns': ['notes']}}, drop=['rownames']).dropped


def test_drops_by_missing_share_correlation_and_mutual_information_are_recorded_and_logged(caplog):
    train = split_frame(rich_sample(), 'churn', 'binary')['train']
    with caplog.at_level(logging.WARNING, 'mlpipeline.features'):
        tf = fit_transform(train.assign(flat=1.0), 'churn', 'binary',
                           {'max_missing_share': 0.5, 'select': {'max_correlation': 0.95, 'mutual_info': True}}, drop=['rownames'])
    d = tf.dropped
    assert d['mostly_missing']['step'] == 'missing_share' and d['mostly_missing']['value'] == pytest.approx(train.mostly_missing.isna().mean(), abs=1e-6) and 'mostly_missing' not in tf.inputs
    assert d['charges_copy'] | {'value': 1} == {'step': 'correlation', 'value': 1, 'with': 'monthly_charges', 'reason': d['charges_copy']['reason']}
    assert d['charges_copy']['value'] > 0.999 and 'monthly_charges' in tf.outputs and 'charges_copy' not in tf.outputs
    mi = [c for c, v in d.items() if v['step'] == 'mutual_info']
    assert 'flat' in mi and not {'tenure', 'contract', 'monthly_charges'} & set(mi) and not set(mi) & set(tf.outputs)
    for c in d: assert f'dropped {c!r}' in caplog.text
    assert Transform.from_json(tf.to_json()).dropped == d
    # without the options nothing is dropped
    assert fit_transform(train, 'churn', 'binary', {'text': {'min_unique_share': None}}, drop=['rownames']).dropped == {}


def test_the_features_stage_logs_its_drops_to_mlflow(tmp_path):
    from mlpipeline.config import load_config
    from mlpipeline.runfolder import create_run, read_manifest
    from mlpipeline.pipeline import open_parent_run, close_parent_run
    from mlpipeline import ingest, validate, features
    from conftest import client_for
    rich_sample().drop(columns=['notes']).to_csv(tmp_path/'rich.csv', index=False)
    project = write_project(tmp_path/'p', data={'path': str(tmp_path/'rich.csv'), 'id_column': 'rownames'})
    cfg = load_config(project=project, overrides=['features.max_missing_share=0.5', 'features.select.max_correlation=0.95', 'leakage.enabled=false'])
    rd = create_run(cfg)
    rid = open_parent_run(rd, cfg)
    ingest.run_ingest(rd)
    validate.run_validate(rd)
    tf = features.run_features(rd)
    close_parent_run(rd, rid, 'FINISHED')
    assert read_manifest(rd)['stages']['03_features']['dropped'] == {'mostly_missing': 'missing_share', 'charges_copy': 'correlation'}
    run = client_for(project).get_run(read_manifest(rd)['stages']['03_features']['mlflow_run_id'])
    assert json.loads(run.data.params['features_dropped']) == {'mostly_missing': 'missing_share', 'charges_copy': 'correlation'}
    assert run.data.metrics['features_dropped'] == 2 and run.data.metrics['dropped_missing_share/mostly_missing'] == tf.dropped['mostly_missing']['value']
    assert json.loads((rd/'artifacts/transform.json').read_text())['dropped'] == tf.dropped


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


def test_iterative_imputation_without_numeric_values_imputes_nothing():
    sample = pd.read_csv(SAMPLE)
    cats = sample[['contract', 'payment_method', 'churn', 'rownames']].assign(empty=np.nan)  # one numeric column, all missing
    tf = fit_transform(cats, 'churn', 'binary', {'impute': {'numeric': 'iterative'}}, drop=['rownames'])
    assert tf.iterative == {} and tf.apply(cats).shape == (400, 3)
