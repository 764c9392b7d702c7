"""The feature store (Feast, in its own environment): point-in-time training sets, a run from them, a repository
published from a run, predictions by entity id, and the online/offline consistency check."""
import json, shutil
from pathlib import Path
import pandas as pd
import pytest, yaml
from conftest import SAMPLE, write_project, mlpipeline, only_run, client_for, run_in_process
from test_serve import Server, SERVE
from test_sources import redis_server  # noqa: F401 (the fixture)
from mlpipeline.feature_store import (FEAST_VERSION, make_feast_venv, write_repo, apply_repo, historical_features,
                                      training_set)

T0, T_ASK, T_LATER = (pd.Timestamp(t, tz='UTC') for t in ('2026-01-01', '2026-02-01', '2026-03-01'))
CHANGED = 5  # entities whose monthly_charges change at T_LATER (to 9999): a value no row asked before must see


@pytest.fixture(scope='session')
def feast_python():
    "The Feast environment, made once and kept between sessions (keyed by the pinned version)."
    return make_feast_venv(Path.home()/'.cache/mlpipeline'/f'feast-venv-{FEAST_VERSION}')


def sample_features() -> pd.DataFrame:
    "The sample's features as of T0, and a later value of monthly_charges for the first CHANGED customers."
    now = pd.read_csv(SAMPLE).drop(columns=['churn']).assign(event_timestamp=T0)
    later = now.head(CHANGED).assign(monthly_charges=9999.0, event_timestamp=T_LATER)
    return pd.concat([now, later], ignore_index=True)


@pytest.fixture(scope='module')
def repo(tmp_path_factory, feast_python):
    "An embedded Feast repository (file offline store, SQLite online store) of the sample, applied and materialized."
    folder = tmp_path_factory.mktemp('feast')/'features'
    repo = write_repo(folder, sample_features(), 'rownames', 'customers', 'churn_model')
    apply_repo(feast_python, repo, until=T_LATER + pd.Timedelta(days=1))
    return repo


def entities(at=T_ASK) -> pd.DataFrame:
    return pd.read_csv(SAMPLE)[['rownames', 'churn']].assign(event_timestamp=at)


def test_a_later_feature_value_never_leaks_into_an_earlier_row(repo, feast_python):
    ents = pd.concat([entities(), entities(T_LATER + pd.Timedelta(hours=1)).head(CHANGED)], ignore_index=True)
    got = historical_features(feast_python, repo, ents, {'service': 'churn_model'})
    assert len(got) == len(ents) and list(got.rownames) == list(ents.rownames)  # the entity frame's order is kept
    first = got.head(len(ents) - CHANGED)
    expected = pd.read_csv(SAMPLE).monthly_charges
    assert (first.monthly_charges.to_numpy() == expected.to_numpy()).all()  # asked at T_ASK: T0's values, never 9999
    assert (got.tail(CHANGED).monthly_charges == 9999.0).all()  # asked after T_LATER: the later value
    assert list(first.churn) == list(pd.read_csv(SAMPLE).churn)


def test_the_training_set_drops_the_event_time_unless_it_is_the_time_column(repo, feast_python):
    cfg = {'project': str(repo.parent), 'feature_store': {'repo': str(repo), 'python': str(feast_python),
           'timestamp_column': 'event_timestamp', 'features': ['customers:tenure', 'customers:contract']},
           'data': {'time_column': None}}
    got = training_set(cfg, entities().head(3))
    assert list(got.columns) == ['rownames', 'churn', 'tenure', 'contract']


def feast_project(folder: Path, repo: Path, python: Path, **fs) -> Path:
    folder.mkdir(parents=True)
    entities().to_csv(folder/'entities.csv', index=False)
    return write_project(folder, data={'source': 'feast', 'id_column': 'rownames'},
                         feature_store={'repo': str(repo), 'python': str(python), 'entities': 'entities.csv',
                                        'service': 'churn_model'} | fs)


@pytest.mark.slow  # a whole run through the CLI: 1.5-2 minutes on 2 shared cores
def test_a_run_from_the_feature_store_trains_a_champion(tmp_path, repo, feast_python):
    project = feast_project(tmp_path/'project', repo, feast_python)
    r = mlpipeline('run', '--quiet', cwd=project)
    assert r.returncode == 0, r.stderr
    rd = only_run(project)
    raw = pd.read_parquet(rd/'data/raw.parquet')
    assert len(raw) == 400 and 'event_timestamp' not in raw.columns and (raw.monthly_charges < 9999).all()
    version = yaml.safe_load((rd/'artifacts/data_version.json').read_text())
    assert version['source'].startswith(f'feast {repo} service churn_model (definitions ')
    assert client_for(project).get_model_version_by_alias('test-model', 'champion').version in (1, '1')


def test_a_feast_source_without_entities_is_a_config_error(tmp_path, repo, feast_python):
    project = feast_project(tmp_path/'project', repo, feast_python, entities=None)
    r = mlpipeline('run', '--quiet', cwd=project)
    assert r.returncode == 2, r.stderr
    assert 'feature_store.entities' in r.stderr and 'no entity frame' in r.stderr


