"""Explanations: TreeSHAP contributions from the booster add up to the margin, equal the `shap` package's own TreeSHAP,
are summed back to raw inputs without losing any of the total, and come back from `/predict?explain=true`."""
import json
import numpy as np, pandas as pd, pytest
from conftest import SAMPLE, mlpipeline, only_run, client_for
from test_serve import Server, champion_service, records

CASES = [('churn', 'binary', 'native'), ('churn', 'binary', 'onehot'), ('churn', 'binary', 'frequency'),
         ('contract', 'multiclass', 'onehot'), ('monthly_charges', 'regression', 'onehot')]


def fitted(target: str, task: str, encoding: str, **opts):
    "A small model of `task` on the test sample: the transform, the booster and the test split's model input."
    from mlpipeline.features import split_frame, fit_transform, RowEncoder, records_columns
    from mlpipeline.train import fit_booster
    parts = split_frame(pd.read_csv(SAMPLE), target, task)
    tf = fit_transform(parts['train'], target, task, {'encoding': encoding} | opts, drop=['rownames'])
    b = fit_booster(tf, parts['train'], parts['valid'], {'max_depth': 4, 'n_estimators': 60})
    return tf, b, RowEncoder(tf).matrix(records_columns(json.loads(parts['test'].to_json(orient='records')), tf.inputs))


@pytest.mark.parametrize('target, task, encoding', CASES)
def test_base_value_and_contributions_add_up_to_the_margin(target, task, encoding):
    "For every row (and class): base value + contributions = the booster's margin, before and after summing back."
    from mlpipeline.explain import tree_contributions, raw_contributions, source_matrix, explanations
    tf, b, X = fitted(target, task, encoding)
    margin = b.inplace_predict(X, predict_type='margin')
    c = tree_contributions(b, X)
    M, raw = source_matrix(tf)
    r = raw_contributions(c, M)
    assert np.abs(c.sum(-1) - margin).max() < 1e-4 and np.abs(r.sum(-1) - margin).max() < 1e-4
    assert r.shape[-1] == len(raw) + 1 and set(raw) <= set(tf.inputs)
    e = explanations(tf, b, X)
    per = [x['classes'][k] for x in e for k in tf.classes] if task == 'multiclass' else e
    assert np.abs(np.array([x['margin'] for x in per]) - margin.ravel()).max() < 1e-4
    assert all(abs(x['base_value'] + sum(x['contributions'].values()) - x['margin']) < 1e-9 for x in per)


@pytest.mark.parametrize('target, task, encoding', [c for c in CASES if c[2] != 'native'])
def test_contributions_equal_the_shap_package(target, task, encoding):
    "shap's own TreeSHAP (its C++ algorithm on the trees it reads from the booster) gives the same contributions."
    import shap
    from mlpipeline.explain import tree_contributions
    tf, b, X = fitted(target, task, encoding)
    ex = shap.TreeExplainer(b)
    # For an XGBoost model shap hands the work back to XGBoost's own pred_contribs; 'internal' makes it run its own
    # TreeSHAP on the trees it parsed, a reference that shares no code with XGBoost's. Native categorical splits it cannot
    # read that way (NotImplementedError), so the native case is checked by the margin alone.
    ex.model.model_type = 'internal'
    ref = ex.shap_values(X, check_additivity=False)
    ref = np.moveaxis(ref, -1, 1) if ref.ndim == 3 else ref  # (rows, features, classes) -> (rows, classes, features)
    assert np.abs(tree_contributions(b, X)[..., :-1] - ref).max() < 1e-4


def test_expanded_columns_are_summed_back_whole():
    "One-hot labels and an interaction: each raw input gets the sum of its columns, the total is unchanged."
    from mlpipeline.explain import tree_contributions, raw_contributions, source_matrix
    tf, b, X = fitted('churn', 'binary', 'onehot', interactions=[['tenure', 'monthly_charges']])
    c = tree_contributions(b, X)
    M, raw = source_matrix(tf)
    r = raw_contributions(c, M)
    cols = {k: c[:, j] for j, k in enumerate(tf.outputs)}
    contract = sum(v for k, v in cols.items() if k.startswith('contract='))
    assert np.abs(r[:, raw.index('contract')] - contract).max() < 1e-12
    tenure = cols['tenure'] + cols['tenure*monthly_charges'] / 2  # an interaction is shared by its two inputs
    assert np.abs(r[:, raw.index('tenure')] - tenure).max() < 1e-12
    assert np.abs(r.sum(1) - c.sum(1)).max() < 1e-9 and r.shape[1] < c.shape[1]


