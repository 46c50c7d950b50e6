"""Benchmark train.py's CUDA config (bf16 autocast, torch.compile, SDPA): the same figures as
bench_cpu.py, with MFU against the GPU's dense bf16 peak from train.py's table.

    .venv/bin/python bench/bench_gpu.py [--budget 300]

Needs an NVIDIA GPU and a CUDA build of torch; prepare the dataset first (`python prepare.py`,
or `python prepare.py --dataset climbmix` with ALR_DATASET=climbmix for the web-scale setup).
"""

from __future__ import annotations

import sys

import torch
from bench_cpu import main

GPU_BARS = {"overhead_percent_of_budget": ("<=", 10.0)}

if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit(f"error: no CUDA device here (torch {torch.__version__}); run bench/bench_gpu.py on an "
                 "NVIDIA GPU machine, or bench/bench_cpu.py on this one")
    main("cuda", GPU_BARS)
