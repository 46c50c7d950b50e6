"""The `aider` backend against the REAL aider CLI (aider-chat in its own cached venv), with the
model played by a local OpenAI-compatible stand-in. Only the model is fake: aider, litellm, the
HTTP client, git and the file edits are real. Parsers are also tested on canned text."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
from fakes.openai_server import OpenAIServer, error, hang, search_replace, text
from support.agent_repo import make_agent_repo
from support.aider_cli import offline_env, require_aider, write_model_metadata

from harness.agents.aider import (
    AiderAgent,
    build_command,
    describe_diff,
    describe_reply,
    parse_llm_history,
    parse_usage,
)
from harness.agents.base import AgentContext, TargetInfo, Usage
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded
from harness.llmlog import LlmLog, read_calls

MODEL = "openai/fake-model"
TRAIN = "MATRIX_LR = 0.04  # matrix learning rate\nDEPTH = 4\nprint(MATRIX_LR, DEPTH)\n"
HYPOTHESIS = "Raise MATRIX_LR 0.04 -> 0.05: the loss is still falling fast at the end"
EDIT = search_replace("train.py", "MATRIX_LR = 0.04  # matrix learning rate",
                      "MATRIX_LR = 0.05  # matrix learning rate",
                      say="A slightly higher matrix learning rate should converge faster.") + f"\n{HYPOTHESIS}\n"
PROMPT_MARKER = "experiment-marker-7f3a"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aider_bin() -> str:
    return require_aider()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_agent_repo(tmp_path / "repo", TRAIN, "- [ ] MATRIX_LR = 0.05  # try")


@pytest.fixture
def server():
    with OpenAIServer() as s:
        yield s


def aider_env(tmp_path: Path, server: OpenAIServer) -> dict[str, str]:
    """A fresh HOME, the fake server as the OpenAI endpoint, no internet (a dead proxy)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **offline_env(server.base_url)}


def context(repo: Path) -> AgentContext:
    return AgentContext(workdir=repo, archive_dir=repo / ".auto-log-research", experiment=3,
                        target=TargetInfo(),
                        prompt=f"Improve val_bpb by editing train.py. ({PROMPT_MARKER})")


def make_agent(repo: Path, binary: str, env: dict, tmp_path: Path, *extra: str, caps: Caps | None = None,
               **settings) -> AiderAgent:
    values = {"name": "aider", "model": MODEL, "timeout_s": 120, **settings}
    # the diff (SEARCH/REPLACE) format: aider would pick "whole" for a model it does not know
    args = ["--edit-format", "diff", "--model-metadata-file", str(write_model_metadata(tmp_path / "model-metadata.json", MODEL)), *extra]
    return AiderAgent(AgentSettings(**values), LlmLog.in_archive(repo / ".auto-log-research"), caps,
                      binary=binary, env=env, extra_args=args)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def calls(repo: Path) -> list[dict]:
    return read_calls(repo / ".auto-log-research" / "llm_calls.jsonl")


# --- the real aider --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_aider_applies_the_edit_and_commits_nothing(repo, server, aider_bin, tmp_path):
    server.enqueue([text(EDIT)])
    head = git(repo, "rev-parse", "HEAD")
    caps = Caps(max_cost=5.0)
    agent = make_agent(repo, aider_bin, aider_env(tmp_path, server), tmp_path, caps=caps)

    started = time.monotonic()
    proposal = agent.propose(context(repo))
    print(f"one aider edit took {time.monotonic() - started:.1f} s")

    assert "MATRIX_LR = 0.05  # matrix learning rate" in (repo / "train.py").read_text()
    assert proposal.description == HYPOTHESIS
    assert proposal.details["changed_files"] == ["train.py"]
    # aider committed nothing, staged nothing, and left no files of its own in the repository
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "rev-list", "--count", "--all").strip() == "1"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == " M train.py\n"
    assert not list(repo.glob(".aider*"))
    # the model was sent our prompt and the file to edit
    (request,) = server.chat_requests
    sent = json.dumps(request["messages"])
    assert PROMPT_MARKER in sent and "MATRIX_LR = 0.04" in sent
    assert "- [ ] MATRIX_LR = 0.05  # try" in sent  # the notes went in as files too
    assert request["model"] == "fake-model"
    # one log line for the aider run, with tokens and the cost aider printed
    (call,) = calls(repo)
    assert call["backend"] == "aider" and call["stage"] == "propose" and call["experiment"] == 3
    assert PROMPT_MARKER in call["prompt"] and "Applied edit to train.py" in call["response"]
    assert call["tokens_in"] > 500 and call["tokens_out"] > 0 and call["cost_usd"] > 0
    assert call["error"] is None and call["tool_calls"] == [{"name": "edit", "path": "train.py"}]
    assert "dummy-key-for-the-fake-server" not in json.dumps(call)
    assert "HTTPSConnectionPool" not in call["response"]  # no attempt to reach the internet
    assert proposal.usage.cost_usd == pytest.approx(call["cost_usd"], abs=1e-6)
    assert caps.spent_cost == pytest.approx(proposal.usage.cost_usd)


