"""The whole pipeline on 1M, 4M and 16M rows: the local backend against the Dask backend, time, driver memory, rows/s.

Usage: python benchmarks/scale_bench.py [--sizes 1M,4M,16M] [--backends local,dask] [--limited | --limited-only]
                                        [--limit-gb G] [--workers N] [--worker-memory M] [--data DIR] [--keep] [--out F]

Data: the demo table (7,043 rows) resampled with replacement and jittered, written chunk by chunk (1M rows per
Parquet file, 250k-row row groups) under `--data` (default benchmarks/.data/, git-ignored), seeded, and reused when
the folder exists. Numeric columns move by 5% of their standard deviation and stay inside the demo's range (integer
columns stay integers, missing values stay missing); 2% of each categorical or 0/1 column takes a value drawn from
that column; `rownames` (the id) is the row's number; the target is kept.

Each size and backend runs in a fresh project (the demo's pipeline.yaml with fast settings: no tuning, no
cross-validation, 100 trees with early stopping, nthread = cores) as `mlpipeline run --engine warm` in a
subprocess. For Dask this process starts a `distributed.LocalCluster` (a worker per core, one thread each) and
passes its address with `-p compute.address=...`, so the workers are neither counted as the driver nor under its
limit. Recorded: each stage's wall time (manifest `started`/`finished`, to the second), the command's wall time,
rows/s, and the driver's peak memory, that is the summed RSS of the `mlpipeline run` process tree (the command and
its kernel) polled every 0.2 s with psutil; for Dask the workers' summed peak RSS beside it.

--limited adds the largest size with each driver process's data segment limited (RLIMIT_DATA, as `prlimit --data`,
inherited by the kernel) below the table's in-memory size (pandas `memory_usage(deep=True)` of the first 1M rows,
scaled; default limit 3/4 of it): on local first, where a failure is recorded (exit code, the error's last paragraph)
rather than raised, then on Dask. --limited-only runs just those two. A failed run's project folder is kept.
Writes benchmarks/results/scale_bench.json and scale_bench.md (or --out), merged with the earlier results there.
"""
import argparse, json, os, re, resource, shutil, subprocess, sys, tempfile, threading, time
from datetime import datetime
from pathlib import Path
import numpy as np, pandas as pd

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 1
FILE_ROWS, GROUP_ROWS = 1_000_000, 250_000
STAGES = ['01_ingest', '02_validate', '03_features', '04_train', '05_evaluate', '06_register', '07_serve', '08_monitor']


def parse_size(s: str) -> int:
    "'1M' -> 1_000_000, '50k' -> 50_000, '20000' -> 20_000."
    m = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*', s)
    if not m: raise SystemExit(f'--sizes: {s!r} is not a row count like 50k, 1M or 20000')
    return int(float(m[1]) * {'': 1, 'k': 1e3, 'm': 1e6}[m[2].lower()])


def label(n: int) -> str:
    "1_000_000 -> '1M', 50_000 -> '50k'."
    return f'{n / 1e6:g}M' if n >= 1e6 else f'{n / 1e3:g}k' if n >= 1e3 else str(n)


# ---------------------------------------------------------------------------------------------------------- data
def demo() -> pd.DataFrame:
    "The demo table the larger ones are drawn from."
    from mlpipeline.ingest import read_demo
    return read_demo({'path': 'demo://telco_churn'})


def column_kinds(df: pd.DataFrame, target: str = 'churn', id_col: str = 'rownames') -> dict:
    "Each column's noise: 'id', 'keep' (the target), 'float', 'int' (many values) or 'cat' (strings and 0/1 flags)."
    kinds = {}
    for c in df.columns:
        s = df[c]
        if c == id_col: kinds[c] = 'id'
        elif c == target: kinds[c] = 'keep'
        elif pd.api.types.is_float_dtype(s): kinds[c] = 'float'
        elif pd.api.types.is_integer_dtype(s) and s.nunique() > 10: kinds[c] = 'int'
        else: kinds[c] = 'cat'
    return kinds


