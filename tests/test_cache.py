"""The stage cache and the warm engine, on a real project, MLflow store and Jupyter kernels."""
import json, shutil
from pathlib import Path
import nbformat, pandas as pd, pytest
from conftest import SAMPLE, write_project, client_for
from mlpipeline.pipeline import STAGES


def plan(project: Path, *overrides) -> dict:
    "What the next run would do per stage: the plan line without the stage name."
    from mlpipeline.config import load_config
    from mlpipeline.cache import plan_lines
    return {l.split()[0]: l.split(None, 1)[1] for l in plan_lines(load_config(project=project, overrides=list(overrides)), STAGES)}


def run(project: Path, *overrides, **kw) -> Path:
    from mlpipeline.pipeline import run_pipeline
    return run_pipeline(project=project, overrides=list(overrides), progress=False, **kw)


@pytest.fixture(scope='module')
def cached(tmp_path_factory):
    "A project with its own copy of the data, run once with the warm engine, then again unchanged."
    project = tmp_path_factory.mktemp('cache')/'project'
    project.mkdir()
    shutil.copy(SAMPLE, project/'data.csv')
    write_project(project, data={'path': 'data.csv', 'id_column': 'rownames'})
    first = run(project, engine='warm')
    second = run(project, engine='warm')
    return project, first, second


def manifest(rd: Path) -> dict:
    return json.loads((rd/'manifest.json').read_text())


def test_an_unchanged_rerun_reuses_every_stage_and_says_so_in_mlflow(cached):
    project, first, second = cached
    m = manifest(second)
    # the first run promoted its model, so validation now checks against the champion's schema: the schema it inferred
    # itself from the same data, so the re-run users try first executes no stage at all
    assert m['status'] == 'complete' and [s for s in STAGES if m['stages'][s].get('cached_from') != first.name] == []
    assert all(v.startswith('cached') for v in plan(project).values())
    from mlpipeline.runfolder import stage_complete
    for s in STAGES:  # outputs and executed notebooks are there, and match what the first run recorded
        assert stage_complete(second, s) and (second/f'{s}.ipynb').exists()
        assert {k: o['sha256'] for k, o in m['stages'][s]['outputs'].items()} == {k: o['sha256'] for k, o in manifest(first)['stages'][s]['outputs'].items()}
    assert [v.version for v in client_for(project).search_model_versions("name = 'test-model'")] == [1]  # nothing registered twice
    import mlflow
    kids = mlflow.search_runs(filter_string=f"tags.`mlpipeline.run_id` = '{second.name}' and tags.`mlpipeline.cache_hit` = 'true'")
    assert len(kids) == len(STAGES) and set(kids['tags.mlpipeline.cached_from_run_dir']) == {str(first)}
    assert set(kids['tags.mlflow.parentRunId']) == {m['mlflow_run_id']}



