"""The run overview page (issue 26): runs/<id>/index.html read in headless Chromium after a full run and after a run
that failed in a stage, the rendered notebooks it links, its copy in MLflow, and `mlpipeline open`."""
import re, stat, time
from pathlib import Path
from urllib.parse import unquote, urlparse
import nbformat, pytest
from selenium.webdriver.common.by import By
from browser import wait_for
from conftest import REPO, write_project, mlpipeline, manifest, client_for, only_run
from mlpipeline.stages import STAGES, upstream

BAD = REPO/'tests/data/bad'
DURATION = re.compile(r'\d+\.\d s|\d+ min \d\d s')


def nodes(driver) -> dict:
    "The graph's nodes as the browser shows them: stage -> (status, text)."
    wait_for(driver, 'svg.graph')
    return {n.get_attribute('data-stage'): (n.get_attribute('data-status'), n.text)
            for n in driver.find_elements(By.CSS_SELECTOR, 'svg.graph g.node')}


def link_paths(driver, css: str) -> list[Path]:
    "The files the page's links matching `css` (HTML or SVG) point to, as the browser resolves them."
    urls = driver.execute_script("return [...document.querySelectorAll(arguments[0])]"
                                 ".map(a => new URL(a.getAttribute('href'), document.baseURI).href)", css)
    return [Path(unquote(urlparse(u).path)) for u in urls]


def fetched(driver) -> list[str]:
    "The URLs of everything the page loaded besides itself (scripts, styles, images, fonts)."
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def test_the_overview_of_a_finished_run_shows_every_stage_done_and_links_what_it_made(finished, browser):
    _, rd, _ = finished
    browser.get((rd/'index.html').as_uri())
    shown = nodes(browser)
    assert list(shown) == STAGES  # one node per stage of the stage table, in its order
    assert all(status == 'done' and DURATION.search(text) for status, text in shown.values()), shown
    edges = {(e.get_attribute('data-from'), e.get_attribute('data-to'))
             for e in browser.find_elements(By.CSS_SELECTOR, 'svg.graph path.edge')}
    assert edges == {(u, s) for s in STAGES for u in upstream(s)}
    lengths = browser.execute_script("return [...document.querySelectorAll('path.edge')].map(e => e.getTotalLength())")
    assert len(lengths) == len(edges) and min(lengths) > 20  # drawn, not collapsed to a point
    notebooks, reports = link_paths(browser, 'a.notebook'), link_paths(browser, 'a.report')
    assert [p.name for p in notebooks] == [f'{s}.html' for s in STAGES]
    assert {p.relative_to(rd).as_posix() for p in reports} >= {'artifacts/validation.html', 'artifacts/leakage.html',
                                                             'artifacts/evaluation.html'}
    assert link_paths(browser, 'svg.graph a[href]') == notebooks  # each node links its notebook too
    assert fetched(browser) == []  # self-contained: no script, style or font from anywhere
    every = link_paths(browser, 'a[href]')
    assert len(every) > 2*len(notebooks) + len(reports)
    assert all(p.is_file() for p in every), [p for p in every if not p.is_file()]
    browser.get(notebooks[3].as_uri())  # 04_train, as nbconvert rendered it
    wait_for(browser, '.jp-Cell')
    cells = nbformat.read(rd/'04_train.ipynb', as_version=4).cells
    assert len(browser.find_elements(By.CSS_SELECTOR, 'div.jp-Cell.jp-Notebook-cell')) == len(cells)
    assert browser.title == '04_train' and browser.find_element(By.TAG_NAME, 'h1').text.startswith('Train')
    assert browser.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output')  # the executed cells' outputs are there
    assert all(u.startswith('data:') for u in fetched(browser))  # nbconvert's page too: no CDN script


def test_the_overview_is_logged_to_the_mlflow_parent_run_with_what_it_links(finished):
    project, rd, _ = finished
    client = client_for(project)
    rid = manifest(rd)['mlflow_run_id']
    top = {a.path for a in client.list_artifacts(rid)}
    assert {'index.html', 'artifacts', *(f'{s}.html' for s in STAGES)} <= top, top
    assert 'artifacts/evaluation.html' in {a.path for a in client.list_artifacts(rid, 'artifacts')}


