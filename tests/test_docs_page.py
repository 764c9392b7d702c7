"""The service's API docs with no network: `/docs` (Swagger UI) and `/redoc` load their JS and CSS from the service
itself, and /docs's "Try it out" form scores the example record the OpenAPI document gives. A real `mlpipeline serve`
on 127.0.0.1, the real registry, and Debian's headless Chromium that reaches 127.0.0.1 only."""
import json, re, tempfile
from pathlib import Path
import pytest
from browser import chromium, wait_for, screenshot_on_failure
from conftest import client_for
from test_serve import SERVE, Server, champion_service

SHOTS = Path(tempfile.gettempdir())/'mlpipeline-screenshots'
PREDICT_OP = '#operations-default-predict_predict_post'  # Swagger UI's id: tag `default`, FastAPI's operationId


@pytest.fixture(scope='module')
def service(tmp_path_factory):
    "A project whose champion was trained on the test sample, and `mlpipeline serve` answering for it."
    with champion_service(tmp_path_factory.mktemp('docs'), SERVE | {'capture': {'enabled': False}}) as served: yield served


@pytest.fixture
def offline(request):
    "Headless Chromium that reaches 127.0.0.1 only; on failure the page is saved as PNG and HTML."
    with chromium(offline=True) as driver:
        yield driver
        screenshot_on_failure(driver, request, SHOTS)


def loaded_from(driver) -> list:
    "The URLs of every resource the page has loaded so far."
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def record_model(driver):
    "Swagger UI's `Record` entry under Schemas, expanded in full."
    from selenium.webdriver.common.by import By
    models = driver.find_elements(By.CSS_SELECTOR, 'section.models article[data-json-schema-level="0"]')
    rec = next(m for m in models if m.find_element(By.CSS_SELECTOR, '.json-schema-2020-12__title').text == 'Record')
    driver.execute_script('arguments[0].scrollIntoView()', rec)
    rec.find_element(By.CSS_SELECTOR, '.json-schema-2020-12-expand-deep-button').click()
    return rec


def test_try_it_out_scores_the_example_offline(service, offline):
    "Offline, /docs renders /predict's fields, and Try it out -> Execute with the example body answers 200."
    from selenium.webdriver.common.by import By
    _, srv = service
    fields = srv.http.get('/openapi.json').json()['components']['schemas']['Record']['properties']
    offline.get(srv.url + '/docs')
    op = wait_for(offline, PREDICT_OP, timeout_s=60)
    shown = record_model(offline).text
    assert all(f'\n{f}' in shown for f in fields), shown  # a line per field, with its type and range or labels
    assert 'tenureinteger[' in shown and '"Month-to-month"' in shown and '"Electronic check"' in shown, shown
    offline.execute_script('arguments[0].scrollIntoView()', op)
    op.find_element(By.CSS_SELECTOR, '.opblock-summary-control').click()
    wait_for(offline, f'{PREDICT_OP} .try-out__btn', text='Try it out').click()
    body = json.loads(wait_for(offline, f'{PREDICT_OP} textarea.body-param__text').get_attribute('value'))
    assert body['contract'] == 'Month-to-month' and isinstance(body['tenure'], int), body  # the example record
    wait_for(offline, f'{PREDICT_OP} button.execute', text='Execute').click()
    status = wait_for(offline, f'{PREDICT_OP} .live-responses-table .response .response-col_status', text='200')
    answer = status.find_element(By.XPATH, '..').find_element(By.CSS_SELECTOR, '.response-col_description pre')
    offline.execute_script('arguments[0].scrollIntoView({block: "center"})', answer)
    SHOTS.mkdir(parents=True, exist_ok=True)
    offline.save_screenshot(str(SHOTS/'docs_after_execute.png'))
    got = json.loads(answer.text)
    assert got['prediction']['prediction'] in ('No', 'Yes') and 0 <= got['prediction']['proba_Yes'] <= 1, got
    assert got['model']['alias'] == 'champion'
    loaded = loaded_from(offline)
    assert srv.url + '/docs/assets/swagger-ui-bundle.js' in loaded and srv.url + '/predict' in loaded, loaded
    assert [u for u in loaded if not u.startswith(srv.url + '/')] == []


