"""The online feature lookup's share of a single-row `/predict` request served by entity id.

Usage: python benchmarks/feature_store_bench.py [--requests 300]

Trains a champion on the test sample in a throw-away project, publishes its run to a Feast repository (SQLite online
store) with `mlpipeline features publish`, starts `mlpipeline serve` with `serve.feature_store: true` on 127.0.0.1,
then sends single-row requests alternately carrying only the id and carrying the full record (so both see the same
load), and times the lookup alone (`online_features` through a Feast process of the same environment, as the service
does). Prints the medians and the load average; writes benchmarks/results/feature_store_bench.json.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import pandas as pd

TESTS = Path(__file__).parents[1]/'tests'
sys.path.insert(0, str(TESTS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--requests', type=int, default=300)
    n = ap.parse_args().requests
    from conftest import SAMPLE, write_project, run_in_process, mlpipeline
    from test_serve import Server
    from mlpipeline.feature_store import FEAST_VERSION, make_feast_venv, FeastProcess, online_features
    python = make_feast_venv(Path.home()/'.cache/mlpipeline'/f'feast-venv-{FEAST_VERSION}')
    project = write_project(Path(tempfile.mkdtemp(prefix='fs-bench-'))/'project',
                            serve={'feature_store': True, 'log': {'requests': False}},
                            feature_store={'python': str(python), 'repo': 'features'})
    rd = run_in_process(project)
    subprocess.run([str(Path(sys.executable).parent/'mlpipeline'), 'features', 'publish', '--run', rd.name],
                   cwd=project, check=True, capture_output=True)
    full = json.loads(pd.read_csv(SAMPLE).drop(columns=['churn']).to_json(orient='records'))
    srv = Server(project)
    by_id, whole = [], []
    try:
        for k in range(n + 20):
            rec = full[k % len(full)]
            for body, out in (({'rownames': rec['rownames']}, by_id), (rec, whole)):
                t = time.perf_counter()
                r = srv.http.post('/predict', json=body)
                took = time.perf_counter() - t
                assert r.status_code == 200, r.text
                if k >= 20: out.append(took)  # the first requests warm the Feast process and the model
    finally: srv.stop()
    lookups = []
    with FeastProcess(python, project/'features') as fs:
        for k in range(n + 20):
            t = time.perf_counter()
            online_features(fs, [full[k % len(full)]['rownames']], 'rownames', {'service': 'test_model'})
            if k >= 20: lookups.append(time.perf_counter() - t)
    p50 = lambda xs: round(1e3 * statistics.median(xs), 3)
    res = {'requests': n, 'p50_ms_by_id': p50(by_id), 'p50_ms_full_record': p50(whole), 'p50_ms_lookup': p50(lookups),
           'load': os.getloadavg(), 'feast': FEAST_VERSION}
    res['lookup_share_of_by_id_request'] = round(res['p50_ms_lookup'] / res['p50_ms_by_id'], 3)
    res['by_id_over_full_record'] = round(res['p50_ms_by_id'] / res['p50_ms_full_record'], 3)
    print(json.dumps(res, indent=1))
    out = Path(__file__).parent/'results/feature_store_bench.json'
    out.write_text(json.dumps(res, indent=1) + '\n')


if __name__ == '__main__':
    main()
