"""What the loop tells the outside world while it works (live views, logs, the dashboard).

The loop calls a Reporter with Events; a reporter never changes state and never raises into the
loop (a broken view must not stop the research).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Event kinds and the keys their `data` carries:
#   loop_start   {branch, best_value, best_commit, margin, metric, direction, budget, agent, workers}
#   experiment   {experiment, worker}                           a new attempt begins
#   phase        {experiment, phase, worker}  phase in PHASES
#   run_line     {experiment, line, worker}                     a line of the training output
#   result       {experiment, row (harness.ledger.Row), best_value, margin, kept, worker}
#   message      {text, level ("info"|"warn"|"error")}
#   loop_stop    {reason, experiments, best_value, best_commit}
PHASES = ("agent", "guard", "commit", "training", "confirm", "analysis", "deciding", "recording")


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


def null_reporter(event: Event) -> None:
    """A reporter that shows nothing."""
