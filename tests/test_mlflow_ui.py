"""The MLflow UI as docs/using.md starts it: its GraphQL endpoint answers, and in headless Chromium the experiment's runs
table, the parent run's page and the registered model's page tell what the pipeline run amounts to."""
import contextlib, json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import httpx, pytest
from browser import wait_for

MLFLOW = Path(sys.executable).parent/'mlflow'
SHOTS = Path('/tmp/mlflowui-shots')


@contextlib.contextmanager
def mlflow_ui(project: Path):
    "`.venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db` (docs/using.md's line) in the project, on a free port."
    cmd = '.venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db'  # .venv/bin is this venv's
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]  # 5000 may be another test's
    proc = subprocess.Popen([str(MLFLOW), *cmd.split()[1:], '--port', str(port)], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its workers are stopped with it
    try:
        t = time.time()
        while time.time() - t < 90:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=2).status_code == 200: break
            except httpx.TransportError: time.sleep(0.5)
        else: pytest.fail('mlflow ui did not answer /health in 90 s')
        yield f'http://127.0.0.1:{port}'
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope='module')
def ui(finished):
    with mlflow_ui(finished[0]) as url: yield url


def test_the_readme_mlflow_ui_answers_graphql(finished, ui):
    "The UI started as docs/using.md says: /graphql names the experiment."
    import mlflow
    project, _, _ = finished
    exp = mlflow.MlflowClient(f"sqlite:///{project/'mlruns.db'}").get_experiment_by_name('mlpipeline')
    query = 'query { mlflowGetExperiment(input: {experimentId: "%s"}) { experiment { name } } }' % exp.experiment_id
    r = httpx.post(f'{ui}/graphql', json={'query': query}, timeout=30)
    assert r.status_code == 200, r.text[:500]  # 500 with "cannot import name 'ResolveInfo'" when graphene 2 meets graphql-core 3.3
    assert r.json()['data']['mlflowGetExperiment']['experiment']['name'] == 'mlpipeline', r.text[:500]


def shot(driver, name: str):
    "Save the page as it is now, to look at."
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS/f'{name}.png'))


def retrying(driver, read, timeout_s: float = 60):
    "`read(driver)` once it succeeds: React replaces elements while a page loads, leaving stale references behind."
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    def attempt(d):
        try: return read(d)
        except StaleElementReferenceException: return False
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(attempt)


def text_of(driver, css: str, text: str | None = None, timeout_s: float = 60) -> str:
    "The text of the first shown `css` element (containing `text`)."
    return retrying(driver, lambda d: wait_for(d, css, timeout_s, text).text, timeout_s)


def click(driver, css: str, text: str | None = None, timeout_s: float = 60):
    "Click the first shown `css` element (containing `text`)."
    retrying(driver, lambda d: wait_for(d, css, timeout_s, text).click() or True, timeout_s)


def cell(driver, col: str, text: str | None = None) -> str:
    "The text of the runs table's cell of column `col` (AG Grid's col-id) in the first row, once shown."
    return text_of(driver, f'.ag-row .ag-cell[col-id="{col}"]', text)


def test_the_ui_tells_the_runs_story(finished, ui, browser):
    "Runs table: the parent run with its dataset and test metric; run page: metrics, datasets, gate; version: metrics."
    import mlflow
    project, rd, r = finished
    m = json.loads((rd/'manifest.json').read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project/'mlruns.db'}")
    exp, rid = client.get_experiment_by_name('mlpipeline'), m['mlflow_run_id']
    assert exp.tags['mlflow.experimentKind'] == 'custom_model_development'
    roc = str(json.loads((rd/'artifacts/metrics.json').read_text())['roc_auc'])  # as JavaScript prints it too
    train = f"train ({m['stages']['03_features']['outputs']['train']['sha256'][:16]})"
    reg = json.loads((rd/'artifacts/registered.json').read_text())
    browser.set_window_size(1920, 1080)  # the table's columns and the assistant's panel side by side
    said = next(line for line in r.stdout.splitlines() if line.startswith('MLflow: '))  # where the run says to look
    runs = f'http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs'
    assert said.endswith(f', then open {runs}?workflowType=machine_learning)'), said  # "Model training", not GenAI
    runs = runs.replace('http://127.0.0.1:5000', ui)
    browser.get(f'{runs}?workflowType=machine_learning')
    text_of(browser, f'.ag-row a[href$="/runs/{rid}"]', rd.name)  # the parent run is the table's row
    assert 'Training' in cell(browser, 'attributes.`Dataset`', train)  # its splits, by digest and context
    click(browser, 'button', 'Columns')  # metric columns are chosen per browser: show test_roc_auc
    browser.switch_to.active_element.send_keys('test_roc_auc')  # the column search has the focus
    click(browser, '.du-bois-light-tree-node-content-wrapper', 'test_roc_auc')
    browser.switch_to.active_element.send_keys('\ue00c')  # Escape closes the menu
    assert cell(browser, 'metrics.`test_roc_auc`', roc) == roc  # shown as '-' until its metrics arrive
    shot(browser, 'experiment-runs')
    browser.get(f'{runs}/{rid}?workflowType=machine_learning')
    note = text_of(browser, '[data-testid="note-editor-preview-content"]', 'Gate passed')
    assert f"Registered test-model version {reg['version']}" in note, note
    assert text_of(browser, 'div[role="row"]', 'test_roc_auc').split('\n') == ['test_roc_auc', roc]
    text_of(browser, 'span', train)
    gate = text_of(browser, 'span:has(> span[title="gate"])')
    assert gate.replace('\n', '') == 'gate: passed', gate
    shot(browser, 'parent-run')
    browser.get(f"{ui}/#/models/test-model/versions/{reg['version']}")
    click(browser, 'a[data-testid="source-model-link"]')  # the version's logged model
    row = text_of(browser, 'div[role="row"]', 'test_roc_auc').split('\n')
    assert row[0] == 'test_roc_auc' and row[1].startswith('test (#') and row[-1] == roc, row  # on the test split
    text_of(browser, 'a', 'test-model')  # its Model versions
    shot(browser, 'version-model')
