"""Why a run failed, from its log and how it ended: a kind (`FAILURE_KINDS`) and the one line
the next prompt shows (`exception: ValueError: ... at train.py:123`).
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass
from pathlib import Path

from harness.run_files import parse_summary

FAILURE_KINDS = (
    "syntax_error", "import_error", "exception", "oom", "nan_divergence", "timeout", "killed", "no_summary",
)
_TRACEBACK = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_SYNTAX_NAMES = ("SyntaxError", "IndentationError", "TabError")
_IMPORT_NAMES = ("ModuleNotFoundError", "ImportError")
_LIBRARY_PATHS = ("site-packages", "dist-packages", "/lib/python", "<frozen")


@dataclass(frozen=True)
class RaisedError:
    """The last exception a log shows: `torch.OutOfMemoryError`, its message, `train.py:123`."""

    name: str
    message: str
    where: str | None
    line_index: int  # where the exception line is in the log

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def last_exception(log: str) -> RaisedError | None:
    """The final exception of the last traceback in a log (or a bare SyntaxError report, which
    Python prints without a Traceback header when the main script does not parse)."""
    lines = (log or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if starts:
        frames: list[tuple[str, str]] = []
        for i in range(starts[-1] + 1, len(lines)):
            line = lines[i]
            frame = _FRAME.match(line)
            if frame:
                frames.append((frame[1], frame[2]))
                continue
            m = _EXC_LINE.match(line) if line[:1] not in (" ", "\t", "") else None
            if m:
                return RaisedError(m[1], (m[2] or "").strip(), _where(frames), i)
    for i in range(len(lines) - 1, -1, -1):
        m = _EXC_LINE.match(lines[i])
        if m and m[1] in _SYNTAX_NAMES:
            frames = [(f[1], f[2]) for f in map(_FRAME.match, lines[max(0, i - 6) : i]) if f]
            return RaisedError(m[1], (m[2] or "").strip(), _where(frames), i)
    return None


def _where(frames: list[tuple[str, str]]) -> str | None:
    """`file.py:line` of the deepest frame in the user's own code (else the deepest frame)."""
    if not frames:
        return None
    own = [f for f in frames if not any(p in f[0] for p in _LIBRARY_PATHS)]
    path, line = (own or frames)[-1]
    return f"{Path(path).name}:{line}"


def _is_oom(log: str, exc: RaisedError | None) -> bool:
    if "CUDA out of memory" in log or "MPS backend out of memory" in log:
        return True
    if exc is None:
        return False
    return exc.short_name in ("OutOfMemoryError", "MemoryError") or "out of memory" in exc.message.lower()


def classify_failure(
    log_tail: str, returncode: int | None, timed_out: bool, oom: bool, signal: int | None
) -> str | None:
    """One of FAILURE_KINDS, or None when the run succeeded. `returncode` None means unknown
    (e.g. analysing an archive): then a summary after the last traceback counts as success."""
    log = log_tail or ""
    exc = last_exception(log)
    if timed_out:
        return "timeout"
    finished = bool(parse_summary(log)) and (exc is None or _summary_after(log, exc))
    if finished and returncode in (0, None) and signal is None and not oom:
        return None  # an OOM or traceback that the run caught and survived is not a failure
    if oom or _is_oom(log, exc):
        return "oom"
    if returncode == 3 or "FAIL: loss diverged" in log:
        return "nan_divergence"
    if signal is not None or (returncode is not None and returncode < 0):
        return "killed"
    if exc is not None:
        if exc.short_name in _SYNTAX_NAMES:
            return "syntax_error"
        if exc.short_name in _IMPORT_NAMES:
            return "import_error"
        return "exception"
    return "exception" if returncode not in (0, None) else "no_summary"


def _summary_after(log: str, exc: RaisedError) -> bool:
    lines = log.splitlines()
    marks = [i for i, line in enumerate(lines) if line.rstrip("\r ") == "---"]
    return bool(marks) and marks[-1] > exc.line_index


def failure_summary(
    log_tail: str, returncode: int | None, timed_out: bool, oom: bool, signal: int | None
) -> str | None:
    """The one line the next prompt shows, e.g. `exception: ValueError: shapes ... at train.py:123`."""
    kind = classify_failure(log_tail, returncode, timed_out, oom, signal)
    if kind is None:
        return None
    log = log_tail or ""
    exc = last_exception(log)
    last = _last_line(log)
    if kind in ("syntax_error", "import_error", "exception") and exc is not None:
        detail = _describe(exc)
    elif kind == "oom":
        detail = _describe(exc) if exc is not None else "ran out of memory (stopped by the memory limit)"
    elif kind == "nan_divergence":
        detail = next((ln.strip() for ln in reversed(log.splitlines()) if "FAIL: loss diverged" in ln), "exit code 3")
    elif kind == "timeout":
        detail = "ran past its time limit and was stopped" + (f"; last line: {last}" if last else "")
    elif kind == "killed":
        detail = _describe_signal(signal if signal is not None else -(returncode or 0))
    elif kind == "no_summary":
        detail = "exited without a `---` summary" + (f"; last line: {last}" if last else "")
    else:
        detail = f"exit code {returncode}" + (f"; last line: {last}" if last else "")
    return _one_line(f"{kind}: {detail}", 300)


def _describe(exc: RaisedError) -> str:
    text = f"{exc.name}: {exc.message}" if exc.message else exc.name
    return text + (f" at {exc.where}" if exc.where else "")


def _describe_signal(number: int) -> str:
    try:
        return f"killed by signal {number} ({_signal.Signals(number).name})"
    except ValueError:
        return f"killed by signal {number}"


def _last_line(log: str) -> str:
    return next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "")


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
