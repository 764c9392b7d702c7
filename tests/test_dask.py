"""The Dask backend for real: a distributed.LocalCluster of worker processes on this machine, the full pipeline's
stage functions on it, compared with the local backend on the same data."""
import json
import numpy as np, pandas as pd, pytest
import mlflow
from sklearn.metrics import roc_auc_score
from mlpipeline.compute import close_client, read_table
from mlpipeline.monitor import profile_partitions
from mlpipeline.monitor import profile_frame
from mlpipeline.runfolder import read_manifest
from mlpipeline.pipeline import STAGES
from mlpipeline.config import load_config
from mlpipeline.serve import predict_dask, predict_file
from conftest import SAMPLE, write_project, run_in_process, client_for

DASK = ('compute.backend=dask', 'compute.workers=2')


@pytest.fixture(scope='module', autouse=True)
def _cluster():
    "One local cluster for the module (the first stage starts it); closed after."
    yield
    close_client()


def registered_predictions(project, test: pd.DataFrame) -> np.ndarray:
    "The champion's answers for `test` through the registered pyfunc model, as the service loads it."
    mlflow.set_tracking_uri(f"sqlite:///{project/'mlruns.db'}")
    model = mlflow.pyfunc.load_model('models:/test-model@champion')
    out = model.predict(test.drop(columns=['churn']))
    return np.asarray(out.iloc[:, -1] if isinstance(out, pd.DataFrame) else out, dtype=float)


@pytest.mark.slow
def test_one_partition_gives_the_local_pipeline_exactly(tmp_path):
    "The test sample (one partition): the same schema, splits and transform as local, and a registered model predicting the same."
    local = run_in_process(write_project(tmp_path/'local'))
    dask = run_in_process(write_project(tmp_path/'dask'), *DASK)
    m = read_manifest(dask)
    assert all(m['stages'][s]['status'] == 'complete' for s in STAGES) and m['stages']['01_ingest']['backend'] == 'dask'
    assert (dask/'data/raw').is_dir() and (dask/'data/train').is_dir() and not (dask/'data/raw.parquet').exists()
    for a in ('schema.yaml', 'transform.json'): assert (dask/'artifacts'/a).read_text() == (local/'artifacts'/a).read_text(), a
    for k in ('train', 'valid', 'test'):
        assert sorted(pd.read_parquet(dask/f'data/{k}').rownames) == sorted(pd.read_parquet(local/f'data/{k}.parquet').rownames), k
    test = pd.read_parquet(local/'data/test.parquet')
    got, want = registered_predictions(tmp_path/'dask', test), registered_predictions(tmp_path/'local', test)
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()  # xgboost.dask sketches the same rows on its workers
    mv = client_for(tmp_path/'dask').get_model_version('test-model', '1')
    assert mv.tags['data_sha256'] == m['stages']['01_ingest']['data_sha256'] and mv.tags['task'] == 'binary'
    # batch scoring: partitions scored on the workers into a folder of parts, the same answers as the local chunked scoring
    batch = tmp_path/'batch'
    batch.mkdir()
    rows = pd.read_csv(SAMPLE).drop(columns=['churn'])
    for i in range(2): rows.iloc[i * 200:(i + 1) * 200].to_parquet(batch/f'{i}.parquet', index=False)
    cfg = load_config(project=tmp_path/'dask', overrides=list(DASK))
    got = predict_dask(cfg, batch, tmp_path/'scored')
    assert got['rows'] == 400 and got['partitions'] == 2 and len(list((tmp_path/'scored').glob('*.parquet'))) == 2
    want = predict_file(load_config(project=tmp_path/'dask'), batch/'0.parquet', tmp_path/'scored0.parquet', progress=False)
    a, b = pd.read_parquet(tmp_path/'scored').head(200), pd.read_parquet(tmp_path/'scored0.parquet')
    assert want['rows'] == 200 and list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b, check_dtype=False)


