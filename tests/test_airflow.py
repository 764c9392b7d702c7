"""The pipeline on Airflow: the exported DAG file, one stage per task through the CLI, and `airflow dags test` end to end
in Airflow's own venv (REPO/.venv-airflow, built once and reused)."""
import ast, json, os, shutil, subprocess, sys, time
from pathlib import Path
import pytest
from mlpipeline.config import load_config
from mlpipeline.errors import StageFailed, UsageError
from mlpipeline.pipeline import STAGES, run_pipeline, execute_run
from mlpipeline.runfolder import read_manifest, lock_holder
from conftest import REPO, SAMPLE, mlpipeline, write_project, only_run, manifest, client_for

AIRFLOW_VENV = REPO/'.venv-airflow'
AIRFLOW_PACKAGES = ['apache-airflow==3.3.2']  # its standard provider (BashOperator, @task.branch) comes with it


@pytest.fixture(scope='session')
def airflow_cmd() -> Path:
    "The `airflow` command of its own venv: reused when it imports, else built (a few minutes, once)."
    py = AIRFLOW_VENV/'bin/python'
    check = [str(py), '-c', 'import airflow.sdk, airflow.providers.standard.operators.bash']
    if not (py.exists() and subprocess.run(check, capture_output=True, timeout=300).returncode == 0):
        shutil.rmtree(AIRFLOW_VENV, ignore_errors=True)
        subprocess.run([shutil.which('python3.11') or sys.executable, '-m', 'venv', str(AIRFLOW_VENV)], check=True, timeout=300)
        r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', *AIRFLOW_PACKAGES], capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, r.stderr[-3000:]
    return AIRFLOW_VENV/'bin/airflow'


