"""The docs site, built with the README's own command in a copy of the project: a page per chapter with its prose,
code and (for the chapters executed at build time) outputs, an API reference from the docstrings, a page per topic
moved out of the README, and a site that opens offline in headless Chromium."""
import functools, http.server, json, re, shutil, subprocess, sys, threading, time
from pathlib import Path, PurePath
import pytest, yaml
from conftest import REPO

BIN = Path(sys.executable).parent
SHOTS = Path('/tmp/mlpipeline-screenshots')
MOVED = ('your-own-data', 'run-folder', 'using', 'incremental', 'serving', 'monitoring', 'scheduling', 'airflow',
         'dask', 'benchmarks', 'demo-data', 'scaling')  # the README's long topics, and docs/scaling.md
SKIP = ('.venv', '.venv-airflow', '.git', 'site', '.cache', 'runs', 'mlruns*', 'mlartifacts', '__pycache__', '*.egg-info')


def build_command() -> str:
    "The line of the README's Docs section that builds the site."
    docs = (REPO/'README.md').read_text().split('## Docs', 1)[1]
    return next(l for l in docs.splitlines() if l.startswith('.venv/bin/mkdocs build'))


def first_heading(nb: Path) -> str:
    "The chapter's H1 title, from its first markdown cell that has one."
    cells = json.loads(nb.read_text())['cells']
    return next(l[2:].strip() for c in cells if c['cell_type'] == 'markdown'
                for l in ''.join(c['source']).splitlines() if l.startswith('# '))


def executed(nb: Path) -> bool:
    "Whether mkdocs.yml has mkdocs-jupyter execute this chapter (execute, and no execute_ignore pattern matches)."
    cfg = next(p['mkdocs-jupyter'] for p in yaml.safe_load((REPO/'mkdocs.yml').read_text())['plugins']
               if isinstance(p, dict) and 'mkdocs-jupyter' in p)
    return cfg['execute'] and not any(PurePath(nb).match(g) for g in cfg.get('execute_ignore', []))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by the README's command in a copy of the project (a cold cache: the full build), and its time."
    project = tmp_path_factory.mktemp('docs')/'project'
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(*SKIP))
    args = build_command().split()
    t0 = time.monotonic()
    r = subprocess.run([str(BIN/Path(args[0]).name), *args[1:]], cwd=project, capture_output=True, text=True,
                       timeout=600)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    print(f'docs site built in {seconds:.0f} s')
    assert seconds < 300, seconds  # the brief: the whole build, executed chapters included, in about 4 minutes
    return project/'site'


@pytest.fixture(scope='module')
def served(site):
    "The built site over HTTP on 127.0.0.1, as `mkdocs serve` or any static server would give it."
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()


@pytest.mark.slow
def test_every_chapter_is_a_page_with_its_prose_code_and_outputs(site):
    nbs = sorted((REPO/'nbs').glob('[0-9]*.ipynb'))
    assert len(nbs) >= 30
    runs = [nb for nb in nbs if executed(nb)]
    assert REPO/'nbs/00_config.ipynb' in runs and len(runs) < len(nbs)
    for nb in nbs:
        html = (site/'nbs'/nb.stem/'index.html').read_text()
        assert re.search(rf'<h1[^>]*>{re.escape(first_heading(nb))}', html), nb.name
        assert '<div class="jp-Cell jp-CodeCell' in html, nb.name  # the element, not the inlined CSS
        shown = '<div class="jp-OutputArea-child' in html
        assert not shown or nb in runs, nb.name  # only the executed chapters show outputs
        if nb.stem in ('00_config', '04c_scoring'): assert shown, nb.name  # their examples print results


@pytest.mark.slow
def test_the_api_reference_lists_functions_with_their_docstrings(site):
    from mlpipeline.config import load_config
    from mlpipeline.pipeline import run_pipeline
    from mlpipeline.stages import upstream
    html = (site/'api/index.html').read_text()
    text = re.sub(r'<[^>]+>', '', html)  # the rendered text: a docstring's `code` becomes <code>code</code>
    for fn in (load_config, run_pipeline, upstream):
        assert f'id="{fn.__module__}.{fn.__name__}"' in html, fn
        assert fn.__doc__.splitlines()[0].replace('`', '') in text, fn


@pytest.mark.slow
def test_the_readme_is_short_and_its_topics_are_pages(site):
    readme = (REPO/'README.md').read_text()
    assert len(readme.splitlines()) <= 150
    assert '.venv/bin/pip install -q -e ".[dev]" && .venv/bin/mlpipeline run' in readme
    assert '.venv/bin/pip install -q -e ".[dev]" && .venv/bin/python -m pytest -m ""' in readme
    nav = (site/'index.html').read_text()
    for page in MOVED:
        assert f'(docs/{page}.md)' in readme, page
        assert (site/page/'index.html').exists(), page
        assert f'href="{page}/"' in nav, page  # listed in the site's navigation
    for nb in sorted((REPO/'nbs').glob('[0-9]*.ipynb')):
        assert f'`nbs/{nb.name}`' in readme, nb.name  # the map of the code names every chapter


@pytest.mark.slow
def test_the_site_opens_offline_in_chromium(served):
    from browser import chromium, wait_for
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium(offline=True) as d:
        d.get(served + '/')
        wait_for(d, 'h1', text='mlpipeline')
        wait_for(d, '.md-nav__link', text='Chapters')
        assert 'fonts.googleapis' not in d.page_source  # theme.font: false, nothing from a CDN
        d.save_screenshot(str(SHOTS/'docs-index.png'))
        d.get(served + '/nbs/00_config/')
        wait_for(d, 'h1', text='Config')
        wait_for(d, '.jp-OutputArea-output')  # an executed example's output, shown
        d.save_screenshot(str(SHOTS/'docs-chapter-00_config.png'))


def test_the_notebook_cache_follows_the_package(tmp_path):
    "A change to a module moves mkdocs-jupyter's cache to a new folder (executed outputs depend on the package too)."
    from mkdocs.config import load_config
    sys.path.insert(0, str(REPO/'docs'))
    try: import hooks
    finally: sys.path.remove(str(REPO/'docs'))
    (tmp_path/'mlpipeline').mkdir()
    (tmp_path/'mlpipeline/config.py').write_text('A = 1\n')
    config = load_config(str(REPO/'mkdocs.yml'))
    hooks.cache_per_package(config, tmp_path)
    first = Path(config.plugins['mkdocs-jupyter'].config['cache_dir'])
    assert first.parent == tmp_path/'.cache/mkdocs-jupyter' and first.name == f'pkg-{hooks.package_digest(tmp_path)}'
    first.mkdir(parents=True)
    (tmp_path/'mlpipeline/config.py').write_text('A = 2\n')
    config = load_config(str(REPO/'mkdocs.yml'))
    hooks.cache_per_package(config, tmp_path)
    second = Path(config.plugins['mkdocs-jupyter'].config['cache_dir'])
    assert second != first and not first.exists()  # the stale outputs are gone, not just unused