def noisy_chunk(src: pd.DataFrame, kinds: dict, start: int, n: int, rng, jitter: float = 0.05, swap: float = 0.02) -> pd.DataFrame:
    "`n` rows drawn from `src` with replacement, numeric columns jittered and clipped, a few categories swapped."
    out = src.iloc[rng.integers(0, len(src), n)].reset_index(drop=True)
    for c, k in kinds.items():
        s = src[c]
        if k == 'id': out[c] = np.arange(start + 1, start + n + 1, dtype='int64')
        elif k in ('float', 'int'):
            v = out[c].to_numpy(dtype='float64') + rng.normal(0, jitter * s.std(), n)
            v = np.clip(v, s.min(), s.max())  # NaN stays NaN: a missing value stays missing
            out[c] = v.round().astype(s.dtype) if k == 'int' else v.round(2)
        elif k == 'cat':
            hit = rng.random(n) < swap
            col = out[c].copy()
            col[hit] = s.iloc[rng.integers(0, len(s), int(hit.sum()))].to_numpy()
            out[c] = col
    return out


def make_data(rows: int, root: Path, seed: int = 42) -> Path:
    "The `rows`-row table as Parquet files of 1M rows under `root`, written chunk by chunk; reused when present."
    folder = root/f'telco_{label(rows)}'
    if folder.exists(): return folder
    src = demo(); kinds = column_kinds(src)
    tmp = root/f'.tmp-{folder.name}-{os.getpid()}'; shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    t = time.perf_counter()
    for i, start in enumerate(range(0, rows, FILE_ROWS)):
        rng = np.random.default_rng([seed, i])  # per file: the same file whatever the total size
        chunk = noisy_chunk(src, kinds, start, min(FILE_ROWS, rows - start), rng)
        chunk.to_parquet(tmp/f'part-{i:05d}.parquet', index=False, row_group_size=GROUP_ROWS)
        print(f'  data {label(rows)}: file {i + 1}/{-(-rows // FILE_ROWS)} ({time.perf_counter() - t:.0f} s)', flush=True)
    tmp.rename(folder)  # complete or absent: a killed generation is not reused
    return folder


def memory_per_row(folder: Path) -> float:
    "Bytes per row in pandas (memory_usage(deep=True)) of the folder's first file."
    df = pd.read_parquet(sorted(folder.glob('*.parquet'))[0])
    return df.memory_usage(deep=True).sum() / len(df)


# ---------------------------------------------------------------------------------------------------------- runs
PIPELINE = '''data:
  path: {path}
  id_column: rownames
target: churn
task: auto
split: {{valid: 0.15, test: 0.15}}
seed: 42
model: {{n_estimators: 100, max_depth: 6, learning_rate: 0.1, early_stopping_rounds: 10, nthread: {cores}}}
tuning: {{method: none}}
cv: {{folds: 0}}
validation:
  groups: [senior_citizen, female]
gate:
  thresholds: {{roc_auc: 0.70}}
mlflow:
  experiment: scale-bench
  model_name: scale-bench
'''


def project(data: Path, root: Path) -> Path:
    "A fresh project folder whose pipeline.yaml reads `data` with the fast settings."
    p = Path(tempfile.mkdtemp(prefix='scale-bench-', dir=root)); (p/'runs').mkdir()
    (p/'pipeline.yaml').write_text(PIPELINE.format(path=data.resolve(), cores=CORES))
    return p


class PeakRSS:
    "Polls a process tree every `every` s: the peak of its summed RSS and of its largest data segment."
    def __init__(self, pids_fn, every: float = 0.2):
        self.pids_fn, self.every, self.peak, self.peak_data, self._stop = pids_fn, every, 0, 0, threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        import psutil
        while not self._stop.is_set():
            rss = 0
            for p in self.pids_fn():
                try: m = p.memory_info(); rss += m.rss; self.peak_data = max(self.peak_data, m.data)
                except psutil.Error: pass  # the process ended between listing and reading
            self.peak = max(self.peak, rss); self._stop.wait(self.every)

    def __enter__(self): self._t.start(); return self
    def __exit__(self, *exc): self._stop.set(); self._t.join()


def tree(pid: int) -> list:
    "The process and all its descendants (psutil.Process), empty once it ended."
    import psutil
    try: p = psutil.Process(pid); return [p] + p.children(recursive=True)
    except psutil.Error: return []


def stage_times(run: Path) -> dict:
    "Each finished stage's wall time in seconds, from the run's manifest."
    m = json.loads((run/'manifest.json').read_text())
    out = {}
    for s, e in (m.get('stages') or {}).items():
        if e.get('started') and e.get('finished'):
            out[s] = (datetime.fromisoformat(e['finished']) - datetime.fromisoformat(e['started'])).total_seconds()
    return out


