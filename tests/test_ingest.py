"""Ingestion from every source kind, through the config as a user writes it, and the data version."""
import http.server, json, os, shutil, sqlite3, threading, time
from pathlib import Path
import pandas as pd, pytest
from mlpipeline.config import load_config
from mlpipeline.errors import DataRefused, SourceError
from mlpipeline.ingest import load_data, data_version
from conftest import SAMPLE, write_project


def cfg_for(tmp_path, *overrides):
    return load_config(project=write_project(tmp_path/'p'), overrides=list(overrides))


@pytest.fixture(scope='module')
def sample():
    return pd.read_csv(SAMPLE)


def test_csv_parquet_and_folder_give_one_table(tmp_path, sample):
    (tmp_path/'parts').mkdir()
    sample.iloc[:100].to_csv(tmp_path/'parts/a.csv', index=False)
    sample.iloc[100:].to_parquet(tmp_path/'parts/b.parquet', index=False)
    sample.to_parquet(tmp_path/'all.parquet', index=False)
    want = data_version(sample)['sha256']
    for path in (SAMPLE, tmp_path/'all.parquet', tmp_path/'parts', str(tmp_path/'parts/*')):
        df = load_data(cfg_for(tmp_path, f'data.path={path}'))
        assert df.shape == (400, 21) and data_version(df)['sha256'] == want, path


def test_relative_paths_are_read_from_the_project(tmp_path, sample):
    cfg = cfg_for(tmp_path, 'data.path=data/x.csv')
    (Path(cfg['project'])/'data').mkdir()
    sample.head(50).to_csv(Path(cfg['project'])/'data/x.csv', index=False)
    assert len(load_data(cfg)) == 50
    folder = load_config(project=cfg['project'], overrides=['data.path=data'])  # a folder, relative to the project, not the cwd
    assert len(load_data(folder)) == 50


def test_sqlite_query(tmp_path, sample):
    db = tmp_path/'crm.db'
    with sqlite3.connect(db) as con: sample.to_sql('customers', con, index=False)
    df = load_data(cfg_for(tmp_path, f'data.url=sqlite:///{db}', 'data.query=select * from customers where contract = \'Two year\''))
    assert len(df) == (sample.contract == 'Two year').sum() and set(df.contract) == {'Two year'}
    with pytest.raises(SourceError, match='the query failed: no such column: nope'):
        load_data(cfg_for(tmp_path, f'data.url=sqlite:///{db}', 'data.query=select nope from customers'))
    with pytest.raises(DataRefused, match='no_rows: .*the source returned no rows'):
        load_data(cfg_for(tmp_path, f'data.url=sqlite:///{db}', 'data.query=select * from customers where tenure < 0'))
    with pytest.raises(DataRefused, match="column 'churn': duplicate_columns: .*positions 1 and 3"):
        load_data(cfg_for(tmp_path, f'data.url=sqlite:///{db}', 'data.query=select churn, tenure, churn from customers'))


class Api(http.server.BaseHTTPRequestHandler):
    "A paged JSON API that fails its first request with 503, to exercise the retries."
    records, calls = [], []
    def do_GET(self):
        Api.calls.append(self.path)
        if len(Api.calls) == 1: return self._send(503, {'error': 'warming up'})
        if self.path.startswith('/slow'): time.sleep(2); return self._send(200, [])
        page = int(self.path.split('page=')[-1]) if 'page=' in self.path else 1
        body = {'data': Api.records[(page - 1) * 100: page * 100], 'meta': {'page': page}}
        if page * 100 < len(Api.records): body['next'] = f'/customers?page={page + 1}'
        self._send(200, body)
    def _send(self, code, body):
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())
    def log_message(self, *a): pass


@pytest.fixture
def api(sample):
    Api.records, Api.calls = json.loads(sample.to_json(orient='records')), []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def test_http_pages_and_retries(tmp_path, api, sample):
    df = load_data(cfg_for(tmp_path, f'data.path={api}/customers', 'data.http.records_key=data'))
    assert len(df) == 400 and list(df.columns) == list(sample.columns)
    assert Api.calls[0] == Api.calls[1] == '/customers' and len(Api.calls) == 5  # one 503, then 4 pages


def test_http_timeout_and_unreachable(tmp_path, api):
    Api.calls.append('warm')  # no 503 this time
    with pytest.raises(SourceError, match='request failed: .*(ead timed out|Timeout)'):
        load_data(cfg_for(tmp_path, f'data.path={api}/slow', 'data.http={timeout_s: 0.5, retries: 0}'))
    with pytest.raises(SourceError, match=r'cannot read data from http://127.0.0.1:9/x: request failed: ConnectionError'):
        load_data(cfg_for(tmp_path, 'data.path=http://127.0.0.1:9/x', 'data.http={retries: 1, timeout_s: 1}'))


@pytest.mark.parametrize('content, message', [
    (None, 'no such file or folder'),
    (b'', 'empty_file: .*the file is empty'),
    (b'a,b\n', 'no_rows: .*the source returned no rows'),
    (b'a,b\n1,2\n3,4,5,6\n', 'malformed_csv: .*malformed CSV'),
    ('k\xf6ln,x\n1,2\n'.encode('latin-1'), 'not_utf8: .*not UTF-8 text'),
    (b'<html><body>Service Unavailable</body></html>', 'not_a_table'),
    (b'a,b,a\n1,2,3\n', "column 'a': duplicate_columns: .*'a' at positions 1 and 3"),
])
def test_bad_files_are_named_with_their_cause(tmp_path, content, message):
    f = tmp_path/'bad.csv'
    if content is not None: f.write_bytes(content)
    with pytest.raises(SourceError if content is None else DataRefused, match=message) as e:
        load_data(cfg_for(tmp_path, f'data.path={f}'))
    assert str(f) in str(e.value)


def test_data_version_ignores_name_and_time_but_not_values(tmp_path, sample):
    a, b = tmp_path/'a.csv', tmp_path/'later-name.csv'
    sample.to_csv(a, index=False)
    shutil.copy(a, b)
    os.utime(b, (time.time() + 3600, time.time() + 3600))
    va, vb = (data_version(load_data(cfg_for(tmp_path, f'data.path={p}'))) for p in (a, b))
    assert va == vb and va['rows'] == 400 and va['columns']['tenure'] == 'int64'
    for col, row, value in (('tenure', 5, 999), ('contract', 0, 'Two year '), ('total_charges', 3, None)):
        changed = sample.copy()
        changed.loc[row, col] = value
        assert data_version(changed)['sha256'] != va['sha256'], col
    assert data_version(sample[list(reversed(sample.columns))])['sha256'] != va['sha256']
