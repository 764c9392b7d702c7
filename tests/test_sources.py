"""Redis Streams, Redis keys and GraphQL sources against real servers on 127.0.0.1: bounded reads, acknowledgement
after the snapshot, a kill between read and write, flattening, clear errors, and the same data version as the CSV."""
import dataclasses, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
from typing import Optional
import pandas as pd, pytest
from mlpipeline.config import load_config
from mlpipeline.errors import ConfigError, DataRefused, SourceError
from mlpipeline.ingest import load_data, data_version, run_ingest, STREAM_ID, KEY_COLUMN
from mlpipeline.runfolder import create_run, read_manifest
from conftest import SAMPLE, REPO, write_project

redis = pytest.importorskip('redis')


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module', autouse=True)
def _project(tmp_path_factory):
    "One project (and one MLflow store, slow to create) for the whole module; each run gets its own run folder."
    global PROJECT
    PROJECT = write_project(tmp_path_factory.mktemp('sources')/'p')


def cfg_for(tmp_path, *overrides):
    return load_config(project=PROJECT, overrides=list(overrides))


@pytest.fixture(scope='module')
def sample():
    return pd.read_csv(SAMPLE)


@pytest.fixture(scope='module')
def text_rows():
    "The sample's rows as the CSV text of each value (what a producer writes into Redis)."
    return pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).to_dict('records')


