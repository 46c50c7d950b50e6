"""`harness loop --workers N` on this machine, through the real CLI: worktrees, one record,
stale parents re-applied or discarded, crash recovery. Real git, real subprocesses; the only
fake is the agent (a shell script keyed by experiment number)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.research import git, harness, scripted_agent, set_toy

from harness.errors import UsageError
from harness.executors import Resources
from harness.executors.local import local_slots
from harness.ledger import Ledger, Row

# The toy of support/research.py, with knobs far enough apart that changes to different knobs
# merge, and gates: a run of experiment N waits while <gates>/holdN exists, and says it started.
GATED_MODEL = """\
X = 3.0     # the optimum is X = 1
# (two lines between knobs, so that changes to different knobs merge cleanly)
#
Y = 1.0     # the optimum is Y = 2
#
#
CRASH = 0   # 1 makes the run fail
"""

GATED_EVALUATE = """\
import os, time
GATES = {gates!r}
BUSY_S = {busy!r}
exp, seed = os.environ.get("HARNESS_EXPERIMENT", "0"), os.environ.get("ALR_SEED", "0")
open(os.path.join(GATES, f"started{{exp}}-{{seed}}"), "w").close()
while os.path.exists(os.path.join(GATES, f"hold{{exp}}")):
    time.sleep(0.05)
ns = {{}}
exec(open("model.py").read(), ns)
end = time.time() + BUSY_S  # stands in for training: burns one core for BUSY_S seconds
n = 0
while time.time() < end:
    n += sum(i * i for i in range(2000))
if ns.get("CRASH"):
    raise RuntimeError("the model crashed")
loss = (ns["X"] - 1) ** 2 + (ns["Y"] - 2) ** 2 + 0.0005 * int(seed)
print("---")
print(f"loss: {{loss:.6f}}")
"""


def make_gated_repo(path: Path, gates: Path, *, busy: float = 0.0, **settings: object) -> Path:
    gates.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.py").write_text(GATED_MODEL)
    (path / "evaluate.py").write_text(GATED_EVALUATE.format(gates=str(gates), busy=busy))
    config = {"editable": ["model.py"], "run_command": f"{sys.executable} evaluate.py", "metric": "loss",
              "direction": "min", "immutable": ["evaluate.py"], "budget": 60, "grace_s": 60, "min_delta": 0.01,
              **settings}
    (path / "harness.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    (path / ".gitignore").write_text("__pycache__/\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "start")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALR_", "HARNESS_", "RAY_"))}
    return {**env, **extra}


def rows(repo: Path) -> list[Row]:
    return Ledger(repo / ".auto-log-research" / "results.tsv", "loss").rows()


def check_record(repo: Path) -> None:
    """The ledger, the git record and the archive tell one consistent story."""
    recorded = rows(repo)
    experiments = [r.experiment for r in recorded]
    assert len(experiments) == len(set(experiments)), f"an experiment recorded twice: {experiments}"
    kept = [r for r in recorded if r.kept]
    for before, after in zip(kept, kept[1:], strict=False):
        assert after.parent == before.commit, "each keep sits on the best before it"
    assert git(repo, "rev-parse", "HEAD") == kept[-1].commit, "the branch tip is the best"
    assert git(repo, "status", "--porcelain") == "", "the main tree is clean"
    attempt_refs = git(repo, "for-each-ref", "--format=%(refname:lstrip=-1) %(objectname)",
                       "refs/auto-log-research/attempts/").splitlines()
    by_number = dict(line.split() for line in attempt_refs)
    for r in recorded[1:]:
        if r.commit == "-":
            continue
        assert git(repo, "cat-file", "-t", r.commit) == "commit"
        assert git(repo, "rev-parse", f"{r.commit}^") == r.parent, f"#{r.experiment}: parent column is true"
        assert f"{r.experiment:04d}" in by_number, f"#{r.experiment} has its attempt ref"
        assert git(repo, "notes", "show", r.commit).startswith("loss:"), f"#{r.experiment} has its note"
        if r.status != "infra":
            assert (repo / ".auto-log-research" / r.commit / "run.log").is_file()
    pending = set(by_number) - {f"{r.experiment:04d}" for r in recorded}
    assert not pending, f"attempts never recorded: {pending}"


STARTED: list[subprocess.Popen] = []


def start_loop(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "harness"
    proc = subprocess.Popen([str(exe), "loop", "-q", *args], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def stop_leftover_loops():
    """A failed test must not leave a loop (and its runs, or its Ray cluster) behind."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def wait_for(pred, timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    return tmp_path / "gates"


