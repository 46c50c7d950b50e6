"""`harness loop --executor ray` on a real local Ray cluster (this machine, no network needed):
runs as Ray tasks, a killed Ray worker retried once and then recorded as `infra`, and bad input
(unreachable address, GPUs the cluster lacks, more workers than it runs) as one clear line each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from support.research import git, harness, scripted_agent, set_toy
from test_parallel import (  # noqa: F401
    check_record,
    clean_env,
    finish,
    make_gated_repo,
    rows,
    start_loop,
    stop_leftover_loops,
    wait_for,
)

from harness.errors import FatalError, InfraError, UsageError
from harness.executors import Resources

try:
    import ray  # noqa: F401
except ImportError:  # pragma: no cover - CI installs the `test` extra, which has ray[default]
    print("\n*** tests/test_ray.py SKIPPED: ray is not installed (pip install 'auto-log-research[ray]') ***\n",
          file=sys.stderr)
    pytest.skip("ray is not installed: pip install 'auto-log-research[ray]'", allow_module_level=True)


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    return tmp_path / "gates"


@pytest.fixture
def repo(tmp_path: Path, gates: Path) -> Path:
    repo = make_gated_repo(tmp_path / "repo", gates)
    result = harness(repo, clean_env(), "init", "--tag", "t", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def ray_run(gates: Path) -> tuple[int, int] | None:
    """(the Ray worker process whose task runs our evaluate.py, that evaluate.py), or None."""
    for entry in Path("/proc").glob("[0-9]*"):
        run = pid = int(entry.name)
        if "evaluate.py" not in _cmdline(pid) or "gates" in _cmdline(pid):
            continue
        while pid > 1:
            pid = _ppid(pid)
            if _cmdline(pid).startswith("ray::"):
                return pid, run
    return None


def ray_worker_running(gates: Path) -> int | None:
    found = ray_run(gates)
    return found[0] if found else None


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"


def kill_worker_when_started(gates: Path, experiment: int) -> None:
    marker = gates / f"started{experiment}-0"
    assert wait_for(marker.exists, timeout=120), f"run of #{experiment} never started"
    assert wait_for(lambda: ray_run(gates) is not None, timeout=30)
    worker, run = ray_run(gates)
    marker.unlink()
    os.kill(worker, signal.SIGKILL)
    assert wait_for(lambda: _gone(worker), timeout=30)
    assert wait_for(lambda: _gone(run), timeout=15), "the run of a lost Ray worker went on, orphaned"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_two_workers_on_a_ray_cluster_keep_one_story(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=1.5), set_toy(X=1.0), "echo 'nothing to do'"])
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--executor", "ray",
                      "--max-experiments", "3")
    # both runs are Ray tasks in flight at once, each in a temp folder of the node, not the repo
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists(), timeout=120), proc
    assert ray_worker_running(gates) is not None
    status = harness(repo, clean_env(), "status").stdout
    assert "workers     2 on ray" in status
    (gates / "hold1").unlink()
    (gates / "hold2").unlink()
    out = finish(proc)
    assert "3 experiments" in out
    recorded = {r.experiment: r for r in rows(repo)}
    assert recorded[1].status == "keep" or recorded[2].status == "keep"
    # what the node made came back into the archive: the log, and the run's outputs
    for r in recorded.values():
        if r.commit != "-":
            assert "loss:" in (repo / ".auto-log-research" / r.commit / "run.log").read_text()
    check_record(repo)


def test_a_killed_ray_worker_is_retried_once_then_recorded_as_infra(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5), "echo 'nothing to do'"])
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--executor", "ray", "--max-experiments", "3")
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    try:
        kill_worker_when_started(gates, 1)  # lost once: retried, and the retry counts
        assert wait_for((gates / "started1-0").exists, timeout=60), "the lost run was not retried"
        (gates / "hold1").unlink()
        kill_worker_when_started(gates, 2)  # lost twice: infra, not the idea's fault
        kill_worker_when_started(gates, 2)
    except BaseException:
        proc.kill()
        print(proc.communicate()[0])
        raise
    out = finish(proc, timeout=180)
    assert "retrying it once" in out
    recorded = {r.experiment: r for r in rows(repo)}
    assert recorded[1].status == "keep" and recorded[1].runs == (2.0, 2.0005)
    assert recorded[2].status == "infra" and "lost twice" in recorded[2].failure
    assert recorded[3].status == "no_change"  # the loop went on
    check_record(repo)


def test_unreachable_ray_address_is_one_line(repo: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    result = harness(repo, clean_env(), "loop", "-q", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                     timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the error and its hint
    assert len(rows(repo)) == 1


@pytest.mark.slow  # two cluster start-ups
def test_gpus_the_cluster_lacks_and_too_many_workers(repo: Path, tmp_path: Path):
    result = harness(repo, clean_env(), "loop", "-q", "--executor", "ray", "--gpus-per-worker", "1", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "runs ask for 1 GPU each, but the Ray cluster has 0" in result.stderr
    # more workers than the cluster runs at once: a warning, and the loop still finishes
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5), set_toy(X=1.5)])
    cpus = len(os.sched_getaffinity(0))
    result = harness(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "loop", "-q", "--executor", "ray",
                     "--workers", str(cpus + 1), "--max-experiments", "3", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"--workers {cpus + 1}: the Ray cluster ({cpus} CPUs) runs only {cpus} at once" in result.stdout
    assert len(rows(repo)) == 4
    check_record(repo)


def test_missing_ray_is_one_clear_line(monkeypatch: pytest.MonkeyPatch):
    from harness.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray looks like
    with pytest.raises(UsageError, match="needs Ray, which is not installed") as info:
        make_executor("ray", 2)
    assert "auto-log-research[ray]" in (info.value.hint or "")


@pytest.mark.slow
def test_an_existing_cluster_started_with_ray_start(repo: Path, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1"],
                            env=clean_env(RAY_AUTH_MODE="disabled"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5)])
        # a throwaway cluster: no token (a real one shares ~/.ray/auth_token with its clients)
        env = clean_env(HARNESS_AGENT_COMMAND=agent, RAY_AUTH_MODE="disabled")
        result = None
        for _ in range(60):  # the head takes a few seconds to come up
            result = harness(repo, env, "loop", "-q", "--workers", "2", "--executor", "ray",
                             "--ray-address", f"127.0.0.1:{port}", "--max-experiments", "2", timeout=180)
            if "cannot reach" not in result.stderr:
                break
            wait_for(lambda: False, timeout=1)
        assert result is not None and result.returncode == 0, result.stdout + result.stderr
        assert len(rows(repo)) == 3
        check_record(repo)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        assert git(repo, "status", "--porcelain") == ""


# -- Ray errors beyond a lost worker, a run that is never scheduled, what comes back ---------------------

SLEEPER = """\
import os, pathlib, time
pathlib.Path(os.environ["GATES"], "started-" + os.environ.get("ALR_SEED", "0")).touch()
print("running", flush=True)
time.sleep(float(os.environ.get("SLEEP", "30")))
print("---")
print("loss: 1.0")
"""


def _work_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "run.py").write_text(SLEEPER)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    return path


def test_ray_errors_are_classified_and_no_run_waits_forever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import ray

    from harness.executors.ray_executor import RayExecutor, classify
    from harness.failures import failure_summary
    from harness.runner import RunSpec

    x = ray.exceptions
    assert classify(ray, x.OutOfMemoryError("Task was killed due to the node running low on memory")) == "oom"
    for error in (x.RuntimeEnvSetupError("pip failed"), x.ObjectStoreFullError("full"), x.OutOfDiskError("disk"),
                  x.TaskCancelledError(), x.NodeDiedError("gone"), x.WorkerCrashedError(), x.RaySystemError("?")):
        assert classify(ray, error) == "lost", error
    assert classify(ray, KeyError("a bug")) == "unknown"

    work, gates = _work_repo(tmp_path / "work"), tmp_path / "gates"
    gates.mkdir()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    executor = RayExecutor(1, resources=Resources(threads_per_worker=1))

    def spec(name: str, sleep: float = 30) -> RunSpec:
        return RunSpec(argv=[sys.executable, "run.py"], shell_command=None, cwd=work, out_dir=tmp_path / name,
                       env={"ALR_WORKER": "0", "GATES": str(gates), "SLEEP": str(sleep)}, wall_limit_s=120)

    try:
        # 1. a task cancelled by someone else (not the harness): lost, retried once, then infra
        def cancel_when_started(times: int) -> None:
            for _ in range(times):
                assert wait_for(lambda: (gates / "started-0").exists() and 0 in executor.in_flight, timeout=120)
                (gates / "started-0").unlink()
                ray.cancel(executor.in_flight[0], force=True)

        canceller = threading.Thread(target=cancel_when_started, args=(2,))
        canceller.start()
        with pytest.raises(InfraError, match="the Ray task was lost twice: TaskCancelledError") as info:
            executor.run(spec("cancelled"))
        canceller.join()
        assert "not counted against the idea" in (info.value.hint or "")

        # 2. a run no node can take (64 CPUs here): ends at the deadline, not retried, never waits forever
        original, executor.schedule_timeout_s = executor.slots, 2.0
        executor.slots = [replace(original[0], cpus=64)]
        started = time.monotonic()
        with pytest.raises(InfraError, match=r"not started within 2 s: .* asking for 64 CPUs"):
            executor.run(spec("unschedulable"))
        assert time.monotonic() - started < 30
        executor.slots, executor.schedule_timeout_s = original, 600.0

        # 3. Ray's memory monitor killing the run: an OOM crash of the attempt, like a local one
        real_get, calls = ray.get, []

        def get_killed_by_memory_monitor(ref, *args, **kwargs):
            calls.append(ref)
            if len(calls) == 2:  # the run's result, after it started
                raise x.OutOfMemoryError("Task was killed due to the node running low on memory.")
            return real_get(ref, *args, **kwargs)

        monkeypatch.setattr(ray, "get", get_killed_by_memory_monitor)
        outcome = executor.run(spec("oom"))
        log = outcome.log_path.read_text()
        assert outcome.oom and "OutOfMemoryError" in log and "memory monitor" in log
        assert failure_summary(log, outcome.returncode, outcome.timed_out, outcome.oom, outcome.signal).startswith("oom")

        # 4. an error the harness does not know: one line that stops the loop, not a traceback
        monkeypatch.setattr(ray, "get", lambda ref, *a, **k: (_ for _ in ()).throw(KeyError("surprise")))
        with pytest.raises(FatalError, match="the Ray executor failed: KeyError"):
            executor.run(spec("unknown"))
        monkeypatch.setattr(ray, "get", real_get)

        # and a normal run still works after all that: the cluster was not left busy
        outcome = executor.run(spec("fine", sleep=0))
        assert outcome.ok and "loss: 1.0" in outcome.log_path.read_text()
    finally:
        executor.close()


def test_a_runtime_env_that_cannot_be_set_up_is_infra_and_the_loop_goes_on(repo: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5)])
    env = clean_env(HARNESS_AGENT_COMMAND=agent, HARNESS_RAY_RUNTIME_ENV='{"conda": "no-such-env-alr"}')
    result = harness(repo, env, "loop", "-q", "--executor", "ray", "--max-experiments", "2", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retrying it once" in result.stdout
    recorded = rows(repo)[1:]
    assert [r.status for r in recorded] == ["infra", "infra"]
    assert all("RuntimeEnvSetupError" in r.failure for r in recorded)
    check_record(repo)
    bad = harness(repo, clean_env(HARNESS_RAY_RUNTIME_ENV="{not json"), "loop", "-q", "--executor", "ray", timeout=60)
    assert bad.returncode == 2 and "HARNESS_RAY_RUNTIME_ENV is not a JSON object" in bad.stderr


@pytest.mark.slow  # real training of the tiny GPT, as a Ray task
def test_a_real_run_over_ray_brings_back_its_outputs(tmp_path: Path, alr_env: dict[str, str]):
    from support.research import harness_env, make_research_repo

    from harness.integrity import RECEIPT_NAME

    repo = make_research_repo(tmp_path / "repo")
    env = {k: v for k, v in harness_env(alr_env).items() if not k.startswith("RAY_")}
    assert harness(repo, env, "init", "--tag", "ray", "--budget", "3", "--baseline-runs", "1", "-q").returncode == 0
    step = "sed -i -E 's/^(MATRIX_LR *= *)[0-9.]+/\\10.05/' train.py\necho 'MATRIX_LR = 0.05'"
    agent = scripted_agent(tmp_path / "a", [step])
    result = harness(repo, {**env, "HARNESS_AGENT_COMMAND": agent}, "loop", "-q", "--executor", "ray",
                     "--max-experiments", "1", "--budget", "3", "--no-confirm", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    row = rows_of(repo)[-1]
    assert row.experiment == 1 and row.value is not None, row  # a trusted value: its receipt checked out
    run = repo / ".auto-log-research" / row.commit
    for name in ("run.log", "metrics.jsonl", "run_summary.json", RECEIPT_NAME):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, f"{name} did not come back"
    assert '"step"' in (run / "metrics.jsonl").read_text() and "val_bpb" in (run / "run_summary.json").read_text()
    assert '"device": "ray ' in (run / "outcome.json").read_text()


def rows_of(repo: Path):
    from harness.ledger import Ledger

    return Ledger(repo / ".auto-log-research" / "results.tsv", "val_bpb").rows()
