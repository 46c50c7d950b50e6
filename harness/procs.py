"""Finding the agent processes a killed harness left behind.

Agents run in their own sessions (so a timeout can kill their whole group), which also means a
kill -9 of the harness leaves them running: a claude or aider still editing the tree while the
next harness starts would corrupt the next attempt. Every process the harness starts for an
agent inherits HARNESS_AGENT_OF=<archive dir> from the harness's environment; on start, the next
harness stops whatever still carries it. Training runs are found through their run.pid files
instead (harness/runner.py), because their environment is scrubbed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARKER = "HARNESS_AGENT_OF"


def mark_agents(archive: Path) -> None:
    """From now on, processes this harness starts carry the marker of `archive`."""
    os.environ[MARKER] = str(Path(archive).resolve())


def marked_processes(archive: Path) -> list[int]:
    """Live processes (not this one) started with the marker of `archive` (Linux /proc)."""
    want = f"{MARKER}={Path(archive).resolve()}".encode()
    me, found = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if want in (entry / "environ").read_bytes().split(b"\0") and _state(entry) != "Z":
                found.append(pid)
        except OSError:  # gone, or not ours to read
            continue
    return sorted(found)


def kill_marked(archive: Path, wait_s: float = 5.0) -> list[int]:
    """SIGKILL the process groups of every marked process; returns the pids that were found."""
    pids = marked_processes(archive)
    own_group = os.getpgrp()
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            if pgid != own_group:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    end = time.monotonic() + wait_s
    while pids and time.monotonic() < end and marked_processes(archive):
        time.sleep(0.02)
    return pids


def _state(entry: Path) -> str:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
