"""Cost and token caps for one loop invocation, checked BEFORE each model call.

Backends call `check_before(estimated_cost, estimated_tokens)` and then `add(...)` with what the
call really used. A loop that restarts mid-session can seed the spend from the model-call log.
"""

from __future__ import annotations

import threading
from pathlib import Path

from harness import pricing
from harness.errors import CapExceeded
from harness.llmlog import CallFilter, read_calls, stats


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
        """A tracker that already counts the calls this session logged (e.g. before a restart)."""
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

    def check_call(self, model: str | None, prompt_chars: int, max_output_tokens: int) -> None:
        """check_before with the standard estimate: prompt chars/4 at the input price, plus the
        whole output allowance at the output price."""
        cost, tokens = pricing.estimate(model, prompt_chars, max_output_tokens)
        self.check_before(cost, tokens)

    def add(self, cost_usd: float, tokens: int) -> None:
        with self._lock:
            self.spent_cost += cost_usd
            self.spent_tokens += tokens

    @property
    def remaining_cost(self) -> float | None:
        return None if self.max_cost is None else max(0.0, self.max_cost - self.spent_cost)
