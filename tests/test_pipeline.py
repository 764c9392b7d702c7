"""The runner end to end, in real processes: papermill kernels, a SQLite MLflow store, the Model Registry."""
import json, os, signal, subprocess, sys, time
import pandas as pd, pytest
from mlpipeline.pipeline import STAGES
from mlpipeline.runfolder import lock_holder
from conftest import CLI, SAMPLE, mlpipeline, write_project, only_run, manifest, client_for, registered_models




def test_full_run_leaves_executed_notebooks_and_a_complete_manifest(finished):
    project, rd, r = finished
    m = manifest(rd)
    assert m['status'] == 'complete' and list(m['stages']) == STAGES
    for s in STAGES:
        assert m['stages'][s]['status'] == 'complete' and (rd/f'{s}.ipynb').exists(), s
        for o in m['stages'][s]['outputs'].values(): assert (rd/o['path']).exists()
    assert m['stages']['01_ingest']['outputs']['raw']['rows'] == 400
    assert sum(m['stages']['03_features']['outputs'][k]['rows'] for k in ('train', 'valid', 'test')) == 400
    assert f'run folder: {rd}' in r.stdout and 'registered: test-model version 1 (challenger, champion)' in r.stdout
    status = mlpipeline('status', cwd=project)
    assert status.returncode == 0 and status.stdout.count('complete') == len(STAGES) + 1


def test_mlflow_has_a_parent_run_with_a_child_per_stage_and_a_champion(finished):
    project, rd, _ = finished
    client = client_for(project)
    parent = client.get_run(manifest(rd)['mlflow_run_id'])
    assert parent.info.status == 'FINISHED' and parent.data.params['target'] == 'churn'
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == STAGES
    assert all(c.info.status == 'FINISHED' for c in children)
    notebooks = {a.path for a in client.list_artifacts(parent.info.run_id, 'notebooks')}
    assert notebooks == {f'notebooks/{s}.ipynb' for s in STAGES}
    evaluate = next(c for c in children if c.info.run_name == '05_evaluate')
    metrics = json.loads((rd/'artifacts/metrics.json').read_text())
    assert evaluate.data.metrics['test_roc_auc'] == pytest.approx(metrics['roc_auc']) and 0.6 < metrics['roc_auc'] <= 1
    mv = client.get_model_version_by_alias('test-model', 'champion')
    assert str(mv.version) == '1' and mv.tags['data_sha256'] == manifest(rd)['stages']['01_ingest']['data_sha256']
    assert mv.tags['run_folder'] == str(rd) and mv.tags['reference_profile'].endswith('profiles/reference.bin')


