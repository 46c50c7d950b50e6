"""One harness per repository. The lock file also says what the owner was doing, so a harness
that starts after a kill -9 can tell an interrupted attempt from a clean stop."""

from __future__ import annotations

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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path) -> LockState | None:
    try:
        data = json.loads(Path(path).read_text())
        return LockState(**{k: data.get(k) for k in LockState.__dataclass_fields__})
    except (FileNotFoundError, ValueError, TypeError):
        return None


class Lock:
    """Held for the life of a `harness run` / `loop` / `init`. Use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.state: LockState | None = None
        self.previous: LockState | None = None  # a stale lock taken over (its owner died)

    def acquire(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = LockState(pid=os.getpid(), host=socket.gethostname(), started=time.time())
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = read(self.path)
                if other and other.pid != os.getpid() and other.host == mine.host and alive(other.pid):
                    raise LockHeld(
                        f"another harness (pid {other.pid}, {other.phase}) is running in this repository",
                        hint=f"wait for it, or stop it (touch {self.path.parent / 'STOP'})") from None
                self.previous = other  # stale (dead owner) or unreadable: take it over
                self.path.unlink(missing_ok=True)
                continue
            except OSError as e:  # a read-only or full archive folder: nothing could be recorded
                raise FatalError(f"cannot create the lock file {self.path}: {e.strerror or e}",
                                 hint="make the archive folder writable (and check the disk has room)") from e
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(mine), f)
            self.state = mine
            return self
        raise LockHeld(f"could not take the lock {self.path}", hint="remove it if no harness is running")

    def update(self, **changes) -> None:
        if self.state is None:
            return
        self.state = replace(self.state, **changes)
        atomic.write_text(self.path, json.dumps(asdict(self.state)), fsync=False)

    def release(self) -> None:
        if self.state is not None:
            cur = read(self.path)
            if cur is None or cur.pid == self.state.pid:
                self.path.unlink(missing_ok=True)
            self.state = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
