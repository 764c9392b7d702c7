"""The Open Inference Protocol (KServe V2) on the service, driven by a client nobody here wrote: `tritonclient.http`."""
import contextlib
import numpy as np, pandas as pd, pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from conftest import SAMPLE, write_project, run_in_process
from test_serve import Server, champion_service, records

SERVE = {'reload_s': 0, 'capture': {'enabled': False}, 'drain_s': 0, 'max_rows': 500}
NUMPY = {'FP64': 'float64', 'INT64': 'int64', 'BOOL': 'bool', 'BYTES': object}


@pytest.fixture(scope='module')
def binary(tmp_path_factory):
    "The demo champion (binary churn) served on 127.0.0.1, and a tritonclient on it."
    with champion_service(tmp_path_factory.mktemp('v2'), SERVE) as (project, srv):
        yield srv, triton.InferenceServerClient(f'127.0.0.1:{srv.port}')


def tensors(rows: list, meta: dict, binary: bool) -> list:
    "One input tensor per field of the model's metadata, typed as it says, from JSON records."
    out = []
    for spec in meta['inputs']:
        vals = [r[spec['name']] for r in rows]
        dtype = 'FP64' if spec['datatype'] == 'INT64' and any(v is None for v in vals) else spec['datatype']  # a null is NaN
        arr = np.array([np.nan if v is None else v for v in vals], dtype=NUMPY[dtype])
        t = triton.InferInput(spec['name'], [len(rows)], dtype)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


def labels(arr) -> list:
    "A BYTES tensor's elements as text (JSON answers hold text, binary ones bytes)."
    return [v.decode() if isinstance(v, bytes) else v for v in arr]


def predict(srv, rows: list, explain: bool = False) -> pd.DataFrame:
    r = srv.http.post('/predict' + ('?explain=true' if explain else ''), json=rows)
    assert r.status_code == 200, r.text
    return pd.DataFrame(r.json()['predictions'])


def infer(client, name: str, rows: list, binary: bool = False, **kw):
    return client.infer(name, tensors(rows, client.get_model_metadata(name), binary), **kw)


def test_server_health_and_model_metadata_list_the_schema(binary):
    srv, client = binary
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready('test-model')
    assert client.get_server_metadata()['name'] == 'mlpipeline'
    meta = client.get_model_metadata('test-model')
    fields = srv.http.get('/metadata').json()['schema']
    assert [i['name'] for i in meta['inputs']] == list(fields)
    types = {i['name']: i['datatype'] for i in meta['inputs']}
    assert types['tenure'] == 'INT64' and types['monthly_charges'] == 'FP64' and types['contract'] == 'BYTES'
    assert [(o['name'], o['datatype']) for o in meta['outputs']] == [('prediction', 'BYTES'), ('probabilities', 'FP64')]
    assert meta['versions'] == ['1'] and client.is_model_ready('test-model', '1') and not client.is_model_ready('test-model', '7')


@pytest.mark.parametrize('binary_data', [False, True])
def test_infer_answers_as_predict_does(binary, binary_data):
    "JSON tensors and the binary tensor extension (tritonclient's default) give /predict's answers, row for row."
    srv, client = binary
    rows = [{k: v for k, v in r.items() if k != 'rownames'} for r in records(120)]
    res = infer(client, 'test-model', rows, binary_data, model_version='1')
    want = predict(srv, rows)
    assert labels(res.as_numpy('prediction')) == want.prediction.tolist()
    proba = res.as_numpy('probabilities')
    assert proba.shape == (120, 2) and np.abs(proba - want[['proba_No', 'proba_Yes']].to_numpy()).max() < 1e-9
    assert res.get_response()['model_version'] == '1'


def test_one_row_major_tensor_and_requested_outputs(binary):
    srv, client = binary
    names = [i['name'] for i in client.get_model_metadata('test-model')['inputs']]
    rows = records(5)
    grid = triton.InferInput('rows', [5, len(names)], 'BYTES')
    grid.set_data_from_numpy(np.array([[str(r[k]) for k in names] for r in rows], dtype=object), binary_data=False)
    res = client.infer('test-model', [grid], outputs=[triton.InferRequestedOutput('prediction', binary_data=False)])
    assert labels(res.as_numpy('prediction')) == predict(srv, rows).prediction.tolist()
    assert res.as_numpy('probabilities') is None


