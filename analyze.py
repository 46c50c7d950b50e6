"""Post-run analysis of one attempt: what happened to the loss, the throughput, and how the run
compares with the best and the previous one. Writes analysis.md, analysis.json and plots into the
run's folder and prints analysis.md (or, with --json, analysis.json).

FIXED FILE: part of the contract, like prepare.py. Agents must not edit it (the harness treats
a change to it as a violation); the logic lives in harness/analysis.py.

    python analyze.py                      # the latest attempt in .auto-log-research/, vs the best
    python analyze.py RUN_DIR [--best DIR] [--prev DIR] [--json] [--no-plots]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.analysis import analyze_run
from harness.config import ARCHIVE_DIR, load_config
from harness.errors import HarnessError
from harness.ledger import KEPT, Ledger, Row

RUN_FILES = ("run.log", "metrics.jsonl", "run_summary.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="attempt folder (default: the latest one)")
    parser.add_argument("--best", type=Path, help="the best run's folder (default: from results.tsv)")
    parser.add_argument("--prev", type=Path, help="the previous run's folder (default: the attempt before)")
    parser.add_argument("--archive", type=Path, help=f"archive folder (default: ./{ARCHIVE_DIR})")
    parser.add_argument("--json", action="store_true", help="print analysis.json instead of analysis.md")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs (faster)")
    args = parser.parse_args(argv)

    metric, direction, archive = _target(args.archive)
    ledger = Ledger(archive / "results.tsv", metric)
    rows = ledger.rows()  # corrupt lines are skipped
    metric = ledger.metric_column() or metric  # the ledger's own metric column, if it differs
    run_dir = args.run_dir or latest_attempt(archive)
    if run_dir is None:
        print(f"no attempt folder in {archive}: pass RUN_DIR, or run `harness run` first", file=sys.stderr)
        return 2
    if not run_dir.is_dir():
        print(f"{run_dir} is not a folder: pass an attempt folder such as {archive}/<commit>", file=sys.stderr)
        return 2
    row, best, prev = ledger_context(archive, rows, run_dir)
    analysis = analyze_run(
        run_dir,
        best_dir=args.best or best,
        prev_dir=args.prev or prev or _attempt_before(archive, run_dir, rows),
        metric=metric,
        direction=direction,
        value=_value(row),
        status=row.status if row else None,
        failure=(row.failure.strip() or None) if row else None,
        plots=not args.no_plots,
    )
    if args.json:
        print(json.dumps(analysis.to_dict(), indent=1))
    else:
        print((run_dir / "analysis.md").read_text(encoding="utf-8"))
    return 0


def _target(archive: Path | None) -> tuple[str, str, Path]:
    """Metric, direction and archive folder from the repository's config (defaults if broken)."""
    try:
        cfg = load_config(Path.cwd())
        return cfg.target.metric, cfg.target.direction, archive or cfg.archive_dir
    except HarnessError:
        return "val_bpb", "min", archive or Path.cwd() / ARCHIVE_DIR


def attempt_folders(archive: Path) -> list[Path]:
    """Attempt folders, oldest first by when their run files were written (not the folder's own
    mtime, which re-analysing an old attempt would bump)."""
    try:
        folders = [p for p in archive.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted(folders, key=_written_at)


def _written_at(folder: Path) -> float:
    times = [(folder / name).stat().st_mtime for name in RUN_FILES if (folder / name).exists()]
    return max(times) if times else folder.stat().st_mtime


def latest_attempt(archive: Path) -> Path | None:
    folders = attempt_folders(archive)
    return folders[-1] if folders else None


def ledger_context(archive: Path, rows: list[Row], run_dir: Path) -> tuple[Row | None, Path | None, Path | None]:
    """(the run's own ledger row, the best folder, the previous folder). Only rows before the
    run's row count, so a run that became the best is compared with the best it beat."""
    mine = next((i for i, r in enumerate(rows) if _same_commit(r.commit, run_dir.name)), None)
    before = rows if mine is None else rows[:mine]
    folders = [(r, archive / r.commit) for r in before if r.commit not in ("", "-") and (archive / r.commit).is_dir()]
    folders = [(r, d) for r, d in folders if d.resolve() != run_dir.resolve()]
    best = next((d for r, d in reversed(folders) if r.status in KEPT), None)
    prev = folders[-1][1] if folders else None
    return (rows[mine] if mine is not None else None), best, prev


def _attempt_before(archive: Path, run_dir: Path, rows: list[Row]) -> Path | None:
    """Without a ledger, the previous attempt is the folder written just before this one."""
    if rows:
        return None
    folders = [f for f in attempt_folders(archive) if f.resolve() != run_dir.resolve()]
    earlier = [f for f in folders if _written_at(f) <= _written_at(run_dir)]
    return earlier[-1] if earlier else None


def _same_commit(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a not in ("-",) and (a.startswith(b) or b.startswith(a))


def _value(row: Row | None) -> float | None:
    """The value the harness recorded; a crash row's `0.000000` is a placeholder, not a value."""
    return None if row is None or row.status == "crash" else row.value


if __name__ == "__main__":
    sys.exit(main())
