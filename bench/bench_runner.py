"""Figures for harness.runner and harness.integrity: spawn overhead, log throughput, hashing.

flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_runner.py [--mb 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import integrity, runner  # noqa: E402

FLOOD = """
import sys
block = (b"step 00001 | loss 3.141593 | lr 1.0e-03 " + b"y" * 981 + b"\\n") * 1024
for _ in range({mb}):
    sys.stdout.buffer.write(block)
print("---")
print("val_bpb: 1.234567")
"""


def spawn_ms(tmp: Path, network: bool, n: int = 10) -> float:
    times = []
    for i in range(n):
        s = runner.RunSpec(["true"], None, tmp, tmp / f"spawn{i}", network=network)
        t0 = time.perf_counter()
        runner.run(s)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def flood(tmp: Path, mb: int, with_lines: bool) -> tuple[float, int]:
    script = tmp / "flood.py"
    script.write_text(FLOOD.format(mb=mb))
    count = [0]

    def on_line(_line: str) -> None:
        count[0] += 1

    s = runner.RunSpec([sys.executable, str(script)], None, tmp, tmp / "flood", network=True)
    t0 = time.perf_counter()
    out = runner.run(s, on_line=on_line if with_lines else None)
    assert out.ok and out.log_truncated
    return time.perf_counter() - t0, out.log_path.stat().st_size


def hashing(tmp: Path, mb: int) -> tuple[float, float]:
    big = tmp / "train.bin"
    big.write_bytes(b"\x01" * (mb * 2**20))
    t0 = time.perf_counter()
    m = integrity.Manifest.capture(tmp, [], [big])
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert integrity.verify(m, tmp) == []
    return capture_s, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=200, help="MB of output for the flood test")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prefix = runner.network_isolation_prefix()
        print(f"network isolation: {' '.join(prefix) if prefix else 'not available'}")
        print(f"spawn `true`, network on:   {spawn_ms(tmp, True):7.1f} ms (median of 10)")
        if prefix:
            print(f"spawn `true`, isolated:     {spawn_ms(tmp, False):7.1f} ms (median of 10)")
        for with_lines in (False, True):
            secs, size = flood(tmp, args.mb, with_lines)
            label = "with on_line" if with_lines else "no on_line  "
            print(
                f"{args.mb} MB output, {label}: {secs:6.2f} s ({args.mb / secs:6.0f} MB/s), run.log {size / 2**20:.2f} MB"
            )
        capture_s, verify_s = hashing(tmp, 512)
        print(
            f"hash 512 MB cache file: capture {capture_s:.2f} s, verify {verify_s:.2f} s ({512 / verify_s:.0f} MB/s)"
        )


if __name__ == "__main__":
    main()
