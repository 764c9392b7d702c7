"""Ingestion from a real PostgreSQL server, started on 127.0.0.1 for this module and stopped after it."""
import glob, os, shutil, socket, subprocess, tempfile
from pathlib import Path
import pandas as pd, pytest, sqlalchemy
from mlpipeline.config import load_config
from mlpipeline.errors import SourceError
from mlpipeline.ingest import load_data, data_version
from conftest import SAMPLE, write_project


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'), reverse=True)), None)
    if not found: pytest.fail(f'{name} not found: install PostgreSQL (apt-get install -y postgresql), as .ci/run does')
    return found


def as_postgres(*cmd):
    "PostgreSQL refuses to run as root: run as the postgres user then."
    return (['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []) + list(cmd)


@pytest.fixture(scope='module')
def pg_url():
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


def test_postgres_query_gives_the_same_data_version_as_the_csv(pg_url, tmp_path):
    sample = pd.read_csv(SAMPLE)
    engine = sqlalchemy.create_engine(pg_url)
    sample.to_sql('customers', engine, index=False, if_exists='replace')
    cfg = load_config(project=write_project(tmp_path/'p'), overrides=[f'data.url={pg_url}', 'data.query=select * from customers order by rownames'])
    got = load_data(cfg)
    want = sample.sort_values('rownames').reset_index(drop=True)
    assert got.shape == (400, 21) and int(got.total_charges.isna().sum()) == 1
    assert data_version(got)['sha256'] == data_version(want)['sha256']


def test_postgres_errors_name_the_source_without_the_password(pg_url, tmp_path):
    p = write_project(tmp_path/'p')
    with pytest.raises(SourceError, match='relation "nope" does not exist'):
        load_data(load_config(project=p, overrides=[f'data.url={pg_url}', 'data.query=select * from nope']))
    with pytest.raises(SourceError) as e:
        load_data(load_config(project=p, overrides=['data.url=postgresql+psycopg://me:s3cret@127.0.0.1:9/x', 'data.query=select 1']))
    assert 'me:***@127.0.0.1:9/x' in str(e.value) and 's3cret' not in str(e.value) and 'the query failed' in str(e.value)
