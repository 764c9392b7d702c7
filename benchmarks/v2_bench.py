"""The Open Inference Protocol's infer against /predict on the same service, and the cost of explanations.

Usage: python benchmarks/v2_bench.py [--rounds 300] [--big-rounds 30] [--out benchmarks/results/v2_bench.json]

Trains the demo's model size (300 trees, depth 6; early stopping off, so all 300 are kept) on the test sample in
a temporary project, serves it with `mlpipeline serve` on 127.0.0.1 (capture off), and sends, interleaved round by
round on one keep-alive connection so that load changes hit every case alike: one row and 1,000 rows to /predict, to
V2 infer as JSON tensors and as binary tensors (tritonclient's default encoding), and with explanations. Prints and
writes p50/p90 per case and the ratios to /predict; the load average before and after.
"""
import argparse, http.client, json, os, socket, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, yaml

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent/'mlpipeline'


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def v2_json(rows: list, names: list, explain: bool = False) -> bytes:
    "A V2 request with one JSON tensor per field."
    ins = [{'name': k, 'datatype': 'BYTES', 'shape': [len(rows)], 'data': [r[k] for r in rows]} for k in names]
    return json.dumps({'inputs': ins} | ({'parameters': {'explain': True}} if explain else {})).encode()


def v2_binary(rows: list, meta: dict) -> tuple[bytes, dict]:
    "A V2 request with binary tensors, as tritonclient sends it by default: the body and its header."
    import tritonclient.http as triton
    from tritonclient.http._utils import _get_inference_request
    ins = []
    for spec in meta['inputs']:
        vals = [r[spec['name']] for r in rows]
        dtype = 'FP64' if spec['datatype'] != 'BYTES' else 'BYTES'
        t = triton.InferInput(spec['name'], [len(rows)], dtype)
        t.set_data_from_numpy(np.array([np.nan if v is None else v for v in vals], dtype=object if dtype == 'BYTES' else 'float64'))
        ins.append(t)
    body, size = _get_inference_request(ins, '', None, 0, False, False, 0, None, None)
    return body, {'Inference-Header-Content-Length': str(size)} if size is not None else {}


def timed(conn, path: str, body: bytes, headers: dict) -> float:
    t = time.perf_counter()
    conn.request('POST', path, body, {'Content-Type': 'application/json'} | headers)
    r = conn.getresponse()
    data = r.read()
    took = time.perf_counter() - t
    if r.status != 200: raise RuntimeError(f'{path}: {r.status} {data[:300]!r}')
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=300)
    ap.add_argument('--big-rounds', type=int, default=30)
    ap.add_argument('--out', default=str(REPO/'benchmarks/results/v2_bench.json'))
    a = ap.parse_args()
    project = Path(tempfile.mkdtemp(prefix='v2bench-'))/'project'
    project.mkdir(parents=True)
    cfg = {'data': {'path': str(REPO/'tests/data/telco_sample.csv'), 'id_column': 'rownames'}, 'target': 'churn',
           'model': {'n_estimators': 300, 'max_depth': 6, 'early_stopping_rounds': None},  # all 300 trees, as on the demo
           'tuning': {'method': 'none'}, 'cv': {'folds': 0}, 'mlflow': {'model_name': 'bench'},
           'serve': {'capture': {'enabled': False}, 'reload_s': 0}}
    (project/'pipeline.yaml').write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    subprocess.run([str(CLI), 'run', '--quiet'], cwd=project, env=env, check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([str(CLI), 'serve', '--port', str(port)], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
                c.request('GET', '/v2/health/ready')
                if c.getresponse().status == 200: break
            except OSError: time.sleep(0.3)
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        conn.request('GET', '/v2/models/bench')
        meta = json.loads(conn.getresponse().read())
        names = [i['name'] for i in meta['inputs']]
        sample = json.loads(pd.read_csv(REPO/'tests/data/telco_sample.csv').drop(columns=['churn']).to_json(orient='records'))
        one, big = sample[:1], (sample * 3)[:1000]
        infer = '/v2/models/bench/infer'
        cases = {'predict_1': ('/predict', json.dumps(one).encode(), {}), 'v2_json_1': (infer, v2_json(one, names), {}),
                 'v2_binary_1': (infer, *v2_binary(one, meta)),
                 'predict_explain_1': ('/predict?explain=true', json.dumps(one).encode(), {}),
                 'v2_explain_1': (infer, v2_json(one, names, True), {})}
        bigs = {'predict_1000': ('/predict', json.dumps(big).encode(), {}), 'v2_json_1000': (infer, v2_json(big, names), {}),
                'v2_binary_1000': (infer, *v2_binary(big, meta)), 'predict_explain_1000': ('/predict?explain=true', json.dumps(big).encode(), {})}
        load_before = os.getloadavg()
        lat = {k: [] for k in cases | bigs}
        for k, (p, b, h) in (cases | bigs).items(): timed(conn, p, b, h)  # warm-up
        for i in range(a.rounds):
            for k, (p, b, h) in cases.items(): lat[k].append(timed(conn, p, b, h))
            if i < a.big_rounds:
                for k, (p, b, h) in bigs.items(): lat[k].append(timed(conn, p, b, h))
        load_after = os.getloadavg()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    q = {k: {'n': len(v), 'p50_ms': round(float(np.median(v)) * 1e3, 3), 'p90_ms': round(float(np.quantile(v, 0.9)) * 1e3, 3)} for k, v in lat.items()}
    ratio = {k: round(q[k]['p50_ms'] / q[f"predict_{k.rsplit('_', 1)[1]}"]['p50_ms'], 2) for k in q if not k.startswith('predict_') or 'explain' in k}
    out = {'cases': q, 'p50_ratio_to_predict': ratio, 'load_before': load_before, 'load_after': load_after,
           'model': 'telco sample, 300 trees, depth 6 (early stopping off)', 'cpus': os.cpu_count(),
           'note': 'client and server on the same 2 shared cores; interleaved round by round on keep-alive connections'}
    print(json.dumps(out, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__': main()
