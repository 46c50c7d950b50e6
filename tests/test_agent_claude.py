"""The `claude` backend against the REAL Claude Code CLI, with the model played by a local
Messages API stand-in; a fake `claude` script covers errors the real CLI won't make on demand."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fakes.messages_server import MessagesServer, error, text, tool_use
from support.agent_repo import make_agent_repo
from support.claude_cli import QUIET_ENV, require_claude

from harness.agents.base import AgentContext, TargetInfo
from harness.agents.claude import ClaudeCodeAgent, parse_stream
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded
from harness.llmlog import LlmLog, read_calls

FAKE_CLAUDE = Path(__file__).parent / "fakes" / "fake_claude"
TRAIN = "LR = 0.01\nSTEPS = 10\nprint(LR, STEPS)\n"


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return require_claude()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_agent_repo(tmp_path / "repo", TRAIN, "- [ ] LR = 0.02  # try")


@pytest.fixture
def server():
    with MessagesServer() as s:
        yield s


def context(repo: Path, **kw) -> AgentContext:
    return AgentContext(workdir=repo, archive_dir=repo / ".auto-log-research", experiment=3,
                        target=TargetInfo(), prompt="Improve val_bpb by editing train.py.", **kw)


def claude_env(tmp_path: Path, server: MessagesServer | None, api_key: str | None = "sk-ant-test-0123456789") -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), **QUIET_ENV}
    if server:
        env["ANTHROPIC_BASE_URL"] = server.base_url
    if api_key:
        env["ANTHROPIC_API_KEY"] = api_key
    return env


def agent(repo: Path, binary: str, env: dict, **settings) -> ClaudeCodeAgent:
    values = {"name": "claude", "model": "claude-sonnet-4-6", "timeout_s": 120, **settings}
    return ClaudeCodeAgent(AgentSettings(**values), LlmLog.in_archive(repo / ".auto-log-research"),
                           binary=binary, env=env)


def test_real_claude_edits_train_py_and_is_refused_everything_else(repo, server, claude_bin, tmp_path):
    train, prepare = repo / "train.py", repo / "prepare.py"
    insights = repo / ".auto-log-research" / "insights.md"
    server.enqueue([
        tool_use("Read", {"file_path": str(train)}),
        tool_use("Edit", {"file_path": str(train), "old_string": "LR = 0.01", "new_string": "LR = 0.02"}),
        tool_use("Read", {"file_path": str(prepare)}),
        tool_use("Edit", {"file_path": str(prepare), "old_string": "FIXED = 1", "new_string": "FIXED = 2"}),
        tool_use("Bash", {"command": "touch hacked.txt", "description": "try a shell"}),
        tool_use("Read", {"file_path": "/etc/passwd"}),  # outside the repository: denied
        tool_use("Glob", {"pattern": "*", "path": "/etc"}),
        tool_use("Read", {"file_path": str(insights)}),
        tool_use("Edit", {"file_path": str(insights), "old_string": "## Current Best\n",
                          "new_string": "## Current Best\n- LR 0.01 is low\n"}),
        text("I looked at the schedule.\nLR 0.01 -> 0.02: the loss curve is still falling steeply"),
    ])
    proposal = agent(repo, claude_bin, claude_env(tmp_path, server)).propose(context(repo))

    assert train.read_text() == TRAIN.replace("LR = 0.01", "LR = 0.02")
    assert prepare.read_text() == "FIXED = 1\n"
    assert not (repo / "hacked.txt").exists()
    assert "LR 0.01 is low" in insights.read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status.splitlines() == [" M train.py"]  # Claude Code left nothing else in the tree
    assert proposal.description == "LR 0.01 -> 0.02: the loss curve is still falling steeply"
    assert proposal.details["num_turns"] == 10
    denials = [(d["tool_name"], d["tool_input"].get("file_path") or d["tool_input"].get("path"))
               for d in proposal.details["permission_denials"]]
    assert denials == [("Edit", str(prepare)), ("Read", "/etc/passwd"), ("Glob", "/etc")]
    assert proposal.details["denied_tools"] == ["Edit", "Glob", "Read"]
    reads = [json.dumps(r.body["messages"][-1]["content"]) for r in server.script_requests[6:8]]
    assert all("Permission to use" in r and "root:" not in r for r in reads)  # /etc/passwd never reached the model
    assert proposal.usage.cost_usd > 0 and proposal.usage.tokens_in > 0
    assert server.remaining == 0

    # The model was offered only the five file tools, and the harness guidance was appended.
    first = server.script_requests[0].body
    assert sorted(t["name"] for t in first["tools"]) == ["Edit", "Glob", "Grep", "Read", "Write"]
    assert "answer with ONE line: the hypothesis" in json.dumps(first["system"])
    assert first["model"] == "claude-sonnet-4-6"

    calls = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert len(calls) == 1
    call = calls[0]
    assert (call["backend"], call["stage"], call["experiment"], call["error"]) == ("claude", "propose", 3, None)
    assert call["cost_usd"] == pytest.approx(proposal.usage.cost_usd, rel=1e-3)
    assert [c["name"] for c in call["tool_calls"]][:2] == ["Read", "Edit"]
    # the denials are in the log too, not dropped
    assert call["details"]["num_turns"] == 10 and call["details"]["denied_tools"] == ["Edit", "Glob", "Read"]
    assert [d["tool_input"].get("file_path") for d in call["details"]["permission_denials"]][:2] == [
        str(prepare), "/etc/passwd"]
    assert "sk-ant-test-0123456789" not in (repo / ".auto-log-research" / "llm_calls.jsonl").read_text()


def test_real_claude_with_allow_shell_may_run_bash(repo, server, claude_bin, tmp_path):
    server.enqueue([tool_use("Bash", {"command": "touch ran.txt", "description": "x"}), text("ran a command")])
    proposal = agent(repo, claude_bin, claude_env(tmp_path, server), allow_shell=True).propose(context(repo))
    assert (repo / "ran.txt").exists()
    assert proposal.details["permission_denials"] == []


def test_real_claude_without_credentials_is_a_setup_error(repo, claude_bin, tmp_path):
    env = claude_env(tmp_path, None, api_key=None)
    env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # never reached: it stops before calling
    with pytest.raises(AgentSetupError, match="run `claude` once to log in, or set ANTHROPIC_API_KEY"):
        agent(repo, claude_bin, env).propose(context(repo))
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert "AgentSetupError" in call["error"]


def test_real_claude_with_a_rejected_api_key_is_a_setup_error(repo, server, claude_bin, tmp_path):
    server.enqueue([error(401, "invalid x-api-key", "authentication_error", sticky=True)])
    env = {**claude_env(tmp_path, server), "CLAUDE_CODE_MAX_RETRIES": "0"}  # it retries 401s by default
    with pytest.raises(AgentSetupError, match="log in"):
        agent(repo, claude_bin, env).propose(context(repo))
    assert TRAIN == (repo / "train.py").read_text()


def test_cap_below_one_call_stops_before_claude_starts(repo, server, claude_bin, tmp_path):
    a = agent(repo, claude_bin, claude_env(tmp_path, server))
    a.caps = Caps(max_cost=0.0001)
    with pytest.raises(CapExceeded, match=r"would pass --max-cost \$0.00"):
        a.propose(context(repo))
    assert server.requests == []


# --- the fake `claude` for the paths the real one won't take on demand -----------------------


def fake_env(tmp_path: Path, scenario: str) -> dict:
    return {**os.environ, "FAKE_CLAUDE_SCENARIO": scenario, "FAKE_CLAUDE_ARGS": str(tmp_path / "args.jsonl"),
            "FAKE_CLAUDE_CHILD_PID": str(tmp_path / "child.pid")}


def test_missing_binary_says_how_to_install(repo, tmp_path):
    a = agent(repo, str(tmp_path / "no" / "claude"), {})
    with pytest.raises(AgentSetupError, match="npm install -g @anthropic-ai/claude-code, or choose --agent offline"):
        a.propose(context(repo))


def test_not_logged_in_and_the_command_line(repo, tmp_path):
    a = agent(repo, str(FAKE_CLAUDE), fake_env(tmp_path, "not_logged_in"), max_turns=7)
    with pytest.raises(AgentSetupError):
        a.propose(context(repo, retry_error="SyntaxError on line 3"))
    (sent,) = [json.loads(line) for line in (tmp_path / "args.jsonl").read_text().splitlines()]
    argv = sent["argv"]
    assert argv[argv.index("--max-turns") + 1] == "7"
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert "Bash" not in argv[argv.index("--tools") + 1]
    allowed = argv[argv.index("--allowedTools") + 1].split(",")
    assert "Edit(./train.py)" in allowed
    assert "Read(./**)" in allowed and not {"Read", "Glob", "Grep"} & set(allowed)  # reads stay in the repo
    assert "SyntaxError on line 3" in sent["stdin"]  # the prompt goes on stdin, with the retry reason


def test_malformed_stream_json_is_an_agent_error(repo, tmp_path):
    a = agent(repo, str(FAKE_CLAUDE), fake_env(tmp_path, "malformed"))
    with pytest.raises(AgentError, match="malformed stream-json"):
        a.propose(context(repo))
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert "malformed" in call["error"]


def test_no_result_event_is_an_agent_error(repo, tmp_path):
    with pytest.raises(AgentError, match="without a result event"):
        agent(repo, str(FAKE_CLAUDE), fake_env(tmp_path, "no_result")).propose(context(repo))


def test_hang_past_the_timeout_kills_the_process_group(repo, tmp_path):
    a = agent(repo, str(FAKE_CLAUDE), fake_env(tmp_path, "hang"), timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(AgentTimeout):
        a.propose(context(repo))
    assert time.monotonic() - started < 10
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the grandchild outlived the timeout kill"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z"  # a zombie is dead, just not yet reaped


def test_parse_stream_reads_the_result_event():
    lines = [
        {"type": "system", "subtype": "init"},
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Edit", "input": {}}]}},
        {"type": "result", "subtype": "success", "is_error": False, "num_turns": 2, "result": "did it",
         "total_cost_usd": 0.25, "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5},
         "permission_denials": [{"tool_name": "Bash"}]},
    ]
    r = parse_stream("\n".join(json.dumps(x) for x in lines))
    assert (r.num_turns, r.cost_usd, r.text, r.is_error) == (2, 0.25, "did it", False)
    assert (r.usage.tokens_in, r.usage.tokens_out, r.usage.tokens_cached) == (100, 5, 90)
    assert r.tool_calls == ({"name": "Edit", "input": {}},)


def test_repo_settings_json_governs_the_program_md_mode(repo, server, claude_bin, tmp_path):
    """`cat program.md | claude -p` in the repo: .claude/settings.json decides what runs."""
    (repo / ".claude").mkdir()
    (repo / ".claude" / "settings.json").write_text(
        (Path(__file__).resolve().parents[1] / ".claude" / "settings.json").read_text())
    (repo / ".auto-log-research" / "results.tsv").write_text("commit\tval_bpb\nabc1234\t1.234\n")
    train, prepare = repo / "train.py", repo / "prepare.py"
    server.enqueue([
        tool_use("Bash", {"command": "cat .auto-log-research/results.tsv", "description": "ledger"}),
        tool_use("Bash", {"command": "rm train.py", "description": "no"}),
        tool_use("Bash", {"command": "git commit --allow-empty -m sneaky", "description": "no"}),
        tool_use("Read", {"file_path": str(prepare)}),
        tool_use("Edit", {"file_path": str(prepare), "old_string": "FIXED = 1", "new_string": "FIXED = 2"}),
        tool_use("Read", {"file_path": str(train)}),
        tool_use("Edit", {"file_path": str(train), "old_string": "STEPS = 10", "new_string": "STEPS = 12"}),
        text("done"),
    ])
    # Claude Code applies a project's allow rules only once its workspace is trusted (the dialog
    # of a first interactive `claude` there); deny rules apply regardless.
    home = Path(claude_env(tmp_path, server)["HOME"])
    (home / ".claude.json").write_text(json.dumps({"projects": {str(repo): {"hasTrustDialogAccepted": True}}}))
    done = subprocess.run([claude_bin, "-p", "--output-format", "stream-json", "--verbose"],
                          input="follow program.md", capture_output=True, text=True, cwd=repo,
                          env=claude_env(tmp_path, server), timeout=120)
    result = parse_stream(done.stdout)
    assert "STEPS = 12" in train.read_text() and prepare.read_text() == "FIXED = 1\n"
    denied = [d["tool_input"].get("command") or d["tool_input"].get("file_path")
              for d in result.permission_denials]
    assert denied == ["rm train.py", "git commit --allow-empty -m sneaky"]
    assert any("denied by your permission settings" in e for e in result.denied_tool_errors)  # prepare.py
    ledger_result = server.script_requests[1].body["messages"][-1]["content"][0]
    assert "abc1234" in json.dumps(ledger_result)  # the allowed cat ran
    log = subprocess.run(["git", "log", "--oneline"], cwd=repo, capture_output=True, text=True).stdout
    assert "sneaky" not in log


def test_registry_agent_finds_claude_through_the_environment(repo, server, claude_bin, tmp_path, monkeypatch):
    from harness.agents.registry import make_agent

    for key, value in claude_env(tmp_path, server).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HARNESS_CLAUDE_BIN", claude_bin)
    server.enqueue([tool_use("Read", {"file_path": str(repo / "train.py")}),
                    tool_use("Edit", {"file_path": str(repo / "train.py"), "old_string": "STEPS = 10",
                                      "new_string": "STEPS = 11"}),
                    text("STEPS 10 -> 11")])
    proposal = make_agent(AgentSettings(name="claude"), repo / ".auto-log-research").propose(context(repo))
    assert proposal.description == "STEPS 10 -> 11" and "STEPS = 11" in (repo / "train.py").read_text()
    assert server.script_requests[0].body["model"].startswith("claude-sonnet")  # the "sonnet" alias


def test_max_turns_reached_still_returns_the_edits_made(repo, server, claude_bin, tmp_path):
    train = repo / "train.py"
    server.enqueue([tool_use("Read", {"file_path": str(train)}),
                    tool_use("Edit", {"file_path": str(train), "old_string": "LR = 0.01", "new_string": "LR = 0.05"}),
                    tool_use("Read", {"file_path": str(train)})])
    proposal = agent(repo, claude_bin, claude_env(tmp_path, server), max_turns=2).propose(context(repo))
    assert proposal.details["hit_max_turns"] is True
    assert "LR = 0.05" in train.read_text()
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert call["error"] is None and "maximum number of turns" in call["note"]


def test_claude_is_given_the_remaining_budget_less_one_turn_and_stays_under_the_cap(
        repo, server, claude_bin, tmp_path):
    """Claude Code checks --max-budget-usd after each turn, so it passes it by one turn: the
    harness passes what is left of --max-cost less one turn's reserve, and the spend stays under."""
    server.enqueue([tool_use("Read", {"file_path": str(repo / "train.py")})] * 30)
    a = agent(repo, claude_bin, claude_env(tmp_path, server))
    a.caps = Caps(max_cost=0.40, max_tokens=None)
    a.caps.add(0.05, 0)  # spent earlier in the night
    with pytest.raises(CapExceeded, match="claude reached the --max-cost budget"):
        a.propose(context(repo))
    assert 2 <= len(server.script_requests) < 30  # Claude Code's turns cost ~$0.09 each here
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert "cost cap" in call["error"] and call["details"]["subtype"] == "error_max_budget_usd"
    reserve, _ = a.turn_reserve("claude-sonnet-4-6", len("Improve val_bpb by editing train.py."))
    assert call["cost_usd"] >= 0.35 - reserve  # it spent its share ...
    assert a.caps.spent_cost <= 0.40  # ... and the night stayed under --max-cost


