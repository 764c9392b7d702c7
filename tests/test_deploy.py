"""Deployment: a version served from a saved folder with no tracking store, the champion's container image run on
127.0.0.1 with podman, the Kubernetes manifests under `kubernetes-validate --strict` and `podman kube play`, and the
blue-green pair and its release commands."""
import contextlib, json, os, re, shutil, subprocess, time, uuid
from pathlib import Path
import httpx, pytest, yaml
from conftest import REPO, CLI, write_project, run_in_process, client_for, mlpipeline
from test_serve import Server, free_port, records
from mlpipeline.deploy import (k8s_manifests, write_manifests, switch, live_colour, container_engine, engine_env,
                               BASE_IMAGE, PORT, USER_ID)
from mlpipeline.config import load_config

K8S_VERSIONS = ('1.33.0', '1.34.0', '1.35.0', '1.36.0', '1.37.0')  # the supported Kubernetes versions
VALIDATE = Path(CLI).with_name('kubernetes-validate')
INFO = {'name': 'test-model', 'version': '1', 'alias': 'champion'}


def validate(*files, version='1.37.0') -> subprocess.CompletedProcess:
    cmd = [str(VALIDATE), '--strict', '--quiet', '-k', version, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize('strategy', ['rolling', 'blue-green'])
def test_manifests_pass_kubernetes_validate_strict(tmp_path, strategy):
    docs = k8s_manifests(load_config(project=tmp_path), INFO, 'localhost/test-model:1', strategy)
    files = write_manifests(docs, tmp_path/'k8s')
    kinds = sorted(yaml.safe_load(f.read_text())['kind'] for f in files)
    want = ['Deployment', 'HorizontalPodAutoscaler', 'Kustomization', 'PodDisruptionBudget', 'Service']
    per_colour = ['Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget']
    assert kinds == (want if strategy == 'rolling' else sorted(want + per_colour))
    resources = [f for f in files if f.name != 'kustomization.yaml']
    kustomization = yaml.safe_load((tmp_path/'k8s/kustomization.yaml').read_text())
    assert kustomization['resources'] == sorted(f.name for f in resources)
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
    rest = lambda s: {k: v for k, v in s['spec'].items() if k != 'selector'}
    assert rest(green) == rest(svc)
    labels = [docs[f'deployment-{c}.yaml']['spec']['template']['metadata']['labels'] for c in ('blue', 'green')]
    assert [green['spec']['selector'].items() <= l.items() for l in labels] == [False, True]


def test_release_dry_run_prints_the_kubectl_commands_and_a_live_release_needs_kubectl(tmp_path):
    r = mlpipeline('release', 'blue-green', '--to', 'green', '--image', 'localhost/test-model:2', '--dry-run',
                   cwd=write_project(tmp_path/'p'))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'kubectl set image deployment/test-model-green service=localhost/test-model:2',
        'kubectl rollout status deployment/test-model-green --timeout=300s',
        'kubectl patch service test-model --type=merge -p '
        '\'{"spec": {"selector": {"app": "test-model", "colour": "green"}}}\'']
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
    env = {'MLPIPELINE_SERVE_MODEL_DIR': str(tmp_path/'model'), 'MLPIPELINE_SERVE_CAPTURE__ENABLED': 'false'}
    srv = Server(empty, env=env)
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



def test_a_saved_challenger_answers_its_arm_of_an_ab_test_and_scores_in_shadow_with_no_tracking_store(champion,
                                                                                                    tmp_path):
    from mlpipeline.scoring import save_version
    client_for(champion)
    save_version('test-model', 'champion', tmp_path/'model')
    save_version('test-model', '2', tmp_path/'challenger')
    empty = tmp_path/'elsewhere'
    empty.mkdir()
    saved = {'MLPIPELINE_SERVE_MODEL_DIR': str(tmp_path/'model'), 'MLPIPELINE_SERVE_CAPTURE__ENABLED': 'false'}
    ab = {'MLPIPELINE_SERVE_AB__ENABLED': 'true'}
    r = mlpipeline('serve', '--port', str(free_port()), cwd=empty, env_extra=saved | ab, timeout=120)
    assert r.returncode == 2 and "'serve.challenger_dir'" in r.stderr and '--challenger' in r.stderr, r.stderr
    both = saved | {'MLPIPELINE_SERVE_CHALLENGER_DIR': str(tmp_path/'challenger')}
    canary = {'MLPIPELINE_SERVE_CANARY__ENABLED': 'true', 'MLPIPELINE_SERVE_CANARY__PROMOTE': 'true'}
    r = mlpipeline('serve', '--port', str(free_port()), cwd=empty, env_extra=both | canary, timeout=120)
    assert r.returncode == 2 and 'cannot promote' in r.stderr, r.stderr
    srv = Server(empty, env=both | ab)
    try: answers = [srv.http.post('/predict', json=records(1, i)[0]).json()['model'] for i in range(60)]
    finally: srv.stop()
    assert {(a['arm'], a['version']) for a in answers} == {('champion', '1'), ('challenger', '2')}
    srv = Server(empty, env=both | {'MLPIPELINE_SERVE_SHADOW': 'true'})
    try:
        assert all(srv.http.post('/predict', json=records(5, i)).status_code == 200 for i in range(0, 50, 5))
        shadowed = lambda text: sum(float(l.split()[-1]) for l in text.splitlines()
                                    if l.startswith('mlpipeline_shadow_rows_total'))
        metrics, t = '', time.time()
        while shadowed(metrics) < 50 and time.time() - t < 30:  # scored off the response path
            metrics = srv.http.get('/metrics').text
            time.sleep(0.2)
    finally: srv.stop()
    assert shadowed(metrics) == 50 and 'mlpipeline_model_version{role="shadow"} 2.0' in metrics, metrics
    assert not (empty/'mlruns.db').exists() and not (empty/'mlruns').exists()

