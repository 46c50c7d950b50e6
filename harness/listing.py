"""Plain-text views of the record for the terminal: one attempt per line, the status page.

Every view says which way the metric is better (a header, or words after the value), and each
Δ (value minus the best before it) is followed by `better`, `worse` or `within noise` (better,
but by no more than the margin that decision used), so a reader never has to remember whether a
negative Δ is good, nor mistake a gain the noise can explain for a real one."""

from __future__ import annotations

import time

from harness.config import Target
from harness.lab import Lab
from harness.ledger import Row
from harness.lock import held, read
from harness.parallel import status_lines


def row_line(row: Row | None, target: Target) -> str:
    if row is None:
        return "no experiments yet"
    value = "-" if row.value is None else f"{row.value:.6f}"
    delta = "" if row.delta is None else f"  Δ {row.delta:+.4f} {target.delta_word(row.delta, row.margin)}"
    margin = "" if row.margin is None or row.delta is None else f" (margin {row.margin:.4f})"
    failure = f"  [{row.failure}]" if row.failure else ""
    return (f"#{row.experiment:03d} {row.short:7} {row.status:<11} {target.metric} {value}{delta}{margin}  "
            f"{row.description}{failure}")


def header(target: Target) -> str:
    return f"{target.metric}: {target.better_word}; Δ is the change vs the best before each attempt"


def best_line(row: Row | None, target: Target) -> str:
    if row is None or row.value is None:
        return "no experiments yet"
    return (f"best {target.metric} {row.value:.6f} ({target.better_word}) at {row.short} "
            f"(#{row.experiment:03d}: {row.description})")


def log_text(lab: Lab, limit: int | None = None) -> str:
    rows = lab.rows()
    if limit:
        rows = rows[-limit:]
    t = lab.cfg.target
    lines = [row_line(r, t) for r in rows]
    return "\n".join([header(t), *lines]) if lines else "no experiments yet"


def status_text(lab: Lab) -> str:
    rows, t = lab.rows(), lab.cfg.target
    best, noise = lab.best(), lab.noise()
    baseline = next((r for r in rows if r.status == "baseline"), None)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"branch      {lab.repo.branch()}", f"metric      {t.metric} ({t.better_word})"]
    if best and best.value is not None:
        gain = ""
        if baseline and baseline.value is not None and best is not baseline:
            by = t.improvement(best.value, baseline.value)
            gain = f"  ({abs(by):.4f} {'better' if by >= 0 else 'worse'} than the baseline {baseline.value:.6f})"
        lines.append(f"best        {t.metric} {best.value:.6f} at {best.short} (#{best.experiment}: {best.description}){gain}")
    lines.append(f"noise       {noise.describe()}")
    lines.append("attempts    " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    cost = sum(r.cost_usd for r in rows)
    tokens = sum(r.tokens for r in rows)
    if tokens:
        lines.append(f"model use   {tokens} tokens, ${cost:.2f}")
    state = read(lab.archive / "lock")
    running = bool(state) and held(lab.archive / "lock")
    if state and running:
        since = time.strftime("%H:%M:%S", time.localtime(state.started))
        what = f"experiment {state.experiment}, {state.phase}" if state.experiment is not None else state.phase
        lines.append(f"running     pid {state.pid} since {since}: {what}")
    else:
        lines.append("running     nothing")
    lines += status_lines(lab.archive, running=running)
    lines.append("last        (Δ vs the best before each attempt)")
    lines += ["  " + row_line(r, t) for r in rows[-5:]]
    return "\n".join(lines)
