"""The four HTML reports (validation, evaluation, monitoring, A/B) of a real run, rendered through one base template:
the same shell, their own content, values escaped, every image embedded."""
import re
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import mlpipeline, client_for, write_project, only_run, SAMPLE
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

# --- The reports in a real browser (issue 26): data docs, the leakage chart, the drift bins ------------------------
SHOTS = Path('/tmp/reports-shots')
NUMBER = re.compile(r'(?<![\w.])\d*\.\d+(?:e[-+]?\d+)?')  # a decimal number in the text a reader sees
EMPTY = ('None', 'nan', 'NaN', 'null', '')


@pytest.fixture(scope='module')
def refused(finished, tmp_path_factory) -> Path:
    """A run refused by validation: a curated schema (tenure up to 40, no 'Two year' contract) against data with
    missing total_charges, repeated rows and a column the schema lacks; its validation page."""
    import yaml
    _, rd, _ = finished
    tmp = tmp_path_factory.mktemp('refused')
    schema = yaml.safe_load((rd/'artifacts/schema.yaml').read_text())
    schema['columns']['tenure']['max'] = 40.0
    schema['columns']['contract']['domain'] = ['Month-to-month', 'One year']
    df = pd.read_csv(SAMPLE)
    df.loc[:9, 'total_charges'] = np.nan
    df = pd.concat([df, df.iloc[10:13].assign(rownames=[90001, 90002, 90003])]).assign(note='x')
    df.to_csv(tmp/'data.csv', index=False)
    project = write_project(tmp/'project', data={'path': str(tmp/'data.csv'), 'id_column': 'rownames'},
                            validation={'schema': 'schema.yaml'})
    (project/'schema.yaml').write_text(yaml.safe_dump(schema, sort_keys=False))
    r = mlpipeline('run', '--quiet', cwd=project)
    assert r.returncode == 3, r.stderr
    return only_run(project)/'artifacts/validation.html'


@pytest.fixture(scope='module')
def leaky(tmp_path_factory) -> Path:
    "The leakage page of a run whose data has a noisy copy of the target, a category mapping to it and a row number."
    from test_leakage import planted, run_stages
    return run_stages(planted(tmp_path_factory.mktemp('leaky')), upto='features.run_features')/'artifacts/leakage.html'


@pytest.fixture(scope='module')
def drifted(finished, tmp_path_factory) -> Path:
    "The monitoring page of a batch whose monthly_charges moved by one standard deviation (values out of range)."
    project, _, _ = finished
    data = batch(tmp_path_factory.mktemp('drifted')/'batch.csv', shift_sd=1.0)
    r = mlpipeline('monitor', '--data', str(data), cwd=project)
    assert r.returncode == 0, r.stderr
    return Path(summary_of(r.stdout, project)['report'])


@pytest.fixture(scope='module')
def offline_chromium():
    "One headless Chromium for the module that reaches nothing but this machine."
    from browser import chromium
    with chromium(offline=True) as driver: yield driver


@pytest.fixture
def show(offline_chromium, request):
    "Open a report file in the offline browser (a screenshot under /tmp/reports-shots); on failure the page is saved."
    from browser import screenshot_on_failure
    def open_page(path: Path, name: str):
        offline_chromium.get(path.resolve().as_uri())
        SHOTS.mkdir(exist_ok=True)
        offline_chromium.save_screenshot(str(SHOTS/f'{name}.png'))
        return offline_chromium
    yield open_page
    screenshot_on_failure(offline_chromium, request, Path('/tmp/mlpipeline-screenshots'))


def texts(driver, css: str) -> list[str]:
    "The text of every element matching `css`."
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])]"
                                 ".map(e => e.textContent.trim())", css)


def table_rows(driver, css: str) -> list[list[str]]:
    "The text of each cell of each row but the header of the table `css`."
    return driver.execute_script("return [...document.querySelectorAll(arguments[0] + ' tr')].slice(1)"
                                 ".map(r => [...r.cells].map(c => c.textContent))", css)


def no_literal_none(driver):
    "No table cell or fact reads None, nan or null, and none is blank."
    cells = texts(driver, 'td, dd')
    assert cells and not [c for c in cells if c in EMPTY], [c for c in cells if c in EMPTY]


COLUMN_SECTIONS = """return [...document.querySelectorAll('section.column')].map(s => [s.dataset.column, {
    kind: s.querySelector('dd.kind').textContent, missing: s.querySelector('dd.missing').textContent,
    bars: s.querySelectorAll('svg.chart rect.bar').length,
    labels: [...s.querySelectorAll('svg.chart g.row title')].map(t => t.textContent),
    checks: [...s.querySelectorAll('table.checks tr')].slice(1)
                .map(r => [...r.cells].map(c => c.textContent).concat([r.className]))}])"""


