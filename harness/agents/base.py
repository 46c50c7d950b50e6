"""The one interface every agent backend implements, what it is given and returns, and the few
helpers the LLM backends share (system prompt, program.md's guidance, retry note, one-line
description, the summary stage)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

from harness.config import DEFAULT_BUDGET

MAX_DESCRIPTION = 300  # characters of a proposal's description taken from the model's answer
NO_DESCRIPTION = "(the agent gave no description)"
GUIDANCE_START, GUIDANCE_END = "<!-- harness:guidance -->", "<!-- /harness:guidance -->"
SUMMARY_OFF = "none"  # summary_model = "none": no summary stage
MAX_LESSON_CHARS = 400
MAX_ANALYSIS_CHARS = 8_000


@dataclass(frozen=True)
class TargetInfo:
    """What the agent may edit and how the result is judged."""

    editable: tuple[str, ...] = ("train.py",)
    metric: str = "val_bpb"
    direction: str = "min"  # "min": lower is better; "max": higher is better
    description: str = ""  # one paragraph on what is being optimized, for prompts
    immutable: tuple[str, ...] = ("prepare.py", "analyze.py")  # the fixed measurement: never edited
    budget: float = DEFAULT_BUDGET  # seconds per run


@dataclass(frozen=True)
class AgentContext:
    """Everything an agent needs to propose one edit. The agent edits files under `workdir`."""

    workdir: Path  # the working tree to edit (repo root or a worker's worktree)
    archive_dir: Path  # .auto-log-research/ (notes, per-attempt folders); readable
    experiment: int  # the number this attempt will get
    target: TargetInfo
    prompt: str  # the fully rendered prompt (guidance + context), for LLM backends
    best_value: float | None = None
    best_commit: str | None = None
    noise_margin: float | None = None
    last_failure: str | None = None  # what went wrong last time, if it did
    in_flight: tuple[str, ...] = ()  # descriptions of attempts other workers are running
    retry_error: str | None = None  # set when the previous proposal was rejected (e.g. syntax)
    history: tuple[dict, ...] = ()  # recent ledger rows, oldest first
    notes_files: tuple[str, ...] = ("insights.md", "ideas_queue.md")  # inside archive_dir


@dataclass(frozen=True)
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.tokens_cached + other.tokens_cached,
            self.cost_usd + other.cost_usd,
        )

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


@dataclass(frozen=True)
class Proposal:
    """The agent's answer: it has already edited files in place; this says what and why."""

    description: str
    usage: Usage = field(default_factory=Usage)
    details: dict = field(default_factory=dict)  # backend-specific (turns, tool calls, ...)


class Agent(Protocol):
    name: str

    def propose(self, ctx: AgentContext) -> Proposal:
        """Edit the target file(s) under ctx.workdir; return what was tried.

        Raises AgentError (recorded, loop goes on), AgentTimeout, AgentSetupError (cannot run
        at all), CapExceeded (stop cleanly before spending more).
        """
        ...


# --- what the LLM backends share ------------------------------------------------------------


def system_guidance() -> str:
    """The system prompt the LLM backends add to every run (harness/prompts/agent_system.md)."""
    return resources.files("harness.prompts").joinpath("agent_system.md").read_text(encoding="utf-8")


def full_prompt(ctx: AgentContext) -> str:
    """The prompt a backend sends: the rendered prompt, plus why the last edit was rejected."""
    if not ctx.retry_error or ctx.retry_error in ctx.prompt:  # harness/context.py already said it
        return ctx.prompt
    return (f"{ctx.prompt}\n\nYour previous edit was rejected: {ctx.retry_error}\n"
            "Fix that and make the change again.")


def describe(text: str) -> str:
    """The proposal's one-line description: the last non-empty line of the model's final answer."""
    lines = [ln.strip().strip("*`#> ").strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line[:MAX_DESCRIPTION] or NO_DESCRIPTION


def program_guidance(program_md: Path) -> str:
    """The research guidance of a repository's program.md: the parts between
    `<!-- harness:guidance -->` and `<!-- /harness:guidance -->` (the rest of program.md tells an
    agent that drives the loop itself how to run it, which a backend must not do). "" if none."""
    try:
        text = Path(program_md).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    parts = []
    for chunk in text.split(GUIDANCE_START)[1:]:
        body = chunk.split(GUIDANCE_END, 1)[0].strip()
        if body:
            parts.append(re.sub(r"^\d+\.\s", "- ", body))  # a step of program.md's loop, as a bullet
    return "\n".join(parts)


def guidance_section(root: Path) -> str:
    """program.md's guidance as a prompt section ("" when the repository has none)."""
    guidance = program_guidance(Path(root) / "program.md")
    return f"\n\n## Research guidance (from program.md)\n{guidance}\n" if guidance else ""


# --- the summary stage -----------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryTask:
    """One cheap call before a proposal: the last experiment's analysis -> a lesson in insights.md."""

    experiment: int  # the experiment summarized (the one before ctx.experiment)
    system: str  # harness/prompts/summary.md
    prompt: str  # what happened and its analysis.md


def summary_enabled(summary_model: str | None) -> bool:
    return (summary_model or "").strip().lower() != SUMMARY_OFF


def summary_task(ctx: AgentContext) -> SummaryTask | None:
    """The summary to make before proposing, or None: no earlier experiment with an analysis,
    or its lesson is already in insights.md (a retry of the same experiment, a restart)."""
    from harness.notes import Notes

    last = ctx.history[-1] if ctx.history else None
    if not last or last.get("status") == "baseline" or last.get("commit") in (None, "", "-"):
        return None
    experiment = last.get("experiment")
    if not isinstance(experiment, int) or Notes(ctx.archive_dir).has_insight(experiment):
        return None
    try:
        analysis = (ctx.archive_dir / str(last["commit"]) / "analysis.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not analysis.strip():
        return None
    if len(analysis) > MAX_ANALYSIS_CHARS:
        analysis = analysis[:MAX_ANALYSIS_CHARS] + "\n[... cut]"
    value = last.get("value")
    outcome = f"{last.get('status')}" + (f", {ctx.target.metric} {value:.6f}" if isinstance(value, float) else "")
    prompt = (f"Experiment {experiment}: {last.get('description') or '(no description)'}\n"
              f"Outcome: {outcome}\n\n{analysis.strip()}\n")
    system = resources.files("harness.prompts").joinpath("summary.md").read_text(encoding="utf-8")
    return SummaryTask(experiment, system, prompt)


def record_lesson(ctx: AgentContext, task: SummaryTask, text: str) -> str | None:
    """Append the model's lesson (its first 1-3 lines, as one bullet) under `## Findings` of
    insights.md, tagged with the experiment. Returns the lesson, or None if the reply was empty."""
    from harness.notes import Notes

    lines = [ln.strip().lstrip("-*• ").strip() for ln in text.splitlines() if ln.strip()][:3]
    lesson = " ".join(lines)[:MAX_LESSON_CHARS].strip()
    if not lesson:
        return None
    Notes(ctx.archive_dir).append_insight(lesson, experiment=task.experiment)
    return lesson
