"""The MLflow UI as the README starts it: its GraphQL endpoint (which every experiment and run page calls) answers."""
import os, signal, subprocess, sys, time
from pathlib import Path
import httpx, pytest

MLFLOW = Path(sys.executable).parent/'mlflow'


def test_the_readme_mlflow_ui_answers_graphql(finished):
    "`.venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db` in the project, as printed: /graphql names the experiment."
    import mlflow
    project, _, _ = finished
    cmd = '.venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db'  # the README's line; .venv/bin is this venv's
    proc = subprocess.Popen([str(MLFLOW), *cmd.split()[1:]], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its workers are stopped with it
    try:
        t = time.time()
        while time.time() - t < 90:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get('http://127.0.0.1:5000/health', timeout=2).status_code == 200: break
            except httpx.TransportError: time.sleep(0.5)
        else: pytest.fail('mlflow ui did not answer /health in 90 s')
        exp = mlflow.MlflowClient(f"sqlite:///{project/'mlruns.db'}").get_experiment_by_name('mlpipeline')
        query = 'query { mlflowGetExperiment(input: {experimentId: "%s"}) { experiment { name } } }' % exp.experiment_id
        r = httpx.post('http://127.0.0.1:5000/graphql', json={'query': query}, timeout=30)
        assert r.status_code == 200, r.text[:500]  # 500 with "cannot import name 'ResolveInfo'" when graphene 2 meets graphql-core 3.3
        assert r.json()['data']['mlflowGetExperiment']['experiment']['name'] == 'mlpipeline', r.text[:500]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
