"""The run folder's lock is the OS's (filelock): one holder at a time, named when refused, freed when its holder dies."""
import os, signal, subprocess, sys, time
import pytest
from mlpipeline.errors import UsageError
from mlpipeline.runfolder import run_lock, lock_holder

HOLD = "import sys, time\nfrom mlpipeline.runfolder import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)"


def holder(folder):
    "A process that takes the lock of `folder` and keeps it until killed."
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p


def test_a_live_holder_is_named_and_a_killed_one_holds_nothing(tmp_path):
    p = holder(tmp_path)
    try:
        assert lock_holder(tmp_path/'.lock') == p.pid
        with pytest.raises(UsageError, match=f'is being executed by process {p.pid}'):
            with run_lock(tmp_path): pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (tmp_path/'.lock').read_text().strip() == str(p.pid)  # what a kill -9 leaves behind
    assert lock_holder(tmp_path/'.lock') is None
    with run_lock(tmp_path):  # taken at once: nothing to wait for or break
        assert lock_holder(tmp_path/'.lock') == os.getpid()
    assert lock_holder(tmp_path/'.lock') is None


def test_of_processes_racing_for_the_lock_exactly_one_wins(tmp_path):
    race = ("import sys, time\nfrom mlpipeline.runfolder import run_lock\n"
            "try:\n    with run_lock(sys.argv[1]):\n        print('won', flush=True)\n        time.sleep(10)\n"
            "except Exception:\n    print('lost', flush=True)")  # 10 s: longer than the others take to start
    ps = [subprocess.Popen([sys.executable, '-c', race, str(tmp_path)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = sorted(p.communicate(timeout=120)[0].strip() for p in ps)
    assert outs == ['lost', 'lost', 'lost', 'won'], outs


def test_a_registry_lock_whose_holder_was_killed_is_broken_at_once(tmp_path):
    "Issue 22 item 4: a kill -9 while holding the registry lock used to block every alias move for lock_stale_s."
    import warnings
    from conftest import write_project
    from mlpipeline.config import load_config
    from mlpipeline.registry import registry_lock, lock_holder, registry_client, lock_name
    cfg = load_config(project=write_project(tmp_path/'p'))
    take = ("import sys, time\nfrom mlpipeline.config import load_config\nfrom mlpipeline.registry import registry_lock\n"
            "with registry_lock(load_config(project=sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)")
    p = subprocess.Popen([sys.executable, '-c', take, cfg['project']], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert lock_holder(registry_client(cfg), lock_name(cfg))['pid'] == str(p.pid)  # left behind
    t = time.monotonic()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with registry_lock(cfg): pass
    assert time.monotonic() - t < 30  # not the 300 s stale limit
    assert any(f'process {p.pid} of this host, is gone' in str(x.message) for x in w), [str(x.message) for x in w]
    assert lock_holder(registry_client(cfg), lock_name(cfg)) is None


def test_a_wait_shorter_than_the_stale_limit_is_refused(tmp_path):
    from conftest import mlpipeline, write_project
    r = mlpipeline('config', '-p', 'mlflow.lock_timeout_s=100', cwd=write_project(tmp_path/'p'))
    assert r.returncode == 2 and 'mlflow.lock_timeout_s' in r.stderr and 'not above mlflow.lock_stale_s (300)' in r.stderr, r.stderr
