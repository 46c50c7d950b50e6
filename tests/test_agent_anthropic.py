"""The `anthropic` backend: the real SDK client, pointed at the local Messages API stand-in."""

from __future__ import annotations

import anthropic
import pytest
from fakes.messages_server import MessagesServer, error, every_messages_request, text, tool_use, tool_uses

from harness import pricing
from harness.agents.anthropic_api import AnthropicAgent
from harness.agents.base import AgentContext, TargetInfo
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, CapExceeded
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
    with pytest.raises(AgentError, match="rejected the request: messages: roles must alternate"):
        make_agent(repo, server).propose(ctx(repo))
    assert len(server.script_requests) == 1
    (call,) = calls(repo)
    assert call["retries"] == 0 and "roles must alternate" in call["error"]


def test_retries_give_up_after_the_limit(repo, server):
    server.enqueue([error(429, sticky=True)])
    agent = make_agent(repo, server)
    agent.max_retries = 2
    with pytest.raises(AgentError, match="rate limited after 3 tries"):
        agent.propose(ctx(repo))
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


def test_summary_stage_uses_the_summary_model(repo):
    server = MessagesServer(every_messages_request).start()  # the summary call has no tools
    server.enqueue([text("- LR above 0.03 diverges")])
    agent = make_agent(repo, server, summary_model="claude-haiku-4-5")
    assert agent.summarize("summarize the run", experiment=4) == "- LR above 0.03 diverges"
    server.stop()
    body = server.script_requests[0].body
    assert body["model"] == "claude-haiku-4-5"
    (call,) = calls(repo)
    assert (call["stage"], call["model"]) == ("summary", "claude-haiku-4-5")


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
    with pytest.raises(AgentError, match="could not reach the API after 3 tries"):
        agent.propose(ctx(repo))
    (call,) = calls(repo)
    assert call["retries"] == 2 and "could not reach" in call["error"]
