"""The metric readers (harness/metric.py) on canned output, and through the real loop the one
reader that reads a file: a JSON metric left by an earlier run is never taken for this run's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.research import git, scripted_agent

from harness.cli import cli
from harness.config import Target
from harness.ledger import Ledger
from harness.metric import coverage_total, pytest_counts, pytest_pass_rate, read_metric
from harness.run_files import parse_summary


def read(tmp_path: Path, text: str, **target) -> tuple[float | None, str | None]:
    reading = read_metric(Target(run_command="x", **target), text, tmp_path)
    return reading.value, reading.error


# --- summary ---------------------------------------------------------------------------------


def test_summary_reads_the_block_after_the_last_separator(tmp_path: Path):
    text = "seconds: 9.0\n---\nseconds: 5.0\n---\nseconds: 1.25\nnote: fine\n"
    assert read(tmp_path, text, metric="seconds") == (1.25, None)


def test_summary_without_a_separator_takes_the_last_line_anywhere(tmp_path: Path):
    text = "warming up\nseconds: 3.5\nrun 2\nseconds: 2.5\ndone\n"
    assert read(tmp_path, text, metric="seconds") == (2.5, None)
    assert parse_summary(text, anywhere=True) == {"seconds": 2.5}
    assert parse_summary(text) == {}  # the analysis of a train.py run still wants its `---` block


def test_summary_with_a_separator_ignores_lines_before_it(tmp_path: Path):
    value, error = read(tmp_path, "seconds: 1.0\n---\nother: 2\n", metric="seconds")
    assert value is None and error == "no `seconds: <number>` line in the output (after the last `---` line, if it has one)"


@pytest.mark.parametrize("text, error", [
    ("nothing here\n", "no `score: <number>` line in the output"),
    ("score: fast\n", "`score: fast` in the output is not a number"),
    ("score: nan\n", "`score: nan` in the output is not a number"),
])
def test_summary_bad_cases_say_what_was_looked_for(tmp_path: Path, text: str, error: str):
    value, got = read(tmp_path, text, metric="score")
    assert value is None and got.startswith(error)


# --- regex -----------------------------------------------------------------------------------


def test_regex_takes_the_group_of_the_last_match(tmp_path: Path):
    text = "score=1.5\nscore=2.75 (final)\n"
    assert read(tmp_path, text, metric="score", reader="regex", pattern=r"score=([\d.]+)") == (2.75, None)
    assert read(tmp_path, "took 12 ms\n", metric="ms", reader="regex", pattern=r"\d+(?= ms)") == (12.0, None)


def test_regex_that_matches_nothing_or_no_number(tmp_path: Path):
    assert read(tmp_path, "score: 1\n", reader="regex", pattern=r"score=(\d+)") == (
        None, "the pattern 'score=(\\\\d+)' matched nothing in the output")
    assert read(tmp_path, "score=abc\n", reader="regex", pattern=r"score=(\w+)") == (
        None, "the pattern matched 'abc', not a number")


# --- json ------------------------------------------------------------------------------------


def test_json_reads_a_dotted_key_path(tmp_path: Path):
    (tmp_path / "out.json").write_text(json.dumps({"metrics": {"acc": 0.91}, "runs": [{"t": 3}, {"t": 4}]}))
    assert read(tmp_path, "", metric="acc", reader="json", pattern="out.json:metrics.acc") == (0.91, None)
    assert read(tmp_path, "", metric="t", reader="json", pattern="out.json:runs.1.t") == (4.0, None)


@pytest.mark.parametrize("content, pattern, error", [
    (None, "out.json:acc", "the run did not write out.json"),
    ("{not json", "out.json:acc", "out.json is not JSON: "),
    ('{"metrics": {"loss": 1}}', "out.json:metrics.acc", "out.json has no key 'acc' under 'metrics' (looking for 'metrics.acc')"),
    ('{"runs": []}', "out.json:runs.0", "out.json has no key '0' under 'runs'"),
    ('{"acc": "high"}', "out.json:acc", 'out.json:acc is "high", not a number'),
    ('{"acc": true}', "out.json:acc", "out.json:acc is true, not a number"),
])
def test_json_bad_cases(tmp_path: Path, content: str | None, pattern: str, error: str):
    if content is not None:
        (tmp_path / "out.json").write_text(content)
    value, got = read(tmp_path, "", metric="acc", reader="json", pattern=pattern)
    assert value is None and got.startswith(error), got


def test_json_older_than_the_run_is_refused(tmp_path: Path):
    path = tmp_path / "out.json"
    path.write_text('{"acc": 0.5}')
    old = time.time() - 60
    os.utime(path, (old, old))
    reading = read_metric(Target(run_command="x", reader="json", pattern="out.json:acc"), "", tmp_path,
                          since=time.time())
    assert reading.value is None
    assert reading.error == "out.json was not written by this run (it is older than the run's start)"


# --- pytest pass rate ------------------------------------------------------------------------


@pytest.mark.parametrize("line, rate", [
    ("5 passed in 0.12s", 1.0),
    ("2 failed, 6 passed in 0.30s", 0.75),
    ("1 failed, 2 passed, 1 error in 1.02s", 0.5),
    ("3 passed, 2 errors in 0.1s", 0.6),
    ("======= 1 failed, 3 passed, 2 skipped, 1 xfailed, 1 xpassed, 4 warnings in 2.50s =======", 0.75),
    ("2 passed, 1 deselected in 0.05 seconds", 1.0),  # older pytest
    ("3 passed in 61.20s (0:01:01)", 1.0),
])
def test_pytest_pass_rate_counts_passed_failed_and_errors(line: str, rate: float):
    assert pytest_pass_rate(f"....F.\n{line}\n") == pytest.approx(rate)


def test_pytest_pass_rate_uses_the_closing_line_only():
    text = "test says: 9 passed\n3 failed, 1 passed in 0.1s\n"  # a test's own print is not the summary
    assert pytest_pass_rate(text) == 0.25
    assert pytest_counts(text) == {"failed": 3, "passed": 1}


@pytest.mark.parametrize("text, error", [
    ("ImportError while loading conftest\n", "no pytest summary line (`N passed, M failed in Xs`) in the output"),
    ("2 skipped, 1 xfailed in 0.1s\n", "no pytest summary line"),
    ("no tests ran in 0.01s\n", "no pytest summary line"),
])
def test_pytest_bad_cases(tmp_path: Path, text: str, error: str):
    value, got = read(tmp_path, text, metric="pass_rate", reader="pytest")
    assert value is None and got.startswith(error)


# --- coverage --------------------------------------------------------------------------------


def test_coverage_total_reads_the_last_total_line(tmp_path: Path):
    report = ("Name    Stmts   Miss  Cover\n-----\nmod.py     10      2    80%\n-----\n"
              "TOTAL      40     10    75%\n")
    assert coverage_total(report) == 75.0
    branch = "TOTAL      40     10     12      3  72.50%\n"
    assert read(tmp_path, report + branch, metric="coverage", reader="coverage") == (72.5, None)


def test_coverage_without_a_total_line(tmp_path: Path):
    assert read(tmp_path, "mod.py 10 2 80%\n", metric="coverage", reader="coverage") == (
        None, "no coverage `TOTAL ... NN%` line in the output (run `coverage report` after the tests)")


# --- through the loop: a stale JSON file -------------------------------------------------------

SCORE = """\
import json, os
X = 2.0
if not os.path.exists("skip.flag"):
    with open("result.json", "w") as f:
        json.dump({"score": 10 - X}, f)
