"""The `cat program.md | claude -p` mode end to end, through the REAL Claude Code CLI: a research
repository with the project's program.md and .claude/settings.json, `harness init` run by the
test, then Claude Code (the model played by a local Messages API stand-in) follows program.md:
reads train.py, edits it, runs `harness run` through its Bash tool, writes a finding, and is
refused every command the repository's settings do not allow. The record is checked in git and
in the archive, as a person would read it in the morning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.messages_server import MessagesServer, text, tool_use
from support.claude_cli import QUIET_ENV, require_claude
from support.research import git, harness, harness_env, make_research_repo

from harness.agents.claude import parse_stream
from harness.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-ant-api03-program-md-test-0123456789"
HYPOTHESIS = "MATRIX_LR 0.04 -> 0.05: the loss is still falling fast at the end"
DENIED = ["git reset --hard HEAD~1", "rm -rf .auto-log-research", "python -c 'print(1)'"]


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return require_claude()


@pytest.fixture
def research(tmp_path: Path, alr_env: dict[str, str]) -> Path:
    """A research repository as a user sets it up: the project's program.md and Claude Code
    settings committed with the code, then `harness init` (short budget, one baseline run)."""
    repo = make_research_repo(tmp_path / "repo", {"MATRIX_LR": 0.04})  # the value the scripted edit expects
    shutil.copy2(ROOT / "program.md", repo / "program.md")
    (repo / ".claude").mkdir()
    shutil.copy2(ROOT / ".claude" / "settings.json", repo / ".claude" / "settings.json")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "program.md and Claude Code settings")
    done = harness(repo, harness_env(alr_env), "init", "--tag", "t", "--budget", "3", "--baseline-runs", "1", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    return repo


def claude_env(tmp_path: Path, server: MessagesServer, alr_env: dict[str, str], repo: Path) -> dict[str, str]:
    """What a user's shell has: the venv activated (`harness` on PATH), the data settings, and
    Claude Code pointed at the stand-in. The folder-trust entry stands for the dialog a first
    interactive `claude` in the repository shows: without it Claude Code ignores the project's
    allow rules (deny rules apply regardless)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".claude.json").write_text(json.dumps({"projects": {str(repo): {"hasTrustDialogAccepted": True}}}))
    venv_bin = str(Path(sys.executable).parent)
    env = harness_env(alr_env, HOME=str(home), ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY=KEY,
                      **QUIET_ENV)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    return env


def bash(command: str) -> tuple[str, dict]:
    return ("Bash", {"command": command, "description": command[:40]})


def test_program_md_mode_records_the_experiment_and_denies_the_rest(research, alr_env, claude_bin, tmp_path):
    repo = research
    train, insights = repo / "train.py", repo / ".auto-log-research" / "insights.md"
    baseline = Ledger(repo / ".auto-log-research" / "results.tsv", "val_bpb").rows()
    with MessagesServer() as server:
        server.enqueue([
            tool_use(*bash("harness status")),                                  # step 1 of the loop
            tool_use(*bash("harness init --tag again")),                        # set-up: refused, research exists
            tool_use("Read", {"file_path": str(train)}),                        # step 2: read the code
            tool_use("Edit", {"file_path": str(train), "old_string": "MATRIX_LR = 0.04 ",
                              "new_string": "MATRIX_LR = 0.05 "}),              # step 3: one idea
            tool_use(*bash(f'harness run -m "{HYPOTHESIS}" --budget 3')),        # step 4: the bookkeeping
            tool_use(*bash(DENIED[0])),                                         # never allowed
            tool_use(*bash(DENIED[1])),
            tool_use(*bash(DENIED[2])),                                         # on no list: denied too
            # step 5: read the notes after the run (it rewrote "## Current Best"), then add a finding
            tool_use("Read", {"file_path": str(insights)}),
            tool_use("Edit", {"file_path": str(insights), "old_string": "## Findings\n",
                              "new_string": f"## Findings\n\n- exp 1: {HYPOTHESIS}\n"}),
            text("Experiment 1 is recorded; next I would try a longer warmdown."),
        ])
        started = time.monotonic()
        done = subprocess.run(
            [claude_bin, "-p", "--permission-mode", "dontAsk", "--output-format", "stream-json", "--verbose",
             "--model", "claude-sonnet-4-6"],
            input=(ROOT / "program.md").read_text(), capture_output=True, text=True, cwd=repo,
            env=claude_env(tmp_path, server, alr_env, repo), timeout=300)
        print(f"claude -p with one harness run: {time.monotonic() - started:.1f} s")
        results = [json.dumps(r.body["messages"][-1]["content"]) for r in server.script_requests[1:]]
        assert server.remaining == 0, done.stdout[-3000:] + done.stderr[-2000:]

    result = parse_stream(done.stdout)
    assert not result.is_error, result.text
    # the commands outside the allow-list were refused, and nothing they would have done happened
    assert [d["tool_input"].get("command") for d in result.permission_denials] == DENIED
    assert (repo / ".auto-log-research" / "results.tsv").exists()
    # what the model read back: the status, then `harness run`'s own result line
    assert "best" in results[0] and "val_bpb" in results[0]
    assert "research already started here" in results[1]  # allowed to run; the harness said no
    assert "#001" in results[4] and HYPOTHESIS in results[4], results[4][:500]  # its one result line

    # the record: a new attempt commit with its note, its ref, the ledger row and the run folder
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "val_bpb").rows()
    assert rows[: len(baseline)] == baseline
    (row,) = rows[len(baseline):]
    assert row.description == HYPOTHESIS and row.agent == "manual" and row.experiment == 1
    assert row.status in ("keep", "discard") and row.value is not None
    assert git(repo, "log", "-1", "--format=%s", row.commit) == HYPOTHESIS
    assert "MATRIX_LR = 0.05" in git(repo, "show", f"{row.commit}:train.py")
    assert f"status: {row.status}" in git(repo, "notes", "show", row.commit)
    assert git(repo, "rev-parse", "refs/auto-log-research/attempts/0001") == row.commit
    run_dir = repo / ".auto-log-research" / row.commit
    for name in ("run.log", "metrics.jsonl", "run_summary.json", "analysis.md", "diff.patch"):
        assert (run_dir / name).is_file(), name
    # the tree is the best, as the harness left it; the finding is in the notes
    best = next(r for r in reversed(rows) if r.kept)
    assert git(repo, "rev-parse", "HEAD") == best.commit
    assert git(repo, "status", "--porcelain") == ""
    assert f"- exp 1: {HYPOTHESIS}" in insights.read_text()
    assert KEY not in done.stdout
