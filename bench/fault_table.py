"""The fault-injection table: every scenario of tests/test_faults.py, run for real, one row each
(scenario, survived, results lost, note). Toy target for all but the real-training rows.

flock /tmp/alr-cpu.lock .venv/bin/python bench/fault_table.py [--only WORD] [--no-real]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import faults  # noqa: E402

GROUPS = [faults.training_runs, faults.flood_output, faults.immutable_evaluation, faults.agent_faults,
          faults.bad_input, faults.read_only_archive, faults.interrupt_and_second_harness,
          faults.transient_agent_errors, faults.kill9_in_agent_phase, faults.terminated_mid_run,
          faults.hangup_mid_run, faults.stale_lock,
          faults.commit_without_ref, faults.killed_while_committing,
          faults.user_changes_refused, faults.broken_git, faults.disk_full, faults.disk_full_when_recording]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only groups whose function name contains this")
    parser.add_argument("--no-real", action="store_true", help="leave out the real-training scenarios")
    parser.add_argument("--kills", type=int, default=20, help="kill -9's of the harness at random moments")
    args = parser.parse_args()
    rows: list[faults.FaultResult] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fault-table-") as tmp_name:
        tmp = Path(tmp_name)
        for group in GROUPS:
            if args.only and args.only not in group.__name__:
                continue
            t = time.time()
            out = group(tmp / group.__name__)
            rows += out if isinstance(out, list) else [out]
            print(f"  {group.__name__}: {time.time() - t:.1f} s", file=sys.stderr)
        if not args.no_real and (not args.only or args.only in "real_training"):
            env = faults.prepare_tiny(tmp / "alr-cache")
            rows += faults.real_training(tmp / "real", env)
        if args.kills and (not args.only or args.only in "kill9_campaign"):
            rows.append(faults.kill9_campaign(tmp / "kill9", kills=args.kills, seed=7, max_delay=3.0)[2])
    print_table(rows)
    bad = [r for r in rows if not r.skipped and (not r.survived or r.lost)]
    skipped = [r for r in rows if r.skipped]
    print(f"\n{len(rows)} scenarios: {len(rows) - len(bad) - len(skipped)} survived with nothing lost, "
          f"{len(bad)} failed, {len(skipped)} could not run here; {time.time() - started:.0f} s")
    return 1 if bad or skipped else 0


def print_table(rows: list[faults.FaultResult]) -> None:
    width = max(len(r.scenario) for r in rows)
    print(f"{'scenario':{width}}  survived  lost  note")
    print(f"{'-' * width}  --------  ----  ----")
    for r in rows:
        survived = "skip" if r.skipped else ("yes" if r.survived else "NO")
        note = " ".join(r.note.split())
        print(f"{r.scenario:{width}}  {survived:8}  {r.lost:4}  {note[:110]}")


if __name__ == "__main__":
    sys.exit(main())
