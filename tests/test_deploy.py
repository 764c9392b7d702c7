"""Deployment: a version served from a saved folder with no tracking store, the champion's container image run on
127.0.0.1 with podman, the Kubernetes manifests under `kubernetes-validate --strict` and `podman kube play`, and the
blue-green pair and its release commands."""
import contextlib, json, os, shutil, subprocess, time, uuid
from pathlib import Path
import httpx, pytest, yaml
from conftest import CLI, write_project, run_in_process, client_for, mlpipeline
from test_serve import Server, free_port, records
from mlpipeline.deploy import (k8s_manifests, write_manifests, switch, live_colour, container_engine, engine_env,
                               PORT, USER_ID)
from mlpipeline.config import load_config

K8S_VERSIONS = ('1.33.0', '1.34.0', '1.35.0', '1.36.0', '1.37.0')  # the supported Kubernetes versions
VALIDATE = Path(CLI).with_name('kubernetes-validate')
INFO = {'name': 'test-model', 'version': '1', 'alias': 'champion'}


def validate(*files, version='1.37.0') -> subprocess.CompletedProcess:
    return subprocess.run([str(VALIDATE), '--strict', '--quiet', '-k', version, *map(str, files)], capture_output=True, text=True)


@pytest.mark.parametrize('strategy', ['rolling', 'blue-green'])
def test_manifests_pass_kubernetes_validate_strict(tmp_path, strategy):
    files = write_manifests(k8s_manifests(load_config(project=tmp_path), INFO, 'localhost/test-model:1', strategy), tmp_path/'k8s')
    kinds = sorted(yaml.safe_load(f.read_text())['kind'] for f in files)
    want = ['Deployment', 'HorizontalPodAutoscaler', 'Kustomization', 'PodDisruptionBudget', 'Service']
    assert kinds == (want if strategy == 'rolling' else sorted(want + ['Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget']))
    resources = [f for f in files if f.name != 'kustomization.yaml']
    assert yaml.safe_load((tmp_path/'k8s/kustomization.yaml').read_text())['resources'] == sorted(f.name for f in resources)
    for v in K8S_VERSIONS:
        r = validate(*resources, version=v)
        assert r.returncode == 0, (v, r.stdout, r.stderr)
    # --strict refuses what Kubernetes would not know: the check is live
    bad = yaml.safe_load(resources[0].read_text())
    bad['spec']['template']['spec']['containers'][0]['readinesProbe'] = {}
    (tmp_path/'bad.yaml').write_text(yaml.safe_dump(bad))
    assert validate(tmp_path/'bad.yaml').returncode != 0


def test_blue_green_switch_moves_only_the_selector(tmp_path):
    docs = k8s_manifests(load_config(project=tmp_path), INFO, 'localhost/test-model:1', 'blue-green', live='blue')
    svc = docs['service.yaml']
    assert live_colour(svc) == 'blue'
    green = switch(svc, 'green')
    assert green['spec']['selector'] == {'app': 'test-model', 'colour': 'green'} and live_colour(svc) == 'blue'
    assert {k: v for k, v in green['spec'].items() if k != 'selector'} == {k: v for k, v in svc['spec'].items() if k != 'selector'}
    labels = [docs[f'deployment-{c}.yaml']['spec']['template']['metadata']['labels'] for c in ('blue', 'green')]
    assert [green['spec']['selector'].items() <= l.items() for l in labels] == [False, True]


def test_release_dry_run_prints_the_kubectl_commands_and_a_live_release_needs_kubectl(tmp_path):
    r = mlpipeline('release', 'blue-green', '--to', 'green', '--image', 'localhost/test-model:2', '--dry-run', cwd=write_project(tmp_path/'p'))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'kubectl set image deployment/test-model-green service=localhost/test-model:2',
        'kubectl rollout status deployment/test-model-green --timeout=300s',
        'kubectl patch service test-model --type=merge -p \'{"spec": {"selector": {"app": "test-model", "colour": "green"}}}\'']
    env = {'PATH': str(Path(CLI).parent) + ':/usr/bin:/bin'} if not shutil.which('kubectl') else None
    if env:
        r = mlpipeline('release', 'blue-green', '--to', 'green', cwd=tmp_path/'p', env_extra=env)
        assert r.returncode == 2 and 'kubectl' in r.stderr, r.stderr


def test_export_k8s_without_image_is_a_usage_error(tmp_path):
    r = mlpipeline('export', 'k8s', cwd=write_project(tmp_path/'p'))
    assert r.returncode == 2 and '--image' in r.stderr, r.stderr


@pytest.fixture(scope='module')
def champion(tmp_path_factory):
    "A project whose champion (version 1) was trained on the test sample, and a second version (not the champion)."
    project = write_project(tmp_path_factory.mktemp('deploy')/'project')
    run_in_process(project)
    run_in_process(project, 'model.max_depth=1', 'model.n_estimators=3', 'gate.thresholds.roc_auc=0.999')
    return project


def test_a_saved_version_is_served_with_no_tracking_store(champion, tmp_path):
    from mlpipeline.scoring import save_version
    client_for(champion)
    info = save_version('test-model', 'champion', tmp_path/'model')
    assert info['version'] == '1' and info['alias'] == 'champion' and 'data_sha256' in info['tags']
    empty = tmp_path/'elsewhere'  # no pipeline.yaml, no mlruns.db: the folder is all the service has
    empty.mkdir()
    srv = Server(empty, env={'MLPIPELINE_SERVE_MODEL_DIR': str(tmp_path/'model'), 'MLPIPELINE_SERVE_CAPTURE__ENABLED': 'false'})
    try:
        meta = srv.http.get('/metadata').json()
        got = srv.http.post('/predict', json=records(20)).json()['predictions']
    finally: srv.stop()
    assert (meta['name'], meta['version'], meta['data_version']) == ('test-model', '1', info['tags']['data_sha256'])
    assert not (empty/'mlruns.db').exists() and not (empty/'mlruns').exists()
    local = Server(champion)
    try: want = local.http.post('/predict', json=records(20)).json()['predictions']
    finally: local.stop()
    assert got == want
