"""PNG plots of one run (loss, schedule, perf) and of the whole research (progress.png).

matplotlib is imported inside the functions: importing it costs about half a second, which a
command that draws nothing should not pay. Figures are built with the Agg canvas directly (no
pyplot), so no global figure registry grows and nothing needs closing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import atomic
from harness.analysis import Curve, load_curve
from harness.ledger import KEPT

NO_RESULT = ("crash", "no_change", "invalid", "violation", "agent_error", "infra")  # as harness.ledger reads them
MAX_POINTS = 800  # per line: more adds drawing time, not information, at this size
DPI = 100
WIDTH = 7.0
STYLES = {"this": dict(color="C0", lw=1.6), "best": dict(color="C2", lw=1.2, ls="--"), "previous": dict(color="C7", lw=1.0, ls=":")}


def plot_run(
    run_dir: str | Path, best_dir: str | Path | None = None, prev_dir: str | Path | None = None
) -> list[Path]:
    """Write loss.png, schedule.png and perf.png into run_dir; returns the paths written (none
    when the run recorded no training steps)."""
    run_dir = Path(run_dir)
    curves: dict[str, tuple[str, Curve]] = {"this": (run_dir.name, load_curve(run_dir))}
    for label, other in (("best", best_dir), ("previous", prev_dir)):
        if other is not None and Path(other).resolve() != run_dir.resolve():
            curves[label] = (Path(other).name, load_curve(other))
    if len(curves["this"][1]) == 0:
        return []
    return [
        _plot_loss(curves, run_dir / "loss.png"),
        _plot_schedule(curves, run_dir / "schedule.png"),
        _plot_perf(curves, run_dir / "perf.png"),
    ]


def _plot_loss(curves: dict[str, tuple[str, Curve]], path: Path) -> Path:
    fig, (ax,) = _figure(1, 3.6)
    axis = _common_axis(c for _, c in curves.values())
    shown: list[np.ndarray] = []
    for label, (name, curve) in curves.items():
        x, y = _xy(_axis_values(curve, axis), curve.smooth)
        if x.size:
            ax.plot(x, y, label=f"{label} ({name[:10]})", **STYLES[label])
            shown.append(y[x >= x[0] + 0.1 * (x[-1] - x[0])])  # skip the steep start for the y range
    _clip_y(ax, shown)
    ax.set_xlabel(_AXIS_LABELS[axis])
    ax.set_ylabel("train loss (smoothed)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _plot_schedule(curves: dict[str, tuple[str, Curve]], path: Path) -> Path:
    fig, axes = _figure(3, 5.0)
    pair = {k: v for k, v in curves.items() if k in ("this", "best")}
    axis = _common_axis((c for _, c in pair.values()), prefer=("progress", "seconds", "step"))
    for ax, attr, title in zip(axes, ("lr", "momentum", "weight_decay"), ("LR multiplier", "momentum", "weight decay"), strict=True):
        for label, (_, curve) in pair.items():
            x, y = _xy(_axis_values(curve, axis), getattr(curve, attr))
            if x.size:
                ax.plot(x, y, label=label, **STYLES[label])
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    _legend(axes[0])
    axes[-1].set_xlabel(_AXIS_LABELS[axis])
    return _save(fig, path)


def _plot_perf(curves: dict[str, tuple[str, Curve]], path: Path) -> Path:
    fig, axes = _figure(2, 4.2)
    pair = {k: v for k, v in curves.items() if k in ("this", "best")}
    axis = _common_axis(c for _, c in pair.values())
    for ax, attr, title in zip(axes, ("step_ms", "mfu"), ("step time (ms)", "MFU (%)"), strict=True):
        shown = []
        for label, (_, curve) in pair.items():
            x, y = _xy(_axis_values(curve, axis), getattr(curve, attr))
            if x.size:
                ax.plot(x, y, label=label, **STYLES[label])
                shown.append(y[min(5, y.size // 10) :])  # warm-up steps would flatten the rest
        _clip_y(ax, shown, low_q=0.0, high_q=99.0)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    _legend(axes[0])
    axes[-1].set_xlabel(_AXIS_LABELS[axis])
    return _save(fig, path)


def plot_progress(
    rows: Sequence[dict[str, Any]],
    out_path: str | Path,
    *,
    metric: str = "val_bpb",
    direction: str = "min",
    noise_margin: float | None = None,
) -> Path:
    """progress.png: the value of every experiment, kept ones marked and labelled, the running
    best, a band of +-noise_margin around it, and crashes as markers along the bottom."""
    fig, (ax,) = _figure(1, 4.2, width=9.0)
    points = progress_points(rows, metric)
    ran = [p for p in points if p["value"] is not None]
    kept = [p for p in ran if p["status"] in KEPT]
    others = [p for p in ran if p["status"] not in KEPT]
    crashed = [p for p in points if p["value"] is None and p["status"] == "crash"]
    if others:
        ax.scatter([p["x"] for p in others], [p["value"] for p in others], s=14, color="0.6", label="discarded", zorder=2)
    if kept:
        ax.scatter([p["x"] for p in kept], [p["value"] for p in kept], s=36, color="C2", edgecolor="k", lw=0.5, label="kept", zorder=3)
        right = max(p["x"] for p in points)
        span = right - min(p["x"] for p in points) or 1.0
        for p in kept:  # near the right edge a label runs up and to the left, or it is cut off
            leftward = right - p["x"] < 0.2 * span and len(points) > 1
            ax.annotate(_short(p["description"]), (p["x"], p["value"]), xytext=(-3 if leftward else 3, 4),
                        textcoords="offset points", fontsize=6.5, rotation=-18 if leftward else 18,
                        ha="right" if leftward else "left", rotation_mode="anchor")
        xs, best = _running_best(kept, points, direction)
        ax.step(xs, best, where="post", color="C2", lw=1.2, label="running best")
        if noise_margin:
            ax.fill_between(xs, best - noise_margin, best + noise_margin, step="post", color="C2", alpha=0.15, lw=0, label=f"best ± noise ({noise_margin:g})")
    values = [p["value"] for p in ran]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.01 or 0.01
        ax.set_ylim(lo - pad * (3 if crashed else 1), hi + pad * 2)
    if crashed:
        bottom = ax.get_ylim()[0]
        ax.scatter([p["x"] for p in crashed], [bottom] * len(crashed), marker="x", color="C3", s=30, clip_on=False, label="crash", zorder=4)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(10, integer=True))  # experiments are numbered
    ax.set_xlabel("experiment")
    ax.set_ylabel(f"{metric} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.grid(alpha=0.3)
    if points:
        _legend(ax, loc="upper right" if direction == "min" else "lower right")
    else:
        ax.text(0.5, 0.5, "no experiments yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, Path(out_path))


def progress_points(rows: Sequence[dict[str, Any]], metric: str = "val_bpb") -> list[dict[str, Any]]:
    """What progress.png draws: {x, value, status, description} per row; value None means a
    crash or no result (a cross along the bottom for crashes), and a real 0.0 stays 0.0."""
    return [_progress_point(i, row, metric) for i, row in enumerate(rows)]


def _progress_point(index: int, row: dict[str, Any], metric: str) -> dict[str, Any]:
    status = str(row.get("status") or "").strip()
    value = _float(row["value"] if "value" in row else row.get(metric))  # a raw ledger row names it
    runs = row.get("runs")
    if status == "crash" or (status in NO_RESULT and (not runs or runs == "-")):
        value = None  # the ledger writes 0.000000 where there is no result; a real 0.0 is drawn
    x = _float(row.get("experiment"))
    return {"x": x if x is not None else float(index), "value": value, "status": status,
            "description": str(row.get("description") or "")}


def _running_best(kept: list[dict], points: list[dict], direction: str) -> tuple[np.ndarray, np.ndarray]:
    """The best kept value so far, from the first kept point to the last experiment."""
    better = min if direction == "min" else max
    xs, best, current = [], [], None
    for p in sorted(kept, key=lambda p: p["x"]):
        current = p["value"] if current is None else better(current, p["value"])
        xs.append(p["x"])
        best.append(current)
    last_x = max(p["x"] for p in points)
    if last_x > xs[-1]:
        xs.append(last_x)
        best.append(best[-1])
    return np.array(xs, dtype=float), np.array(best, dtype=float)


def _short(text: str, limit: int = 32) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --- helpers --------------------------------------------------------------------------------
_AXIS_LABELS = {"seconds": "training seconds", "progress": "progress of the budget", "step": "step", "index": "record"}


def _common_axis(curves: Iterable[Curve], prefer: tuple[str, ...] = ("seconds", "progress", "step")) -> str:
    curves = [c for c in curves if len(c)]
    for axis in prefer:
        if curves and all(np.isfinite(getattr(c, axis)).any() for c in curves):
            return axis
    return "index"


def _axis_values(curve: Curve, axis: str) -> np.ndarray:
    return np.arange(len(curve), dtype=float) if axis == "index" else getattr(curve, axis)


def _xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite points only, thinned to at most MAX_POINTS (the last point always kept)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size > MAX_POINTS:
        keep = np.unique(np.append(np.linspace(0, x.size - 1, MAX_POINTS).astype(int), x.size - 1))
        x, y = x[keep], y[keep]
    return x, y


def _clip_y(ax: Any, shown: list[np.ndarray], *, low_q: float = 0.0, high_q: float = 100.0) -> None:
    values = np.concatenate([s for s in shown if s.size]) if any(s.size for s in shown) else np.array([])
    if values.size < 2:
        return
    lo, hi = np.percentile(values, [low_q, high_q])
    if hi > lo:
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend only warns
        ax.legend(fontsize=8, **kw)


def _figure(rows: int, height: float, *, width: float = WIDTH) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:  # every tick is a few artists to lay out: few ticks draw much faster
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.yaxis.set_major_locator(MaxNLocator(5 if rows == 1 else 3))
        ax.ticklabel_format(axis="y", useOffset=False)  # "1.8234", not "+1.8" and "0.0034"
    # Margins in inches (not fractions), so labels fit at every figure height.
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.15 / width, top=1 - 0.12 / height, bottom=0.5 / height, hspace=0.12)
    return fig, list(axes)


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib time matters more than bytes here
    atomic.write_bytes(path, buffer.getvalue(), fsync=False)  # a lost plot is redrawn next time
    return path