def test_no_budget_left_after_the_reserve_stops_before_claude_starts(repo, server, claude_bin, tmp_path):
    a = agent(repo, claude_bin, claude_env(tmp_path, server))
    reserve, _ = a.turn_reserve("claude-sonnet-4-6", 1000)
    a.caps = Caps(max_cost=reserve * 0.9)  # above the old whole-run estimate would not matter: one turn does not fit
    with pytest.raises(CapExceeded, match="the next call would pass --max-cost"):
        a.propose(context(repo))
    assert server.requests == []


def test_rate_limit_after_claude_codes_retries_is_a_transient_error(repo, server, claude_bin, tmp_path):
    server.enqueue([error(429, "slow down", sticky=True)])
    env = {**claude_env(tmp_path, server), "CLAUDE_CODE_MAX_RETRIES": "0"}
    with pytest.raises(AgentError, match="claude reported an error") as info:
        agent(repo, claude_bin, env).propose(context(repo))
    assert info.value.transient and not isinstance(info.value, AgentSetupError)


def test_a_rejected_model_is_not_transient(repo, server, claude_bin, tmp_path):
    server.enqueue([error(404, "model: claude-nonexistent-9", sticky=True)])
    env = {**claude_env(tmp_path, server), "CLAUDE_CODE_MAX_RETRIES": "0"}
    with pytest.raises(AgentError) as info:
        agent(repo, claude_bin, env).propose(context(repo))
    assert not info.value.transient


