"""The report's "Workers and device time" section: each worker and its device, what it ran (and,
while a loop with workers runs, what it runs now), and the GPU-hours and CPU core-hours of every
run (baseline, serial and parallel alike), from the runs' outcome.json (harness/workers.py)."""

from __future__ import annotations

from harness.ledger import Row
from harness.report import ReportData
from harness.web.sections import e
from harness.workers import WorkerUsage

MAX_LISTED = 40  # experiments listed per worker; the rest are counted


def workers(d: ReportData) -> str:
    report = d.devices
    if not report.runs:
        return '<p class="muted">No run has recorded its device time yet.</p>'
    cards = [("GPU-hours", f"{report.gpu_hours:.2f}"), ("CPU core-hours", f"{report.cpu_hours:.2f}"),
             ("run-hours", f"{report.run_hours:.2f}"), ("runs", str(len(report.runs)))]
    html = "".join(f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div></div>' for k, v in cards)
    by_commit = {r.commit: r for r in d.rows if r.commit != "-"}
    head = "".join(f"<th>{e(c)}</th>" for c in ("worker", "device", "now", "runs", "run-hours", "GPU-hours",
                                                 "CPU core-hours", "experiments"))
    body = "".join(_row(u, by_commit, report.worker_now(u.worker)) for u in report.by_worker())
    live = ("" if report.live else '<p class="muted">No loop with workers is running; "now" shows the last '
            "state only while one is.</p>")
    note = ('<p class="muted">GPU-hours: wall seconds × GPUs of every run; CPU core-hours: wall seconds × '
            "threads of the runs without a GPU. A serial run counts the first visible GPU.</p>")
    return (f'<div class="cards">{html}</div>{live}<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _row(u: WorkerUsage, by_commit: dict[str, Row], now: dict | None) -> str:
    state = '<span class="muted">—</span>'
    if now is not None and now.get("label") == u.device:
        if now.get("experiment") is None:
            state = e(now.get("phase") or "idle")
        else:
            desc = f": {now['description']}" if now.get("description") else ""
            state = e(f"#{now['experiment']:03d} {now.get('phase', '?')}{desc}")
    listed = []
    for commit in u.commits[:MAX_LISTED]:
        row = by_commit.get(commit)
        if row is None:
            listed.append(f'<span class="badge" title="{e(commit)}">{e(commit[:7])} not recorded</span>')
        else:
            listed.append(f'<span class="badge {e(row.status)}" title="{e(row.description)}">'
                          f"#{row.experiment} {e(row.status)}</span>")
    more = len(u.commits) - MAX_LISTED
    if more > 0:
        listed.append(f'<span class="muted">and {more} more</span>')
    cells = [f"w{u.worker}", e(u.device), state, str(len(u.runs)), f"{u.run_hours:.2f}", f"{u.gpu_hours:.2f}",
             f"{u.cpu_hours:.2f}", "".join(listed)]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
