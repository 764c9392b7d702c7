"""The runner on the demo data: fresh engine, warm engine, plain in-process calls, a no-change re-run, a one-stage change.

Usage: python benchmarks/runner_bench.py [--project DIR]

In one sitting, in a throw-away project (the demo defaults, its own SQLite store), each measured as a separate
process from start to exit, as a user runs it:
1. `mlpipeline run --engine fresh --force` (papermill's own engine: a kernel per stage);
2. `mlpipeline run --engine warm --force` (one kernel for every stage);
3. the same stage functions called in one plain Python process (no papermill, no kernel);
4. `mlpipeline run` with nothing changed (every stage from the cache), also timed inside one process after the
   imports, to show what the cache itself costs;
5. `mlpipeline run -p model.max_depth=5` (a parameter only training reads): which stages ran and which were reused.
Writes benchmarks/results/runner_bench.json.
"""
import argparse, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
IN_PROCESS = '''
from mlpipeline.config import load_config
from mlpipeline.runfolder import create_run
from mlpipeline.pipeline import open_parent_run, close_parent_run
from mlpipeline.stages import TABLE
cfg = load_config(project={project!r})
rd = create_run(cfg)
rid = open_parent_run(rd, cfg)
for s in TABLE: s.runner()(rd)  # each stage's function, as the stage table declares it
close_parent_run(rd, rid, 'FINISHED')
'''


def timed(cmd: list, cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'{cmd} failed: {r.stderr[-3000:]}')
    return time.perf_counter() - t, r.stderr


def demo_project(path: Path, fast: bool = False) -> Path:
    "`path` as a project running the bundled demo with the repository's pipeline.yaml (`fast`: no tuning, no CV)."
    import yaml
    cfg = yaml.safe_load((REPO/'pipeline.yaml').read_text())
    if fast: cfg |= {'tuning': {'method': 'none'}, 'cv': {'folds': 0}}
    path.mkdir(parents=True, exist_ok=True)
    if not (path/'pipeline.yaml').exists(): (path/'pipeline.yaml').write_text(yaml.safe_dump(cfg))
    return path


def warm_vs_in_process(project: Path, repeat: int = 3, say=print) -> dict:
    "`mlpipeline run --engine warm --force` against the same stage functions in one plain process, interleaved pairs."
    warm, plain = [], []
    for i in range(repeat):
        warm.append(timed([str(BIN/'mlpipeline'), 'run', '--engine', 'warm', '--force', '--quiet'], project)[0])
        plain.append(timed([sys.executable, '-c', IN_PROCESS.format(project=str(project))], project)[0])
        say(f'  pair {i + 1}/{repeat}: warm engine {warm[-1]:.1f} s, in process {plain[-1]:.1f} s')
    return {'warm_s': warm, 'in_process_s': plain, 'ratio': statistics.median(warm) / statistics.median(plain)}


def stage_lines(log: str) -> dict:
    "The runner's per-stage lines: stage -> 'done' or 'cached'."
    out = {}
    for line in log.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith('[') and parts[2] in ('done', 'cached'): out[parts[1]] = parts[2]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0]); ap.add_argument('--project')
    a = ap.parse_args()
    project = demo_project(Path(a.project or tempfile.mkdtemp(prefix='runner-bench-')))
    cli = str(BIN/'mlpipeline')
    fresh, _ = timed([cli, 'run', '--engine', 'fresh', '--force'], project); print(f'fresh engine     {fresh:6.1f} s', flush=True)
    warm, _ = timed([cli, 'run', '--engine', 'warm', '--force'], project); print(f'warm engine      {warm:6.1f} s', flush=True)
    plain, _ = timed([sys.executable, '-c', IN_PROCESS.format(project=str(project))], project); print(f'in process       {plain:6.1f} s', flush=True)
    cached, log = timed([cli, 'run', '--engine', 'warm'], project); print(f'no-change re-run {cached:6.1f} s  {stage_lines(log)}', flush=True)
    from mlpipeline.pipeline import run_pipeline
    run_pipeline(project=project, progress=False, engine='warm')  # pays this process's imports
    t = time.perf_counter(); run_pipeline(project=project, progress=False, engine='warm'); inner = time.perf_counter() - t
    print(f'  the same inside one process, imports paid: {inner:.2f} s', flush=True)
    change, log = timed([cli, 'run', '--engine', 'warm', '-p', 'model.max_depth=5'], project)
    ran = stage_lines(log)
    print(f'one-stage change {change:6.1f} s  {ran}', flush=True)
    res = {'fresh_s': fresh, 'warm_s': warm, 'in_process_s': plain, 'warm_over_in_process': warm / plain, 'fresh_over_in_process': fresh / plain,
           'no_change_s': cached, 'no_change_share_of_fresh': cached / fresh, 'no_change_in_process_s': inner, 'no_change_in_process_share': inner / fresh,
           'one_stage_change_s': change, 'one_stage_change_stages': ran}
    print(f"\nwarm / in-process {res['warm_over_in_process']:.2f}x (goal <= 1.3); fresh / in-process {res['fresh_over_in_process']:.2f}x; "
          f"no-change re-run {res['no_change_share_of_fresh']:.1%} of the fresh run ({res['no_change_in_process_share']:.1%} without the process start; goal < 5%)")
    out = Path(__file__).parent/'results/runner_bench.json'; out.write_text(json.dumps(res, indent=1)); print(f'written {out}')


if __name__ == '__main__':
    main()