def test_redoc_renders_the_fields_offline(service, offline):
    "Offline, /redoc lists /predict's request fields; its one outside image the page's CSP stops in the browser."
    from selenium.webdriver.common.by import By
    _, srv = service
    offline.get(srv.url + '/redoc')
    wait_for(offline, 'h2', text='Predict', timeout_s=60)
    text = offline.find_element(By.TAG_NAME, 'body').text
    assert 'tenure' in text and 'monthly_charges' in text and 'Batch' in text, text[:2000]
    outside = [u for u in loaded_from(offline) if not u.startswith(srv.url + '/')]  # ReDoc's logo, named in its bundle
    refused = [m['message'] for m in offline.get_log('browser') if 'Content Security Policy' in m['message']]
    assert all(any(u in m and 'blocked' in m for m in refused) for u in outside), (outside, refused)  # never sent


@pytest.mark.parametrize('page', ['/docs', '/redoc'])
def test_docs_pages_reference_nothing_outside_the_service(service, page):
    "The pages name no http(s) URL at all; every asset they name is served by the service, as JS or CSS."
    _, srv = service
    r = srv.http.get(page)
    assert r.status_code == 200 and re.findall(r'https?://', r.text) == [], r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert any(a.endswith('.js') for a in assets) and all(a.startswith('/docs/assets/') for a in assets), assets
    kinds = {'.js': 'javascript', '.css': 'text/css', '.png': 'image/png'}
    for a in assets:
        got = srv.http.get(a)
        assert got.status_code == 200 and kinds[Path(a).suffix] in got.headers['content-type'], (a, got.status_code)
    assert "img-src 'self'" in r.headers['content-security-policy']


def test_the_example_scores_and_the_schema_is_the_models(service):
    "The OpenAPI examples are accepted by POST /predict; the Record's enums and ranges are the registered schema's."
    from mlpipeline.scoring import load_version
    project, srv = service
    doc = srv.http.get('/openapi.json').json()
    media = doc['paths']['/predict']['post']['requestBody']['content']['application/json']
    one, batch = media['examples']['record']['value'], media['examples']['batch']['value']
    r = srv.http.post('/predict', json=one)
    assert r.status_code == 200 and 'warnings' not in r.json(), r.text
    assert set(r.json()['prediction']) == {'prediction', 'proba_No', 'proba_Yes'}
    r = srv.http.post('/predict', json=batch)
    assert r.status_code == 200 and len(r.json()['predictions']) == 2 and 'warnings' not in r.json(), r.text
    client_for(project)  # the project's own registry
    served = load_version('test-model', 'champion')
    props = doc['components']['schemas']['Record']['properties']
    ref = served.reference['columns']
    assert one['tenure'] == round(ref['tenure']['50%']) and one['contract'] == next(iter(ref['contract']['top']))
    for f in served.fields:
        p = props[f.name]
        if f.domain is not None: assert {f.encoder.label(f.name, v) for v in p['enum']} == set(f.domain), f.name
        else: assert 'enum' not in p, f.name
        if f.kind == 'numeric': assert (p['minimum'], p['maximum']) == (f.lo, f.hi), f.name
    spec = served.schema.columns['tenure']
    pad = spec['tolerance'] * (spec['max'] - spec['min'])
    assert (props['tenure']['minimum'], props['tenure']['maximum']) == (spec['min'] - pad, spec['max'] + pad)
    assert props['contract']['enum'] == ['Month-to-month', 'One year', 'Two year']


def test_docs_assets_need_the_key_when_the_docs_do(service):
    "With serve.api_key_all, the JS and CSS are behind the same X-API-Key guard as /docs."
    project, _ = service
    srv = Server(project, '-p', 'serve.api_key_all=true', env={'MLPIPELINE_API_KEY': 'k3y'})
    try:
        for path in ('/docs', '/docs/assets/swagger-ui-bundle.js', '/docs/assets/redoc.standalone.js'):
            refused = srv.http.get(path)
            assert refused.status_code == 401 and 'X-API-Key' in refused.json()['error'], (path, refused.text[:200])
            assert srv.http.get(path, headers={'X-API-Key': 'k3y'}).status_code == 200, path
    finally: srv.stop()
