"""CLI polish (issue 26): --version, --json on the read-only commands, the headline metric in `models list`, a closed
pipe, and one line per stage outside a terminal. Speed is measured in benchmarks/cli.py, not asserted here."""
import json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from importlib.metadata import version
import pytest
import mlpipeline as pkg
from mlpipeline import registry
from mlpipeline.config import load_config
from mlpipeline.stages import STAGES
from conftest import CLI, mlpipeline, client_for, write_project


def test_version_is_the_packages(tmp_path):
    r = mlpipeline('--version', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f'mlpipeline {pkg.__version__}\n'
    assert pkg.__version__ == version('mlpipeline')  # the installed distribution's, too


def test_models_json_holds_the_registrys_versions_aliases_and_metrics(finished):
    project, rd, _ = finished
    r = mlpipeline('models', 'list', '--json', cwd=project)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)  # the whole of stdout is one JSON document
    client = client_for(project)
    aliases = client.get_registered_model('test-model').aliases
    want = [{'version': int(mv.version), 'aliases': sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
             'metrics': {k.removeprefix('test.'): float(v) for k, v in mv.tags.items() if k.startswith('test.')},
             'run_folder': mv.tags['run_folder']} for mv in client.search_model_versions("name = 'test-model'")]
    assert [{k: g[k] for k in ('version', 'aliases', 'metrics', 'run_folder')} for g in got] == want
    metrics = json.loads((rd/'artifacts/metrics.json').read_text())
    assert got[0]['aliases'] == ['challenger', 'champion'] and got[0]['metric'] == 'roc_auc'
    assert got[0]['value'] == pytest.approx(metrics['roc_auc'], abs=1e-6)
    history = mlpipeline('models', 'history', '--json', cwd=project)
    log = registry.audit_log(load_config(project=project))
    assert json.loads(history.stdout) == log.to_dict(orient='records') and len(log) == 2


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f'{url}/health', timeout=2) as r: return r.status == 200
    except OSError: return False


@pytest.mark.slow  # 25-70 s on 2 cores: kept out of the everyday run; CI runs it
def test_models_through_a_tracking_server_equal_the_sqlite_read(finished, tmp_path):
    "A server goes through MlflowClient: a real `mlflow server` on a copy of the project's store answers the same."
    project, _, _ = finished
    shutil.copy(project/'mlruns.db', tmp_path/'mlruns.db')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    url, log = f'http://127.0.0.1:{port}', open(tmp_path/'server.log', 'w+')
    store = f"sqlite:///{tmp_path/'mlruns.db'}"
    server = subprocess.Popen([str(CLI.parent/'mlflow'), 'server', '--backend-store-uri', store, '--host', '127.0.0.1',
                               '--port', str(port), '--workers', '1'], cwd=tmp_path, stdout=log, stderr=log,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not serving(url):
            assert server.poll() is None and time.monotonic() < deadline, (log.seek(0), log.read())[1]
            time.sleep(0.5)
        for what in ('list', 'history'):
            direct = mlpipeline('models', what, '--json', cwd=project, env_extra={'MLFLOW_TRACKING_URI': store})
            served = mlpipeline('models', what, '--json', cwd=project, env_extra={'MLFLOW_TRACKING_URI': url})
            assert served.returncode == 0, served.stderr
            assert json.loads(served.stdout) == json.loads(direct.stdout) and len(json.loads(direct.stdout)) > 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(60)
        log.close()


def test_status_json_is_the_runs_stages(finished):
    project, rd, _ = finished
    r = mlpipeline('status', '--json', cwd=project)
    got = json.loads(r.stdout)
    assert r.returncode == 0 and [s['stage'] for s in got] == STAGES and {s['run_id'] for s in got} == {rd.name}
    assert all(s['status'] == 'complete' for s in got) and got[0]['outputs'] == ['raw', 'data_version']


def test_models_list_shows_the_headline_metric_and_the_alias(finished):
    project, rd, _ = finished
    r = mlpipeline('models', 'list', cwd=project)
    header, line = r.stdout.splitlines()
    roc_auc = json.loads((rd/'artifacts/metrics.json').read_text())['roc_auc']
    assert header.split()[:3] == ['version', 'aliases', 'metric']
    assert line.split()[:4] == ['1', 'challenger,champion', 'roc_auc', f'{roc_auc:.4f}'] and rd.name in line


def test_a_closed_pipe_ends_quietly(finished):
    project, rd, _ = finished
    for cmd, first in (('status | head -1', f'run {rd.name}: complete'), ('models list | true', None)):
        shell = f'{CLI} {cmd}; echo "exit ${{PIPESTATUS[0]}}"'
        r = subprocess.run(shell, shell=True, executable='/bin/bash', cwd=project, capture_output=True, text=True,
                           timeout=120)
        want = [first, 'exit 0'] if first else ['exit 0']  # the command's own exit code: the reader chose to stop
        assert r.stderr == '' and r.stdout.splitlines() == want, (cmd, r.stdout, r.stderr)


STAGE_LINE = r'\[(\d)/8\] (\S+) (done|cached \(run \S+\)) in \d+\.\ds'


@pytest.mark.slow
def test_a_piped_run_prints_one_line_per_stage_and_no_progress_bars(tmp_path):
    project = write_project(tmp_path/'project')
    for engine, ran in (('fresh', 'done'), ('warm', None)):  # the second run reuses what the first made
        r = mlpipeline('run', '--engine', engine, cwd=project, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert '\r' not in r.stderr + r.stdout and '%|' not in r.stderr, r.stderr[-2000:]
        lines = r.stderr.splitlines()
        assert lines[0].startswith('run ') and lines[0].endswith(f'({engine} engine)'), lines
        assert len(lines) == 1 + len(STAGES), lines
        found = [re.fullmatch(STAGE_LINE, line) for line in lines[1:]]
        assert all(found) and [m[2] for m in found] == STAGES, lines
        assert all(m[3] == ran for m in found) if ran else any(m[3].startswith('cached') for m in found), lines
