"""The repository lock: a kernel lock that dies with its owner, and the phase file beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import lock as lock_module
from harness.errors import LockHeld
from harness.lock import Lock

HOLD = """
import sys, time
from harness.lock import Lock
lock = Lock(sys.argv[1]).acquire()
lock.update(phase="training", experiment=3)
print("held", flush=True)
time.sleep(60)
"""


def hold_in_subprocess(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_owner_refuses_others_and_says_what_it_does(tmp_path: Path):
    path = tmp_path / "archive" / "lock"
    owner = hold_in_subprocess(path)
    try:
        assert lock_module.held(path)
        with pytest.raises(LockHeld, match=rf"pid {owner.pid}, training"):
            Lock(path).acquire()
    finally:
        owner.kill()
        owner.wait()


def test_kill_9_releases_it_and_the_next_owner_learns_the_phase(tmp_path: Path):
    path = tmp_path / "lock"
    owner = hold_in_subprocess(path)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert not lock_module.held(path)  # the kernel dropped it: no pid guessing
    with Lock(path) as mine:
        assert mine.previous is not None and mine.previous.phase == "training" and mine.previous.experiment == 3
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists() and not lock_module.held(path)  # a clean release leaves nothing to recover


def test_a_recycled_pid_in_a_left_lock_file_does_not_block(tmp_path: Path):
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": os.getppid(), "host": "here", "started": time.time(), "phase": "agent"}))
    with Lock(path) as mine:  # the pid is alive (our parent), but nobody holds the kernel lock
        assert mine.previous.phase == "agent"


def test_two_contenders_at_once_get_exactly_one_lock(tmp_path: Path):
    path = tmp_path / "lock"
    script = ("import sys\nfrom harness.lock import Lock\nfrom harness.errors import LockHeld\n"
              "import time\nt = float(sys.argv[2])\nwhile time.time() < t: pass\n"
              "try:\n    Lock(sys.argv[1]).acquire(); print('got'); time.sleep(2)\n"
              "except LockHeld:\n    print('refused')\n")
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
    assert outs == ["got", "refused", "refused", "refused"]
