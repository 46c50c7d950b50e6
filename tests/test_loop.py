"""The research loop through the CLI, on a toy target whose runs are fast and deterministic:
real git, real subprocesses for runs and agents; nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.faults import alive
from support.research import git, harness, make_toy_repo, scripted_agent, set_toy

from harness.caps import open_session
from harness.cli import cli
from harness.ledger import Ledger


def invoke(repo: Path, *args: str, code: int | None = 0):
    result = CliRunner().invoke(cli, [*args, "--repo", str(repo)], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def rows(repo: Path):
    return Ledger(repo / ".auto-log-research" / "results.tsv", "loss").rows()


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    repo = make_toy_repo(tmp_path / "repo")
    invoke(repo, "init", "--tag", "t", "-q")
    return repo


def test_init_starts_branch_and_measures_noise(toy: Path):
    assert git(toy, "branch", "--show-current") == "autoresearch/t"
    (base,) = rows(toy)
    assert base.status == "baseline" and base.runs == (5.0, 5.0005) and base.value == pytest.approx(5.00025)
    assert "loss: 5.000250" in git(toy, "log", "-1")  # the result is a git note plain `git log` shows
    assert "/.auto-log-research/" in (toy / ".git" / "info" / "exclude").read_text()
    assert "Current Best" in (toy / ".auto-log-research" / "insights.md").read_text()
    out = invoke(toy, "status").output
    assert "best" in out and "5.000250" in out and "sigma" in out


def test_loop_keeps_real_gains_and_resets_everything_else(toy: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "agent", [
        set_toy(X=2.0),                                 # better by 3: kept after confirmation
        set_toy(X=2.5),                                 # worse: discarded
        "echo '# a comment' >> model.py\necho 'cosmetic'",  # no real change: within noise
        set_toy(CRASH=1),                               # crash
        "echo 'nothing to do'",                         # no change: costs no run
        "echo 'X = (' >> model.py\necho 'broken'",      # does not parse (twice): invalid
        "echo hacked >> evaluate.py\n" + set_toy(Y=2.0),  # forbidden file: violation
        "exit 3",                                       # agent failure
        set_toy(X=1.9) + "\ngit commit -qam mine\necho 'committed myself'",  # git ops of its own: undone
    ])
    out = invoke(toy, "loop", "--agent-command", agent, "--max-experiments", "9", "-q").output
    assert "9 experiments, 1 kept" in out
    statuses = [r.status for r in rows(toy)]
    assert statuses == ["baseline", "keep", "discard", "discard", "crash", "no_change", "invalid", "violation",
                        "agent_error", "violation"]
    keep = rows(toy)[1]
    assert keep.runs == (2.0, 2.0005) and keep.value == pytest.approx(2.00025)
    # HEAD is the best; its file is the kept one; the evaluation is untouched.
    assert git(toy, "rev-parse", "HEAD") == keep.commit
    assert "X = 2.0" in (toy / "model.py").read_text()
    assert "hacked" not in (toy / "evaluate.py").read_text()
    assert git(toy, "status", "--porcelain") == ""
    # Every attempt that ran is a commit reachable from a ref, with its archive folder.
    for r in rows(toy)[1:]:
        if r.commit != "-":
            assert git(toy, "cat-file", "-t", r.commit) == "commit"
            assert (toy / ".auto-log-research" / r.commit / "run.log").exists()
    refs = git(toy, "for-each-ref", "--format=%(refname)", "refs/auto-log-research/attempts/")
    assert len(refs.splitlines()) == 4
    assert "the model crashed" in rows(toy)[4].failure
    log = invoke(toy, "log").output
    assert log.count("\n") >= 9 and "keep" in log and "violation" in log


def test_do_nothing_agent_keeps_nothing(toy: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "agent", ["echo '# still nothing' >> model.py\necho 'cosmetic'"])
    invoke(toy, "loop", "--agent-command", agent, "--max-experiments", "12", "-q")
    statuses = [r.status for r in rows(toy)[1:]]
    assert len(statuses) == 12 and "keep" not in statuses
    assert git(toy, "rev-parse", "HEAD") == rows(toy)[0].commit


def test_stop_conditions(toy: Path, tmp_path: Path):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=1.0), set_toy(Y=3.0)])
    out = invoke(toy, "loop", "--agent-command", agent, "--until", "1.5", "-q").output
    assert "reached --until" in out and len(rows(toy)) == 2
    out = invoke(toy, "loop", "--agent-command", agent, "--patience", "2", "-q").output
    assert "--patience 2" in out and len(rows(toy)) == 4
    (toy / ".auto-log-research" / "STOP").touch()
    out = invoke(toy, "loop", "--agent-command", agent, "-q").output
    assert "STOP file" in out and len(rows(toy)) == 4
    assert not (toy / ".auto-log-research" / "STOP").exists()


def test_harness_run_records_a_manual_edit(toy: Path):
    (toy / "model.py").write_text((toy / "model.py").read_text().replace("X = 3.0", "X = 1.5"))
    invoke(toy, "run", "-m", "move X toward 1", "-q")
    last = rows(toy)[-1]
    assert last.status == "keep" and last.description == "move X toward 1"
    result = invoke(toy, "run", "-q", code=2)
    assert "nothing to run" in result.output


def test_a_gain_inside_the_margin_reads_within_noise_not_better(toy: Path):
    """X 3 -> 2.999 lowers the loss by 0.004, under the 0.01 margin: discarded, and every view
    says so instead of calling the discarded change `better`."""
    (toy / "model.py").write_text((toy / "model.py").read_text().replace("X = 3.0", "X = 2.999"))
    invoke(toy, "run", "-m", "nudge X", "-q")
    last = rows(toy)[-1]
    assert last.status == "discard" and -0.01 < last.delta < 0
    assert f"discard     loss {last.value:.6f}  Δ {last.delta:+.4f} within noise (margin 0.0100)  nudge X" in (
        invoke(toy, "log").output)
    assert f"delta vs best: {last.delta:+.6f} (within noise; best" in git(toy, "notes", "show", last.commit)


def _wait_for(pred, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _lock_phase(repo: Path) -> str | None:
    try:
        return json.loads((repo / ".auto-log-research" / "lock").read_text()).get("phase")
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_loop_resumes_without_loss_or_double_count(toy: Path, tmp_path: Path, sig):
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=2.0)])
    env = {**os.environ, "HARNESS_AGENT_COMMAND": agent}
    (toy / "slow.flag").touch()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "harness"), "loop", "-q", "--max-experiments", "2"],
                            cwd=toy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: _lock_phase(toy) == "training" and "slow run" in _run_logs(toy))
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert "interrupted" in out and proc.returncode == 0
        assert git(toy, "rev-parse", "HEAD") == rows(toy)[0].commit  # back at the best
    assert len(rows(toy)) == 1  # nothing half-recorded
    leftover = [int(p.read_text()) for p in (toy / ".auto-log-research").glob("**/run.pid")]
    assert len(leftover) == (1 if sig == signal.SIGKILL else 0)  # kill -9 leaves the run behind
    (toy / "slow.flag").unlink()
    result = harness(toy, env, "loop", "-q", "--max-experiments", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    for pid in leftover:  # ... and the resumed harness stops it
        assert "left running by the harness that was killed" in result.stdout
        assert not alive(pid)  # gone, or a zombie its new parent has not reaped yet
    recorded = rows(toy)
    assert [r.experiment for r in recorded] == [0, 1, 2]  # the interrupted one once, then one more
    assert recorded[1].description == "set X=2.0" and recorded[1].status == "keep"
    assert git(toy, "status", "--porcelain") == "?? slow.flag" or git(toy, "status", "--porcelain") == ""


def _run_logs(repo: Path) -> str:
    return "".join(p.read_text() for p in (repo / ".auto-log-research").glob("*/run.log"))


def test_second_harness_is_refused(toy: Path, tmp_path: Path):
    (toy / "slow.flag").touch()
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0)])
    env = {**os.environ, "HARNESS_AGENT_COMMAND": agent}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "harness"), "loop", "-q"], cwd=toy, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: _lock_phase(toy) == "training")
        result = harness(toy, env, "run", "-q")
        assert result.returncode == 2 and "another harness" in result.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_bad_input_gives_one_line_and_changes_nothing(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    r = invoke(plain, "init", code=2)
    assert "not inside a git repository" in r.output
    repo = make_toy_repo(tmp_path / "repo")
    r = invoke(repo, "loop", code=2)
    assert "harness init" in r.output
    (repo / "model.py").write_text("X = 5.0\n")
    r = invoke(repo, "init", code=2)
    assert "uncommitted changes" in r.output and (repo / "model.py").read_text() == "X = 5.0\n"
    git(repo, "checkout", "-q", "model.py")
    git(repo, "checkout", "-q", "--detach")
    assert "detached" in invoke(repo, "init", code=2).output
    git(repo, "checkout", "-q", "main")
    for args, said in ((["init", "--budget", "0"], "must be positive"), (["loop", "--agent", "nope"], "'nope' is not one of")):
        r = harness(repo, dict(os.environ), *args)  # as a user runs it: click's usage errors, said the same way
        assert r.returncode == 2 and said in r.stderr and "Usage:" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 2  # the error and the hint
    assert git(repo, "branch", "--show-current") == "main" and not (repo / ".auto-log-research").exists()
    (repo / "new.py").write_text("Z = 1\n")
    (repo / "harness.toml").write_text((repo / "harness.toml").read_text().replace('["model.py"]', '["new.py"]'))
    git(repo, "commit", "-qam", "target new.py")
    r = invoke(repo, "init", code=2)  # new.py exists but is not committed: a reset to the baseline would lose it
    assert "new.py not committed" in r.output and git(repo, "branch", "--show-current") == "main"


def test_harness_run_never_destroys_the_users_work(toy: Path):
    readme = toy / "harness.toml"
    mine = readme.read_text() + "# my own change\n"
    readme.write_text(mine)
    (toy / "model.py").write_text((toy / "model.py").read_text().replace("X = 3.0", "X = 1.5"))
    r = invoke(toy, "run", "-m", "move X", "-q", code=2)
    assert "uncommitted changes to harness.toml" in r.output
    assert readme.read_text() == mine and "X = 1.5" in (toy / "model.py").read_text()  # both left as they were
    git(toy, "checkout", "-q", "harness.toml")
    (toy / "model.py").write_text("X = (\n")
    r = invoke(toy, "run", "-m", "broken", "-q", code=2)
    assert "does not parse" in r.output and "nothing was run or recorded" in r.output
    assert (toy / "model.py").read_text() == "X = (\n" and len(rows(toy)) == 1  # the edit is still there to fix
    git(toy, "checkout", "-q", "model.py")


def test_harness_run_after_kill9_finishes_the_interrupted_attempt_once(toy: Path):
    (toy / "model.py").write_text((toy / "model.py").read_text().replace("X = 3.0", "X = 2.0"))
    (toy / "slow.flag").touch()
    exe = str(Path(sys.executable).parent / "harness")
    proc = subprocess.Popen([exe, "run", "-m", "X to 2", "-q"], cwd=toy, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: _lock_phase(toy) == "training" and "slow run" in _run_logs(toy))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (toy / "slow.flag").unlink()
    (toy / "model.py").write_text((toy / "model.py").read_text() + "# a new thought\n")
    r = invoke(toy, "run", "-q", code=2)  # a new edit on top of the unrecorded attempt: refused, kept
    assert "was interrupted and is not recorded yet" in r.output and "# a new thought" in (toy / "model.py").read_text()
    assert "left running by the harness that was killed" in r.output  # the killed one's run is stopped first
    git(toy, "checkout", "-q", "model.py")
    r = invoke(toy, "run", "-q")
    assert "was interrupted: running it again" in r.output
    assert [(x.experiment, x.description, x.status) for x in rows(toy)] == [(0, "baseline", "baseline"),
                                                                             (1, "X to 2", "keep")]
    assert invoke(toy, "run", "-q", code=2).output.count("nothing to run") == 1


def test_changed_evaluation_since_init_is_refused(toy: Path, tmp_path: Path):
    """A fixed file changed (and even committed) while no harness ran cannot become the new
    trusted state at the next start: the baseline was measured with the old one."""
    (toy / "evaluate.py").write_text((toy / "evaluate.py").read_text().replace("** 2 +", "** 2 * 0 +", 1))
    git(toy, "commit", "-qam", "an easier evaluation")
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0)])
    r = invoke(toy, "loop", "--agent-command", agent, "-q", code=2)
    assert "evaluate.py changed since `harness init`" in r.output and len(rows(toy)) == 1


def test_agent_that_drops_the_users_stash_gets_it_back(toy: Path, tmp_path: Path):
    (toy / "harness.toml").write_text((toy / "harness.toml").read_text() + "# stashed idea\n")
    git(toy, "stash", "-q")
    (toy / "harness.toml").write_text((toy / "harness.toml").read_text() + "# older\n")
    git(toy, "stash", "-q")
    before = git(toy, "stash", "list", "--format=%H").split()
    agent = scripted_agent(tmp_path / "a", ["git stash clear\n" + set_toy(X=2.0)])
    invoke(toy, "loop", "--agent-command", agent, "--max-experiments", "1", "-q")
    assert rows(toy)[-1].status == "violation" and "stash" in rows(toy)[-1].failure
    assert sorted(git(toy, "stash", "list", "--format=%H").split()) == sorted(before)


def test_corrupt_ledger_lines_are_skipped_with_a_warning(toy: Path, tmp_path: Path):
    path = toy / ".auto-log-research" / "results.tsv"
    with open(path, "a") as f:
        f.write("garbage line without tabs\n")
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0)])
    out = invoke(toy, "loop", "--agent-command", agent, "--max-experiments", "1").output
    assert "skipped a corrupt line" in out
    assert rows(toy)[-1].status == "keep"


def test_archive_of_another_branch_is_refused(toy: Path):
    git(toy, "checkout", "-q", "-b", "other")
    r = invoke(toy, "loop", code=2)
    assert "belongs to branch autoresearch/t" in r.output


def test_caps_session_ends_with_the_loop_but_not_with_an_interrupt(toy: Path, tmp_path: Path):
    """--max-cost / --max-tokens count per night: a loop that ends closes its session; one that is
    interrupted keeps it, so the resumed loop goes on counting the same spend."""
    session = toy / ".auto-log-research" / "caps_session.json"
    agent = scripted_agent(tmp_path / "a", [set_toy(X=2.0), set_toy(Y=2.0)])
    env = {**os.environ, "HARNESS_AGENT_COMMAND": agent}
    (toy / "slow.flag").touch()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "harness"), "loop", "-q", "--max-experiments", "2"],
                            cwd=toy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: _lock_phase(toy) == "training")
    opened = open_session(toy / ".auto-log-research")  # what an LLM backend opens as it starts
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert json.loads(session.read_text())["session"] == opened  # still the same night
    (toy / "slow.flag").unlink()
    assert harness(toy, env, "loop", "-q", "--max-experiments", "1").returncode == 0
    assert not session.exists()
