"""The champion's container image against the local service, side by side on 127.0.0.1.

Usage: python benchmarks/deploy_bench.py [--project .] [--requests 500]

Needs a champion in the project's registry (`mlpipeline run` first) and podman or docker. Measures: the image build
cold (no base image, no cached layers: `--cold` removes them first), and warm (right after, every layer cached); the image size; the start-up time from `run` to the first answered `/health`; and the single-row
`/predict` latency (p50, p99 over `--requests` sequential requests on one keep-alive connection) of the container
and of `mlpipeline serve` on the same version. Writes benchmarks/results/deploy_bench.json with `uptime`'s load.
"""
import argparse, http.client, json, os, socket, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent/'mlpipeline'


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def first_answer(port: int, t0: float, timeout: float = 120) -> float:
    "Seconds from `t0` until /health answers 200."
    while time.perf_counter() - t0 < timeout:
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
            c.request('GET', '/health')
            if c.getresponse().status == 200: return time.perf_counter() - t0
        except OSError: pass
        time.sleep(0.05)
    raise TimeoutError(port)


def latencies(port: int, body: bytes, n: int) -> dict:
    "p50 and p99 (ms) of `n` single-row requests, one after the other on one connection."
    conn, out = http.client.HTTPConnection('127.0.0.1', port, timeout=30), []
    for _ in range(n):
        t = time.perf_counter()
        conn.request('POST', '/predict', body, {'Content-Type': 'application/json'})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        out.append(time.perf_counter() - t)
    ms = np.array(out[n // 10:]) * 1e3  # the first tenth warms up
    return {'p50_ms': round(float(np.percentile(ms, 50)), 3), 'p99_ms': round(float(np.percentile(ms, 99)), 3)}


def timed_build(project: Path, tag: str) -> float:
    t = time.perf_counter()
    subprocess.run([str(CLI), 'build', 'image', '--tag', tag], cwd=project, check=True, capture_output=True)
    return round(time.perf_counter() - t, 1)


def main():
    a = argparse.ArgumentParser()
    a.add_argument('--project', default='.')
    a.add_argument('--requests', type=int, default=500)
    a.add_argument('--cold', action='store_true', help='remove the base image and cached layers first')
    args = a.parse_args()
    sys.path.insert(0, str(REPO))
    from mlpipeline.deploy import container_engine, engine_env, BASE_IMAGE, PORT
    engine, project = container_engine(), Path(args.project).resolve()
    env = engine_env(engine)
    run = lambda *c, **kw: subprocess.run([engine, *c], env=env, capture_output=True, text=True, **kw)
    tag, res = 'localhost/mlpipeline-bench:latest', {'uptime_before': subprocess.getoutput('uptime')}
    if args.cold:
        run('rmi', '-f', tag, BASE_IMAGE)
        run('image', 'prune', '-f')
        res['build_cold_s'] = timed_build(project, tag)
    else: res['build_first_s'] = timed_build(project, tag)  # whatever the engine has cached
    res['build_warm_s'] = timed_build(project, tag + '-warm')  # every layer cached by the build before
    run('rmi', '-f', tag + '-warm')
    res['image_mb'] = round(int(run('image', 'inspect', '--format', '{{.Size}}', tag).stdout) / 1e6)
    row = pd.read_csv(REPO/'tests/data/telco_sample.csv').drop(columns=['churn']).head(1)
    body = json.dumps(json.loads(row.to_json(orient='records'))[0]).encode()
    port = free_port()
    t0 = time.perf_counter()
    cid = run('run', '-d', '-p', f'127.0.0.1:{port}:{PORT}', tag, check=True).stdout.strip().splitlines()[-1]
    try:
        res['container_first_answer_s'] = round(first_answer(port, t0), 2)
        res['container'] = latencies(port, body, args.requests)
    finally: run('rm', '-f', cid)
    port = free_port()
    e = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    t0 = time.perf_counter()
    local = subprocess.Popen([str(CLI), 'serve', '--port', str(port), '-p', 'serve.reload_s=0'], cwd=project, env=e,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        res['local_first_answer_s'] = round(first_answer(port, t0), 2)
        res['local'] = latencies(port, body, args.requests)
    finally:
        local.terminate()
        local.wait(30)
    run('rmi', '-f', tag)
    res['p50_ratio_container_over_local'] = round(res['container']['p50_ms'] / res['local']['p50_ms'], 2)
    res['uptime_after'] = subprocess.getoutput('uptime')
    print(json.dumps(res, indent=1))
    out = REPO/'benchmarks/results/deploy_bench.json'
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + '\n')


if __name__ == '__main__': main()
