"""The REST service and batch scoring: a real `mlpipeline serve` on 127.0.0.1, a real registry, real Parquet files."""
import contextlib, json, os, signal, socket, subprocess, threading, time
from pathlib import Path
import httpx, pandas as pd, pytest
from conftest import CLI, SAMPLE, write_project, run_in_process, client_for, mlpipeline

SERVE = {'reload_s': 0.5, 'max_body_bytes': 100_000, 'max_rows': 200, 'capture': {'flush_s': 0.3}, 'drain_s': 0.3}


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class Server:
    "`mlpipeline serve` in a subprocess on a free port of 127.0.0.1, stopped with SIGTERM as a process manager would."
    def __init__(self, project: Path, *args, env: dict | None = None):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        e = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID', 'MLPIPELINE_API_KEY')} | (env or {})
        self.proc = subprocess.Popen([str(CLI), 'serve', '--port', str(self.port), *args], cwd=project, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []  # read as it comes: a full pipe would block the server's log writes
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        t = time.time()
        while time.time() - t < 90:
            assert self.proc.poll() is None, ''.join(self.lines)
            try:
                if httpx.get(self.url + '/health', timeout=2).status_code == 200: break
            except httpx.TransportError: time.sleep(0.2)
        else: raise TimeoutError(f'{self.url} did not come up')
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> str:
        "Stop the server; its output."
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return ''.join(self.lines)

    def log(self) -> list:
        "The JSON lines the server has logged so far."
        return [json.loads(l) for l in list(self.lines) if l.startswith('{')]


@contextlib.contextmanager
def champion_service(folder: Path, serve: dict, *challenger: str):
    "A project whose champion was trained on the test sample (then a challenger with `challenger`'s overrides, if any)"
    " and `mlpipeline serve` answering for it; the server is stopped after."
    project = write_project(folder/'project', serve=serve)
    run_in_process(project)
    if challenger: run_in_process(project, *challenger)
    srv = Server(project)
    try: yield project, srv
    finally: srv.stop()


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A project whose champion (version 1) was trained on the test sample, a weaker challenger (version 2), and a server."
    weaker = ('model.max_depth=1', 'model.n_estimators=3', 'gate.thresholds.roc_auc=0.999')  # refused: challenger only
    with champion_service(tmp_path_factory.mktemp('serve'), SERVE, *weaker) as served: yield served


def records(n, start=0) -> list:
    rows = pd.read_csv(SAMPLE).drop(columns=['churn']).iloc[start:start + n]
    return json.loads(rows.to_json(orient='records'))


def champion(project) -> str:
    return str(client_for(project).get_model_version_by_alias('test-model', 'champion').version)


def test_single_and_batch_predictions_match_the_registered_model(served):
    import mlflow
    project, srv = served
    r = srv.http.post('/predict', json=records(1)[0], headers={'X-Request-ID': 'req-single'})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body['request_id'] == 'req-single' == r.headers['x-request-id']
    assert body['model'] == {'name': 'test-model', 'version': champion(project), 'alias': 'champion'}
    assert set(body['prediction']) == {'prediction', 'proba_No', 'proba_Yes', 'rownames'} and body['prediction']['rownames'] == records(1)[0]['rownames']
    batch = srv.http.post('/predict', json=records(50)).json()['predictions']
    model = mlflow.pyfunc.load_model(f"models:/test-model/{champion(project)}")
    from mlpipeline.scoring import conform
    expected = model.predict(conform(model, pd.DataFrame(records(50))))
    got = pd.DataFrame(batch)
    assert got.prediction.tolist() == expected.prediction.tolist()
    assert (got.proba_Yes - expected.proba_Yes).abs().max() < 1e-6


@pytest.mark.parametrize('case, body, status, words', [
    ('malformed JSON', b'{"tenure": 3,', 400, ['malformed JSON']),
    ('missing field', 'drop:contract', 422, ["'contract'", 'missing_column']),
    ('wrong type', {'tenure': 'three'}, 422, ["'tenure'", 'type_mismatch', 'a number']),
    ('unknown category', {'contract': 'Ten years'}, 422, ["'contract'", 'unseen_category']),
    ('null where training had none', {'tenure': None}, 422, ["'tenure'", 'missing_values']),
    ('empty list', b'[]', 422, ['empty list']),
    ('not a record', b'"hello"', 422, ['expected a JSON object']),
    ('too many rows', 'rows:201', 413, ['at most 200']),
    ('oversized body', 'bytes:200000', 413, ['larger than 100000 bytes']),
])
def test_bad_requests_get_a_clear_4xx(served, case, body, status, words):
    _, srv = served
    rec = records(1)[0]
    if isinstance(body, bytes): content = body
    elif isinstance(body, dict): content = json.dumps(rec | body).encode()
    elif body == 'drop:contract': content = json.dumps({k: v for k, v in rec.items() if k != 'contract'}).encode()
    elif body.startswith('rows:'): content = json.dumps([rec] * int(body[5:])).encode()
    else: content = json.dumps([rec | {'pad': 'x' * int(body[6:])}]).encode()
    r = srv.http.post('/predict', content=content, headers={'Content-Type': 'application/json'})
    assert r.status_code == status, (case, r.status_code, r.text)
    err = r.json()['error']
    assert all(w in err for w in words), (case, err)
    assert 'Traceback' not in r.text and 'File "' not in r.text


def test_concurrent_clients_get_no_errors(served):
    _, srv = served
    recs, codes = records(40), []
    def client(i):
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            codes.extend(c.post('/predict', json=recs[(i + k) % 40]).status_code for k in range(30))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert codes == [200] * 240


def test_health_metadata_and_metrics(served):
    project, srv = served
    h = srv.http.get('/health').json()
    assert h['status'] == 'ok' and h['model_loaded'] and h['version'] == champion(project)
    m = srv.http.get('/metadata').json()
    tags = client_for(project).get_model_version('test-model', m['version']).tags
    assert m['data_version'] == tags['data_sha256'] and len(m['data_version']) == 64 and m['git_commit'] == tags['git_commit']
    assert 0.5 < m['test_metrics']['roc_auc'] <= 1 and m['classes'] == ['No', 'Yes']
    assert m['schema']['contract']['domain'] == ['month-to-month', 'one year', 'two year'] and m['schema']['tenure']['kind'] == 'numeric'
    def counters():
        lines = dict(l.rsplit(' ', 1) for l in srv.http.get('/metrics').text.splitlines() if l and not l.startswith('#'))
        return {k: float(v) for k, v in lines.items()}
    before = counters()
    srv.http.post('/predict', json=records(1)[0] | {'tenure': 'bad'})
    srv.http.post('/predict', json=records(3))
    after = counters()
    diff = lambda k: after.get(k, 0) - before.get(k, 0)
    assert diff('mlpipeline_requests_total{code="422",endpoint="/predict"}') == 1 and diff('mlpipeline_requests_total{code="200",endpoint="/predict"}') == 1
    assert diff('mlpipeline_invalid_fields_total{field="tenure",rule="type_mismatch"}') == 1
    assert diff(f'mlpipeline_predicted_rows_total{{version="{h["version"]}"}}') == 3 and diff('mlpipeline_request_seconds_count{endpoint="/predict"}') == 2
    assert sum(diff(k) for k in after if k.startswith('mlpipeline_predictions_total{')) == 3


def test_captured_requests_land_in_parquet_with_their_ids(served):
    project, srv = served
    ids = [f'capture-{i}' for i in range(5)]
    for i, rid in enumerate(ids): assert srv.http.post('/predict', json=records(i + 1), headers={'X-Request-ID': rid}).status_code == 200
    folder = project/'capture/test-model'
    for _ in range(50):
        files = list(folder.glob('date=*/[!.]*.parquet'))
        got = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame(columns=['request_id'])
        if set(ids) <= set(got.request_id): break
        time.sleep(0.2)
    mine = got[got.request_id.isin(ids)]
    assert mine.groupby('request_id').size().to_dict() == {rid: i + 1 for i, rid in enumerate(ids)}
    assert set(mine.model_version) == {champion(project)} and mine.tenure.dtype == 'float64'
    assert mine[mine.request_id == 'capture-2'].rownames.tolist() == [str(r['rownames']) for r in records(3)]
    assert not list(folder.rglob('.*'))  # no temporary file left behind


def test_api_key_is_enforced_when_set_with_two_workers(served):
    project, _ = served
    srv = Server(project, '--workers', '2', env={'MLPIPELINE_API_KEY': 's3cret-key'})
    try:
        rec = records(1)[0]
        refused = [srv.http.post('/predict', json=rec), srv.http.post('/predict', json=rec, headers={'X-API-Key': 's3cret-keY'}), srv.http.get('/metadata')]
        assert [r.status_code for r in refused] == [401] * 3 and all('X-API-Key' in r.json()['error'] for r in refused)
        assert [srv.http.post('/predict', json=rec, headers={'X-API-Key': 's3cret-key'}).status_code for _ in range(20)] == [200] * 20
        assert srv.http.get('/metadata', headers={'X-API-Key': 's3cret-key'}).status_code == 200 and srv.http.get('/health').status_code == 200
        assert not any('s3cret' in r.text for r in refused + [srv.http.get('/metrics')])
    finally: out = srv.stop()
    assert 's3cret' not in out


def test_batch_scoring_in_chunks(served, tmp_path):
    project, _ = served
    src = tmp_path/'in.parquet'
    pd.read_csv(SAMPLE).drop(columns=['churn']).to_parquet(src)
    r = mlpipeline('predict', '--input', str(src), '--output', str(tmp_path/'out.parquet'), '--chunk-rows', '150', '--quiet', cwd=project)
    assert r.returncode == 0, r.stderr
    out = pd.read_parquet(tmp_path/'out.parquet')
    assert len(out) == 400 and out.rownames.tolist() == pd.read_csv(SAMPLE).rownames.tolist() and set(out.model_version) == {champion(project)}
    meta = json.loads((tmp_path/'out.parquet.json').read_text())
    assert meta['rows'] == 400 and meta['version'] == champion(project) and len(meta['input_sha256']) == 64
    # the service answers the same rows the same way
    _, srv = served
    online = pd.DataFrame(srv.http.post('/predict', json=records(150, 200)).json()['predictions'])
    assert (online.proba_Yes.to_numpy() - out.proba_Yes.iloc[200:350].to_numpy()).__abs__().max() < 1e-6
    # a missing id and a missing value in a one-row last chunk: ids keep their type, missing shares count over the file
    odd = pd.read_csv(SAMPLE).drop(columns=['churn']).astype({'rownames': 'Int64'})
    odd.loc[399, ['rownames', 'total_charges']] = [pd.NA, None]
    odd.to_csv(tmp_path/'odd.csv', index=False)
    r = mlpipeline('predict', '--input', str(tmp_path/'odd.csv'), '--output', str(tmp_path/'odd.parquet'), '--chunk-rows', '399', '--quiet', cwd=project)
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq
    ids = pq.read_table(tmp_path/'odd.parquet').column('rownames')
    assert str(ids.type) == 'int64' and ids.is_null().to_pylist() == [False] * 399 + [True]
    # a bad row in the third chunk: exit 3, the rule and the rows named, no output written
    bad = pd.read_csv(SAMPLE).drop(columns=['churn'])
    bad.loc[320, 'contract'] = 'Ten years'
    bad.to_csv(tmp_path/'bad.csv', index=False)
    r = mlpipeline('predict', '--input', str(tmp_path/'bad.csv'), '--output', str(tmp_path/'bad_out.csv'), '--chunk-rows', '150', '--quiet', cwd=project)
    assert r.returncode == 3, r.stderr
    assert "'contract'" in r.stderr and 'unseen_category' in r.stderr and 'input rows 300-399' in r.stderr
    assert not (tmp_path/'bad_out.csv').exists() and not list(tmp_path.glob('.*'))


def test_serve_refuses_a_busy_port_and_a_missing_model(served):
    project, srv = served
    r = mlpipeline('serve', '--port', str(srv.port), cwd=project, timeout=120)
    assert r.returncode == 2 and 'in use' in r.stderr, r.stderr
    r = mlpipeline('serve', '--port', str(free_port()), '--model', 'no-such-model@champion', cwd=project, timeout=120)
    assert r.returncode == 2 and 'no-such-model' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_champion_moved_during_a_stream_of_requests(served):
    "Runs last in this module: it moves champion to a new version."
    project, srv = served
    client = client_for(project)
    v1 = client.get_model_version('test-model', champion(project))
    v2 = client.get_model_version_by_alias('test-model', 'challenger')  # the weaker model: its answers differ
    assert v2.version != v1.version
    answers, stop = [], threading.Event()
    def stream():
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post('/predict', json=records(1)[0])
                answers.append((r.status_code, r.json().get('model', {}).get('version')))
    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads: t.start()
    time.sleep(1.0)
    r = mlpipeline('promote', str(v2.version), '--why', 'hot reload test', cwd=project)
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 30
    while time.time() < deadline and not any(v == str(v2.version) for _, v in answers[-5:]): time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads: t.join()
    codes, versions = [c for c, _ in answers], [v for _, v in answers]
    assert codes == [200] * len(codes) and len(codes) > 20
    assert versions[0] == str(v1.version) and versions[-1] == str(v2.version)
    first_new = versions.index(str(v2.version))
    assert set(versions[first_new + 10:]) <= {str(v2.version)}  # once swapped, never back (a few in flight may finish on the old one)
    assert srv.http.get('/health').json()['version'] == str(v2.version)
    assert 'mlpipeline_model_reloads_total 1.0' in srv.http.get('/metrics').text


def test_shadow_mode_logs_both_predictions(served):
    project, _ = served
    import mlflow
    from mlpipeline.scoring import conform
    client = client_for(project)
    champ = champion(project)
    other = next(str(v.version) for v in client.search_model_versions("name = 'test-model'") if str(v.version) != champ)
    client.set_registered_model_alias('test-model', 'challenger', other)
    srv = Server(project, '-p', 'serve.shadow=true', '-p', 'serve.capture.dir=shadow-capture')
    try:
        for i in range(3): assert srv.http.post('/predict', json=records(2), headers={'X-Request-ID': f'shadow-{i}'}).json()['model']['version'] == champ
        assert srv.http.get('/metadata').json()['shadow']['version'] == other
    finally: srv.stop()  # SIGTERM drains the shadow queue and writes the capture
    got = pd.read_parquet(project/'shadow-capture/test-model')
    assert len(got) == 6 and set(got.shadow_version) == {other} and set(got.model_version) == {champ}
    expected = {}
    for v in (champ, other):
        m = mlflow.pyfunc.load_model(f'models:/test-model/{v}')
        expected[v] = m.predict(conform(m, pd.DataFrame(records(2)))).proba_Yes.tolist()
    assert expected[champ] != expected[other]  # two different models
    got = got.sort_values(['request_id', 'row'])
    assert got.proba_Yes.tolist() == pytest.approx(expected[champ] * 3)
    labels = lambda p: ['Yes' if x > 0.5 else 'No' for x in p]
    assert got.shadow_prediction.tolist() == labels(expected[other]) * 3
    assert got.shadow_proba_Yes.tolist() == pytest.approx(expected[other] * 3)  # the shadow's probabilities, for an offline comparison
    logged = [l for l in srv.log() if l.get('event') == 'request' and l['request_id'].startswith('shadow-')]
    assert len(logged) == 3 and {l['shadow'] for l in logged} == {other} and {l['version'] for l in logged} == {champ}


def test_sigterm_during_a_stream_of_requests_drops_none(served):
    project, _ = served
    srv = Server(project, '-p', 'serve.drain_s=3', '-p', 'serve.capture.dir=sigterm-capture')
    results, stop, sent = [], threading.Event(), [None]
    def client(k):
        "A keep-alive stream of requests that, like a load balancer, sends no more once told the server is going away."
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                t = time.time()
                try: r = c.post('/predict', json=records(2, k))
                except httpx.ConnectError: results.append(('refused', k, t)); return  # never connected: nothing was sent
                except httpx.TransportError as e: results.append(('dropped', k, t, repr(e))); return
                results.append(('answered', k, t, r.status_code, r.headers['x-request-id'], r.headers.get('connection')))
                if r.headers.get('connection') == 'close': return
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads: t.start()
    try:
        time.sleep(1.5)
        sent[0] = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try: health = httpx.get(srv.url + '/health', timeout=5)  # draining: load balancers stop sending
        except httpx.TransportError as e: health = e
        srv.proc.wait(timeout=60)
    finally:
        stop.set()
        for t in threads: t.join(timeout=60)
    srv.reader.join(timeout=10)
    answered = [r for r in results if r[0] == 'answered']
    assert [r for r in results if r[0] != 'answered'] == []  # nothing dropped, and every stream was told before the port closed
    assert {r[3] for r in answered} == {200} and len(answered) >= 40
    assert sorted(r[1] for r in answered if r[5] == 'close') == [0, 1, 2, 3]  # each stream told, while draining, to go elsewhere
    assert isinstance(health, httpx.Response) and health.status_code == 503 and health.json()['status'] == 'draining', health
    got = pd.read_parquet(project/'sigterm-capture/test-model')  # written at shutdown, after the last answer
    assert sorted(got.request_id.unique()) == sorted(r[4] for r in answered) and len(got) == 2 * len(answered)
    lines = srv.log()
    requests = {l['request_id']: l for l in lines if l.get('event') == 'request'}
    assert set(requests) == {r[4] for r in answered}
    one = requests[answered[0][4]]
    assert one['version'] == champion(project) and one['status'] == 200 and one['latency_ms'] > 0 and one['level'] == 'info'
    assert [l['event'] for l in lines if l.get('event') in ('started', 'draining', 'stopped')] == ['started', 'draining', 'stopped']


def test_settings_from_the_environment(served):
    project, _ = served
    port = free_port()
    e = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    r = subprocess.run([str(CLI), 'serve'], cwd=project, env=e | {'MLPIPELINE_SERVE_PORT': str(port), 'MLPIPELINE_SERVE_NO_SUCH_KEY': '1'},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'serve.no_such_key' is not a config key" in r.stderr, r.stderr
    srv = Server(project, env={'MLPIPELINE_SERVE_LOG__FORMAT': 'text', 'MLPIPELINE_SERVE_CAPTURE__ENABLED': 'false'})
    try: assert srv.http.post('/predict', json=records(1)[0]).status_code == 200
    finally: out = srv.stop()
    assert 'capture ->' not in out and srv.log() == [] and ' INFO mlpipeline.serve request' in out


def test_grafana_dashboard_reads_metrics_the_service_exports(served):
    import re
    from prometheus_client.parser import text_string_to_metric_families
    _, srv = served
    assert srv.http.post('/predict', json=records(3)).status_code == 200
    families = {f.name for f in text_string_to_metric_families(srv.http.get('/metrics').text)}
    dash = json.loads((Path(__file__).resolve().parents[1]/'deploy/grafana-dashboard.json').read_text())
    exprs = [t['expr'] for p in dash['panels'] for t in p['targets']]
    used = {re.sub(r'_(total|bucket|count|sum)$', '', m) for e in exprs for m in re.findall(r'mlpipeline_[a-z_]+', e)}
    assert len(dash['panels']) >= 10 and {'mlpipeline_requests', 'mlpipeline_request_seconds', 'mlpipeline_prediction_proba'} <= used
    assert used - families == {'mlpipeline_ab_rows'}  # the A/B arms' counter appears when traffic is split


class Marker:
    "A pickle whose loading creates the file `path`: what anyone who can write to the store's artifacts could plant."
    def __init__(self, path: Path): self.path = path
    def __reduce__(self): return (open, (str(self.path), 'w'))


def plant(model_dir: Path, marker: Path):
    "Replace every pickle and every Python file of a logged model with ones that create `marker` when loaded or run."
    import pickle
    for f in model_dir.rglob('*'):
        if f.suffix == '.pkl': f.write_bytes(pickle.dumps(Marker(marker)))
        elif f.suffix == '.py': f.write_text(f'open({str(marker)!r}, "w")\n')


def old_format_version(project: Path, name: str, version: str):
    "A copy of `version` logged as versions before models from code were: a `PipelineModel` in `python_model.pkl`."
    import mlflow
    from mlflow.models import Model
    from mlpipeline.scoring import PipelineModel, model_artifacts
    client = client_for(project)
    src = Path(mlflow.artifacts.download_artifacts(artifact_uri=f'models:/{name}/{version}'))
    exp = client.create_experiment('old-format', artifact_location=(project/'mlartifacts/old').as_uri())
    with mlflow.start_run(experiment_id=exp):
        arts = {k: str(v) for k, v in model_artifacts(src).items()}
        sig = Model.load(str(src)).signature
        info = mlflow.pyfunc.log_model(name='model', python_model=PipelineModel(), signature=sig, artifacts=arts)
    mv = mlflow.register_model(info.model_uri, name, tags=client.get_model_version(name, version).tags)
    assert any(project.rglob('python_model.pkl'))
    return str(mv.version)


@pytest.mark.slow
def test_model_files_run_no_code_in_the_service_its_reload_or_the_registry(tmp_path):
    "Pickles and code planted in the store's model files never run; the service and the loaders answer as before."
    import sys, mlflow
    from mlpipeline.scoring import load_version, load_model, conform
    from mlpipeline.registry import check_reproduces
    project, marker = write_project(tmp_path/'project', serve=SERVE), tmp_path/'code-ran'
    run_in_process(project)
    v1 = champion(project)
    mlmodel, = (project/'mlartifacts').rglob('MLmodel')
    assert 'model_code_path:' in mlmodel.read_text() and not list(mlmodel.parent.rglob('*.pkl'))  # a model from code
    v2 = old_format_version(project, 'test-model', v1)
    rows, path = pd.DataFrame(records(30)), list(sys.path)
    before = {}
    for v in (v1, v2):  # a user's own MLflow call still loads both (the new one as a model from code)
        model = mlflow.pyfunc.load_model(f'models:/test-model/{v}')
        before[v] = model.predict(conform(model, rows))
    sys.path[:] = path
    srv = Server(project)
    answers = srv.http.post('/predict', json=records(30)).json()['predictions']
    for mlmodel in (project/'mlartifacts').rglob('MLmodel'): plant(mlmodel.parent, marker)
    try:
        for v in (v1, v2):
            served = load_version('test-model', v)
            got = load_model(f'models:/test-model/{v}')
            pd.testing.assert_frame_equal(got.predict(conform(got, rows)), before[v1])
            assert served.version == v and not marker.exists()
        assert check_reproduces(f'models:/test-model/{v2}', rows, before[v1].drop(columns='prediction')) == 0.0
        r = mlpipeline('promote', v2, '--why', 'hot reload of an old-format version', cwd=project)
        assert r.returncode == 0, r.stderr
        end = time.time() + 30
        while srv.http.get('/health').json()['version'] != v2 and time.time() < end: time.sleep(0.2)
        assert srv.http.get('/health').json()['version'] == v2
        assert srv.http.post('/predict', json=records(30)).json()['predictions'] == answers
    finally: out = srv.stop()
    assert not marker.exists(), out
    srv = Server(project)  # a start on the planted version
    try: again = srv.http.post('/predict', json=records(30)).json()['predictions']
    finally: srv.stop()
    assert again == answers and not marker.exists()


def test_planted_model_files_run_no_code_in_the_loaders(tmp_path):
    "In-process, quick: a model from code and an old pickled one, both planted, load from their files, answers equal."
    import mlflow, mlpipeline
    from mlpipeline.features import split_frame, fit_transform
    from mlpipeline.train import fit_booster
    from mlpipeline.registry import signature, check_reproduces
    from mlpipeline.scoring import PipelineModel, load_model, load_version
    parts = split_frame(pd.read_csv(SAMPLE), 'churn', 'binary')
    tf = fit_transform(parts['train'], 'churn', 'binary', drop=['rownames'])
    (tmp_path/'files').mkdir()
    booster = fit_booster(tf, parts['train'], parts['valid'], {'max_depth': 3, 'n_estimators': 20})
    booster.save_model(tmp_path/'files/model.ubj')
    (tmp_path/'files/transform.json').write_text(tf.to_json())
    arts = {'model': str(tmp_path/'files/model.ubj'), 'transform': str(tmp_path/'files/transform.json')}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path/'mlruns.db'}")
    exp = mlflow.create_experiment('e', artifact_location=(tmp_path/'artifacts').as_uri())
    code = str(Path(mlpipeline.__file__).with_name('pyfunc_model.py'))
    rows, versions = parts['test'].drop(columns=['churn']), []
    for model in (code, PipelineModel()):  # as registered now (from code), and as before (pickled)
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(name='model', python_model=model, artifacts=arts,
                                           signature=signature(tf, rows))
        versions.append(str(mlflow.register_model(info.model_uri, 'planted').version))
    expected = load_model('models:/planted/1').predict(rows)
    marker = tmp_path/'code-ran'
    for mlmodel in (tmp_path/'artifacts').rglob('MLmodel'): plant(mlmodel.parent, marker)
    assert any((tmp_path/'artifacts').rglob('python_model.pkl'))
    for v in versions:
        pd.testing.assert_frame_equal(load_model(f'models:/planted/{v}').predict(rows), expected)
        assert load_version('planted', v).version == v
        assert check_reproduces(f'models:/planted/{v}', rows, expected.drop(columns='prediction')) == 0.0
    assert not marker.exists()
