"""The service's scoring path with the onnxruntime backend against the XGBoost backend, on the same registered model.

Usage: python benchmarks/onnx_bench.py [--project .] [--model name@alias] [--calls 2000] [--batches 50]

Needs a registered model in the project (run `mlpipeline run` first). Both backends are `Served` objects loaded as the
service loads them (`load_served(..., backend)`), in this process, without HTTP: what is timed is `Served.predict`,
i.e. the RowEncoder's matrix from checked columns plus the scoring. Single-row latency: `--calls` calls on one test
record (p50, p99); throughput: `--batches` calls on 1,000 records (rows/s at the median). The scoring alone on the
prepared matrix is shown beside it. Prints a table and writes benchmarks/results/onnx_bench.json.
"""
import argparse, json, os, time
from pathlib import Path
import numpy as np, pandas as pd


def timed(fn, n: int) -> np.ndarray:
    "Seconds per call of `fn`, `n` calls after 50 warm-up calls."
    for _ in range(50): fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter(); fn(); out[i] = time.perf_counter() - t
    return out


def measure(project: Path, model: str | None = None, calls: int = 2000, batches: int = 50, say=print) -> dict:
    "Both backends' `Served.predict` on one record and on 1,000: p50/p99 and rows/s, and the scoring alone."
    from mlpipeline.config import load_config, get_key
    from mlpipeline.runfolder import mlflow_experiment
    from mlpipeline.serve import load_served, parse_model_ref, check_records
    from mlpipeline.validate import RULES
    from mlpipeline.onnx_export import parity_gap
    cfg = load_config(project=project)
    mlflow_experiment(cfg)
    name, ref = parse_model_ref(model or get_key(cfg, 'serve.model'), get_key(cfg, 'mlflow.model_name'))
    served = {b: load_served(name, ref, b) for b in ('xgboost', 'onnx')}
    s = served['xgboost']
    test = pd.read_parquet(Path(s.tags['run_folder'])/'data/test.parquet').drop(columns=[cfg['target']])
    recs = json.loads(pd.concat([test] * (1000 // len(test) + 1)).head(1000).to_json(orient='records'))
    rules = RULES | {'unseen_category': 'warning', 'out_of_range': 'warning'}
    one, many = check_records(recs[:1], s.fields, rules)[0], check_records(recs, s.fields, rules)[0]
    X1, X = s.encoder.matrix(one), s.encoder.matrix(many)
    say(f'model {name}/{s.version}: {s.tf.task}, {s.booster.num_boosted_rounds()} rounds, {len(s.tf.outputs)} features '
        f'({s.tf.encoding} encoding); {os.cpu_count()} cores; xgboost nthread {get_key(cfg, "model.nthread")}, '
        'onnxruntime default threads')
    results = {}
    for b, sv in served.items():
        score = sv.scorer if sv.scorer is not None else sv.booster.inplace_predict
        lat, bat = timed(lambda: sv.predict(one), calls) * 1e6, timed(lambda: sv.predict(many), batches)
        raw1, rawb = timed(lambda: score(X1), calls) * 1e6, timed(lambda: score(X), batches)
        results[b] = {'p50_us': float(np.median(lat)), 'p99_us': float(np.quantile(lat, 0.99)),
                      'rows_per_s': len(recs) / float(np.median(bat)), 'score_only_p50_us': float(np.median(raw1)),
                      'score_only_rows_per_s': len(recs) / float(np.median(rawb))}
    results['parity_gap_1000_rows'] = parity_gap(served['onnx'].predict(many), s.predict(many))
    results['model'] = {'name': name, 'version': s.version, 'task': s.tf.task, 'rounds': s.booster.num_boosted_rounds(),
                        'features': len(s.tf.outputs), 'encoding': s.tf.encoding, 'cores': os.cpu_count(),
                        'calls': calls, 'batches': batches}
    x, o = results['xgboost'], results['onnx']
    results['ratios'] = {'batch_rows_per_s': o['rows_per_s'] / x['rows_per_s'],
                         'one_row_p50': x['p50_us'] / o['p50_us']}
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--project', default='.')
    ap.add_argument('--model')
    ap.add_argument('--calls', type=int, default=2000)
    ap.add_argument('--batches', type=int, default=50)
    a = ap.parse_args()
    results = measure(Path(a.project).resolve(), a.model, a.calls, a.batches)
    table = pd.DataFrame({k: v for k, v in results.items() if k in ('xgboost', 'onnx')}).T.round(1)
    table.columns = ['predict 1 row p50 us', 'p99 us', 'predict 1000 rows: rows/s', 'score only 1 row p50 us',
                     'score only rows/s']
    print('\n' + table.to_string())
    x, o = results['xgboost'], results['onnx']
    one, many = x['score_only_p50_us'] / o['score_only_p50_us'], o['score_only_rows_per_s'] / x['score_only_rows_per_s']
    print(f"\nonnx/xgboost: single row p50 {x['p50_us'] / o['p50_us']:.1f}x lower, batch throughput "
          f"{o['rows_per_s'] / x['rows_per_s']:.1f}x; scoring alone {one:.1f}x (1 row), {many:.1f}x (1000 rows); "
          f"parity gap {results['parity_gap_1000_rows']:.2g}")
    out = Path(__file__).resolve().parent/'results'
    out.mkdir(parents=True, exist_ok=True)
    (out/'onnx_bench.json').write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