@pytest.mark.slow
def test_a_folder_of_parts_trains_a_model_like_the_local_one(tmp_path):
    "Four Parquet files: the schema from merged partition statistics is the local one; the model is as good on the same test rows."
    sample, folder = pd.read_csv(SAMPLE), tmp_path/'parts'
    folder.mkdir()
    rest, held = sample.iloc[:320], sample.iloc[320:]  # rows neither model trains on, to compare them by
    for i in range(4): rest.iloc[i::4].to_parquet(folder/f'part-{i}.parquet', index=False)
    held.to_csv(tmp_path/'held.csv', index=False)
    data, split = {'path': str(folder), 'id_column': 'rownames'}, {'holdout': str(tmp_path/'held.csv')}
    local = run_in_process(write_project(tmp_path/'local', data=data, split=split))
    dask = run_in_process(write_project(tmp_path/'dask', data=data, split=split), *DASK)
    assert read_table(dask/'data/raw').npartitions == 4
    assert (dask/'artifacts/schema.yaml').read_text() == (local/'artifacts/schema.yaml').read_text()
    sizes = {k: read_manifest(dask)['stages']['03_features']['outputs'][k]['rows'] for k in ('train', 'valid', 'test')}
    assert sizes['test'] == 80 and sizes['train'] + sizes['valid'] == 320 and abs(sizes['valid'] - 48) <= 4, sizes  # each partition split in the same shares
    got, want = registered_predictions(tmp_path/'dask', held), registered_predictions(tmp_path/'local', held)
    y = held.churn.eq('Yes')
    auc = roc_auc_score(y, got), roc_auc_score(y, want)
    print(f'holdout ROC-AUC dask {auc[0]:.4f} local {auc[1]:.4f}; mean |dp| {np.abs(got - want).mean():.4f}')
    # 270 training rows and other validation rows for early stopping: the models differ, not their quality
    assert abs(auc[0] - auc[1]) < 0.05 and np.abs(got - want).mean() < 0.1, (auc, np.abs(got - want).mean())
    # one more file: a new data version, the others' hashes taken from the cache
    v1 = read_manifest(dask)['stages']['01_ingest']['data_sha256']
    sample.head(40).assign(rownames=lambda d: d.rownames + 100_000).to_parquet(folder/'part-9.parquet', index=False)
    cache = json.loads((tmp_path/'dask/.mlpipeline/file_hashes.json').read_text())
    assert len(cache) == 4
    again = run_in_process(write_project(tmp_path/'dask', data=data), *DASK)
    m = read_manifest(again)['stages']['01_ingest']
    assert m['data_sha256'] != v1 and m['outputs']['raw']['rows'] == 360
    assert json.loads((tmp_path/'dask/.mlpipeline/file_hashes.json').read_text()).items() >= cache.items()


def test_merged_partition_profiles_equal_one_profile_of_the_rows():
    "whylogs profiles of 8 partitions merged: counts exactly those of one profile, quantiles within the sketch's error."
    import dask.dataframe as dd
    rows = pd.concat([pd.read_csv(SAMPLE)] * 25, ignore_index=True)
    rows['monthly_charges'] += np.random.default_rng(0).normal(0, 5, len(rows))  # distinct values, so ranks mean something
    merged = profile_partitions(dd.from_pandas(rows, npartitions=8)).to_pandas()
    one = profile_frame(rows).to_pandas()
    for k in ('counts/n', 'counts/null', 'types/integral', 'types/fractional', 'types/string'):
        assert merged[k].to_dict() == one[k].to_dict(), k
    x = np.sort(rows.monthly_charges.to_numpy())
    for q in ('distribution/q_25', 'distribution/median', 'distribution/q_75'):
        rank = lambda v: np.searchsorted(x, v) / len(x)
        assert abs(rank(merged.loc['monthly_charges', q]) - rank(one.loc['monthly_charges', q])) < 0.02, q  # KLL rank error ~1%
    assert merged.loc['contract', 'cardinality/est'] == pytest.approx(one.loc['contract', 'cardinality/est'], rel=0.01)