"""


def test_a_json_metric_left_by_an_earlier_run_is_not_this_runs(tmp_path: Path):
    """The baseline writes result.json (score 8); the attempt no longer writes it: the baseline's
    file, still there, must not be read as the attempt's result."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "score.py").write_text(SCORE)
    (repo / ".gitignore").write_text("result.json\nskip.flag\n__pycache__/\n")
    (repo / "harness.toml").write_text('editable = ["score.py"]\nrun_command = "python score.py"\nmetric = "score"\n'
                                       'direction = "max"\nreader = "json"\npattern = "result.json:score"\n'
                                       "budget = 30\ngrace_s = 30\nconfirm = false\nbaseline_runs = 1\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "start")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "--tag", "t", "-q", "--repo", str(repo)], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    agent = scripted_agent(tmp_path / "agent", [
        "sed -i 's/^X = 2.0/X = 1.0/' score.py\ntouch skip.flag\necho 'X down, and no result file'"])
    result = runner.invoke(cli, ["loop", "-q", "--agent-command", agent, "--max-experiments", "1", "--repo", str(repo)],
                           env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "score").rows()
    assert [r.status for r in rows] == ["baseline", "crash"]
    assert rows[0].value == 8.0 and rows[1].value is None
    assert rows[1].failure == "no_metric: result.json was not written by this run (it is older than the run's start)"
