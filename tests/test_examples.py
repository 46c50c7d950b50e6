"""The two worked examples of another target (examples/), end to end through the real CLI:
`harness init` + `harness loop --max-experiments 3` with scripted agents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.research import git, harness, harness_env, scripted_agent

from harness.ledger import Ledger

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FAST_PRIMES = '''"""The function to make faster. The harness's agent may edit this file only."""

LIMIT = 30000


def primes_below(n: int) -> list[int]:
    """All primes p < n, in increasing order (sieve of Eratosthenes)."""
    if n < 3:
        return []
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for p in range(2, int(n ** 0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytearray(len(range(p * p, n, p)))
    return [i for i in range(n) if sieve[i]]
'''


def example_repo(name: str, tmp_path: Path) -> Path:
    repo = tmp_path / name
    shutil.copytree(EXAMPLES / name, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def statuses(repo: Path, metric: str) -> list[str]:
    return [r.status for r in Ledger(repo / ".auto-log-research" / "results.tsv", metric).rows()]


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_speedup_example_keeps_the_faster_correct_version(tmp_path: Path):
    repo = example_repo("speedup", tmp_path)
    (tmp_path / "fast.py").write_text(FAST_PRIMES)
    agent = scripted_agent(tmp_path / "agent", [
        # wrong but fast: the tests fail, no time is printed -> crash, not a win
        "sed -i 's/range(2, candidate)/range(2, 3)/' primes.py\necho 'only test divisibility by 2'",
        f"cp {tmp_path / 'fast.py'} primes.py\necho 'sieve of Eratosthenes'",
        "echo '# comment only' >> primes.py\necho 'cosmetic'",
    ])
    env = harness_env({})
    out = check(harness(repo, env, "init", "--tag", "speed", "--baseline-runs", "2", "-q"))
    assert "baseline seconds" in out
    out = check(harness(repo, env, "loop", "-q", "--agent-command", agent, "--max-experiments", "3"))
    assert statuses(repo, "seconds") == ["baseline", "crash", "keep", "discard"]
    header = (repo / ".auto-log-research" / "results.tsv").read_text().splitlines()[0]
    assert header.split("\t")[:5] == ["commit", "seconds", "memory_gb", "status", "description"]
    assert "sieve" in (repo / "primes.py").read_text()
    assert "seconds:" in git(repo, "log", "-1")  # the git note names the metric
    log = check(harness(repo, env, "log"))
    assert "seconds" in log and "crash" in log


def test_passrate_example_keeps_fixes_in_the_max_direction(tmp_path: Path):
    repo = example_repo("passrate", tmp_path)
    fix_count = "sed -i 's/return len(text.split(\" \"))/return len(text.split())/' textstats.py\necho 'split on any whitespace'"
    break_more = "sed -i 's/return sum(len(w) for w in words) \\/ len(words)/return 1.0/' textstats.py\necho 'constant length'"
    fix_avg = ("sed -i 's/return sum(len(w) for w in words) \\/ len(words)/"
               "return sum(len(w) for w in words) \\/ len(words) if words else 0.0/' textstats.py\necho 'empty text'")
    agent = scripted_agent(tmp_path / "agent", [fix_count, break_more, fix_avg])
    env = harness_env({})
    out = check(harness(repo, env, "init", "--tag", "fix", "-q"))
    assert "baseline pass_rate 0.250000" in out
    check(harness(repo, env, "loop", "-q", "--agent-command", agent, "--max-experiments", "3"))
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "pass_rate").rows()
    assert [r.status for r in rows] == ["baseline", "keep", "discard", "keep"]
    assert [round(r.value, 3) for r in rows] == [0.25, 0.5, 0.375, 0.625]
    assert rows[1].delta == pytest.approx(0.25)


@pytest.mark.parametrize("setting, message", [
    ('editable = ["missing.py"]', "missing.py (editable in the target) is missing"),
    ('direction = "sideways"', "unknown direction"),
    ('immutable = ["textstats.py", "test_textstats.py"]', "both editable and immutable"),
    ('run_command = "no-such-tool --x"', "was not found"),
    ('reader = "regex"\npattern = "score=(\\\\d+)"\nrun_command = "python -c \'print(1)\'"', "matched nothing"),
    ('metric = "accuracy"\nreader = "summary"\nrun_command = "python -c \'print(1)\'"', "no `accuracy: <number>` line"),
])
def test_bad_target_config_fails_at_init(tmp_path: Path, setting: str, message: str):
    repo = tmp_path / "passrate"
    shutil.copytree(EXAMPLES / "passrate", repo)
    config = (repo / "harness.toml").read_text()
    keys = {line.split(" =")[0] for line in setting.splitlines()}
    kept = [line for line in config.splitlines() if line.split(" =")[0] not in keys]
    config = "\n".join(kept) + "\n" + setting + "\n"
    (repo / "harness.toml").write_text(config)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    result = harness(repo, harness_env({}), "init", "-q")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
