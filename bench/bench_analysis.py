"""Figures for harness.analysis / harness.plots: the per-experiment cost of analysing a run.

flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_analysis.py [--steps 5000] [--repeat 5]

- cold: a fresh process (imports of numpy and matplotlib included), as `python analyze.py` pays;
- warm: inside a process that has analysed before (the harness loop's case): a new run is read,
  the best and previous runs' curves come from the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_run(run_dir: Path, steps: int, seed: int) -> Path:
    """A run folder shaped like train.py's output (metrics.jsonl, run.log, run_summary.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng, acc, lines = random.Random(seed), 0.0, []
    for i in range(steps):
        loss = 1.2 + 9 * math.exp(-i / 150) + 0.6 * math.exp(-i / 2500) + rng.gauss(0, 0.05)
        acc = 0.9 * acc + 0.1 * loss
        ms, progress = 60 * (1 + 0.05 * rng.random()), (i + 1) / steps
        lines.append(json.dumps({
            "step": i, "train/loss": loss, "train/loss_smooth": acc / (1 - 0.9 ** (i + 1)),
            "train/lr_multiplier": 1.0 if progress < 0.6 else (1 - progress) / 0.4, "train/momentum": 0.95,
            "train/weight_decay": 0.1, "train/progress": progress, "perf/step_time_ms": ms,
            "perf/tokens_per_sec": 16384 / ms * 1000, "perf/mfu_percent": 30.0,
            "time/training_seconds": progress * 300,
        }))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "run.log").write_text(f"---\nval_bpb: 0.96\nnum_steps: {steps}\n")
    (run_dir / "run_summary.json").write_text(json.dumps({"config": {"LR": 0.01 * (1 + seed)}}))
    (run_dir / "train.py").write_text(f"LR = {0.01 * (1 + seed)}\n")
    return run_dir


COLD = """
import sys, time
t = time.perf_counter()
from harness.analysis import analyze_run
a = analyze_run(sys.argv[1], best_dir=sys.argv[2], prev_dir=sys.argv[3], plots=sys.argv[4] == "1")
print(time.perf_counter() - t)
"""


def cold(run: Path, best: Path, prev: Path, plots: bool) -> tuple[float, float]:
    """(seconds inside the process incl. imports, wall seconds of the whole process)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD, str(run), str(best), str(prev), "1" if plots else "0"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(out), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from harness.analysis import analyze_run

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        best, prev = write_run(base / "best", args.steps, 1), write_run(base / "prev", args.steps, 2)
        runs = [write_run(base / f"run{i}", args.steps, 10 + i) for i in range(args.repeat + 1)]
        for plots in (False, True):
            inner, wall = zip(*(cold(r, best, prev, plots) for r in runs[: args.repeat]), strict=True)
            print(f"cold, plots={plots!s:5}: median {statistics.median(inner):.3f} s in-process "
                  f"(imports included), {statistics.median(wall):.3f} s for the whole `python` process")
        analyze_run(runs[-1], best_dir=best, prev_dir=prev)  # the loop's first experiment pays the imports
        for plots in (False, True):
            times = []
            for run in runs[: args.repeat]:
                t = time.perf_counter()
                analyze_run(run, best_dir=best, prev_dir=prev, plots=plots)
                times.append(time.perf_counter() - t)
            print(f"warm, plots={plots!s:5}: median {statistics.median(times):.3f} s, max {max(times):.3f} s "
                  f"({args.steps} steps, vs best and previous)")


if __name__ == "__main__":
    main()
