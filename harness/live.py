"""What a person watching the loop sees: one line per result, or a live panel on a terminal.

`PlainReporter` writes one line per event that matters (always one per finished experiment), for
logs, pipes and `--quiet`. `LiveReporter` draws a rich.live panel: the experiment and its phase
(agent, guard, training, confirm, analysis, deciding: the value against the best and the verdict),
a bar of the training budget with live loss and tokens/s (tailing the attempt's metrics.jsonl),
the best so far with its noise margin, the last results, and one row per worker. Both swallow
their own errors: a broken view must never stop the research (see harness/events.py).
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from harness.events import Event, Reporter


def _short(commit: object) -> str:
    c = str(commit or "-")
    return c[:7] if c != "-" else "-"


def _num(v: object) -> str:
    return f"{v:g}" if isinstance(v, int | float) else "?"


def _one_line(text: object, limit: int = 100) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def result_line(data: dict[str, Any], metric: str, delta_sign: str = "Δ") -> str:
    """`#007 a1b2c3d keep     val_bpb 1.823400  Δ -0.0123 (margin 0.0040)  MATRIX_LR 0.04 -> 0.05`."""
    row = data["row"]
    parts = [f"#{row.experiment:03d} {_short(row.commit):7} {row.status:8} {metric} "
             + ("-" if row.value is None else f"{row.value:.6f}")]
    if row.delta is not None:
        margin = f" (margin {row.margin:.4f})" if row.margin is not None else ""
        parts.append(f"{delta_sign} {row.delta:+.4f}{margin}")
    parts.append(_one_line(row.description))
    if row.failure:
        parts.append(f"[{_one_line(row.failure, 80)}]")
    worker = data.get("worker")
    if worker not in (None, 0):
        parts.append(f"(worker {worker})")
    return "  ".join(parts)


class PlainReporter:
    """One plain line per event that matters; never raises."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self.metric = "val_bpb"
        enc = getattr(self.stream, "encoding", None) or "utf-8"
        try:
            "Δ…".encode(enc)
            self.delta_sign = "Δ"
        except (UnicodeEncodeError, LookupError):
            self.delta_sign = "d"

    def __call__(self, event: Event) -> None:
        try:
            line = self.line(event)
            if line:
                self.stream.write(line + "\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 - a view must not stop the loop
            pass

    def line(self, event: Event) -> str | None:
        d = event.data
        if event.kind == "loop_start":
            self.metric = d.get("metric") or self.metric
            best = d.get("best_value")
            best_s = "none yet" if best is None else f"{best:.6f} ({_short(d.get('best_commit'))})"
            margin = d.get("margin")
            better = {"min": " (lower is better)", "max": " (higher is better)"}.get(d.get("direction"), "")
            return (f"loop: {d.get('branch', '?')}  best {self.metric} {best_s}{better}"
                    + (f"  margin {margin:.4f}" if margin is not None else "")
                    + f"  budget {_num(d.get('budget'))}s  agent {d.get('agent', '?')}"
                    + (f"  workers {d['workers']}" if d.get("workers", 1) != 1 else ""))
        if event.kind == "experiment":
            worker = d.get("worker")
            return f"#{d.get('experiment', 0):03d} started" + (f" (worker {worker})" if worker not in (None, 0) else "")
        if event.kind == "result":
            return result_line(d, d.get("metric") or self.metric, self.delta_sign)
        if event.kind == "message":
            level = d.get("level", "info")
            return ("" if level == "info" else f"{level}: ") + str(d.get("text", ""))
        if event.kind == "loop_stop":
            best = d.get("best_value")
            best_s = "" if best is None else f"; best {self.metric} {best:.6f} ({_short(d.get('best_commit'))})"
            return (f"stopped: {d.get('reason', '?')}. {d.get('experiments', 0)} experiments, "
                    f"{d.get('kept', 0)} kept{best_s}")
        return None


class MetricsTail:
    """Follows a growing metrics.jsonl, keeping its last complete record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.last: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # rewritten from the start (a new run in the same folder)
                self.offset, self.last = 0, {}
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self.last
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next read
        self.offset += end
        for line in chunk[:end].splitlines()[::-1]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and ("train/loss" in rec or "train/loss_smooth" in rec):
                self.last = rec
                break
        return self.last


@dataclass
class WorkerView:
    experiment: int | None = None
    phase: str = "starting"
    since: float = field(default_factory=time.monotonic)
    budget: float | None = None
    tail: MetricsTail | None = None
    last_line: str = ""
    device: str = ""  # the worker's GPU(s) or threads, "GPU 0" (parallel loops)
    description: str = ""  # the attempt's hypothesis, once the agent has made it
    value: float | None = None  # while deciding: the value being judged
    status: str = ""  # while deciding: the verdict (keep, discard, crash, ...)


class LiveReporter:
    """A rich.live panel; falls back to plain lines if drawing ever fails."""

    def __init__(self, console: Console | None = None, *, recent: int = 5, refresh_per_second: float = 4):
        self.console = console or Console()
        self.metric, self.direction = "val_bpb", "min"
        self.branch, self.agent = "", ""
        self.best: tuple[float, str] | None = None
        self.margin: float | None = None
        self.budget: float | None = None
        self.workers: dict[int, WorkerView] = {}
        self.recent: deque[str] = deque(maxlen=recent)
        self.message = ""
        self.fallback = PlainReporter(self.console.file)
        self.broken = False
        self._refresh = refresh_per_second
        self._lock = threading.RLock()
        self._live: Live | None = None

    # -- events ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if event.kind == "loop_start":
            self.fallback.line(event)  # keeps its metric name in step, for when it takes over
        if self.broken:
            return self.fallback(event)
        try:
            # State changes under our lock; rich.Live is called only outside it. Live's refresh
            # thread holds Live's lock while it asks us to render, so holding both here deadlocks.
            with self._lock:
                lines = self._update(event)
            for line in lines:
                self._print(line)
            if event.kind == "loop_stop":
                self._stop()
                self.fallback(event)
            elif self._live is None:
                self._live = Live(console=self.console, get_renderable=self._safe_render,
                                  refresh_per_second=self._refresh, transient=True)
                self._live.start()
                # A command that never sends loop_stop (`harness run`, a crash) still gets its
                # terminal back (cursor shown, panel cleared) when the process ends.
                atexit.register(self.close)
            else:
                self._live.refresh()
        except Exception:  # noqa: BLE001 - degrade to plain lines, never raise into the loop
            self.broken = True
            self._stop()
            self.fallback(event)

    def _update(self, event: Event) -> list[Text]:
        """Apply one event to the state; returns the lines to print above the panel."""
        d = event.data
        kind = event.kind
        if kind == "loop_start":
            self.metric, self.direction = d.get("metric", self.metric), d.get("direction", self.direction)
            self.branch, self.agent, self.budget = d.get("branch", ""), d.get("agent", ""), d.get("budget")
            self.margin = d.get("margin")
            if d.get("best_value") is not None:
                self.best = (d["best_value"], _short(d.get("best_commit")))
        elif kind == "experiment":
            self.workers[d.get("worker") or 0] = WorkerView(experiment=d.get("experiment"), budget=self.budget,
                                                            device=d.get("device", ""),
                                                            description=d.get("description", ""))
        elif kind == "phase":
            w = self.workers.setdefault(d.get("worker") or 0, WorkerView(budget=self.budget))
            w.experiment, w.phase, w.since = d.get("experiment", w.experiment), d.get("phase", "?"), time.monotonic()
            w.budget = d.get("budget", w.budget)
            w.description = d.get("description", w.description)
            w.value, w.status = d.get("value"), str(d.get("status") or "")
            if d.get("metrics_path"):
                w.tail = MetricsTail(Path(d["metrics_path"]))
        elif kind == "run_line":
            w = self.workers.setdefault(d.get("worker") or 0, WorkerView(budget=self.budget))
            w.last_line = _one_line(d.get("line", ""), 90)
        elif kind == "result":
            self.metric = d.get("metric") or self.metric
            line = result_line(d, self.metric)
            self.recent.append(line)
            if d.get("best_value") is not None and d.get("kept"):
                self.best = (d["best_value"], _short(d["row"].commit))
            self.margin = d.get("margin", self.margin)
            self.workers.pop(d.get("worker") or 0, None)
            return [Text(line, style=_style(d["row"].status))]
        elif kind == "message":
            self.message = str(d.get("text", ""))
            level = d.get("level", "info")
            return [Text(f"{level}: {self.message}", style={"warn": "yellow", "error": "red"}.get(level, ""))]
        return []

    def _print(self, text: Text) -> None:
        """Print above the panel, so finished results stay in the scrollback."""
        (self._live.console if self._live else self.console).print(text)

    def close(self) -> None:
        """Stop drawing (the loop's loop_stop does this too); safe to call more than once."""
        self._stop()
        atexit.unregister(self.close)

    def _stop(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except Exception:  # noqa: BLE001
                pass

    # -- drawing --------------------------------------------------------------------------

    def _safe_render(self) -> RenderableType:
        try:
            with self._lock:
                return self.render()
        except Exception as e:  # noqa: BLE001 - a bad metrics line must not kill the refresh thread
            return Text(f"(live view error: {e})", style="dim")

    def render(self) -> RenderableType:
        head = Text.assemble(("auto-log-research ", "bold"), (self.branch + "  ", "cyan"),
                             f"{self.metric} ({'lower' if self.direction == 'min' else 'higher'} is better)  ")
        if self.best:
            head.append(f"best {self.best[0]:.6f} ", style="bold green")
            head.append(f"{self.best[1]}  ")
        if self.margin is not None:
            head.append(f"noise margin ±{self.margin:.4f}  ", style="dim")
        if self.agent:
            head.append(f"agent {self.agent}", style="dim")
        grid = Table.grid(padding=(0, 1))
        for _ in range(6):
            grid.add_column()
        for worker, w in sorted(self.workers.items()):
            grid.add_row(*self._worker_row(worker, w))
        parts: list[RenderableType] = [head, grid]
        if self.recent:
            parts.append(Text("recent:", style="dim"))
            parts.extend(Text("  " + line, style=_style(line.split()[2] if len(line.split()) > 2 else ""))
                         for line in self.recent)
        return Group(*parts)

    def _worker_row(self, worker: int, w: WorkerView) -> list[RenderableType]:
        label = f"#{w.experiment:03d}" if w.experiment is not None else "#---"
        if len(self.workers) > 1 or w.device:
            label = f"w{worker}{f' [{w.device}]' if w.device else ''} {label}"
        elapsed = time.monotonic() - w.since
        if w.phase == "deciding":
            return [Text(label, style="bold"), Text(w.phase, style="magenta"), Text(f"{elapsed:4.0f}s"),
                    Text(""), _verdict_text(self.metric, w.value, self.best, w.status), Text("")]
        if w.phase not in ("training", "confirm"):
            return [Text(label, style="bold"), Text(w.phase, style="magenta"), Text(f"{elapsed:4.0f}s"),
                    Text(""), Text(""), Text(w.last_line or _one_line(w.description, 80), style="dim")]
        rec = w.tail.read() if w.tail else {}
        seconds = rec.get("time/training_seconds")
        progress = rec.get("train/progress")
        if progress is None and w.budget:
            progress = (seconds if seconds is not None else elapsed) / w.budget
        progress = min(max(float(progress or 0.0), 0.0), 1.0)
        loss = rec.get("train/loss_smooth", rec.get("train/loss"))
        tps = rec.get("perf/tokens_per_sec")
        stats = "  ".join(s for s in (
            f"{seconds:.0f}/{w.budget:.0f}s" if seconds is not None and w.budget else "",
            f"loss {loss:.4f}" if isinstance(loss, int | float) else "",
            f"{tps:,.0f} tok/s" if isinstance(tps, int | float) else "",
            f"step {rec['step']}" if "step" in rec else "",
        ) if s)
        return [Text(label, style="bold"), Text(w.phase, style="magenta"),
                ProgressBar(total=1.0, completed=progress, width=30, complete_style="green"), Text(f"{progress:4.0%}"),
                Text(stats), Text(_one_line(w.description, 60), style="dim")]


def _verdict_text(metric: str, value: object, best: tuple[float, str] | None, status: str) -> Text:
    """`val_bpb 1.823400 vs best 1.835700 -> keep`, for the deciding phase."""
    shown = f"{metric} {value:.6f}" if isinstance(value, int | float) else f"{metric} -"
    if best is not None:
        shown += f" vs best {best[0]:.6f}"
    text = Text(shown)
    if status:
        text.append(f" -> {status}", style=_style(status) or "bold")
    return text


def _style(status: str) -> str:
    return {"keep": "green", "baseline": "blue", "crash": "red", "invalid": "red", "violation": "magenta",
            "infra": "yellow", "agent_error": "yellow"}.get(status, "")


def make_reporter(quiet: bool = False, stream: IO[str] | None = None) -> Reporter:
    """The live panel on a terminal, plain lines otherwise (or with --quiet)."""
    stream = stream or sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if quiet or not tty:
        return PlainReporter(stream)
    return LiveReporter(Console(file=stream))
