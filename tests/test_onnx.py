"""ONNX: parity with XGBoost for the three tasks, `mlpipeline export onnx`, and the service's onnx backend."""
import json
import numpy as np, pandas as pd, pytest
from conftest import SAMPLE, write_project, run_in_process, client_for, mlpipeline
from test_serve import Server


@pytest.mark.parametrize('target,task,encoding', [('churn', 'binary', 'native'), ('contract', 'multiclass', 'native'),
                                                  ('monthly_charges', 'regression', 'native'), ('churn', 'binary', 'onehot')])
def test_parity_on_test_split(target, task, encoding):
    "A small model of each task converts, and onnxruntime answers the test split as the booster does, within 1e-5."
    from mlpipeline.features import split_frame, fit_transform, RowEncoder, records_columns
    from mlpipeline.train import fit_booster
    from mlpipeline.onnx_export import checked_scorer, TOLERANCE
    parts = split_frame(pd.read_csv(SAMPLE), target, task)
    tf = fit_transform(parts['train'], target, task, {'encoding': encoding}, drop=['rownames'])
    b = fit_booster(tf, parts['train'], parts['valid'], {'max_depth': 4, 'n_estimators': 60})
    X = RowEncoder(tf).matrix(records_columns(json.loads(parts['test'].to_json(orient='records')), tf.inputs))
    scorer, model, gap = checked_scorer(b, tf, X)
    got, want = scorer(X), b.inplace_predict(X)
    assert got.shape == want.shape and gap <= TOLERANCE
    if task != 'regression': assert np.abs(got - want).max() <= 1e-5  # probabilities: absolute
    else: assert np.allclose(got, want, rtol=1e-5, atol=0)  # values near 100: float32 steps of 8e-6, so relative


@pytest.fixture(scope='module')
def registered(tmp_path_factory):
    "A project whose champion was trained on the test sample (native categorical encoding, the default)."
    project = write_project(tmp_path_factory.mktemp('onnx')/'project', serve={'reload_s': 0, 'capture': {'enabled': False}, 'drain_s': 0})
    rd = run_in_process(project)
    client_for(project)
    return project, rd


def test_export_cli(registered, tmp_path):
    "`mlpipeline export onnx` writes the graph, the transform and the metadata; they reproduce the model from JSON records."
    import onnxruntime as ort
    from mlpipeline.features import Transform, RowEncoder, records_columns
    project, rd = registered
    r = mlpipeline('export', 'onnx', '--model', 'test-model@champion', '--out', str(tmp_path/'out'), cwd=project)
    assert r.returncode == 0, r.stderr
    assert 'model.onnx' in r.stdout and 'parity gap' in r.stdout
    meta = json.loads((tmp_path/'out/model.json').read_text())
    tf = Transform.from_json((tmp_path/'out/transform.json').read_text())
    assert meta['features'] == tf.outputs and meta['classes'] == ['No', 'Yes'] and meta['input']['name'] == 'input'
    assert meta['parity']['test_split'] <= 1e-5 and meta['parity']['test_split_n'] == len(pd.read_parquet(rd/'data/test.parquet'))
    test = pd.read_parquet(rd/'data/test.parquet')
    X = RowEncoder(tf).matrix(records_columns(json.loads(test.to_json(orient='records')), tf.inputs)).astype('float32')
    proba = ort.InferenceSession(str(tmp_path/'out/model.onnx')).run(['probabilities'], {'input': X})[0]
    from mlpipeline.serve import load_model, model_uri, predict_records
    pyfunc = pd.DataFrame(predict_records(load_model(model_uri('test-model')), json.loads(test.drop(columns=['churn']).to_json(orient='records'))))
    assert np.abs(proba[:, 1] - pyfunc.proba_Yes.to_numpy()).max() <= 1e-5


def test_serve_onnx_backend(registered):
    "`mlpipeline serve --backend onnx` answers what the xgboost backend answers, and says which backend it uses."
    from mlpipeline.serve import load_served, check_records
    from mlpipeline.validate import RULES
    project, _ = registered
    recs = json.loads(pd.read_csv(SAMPLE).drop(columns=['churn']).head(50).to_json(orient='records'))
    xgb = load_served('test-model', 'champion')
    want = xgb.answers(xgb.predict(check_records(recs, xgb.fields, RULES)[0]))
    srv = Server(project, '--backend', 'onnx')
    try:
        assert srv.http.get('/metadata').json()['backend'] == 'onnx'
        got = srv.http.post('/predict', json=recs).json()['predictions']
    finally: srv.stop()
    assert [g['prediction'] for g in got] == [w['prediction'] for w in want]
    assert max(abs(g['proba_Yes'] - w['proba_Yes']) for g, w in zip(got, want)) <= 1e-5
