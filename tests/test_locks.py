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
