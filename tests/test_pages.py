"""The four HTML reports (validation, evaluation, monitoring, A/B) of a real run, rendered through one base template:
the same shell, their own content, values escaped, every image embedded."""
import re
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import mlpipeline, client_for
from test_monitor import batch, summary_of, Images
from test_serve import records

XSS = '<script>alert(1)</script>'


def ab_page(project: Path, tmp: Path) -> str:
    "An A/B report on the finished project: the champion's real answers to 400 records as a capture split in two arms."
    import mlflow
    from mlpipeline.ab import ab_report, unit_hash
    from mlpipeline.config import load_config
    from mlpipeline.scoring import conform
    client_for(project)
    model = mlflow.pyfunc.load_model('models:/test-model@champion')
    out = model.predict(conform(model, pd.DataFrame(records(400)))).reset_index(drop=True)
    ids = [f'req-{i}' for i in range(len(out))]
    arm = np.where([unit_hash(i) < 0.5 for i in ids], 'challenger', 'champion')
    cap = out.assign(request_id=ids, row=0, arm=arm, model_version=np.where(arm == 'champion', '1', XSS))
    (tmp/'capture/date=2026-01-01').mkdir(parents=True)
    cap.to_parquet(tmp/'capture/date=2026-01-01/part-0.parquet')
    truth = pd.read_csv(Path(load_config(project=project)['data']['path'])).churn.iloc[:400].to_numpy()
    pd.DataFrame({'request_id': ids, 'row': 0, 'churn': truth}).to_csv(tmp/'labels.csv', index=False)
    s = ab_report(load_config(project=project, overrides=['serve.ab.bootstrap=200']), tmp/'labels.csv', capture=tmp/'capture')
    return Path(s['report']).read_text()


@pytest.fixture(scope='module')
def pages(finished, tmp_path_factory) -> dict:
    "The four pages of the finished run's project, the monitoring batch carrying a script in one column."
    project, rd, _ = finished
    tmp = tmp_path_factory.mktemp('pages')
    r = mlpipeline('monitor', '--data', str(batch(tmp/'batch.csv', contract=XSS)), cwd=project)
    assert r.returncode == 0, r.stderr
    return {'validation': (rd/'artifacts/validation.html').read_text(), 'evaluation': (rd/'artifacts/evaluation.html').read_text(),
            'monitoring': Path(summary_of(r.stdout, project)['report']).read_text(), 'ab': ab_page(project, tmp)}


def shell(page: str) -> str:
    "The page up to its content, without its title."
    return re.sub(r'<title>.*?</title>|<h1>.*?</h1>', '', page.split('<main>')[0], flags=re.S)


def test_the_four_pages_share_the_base_shell(pages):
    shells = {k: shell(p) for k, p in pages.items()}
    assert len(set(shells.values())) == 1, shells
    for k, p in pages.items():
        assert p.startswith('<!doctype html>') and '<meta charset="utf-8">' in p and '<meta name="generator" content="mlpipeline report">' in p, k
        assert p.count('<style>') == 1 and 'border-collapse:collapse' in p and p.rstrip().endswith('</main>\n</body>\n</html>'), k
        parser = Images()
        parser.feed(p)
        parser.close()
        assert parser.stack == [] and all(src.startswith('data:image/png;base64,') for src in parser.images), k  # tags close, images embedded
        title = re.search(r'<title>(.*?)</title>', p).group(1)
        assert f'<header><h1>{title}</h1></header>' in p, k


def test_each_page_shows_its_content(pages, finished):
    _, rd, _ = finished
    v, e, m, ab = pages['validation'], pages['evaluation'], pages['monitoring'], pages['ab']
    assert f'<title>Validation of run {rd.name} against the ' in v
    assert f'<title>Evaluation of run {rd.name} (binary, ' in e and 'Gate: passed' in e and '<h2>Test metrics</h2>' in e
    assert re.search(r'<tr><td>roc_auc</td><td>0\.\d{4}</td></tr>', e) and '<h2>Fit: ' in e and e.count('data:image/png;base64,') >= 5
    assert re.search(r'<title>Monitoring test-model v\d+: ', m) and '<h2>Drift</h2>' in m and '<h2>Data quality</h2>' in m and '400 rows of ' in m
    assert 'unseen_category' in m and m.count('<table>') >= 2
    assert '<title>A/B test of test-model: ' in ab and 'Recommendation: <b>' in ab and '<h2>Arms</h2>' in ab and '<h2>Challenger - champion</h2>' in ab
    assert ab.count('data:image/png;base64,') == 1 and '<td>roc_auc</td>' in ab and '400 labelled of 400 captured rows' in ab


def test_values_are_escaped(pages):
    for k in ('monitoring', 'ab'):  # the batch's contract column and the challenger's version carry a script
        assert '<script' not in pages[k] and '&lt;script&gt;' in pages[k], k
    from mlpipeline.validate import report_html
    from mlpipeline.evaluate import report_page
    v = report_html([{'severity': 'error', 'column': XSS, 'rule': 'r', 'expected': '', 'observed': '', 'rows': 1, 'share': 1.0}], XSS)
    e = report_page(XSS, {XSS: 0.5}, {'passed': False, 'checks': [XSS]}, {})
    for p in (v, e): assert '<script' not in p and p.count('&lt;script&gt;alert(1)&lt;/script&gt;') >= 3
