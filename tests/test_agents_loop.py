"""Every LLM backend through the WHOLE loop: the real `harness` CLI (a subprocess, as a user runs
it) on a toy target after `harness init`, with the real Claude Code CLI, the real anthropic SDK
and the real aider CLI; only the model is a local stand-in (tests/fakes/). Checked: the record in
git (commits, attempt refs, notes), the ledger (tokens and cost from usage), the notes the model
edited through its tools, the model-call log (`harness llm-log`), the caps, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.messages_server import CANNED_LESSON, MessagesServer, error, slow, text, tool_use, tool_uses
from fakes.openai_server import OpenAIServer, search_replace
from fakes.openai_server import error as openai_error
from fakes.openai_server import text as openai_text
from support.aider_cli import offline_env, require_aider, write_model_metadata
from support.claude_cli import QUIET_ENV, require_claude
from support.research import git, harness, make_toy_repo

from harness.ledger import Ledger, Row

FAKE_CLAUDE = Path(__file__).parent / "fakes" / "fake_claude"
AIDER_MODEL = "openai/fake-model"
KEY = "sk-ant-api03-loop-test-secret-0123456789"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return require_claude()


@pytest.fixture(scope="session")
def aider_bin() -> str:
    return require_aider()


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A toy research repository after a real `harness init` (baseline loss 5.00025)."""
    repo = make_toy_repo(tmp_path / "repo")
    done = harness(repo, base_env(tmp_path), "init", "--tag", "t", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    return repo


@pytest.fixture
def messages():
    with MessagesServer() as server:
        yield server


@pytest.fixture
def openai():
    with OpenAIServer() as server:
        yield server


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The harness's environment: no stray settings or keys, a fresh HOME (so Claude Code and
    aider read no config of the developer's)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    drop = ("ALR_", "HARNESS_", "ANTHROPIC_", "OPENAI_", "CLAUDE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HOME": str(home), **extra}


def claude_env(tmp_path: Path, server: MessagesServer | None, binary: str, **extra: str) -> dict[str, str]:
    env = base_env(tmp_path, HARNESS_CLAUDE_BIN=binary, ANTHROPIC_API_KEY=KEY, **QUIET_ENV, **extra)
    if server:
        env["ANTHROPIC_BASE_URL"] = server.base_url
    return env


def anthropic_env(tmp_path: Path, server: MessagesServer, **extra: str) -> dict[str, str]:
    return base_env(tmp_path, ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY=KEY, **extra)


def aider_env(tmp_path: Path, server: OpenAIServer, binary: str) -> dict[str, str]:
    """The fake server as the OpenAI endpoint, no internet (a dead proxy), and model metadata so
    aider prices the fake model and fetches no price list."""
    metadata = write_model_metadata(tmp_path / "model-metadata.json", AIDER_MODEL)
    return base_env(tmp_path, HARNESS_AIDER_BIN=binary, **offline_env(server.base_url),
                    HARNESS_AIDER_ARGS=f"--edit-format diff --model-metadata-file {metadata}")


def loop(repo: Path, env: dict[str, str], *args: str, code: int = 0, timeout: float = 300):
    started = time.monotonic()
    done = harness(repo, env, "loop", "-q", *args, timeout=timeout)
    print(f"harness loop {' '.join(args)}: {time.monotonic() - started:.1f} s")
    assert done.returncode == code, done.stdout + done.stderr
    return done


def rows(repo: Path) -> list[Row]:
    return Ledger(repo / ".auto-log-research" / "results.tsv", "loss").rows()


def archive(repo: Path) -> Path:
    return repo / ".auto-log-research"


def llm_log(repo: Path, env: dict[str, str], *args: str):
    done = harness(repo, env, "llm-log", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def assert_three_attempts_recorded(repo: Path, env: dict[str, str], agent: str, statuses: list[str]) -> list[Row]:
    """Bar 1: three attempts in git (commits, refs, notes) and the ledger (tokens and cost from
    usage), the model calls listed per experiment and in the stats."""
    recorded = rows(repo)
    assert [r.status for r in recorded] == ["baseline", *statuses]
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/auto-log-research/attempts/")
    assert len(refs.splitlines()) == 3
    for row in recorded[1:]:
        assert row.agent == agent and row.commit != "-"
        assert f"refs/auto-log-research/attempts/{row.experiment:04d} {row.commit}" in refs
        assert git(repo, "log", "-1", "--format=%s", row.commit) == row.description
        assert f"status: {row.status}" in git(repo, "notes", "show", row.commit)
        assert (archive(repo) / row.commit / "run.log").is_file()
        assert (archive(repo) / row.commit / "prompt.md").is_file()
        assert row.tokens > 0 and row.cost_usd > 0, row
        calls = llm_log(repo, env, "--experiment", str(row.experiment), "--json")
        assert calls and all(c["backend"] == agent and c["error"] is None for c in calls)
        assert sum(c["tokens_in"] + c["tokens_out"] for c in calls) == row.tokens
        assert sum(c["cost_usd"] for c in calls) == pytest.approx(row.cost_usd, abs=1e-4)  # ledger: 4 places
    stats = llm_log(repo, env, "--stats", "--json")
    assert stats["count"] >= 3 and stats["errors"] == 0
    assert stats["cost_usd"] == pytest.approx(sum(r.cost_usd for r in recorded), abs=1e-3)
    assert git(repo, "status", "--porcelain") == ""
    best = next(r for r in reversed(recorded) if r.kept)
    assert git(repo, "rev-parse", "HEAD") == best.commit
    return recorded


# The three edits every backend makes: keep (X toward 1), keep (Y toward 2), discard (X away).
EDITS = [("X = 3.0", "X = 2.0"), ("Y = 1.0", "Y = 1.5"), ("X = 2.0", "X = 2.5")]
STATUSES = ["keep", "keep", "discard"]


def model_line(old: str, new: str) -> tuple[str, str]:
    """The whole line of model.py holding `old`, before and after (its comment kept)."""
    comment = {"X": "# the optimum is X = 1", "Y": "# the optimum is Y = 2"}[old[0]]
    return f"{old}     {comment}", f"{new}     {comment}"


# --- bar 1: each backend, three experiments ----------------------------------------------------


def test_claude_backend_three_experiments_through_the_loop(toy, messages, claude_bin, tmp_path):
    model, insights, ideas = toy / "model.py", archive(toy) / "insights.md", archive(toy) / "ideas_queue.md"
    for n, (old, new) in enumerate(EDITS, 1):
        messages.enqueue([
            tool_uses([("Read", {"file_path": str(model)}), ("Read", {"file_path": str(insights)}),
                       ("Read", {"file_path": str(ideas)})]),
            tool_uses([
                ("Edit", {"file_path": str(model), "old_string": old, "new_string": new}),
                ("Edit", {"file_path": str(insights), "old_string": "## Findings\n",
                          "new_string": f"## Findings\n\n- claude exp {n}: {old} -> {new}\n"}),
                ("Edit", {"file_path": str(ideas), "old_string": "## Queue\n",
                          "new_string": f"## Queue\n\n- [ ] claude idea {n}\n"}),
            ]),
            text(f"Looked at the loss.\n{old} -> {new}: move toward the optimum"),
        ])
    env = claude_env(tmp_path, messages, claude_bin)
    out = loop(toy, env, "--agent", "claude", "--model", "claude-sonnet-4-6", "--max-experiments", "3").stdout

    assert "3 experiments, 2 kept" in out
    recorded = assert_three_attempts_recorded(toy, env, "claude", STATUSES)
    assert [r.description for r in recorded[1:]] == [f"{o} -> {n}: move toward the optimum" for o, n in EDITS]
    assert "X = 2.0" in model.read_text() and "Y = 1.5" in model.read_text()
    notes = insights.read_text()
    assert all(f"- claude exp {n}:" in notes for n in (1, 2, 3))
    assert "## Current Best" in notes and f"{recorded[2].value:.6f}" in notes  # the harness's part is intact
    assert all(f"- [ ] claude idea {n}" in ideas.read_text() for n in (1, 2, 3))
    assert messages.remaining == 0
    assert KEY not in (archive(toy) / "llm_calls.jsonl").read_text()


def test_anthropic_backend_three_experiments_through_the_loop(toy, messages, tmp_path):
    for n, (old, new) in enumerate(EDITS, 1):
        messages.enqueue([
            tool_uses([("view_file", {"path": "model.py"}), ("read_archive_file", {"path": "insights.md"})]),
            tool_uses([
                ("replace_in_file", {"path": "model.py", "old_string": old, "new_string": new}),
                ("append_note", {"file": "insights.md", "text": f"- anthropic exp {n}: {old} -> {new}"}),
                ("append_note", {"file": "ideas_queue.md", "text": f"- [ ] anthropic idea {n}"}),
            ]),
            tool_use("finish", {"description": f"{old} -> {new}: move toward the optimum"}),
        ])
    env = anthropic_env(tmp_path, messages)
    out = loop(toy, env, "--agent", "anthropic", "--max-experiments", "3").stdout

    assert "3 experiments, 2 kept" in out
    recorded = assert_three_attempts_recorded(toy, env, "anthropic", STATUSES)
    assert [r.description for r in recorded[1:]] == [f"{o} -> {n}: move toward the optimum" for o, n in EDITS]
    assert len(llm_log(toy, env, "--experiment", "2", "--stage", "propose", "--json")) == 3  # one per turn
    # the summary stage: before experiments 2 and 3, one cheap call turned the last analysis into a lesson
    summaries = llm_log(toy, env, "--stage", "summary", "--json")
    assert [(c["experiment"], c["model"]) for c in summaries] == [(2, "claude-haiku-4-5"), (3, "claude-haiku-4-5")]
    assert all(not r.body.get("tools") for r in messages.summary_requests) and len(messages.summary_requests) == 2
    assert f"(exp 1) {CANNED_LESSON}" in (archive(toy) / "insights.md").read_text()
    notes = (archive(toy) / "insights.md").read_text()
    assert all(f"- anthropic exp {n}:" in notes for n in (1, 2, 3)) and "## Current Best" in notes
    assert all(f"- [ ] anthropic idea {n}" in (archive(toy) / "ideas_queue.md").read_text() for n in (1, 2, 3))
    # the model saw the file and the notes it asked for, and the real SDK sent the key (redacted here)
    first = messages.script_requests[1].body["messages"][-1]["content"]
    assert "X = 3.0" in first[0]["content"] and "## Current Best" in first[1]["content"]
    assert {"x-api-key", "authorization"} & messages.script_requests[0].headers.keys()
    assert KEY not in (archive(toy) / "llm_calls.jsonl").read_text()


@pytest.mark.slow
def test_aider_backend_three_experiments_through_the_loop(toy, openai, aider_bin, tmp_path):
    for n, (old, new) in enumerate(EDITS, 1):
        before, after = model_line(old, new)
        reply = (search_replace("model.py", before, after, say="Move the knob toward its optimum.")
                 + search_replace(".auto-log-research/insights.md", "## Findings",
                                  f"## Findings\n\n- aider exp {n}: {old} -> {new}")
                 + f"\n{old} -> {new}: move toward the optimum\n")
        openai.enqueue([openai_text(reply)])
    env = aider_env(tmp_path, openai, aider_bin)
    out = loop(toy, env, "--agent", "aider", "--model", AIDER_MODEL, "--max-experiments", "3").stdout

    assert "3 experiments, 2 kept" in out
    recorded = assert_three_attempts_recorded(toy, env, "aider", STATUSES)
    assert [r.description for r in recorded[1:]] == [f"{o} -> {n}: move toward the optimum" for o, n in EDITS]
    notes = (archive(toy) / "insights.md").read_text()
    assert all(f"- aider exp {n}:" in notes for n in (1, 2, 3)) and "## Current Best" in notes
    assert len(openai.chat_requests) == 3
    assert "dummy-key-for-the-fake-server" not in (archive(toy) / "llm_calls.jsonl").read_text()
    assert not list(toy.glob(".aider*"))


# --- bar 2: a cost cap below one call stops the loop before the call ---------------------------


def assert_nothing_happened(repo: Path) -> None:
    assert [r.status for r in rows(repo)] == ["baseline"]
    assert git(repo, "for-each-ref", "refs/auto-log-research/attempts/") == ""
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("backend", ["claude", "anthropic", "aider"])
def test_cost_cap_below_one_call_stops_before_calling(backend, toy, messages, openai, tmp_path, request):
    if backend == "claude":
        env, model = claude_env(tmp_path, messages, request.getfixturevalue("claude_bin")), "claude-sonnet-4-6"
    elif backend == "anthropic":
        env, model = anthropic_env(tmp_path, messages), "claude-sonnet-4-6"
    else:
        # a hosted model: the stand-in on localhost would make openai/fake-model local, and free
        env, model = aider_env(tmp_path, openai, request.getfixturevalue("aider_bin")), "anthropic/claude-sonnet-4-5"
    done = loop(toy, env, "--agent", backend, "--model", model, "--max-cost", "0.0001", "--max-experiments", "3")

    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("stopped: the next call would pass --max-cost $0.0001 (spent $0.00, next ≈ $")
    assert "raise --max-cost to go on. 0 experiments, 0 kept" in line
    assert messages.requests == [] and openai.requests == []  # the stand-in never heard from it
    assert not (archive(toy) / "llm_calls.jsonl").exists()
    assert_nothing_happened(toy)


def test_token_cap_stops_after_the_calls_it_allows(toy, messages, tmp_path):
    messages.enqueue([tool_use("replace_in_file", {"path": "model.py", "old_string": "X = 3.0", "new_string": "X = 2.0"},
                               usage={"input_tokens": 30_000, "output_tokens": 100})])
    env = anthropic_env(tmp_path, messages)
    # the first call's estimate (prompt + 8,192 output tokens) fits; after it spent 30,100 the next does not
    out = loop(toy, env, "--agent", "anthropic", "--max-tokens", "40000", "--max-experiments", "3").stdout
    assert "stopped: the next call would pass --max-tokens 40,000 (spent 30,100, next ≈" in out
    assert "raise --max-tokens to go on" in out
    assert len(messages.script_requests) == 1
    assert [r.status for r in rows(toy)] == ["baseline"]  # the unfinished proposal was not recorded
    assert (toy / "model.py").read_text().startswith("X = 3.0") and git(toy, "status", "--porcelain") == ""
    (call,) = llm_log(toy, env, "--json")
    assert call["tokens_in"] == 30_000 and call["experiment"] == 1
    # the next invocation starts from a clean tree and goes on
    messages.enqueue([tool_use("replace_in_file", {"path": "model.py", "old_string": "X = 3.0", "new_string": "X = 2.0"}),
                      tool_use("finish", {"description": "X 3 -> 2"})])
    loop(toy, env, "--agent", "anthropic", "--max-experiments", "1")
    assert [r.status for r in rows(toy)] == ["baseline", "keep"]


# --- bar 3: bad input, one clear line each; the loop goes on or stops cleanly --------------------


@pytest.mark.parametrize("case", ["claude_missing", "claude_no_key", "anthropic_no_key", "aider_missing"])
def test_setup_errors_stop_with_one_line_and_exit_2(case, toy, tmp_path, request):
    args = {"claude_missing": ["--agent", "claude"], "claude_no_key": ["--agent", "claude"],
            "anthropic_no_key": ["--agent", "anthropic"], "aider_missing": ["--agent", "aider"]}[case]
    if case == "claude_missing":
        env = claude_env(tmp_path, None, str(tmp_path / "nowhere" / "claude"))
        expected = "error: claude not found: npm install -g @anthropic-ai/claude-code, or choose --agent offline"
    elif case == "claude_no_key":
        env = claude_env(tmp_path, None, request.getfixturevalue("claude_bin"))
        del env["ANTHROPIC_API_KEY"]
        env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # never reached: it stops before calling
        expected = "error: claude is not logged in: run `claude` once to log in, or set ANTHROPIC_API_KEY"
    elif case == "anthropic_no_key":
        env = base_env(tmp_path)
        expected = "error: ANTHROPIC_API_KEY is not set: export it, or choose --agent claude or offline"
    else:
        env = base_env(tmp_path, HARNESS_AIDER_BIN=str(tmp_path / "nowhere" / "aider"))
        expected = "error: aider not found: install it in its own environment with `uv tool install aider-chat`"

    done = loop(toy, env, *args, "--max-experiments", "3", code=2)

    assert done.stderr.startswith(expected), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2  # the error and a hint
    assert_nothing_happened(toy)
    calls = llm_log(toy, env, "--json")
    assert all("AgentSetupError" in (c["error"] or "") for c in calls)  # at most the refused call, marked


def test_anthropic_rejected_model_is_recorded_then_stops_when_it_repeats(toy, messages, tmp_path):
    messages.enqueue([error(404, "model: claude-nonexistent-9", sticky=True)])
    env = anthropic_env(tmp_path, messages)
    out = loop(toy, env, "--agent", "anthropic", "--model", "claude-nonexistent-9").stdout  # no other stop rule

    recorded = rows(toy)[1:]
    assert [r.status for r in recorded] == ["agent_error"] * 3
    assert recorded[0].failure == ("AgentError: anthropic: unknown model or endpoint: check --model: "
                                   "model: claude-nonexistent-9")
    assert "stopped: the agent failed the same way 3 times in a row (AgentError: anthropic: unknown model" in out
    assert "fix its setup (model name, API key, endpoint)" in out
    assert len(messages.script_requests) == 3  # a 404 is not retried
    stats = llm_log(toy, env, "--stats", "--json")
    assert (stats["count"], stats["errors"]) == (3, 3)
    assert git(toy, "status", "--porcelain") == "" and git(toy, "rev-parse", "HEAD") == rows(toy)[0].commit


def test_anthropic_bad_tool_calls_huge_replies_and_no_edit(toy, messages, tmp_path):
    huge = "x" * 500_000
    messages.enqueue([
        # experiment 1: four bad tool calls, each answered with an error the model can act on; then a good edit
        tool_uses([("replace_in_file", {"path": "evaluate.py", "old_string": "loss", "new_string": "0"}),
                   ("replace_in_file", {"path": "model.py", "old_string": "X = 3.0"}),
                   ("view_file", {"path": 7}),
                   ("write_file", {"path": "model.py", "content": huge}),
                   ("no_such_tool", {})]),
        tool_uses([("replace_in_file", {"path": "model.py", "old_string": "X = 3.0", "new_string": "X = 2.0"}),
                   ("finish", {"description": "X 3 -> 2: toward the optimum"})]),
        # experiment 2: a huge reply with no edit
        text("thinking... " * 30_000 + "\n" + "I would change nothing " * 50),
        # experiment 3: a plain reply with no edit
        text("Nothing worth trying: X and Y are near their optima."),
    ])
    env = anthropic_env(tmp_path, messages)
    out = loop(toy, env, "--agent", "anthropic", "--max-experiments", "3").stdout

    assert "3 experiments, 1 kept" in out
    keep, huge_row, plain = rows(toy)[1:]
    assert (keep.status, keep.description) == ("keep", "X 3 -> 2: toward the optimum")
    results = messages.script_requests[1].body["messages"][-1]["content"]
    assert [r["is_error"] for r in results] == [True] * 5
    assert "'evaluate.py' may not be edited; editable: model.py" in results[0]["content"]
    assert "replace_in_file needs argument 'new_string'" in results[1]["content"]
    assert "view_file: path must be a string" in results[2]["content"]
    assert "content is 500,000 chars; the limit is 400,000" in results[3]["content"]
    assert "unknown tool 'no_such_tool'" in results[4]["content"]
    assert "loss" in (toy / "evaluate.py").read_text()
    # the huge reply: recorded as no_change with a one-line description; the log line is capped
    assert (huge_row.status, huge_row.failure) == ("no_change", "the agent changed nothing")
    assert len(huge_row.description) <= 300 and huge_row.description.startswith("I would change nothing")
    lines = (archive(toy) / "llm_calls.jsonl").read_text().splitlines()
    assert max(map(len, lines)) < 250_000
    assert (plain.status, plain.description) == ("no_change", "Nothing worth trying: X and Y are near their optima.")
    assert [r.commit for r in (huge_row, plain)] == ["-", "-"]  # no commit, no run
    assert len(list(archive(toy).glob("*/run.log"))) == 2  # the baseline's and the keep's (its confirmation is inside)


def test_claude_denied_edits_bad_arguments_and_no_edit(toy, messages, claude_bin, tmp_path):
    model, evaluate = toy / "model.py", toy / "evaluate.py"
    messages.enqueue([
        # experiment 1: the fixed evaluation is refused, a shell is not offered, a bad edit errors; then a good one
        tool_uses([("Read", {"file_path": str(evaluate)}), ("Read", {"file_path": str(model)})]),
        tool_use("Edit", {"file_path": str(evaluate), "old_string": "import os", "new_string": "import os  # x"}),
        tool_use("Bash", {"command": "echo hacked >> evaluate.py", "description": "x"}),
        tool_use("Edit", {"file_path": str(model), "old_string": "X = 9.9", "new_string": "X = 2.0"}),
        tool_use("Edit", {"file_path": str(model), "old_string": 42}),
        tool_use("Edit", {"file_path": str(model), "old_string": "X = 3.0", "new_string": "X = 2.0"}),
        text("X 3 -> 2: toward the optimum"),
        # experiment 2: no edit at all
        text("I see nothing worth changing."),
    ])
    env = claude_env(tmp_path, messages, claude_bin)
    out = loop(toy, env, "--agent", "claude", "--model", "claude-sonnet-4-6", "--max-experiments", "2").stdout

    assert "2 experiments, 1 kept" in out
    keep, nothing = rows(toy)[1:]
    assert (keep.status, keep.description) == ("keep", "X 3 -> 2: toward the optimum")
    assert (nothing.status, nothing.commit, nothing.description) == ("no_change", "-", "I see nothing worth changing.")
    assert "hacked" not in evaluate.read_text() and "# x" not in evaluate.read_text()
    assert messages.remaining == 0
    errors = [json.dumps(r.body["messages"][-1]["content"]) for r in messages.script_requests[2:6]]
    assert "Permission to use Edit has been denied" in errors[0]  # no allow rule names evaluate.py
    assert "No such tool available: Bash" in errors[1]
    assert "String to replace not found" in errors[2]
    assert "InputValidationError" in errors[3]
    (call,) = llm_log(toy, env, "--experiment", "1", "--json")
    assert call["error"] is None and [t["name"] for t in call["tool_calls"]].count("Edit") == 4


def test_claude_malformed_stream_json_is_an_agent_error_and_the_loop_goes_on(toy, tmp_path):
    env = claude_env(tmp_path, None, str(FAKE_CLAUDE), FAKE_CLAUDE_SCENARIO="malformed")
    out = loop(toy, env, "--agent", "claude", "--max-experiments", "2").stdout

    assert "reached --max-experiments 2. 2 experiments, 0 kept" in out
    recorded = rows(toy)[1:]
    assert [r.status for r in recorded] == ["agent_error", "agent_error"]
    assert recorded[0].failure.startswith("AgentError: claude printed malformed stream-json on line 2: ")
    assert all("malformed" in c["error"] for c in llm_log(toy, env, "--json"))
    assert git(toy, "status", "--porcelain") == ""


def test_claude_rejected_model_is_an_agent_error(toy, messages, claude_bin, tmp_path):
    messages.enqueue([error(404, "model: claude-nonexistent-9", sticky=True)])
    env = claude_env(tmp_path, messages, claude_bin, CLAUDE_CODE_MAX_RETRIES="0")
    out = loop(toy, env, "--agent", "claude", "--model", "claude-nonexistent-9", "--max-experiments", "1").stdout

    (row,) = rows(toy)[1:]
    assert row.status == "agent_error" and "claude reported an error" in row.failure
    assert "claude-nonexistent-9" in row.failure
    assert "1 experiments, 0 kept" in out


@pytest.mark.slow
def test_aider_edit_of_the_evaluation_no_edit_and_rejected_model(toy, openai, aider_bin, tmp_path):
    openai.enqueue([
        # experiment 1: aider applies an edit to a file it was not given; the harness's check catches it
        openai_text(search_replace("evaluate.py", 'print(f"loss: {loss:.6f}")', 'print("loss: 0.000000")')
                    + search_replace("model.py", *model_line("X = 3.0", "X = 2.0"))
                    + "\nReport a perfect loss: nothing can beat it\n"),
        # experiment 2: a reply with no edit
        openai_text("I would not change anything: both knobs look tuned."),
        # experiment 3: the server rejects the model
        openai_error(404, "The model `fake-model` does not exist"),
    ])
    env = aider_env(tmp_path, openai, aider_bin)
    out = loop(toy, env, "--agent", "aider", "--model", AIDER_MODEL, "--max-experiments", "3").stdout

    assert "3 experiments, 0 kept" in out
    violation, nothing, rejected = rows(toy)[1:]
    assert violation.status == "violation" and violation.commit == "-"
    assert violation.failure.startswith("changed files it may not touch: evaluate.py (restored)")
    assert violation.description == "Report a perfect loss: nothing can beat it"
    assert (toy / "evaluate.py").read_text() == git(toy, "show", "HEAD:evaluate.py") + "\n"
    assert (nothing.status, nothing.description) == ("no_change", "I would not change anything: both knobs look tuned.")
    assert rejected.status == "agent_error" and "aider got no reply from the model" in rejected.failure
    assert "does not exist" in rejected.failure or "NotFound" in rejected.failure
    assert git(toy, "status", "--porcelain") == "" and git(toy, "rev-parse", "HEAD") == rows(toy)[0].commit
    assert len(llm_log(toy, env, "--json")) == 3


def test_max_turns_bounds_a_model_that_never_edits(toy, messages, tmp_path):
    messages.enqueue([tool_use("view_file", {"path": "model.py"})] * 2)
    env = anthropic_env(tmp_path, messages)
    loop(toy, env, "--agent", "anthropic", "--max-turns", "2", "--max-experiments", "1")
    (row,) = rows(toy)[1:]
    assert (row.status, row.failure) == ("agent_error", "AgentError: no edit after 2 model turns (--max-turns 2)")
    assert len(messages.script_requests) == 2 and row.tokens > 0  # what the turns cost is still counted


# --- caps are per night: a loop killed and started again goes on counting ------------------------


def test_cost_cap_counts_the_spend_of_a_killed_invocation(toy, messages, tmp_path):
    costly = {"input_tokens": 100_000, "output_tokens": 0}  # $0.30 a call at claude-sonnet-4-6's $3/M

    def edit(old: str, new: str):
        return tool_uses([("replace_in_file", {"path": "model.py", "old_string": old, "new_string": new}),
                          ("finish", {"description": f"{old} -> {new}"})], usage=costly)

    messages.enqueue([edit("X = 3.0", "X = 2.0"), slow(edit("Y = 1.0", "Y = 1.5"), 300)])
    env = anthropic_env(tmp_path, messages)
    args = ["loop", "-q", "--agent", "anthropic", "--max-cost", "1.00"]
    first = subprocess.Popen([str(Path(sys.executable).parent / "harness"), *args], cwd=toy, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(messages.script_requests) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert len(messages.script_requests) == 2, first.communicate()
    os.killpg(first.pid, signal.SIGKILL)  # kill -9 while experiment 2's call is in flight
    first.communicate()
    spent_before = sum(c["cost_usd"] for c in llm_log(toy, env, "--json"))
    assert 0.30 <= spent_before < 0.31  # experiment 1's call and experiment 2's summary
    assert (archive(toy) / "caps_session.json").is_file()

    # The same --max-cost again: $0.30 of it is gone, so two more $0.30 calls fit, not three.
    messages.enqueue([edit("Y = 1.0", "Y = 1.5"), edit("X = 2.0", "X = 1.5"), edit("Y = 1.5", "Y = 2.0")])
    out = loop(toy, env, *args[2:]).stdout
    calls = llm_log(toy, env, "--json")
    total = sum(c["cost_usd"] for c in calls)
    assert total <= 1.00
    assert f"stopped: the next call would pass --max-cost $1.00 (spent ${total:.2f}, next ≈ $" in out
    assert messages.remaining == 1  # a fresh count would have made the third call
    assert len({c["session"] for c in calls}) == 1  # both invocations are one caps session
    assert [r.status for r in rows(toy)] == ["baseline", "keep", "keep", "keep"]


# --- an edit that does not parse goes back to the model once, then trains -----------------------


def test_syntax_error_goes_back_to_the_model_and_the_fixed_edit_trains(toy, messages, tmp_path):
    messages.enqueue([
        tool_uses([("replace_in_file", {"path": "model.py", "old_string": "X = 3.0", "new_string": "X = = 2.0"}),
                   ("finish", {"description": "X 3 -> 2"})]),
        tool_uses([("replace_in_file", {"path": "model.py", "old_string": "X = = 2.0", "new_string": "X = 2.0"}),
                   ("finish", {"description": "X 3 -> 2: toward the optimum"})]),
    ])
    env = anthropic_env(tmp_path, messages)
    out = loop(toy, env, "--agent", "anthropic", "--max-experiments", "1").stdout

    assert "1 experiments, 1 kept" in out
    (row,) = rows(toy)[1:]
    assert (row.status, row.description) == ("keep", "X 3 -> 2: toward the optimum")
    assert (archive(toy) / row.commit / "run.log").is_file()  # it trained
    retry_prompt = json.dumps(messages.script_requests[1].body["messages"][0]["content"])
    assert "REJECTED" in retry_prompt and "X = = 2.0" not in git(toy, "show", f"{row.commit}:model.py")
    assert "X = = 2.0" in retry_prompt or "line 1" in retry_prompt  # the parse error, as the guard saw it
    assert len(llm_log(toy, env, "--experiment", "1", "--json")) == 2  # both tries logged, one row
    assert row.tokens == sum(c["tokens_in"] + c["tokens_out"] for c in llm_log(toy, env, "--json"))


# --- aider: a rejected key is one clear line; a local model costs nothing --------------------------


@pytest.mark.slow
def test_aider_rejected_key_stops_with_one_line(toy, openai, aider_bin, tmp_path):
    openai.enqueue([openai_error(401, "Incorrect API key provided: dummy-ke***")])
    env = aider_env(tmp_path, openai, aider_bin)
    done = loop(toy, env, "--agent", "aider", "--model", AIDER_MODEL, "--max-experiments", "3", code=2)

    assert done.stderr.startswith("error: aider: the model's API rejected the key (AuthenticationError)")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2
    assert [r.status for r in rows(toy)] == ["baseline"] and git(toy, "status", "--porcelain") == ""
    assert len(openai.chat_requests) == 1  # not tried again all night
    (call,) = llm_log(toy, env, "--json")
    assert "AgentSetupError" in call["error"]