@pytest.fixture
def repo(tmp_path: Path, gates: Path) -> Path:
    repo = make_gated_repo(tmp_path / "repo", gates)
    result = harness(repo, clean_env(), "init", "--tag", "t", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


def test_two_workers_run_at_once_in_worktrees_and_keep_one_story(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=1.5), set_toy(Y=1.8), "echo 'nothing to do'"])
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--max-experiments", "3")
    # both runs are in flight at the same time, each from its own worktree
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists()), proc
    trees = git(repo, "worktree", "list", "--porcelain")
    assert trees.count("worktree ") == 3 and ".auto-log-research/worktrees/w0" in trees and "detached" in trees
    status = harness(repo, clean_env(), "status").stdout
    assert "workers     2 on local" in status and re.search(r"w0 \[\d+ threads?\] #00[12] training", status)
    assert re.search(r"w1 \[\d+ threads?\] #00[12] training", status)
    assert "set Y=1.5" in status and "set Y=1.8" in status
    (gates / "hold1").unlink()
    (gates / "hold2").unlink()
    out = finish(proc)
    assert "3 experiments" in out
    recorded = rows(repo)
    assert sorted(r.experiment for r in recorded) == [0, 1, 2, 3]
    assert {r.status for r in recorded[1:]} >= {"no_change"}
    check_record(repo)
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1, "worktrees removed on a clean stop"


def test_a_stale_winner_is_reapplied_on_the_new_best_and_confirmed(repo: Path, gates: Path, tmp_path: Path):
    # #1 (Y=1.5) is kept while #2 (X=1.0, started from the baseline) is still running; #2 beats
    # the new best on its own, so its change is re-applied onto #1 and run again there.
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=1.5), set_toy(X=1.0), "echo 'nothing to do'"])
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--max-experiments", "3")
    assert wait_for(lambda: any(r.experiment == 1 for r in rows(repo))), proc
    (gates / "hold2").unlink()
    out = finish(proc)
    by_exp = {r.experiment: r for r in rows(repo)}
    first, second = by_exp[1], by_exp[2]
    assert first.status == "keep" and first.value == pytest.approx(4.25025)
    assert second.status == "keep" and second.parent == first.commit  # the truthful parent: the new best
    assert second.runs == (0.25, 0.2505) and second.description == "set X=1.0"
    message = git(repo, "log", "-1", "--format=%B", second.commit)
    original = git(repo, "rev-parse", "refs/auto-log-research/attempts/0002")
    assert f"re-applied from {original[:12]}" in message and original != second.commit
    assert git(repo, "rev-parse", f"{original}^") == by_exp[0].commit  # the original started from the baseline
    assert git(repo, "rev-parse", "refs/auto-log-research/reapplied/0002") == second.commit
    assert "re-applied as" in out
    assert "X = 1.0" in (repo / "model.py").read_text() and "Y = 1.5" in (repo / "model.py").read_text()
    check_record(repo)


def test_a_stale_winner_that_conflicts_is_discarded(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(X=1.5), "echo 'nothing to do'"])
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--max-experiments", "3")
    assert wait_for(lambda: any(r.experiment == 1 for r in rows(repo))), proc
    (gates / "hold2").unlink()
    finish(proc)
    by_exp = {r.experiment: r for r in rows(repo)}
    assert by_exp[1].status == "keep"
    stale = by_exp[2]
    assert stale.status == "discard" and stale.failure.startswith("stale parent: could not re-apply")
    assert stale.parent == by_exp[0].commit and stale.best_before == by_exp[1].value  # judged against the new best
    check_record(repo)