def airflow(cmd: Path, home: Path, *args, timeout=900) -> subprocess.CompletedProcess:
    "Run `airflow` with its home and DAG folder in `home` (SQLite metadata), as a scheduler host would."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AIRFLOW', 'MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID'))}
    env |= {'AIRFLOW_HOME': str(home), 'AIRFLOW__CORE__DAGS_FOLDER': str(home/'dags'), 'AIRFLOW__CORE__LOAD_EXAMPLES': 'False'}
    return subprocess.run([str(cmd), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=home)


def export(project: Path, dags: Path) -> Path:
    r = mlpipeline('export', 'airflow', '--out', str(dags), cwd=project)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


def test_exported_file_parses_and_names_every_stage(tmp_path):
    project = write_project(tmp_path/'project', airflow={'dag_id': 'churn', 'retries': 3}, schedule={'train': '0 3 * * 1', 'strict': False})
    dag = export(project, tmp_path/'dags')
    assert dag == tmp_path/'dags/churn.py'
    r = subprocess.run([sys.executable, '-c', f'compile(open({str(dag)!r}).read(), "dag", "exec")'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    consts = {n.targets[0].id: n.value for n in ast.parse(dag.read_text()).body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    assert ast.literal_eval(consts['STAGES']) == STAGES and ast.literal_eval(consts['DAG_ID']) == 'churn'
    assert ast.literal_eval(consts['PROJECT']) == str(project.resolve()) and Path(ast.literal_eval(consts['MLPIPELINE'])).exists()
    text = dag.read_text()
    assert "'retries': 3" in text and str(project.resolve()/'capture/test-model') in text
    assert "schedule='0 3 * * 1'" in text and "STRICT, RETRAIN = 'fresh', False, True" in text
    write_project(project, airflow={'retries': -1})
    r = mlpipeline('export', 'airflow', '--out', str(tmp_path/'dags'), cwd=project)
    assert r.returncode == 2 and 'airflow.retries' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_one_stage_per_call_and_a_failed_stage_retried(tmp_path):
    data = tmp_path/'data.csv'
    shutil.copy(SAMPLE, data)
    project = write_project(tmp_path/'project', data={'path': str(data), 'id_column': 'rownames'})
    cfg = load_config(project=project)
    rd = run_pipeline(project=project, create_only=True)
    m = read_manifest(rd)
    assert m['stages'] == {} and m.get('mlflow_run_id')  # a run folder and its parent run, no stage
    client = client_for(project)
    with pytest.raises(UsageError, match='an earlier stage, 01_ingest, has not completed'): execute_run(rd, cfg, False, 'fresh', only='02_validate')
    data.rename(tmp_path/'gone.csv')  # the first try fails ...
    with pytest.raises(StageFailed, match='01_ingest'): execute_run(rd, cfg, False, 'fresh', only='01_ingest')
    assert read_manifest(rd)['stages']['01_ingest']['status'] == 'failed' and client.get_run(m['mlflow_run_id']).info.status == 'FAILED'
    (tmp_path/'gone.csv').rename(data)  # ... the retry, same call, succeeds and reopens the parent run
    execute_run(rd, cfg, False, 'fresh', only='01_ingest')
    m = read_manifest(rd)
    assert m['stages']['01_ingest']['status'] == 'complete' and m['status'] == 'running' and '02_validate' not in m['stages']
    assert client.get_run(m['mlflow_run_id']).info.status == 'RUNNING'
    execute_run(rd, cfg, False, 'fresh', only='01_ingest')  # complete already: nothing runs again
    assert read_manifest(rd)['stages']['01_ingest'] == m['stages']['01_ingest']
    children = client.search_runs([client.get_run(m['mlflow_run_id']).info.experiment_id], f"tags.mlflow.parentRunId = '{m['mlflow_run_id']}'")
    assert sorted(c.info.run_name for c in children) == ['01_ingest', '01_ingest']  # the failed try and the retry


@pytest.fixture(scope='module')
def dag_run(airflow_cmd, tmp_path_factory):
    "The training DAG of a project on the test sample, run by `airflow dags test`; the project, result and wall time."
    home = tmp_path_factory.mktemp('airflow')
    project = write_project(home/'project', airflow={'monitor_data': str(SAMPLE)}, schedule={'strict': False})  # the checkout has uncommitted code
    export(project, home/'dags')
    r = airflow(airflow_cmd, home, 'db', 'migrate', timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    t = time.perf_counter()
    r = airflow(airflow_cmd, home, 'dags', 'test', 'mlpipeline')
    seconds = time.perf_counter() - t
    print(f'airflow dags test mlpipeline: {seconds:.0f} s')
    return project, home, airflow_cmd, r, seconds


def layout(rd: Path) -> dict:
    "A run folder's file names: notebooks, data/ and artifacts/ (nested files by their relative path)."
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob('*') if p.is_file() and not p.name.startswith('.'))
    return {'notebooks': sorted(p.name for p in rd.glob('*.ipynb')), 'data': files(rd/'data'), 'artifacts': files(rd/'artifacts'),
            'top': sorted(p.name for p in rd.iterdir() if p.is_file() and p.suffix != '.ipynb' and not p.name.startswith('.'))}


@pytest.mark.slow
def test_airflow_dag_runs_the_pipeline_like_mlpipeline_run(dag_run, finished):
    project, home, _, r, seconds = dag_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    rd = only_run(project)
    assert layout(rd) == layout(finished[1])
    m = manifest(rd)
    assert m['status'] == 'complete' and list(m['stages']) == STAGES and all(m['stages'][s]['status'] == 'complete' for s in STAGES)
    assert lock_holder(rd/'.lock') is None
    client = client_for(project)
    parent = client.get_run(m['mlflow_run_id'])
    assert parent.info.status == 'FINISHED'
    runs = client.search_runs([parent.info.experiment_id])
    assert [x.info.run_id for x in runs if 'mlflow.parentRunId' not in x.data.tags] == [parent.info.run_id]  # one parent run
    children = [x for x in runs if x.data.tags.get('mlflow.parentRunId') == parent.info.run_id]
    assert sorted(c.info.run_name for c in children) == STAGES and all(c.info.status == 'FINISHED' for c in children)
    mv = client.get_model_version_by_alias('test-model', 'champion')
    assert str(mv.version) == '1' and mv.tags['run_folder'] == str(rd)
    assert seconds < 600, seconds


@pytest.mark.slow
def test_monitoring_dag_branches_on_the_decision(dag_run):
    project, home, cmd, r, _ = dag_run
    assert r.returncode == 0
    r = airflow(cmd, home, 'dags', 'test', 'mlpipeline-monitor')
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    summary, = (project/'monitoring/test-model').glob('*/summary.json')
    decision = json.loads(summary.read_text())['decision']['action']
    assert decision != 'retrain' and f'monitoring decision: {decision}' in r.stdout + r.stderr
    assert len(list((project/'runs').iterdir())) == 1  # the retrain branch was skipped: no second run folder
