"""Experiments per hour with 2 workers vs 1, on a real local Ray cluster (or this machine).

Two targets, both burning CPU for the run's budget so that the figure reflects parallel
training rather than start-up:
- toy:   the gated toy of tests/test_parallel.py with a busy loop of --busy seconds per run;
- train: the real tiny GPT (train.py via tests/support/research.py) with --budget seconds.
Each configuration runs the same agent (a change that is always worse, so every experiment is
exactly one run and no confirmation or re-apply muddies the count) for --experiments
experiments from a copy of one initialized repository, then checks that the ledger and the git
record are complete and consistent.

    flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_workers.py --target toy --busy 10
    flock /tmp/alr-cpu.lock .venv/bin/python bench/bench_workers.py --target train --budget 10
    .venv/bin/python bench/bench_workers.py --executor local --target toy --busy 10

By default the runs go to a real local Ray cluster started here on loopback (`ray start --head
--node-ip-address=127.0.0.1 --num-cpus=2`), each worker with 1 thread; `--executor local` runs
them on this machine instead. Both configurations get the same budget and experiment count.

On a GPU machine: `--gpus` compares 1 worker on GPU 0 with one worker per visible GPU (local
executor, `--gpus-per-worker 1`, the real train.py), e.g.
    .venv/bin/python bench/bench_workers.py --gpus --target train --budget 60 --experiments 8
With one GPU there is nothing to compare: it checks one worker on the GPU with real runs (its
device label and GPU-hours in the archive) and prints the rate.

Prints, per configuration, experiments/hour measured from the first experiment's start to the
loop's end (steady state: cluster start-up excluded) and over the whole command, the device time
the archive recorded, and the ratio next to the 1.8x bar (printed, not asserted). Exits 1 if the
ledger and the git record of any configuration are not complete and consistent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.research import git, make_research_repo, scripted_agent  # noqa: E402
from test_parallel import make_gated_repo  # noqa: E402

from harness.executors.local import visible_gpus  # noqa: E402
from harness.ledger import Ledger  # noqa: E402
from harness.workers import run_times  # noqa: E402

BAR = 1.8  # the bar: 2 workers x 1 thread vs 1 x 1 thread, experiments per hour

HARNESS = Path(sys.executable).parent / "harness"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALR_", "HARNESS_", "RAY_"))}
    return {**env, "RAY_AUTH_MODE": "disabled", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(cpus: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
                             "--node-ip-address=127.0.0.1"], env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    end = time.time() + 120
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the GCS answers before the raylet is up
            return head, address
        except OSError:
            time.sleep(0.5)
    stop_ray(head)
    raise SystemExit("the Ray head did not start within 120 s")


def stop_ray(head: subprocess.Popen) -> None:
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    except ProcessLookupError:
        pass


def prepare_tiny(cache: Path) -> dict[str, str]:
    cmd = [sys.executable, str(ROOT / "prepare.py"), "--text", str(ROOT / "tests" / "data" / "tiny"),
           "--name", "tiny", "--vocab-size", "1024"]
    subprocess.run(cmd, env=clean_env(ALR_CACHE_DIR=str(cache)), cwd=ROOT, check=True, capture_output=True)
    return {"ALR_CACHE_DIR": str(cache), "ALR_DATASET": "tiny"}


def make_repo(args, tmp: Path) -> tuple[Path, dict[str, str], str]:
    """An initialized repository, its environment, and an agent whose every change is worse."""
    if args.target == "toy":
        repo = make_gated_repo(tmp / "repo", tmp / "gates", busy=args.busy, budget=args.busy + 60)
        env = clean_env()
        # Y = 0.N moves away from the optimum (2): every change is worse than the baseline's Y = 1
        step = "sed -i \"s/^Y = [^ ]*/Y = 0.$HARNESS_EXPERIMENT/\" model.py\necho \"set Y=0.$HARNESS_EXPERIMENT\""
    else:
        repo = make_research_repo(tmp / "repo")
        # the baseline too trains on one thread, as every run of both configurations does
        env = clean_env(OMP_NUM_THREADS="1", **prepare_tiny(tmp / "cache"))
        # a learning rate ~1000x too small: a real change with the same compute, always worse
        step = ("sed -i -E \"s/^(MATRIX_LR *= *)[0-9.e-]+/\\1 0.0000$HARNESS_EXPERIMENT/\" train.py\n"
                "echo \"MATRIX_LR = 0.0000$HARNESS_EXPERIMENT\"")
    agent = scripted_agent(tmp / "agent", [step])
    budget = [] if args.target == "toy" else ["--budget", str(args.budget)]
    init = subprocess.run([str(HARNESS), "init", "--tag", "bench", "-q", "--baseline-runs", "1", *budget],
                          cwd=repo, env=env, capture_output=True, text=True)
    if init.returncode != 0:
        raise SystemExit(f"init failed:\n{init.stdout}\n{init.stderr}")
    return repo, {**env, "HARNESS_AGENT_COMMAND": agent}, " ".join(budget)


def run_config(args, base: Path, env: dict[str, str], budget: str, workers: int, where: str) -> dict:
    repo = base.parent / f"repo-w{workers}"
    shutil.copytree(base, repo, symlinks=True)
    per_worker = ["--gpus-per-worker", "1"] if args.gpus else ["--gpus-per-worker", "0", "--threads-per-worker", "1"]
    cmd = [str(HARNESS), "loop", "-q", "--workers", str(workers), *per_worker,
           "--max-experiments", str(args.experiments), *budget.split()]
    cmd += ["--executor", "ray", "--ray-address", where] if args.executor == "ray" else ["--executor", "local"]
    started = time.time()
    first = None
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if first is None and "#001 started" in line:
            first = time.time()
    proc.wait()
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the loop failed:\n{''.join(out)}")
    problems = consistency(repo, args.experiments)
    n = args.experiments
    baseline = rows(repo)[0].commit
    runs = [r for r in run_times(repo / ".auto-log-research") if r.commit != baseline]
    return {"workers": workers, "steady_per_h": n / (ended - (first or started)) * 3600,
            "total_per_h": n / (ended - started) * 3600, "wall_s": ended - started,
            "steady_s": ended - (first or started), "problems": problems,
            "statuses": sorted({r.status for r in rows(repo)[1:]}),
            "runs": len(runs), "devices": sorted({r.device for r in runs}),
            "run_h": sum(r.seconds for r in runs) / 3600, "gpu_h": sum(r.seconds * r.gpus for r in runs) / 3600}


def rows(repo: Path):
    metric = "loss" if (repo / "evaluate.py").exists() else "val_bpb"
    return Ledger(repo / ".auto-log-research" / "results.tsv", metric).rows()


def consistency(repo: Path, experiments: int) -> list[str]:
    problems = []
    recorded = rows(repo)
    numbers = sorted(r.experiment for r in recorded[1:])
    if numbers != list(range(1, experiments + 1)):
        problems.append(f"experiments recorded: {numbers}")
    kept = [r for r in recorded if r.kept]
    for before, after in zip(kept, kept[1:], strict=False):
        if after.parent != before.commit:
            problems.append(f"#{after.experiment}: a keep that does not sit on the best before it")
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/auto-log-research/attempts/").splitlines()
    if len(refs) != sum(r.commit != "-" for r in recorded[1:]):
        problems.append(f"{len(refs)} attempt refs for {len(recorded) - 1} rows")
    for r in recorded[1:]:
        if r.commit == "-":
            continue
        if git(repo, "rev-parse", f"{r.commit}^") != r.parent:
            problems.append(f"#{r.experiment}: parent column is not the commit's parent")
        if subprocess.run(["git", "notes", "show", r.commit], cwd=repo, capture_output=True).returncode != 0:
            problems.append(f"#{r.experiment}: no git note")
        if r.status != "infra" and not (repo / ".auto-log-research" / r.commit / "run.log").is_file():
            problems.append(f"#{r.experiment}: no run.log in the archive")
        if r.status != "infra" and not (repo / ".auto-log-research" / r.commit / "outcome.json").is_file():
            problems.append(f"#{r.experiment}: no outcome.json (device time) in the archive")
    best = next(r for r in reversed(recorded) if r.kept)
    if git(repo, "rev-parse", "HEAD") != best.commit or git(repo, "status", "--porcelain"):
        problems.append("the branch is not at the best, or the tree is dirty")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("toy", "train"), default="toy")
    ap.add_argument("--executor", choices=("ray", "local"), default="ray")
    ap.add_argument("--gpus", action="store_true", help="local executor, one worker per visible GPU vs one")
    ap.add_argument("--busy", type=float, default=10.0, help="toy: CPU seconds each run burns")
    ap.add_argument("--budget", type=float, default=10.0, help="train: training seconds per run")
    ap.add_argument("--experiments", type=int, default=6)
    args = ap.parse_args()
    counts = (1, 2)
    if args.gpus:
        gpus = visible_gpus()
        if not gpus:
            raise SystemExit("--gpus: no GPU is visible here (nvidia-smi -L / CUDA_VISIBLE_DEVICES)")
        args.executor, counts = "local", (1,) if len(gpus) == 1 else (1, len(gpus))
    head, where = start_ray(2) if args.executor == "ray" else (None, "")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            base, env, budget = make_repo(args, Path(tmp))
            results = [run_config(args, base, env, budget, w, where) for w in counts]
    finally:
        if head is not None:
            stop_ray(head)
    per_run = f"busy {args.busy:g} s" if args.target == "toy" else f"budget {args.budget:g} s"
    each = "1 GPU per worker" if args.gpus else "1 thread per worker"
    print(f"target {args.target} ({per_run} per run), executor {args.executor}"
          f"{' (local Ray cluster on 127.0.0.1, 2 CPUs)' if head else ''}, {args.experiments} experiments, {each}")
    for r in results:
        print(f"  workers {r['workers']}: {r['steady_per_h']:6.0f} experiments/h steady "
              f"({r['steady_s']:.1f} s), {r['total_per_h']:6.0f}/h whole command ({r['wall_s']:.1f} s); "
              f"{r['runs']} runs on {', '.join(r['devices'])}: run-hours {r['run_h']:.3f}, GPU-hours {r['gpu_h']:.3f}; "
              f"statuses {','.join(r['statuses'])}; record {'consistent' if not r['problems'] else r['problems']}")
    if len(results) == 2:
        one, two = results
        steady, total = two["steady_per_h"] / one["steady_per_h"], two["total_per_h"] / one["total_per_h"]
        verdict = "meets" if steady >= BAR else "BELOW"
        print(f"  speed-up {two['workers']} vs 1 workers: {steady:.2f}x steady ({verdict} the {BAR}x bar), "
              f"{total:.2f}x whole command")
    bad = [r for r in results if r["problems"]]
    if bad:
        print(f"  ledger and git record INCONSISTENT for workers {', '.join(str(r['workers']) for r in bad)}")
        sys.exit(1)
    print("  ledger and git record complete and consistent")


if __name__ == "__main__":
    main()