@pytest.mark.parametrize('change, status, words', [
    ({'tenure': 'three'}, 422, ["field 'tenure'", 'type_mismatch', 'a number']),
    ({'contract': 'Ten years'}, 422, ["field 'contract'", 'unseen_category']),
    ('extra', 400, ["unknown input(s) ['tenur']"]),
    ('missing', 422, ["field 'contract'", 'missing_column']),
])
def test_bad_input_gets_the_protocols_error_naming_the_field(binary, change, status, words):
    srv, client = binary
    rows = [{k: v for k, v in r.items() if k != 'rownames'} for r in records(3)]
    meta = client.get_model_metadata('test-model')
    ins = tensors(rows, meta, False)
    if isinstance(change, dict):
        (k, v), = change.items()
        ins = [t for t in ins if t.name() != k]
        t = triton.InferInput(k, [3], 'BYTES')
        t.set_data_from_numpy(np.array([v] * 3, dtype=object), binary_data=False)
        ins.append(t)
    elif change == 'extra':
        t = triton.InferInput('tenur', [3], 'FP64')
        t.set_data_from_numpy(np.ones(3), binary_data=False)
        ins.append(t)
    else: ins = [t for t in ins if t.name() != 'contract']
    with pytest.raises(InferenceServerException) as e: client.infer('test-model', ins)
    assert e.value.status() == str(status), e.value
    assert all(w in e.value.message() for w in words), e.value.message()
    assert 'Traceback' not in e.value.message()


def test_unknown_model_or_version_and_malformed_bodies_get_4xx(binary):
    srv, client = binary
    rows = records(1)
    for call in (lambda: infer(client, 'test-model', rows, model_version='9'),
                 lambda: client.get_model_metadata('other-model')):
        with pytest.raises(InferenceServerException) as e: call()
        assert e.value.status() == '404', e.value
    for body in (b'{"inputs": [', b'{"inputs": []}', b'[1]', b'{"inputs": [{"name": "tenure", "datatype": "FP64", "shape": [2], "data": [1]}]}',
                 b'{"inputs": [{"name": "tenure", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 99}}]}'):
        r = srv.http.post('/v2/models/test-model/infer', content=body)
        assert r.status_code == 400 and set(r.json()) == {'error'}, (body, r.text)


def test_infer_is_counted_in_the_services_metrics(binary):
    "V2 requests go through the same counters as /predict, under their own endpoint label, refusals included."
    srv, client = binary
    infer(client, 'test-model', records(7))
    with pytest.raises(InferenceServerException): client.infer('test-model', [])
    text = srv.http.get('/metrics').text
    assert 'mlpipeline_requests_total{code="200",endpoint="/v2/infer"}' in text
    assert 'mlpipeline_requests_total{code="400",endpoint="/v2/infer"}' in text
    assert 'mlpipeline_request_seconds_count{endpoint="/v2/infer"}' in text


def test_explain_through_the_protocol(binary):
    "`parameters.explain`: contributions per raw input and the base value, adding up to the probability's log-odds."
    srv, client = binary
    rows = records(20)
    res = infer(client, 'test-model', rows, parameters={'explain': True})
    c, base, p = res.as_numpy('contributions'), res.as_numpy('base_value'), res.as_numpy('probabilities')[:, 1]
    assert c.shape == (20, len(client.get_model_metadata('test-model')['inputs'])) and base.shape == (20,)
    assert np.abs(base + c.sum(1) - np.log(p / (1 - p))).max() < 1e-4
    feats = next(o for o in res.get_response()['outputs'] if o['name'] == 'contributions')['parameters']['features']
    got = predict(srv, rows, explain=True).explanation
    assert np.abs(np.array([[e['contributions'][f] for f in feats] for e in got]) - c).max() < 1e-9


@contextlib.contextmanager
def task_service(folder, target: str, task: str):
    "A champion of another task trained on the test sample, served on 127.0.0.1."
    project = write_project(folder/'project', target=target, task=task, serve=SERVE)
    run_in_process(project)
    srv = Server(project)
    try: yield srv, triton.InferenceServerClient(f'127.0.0.1:{srv.port}')
    finally: srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize('target, task', [('contract', 'multiclass'), ('monthly_charges', 'regression')])
def test_multiclass_and_regression_infer_as_predict_does(tmp_path, target, task):
    rows = pd.read_csv(SAMPLE).drop(columns=[target]).head(60).to_dict('records')
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    with task_service(tmp_path, target, task) as (srv, client):
        res = infer(client, 'test-model', rows, True, parameters={'explain': True})
        want = predict(srv, rows)
        c, base = res.as_numpy('contributions'), res.as_numpy('base_value')
        if task == 'regression':
            assert np.abs(res.as_numpy('prediction') - want.prediction.to_numpy()).max() < 1e-9
            assert np.abs(base + c.sum(-1) - want.prediction.to_numpy()).max() < 1e-3  # squared error: the margin is the value
        else:
            classes = client.get_model_metadata('test-model')['parameters']['classes']
            assert labels(res.as_numpy('prediction')) == want.prediction.tolist()
            p = res.as_numpy('probabilities')
            assert p.shape == (60, 3) and np.abs(p - want[[f'proba_{k}' for k in classes]].to_numpy()).max() < 1e-9
            m = base + c.sum(-1)  # (rows, classes): softmax gives the probabilities
            assert c.shape[:2] == (60, 3) and np.abs(np.exp(m) / np.exp(m).sum(1, keepdims=True) - p).max() < 1e-5