def test_a_stale_result_is_judged_against_the_best_at_decision_time(repo: Path, gates: Path, tmp_path: Path):
    # #2 (Y=1.5 -> 4.25) would beat the baseline (5.0) but not the best kept meanwhile (#1: 1.0).
    agent = scripted_agent(tmp_path / "a", [set_toy(X=1.0), set_toy(Y=1.5), "echo 'nothing to do'"])
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--max-experiments", "3")
    assert wait_for(lambda: any(r.experiment == 1 for r in rows(repo))), proc
    (gates / "hold2").unlink()
    finish(proc)
    stale = {r.experiment: r for r in rows(repo)}[2]
    assert stale.status == "discard" and stale.runs == (4.25,) and stale.best_before == pytest.approx(1.00025)
    assert git(repo, "for-each-ref", "refs/auto-log-research/reapplied/") == ""
    check_record(repo)


def test_agents_are_told_the_ideas_in_flight(repo: Path, gates: Path, tmp_path: Path):
    # #2 changes nothing once #1 runs, so #3's prompt is written while #1 is in flight
    seen = tmp_path / "seen"
    wait_for_1 = f"while [ ! -e {gates}/started1-0 ]; do sleep 0.05; done\necho 'nothing to do'"
    step = f"cat > {seen}$HARNESS_EXPERIMENT\n" + set_toy(Y=1.5)
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), wait_for_1, step])
    (gates / "hold1").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "--workers", "2", "--max-experiments", "3")
    assert wait_for(lambda: Path(f"{seen}3").exists()), proc
    (gates / "hold1").unlink()
    finish(proc)
    prompt = Path(f"{seen}3").read_text()
    assert "Other workers are already testing these ideas" in prompt and "- set X=2.0" in prompt
    check_record(repo)


def test_kill_9_mid_run_resumes_both_attempts_and_repairs_the_worktrees(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5), "echo 'nothing to do'"])
    env = clean_env(HARNESS_AGENT_COMMAND=agent)
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    proc = start_loop(repo, env, "--workers", "2", "--max-experiments", "2")
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists()), proc
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert len(rows(repo)) == 1  # nothing half-recorded
    (gates / "started1-0").unlink()
    (gates / "started2-0").unlink()
    # a crash may also leave a worktree folder git no longer knows: it is removed with a line
    stray = repo / ".auto-log-research" / "worktrees" / "w7"
    stray.mkdir(parents=True)
    proc = start_loop(repo, env, "--workers", "2", "--max-experiments", "2")
    # the resumed attempts are in flight with their hypotheses (from their commit messages)
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists()), proc
    status = harness(repo, clean_env(), "status").stdout
    assert re.search(r"w[01] \[[^]]+\] #001 training [0-9a-f]{7}: set X=2.0", status), status
    assert re.search(r"w[01] \[[^]]+\] #002 training [0-9a-f]{7}: set Y=1.5", status), status
    (gates / "hold1").unlink()
    (gates / "hold2").unlink()
    out = finish(proc)
    assert "removed w7, a worktree left behind" in out
    assert out.count("was interrupted: running it again") == 2
    recorded = rows(repo)
    assert sorted(r.experiment for r in recorded) == [0, 1, 2]  # each interrupted attempt exactly once
    assert {r.experiment: r.description for r in recorded[1:]} == {1: "set X=2.0", 2: "set Y=1.5"}
    assert not stray.exists()
    check_record(repo)


def test_ctrl_c_stops_workers_and_leaves_attempts_to_resume(repo: Path, gates: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=1.5)])
    env = clean_env(HARNESS_AGENT_COMMAND=agent)
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    proc = start_loop(repo, env, "--workers", "2")
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists()), proc
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "interrupted (Ctrl-C)" in out, out
    assert len(rows(repo)) == 1 and git(repo, "status", "--porcelain") == ""
    (gates / "hold1").unlink()
    (gates / "hold2").unlink()
    result = harness(repo, env, "loop", "-q", "--workers", "2", "--max-experiments", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r.experiment for r in rows(repo)) == [0, 1, 2]
    check_record(repo)


