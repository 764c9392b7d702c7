"""Fuzzing the REST service from its own OpenAPI document (schemathesis): a real `mlpipeline serve` on 127.0.0.1 gets
generated requests, valid and invalid, and never answers 5xx or shows a traceback."""
import time
import pytest, requests
from test_serve import SERVE, champion_service

TRACES = ('Traceback', 'File "')


@pytest.fixture(scope='module')
def service(tmp_path_factory):
    "A project whose champion was trained on the test sample, and `mlpipeline serve` answering for it."
    with champion_service(tmp_path_factory.mktemp('fuzz'), SERVE | {'capture': {'enabled': False}}) as (_, srv): yield srv


def fuzz(url: str, cases: int, mode: str, seed: int | None = 0) -> dict:
    "Send `cases` requests to POST /predict generated from the service's schema (`mode` positive or negative)."
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.generation import GenerationMode
    op = schemathesis.openapi.from_url(url + '/openapi.json')['/predict']['POST']
    out, session = {'cases': 0, 'status': {}, 'bad': []}, requests.Session()

    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate], derandomize=seed is not None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
    def send(case):
        r = case.call(base_url=url, session=session, timeout=30)
        out['cases'] += 1
        out['status'][r.status_code] = out['status'].get(r.status_code, 0) + 1
        if r.status_code >= 500 or any(t in r.text for t in TRACES):  # kept, not raised: every case runs
            out['bad'].append((r.status_code, r.text[:300], repr(case.body)[:300]))

    send()
    return out


def fuzz_figures(url: str, cases: int, seed: int | None = 0) -> dict:
    "Half the cases valid records, half invalid ones; the figures of both."
    t = time.perf_counter()
    runs = [fuzz(url, cases // 2, mode, seed) for mode in ('positive', 'negative')]
    status = {k: sum(r['status'].get(k, 0) for r in runs) for k in sorted({k for r in runs for k in r['status']})}
    return {'cases': sum(r['cases'] for r in runs), 'status': status, 'bad': [b for r in runs for b in r['bad']],
            'server_errors': sum(v for k, v in status.items() if k >= 500),
            'seconds': round(time.perf_counter() - t, 1)}


def test_the_schema_describes_the_records(service):
    "The published request body: one Record or a list of them, a property per feature, typed from the model."
    doc = service.http.get('/openapi.json').json()
    rec = doc['components']['schemas']['Record']
    body = doc['paths']['/predict']['post']['requestBody']['content']['application/json']['schema']
    assert body['oneOf'][0] == {'$ref': '#/components/schemas/Record'}
    assert body['oneOf'][1]['maxItems'] == SERVE['max_rows']
    assert rec['properties']['tenure']['type'] == 'integer' and rec['properties']['monthly_charges']['type'] == 'number'
    assert rec['properties']['contract']['enum'] == ['Month-to-month', 'One year', 'Two year']
    assert 'churn' not in rec['properties'] and 'contract' in rec['required'] and len(rec['required']) == 19


def test_fuzzing_finds_no_server_error(service):
    "400 generated requests, valid and invalid: no 5xx, no traceback (the slow test sends 6,000; printed with -s)."
    f = fuzz_figures(service.url, 400)
    print(f'fuzz: {f["cases"]} cases, status counts {f["status"]}, {f["server_errors"]} 5xx, {f["seconds"]} s')
    assert f['cases'] >= 380 and f['bad'] == [], f['bad'][:5]
    assert f['status'].get(200, 0) > 20 and f['status'].get(422, 0) > 20, f['status']  # both kinds of body were sent


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 20,000 cases took 2,352 s beside other tests (load 10): CI's budget allows 6,000
def test_long_fuzzing_finds_no_server_error(service):
    "6,000 generated requests with a fresh random seed each run (about 4 minutes on 2 idle cores)."
    f = fuzz_figures(service.url, 6000, seed=None)
    print(f'fuzz: {f["cases"]} cases, status counts {f["status"]}, {f["server_errors"]} 5xx, {f["seconds"]} s')
    assert f['cases'] >= 5700 and f['bad'] == [], f['bad'][:5]
