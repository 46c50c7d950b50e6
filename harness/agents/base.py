"""The one interface every agent backend implements, what it is given and returns, and the few
helpers the LLM backends share (system prompt, retry note, one-line description)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

MAX_DESCRIPTION = 300  # characters of a proposal's description taken from the model's answer


@dataclass(frozen=True)
class TargetInfo:
    """What the agent may edit and how the result is judged."""

    editable: tuple[str, ...] = ("train.py",)
    metric: str = "val_bpb"
    direction: str = "min"  # "min": lower is better; "max": higher is better
    description: str = ""  # one paragraph on what is being optimized, for prompts


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
    return line[:MAX_DESCRIPTION] or "(claude gave no description)"
