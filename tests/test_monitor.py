"""Monitoring across processes: the CLI on a real project and registry, a real webhook receiver on 127.0.0.1,
the service's own capture, delayed labels, and retraining that ends in a logged decision."""
import base64, html.parser, json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import SAMPLE, write_project, run_in_process, mlpipeline, client_for


@pytest.fixture(scope='module')
def watched(tmp_path_factory):
    "A project whose champion (version 1) was trained on the test sample, with its reference profile."
    project = write_project(tmp_path_factory.mktemp('monitor')/'project')
    run_in_process(project)
    return project


def batch(path: Path, shift_sd: float = 0.0, **cols) -> Path:
    "400 demo rows the project never trained on, without their target, `monthly_charges` moved by `shift_sd` sd, as CSV."
    import importlib.resources
    demo = pd.read_parquet(importlib.resources.files('mlpipeline')/'data/telco_churn.parquet')
    df = demo[~demo.rownames.isin(pd.read_csv(SAMPLE).rownames)].sample(400, random_state=7).drop(columns=['churn'])
    df['monthly_charges'] += shift_sd * df.monthly_charges.std()
    df.assign(**cols).to_csv(path, index=False)
    return path


def summary_of(stdout: str, project: Path) -> dict:
    "The summary.json of the monitoring run whose report path the command printed."
    report = next(l for l in stdout.splitlines() if l.startswith('report: '))[8:]
    return json.loads((Path(report).parent/'summary.json').read_text())


def monitoring_runs(project: Path):
    import mlflow
    client_for(project)
    exp = mlflow.get_experiment_by_name('mlpipeline-monitoring')
    return mlflow.search_runs([exp.experiment_id], order_by=['start_time DESC'])


class Images(html.parser.HTMLParser):
    "Collects the img sources of a page and checks that its tags close."
    def __init__(self):
        super().__init__()
        self.images, self.stack = [], []
    def handle_starttag(self, tag, attrs):
        if tag == 'img': self.images.append(dict(attrs)['src'])
        elif tag not in ('meta', 'br'): self.stack.append(tag)
    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_no_drift_batch_gives_no_alert(watched, webhook, tmp_path):
    url, received = webhook
    r = mlpipeline('monitor', '--data', str(batch(tmp_path/'calm.csv')), '-p', f'monitor.alerts.webhook={url}', cwd=watched)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout, watched)
    assert s['alert'] is False and s['drifted_features'] == [] and not s['prediction_drifted'], s['alert_text']
    assert s['features_tested'] >= 15 and s['rows'] == 400 and s['decision']['action'] == 'none'
    assert 'no alert' in r.stdout and 'ALERT' not in r.stderr and received == []
    assert monitoring_runs(watched).iloc[0]['tags.alert'] == 'false'


def test_shifted_batch_alerts_names_the_feature_and_calls_the_webhook(watched, webhook, tmp_path):
    url, received = webhook
    r = mlpipeline('monitor', '--data', str(batch(tmp_path/'shifted.csv', 1.0)), '-p', f'monitor.alerts.webhook={url}', cwd=watched)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout, watched)
    assert s['alert'] is True and 'monthly_charges' in s['drifted_features'], s['alert_text']
    assert 'ALERT' in r.stderr and 'monthly_charges' in r.stderr
    assert len(received) == 1 and received[0]['alert'] is True and 'monthly_charges' in received[0]['drifted_features']
    assert received[0]['monitor_id'] == s['monitor_id'] and s['webhook'].startswith('sent')
    run = monitoring_runs(watched).iloc[0]
    assert run['tags.alert'] == 'true' and 'monthly_charges' in run['tags.alert.text'] and run['metrics.drift_psi/monthly_charges'] > 0.1
    drift = pd.DataFrame(json.loads((Path(s['folder'])/'drift.json').read_text()))
    row = drift.set_index('column').loc['monthly_charges']
    assert row.test == 'ks' and row.p_adjusted < 0.01 and row.drifted
    check_report(Path(s['report']).read_text())


def check_report(page: str):
    "The report is well-formed HTML whose charts are inline SVG (plots embedded PNGs), with nothing fetched from the network."
    parser = Images()
    parser.feed(page)
    parser.close()
    assert parser.stack == [] and page.startswith('<!doctype html>') and 'monthly_charges' in page
    assert page.count('<svg class="chart"') >= 15 and all(s.startswith('data:image/png;base64,') for s in parser.images)
    assert all(base64.b64decode(s.split(',', 1)[1])[:8] == b'\x89PNG\r\n\x1a\n' for s in parser.images)
    assert 'http://' not in page and 'https://' not in page  # nothing fetched: it opens offline


