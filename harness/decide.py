"""Keep, discard or crash: decisions that run-to-run noise cannot fool.

The noise floor is the pooled standard deviation of repeated runs of one commit (the baseline's
runs, then every confirmation pair). A change is kept only if its mean beats the best's mean by
more than margin = max(min_delta, z * sigma).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from harness.config import Noise, Target
from harness.ledger import Row


@dataclass(frozen=True)
class NoiseFloor:
    sigma: float | None  # pooled run-to-run standard deviation; None if never measured
    dof: int  # degrees of freedom behind sigma
    margin: float  # the improvement needed to keep a change

    def describe(self) -> str:
        if self.sigma is None:
            return f"margin {self.margin:.4f} (min_delta; noise not measured yet)"
        return f"margin {self.margin:.4f} (sigma {self.sigma:.4f} from {self.dof} dof)"


def pooled_sigma(groups: Iterable[tuple[float, ...]]) -> tuple[float | None, int]:
    """Pooled standard deviation of several groups of repeated measurements."""
    ss, dof = 0.0, 0
    for runs in groups:
        finite = [v for v in runs if math.isfinite(v)]
        if len(finite) < 2:
            continue
        mean = sum(finite) / len(finite)
        ss += sum((v - mean) ** 2 for v in finite)
        dof += len(finite) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def noise_floor(rows: Iterable[Row], noise: Noise) -> NoiseFloor:
    sigma, dof = pooled_sigma(r.runs for r in rows if len(r.runs) >= 2)
    margin = noise.min_delta if sigma is None else max(noise.min_delta, noise.z * sigma)
    return NoiseFloor(sigma, dof, margin)


@dataclass(frozen=True)
class Verdict:
    status: str  # "candidate" (needs confirming), "keep", "discard" or "crash"
    delta: float | None  # value - best (sign as the metric's units)
    improvement: float | None  # positive = better, in the target's direction
    reason: str


def judge(value: float | None, best: float, margin: float, target: Target, *, final: bool) -> Verdict:
    """Judge a (mean) value against the best. With final=False a winner is only a candidate."""
    if value is None or not math.isfinite(value):
        return Verdict("crash", None, None, "no trusted result")
    gain = target.improvement(value, best)
    delta = value - best
    if gain > margin:
        status = "keep" if final else "candidate"
        return Verdict(status, delta, gain, f"better by {gain:.4f} > margin {margin:.4f}")
    why = "worse" if gain < 0 else f"within noise ({gain:.4f} <= margin {margin:.4f})"
    return Verdict("discard", delta, gain, why)


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals)