# --- the image, run with the container engine (slow: builds images) ---

def engine(*args, check=True, timeout=300) -> subprocess.CompletedProcess:
    "Run the container engine `build image` uses, as it runs it."
    e = container_engine()
    r = subprocess.run([e, *map(str, args)], env=engine_env(e), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 or not check, (args, r.stderr)
    return r


def wait_health(url: str, timeout: float = 90) -> float:
    "Seconds until `url`/health answers 200."
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + '/health', timeout=2).status_code == 200: return time.perf_counter() - t
        time.sleep(0.2)
    raise TimeoutError(f'{url} did not answer')


@contextlib.contextmanager
def container(image: str, *options: str):
    "`image` running detached with its port on 127.0.0.1 (and the `run` options given); removed after."
    port = free_port()
    cid = engine('run', '-d', '-p', f'127.0.0.1:{port}:{PORT}', *options, image).stdout.strip().splitlines()[-1]
    try:
        url = f'http://127.0.0.1:{port}'
        wait_health(url)
        yield cid, url
    finally: engine('rm', '-f', cid, check=False)


@pytest.fixture(scope='module')
def images(champion):
    "The champion's image (version 1, with version 2 as its challenger) and version 2's, built anew (`--no-cache`),"
    " with the CLI; removed after."
    repo, made = f'localhost/mlpipeline-test-{uuid.uuid4().hex[:8]}', []
    before = set(engine('images', '-a', '-q', '--no-trunc').stdout.split())
    try:
        builds = (('1', ['--challenger', 'test-model@challenger']), ('2', ['--model', 'test-model/2', '--no-cache']))
        for v, extra in builds:
            r = mlpipeline('build', 'image', '--tag', f'{repo}:{v}', *extra, cwd=champion, timeout=900)
            assert r.returncode == 0, r.stderr
            made.append(f'{repo}:{v}')
        yield dict(zip(('1', '2'), made))
    finally:
        for i in made: engine('rmi', '-f', i, check=False)
        base = engine('image', 'inspect', '--format', '{{.Id}}', BASE_IMAGE, check=False).stdout.strip()
        # the build's cached layers go too; the base image stays: the engine's storage caches it between runs
        left = set(engine('images', '-a', '-q', '--no-trunc').stdout.split()) - before - {base}
        for i in left: engine('rmi', '-f', i, check=False)


@pytest.mark.slow
def test_the_champion_image_serves_as_the_local_service_does_and_stops_on_sigterm(champion, images):
    tags = client_for(champion).get_model_version('test-model', '1').tags
    labels = json.loads(engine('image', 'inspect', images['1']).stdout)[0]
    labels = labels.get('Labels') or labels['Config']['Labels']
    assert (labels['io.mlpipeline.model.version'], labels['io.mlpipeline.data.version']) == ('1', tags['data_sha256'])
    assert labels['org.opencontainers.image.revision'] == tags['git_commit'] == labels['io.mlpipeline.git.commit']
    assert engine('image', 'inspect', '--format', '{{.Config.User}}', images['1']).stdout.strip() == str(USER_ID)
    local = Server(champion)
    try: want = local.http.post('/predict', json=records(20)).json()['predictions']
    finally: local.stop()
    with container(images['1']) as (cid, url):
        assert engine('exec', cid, 'id', '-u').stdout.strip() == str(USER_ID)
        meta = httpx.get(url + '/metadata').json()
        assert (meta['name'], meta['version'], meta['alias']) == ('test-model', '1', 'champion')
        assert (meta['data_version'], meta['git_commit']) == (tags['data_sha256'], tags['git_commit'])
        assert httpx.post(url + '/predict', json=records(20)).json()['predictions'] == want
        assert httpx.post(url + '/predict', json={'tenure': 'many'}).status_code == 422  # bad input: refused, not 5xx
        if container_engine() == 'podman': engine('healthcheck', 'run', cid)  # the image's HEALTHCHECK passes
        t = time.perf_counter()
        engine('stop', '-t', '10', cid)  # SIGTERM, then SIGKILL after 10 s
        took = time.perf_counter() - t
    assert took < 3, f'the container took {took:.1f}s to stop on SIGTERM'


