"""A stage notebook runs alone with the plain papermill CLI, as docs/using.md prints it, and the runner re-runs one
completed stage with --only --force; neither a failed attempt nor a re-run touches the run's complete record."""
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import REPO, SAMPLE, write_project, mlpipeline, only_run, manifest

BIN = Path(sys.executable).parent
RECIPE = next(l for l in (REPO/'docs/using.md').read_text().splitlines()
              if l.startswith('.venv/bin/papermill nbs/04_train.ipynb'))


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def papermill(line: str, cwd: Path):
    "A line of docs/using.md, `.venv/bin/` being this venv's."
    args = line.split()
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    return subprocess.run([str(BIN/Path(args[0]).name), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_a_stage_runs_alone_with_plain_papermill_and_again_with_only_force(tmp_path):
    # a project laid out like the repository: the chapters in nbs/ and the data their examples read
    project = write_project(tmp_path/'project')
    shutil.copytree(REPO/'nbs', project/'nbs')
    shutil.copytree(REPO/'tests/data', project/'tests/data')
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 0, r.stderr
    rd = only_run(project)
    model, record = manifest(rd)['stages']['04_train']['outputs']['model']['sha256'], sha(rd/'04_train.ipynb')
    # relative run_dir, exactly as printed (under --cwd nbs), then absolute: the stage completes with the same model
    for line in (RECIPE.replace('<run-id>', rd.name), RECIPE.replace('<run-id>', rd.name).replace(f'-p run_dir runs/{rd.name}', f'-p run_dir {rd}')):
        p = papermill(line, project)
        assert p.returncode == 0, p.stderr[-3000:]
        m = manifest(rd)['stages']['04_train']
        assert m['status'] == 'complete' and m['outputs']['model']['sha256'] == model
        assert (rd/'04_train.rerun.ipynb').exists() and sha(rd/'04_train.ipynb') == record  # the runner's record untouched
    # a failing attempt (a run folder that is not there) changes nothing of the run
    before = (rd/'manifest.json').read_text()
    bad = papermill(RECIPE.replace('<run-id>', rd.name).replace(f'-p run_dir runs/{rd.name}', '-p run_dir runs/nope'), project)
    assert bad.returncode != 0 and 'is not a run folder' in bad.stderr
    assert (rd/'manifest.json').read_text() == before and sha(rd/'04_train.ipynb') == record
    # the runner: one completed stage again, its record replaced only because it completed; the run stays complete
    f = mlpipeline('run', '--resume', rd.name, '--only', '04_train', '--force', '--quiet', '--engine', 'warm', cwd=project)
    assert f.returncode == 0, f.stderr
    m = manifest(rd)
    assert m['status'] == 'complete' and m['stages']['04_train']['finished'] > m['stages']['08_monitor']['finished']
    assert m['stages']['04_train']['outputs']['model']['sha256'] == model and not (rd/'04_train.running.ipynb').exists()
    plain = mlpipeline('run', '--resume', rd.name, '--only', '04_train', cwd=project)
    assert plain.returncode == 0 and 'complete already (--force runs it again)' in plain.stdout + plain.stderr
