"""Strict reproducibility: registration refused for uncommitted code, a package out of step with its notebooks, or unversioned data."""
import hashlib, json, sqlite3, subprocess
from pathlib import Path
import pandas as pd, pytest
from mlpipeline.reproducibility import code_problems, out_of_step
from conftest import REPO, SAMPLE, write_project, mlpipeline, run_in_process, registered_models, client_for, manifest


def git(cwd, *a):
    r = subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *a], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def git_project(path: Path, **overrides) -> Path:
    "A test project that is its own clean git repository."
    write_project(path, **overrides)
    git(path, 'init', '-q')
    git(path, 'add', '-A')
    git(path, 'commit', '-qm', 'project')
    return path


def test_a_clean_clone_passes_and_each_kind_of_change_is_named(tmp_path):
    clone = tmp_path/'clone'
    git(tmp_path, 'clone', '-q', str(REPO), str(clone))  # HEAD as committed: clean and in step with its notebooks
    assert code_problems(clone, clone) == []
    nb = clone/'nbs/04_train.ipynb'
    doc = json.loads(nb.read_text())
    cell = next(c for c in doc['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export'))
    cell['source'] = ''.join(cell['source']) + '\nEDITED_WITHOUT_EXPORT = 1\n'
    nb.write_text(json.dumps(doc, indent=1))
    (clone/'nbs/99_new.ipynb').write_text(json.dumps({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    assert out_of_step(clone) == ['train.py']
    found = code_problems(clone, clone)
    assert len(found) == 2, found
    assert 'uncommitted changes in 2 file(s): nbs/04_train.ipynb, nbs/99_new.ipynb' in found[0]
    assert 'out of step with its notebooks: train.py' in found[1]
    assert 'not in a git repository' in code_problems(tmp_path/'nowhere')[0]


def test_strict_run_in_a_dirty_project_is_refused_before_anything_is_written(tmp_path):
    project = git_project(tmp_path/'project')
    (project/'pipeline.yaml').write_text((project/'pipeline.yaml').read_text() + 'seed: 7\n')
    r = mlpipeline('run', '--strict', '--quiet', cwd=project)
    assert r.returncode == 2, r.stderr
    assert 'strict mode refuses this run: (1)' in r.stderr and 'pipeline.yaml' in r.stderr, r.stderr
    assert not (project/'runs').exists() or not any((project/'runs').iterdir())
    assert registered_models(project) == []


def test_strict_registration_needs_the_sql_snapshot(tmp_path):
    db = tmp_path/'source.db'
    with sqlite3.connect(db) as con: pd.read_csv(SAMPLE).to_sql('customers', con, index=False)
    project = git_project(tmp_path/'project', data={'path': f'sqlite:///{db}', 'query': 'select * from customers', 'id_column': 'rownames'})
    rd = run_in_process(project, 'reproducibility.strict=true')
    facts = manifest(rd)['stages']['01_ingest']
    assert facts['snapshot_uri'].endswith('/snapshot/raw.parquet')
    client = client_for(project)
    mv = client.get_model_version('test-model', '1')
    assert mv.tags['strict'] == 'true' and mv.tags['data_snapshot_uri'] == facts['snapshot_uri']
    import mlflow
    got = Path(mlflow.artifacts.download_artifacts(facts['snapshot_uri'], dst_path=str(tmp_path/'dl')))
    assert hashlib.sha256(got.read_bytes()).hexdigest() == facts['outputs']['raw']['sha256']
    # the same source without its snapshot: refused at registration, registry untouched
    from mlpipeline.errors import UsageError
    with pytest.raises(Exception) as e: run_in_process(project, 'reproducibility.strict=true', 'reproducibility.snapshot=false')
    assert isinstance(e.value, UsageError) and 'has no content version' in str(e.value) and 'sql sqlite:///' in str(e.value), e.value
    assert [str(v.version) for v in client_for(project).search_model_versions("name='test-model'")] == ['1']