@pytest.fixture(scope='module')
def service(tmp_path_factory):
    with champion_service(tmp_path_factory.mktemp('explain'), {'reload_s': 0, 'capture': {'enabled': False}, 'drain_s': 0}) as s:
        yield s


def test_predict_explains_when_asked(service):
    "`/predict?explain=true`: per row, each raw input's contribution; with the base value they give the probability."
    _, srv = service
    rows = records(30)
    got = srv.http.post('/predict?explain=true', json=rows).json()['predictions']
    fields = list(srv.http.get('/metadata').json()['schema'])
    for a in got:
        e = a['explanation']
        assert e['units'] == 'log-odds' and e['class'] == 'Yes' and list(e['contributions']) == fields
        m = e['base_value'] + sum(e['contributions'].values())
        assert abs(m - e['margin']) < 1e-9 and abs(1 / (1 + np.exp(-m)) - a['proba_Yes']) < 1e-5
    one = srv.http.post('/predict', json=rows[0], params={'explain': 'true'}).json()['prediction']
    assert one['explanation'] == got[0]['explanation']
    assert 'explanation' not in srv.http.post('/predict', json=rows[0]).json()['prediction']
    r = srv.http.post('/predict?explain=maybe', json=rows[0])
    assert r.status_code == 400 and 'explain=true' in r.json()['error']


def test_predict_command_writes_explanations_as_columns(service, tmp_path):
    "`mlpipeline predict --explain`: a base value and a contribution column per input, as the service explains them."
    project, srv = service
    pd.read_csv(SAMPLE).drop(columns=['churn']).to_csv(tmp_path/'in.csv', index=False)
    r = mlpipeline('predict', '--input', str(tmp_path/'in.csv'), '--output', str(tmp_path/'out.parquet'), '--chunk-rows', '150',
                   '--explain', '--quiet', cwd=project)
    assert r.returncode == 0, r.stderr
    out = pd.read_parquet(tmp_path/'out.parquet')
    fields = list(srv.http.get('/metadata').json()['schema'])
    assert list(out.filter(like='contribution_').columns) == [f'contribution_{f}' for f in fields] and len(out) == 400
    m = out.filter(like='contribution_').sum(1) + out.base_value
    assert np.abs(1 / (1 + np.exp(-m)) - out.proba_Yes).max() < 1e-5
    got = srv.http.post('/predict?explain=true', json=records(3, 150)).json()['predictions']  # rows of the second chunk
    assert all(abs(got[i]['explanation']['contributions'][f] - out[f'contribution_{f}'][150 + i]) < 1e-9 for i in range(3) for f in fields)


def test_evaluation_report_has_the_global_view_logged_with_the_run(service):
    "Mean |contribution| per input (inline SVG), the beeswarm and three dependence plots, in the page and in MLflow."
    project, _ = service
    page = (only_run(project)/'artifacts/evaluation.html').read_text()
    section = page[page.index('<h2>Explanations</h2>'):]
    assert '<svg class="chart"' in section[:300] and 'contract' in section[:5000]
    assert 'alt="contributions" src="data:image/png;base64,' in page and page.count('alt="dependence_') == 3
    client = client_for(project)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = {f.path for r in runs for f in client.list_artifacts(r.info.run_id, 'plots')}
    assert 'plots/contributions.png' in logged and sum(p.startswith('plots/dependence_') for p in logged) == 3


def test_the_onnx_backend_explains_through_the_booster(service):
    "Served by onnxruntime, the service still explains each row, from the booster it keeps: the same numbers."
    project, srv = service
    rows = records(5)
    want = srv.http.post('/predict?explain=true', json=rows).json()['predictions']
    onnx = Server(project, '--backend', 'onnx')
    try:
        assert onnx.http.get('/metadata').json()['backend'] == 'onnx'
        got = onnx.http.post('/predict?explain=true', json=rows).json()['predictions']
    finally: onnx.stop()
    assert [g['explanation'] for g in got] == [w['explanation'] for w in want]
    assert max(abs(g['proba_Yes'] - w['proba_Yes']) for g, w in zip(got, want)) < 1e-5