def test_champion_loads_in_a_fresh_process_and_predicts_as_evaluated(finished):
    project, rd, _ = finished
    code = (f"import mlflow, pandas as pd; mlflow.set_tracking_uri('sqlite:///{project/'mlruns.db'}');"
            f"m = mlflow.pyfunc.load_model('models:/test-model@champion');"
            f"print(m.predict(pd.read_parquet('{rd/'data/test.parquet'}').drop(columns=['churn'])).to_json(orient='split'))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd='/')
    assert out.returncode == 0, out.stderr
    got = pd.read_json(__import__('io').StringIO(out.stdout), orient='split')
    want = pd.read_parquet(rd/'data/test_predictions.parquet')
    assert (got[want.columns] - want).abs().max().max() < 1e-6
    assert set(got.prediction) <= {'No', 'Yes'}


@pytest.mark.slow  # 25-70 s on 2 cores: kept out of the everyday run; CI runs it
def test_refused_data_stops_before_training_with_exit_code_3(tmp_path):
    df = pd.read_csv(SAMPLE).assign(churn='No')  # a target with one class
    df.to_csv(tmp_path/'one_class.csv', index=False)
    project = write_project(tmp_path/'project', data={'path': str(tmp_path/'one_class.csv'), 'id_column': 'rownames'})
    r = mlpipeline('run', '--quiet', cwd=project)
    rd = only_run(project)
    assert r.returncode == 3, r.stderr
    assert 'stage 02_validate failed' in r.stderr and "column 'churn': target_constant" in r.stderr
    assert f'{rd}/02_validate.ipynb' in r.stderr and 'Traceback' not in r.stderr
    m = manifest(rd)
    assert m['stages']['02_validate']['status'] == 'failed' and '03_features' not in m['stages']
    assert not (rd/'03_features.ipynb').exists() and registered_models(project) == []


def test_a_stage_that_raises_stops_the_run_and_names_stage_cell_and_notebook(tmp_path):
    project = write_project(tmp_path/'project')
    r = mlpipeline('run', '--quiet', '--engine', 'warm', '-p', 'model.max_depth=-3', cwd=project)  # the fresh engine's failure: the test above
    rd = only_run(project)
    assert r.returncode == 1, r.stderr
    first = next(l for l in r.stderr.splitlines() if l.startswith('mlpipeline:'))
    assert first.startswith('mlpipeline: stage 04_train failed at In [') and 'XGBoostError' in first and 'max_depth' in first
    executed = rd/'04_train.ipynb'
    assert f'The executed notebook with the full traceback is {executed}' in r.stderr
    errors = [o for c in json.loads(executed.read_text())['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert errors and errors[0]['ename'] == 'XGBoostError'
    assert not (rd/'05_evaluate.ipynb').exists() and registered_models(project) == []
    parent = client_for(project).get_run(manifest(rd)['mlflow_run_id'])
    assert parent.info.status == 'FAILED'


@pytest.mark.slow
def test_resume_finishes_a_killed_run_without_redoing_finished_stages(tmp_path):
    project = write_project(tmp_path/'project')
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    p = subprocess.Popen([str(CLI), 'run', '--quiet'], cwd=project, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = list((project/'runs').glob('*/manifest.json'))
        if runs and manifest(runs[0].parent)['stages'].get('03_features', {}).get('status') == 'complete': break
        assert p.poll() is None, 'the run ended before it could be killed'
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    rd = only_run(project)
    before = manifest(rd)
    assert before.get('status') != 'complete'  # killed: no finished run
    assert (rd/'.lock').read_text().strip().isdigit() and lock_holder(rd/'.lock') is None  # its pid left, no lock held
    r = mlpipeline('run', '--quiet', '--resume', rd.name, cwd=project)
    assert r.returncode == 0, r.stderr
    after = manifest(rd)
    assert after['status'] == 'complete' and after['mlflow_run_id'] == before['mlflow_run_id']
    for s in ('01_ingest', '02_validate', '03_features'): assert after['stages'][s] == before['stages'][s], s
    assert all(after['stages'][s]['status'] == 'complete' for s in STAGES)
    assert str(client_for(project).get_model_version_by_alias('test-model', 'champion').version) == '1'
    assert lock_holder(rd/'.lock') is None


@pytest.mark.parametrize('args, message', [
    (['-p', 'tuning.methd=grid'], "config key 'tuning.methd'"),
    (['-p', 'task=clustering'], "'clustering' is not one of auto, binary, multiclass, regression"),
    (['-p', 'split.test=0.9'], 'together below 0.9'),
    (['--resume', 'nope'], "no run folder 'nope'"),
    (['--config', 'missing.yaml'], 'no config file at missing.yaml'),
])
def test_bad_usage_exits_2_before_any_kernel_starts(project, args, message):
    r = mlpipeline('run', *args, cwd=project)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (project/'runs').exists() or not any((project/'runs').iterdir())


@pytest.mark.slow
def test_sigterm_marks_the_run_failed_at_its_stage_and_it_resumes(tmp_path):
    "Issue 22 item 12: SIGTERM (a container stop, a scheduler) used to leave the run and its MLflow run 'running'."
    project = write_project(tmp_path/'project')
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    p = subprocess.Popen([str(CLI), 'run', '--quiet'], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = list((project/'runs').glob('*/manifest.json'))
        if runs and manifest(runs[0].parent)['stages'].get('03_features', {}).get('status') == 'complete': break
        assert p.poll() is None, 'the run ended before it could be stopped'
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143 and 'terminated (SIGTERM)' in err, (p.returncode, err[-2000:])
    rd = only_run(project)
    m = manifest(rd)
    failed = [s for s, e in m['stages'].items() if e['status'] == 'failed']
    assert m['status'] == 'failed' and len(failed) == 1 and m['stages'][failed[0]]['error'] == 'SIGTERM', m
    assert client_for(project).get_run(m['mlflow_run_id']).info.status == 'FAILED'
    r = mlpipeline('run', '--quiet', '--resume', rd.name, cwd=project)
    assert r.returncode == 0 and manifest(rd)['status'] == 'complete', r.stderr
