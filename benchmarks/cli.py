"""Wall time of the read-only commands (`--help`, `--version`, `status`, `models list`, `models history`).

Usage: python benchmarks/cli.py [--project DIR] [--before SRC] [--repeat 5]

Each command runs as a separate process from start to exit, as a user runs it, in a project after one full
`mlpipeline run` (made in a throw-away folder when --project is not given). With --before SRC (a folder holding
another version's `mlpipeline` package and notebooks: `git archive main mlpipeline nbs | tar -x -C SRC`), that
version runs too, through the same console script with SRC first on PYTHONPATH (run from a project folder, so the
working directory's package does not shadow it), interleaved with this one command by command, so both see the same
load from other processes. Prints the median of --repeat runs per command (to its exit; for `status` also to its
first line, the run's state, which comes before the next run's plan) with the load average, and writes
benchmarks/results/cli_bench.json.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

CLI = Path(sys.executable).parent/'mlpipeline'
COMMANDS = [['--help'], ['--version'], ['status'], ['status', '--json'], ['models', 'list'], ['models', 'history']]


def timed(args: list, cwd: Path, src: str | None) -> tuple:
    "Seconds `mlpipeline args` takes to its first line and to its exit (package from `src`); Nones when it fails."
    drop = ('MLFLOW_TRACKING_URI', 'PYTHONPATH', 'PYTHONUNBUFFERED')  # a user's shell: stdout block-buffered into a pipe
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if src: env['PYTHONPATH'] = src
    t = time.perf_counter()
    p = subprocess.Popen([str(CLI), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    p.stdout.readline()
    first = time.perf_counter() - t
    p.communicate()
    return (first, time.perf_counter() - t) if p.returncode == 0 else (None, None)


def finished_project() -> Path:
    "A throw-away project on the test sample after one full run (the tests' `finished` recipe)."
    sys.path.insert(0, str(Path(__file__).parents[1]/'tests'))
    from conftest import write_project
    project = write_project(Path(tempfile.mkdtemp(prefix='cli-bench-'))/'project')
    subprocess.run([str(CLI), 'run', '--quiet', '--engine', 'warm'], cwd=project, check=True)
    return project


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--project')
    ap.add_argument('--before', help='a folder with the other version of the mlpipeline package')
    ap.add_argument('--repeat', type=int, default=5)
    a = ap.parse_args()
    project = Path(a.project) if a.project else finished_project()
    variants = {'before': a.before, 'after': None} if a.before else {'now': None}
    rows = [' '.join(c) for c in COMMANDS] + ['status: first line']
    times = {v: {r: [] for r in rows} for v in variants}
    load = [os.getloadavg()[0]]
    for _ in range(a.repeat):
        for c in COMMANDS:
            for v, src in variants.items():
                first, total = timed(c, project, src)
                times[v][' '.join(c)].append(total)
                if c == ['status']: times[v]['status: first line'].append(first)
        load.append(os.getloadavg()[0])
    med = {v: {r: statistics.median(t) if None not in t else None for r, t in ts.items()} for v, ts in times.items()}
    print(f"{'command':<20}" + ''.join(f'{v:>10}' for v in variants) + f'   (median of {a.repeat}, seconds to exit)')
    for r in rows:
        cells = (f'{med[v][r]:>10.2f}' if med[v][r] is not None else f"{'n/a':>10}" for v in variants)
        print(f'{r:<20}' + ''.join(cells))
    print(f'load average (1 min) during the runs: {min(load):.2f} to {max(load):.2f} on {os.cpu_count()} cores')
    out = Path(__file__).parent/'results/cli_bench.json'
    out.write_text(json.dumps({'median_s': med, 'runs_s': times, 'load_1min': load, 'repeat': a.repeat}, indent=1))
    print(f'written {out}')


if __name__ == '__main__':
    main()
