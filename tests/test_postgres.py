"""Ingestion from a real PostgreSQL server, started on 127.0.0.1 for this module and stopped after it (conftest's pg_url)."""
import pandas as pd, pytest, sqlalchemy
from mlpipeline.config import load_config
from mlpipeline.errors import SourceError
from mlpipeline.ingest import load_data, data_version
from conftest import SAMPLE, write_project


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