def test_a_kept_profile_is_compared_again_without_the_raw_data(watched, tmp_path):
    from mlpipeline.config import load_config
    from mlpipeline.monitor import monitor
    cfg = load_config(project=watched)
    s1 = monitor(cfg, batch(tmp_path/'shifted.csv', 1.0), progress=False)
    s2 = monitor(cfg, Path(s1['folder'])/'profile.bin', progress=False)
    assert s2['drifted_features'] == s1['drifted_features'] and s2['rows'] == s1['rows'] == 400


def test_capture_window_with_delayed_labels_tracks_performance(watched, tmp_path):
    "Requests through the real service app land in its capture; labels join by request id and row."
    from starlette.testclient import TestClient
    from mlpipeline.config import load_config
    from mlpipeline.serve import open_service, make_app
    from mlpipeline.monitor import monitor
    cfg = load_config(project=watched, overrides=['serve.reload_s=0'])
    rows = pd.read_csv(SAMPLE)
    with TestClient(make_app(open_service(cfg))) as http:
        for i in range(0, 400, 4):
            recs = json.loads(rows.drop(columns=['churn']).iloc[i:i + 4].to_json(orient='records'))
            assert http.post('/predict', json=recs, headers={'X-Request-ID': f'req-{i}'}).status_code == 200
    labels = pd.DataFrame({'request_id': [f'req-{i - i % 4}' for i in range(400)], 'row': [i % 4 for i in range(400)], 'churn': rows.churn})
    labels.to_parquet(tmp_path/'labels.parquet')
    s = monitor(cfg, watched/'capture/test-model', labels=tmp_path/'labels.parquet', since='1h', progress=False)
    assert s['rows'] == 400 and s['performance']['rows'] == 400 and s['alert'] is False, s['alert_text']
    # the capture's own answers, scored against the labels, equal the model's metric on the same rows
    from sklearn.metrics import roc_auc_score
    cap = pd.concat([pd.read_parquet(f) for f in (watched/'capture/test-model').rglob('*.parquet')])
    joined = cap.merge(labels, on=['request_id', 'row'])
    assert s['performance']['roc_auc'] == pytest.approx(roc_auc_score(joined.churn == 'Yes', joined.proba_Yes), abs=1e-9)
    with pytest.raises(Exception, match='no rows'):
        monitor(cfg, watched/'capture/test-model', since='2000-01-01', until='2000-01-02', progress=False)


def test_a_customer_scored_twice_is_no_schema_error(watched, webhook, tmp_path):
    "Issue 22 item 8: the capture scores one customer more than once; repeated ids are a training-data rule only."
    from starlette.testclient import TestClient
    from mlpipeline.config import load_config
    from mlpipeline.serve import open_service, make_app
    url, received = webhook
    cfg = load_config(project=watched, overrides=['serve.reload_s=0', f'serve.capture.dir={tmp_path/"capture"}'])
    rows = pd.read_csv(batch(tmp_path/'calm.csv'))
    again = pd.concat([rows, rows.iloc[:20]], ignore_index=True)  # 20 customers scored a second time
    with TestClient(make_app(open_service(cfg))) as http:
        for i in range(0, len(again), 20):
            recs = json.loads(again.iloc[i:i + 20].to_json(orient='records'))
            assert http.post('/predict', json=recs).status_code == 200
    for data in (tmp_path/'capture/test-model', tmp_path/'again.csv'):  # the capture, and a batch file with an id twice
        again.to_csv(tmp_path/'again.csv', index=False)
        r = mlpipeline('monitor', '--data', str(data), '-p', f'monitor.alerts.webhook={url}', cwd=watched)
        assert r.returncode == 0, r.stderr
        s = summary_of(r.stdout, watched)
        assert s['rows'] == 420 and s['drifted_features'] == [] and s['quality_errors'] == 0, (data, s['alert_text'])
        assert s['alert'] is False and 'ALERT' not in r.stderr and received == [], (data, s['alert_text'])
    # training data with a repeated id is still refused
    from mlpipeline.validate import validate, infer_schema, errors_in
    train = pd.read_csv(SAMPLE)
    schema = infer_schema(train, cfg)
    twice = errors_in(validate(pd.concat([train, train.iloc[:3]]), schema, 'train'))
    assert [(v['column'], v['rule'], v['rows']) for v in twice] == [('rownames', 'duplicate_ids', 3)], twice


