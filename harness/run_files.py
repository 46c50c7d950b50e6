"""Read what a run leaves in its folder (metrics.jsonl, run.log, run_summary.json), leniently:
a missing, torn or corrupt file gives what is readable, never an exception. No numpy, so
harness.metric can use it without loading the analysis stack.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_BARE_CONSTANT = re.compile(r"([:\[,]\s*)(-?)(nan|inf|infinity)\b", re.IGNORECASE)


def load_metrics(path: str | Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl, one per readable line. Broken lines, a torn last
    line, non-UTF-8 bytes and a missing file are skipped; NaN/Infinity come back as floats."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line for line in map(str.strip, text.splitlines()) if line]
    try:  # one parse of the whole file is several times faster than one per line; any bad
        parsed = json.loads("[" + ",".join(lines) + "]")  # line sends us to the careful path
    except (ValueError, RecursionError):
        parsed = [_parse_json_line(line) for line in lines]
    return [obj for obj in parsed if isinstance(obj, dict)]


def _parse_json_line(line: str) -> Any:
    if not line:
        return None
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        pass
    # Writers outside Python's json module may emit bare nan/inf; read them as the constants.
    fixed = _BARE_CONSTANT.sub(lambda m: m[1] + ("NaN" if m[3].lower() == "nan" else m[2] + "Infinity"), line)
    if fixed == line:
        return None
    try:
        return json.loads(fixed)
    except (ValueError, RecursionError):
        return None


_SUMMARY_LINE = re.compile(r"^([A-Za-z_][\w./-]*)\s*:\s*(.*?)\s*$")


def parse_summary(text: str, *, anywhere: bool = False) -> dict[str, float | str]:
    """The run's `key: value` lines (values as floats when they are numbers).

    With a line that is exactly `---`, only the lines after the LAST such line count (the
    summary block train.py prints). Without one: nothing, or with `anywhere` (how a target's
    metric is read) the `key: value` lines anywhere in the output, a key printed twice keeping
    its last value."""
    lines = (text or "").splitlines()
    marks = [i for i, line in enumerate(lines) if line.rstrip("\r ") == "---"]
    if not marks and not anywhere:
        return {}
    out: dict[str, float | str] = {}
    for line in lines[marks[-1] + 1:] if marks else lines:
        m = _SUMMARY_LINE.match(line)
        if m:
            out[m[1]] = _number_or_text(m[2])
    return out


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def read_tail(path: str | Path, max_bytes: int = 65536) -> str:
    """The last `max_bytes` of a text file ('' if missing), decoded leniently."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text.split("\n", 1)[-1] if size > max_bytes else text  # drop the cut first line


def read_json(path: str | Path) -> dict:
    """A JSON object file, or {} when it is missing, corrupt or not an object."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def data_problems(run_dir: str | Path) -> list[str]:
    """What in a run's own files could not be read (one line each), for the user to hear of:
    broken metrics.jsonl lines are skipped and a broken run_summary.json ignored, not silently."""
    run_dir, problems = Path(run_dir), []
    try:
        text = (run_dir / "metrics.jsonl").read_bytes().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [line for line in map(str.strip, text.splitlines()) if line]
    bad = sum(1 for line in lines if not isinstance(_parse_json_line(line), dict))
    if bad:
        problems.append(f"metrics.jsonl: {bad} of {len(lines)} lines unreadable (skipped)")
    summary = run_dir / "run_summary.json"
    if summary.is_file() and not read_json(summary):
        problems.append("run_summary.json is not a JSON object (ignored; the summary lines of run.log are used)")
    return problems
