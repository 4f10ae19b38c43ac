"""The run lock of an output folder (engine/system/runfolder.py): held by the process that claimed the folder only,
never by the children it forks (DataLoader workers), and free the moment its owner dies."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env

from mmdistill.engine.system import runfolder
from mmdistill.errors import OutputBusyError

runfolder.register_layout("lock-test", {"scores.csv": None})

# Claims DIR, forks a child that lives on (as a DataLoader worker would), prints both pids, then waits.
CLAIM_AND_FORK = """
import os, sys, time
from mmdistill.engine.system import runfolder
runfolder.register_layout("lock-test", {"scores.csv": None})
folder = runfolder.claim(sys.argv[1], "lock-test", "scores.csv")
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(os.getpid(), child, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_runs_forked_child_does_not_keep_the_folder_locked(tmp_path):
    out = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_FORK, str(out)], env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    parent, child = map(int, owner.stdout.readline().split())
    try:
        with pytest.raises(OutputBusyError, match=rf"a run is in progress in .*\(pid {parent}\)"):
            runfolder.claim(out, "lock-test", "scores.csv")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _alive(child), "the forked child must outlive its parent for this test to mean anything"
        started = time.monotonic()
        folder = runfolder.claim(out, "lock-test", "scores.csv")  # at once: the dead owner's lock is gone
        assert time.monotonic() - started < 1.0
        folder.release()
    finally:
        for pid in (parent, child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        owner.wait()


def test_the_lock_refuses_a_second_claim_in_the_same_process_and_probing_it_keeps_it(tmp_path):
    out = tmp_path / "run"
    folder = runfolder.claim(out, "lock-test", "scores.csv")
    try:
        with pytest.raises(OutputBusyError, match=rf"pid {os.getpid()}"):
            runfolder.claim(out, "lock-test", "scores.csv")
        with pytest.raises(OutputBusyError):
            runfolder.check(out, "lock-test", "scores.csv")
        claim_it = f"from mmdistill.engine.system import runfolder; runfolder.claim({str(out)!r}, 'lock-test', 'x')"
        probe = subprocess.run(  # after the in-process probes another process is still kept out
            [sys.executable, "-c", claim_it],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode != 0 and "a run is in progress" in probe.stderr
    finally:
        folder.release()
    runfolder.claim(Path(out), "lock-test", "scores.csv").release()
