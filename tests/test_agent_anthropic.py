"""The `anthropic` backend: the real SDK client, pointed at the local Messages API stand-in."""

from __future__ import annotations

import json
import time

import anthropic
import pytest
from fakes.messages_server import MessagesServer, error, garbage, slow, text, tool_use, tool_uses

from harness import pricing
from harness.agents.anthropic_api import AnthropicAgent
from harness.agents.base import AgentContext, TargetInfo
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded
from harness.llmlog import LlmLog, read_calls

TRAIN = "LR = 0.01\nSTEPS = 10\nprint(LR, STEPS)\n"
KEY = "sk-ant-api03-secretsecretsecret"


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "prepare.py").write_text("FIXED = 1\n")
    archive = tmp_path / ".auto-log-research"
    archive.mkdir()
    (archive / "insights.md").write_text("## Current Best\n")
    (archive / "results.tsv").write_text("commit\tval_bpb\n")
    return tmp_path


@pytest.fixture
def server():
    with MessagesServer() as s:
        yield s


def make_agent(repo, server, caps=None, **settings) -> AnthropicAgent:
    values = {"name": "anthropic", "model": "claude-sonnet-4-6", "max_turns": 6, **settings}
    return AnthropicAgent(
        AgentSettings(**values),
        LlmLog.in_archive(repo / ".auto-log-research"),
        caps,
        # a client that would retry on its own: the backend must switch that off
        client_factory=lambda: anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=5),
        backoff_s=0.0,
    )


def ctx(repo, **kw) -> AgentContext:
    return AgentContext(workdir=repo, archive_dir=repo / ".auto-log-research", experiment=4,
                        target=TargetInfo(), prompt="Lower val_bpb. Edit train.py.", **kw)


def calls(repo):
    return read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")


