"""Post-run analysis: read what a run left behind (metrics.jsonl, run.log, run_summary.json), work
out what happened to it, compare it with the best and the previous run, and write analysis.md,
analysis.json and plots into its folder. Bad run data never raises: what is readable is used.

Parts of it live next door: reading a run's files in harness/run_files.py, classifying a failure
in harness/failures.py, writing analysis.md/analysis.json in harness/analysis_md.py. The reading
and failure functions stay importable from here (lab.py and the tests import them so).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.failures import FAILURE_KINDS as FAILURE_KINDS
from harness.failures import RaisedError as RaisedError
from harness.failures import classify_failure as classify_failure
from harness.failures import failure_summary
from harness.failures import last_exception as last_exception
from harness.run_files import load_metrics, parse_summary, read_json, read_tail

T = TypeVar("T")

# --- thresholds (documented once, used below) -----------------------------------------------
SPIKE_K = 6.0  # a spike: raw loss above its local trend by more than k robust standard deviations
TAIL_FRACTION = 0.2  # the end slope is fitted over this last share of the steps
IMPROVING_T = 3.0  # "still improving": end slope at least this many standard errors below 0 ...
IMPROVING_MIN_DROP = 0.005  # ... and the fitted line falls at least this much over the tail
DIVERGE_RATIO = 1.3  # diverged: final smoothed loss above 1.3x its minimum ...
DIVERGE_MIN_RISE = 0.3  # ... and at least 0.3 (nats) above it
PART_THRESHOLD = 0.02  # two loss curves "part" once their gap stays beyond this (nats) ...
PART_BINS = 100  # ... compared as means over this many bins of the shared x range
NO_OVERLAP = "none"  # the parting axis when two runs share no stretch of loss curve
CODE_DIFF_MAX_LINES = 300


# --- curves ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Curve:
    """The per-step series of one run as float arrays (NaN where a value is missing)."""

    step: np.ndarray
    seconds: np.ndarray
    progress: np.ndarray
    loss: np.ndarray
    smooth: np.ndarray
    lr: np.ndarray
    momentum: np.ndarray
    weight_decay: np.ndarray
    step_ms: np.ndarray
    tokens_per_sec: np.ndarray
    mfu: np.ndarray
    val_bpb: float | None = None

    def __len__(self) -> int:
        return len(self.loss)

    @classmethod
    def from_records(cls, records: list[dict]) -> Curve:
        train = [r for r in records if "train/loss" in r]
        col = lambda key: np.array([_num(r.get(key)) for r in train], dtype=float)  # noqa: E731
        loss, smooth = col("train/loss"), col("train/loss_smooth")
        if not np.isfinite(smooth).any():
            smooth = ema(loss)
        vals = [_num(r.get("val/bpb")) for r in records if "val/bpb" in r]
        return cls(
            step=col("step"), seconds=col("time/training_seconds"), progress=col("train/progress"),
            loss=loss, smooth=smooth, lr=col("train/lr_multiplier"), momentum=col("train/momentum"),
            weight_decay=col("train/weight_decay"), step_ms=col("perf/step_time_ms"),
            tokens_per_sec=col("perf/tokens_per_sec"), mfu=col("perf/mfu_percent"),
            val_bpb=vals[-1] if vals else None,
        )

    def axis(self, other: Curve | None = None) -> tuple[str, np.ndarray]:
        """The x axis to align on: training seconds, else budget progress, else step."""
        for name, attr in (("seconds", "seconds"), ("progress", "progress"), ("step", "step")):
            mine = getattr(self, attr)
            if np.isfinite(mine).any() and (other is None or np.isfinite(getattr(other, attr)).any()):
                return name, mine
        return "index", np.arange(len(self), dtype=float)


HUGE = 1e15  # beyond this a logged number is garbage (or an overflow): treated as infinite


def _num(value: Any) -> float:
    """A logged value as a float: NaN when missing or not a number; +-inf when absurdly large,
    so downstream arithmetic (bins, plot limits) never overflows."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        v = float(value) if isinstance(value, int | float | str) else math.nan
    except (ValueError, OverflowError):
        return math.nan
    return math.copysign(math.inf, v) if abs(v) > HUGE else v