README_BUILD = next(l for l in (REPO/'README.md').read_text().splitlines()
                    if l.startswith('.venv/bin/mlpipeline build image'))


@pytest.mark.slow
def test_the_readmes_build_prints_the_command_that_runs_the_champion_on_port_8000(champion, images):
    args = README_BUILD.split()  # `.venv/bin/mlpipeline` is this venv's
    tag = args[args.index('--tag') + 1]
    try:
        r = mlpipeline(*args[1:], cwd=champion, timeout=900)
        assert r.returncode == 0, r.stderr
        line = r.stdout.split('run it: ', 1)[1].strip()
        run = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=120)  # exactly as printed
        assert run.returncode == 0, f'{line}: {run.stderr}'
        try:
            wait_health('http://127.0.0.1:8000')
            assert httpx.get('http://127.0.0.1:8000/metadata').json()['version'] == '1'
        finally: engine('rm', '-f', run.stdout.split()[-1], check=False)
    finally: engine('rmi', '-f', tag, check=False)


def layers(image: str) -> list:
    return json.loads(engine('image', 'inspect', '--format', '{{json .RootFS.Layers}}', image).stdout)


@pytest.mark.slow
def test_the_same_base_dependencies_and_package_give_the_same_layers_when_built_anew(champion, images, tmp_path):
    one, two, base = layers(images['1']), layers(images['2']), layers(BASE_IMAGE)
    # base, dependencies, package, model (and image 1's challenger); version 2's image was built with --no-cache
    assert (len(one), len(two)) == (len(base) + 4, len(base) + 3)
    assert one[:len(base) + 2] == two[:len(base) + 2] and one[len(base) + 2] != two[len(base) + 2]
    # the model's layer copies the saved version, whose files are the same bytes each time it is saved
    from mlpipeline.scoring import save_version
    client_for(champion)
    for d in ('a', 'b'): save_version('test-model', '2', tmp_path/d)
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}
    assert files(tmp_path/'a') == files(tmp_path/'b')


@pytest.mark.slow
def test_ab_canary_and_shadow_run_inside_the_container_from_variables_or_a_mounted_file(images, tmp_path):
    labels = json.loads(engine('image', 'inspect', '--format', '{{json .Config.Labels}}', images['1']).stdout)
    assert labels['io.mlpipeline.challenger.version'] == '2'
    with container(images['1'], '-e', 'MLPIPELINE_SERVE_AB__ENABLED=true') as (cid, url):
        arms = {(a['arm'], a['version']) for a in
                (httpx.post(url + '/predict', json=records(1, i)[0]).json()['model'] for i in range(60))}
    assert arms == {('champion', '1'), ('challenger', '2')}
    (tmp_path/'pipeline.yaml').write_text(yaml.safe_dump({'serve': {'canary': {'enabled': True, 'steps': [30, 100]}}}))
    with container(images['1'], '-v', f"{tmp_path/'pipeline.yaml'}:/srv/pipeline.yaml:ro") as (cid, url):
        versions = {httpx.post(url + '/predict', json=records(1, i)[0]).json()['model']['version'] for i in range(60)}
        metrics = httpx.get(url + '/metrics').text
    assert versions == {'1', '2'} and 'mlpipeline_canary_weight 30.0' in metrics, metrics
    with container(images['1'], '-e', 'MLPIPELINE_SERVE_SHADOW=true') as (cid, url):
        assert httpx.post(url + '/predict', json=records(20)).json()['model']['version'] == '1'
        t, metrics = time.time(), ''
        while 'mlpipeline_shadow_rows_total' not in metrics and time.time() - t < 30:  # scored off the response path
            metrics = httpx.get(url + '/metrics').text
            time.sleep(0.2)
    assert 'mlpipeline_model_version{role="shadow"} 2.0' in metrics and 'mlpipeline_shadow_rows_total' in metrics
    # an image without a challenger refuses an A/B test at start, as `mlpipeline serve` does: exit 2, the key named
    r = engine('run', '--rm', '-e', 'MLPIPELINE_SERVE_AB__ENABLED=true', images['2'], check=False, timeout=120)
    assert r.returncode == 2 and "'serve.challenger_dir'" in r.stderr and 'Traceback' not in r.stderr, r.stderr