def test_claude_codes_api_retries_are_counted(repo, server, claude_bin, tmp_path):
    server.enqueue([error(529), text("nothing to change")])
    agent(repo, claude_bin, claude_env(tmp_path, server)).propose(context(repo))
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert call["retries"] == 1 and call["error"] is None


def test_rejected_key_after_an_edit_is_a_setup_error_with_its_spend_logged(repo, server, claude_bin, tmp_path):
    train = repo / "train.py"
    server.enqueue([tool_use("Read", {"file_path": str(train)}),
                    tool_use("Edit", {"file_path": str(train), "old_string": "LR = 0.01", "new_string": "LR = 0.03"}),
                    error(401, "invalid x-api-key", "authentication_error", sticky=True)])
    env = {**claude_env(tmp_path, server), "CLAUDE_CODE_MAX_RETRIES": "0"}
    with pytest.raises(AgentSetupError, match="log in") as info:
        agent(repo, claude_bin, env).propose(context(repo))
    assert "LR = 0.03" in train.read_text()  # the edit happened; the loop restores the tree
    (call,) = read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")
    assert call["cost_usd"] > 0 and "AgentSetupError" in call["error"]
    assert info.value.usage.cost_usd == pytest.approx(call["cost_usd"], rel=1e-3)


def test_summary_stage_is_one_tool_less_call_with_the_summary_model(repo, server, claude_bin, tmp_path):
    archive = repo / ".auto-log-research"
    (archive / "abc1234").mkdir()
    (archive / "abc1234" / "analysis.md").write_text("val_bpb 1.51 vs 1.50: worse; the loss spiked at step 40.\n")
    ctx = context(repo, history=({"experiment": 2, "commit": "abc1234", "status": "discard",
                                  "description": "LR 0.01 -> 0.05", "value": 1.51},))
    server.enqueue_summary([text("LR 0.05 spiked at step 40: too high without warmup")])
    server.enqueue([text("nothing worth changing")])
    proposal = agent(repo, claude_bin, claude_env(tmp_path, server), summary_model="claude-haiku-4-5").propose(ctx)

    (summary,) = server.summary_requests
    assert summary.body["model"] == "claude-haiku-4-5" and not summary.body.get("tools")
    assert len(json.dumps(summary.body["system"])) < 3000  # its own small system prompt, not Claude Code's
    assert "the loss spiked at step 40" in json.dumps(summary.body["messages"])
    assert server.script_requests[0].body["model"] == "claude-sonnet-4-6"
    summary_call, propose_call = read_calls(archive / "llm_calls.jsonl")
    assert (summary_call["stage"], summary_call["model"], summary_call["error"]) == ("summary", "claude-haiku-4-5", None)
    assert propose_call["stage"] == "propose"
    assert "(exp 2) LR 0.05 spiked at step 40: too high without warmup" in (archive / "insights.md").read_text()
    assert proposal.usage.cost_usd == pytest.approx(summary_call["cost_usd"] + propose_call["cost_usd"], rel=1e-3)
