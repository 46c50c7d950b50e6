"""Runs on this machine: one run per GPU (CUDA_VISIBLE_DEVICES per worker), or the CPU cores
split between CPU workers (OMP_NUM_THREADS = cores // workers)."""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess

from harness import runner
from harness.errors import UsageError
from harness.executors import AUTO, Resources, Slot

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else what `nvidia-smi -L` lists.
    (No torch import: the harness must not load CUDA itself.)"""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@functools.cache
def serial_slot() -> Slot:
    """What one run of a serial loop has: train.py takes the first visible GPU (unless ALR_DEVICE
    says otherwise), else the cores OMP_NUM_THREADS allows (default: all)."""
    gpus = [] if os.environ.get("ALR_DEVICE", "cuda").startswith(("cpu", "mps")) else visible_gpus()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(threads) if threads.isdigit() and int(threads) > 0 else cpu_cores()
    if gpus:
        return Slot(0, f"GPU {gpus[0]}", 1.0, cores)
    return Slot(0, f"{cores} thread{'s' if cores > 1 else ''}", 0.0, cores)


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARS}


def local_slots(workers: int, resources: Resources = AUTO, *, gpus: list[str] | None = None,
                cores: int | None = None) -> list[Slot]:
    """Split this machine between `workers`; a UsageError (one line) if it cannot be done."""
    gpus = visible_gpus() if gpus is None else gpus
    cores = cpu_cores() if cores is None else cores
    gpus_per_worker = resources.gpus_per_worker
    if gpus_per_worker is None:
        gpus_per_worker = 1 if gpus else 0
    if gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must not be negative, got {gpus_per_worker:g}")
    threads = resources.threads_per_worker or cores // workers
    if resources.threads_per_worker is not None and (threads < 1 or threads * workers > cores):
        raise UsageError(f"--workers {workers} x {threads} threads needs {workers * threads} CPU cores; "
                         f"this machine has {cores}", hint=f"use --threads-per-worker {max(1, cores // workers)}")
    if gpus_per_worker == 0:
        if threads < 1:
            raise UsageError(f"--workers {workers} is more than the {cores} CPU cores here",
                             hint=f"use --workers {cores} or fewer (or --executor ray for more machines)")
        hide = {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}  # CPU workers must not share the GPU by accident
        return [Slot(w, f"{threads} thread{'s' if threads > 1 else ''}", 0.0, threads, {**thread_env(threads), **hide})
                for w in range(workers)]
    per = math.ceil(gpus_per_worker)  # a local GPU is not shared between runs
    if not gpus:
        raise UsageError(f"--gpus-per-worker {gpus_per_worker:g} asked for GPUs, but none are visible here",
                         hint="use --gpus-per-worker 0 for CPU workers, or check nvidia-smi / CUDA_VISIBLE_DEVICES")
    if workers * per > len(gpus):
        raise UsageError(f"--workers {workers} x {per} GPU needs {workers * per} GPUs; this machine has {len(gpus)}",
                         hint=f"use --workers {max(1, len(gpus) // per)}, or --executor ray for more machines")
    return [Slot(w, "GPU " + ",".join(gpus[w * per:(w + 1) * per]), float(per), max(1, threads),
                 {"CUDA_VISIBLE_DEVICES": ",".join(gpus[w * per:(w + 1) * per]), **thread_env(max(1, threads))})
            for w in range(workers)]


class LocalExecutor:
    """Runs each RunSpec here in the sandboxed subprocess of harness/runner.py."""

    name = "local"

    def __init__(self, workers: int, resources: Resources = AUTO):
        self.slots = local_slots(workers, resources)

    def run(self, spec: runner.RunSpec, *, on_line=None, stop_event=None) -> runner.RunOutcome:
        return runner.run(spec, on_line=on_line, stop_event=stop_event)

    def close(self) -> None:
        pass
