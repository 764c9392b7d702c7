"""`mlpipeline init` on tables nobody here has seen: it writes a pipeline.yaml, and `mlpipeline run` then works with
no hand edit and ends with a champion (binary, multiclass, regression; CSV, Parquet, SQLite; text and dates)."""
import json, sqlite3
import numpy as np, pandas as pd, pytest, yaml
from conftest import mlpipeline, only_run

WORDS = np.array(['senior', 'data', 'sales', 'engineer', 'manager', 'assistant', 'night', 'shift', 'lead', 'analyst'])


def table(kind: str, n: int = 600, seed: int = 0) -> pd.DataFrame:
    "A small table with real signal, missing values, an id, free text and dates; the target depends on the task."
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(['basic', 'plus', 'pro'], n)
    score = x1 + 0.5 * x2 + (plan == 'pro') + rng.normal(scale=0.5, size=n)
    df = pd.DataFrame({'customer_no': rng.permutation(n) + 1000, 'x1': x1, 'x2': np.where(rng.random(n) < 0.1, np.nan, x2),
                       'plan': plan, 'job_title': [' '.join(rng.choice(WORDS, 3)) for _ in range(n)],
                       'signed_on': pd.date_range('2023-01-01', periods=n, freq='12h').strftime('%Y-%m-%d %H:%M')})
    if kind == 'binary': df['defaulted'] = np.where(score > 0.3, 'yes', 'no')
    if kind == 'multiclass': df['segment'] = pd.cut(score, [-np.inf, -0.5, 0.5, 1.5, np.inf], labels=['d', 'c', 'b', 'a']).astype(str)
    if kind == 'regression': df['spend'] = 100 + 20 * score
    return df


def write(df: pd.DataFrame, folder, fmt: str) -> str:
    if fmt == 'csv': df.to_csv(folder/'loans.csv', index=False); return 'loans.csv'
    if fmt == 'parquet': df.to_parquet(folder/'segments.parquet', index=False); return 'segments.parquet'
    with sqlite3.connect(folder/'shop.db') as con: df.to_sql('orders', con, index=False)
    return 'shop.db'


def init_then_run(tmp_path, kind, fmt, target, *run_args):
    data = write(table(kind), tmp_path, fmt)
    r = mlpipeline('init', '--data', data, '--target', target, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((tmp_path/'pipeline.yaml').read_text())
    r = mlpipeline('run', *run_args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    reg = json.loads((only_run(tmp_path)/'artifacts/registered.json').read_text())
    metrics = json.loads((only_run(tmp_path)/'artifacts/metrics.json').read_text())
    return cfg, reg, metrics, r.stdout


@pytest.mark.slow  # 25-70 s on 2 cores: kept out of the everyday run; CI runs it
def test_init_then_run_on_a_binary_csv_with_text_dates_and_missing_values(tmp_path):
    cfg, reg, metrics, out = init_then_run(tmp_path, 'binary', 'csv', 'defaulted')  # docs/your-own-data.md's two commands, as printed
    assert (cfg['task'], cfg['data']['id_column'], cfg['mlflow']['model_name']) == ('binary', 'customer_no', 'loans')
    assert cfg['features']['text']['columns'] == ['job_title'] and cfg['features']['dates'] == ['signed_on']
    assert cfg['gate']['thresholds'] == {'roc_auc': 0.6} and cfg['validation']['groups'] == []
    assert reg['name'] == 'loans' and 'champion' in reg['aliases'] and metrics['roc_auc'] > 0.8, (reg, metrics)


@pytest.mark.slow
@pytest.mark.parametrize('kind, fmt, target, metric, floor', [('multiclass', 'parquet', 'segment', 'accuracy', 0.5),
                                                            ('regression', 'sqlite', 'spend', 'r2', 0.5)])
def test_init_then_run_on_other_tasks_and_formats(tmp_path, kind, fmt, target, metric, floor):
    cfg, reg, metrics, out = init_then_run(tmp_path, kind, fmt, target, '--quiet', '--engine', 'warm')
    assert cfg['task'] == kind and metric in cfg['gate']['thresholds']
    assert 'champion' in reg['aliases'] and metrics[metric] > floor, (reg, metrics)


def test_init_without_a_target_lists_the_likely_ones_and_exits_2(tmp_path):
    table('binary').to_csv(tmp_path/'loans.csv', index=False)
    r = mlpipeline('init', '--data', 'loans.csv', cwd=tmp_path)
    assert r.returncode == 2 and 'no --target given; likely targets: defaulted (2 values)' in r.stderr, r.stderr
    assert not (tmp_path/'pipeline.yaml').exists()
    r = mlpipeline('init', '--data', 'loans.csv', '--target', 'defaulted', cwd=tmp_path)
    again = mlpipeline('init', '--data', 'loans.csv', '--target', 'defaulted', cwd=tmp_path)
    assert r.returncode == 0 and again.returncode == 2 and 'exists already' in again.stderr


def test_a_table_with_no_config_and_no_init_is_told_to_init(tmp_path):
    table('binary').to_csv(tmp_path/'loans.csv', index=False)
    r = mlpipeline('run', '--quiet', '-p', 'data.path=loans.csv', cwd=tmp_path)
    assert r.returncode == 2 and "config key 'target': no target column is set" in r.stderr and 'mlpipeline init --data' in r.stderr