@pytest.fixture(scope='module')
def redis_server():
    exe = shutil.which('redis-server') or pytest.skip('redis-server is not installed (apt-get install redis-server)')
    d, port = tempfile.mkdtemp(), free_port()
    p = subprocess.Popen([exe, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        try: r.ping(); break
        except redis.ConnectionError: time.sleep(0.05)
    yield f'redis://127.0.0.1:{port}/0', r
    p.terminate()
    p.wait(10)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rds(redis_server):
    url, r = redis_server
    r.flushdb()
    return url, r


def add_messages(r, name, rows):
    p = r.pipeline()
    for row in rows: p.xadd(name, row)
    return p.execute()


def stream_cfg(tmp_path, url, name, **stream):
    spec = json.dumps({'name': name, **stream})
    return cfg_for(tmp_path, 'data.source=redis-stream', f'data.path={url}', f'data.stream={spec}')


def snapshot(rd): return pd.read_parquet(rd/'data/raw.parquet')


# ---- Redis Streams

def test_stream_bounded_reads_ack_after_the_snapshot(tmp_path, rds, text_rows, sample):
    url, r = rds
    ids = add_messages(r, 'churn', text_rows[:300])
    cfg = stream_cfg(tmp_path, url, 'churn', max_messages=200, max_seconds=0.5)
    first = create_run(cfg)
    run_ingest(first)
    a = snapshot(first)
    assert len(a) == 200 and list(a[STREAM_ID]) == ids[:200]
    assert r.xpending('churn', 'mlpipeline')['pending'] == 0  # acked once kept
    second = create_run(cfg)
    run_ingest(second)
    b = snapshot(second)
    assert list(b[STREAM_ID]) == ids[200:]  # the rest, nothing twice
    both = pd.concat([a, b]).drop(columns=STREAM_ID)
    assert both['rownames'].tolist() == sample['rownames'][:300].tolist()
    with pytest.raises(DataRefused, match='no_rows: .*the source returned no rows'):  # drained: a clear error, not an empty model
        load_data(stream_cfg(tmp_path, url, 'churn', max_seconds=0.2))


def test_stream_kill_between_read_and_write_loses_nothing(tmp_path, rds, text_rows):
    url, r = rds
    ids = add_messages(r, 'kill', text_rows * 10)  # 4000 messages: the write after the read takes a while
    cfg = stream_cfg(tmp_path, url, 'kill', max_messages=len(ids), max_seconds=30)  # bounded by the count: the whole stream
    rd = create_run(cfg)
    env = os.environ | {'PYTHONPATH': str(REPO)}
    child = subprocess.Popen([sys.executable, '-c', 'import sys; from mlpipeline.ingest import run_ingest; run_ingest(sys.argv[1])', str(rd)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if r.xpending('kill', 'mlpipeline')['pending'] == len(ids): break  # every message delivered, none acked
        except redis.ResponseError: pass  # the group does not exist yet
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert read_manifest(rd)['stages']['01_ingest']['status'] == 'running' and not (rd/'data/raw.parquet').exists()
    assert r.xpending('kill', 'mlpipeline')['pending'] == len(ids)
    run_ingest(rd)  # the same run folder, as `--resume` does
    df = snapshot(rd)
    assert len(df) == len(ids) and df[STREAM_ID].is_unique and list(df[STREAM_ID]) == ids
    assert read_manifest(rd)['stages']['01_ingest']['status'] == 'complete'
    assert r.xpending('kill', 'mlpipeline')['pending'] == 0


def test_stream_same_data_version_as_the_csv_and_config_errors(tmp_path, rds, text_rows, sample):
    url, r = rds
    add_messages(r, 'all', text_rows)
    df = load_data(stream_cfg(tmp_path, url, 'all', max_seconds=0.2))
    assert data_version(df.drop(columns=STREAM_ID)) == data_version(sample)
    with pytest.raises(ConfigError, match="data.source.*redis-stream or redis-keys"):
        load_data(cfg_for(tmp_path, f'data.path={url}'))
    with pytest.raises(ConfigError, match='data.stream.name'):
        load_data(cfg_for(tmp_path, 'data.source=redis-stream', f'data.path={url}'))
    t = time.monotonic()
    with pytest.raises(SourceError, match=r'cannot read data from redis://127.0.0.1:9/0.*the Redis server cannot be reached'):
        load_data(stream_cfg(tmp_path, 'redis://127.0.0.1:9/0', 'all'))
    assert time.monotonic() - t < 6


# ---- Redis keys

def test_keys_hashes_give_the_csv_table_and_validate(tmp_path, rds, text_rows, sample):
    url, r = rds
    p = r.pipeline()
    for i, row in enumerate(text_rows): p.hset(f'customer:{i}', mapping=row)
    p.set('customer:list', 'not a hash')
    p.execute()
    overrides = ['data.source=redis-keys', f'data.path={url}', 'data.keys=customer:[0-9]*']
    df = load_data(cfg_for(tmp_path, *overrides))
    assert df[KEY_COLUMN].tolist()[:3] == ['customer:0', 'customer:1', 'customer:2'] and len(df) == 400  # numbers as numbers
    assert data_version(df.drop(columns=KEY_COLUMN)) == data_version(sample)
    with pytest.raises(SourceError, match="key 'customer:list' is not a hash"):
        load_data(cfg_for(tmp_path, 'data.source=redis-keys', f'data.path={url}', 'data.keys=customer:*'))
    with pytest.raises(DataRefused, match='no_rows: .*the source returned no rows'):
        load_data(cfg_for(tmp_path, 'data.source=redis-keys', f'data.path={url}', 'data.keys=nobody:*'))
    from mlpipeline.validate import run_validate
    rd = create_run(cfg_for(tmp_path, *overrides, 'data.id_column=_key'))
    run_ingest(rd)
    run_validate(rd)
    assert read_manifest(rd)['stages']['02_validate']['status'] == 'complete'


def test_keys_json_documents_are_flattened(tmp_path, rds, sample):
    url, r = rds
    recs = json.loads(sample.to_json(orient='records'))
    for i, x in enumerate(recs[:50]):
        doc = {'id': x['rownames'], 'contract': {'kind': x['contract'], 'charges': {'monthly': x['monthly_charges'], 'total': x['total_charges']}},
               'services': [s for s in ('phone_service', 'online_security') if x[s] in (1, 'Yes')], 'churn': x['churn']}
        r.set(f'doc:{i}', json.dumps(doc))
    overrides = ['data.source=redis-keys', f'data.path={url}', 'data.keys=doc:*', 'data.value=json']
    df = load_data(cfg_for(tmp_path, *overrides))
    assert list(df.columns) == ['id', 'contract.kind', 'contract.charges.monthly', 'contract.charges.total', 'services', 'churn', KEY_COLUMN]
    assert df['id'].dtype == 'int64' and df['contract.charges.monthly'].dtype == 'float64'
    assert df['contract.charges.monthly'].tolist() == sample['monthly_charges'][:50].tolist()
    assert json.loads(df['services'][0]) == [s for s in ('phone_service', 'online_security') if sample.loc[0, s] in (1, 'Yes')]
    r.set('doc:50', json.dumps({'id': 'x-51'}))
    r.set('doc:51', '{broken')
    with pytest.raises(SourceError, match="key 'doc:51' does not hold JSON"):
        load_data(cfg_for(tmp_path, *overrides))
    r.delete('doc:51')
    with pytest.raises(SourceError, match=r"column 'id' mixes kinds of value \(50 rows number, 1 rows str\)"):
        load_data(cfg_for(tmp_path, *overrides))


# ---- GraphQL

def graphql_app(sample):
    "A strawberry schema with a Relay-style paged `customers` query over the sample, and a `broken` one."
    import strawberry
    from strawberry.asgi import GraphQL
    from strawberry.schema.config import StrawberryConfig
    kind = lambda t: int if pd.api.types.is_integer_dtype(t) else float if pd.api.types.is_float_dtype(t) else str
    Customer = strawberry.type(dataclasses.make_dataclass('Customer', [(c, Optional[kind(t)], None) for c, t in sample.dtypes.items()]))
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()} for rec in sample.to_dict('records')]

    @strawberry.type
    class PageInfo:
        hasNextPage: bool
        endCursor: Optional[str]

    @strawberry.type
    class Customers:
        nodes: list[Customer]
        pageInfo: PageInfo

    @strawberry.type
    class Query:
        @strawberry.field
        def customers(self, first: int = 100, after: Optional[str] = None) -> Customers:
            start = int(after or 0)
            page = rows[start:start + first]
            return Customers(nodes=[Customer(**x) for x in page], pageInfo=PageInfo(hasNextPage=start + len(page) < len(rows), endCursor=str(start + len(page))))
        @strawberry.field
        def broken(self, first: int = 100, after: Optional[str] = None) -> Customers:
            raise RuntimeError('the customers table is locked for maintenance')

    return GraphQL(strawberry.Schema(Query, config=StrawberryConfig(auto_camel_case=False)))


class FailFirst:
    "ASGI middleware answering the first POST with 503, to exercise the retries."
    def __init__(self, app): self.app, self.posts = app, []
    async def __call__(self, scope, receive, send):
        if scope['type'] == 'http' and scope['method'] == 'POST':
            self.posts.append(scope['path'])
            if len(self.posts) == 1:
                await send({'type': 'http.response.start', 'status': 503, 'headers': [(b'content-type', b'text/plain')]})
                return await send({'type': 'http.response.body', 'body': b'warming up'})
        await self.app(scope, receive, send)


@pytest.fixture(scope='module')
def graphql(sample):
    import uvicorn
    app = FailFirst(graphql_app(sample))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='error', lifespan='off'))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started: break
        time.sleep(0.02)
    yield f'http://127.0.0.1:{port}/graphql', app
    server.should_exit = True
    t.join(10)