def test_an_all_cached_run_starts_no_kernel_and_imports_no_notebook_machinery(cached):
    "Deciding from the cache keys comes first: papermill, nbformat, nbconvert and Jupyter load only when a stage executes."
    import subprocess, sys
    project = cached[0]
    code = ("import sys; from mlpipeline.pipeline import run_pipeline; run_pipeline(project=sys.argv[1], progress=False); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'papermill', 'nbformat', 'nbconvert', 'nbclient', 'jupyter_client'}))")
    r = subprocess.run([sys.executable, '-c', code, str(project)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'
    third = sorted((project/'runs').iterdir())[-1]
    assert all(e.get('cached_from') for e in manifest(third)['stages'].values())  # every stage reused
    assert all((third/f'{s}.html').stat().st_ino == (cached[1]/f'{s}.html').stat().st_ino for s in STAGES)  # its page too

def test_each_kind_of_change_invalidates_exactly_the_stages_after_it(cached, tmp_path, monkeypatch):
    project, first, _ = cached
    assert all(v.startswith('cached') for v in plan(project).values())
    p = plan(project, 'model.max_depth=2')  # a parameter only training reads
    assert [s for s, v in p.items() if v.startswith('cached')] == STAGES[:3] and 'parameter model.max_depth changed' in p['04_train']
    # the same raw data file, new content: from ingestion
    df = pd.read_csv(project/'data.csv')
    df.loc[0, 'tenure'] += 1
    df.to_csv(project/'data.csv', index=False)
    p = plan(project)
    assert 'input data changed' in p['01_ingest'] and not any(v.startswith('cached') for v in p.values())
    shutil.copy(SAMPLE, project/'data.csv')
    assert all(v.startswith('cached') for v in plan(project).values())
    # a notebook edit: that stage and the ones after it
    import mlpipeline.stages
    nbs = tmp_path/'nbs'
    shutil.copytree(mlpipeline.stages.notebooks_dir(), nbs)
    nb = nbformat.read(nbs/'03_features.ipynb', as_version=4)
    next(c for c in nb.cells if c.cell_type == 'code' and 'def run_features' in c.source).source += '\n# edited'
    nbformat.write(nb, nbs/'03_features.ipynb')
    monkeypatch.setattr(mlpipeline.stages, 'notebooks_dir', lambda: nbs)
    p = plan(project)
    assert [s for s, v in p.items() if v.startswith('cached')] == STAGES[:2] and p['03_features'].startswith('runs: notebook edited')
    monkeypatch.undo()
    # a module edit: the stages whose module imports it
    import mlpipeline.cache
    pkg = tmp_path/'pkg'
    shutil.copytree(mlpipeline.cache.package_dir(), pkg)
    (pkg/'train.py').write_text((pkg/'train.py').read_text() + '\n# edited\n')
    monkeypatch.setattr(mlpipeline.cache, 'package_dir', lambda: pkg)
    p = plan(project)
    assert [s for s, v in p.items() if v.startswith('cached')] == STAGES[:3] and 'module train.py changed' in p['04_train']


def test_a_parameter_change_reruns_from_training_and_gates_against_the_champion(cached):
    project, first, _ = cached
    rd = run(project, 'model.max_depth=2', engine='warm')
    m = manifest(rd)
    assert [s for s in STAGES if 'cached_from' in m['stages'][s]] == STAGES[:3]
    gate = json.loads((rd/'artifacts/gate.json').read_text())
    assert gate.get('champion_version') == '1' and len(client_for(project).search_model_versions("name = 'test-model'")) == 2


def test_a_tampered_cached_output_is_detected_and_recomputed(cached):
    project, first, second = cached
    train = first/manifest(first)['stages']['03_features']['outputs']['train']['path']
    before = manifest(first)['stages']['03_features']['outputs']['train']['sha256']
    train.unlink()
    pd.read_csv(SAMPLE).head(5).to_parquet(train)  # the first run's file, replaced (the second run's is its own link)
    p = plan(project)
    assert [s for s, v in p.items() if v.startswith('cached')] == STAGES[:2] and p['03_features'] == 'runs: cached outputs missing or altered', p
    rd = run(project, engine='warm')
    assert manifest(rd)['stages']['03_features']['outputs']['train']['sha256'] == before and 'cached_from' not in manifest(rd)['stages']['03_features']


@pytest.mark.slow
def test_warm_and_fresh_engines_give_the_same_outputs_and_notebooks(tmp_path):
    warm, fresh = (run(write_project(tmp_path/e), engine=e) for e in ('warm', 'fresh'))  # two projects: neither has a champion yet
    for s in ('01_ingest', '02_validate', '03_features', '04_train'):
        a, b = manifest(warm)['stages'][s]['outputs'], manifest(fresh)['stages'][s]['outputs']
        assert {k: o['sha256'] for k, o in a.items()} == {k: o['sha256'] for k, o in b.items()}, s
    for s in STAGES:
        nw, nf = (nbformat.read(rd/f'{s}.ipynb', as_version=4) for rd in (warm, fresh))
        src = lambda nb: [c.source for c in nb.cells if 'injected-parameters' not in c.metadata.get('tags', [])]  # each names its own run folder
        assert src(nw) == src(nf) and len(nw.cells) == len(nf.cells)
        assert [c.get('execution_count') for c in nw.cells] == [c.get('execution_count') for c in nf.cells], s
        # import-time warnings (stderr) come once per kernel: in every fresh stage, in the first warm stage that imports
        kinds = lambda nb: [[o.output_type for o in c.get('outputs', []) if o.get('name') != 'stderr'] for c in nb.cells]
        assert kinds(nw) == kinds(nf), s


def test_a_failed_notebook_leaves_the_warm_kernel_usable(tmp_path):
    import papermill as pm
    from mlpipeline.engine import shutdown_warm_kernels
    def nb(*srcs):
        n = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in srcs])
        n.metadata['kernelspec'] = {'name': 'python3', 'language': 'python', 'display_name': 'python3'}
        return n
    try:
        pm.execute_notebook(nb('import mlflow, tempfile; mlflow.set_tracking_uri("sqlite:///" + tempfile.mkdtemp() + "/m.db")', 'mlflow.start_run(); secret = 1'),
                            str(tmp_path/'a.ipynb'), engine_name='warm', progress_bar=False)
        with pytest.raises(pm.PapermillExecutionError, match='boom'):
            pm.execute_notebook(nb('import mlflow; assert mlflow.active_run() is None', 'raise ValueError("boom")'), str(tmp_path/'b.ipynb'), engine_name='warm', progress_bar=False)
        out = pm.execute_notebook(nb("print('secret' in dir())", 'import mlflow; print(mlflow.active_run())'), str(tmp_path/'c.ipynb'), engine_name='warm', progress_bar=False)
        assert [c.outputs[0]['text'].strip() for c in out.cells] == ['False', 'None'] and out.cells[0].execution_count == 1
    finally: shutdown_warm_kernels()