@pytest.mark.slow
def test_real_aider_reply_without_edit_is_no_change_over_sse(repo, server, aider_bin, tmp_path):
    server.enqueue([text("I would not change anything: the learning rate is already tuned.")])
    # --stream: this run reads the reply as server-sent events instead of one JSON body
    agent = make_agent(repo, aider_bin, aider_env(tmp_path, server), tmp_path, "--stream")

    proposal = agent.propose(context(repo))

    assert (repo / "train.py").read_text() == TRAIN
    assert proposal.details["changed_files"] == []
    assert proposal.description == "I would not change anything: the learning rate is already tuned."
    assert server.chat_requests[0]["stream"] is True
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert calls(repo)[-1]["error"] is None


@pytest.mark.slow
def test_real_aider_api_error_is_an_agent_error(repo, server, aider_bin, tmp_path):
    # aider exits 0 after a failed model call; the backend must still report the failure
    server.enqueue([error(404, "The model `fake-model` does not exist")])
    agent = make_agent(repo, aider_bin, aider_env(tmp_path, server), tmp_path)

    with pytest.raises(AgentError, match="no reply from the model") as info:
        agent.propose(context(repo))

    assert not info.value.transient  # a rejected model fails the same way every time
    assert (repo / "train.py").read_text() == TRAIN
    (call,) = calls(repo)
    assert "no reply" in call["error"] and "does not exist" in call["response"]


@pytest.mark.slow
def test_real_aider_rejected_key_is_a_setup_error(repo, server, aider_bin, tmp_path):
    server.enqueue([error(401, "Incorrect API key provided")])
    agent = make_agent(repo, aider_bin, aider_env(tmp_path, server), tmp_path)

    with pytest.raises(AgentSetupError, match=r"^aider: the model's API rejected the key \(AuthenticationError\)$"):
        agent.propose(context(repo))

    (call,) = calls(repo)
    assert "AgentSetupError" in call["error"] and "AuthenticationError" in call["response"]


@pytest.mark.slow
def test_real_aider_with_a_local_model_costs_nothing(repo, server, aider_bin, tmp_path):
    """openai/<name> on a localhost base URL is a local model: free to estimate and to run, so a
    cost cap does not stop it (aider prints no cost without model metadata)."""
    server.enqueue([text(EDIT)])
    agent = AiderAgent(AgentSettings(name="aider", model=MODEL, timeout_s=120),
                       LlmLog.in_archive(repo / ".auto-log-research"), Caps(max_cost=0.0001),
                       binary=aider_bin, env=aider_env(tmp_path, server), extra_args=["--edit-format", "diff"])

    proposal = agent.propose(context(repo))

    assert "MATRIX_LR = 0.05" in (repo / "train.py").read_text()
    assert proposal.usage.tokens > 0 and proposal.usage.cost_usd == 0
    (call,) = calls(repo)
    assert call["cost_usd"] == 0 and call["note"] == "a local model: cost 0"


@pytest.mark.slow
def test_real_aider_timeout_stops_the_whole_process_group(repo, server, aider_bin, tmp_path):
    server.enqueue([hang()])
    env = aider_env(tmp_path, server)
    timeout = 25.0  # aider needs ~7 s to start on a loaded 2-core box; the rest is the hang
    agent = make_agent(repo, aider_bin, env, tmp_path, timeout_s=timeout)

    started = time.monotonic()
    with pytest.raises(AgentTimeout):
        agent.propose(context(repo))
    elapsed = time.monotonic() - started

    assert len(server.chat_requests) == 1  # it did reach the model, which never answered
    assert elapsed < timeout + 10
    assert processes_with_env("HOME", env["HOME"]) == []
    (call,) = calls(repo)
    assert call["error"].startswith("AgentTimeout: aider ran past the agent timeout")


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has name=value: here, anything aider started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{name}={value}".encode() in environ and state != "Z":
            found.append(int(proc.name))
    return found


