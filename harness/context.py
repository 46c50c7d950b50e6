"""Build what an agent is given for one experiment: the AgentContext and its rendered prompt."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

from harness.agents.base import AgentContext, TargetInfo, guidance_section
from harness.config import Config
from harness.ledger import Row

MAX_SECTION_CHARS = 12_000  # keep one section from crowding out the rest of the prompt
HISTORY_ROWS = 15


def load_prompt(name: str) -> str:
    return resources.files("harness.prompts").joinpath(name).read_text(encoding="utf-8")


def _clip(text: str, limit: int = MAX_SECTION_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text or "(empty)"
    return text[: limit // 2] + f"\n[... {len(text) - limit} characters cut ...]\n" + text[-limit // 2:]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def history_table(rows: list[Row], metric: str) -> str:
    if not rows:
        return "(no experiments yet)"
    lines = [f"exp | commit | {metric} | status | delta | description", "---|---|---|---|---|---"]
    for r in rows[-HISTORY_ROWS:]:
        value = "-" if r.value is None else f"{r.value:.6f}"
        delta = "-" if r.delta is None else f"{r.delta:+.4f}"
        extra = f" [{r.failure}]" if r.failure else ""
        lines.append(f"{r.experiment} | {r.short} | {value} | {r.status} | {delta} | {r.description}{extra}")
    return "\n".join(lines)


def target_info(cfg: Config) -> TargetInfo:
    t = cfg.target
    word = "lower" if t.direction == "min" else "higher"
    text = t.description or (
        "Train the small GPT in train.py to the lowest validation bits per byte (val_bpb, computed by"
        " prepare.py's fixed evaluate_bpb) within a fixed wall-clock training budget of"
        f" {t.budget:g} s. Anything in train.py may change: architecture, optimizer, schedules,"
        " batch size, model size. prepare.py (data, tokenizer, evaluation) is fixed."
        if t.is_default else
        f"Make `{t.metric}` {word} ({t.better_word}) by editing {', '.join(t.editable)}; it is measured"
        f" by `{t.run_command}`.")
    return TargetInfo(editable=t.editable, metric=t.metric, direction=t.direction, description=text,
                      immutable=tuple(t.immutable or ()), budget=t.budget)


def target_lines(cfg: Config) -> dict[str, str]:
    """The parts of propose.md that depend on the target: nothing GPT-specific for another one."""
    t = cfg.target
    fixed = ", ".join(f"`{name}`" for name in t.immutable or ())
    if t.is_default:
        budget = (f"Each run trains for a fixed {t.budget:g} s of wall clock (compilation and evaluation"
                  " are not charged); a bigger model gets fewer steps, not more time.")
        seed, run_what, example = "seed", "the training", "Raise MATRIX_LR 0.04 -> 0.06: loss still falling fast at the end"
    else:
        budget = (f"Each run (`{t.run_command}`) gets {t.budget:g} s (plus {cfg.limits.grace_s:g} s of grace);"
                  " a run that takes longer is stopped and counts as a crash.")
        seed, run_what, example = "run", f"`{t.run_command}`", "<what you changed>: <why you expect it to help>"
    return {
        "role": "an autonomous ML researcher" if t.is_default else "an autonomous researcher",
        "better": t.better_word,
        "budget_line": budget,
        "confirm_clause": f", and it is then confirmed with a second {seed}" if cfg.noise.confirm else "",
        "fixed_line": (f"- Never edit {fixed}: {'they are' if len(t.immutable or ()) > 1 else 'it is'} the fixed"
                       " measurement.\n") if fixed else "",
        "run_what": run_what,
        "example": example,
    }


def build_context(
    cfg: Config,
    workdir: Path,
    experiment: int,
    rows: list[Row],
    *,
    margin: float,
    last_analysis: str = "",
    last_failure: str | None = None,
    retry_error: str | None = None,
    in_flight: tuple[str, ...] = (),
) -> AgentContext:
    target = target_info(cfg)
    best = next((r for r in reversed(rows) if r.kept), None)
    archive = cfg.archive_dir
    files = "\n\n".join(f"### {name}\n```\n{_clip(_read(workdir / name), 60_000)}\n```" for name in target.editable)
    retry = f"\nYOUR PREVIOUS EDIT WAS REJECTED: {retry_error}\nFix it; the file is as you left it.\n" if retry_error else ""
    failure = f"\nThe last attempt failed: {last_failure}\n" if last_failure else ""
    flight = ("\nOther workers are already testing these ideas; propose something different:\n"
              + "\n".join(f"- {d}" for d in in_flight) + "\n") if in_flight else ""
    prompt = Template(load_prompt("propose.md")).safe_substitute(
        **target_lines(cfg),
        target_description=target.description,
        editable=", ".join(target.editable),
        metric=target.metric,
        best_value="none yet" if best is None or best.value is None else f"{best.value:.6f}",
        best_commit=best.short if best else "-",
        margin=f"{margin:.4f}",
        archive=cfg.archive_dir_name,
        experiment=str(experiment),
        retry_section=retry,
        failure_section=failure,
        in_flight_section=flight,
        history=history_table(rows, target.metric),
        last_analysis=_clip(last_analysis or "(none yet)"),
        insights=_clip(_read(archive / "insights.md")),
        ideas=_clip(_read(archive / "ideas_queue.md")),
        files=files,
    )
    prompt += guidance_section(cfg.root)  # program.md's research guidance, if it marks any
    return AgentContext(
        workdir=workdir,
        archive_dir=archive,
        experiment=experiment,
        target=target,
        prompt=prompt,
        best_value=best.value if best else None,
        best_commit=best.commit if best else None,
        noise_margin=margin,
        last_failure=last_failure,
        in_flight=in_flight,
        retry_error=retry_error,
        history=tuple(r.__dict__ for r in rows[-HISTORY_ROWS:]),
    )
