"""The embedded scheduler for real: APScheduler in a `mlpipeline schedule` process, one-second cron lines, real
training runs in child processes, SIGTERM, a restart on the same SQLite store, and the run lock."""
import pytest
import json, os, signal, sqlite3, subprocess, time
from pathlib import Path
from conftest import CLI, write_project, mlpipeline, registered_models, client_for
from mlpipeline.runfolder import run_lock, lock_holder

EVERY_SECOND = '* * * * * *'


def history(project: Path, job: str | None = None) -> list[dict]:
    "The schedule's history rows, oldest first."
    with sqlite3.connect(project/'schedule.db') as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute('SELECT * FROM schedule_history ORDER BY id') if job in (None, r['job_id'])]


def start(project: Path) -> subprocess.Popen:
    "`mlpipeline schedule` in the project, as a service manager would start it."
    env = {k: v for k, v in os.environ.items() if k not in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_ID')}
    return subprocess.Popen([str(CLI), 'schedule'], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def stop(proc: subprocess.Popen, timeout: float = 60) -> str:
    "SIGTERM the scheduler; it must exit 0. Its stderr."
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def wait_for(check, timeout: float, what: str):
    "Poll `check` until it returns something true; that value."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if v := check(): return v
        time.sleep(0.2)
    raise AssertionError(f'timed out waiting for {what}')


def stage_started(project: Path):
    "A run folder whose manifest shows a stage started, if any."
    for m in (project/'runs').glob('*/manifest.json'):
        try: stages = json.loads(m.read_text()).get('stages', {})
        except json.JSONDecodeError: continue  # caught between the write and the rename of another file: poll again
        if stages: return m.parent


@pytest.mark.slow
def test_sigterm_aborts_training_then_restart_trains(tmp_path):
    "Train and monitor on one-second cron lines: SIGTERM mid-run aborts it cleanly; a restart keeps jobs and history and trains."
    project = write_project(tmp_path/'project', schedule={'train': EVERY_SECOND, 'monitor': EVERY_SECOND, 'strict': False, 'engine': 'warm', 'stop_timeout_s': 150})
    sched = start(project)
    rd = wait_for(lambda: stage_started(project), 90, 'a training run to start a stage')
    err = stop(sched, timeout=200)  # a loaded machine can take a while to stop the stage; killing it would leave the run unmarked
    assert 'the job in progress gets SIGINT' in err and 'scheduler stopped (1 job(s) aborted)' in err, err
    # the run: marked failed at a stage, resumable, unlocked, nothing registered
    m = json.loads((rd/'manifest.json').read_text())
    failed = [s for s, e in m['stages'].items() if e['status'] == 'failed']
    assert m['status'] == 'failed' and failed and m['stages'][failed[0]]['error'] == 'KeyboardInterrupt', (m, history(project, 'train'), err)
    assert lock_holder(rd/'.lock') is None and registered_models(project) == []
    train = history(project, 'train')
    aborted = [r for r in train if r['result'] == 'aborted']  # recorded when its child has stopped, so after the skipped ones
    assert len(aborted) == 1, train  # paused before stopping: no later firing is recorded as a second abort
    aborted = aborted[0]
    assert f'mlpipeline run --resume {rd.name}' in aborted['message'] and aborted['exit_code'] == 130, aborted
    assert aborted['scheduled'] == min(r['scheduled'] for r in train)  # the first firing started the run
    assert {r['result'] for r in train} - {'aborted'} <= {'skipped-overlap'}  # max_instances=1: the firings during the run start nothing
    monitor = history(project, 'monitor')
    assert len(monitor) >= 2 and {r['result'] for r in monitor} == {'no-data'}, monitor
    listed = mlpipeline('schedule', '--list', cwd=project)
    assert listed.returncode == 0 and 'scheduler: not running' in listed.stdout, listed.stderr
    lines = dict(l.split(': ', 1) for l in listed.stdout.splitlines()[1:])
    assert lines['train'].startswith("cron '* * * * * *' (UTC); next 20") and '; last 20' in lines['train'], lines
    before = history(project)
    # the restart: the same jobs and history; the training runs through the scheduler to a registered version
    sched = start(project)
    ok = wait_for(lambda: [r for r in history(project, 'train') if r['result'] == 'ok'], 150, 'a successful training run')
    listed = mlpipeline('schedule', '--list', cwd=project)  # read-only, beside the running scheduler
    stop(sched)
    rows = history(project)
    assert len(rows) > len(before) and rows[:len(before)] == before
    assert ok[0]['exit_code'] == 0 and 'registered test-model version 1 (' in ok[0]['message'] and 'champion' in ok[0]['message'], ok
    assert [int(v.version) for v in client_for(project).search_model_versions("name='test-model'")] == [1]
    assert listed.stdout.startswith('scheduler: running (process'), listed.stdout
    lines = dict(l.split(': ', 1) for l in listed.stdout.splitlines()[1:])
    assert lines['train'].startswith("cron '* * * * * *' (UTC); next 20") and (' ok: run ' in lines['train'] or ' skipped-overlap: ' in lines['train']), lines
    assert ' no-data: no capture in ' in lines['monitor'], lines


def test_train_job_refuses_to_overlap_a_run_in_progress(tmp_path):
    "While a process holds a run folder's lock (as `mlpipeline run` does), the train job records skipped-overlap and starts nothing."
    project = write_project(tmp_path/'project', schedule={'strict': False})
    busy = project/'runs/20260101-000000-beef'
    busy.mkdir(parents=True)
    with run_lock(busy):  # this test process is the live holder
        r = mlpipeline('schedule', '--once', 'train', cwd=project)
    assert r.returncode == 2, r.stderr
    assert r.stdout.startswith(f'train: skipped-overlap: run {busy.name} (process {os.getpid()}) is in progress'), r.stdout
    assert [p.name for p in (project/'runs').iterdir()] == [busy.name]
    row, = history(project, 'train')
    assert row['result'] == 'skipped-overlap' and row['exit_code'] is None and row['started'] <= row['finished']


def test_bad_cron_line_is_refused_with_its_key(tmp_path):
    project = write_project(tmp_path/'project', schedule={'train': '0 3 * *'})
    r = mlpipeline('schedule', cwd=project, timeout=60)
    assert r.returncode == 2 and "config key 'schedule.train': '0 3 * *' has 4 fields" in r.stderr, r.stderr
    assert not (project/'schedule.db').exists()


def test_list_shows_a_configured_job_and_its_once_result_before_any_scheduler_ran(tmp_path):
    "`--once` results show in `--list` for a job the config schedules, though no scheduler has stored it yet."
    project = write_project(tmp_path/'project', schedule={'monitor': '0 * * * *'})
    once = mlpipeline('schedule', '--once', 'monitor', cwd=project)
    assert once.returncode == 0 and once.stdout.startswith('monitor: no-data'), once.stdout + once.stderr
    listed = mlpipeline('schedule', '--list', cwd=project)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert 'no jobs' not in lines and lines[1].startswith("monitor: cron '0 * * * *' (UTC); next: scheduled when"), lines
    assert ' no-data' in lines[1] and 'last never' not in lines[1], lines


class Marker:
    "A pickle whose loading creates the file `path` (as a planted job state would run any code)."
    def __init__(self, path: Path): self.path = path
    def __reduce__(self): return (open, (str(self.path), 'w'))


def plant_pickled_job(project: Path, marker: Path):
    "An old `schedule.db`: the history, and APScheduler's `apscheduler_jobs` with a pickled job state that runs code."
    import pickle
    import sqlalchemy as sa
    from mlpipeline.schedule import HISTORY
    HISTORY.create(sa.create_engine(f"sqlite:///{project/'schedule.db'}"))
    with sqlite3.connect(project/'schedule.db') as c:
        c.execute('CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, next_run_time FLOAT, job_state BLOB)')
        c.execute('INSERT INTO apscheduler_jobs VALUES (?, ?, ?)', ('monitor', 0.0, pickle.dumps(Marker(marker))))


def test_an_old_stores_pickled_job_is_never_loaded(tmp_path):
    "An old store's pickled job runs nothing: `--list`, `--once` and the scheduler rebuild the jobs from the config."
    project = write_project(tmp_path/'project', schedule={'monitor': EVERY_SECOND})
    marker = tmp_path/'unpickled'
    plant_pickled_job(project, marker)
    listed = mlpipeline('schedule', '--list', cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith("monitor: cron '* * * * * *' (UTC)"), listed.stdout
    once = mlpipeline('schedule', '--once', 'monitor', cwd=project)
    assert once.returncode == 0 and once.stdout.startswith('monitor: no-data'), once.stdout + once.stderr
    sched = start(project)
    wait_for(lambda: len(history(project, 'monitor')) >= 2, 60, 'a scheduled monitor run')
    stop(sched)
    assert not marker.exists()
    with sqlite3.connect(project/'schedule.db') as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        jobs = c.execute('SELECT id, name FROM schedule_jobs').fetchall()
    assert 'apscheduler_jobs' not in tables and jobs == [('monitor', "cron '* * * * * *' (UTC)")], (tables, jobs)
    listed = mlpipeline('schedule', '--list', cwd=project)
    assert listed.stdout.splitlines()[1].startswith("monitor: cron '* * * * * *' (UTC); next 20"), listed.stdout
    assert not marker.exists()