def test_more_workers_than_cores_is_one_clear_line(repo: Path):
    result = harness(repo, clean_env(), "loop", "-q", "--workers", "64")
    assert result.returncode == 2
    assert "--workers 64 is more than the" in result.stderr and "CPU cores here" in result.stderr
    assert len(rows(repo)) == 1 and git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_unknown_executor_and_missing_gpus_are_refused(repo: Path):
    result = harness(repo, clean_env(), "loop", "-q", "--executor", "slurm")
    assert result.returncode == 2 and "slurm" in result.stderr
    result = harness(repo, clean_env(CUDA_VISIBLE_DEVICES=""), "loop", "-q", "--workers", "2",
                     "--gpus-per-worker", "1")
    assert result.returncode == 2 and "asked for GPUs, but none are visible" in result.stderr


def test_local_slots_split_gpus_and_threads():
    gpu = local_slots(2, Resources(), gpus=["0", "1", "2"], cores=8)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["0", "1"] and gpu[0].env["OMP_NUM_THREADS"] == "4"
    cpu = local_slots(2, Resources(gpus_per_worker=0), gpus=["0"], cores=5)
    assert [s.env["OMP_NUM_THREADS"] for s in cpu] == ["2", "2"] and cpu[0].env["CUDA_VISIBLE_DEVICES"] == ""
    assert local_slots(1, Resources(), gpus=[], cores=2)[0].env["OMP_NUM_THREADS"] == "2"
    assert local_slots(1, Resources(threads_per_worker=1), gpus=[], cores=2)[0].env["OMP_NUM_THREADS"] == "1"
    with pytest.raises(UsageError, match="needs 4 GPUs; this machine has 3"):
        local_slots(2, Resources(gpus_per_worker=2), gpus=["0", "1", "2"], cores=8)
    with pytest.raises(UsageError, match="needs 6 CPU cores; this machine has 4"):
        local_slots(2, Resources(gpus_per_worker=0, threads_per_worker=3), gpus=[], cores=4)


# -- workers, device time, safeguards ------------------------------------------------------------------


