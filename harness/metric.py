"""Read a run's metric, the way the target says: a summary line, a regex, a JSON file, or a
built-in reader (pytest pass rate, coverage total). A run that gives no number gets a Reading
with `error` set: one line that says what was looked for, shown by `harness init` and recorded
as the attempt's failure."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import Target
from harness.run_files import parse_summary

_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|xfailed|xpassed|skipped|deselected|warnings?)\b")
# pytest's closing line: "2 failed, 5 passed, 1 xfailed in 0.12s" (older: "in 0.12 seconds")
_PYTEST_LINE = re.compile(r"\b\d+ (passed|failed|errors?)\b.*\bin \d+(\.\d+)?\s*s")
_COVERAGE_TOTAL = re.compile(r"^TOTAL\s.*?(\d+(?:\.\d+)?)%\s*$", re.M)


@dataclass(frozen=True)
class Reading:
    value: float | None
    summary: dict[str, float | str]
    error: str | None = None  # why no value could be read


def _finite(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pytest_counts(text: str) -> dict[str, int] | None:
    """The counts of pytest's last closing line ({"passed": 5, "failed": 2, "error": 1, ...}), or
    None if the output has no such line."""
    lines = [ln for ln in text.splitlines() if _PYTEST_LINE.search(ln)]
    if not lines:
        return None
    counts: dict[str, int] = {}
    for n, kind in _PYTEST_COUNTS.findall(lines[-1]):
        counts[kind.rstrip("s") if kind.startswith(("error", "warning")) else kind] = int(n)
    return counts


def pytest_pass_rate(text: str) -> float | None:
    """passed / (passed + failed + errors) from pytest's closing line. Skipped, deselected,
    xfailed and xpassed tests count neither way. None without such a line or with no test run."""
    counts = pytest_counts(text)
    if counts is None:
        return None
    total = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("error", 0)
    return counts.get("passed", 0) / total if total else None


def coverage_total(text: str) -> float | None:
    """The percentage of coverage.py's last `TOTAL ... NN%` line."""
    found = _COVERAGE_TOTAL.findall(text)
    return float(found[-1]) if found else None


def read_json_value(path: Path, key: str, since: float | None = None) -> tuple[float | None, str | None]:
    """The number at dotted `key` (list items by index: `runs.0.score`) of the JSON file `path`,
    or (None, why). A file older than `since` (the run's start) is a previous run's: refused."""
    name = path.name
    try:
        if since is not None and path.stat().st_mtime < since:
            return None, f"{name} was not written by this run (it is older than the run's start)"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"the run did not write {name}"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{name} cannot be read: {e}"
    except ValueError as e:
        return None, f"{name} is not JSON: {e}"
    done: list[str] = []
    for part in filter(None, key.split(".")):
        try:
            data = data[int(part)] if isinstance(data, list) else data[part]
        except (KeyError, IndexError, ValueError, TypeError):
            where = f" under {'.'.join(done)!r}" if done else ""
            return None, f"{name} has no key {part!r}{where} (looking for {key!r})"
        done.append(part)
    value = _finite(data)
    return value, None if value is not None else f"{name}:{key} is {json.dumps(data)[:60]}, not a number"


def read_metric(target: Target, log_text: str, workdir: Path, since: float | None = None) -> Reading:
    """The metric of one run from its output (and, for reader=json, a file under `workdir`
    written after `since`, the time the run started)."""
    summary = parse_summary(log_text, anywhere=True)
    reader = target.reader
    if reader == "summary":
        value = _finite(summary.get(target.metric))
        if value is not None:
            return Reading(value, summary)
        found = summary.get(target.metric)
        if found is not None:
            return Reading(None, summary, f"`{target.metric}: {found}` in the output is not a number")
        return Reading(None, summary, f"no `{target.metric}: <number>` line in the output "
                                      "(after the last `---` line, if it has one)")
    if reader == "regex":
        matches = re.findall(target.pattern or "", log_text, re.M)
        if not matches:
            return Reading(None, summary, f"the pattern {target.pattern!r} matched nothing in the output")
        last = matches[-1]
        value = _finite(last[0] if isinstance(last, tuple) else last)
        return Reading(value, summary, None if value is not None else f"the pattern matched {last!r}, not a number")
    if reader == "json":
        file, _, key = (target.pattern or "").partition(":")
        value, error = read_json_value(workdir / file, key, since)
        return Reading(value, summary, error)
    if reader == "pytest":
        counts = pytest_counts(log_text)
        value = pytest_pass_rate(log_text)
        if value is not None:
            return Reading(value, summary)
        return Reading(None, summary, "no pytest summary line (`N passed, M failed in Xs`) in the output"
                       if counts is None else "pytest ran no test that passed or failed")
    if reader == "coverage":
        value = coverage_total(log_text)
        return Reading(value, summary, None if value is not None else
                       "no coverage `TOTAL ... NN%` line in the output (run `coverage report` after the tests)")
    return Reading(None, summary, f"unknown reader {reader!r}")