def test_the_validation_report_reads_as_data_docs(refused, show):
    d = show(refused, 'validation')
    data = pd.read_parquet(refused.parents[1]/'data/raw.parquet')
    pairs = d.execute_script(COLUMN_SECTIONS)
    assert [c for c, _ in pairs] == list(map(str, data.columns))  # a section per column of the data, in its order
    sections = {c: s | {'checks': {r[0]: r[1:] for r in s['checks']}} for c, s in pairs}
    kinds = ('numeric', 'categorical', 'boolean', 'datetime')
    assert all(s['kind'] in kinds and re.fullmatch(r'\d+(\.\d+)?%', s['missing']) and s['bars'] > 0
               for s in sections.values()), sections
    assert (sections['tenure']['kind'], sections['contract']['kind']) == ('numeric', 'categorical')
    assert sections['total_charges']['missing'] == '2.73%'  # 11 of 403 rows
    assert sections['senior_citizen']['labels'] == ['0', '1']  # a 0/1 column: a bar per value
    assert sections['tenure']['checks']['range'] == ['0 to 40, give or take 4', '0 to 72', 'error']  # expected, seen
    assert sections['contract']['checks']['values'][2] == 'error'
    assert sections['total_charges']['checks']['missing'][2] == 'error'
    assert sections['note']['checks'] == {'in the schema': ['yes', 'no (ignored)', 'warning']}
    no_literal_none(d)
    findings = [(r[1], r[2], r[-1]) for r in table_rows(d, 'table.findings')]
    assert {(c, r) for c, r, _ in findings} == {('tenure', 'out_of_range'), ('contract', 'unseen_category'),
                                                ('total_charges', 'missing_values'), ('(table)', 'duplicate_rows'),
                                                ('note', 'unexpected_column')}, findings
    assert all(re.fullmatch(r'[A-Z].{20,} \(to fix this, .+\)\.', e) for _, _, e in findings), findings  # with its fix


def test_the_leakage_report_charts_each_feature_against_the_whole_model(leaky, show):
    import json
    facts = json.loads((leaky.parent/'leakage.json').read_text())
    d = show(leaky, 'leakage')
    labels = texts(d, 'svg.chart g.row title')
    assert sorted(labels) == sorted(facts['single_feature']) and labels[:2] == ['tier', 'leak']  # the strongest first
    assert len(texts(d, 'svg.chart rect.bar')) == len(labels)  # a bar per feature
    assert len(texts(d, 'svg.chart line.ref')) == 1  # the whole model's score as a line across the bars
    assert f"all features {facts['all_features']:.3g}" in texts(d, 'svg.chart text')
    rows = [(r[0], r[1], r[-1]) for r in table_rows(d, 'table.findings')]
    planted = {('tier', 'single_feature_leak'), ('leak', 'single_feature_leak'), ('tier', 'target_mapping'),
               ('rowno', 'id_like_column')}
    assert planted <= {(c, r) for c, r, _ in rows} and all('(to fix this, ' in e for _, _, e in rows), rows
    rules = ['single_feature_leak', 'target_mapping', 'close_to_model', 'id_like_column', 'rows_shared_across_splits']
    assert texts(d, 'dl.rules dt') == rules
    assert all(t.startswith('Flags ') and '(to fix this, ' in t for t in texts(d, 'dl.rules dd'))
    no_literal_none(d)


DRIFT_BINS = """return [...document.querySelectorAll('figure.drift')].map(f => [
    f.querySelector('figcaption').textContent,
    [...f.querySelectorAll('g.row')].map(g => [g.querySelector('title').textContent,
        [...g.querySelectorAll('rect.bar')].map(b => +b.getAttribute('width'))])])"""


def test_the_drift_report_has_no_empty_bin_and_no_float_noise(drifted, show):
    d = show(drifted, 'drift')
    charts = d.execute_script(DRIFT_BINS)
    assert len(charts) >= 15
    empty = [(c, label) for c, rows in charts for label, widths in rows if not any(w > 0 for w in widths)]
    assert not empty, empty  # every bin holds rows of the reference or of the batch
    bins = {c: [label for label, _ in rows] for c, rows in charts}
    assert bins['senior_citizen'] == ['0', '1'] and bins['partner'] == ['0', '1']
    body = d.execute_script('return document.body.innerText')
    digits = lambda n: len(n.split('e')[0].replace('.', '').lstrip('0'))
    noisy = [n for n in NUMBER.findall(body) if digits(n) > 6]
    assert 'out_of_range' in body and not noisy, noisy  # the out-of-range examples were 135.0641296138671
    no_literal_none(d)


def test_no_report_fetches_anything(refused, leaky, drifted, pages, finished, show, tmp_path):
    _, rd, _ = finished
    (tmp_path/'ab.html').write_text(pages['ab'])
    reports = {'validation': refused, 'leakage': leaky, 'drift': drifted, 'ab': tmp_path/'ab.html',
               'evaluation': rd/'artifacts/evaluation.html'}
    for name, path in reports.items():
        assert 'http://' not in path.read_text() and 'https://' not in path.read_text(), name
        d = show(path, name)
        loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        links = d.execute_script("return [...document.querySelectorAll('[src],[href]')]"
                                 ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
        assert loaded == [] and all(l.startswith(('data:', '#')) for l in links), (name, loaded, links)
