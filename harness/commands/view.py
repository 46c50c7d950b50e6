"""Commands that show the research: `report`, `dashboard`, `notes`. Parsing and printing only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness.commands.common import handle_errors, repo_option
from harness.config import load_config
from harness.errors import UsageError
from harness.ledger import Ledger
from harness.notes import Idea, Notes
from harness.report import idea_parts, idea_state, ledger_metric


def find_root(repo: Path | None) -> Path:
    """The repository root: `git rev-parse --show-toplevel` from --repo (default: the cwd)."""
    start = Path(repo or ".").resolve()
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"cannot run git: {e}", hint="install git") from e
    if out.returncode != 0:
        raise UsageError(f"{start} is not inside a git repository", hint="cd into the research repo or pass --repo PATH")
    return Path(out.stdout.strip())


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: .auto-log-research/report.html).")
@repo_option
@handle_errors
def report(output: Path | None, repo: Path | None) -> None:
    """Write one self-contained HTML report of the research (opens with no network)."""
    from harness.report import build_report

    click.echo(f"report: {build_report(find_root(repo), output)}")


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, envvar="HARNESS_DASHBOARD_PORT",
              help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@repo_option
@handle_errors
def dashboard(port: int, host: str, repo: Path | None) -> None:
    """Serve the report on a local web page that updates itself as experiments land."""
    from harness.dashboard import serve

    def ready(url: str) -> None:
        click.echo(f"dashboard: {url}  (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"note: bound to {host}; anyone who can reach it can read the archive", err=True)
        sys.stdout.flush()

    serve(find_root(repo), host, port, ready=ready)


@click.command()
@repo_option
@handle_errors
def notes(repo: Path | None) -> None:
    """Show insights.md and the ideas queue at a glance (each idea: pending, or tried and its result)."""
    cfg = load_config(find_root(repo))
    archive = cfg.archive_dir
    console = Console()
    notes = Notes(archive)
    insights = _read(notes.insights_path)
    console.print(Panel(_markdown(insights) if insights.strip() else "[dim]insights.md is empty or missing[/dim]",
                        title="insights.md", expand=True))
    ledger = Ledger(archive / "results.tsv", ledger_metric(archive / "results.tsv") or cfg.target.metric)
    console.print(ideas_table(notes.ideas(), {r.experiment: r for r in ledger.rows()}))


def ideas_table(ideas: list[Idea], rows: dict) -> Table | str:
    if not ideas:
        return "[dim]ideas_queue.md has no ideas (lines like `- [ ] KNOB = value  # why`)[/dim]"
    table = Table(title="ideas_queue.md", expand=True)
    for name in ("state", "idea", "why", "result"):
        table.add_column(name, overflow="fold")
    for idea in ideas:
        text, why = idea_parts(idea)
        st = idea_state(idea, rows)  # the same function decides what the report shows
        state = Text(st.state, style="green" if st.state == "tried" else "yellow")
        # Text(), not markup: an agent wrote these, and a stray `[/x]` would break rich's parser.
        table.add_row(state, Text(text), Text(why), Text(st.result), style="bold" if st.state == "pending" else None)
    return table


def _markdown(text: str) -> Syntax:
    """Highlighted but verbatim: rendered markdown would silently drop any HTML the agent wrote."""
    return Syntax(text.rstrip(), "markdown", word_wrap=True, background_color="default")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


commands = [report, dashboard, notes]
