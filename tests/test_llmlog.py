"""The model-call log: writing (in `finally`, redacted), reading (filters, stats, broken lines),
the caps it seeds, and `harness llm-log`."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import pricing
from harness.caps import Caps
from harness.commands.llmlog import llm_log
from harness.errors import CapExceeded
from harness.llmlog import FILE_NAME, CallFilter, LlmLog, percentile, read_calls, redact, stats


@pytest.fixture
def log(tmp_path):
    return LlmLog.in_archive(tmp_path / ".auto-log-research", session="s1")


def fill(log: LlmLog) -> None:
    for exp, backend, stage, cost, secs in ((1, "claude", "propose", 0.10, 1.0), (2, "claude", "propose", 0.20, 2.0),
                                            (2, "anthropic", "summary", 0.01, 3.0), (3, "anthropic", "propose", 0.30, 4.0)):
        with log.call(experiment=exp, backend=backend, stage=stage, model="claude-sonnet-4-6", prompt="p") as c:
            c.tokens_in, c.tokens_out, c.cost_usd, c.response = 1000 * exp, 100, cost, "ok"
        # make durations deterministic for the percentile checks
        lines = log.path.read_text().splitlines()
        last = json.loads(lines[-1])
        last["duration_s"] = secs
        log.path.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")


def test_a_failed_call_is_logged_with_its_error(log):
    with pytest.raises(RuntimeError), log.call(experiment=7, backend="anthropic", stage="propose",
                                               model="m", prompt=[{"role": "user", "content": "hi"}]) as call:
        call.retries = 2
        raise RuntimeError("socket closed")
    (entry,) = read_calls(log.path)
    assert entry["error"] == "RuntimeError: socket closed"
    assert (entry["experiment"], entry["retries"], entry["session"]) == (7, 2, "s1")
    assert entry["prompt"] == [{"role": "user", "content": "hi"}]
    assert set(entry) >= {"ts", "backend", "stage", "model", "response", "tool_calls", "tokens_in", "tokens_out",
                          "tokens_cached", "cost_usd", "duration_s", "error", "retries"}


def test_secrets_are_redacted_before_writing(log, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plainkey-without-prefix-123")
    with log.call(experiment=1, backend="claude", stage="propose", model="m",
                  prompt="key sk-ant-api03-AbC_def-123 and plainkey-without-prefix-123") as call:
        call.response = {"headers": {"x-api-key": "abc123secret", "Authorization": "Bearer tok.en-1"}}
        call.error = "curl -H 'x-api-key: zzz999' -H 'authorization: Bearer qqq'"
    raw = log.path.read_text()
    for secret in ("AbC_def-123", "plainkey-without-prefix", "abc123secret", "tok.en-1", "zzz999", "qqq"):
        assert secret not in raw
    entry = read_calls(log.path)[0]  # still valid JSON
    assert entry["response"]["headers"]["x-api-key"] == "***"
    assert "sk-ant-***" in entry["prompt"]


def test_any_providers_secret_variables_are_redacted(log, monkeypatch):
    """Not only Anthropic's: the value of every *_API_KEY, *_TOKEN and *_SECRET variable, from
    this process's environment or one a backend passes (aider runs with its own)."""
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    monkeypatch.setenv("MY_SECRET", "my-secret-value-xyz")
    monkeypatch.setenv("SHORT_TOKEN", "tok")  # too short to tell from ordinary text: kept
    monkeypatch.setenv("COUNT_TOKEN", "123456789")  # digits only: would break JSON numbers
    with log.call(experiment=1, backend="aider", stage="propose", model="m",
                  prompt="openai-key-0123456789 hf_abcdefghijkl my-secret-value-xyz tok") as call:
        call.tokens_in = 123456789
    raw = log.path.read_text()
    for secret in ("openai-key-0123456789", "hf_abcdefghijkl", "my-secret-value-xyz"):
        assert secret not in raw
    entry = read_calls(log.path)[0]
    assert entry["prompt"] == "*** *** *** tok" and entry["tokens_in"] == 123456789

    env = {"GROQ_API_KEY": "groq-key-abcdefgh", "GROQ_OLD_TOKEN": "groq-key"}
    assert redact("used groq-key-abcdefgh", env) == "used ***"  # the longer value first, whole
    assert redact("openai-key-0123456789", {}) == "openai-key-0123456789"  # only the env given


