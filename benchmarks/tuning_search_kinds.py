"""The three search kinds at the same trial budget on the demo data: time, best validation loss, test ROC-AUC.

    python benchmarks/tuning_search_kinds.py [--trials 30]

Splits and transform as the pipeline makes them (seed 42); each search then trains its final model with the best
parameters. Results go to benchmarks/results/tuning_search_kinds.json.
"""
import argparse, json, tempfile, time
from pathlib import Path
import mlflow
from mlpipeline.config import load_config
from mlpipeline.ingest import load_data
from mlpipeline.features import split_frame, fit_transform
from mlpipeline.train import tune, fit_booster, predict
from mlpipeline.evaluate import classification_metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); ap.add_argument('--trials', type=int, default=30)
    args = ap.parse_args()
    cfg = load_config(project=tempfile.mkdtemp(), overrides=['data.path=demo://telco_churn'])
    df = load_data(cfg)
    parts = split_frame(df, 'churn', 'binary', seed=42)
    tf = fit_transform(parts['train'], 'churn', 'binary', cfg['features'], drop=['rownames'])
    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    results = {}
    with mlflow.start_run():
        for method in ('grid', 'random', 'bayes'):
            t = time.perf_counter()
            best, trials = tune(tf, parts['train'], parts['valid'], cfg['model'], cfg['tuning'] | {'method': method, 'trials': args.trials}, progress=False)
            secs = time.perf_counter() - t
            b = fit_booster(tf, parts['train'], parts['valid'], cfg['model'] | best)
            m = classification_metrics(tf.encode_target(parts['test'].churn), predict(b, tf, parts['test']))
            done = [x for x in trials if x['state'] == 'COMPLETE']
            results[method] = {'seconds': round(secs, 1), 'trials': len(trials), 'pruned': len(trials) - len(done),
                               'best_valid_logloss': round(min(x['value'] for x in done), 5), 'test_roc_auc': round(m['roc_auc'], 4),
                               'test_log_loss': round(m['log_loss'], 4), 'best_params': best}
            print(method, json.dumps(results[method]))
    out = Path(__file__).parent/'results/tuning_search_kinds.json'; out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == '__main__': main()
