"""Secrets in the config (issue 22 item 6): a real HTTP source on 127.0.0.1 that wants basic auth and an API key; the
pipeline run through the CLI reads it, and the password and key appear in nothing the run wrote or logged."""
import base64, http.server, json, secrets, threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
import pandas as pd, pytest, yaml
from conftest import SAMPLE, write_project, mlpipeline, client_for, only_run

PASSWORD, API_KEY = f'pw-{secrets.token_hex(8)}', f'key-{secrets.token_hex(8)}'


class _Rows(http.server.BaseHTTPRequestHandler):
    "The test sample as a JSON list, for a request with the right basic auth and api_key; else 401."
    seen: list = []
    drop = 0  # connections to close unanswered: urllib3 retries them and logs a warning quoting the URL
    def do_GET(self):
        if _Rows.drop:
            _Rows.drop -= 1
            self.close_connection = True
            return
        auth = 'Basic ' + base64.b64encode(f'reader:{PASSWORD}'.encode()).decode()
        ok = self.headers.get('Authorization') == auth and parse_qs(urlsplit(self.path).query).get('api_key') == [API_KEY]
        _Rows.seen.append(ok)
        body = pd.read_csv(SAMPLE).to_json(orient='records').encode() if ok else b'{"error": "unauthorised"}'
        self.send_response(200 if ok else 401)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass


@pytest.fixture(scope='module')
def source():
    "The base URL of a real HTTP server on 127.0.0.1 serving the sample behind basic auth and an API key."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Rows)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def leaks(project: Path, *texts: str, skip=('pipeline.yaml',)) -> list:
    "Every place under `project` (files, MLflow params and tags of every run) and in `texts` that holds a secret."
    found = [str(f) for f in project.rglob('*') if f.is_file() and f.name not in skip
             and any(s.encode() in f.read_bytes() for s in (PASSWORD, API_KEY))]
    found += [f'text {i}' for i, t in enumerate(texts) if PASSWORD in t or API_KEY in t]
    client = client_for(project)
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            pairs = {**run.data.params, **run.data.tags}
            found += [f'run {run.info.run_name} {k}' for k, v in pairs.items() if PASSWORD in str(v) or API_KEY in str(v)]
    return found


@pytest.mark.slow
def test_a_literal_secret_is_written_nowhere_and_resume_still_works(tmp_path, source):
    "Secrets written in pipeline.yaml: created with --create-only, run by a second process with --resume."
    url = f'http://reader:{PASSWORD}@{source}/rows?page=1&api_key={API_KEY}'
    project = write_project(tmp_path/'project', data={'path': url, 'source': 'http', 'id_column': 'rownames'})
    _Rows.seen, _Rows.drop = [], 1
    made = mlpipeline('run', '--create-only', cwd=project)
    assert made.returncode == 0, made.stderr
    rid = made.stdout.strip().removeprefix('run_id=')
    saved = yaml.safe_load((only_run(project)/'config.yaml').read_text())
    assert saved['data']['path'] == (f'http://reader:${{MLPIPELINE_SECRET_DATA_PATH_PASSWORD}}@{source}/rows?page=1'
                                     '&api_key=${MLPIPELINE_SECRET_DATA_PATH_API_KEY}')
    r = mlpipeline('run', '--resume', rid, '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 0, r.stderr
    assert _Rows.seen and all(_Rows.seen) and _Rows.drop == 0, _Rows.seen  # read, after a retry, with the password and key
    run = only_run(project)
    assert json.loads((run/'manifest.json').read_text())['status'] == 'complete'
    assert {'01_ingest.ipynb', '06_register.ipynb'} <= {p.name for p in run.glob('*.ipynb')}
    assert leaks(project, made.stdout, made.stderr, r.stdout, r.stderr) == []


@pytest.mark.slow  # four CLI runs, two with a kernel: 71 s at best here
def test_environment_references_and_a_refused_source(tmp_path, source):
    "`${VAR}` references are read from the environment and never written back; a refused read names no secret."
    url = f'http://reader:${{SRC_PASSWORD}}@{source}/rows?api_key=${{SRC_KEY}}'
    project = write_project(tmp_path/'project', data={'path': url, 'source': 'http', 'id_column': 'rownames'})
    unset = mlpipeline('run', '--quiet', cwd=project)
    assert unset.returncode == 2 and "config key 'data.path'" in unset.stderr and 'SRC_PASSWORD' in unset.stderr, unset.stderr
    assert not (project/'runs').exists() or not list((project/'runs').iterdir())  # refused before a run folder is made
    env = {'SRC_PASSWORD': PASSWORD, 'SRC_KEY': API_KEY}
    made = mlpipeline('run', '--create-only', cwd=project, env_extra=env)
    rid = made.stdout.strip().removeprefix('run_id=')
    r = mlpipeline('run', '--resume', rid, '--only', '01_ingest', '--quiet', '--engine', 'warm', cwd=project, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((only_run(project)/'config.yaml').read_text())['data']['path'] == url
    assert len(pd.read_parquet(only_run(project)/'data/raw.parquet')) == 400
    wrong = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project, env_extra=env | {'SRC_KEY': API_KEY + 'x'})
    assert wrong.returncode == 1 and 'api_key=***' in wrong.stderr and '401' in wrong.stderr, wrong.stderr
    assert leaks(project, made.stdout, made.stderr, r.stdout, r.stderr, wrong.stdout, wrong.stderr, skip=()) == []