def test_redact_keeps_ordinary_text():
    text = 'the "authorization" step and Bearer of news: keep'
    assert redact("nothing secret here") == "nothing secret here"
    assert "keep" in redact(text)


def test_filters_limit_and_broken_lines(log):
    fill(log)
    with open(log.path, "a") as f:
        f.write("this is not json\n[1, 2]\n")
    f_path = log.path
    assert len(read_calls(f_path)) == 4
    assert [c["experiment"] for c in read_calls(f_path, CallFilter(experiment=2))] == [2, 2]
    assert [c["stage"] for c in read_calls(f_path, CallFilter(backend="anthropic"))] == ["summary", "propose"]
    assert [c["experiment"] for c in read_calls(f_path, CallFilter(stage="propose", limit=2))] == [2, 3]
    assert read_calls(f_path, CallFilter(session="other")) == []
    assert read_calls(f_path.parent / "missing.jsonl") == []


def test_a_torn_last_line_is_cut_before_the_next_append(log):
    fill(log)
    with open(log.path, "a") as f:
        f.write('{"experiment": 9, "backend": "cla')  # a crash mid-write
    with log.call(experiment=10, backend="claude", stage="propose", model="m"):
        pass
    assert [c["experiment"] for c in read_calls(log.path)] == [1, 2, 2, 3, 10]