def test_workers_and_device_time_in_status_and_report_count_every_run(gates: Path, tmp_path: Path):
    repo = make_gated_repo(tmp_path / "repo", gates)
    assert harness(repo, clean_env(CUDA_VISIBLE_DEVICES=""), "init", "--tag", "t", "-q").returncode == 0  # on CPU
    # then two "GPUs": CUDA_VISIBLE_DEVICES is all the harness reads (the toy runs do not use them)
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=1.5), set_toy(X=2.0), "echo 'nothing to do'"])
    (gates / "hold1").touch()
    (gates / "hold2").touch()
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=agent, CUDA_VISIBLE_DEVICES="0,1"), "--workers", "2",
                      "--max-experiments", "3")
    assert wait_for(lambda: (gates / "started1-0").exists() and (gates / "started2-0").exists()), proc
    status = harness(repo, clean_env(), "status").stdout
    assert "workers     2 on local" in status
    assert re.search(r"w0 \[GPU 0\] #00[12] training [0-9a-f]{7}: set ", status), status
    assert re.search(r"w1 \[GPU 1\] #00[12] training [0-9a-f]{7}: set ", status), status
    (gates / "hold1").unlink()
    (gates / "hold2").unlink()
    finish(proc)
    # a later serial loop: `harness status` must not show the finished loop's workers
    (gates / "hold4").touch()
    serial_agent = scripted_agent(tmp_path / "b", [set_toy(X=2.5)])
    proc = start_loop(repo, clean_env(HARNESS_AGENT_COMMAND=serial_agent, CUDA_VISIBLE_DEVICES="0"),
                      "--max-experiments", "1")
    assert wait_for((gates / "started4-0").exists), proc
    status = harness(repo, clean_env(), "status").stdout
    assert "running     pid" in status and "workers " not in status and "w1 [" not in status, status
    (gates / "hold4").unlink()
    finish(proc)
    status = harness(repo, clean_env(), "status").stdout
    assert "workers " not in status and re.search(r"device time GPU-hours [\d.]+, CPU core-hours [\d.]+", status)

    # every run is counted: the baseline's (no GPU), the workers' (GPU 0 / GPU 1), the serial one's (GPU 0)
    from harness.report import render_report
    from harness.workers import device_report

    report = device_report(repo / ".auto-log-research")
    by_commit = {r.experiment: r.commit for r in rows(repo)}
    devices = {(run.worker, run.device, run.gpus) for run in report.runs}
    baseline = [run for run in report.runs if run.commit == by_commit[0]]
    assert len(baseline) == 2 and all(run.gpus == 0 and run.cpus >= 1 for run in baseline)
    assert {(0, "GPU 0", 1.0), (1, "GPU 1", 1.0)} <= devices
    serial = [run for run in report.runs if run.commit == by_commit[4]]
    assert serial and all((run.worker, run.device, run.gpus) == (0, "GPU 0", 1.0) for run in serial)
    gpu_runs = [run for run in report.runs if run.gpus]
    assert report.gpu_hours == pytest.approx(sum(run.seconds for run in gpu_runs) / 3600) and report.gpu_hours > 0
    assert report.run_hours == pytest.approx(sum(run.seconds for run in report.runs) / 3600)
    # the report lists each worker on its device, what it ran, and the totals
    html = render_report(repo)
    section = html[html.index('<section id="workers">'):]
    section = section[:section.index("</section>")]
    assert "GPU-hours" in section and "CPU core-hours" in section
    assert "<td>w0</td><td>GPU 0</td>" in section and "<td>w1</td><td>GPU 1</td>" in section
    assert "#4 " in section and "#0 baseline" in section


