"""Figures for prepare.py: corpus size, tokenizer training time, cold and warm `python prepare.py`,
tokens per split, dataloader and evaluate_bpb speed (CPU).

    flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_prepare.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_prepare(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "prepare.py")], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ALR_CACHE_DIR": cache, "ALR_DATASET": "shakespeare"}
        cold = timed_prepare(env)
        warm = min(timed_prepare(env) for _ in range(3))
        manifest = json.loads((Path(cache) / "shakespeare" / "manifest.json").read_text())

        os.environ.update(ALR_CACHE_DIR=cache, ALR_DATASET="shakespeare")
        sys.path.insert(0, str(ROOT))
        import torch

        import prepare

        corpus = prepare.shakespeare_corpus()
        text = [*corpus.train(), *corpus.val()]
        t0 = time.perf_counter()
        prepare.train_tokenizer(corpus.train(), prepare.VOCAB_SIZE)
        tokenizer_s = time.perf_counter() - t0

        tok = prepare.Tokenizer.load()
        loader = prepare.make_dataloader(tok, 64, prepare.MAX_SEQ_LEN, "train", "cpu")
        next(loader)
        t0 = time.perf_counter()
        for _ in range(100):
            next(loader)
        loader_ms = (time.perf_counter() - t0) * 10

        class Uniform(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.zeros(*x.shape, prepare.VOCAB_SIZE)

        t0 = time.perf_counter()
        bpb = prepare.evaluate_bpb(Uniform(), tok, "cpu")
        eval_s = time.perf_counter() - t0

    print(f"corpus: {len(text)} works, {sum(len(t.encode()) for t in text):,} bytes "
          f"({prepare.SHAKESPEARE_FILE.stat().st_size:,} bytes shipped, xz)")
    print(f"tokenizer training (rustbpe, vocab {prepare.VOCAB_SIZE}, train split): {tokenizer_s:.2f} s")
    print(f"python prepare.py cold: {cold:.2f} s   warm (no-op, best of 3): {warm:.2f} s")
    print(f"tokens: train {manifest['tokens']['train']:,}  val {manifest['tokens']['val']:,}  "
          f"EVAL_TOKENS {prepare.EVAL_TOKENS:,}")
    print(f"dataloader: {loader_ms:.2f} ms per batch of 64 x {prepare.MAX_SEQ_LEN} (cpu)")
    print(f"evaluate_bpb, uniform-logits model: {eval_s:.2f} s (bpb {bpb:.4f}; the cost is the "
          f"cross-entropy over {prepare.VOCAB_SIZE} classes)")


if __name__ == "__main__":
    main()