@pytest.fixture(scope='module')
def refused(tmp_path_factory) -> tuple[Path, Path]:
    "A project whose data validation refuses (in 02_validate), after one run: the project and that run's folder."
    project = write_project(tmp_path_factory.mktemp('refused')/'p', validation={'schema': str(BAD/'schema.yaml')},
                            data={'path': str(BAD/'unseen_category.csv'), 'id_column': 'rownames'})
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 3, r.stderr
    return project, only_run(project)


def test_a_run_that_failed_shows_the_failed_stage_with_its_message_and_the_later_stages_pending(refused, browser):
    _, rd = refused
    browser.get((rd/'index.html').as_uri())
    shown = nodes(browser)
    assert shown['01_ingest'][0] == 'done' and shown['02_validate'][0] == 'failed'
    assert all(shown[s][0] == 'pending' for s in STAGES[2:]), shown
    assert wait_for(browser, '#run-status').text == 'failed'
    note = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="02_validate"] td.note').text
    assert re.fullmatch(r'stage 02_validate failed at In \[\d+\]: DataValidationError: data refused by validation, '
                        r'1 violation\(s\):', note), note  # the error's first line (the notebook has the rest)
    assert [p.name for p in link_paths(browser, 'a.notebook')] == ['01_ingest.html', '02_validate.html']
    assert all(p.is_file() for p in link_paths(browser, 'a[href]'))
    assert [p.name for p in link_paths(browser, 'tr[data-stage="02_validate"] a.report')] == ['validation.html']
    browser.get((rd/'02_validate.html').as_uri())
    assert 'unseen_category' in wait_for(browser, '.jp-OutputArea-output', text='DataValidationError').text


def test_a_stage_reused_from_an_earlier_run_shows_as_cached(refused, browser):
    project, first = refused
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)  # ingestion is reused from the first run
    assert r.returncode == 3, r.stderr
    second = max(p for p in (project/'runs').iterdir() if p.is_dir())
    browser.get((second/'index.html').as_uri())
    shown = nodes(browser)
    assert second != first and [shown[s][0] for s in STAGES[:3]] == ['cached', 'failed', 'pending'], shown
    note = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="01_ingest"] td.note').text
    assert note == f'reused from run {first.name}'


def fake_browser(tmp: Path) -> tuple[str, Path]:
    "A BROWSER command that records the URL it is given in a file: the BROWSER value and that file."
    script, seen = tmp/'browser.sh', tmp/'opened.txt'
    script.write_text(f'#!/bin/sh\necho "$1" > {seen}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f'{script} %s', seen


def test_open_prints_the_latest_runs_page_and_opens_it_only_where_a_browser_can_show_it(finished, tmp_path):
    project, rd, _ = finished
    cmd, seen = fake_browser(tmp_path)
    headless = {'DISPLAY': '', 'WAYLAND_DISPLAY': '', 'BROWSER': cmd}
    r = mlpipeline('open', cwd=project, env_extra=headless)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{rd/'index.html'}\n", '')
    r = mlpipeline('open', rd.name, cwd=project, env_extra=headless)
    assert (r.returncode, r.stdout) == (0, f"{rd/'index.html'}\n")
    time.sleep(1)
    assert not seen.exists()  # no display, no terminal: the path only
    r = mlpipeline('open', cwd=project, env_extra=headless | {'DISPLAY': ':99'})
    assert (r.returncode, r.stdout) == (0, f"{rd/'index.html'}\n")
    for _ in range(50):
        if seen.exists() and seen.read_text(): break
        time.sleep(0.1)
    assert seen.read_text().strip() == (rd/'index.html').as_uri()


def test_open_refuses_an_unknown_run_with_the_usage_exit_code(finished):
    project, _, _ = finished
    r = mlpipeline('open', 'no-such-run', cwd=project, env_extra={'DISPLAY': ''})
    assert r.returncode == 2 and r.stdout == '' and "no run folder 'no-such-run'" in r.stderr, r.stderr
