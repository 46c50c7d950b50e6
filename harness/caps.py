"""Cost and token caps for one night of research, checked BEFORE each model call.

Backends call `check_before(estimated_cost, estimated_tokens)` and then `add(...)` with what the
call really used.

A night is a caps *session*, kept in `<archive>/caps_session.json`: the first `harness loop`
opens it, and a `harness loop` that starts again after Ctrl-C, kill -9 or a crash continues it,
so `--max-cost` counts what the interrupted invocation already spent (from the model-call log,
whose lines carry the session id). The loop closes it when it ends for a stop condition or a
cap; a session older than SESSION_MAX_AGE_S is not continued either.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from harness import atomic, pricing
from harness.errors import CapExceeded
from harness.llmlog import CallFilter, read_calls, stats

SESSION_FILE = "caps_session.json"
SESSION_MAX_AGE_S = 24 * 3600.0


def open_session(archive: Path, now: float | None = None) -> str:
    """The id of the caps session in force: the one in the archive if it is younger than a
    day, else a new one (written there). Safe to call more than once."""
    path = Path(archive) / SESSION_FILE
    now = time.time() if now is None else now
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        session, started = str(data["session"]), float(data["started"])
        if session and 0 <= now - started < SESSION_MAX_AGE_S:
            return session
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: start a new one
    session = uuid.uuid4().hex[:12]
    atomic.write_text(path, json.dumps({"session": session, "started": now}) + "\n")
    return session


def close_session(archive: Path) -> None:
    """End the caps session: the next `harness loop` starts counting from zero."""
    (Path(archive) / SESSION_FILE).unlink(missing_ok=True)


def usd(value: float) -> str:
    """Dollars to the cent; a cap below a cent keeps its digits ($0.0001, not $0.00)."""
    return f"${value:.2f}" if value == 0 or abs(value) >= 0.01 else f"${value:.6f}".rstrip("0")


class Caps:
    """Spend so far against `max_cost` (USD) and `max_tokens`; None means no cap. Thread-safe,
    since parallel workers share one tracker."""

    def __init__(self, max_cost: float | None = None, max_tokens: int | None = None):
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.spent_cost = 0.0
        self.spent_tokens = 0
        self._lock = threading.Lock()

    @classmethod
    def from_log(
        cls, log_path: Path, session: str, max_cost: float | None = None, max_tokens: int | None = None
    ) -> Caps:
        """A tracker that already counts the calls this session logged (e.g. before a kill)."""
        caps = cls(max_cost, max_tokens)
        spent = stats(read_calls(log_path, CallFilter(session=session)))
        caps.add(spent.cost_usd, spent.tokens_in + spent.tokens_out)
        return caps

    def check_before(self, estimated_cost: float, estimated_tokens: int) -> None:
        """Raise CapExceeded if the next call, at its estimate, would pass a cap."""
        with self._lock:
            if self.max_cost is not None and self.spent_cost + estimated_cost > self.max_cost:
                raise CapExceeded(
                    f"stopping: the next call would pass --max-cost {usd(self.max_cost)} "
                    f"(spent {usd(self.spent_cost)}, next ≈ {usd(estimated_cost)})",
                    hint="raise --max-cost to go on",
                )
            if self.max_tokens is not None and self.spent_tokens + estimated_tokens > self.max_tokens:
                raise CapExceeded(
                    f"stopping: the next call would pass --max-tokens {self.max_tokens:,} "
                    f"(spent {self.spent_tokens:,}, next ≈ {estimated_tokens:,})",
                    hint="raise --max-tokens to go on",
                )

    def check_call(self, model: str | None, prompt_chars: int, max_output_tokens: int, local: bool = False) -> None:
        """check_before with the standard estimate: prompt chars/4 at the input price, plus the
        whole output allowance at the output price (nothing for a local model)."""
        cost, tokens = pricing.estimate(model, prompt_chars, max_output_tokens, local=local)
        self.check_before(cost, tokens)

    def add(self, cost_usd: float, tokens: int) -> None:
        with self._lock:
            self.spent_cost += cost_usd
            self.spent_tokens += tokens

    @property
    def remaining_cost(self) -> float | None:
        return None if self.max_cost is None else max(0.0, self.max_cost - self.spent_cost)
