"""Plain-text views of the record for the terminal: one attempt per line, the status page."""

from __future__ import annotations

import time

from harness.lab import Lab
from harness.ledger import Row
from harness.lock import alive, read
from harness.parallel import status_lines


def row_line(row: Row | None, metric: str) -> str:
    if row is None:
        return "no experiments yet"
    value = "-" if row.value is None else f"{row.value:.6f}"
    delta = "" if row.delta is None else f"  Δ {row.delta:+.4f}"
    margin = "" if row.margin is None or row.delta is None else f" (margin {row.margin:.4f})"
    failure = f"  [{row.failure}]" if row.failure else ""
    return (f"#{row.experiment:03d} {row.short:7} {row.status:<11} {metric} {value}{delta}{margin}  "
            f"{row.description}{failure}")


def log_text(lab: Lab, limit: int | None = None) -> str:
    rows = lab.rows()
    if limit:
        rows = rows[-limit:]
    metric = lab.cfg.target.metric
    lines = [row_line(r, metric) for r in rows]
    return "\n".join(lines) if lines else "no experiments yet"


def status_text(lab: Lab) -> str:
    rows, metric = lab.rows(), lab.cfg.target.metric
    best, noise = lab.best(), lab.noise()
    baseline = next((r for r in rows if r.status == "baseline"), None)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"branch      {lab.repo.branch()}"]
    if best and best.value is not None:
        gain = ""
        if baseline and baseline.value is not None and best is not baseline:
            gain = f"  ({lab.cfg.target.improvement(best.value, baseline.value):+.4f} vs baseline {baseline.value:.6f})"
        lines.append(f"best        {metric} {best.value:.6f} at {best.short} (#{best.experiment}: {best.description}){gain}")
    lines.append(f"noise       {noise.describe()}")
    lines.append("attempts    " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    cost = sum(r.cost_usd for r in rows)
    tokens = sum(r.tokens for r in rows)
    if tokens:
        lines.append(f"model use   {tokens} tokens, ${cost:.2f}")
    state = read(lab.archive / "lock")
    if state and alive(state.pid):
        since = time.strftime("%H:%M:%S", time.localtime(state.started))
        what = f"experiment {state.experiment}, {state.phase}" if state.experiment is not None else state.phase
        lines.append(f"running     pid {state.pid} since {since}: {what}")
    else:
        lines.append("running     nothing")
    lines += status_lines(lab.archive, running=bool(state and alive(state.pid)))
    lines.append("last        ")
    lines += ["  " + row_line(r, metric) for r in rows[-5:]]
    return "\n".join(lines)
