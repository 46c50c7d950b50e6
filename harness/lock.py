"""One harness per repository. The lock file also says what the owner was doing, so a harness
that starts after a kill -9 can tell an interrupted attempt from a clean stop."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness import atomic
from harness.errors import FatalError, LockHeld


@dataclass(frozen=True)
class LockState:
    pid: int
    host: str
    started: float
    phase: str = "idle"  # idle | agent | guard | commit | training | confirm | analysis | deciding | recording
    experiment: int | None = None
    base: str | None = None  # the best commit the attempt started from
    commit: str | None = None  # the attempt's commit, once made


def read(path: Path) -> LockState | None:
    try:
        data = json.loads(Path(path).read_text())
        return LockState(**{k: data.get(k) for k in LockState.__dataclass_fields__})
    except (FileNotFoundError, ValueError, TypeError):
        return None


def held(path: Path) -> bool:
    """True if a live harness holds the lock at `path` (its kernel lock, not a guess from a pid)."""
    try:
        fd = os.open(Path(path).with_name(Path(path).name + ".flock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class Lock:
    """Held for the life of a `harness run` / `loop` / `init`. Use as a context manager.

    Mutual exclusion is a kernel lock (flock) on a sidecar file `<lock>.flock`: the kernel drops
    it when its owner dies, kill -9 included, so there is no stale-pid guessing and no window in
    which two harnesses both think they own the repository. The JSON file `lock` only says what
    the owner is doing (its phase), for `harness status` and for the recovery of whoever comes next;
    it is always replaced atomically, so a reader never sees half of it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.state: LockState | None = None
        self.previous: LockState | None = None  # what an owner that died left (its phase)
        self._fd: int | None = None

    @property
    def _flock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".flock")

    def acquire(self) -> Lock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._flock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only or full archive folder: nothing could be recorded
            raise FatalError(f"cannot create the lock file {self._flock_path}: {e.strerror or e}",
                             hint="make the archive folder writable (and check the disk has room)") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read(self.path)
            who = f"pid {other.pid}, {other.phase}" if other else "starting up"
            raise LockHeld(f"another harness ({who}) is running in this repository",
                           hint=f"wait for it, or stop it (touch {self.path.parent / 'STOP'})") from None
        self._fd = fd
        self.previous = read(self.path)  # a lock file left behind: its owner died without releasing
        mine = LockState(pid=os.getpid(), host=socket.gethostname(), started=time.time())
        try:
            atomic.write_text(self.path, json.dumps(asdict(mine)), fsync=False)
        except OSError as e:
            self._unlock()
            raise FatalError(f"cannot write the lock file {self.path}: {e.strerror or e}",
                             hint="make the archive folder writable (and check the disk has room)") from e
        self.state = mine
        return self

    def update(self, **changes) -> None:
        if self.state is None:
            return
        self.state = replace(self.state, **changes)
        atomic.write_text(self.path, json.dumps(asdict(self.state)), fsync=False)

    def release(self) -> None:
        if self.state is not None:
            self.path.unlink(missing_ok=True)  # a clean stop: nothing for the next owner to recover
            self.state = None
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock; the sidecar file stays (unlinking it would race)
            self._fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