def test_bad_labels_and_paths_get_a_clear_error(watched, tmp_path):
    pd.DataFrame({'who': [1], 'churn': ['Yes']}).to_csv(tmp_path/'labels.csv', index=False)
    r = mlpipeline('monitor', '--data', str(batch(tmp_path/'calm.csv')), '--labels', str(tmp_path/'labels.csv'), cwd=watched)
    assert r.returncode == 2 and 'share no key' in r.stderr and 'Traceback' not in r.stderr
    from mlpipeline.config import load_config
    from mlpipeline.errors import UsageError
    from mlpipeline.monitor import monitor
    with pytest.raises(UsageError, match='no file or folder'): monitor(load_config(project=watched), tmp_path/'nope.csv', progress=False)


@pytest.mark.slow
def test_retraining_runs_end_to_end_through_the_gate(watched, tmp_path):
    "A drifted, labelled batch makes the policy retrain; the new version is the challenger and the gate decides. (Last: it moves the aliases.)"
    project = watched
    df = pd.read_csv(SAMPLE)
    w = np.where((df.contract == 'Month-to-month') & (df.tenure < 24), 8.0, 1.0)  # a shifted population: new, short-contract customers
    new = df.sample(300, weights=w, replace=True, random_state=3).reset_index(drop=True).assign(rownames=lambda d: 10_000 + d.index)
    new.drop(columns='churn').to_csv(tmp_path/'new.csv', index=False)
    new[['rownames', 'churn']].to_csv(tmp_path/'labels.csv', index=False)
    r = mlpipeline('monitor', '--data', str(tmp_path/'new.csv'), '--labels', str(tmp_path/'labels.csv'), '--retrain', '--quiet', '--engine', 'warm',
                   '-p', 'monitor.retrain.min_rows=50', '-p', 'monitor.retrain.warm_start=true', cwd=project)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout, project)
    d = s['decision']
    assert d['action'] in ('promote', 'keep') and d['triggers'] and d['retrain']['holdout_rows'] == 90, d
    client = client_for(project)
    assert str(client.get_model_version_by_alias('test-model', 'challenger').version) == str(d['retrain']['version']) == '2'
    champ = str(client.get_model_version_by_alias('test-model', 'champion').version)
    assert champ == ('2' if d['action'] == 'promote' else '1') and d['retrain']['gate_passed'] == (d['action'] == 'promote')
    run_folder = Path(d['retrain']['run_folder'])
    feats = json.loads((run_folder/'manifest.json').read_text())['stages']['03_features']
    assert feats['outputs']['test']['rows'] == 90 and feats['holdout'].endswith('retrain_holdout.parquet')
    assert monitoring_runs(project).iloc[0]['tags.monitor.decision'] == d['action']
    # two candidates on the same window and holdout: a full retrain and a warm start from the champion's trees
    import xgboost as xgb
    cands = {c['kind']: c for c in d['retrain']['candidates']}
    assert set(cands) == {'full', 'warm'} and d['retrain']['winner'] in cands and str(run_folder) == cands[d['retrain']['winner']]['run_folder']
    assert cands['warm']['warm_start_from'] == 'test-model/1' and cands['full']['warm_start_from'] is None
    v1 = Path(client.get_model_version('test-model', '1').tags['run_folder'])
    base, warm = (xgb.Booster(model_file=str(f/'artifacts/model.ubj')) for f in (v1, Path(cands['warm']['run_folder'])))
    assert warm.num_boosted_rounds() == cands['warm']['trees'] > base.num_boosted_rounds() and warm.get_dump()[:base.num_boosted_rounds()] == base.get_dump()
    assert json.loads((Path(cands['warm']['run_folder'])/'artifacts/transform.json').read_text()) == json.loads((v1/'artifacts/transform.json').read_text())
    loser = Path(cands[({'full', 'warm'} - {d['retrain']['winner']}).pop()]['run_folder'])
    assert '06_register' not in json.loads((loser/'manifest.json').read_text())['stages']  # only the winner is registered
    assert 'Retrain candidates' in (Path(s['folder'])/'report.html').read_text()
    # the cool-down holds the next retrain back, and says so
    from mlpipeline.config import load_config
    from mlpipeline.monitor import monitor
    s2 = monitor(load_config(project=project, overrides=['monitor.retrain.min_rows=50']), tmp_path/'new.csv', 'test-model/1', tmp_path/'labels.csv', do_retrain=True, progress=False)
    assert s2['decision']['action'] == 'wait' and 'cool-down' in s2['decision']['why'], s2['decision']


