"""The documented paths (docs/*.md), run as printed: Dask on the shipped pipeline.yaml, the retrain loop from the
service's capture (ids included), and warm start by `name@alias` and `name/version`."""
import importlib.resources, json, shutil
from pathlib import Path
import pandas as pd, pytest
from conftest import REPO, SAMPLE, write_project, run_in_process, mlpipeline, client_for, only_run, manifest
from test_serve import Server


def summary_of(stdout: str) -> dict:
    "The summary.json of the monitoring run whose report path the command printed."
    report = next(l for l in stdout.splitlines() if l.startswith('report: '))[8:]
    return json.loads((Path(report).parent/'summary.json').read_text())


def unseen_rows(n: int, seed: int = 5) -> pd.DataFrame:
    "`n` demo rows the test projects never trained on, within the sample's ranges, mostly new short-contract customers."
    demo, sample = pd.read_parquet(importlib.resources.files('mlpipeline')/'data/telco_churn.parquet'), pd.read_csv(SAMPLE)
    nums = sample.select_dtypes('number').columns.drop('rownames')
    inside = demo[nums].ge(sample[nums].min()).all(axis=1) & demo[nums].le(sample[nums].max()).all(axis=1)
    df = demo[~demo.rownames.isin(sample.rownames) & inside]
    w = ((df.contract == 'Month-to-month') & (df.tenure < 24)) * 7.0 + 1.0  # a clearly shifted population
    return df.sample(n, weights=w, random_state=seed).reset_index(drop=True)


@pytest.mark.slow
def test_retrain_from_the_capture_keeps_a_worse_model_and_promotes_a_better_one(tmp_path):
    "Requests with the id column go through the real service; labels join on that id; the gate decides on the models alone."
    project = write_project(tmp_path/'project', serve={'reload_s': 0.5, 'capture': {'flush_s': 0.3}, 'drain_s': 0.3},
                            monitor={'retrain': {'min_rows': 100, 'cooldown_h': 0, 'drift_share': 0.01}})
    run_in_process(project)
    rows = unseen_rows(1000)
    srv = Server(project)
    try:
        for i in range(0, len(rows), 20):  # the id column travels with each record, as docs/monitoring.md shows
            recs = json.loads(rows.drop(columns='churn').iloc[i:i + 20].to_json(orient='records'))
            assert srv.http.post('/predict', json=recs, headers={'X-Request-ID': f'r{i}'}).status_code == 200
    finally: srv.stop()  # SIGTERM writes what the capture still holds
    monitor = ['monitor', '--data', 'capture/test-model', '--labels', str(tmp_path/'labels.csv'), '--retrain', '--quiet']
    # 1. the true labels, and a retrain restricted to one stump: clearly worse than the champion, so kept, for that reason
    rows[['rownames', 'churn']].to_csv(tmp_path/'labels.csv', index=False)
    r = mlpipeline(*monitor, '-p', 'model.n_estimators=1', '-p', 'model.max_depth=1', cwd=project)
    assert r.returncode == 0, r.stderr
    d = summary_of(r.stdout)['decision']
    assert d['action'] == 'keep' and d['retrain']['gate_passed'] is False, d
    checks = ' | '.join(d['retrain']['gate'])  # the gate's checks, as registered.json records them
    assert 'FAIL roc_auc against champion version 1' in checks and 'cannot score' not in checks, checks
    client = client_for(project)
    assert str(client.get_model_version_by_alias('test-model', 'champion').version) == '1'
    window = pd.read_parquet(Path(summary_of(r.stdout)['folder'])/'retrain_data.parquet')
    assert window.rownames.dtype == 'int64' and window.female.dtype == 'int64'  # one type end to end
    # 2. relabelled: churn now follows `female`, which the champion never learnt; the retrain learns it and is promoted
    rows.assign(churn=rows.female.map({1: 'Yes', 0: 'No'}))[['rownames', 'churn']].to_csv(tmp_path/'labels.csv', index=False)
    r = mlpipeline(*monitor, cwd=project)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout)
    d = s['decision']
    assert d['action'] == 'promote' and d['retrain']['gate_passed'] is True, d
    assert s['performance_drop'] > 0.2 and d['retrain']['holdout_rows'] == 300, s
    assert str(client.get_model_version_by_alias('test-model', 'champion').version) == str(d['retrain']['version']) == '3'


@pytest.mark.slow
def test_warm_start_by_alias_and_by_version(tmp_path):
    "`-p warm_start.from=name@alias` and `name/version` both continue the champion's trees, with tuning and CV on in the config."
    project = write_project(tmp_path/'project', tuning={'method': 'random', 'trials': 3}, cv={'folds': 3})
    first = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert first.returncode == 0, first.stderr
    for ref in ('test-model@champion', 'test-model/1'):
        r = mlpipeline('run', '--quiet', '--engine', 'warm', '-p', f'warm_start.from={ref}', cwd=project)
        assert r.returncode == 0, (ref, r.stderr)
    runs = sorted(p for p in (project/'runs').iterdir() if p.is_dir())
    trained = [manifest(rd)['stages']['04_train'] for rd in runs]
    assert [t.get('warm_start_from') for t in trained] == [None, 'test-model/1', 'test-model/1']
    assert 'tuning' in trained[0]['outputs'] and not any('tuning' in t['outputs'] or 'cv' in t['outputs'] for t in trained[1:])
    assert all(t['base_rounds'] < t['rounds'] for t in trained[1:])
    assert 'tuning and cv skipped' in (runs[1]/'04_train.ipynb').read_text()


@pytest.mark.slow
def test_dask_runs_the_shipped_pipeline_yaml(tmp_path):
    "The repository's own pipeline.yaml with only `compute.backend=dask`: tuning (bayes) and 5-fold CV included."
    project = tmp_path/'project'
    project.mkdir()
    shutil.copy(REPO/'pipeline.yaml', project/'pipeline.yaml')
    r = mlpipeline('run', '-p', 'compute.backend=dask', cwd=project, timeout=1500)  # as docs/dask.md prints it
    assert r.returncode == 0, r.stderr
    rd = only_run(project)
    tuning = json.loads((rd/'artifacts/tuning.json').read_text())
    done = [t for t in tuning['trials'] if t['state'] == 'COMPLETE']
    assert tuning['method'] == 'bayes' and len(done) >= 5 and all(t['value'] is not None for t in done), tuning['trials'][:3]
    cv = json.loads((rd/'artifacts/cv.json').read_text())
    assert cv['metrics'] and all(len(m['scores']) == 5 for m in cv['metrics'].values()), cv
    assert json.loads((rd/'artifacts/registered.json').read_text())['version'] == 1
    assert manifest(rd)['stages']['04_train']['status'] == 'complete'