def code_version() -> str:
    "git HEAD and a short hash of mlpipeline/*.py as they are now: results of different code stay apart."
    import hashlib
    pkg = HERE.parent/'mlpipeline'
    h = hashlib.sha256(b''.join(f.read_bytes() for f in sorted(pkg.glob('*.py')))).hexdigest()[:10]
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    return f'{head or "?"}+{h}'


def last_error(text: str, limit: int = 800) -> str:
    "The output's last paragraph (the command's one-paragraph error, or a traceback's last lines), shortened."
    paras = [p.strip() for p in re.split(r'\n\s*\n', text) if p.strip()]
    last = ' '.join(paras[-1].split()) if paras else ''
    return last if len(last) <= limit else '...' + last[-limit:]


def limit_data(nbytes: int | None):
    "A preexec_fn that caps the data segment (RLIMIT_DATA, inherited by the kernel) at `nbytes`."
    if nbytes is None: return None
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))


def run_one(rows: int, backend: str, data: Path, root: Path, cluster=None, limit: int | None = None, keep: bool = False) -> dict:
    "One `mlpipeline run --engine warm` on `data`: stage and total times, rows/s, peak driver (and worker) memory."
    proj = project(data, root)
    cmd = [str(BIN/'mlpipeline'), 'run', '--engine', 'warm', '--quiet', '-p', f'compute.backend={backend}']
    if cluster is not None: cmd += ['-p', f'compute.address={cluster.scheduler_address}']
    env = dict(os.environ, PYTHONUNBUFFERED='1'); env.pop('MLFLOW_TRACKING_URI', None)
    log = open(proj/'bench.log', 'w')
    started, code, t = datetime.now().isoformat(timespec='seconds'), code_version(), time.perf_counter()
    p = subprocess.Popen(cmd, cwd=proj, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit_data(limit))
    workers = (lambda: [q for w in worker_pids(cluster) for q in tree(w)]) if cluster is not None else (lambda: [])
    with PeakRSS(lambda: tree(p.pid)) as drv, PeakRSS(workers) as wrk:
        while p.poll() is None:
            time.sleep(1)
    wall = time.perf_counter() - t; log.close()
    out = (proj/'bench.log').read_text(errors='replace')
    runs = sorted((proj/'runs').glob('2*'))
    res = {'rows': rows, 'backend': backend, 'started': started, 'code': code, 'limit_bytes': limit, 'exit_code': p.returncode, 'wall_s': round(wall, 1),
           'rows_per_s': round(rows / wall) if p.returncode == 0 else None,
           'driver_peak_rss_mb': round(drv.peak / 2**20), 'driver_peak_data_mb': round(drv.peak_data / 2**20),
           'workers_peak_rss_mb': round(wrk.peak / 2**20) if cluster is not None else None,
           'stages_s': stage_times(runs[-1]) if runs else {}}
    res['outside_stages_s'] = round(wall - sum(res['stages_s'].values()), 1)  # process and kernel start, MLflow, between stages
    if p.returncode: res['error'] = last_error(out)
    if keep or p.returncode: res['project'] = str(proj)  # a failed run stays for its executed notebooks
    else: shutil.rmtree(proj, ignore_errors=True)
    return res


def worker_pids(cluster) -> list:
    "The pids of the cluster's worker processes (nannies' children included through `tree`)."
    try: return [w.process.process.pid for w in cluster.workers.values() if getattr(w, 'process', None) and w.process.process]
    except AttributeError: return []


def start_cluster(workers: int, memory_limit: str):
    "A LocalCluster in this process: `workers` processes of one thread each."
    import logging
    from distributed import LocalCluster
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                        host='127.0.0.1', dashboard_address=':0', silence_logs=logging.ERROR)