@pytest.mark.parametrize('target,task', [('monthly_charges', 'regression'), ('contract', 'multiclass')])
def test_regression_and_multiclass_models_are_monitored(tmp_path, target, task):
    "Any task: the prediction's drift and the labelled metric, on a batch that carries its target."
    from mlpipeline.config import load_config
    from mlpipeline.monitor import monitor
    project = write_project(tmp_path/'project', target=target, task=task)
    run_in_process(project)
    cfg = load_config(project=project)
    df = pd.read_csv(SAMPLE)
    df.to_csv(tmp_path/'labelled.csv', index=False)
    s = monitor(cfg, tmp_path/'labelled.csv', progress=False)
    drift = pd.DataFrame(json.loads((Path(s['folder'])/'drift.json').read_text()))
    preds = set(drift.loc[drift.role == 'prediction', 'column'])
    assert preds == ({'prediction'} if task == 'regression' else {'proba_Month-to-month', 'proba_One year', 'proba_Two year'}), preds
    metric = 'rmse' if task == 'regression' else 'roc_auc'
    assert s['performance']['rows'] == 400 and s['metric'] == metric and np.isfinite(s['performance'][metric])
    moved = df.assign(tenure=df.tenure + 2 * df.tenure.std())
    moved.to_csv(tmp_path/'moved.csv', index=False)
    s2 = monitor(cfg, tmp_path/'moved.csv', progress=False)
    assert s2['alert'] and 'tenure' in s2['drifted_features'], s2['alert_text']


def test_a_failed_retrain_moves_nothing_and_is_still_reported(watched, tmp_path):
    "A retrain whose pipeline refuses the data: champion and challenger stay, the report and the monitoring run say why."
    from mlpipeline.config import load_config
    import functools
    from mlpipeline.errors import StageFailed
    from mlpipeline.monitor import monitor
    from mlpipeline.pipeline import execute_run
    client = client_for(watched)
    before = {a: str(client.get_model_version_by_alias('test-model', a).version) for a in ('champion', 'challenger')}
    df = pd.read_csv(SAMPLE).assign(rownames=lambda d: 50_000 + d.index, tenure=lambda d: d.tenure + 30)
    df.drop(columns='churn').to_csv(tmp_path/'new.csv', index=False)
    df[['rownames', 'churn']].to_csv(tmp_path/'labels.csv', index=False)
    cfg = load_config(project=watched, overrides=['monitor.retrain.min_rows=50', 'monitor.retrain.cooldown_h=0', 'monitor.retrain.drift_share=0.01',
                                                  'leakage.strict=true', 'leakage.single_feature=0.5', 'leakage.rest_margin=-1'])
    # every feature a near-certain leak, in strict mode: refused in 03_features, before training
    with pytest.raises(StageFailed, match='03_features'):
        monitor(cfg, tmp_path/'new.csv', 'test-model@champion', tmp_path/'labels.csv', do_retrain=True, progress=False,
                execute=functools.partial(execute_run, engine='warm'))
    assert {a: str(client.get_model_version_by_alias('test-model', a).version) for a in ('champion', 'challenger')} == before
    run = monitoring_runs(watched).iloc[0]
    assert run['tags.monitor.decision'] == 'failed' and run['tags.alert'] == 'true' and 'champion unchanged' in run['tags.monitor.why']
    s = json.loads((Path(run['tags.monitor.folder'])/'summary.json').read_text())
    assert s['decision']['action'] == 'failed' and Path(s['report']).exists()


def test_a_failed_retrain_still_records_the_drift_decision(watched, tmp_path, monkeypatch):
    "An error inside the retrain (here a fault injected into it) leaves the summary, report and MLflow run, then is raised."
    import mlpipeline.monitor as mon
    from mlpipeline.config import load_config
    def broken(*a, **k): raise ValueError('no space left while writing the retrain window')
    monkeypatch.setattr(mon, 'retrain', broken)
    demo = pd.read_parquet(Path(mon.__file__).parent/'data/telco_churn.parquet').sample(400, random_state=11)
    demo.assign(monthly_charges=demo.monthly_charges + demo.monthly_charges.std()).to_csv(tmp_path/'labelled.csv', index=False)
    cfg = load_config(project=watched, overrides=['monitor.retrain.min_rows=50', 'monitor.retrain.drift_share=0.01', 'monitor.retrain.cooldown_h=0'])
    from mlpipeline.pipeline import execute_run
    with pytest.raises(ValueError, match='no space left'):
        mon.monitor(cfg, tmp_path/'labelled.csv', do_retrain=True, progress=False, execute=execute_run)
    folder = max((watched/'monitoring/test-model').iterdir(), key=lambda p: p.stat().st_mtime)
    s = json.loads((folder/'summary.json').read_text())
    assert s['decision']['action'] == 'failed' and 'ValueError: no space left' in s['decision']['why'], s['decision']
    assert 'monthly_charges' in s['drifted_features'] and s['alert'] is True and (folder/'report.html').exists()
    assert monitoring_runs(watched).iloc[0]['tags.monitor.decision'] == 'failed'
