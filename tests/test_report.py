"""`harness report` and `harness notes` on a realistic archive in a real git repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.archive import XSS_DESCRIPTION, git, harness_command, init_repo, make_archive
from support.browser import Browser, chromium_path

from harness.cli import cli
from harness.ledger import Ledger, Row

SHOTS = Path(os.environ.get("HARNESS_SCREENSHOTS", "")) if os.environ.get("HARNESS_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("research") / "repo"
    make_archive(root, 13)
    return root


@pytest.fixture(scope="module")
def report_html(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report.html"
    result = CliRunner().invoke(cli, ["report", "--repo", str(repo), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"report: {out}" in result.output
    return out


def browser_or_skip(tmp: Path) -> Browser:
    binary, reason = chromium_path()
    if binary is None:
        print(f"\n*** SKIPPING browser checks: {reason} ***")
        pytest.skip(f"no headless browser: {reason}")
    return Browser.launch(tmp)


def test_report_escapes_everything_from_the_archive(report_html: Path) -> None:
    html = report_html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html and "<img" not in html and "<b>bold" not in html
    assert html.count("<script") == 1  # the page's own sorting/refresh script, nothing else
    assert "&lt;script&gt;console.log(&#x27;XSS-NOTES&#x27;)" in html


def test_report_is_self_contained(report_html: Path) -> None:
    html = report_html.read_text()
    urls = set(re.findall(r"<[a-zA-Z][^>]*?\s(?:src|href)=[\"']?([^\"' >]+)", html))  # in real tags only
    assert urls <= {"data:,", "#summary", "#progress", "#experiments", "#lineage", "#failures", "#curves",
                     "#notes", "#usage"}, urls
    assert "@import" not in html and "url(" not in html
    assert "script-src 'sha256-" in html  # CSP: only the page's own script may run


def test_report_shows_every_section_with_the_archive_data(report_html: Path, repo: Path) -> None:
    html = report_html.read_text()
    rows = Ledger(repo / ".auto-log-research" / "results.tsv").rows()
    best = [r for r in rows if r.kept][-1]
    for anchor in ("summary", "progress", "experiments", "lineage", "failures", "curves", "notes", "usage"):
        assert f'<section id="{anchor}">' in html
    assert f"{best.value:.6f}" in html and best.short in html  # best in the summary
    assert "+0.030000 (1.58%)" in html  # 1.90 -> 1.87
    assert html.count("<tr class=") == len(rows)  # one table row per experiment
    assert html.count('<circle class="pt') == sum(r.value is not None for r in rows)
    assert html.count('class="pt crash"') == 2  # crashes have no value: a cross, not a dot
    assert "no result" in html  # crashed runs shown as such
    # lineage: each keep with the train.py diff from the keep before it, colored
    keeps = [r for r in rows if r.status == "keep"]
    assert html.count('<pre class="diff">') == len(keeps)
    assert '<span class="del">-MATRIX_LR = 0.0200' in html and '<span class="add">+MATRIX_LR = 0.0242' in html
    # failures grouped by class
    for cls in ("oom", "diverged", "agent", "infra", "violation", "no_change"):
        assert f"<tr><td>{cls}</td>" in html, cls
    # loss curves of baseline and best, drawn from metrics.jsonl
    assert html.count("<polyline points=") == 2 and f"best {best.short}" in html
    # notes and ideas
    assert "Current Best" in html and "WARMUP = 20" in html and "smoother start &lt;i&gt;maybe&lt;/i&gt;" in html
    assert "<td>done</td><td>DEPTH = 6</td>" in html


def test_report_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    with browser_or_skip(tmp_path) as b:
        seconds = b.navigate(report_html.as_uri())
        b.drain(0.5)
        assert b.messages == []  # no console output, no exceptions, no CSP violations, no alert()
        assert b.evaluate("document.title") == "auto-log-research: repo"
        assert b.evaluate("document.scripts.length") == 1 and b.evaluate("document.images.length") == 0
        assert XSS_DESCRIPTION in b.evaluate("document.body.innerText")  # shown as text
        assert b.evaluate("document.querySelectorAll('svg.chart').length") == 3
        # sorting: click the "#" header twice -> descending experiment numbers
        b.evaluate("document.querySelector('table.sortable th').click()")
        b.evaluate("document.querySelector('table.sortable th').click()")
        first = b.evaluate("document.querySelector('table.sortable tbody tr td').textContent")
        assert first == "12"
        b.evaluate("document.querySelector('table.sortable th:nth-child(4)').click()")  # by value, ascending
        first_value = b.evaluate("document.querySelector('table.sortable tbody tr td:nth-child(4)').textContent")
        assert first_value == "1.870000"
        assert b.messages == []
        shot = b.screenshot((SHOTS or tmp_path) / "report.png")
        assert shot.stat().st_size > 10_000
        print(f"report loaded in {seconds:.2f} s; screenshot {shot}")


def test_report_of_an_empty_archive_says_there_is_nothing_yet(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    init_repo(root)
    out = tmp_path / "empty.html"
    result = CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Nothing yet" in out.read_text()
    Ledger(root / ".auto-log-research" / "results.tsv").append(
        Row("-", None, 0.0, "agent_error", "agent failed", 0, failure="agent: no key"))
    result = CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "Nothing kept yet" in html and "No experiment has a result yet" in html and "no result" in html
    if chromium_path()[0]:
        with Browser.launch(tmp_path) as b:
            b.navigate(out.as_uri())
            assert b.messages == []


def test_report_uses_the_targets_metric_and_direction(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_archive(root, 5, metric="pass_rate")
    (root / "harness.toml").write_text('metric = "pass_rate"\ndirection = "max"\n')
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "<b>pass_rate</b> (higher is better)" in html and ">pass_rate</th>" in html
    assert "val_bpb" not in html
    (root / "harness.toml").unlink()  # no config says so: the direction comes from the keeps
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "<b>pass_rate</b> (lower is better)" in html  # the fixture's keeps go down


def test_report_falls_back_to_archived_snapshots_without_git_objects(repo: Path, tmp_path: Path) -> None:
    """An archive copied next to a fresh clone whose history lacks the attempts still shows diffs."""
    root = tmp_path / "fresh"
    init_repo(root)
    (root / "train.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fresh")
    shutil.copytree(repo / ".auto-log-research", root / ".auto-log-research")
    (root / ".auto-log-research" / "results.tsv").open("a").write("garbage line\n")
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert '<span class="add">+MATRIX_LR = 0.0242' in html
    assert "skipped a corrupt line" in html  # the ledger's warning is shown, not a crash


def test_report_outside_a_git_repo_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([*harness_command(), "report"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {tmp_path.resolve()} is not inside a git repository",
                                        "  -> cd into the research repo or pass --repo PATH"]


def test_notes_shows_each_idea_with_its_state(repo: Path) -> None:
    result = CliRunner().invoke(cli, ["notes", "--repo", str(repo)], catch_exceptions=False,
                                env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "insights.md" in out and "<script>console.log('XSS-NOTES')</script>" in out  # verbatim, not dropped
    lines = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") >= 5}
    assert "pending" in lines["WARMUP = 20"]
    assert "tried" in lines["DEPTH = 6"] and "exp 2: discard 1.895000" in lines["DEPTH = 6"]
    assert "exp 1: keep 1.890000" in lines["MATRIX_LR = 0.022"]


def test_notes_with_no_notes_yet(tmp_path: Path) -> None:
    init_repo(tmp_path / "r")
    result = CliRunner().invoke(cli, ["notes", "--repo", str(tmp_path / "r")], catch_exceptions=False)
    assert result.exit_code == 0
    assert "insights.md is empty or missing" in result.output and "has no ideas" in result.output


def test_report_cuts_a_huge_diff(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_archive(root, 2)  # baseline + one keep
    (root / "train.py").write_text("".join(f"LAYER_{i} = {i}\n" for i in range(2000)))
    git(root, "commit", "-qam", "rewrite everything")
    Ledger(root / ".auto-log-research" / "results.tsv").append(
        Row(git(root, "rev-parse", "HEAD"), 1.85, 1.0, "keep", "rewrite everything", 2, margin=0.004))
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "(cut at 400 lines)" in html
    assert html.count('<span class="add">+LAYER_') < 400
