"""Run one training (or any target command) as a sandboxed subprocess and describe how it ended.

What the sandbox gives, and what it does not:
- Its own session and process group: on timeout, on `stop_event` or on Ctrl-C in the caller the
  whole group gets SIGTERM, then SIGKILL a few seconds later, so forked dataloader workers and
  stray `sleep`s die with it. Leftovers of a run that exited normally are killed too. A process
  that calls setsid() itself leaves the group and is out of reach (the log reader gives up on it).
- A scrubbed environment: an allow-list of harmless variables, minus anything that looks like a
  secret, plus `spec.env` (trusted: the harness's ALR_* variables) and PYTHONUNBUFFERED=1; with
  `spec.home`, HOME is a folder of the harness's instead of the user's.
- An optional address-space cap (RLIMIT_AS). It limits *virtual* memory, so give it headroom:
  `import torch` alone maps a few GB, and CUDA runs map far more than they use; use None there.
- No network where the OS lets an unprivileged user have a network namespace
  (`unshare --user --net`); otherwise the run goes ahead with network and
  `RunOutcome.network_isolated` is False (the caller says so once). Loopback is down inside.
- run.log holds stdout+stderr, capped: the first part and the last ~64 KB are kept with a
  `[... N bytes truncated ...]` marker between them; the pipe is always drained.

`run()` never raises for the child's failures (bad exit, crash, timeout, OOM): those are data in
RunOutcome. It raises FatalError for harness-side problems (cannot write the log, disk full), and
re-raises KeyboardInterrupt (or any exception that reaches it while waiting, such as SystemExit
from a SIGTERM handler) after the child's process group is dead. A caller that wants to stop
a run without an exception sets `stop_event`; the outcome then says `interrupted=True`.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic
from harness.errors import FatalError

LOG_NAME = "run.log"
PID_NAME = "run.pid"  # present while a run is alive
TAIL_KEEP_BYTES = 64 * 1024  # the summary block is at the end of a run's output: always keep it
TERM_GRACE_S = 5.0  # between SIGTERM and SIGKILL
GROUP_EXIT_WAIT_S = 5.0  # after SIGKILL, until the group's processes are really gone
DRAIN_AFTER_EXIT_S = 3.0  # how long the reader may go on after the group is dead (setsid escapees)
_POLL_S = 0.05
_MARKER_RESERVE = 128  # room for the truncation marker inside the cap
_MAX_PARTIAL_LINE = 64 * 1024  # an endless line without newline is cut into pieces for on_line

_ENV_ALLOW = {
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ",
    "TMPDIR", "TMP", "TEMP", "VIRTUAL_ENV", "XDG_CACHE_HOME", "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "ALR_CACHE_DIR", "ALR_DATASET", "ALR_DEVICE",
}  # fmt: skip
_ENV_ALLOW_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "MKL_", "PYTORCH_", "TORCHINDUCTOR_", "TRITON_", "NCCL_")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")
_SECRET_PREFIXES = ("ANTHROPIC_", "OPENAI_", "AWS_", "GITHUB_", "HF_", "HUGGING", "GOOGLE_", "AZURE_")
_OOM_PATTERNS = re.compile(
    rb"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory|OutOfMemoryError"
    rb"|can't allocate memory"
)


@dataclass(frozen=True)
class RunSpec:
    """One run: either `argv` or `shell_command` (run with /bin/sh -c), not both."""

    argv: list[str] | None
    shell_command: str | None
    cwd: Path
    out_dir: Path  # the attempt's archive folder: run.log goes here
    env: dict[str, str] = field(default_factory=dict)  # added on top of the scrubbed base env
    wall_limit_s: float = 420.0  # hard limit: budget + grace
    memory_mb: int | None = None  # RLIMIT_AS, virtual memory: leave headroom; None for CUDA
    output_cap_bytes: int = 20 * 2**20
    network: bool = False  # True: no network namespace
    home: Path | None = None  # HOME for the run (not the user's: no ~/.netrc, ~/.aws, ... to read)


@dataclass(frozen=True)
class RunOutcome:
    returncode: int | None  # exit status; None if a signal ended it
    signal: int | None  # the signal that ended it, if one did
    timed_out: bool
    oom: bool
    interrupted: bool  # stopped by stop_event (a Ctrl-C re-raises instead of returning)
    wall_seconds: float
    log_path: Path
    log_truncated: bool
    network_isolated: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not (self.timed_out or self.interrupted)

    @property
    def failure(self) -> str | None:
        """A few words for the ledger's `failure` column; None if the run succeeded."""
        if self.ok:
            return None
        if self.timed_out:
            return f"timeout after {self.wall_seconds:.0f}s"
        if self.interrupted:
            return "interrupted"
        if self.oom:
            return "out of memory"
        if self.signal is not None:
            return f"killed by {_signal_name(self.signal)}"
        return f"exit code {self.returncode}"

    def log_tail(self, n_bytes: int = 8000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_bytes))
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def scrubbed_env(base: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed, secret-free part of `base` (normally os.environ)."""
    out = {}
    for name, value in base.items():
        upper = name.upper()
        allowed = name in _ENV_ALLOW or name.startswith(_ENV_ALLOW_PREFIXES)
        secret = any(w in upper for w in _SECRET_WORDS) or upper.startswith(_SECRET_PREFIXES)
        if allowed and not secret:
            out[name] = value
    return out


def network_isolation_prefix() -> list[str] | None:
    """The argv prefix that puts a command in a fresh network namespace, or None if not allowed."""
    prefix = _probe_isolation()
    return list(prefix) if prefix else None


@functools.cache
def _probe_isolation() -> tuple[str, ...] | None:
    # Checked once per process: user namespaces may be disabled (sysctl, seccomp in containers).
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for mapping in ("--map-current-user", "--map-root-user"):  # the first keeps `id` and git happy
        prefix = (exe, "--user", mapping, "--net")
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return None


def run(
    spec: RunSpec,
    *,
    on_line: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
) -> RunOutcome:
    """Run `spec` to the end (or its limit) and say how it ended. See the module docstring.

    `on_line` is called from a reader thread with each output line (split at \\n and \\r, so
    progress lines printed with \\r arrive too); an exception in it switches it off.
    """
    argv = _command(spec)
    prefix = None if spec.network else network_isolation_prefix()
    log_path = spec.out_dir / LOG_NAME
    sink = _open_sink(log_path, spec.output_cap_bytes, on_line)
    env = {**scrubbed_env(os.environ), **_home_env(spec.home), **spec.env, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*(prefix or ()), *argv],
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_memory_limiter(spec.memory_mb),  # None (fast spawn) unless a cap is set
        )
    except OSError as e:  # the command itself is missing or not executable: the run's failure
        sink.write(f"cannot start {argv[0]!r}: {e.strerror or e}\n".encode())
        sink.close()
        return RunOutcome(127, None, False, False, False, 0.0, log_path, False, prefix is not None)

    pid_file = spec.out_dir / PID_NAME
    reader = _Reader(proc.stdout, sink)
    how = "exited"
    oom_kills = _cgroup_oom_kills()
    try:
        # Lets a restarted harness stop a run it lost (kill -9). Inside the try: if it cannot be
        # written (disk full), the run is stopped rather than left without a limit.
        atomic.write_text(pid_file, str(proc.pid), fsync=False)
        reader.start()
        how = _wait(proc.pid, start + spec.wall_limit_s, stop_event)
        if how != "exited":
            _terminate_group(proc.pid)
    except BaseException:  # Ctrl-C, or SystemExit from the caller's SIGTERM handler
        try:
            _terminate_group(proc.pid)
        finally:
            _finish(proc, reader)
            pid_file.unlink(missing_ok=True)
        raise
    _finish(proc, reader)
    pid_file.unlink(missing_ok=True)
    wall = time.monotonic() - start
    if sink.error is not None:
        raise FatalError(
            f"could not write {log_path}: {sink.error}",
            hint="free disk space (or fix the archive folder's permissions) and run again",
        )
    code = proc.returncode
    sig = -code if code < 0 else None
    rc = None if code < 0 else code
    timed_out, interrupted = how == "timeout", how == "stopped"
    oom = not (timed_out or interrupted) and code != 0 and (
        _looks_oom(sink, sig, spec.memory_mb) or (sig == signal.SIGKILL and _cgroup_oom_kills() > oom_kills))
    return RunOutcome(
        rc, sig, timed_out, oom, interrupted, wall, log_path, sink.truncated, prefix is not None
    )


def kill_leftovers(archive_dir: Path) -> list[int]:
    """Stop runs that a killed harness left running (their run.pid files), with their whole
    process group. Returns the pids stopped. A pid is only signalled if it still leads its own
    process group and carries the harness's run environment, so a recycled pid is left alone."""
    stopped = []
    for pid_file in Path(archive_dir).glob("**/" + PID_NAME):
        try:
            pid = int(pid_file.read_text().strip())
            ours = os.getpgid(pid) == pid and _run_dir_of(pid) == pid_file.parent.resolve()
        except (ValueError, OSError):
            ours = False
        if ours and _killpg(pid, signal.SIGKILL):  # not our child: nothing to wait for politely
            _wait_group_gone(pid, GROUP_EXIT_WAIT_S)
            stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    return stopped


def _command(spec: RunSpec) -> list[str]:
    if (spec.argv is None) == (spec.shell_command is None):
        raise ValueError("RunSpec needs exactly one of argv and shell_command")
    if spec.argv is not None:
        if not spec.argv:
            raise ValueError("RunSpec.argv is empty")
        return list(spec.argv)
    return ["/bin/sh", "-c", spec.shell_command or ""]


def _memory_limiter(memory_mb: int | None) -> Callable[[], None] | None:
    if memory_mb is None:
        return None
    limit = int(memory_mb) * 2**20

    def limit_address_space() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return limit_address_space


def _wait(pid: int, deadline: float, stop_event: threading.Event | None) -> str:
    """Wait until the leader exits ("exited"), the deadline passes ("timeout") or a stop ("stopped").

    WNOWAIT leaves the leader a zombie, so its pid (the group id) cannot be reused before
    _terminate_group has signalled the group.
    """
    while True:
        if not _leader_running(pid):
            return "exited"
        now = time.monotonic()
        if now >= deadline:
            return "timeout"
        if stop_event is not None and stop_event.is_set():
            return "stopped"
        time.sleep(min(_POLL_S, deadline - now))


def _terminate_group(pgid: int) -> None:
    """SIGTERM the group, give the leader TERM_GRACE_S to exit, then SIGKILL the group.

    A second Ctrl-C skips the wait.
    """
    if not _killpg(pgid, signal.SIGTERM):
        return
    try:
        end = time.monotonic() + TERM_GRACE_S
        while time.monotonic() < end and _leader_running(pgid):
            time.sleep(_POLL_S)
    finally:
        _killpg(pgid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, reader: _Reader) -> None:
    """Kill what is left of the group, reap the leader, let the reader drain and close the log."""
    if _killpg(proc.pid, signal.SIGKILL):  # leftovers of a leader that exited (its zombie holds the id)
        _wait_group_gone(proc.pid, GROUP_EXIT_WAIT_S)
    proc.wait()
    reader.join(DRAIN_AFTER_EXIT_S)


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed uid (setuid binary): nothing more we may do
        return False


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no live member of the group is left (SIGKILL is delivered asynchronously)."""
    end = time.monotonic() + timeout
    while _group_members(pgid) and time.monotonic() < end:
        time.sleep(0.01)


def _group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are not zombies (Linux /proc; elsewhere: none known)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _leader_running(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def _home_env(home: Path | None) -> dict[str, str]:
    """HOME (and the caches that default to it) for a run that must not see the user's home.
    The data cache stays where prepare.py put it; the kept folder keeps compile caches warm."""
    if home is None:
        return {}
    Path(home).mkdir(parents=True, exist_ok=True)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    data = os.environ.get("ALR_CACHE_DIR") or str(Path(cache) / "auto-log-research")
    return {"HOME": str(home), "ALR_CACHE_DIR": str(Path(data).expanduser())}


def _run_dir_of(pid: int) -> Path | None:
    """The ALR_RUN_DIR a process was started with (how a run of ours is told from a recycled pid)."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"ALR_RUN_DIR="):
            return Path(os.fsdecode(item[len(b"ALR_RUN_DIR="):])).resolve()
    return None


def _cgroup_oom_kills() -> int:
    """Processes the kernel's OOM killer ended in this cgroup so far (cgroup v2; 0 if unknown).
    A run killed by SIGKILL while this count rose was killed for memory, not by someone."""
    try:
        for line in Path("/sys/fs/cgroup/memory.events").read_text().splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill":
                return int(count)
    except (OSError, ValueError):
        pass
    return 0


def _looks_oom(sink: _LogSink, sig: int | None, memory_mb: int | None) -> bool:
    if sig == signal.SIGKILL and memory_mb is not None:
        return True
    return bool(_OOM_PATTERNS.search(sink.last_bytes()))


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _open_sink(log_path: Path, cap: int, on_line: Callable[[str], None] | None) -> _LogSink:
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_path, "wb", buffering=0)
    except OSError as e:
        raise FatalError(
            f"cannot write the run log {log_path}: {e.strerror or e}",
            hint="check that the archive folder is writable and the disk is not full",
        ) from e
    return _LogSink(fh, cap, on_line)


