"""Drift decisions on the demo data: false alarms on no-drift batches, detection of injected shifts, profiling speed.

Usage: python benchmarks/drift_bench.py [--trials 100] [--batch 1000] [--big-batch 20000] [--profile-rows 1000000]

Each trial splits the demo table (7,043 rows, id and target dropped) at random into a reference of 70% and a pool
of the rest, profiles the reference, and draws a batch of `--batch` rows from the pool without replacement: a
no-drift batch. The same batch is then shifted in one way at a time: the mean of one numeric feature moved by 0.1,
0.25 and 0.5 of its standard deviation, 10 points of `contract`'s rows moved from its most to its second most
frequent category, and a new category in 5% of `payment_method`. Every batch is decided two ways:

- ours: `mlpipeline.monitor.drift_table` with the config's defaults (Holm-corrected p-values and an effect size);
- whylogs' default categories: `calculate_drift_scores(..., with_thresholds=True)`, a batch alerts when any column
  is DRIFT or POSSIBLE_DRIFT (and, stricter, DRIFT only).

A shift counts as detected when the shifted column is among the flagged ones. A second no-drift set draws
`--big-batch` rows with replacement from the pool: on large batches p-values flag the pool's own small sampling
difference, which an effect size ignores. Last, profiling throughput on `--profile-rows` rows (the demo resampled):
one `why.log` call against `profile_parallel` (row ranges in forked processes, merged), each timed three times.
Writes benchmarks/results/drift_bench.json.
"""
import argparse, json, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
from mlpipeline.config import DEFAULTS
from mlpipeline.monitor import whylogs, profile_frame, profile_parallel, drift_table, normalise_labels

warnings.filterwarnings('ignore')


def whylogs_flags(ref, cur) -> tuple[set, set]:
    "Columns whylogs' default categories call DRIFT or POSSIBLE_DRIFT, and those it calls DRIFT."
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores
    scores = calculate_drift_scores(target_view=cur, reference_view=ref, with_thresholds=True)
    cat = {c: s['drift_category'] for c, s in scores.items() if s}
    return {c for c, k in cat.items() if k in ('DRIFT', 'POSSIBLE_DRIFT')}, {c for c, k in cat.items() if k == 'DRIFT'}


def shifted(batch: pd.DataFrame, ref: pd.DataFrame, kind: str, rng) -> tuple[pd.DataFrame, str]:
    "The batch with one injected change, and the column changed."
    b = batch.copy()
    if kind.startswith('mean'):
        col, sd = kind.split(':')[1], float(kind.split(':')[2])
        b[col] = b[col] + sd * ref[col].std()
        return b, col
    if kind == 'share':
        top = ref.contract.value_counts().index
        rows = b.index[b.contract == top[0]]
        b.loc[rng.choice(rows, min(len(rows), int(0.10 * len(b))), replace=False), 'contract'] = top[1]
        return b, 'contract'
    if kind == 'new':
        b.loc[rng.choice(b.index, int(0.05 * len(b)), replace=False), 'payment_method'] = 'Cryptocurrency'
        return b, 'payment_method'
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--trials', type=int, default=100); ap.add_argument('--batch', type=int, default=1000)
    ap.add_argument('--big-batch', type=int, default=20000); ap.add_argument('--profile-rows', type=int, default=1_000_000)
    a = ap.parse_args()
    whylogs()
    import importlib.resources
    df = pd.read_parquet(importlib.resources.files('mlpipeline') / 'data/telco_churn.parquet').drop(columns=['rownames', 'churn'])
    df = normalise_labels(df)
    opts = DEFAULTS['monitor']['drift']
    roles = {c: 'feature' for c in df.columns}
    kinds = [f'mean:{c}:{s}' for c in ('monthly_charges', 'tenure', 'total_charges') for s in (0.1, 0.25, 0.5)] + ['share', 'new']
    rng = np.random.default_rng(0)
    hits = {k: {'ours': 0, 'whylogs': 0, 'whylogs_drift': 0} for k in ['none', 'none_big', *kinds]}
    holm_only_big = 0
    t0 = time.perf_counter()
    for i in range(a.trials):
        idx = rng.permutation(len(df)); cut = int(0.7 * len(df))
        ref, pool = df.iloc[idx[:cut]], df.iloc[idx[cut:]].reset_index(drop=True)
        rv = profile_frame(ref)
        batches = {'none': (pool.sample(a.batch, random_state=i).reset_index(drop=True), None),
                   'none_big': (pool.sample(a.big_batch, replace=True, random_state=i).reset_index(drop=True), None)}
        for k in kinds: batches[k] = shifted(batches['none'][0], ref, k, rng)
        for k, (b, col) in batches.items():
            cv = profile_frame(b)
            t = drift_table(rv, cv, roles, opts)
            ours = set(t.loc[t.drifted, 'column'])
            wl, wl_drift = whylogs_flags(rv, cv)
            if k == 'none_big': holm_only_big += bool(t.significant.any())
            for name, flagged in (('ours', ours), ('whylogs', wl), ('whylogs_drift', wl_drift)):
                hits[k][name] += bool(flagged) if col is None else col in flagged
        if (i + 1) % 10 == 0: print(f'{i + 1}/{a.trials} trials, {time.perf_counter() - t0:.0f}s', flush=True)
    rates = {k: {n: v / a.trials for n, v in h.items()} for k, h in hits.items()}
    rates['none_big']['holm_p_only'] = holm_only_big / a.trials

    big = df.sample(a.profile_rows, replace=True, random_state=0).reset_index(drop=True)
    def best(fn, n=3):
        ts = []
        for _ in range(n): t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return float(np.median(ts))
    single = best(lambda: whylogs().log(pandas=big).view())
    ours = best(lambda: profile_parallel(big, workers=DEFAULTS['monitor']['workers'], max_rows=DEFAULTS['monitor']['chunk_rows']))
    prof = {'rows': a.profile_rows, 'single_why_log_s': single, 'ours_s': ours, 'single_rows_per_s': a.profile_rows / single,
            'ours_rows_per_s': a.profile_rows / ours, 'ratio': single / ours}

    print(f'\nDrift decisions: {a.trials} trials, batches of {a.batch} rows against a {cut}-row reference ({len(roles)} columns)')
    print(f"{'batch':<28}{'ours':>8}{'whylogs any':>13}{'whylogs DRIFT':>15}")
    for k, r in rates.items():
        label = {'none': 'no drift (false alarms)', 'none_big': f'no drift, {a.big_batch} rows'}.get(k, k)
        print(f"{label:<28}{r['ours']:>8.1%}{r['whylogs']:>13.1%}{r['whylogs_drift']:>15.1%}")
    print(f"  large no-drift batches flagged by Holm-corrected p-values alone: {rates['none_big']['holm_p_only']:.1%}")
    print(f"\nProfiling {a.profile_rows:,} rows: one why.log {single:.2f}s ({prof['single_rows_per_s']:,.0f} rows/s); "
          f"ours {ours:.2f}s ({prof['ours_rows_per_s']:,.0f} rows/s): {prof['ratio']:.2f}x")
    out = Path(__file__).parent / 'results/drift_bench.json'
    out.write_text(json.dumps({'trials': a.trials, 'batch': a.batch, 'big_batch': a.big_batch, 'reference_rows': cut, 'defaults': opts,
                               'rates': rates, 'profiling': prof}, indent=1))
    print(f'written {out}')


if __name__ == '__main__':
    main()
