"""What papermill costs: the full demo pipeline through `mlpipeline run` against the same stage functions in one process.

    python benchmarks/papermill_overhead.py [--rows N]

Both sides run on the bundled demo data (7,043 rows) in a throw-away project with its own SQLite MLflow store,
one after the other in this sitting. Results go to benchmarks/results/papermill_overhead.json.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

STAGE_FUNCS = [('ingest', 'run_ingest'), ('validate', 'run_validate'), ('features', 'run_features'), ('train', 'run_train'),
               ('evaluate', 'run_evaluate'), ('registry', 'run_register'), ('serve', 'run_serve'), ('monitor', 'run_monitor')]


def papermill_run(project: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).parent/'mlpipeline'), 'run', '--quiet'], cwd=project, capture_output=True, text=True)
    if r.returncode: sys.exit(r.stderr)
    return time.perf_counter() - t


def in_process_run(project: Path) -> float:
    "The same stage functions, one process, imports included (a fresh interpreter, as the CLI has)."
    code = f"""
import time; t = time.perf_counter()
import importlib
from mlpipeline.config import load_config
from mlpipeline.runfolder import create_run
from mlpipeline.pipeline import open_parent_run, close_parent_run
cfg = load_config(project={str(project)!r}); rd = create_run(cfg); rid = open_parent_run(rd, cfg)
for mod, fn in {STAGE_FUNCS!r}: getattr(importlib.import_module('mlpipeline.' + mod), fn)(rd)
close_parent_run(rd, rid, 'FINISHED'); print(time.perf_counter() - t)
"""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', code], cwd=project, capture_output=True, text=True)
    if r.returncode: sys.exit(r.stderr)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); ap.add_argument('--repeat', type=int, default=1)
    args = ap.parse_args()
    env_uri = os.environ.pop('MLFLOW_TRACKING_URI', None)
    res = {'papermill_s': [], 'in_process_s': []}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            res['papermill_s'].append(round(papermill_run(Path(a)), 2))
            res['in_process_s'].append(round(in_process_run(Path(b)), 2))
    res['ratio'] = round(min(res['papermill_s']) / min(res['in_process_s']), 2)
    res['overhead_s'] = round(min(res['papermill_s']) - min(res['in_process_s']), 2)
    out = Path(__file__).parent/'results/papermill_overhead.json'; out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2)); print(json.dumps(res))
    if env_uri: os.environ['MLFLOW_TRACKING_URI'] = env_uri


if __name__ == '__main__': main()
