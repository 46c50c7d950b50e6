"""Read a run's metric, the way the target says: a summary line, a regex, a JSON file, or a
built-in reader (pytest pass rate, coverage total)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import Target
from harness.run_files import parse_summary

_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|xfailed|xpassed|skipped)")
_COVERAGE_TOTAL = re.compile(r"^TOTAL\s.*?(\d+(?:\.\d+)?)%\s*$", re.M)


@dataclass(frozen=True)
class Reading:
    value: float | None
    summary: dict[str, float | str]
    error: str | None = None  # why no value could be read


def _finite(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pytest_pass_rate(text: str) -> float | None:
    """passed / (passed + failed + errors) from pytest's closing line."""
    lines = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|errors?)\b", ln)]
    if not lines:
        return None
    counts: dict[str, int] = {}
    for n, kind in _PYTEST_COUNTS.findall(lines[-1]):
        counts[kind.rstrip("s") if kind.startswith("error") else kind] = int(n)
    total = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("error", 0)
    return counts.get("passed", 0) / total if total else None


def read_metric(target: Target, log_text: str, workdir: Path) -> Reading:
    summary = parse_summary(log_text)
    reader = target.reader
    if reader == "summary":
        value = _finite(summary.get(target.metric))
        error = None if value is not None else f"no `{target.metric}: <number>` line after `---` in the output"
        return Reading(value, summary, error)
    if reader == "regex":
        matches = re.findall(target.pattern or "", log_text, re.M)
        if not matches:
            return Reading(None, summary, f"the pattern {target.pattern!r} matched nothing in the output")
        last = matches[-1]
        value = _finite(last[0] if isinstance(last, tuple) else last)
        return Reading(value, summary, None if value is not None else f"the pattern matched {last!r}, not a number")
    if reader == "json":
        file, _, key = (target.pattern or "").partition(":")
        try:
            data = json.loads((workdir / file).read_text())
            for part in filter(None, key.split(".")):
                data = data[int(part)] if isinstance(data, list) else data[part]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            return Reading(None, summary, f"could not read {target.pattern!r}: {e}")
        value = _finite(data)
        return Reading(value, summary, None if value is not None else f"{target.pattern!r} is not a number")
    if reader == "pytest":
        value = pytest_pass_rate(log_text)
        return Reading(value, summary, None if value is not None else "no pytest summary line in the output")
    if reader == "coverage":
        m = _COVERAGE_TOTAL.findall(log_text)
        value = float(m[-1]) if m else None
        return Reading(value, summary, None if value is not None else "no coverage TOTAL line in the output")
    return Reading(None, summary, f"unknown reader {reader!r}")