class _LogSink:
    """Writes output to run.log up to a cap: the head as it comes, the last bytes at close."""

    def __init__(self, fh, cap: int, on_line: Callable[[str], None] | None):
        self._fh = fh
        self._tail_keep = max(0, min(TAIL_KEEP_BYTES, cap // 2))
        self._head_cap = max(0, cap - self._tail_keep - _MARKER_RESERVE)
        self._written = 0
        self._tail = bytearray()
        self._dropped = 0
        self._on_line = on_line
        self._partial = b""
        self.error: str | None = None  # set when writing failed (disk full): the run goes on

    @property
    def truncated(self) -> bool:
        return self._dropped > 0

    def write(self, data: bytes) -> None:
        if self._on_line is not None:
            self._lines(data)
        room = self._head_cap - self._written
        if room > 0:
            self._put(data[:room])
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * self._tail_keep:  # trim in big steps, not on every chunk
                cut = len(self._tail) - self._tail_keep
                del self._tail[:cut]
                self._dropped += cut

    def close(self) -> None:
        if self._partial and self._on_line is not None:
            self._emit(self._partial)
        extra = max(0, len(self._tail) - self._tail_keep)
        self._dropped += extra
        if self._dropped:
            self._put(f"\n[... {self._dropped} bytes truncated ...]\n".encode())
        self._put(bytes(self._tail[extra:]))
        self._tail.clear()
        self._fh.close()

    def last_bytes(self, n: int = TAIL_KEEP_BYTES) -> bytes:
        """The end of the output (for classifying failures), read back from the closed log."""
        try:
            with open(self._fh.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read()
        except OSError:
            return b""

    def _put(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        try:
            self._fh.write(data)
            self._written += len(data)
        except OSError as e:  # keep draining the pipe so the child does not block; report later
            self.error = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))

    def _lines(self, data: bytes) -> None:
        pieces = (self._partial + data).replace(b"\r", b"\n").split(b"\n")  # 20x faster than re.split
        self._partial = pieces.pop()
        if len(self._partial) > _MAX_PARTIAL_LINE:
            pieces.append(self._partial)
            self._partial = b""
        for piece in pieces:
            if piece:
                self._emit(piece)

    def _emit(self, piece: bytes) -> None:
        try:
            self._on_line(piece.decode("utf-8", errors="replace"))  # type: ignore[misc]
        except Exception:  # a broken live view must not stop the log
            self._on_line = None


class _Reader(threading.Thread):
    """Drains the child's pipe into the sink until EOF, or until told to give up."""

    def __init__(self, pipe, sink: _LogSink):
        super().__init__(name="runner-log-reader", daemon=True)
        self._pipe = pipe
        self._sink = sink
        self._give_up = threading.Event()

    def run(self) -> None:
        fd = self._pipe.fileno()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while not self._give_up.is_set():
                    if not sel.select(timeout=0.2):
                        continue
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    self._sink.write(chunk)
        finally:
            self._pipe.close()
            self._sink.close()

    def join(self, timeout: float | None = None) -> None:
        if self.ident is None:  # interrupted before it started: nothing will drain the pipe
            self._pipe.close()
            self._sink.close()
            return
        super().join(timeout)
        if self.is_alive():  # a process that left the group still holds the pipe open
            self._give_up.set()
            super().join()
