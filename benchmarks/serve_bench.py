"""Our service against `mlflow models serve` on the same registered model, both on 127.0.0.1.

Usage: python benchmarks/serve_bench.py [--project .] [--seconds 10] [--concurrency 4] [--batches 20]

Needs a champion in the project's registry (run `mlpipeline run` first). Each server is driven with the same
bounded load: single-row requests for `--seconds` from one client (latency) and from `--concurrency` client
processes (throughput), each on a keep-alive connection, then `--batches` requests of 1,000 rows one after the other. Our service is measured with request capture on
(its default) and off, to show what capture costs. Prints requests/s, p50, p99 and errors per server, and the
ratios ours/mlflow. Client and servers share the machine's cores, as in the shared README's figures.
"""
import argparse, http.client, json, multiprocessing as mp, os, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_ready(port: int, path: str, proc, timeout: float = 120):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None: proc.log.seek(0); raise RuntimeError(f'server exited with {proc.returncode}: {proc.log.read()[-2000:]}')
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=2); c.request('GET', path)
            if c.getresponse().status == 200: return time.time() - t
        except OSError: pass
        time.sleep(0.3)
    raise TimeoutError(f'no answer on {port}{path} after {timeout}s')


def client_loop(args):
    "One client: POST `body` on one keep-alive connection until `seconds` pass; latencies and errors."
    port, path, body, seconds = args
    conn, lat, errors = http.client.HTTPConnection('127.0.0.1', port, timeout=30), [], 0
    headers = {'Content-Type': 'application/json'}
    end = time.perf_counter() + seconds
    while (t := time.perf_counter()) < end:
        try:
            conn.request('POST', path, body, headers); r = conn.getresponse(); r.read()
            if r.status != 200: errors += 1
        except OSError:
            errors += 1; conn.close(); conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
        lat.append(time.perf_counter() - t)
    return lat, errors


def load(port: int, path: str, body: bytes, seconds: float, concurrency: int) -> dict:
    "Single-row load at fixed concurrency for a fixed time."
    with mp.get_context('spawn').Pool(concurrency) as pool:
        t = time.perf_counter()
        parts = pool.map(client_loop, [(port, path, body, seconds)] * concurrency)
        wall = time.perf_counter() - t
    lat = np.concatenate([np.array(p[0]) for p in parts]) * 1e3
    n, errors = len(lat), sum(p[1] for p in parts)
    return {'requests': n, 'rps': n / seconds, 'p50_ms': float(np.median(lat)), 'p99_ms': float(np.quantile(lat, 0.99)), 'errors': errors, 'wall_s': wall}


def batches(port: int, path: str, body: bytes, n: int, rows: int) -> dict:
    "`n` batch requests one after another."
    lat, errors = client_loop_n(port, path, body, n)
    lat = np.array(lat) * 1e3
    return {'batch_p50_ms': float(np.median(lat)), 'batch_p99_ms': float(np.quantile(lat, 0.99)), 'batch_rows_per_s': rows / (np.median(lat) / 1e3), 'batch_errors': errors}


def client_loop_n(port, path, body, n):
    conn, lat, errors = http.client.HTTPConnection('127.0.0.1', port, timeout=120), [], 0
    for _ in range(n):
        t = time.perf_counter(); conn.request('POST', path, body, {'Content-Type': 'application/json'}); r = conn.getresponse(); r.read()
        errors += r.status != 200; lat.append(time.perf_counter() - t)
    return lat, errors


def start(cmd: list, env: dict, cwd: Path):
    log = tempfile.TemporaryFile('w+')  # not a pipe: a server logging every request would fill it and block
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def stop(proc):
    proc.terminate()
    try: proc.wait(20)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()


