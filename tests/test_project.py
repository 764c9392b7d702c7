"""The nbdev project stays whole: notebooks clean, tags kept, package in step, notebook examples passing."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import papermill as pm, pytest
from mlpipeline.pipeline import STAGES
from conftest import REPO

BIN = Path(sys.executable).parent
NOTEBOOKS = sorted((REPO/'nbs').glob('*.ipynb'))


def copy_project(dest: Path) -> Path:
    "The nbdev-relevant part of the repo, to run nbdev's writers on without touching the checkout."
    for f in ('settings.ini', 'setup.py', 'pyproject.toml', 'README.md'): shutil.copy(REPO/f, dest/f)
    shutil.copytree(REPO/'nbs', dest/'nbs')
    shutil.copytree(REPO/'mlpipeline', dest/'mlpipeline', ignore=shutil.ignore_patterns('__pycache__'))
    return dest


def test_nbdev_clean_keeps_the_parameters_tag_and_strips_noise(tmp_path):
    d = copy_project(tmp_path)
    nb = json.loads((d/'nbs/04_train.ipynb').read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    code[0]['outputs'] = [{'output_type': 'stream', 'name': 'stdout', 'text': ['noise\n']}]
    code[0]['execution_count'] = 7
    code[0]['metadata']['collapsed'] = True
    (d/'nbs/04_train.ipynb').write_text(json.dumps(nb))
    r = subprocess.run([BIN/'nbdev_clean'], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cleaned = json.loads((d/'nbs/04_train.ipynb').read_text())
    tagged = [c for c in cleaned['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1 and ''.join(tagged[0]['source']).startswith('run_dir: str')
    first = [c for c in cleaned['cells'] if c['cell_type'] == 'code'][0]
    assert first['execution_count'] is None and 'collapsed' not in first['metadata']
    assert pm.inspect_notebook(str(d/'nbs/04_train.ipynb'))['run_dir']['inferred_type_name'] == 'str'
    # nbdev's clear_all would drop outputs but also every cell's tags; `jupyter nbconvert --clear-output` keeps them
    r = subprocess.run([BIN/'jupyter', 'nbconvert', '--clear-output', '--inplace', 'nbs/04_train.ipynb'], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cleared = json.loads((d/'nbs/04_train.ipynb').read_text())['cells']
    assert not any(c.get('outputs') for c in cleared) and sum('parameters' in c['metadata'].get('tags', []) for c in cleared) == 1


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_carry_no_outputs(nb):
    cells = json.loads(nb.read_text())['cells']
    assert not [i for i, c in enumerate(cells) if c.get('outputs') or c.get('execution_count')], f'run nbdev_clean on {nb.name}'


def test_package_is_in_step_with_the_notebooks(tmp_path):
    d = copy_project(tmp_path)
    r = subprocess.run([BIN/'nbdev_export'], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for f in sorted((d/'mlpipeline').glob('*.py')):
        assert f.read_text() == (REPO/'mlpipeline'/f.name).read_text(), f'{f.name} differs from what nbdev_export writes: run nbdev_export and commit'
    assert sorted(p.name for p in (d/'mlpipeline').glob('*.py')) == sorted(p.name for p in (REPO/'mlpipeline').glob('*.py'))


@pytest.mark.parametrize('stage', STAGES)
def test_each_stage_notebook_takes_the_run_folder(stage):
    params = pm.inspect_notebook(str(REPO/f'nbs/{stage}.ipynb'))
    assert list(params) == ['run_dir'] and 'run folder' in params['run_dir']['help']


@pytest.mark.slow  # 55-75 s: the everyday run stays under 10 minutes; `nbdev_test` is the notebook author's own check
def test_notebook_examples_pass_under_nbdev_test():
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    r = subprocess.run([BIN/'nbdev_test', '--n_workers', '2'], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, '\n'.join(l for l in (r.stdout + r.stderr).splitlines() if not l.startswith('    '))[-6000:]
