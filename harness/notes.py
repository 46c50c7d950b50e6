"""The two notes files in the archive: insights.md and ideas_queue.md.

insights.md has a `## Current Best` section that the harness rewrites after every experiment
(so it is always true) and a `## Findings` section that only grows (dated bullets). Everything
else in the file belongs to whoever wrote it and is kept byte for byte.

ideas_queue.md is a checklist in priority order (top first):
    - [ ] MATRIX_LR = 0.06  # why            pending; a `KNOB = value` idea is actionable as is
    - [x] MATRIX_LR = 0.06  # why → exp 4: keep 1.234567      done, with its result
Both files are edited by people and agents, so parsing is lenient: any bullet (`-`, `*`, `+`,
`1.`), a missing checkbox (a plain bullet counts as pending), missing sections; text inside
`<!-- -->` comments and code fences is never an idea. Every write is atomic.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from harness import atomic
from harness.knobs import parse_number

INSIGHTS = "insights.md"
IDEAS = "ideas_queue.md"
CURRENT_BEST = "Current Best"
FINDINGS = "Findings"
DONE_SEP = "→"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(
    r"^(?P<indent>\s*)(?:(?P<bullet>[-*+]|\d+[.)])\s+)?"
    r"(?:\[(?P<mark>[ xX])\]\s*)?(?P<body>\S.*?)\s*$"
)
_ASSIGN = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)\s*=\s*(?P<rest>.+)$")


@dataclass(frozen=True)
class Idea:
    text: str  # as written, without the checkbox and without the result
    done: bool
    lineno: int  # 0-based line in ideas_queue.md
    result: str = ""  # for done ideas: what came after "→" ("exp 4: keep 1.234567")
    assignment: tuple[str, int | float] | None = None  # (KNOB, value) if it starts `KNOB = value`
    why: str = ""  # the reason given after the assignment (`# why` or `(why)`), if any

    @property
    def pending(self) -> bool:
        return not self.done


class Notes:
    """insights.md and ideas_queue.md in one archive directory."""

    def __init__(self, archive_dir: Path):
        self.archive_dir = Path(archive_dir)

    @property
    def insights_path(self) -> Path:
        return self.archive_dir / INSIGHTS

    @property
    def ideas_path(self) -> Path:
        return self.archive_dir / IDEAS

    # -- creation --------------------------------------------------------------------------

    def ensure(self, target_description: str, metric: str, direction: str) -> list[Path]:
        """Create the notes files from the packaged templates where missing; returns those made."""
        values = {
            "target": target_description.strip() or "the training script",
            "metric": metric,
            "better": "lower" if direction == "min" else "higher",
        }
        made = []
        for path, template in ((self.insights_path, "insights_template.md"), (self.ideas_path, "ideas_template.md")):
            if path.exists():
                continue
            text = resources.files("harness.prompts").joinpath(template).read_text(encoding="utf-8")
            atomic.write_text(path, string.Template(text).safe_substitute(values))
            made.append(path)
        return made

    # -- insights.md -----------------------------------------------------------------------

    def update_current_best(
        self,
        value: float,
        commit: str,
        description: str,
        margin: float | None,
        metric: str,
        runs: tuple[float, ...] | list[float] = (),
        direction: str | None = None,
    ) -> None:
        """Rewrite only the `## Current Best` section (adding it if missing)."""
        better = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction or "", "")
        body = [
            f"- {metric}: **{value:.6f}**{better}",
            f"- commit: `{commit[:12]}` — {_one_line(description) or '(no description)'}",
        ]
        if runs:
            body.append(f"- runs: {', '.join(f'{r:.6f}' for r in runs)}")
        if margin is not None:
            body.append(f"- noise margin: ±{margin:.6f} (a change must beat the best by more to be kept)")
        body.append(f"- updated: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}")
        lines = self._read(self.insights_path, "# Insights\n")
        span = _section(lines, CURRENT_BEST)
        block = [f"## {CURRENT_BEST}", "", *body, ""]
        if span is None:
            at = _first_heading(lines, level=2)
            at = len(lines) if at is None else at
            lines[at:at] = _spaced(lines, at, block)
        else:
            start, end = span
            lines[start:end] = block
        self._write(self.insights_path, lines)

    def append_insight(self, text: str, experiment: int | None = None) -> None:
        """Add a dated bullet at the end of `## Findings` (the section is added if missing)."""
        tag = f" (exp {experiment})" if experiment is not None else ""
        bullet = f"- {time.strftime('%Y-%m-%d')}{tag} {_one_line(text)}"
        lines = self._read(self.insights_path, "# Insights\n")
        span = _section(lines, FINDINGS)
        if span is None:
            lines[len(lines):] = _spaced(lines, len(lines), [f"## {FINDINGS}", ""])
            span = (len(lines) - 2, len(lines))
        start, end = span
        at = end
        while at > start + 1 and not lines[at - 1].strip():  # after the last non-blank line
            at -= 1
        if at == start + 1:
            lines.insert(at, "")  # a blank line between the heading and the first bullet
            at += 1
        lines.insert(at, bullet)
        self._write(self.insights_path, lines)

    def findings(self) -> list[str]:
        """The bullet lines of `## Findings`, oldest first."""
        lines = self._read(self.insights_path, "")
        span = _section(lines, FINDINGS)
        if span is None:
            return []
        return [ln.strip() for ln in lines[span[0] + 1:span[1]] if ln.strip().startswith(("-", "*"))]

    def has_insight(self, experiment: int) -> bool:
        """True if a finding is already recorded for this experiment."""
        tag = f"(exp {experiment})"
        return any(tag in line for line in self.findings())

    # -- ideas_queue.md --------------------------------------------------------------------

    def ideas(self) -> list[Idea]:
        """Every idea in file order (order is priority: top first)."""
        return [idea for idea in (_parse_idea(i, ln) for i, ln in _idea_lines(self._read(self.ideas_path, ""))) if idea]

    def pending(self) -> list[Idea]:
        return [idea for idea in self.ideas() if idea.pending]

    def mark_idea(self, idea_text: str, experiment: int | None, status: str, value: float | None = None) -> bool:
        """Check off the first pending idea matching `idea_text` (by text, or by its `KNOB = value`)
        and append its result. Returns False if no pending idea matches."""
        lines = self._read(self.ideas_path, "")
        wanted = _norm(idea_text)
        wanted_assignment = _parse_assignment(idea_text)[0]
        pending = [idea for idea in self.ideas() if idea.pending]
        match = next((i for i in pending if _norm(i.text) == wanted), None)
        if match is None and wanted_assignment is not None:
            match = next((i for i in pending if _same_assignment(i.assignment, wanted_assignment)), None)
        if match is None:
            return False
        result = f"exp {experiment}: {status}" if experiment is not None else status
        if value is not None:
            result += f" {value:.6f}"
        m = _ITEM.match(lines[match.lineno])
        indent = m.group("indent") if m else ""
        bullet = (m.group("bullet") if m else None) or "-"
        lines[match.lineno] = f"{indent}{bullet} [x] {match.text} {DONE_SEP} {result}"
        self._write(self.ideas_path, lines)
        return True

    def add_idea(self, text: str, top: bool = False) -> bool:
        """Queue a pending idea at the bottom (or the top). False if it is already pending."""
        text = _one_line(text)
        if not text or any(_norm(i.text) == _norm(text) for i in self.pending()):
            return False
        lines = self._read(self.ideas_path, "# Ideas queue\n\n## Queue\n")
        ideas = self.ideas()
        line = f"- [ ] {text}"
        if top and any(i.pending for i in ideas):
            at = next(i.lineno for i in ideas if i.pending)
        elif ideas:
            at = ideas[-1].lineno + 1
        else:
            queue = _section(lines, "Queue")
            at = len(lines) if queue is None else queue[1]
            while at > 0 and not lines[at - 1].strip():
                at -= 1
            if at > 0 and _HEADING.match(lines[at - 1]):
                lines.insert(at, "")
                at += 1
        lines.insert(at, line)
        self._write(self.ideas_path, lines)
        return True

    # -- io ----------------------------------------------------------------------------------

    @staticmethod
    def _read(path: Path, default: str) -> list[str]:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = default
        return text.splitlines()

    @staticmethod
    def _write(path: Path, lines: list[str]) -> None:
        atomic.write_text(path, "\n".join(lines).rstrip("\n") + "\n")


# -- parsing helpers --------------------------------------------------------------------------


def _section(lines: list[str], title: str) -> tuple[int, int] | None:
    """(heading line, end) of the first heading named `title` (any level, any case); it ends at
    the next heading of the same or a higher level."""
    want = _norm(title)
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and _norm(m.group(2).rstrip(":")) == want:
            level = len(m.group(1))
            for j in range(i + 1, len(lines)):
                n = _HEADING.match(lines[j])
                if n and len(n.group(1)) <= level:
                    return i, j
            return i, len(lines)
    return None


def _first_heading(lines: list[str], level: int) -> int | None:
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and len(m.group(1)) == level:
            return i
    return None


def _spaced(lines: list[str], at: int, block: list[str]) -> list[str]:
    """`block` with a blank line in front if the line before `at` is not blank."""
    return ([""] if at > 0 and lines[at - 1].strip() else []) + block


def _idea_lines(lines: list[str]):
    """(index, line) of the lines that may hold ideas: not headings, comments or code."""
    in_comment = in_fence = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if in_comment:
            in_comment = "-->" not in stripped
            continue
        if stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
            continue
        yield i, line


def _parse_idea(lineno: int, line: str) -> Idea | None:
    if _HEADING.match(line):
        return None
    m = _ITEM.match(line)
    if m is None or (m.group("bullet") is None and m.group("mark") is None):
        return None  # prose, not a list item
    body = m.group("body")
    done = (m.group("mark") or " ").lower() == "x"
    result = ""
    if done and DONE_SEP in body:
        body, result = (part.strip() for part in body.split(DONE_SEP, 1))
    if not body:
        return None
    assignment, why = _parse_assignment(body)
    return Idea(text=body, done=done, lineno=lineno, result=result, assignment=assignment, why=why)


def _parse_assignment(text: str) -> tuple[tuple[str, int | float] | None, str]:
    """(KNOB, value) and the reason, if `text` starts with `KNOB = <number>`."""
    m = _ASSIGN.match(text.strip())
    if m is None:
        return None, ""
    rest, _, comment = m.group("rest").partition("#")
    words = rest.split()
    for n in range(len(words), 0, -1):  # the longest leading run of words that is a number
        value = parse_number(" ".join(words[:n]))
        if value is not None:
            trailing = " ".join(words[n:]).strip(" ()-—–:;,")
            why = " ".join(p for p in (comment.strip(), trailing) if p)
            return (m.group("name"), value), why
    return None, ""


def _same_assignment(a: tuple[str, int | float] | None, b: tuple[str, int | float]) -> bool:
    return a is not None and a[0] == b[0] and abs(float(a[1]) - float(b[1])) <= 1e-12 * max(1.0, abs(float(b[1])))


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
