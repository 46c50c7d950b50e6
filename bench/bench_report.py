"""Report size and speed on a 100-experiment archive, and dashboard page-load times.

    flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_report.py [--experiments 100]

Prints figures; asserts nothing (targets: report < 5 MB, dashboard page load < 1 s). The dashboard
figures: the first load (renders, running one `git diff` per pair of keeps), a cached load (one
dict lookup), and the load after a new row lands (renders again, but the diffs come from the
cache), with the same render without the cache for comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.request import urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.archive import git, make_archive  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.dashboard import Dashboard, make_server  # noqa: E402
from harness.ledger import Ledger, Row  # noqa: E402
from harness.report import build_report  # noqa: E402


def timed(fn) -> tuple[object, float]:  # noqa: ANN001
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def add_rewrites(repo: Path, first: int, count: int) -> None:
    """Keeps whose diff is a 2,000-line rewrite, to check the page stays small anyway."""
    ledger = Ledger(repo / ".auto-log-research" / "results.tsv")
    for i in range(count):
        (repo / "train.py").write_text("".join(f"KNOB_{i}_{k} = {k * (i + 1)}  # {'x' * 40}\n" for k in range(2000)))
        git(repo, "commit", "-qam", f"rewrite {i}")
        ledger.append(Row(git(repo, "rev-parse", "HEAD"), 1.5 - i * 0.01, 1.0, "keep", f"rewrite {i}", first + i,
                          margin=0.004))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=100)
    ap.add_argument("--rewrites", type=int, default=30,
                    help="extra keeps that each rewrite all of train.py (worst case for the diffs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        _, made = timed(lambda: make_archive(repo, args.experiments))
        out, took = timed(lambda: build_report(repo, Path(tmp) / "plain.html"))
        print(f"report of {args.experiments} experiments: {out.stat().st_size / 1e6:.3f} MB, built in {took:.2f} s "
              "[target < 5 MB]")
        add_rewrites(repo, args.experiments, args.rewrites)
        n = args.experiments + args.rewrites
        print(f"archive: {n} experiments ({args.rewrites} rewrite all of train.py) in a real git repo, "
              f"built in {made:.1f} s")
        out, took = timed(lambda: build_report(repo, Path(tmp) / "report.html"))
        size = out.stat().st_size
        print(f"report: {size / 1e6:.3f} MB ({size:,} bytes), built in {took:.2f} s  [target < 5 MB]")

        server = make_server(repo, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            _, cold = timed(lambda: urlopen(url, timeout=30).read())
            warm = [timed(lambda: urlopen(url, timeout=30).read())[1] for _ in range(20)]
            _, state = timed(lambda: urlopen(url + "api/state", timeout=30).read())
            Ledger(repo / ".auto-log-research" / "results.tsv").append(
                Row("-", None, 0.0, "agent_error", "one more", n, failure="agent: x"))
            _, rerender = timed(lambda: urlopen(url, timeout=30).read())
            _, uncached = timed(lambda: Dashboard(load_config(repo)).snapshot())
            print(f"dashboard page load: first {cold * 1000:.0f} ms, cached median "
                  f"{sorted(warm)[len(warm) // 2] * 1000:.1f} ms, /api/state {state * 1000:.1f} ms, "
                  f"after a new row {rerender * 1000:.0f} ms  [target < 1000 ms]")
            print(f"render after a new row: {rerender * 1000:.0f} ms with the diff cache, "
                  f"{uncached * 1000:.0f} ms without ({uncached / rerender:.1f}x)")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