def test_stats(log):
    fill(log)
    with pytest.raises(ValueError), log.call(experiment=4, backend="claude", stage="propose", model="m"):
        raise ValueError("bad")
    s = stats(read_calls(log.path))
    assert (s.count, s.errors, s.error_rate) == (5, 1, 0.2)
    assert (s.tokens_in, s.tokens_out) == (8000, 400)
    assert s.cost_usd == pytest.approx(0.61)
    assert s.p50_s == pytest.approx(2.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert stats([]).p50_s is None and stats([]).error_rate == 0.0


def test_caps_seed_from_the_session_in_the_log(log):
    fill(log)
    LlmLog(log.path, session="s2")  # another session's calls do not count
    with open(log.path, "a") as f:  # a hand-edited line with a value that is not a number counts as 0
        f.write(json.dumps({"session": "s1", "tokens_in": "abc", "cost_usd": None}) + "\n")
    caps = Caps.from_log(log.path, "s1", max_cost=0.70)
    assert caps.spent_cost == pytest.approx(0.61) and caps.spent_tokens == 8400
    with pytest.raises(CapExceeded, match=r"--max-cost \$0.70 \(spent \$0.61, next ≈ \$0.10\)"):
        caps.check_before(0.10, 1000)
    caps.check_before(0.05, 1000)
    assert Caps.from_log(log.path, "nobody", max_cost=0.70).spent_cost == 0


def test_caps_session_is_reused_until_closed_or_a_day_old(tmp_path):
    from harness.caps import SESSION_FILE, close_session, open_session

    archive = tmp_path / ".auto-log-research"
    first = open_session(archive, now=1000.0)
    assert open_session(archive, now=1000.0 + 23 * 3600) == first  # a restart the same night continues it
    assert json.loads((archive / SESSION_FILE).read_text()) == {"session": first, "started": 1000.0}
    close_session(archive)
    assert not (archive / SESSION_FILE).exists()
    second = open_session(archive, now=2000.0)
    assert second != first
    assert open_session(archive, now=2000.0 + 25 * 3600) != second  # older than a day: a new night
    (archive / SESSION_FILE).write_text("{not json")
    assert open_session(archive) not in (first, second)  # unreadable: a new one, no crash
    close_session(archive)
    close_session(archive)  # closing twice is fine


def test_registry_agents_share_the_nights_session_and_its_spend(tmp_path, monkeypatch):
    from harness.agents.registry import make_agent
    from harness.caps import open_session
    from harness.config import AgentSettings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    archive = tmp_path / ".auto-log-research"
    session = open_session(archive)
    earlier = LlmLog.in_archive(archive, session)
    with earlier.call(experiment=1, backend="anthropic", stage="propose", model="m") as c:
        c.cost_usd, c.tokens_in = 0.25, 1000
    with LlmLog.in_archive(archive, "another-night").call(experiment=1, backend="x", stage="propose", model="m") as c:
        c.cost_usd = 5.0
    agent = make_agent(AgentSettings(name="anthropic", max_cost=1.0), archive)
    assert agent.log.session == session
    assert agent.caps.spent_cost == pytest.approx(0.25) and agent.caps.spent_tokens == 1000


def test_backend_details_are_logged(log):
    with log.call(experiment=1, backend="claude", stage="propose", model="m") as call:
        call.details = {"num_turns": 3, "denied_tools": ["Read"]}
    assert read_calls(log.path)[0]["details"] == {"num_turns": 3, "denied_tools": ["Read"]}


def test_pricing_table_family_and_default():
    assert pricing.lookup("claude-sonnet-4-5-20250929").source == "table"
    fam = pricing.lookup("claude-sonnet-9")
    assert fam.source == "family:sonnet" and "not in the table" in fam.note
    unknown = pricing.lookup("gpt-7")
    assert unknown.source == "default" and "conservative" in unknown.note
    assert pricing.cost("gpt-7", 1_000_000, 0) >= pricing.cost("claude-opus-4-6", 1_000_000, 0)
    assert pricing.cost("claude-haiku-4-5", 1_000_000, 1_000_000, 1_000_000, 1_000_000) == pytest.approx(1 + 5 + 1.25 + 0.1)


# --- the command -----------------------------------------------------------------------------


def git_repo(path):
    """The command finds its repository through git, as the other view commands do."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def invoke(repo, *args, code=0):
    result = CliRunner().invoke(llm_log, [*args, "--repo", str(repo)], catch_exceptions=False,
                                env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def test_cli_lists_filters_and_exports(tmp_path, log):
    git_repo(tmp_path)
    fill(log)
    out = invoke(tmp_path)
    assert "4 model calls" in out and "anthropic" in out and "0.3000" in out
    out = invoke(tmp_path, "--backend", "anthropic", "--stage", "propose")
    assert "1 of 1 model calls" in out
    rows = [json.loads(line) for line in invoke(tmp_path, "--jsonl", "--experiment", "2").splitlines()]
    assert [r["backend"] for r in rows] == ["claude", "anthropic"]
    assert len(json.loads(invoke(tmp_path, "--json", "--limit", "3"))) == 3


def test_cli_stats(tmp_path, log):
    git_repo(tmp_path)
    fill(log)
    data = json.loads(invoke(tmp_path, "--stats", "--json"))
    assert (data["count"], data["errors"], data["cost_usd"]) == (4, 0, pytest.approx(0.61))
    assert data["p95_s"] == pytest.approx(3.85)
    out = invoke(tmp_path, "--stats")
    assert "latency p50 / p95" in out and "$0.6100" in out


def test_cli_with_no_log_says_so(tmp_path):
    git_repo(tmp_path)
    assert "no model calls logged yet" in invoke(tmp_path)
    assert not (tmp_path / ".auto-log-research" / FILE_NAME).exists()


def fill_mixed(log: LlmLog) -> None:
    """Calls of two models, one failed with a bracketed path (rich markup, if it were parsed)."""
    fill(log)  # #1-#4: claude-sonnet-4-6, costs 0.10 0.20 0.01 0.30, latency 1 2 3 4 s
    with pytest.raises(OSError), log.call(experiment=5, backend="claude", stage="propose", model="[bold]haiku[/]",
                                          prompt="PROMPT-TEXT [/usr/bin/claude]") as c:
        c.tokens_in, c.tokens_out, c.cost_usd = 50_000, 10, 0.05
        c.tool_calls = [{"name": "edit_file", "input": {"path": "train.py"}}]
        c.response = {"content": [{"type": "text", "text": "RESPONSE-TEXT"}]}
        raise OSError("[/usr/bin/claude] exited with code 1")


def numbers(out: str) -> list[int]:
    """The # column of the table, top to bottom."""
    return [int(line.split("│")[1]) for line in out.splitlines() if line.count("│") > 5 and line.split("│")[1].strip().isdigit()]


def test_cli_filters_by_model_and_errors_and_sorts(tmp_path, log):
    git_repo(tmp_path)
    fill_mixed(log)
    assert numbers(invoke(tmp_path)) == [1, 2, 3, 4, 5]  # by time, oldest first
    assert numbers(invoke(tmp_path, "--reverse")) == [5, 4, 3, 2, 1]
    assert numbers(invoke(tmp_path, "--sort", "cost")) == [4, 2, 1, 5, 3]  # the biggest first
    assert numbers(invoke(tmp_path, "--sort", "cost", "-r")) == [3, 5, 1, 2, 4]
    assert numbers(invoke(tmp_path, "--sort", "tokens", "-n", "2")) == [5, 4]  # the top 2
    assert numbers(invoke(tmp_path, "--sort", "latency", "-n", "1")) == [4]  # 4 s; #5 failed at once
    assert numbers(invoke(tmp_path, "-n", "2")) == [4, 5]  # by time: the newest 2
    assert numbers(invoke(tmp_path, "--model", "HAIKU")) == [5]  # a part of the name, any case
    assert numbers(invoke(tmp_path, "--model", "sonnet", "-e", "2")) == [2, 3]
    out = invoke(tmp_path, "--errors")
    assert numbers(out) == [5] and "1 of 1 model calls" in out
    assert "[/usr/bin/claude] exited with code 1" in out and "[bold]haiku[/]" in out  # verbatim, no MarkupError
    exported = json.loads(invoke(tmp_path, "--json", "--sort", "cost", "--errors"))
    assert [c["experiment"] for c in exported] == [5]
    assert json.loads(invoke(tmp_path, "--stats", "--json", "--errors"))["count"] == 1


def test_cli_show_prints_one_call_whole(tmp_path, log):
    git_repo(tmp_path)
    fill_mixed(log)
    out = invoke(tmp_path, "--show", "5")
    for text in ("call #5", "PROMPT-TEXT [/usr/bin/claude]", "RESPONSE-TEXT", "edit_file", "train.py",
                 "tokens_in", "50000", "cost_usd", "0.05", "OSError: [/usr/bin/claude] exited with code 1",
                 "[bold]haiku[/]", "session", "s1"):
        assert text in out, text
    assert json.loads(invoke(tmp_path, "--show", "2", "--json"))["cost_usd"] == pytest.approx(0.2)
    err = invoke(tmp_path, "--show", "9", code=2)
    assert "no call #9: the log has 5 calls" in err


def test_cli_finds_the_repository_from_a_subfolder(tmp_path, log, monkeypatch):
    git_repo(tmp_path)
    fill(log)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    out = CliRunner().invoke(llm_log, [], catch_exceptions=False, env={"COLUMNS": "200"}).output
    assert "4 of 4 model calls" in out
    outside = tmp_path.parent / "not-a-repo"
    outside.mkdir()
    result = CliRunner().invoke(llm_log, ["--repo", str(outside)], catch_exceptions=False)
    assert result.exit_code == 2 and "is not inside a git repository" in result.output


def test_cli_pages_on_a_terminal_and_prints_plainly_through_a_pipe(tmp_path, log):
    """The real command on a pseudo-terminal goes through $PAGER; piped, it does not."""
    git_repo(tmp_path)
    fill_mixed(log)
    paged = tmp_path / "paged.txt"
    env = {**os.environ, "PAGER": f"tee {paged}", "COLUMNS": "200", "LINES": "40"}
    exe = [str(Path(sys.executable).parent / "harness"), "llm-log", "--repo", str(tmp_path)]
    for args in ((), ("--show", "5")):
        paged.unlink(missing_ok=True)
        master, slave = pty.openpty()
        proc = subprocess.Popen([*exe, *args], stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        screen = b""
        while True:  # drain the terminal, or the pager blocks on a full buffer
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(timeout=60) == 0, screen.decode(errors="replace")
        os.close(master)
        text = paged.read_text()
        assert ("5 of 5 model calls" if not args else "RESPONSE-TEXT") in text, text
        assert "\x1b[" not in text  # a pager that is not less gets plain text
    paged.unlink()
    piped = subprocess.run([*exe, "--show", "5"], env=env, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "RESPONSE-TEXT" in piped.stdout and not paged.exists()


def test_cli_table_fits_a_narrow_terminal(tmp_path, log):
    git_repo(tmp_path)
    fill_mixed(log)
    out = CliRunner().invoke(llm_log, ["--repo", str(tmp_path)], catch_exceptions=False, env={"COLUMNS": "80"}).output
    assert max(len(line) for line in out.splitlines()) <= 80
    assert numbers(out) == [1, 2, 3, 4, 5] and "cached" not in out  # every call, the minor columns left out
    assert "code 1" in out  # a long error folds instead of being cut off
