"""Shared fixtures: a throw-away project on the test sample, with its own SQLite MLflow store."""
import http.server, os, subprocess, sys, json, threading
from pathlib import Path
import pytest, yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO/'tests/data/telco_sample.csv'
CLI = Path(sys.executable).parent/'mlpipeline'


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    "Tests never reach a tracking server or experiment named by the environment."
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    monkeypatch.delenv('MLFLOW_EXPERIMENT_ID', raising=False)


@pytest.fixture(scope='module', autouse=True)
def _no_exported_tracking_per_module():
    "Module fixtures run before the per-test cleanup: they too start without an earlier module's MLflow variables."
    forget_exported_tracking()


def write_project(path: Path, **overrides) -> Path:
    "A project folder whose pipeline.yaml runs the test sample with a small model."
    cfg = {'data': {'path': str(SAMPLE), 'id_column': 'rownames'}, 'target': 'churn',
           'model': {'n_estimators': 40, 'max_depth': 3}, 'mlflow': {'model_name': 'test-model'}}
    for k, v in overrides.items(): cfg[k] = v
    path.mkdir(parents=True, exist_ok=True)
    (path/'pipeline.yaml').write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def project(tmp_path):
    return write_project(tmp_path/'project')


def mlpipeline(*args, cwd, timeout=600, env_extra=None, **kw):
    "Run the real `mlpipeline` command in `cwd`, as a user would (with the variables `env_extra` added)."
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    env |= env_extra or {}
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def only_run(project: Path) -> Path:
    runs = [p for p in (project/'runs').iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir/'manifest.json').read_text())


def forget_exported_tracking():
    "Drop the store and experiment an earlier test's MLflow exported; module fixtures run before the autouse cleanup."
    for k in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID'): os.environ.pop(k, None)


def client_for(project: Path):
    "An MLflow client on the project's own SQLite store."
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{project/'mlruns.db'}")
    forget_exported_tracking()  # MLflow exports them; the next project must not inherit them
    return mlflow.MlflowClient()


def registered_models(project: Path) -> list:
    return client_for(project).search_registered_models() if (project/'mlruns.db').exists() else []


@pytest.fixture(scope='session')
def finished(tmp_path_factory):
    "One full run of the pipeline on the test sample, through the CLI, shared by the tests that only read it."
    project = write_project(tmp_path_factory.mktemp('full')/'project')
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)  # the fresh engine is tested on its own in test_cache
    assert r.returncode == 0, r.stderr
    return project, only_run(project), r


def run_in_process(project: Path, *overrides) -> Path:
    "Every stage's functions called in this process, as importing the modules gives them; the run folder."
    from mlpipeline.config import load_config
    from mlpipeline.runfolder import create_run
    from mlpipeline.pipeline import open_parent_run, close_parent_run
    from mlpipeline.stages import TABLE
    forget_exported_tracking()  # else an earlier test's (deleted) store could be this project's
    cfg = load_config(project=project, overrides=list(overrides))
    rd = create_run(cfg)
    rid = open_parent_run(rd, cfg)
    for s in TABLE: s.runner()(rd)  # each stage's function, as the stage table declares it
    close_parent_run(rd, rid, 'FINISHED')
    return rd


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a): pass


@pytest.fixture
def webhook():
    "A real HTTP server on 127.0.0.1 recording the JSON bodies POSTed to it: its URL and the bodies."
    _Hook.received = []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/alerts', _Hook.received
    srv.shutdown()
    srv.server_close()


def pg_bin(name: str) -> str:
    "A PostgreSQL program: on PATH or in /usr/lib/postgresql/*/bin; the test fails (as CI installs it) when missing."
    import glob, shutil
    found = shutil.which(name) or next(iter(sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'), reverse=True)), None)
    if not found: pytest.fail(f'{name} not found: install PostgreSQL (apt-get install -y postgresql), as .ci/run does')
    return found


def as_postgres(*cmd):
    "PostgreSQL refuses to run as root: run as the postgres user then."
    return (['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []) + list(cmd)


@pytest.fixture(scope='module')
def pg_url():
    "A real PostgreSQL on 127.0.0.1 (a free port, trust auth, user tester) for the module; stopped and removed after it."
    import shutil, socket, tempfile
    home = Path(tempfile.mkdtemp(prefix='mlpipeline-pg-'))
    if os.geteuid() == 0: shutil.chown(home, 'postgres')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    data = home/'data'
    subprocess.run(as_postgres(pg_bin('initdb'), '-D', str(data), '-A', 'trust', '-U', 'tester', '--no-sync'), check=True, capture_output=True)
    subprocess.run(as_postgres(pg_bin('pg_ctl'), '-D', str(data), '-w', '-l', str(home/'log'), '-o',
                               f'-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off', 'start'), check=True, capture_output=True)
    try: yield f'postgresql+psycopg://tester@127.0.0.1:{port}/postgres'
    finally:
        subprocess.run(as_postgres(pg_bin('pg_ctl'), '-D', str(data), '-m', 'immediate', 'stop'), capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    "Keep each phase's report on the test item, so fixtures can tell a failed call (browser screenshots)."
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f'rep_{rep.when}', rep)


@pytest.fixture
def browser(request):
    "Headless Chromium for a test; on failure the page is saved as PNG and HTML under the system's temporary folder."
    import tempfile
    from browser import chromium, screenshot_on_failure
    with chromium() as driver:
        yield driver
        screenshot_on_failure(driver, request, Path(tempfile.gettempdir())/'mlpipeline-screenshots')
