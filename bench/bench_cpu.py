"""Benchmark train.py's default CPU config: one real budgeted run, then the figures that matter.

    flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_cpu.py [--budget 300] [--threads N] [--cold-compile]

Prints throughput, MFU against the fp32 matmul peak train.py measured in the same run, the
un-budgeted overhead (start-up, uncharged warm-up steps, evaluation) and its share of the budget,
peak RSS and val_bpb, each next to the bar it is meant to reach. Uses the prepared dataset of
ALR_DATASET / ALR_CACHE_DIR (run `python prepare.py` first). torch.compile keeps its kernels in
inductor's cache between runs; `--cold-compile` gives the run an empty cache, as the first run after
an edit of the model's code has.
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

ROOT = Path(__file__).resolve().parent.parent


def run_train(device: str, budget: float, threads: int | None, run_dir: Path, cold: bool = False) -> float:
    """Run train.py to completion, echoing its progress lines; returns wall seconds."""
    env = {**os.environ, "ALR_DEVICE": device, "ALR_TIME_BUDGET": str(budget), "ALR_RUN_DIR": str(run_dir)}
    if cold:
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="alr-inductor-")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print("  | " + line, end="", flush=True)
    if proc.wait() != 0:
        sys.exit(f"error: train.py exited with code {proc.returncode} (see its output above)")
    return time.time() - start


def figures(run_dir: Path, budget: float, wall: float) -> dict[str, float]:
    summary = json.loads((run_dir / "run_summary.json").read_text())
    res, timing = summary["results"], summary["timing"]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "train/loss" in s]
    charged = [s for s in steps if s["time/training_seconds"] > 0]
    stepped = sum(s["perf/step_time_ms"] for s in steps) / 1000
    overhead = res["total_seconds"] - res["training_seconds"]
    return {
        "val_bpb": res["val_bpb"],
        "tokens_per_sec": res["total_tokens_M"] * 1e6 * len(charged) / len(steps) / res["training_seconds"],
        "median_step_ms": statistics.median(s["perf/step_time_ms"] for s in charged),
        "mfu_percent": res["mfu_percent"],
        "peak_gflops": summary["peak_flops"] / 1e9,
        "startup_s": timing["setup_seconds"],
        "warmup_steps_s": stepped - res["training_seconds"],
        "eval_s": timing["eval_seconds"],
        "overhead_s": overhead,
        "overhead_percent_of_budget": 100 * overhead / budget,
        "peak_memory_mb": res["peak_memory_mb"],
        "num_steps": res["num_steps"],
        "num_params_M": res["num_params_M"],
        "total_tokens_M": res["total_tokens_M"],
        "training_seconds": res["training_seconds"],
        "wall_seconds": wall,
    }


def report(title: str, figs: dict[str, float], bars: dict[str, tuple[str, float]]) -> None:
    print(f"\n{title}")
    for key, value in figs.items():
        bar = ""
        if key in bars:
            op, limit = bars[key]
            ok = value <= limit if op == "<=" else value >= limit
            bar = f"   bar {op} {limit:g}: {'ok' if ok else 'MISSED'}"
        print(f"  {key:28s} {value:12.3f}{bar}")


def main(device: str = "cpu", bars: dict[str, tuple[str, float]] | None = None, default_budget: float = 300) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=default_budget, help="training seconds (ALR_TIME_BUDGET)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run")
    parser.add_argument("--keep", type=Path, default=None, help="keep metrics.jsonl/run_summary.json here")
    parser.add_argument("--cold-compile", action="store_true", help="an empty torch.compile cache for this run")
    args = parser.parse_args()
    run_dir = args.keep or Path(tempfile.mkdtemp(prefix="alr-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    wall = run_train(device, args.budget, args.threads, run_dir, args.cold_compile)
    cache = "cold" if args.cold_compile else "warm or none"
    report(f"train.py on {device}, budget {args.budget:g}s, dataset {os.environ.get('ALR_DATASET', 'shakespeare')}, "
           f"compile cache {cache}",
           figures(run_dir, args.budget, wall), bars or {})


# The bars for the 2-core reference CPU (docs: shakespeare, 300 s budget).
CPU_BARS = {
    "val_bpb": ("<=", 1.95),
    "mfu_percent": (">=", 50.0),
    "overhead_percent_of_budget": ("<=", 10.0),
    "peak_memory_mb": ("<=", 4096.0),
}

if __name__ == "__main__":
    main("cpu", CPU_BARS)
