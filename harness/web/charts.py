"""Charts as inline SVG strings: no JS library, no network, a few KB each.

Every text that lands in the SVG (tooltips, labels) goes through html.escape: descriptions come
from an agent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from harness.ledger import Row

W, H = 920, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 40
STATUS_COLOR = {
    "baseline": "#1f6feb", "keep": "#1a7f37", "discard": "#8c959f", "crash": "#cf222e",
    "infra": "#bf8700", "invalid": "#cf222e", "violation": "#8250df", "agent_error": "#bf8700",
    "no_change": "#8c959f",
}


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, v: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.a + (v - self.lo) / span * (self.b - self.a)


def _padded(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    d = (hi - lo) or abs(hi) * 0.01 or 1.0
    return lo - d * pad, hi + d * pad


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _axes(x: Scale, y: Scale, x_label: str, y_label: str, x_int: bool = False) -> list[str]:
    out = [f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="axis"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="axis"/>']
    for v, label in nice_ticks(y.lo, y.hi):
        py = y(v)
        out.append(f'<line x1="{LEFT}" y1="{py:.1f}" x2="{W - RIGHT}" y2="{py:.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    for v in _x_ticks(x, x_int):
        label = str(round(v)) if x_int else _fmt(v)
        out.append(f'<text x="{x(v):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{escape(y_label)}</text>')
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """About `count` round values (steps of 1, 2 or 5 times a power of ten) between lo and hi,
    each with its label in as many decimals as the step needs: 1.865 1.870 1.875, not 1.866 1.878."""
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return [(lo, _fmt(lo))]
    power = 10 ** math.floor(math.log10(span / count))

    def ticks_of(step: float) -> int:
        return math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1

    step = min((m * power for m in (1, 2, 5, 10, 20)), key=lambda st: (abs(ticks_of(st) - count), -st))
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    for k in range(first, first + count + 2):
        v = k * step
        if v > hi + step * 1e-9:
            break
        ticks.append((v, f"{v:.{decimals}f}"))
    return ticks


def _x_ticks(x: Scale, integers: bool) -> list[float]:
    if not integers:
        return [x.lo + (x.hi - x.lo) * i / 5 for i in range(6)]
    first, last = math.ceil(x.lo), math.floor(x.hi)
    step = max(1, math.ceil((last - first) / 10))
    return [float(v) for v in range(first, last + 1, step)]


def _svg(body: list[str], label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def progress_chart(rows: Sequence[Row], metric: str, direction: str) -> str:
    """Value per experiment, keeps marked, the running best as a step line with its noise band."""
    valued = [r for r in rows if r.value is not None]
    if not valued:
        return '<p class="muted">No experiment has a result yet.</p>'
    xs = [r.experiment for r in rows]
    ys = [r.value for r in valued] + [r.value + (r.margin or 0) for r in valued if r.kept]
    ys += [r.value - (r.margin or 0) for r in valued if r.kept]
    x = Scale(min(xs) - 0.5, max(xs) + 0.5, LEFT, W - RIGHT)
    lo, hi = _padded(ys)
    y = Scale(lo, hi, H - BOTTOM, TOP)
    body = _axes(x, y, "experiment", f"{metric} ({'lower' if direction == 'min' else 'higher'} is better)", True)
    body += _best_line(rows, x, y)
    for r in rows:
        tip = escape(f"#{r.experiment} {r.short} {r.status} {'' if r.value is None else f'{r.value:.6f}'} "
                     f"{r.description}")
        color = STATUS_COLOR.get(r.status, "#57606a")
        px = x(r.experiment)
        if r.value is None:  # crashed or no result: a cross on the axis, so it still shows
            py = H - BOTTOM - 8
            body.append(f'<g class="pt {escape(r.status)}"><title>{tip}</title>'
                        f'<path d="M{px - 4:.1f},{py - 4:.1f}l8,8m0,-8l-8,8" stroke="{color}" stroke-width="2"/></g>')
            continue
        size = 6 if r.kept else 4
        body.append(f'<circle class="pt {escape(r.status)}" cx="{px:.1f}" cy="{y(r.value):.1f}" r="{size}" '
                    f'fill="{color}" stroke="#fff"><title>{tip}</title></circle>')
    body += _keep_labels([r for r in valued if r.kept], x, y)
    return _svg(body, f"{metric} per experiment")


def _keep_labels(kept: Sequence[Row], x: Scale, y: Scale) -> list[str]:
    """A short label on each keep, slanted up and right like progress.png's; drawn last, so the
    points do not hide them."""
    out = []
    for r in kept:
        px, py = x(r.experiment), y(r.value)
        py = py + 16 if py < TOP + 24 else py - 7  # near the top: below the point, or it leaves the chart
        if px > W - RIGHT - 170:  # near the right edge: the label runs up and to the left instead
            px, anchor, angle = px - 5, "end", 18
        else:
            px, anchor, angle = px + 5, "start", -18
        out.append(f'<text class="keep-label" x="{px:.1f}" y="{py:.1f}" text-anchor="{anchor}" '
                   f'transform="rotate({angle} {px:.1f} {py:.1f})">{escape(short_label(r.description))}</text>')
    return out


def short_label(text: str, limit: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _best_line(rows: Sequence[Row], x: Scale, y: Scale) -> list[str]:
    """The running best (a step line) and, around it, +/- the noise margin the decisions used."""
    steps: list[tuple[float, float, float]] = []  # (experiment, best, margin)
    best = margin = None
    for r in rows:
        if r.kept and r.value is not None:
            best = r.value
        margin = r.margin if r.margin is not None else margin
        if best is not None:
            steps.append((r.experiment, best, margin or 0.0))
    if not steps:
        return []
    line, upper, lower = [], [], []
    for i, (e, b, m) in enumerate(steps):
        x0 = x(e - 0.5) if i == 0 else x(e)
        x1 = x(steps[i + 1][0]) if i + 1 < len(steps) else x(e + 0.5)
        line += [f"{x0:.1f},{y(b):.1f}", f"{x1:.1f},{y(b):.1f}"]
        upper += [f"{x0:.1f},{y(b + m):.1f}", f"{x1:.1f},{y(b + m):.1f}"]
        lower += [f"{x0:.1f},{y(b - m):.1f}", f"{x1:.1f},{y(b - m):.1f}"]
    band = " ".join(upper + lower[::-1])
    return [f'<polygon class="band" points="{band}"><title>noise band: best ± margin</title></polygon>',
            f'<polyline class="best" points="{" ".join(line)}" fill="none"/>']


def line_chart(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], x_label: str, y_label: str,
               *, x_int: bool = False, skip_head: float = 0.0) -> str:
    """Several (label, color, points) lines on shared axes, with a legend.

    `skip_head`: the y range ignores that leading fraction of each line (a loss curve's first steps
    are far above the rest and would flatten the part worth comparing); those points are clipped.
    """
    pts = [p for _, _, ps in series for p in ps]
    if not pts:
        return '<p class="muted">No data.</p>'
    tails = [p[1] for _, _, ps in series for p in ps[int(len(ps) * skip_head):]] or [p[1] for p in pts]
    x = Scale(*_padded([p[0] for p in pts], 0.0), LEFT, W - RIGHT)
    lo, hi = _padded(tails)
    y = Scale(lo, hi, H - BOTTOM, TOP)
    body = _axes(x, y, x_label, y_label, x_int)
    for i, (label, color, ps) in enumerate(series):
        coords = " ".join(f"{x(a):.1f},{y(min(max(b, lo), hi)):.1f}" for a, b in ps)
        body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
                    f"<title>{escape(label)}</title></polyline>")
        ly = TOP + 14 + i * 18
        body.append(f'<rect x="{W - RIGHT - 200}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
                    f'<text x="{W - RIGHT - 182}" y="{ly + 1}">{escape(label)}</text>')
    return _svg(body, y_label)


def bar_chart(bars: Sequence[tuple[int, float, str]], y_label: str) -> str:
    """One bar per experiment: (experiment, value, tooltip)."""
    if not bars or not any(v for _, v, _ in bars):
        return '<p class="muted">No model usage recorded.</p>'
    x = Scale(min(b[0] for b in bars) - 0.5, max(b[0] for b in bars) + 0.5, LEFT, W - RIGHT)
    y = Scale(0.0, max(v for _, v, _ in bars) * 1.08, H - BOTTOM, TOP)
    body = _axes(x, y, "experiment", y_label, True)
    width = max(1.0, (x(1) - x(0)) * 0.7)
    for e, v, tip in bars:
        body.append(f'<rect class="bar" x="{x(e) - width / 2:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                    f'height="{y(0) - y(v):.1f}"><title>{escape(tip)}</title></rect>')
    return _svg(body, y_label)