def test_the_same_agent_error_three_times_in_a_row_stops_every_worker(repo: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", ["echo 'unknown model: gpt-9' >&2; exit 3"])
    result = harness(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "loop", "-q", "--workers", "2", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the agent failed the same way 3 times in a row" in result.stdout
    errors = [r for r in rows(repo) if r.status == "agent_error"]
    assert 3 <= len(errors) <= 4 and len({r.failure for r in errors}) == 1  # the one in flight may finish
    assert "next proposal in" in result.stdout  # workers backed off between the failures
    check_record(repo)


def test_transient_agent_errors_back_off_and_failures_in_a_row_are_said(tmp_path: Path, gates: Path):
    # workers and threads from the config file, as with the options
    repo = make_gated_repo(tmp_path / "repo", gates, workers=2, threads_per_worker=1, max_consecutive_failures=2)
    assert harness(repo, clean_env(), "init", "--tag", "t", "-q").returncode == 0
    agent = scripted_agent(tmp_path / "a", ["sleep 30"])
    started = time.time()
    result = harness(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "loop", "-q", "--agent-timeout", "1",
                     "--max-experiments", "3", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reached --max-experiments 3" in result.stdout  # timeouts are transient: they never stop the loop
    assert re.search(r"next proposal in (5|10) s", result.stdout) and time.time() - started >= 5
    assert "2 failures in a row: every worker starts again from the best" in result.stdout
    errors = [r for r in rows(repo) if r.status == "agent_error"]
    assert len(errors) == 3 and all(r.failure.startswith("AgentTimeout") for r in errors)
    from harness.workers import read_status

    state = read_status(repo / ".auto-log-research")
    assert [w["label"] for w in state["workers"]] == ["1 thread", "1 thread"]
    check_record(repo)


def test_offline_agent_on_two_workers_proposes_no_configuration_twice(tmp_path: Path, gates: Path):
    repo = make_gated_repo(tmp_path / "repo", gates, busy=0.3)
    assert harness(repo, clean_env(), "init", "--tag", "t", "-q").returncode == 0
    ideas = repo / ".auto-log-research" / "ideas_queue.md"
    ideas.write_text("# Ideas\n\n## Queue\n\n- [ ] Y = 1.5  # closer to 2\n- [ ] X = 2.0  # closer to 1\n")
    result = harness(repo, clean_env(), "loop", "-q", "--workers", "2", "--agent", "offline",
                     "--max-experiments", "6", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = rows(repo)
    attempts = [r for r in recorded if r.commit != "-"]
    configs = [git(repo, "show", f"{r.commit}:model.py") for r in attempts]
    assert len(set(configs)) == len(configs), [r.description for r in attempts]
    assert len(attempts) >= 5
    # both ideas were taken once each and checked off with their result: no note update was lost
    text = ideas.read_text()
    assert re.search(r"\[x\] Y = 1.5 .*exp \d+", text) and re.search(r"\[x\] X = 2.0 .*exp \d+", text), text
    assert sum(r.description.startswith("idea: ") for r in attempts) == 2
    check_record(repo)


def test_rows_cache_never_goes_stale_when_a_read_races_a_record(repo: Path):
    import threading

    from harness.lab import now
    from harness.session import open_lab

    lab = open_lab(repo)
    best = lab.best()
    real, reading = lab.ledger.rows, threading.Event()

    def slow_rows():  # a worker's read of the ledger that a record() overtakes
        out = real()
        reading.set()
        time.sleep(0.5)
        return out

    lab.ledger.rows = slow_rows
    lab._rows = None
    reader = threading.Thread(target=lab.rows)
    reader.start()
    assert reading.wait(10)
    lab.ledger.rows = real
    row = Row(commit="-", value=None, memory_gb=0.0, status="no_change", description="nothing", experiment=1,
              parent=best.commit, timestamp=now())
    with lab.lock:
        lab.record(row)
    reader.join()
    assert [r.experiment for r in lab.rows()] == [0, 1]


def test_live_view_shows_each_workers_device_and_hypothesis(tmp_path: Path, gates: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    import io

    from rich.console import Console

    from harness.agents.registry import make_agent
    from harness.live import LiveReporter
    from harness.loop import StopRules, run_loop
    from harness.session import open_lab

    repo = make_gated_repo(tmp_path / "repo", gates, busy=1.0)
    assert harness(repo, clean_env(), "init", "--tag", "t", "-q").returncode == 0
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=1.5), set_toy(X=2.0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    events = []
    lab = open_lab(repo, {"agent": "command", "agent_command": agent, "workers": 2}, events.append)
    with lab.lock:
        lab.capture_manifest()
        run_loop(lab, make_agent(lab.cfg.agent, lab.archive), StopRules(max_experiments=2))
    view = LiveReporter(Console(file=io.StringIO(), width=200))
    frames = []
    for event in events:  # the loop's own events, drawn as the panel would draw them
        view._update(event)
        console = Console(file=io.StringIO(), width=200, record=True)
        console.print(view.render())
        frames.append(console.export_text())
    both = [f for f in frames if "w0 [GPU 0]" in f and "w1 [GPU 1]" in f and "set Y=1.5" in f and "set X=2.0" in f]
    assert both, frames[-1]
    assert any(re.search(r"w[01] \[GPU [01]\] #00[12] +training.*set [XY]=", f) for f in both)


def test_one_worker_with_threads_asked_for_runs_in_its_slot(repo: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(Y=0.5)])
    result = harness(repo, clean_env(HARNESS_AGENT_COMMAND=agent), "loop", "-q", "--threads-per-worker", "1",
                     "--max-experiments", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    row = rows(repo)[-1]
    outcome = json.loads((repo / ".auto-log-research" / row.commit / "outcome.json").read_text())
    assert (outcome["worker"], outcome["device"], outcome["cpus"], outcome["gpus"]) == (0, "1 thread", 1, 0.0)
    check_record(repo)
