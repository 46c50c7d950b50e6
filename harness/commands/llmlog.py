"""`harness llm-log`: list, filter, sort, summarize and export the model-call log, or show one call.

Everything from the log reaches rich as `Text`, never as markup: a model name or an error like
`[/usr/bin/claude]` would otherwise be parsed as a closing tag and crash the table.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.commands.common import handle_errors, repo_option
from harness.commands.view import find_root
from harness.config import load_config
from harness.errors import UsageError
from harness.llmlog import FILE_NAME, SORTS, STAGES, CallFilter, numbered_calls, order_calls, stats

TABLE_LIMIT = 50  # rows the table shows unless --limit says otherwise
BODY_FIELDS = ("prompt", "response", "tool_calls", "error")  # shown in panels by --show, not in its header


def _int(value: object) -> int:
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        return 0


def _float(value: object) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


COLUMNS = ("#", "time", "exp", "backend", "stage", "model", "in", "out", "cached", "cost $", "secs", "retries",
           "error")
NUMERIC = {"#", "exp", "in", "out", "cached", "cost $", "secs", "retries"}
# Below this many terminal columns the table leaves these out (--show has every field).
NARROW = ((130, ("cached", "retries")), (100, ("stage", "out", "secs")))


def _cells(n: int, c: dict) -> dict[str, Text | str]:
    error = " ".join(str(c["error"]).split())[:80] if c.get("error") else ""
    return {
        "#": str(n),
        "time": Text(str(c.get("ts", ""))[5:19].replace("T", " ")),  # MM-DD HH:MM:SS
        "exp": str(c.get("experiment") if c.get("experiment") is not None else "-"),
        "backend": Text(str(c.get("backend", ""))), "stage": Text(str(c.get("stage", ""))),
        "model": Text(str(c.get("model") or "-")),
        "in": f"{_int(c.get('tokens_in')):,}", "out": f"{_int(c.get('tokens_out')):,}",
        "cached": f"{_int(c.get('tokens_cached')):,}", "cost $": f"{_float(c.get('cost_usd')):.4f}",
        "secs": f"{_float(c.get('duration_s')):.1f}", "retries": str(_int(c.get("retries"))),
        "error": Text(error, style="red"),
    }


def _calls_table(calls: list[tuple[int, dict]], title: str, width: int = 200) -> Table:
    table = Table(title=title, show_lines=False)
    hidden = {name for below, names in NARROW if width < below for name in names}
    shown = [name for name in COLUMNS if name not in hidden]
    for name in shown:
        if name in NUMERIC:  # numbers are never cut; on a narrow terminal the text columns fold
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold", no_wrap=name == "time")
    for n, c in calls:
        cells = _cells(n, c)
        table.add_row(*(cells[name] for name in shown))
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


def _as_text(value: object) -> Text:
    """A prompt or response as the model saw it: strings verbatim, anything else as indented JSON."""
    if isinstance(value, str):
        return Text(value)
    return Text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def call_view(n: int, call: dict) -> RenderableType:
    """One call whole: its fields, then the prompt, the response, the tool calls and the error."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for key, value in call.items():
        if key not in BODY_FIELDS:
            head.add_row(Text(key), Text("-" if value is None else str(value)))
    parts: list[RenderableType] = [Panel(head, title=f"call #{n}", title_align="left")]
    for key, title, style in (("prompt", "prompt", ""), ("response", "response", ""),
                              ("tool_calls", "tool calls", ""), ("error", "error", "red")):
        value = call.get(key)
        if value in (None, "", [], {}):
            if key in ("prompt", "response"):
                parts.append(Panel(Text(f"(no {title} logged)", style="dim"), title=title, title_align="left"))
            continue
        parts.append(Panel(_as_text(value), title=title, title_align="left", border_style=style or "none"))
    return Group(*parts)


def _print(renderable: RenderableType, paged: bool) -> None:
    """Straight to stdout, or through the pager ($PAGER, else less) when stdout is a terminal."""
    console = Console()
    if not paged:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    click.echo_via_pager(captured.get())


@click.command("llm-log")
@click.option("--experiment", "-e", type=int, help="Only calls for this experiment number.")
@click.option("--backend", "-b", help="Only calls of this backend (claude, anthropic, ...).")
@click.option("--stage", "-s", type=click.Choice(STAGES), help="Only proposal or summary calls.")
@click.option("--session", help="Only calls of one loop invocation (its session id).")
@click.option("--model", "-m", help="Only calls whose model name contains this (any case).")
@click.option("--errors", "errors_only", is_flag=True, help="Only the calls that failed.")
@click.option("--sort", "sort_by", type=click.Choice(SORTS), default="time", show_default=True,
              help="Order: by time the oldest first; by cost, tokens or latency the biggest first.")
@click.option("--reverse", "-r", is_flag=True, help="Flip the order (newest first, cheapest first, ...).")
@click.option("--show", "show", type=click.IntRange(min=1), metavar="N",
              help="Print call N (the # column) whole: prompt, response, tool calls, usage, error.")
@click.option("--stats", "show_stats", is_flag=True, help="Totals: count, tokens, cost, latency, error rate.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of calls, one call, or the stats).")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON call per line (for export).")
@click.option("--limit", "-n", type=click.IntRange(min=0),
              help=f"The newest N calls (by --sort time), else the first N in that order (table default {TABLE_LIMIT}).")
@click.option("--no-pager", is_flag=True, help="Never page, even on a terminal.")
@repo_option
@handle_errors
def llm_log(experiment, backend, stage, session, model, errors_only, sort_by, reverse, show, show_stats,
            as_json, as_jsonl, limit, no_pager, repo):
    """List the model calls the agents made (.auto-log-research/llm_calls.jsonl).

    On a terminal the table and --show go through a pager ($PAGER, else less); piped, they print plainly.
    """
    if as_json and as_jsonl:
        raise click.UsageError("choose one of --json and --jsonl")
    paged = not no_pager and sys.stdout.isatty()
    path = load_config(find_root(repo)).archive_dir / FILE_NAME
    if show is not None:
        found = dict(numbered_calls(path)).get(show)
        if found is None:
            count = len(numbered_calls(path))
            raise UsageError(f"no call #{show}: the log has {count} calls",
                             hint="pick a number from the # column of `harness llm-log`")
        if as_json or as_jsonl:
            click.echo(json.dumps(found, indent=None if as_jsonl else 2, ensure_ascii=False))
        else:
            _print(call_view(show, found), paged)
        return
    table_view = not (as_json or as_jsonl or show_stats)
    if limit is None and table_view:
        limit = TABLE_LIMIT
    matching = numbered_calls(path, CallFilter(experiment, backend, stage, session, model=model, errors=errors_only))
    if show_stats:
        summary = stats([c for _, c in matching])
        if as_json or as_jsonl:
            click.echo(json.dumps(summary.as_dict()))
        else:
            Console().print(_stats_table(summary))
        return
    shown = order_calls(matching, sort_by, reverse, limit)
    if as_json:
        click.echo(json.dumps([c for _, c in shown], indent=2, ensure_ascii=False))
    elif as_jsonl:
        for _, call in shown:
            click.echo(json.dumps(call, ensure_ascii=False))
    elif not shown:
        click.echo(f"no model calls logged yet in {path}" if not path.exists() else "no calls match")
    else:
        order = f"by {sort_by}" + (", reversed" if reverse else "")
        title = f"{len(shown)} of {len(matching)} model calls ({order})"
        _print(_calls_table(shown, title, Console().width), paged)


commands = [llm_log]