def gql_cfg(tmp_path, url, field='customers', cols='', **g):
    query = f'query($first: Int!, $after: String) {{ {field}(first: $first, after: $after) {{ nodes {{ {cols} }} pageInfo {{ hasNextPage endCursor }} }} }}'
    spec = {'query': query, 'records': f'{field}.nodes', 'cursor': f'{field}.pageInfo', 'page_size': 150, 'timeout_s': 5, 'retries': 2} | g
    return cfg_for(tmp_path, 'data.source=graphql', f'data.path={url}', f'data.graphql={json.dumps(spec)}')


def test_graphql_pages_retries_and_same_data_version(tmp_path, graphql, sample):
    url, app = graphql
    df = load_data(gql_cfg(tmp_path, url, cols=' '.join(sample.columns)))
    assert app.posts == ['/graphql'] * 4  # a 503, retried, then three pages of 150
    assert data_version(df) == data_version(sample)


def test_graphql_errors_and_unreachable(tmp_path, graphql, sample):
    url, _ = graphql
    with pytest.raises(SourceError, match='the GraphQL query failed: the customers table is locked for maintenance'):
        load_data(gql_cfg(tmp_path, url, field='broken', cols='rownames'))
    with pytest.raises(SourceError, match='the GraphQL query failed: Cannot query field .nope.'):
        load_data(gql_cfg(tmp_path, url, cols='rownames nope'))
    t = time.monotonic()
    with pytest.raises(SourceError, match='cannot read data from http://127.0.0.1:9/graphql: request failed: ConnectionError'):
        load_data(gql_cfg(tmp_path, 'http://127.0.0.1:9/graphql', cols='rownames', timeout_s=1, retries=1))
    assert time.monotonic() - t < 5
