"""One self-contained HTML report of a research archive: what was tried, what was kept, and why.

`collect(root)` reads the archive (ledger, notes, model-call log, per-attempt folders, git) into a
`ReportData`; `render_report` turns that into HTML (sections in harness/web/sections.py, charts
as inline SVG). The page loads nothing from the network, and every string that came from the
ledger, the notes or an agent is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic
from harness.config import Config, load_config
from harness.ledger import Ledger, Row
from harness.notes import Idea, Notes
from harness.workers import DeviceReport, device_report

MAX_DIFF_LINES = 400  # per pair of keeps: a rewrite of train.py must not blow up the page
MAX_LINEAGE_LINES = 12_000  # all diffs together
MAX_CURVE_POINTS = 300  # per loss curve, after downsampling
MAX_NOTES_CHARS = 200_000  # insights.md and ideas_queue.md each: an agent may let them grow without end
TRUNCATED = "\n[... truncated: {} more characters in {}]\n"


@dataclass(frozen=True)
class Curve:
    label: str
    commit: str
    points: tuple[tuple[float, float], ...]  # (step, loss), downsampled


@dataclass(frozen=True)
class LineageStep:
    row: Row
    previous: Row | None
    diff: str  # unified diff of the editable files against the previous keep ("" for the first)
    truncated: bool = False


@dataclass(frozen=True)
class ReportData:
    root: Path
    metric: str
    direction: str
    rows: tuple[Row, ...]
    warnings: tuple[str, ...] = ()
    insights: str = ""
    ideas_text: str = ""
    ideas: tuple[Idea, ...] = ()
    usage: dict[int, tuple[int, float]] = field(default_factory=dict)  # experiment -> (tokens, usd)
    lineage: tuple[LineageStep, ...] = ()
    curves: tuple[Curve, ...] = ()
    missing_curves: tuple[str, ...] = ()  # which curves could not be drawn, and why
    devices: DeviceReport = field(default_factory=DeviceReport)  # workers and GPU-hours (harness/workers.py)

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.rows if r.status == "baseline" and r.value is not None), None)

    @property
    def best(self) -> Row | None:
        kept = [r for r in self.rows if r.kept and r.value is not None]
        return kept[-1] if kept else None


# --------------------------------------------------------------------------- reading the archive


def collect(root: Path, cfg: Config | None = None, diffs: dict | None = None) -> ReportData:
    """Read everything the report shows. Missing files give empty sections, never an error.

    `diffs` caches the git diffs between keeps across calls (the dashboard renders again on every
    change; a commit pair's diff never changes)."""
    root = Path(root).resolve()
    cfg = cfg or load_config(root)
    archive = cfg.archive_dir
    ledger_path = archive / "results.tsv"
    metric = ledger_metric(ledger_path) or cfg.target.metric
    ledger = Ledger(ledger_path, metric)
    rows = tuple(ledger.rows())
    direction = cfg.target.direction
    if metric != cfg.target.metric:  # the config describes another target: judge by the keeps
        direction = infer_direction(rows, direction)
    notes = Notes(archive)
    data = ReportData(
        root=root, metric=metric, direction=direction, rows=rows, warnings=tuple(ledger.warnings),
        insights=capped(_read(notes.insights_path), notes.insights_path.name),
        ideas_text=capped(_read(notes.ideas_path), notes.ideas_path.name), ideas=tuple(notes.ideas()),
        usage=read_usage(archive / "llm_calls.jsonl"), devices=device_report(archive),
    )
    if not rows:
        return data
    lineage = tuple(kept_lineage(root, archive, rows, cfg.target.editable, diffs))
    curves, missing = loss_curves(archive, data.baseline, data.best)
    return dataclasses.replace(data, lineage=lineage, curves=curves, missing_curves=missing)


def infer_direction(rows: tuple[Row, ...], default: str) -> str:
    """'max' if the kept values went up over time, 'min' if down, else the default."""
    kept = [r.value for r in rows if r.kept and r.value is not None]
    if len(kept) < 2 or kept[-1] == kept[0]:
        return default
    return "max" if kept[-1] > kept[0] else "min"


def ledger_metric(path: Path) -> str | None:
    """The metric name: column 2 of results.tsv's header (not always val_bpb)."""
    return Ledger(path).metric_column()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def capped(text: str, name: str, limit: int = MAX_NOTES_CHARS) -> str:
    """`text` cut at `limit` characters, with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED.format(f"{len(text) - limit:,}", name)


_EXPERIMENT = re.compile(r"\bexp(?:eriment)?\s*#?(\d+)")


def idea_experiment(idea: Idea) -> int | None:
    """The experiment a done idea points at (`→ exp 7: keep 1.8234`), if it says."""
    m = _EXPERIMENT.search(idea.result)
    return int(m.group(1)) if m else None


def idea_parts(idea: Idea) -> tuple[str, str]:
    """(the idea, why) for display: the text before a `#` comment, and the reason."""
    text, _, comment = idea.text.partition("#")
    return text.strip() or idea.text, idea.why or comment.strip()


@dataclass(frozen=True)
class IdeaState:
    state: str  # "pending" or "tried"
    experiment: int | None  # the experiment that tried it, if the note says
    result: str  # "exp 7: keep 1.823400": from the ledger when it has that experiment, else the note


def idea_state(idea: Idea, rows: dict[int, Row]) -> IdeaState:
    """What `harness notes` and the report both show for an idea. The ledger is the truth: the
    note after the `→` may be stale or hand-written."""
    if not idea.done:
        return IdeaState("pending", None, "")
    n = idea_experiment(idea)
    row = rows.get(n) if n is not None else None
    if row is None:
        return IdeaState("tried", n, idea.result)
    value = "no result" if row.value is None else f"{row.value:.6f}"
    return IdeaState("tried", n, f"exp {row.experiment}: {row.status} {value}")


def read_usage(path: Path) -> dict[int, tuple[int, float]]:
    """Tokens and USD per experiment from llm_calls.jsonl (bad lines are skipped)."""
    out: dict[int, tuple[int, float]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            call = json.loads(line)
            n = int(call.get("experiment"))
            tokens = int(call.get("tokens_in") or 0) + int(call.get("tokens_out") or 0)
            cost = float(call.get("cost_usd") or 0.0)
        except (ValueError, TypeError, AttributeError):
            continue
        t, c = out.get(n, (0, 0.0))
        out[n] = (t + tokens, c + cost)
    return out


def attempt_dir(archive: Path, commit: str) -> Path | None:
    """The per-attempt folder of a commit (named by the full sha or a prefix of it)."""
    if not commit or commit == "-":
        return None
    exact = archive / commit
    if exact.is_dir():
        return exact
    for d in sorted(archive.glob(f"{commit[:7]}*")):
        if d.is_dir() and (commit.startswith(d.name) or d.name.startswith(commit)):
            return d
    return None


# --------------------------------------------------------------------------- lineage and diffs


def kept_lineage(root: Path, archive: Path, rows: tuple[Row, ...], editable: tuple[str, ...],
                 diffs: dict | None = None) -> list[LineageStep]:
    """Baseline and keeps in order, each with the diff of the editable files from the one before.

    Each diff is cut at MAX_DIFF_LINES and all of them together at MAX_LINEAGE_LINES (the newest
    keeps win), so a long night of rewrites still makes a page of a few MB at most.
    """
    kept = [r for r in rows if r.kept and r.commit != "-"]
    budget = MAX_LINEAGE_LINES
    steps: list[LineageStep] = []
    for i in range(len(kept) - 1, -1, -1):
        row, prev = kept[i], kept[i - 1] if i else None
        if prev is None or budget <= 0:
            steps.append(LineageStep(row, prev, "", truncated=prev is not None))
            continue
        lines = cached_diff(diffs, root, archive, prev.commit, row.commit, editable).splitlines()
        cut = min(MAX_DIFF_LINES, budget)
        budget -= min(len(lines), cut)
        steps.append(LineageStep(row, prev, "\n".join(lines[:cut]), len(lines) > cut))
    return steps[::-1]


def cached_diff(cache: dict | None, root: Path, archive: Path, a: str, b: str, editable: tuple[str, ...]) -> str:
    """commit_diff through `cache` (keyed by the commit pair). An empty diff is not kept: the git
    objects or snapshots it lacked may turn up later."""
    if cache is None:
        return commit_diff(root, archive, a, b, editable)
    key = (a, b, editable)
    if key not in cache:
        diff = commit_diff(root, archive, a, b, editable)
        if not diff:
            return diff
        cache[key] = diff
    return cache[key]


def commit_diff(root: Path, archive: Path, a: str, b: str, editable: tuple[str, ...]) -> str:
    """`git diff a b -- editable`; falls back to the archived snapshots when git lacks the objects."""
    try:
        out = subprocess.run(
            ["git", "diff", "--no-color", "--no-ext-diff", a, b, "--", *editable],
            cwd=root, capture_output=True, text=True, timeout=20, errors="replace",
        )
        if out.returncode == 0:
            return out.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    da, db = attempt_dir(archive, a), attempt_dir(archive, b)
    if da is None or db is None:
        return ""
    chunks = []
    for name in editable:
        old, new = _read(da / Path(name).name), _read(db / Path(name).name)
        chunks.extend(difflib.unified_diff(
            old.splitlines(), new.splitlines(), f"a/{name}", f"b/{name}", lineterm=""))
    return "\n".join(chunks)


# --------------------------------------------------------------------------- loss curves


def loss_curves(archive: Path, baseline: Row | None, best: Row | None) -> tuple[tuple[Curve, ...], tuple[str, ...]]:
    curves, missing = [], []
    wanted = [("baseline", baseline)]
    if best is not None and (baseline is None or best.commit != baseline.commit):
        wanted.append(("best", best))
    for label, row in wanted:
        if row is None:
            continue
        folder = attempt_dir(archive, row.commit)
        points = read_loss(folder / "metrics.jsonl") if folder else []
        if points:
            curves.append(Curve(label, row.commit, tuple(downsample(points, MAX_CURVE_POINTS))))
        else:
            missing.append(f"{label} ({row.short}): no metrics.jsonl in the archive")
    return tuple(curves), tuple(missing)


def read_loss(path: Path) -> list[tuple[float, float]]:
    points = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return points
    for line in lines:
        try:
            rec = json.loads(line)
            loss = rec.get("train/loss_smooth", rec.get("train/loss"))
            if loss is not None and rec.get("step") is not None:
                points.append((float(rec["step"]), float(loss)))
        except (ValueError, TypeError, AttributeError):
            continue
    return [(s, v) for s, v in points if v == v and abs(v) != float("inf")]


def downsample(points: list[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    """Every k-th point, keeping the last one, so a long run stays a few KB of SVG."""
    if len(points) <= n:
        return points
    k = -(-len(points) // n)
    out = points[::k]
    return out if out[-1] == points[-1] else [*out, points[-1]]


# --------------------------------------------------------------------------- output


def render_report(root: Path, *, live: bool = False, cfg: Config | None = None) -> str:
    """The whole page as a string (`live` adds the dashboard's self-refresh)."""
    from harness.web import page  # the HTML lives apart from the data reading

    return page.render(collect(root, cfg), live=live)


def build_report(root: Path, out_path: Path | None = None) -> Path:
    """Write the report (default `.auto-log-research/report.html`) and return its path."""
    root = Path(root).resolve()
    cfg = load_config(root)
    out = Path(out_path) if out_path else cfg.archive_dir / "report.html"
    atomic.write_text(out, render_report(root, cfg=cfg), fsync=False)
    return out
