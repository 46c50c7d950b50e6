"""The report's sections as HTML fragments. Every value from the archive goes through `e()`."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape

from harness.ledger import STATUSES, Row
from harness.notes import Idea
from harness.report import ReportData, idea_parts, idea_state
from harness.web import charts

FAILED = ("crash", "invalid", "violation", "agent_error", "infra", "no_change")


def e(value: object) -> str:
    return escape(str(value), quote=True)


def num(v: float | None, fmt: str = ".6f") -> str:
    return "—" if v is None else format(v, fmt)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{e(title)}</h2>{body}</section>'


# --------------------------------------------------------------------------- summary


def summary(d: ReportData) -> str:
    best, base = d.best, d.baseline
    cards = [("best", _value_card(best)), ("baseline", _value_card(base))]
    if best and base and best.value is not None and base.value is not None:
        gain = (base.value - best.value) if d.direction == "min" else (best.value - base.value)
        pct = f" ({gain / abs(base.value) * 100:.2f}%)" if base.value else ""
        cards.append(("improvement", f"{gain:+.6f}{pct}"))
    margin = next((r.margin for r in reversed(d.rows) if r.margin is not None), None)
    cards.append(("noise margin", num(margin)))
    cards.append(("experiments", str(len(d.rows))))
    cards.append(("hours", f"{sum(r.wall_s for r in d.rows) / 3600:.2f}{_span(d.rows)}"))
    tokens, cost = totals(d)
    cards.append(("tokens / cost", f"{tokens:,} / ${cost:.2f}"))
    html = "".join(f'<div class="card"><div class="k">{e(k)}</div><div class="v">{v}</div></div>' for k, v in cards)
    counts = Counter(r.status for r in d.rows)
    badges = "".join(f'<span class="badge {e(s)}">{e(s)} {counts[s]}</span>'
                     for s in (*STATUSES, *sorted(set(counts) - set(STATUSES))) if counts[s])
    direction = "lower is better" if d.direction == "min" else "higher is better"
    return (f'<p class="muted">metric <b>{e(d.metric)}</b> ({direction})</p>'
            f'<div class="cards">{html}</div><p class="counts">{badges}</p>')


def _value_card(row: Row | None) -> str:
    if row is None or row.value is None:
        return "—"
    return f'{row.value:.6f} <span class="muted">#{row.experiment} <code>{e(row.short)}</code></span>'


def _span(rows: tuple[Row, ...]) -> str:
    """Wall-clock span from the first to the last timestamp, when they parse."""
    times = []
    for r in rows:
        try:
            times.append(datetime.fromisoformat(r.timestamp.replace("Z", "+00:00")))
        except ValueError:
            continue
    if len(times) < 2:
        return ""
    try:
        hours = (max(times) - min(times)).total_seconds() / 3600
    except TypeError:  # naive and aware timestamps mixed
        return ""
    return f' <span class="muted">over {hours:.1f} h</span>'


def totals(d: ReportData) -> tuple[int, float]:
    """Model usage: the call log when there is one (it sees every call), else the ledger."""
    if d.usage:
        return sum(t for t, _ in d.usage.values()), sum(c for _, c in d.usage.values())
    return sum(r.tokens for r in d.rows), sum(r.cost_usd for r in d.rows)


# --------------------------------------------------------------------------- table


COLUMNS = ("#", "commit", "status", "value", "Δ", "margin", "runs", "train s", "wall s", "tokens", "cost",
           "failure", "description")


def table(d: ReportData) -> str:
    head = "".join(f'<th data-col="{i}">{e(c if c != "value" else d.metric)}</th>' for i, c in enumerate(COLUMNS))
    body = "".join(_table_row(r) for r in d.rows)
    return (f'<p class="muted">Click a column to sort.</p><div class="scroll"><table class="sortable">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _cell(text: str, sort: object = None, cls: str = "") -> str:
    attr = f' data-v="{e(sort)}"' if sort is not None else ""
    klass = f' class="{cls}"' if cls else ""
    return f"<td{attr}{klass}>{text}</td>"


def _table_row(r: Row) -> str:
    value = num(r.value) if r.value is not None else '<span class="missing">no result</span>'
    cells = [
        _cell(str(r.experiment), r.experiment),
        _cell(f"<code>{e(r.short)}</code>"),
        _cell(f'<span class="badge {e(r.status)}">{e(r.status)}</span>', r.status),
        _cell(value, "" if r.value is None else r.value, "n"),
        _cell(num(r.delta), "" if r.delta is None else r.delta, "n"),
        _cell(num(r.margin), "" if r.margin is None else r.margin, "n"),
        _cell(e(", ".join(f"{v:.4f}" for v in r.runs))),
        _cell(f"{r.train_s:.0f}", r.train_s, "n"),
        _cell(f"{r.wall_s:.0f}", r.wall_s, "n"),
        _cell(f"{r.tokens:,}", r.tokens, "n"),
        _cell(f"${r.cost_usd:.3f}", r.cost_usd, "n"),
        _cell(e(r.failure)),
        _cell(e(r.description), cls="desc"),
    ]
    return f'<tr class="{e(r.status)}">{"".join(cells)}</tr>'


# --------------------------------------------------------------------------- lineage


def lineage(d: ReportData) -> str:
    if not d.lineage:
        return '<p class="muted">Nothing kept yet.</p>'
    parts = []
    for step in d.lineage:
        r = step.row
        head = (f'<span class="badge {e(r.status)}">{e(r.status)}</span> #{r.experiment} '
                f"<code>{e(r.short)}</code> {num(r.value)} — {e(r.description)}")
        if step.previous is None:
            parts.append(f'<div class="step"><div class="stephead">{head}</div></div>')
            continue
        note = f' <span class="muted">(cut at {len(step.diff.splitlines())} lines)</span>' if step.truncated else ""
        if step.diff:
            diff = render_diff(step.diff)
        elif step.truncated:
            diff = (f'<p class="muted">Left out to keep the page small: '
                    f"<code>git diff {e(step.previous.short)} {e(r.short)}</code></p>")
        else:
            diff = '<p class="muted">No diff available (git objects and snapshots missing).</p>'
        parts.append(f'<details class="step" open><summary class="stephead">{head}{note}</summary>{diff}</details>')
    return "".join(parts)


def render_diff(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ")):
            cls = "meta"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append(f'<span class="{cls}">{e(line)}</span>')
    # Each line is a block span, so no newline between them (it would double the spacing).
    return f'<pre class="diff">{"".join(out)}</pre>'


# --------------------------------------------------------------------------- failures


def failure_class(r: Row) -> str:
    """The class of a failure: the text before the first ':' of the failure column, else the status."""
    text = r.failure.strip()
    if not text:
        return r.status
    head = text.split(":", 1)[0].strip().lower()
    return head[:40] or r.status


def failures(d: ReportData) -> str:
    failed = [r for r in d.rows if r.status in FAILED or r.failure]
    if not failed:
        return '<p class="muted">No failed attempts.</p>'
    groups: dict[str, list[Row]] = {}
    for r in failed:
        groups.setdefault(failure_class(r), []).append(r)
    body = "".join(
        f"<tr><td>{e(cls)}</td><td class='n'>{len(rs)}</td>"
        f"<td>{e(', '.join(sorted({r.status for r in rs})))}</td>"
        f"<td>{e(', '.join('#' + str(r.experiment) for r in rs))}</td>"
        f"<td class='desc'>{e(rs[-1].failure or rs[-1].description)}</td></tr>"
        for cls, rs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    )
    return (f"<p>{len(failed)} of {len(d.rows)} attempts failed.</p><table><thead><tr><th>class</th><th>count</th>"
            f"<th>status</th><th>experiments</th><th>last message</th></tr></thead><tbody>{body}</tbody></table>")


# --------------------------------------------------------------------------- curves, usage, notes


def curves(d: ReportData) -> str:
    colors = {"baseline": "#1f6feb", "best": "#1a7f37"}
    series = [(f"{c.label} {c.commit[:7]}", colors.get(c.label, "#57606a"), c.points) for c in d.curves]
    chart = charts.line_chart(series, "step", "train loss (smoothed)", x_int=True, skip_head=0.1) if series else ""
    missing = "".join(f'<p class="missing">{e(m)}</p>' for m in d.missing_curves)
    note = '<p class="muted">The y range leaves out the first 10% of steps; earlier points are clipped.</p>'
    return (chart + note if chart else "") + missing or '<p class="muted">No loss curves.</p>'


def usage(d: ReportData) -> str:
    per = {r.experiment: (r.tokens, r.cost_usd) for r in d.rows}
    per.update(d.usage)
    use_cost = any(c for _, c in per.values())
    bars = [(n, c if use_cost else float(t), f"#{n}: {t:,} tokens, ${c:.4f}") for n, (t, c) in sorted(per.items())]
    tokens, cost = totals(d)
    return (f"<p>{tokens:,} tokens, ${cost:.2f} in all.</p>"
            + charts.bar_chart(bars, "cost (USD)" if use_cost else "tokens"))


def notes(d: ReportData) -> str:
    insights = (f'<pre class="notes">{e(d.insights)}</pre>' if d.insights.strip()
                else '<p class="muted">insights.md is empty or missing.</p>')
    if d.ideas:
        by_experiment = {r.experiment: r for r in d.rows}
        rows = "".join(_idea_row(i, by_experiment) for i in d.ideas)
        ideas = (f"<table><thead><tr><th>state</th><th>idea</th><th>why</th><th>exp</th><th>result</th></tr>"
                 f"</thead><tbody>{rows}</tbody></table>")
    else:
        ideas = '<p class="muted">ideas_queue.md has no ideas.</p>'
    raw = f'<details><summary>ideas_queue.md as written</summary><pre class="notes">{e(d.ideas_text)}</pre></details>'
    return f"<h3>Insights</h3>{insights}<h3>Ideas</h3>{ideas}{raw if d.ideas_text.strip() else ''}"


def _idea_row(idea: Idea, rows: dict[int, Row]) -> str:
    text, why = idea_parts(idea)
    st = idea_state(idea, rows)
    return (f'<tr><td><span class="badge {st.state}">{st.state}</span></td><td>{e(text)}</td><td>{e(why)}</td>'
            f"<td>{'' if st.experiment is None else '#' + str(st.experiment)}</td><td>{e(st.result)}</td></tr>")
