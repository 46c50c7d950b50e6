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


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_speedup_example_keeps_the_faster_correct_version(tmp_path: Path):
    repo = example_repo("speedup", tmp_path)
    (tmp_path / "fast.py").write_text(FAST_PRIMES)
    agent = scripted_agent(tmp_path / "agent", [
        # wrong but fast: no sieving, the tests fail, no time is printed -> crash, not a win
        "sed -i 's/if p \\* p >= high:/if True:/' primes.py\necho 'skip the sieving'",
        f"cp {tmp_path / 'fast.py'} primes.py\necho 'sieve of Eratosthenes'",
        "echo '# comment only' >> primes.py\necho 'cosmetic'",
    ])
    env = harness_env({})
    out = check(harness(repo, env, "init", "--tag", "speed", "--baseline-runs", "2", "-q"))
    assert "baseline seconds" in out and "(lower is better)" in out
    out = check(harness(repo, env, "loop", "-q", "--agent-command", agent, "--max-experiments", "3"))
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "seconds").rows()
    assert [r.status for r in rows] == ["baseline", "crash", "keep", "discard"]
    header = (repo / ".auto-log-research" / "results.tsv").read_text().splitlines()[0]
    assert header.split("\t")[:5] == ["commit", "seconds", "memory_gb", "status", "description"]
    assert "sieve" in (repo / "primes.py").read_text()
    keep = rows[2]
    note = git(repo, "notes", "show", keep.commit)  # the git note: the metric, its value, which way is better
    assert note.startswith(f"seconds: {keep.value:.6f} (lower is better)   status: keep")
    assert f"delta vs best: {keep.delta:+.6f} (better; best {rows[0].value:.6f}" in note
    assert f"seconds: {keep.value:.6f}" in git(repo, "log", "-1")  # plain `git log` shows it
    log = check(harness(repo, env, "log"))
    assert log.splitlines()[0].startswith("seconds: lower is better") and "crash" in log
    assert f"keep        seconds {keep.value:.6f}  Δ {keep.delta:+.4f} better" in log


@pytest.mark.slow
def test_the_offline_agent_turns_the_speedup_knob(tmp_path: Path):
    """SEGMENT_SIZE changes the speed of primes_below() and never its result: the offline agent's
    moves are real speed-ups (or slow-downs) that the tests still pass, and a bigger block is
    kept. (Three experiments: on a loaded machine one halving can drown in the noise.)"""
    repo = example_repo("speedup", tmp_path)
    env = harness_env({})
    check(harness(repo, env, "init", "--tag", "speed", "-q"))
    check(harness(repo, env, "loop", "-q", "--max-experiments", "3"))
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "seconds").rows()
    assert rows[1].description.startswith("SEGMENT_SIZE 16 -> 32")
    assert "crash" not in [r.status for r in rows] and "keep" in [r.status for r in rows[1:]]
    assert rows[-1].value is not None and min(r.value for r in rows if r.kept) < rows[0].value
    assert "SEGMENT_SIZE = 16 " not in (repo / "primes.py").read_text()  # HEAD is the faster best


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
    # which way is better, wherever a person reads the result
    assert "baseline pass_rate 0.250000 (higher is better)" in out
    log = check(harness(repo, env, "log")).splitlines()
    assert log[0] == "pass_rate: higher is better; Δ is the change vs the best before each attempt"
    assert "keep        pass_rate 0.500000  Δ +0.2500 better (margin 0.0100)  split on any whitespace" in log[2]
    assert "discard     pass_rate 0.375000  Δ -0.1250 worse (margin 0.0100)  constant length" in log[3]
    status = check(harness(repo, env, "status"))
    assert "metric      pass_rate (higher is better)" in status
    assert f"best        pass_rate 0.625000 at {rows[3].short}" in status
    assert "(0.3750 better than the baseline 0.250000)" in status
    best = check(harness(repo, env, "best"))
    assert best.startswith(f"best pass_rate 0.625000 (higher is better) at {rows[3].short} (#003: empty text)")
    note = git(repo, "notes", "show", rows[2].commit)
    assert note.startswith("pass_rate: 0.375000 (higher is better)   status: discard")
    assert "delta vs best: -0.125000 (worse; best 0.500000" in note


@pytest.mark.parametrize("setting, message", [
    ('editable = ["missing.py"]', "missing.py (editable in the target) is missing"),
    ('immutable = ["missing_eval.py"]', "missing_eval.py (immutable in the target) is missing"),
    ('run_command = "python no_such_script.py"', "no_such_script.py (run by the run command) does not exist"),
    ('run_command = "python -m no_such_module_xyz -q"', "module 'no_such_module_xyz' is not importable"),
    ('reader = "json"', "reader 'json' needs a pattern"),
    ('budget = 0', "budget must be positive"),
    ('no_such_key = 1', "unknown setting 'no_such_key'"),
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
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
