"""`harness llm-log`: list, filter, summarize and export the model-call log."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from harness.commands.common import handle_errors, repo_option
from harness.config import load_config
from harness.llmlog import FILE_NAME, STAGES, CallFilter, read_calls, stats

TABLE_LIMIT = 50  # rows the table shows unless --limit says otherwise


def _calls_table(calls: list[dict]) -> Table:
    table = Table(title=f"{len(calls)} model calls", show_lines=False)
    for name, justify in (("time", "left"), ("exp", "right"), ("backend", "left"), ("stage", "left"),
                          ("model", "left"), ("in", "right"), ("out", "right"), ("cached", "right"),
                          ("cost $", "right"), ("secs", "right"), ("retries", "right"), ("error", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "error")
    for c in calls:
        table.add_row(
            str(c.get("ts", ""))[:19].replace("T", " "),
            str(c.get("experiment") if c.get("experiment") is not None else "-"),
            str(c.get("backend", "")), str(c.get("stage", "")), str(c.get("model") or "-"),
            f"{int(c.get('tokens_in') or 0):,}", f"{int(c.get('tokens_out') or 0):,}",
            f"{int(c.get('tokens_cached') or 0):,}", f"{float(c.get('cost_usd') or 0):.4f}",
            f"{float(c.get('duration_s') or 0):.1f}", str(c.get("retries") or 0),
            (str(c.get("error"))[:80] if c.get("error") else ""),
        )
    return table


def _stats_table(s) -> Table:
    table = Table(title="model-call stats", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    latency = "-" if s.p50_s is None else f"{s.p50_s:.2f}s / {s.p95_s:.2f}s"
    for what, value in (("calls", f"{s.count:,}"), ("errors", f"{s.errors:,} ({s.error_rate:.1%})"),
                        ("tokens in", f"{s.tokens_in:,}"), ("tokens out", f"{s.tokens_out:,}"),
                        ("tokens cached", f"{s.tokens_cached:,}"), ("cost", f"${s.cost_usd:.4f}"),
                        ("latency p50 / p95", latency)):
        table.add_row(what, value)
    return table


@click.command("llm-log")
@click.option("--experiment", "-e", type=int, help="Only calls for this experiment number.")
@click.option("--backend", "-b", help="Only calls of this backend (claude, anthropic, ...).")
@click.option("--stage", "-s", type=click.Choice(STAGES), help="Only proposal or summary calls.")
@click.option("--session", help="Only calls of one loop invocation (its session id).")
@click.option("--stats", "show_stats", is_flag=True, help="Totals: count, tokens, cost, latency, error rate.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of calls, or the stats).")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON call per line (for export).")
@click.option("--limit", "-n", type=click.IntRange(min=0), help=f"The last N calls (table default {TABLE_LIMIT}).")
@repo_option
@handle_errors
def llm_log(experiment, backend, stage, session, show_stats, as_json, as_jsonl, limit, repo):
    """List the model calls the agents made (.auto-log-research/llm_calls.jsonl)."""
    if as_json and as_jsonl:
        raise click.UsageError("choose one of --json and --jsonl")
    table_view = not (as_json or as_jsonl or show_stats)
    if limit is None and table_view:
        limit = TABLE_LIMIT
    path = load_config(repo).archive_dir / FILE_NAME
    calls = read_calls(path, CallFilter(experiment, backend, stage, session, limit))
    if show_stats:
        summary = stats(calls)
        if as_json or as_jsonl:
            click.echo(json.dumps(summary.as_dict()))
        else:
            Console().print(_stats_table(summary))
    elif as_json:
        click.echo(json.dumps(calls, indent=2, ensure_ascii=False))
    elif as_jsonl:
        for call in calls:
            click.echo(json.dumps(call, ensure_ascii=False))
    elif not calls:
        click.echo(f"no model calls logged yet in {path}" if not path.exists() else "no calls match")
    else:
        Console().print(_calls_table(calls))


commands = [llm_log]