def test_tool_use_round_trip_edits_train_py_and_prices_the_usage(repo, server):
    usage = {"input_tokens": 1000, "output_tokens": 200, "cache_creation_input_tokens": 3000,
             "cache_read_input_tokens": 0}
    usage2 = {"input_tokens": 500, "output_tokens": 100, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 3000}
    server.enqueue([
        tool_use("view_file", {"path": "train.py"}, usage=usage),
        tool_uses([("replace_in_file", {"path": "train.py", "old_string": "LR = 0.01", "new_string": "LR = 0.03"}),
                   ("append_note", {"file": "ideas_queue.md", "text": "- [ ] WARMUP = 100  # next"})], usage=usage2),
        tool_use("finish", {"description": "LR 0.01 -> 0.03: loss still falling fast"}, usage=usage2),
    ])
    proposal = make_agent(repo, server).propose(ctx(repo))

    assert (repo / "train.py").read_text() == TRAIN.replace("0.01", "0.03")
    assert "WARMUP = 100" in (repo / ".auto-log-research" / "ideas_queue.md").read_text()
    assert proposal.description == "LR 0.01 -> 0.03: loss still falling fast"
    assert proposal.details["files_changed"] == [".auto-log-research/ideas_queue.md", "train.py"]
    expected = (pricing.cost("claude-sonnet-4-6", 1000, 200, cache_write=3000)
                + 2 * pricing.cost("claude-sonnet-4-6", 500, 100, cache_read=3000))
    assert proposal.usage.cost_usd == pytest.approx(expected)
    assert expected == pytest.approx((1000 * 3 + 200 * 15 + 3000 * 3.75 + 2 * (500 * 3 + 100 * 15 + 3000 * 0.3)) / 1e6)
    assert (proposal.usage.tokens_in, proposal.usage.tokens_cached) == (4000 + 2 * 3500, 6000)

    first, second = server.script_requests[0].body, server.script_requests[1].body
    assert first["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert first["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert {t["name"] for t in first["tools"]} >= {"view_file", "replace_in_file", "write_file", "finish"}
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "LR = 0.01" in result["content"]
    assert server.script_requests[0].headers["authorization"] == "***"  # recorded redacted

    logged = calls(repo)
    assert [c["stage"] for c in logged] == ["propose"] * 3
    assert sum(c["cost_usd"] for c in logged) == pytest.approx(expected, abs=1e-5)
    assert logged[1]["tool_calls"][0]["name"] == "replace_in_file"
    assert KEY not in (repo / ".auto-log-research" / "llm_calls.jsonl").read_text()


def test_overloaded_then_success_is_retried_and_logged_once(repo, server):
    server.enqueue([error(529), error(503), text("no idea worth trying")])
    slept = []
    agent = make_agent(repo, server)
    agent.sleep = slept.append
    agent.backoff_s = 0.5
    proposal = agent.propose(ctx(repo))
    assert proposal.description == "no idea worth trying"
    assert proposal.details["files_changed"] == []  # a reply with no edit: the loop records no_change
    assert slept == [0.5, 1.0]  # exponential backoff
    assert len(server.script_requests) == 3
    assert all(r.headers.get("x-stainless-retry-count") == "0" for r in server.script_requests)
    (call,) = calls(repo)
    assert (call["retries"], call["error"]) == (2, None)


def test_bad_request_is_not_retried(repo, server):
    server.enqueue([error(400, "messages: roles must alternate")])
    with pytest.raises(AgentError, match="rejected the request: messages: roles must alternate") as info:
        make_agent(repo, server).propose(ctx(repo))
    assert not info.value.transient
    assert len(server.script_requests) == 1
    (call,) = calls(repo)
    assert call["retries"] == 0 and "roles must alternate" in call["error"]


def test_retries_give_up_after_the_limit(repo, server):
    server.enqueue([error(429, sticky=True)])
    agent = make_agent(repo, server)
    agent.max_retries = 2
    with pytest.raises(AgentError, match="rate limited after 3 tries") as info:
        agent.propose(ctx(repo))
    assert info.value.transient  # the loop backs off instead of counting it as the same error
    assert len(server.script_requests) == 3
    assert calls(repo)[0]["retries"] == 2


def test_rejected_key_is_a_setup_error(repo, server):
    server.enqueue([error(401, "invalid x-api-key")])
    with pytest.raises(AgentSetupError, match="ANTHROPIC_API_KEY"):
        make_agent(repo, server).propose(ctx(repo))


def test_bad_tool_arguments_go_back_to_the_model(repo, server):
    server.enqueue([
        tool_use("replace_in_file", {"path": "train.py", "old_string": "NOPE", "new_string": "x"}),
        tool_use("write_file", {"path": "prepare.py", "content": "hacked"}),
        tool_use("replace_in_file", {"path": "train.py"}),
        tool_use("replace_in_file", {"path": "train.py", "old_string": "STEPS = 10", "new_string": "STEPS = 20"}),
        text("STEPS 10 -> 20: more steps"),
    ])
    proposal = make_agent(repo, server).propose(ctx(repo))
    assert (repo / "prepare.py").read_text() == "FIXED = 1\n"
    assert "STEPS = 20" in (repo / "train.py").read_text()
    assert proposal.description == "STEPS 10 -> 20: more steps"
    errors = [r.body["messages"][-1]["content"][0] for r in server.script_requests[1:4]]
    assert all(e["is_error"] for e in errors)
    assert "not found in train.py" in errors[0]["content"]
    assert "may not be edited" in errors[1]["content"]
    assert "needs argument 'old_string'" in errors[2]["content"]


def test_huge_reply_is_capped_in_description_and_log(repo, server):
    server.enqueue([text("x" * 500_000)])
    proposal = make_agent(repo, server).propose(ctx(repo))
    assert len(proposal.description) <= 300
    (call,) = calls(repo)
    assert len(str(call["response"])) < 110_000
    assert server.script_requests[0].body["max_tokens"] == 8192


def test_turn_limit_without_an_edit_is_an_agent_error(repo, server):
    server.enqueue([tool_use("view_file", {"path": "train.py"})] * 2)
    with pytest.raises(AgentError, match="no edit after 2 model turns"):
        make_agent(repo, server, max_turns=2).propose(ctx(repo))


def test_cost_cap_stops_before_any_request(repo, server):
    server.enqueue([text("never sent")])
    agent = make_agent(repo, server, caps=Caps(max_cost=0.01))
    with pytest.raises(CapExceeded, match=r"the next call would pass --max-cost \$0.01 \(spent \$0.00, next ≈ \$0.1"):
        agent.propose(ctx(repo))
    assert server.requests == []
    assert calls(repo) == []


def test_token_cap_counts_spend_across_calls(repo, server):
    big = {"input_tokens": 9000, "output_tokens": 1000}
    server.enqueue([tool_use("view_file", {"path": "train.py"}, usage=big), text("unreached")])
    with pytest.raises(CapExceeded, match="--max-tokens 15,000 \\(spent 10,000"):
        make_agent(repo, server, caps=Caps(max_tokens=15_000)).propose(ctx(repo))
    assert len(server.script_requests) == 1


def with_last_experiment(repo, **row) -> AgentContext:
    """A context for experiment 2 after experiment 1, whose analysis.md is in the archive."""
    commit = "abc1234def"
    (repo / ".auto-log-research" / commit).mkdir()
    (repo / ".auto-log-research" / commit / "analysis.md").write_text(
        "# Experiment 1\nval_bpb 1.5100 vs best 1.5000 (+0.0100, margin 0.0040): worse.\n"
        "The loss spiked at step 40 and never recovered.\n")
    last = {"experiment": 1, "commit": commit, "status": "discard", "description": "LR 0.01 -> 0.05",
            "value": 1.51, **row}
    return AgentContext(workdir=repo, archive_dir=repo / ".auto-log-research", experiment=2,
                        target=TargetInfo(), prompt="Lower val_bpb. Edit train.py.",
                        history=({"experiment": 0, "commit": "0000000", "status": "baseline"}, last))


def test_summary_stage_writes_the_last_lesson_with_the_summary_model(repo, server):
    server.enqueue_summary([text("- LR 0.05 spiked at step 40 and never recovered\n- try 0.02 with warmup")])
    server.enqueue([text("nothing to change"), text("still nothing")])
    agent = make_agent(repo, server, summary_model="claude-haiku-4-5")
    context = with_last_experiment(repo)
    proposal = agent.propose(context)

    (summary,) = server.summary_requests
    assert summary.body["model"] == "claude-haiku-4-5" and "tools" not in summary.body
    assert "The loss spiked at step 40" in json.dumps(summary.body["messages"])
    assert server.script_requests[0].body["model"] == "claude-sonnet-4-6"  # the proposal model proposes
    logged = calls(repo)
    assert [(c["stage"], c["model"], c["experiment"]) for c in logged] == [
        ("summary", "claude-haiku-4-5", 2), ("propose", "claude-sonnet-4-6", 2)]
    assert proposal.usage.cost_usd == pytest.approx(sum(c["cost_usd"] for c in logged), abs=1e-5)
    insights = (repo / ".auto-log-research" / "insights.md").read_text()
    assert "## Findings" in insights
    assert "(exp 1) LR 0.05 spiked at step 40 and never recovered try 0.02 with warmup" in insights
    assert proposal.details["lesson"].startswith("LR 0.05 spiked")

    agent.propose(context)  # a retry of the same experiment: the lesson is there, no second summary
    assert len(server.summary_requests) == 1 and insights.count("(exp 1)") == 1


def test_summary_model_none_skips_the_summary_stage(repo, server):
    server.enqueue([text("nothing to change")])
    make_agent(repo, server, summary_model="none").propose(with_last_experiment(repo))
    assert server.summary_requests == [] and [c["stage"] for c in calls(repo)] == ["propose"]


def test_a_failed_summary_is_logged_and_the_proposal_goes_on(repo, server):
    server.enqueue_summary([error(400, "summary refused")])
    server.enqueue([text("nothing to change")])
    proposal = make_agent(repo, server).propose(with_last_experiment(repo))
    assert proposal.description == "nothing to change"
    summary, propose = calls(repo)
    assert summary["stage"] == "summary" and "summary refused" in summary["error"]
    assert summary["model"] == "claude-haiku-4-5"  # the default summary model
    assert propose["error"] is None


def test_registry_agent_reads_the_key_and_base_url_from_the_environment(repo, server, monkeypatch):
    from harness.agents.registry import make_agent as registry_agent

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    server.enqueue([tool_use("write_file", {"path": "train.py", "content": "LR = 0.5\n"}),
                    tool_use("finish", {"description": "rewrite: LR 0.5"})])
    agent = registry_agent(AgentSettings(name="anthropic"), repo / ".auto-log-research")
    proposal = agent.propose(ctx(repo))
    assert (repo / "train.py").read_text() == "LR = 0.5\n" and proposal.description == "rewrite: LR 0.5"
    assert server.script_requests[0].body["model"] == "claude-sonnet-4-6"  # the default model


def test_missing_api_key_is_a_setup_error(repo, monkeypatch):
    from harness.agents.registry import make_agent as registry_agent

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    agent = registry_agent(AgentSettings(name="anthropic"), repo / ".auto-log-research")
    with pytest.raises(AgentSetupError, match="ANTHROPIC_API_KEY is not set"):
        agent.propose(ctx(repo))


def test_connection_errors_are_retried_then_reported(repo):
    with MessagesServer() as gone:
        url = gone.base_url  # a port nothing listens on once the server stops
    agent = AnthropicAgent(AgentSettings(name="anthropic"), LlmLog.in_archive(repo / ".auto-log-research"),
                           client_factory=lambda: anthropic.Anthropic(base_url=url, api_key=KEY),
                           backoff_s=0.0, max_retries=2)
    with pytest.raises(AgentError, match="could not reach the API after 3 tries") as info:
        agent.propose(ctx(repo))
    assert info.value.transient
    (call,) = calls(repo)
    assert call["retries"] == 2 and "could not reach" in call["error"]


def test_rejected_key_mid_experiment_keeps_what_was_spent(repo, server):
    """A 401 after a turn that edited train.py: a setup error (the loop stops and restores the
    tree), with the first turn's spend on the exception and in the log."""
    server.enqueue([
        tool_use("replace_in_file", {"path": "train.py", "old_string": "LR = 0.01", "new_string": "LR = 0.02"},
                 usage={"input_tokens": 1000, "output_tokens": 100}),
        error(401, "invalid x-api-key"),
    ])
    with pytest.raises(AgentSetupError, match="the API key was rejected") as info:
        make_agent(repo, server).propose(ctx(repo))
    assert info.value.usage.cost_usd == pytest.approx(pricing.cost("claude-sonnet-4-6", 1000, 100))
    first, second = calls(repo)
    assert first["cost_usd"] > 0 and first["error"] is None
    assert "AgentSetupError" not in second["error"] and "key was rejected" in second["error"]


def test_a_hung_call_is_stopped_at_the_agent_timeout(repo, server):
    server.enqueue([slow(text("too late"), 30)])
    agent = make_agent(repo, server, timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"ran past the agent timeout \(1.5s\)") as info:
        agent.propose(ctx(repo))
    assert time.monotonic() - started < 6
    assert info.value.transient
    (call,) = calls(repo)
    assert "agent timeout" in call["error"]


def test_backoff_that_would_pass_the_timeout_stops_instead_of_sleeping(repo, server):
    server.enqueue([error(529, sticky=True)])
    agent = make_agent(repo, server, timeout_s=2)
    agent.backoff_s, slept = 30.0, []
    agent.sleep = slept.append
    with pytest.raises(AgentTimeout, match="the API is overloaded, and the agent timeout"):
        agent.propose(ctx(repo))
    assert slept == [] and len(server.script_requests) == 1


@pytest.mark.parametrize("body, message", [
    ("<html>502 from a proxy</html>", "the SDK failed: JSONDecodeError"),
    ('{"unexpected": true}', "the API's reply could not be read"),
])
def test_a_reply_that_is_not_the_messages_api_is_an_agent_error(repo, server, body, message):
    server.enqueue([garbage(body)])
    with pytest.raises(AgentError, match=message) as info:
        make_agent(repo, server).propose(ctx(repo))
    assert not isinstance(info.value, AgentTimeout)
    (call,) = calls(repo)
    assert message in call["error"]


def test_tool_errors_for_nul_paths_non_utf8_files_and_lines_past_the_end(repo, server):
    (repo / "train.py").write_bytes(b"LR = 0.01  # caf\xe9\nprint(LR)\n")  # latin-1, not UTF-8
    server.enqueue([
        tool_uses([("view_file", {"path": "train\x00.py"}),
                   ("view_file", {"path": "train.py", "start_line": 99}),
                   ("view_file", {"path": "train.py", "start_line": 2, "end_line": 1}),
                   ("replace_in_file", {"path": "train.py", "old_string": "LR = 0.01", "new_string": "LR = 0.02"}),
                   ("read_archive_file", {"path": "x\x00"})]),
        tool_use("write_file", {"path": "train.py", "content": "LR = 0.02\nprint(LR)\n"}),
        tool_use("finish", {"description": "LR 0.01 -> 0.02, file rewritten as UTF-8"}),
    ])
    proposal = make_agent(repo, server).propose(ctx(repo))
    results = server.script_requests[1].body["messages"][-1]["content"]
    assert [r["is_error"] for r in results] == [True] * 5
    assert "contains a NUL byte" in results[0]["content"]
    assert "start_line 99 is past the end of train.py (2 lines)" in results[1]["content"]
    assert "end_line 1 is before start_line 2" in results[2]["content"]
    assert "train.py is not UTF-8 text (bad byte at offset 16); rewrite it whole with write_file" in results[3]["content"]
    assert "contains a NUL byte" in results[4]["content"]
    assert (repo / "train.py").read_text() == "LR = 0.02\nprint(LR)\n"
    assert proposal.description == "LR 0.01 -> 0.02, file rewritten as UTF-8"


def test_program_md_guidance_is_the_marked_part_only(tmp_path):
    from pathlib import Path

    from harness.agents.base import guidance_section, program_guidance

    project = Path(__file__).resolve().parents[1]
    guidance = program_guidance(project / "program.md")
    assert "Simplicity criterion" in guidance and "If you are stuck" in guidance
    assert "harness init" not in guidance and "NEVER stop" not in guidance  # not the drive-it-yourself part
    assert guidance_section(project).startswith("\n\n## Research guidance (from program.md)\n")
    assert guidance_section(tmp_path) == ""  # no program.md: nothing added
