"""The kill -9 bar: `harness loop` on the toy target killed with SIGKILL at N random moments
(seeded, printed), each followed by a restart that resumes; then one clean loop and the audit:
HEAD is the best or the pending attempt, `git status` clean, results.tsv without torn or duplicate
rows, every ledger commit with its archive folder and git note, every attempt ref with a row (or
the single pending one), no orphan archive folders.

flock /tmp/alr-cpu.lock .venv/bin/python bench/kill9.py [--kills 20] [--seed 1234] [--max-delay 4]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import faults  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-delay", type=float, default=4.0, help="seconds; each delay is uniform in [0.05, this]")
    parser.add_argument("--keep", action="store_true", help="keep the repository (its path is printed)")
    args = parser.parse_args()
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="kill9-"))
    kills, state, res = faults.kill9_campaign(tmp, args.kills, args.seed, args.max_delay, report=print)
    statuses = collections.Counter(r.status for r in state.rows)
    phases = collections.Counter(k.phase or "-" for k in kills)
    print()
    print(f"{'check':42}  result")
    print(f"{'-' * 42}  ------")
    table = [
        ("kills", str(len(kills))),
        ("phases hit", ", ".join(f"{p} {n}" for p, n in sorted(phases.items()))),
        ("restarts that resumed (did not exit)", f"{sum(k.started for k in kills)}/{len(kills)}"),
        ("kills that left agent/run processes alive", f"{sum(1 for k in kills if k.orphans)}"
                                                     f" ({sum(k.orphans for k in kills)} processes)"),
        ("ledger rows after the final loop", f"{len(state.rows)} ("
                                             + ", ".join(f"{s} {n}" for s, n in statuses.most_common()) + ")"),
        ("results lost (rows/commits/folders/notes)", str(state.lost)),
        ("consistency problems", "; ".join(state.problems) or "none"),
        ("survived", "yes" if res.survived and not res.lost else f"NO: {res.note}"),
        ("wall time", f"{time.time() - started:.0f} s"),
    ]
    for name, value in table:
        print(f"{name:42}  {value}")
    if args.keep:
        print(f"repository: {tmp / 'kill9'}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if res.survived and not res.lost else 1


if __name__ == "__main__":
    sys.exit(main())
