"""Assemble the report page from the packaged template (page.html) and the sections."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from functools import cache
from importlib import resources
from string import Template

from harness.report import ReportData
from harness.web import charts, sections, workers_section
from harness.web.sections import e, section


@cache
def template() -> Template:
    return Template(resources.files("harness.web").joinpath("page.html").read_text(encoding="utf-8"))


@cache
def script_hash() -> str:
    """CSP hash of the page's one script: no other script can run, even if escaping had a hole."""
    script = re.search(r"<script>(.*?)</script>", template().template, re.S)
    digest = hashlib.sha256(script.group(1).encode("utf-8")).digest() if script else b""
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def body(d: ReportData) -> str:
    """The report's content, without the page around it (the dashboard swaps this in place)."""
    warnings = "".join(f'<p class="warn">{e(w)}</p>' for w in d.warnings)
    if d.empty:
        return warnings + (
            '<section id="empty"><h2>Nothing yet</h2><p>No experiment has been recorded in '
            "<code>.auto-log-research/results.tsv</code>. Start the research with <code>harness init</code> "
            "(it measures the baseline), then <code>harness loop</code>; this page fills in as experiments land."
            "</p></section>"
        )
    parts = [
        section("summary", "Summary", sections.summary(d)),
        section("progress", "Progress", charts.progress_chart(d.rows, d.metric, d.direction)
                + '<p class="muted legend">● keep/baseline (large), ● discard, × crash or no result; '
                  "line: best so far; band: ± noise margin.</p>"),
        section("experiments", "Experiments", sections.table(d)),
        section("lineage", "Kept lineage", sections.lineage(d)),
        section("failures", "Failures by class", sections.failures(d)),
        section("curves", "Loss curves: baseline vs best", sections.curves(d)),
        section("notes", "Insights and ideas", sections.notes(d)),
        section("usage", "Tokens and cost per experiment", sections.usage(d)),
        section("workers", "Workers and device time", workers_section.workers(d)),
    ]
    return warnings + "".join(parts)


def generated_at() -> str:
    """When a page was made, as the header shows it (the dashboard sends it with each fragment)."""
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def render(d: ReportData, *, live: bool = False, version: str = "", generated: str | None = None) -> str:
    title = f"auto-log-research: {d.root.name}"
    return template().substitute(
        title=e(title),
        script_hash=script_hash(),
        generated=e(generated or generated_at()),
        live="1" if live else "0",
        version=e(version),
        body=body(d),
    )