# ---------------------------------------------------------------------------------------------------------- report
def ratios(results: list) -> dict:
    "The issue's goals: Dask/local time on the smallest size, time growth smallest->largest per backend, driver memory per size."
    ok = [r for r in results if r['exit_code'] == 0 and not r['limit_bytes']]
    by = {(r['rows'], r['backend']): r for r in ok}
    out = {}
    sizes = sorted({r['rows'] for r in ok})
    for n in sizes:
        if (n, 'local') in by and (n, 'dask') in by:
            out[f'dask_over_local_time_{label(n)}'] = round(by[n, 'dask']['wall_s'] / by[n, 'local']['wall_s'], 2)
    for b in ('local', 'dask'):
        have = [n for n in sizes if (n, b) in by]
        if len(have) >= 2:
            lo, hi = have[0], have[-1]
            out[f'{b}_time_growth_{label(lo)}_to_{label(hi)}'] = {'ratio': round(by[hi, b]['wall_s'] / by[lo, b]['wall_s'], 2),
                                                                'rows_ratio': hi / lo}
        if have: out[f'{b}_driver_peak_mb'] = {label(n): by[n, b]['driver_peak_rss_mb'] for n in have}
    for r in results:  # limited runs: did the driver finish below the table's own size?
        if r['limit_bytes']:
            out[f"limited_{label(r['rows'])}_{r['backend']}_{r['limit_bytes'] / 2**30:.2f}GiB"] = {
                'exit': r['exit_code'], 'driver_peak_mb': r['driver_peak_rss_mb'], 'table_in_memory_mb': r.get('table_in_memory_mb')}
    return out


def table(results: list) -> str:
    "The results as a Markdown table, one row per size and backend."
    short = {s: s[3:] for s in STAGES}
    head = ['rows', 'backend', 'limit', 'exit', 'wall s', 'rows/s', 'driver MB', 'workers MB'] + [short[s] for s in STAGES] + ['other']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in results:
        lim = f"{r['limit_bytes'] / 2**30:.2f} GiB" if r['limit_bytes'] else '-'
        cells = [label(r['rows']), r['backend'], lim, r['exit_code'], r['wall_s'], r['rows_per_s'] or '-', r['driver_peak_rss_mb'],
                 r['workers_peak_rss_mb'] or '-'] + [r['stages_s'].get(s, '-') for s in STAGES] + [r.get('outside_stages_s', '-')]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    lim = lambda r: f" limited to {r['limit_bytes'] / 2**30:.2f} GiB" if r['limit_bytes'] else ''
    errs = [f"- {label(r['rows'])} {r['backend']}{lim(r)} exit {r['exit_code']}: {r['error']}" for r in results if r.get('error')]
    return '\n'.join(lines + ([''] + errs if errs else []))


GOALS = {'dask_over_local_time': 'goal <= 1.5 on 1M', 'time_growth': 'goal near-linear: about the rows ratio',
         'driver_peak_mb': 'goal flat on Dask', 'limited_': 'goal: Dask completes, local fails'}


def ratio_lines(r: dict) -> list:
    "The ratios as Markdown bullets, each with the issue's goal."
    goal = lambda k: next((g for p, g in GOALS.items() if p in k), '')
    return [f'- {k}: `{json.dumps(v)}` ({goal(k)})' for k, v in r.items()]


