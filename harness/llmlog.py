"""The model-call log: every call a backend makes, appended to `<archive>/llm_calls.jsonl`.

Backends wrap each call in `LlmLog.call(...)`; the line is written in a `finally`, so a call that
raised is logged too (with its error). Secrets are redacted before anything reaches the disk.
Readers (`read_calls`, `stats`) skip broken lines instead of failing on them.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.atomic import append_line

FILE_NAME = "llm_calls.jsonl"
STAGES = ("propose", "summary")
MAX_FIELD_CHARS = 100_000  # a prompt or reply longer than this is cut in the log (not in the call)

# Each pattern keeps its group 1 and replaces the secret after it.
_SECRET_PATTERNS = (
    re.compile(r"(sk-ant-)[A-Za-z0-9_\-]+"),
    re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE),
    # JSON-encoded header maps: "x-api-key": "value" / "authorization": "value"
    re.compile(r'((?:x-api-key|authorization)\\?"\s*:\s*\\?")(?:[^"\\]|\\.)*?(?=\\?")', re.IGNORECASE),
    # header text: x-api-key: value
    re.compile(r"((?:x-api-key|authorization)\s*[:=]\s*)(?!\\?\")[^\s\",]+", re.IGNORECASE),
)
REDACTED = "***"


SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET")  # any provider's: ANTHROPIC_, OPENAI_, ...
_MIN_SECRET_CHARS = 8  # shorter values ("1", "true") would blank out ordinary text


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of `env`'s secret-named variables, longest first (so a key that contains
    another is replaced whole). Digits-only values are left out: replacing them could turn a
    JSON number into a bare `***`."""
    values = {v for name, v in env.items()
              if name.endswith(SECRET_ENV_SUFFIXES) and len(v) >= _MIN_SECRET_CHARS and not v.isdigit()}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Remove API keys and auth header values from `text` (JSON stays valid JSON): the values of
    `*_API_KEY`, `*_TOKEN` and `*_SECRET` variables of `env` (default: this process's
    environment), then Anthropic keys, bearer tokens and auth headers by their shape."""
    for value in secret_values(os.environ if env is None else env):
        text = text.replace(value, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _cap(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return value[:MAX_FIELD_CHARS] + f"... [{len(value) - MAX_FIELD_CHARS} more chars cut]"
    if isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str)
        if len(text) > MAX_FIELD_CHARS:
            return _cap(text)
    return value


@dataclass
class PendingCall:
    """A call being made: the backend fills it in as it goes; `LlmLog.call` writes it at the end.
    Mutable on purpose, since its fields become known one by one."""

    experiment: int | None
    backend: str
    stage: str
    model: str | None
    prompt: Any = None  # the prompt text, or the messages list
    response: Any = None
    tool_calls: list[dict] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    retries: int = 0
    note: str | None = None  # e.g. "unknown model; priced at the default tier"
    details: dict = field(default_factory=dict)  # backend-specific: turns, permission denials, ...


class LlmLog:
    """Appends one JSON line per model call. `session` tags the calls of one caps session (a
    night: harness/caps.py), so a loop started again after a kill counts what was spent."""

    def __init__(self, path: Path, session: str | None = None):
        self.path = Path(path)
        self.session = session or uuid.uuid4().hex[:12]

    @classmethod
    def in_archive(cls, archive_dir: Path, session: str | None = None) -> LlmLog:
        return cls(Path(archive_dir) / FILE_NAME, session)

    @contextmanager
    def call(
        self, *, experiment: int | None, backend: str, stage: str, model: str | None, prompt: Any = None
    ) -> Iterator[PendingCall]:
        pending = PendingCall(experiment, backend, stage, model, prompt)
        started = time.monotonic()
        try:
            yield pending
        except BaseException as e:
            if pending.error is None:
                pending.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.write(pending, time.monotonic() - started)

    def write(self, pending: PendingCall, duration_s: float) -> dict:
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "session": self.session,
            **{k: _cap(v) for k, v in asdict(pending).items()},
            "duration_s": round(duration_s, 3),
        }
        entry["cost_usd"] = round(float(entry["cost_usd"]), 6)
        append_line(self.path, redact(json.dumps(entry, ensure_ascii=False, default=str)))
        return entry


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallFilter:
    experiment: int | None = None
    backend: str | None = None
    stage: str | None = None
    session: str | None = None
    limit: int | None = None  # the last N matching calls
    model: str | None = None  # calls whose model name contains this (any case)
    errors: bool = False  # only the calls that failed

    def matches(self, call: dict) -> bool:
        return (
            (self.experiment is None or call.get("experiment") == self.experiment)
            and (self.backend is None or call.get("backend") == self.backend)
            and (self.stage is None or call.get("stage") == self.stage)
            and (self.session is None or call.get("session") == self.session)
            and (self.model is None or self.model.casefold() in str(call.get("model") or "").casefold())
            and (not self.errors or bool(call.get("error")))
        )


def read_calls(path: Path, filters: CallFilter | None = None) -> list[dict]:
    """The logged calls, oldest first; lines that are not JSON objects are skipped."""
    filters = filters or CallFilter()
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    calls = []
    for line in lines:
        try:
            call = json.loads(line)
        except ValueError:
            continue
        if isinstance(call, dict) and filters.matches(call):
            calls.append(call)
    if filters.limit is not None:
        calls = calls[-filters.limit :] if filters.limit > 0 else []
    return calls


SORTS = ("time", "cost", "tokens", "latency")


def numbered_calls(path: Path, filters: CallFilter | None = None) -> list[tuple[int, dict]]:
    """(number, call) in log order. A call's number is its 1-based place among all the calls in
    the log, so it stays the same whatever the filters and the order (`llm-log --show N`).
    `filters.limit` is not applied here: see `order_calls`."""
    filters = filters or CallFilter()
    return [(n, call) for n, call in enumerate(read_calls(path), 1) if filters.matches(call)]


def _sort_key(by: str):
    if by == "cost":
        return lambda nc: (_num(nc[1].get("cost_usd")), nc[0])
    if by == "tokens":
        return lambda nc: (_num(nc[1].get("tokens_in")) + _num(nc[1].get("tokens_out")), nc[0])
    if by == "latency":
        return lambda nc: (_num(nc[1].get("duration_s")), nc[0])
    if by == "time":
        return lambda nc: (str(nc[1].get("ts") or ""), nc[0])
    raise ValueError(f"unknown sort {by!r}: one of {', '.join(SORTS)}")


def order_calls(calls: list[tuple[int, dict]], by: str = "time", reverse: bool = False,
                limit: int | None = None) -> list[tuple[int, dict]]:
    """The calls in display order: by time the oldest first, by cost, tokens (in + out) or
    latency the biggest first; `reverse` flips it. `limit` keeps the newest N when sorting by
    time (like `tail`), else the first N shown (the N most expensive, ...)."""
    biggest_first = by != "time"
    out = sorted(calls, key=_sort_key(by), reverse=biggest_first != reverse)
    if limit is None:
        return out
    if limit <= 0:
        return []
    return out[-limit:] if by == "time" and not reverse else out[:limit]


@dataclass(frozen=True)
class CallStats:
    count: int
    errors: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    cost_usd: float
    p50_s: float | None
    p95_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "error_rate": round(self.error_rate, 4)}


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def stats(calls: list[dict]) -> CallStats:
    durations = [_num(c.get("duration_s")) for c in calls]
    return CallStats(
        count=len(calls),
        errors=sum(1 for c in calls if c.get("error")),
        tokens_in=int(sum(_num(c.get("tokens_in")) for c in calls)),
        tokens_out=int(sum(_num(c.get("tokens_out")) for c in calls)),
        tokens_cached=int(sum(_num(c.get("tokens_cached")) for c in calls)),
        cost_usd=round(sum(_num(c.get("cost_usd")) for c in calls), 6),
        p50_s=percentile(durations, 50),
        p95_s=percentile(durations, 95),
    )