@pytest.mark.slow  # 25-70 s on 2 cores: kept out of the everyday run; CI runs it
def test_a_registration_gone_from_the_registry_is_made_again_and_status_sees_registry_changes_without_mlflow(tmp_path):
    project = write_project(tmp_path/'project')
    run(project, engine='warm')
    client = client_for(project)
    client.delete_model_version('test-model', '1')
    p = plan(project)
    assert [k for k, v in p.items() if v.startswith('cached')] == STAGES[:5] and 'no longer in the registry' in p['06_register'], p
    rd = run(project, engine='warm')
    reg = json.loads((rd/'artifacts/registered.json').read_text())
    assert reg['version'] == 2 and str(client.get_model_version_by_alias('test-model', 'champion').version) == '2'
    # `status` reads the SQLite store's own tables each time: no MLflow import, and no copy that could go stale
    import subprocess, sys
    code = "import sys; from mlpipeline.cli import main; main(); print('mlflow imported:', 'mlflow' in sys.modules)"
    status = lambda: subprocess.run([sys.executable, '-c', code, 'status'], cwd=project, capture_output=True, text=True,
                                    timeout=300)
    r = status()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == 'mlflow imported: False'
    assert sum(' cached (run ' in l for l in lines) == len(STAGES)  # the whole plan, champion schema included
    v2 = client.get_model_version('test-model', '2')  # as the MLflow UI would: another version made champion
    client.create_model_version('test-model', v2.source, tags=v2.tags | {'model_sha256': 'another model'})
    client.set_registered_model_alias('test-model', 'champion', '3')
    lines = status().stdout.splitlines()
    p = {l.split()[0]: l.split(None, 1)[1] for l in lines[lines.index('next `mlpipeline run` with this config:') + 1:-1]}
    assert [s for s, v in p.items() if v.startswith('cached')] == STAGES[:4] and 'input champion changed' in p['05_evaluate']