def ema(values: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (as train.py's train/loss_smooth)."""
    out = np.empty_like(values, dtype=float)
    acc = 0.0
    for i, v in enumerate(values.tolist()):  # Python floats: inf/nan arithmetic without warnings
        acc = beta * acc + (1 - beta) * v
        out[i] = acc / (1 - beta ** (i + 1))
    return out


def load_curve(run_dir: str | Path) -> Curve:
    """The curve of a run folder (cached on the file's size and mtime: plots reuse it)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
    except OSError:
        key = (0, -1)
    return _curve_cached(str(path), key)


@lru_cache(maxsize=8)
def _curve_cached(path: str, _key: tuple[int, int]) -> Curve:
    return Curve.from_records(load_metrics(path))


# --- trajectory statistics ------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    steps: int = 0
    tokens: float | None = None  # estimated from tokens/s x step time
    training_seconds: float | None = None
    first_loss: float | None = None  # smoothed
    min_loss: float | None = None
    min_loss_step: float | None = None
    final_loss: float | None = None
    slope_per_1k_steps: float | None = None  # of the raw loss, fitted over the last TAIL_FRACTION
    slope_per_minute: float | None = None
    still_improving: bool = False
    spike_steps: tuple[float, ...] = ()
    diverged: bool = False
    nonfinite_losses: int = 0
    tokens_per_sec: float | None = None  # median
    step_ms: float | None = None  # median
    mfu_percent: float | None = None  # mean
    val_bpb: float | None = None  # the final `val/bpb` line of metrics.jsonl


def trajectory(curve: Curve, *, spike_k: float = SPIKE_K, tail: float = TAIL_FRACTION) -> Trajectory:
    n = len(curve)
    if n == 0:
        return Trajectory(val_bpb=curve.val_bpb)
    steps = np.where(np.isfinite(curve.step), curve.step, np.arange(n, dtype=float))
    ok = np.isfinite(curve.smooth)
    smooth, at = curve.smooth[ok], steps[ok]
    first = final = low = low_step = None
    if smooth.size:
        i_min = int(np.argmin(smooth))
        first, final, low, low_step = float(smooth[0]), float(smooth[-1]), float(smooth[i_min]), float(at[i_min])
    nonfinite = int((~np.isfinite(curve.loss)).sum())
    tail_n = max(5, math.ceil(tail * n))
    slope_k, se_k, drop = _fit(steps[-tail_n:], curve.loss[-tail_n:])
    slope_s, _, _ = _fit(curve.seconds[-tail_n:], curve.loss[-tail_n:])
    warm = min(5, n // 10)  # the first steps include compilation and warm-up
    seconds = curve.seconds[np.isfinite(curve.seconds)]
    return Trajectory(
        steps=n,
        tokens=_finite_sum(curve.tokens_per_sec * curve.step_ms / 1000.0),
        training_seconds=float(seconds[-1]) if seconds.size else None,
        first_loss=first, min_loss=low, min_loss_step=low_step, final_loss=final,
        slope_per_1k_steps=None if slope_k is None else slope_k * 1000.0,
        slope_per_minute=None if slope_s is None else slope_s * 60.0,
        still_improving=bool(
            slope_k is not None and se_k is not None and slope_k < -IMPROVING_T * se_k and drop >= IMPROVING_MIN_DROP
        ),
        spike_steps=tuple(float(steps[i]) for i in find_spikes(curve.loss, k=spike_k)),
        diverged=bool(
            nonfinite > 0
            or (final is not None and low is not None and final > DIVERGE_RATIO * low and final - low > DIVERGE_MIN_RISE)
        ),
        nonfinite_losses=nonfinite,
        tokens_per_sec=_finite_stat(np.median, curve.tokens_per_sec[warm:]),
        step_ms=_finite_stat(np.median, curve.step_ms[warm:]),
        mfu_percent=_finite_stat(np.mean, curve.mfu[warm:]),
        val_bpb=curve.val_bpb,
    )


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, float]:
    """Least-squares slope, its standard error, and how much the line falls across x."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 5 or np.ptp(x) == 0:
        return None, None, 0.0
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * xc
    se = math.sqrt(float(resid @ resid) / (x.size - 2) / sxx)
    return slope, se, -slope * float(np.ptp(x))


def find_spikes(loss: np.ndarray, *, k: float = SPIKE_K) -> list[int]:
    """Indices where the raw loss jumps above its local trend by more than k robust standard
    deviations; a run of consecutive spiking steps counts once.

    The trend is the mean of the neighbours (the step itself left out). A rolling median would
    be more robust to the spike but, where the loss falls steeply, it returns the point itself,
    so every residual there is zero and ordinary noise looks like a spike.
    """
    idx = np.flatnonzero(np.isfinite(loss))
    if idx.size < 20:
        return []
    y = loss[idx]
    window = int(np.clip((y.size // 100) * 2 + 1, 11, 51))
    resid = y - _neighbour_mean(y, window)
    global_sigma = 1.4826 * float(np.median(np.abs(resid)))
    local_sigma = 1.4826 * _rolling_median(np.abs(resid), 2 * window + 1)
    sigma = np.maximum(local_sigma, max(0.5 * global_sigma, 1e-8))
    hits = resid > k * sigma
    half = window // 2
    hits[:half] = hits[-half:] = False  # a jump needs neighbours on both sides to be judged
    starts = np.flatnonzero(hits & ~np.concatenate(([False], hits[:-1])))
    return [int(idx[i]) for i in starts]


def _neighbour_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean without the centre point; edges padded with the end values (which
    biases the trend away from the curve's direction, so no false spikes at the ends)."""
    half = window // 2
    sums = np.concatenate(([0.0], np.cumsum(np.pad(y, (half, half), mode="edge"))))
    return (sums[window:] - sums[:-window] - y) / (window - 1)


def _rolling_median(y: np.ndarray, window: int) -> np.ndarray:
    half = window // 2
    padded = np.pad(y, (half, half), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def _finite_stat(fn: Any, values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def _finite_sum(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.sum()) if values.size else None


# --- comparisons ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """This run against another (the best, or the previous attempt). Deltas are this - other."""

    other: str  # the other run's folder name (its commit)
    other_value: float | None = None
    value_delta: float | None = None
    final_loss_delta: float | None = None
    tokens_per_sec_ratio: float | None = None
    axis: str = "seconds"  # what `parted_at` is measured in
    parted_at: float | None = None  # where the smoothed curves part for good (None: they never do)
    ahead: str | None = None  # "this" or "other": lower smoothed loss after parting


def compare(
    this: Curve, this_traj: Trajectory, this_value: float | None,
    other: Curve, other_traj: Trajectory, other_value: float | None, other_name: str,
    *, threshold: float = PART_THRESHOLD,
) -> Comparison:
    axis, parted, ahead = parting_point(this, other, threshold=threshold)
    return Comparison(
        other=other_name,
        other_value=other_value,
        value_delta=_delta(this_value, other_value),
        final_loss_delta=_delta(this_traj.final_loss, other_traj.final_loss),
        tokens_per_sec_ratio=_ratio(this_traj.tokens_per_sec, other_traj.tokens_per_sec),
        axis=axis, parted_at=parted, ahead=ahead,
    )


def parting_point(this: Curve, other: Curve, *, threshold: float = PART_THRESHOLD) -> tuple[str, float | None, str | None]:
    """(axis, x, leader): the first x on the common axis after which the gap between the two
    loss curves stays beyond `threshold` with one sign; x is None if they never part, and axis
    is NO_OVERLAP when there is nothing to compare.

    The curves are compared as raw-loss means over PART_BINS equal bins of the shared x range:
    an EMA is still too noisy step to step for "stays beyond" to mean anything.
    """
    axis, x = this.axis(other)
    ox = np.arange(len(other), dtype=float) if axis == "index" else other.axis(this)[1]
    a, b = np.isfinite(x) & np.isfinite(this.loss), np.isfinite(ox) & np.isfinite(other.loss)
    if a.sum() < 2 or b.sum() < 2:
        return NO_OVERLAP, None, None
    lo, hi = max(x[a].min(), ox[b].min()), min(x[a].max(), ox[b].max())
    mine, theirs = _bin_means(x[a], this.loss[a], lo, hi), _bin_means(ox[b], other.loss[b], lo, hi)
    both = np.isfinite(mine) & np.isfinite(theirs)
    if hi <= lo or both.sum() < 2:
        return NO_OVERLAP, None, None
    centres = (lo + (np.arange(PART_BINS) + 0.5) * (hi - lo) / PART_BINS)[both]
    gap = mine[both] - theirs[both]
    if gap.size >= 5:  # one noisy bin should not undo a parting
        gap = _rolling_median(gap, 5)
    sign = 1.0 if gap[-1] > 0 else -1.0
    apart = gap * sign > threshold
    if not apart[-1]:
        return axis, None, None
    close = np.flatnonzero(~apart)
    first = int(close[-1]) + 1 if close.size else 0
    return axis, float(centres[first]), "other" if sign > 0 else "this"


def _bin_means(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Mean of y in each of PART_BINS equal bins of [lo, hi] (NaN where a bin is empty)."""
    inside = (x >= lo) & (x <= hi)
    if hi <= lo or not inside.any():
        return np.full(PART_BINS, np.nan)
    index = np.minimum(((x[inside] - lo) / (hi - lo) * PART_BINS).astype(int), PART_BINS - 1)
    counts = np.bincount(index, minlength=PART_BINS)
    sums = np.bincount(index, weights=y[inside], minlength=PART_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _delta(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class ConfigChange:
    knob: str
    best: Any
    this: Any


def config_diff(best: dict, this: dict) -> tuple[ConfigChange, ...]:
    """Knobs whose value differs between two run_summary.json "config" dicts (missing: None)."""
    keys = list(dict.fromkeys([*best, *this]))
    return tuple(ConfigChange(k, best.get(k), this.get(k)) for k in keys if best.get(k) != this.get(k))


def code_diff(best_file: Path, this_file: Path) -> str | None:
    """Unified diff of two train.py snapshots: "" if identical, None if either is missing."""
    try:
        old = best_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        new = this_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    except OSError:
        return None
    lines = list(difflib.unified_diff(old, new, f"best/{best_file.name}", f"this/{this_file.name}", n=2))
    if not lines:
        return ""
    if len(lines) > CODE_DIFF_MAX_LINES:
        lines = [*lines[:CODE_DIFF_MAX_LINES], f"... ({len(lines) - CODE_DIFF_MAX_LINES} more lines)\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- the whole analysis of one run ----------------------------------------------------------
@dataclass(frozen=True)
class Analysis:
    run: str  # the run folder's name (its commit)
    run_dir: str
    metric: str = "val_bpb"
    direction: str = "min"
    value: float | None = None
    status: str | None = None
    failure: str | None = None  # failure_summary() line; None when the run succeeded
    summary: dict[str, float | str] = field(default_factory=dict)  # the run.log summary
    trajectory: Trajectory = field(default_factory=Trajectory)
    vs_best: Comparison | None = None
    vs_prev: Comparison | None = None
    config_changes: tuple[ConfigChange, ...] | None = None  # vs the best; None: not compared
    code_diff: str | None = None  # train.py, best -> this; "" identical, None: not compared
    observations: tuple[str, ...] = ()  # short readings for the next prompt
    problems: tuple[str, ...] = ()  # what could not be read or drawn
    plots: tuple[str, ...] = ()  # PNG file names inside run_dir
    elapsed_s: float = 0.0

    @property
    def tokens(self) -> float | None:
        """Tokens trained on: the summary's total_tokens_M, else the count from metrics.jsonl."""
        total = _num(self.summary.get("total_tokens_M"))
        return total * 1e6 if math.isfinite(total) else self.trajectory.tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become None)."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj if isinstance(obj, str | int | float | bool | type(None)) else str(obj)


@dataclass(frozen=True)
class _Run:
    """What analysis reads from one run folder."""

    name: str
    curve: Curve
    trajectory: Trajectory
    summary: dict[str, float | str]
    run_summary: dict
    log_tail: str

    def value(self, metric: str) -> float | None:
        for source in (self.summary, self.run_summary.get("results") or {}):
            v = _num(source.get(metric)) if isinstance(source, dict) else math.nan
            if math.isfinite(v):
                return v
        if metric == "val_bpb" and self.curve.val_bpb is not None and math.isfinite(self.curve.val_bpb):
            return self.curve.val_bpb
        return None

    @property
    def config(self) -> dict:
        config = self.run_summary.get("config")
        return config if isinstance(config, dict) else {}


def _read_run(run_dir: Path, problems: list[str]) -> _Run:
    curve = load_curve(run_dir)
    log_tail = read_tail(run_dir / "run.log")
    return _Run(
        name=run_dir.name, curve=curve, summary=parse_summary(log_tail),
        trajectory=_guarded(lambda: trajectory(curve), Trajectory(), problems, f"statistics of {run_dir.name}"),
        run_summary=read_json(run_dir / "run_summary.json"), log_tail=log_tail,
    )


def _guarded(compute: Callable[[], T], fallback: T, problems: list[str], what: str) -> T:
    """The safety net under "bad run data never raises": data shapes nobody foresaw cost one
    section of the analysis, not the analysis."""
    try:
        with np.errstate(all="ignore"):
            return compute()
    except Exception as e:  # noqa: BLE001 - recorded in the analysis, not swallowed
        problems.append(f"{what} failed: {type(e).__name__}: {e}")
        return fallback


def analyze_run(
    run_dir: str | Path,
    *,
    best_dir: str | Path | None = None,
    prev_dir: str | Path | None = None,
    metric: str = "val_bpb",
    direction: str = "min",
    value: float | None = None,
    status: str | None = None,
    failure: str | None = None,
    plots: bool = True,
    code_file: str = "train.py",
) -> Analysis:
    """Analyse one run folder; write analysis.md, analysis.json and (if `plots`) PNGs into it.

    `value`, `status` and `failure` are what the harness decided (it trusts only a receipted
    value); without a status, the value and any failure are read from the folder. Bad or missing run data never raises: what
    could not be read is listed under `problems`. Only failing to write into run_dir raises.
    `code_file` is the (first) editable file, whose snapshots in the run folders are diffed.
    """
    started = time.perf_counter()
    run_path = Path(run_dir)
    failure = failure or None  # the harness passes "" for "no failure"
    problems: list[str] = []
    this = _read_run(run_path, problems)
    others = {}
    for label, other_dir in (("best", best_dir), ("previous", prev_dir)):
        if other_dir is not None and Path(other_dir).resolve() != run_path.resolve():
            others[label] = _read_run(Path(other_dir), problems)
    if value is None and status is None:  # the harness's None is a verdict (e.g. untrusted): keep it
        value = this.value(metric)
    if failure is None and (status == "crash" or (status is None and value is None)):
        failure = failure_summary(this.log_tail, None, False, False, None) or (
            "no_summary: no metric value found" if value is None else None
        )
    _note_data_problems(run_path, this, problems)
    comparisons = {
        label: _guarded(
            lambda o=o: compare(this.curve, this.trajectory, value, o.curve, o.trajectory, o.value(metric), o.name),
            None, problems, f"comparison with {label}",
        )
        for label, o in others.items()
    }
    best = others.get("best")
    changes: tuple[ConfigChange, ...] | None = None
    if best and best.config and this.config:  # a missing config is not "every knob removed"
        changes = _guarded(lambda: config_diff(best.config, this.config), None, problems, "config diff")
    diff = code_diff(Path(best_dir) / code_file, run_path / code_file) if best and best_dir else None
    pngs: tuple[str, ...] = ()
    if plots:
        try:
            from harness.plots import plot_run

            pngs = tuple(p.name for p in plot_run(run_path, best_dir, prev_dir))
        except Exception as e:  # a plot is a nicety: never lose the analysis over it
            problems.append(f"plots failed: {type(e).__name__}: {e}")
    analysis = Analysis(
        run=this.name, run_dir=str(run_path), metric=metric, direction=direction, value=value,
        status=status, failure=failure, summary=this.summary, trajectory=this.trajectory,
        vs_best=comparisons.get("best"), vs_prev=comparisons.get("previous"),
        config_changes=changes, code_diff=diff,
        observations=tuple(observe(this.trajectory, comparisons.get("best"), direction)),
        problems=tuple(problems), plots=pngs,
    )
    analysis = dataclasses.replace(analysis, elapsed_s=round(time.perf_counter() - started, 4))
    from harness.analysis_md import write_analysis  # here: analysis_md imports this module

    write_analysis(analysis, run_path, log_tail=this.log_tail)
    return analysis


def _note_data_problems(run_dir: Path, run: _Run, problems: list[str]) -> None:
    if not (run_dir / "metrics.jsonl").is_file():
        problems.append("no metrics.jsonl")
    elif len(run.curve) == 0:
        problems.append("metrics.jsonl has no readable training steps")
    if not (run_dir / "run.log").is_file():
        problems.append("no run.log")
    if not (run_dir / "run_summary.json").is_file():
        problems.append("no run_summary.json")
    elif not run.run_summary:
        problems.append("run_summary.json is not a readable JSON object")


def observe(t: Trajectory, vs_best: Comparison | None, direction: str) -> list[str]:
    """Plain readings of a trajectory, for the agent deciding what to try next."""
    out = []
    if t.diverged:
        out.append("the loss diverged (non-finite or rose far above its minimum): lower the LR or add warm-up/clipping")
    elif t.still_improving and t.slope_per_minute is not None:
        out.append(
            f"the loss was still falling at the end ({t.slope_per_minute:+.4f}/min): the run is budget-bound, "
            "so more steps per second (or a faster schedule) should pay"
        )
    elif t.steps and t.slope_per_1k_steps is not None:
        out.append("the loss had flattened by the end: more steps alone are unlikely to help much")
    if t.spike_steps:
        shown = ", ".join(f"{s:g}" for s in t.spike_steps[:8])
        out.append(f"{len(t.spike_steps)} loss spike(s) at step {shown}: a sign of too high an LR or too little warm-up")
    if vs_best and vs_best.tokens_per_sec_ratio and abs(vs_best.tokens_per_sec_ratio - 1) >= 0.05:
        r = vs_best.tokens_per_sec_ratio
        out.append(f"throughput is {r:.2f}x the best run's ({'faster' if r > 1 else 'slower'})")
    if vs_best and vs_best.parted_at is not None:
        who = "this run" if vs_best.ahead == "this" else "the best run"
        out.append(f"the smoothed loss parts from the best run's at {fmt_axis(vs_best.axis, vs_best.parted_at)}, {who} ahead")
    return out


def fmt_axis(axis: str, x: float | None) -> str:
    """A point on a comparison's axis, for people: `12.3 s`, `40% of the budget`, `step 500`."""
    if x is None:
        return "n/a"
    return {"seconds": f"{x:.1f} s", "progress": f"{x:.0%} of the budget", "step": f"step {x:g}"}.get(axis, f"{x:g}")