def save(results: list, meta: dict, out: Path):
    "Merge with earlier results in `out` (a size/backend/limit measured again replaces the old one); write JSON and Markdown."
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(out.read_text()) if out.exists() else {}
    key = lambda r: (r['rows'], r['backend'], r['limit_bytes'] or 0)
    merged = {key(r): r for r in prev.get('results', [])} | {key(r): r for r in results}
    allr = sorted(merged.values(), key=lambda r: (r['rows'], r['limit_bytes'] or 0, r['backend']))
    doc = {'machine': prev.get('machine', {}) | meta, 'results': allr, 'ratios': ratios(allr)}
    out.write_text(json.dumps(doc, indent=1))
    md = [f'# scale_bench', '', f"`{json.dumps(doc['machine'])}`", '', table(allr), '', 'Ratios:', *ratio_lines(doc['ratios']), '']
    out.with_suffix('.md').write_text('\n'.join(md))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='1M,4M,16M', help='row counts, smallest run first (default: 1M,4M,16M)')
    ap.add_argument('--backends', default='local,dask', help='local, dask or both (default: local,dask)')
    ap.add_argument('--limited', action='store_true', help='also the largest size on Dask and local with the driver limited')
    ap.add_argument('--limited-only', action='store_true', help='only the limited runs (implies --limited)')
    ap.add_argument('--limit-gb', type=float, help='the driver limit (default: 3/4 of the largest table in memory)')
    ap.add_argument('--workers', type=int, default=CORES, help='Dask workers (default: the cores)')
    ap.add_argument('--worker-memory', default=None, help='memory_limit per worker (default: 60%% of RAM / workers)')
    ap.add_argument('--data', default=str(HERE/'.data'), help='where the generated tables and the projects go (default: benchmarks/.data)')
    ap.add_argument('--keep', action='store_true', help='keep the projects and run folders')
    ap.add_argument('--out', default=str(HERE/'results/scale_bench.json'), help='the JSON written (and .md beside it)')
    a = ap.parse_args(); a.limited |= a.limited_only
    import psutil
    sizes = sorted(parse_size(s) for s in a.sizes.split(',')); backends = [b.strip() for b in a.backends.split(',')]
    bad = set(backends) - {'local', 'dask'}
    if bad: raise SystemExit(f'--backends: {sorted(bad)} unknown; known: local, dask')
    root = Path(a.data); root.mkdir(parents=True, exist_ok=True)
    ram = psutil.virtual_memory().total
    wmem = a.worker_memory or f'{int(0.6 * ram / a.workers / 2**20)}MiB'
    meta = {'cores': CORES, 'ram_gb': round(ram / 2**30, 1), 'dask_workers': a.workers, 'worker_memory': wmem,
            'date': datetime.now().isoformat(timespec='seconds')}
    what = 'limited runs only' if a.limited_only else f'backends {backends}' + (' + limited' if a.limited else '')
    print(f"scale_bench: sizes {[label(n) for n in sizes]}, {what}, {CORES} cores, {meta['ram_gb']} GB", flush=True)
    folders = {n: make_data(n, root) for n in sizes + ([max(sizes)] if a.limited else [])}
    cluster = start_cluster(a.workers, wmem) if 'dask' in backends and not a.limited_only or a.limited else None
    if cluster is not None: print(f'Dask cluster {cluster.scheduler_address}: {a.workers} workers x 1 thread, {wmem} each', flush=True)
    jobs = [] if a.limited_only else [(n, b, None) for n in sizes for b in backends]
    if a.limited:
        big = max(sizes); per_row = memory_per_row(folders[big]); in_mem = int(per_row * big)
        lim = int(a.limit_gb * 2**30) if a.limit_gb else in_mem * 3 // 4  # the Dask driver's own VmData was ~2.1 GB at 1M rows
        meta['limited'] = {'rows': big, 'table_in_memory_mb': round(in_mem / 2**20), 'bytes_per_row': round(per_row, 1), 'limit_mb': round(lim / 2**20)}
        print(f"limited: {label(big)} rows are {in_mem / 2**30:.2f} GiB in pandas; driver RLIMIT_DATA {lim / 2**30:.2f} GiB", flush=True)
        jobs += [(big, 'local', lim), (big, 'dask', lim)]  # local first: it is expected to fail, and soon
    results = []
    try:
        for n, b, lim in jobs:
            print(f"[{datetime.now():%H:%M:%S}] {label(n)} rows on {b}{' (limited)' if lim else ''} ...", flush=True)
            r = run_one(n, b, folders[n], root, cluster if b == 'dask' else None, lim, a.keep)
            if lim: r['table_in_memory_mb'] = meta['limited']['table_in_memory_mb']
            results.append(r)
            st = ' '.join(f'{s[3:]} {v:.0f}' for s, v in r['stages_s'].items())
            print(f"   exit {r['exit_code']}  {r['wall_s']:.0f} s  {r['rows_per_s'] or '-'} rows/s  driver {r['driver_peak_rss_mb']} MB"
                  f"{'  workers ' + str(r['workers_peak_rss_mb']) + ' MB' if r['workers_peak_rss_mb'] is not None else ''}  [{st}]"
                  f"{'  error: ' + r['error'] if r.get('error') else ''}", flush=True)
            save(results, meta, Path(a.out))
    finally:
        if cluster is not None: cluster.close()
    out = save(results, meta, Path(a.out))
    print('\n' + table(json.loads(out.read_text())['results']))
    print(f"\nratios (goals: dask/local on 1M <= 1.5x; time growth 1M->16M ~16; driver memory flat on Dask):\n"
          f"{json.dumps(json.loads(out.read_text())['ratios'], indent=1)}\nwritten {out} and {out.with_suffix('.md')}")


if __name__ == '__main__':
    main()
