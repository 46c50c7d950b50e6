"""Harness overhead per experiment: wall time of `harness run` minus the training subprocess's
own wall time (analysis and plots included). Prints the figures; asserts nothing.

    python bench/bench_overhead.py [--budget 5] [--repeats 3]

Uses a real research repo (this project's prepare.py/analyze.py/train.py with a small model) and
the real CLI as a subprocess; the tiny test corpus is prepared into a temporary cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.research import git, harness, harness_env, make_research_repo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--text", str(ROOT / "tests/data/tiny"),
                        "--name", "tiny", "--vocab-size", "1024"], check=True, capture_output=True,
                       env={**os.environ, "ALR_CACHE_DIR": str(cache)})
        env = harness_env({"ALR_CACHE_DIR": str(cache), "ALR_DATASET": "tiny"})
        repo = make_research_repo(tmp / "repo")
        r = harness(repo, env, "init", "--tag", "bench", "--baseline-runs", "1", "--budget", str(args.budget), "-q")
        assert r.returncode == 0, r.stderr
        overheads = []
        for i in range(args.repeats):
            train = repo / "train.py"
            # a change that cannot win (LR near zero): one run, no confirmation
            train.write_text(train.read_text().replace("MATRIX_LR = 0.04", f"MATRIX_LR = 0.0000{i + 1}", 1))
            start = time.perf_counter()
            r = harness(repo, env, "run", "-m", f"bench {i}", "--budget", str(args.budget), "-q")
            wall = time.perf_counter() - start
            assert r.returncode == 0, r.stderr
            sha = git(repo, "rev-parse", f"refs/auto-log-research/attempts/{i + 1:04d}")
            runs = [json.loads(p.read_text())["wall_seconds"]
                    for p in (repo / ".auto-log-research" / sha).rglob("outcome.json")]
            overheads.append(wall - sum(runs))
            print(f"run {i}: harness run {wall:.2f}s, training subprocess {sum(runs):.2f}s "
                  f"({len(runs)} run), overhead {wall - sum(runs):.2f}s")
        print(f"harness overhead per experiment: median {statistics.median(overheads):.2f}s "
              f"(min {min(overheads):.2f}s, max {max(overheads):.2f}s) over {len(overheads)} experiments")


if __name__ == "__main__":
    main()
