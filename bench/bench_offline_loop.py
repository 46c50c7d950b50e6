"""The overnight loop in miniature: `harness init` + `harness loop --agent offline` on the real
default target (Shakespeare, the default train.py) with a short budget, then the record checked.

    python bench/bench_offline_loop.py [--budget 60] [--experiments 12] [--keep DIR]

Prints the baseline and its noise floor, every attempt, the best, and whether the best beats the
baseline by more than the measured noise. Takes roughly experiments x (budget + ~20 s) x 1.3.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.research import git, harness, harness_env  # noqa: E402

from harness.config import Noise  # noqa: E402
from harness.decide import noise_floor  # noqa: E402
from harness.ledger import Ledger  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=60)
    ap.add_argument("--experiments", type=int, default=12)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-offline-"))
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for name in ("prepare.py", "train.py", "analyze.py", "program.md"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "data", repo / "data")
    (repo / ".gitignore").write_text("__pycache__/\n/metrics.jsonl\n/run_summary.json\n")
    for cmd in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"], ["config", "user.email", "b@x"],
                ["add", "-A"], ["commit", "-q", "-m", "start"]):
        git(repo, *cmd)
    env = harness_env({"ALR_CACHE_DIR": str(work / "cache")})
    subprocess.run([sys.executable, "prepare.py"], cwd=repo, env=env, check=True, capture_output=True)
    t0 = time.time()
    r = harness(repo, env, "init", "--tag", "bench", "--budget", f"{args.budget:g}", "-q", timeout=7200)
    print(r.stdout.strip() or r.stderr.strip(), flush=True)
    r = harness(repo, env, "loop", "--agent", "offline", "--budget", f"{args.budget:g}",
                "--max-experiments", str(args.experiments), "-q", timeout=36000)
    print(r.stdout.strip(), r.stderr.strip(), sep="\n", flush=True)
    rows = Ledger(repo / ".auto-log-research" / "results.tsv").rows()
    base, best = rows[0], [x for x in rows if x.kept][-1]
    noise = noise_floor(rows, Noise())
    attempts = rows[1:]
    in_git = sum(1 for x in attempts if x.commit == "-" or git(repo, "cat-file", "-t", x.commit) == "commit")
    archived = sum(1 for x in attempts if x.commit == "-" or (repo / ".auto-log-research" / x.commit / "run.log").exists())
    print(f"\nwall time: {(time.time() - t0) / 60:.1f} min for init + {len(attempts)} experiments "
          f"at a {args.budget:g} s budget")
    print(f"baseline val_bpb {base.value:.6f} (runs {', '.join(f'{v:.4f}' for v in base.runs)})")
    print(f"best     val_bpb {best.value:.6f} at #{best.experiment} {best.short}: {best.description}")
    print(f"noise: sigma {noise.sigma or 0:.4f} from {noise.dof} dof -> margin {noise.margin:.4f}")
    gain = base.value - best.value
    print(f"improvement {gain:.4f} = {gain / noise.margin:.1f}x the margin: "
          f"{'BEATS' if gain > noise.margin else 'does not beat'} the baseline by more than the noise floor")
    print(f"attempts: {len(attempts)} in results.tsv, {in_git} in git, {archived} with archive folders; "
          f"statuses: {', '.join(x.status for x in attempts)}")
    print(f"kept in the work dir: {work}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
