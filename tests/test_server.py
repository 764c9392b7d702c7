"""`mlpipeline server` on a real PostgreSQL, two pipeline runs registering through it at once, and the registry lock."""
import os, signal, subprocess, sys, time, urllib.request, warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
from mlpipeline.config import load_config
from conftest import CLI, write_project


def free_port() -> int:
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f'{url}/health', timeout=2) as r: return r.status == 200
    except OSError: return False


@pytest.fixture(scope='module')
def server(pg_url, tmp_path_factory):
    "A real `mlpipeline server` process on a free port, its store in the test PostgreSQL; (url, project). SIGTERM after: exit 0."
    home = tmp_path_factory.mktemp('server')
    port, project = free_port(), write_project(home/'server-project')
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    log = open(home/'server.log', 'w+')
    proc = subprocess.Popen([str(CLI), 'server', '--port', str(port), '-p', f'server.backend_store_uri={pg_url}',
                             '-p', f"server.artifacts_destination={home/'artifacts'}"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 120
        while not healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, (log.seek(0), log.read())[1]
            time.sleep(0.5)
        assert proc.stdout.readline().strip() == url  # the command prints the tracking URI to put in the config
        yield url, home
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.seek(0)
        out = log.read()
        log.close()
        assert code == 0 and 'MLflow server stopped' in out, out
        assert not healthy(url)


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    return subprocess.Popen([str(CLI), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_concurrent_runs_register_through_the_server_without_a_lost_move(server):
    from mlpipeline import registry
    url, home = server
    project = write_project(home/'p', mlflow={'model_name': 'test-model', 'tracking_uri': url})
    # at once; two seeds make two builds (identical builds would reuse one version: a no-op run)
    runs = [run_cli('run', '--quiet', '--engine', 'warm', '-p', f'seed={s}', cwd=project) for s in (42, 43)]
    for p in runs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert f'MLflow: {url}' in out
    cfg = load_config(project=project)
    client = registry.registry_client(cfg)
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'test-model'"))
    assert versions == [1, 2]
    aliases = client.get_registered_model('test-model').aliases
    assert aliases['challenger'] == '2' and aliases['champion'] in ('1', '2')  # exactly one champion: an alias names one version
    assert [m.name for m in client.search_registered_models()] == ['test-model']  # the lock is released
    log = registry.audit_log(cfg).iloc[::-1]  # oldest first
    for alias, moves in log.groupby('alias', sort=False):
        chain = list(zip(moves.from_version, moves.to_version))
        assert chain[0][0] == '', chain  # the first move starts from nothing
        assert all(prev[1] == nxt[0] for prev, nxt in zip(chain, chain[1:])), chain  # no move lost: each starts where the last ended
    assert len(log[log.alias == 'challenger']) == 2 and 1 <= len(log[log.alias == 'champion']) <= 2
    # the CLI's registry commands work against the server too, and never show the lock model
    listed = run_cli('models', 'list', cwd=project).communicate(timeout=120)[0]
    assert 'challenger' in listed and '.lock' not in listed
    other = '2' if aliases['champion'] == '1' else '1'
    p = run_cli('promote', other, '--why', 'test', cwd=project)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and f"champion {aliases['champion']} -> {other}" in out, err
    champ = registry.audit_log(cfg, 'champion')
    assert (champ.from_version.iloc[0], champ.to_version.iloc[0]) == (aliases['champion'], other)


@pytest.mark.parametrize('store', ['sqlite', 'server'])
def test_registry_lock_excludes_breaks_stale_and_names_the_holder(store, request, tmp_path):
    from mlpipeline.registry import registry_client, try_lock, acquire_lock, registry_lock, lock_holder, move_alias, audit_log, mlflow_experiment
    uri = request.getfixturevalue('server')[0] if store == 'server' else f"sqlite:///{tmp_path/'mlruns.db'}"
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=[f'mlflow.tracking_uri={uri}', f'mlflow.model_name=lock-{store}'])
    client = registry_client(cfg)
    assert try_lock(client, f'lock-{store}.lock', 'a run that died')
    with pytest.raises(Exception, match='held by a run that died since'):
        acquire_lock(client, f'lock-{store}.lock', 'me', timeout_s=0.5, stale_s=60)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with registry_lock(cfg, stale_s=0.01): assert f'pid {os.getpid()}' in lock_holder(client, f'lock-{store}.lock')['holder']
    assert any('broke the stale registry lock' in str(x.message) for x in w)
    assert lock_holder(client, f'lock-{store}.lock') is None
    # alias moves from three threads at once (a read, a write and an audit record each): every record starts where the one
    # before ended; without the lock, records repeat a from_version and MLflow's alias insert can fail on the unique key
    client.create_registered_model(f'lock-{store}')
    run = client.create_run(experiment_id=mlflow_experiment(cfg))
    for _ in range(3): client.create_model_version(f'lock-{store}', source=f'runs:/{run.info.run_id}/model', run_id=run.info.run_id)
    with ThreadPoolExecutor(3) as ex:  # list(): a thread's error fails the test
        list(ex.map(lambda i: [move_alias(cfg, 'champion', (i + k) % 3 + 1, f'thread {i}') for k in range(2)], range(3)))
    chain = list(zip(*audit_log(cfg, 'champion').iloc[::-1][['from_version', 'to_version']].to_numpy().T))
    assert len(chain) == 6 and chain[0][0] == '' and all(a[1] == b[0] for a, b in zip(chain, chain[1:])), chain
    assert lock_holder(client, f'lock-{store}.lock') is None


def test_the_projects_own_postgres_starts_keeps_its_data_and_stops(tmp_path):
    import tempfile, psycopg, shutil
    from mlpipeline.server import backend_store, postgres_running, pg_bin
    home = Path(tempfile.mkdtemp(prefix='mlpipeline-own-pg-'))  # as root, the postgres user must reach it: not under pytest's private tmp
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=[f'server.postgres_dir={home}'])
    try:
        for round_ in range(2):  # initdb on first use, then the same data folder
            with backend_store(cfg) as url:
                with psycopg.connect(url.replace('+psycopg', ''), autocommit=True) as con:
                    if round_ == 0: con.execute('create table kept (x int)')
                    else: con.execute('select * from kept')
            assert not postgres_running(home/'data', pg_bin('pg_ctl'))
    finally: shutil.rmtree(home, ignore_errors=True)


def test_server_refuses_without_postgres_or_a_store(tmp_path, monkeypatch, capsys):
    from mlpipeline import server
    from mlpipeline.cli import main
    if server.pgserver_bin(): pytest.skip('pgserver is installed: it provides PostgreSQL')
    monkeypatch.setattr(server, 'PG_GLOBS', [])
    monkeypatch.setenv('PATH', str(Path(sys.executable).parent))
    project = write_project(tmp_path/'p')
    assert main(['server', '--config', str(project/'pipeline.yaml')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'no PostgreSQL to start for the tracking server' in err and 'server.backend_store_uri' in err, err
    assert not (project/'.mlpipeline/postgres').exists()


def test_server_refuses_an_unreachable_store_without_showing_its_password(tmp_path):
    project = write_project(tmp_path/'p')
    p = run_cli('server', '--port', str(free_port()), '-p', f'server.backend_store_uri=postgresql+psycopg://me:s3cret@127.0.0.1:{free_port()}/x', cwd=project)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and 'me:***@127.0.0.1' in err and 's3cret' not in out + err, err


@pytest.fixture
def no_pg_password(monkeypatch, tmp_path):
    "No password reaches libpq but the one a test passes: no PGPASSWORD, no ~/.pgpass."
    monkeypatch.delenv('PGPASSWORD', raising=False)
    monkeypatch.setenv('PGPASSFILE', str(tmp_path/'no-pgpass'))


def own_postgres_config(tmp_path):
    "A project whose own PostgreSQL lives in a fresh folder the postgres user can reach; (config, its folder, port)."
    import tempfile
    home, port = Path(tempfile.mkdtemp(prefix='mlpipeline-own-pg-')), free_port()
    over = [f'server.postgres_dir={home}', f'server.postgres_port={port}']
    return load_config(project=write_project(tmp_path/'p'), overrides=over), home, port


def connect_without_password(port: int):
    import psycopg
    return psycopg.connect(host='127.0.0.1', port=port, user='mlpipeline', dbname='mlflow', connect_timeout=10)


def test_the_projects_own_postgres_wants_its_password(tmp_path, no_pg_password, capsys):
    "The own PostgreSQL refuses a connection without the generated password, kept in a 0600 file and never printed."
    import psycopg, shutil, stat, sqlalchemy
    from mlpipeline.server import backend_store, create_database
    cfg, home, port = own_postgres_config(tmp_path)
    try:
        with backend_store(cfg) as url:
            password = (home/'password').read_text().strip()
            assert stat.S_IMODE((home/'password').stat().st_mode) == 0o600 and len(password) >= 32
            with pytest.raises(psycopg.OperationalError, match='password'): connect_without_password(port)
            with psycopg.connect(url.replace('+psycopg', ''), autocommit=True) as con:
                assert con.execute('select current_database()').fetchone()[0] == 'mlflow'
            quoted = sqlalchemy.engine.make_url(url).set(database='it"s; drop')
            create_database(quoted.render_as_string(hide_password=False))
            with psycopg.connect(url.replace('+psycopg', ''), autocommit=True) as con:
                assert con.execute("select 1 from pg_database where datname = 'it\"s; drop'").fetchone() == (1,)
        assert password not in capsys.readouterr().err
    finally: shutil.rmtree(home, ignore_errors=True)


def test_a_trust_cluster_of_an_older_version_gets_a_password(tmp_path, no_pg_password):
    "A data folder made with `initdb -A trust` (as versions before this one did) is switched to a password on start."
    import os, psycopg, shutil, subprocess
    from mlpipeline.server import backend_store, as_postgres, pg_bin
    cfg, home, port = own_postgres_config(tmp_path)
    if os.geteuid() == 0: shutil.chown(home, 'postgres')
    init = [pg_bin('initdb'), '-D', str(home/'data'), '-U', 'mlpipeline', '-A', 'trust', '-E', 'UTF8', '--no-sync']
    subprocess.run(as_postgres(*init), check=True, capture_output=True)
    try:
        with backend_store(cfg) as url:
            with pytest.raises(psycopg.OperationalError, match='password'): connect_without_password(port)
            with psycopg.connect(url.replace('+psycopg', ''), autocommit=True) as con: con.execute('create table kept (x int)')
        with backend_store(cfg) as url:  # the second start: the same password
            with psycopg.connect(url.replace('+psycopg', ''), autocommit=True) as con: con.execute('select * from kept')
    finally: shutil.rmtree(home, ignore_errors=True)