def measure(project: Path, seconds: float = 10, concurrency: int = 4, n_batches: int = 20, say=print) -> dict:
    "Each server started on the project's champion and driven with the same load; per-server figures and the ratios."
    from mlpipeline.config import load_config, get_key, tracking_uri
    from mlpipeline.runfolder import mlflow_experiment
    from mlpipeline.serve import load_served
    cfg = load_config(project=project)
    mlflow_experiment(cfg)
    served = load_served(get_key(cfg, 'mlflow.model_name'))
    uri = f'models:/{served.name}/{served.version}'
    run = Path(served.tags['run_folder'])
    test = pd.read_parquet(run/'data/test.parquet').drop(columns=[cfg['target']])
    recs = json.loads(pd.concat([test] * (1000 // len(test) + 1)).head(1000).to_json(orient='records'))
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != 'MLFLOW_EXPERIMENT_ID'} | {'MLFLOW_TRACKING_URI': tracking_uri(cfg)}
    env['PATH'] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # mlflow starts `uvicorn` from the PATH
    say(f'model {uri} ({served.booster.num_boosted_rounds()} trees, {len(served.tf.outputs)} features); '
        f'{concurrency} clients x {seconds:g}s of single rows, then {n_batches} batches of 1000 rows; '
        f'{os.cpu_count()} cores')
    capdir = Path(tempfile.mkdtemp())
    ref = f'{served.name}/{served.version}'
    ours = [str(bindir/'mlpipeline'), 'serve', '--model', ref]
    servers = {
        'mlpipeline (no capture)': lambda p: (ours + ['--port', str(p), '-p', 'serve.capture.enabled=false'],
                                              '/health', '/predict', lambda r: r),
        'mlpipeline serve': lambda p: (ours + ['--port', str(p), '-p', f'serve.capture.dir={capdir}'],
                                       '/health', '/predict', lambda r: r),
        'mlflow models serve': lambda p: ([str(bindir/'mlflow'), 'models', 'serve', '-m', uri, '--env-manager', 'local',
                                           '-h', '127.0.0.1', '-p', str(p)], '/ping', '/invocations',
                                          lambda r: {'dataframe_records': r if isinstance(r, list) else [r]}),
    }
    results = {}
    for name, make in servers.items():
        port = free_port()
        cmd, ready, path, wrap = make(port)
        proc = start(cmd, env, project)
        try:
            up = wait_ready(port, ready, proc)
            one, many = json.dumps(wrap(recs[0])).encode(), json.dumps(wrap(recs)).encode()
            client_loop_n(port, path, one, 300)  # warm up (the first server measured otherwise pays for a cold machine)
            one_client = {f'c1_{k}': v for k, v in load(port, path, one, seconds, 1).items()}
            results[name] = ({'start_s': up} | one_client | load(port, path, one, seconds, concurrency)
                             | batches(port, path, many, n_batches, len(recs)))
        finally: stop(proc)
        r = results[name]
        say(f"  {name:<24} started in {r['start_s']:.1f}s: 1 client {r['c1_rps']:.0f} req/s, "
            f"p50 {r['c1_p50_ms']:.2f} ms; "
            f"{concurrency} clients {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"{r['errors'] + r['c1_errors']} errors; 1000 rows p50 {r['batch_p50_ms']:.1f} ms")
    shutil.rmtree(capdir, ignore_errors=True)
    o, t = results['mlpipeline serve'], results['mlflow models serve']
    results['ratios'] = {'rps': o['rps'] / t['rps'], 'c1_rps': o['c1_rps'] / t['c1_rps'],
                         'c1_p50': t['c1_p50_ms'] / o['c1_p50_ms'], 'batch_p50': t['batch_p50_ms'] / o['batch_p50_ms']}
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--project', default='.')
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--concurrency', type=int, default=4)
    ap.add_argument('--batches', type=int, default=20)
    a = ap.parse_args()
    project = Path(a.project).resolve()
    results = measure(project, a.seconds, a.concurrency, a.batches)
    ours, theirs, nocap = results['mlpipeline serve'], results['mlflow models serve'], results['mlpipeline (no capture)']
    cols = ['c1_rps', 'c1_p50_ms', 'c1_p99_ms', 'rps', 'p50_ms', 'p99_ms', 'errors', 'batch_p50_ms', 'batch_errors']
    table = pd.DataFrame({k: v for k, v in results.items() if k != 'ratios'}).T[cols].astype(float).round(2)
    table.columns = ['1 client req/s', 'p50 ms', 'p99 ms', f'{a.concurrency} clients req/s', 'p50 ms ', 'p99 ms ',
                     'errors', '1000 rows p50 ms', 'batch errors']
    print('\n' + table.to_string())
    r = results['ratios']
    print(f"\nours/mlflow: single-row throughput {r['rps']:.1f}x ({a.concurrency} clients), "
          f"{r['c1_rps']:.1f}x (1 client); "
          f"p50 {r['c1_p50']:.1f}x lower (1 client), 1000-row batch {r['batch_p50']:.1f}x faster")
    print(f"capture on vs off: throughput {100 * (ours['rps'] / nocap['rps'] - 1):+.1f}% ({a.concurrency} clients), "
          f"{100 * (ours['c1_rps'] / nocap['c1_rps'] - 1):+.1f}% (1 client); "
          f"p50 {ours['c1_p50_ms']:.2f} vs {nocap['c1_p50_ms']:.2f} ms (1 client)")
    goal = ours['rps'] >= 3 * theirs['rps'] and ours['c1_p50_ms'] <= 2.0
    print(f"goal (>= 3x mlflow's single-row throughput, p50 <= 2 ms for one client): {'met' if goal else 'NOT met'}")
    out = project/'benchmarks/results'
    out.mkdir(parents=True, exist_ok=True)
    (out/'serve_bench.json').write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
