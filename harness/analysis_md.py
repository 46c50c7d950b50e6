"""Write a run's analysis into its folder: analysis.json (the Analysis as data) and analysis.md
(the same for people and for the next prompt). An old analysis.md's "## Agent notes" section is
kept, so regenerating never loses what an agent wrote there.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from harness import atomic
from harness.analysis import (
    NO_OVERLAP,
    PART_THRESHOLD,
    TAIL_FRACTION,
    Analysis,
    Comparison,
    ConfigChange,
    fmt_axis,
)

LOG_TAIL_LINES = 40
NOTES_HEADING = "## Agent notes"
NOTES_PLACEHOLDER = "<!-- Yours: what this run taught you. Kept when analysis.md is regenerated. -->"


def write_analysis(analysis: Analysis, run_dir: Path, *, log_tail: str = "") -> None:
    """analysis.json and analysis.md; the "## Agent notes" section of an old analysis.md stays."""
    atomic.write_text(run_dir / "analysis.json", json.dumps(analysis.to_dict(), indent=1, allow_nan=False) + "\n")
    notes = existing_notes(run_dir / "analysis.md")
    atomic.write_text(run_dir / "analysis.md", render_markdown(analysis, log_tail=log_tail, notes=notes))


def existing_notes(path: Path) -> str | None:
    """What follows the "## Agent notes" heading of an analysis.md (None if no such section)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(rf"^{re.escape(NOTES_HEADING)}[^\n]*\n?", text, re.MULTILINE)
    return text[m.end() :].strip("\n") if m else None


def render_markdown(a: Analysis, *, log_tail: str = "", notes: str | None = None) -> str:
    t = a.trajectory
    better = "lower" if a.direction == "min" else "higher"
    lines = [f"# Analysis of run {a.run}", "", "## Result", ""]
    lines.append(f"- {a.metric}: **{_fmt(a.value)}** ({better} is better) · status: {a.status or 'unknown'}")
    if a.vs_best and a.vs_best.other_value is not None:
        lines.append(f"- best ({a.vs_best.other}): {_fmt(a.vs_best.other_value)} · delta {_fmt(a.vs_best.value_delta, signed=True)}")
    if a.failure:
        lines.append(f"- failure: {a.failure}")
    lines += [f"- {o}" for o in a.observations]
    if a.plots:
        lines.append("- plots: " + ", ".join(f"[{p}]({p})" for p in a.plots))
    lines += [f"- could not read: {p}" for p in a.problems]
    lines += ["", "## Trajectory", ""]
    if t.steps:
        lines += [
            f"- steps: {t.steps} · training seconds: {_fmt(t.training_seconds, 1)} · tokens: {_fmt_count(a.tokens)}",
            f"- smoothed loss: first {_fmt(t.first_loss)} → min {_fmt(t.min_loss)} (step {_fmt(t.min_loss_step, 0)}) → final {_fmt(t.final_loss)}",
            f"- end slope (last {TAIL_FRACTION:.0%}): {_fmt(t.slope_per_1k_steps, signed=True)} per 1k steps, "
            f"{_fmt(t.slope_per_minute, signed=True)} per minute · still improving: {'yes' if t.still_improving else 'no'}",
            f"- spikes: {len(t.spike_steps)}" + (f" (steps {', '.join(f'{s:g}' for s in t.spike_steps[:20])})" if t.spike_steps else ""),
            f"- diverged: {'yes' if t.diverged else 'no'}" + (f" ({t.nonfinite_losses} non-finite losses)" if t.nonfinite_losses else ""),
        ]
    else:
        lines.append("No training steps were recorded.")
    lines += ["", "## Throughput", ""]
    if t.tokens_per_sec is not None or t.step_ms is not None:
        lines.append(f"- tokens/s (median): {_fmt_count(t.tokens_per_sec)} · step time (median): {_fmt(t.step_ms, 1)} ms · MFU (mean): {_fmt(t.mfu_percent, 2)}%")
    else:
        lines.append("No throughput figures were recorded.")
    if "peak_memory_mb" in a.summary:
        lines.append(f"- peak memory: {a.summary['peak_memory_mb']} MB")
    for title, c in (("vs best", a.vs_best), ("vs previous", a.vs_prev)):
        lines += ["", f"## {title}", "", *(_render_comparison(c, a.metric) if c else ["Nothing to compare with."])]
    lines += ["", "## Config diff", ""]
    if a.vs_best is None:
        lines.append("No best run to compare with.")
    else:
        lines += _render_changes(a.config_changes, a.code_diff)
    if a.failure:
        tail = "\n".join(log_tail.splitlines()[-LOG_TAIL_LINES:]) or "(run.log is empty or missing)"
        lines += ["", "## Failure", "", a.failure, "", f"Last {LOG_TAIL_LINES} lines of run.log:", "", "```", tail, "```"]
    lines += ["", NOTES_HEADING, "", notes if notes and notes.strip() else NOTES_PLACEHOLDER, ""]
    return "\n".join(lines)


def _render_changes(changes: tuple[ConfigChange, ...] | None, diff: str | None) -> list[str]:
    if changes is None:
        lines = ["Knobs: not compared (run_summary.json has no config in this run or the best)."]
    elif not changes:
        lines = ["Knobs: the same as the best run's."]
    else:
        lines = ["| knob | best | this |", "|---|---|---|"]
        lines += [f"| {c.knob} | {_cell(c.best)} | {_cell(c.this)} |" for c in changes]
    if diff is None:
        return [*lines, "", "train.py: no snapshot of both runs to compare."]
    if not diff:
        return [*lines, "", "train.py: identical to the best run's."]
    return [*lines, "", "```diff", diff.rstrip("\n"), "```"]


def _render_comparison(c: Comparison, metric: str) -> list[str]:
    if c.axis == NO_OVERLAP:
        parted = "n/a (the two runs share no stretch of loss curve)"
    elif c.parted_at is not None:
        parted = f"{fmt_axis(c.axis, c.parted_at)} ({'this run' if c.ahead == 'this' else 'the other run'} ahead after)"
    else:
        parted = f"never (the curves stay within {PART_THRESHOLD:g} of each other to the end)"
    return [
        f"- run: {c.other} · its {metric}: {_fmt(c.other_value)} · delta: {_fmt(c.value_delta, signed=True)}",
        f"- final smoothed loss delta: {_fmt(c.final_loss_delta, signed=True)} · tokens/s ratio: {_fmt(c.tokens_per_sec_ratio, 3)}",
        f"- curves part at: {parted}",
    ]


def _fmt(v: float | None, digits: int = 4, *, signed: bool = False) -> str:
    if v is None or not isinstance(v, int | float):
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _fmt_count(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f}{unit}"
    return f"{v:.0f}"


def _cell(v: Any) -> str:
    return "(none)" if v is None else str(v).replace("|", "\\|")