# --- setup errors and caps (no aider run) ----------------------------------------------------


def test_missing_binary_is_a_setup_error(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("HARNESS_AIDER_BIN", raising=False)
    with pytest.raises(AgentSetupError) as info:
        AiderAgent(AgentSettings(name="aider", model=MODEL))  # fails before any experiment runs

    assert str(info.value).startswith("aider not found: install it in its own environment with "
                                      "`uv tool install aider-chat`")
    assert calls(repo) == []


def test_harness_aider_bin_pointing_nowhere_says_where_it_looked(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_AIDER_BIN", str(tmp_path / "no-such-aider"))
    with pytest.raises(AgentSetupError, match="no-such-aider"):
        AiderAgent(AgentSettings(name="aider"))


def test_cost_cap_stops_before_aider_runs(repo, server, tmp_path):
    binary = tmp_path / "aider"  # never run: the cap check comes first
    binary.write_text("#!/bin/sh\ntouch ran\n")
    binary.chmod(0o755)
    agent = make_agent(repo, str(binary), aider_env(tmp_path, server), tmp_path,
                       caps=Caps(max_cost=0.0001), model="anthropic/claude-sonnet-4-5")  # hosted: not free

    with pytest.raises(CapExceeded):
        agent.propose(context(repo))

    assert not (repo / "ran").exists() and calls(repo) == []


def test_notes_outside_the_worktree_go_in_read_only(repo, tmp_path):
    inside = build_command("aider", context(repo), AgentSettings(model=MODEL), tmp_path)
    assert inside[-3:] == [".auto-log-research/insights.md", ".auto-log-research/ideas_queue.md", "train.py"]
    assert "--no-git" in inside and inside[inside.index("--model") + 1] == MODEL

    archive = tmp_path / "archive-elsewhere"
    archive.mkdir()
    (archive / "insights.md").write_text("x\n")
    ctx = AgentContext(workdir=repo, archive_dir=archive, experiment=1, target=TargetInfo(), prompt="p")
    outside = build_command("aider", ctx, AgentSettings(), tmp_path)
    assert outside[-3:] == ["--read", str(archive.resolve() / "insights.md"), "train.py"]
    assert "--model" not in outside  # no model set: aider picks one from the keys it finds


# --- the fake server speaks both ways --------------------------------------------------------


def test_fake_server_answers_json_sse_and_models(server):
    server.enqueue([text("hello there"), text("streamed reply")])
    url = server.base_url
    plain = requests.post(f"{url}/chat/completions", json={"model": "m", "messages": []}, timeout=5).json()
    assert plain["choices"][0]["message"]["content"] == "hello there"
    stream = requests.post(f"{url}/chat/completions", timeout=5, json={
        "model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "streamed reply"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert requests.get(f"{url}/models", timeout=5).json()["data"][0]["id"] == "fake-model"
    # an under-scripted test fails fast with a 400, which no client retries
    assert requests.post(f"{url}/chat/completions", json={"messages": []}, timeout=5).status_code == 400
    assert len(server.unscripted) == 1


# --- parsing aider's output (canned text) ----------------------------------------------------


def test_summary_model_is_aiders_weak_model_unless_none(repo, tmp_path):
    weak = build_command("aider", context(repo), AgentSettings(summary_model="gpt-4.1-mini"), tmp_path)
    assert weak[weak.index("--weak-model") + 1] == "gpt-4.1-mini"
    assert "--weak-model" not in build_command("aider", context(repo), AgentSettings(summary_model="none"), tmp_path)


def test_local_models_and_prices():
    from harness import pricing

    assert pricing.is_local("ollama_chat/qwen2.5-coder:32b", {})
    assert pricing.is_local("ollama/llama3", {"OPENAI_API_BASE": "https://api.example.com/v1"})
    assert pricing.is_local("openai/qwen", {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert pricing.is_local("gpt-4.1", {"OPENAI_BASE_URL": "http://localhost:11434/v1"})
    assert not pricing.is_local("openai/gpt-4.1", {})
    assert not pricing.is_local("anthropic/claude-sonnet-4-5", {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert not pricing.is_local("claude-sonnet-4-5", {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert pricing.estimate("ollama/llama3", 10_000, 8_000)[0] == 0
    assert pricing.estimate("openai/qwen", 10_000, 8_000, local=True)[0] == 0


def test_priced_usage_local_hosted_and_unknown(capsys):
    from harness.agents.aider import priced_usage

    line = "Tokens: 10k sent, 1k received.\n"
    assert priced_usage(line, "openai/qwen", local=True) == (Usage(10_000, 1_000, 0, 0.0), "a local model: cost 0")
    usage, note = priced_usage(line, "anthropic/claude-sonnet-4-5")
    assert usage.cost_usd == pytest.approx((10_000 * 3 + 1_000 * 15) / 1e6) and "harness.pricing" in note
    usage, note = priced_usage(line, "openrouter/some-new-model")
    assert usage.cost_usd == pytest.approx((10_000 * 15 + 1_000 * 75) / 1e6)  # the conservative default
    assert "most expensive tier" in note
    priced_usage(line, "openrouter/some-new-model")
    assert capsys.readouterr().err.count("most expensive tier") == 1  # said once, not per call
    reported = "Tokens: 10k sent, 1k received. Cost: $0.0123 message\n"
    assert priced_usage(reported, "openrouter/some-new-model") == (Usage(10_000, 1_000, 0, 0.0123), None)


def test_no_reply_errors_say_whether_they_may_pass():
    from harness.agents.aider import no_reply_error

    auth = no_reply_error("litellm.AuthenticationError: OpenAIException - Incorrect API key provided")
    assert isinstance(auth, AgentSetupError)
    limited = no_reply_error("litellm.RateLimitError: rate limited\nRetrying in 0.2 seconds...")
    assert isinstance(limited, AgentError) and limited.transient
    gone = no_reply_error("litellm.APIConnectionError: Connection refused")
    assert gone.transient
    missing = no_reply_error("litellm.NotFoundError: The model `x` does not exist")
    assert not missing.transient


def test_parse_usage_sums_messages_and_takes_the_session_cost():
    output = ("Tokens: 2.1k sent, 45 received. Cost: $0.0069 message, $0.0069 session.\n"
              "Applied edit to train.py\n"
              "Tokens: 12k sent, 3.5k cache write, 1.2k cache hit, 300 received.\n"
              "Cost: $0.04 message, $0.05 session.\n")
    usage, priced = parse_usage(output)
    assert (usage.tokens_in, usage.tokens_out, usage.tokens_cached) == (14100, 345, 1200)
    assert usage.cost_usd == pytest.approx(0.05) and priced
    assert parse_usage("Tokens: 950 sent, 12 received.\n") [1] is False
    messages_only = "Cost: $0.01 message\nCost: $0.02 message\n"  # no cumulative figure: summed
    assert parse_usage(messages_only)[0].cost_usd == pytest.approx(0.03)


def test_parse_llm_history_reads_requests_and_replies():
    history = ("TO LLM 2026-01-01T00:00:00\n-------\nSYSTEM be helpful\nUSER do it\n"
               "LLM RESPONSE 2026-01-01T00:00:01\nASSISTANT First line.\nASSISTANT\nASSISTANT Second.\n"
               "TO LLM 2026-01-01T00:00:02\nUSER again\n")
    assert parse_llm_history(history) == (2, ["First line.\n\nSecond."])


def test_describe_prefers_the_closing_line_then_the_first_sentence():
    assert describe_reply(EDIT) == HYPOTHESIS
    no_closing = search_replace("train.py", "A = 1", "A = 2", say="Double A. It helps.")
    assert describe_reply(no_closing) == "Double A."
    assert describe_reply(search_replace("train.py", "A = 1", "A = 2")) == ""


def test_describe_diff_names_the_knobs_that_moved():
    after = TRAIN.replace("0.04", "0.05").replace("DEPTH = 4", "DEPTH = 6")
    assert describe_diff({"train.py": TRAIN}, {"train.py": after}) == "MATRIX_LR 0.04 -> 0.05; DEPTH 4 -> 6"
    assert describe_diff({"train.py": TRAIN}, {"train.py": TRAIN + "x = 1\n"}) == "aider edited train.py"
    assert describe_diff({"train.py": TRAIN}, {"train.py": TRAIN}) == ""
