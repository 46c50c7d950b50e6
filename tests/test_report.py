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
from support.browser import browser_or_skip

from harness.cli import cli
from harness.ledger import Ledger, Row
from harness.plots import plot_progress, progress_points

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
    assert '<td><span class="badge tried">tried</span></td><td>DEPTH = 6</td>' in html
    assert '<span class="badge pending">pending</span></td><td>WARMUP = 20</td>' in html
    # the progress chart labels each keep, as progress.png does (escaped like everything else)
    kept = [r for r in rows if r.kept and r.value is not None]
    assert html.count('<text class="keep-label"') == len(kept)
    assert ">MATRIX_LR 0.0220 -&gt; 0.0242</text>" in html


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
        shot = b.screenshot((SHOTS or tmp_path) / "report.png", full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"report loaded in {seconds:.2f} s; screenshot {shot}")


def empty_report(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    out = tmp_path / "empty.html"
    result = CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_report_of_an_empty_archive_says_there_is_nothing_yet(tmp_path: Path) -> None:
    out = empty_report(tmp_path)
    assert "Nothing yet" in out.read_text()
    root = tmp_path / "repo"
    Ledger(root / ".auto-log-research" / "results.tsv").append(
        Row("-", None, 0.0, "agent_error", "agent failed", 0, failure="agent: no key"))
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "Nothing kept yet" in html and "No experiment has a result yet" in html and "no result" in html


def test_report_of_an_empty_archive_in_headless_chromium(tmp_path: Path) -> None:
    out = empty_report(tmp_path)
    with browser_or_skip(tmp_path) as b:
        b.navigate(out.as_uri())
        b.drain(0.3)
        assert b.messages == []
        assert "Nothing yet" in b.evaluate("document.body.innerText")
        shot = b.screenshot((SHOTS or tmp_path) / "report-empty.png")
        assert shot.stat().st_size > 5_000


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


def test_report_of_100_experiments_stays_under_5_mb(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_archive(root, 100)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.count("<tr class=") == 100
    size = out.stat().st_size
    print(f"report of 100 experiments: {size / 1e6:.2f} MB")
    assert size < 5_000_000


def pass_rate_rows() -> list[Row]:
    """A target whose metric can really be 0.0: a pass rate (higher is better)."""
    return [Row("a" * 40, 0.5, 0.0, "baseline", "baseline", 0, runs=(0.5,)),
            Row("b" * 40, 0.0, 0.0, "discard", "broke every test", 1, runs=(0.0, 0.0), margin=0.01),
            Row("c" * 40, None, 0.0, "crash", "syntax error", 2, failure="crash: SyntaxError", margin=0.01),
            Row("-", None, 0.0, "agent_error", "agent failed", 3, failure="agent: exit 1", margin=0.01),
            Row("d" * 40, 0.7, 0.0, "keep", "fix the parser", 4, runs=(0.7, 0.7), margin=0.01)]


def test_a_real_zero_is_drawn_and_only_failures_are_crosses(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    init_repo(root)
    (root / "harness.toml").write_text('metric = "pass_rate"\ndirection = "max"\n')
    ledger_path = root / ".auto-log-research" / "results.tsv"
    ledger = Ledger(ledger_path, "pass_rate")
    for row in pass_rate_rows():
        ledger.append(row)
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert html.count('<circle class="pt') == 3  # 0.5, 0.0 and 0.7
    assert '<circle class="pt discard"' in html and html.count('<g class="pt') == 2  # the crash, the agent error
    # progress.png: from the ledger's rows and from raw results.tsv lines (what a notebook reads)
    rows = [r.__dict__ for r in Ledger(ledger_path, "pass_rate").rows()]
    header, *lines = ledger_path.read_text().splitlines()
    raw = [dict(zip(header.split("\t"), line.split("\t"), strict=False)) for line in lines]
    for given in (rows, raw):
        points = progress_points(given, "pass_rate")
        assert [p["value"] for p in points] == [0.5, 0.0, None, None, 0.7]
        assert [p["status"] for p in points if p["value"] is None] == ["crash", "agent_error"]
    png = plot_progress(raw, tmp_path / "progress.png", metric="pass_rate", direction="max", noise_margin=0.01)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_ideas_show_the_same_state_in_the_report_and_in_notes(tmp_path: Path) -> None:
    """The ledger is the truth: a stale note after the → does not win, in either view."""
    root = tmp_path / "repo"
    make_archive(root, 4)
    (root / ".auto-log-research" / "ideas_queue.md").write_text(
        "- [ ] WARMUP = 20  # smoother start\n"
        "- [x] MATRIX_LR = 0.022  # faster → exp 1: discard 9.999999\n"  # stale: exp 1 was kept
        "- [x] DEPTH = 8  # hand-checked, no experiment named\n")
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    notes = CliRunner().invoke(cli, ["notes", "--repo", str(root)], catch_exceptions=False,
                               env={"COLUMNS": "200"}).output
    lines = {line.split("│")[2].strip(): line for line in notes.splitlines() if line.count("│") >= 5}
    for idea, state, result in (("WARMUP = 20", "pending", ""), ("MATRIX_LR = 0.022", "tried", "exp 1: keep 1.890000"),
                                ("DEPTH = 8", "tried", "")):
        assert f'<span class="badge {state}">{state}</span></td><td>{idea}</td>' in html
        assert state in lines[idea].split("│")[1]
        if result:
            assert result in lines[idea] and f"<td>{result}</td>" in html
    table = html[html.index("<h3>Ideas</h3>"):html.index("ideas_queue.md as written")]
    assert "9.999999" not in table and "9.999999" not in notes  # (the file as written is shown below it)


def test_report_says_which_loss_curve_has_no_metrics(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    rows = make_archive(root, 5)
    archive = root / ".auto-log-research"
    best = [r for r in rows if r.kept][-1]
    (archive / best.commit / "metrics.jsonl").unlink()
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    curves = html[html.index('<section id="curves">'):html.index('<section id="notes">')]
    assert f"best ({best.short}): no metrics.jsonl in the archive" in curves
    assert curves.count("<polyline points=") == 1  # the baseline's curve is still drawn
    (archive / rows[0].commit / "metrics.jsonl").unlink()
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    curves = html[html.index('<section id="curves">'):html.index('<section id="notes">')]
    assert f"baseline ({rows[0].short}): no metrics.jsonl in the archive" in curves
    assert f"best ({best.short}): no metrics.jsonl" in curves and "<polyline" not in curves


def test_report_cuts_huge_notes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_archive(root, 3)
    archive = root / ".auto-log-research"
    (archive / "insights.md").write_text("# Insights\n" + "- a finding <b>x</b>\n" * 30_000)  # ~630 KB
    (archive / "ideas_queue.md").write_text("- [ ] WARMUP = 20\n" + "free text\n" * 40_000)
    out = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", "--repo", str(root), "-o", str(out)], catch_exceptions=False)
    html = out.read_text()
    assert "[... truncated: 430,011 more characters in insights.md]" in html
    assert "more characters in ideas_queue.md]" in html
    assert out.stat().st_size < 1_500_000 and "&lt;b&gt;x&lt;/b&gt;" in html