@pytest.fixture(scope='module')
def published(tmp_path_factory, feast_python):
    "A champion trained on the sample (id column rownames), its run published to the project's Feast repository."
    from conftest import run_in_process
    project = write_project(tmp_path_factory.mktemp('publish')/'project', serve=SERVE | {'feature_store': True},
                            feature_store={'python': str(feast_python), 'repo': 'features', 'check_rows': 400})
    rd = run_in_process(project)
    r = mlpipeline('features', 'publish', '--run', rd.name, cwd=project)
    assert r.returncode == 0, r.stderr
    return project, rd, r


@pytest.mark.slow  # with the module's published champion: ~70 s in all on 2 cores
def test_publish_writes_a_repository_materializes_it_and_checks_it(published):
    project, rd, r = published
    repo = project/'features'
    assert {p.name for p in repo.iterdir()} >= {'feature_store.yaml', 'features.py', '.gitignore', 'data'}
    assert (repo/'.gitignore').read_text() == 'data/\n'  # tables, registry and online store are built, not kept
    assert "FeatureService(name='test_model'" in (repo/'features.py').read_text()
    view = pd.read_parquet(repo/'data/test_model_features.parquet')
    assert len(view) == 400 and 'churn' not in view.columns and view.rownames.is_unique
    assert f'published run {rd.name} to {repo}' in r.stdout
    assert 'checked 400 entities' in r.stdout and ': 0 mismatch(es)' in r.stdout


def sample_records(n: int) -> list:
    return json.loads(pd.read_csv(SAMPLE).drop(columns=['churn']).head(n).to_json(orient='records'))


@pytest.mark.slow  # with the module's published champion: ~70 s in all on 2 cores
def test_predict_by_entity_id_matches_the_full_record_and_an_unknown_id_is_404(published):
    project, rd, _ = published
    srv = Server(project)
    try:
        full = sample_records(3)
        ids = [{'rownames': r['rownames']} for r in full]
        by_id = srv.http.post('/predict', json=ids, headers={'X-Request-ID': 'by-id'})
        assert by_id.status_code == 200, by_id.text
        whole = srv.http.post('/predict', json=full)
        assert by_id.json()['predictions'] == whole.json()['predictions']
        override = srv.http.post('/predict', json={'rownames': full[0]['rownames'], 'contract': 'Month-to-month'})
        assert override.json()['prediction'] != by_id.json()['predictions'][0]  # the record's own value wins
        unknown = srv.http.post('/predict', json=[{'rownames': full[0]['rownames']}, {'rownames': 987654}])
        assert unknown.status_code == 404 and 'rownames 987654' in unknown.json()['error'], unknown.text
    finally: srv.stop()
    got = pd.read_parquet(project/'capture/test-model')
    mine = got[got.request_id == 'by-id']
    assert mine.monthly_charges.tolist() == [r['monthly_charges'] for r in full]  # the capture holds what the model saw


@pytest.mark.slow  # with the module's published champion: ~70 s in all on 2 cores
def test_the_check_reports_a_planted_mismatch(published, tmp_path):
    project, rd, _ = published
    repo = shutil.copytree(project/'features', tmp_path/'features')
    table = pd.read_parquet(repo/'data/test_model_features.parquet')
    later = table.head(1).assign(monthly_charges=1.5, event_timestamp=pd.Timestamp.now(tz='UTC'))
    pd.concat([table, later]).to_parquet(repo/'data/test_model_features.parquet')  # offline changed, not materialized
    from mlpipeline.feature_store import check_run
    c = check_run(rd, repo)  # every entity: feature_store.check_rows is 400 here
    assert c['mismatches'] == [{'rownames': int(later.rownames.iloc[0]), 'feature': 'monthly_charges',
                                'online': float(table.monthly_charges.iloc[0]), 'offline': 1.5}]
    r = mlpipeline('features', 'check', '--run', rd.name, '--repo', str(repo), cwd=project)
    assert r.returncode == 1 and '1 mismatch(es)' in r.stdout and 'monthly_charges' in r.stdout, r.stdout + r.stderr



@pytest.mark.slow  # a Redis server, feast apply and materialize: half a minute
def test_the_redis_online_store_serves_the_same_values(tmp_path, feast_python, redis_server):
    from mlpipeline.feature_store import FeastProcess, online_features, missing_entities
    url, r = redis_server
    r.flushdb()
    repo = write_repo(tmp_path/'features', sample_features(), 'rownames', 'customers', 'churn_model', online=url)
    assert yaml.safe_load((repo/'feature_store.yaml').read_text())['online_store']['type'] == 'redis'
    apply_repo(feast_python, repo, until=T_LATER + pd.Timedelta(days=1))
    ids = pd.read_csv(SAMPLE).rownames.head(CHANGED + 2).tolist() + [987654]
    with FeastProcess(feast_python, repo) as fs: got = online_features(fs, ids, 'rownames', {'service': 'churn_model'})
    assert missing_entities(got, 'rownames') == [987654]
    assert got.monthly_charges.head(CHANGED).tolist() == [9999.0] * CHANGED  # the latest value of each entity
    unchanged = pd.read_csv(SAMPLE).monthly_charges.iloc[CHANGED:CHANGED + 2]
    assert got.monthly_charges.iloc[CHANGED:CHANGED + 2].tolist() == unchanged.tolist()
    assert r.dbsize() > 0  # the values are in Redis, not in a SQLite file
