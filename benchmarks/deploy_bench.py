"""The champion's container image against the local service, side by side on 127.0.0.1.

Usage: python benchmarks/deploy_bench.py [--project .] [--requests 1000] [--cold]

Needs a champion in the project's registry (`mlpipeline run` first) and podman or docker. Measures: the image build
cold (`--cold`: no base image, no cached layers, removed first) or first, and warm (right after, every layer cached);
the image size; then `measure_image` (mlpipeline/deploy.py), what `export k8s --measure` sizes pods from: the
start-up time from `run` to the first answered `/health`, single-row `/predict` latency (p50, p99 over `--requests`
sequential requests on one keep-alive connection), CPU per request and cores kept busy, and the peak memory at
full batches; and the same single-row latency of `mlpipeline serve` on the same version. Prints the pod sizing
those figures give. Writes benchmarks/results/deploy_bench.json with `uptime`'s load.
"""
import argparse, http.client, json, os, subprocess, sys, time
from pathlib import Path
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent/'mlpipeline'


def timed_build(project: Path, tag: str) -> float:
    t = time.perf_counter()
    subprocess.run([str(CLI), 'build', 'image', '--tag', tag], cwd=project, check=True, capture_output=True)
    return round(time.perf_counter() - t, 1)


def main():
    a = argparse.ArgumentParser()
    a.add_argument('--project', default='.')
    a.add_argument('--requests', type=int, default=1000)
    a.add_argument('--cold', action='store_true', help='remove the base image and cached layers first')
    args = a.parse_args()
    sys.path.insert(0, str(REPO))
    from mlpipeline.deploy import (container_engine, engine_env, BASE_IMAGE, first_answer, measure_image,
                                   one_row_latency, sized_resources)
    from mlpipeline.server import free_port
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
    res['container'] = measure_image(tag, args.requests)
    res['sized'] = sized_resources(res['container'])
    row = pd.read_csv(REPO/'tests/data/telco_sample.csv').drop(columns=['churn']).head(1)
    body = json.dumps(json.loads(row.to_json(orient='records'))[0]).encode()
    port = free_port()
    e = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    t0 = time.perf_counter()
    local = subprocess.Popen([str(CLI), 'serve', '--port', str(port), '-p', 'serve.reload_s=0'], cwd=project, env=e,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        res['local_first_answer_s'] = round(first_answer(port, t0), 2)
        res['local'] = one_row_latency(http.client.HTTPConnection('127.0.0.1', port, timeout=30), body, args.requests)
        del res['local']['seconds']
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