def play_file(manifest: Path, out: Path, port: int) -> Path:
    "A copy of a Deployment manifest for `podman kube play`: one replica, its port on 127.0.0.1:`port`."
    d = yaml.safe_load(manifest.read_text())
    d['spec']['replicas'] = 1
    d['spec']['template']['spec']['containers'][0]['ports'][0] |= {'hostPort': port, 'hostIP': '127.0.0.1'}
    out.write_text(yaml.safe_dump(d))
    return out


@contextlib.contextmanager
def played(*files: Path):
    "The Deployments in `files` running as pods with `podman kube play`; taken down after."
    try:
        for f in files: engine('kube', 'play', f)
        yield
    finally:
        for f in files: engine('kube', 'down', f, check=False)


@pytest.mark.slow
def test_the_exported_deployment_is_sized_from_its_image_and_runs_with_podman_kube_play(champion, images, tmp_path):
    from mlpipeline.deploy import sized_resources
    r = mlpipeline('export', 'k8s', '--image', images['1'], '--measure', '--out', str(tmp_path/'k8s'), cwd=champion)
    assert r.returncode == 0, r.stderr
    peak, busy = re.search(r'peak (\d+) MiB', r.stderr), re.search(r'([\d.]+) cores busy', r.stderr)
    assert peak and busy and 50 < int(peak[1]) < 2000 and 0 < float(busy[1]) <= 2, r.stderr
    pod = yaml.safe_load((tmp_path/'k8s/deployment.yaml').read_text())['spec']['template']['spec']
    measured = {'peak_mib': int(peak[1]), 'busy_cores': float(busy[1])}
    assert pod['containers'][0]['resources'] == sized_resources(measured)
    assert validate(*(f for f in (tmp_path/'k8s').glob('*.yaml') if f.name != 'kustomization.yaml')).returncode == 0
    port = free_port()
    with played(play_file(tmp_path/'k8s/deployment.yaml', tmp_path/'play.yaml', port)):
        url = f'http://127.0.0.1:{port}'
        wait_health(url)
        assert httpx.get(url + '/metadata').json()['version'] == '1'
        assert httpx.post(url + '/predict', json=records(1)[0]).status_code == 200
        # podman applies the limits: the pod answered within the memory and CPU the measure sized
        names = [n for n in engine('ps', '--format', '{{.Names}}').stdout.split()
                 if n.startswith('test-model') and n.endswith('-service')]
        got = engine('inspect', '--format', '{{.HostConfig.Memory}} {{.HostConfig.CpuQuota}}', names[0]).stdout.split()
    limits = sized_resources(measured)['limits']
    mib, millicores = int(limits['memory'].removesuffix('Mi')), int(limits['cpu'].removesuffix('m'))
    assert got == [str(mib * 2**20), str(millicores * 100)]  # CPU quota per 100 ms period


@pytest.mark.slow
def test_blue_green_runs_both_colours_and_the_switch_selects_the_new_one(champion, images, tmp_path):
    r = mlpipeline('export', 'k8s', '--strategy', 'blue-green', '--image', images['1'], '--out', str(tmp_path/'k8s'),
                   cwd=champion)
    assert r.returncode == 0, r.stderr
    green = yaml.safe_load((tmp_path/'k8s/deployment-green.yaml').read_text())
    green['spec']['template']['spec']['containers'][0]['image'] = images['2']  # what `kubectl set image` does
    green['spec']['template']['metadata']['labels']['model-version'] = '2'
    (tmp_path/'k8s/deployment-green.yaml').write_text(yaml.safe_dump(green))
    ports = {'blue': free_port(), 'green': free_port()}
    files = [play_file(tmp_path/f'k8s/deployment-{c}.yaml', tmp_path/f'play-{c}.yaml', p) for c, p in ports.items()]
    with played(*files):
        for c, v in (('blue', '1'), ('green', '2')):
            url = f'http://127.0.0.1:{ports[c]}'
            wait_health(url)
            assert httpx.get(url + '/metadata').json()['version'] == v, c
    svc = yaml.safe_load((tmp_path/'k8s/service.yaml').read_text())
    pods = {c: yaml.safe_load(f.read_text())['spec']['template']['metadata']['labels'] for c, f in zip(ports, files)}
    selected = lambda s: [c for c, l in pods.items() if s['spec']['selector'].items() <= l.items()]
    assert selected(svc) == ['blue'] and selected(switch(svc, 'green')) == ['green']
