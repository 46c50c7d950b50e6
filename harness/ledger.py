"""results.tsv: one row per attempt, append-only, readable by karpathy/autoresearch notebooks.

The first five columns are `commit <metric> memory_gb status description`, as in
karpathy/autoresearch; the rest follow. A row is written with one write() call and fsync, so a
kill -9 leaves either the whole row or none of it (a torn tail is cut off on the next write).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness import atomic

STATUSES = ("baseline", "keep", "discard", "crash", "no_change", "invalid", "violation", "agent_error", "infra")
KEPT = ("baseline", "keep")  # statuses whose commit became the best
RAN = ("baseline", "keep", "discard", "crash", "infra")  # statuses that cost a run
TAIL = ("experiment", "parent", "runs", "delta", "margin", "best_before", "train_s", "wall_s",
        "agent", "tokens", "cost_usd", "failure", "timestamp")


@dataclass(frozen=True)
class Row:
    commit: str
    value: float | None  # the metric (mean of `runs`); None when there is no trusted result
    memory_gb: float
    status: str
    description: str
    experiment: int
    parent: str = "-"
    runs: tuple[float, ...] = ()
    delta: float | None = None
    margin: float | None = None
    best_before: float | None = None
    train_s: float = 0.0
    wall_s: float = 0.0
    agent: str = "-"
    tokens: int = 0
    cost_usd: float = 0.0
    failure: str = ""
    timestamp: str = ""
    extra: dict = field(default_factory=dict, compare=False)  # unknown columns, kept on read

    @property
    def kept(self) -> bool:
        return self.status in KEPT

    @property
    def short(self) -> str:
        return self.commit[:7] if self.commit != "-" else "-"


def header(metric: str) -> list[str]:
    return ["commit", metric, "memory_gb", "status", "description", *TAIL]


def _num(v: float | None, fmt: str = ".6f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _clean(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").split())


def format_row(row: Row) -> str:
    value = "0.000000" if row.value is None else _num(row.value)  # crash rows: 0, as upstream
    cells = [
        row.commit, value, _num(row.memory_gb, ".1f"), row.status, _clean(row.description)[:500],
        str(row.experiment), row.parent, ",".join(_num(v) for v in row.runs) or "-",
        _num(row.delta), _num(row.margin), _num(row.best_before), _num(row.train_s, ".1f"),
        _num(row.wall_s, ".1f"), _clean(row.agent) or "-", str(row.tokens), _num(row.cost_usd, ".4f"),
        _clean(row.failure)[:300] or "-", row.timestamp or "-",
    ]
    return "\t".join(cells)


def _float(s: str) -> float | None:
    if s in ("", "-"):
        return None
    v = float(s)
    return None if math.isnan(v) else v


def parse_row(line: str, columns: list[str]) -> Row:
    """Parse one data line; raises ValueError on a malformed line."""
    cells = line.rstrip("\n").split("\t")
    if len(cells) < 5:
        raise ValueError(f"expected at least 5 columns, got {len(cells)}")
    data = dict(zip(columns, cells, strict=False))
    status = data["status"] if len(columns) > 3 else cells[3]
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    metric = columns[1]
    runs = tuple(float(x) for x in data.get("runs", "-").split(",") if x not in ("", "-"))
    value = _float(data[metric])
    if status in ("crash", "no_change", "invalid", "violation", "agent_error", "infra") and not runs:
        value = None
    known = {f.name for f in fields(Row)} | {metric}
    return Row(
        commit=data["commit"],
        value=value,
        memory_gb=_float(data.get("memory_gb", "-")) or 0.0,
        status=status,
        description=data.get("description", ""),
        experiment=int(data.get("experiment", "0") or 0),
        parent=data.get("parent", "-"),
        runs=runs,
        delta=_float(data.get("delta", "-")),
        margin=_float(data.get("margin", "-")),
        best_before=_float(data.get("best_before", "-")),
        train_s=_float(data.get("train_s", "-")) or 0.0,
        wall_s=_float(data.get("wall_s", "-")) or 0.0,
        agent=data.get("agent", "-"),
        tokens=int(float(data.get("tokens", "0") or 0)) if data.get("tokens", "-") != "-" else 0,
        cost_usd=_float(data.get("cost_usd", "-")) or 0.0,
        failure="" if data.get("failure", "-") == "-" else data.get("failure", ""),
        timestamp="" if data.get("timestamp", "-") == "-" else data.get("timestamp", ""),
        extra={k: v for k, v in data.items() if k not in known},
    )


class Ledger:
    """The results.tsv of one research branch."""

    def __init__(self, path: Path, metric: str = "val_bpb"):
        self.path = Path(path)
        self.metric = metric
        self.warnings: list[str] = []

    def exists(self) -> bool:
        return self.path.is_file()

    def metric_column(self) -> str | None:
        """The metric's name as the file's header has it (column 2); None without a header.
        It may differ from self.metric (a ledger started under another target config)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                columns = f.readline().rstrip("\n").split("\t")
        except OSError:
            return None
        return columns[1] if len(columns) > 1 and columns[0] == "commit" else None

    def rows(self) -> list[Row]:
        """All readable rows. Corrupt lines are skipped and described in self.warnings."""
        self.warnings = []
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if text and not text.endswith("\n"):
            self.warnings.append(f"{self.path.name}: ignored a torn last line (a write cut short)")
            lines = lines[:-1]
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            return []
        columns = lines[0].split("\t")
        if columns[:1] != ["commit"]:
            self.warnings.append(f"{self.path.name}: no header row; assuming the default columns")
            columns = header(self.metric)
        else:
            lines = lines[1:]
        out = []
        for n, line in enumerate(lines, start=2):
            try:
                out.append(parse_row(line, columns))
            except (ValueError, KeyError) as e:
                self.warnings.append(f"{self.path.name}:{n}: skipped a corrupt line ({e})")
        return out

    def append(self, row: Row) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            atomic.write_text(self.path, "\t".join(header(self.metric)) + "\n")
        atomic.append_line(self.path, format_row(row))

    def best(self) -> Row | None:
        """The all-time best: the last row whose commit became the best (baseline or keep)."""
        kept = [r for r in self.rows() if r.kept]
        return kept[-1] if kept else None

    def next_experiment(self) -> int:
        rows = self.rows()
        return max((r.experiment for r in rows), default=-1) + 1

    def recorded_commits(self) -> set[str]:
        return {r.commit for r in self.rows() if r.commit != "-"}
