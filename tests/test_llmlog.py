"""The model-call log: writing (in `finally`, redacted), reading (filters, stats, broken lines),
the caps it seeds, and `harness llm-log`."""

from __future__ import annotations

import json

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


def test_pricing_table_family_and_default():
    assert pricing.lookup("claude-sonnet-4-5-20250929").source == "table"
    fam = pricing.lookup("claude-sonnet-9")
    assert fam.source == "family:sonnet" and "not in the table" in fam.note
    unknown = pricing.lookup("gpt-7")
    assert unknown.source == "default" and "conservative" in unknown.note
    assert pricing.cost("gpt-7", 1_000_000, 0) >= pricing.cost("claude-opus-4-6", 1_000_000, 0)
    assert pricing.cost("claude-haiku-4-5", 1_000_000, 1_000_000, 1_000_000, 1_000_000) == pytest.approx(1 + 5 + 1.25 + 0.1)


# --- the command -----------------------------------------------------------------------------


def invoke(repo, *args):
    result = CliRunner().invoke(llm_log, [*args, "--repo", str(repo)], catch_exceptions=False,
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_lists_filters_and_exports(tmp_path, log):
    fill(log)
    out = invoke(tmp_path)
    assert "4 model calls" in out and "anthropic" in out and "0.3000" in out
    out = invoke(tmp_path, "--backend", "anthropic", "--stage", "propose")
    assert "1 model calls" in out
    rows = [json.loads(line) for line in invoke(tmp_path, "--jsonl", "--experiment", "2").splitlines()]
    assert [r["backend"] for r in rows] == ["claude", "anthropic"]
    assert len(json.loads(invoke(tmp_path, "--json", "--limit", "3"))) == 3


def test_cli_stats(tmp_path, log):
    fill(log)
    data = json.loads(invoke(tmp_path, "--stats", "--json"))
    assert (data["count"], data["errors"], data["cost_usd"]) == (4, 0, pytest.approx(0.61))
    assert data["p95_s"] == pytest.approx(3.85)
    out = invoke(tmp_path, "--stats")
    assert "latency p50 / p95" in out and "$0.6100" in out


def test_cli_with_no_log_says_so(tmp_path):
    assert "no model calls logged yet" in invoke(tmp_path)
    assert not (tmp_path / ".auto-log-research" / FILE_NAME).exists()
