"""The `offline` agent: a deterministic, non-LLM researcher that turns one knob per experiment.

Each proposal, in order of preference:
1. the top pending `KNOB = value` idea of ideas_queue.md whose knob exists and whose resulting
   configuration was never tried;
2. otherwise one knob of the current (best) file moved one step. The step adapts to what the
   ledger says about that knob: after a kept change it goes further the same way with a bigger
   step; after a discard it tries the other side; when both sides failed it shrinks the step.

It keeps no state of its own: its memory is the ledger (results.tsv) plus the editable file of
every attempt (`git show <commit>:<file>`, or the archive's snapshot), so it survives kill -9,
resets and switching agents. It never proposes a configuration that any earlier attempt used.

Which knobs it turns: numeric UPPER_CASE module-level constants of the first editable file that
has any: a Python file's assignments, or any other file's `KEY = number` / `KEY: number` lines
(TOML, INI, YAML-like configs; see harness/knobs.py), except
- a line marked `# harness: fixed`;
- names that only change logging, evaluation, seeding or budget accounting (SEED, LOG_*, EVAL_*,
  *_EVERY, *_INTERVAL, UNCHARGED_*, *BUDGET*, ...), which would measure noise or game the budget.
Knobs that usually matter in a short budget (learning rates, schedule fractions, model size,
batch size, weight decay) come first, each with the direction a short budget tends to favour;
any other knob follows, upward first. Which way is better (min or max) comes from the target.
When runs get at most half of the 300 s budget train.py's defaults were chosen at, the model's
width and depth come first, downward: the compute-optimal model shrinks with the compute (at a
60 s budget, width 128 -> 64 was the largest single gain measured on a 2-core CPU).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import knobs as kn
from harness.agents.base import AgentContext, Proposal
from harness.config import DEFAULT_BUDGET
from harness.errors import AgentError, UsageError
from harness.ledger import Ledger, Row
from harness.notes import Idea, Notes
from harness.repo import ATTEMPT_REFS, Repo

STEP = 1.5  # the base multiplicative step (×1.5 / ÷1.5); level L moves by STEP ** (2 ** L)
MIN_LEVEL, MAX_LEVEL = -3, 2
FALLBACK_LEVELS = (0, -1, -2, -3, 1, 2)

_SKIP = re.compile(
    r"SEED|(^|_)LOG(_|$)|LOGGING|(^|_)EVAL(_|$)|EVERY|INTERVAL|VERBOSE|DEBUG|PRINT|SAVE|CHECKPOINT|"
    r"UNCHARGED|BUDGET|TIME_LIMIT|^T_START$|NUM_WORKERS|PROFILE"
)
_DEPTH = r"^DEPTH$|N_LAYERS?$|NUM_LAYERS?$|^LAYERS$"
_WIDTH = r"MODEL_DIM|N_EMBD|D_MODEL|WIDTH|HIDDEN_SIZE|EMBED_DIM"
# (pattern, first direction, why): earlier rows are tried first. Directions are the usual
# lessons of short, wall-clock-bounded runs: fewer, larger steps lose to more, hotter ones.
_PRIORS: tuple[tuple[str, int, str], ...] = (
    (r"^MATRIX_LR$|^LR$|^LEARNING_RATE$|^PEAK_LR$", +1, "short budgets usually favour a higher LR"),
    (r"TOTAL_BATCH|^BATCH_SIZE$|BATCH_TOKENS", -1, "smaller batches mean more optimizer steps"),
    (_DEPTH, -1, "a smaller model takes more steps in the same time"),
    (r"WARMDOWN|COOLDOWN|DECAY_RATIO", +1, "a longer LR decay often helps short runs"),
    (r"_LR$|^LR_|LEARNING_RATE", +1, "short budgets usually favour a higher LR"),
    (_WIDTH, -1, "a smaller model takes more steps in the same time"),
    (r"WEIGHT_DECAY|^WD$", +1, "some weight decay often regularizes"),
    (r"WARMUP", -1, "short runs waste little time warming up"),
    (r"FINAL_LR|MIN_LR|LR_FRAC", +1, "a non-zero final LR keeps learning to the end"),
    (r"MOMENTUM|BETA", +1, "momentum is a cheap knob to probe"),
    (r"MLP_RATIO|HEAD_DIM|N_HEAD", -1, "a cheaper block takes more steps in the same time"),
    (r"SEQ_LEN|BLOCK_SIZE|CONTEXT_LEN", -1, "shorter sequences are cheaper per token"),
    (r"DEVICE_BATCH|MICRO_BATCH", -1, "the micro-batch sets throughput"),
)
# With a budget of at most SHORT_BUDGET x the tuned one, these come before all of _PRIORS.
SHORT_BUDGET = 0.5
_SHORT_PRIORS: tuple[tuple[str, int, str], ...] = (
    (_WIDTH, -1, "the compute-optimal model is smaller"),
    (_DEPTH, -1, "the compute-optimal model is smaller"),
)
_FRACTION = re.compile(r"RATIO|FRAC|FRACTION|BETA|MOMENTUM|DROPOUT|PROB|PCT|RATE_DECAY")
_ZERO_START = {True: 0.05, False: 0.1}  # first non-zero value of a knob at 0.0 (fraction?, other)


# --- the knobs' value spaces ----------------------------------------------------------------


def is_tunable(knob: kn.Knob) -> bool:
    """May the offline agent turn this knob? (Not fixed, not logging/seed/budget.)"""
    return not knob.fixed and not _SKIP.search(knob.name)


def prior(name: str, budget: float = DEFAULT_BUDGET) -> tuple[int, int, str]:
    """(rank, first direction, why) for a knob name at a run budget of `budget` seconds; unknown
    names come last, upward. A short budget puts the model-size knobs first, downward."""
    if budget <= SHORT_BUDGET * DEFAULT_BUDGET:
        for rank, (pattern, direction, why) in enumerate(_SHORT_PRIORS):
            if re.search(pattern, name):
                return rank - len(_SHORT_PRIORS), direction, (
                    f"runs get {budget:g} s, under the {DEFAULT_BUDGET:g} s the defaults were chosen at: {why}")
    for rank, (pattern, direction, why) in enumerate(_PRIORS):
        if re.search(pattern, name):
            return rank, direction, why
    return len(_PRIORS), +1, "probing a knob not tried yet"


def _space(name: str, value: int | float, kind: str) -> str:
    if kind == "int":
        if value >= 16 and value & (value - 1) == 0:
            return "pow2"  # batch sizes, widths: stay powers of two
        return "add" if abs(value) < 16 else "log"
    if value == 0:
        return "zero"
    if _FRACTION.search(name) and 0 < value < 1:
        return "logit"  # fractions stay inside (0, 1)
    return "log"


def step_value(name: str, value: int | float, kind: str, direction: int, level: int) -> int | float | None:
    """`value` moved one step of `level` in `direction`, or None if that leaves its bounds."""
    space, size = _space(name, value, kind), 2.0**level
    if space == "add":
        new = int(value) + direction * max(1, round(size))
        return new if new >= min(1, int(value)) and new != value else None
    if space == "pow2":
        new = int(value * 2.0 ** (direction * max(1, round(size))))
        return new if new >= 1 and new != value else None
    if space == "zero":
        return kn.tidy(_ZERO_START[bool(_FRACTION.search(name))] * size) if direction > 0 else None
    step = direction * math.log(STEP) * size
    if space == "logit":
        x = math.log(value / (1 - value)) + step
        new = kn.tidy(1 / (1 + math.exp(-x)))
        return new if 0 < new < 1 and new != value else None
    new = math.copysign(math.exp(math.log(abs(value)) + step), value)
    if kind == "int":
        new = round(new)
        return new if new >= 1 and new != value else None
    new = kn.tidy(new)
    return new if new != value else None


def step_level(name: str, old: int | float, new: int | float, kind: str) -> int:
    """The level of the step that took `old` to `new` (0 = one base step)."""
    space = _space(name, old, kind)
    try:
        if space == "add":
            units = abs(new - old)
        elif space == "pow2":
            units = abs(math.log2(new / old))
        elif space == "zero":
            units = abs(new) / _ZERO_START[bool(_FRACTION.search(name))]
        elif space == "logit":
            units = abs(math.log(new / (1 - new)) - math.log(old / (1 - old))) / math.log(STEP)
        else:
            units = abs(math.log(abs(new) / abs(old))) / math.log(STEP)
        return max(MIN_LEVEL, min(MAX_LEVEL + 1, round(math.log2(units))))
    except (ValueError, ZeroDivisionError, OverflowError):
        return 0


# --- what was tried: the ledger and the file of every attempt --------------------------------


@dataclass(frozen=True)
class Move:
    """One pure knob change of an attempt against its parent (no code changed besides)."""

    experiment: int
    name: str
    old: int | float
    new: int | float
    status: str
    value: float | None
    delta: float | None
    margin: float | None

    @property
    def direction(self) -> int:
        return 1 if self.new > self.old else -1


@dataclass
class History:
    tried: dict[str, int | None] = field(default_factory=dict)  # fingerprint -> experiment
    moves: list[Move] = field(default_factory=list)  # pure knob changes, ledger order
    rows: list[Row] = field(default_factory=list)
    direction: str = "min"
    python: bool = True  # the file's knobs are Python assignments (else config lines)
    budget: float = DEFAULT_BUDGET  # seconds per run: it orders the knobs (see prior)

    def prior(self, name: str) -> tuple[int, int, str]:
        return prior(name, self.budget)

    def leads(self) -> dict[int, Move]:
        """Per experiment, the move it is about: the highest-priority knob it changed (a batch
        size moved together with the micro-batch that keeps an assert true is a batch-size move)."""
        out: dict[int, Move] = {}
        for m in self.moves:
            if m.experiment not in out or self.prior(m.name)[0] < self.prior(out[m.experiment].name)[0]:
                out[m.experiment] = m
        return out

    def moves_of(self, name: str) -> list[Move]:
        return [m for m in self.leads().values() if m.name == name]


def fingerprint(source: str, python: bool = True) -> str:
    """Identity of a configuration: the file's syntax tree with constant arithmetic folded, so
    comments, spacing and spelling (`2**12` or `4096`, `3e-4` or `0.0003`) do not count. A
    config file's lines with its knob values as numbers and its comments dropped, likewise."""
    if not python:
        text = kn.canonical_text(source)
    else:
        try:
            text = ast.dump(_Fold().visit(ast.parse(source)))
        except SyntaxError:
            text = source
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Fold(ast.NodeTransformer):
    def _fold(self, node: ast.expr) -> ast.expr:
        self.generic_visit(node)
        value = kn.evaluate_number(node)
        return node if value is None else ast.Constant(value)

    visit_BinOp = visit_UnaryOp = _fold


class _Files:
    """The editable file as of any commit: git first, then the archive's snapshot."""

    def __init__(self, repo: Repo | None, archive_dir: Path, path: str):
        self.repo, self.archive_dir, self.path = repo, archive_dir, path
        self._cache: dict[str, str | None] = {}

    def at(self, commit: str) -> str | None:
        if not commit or commit == "-":
            return None
        if commit not in self._cache:
            text = self.repo.show(commit, self.path) if self.repo is not None else None
            if text is None:
                for name in (commit, commit[:7], commit[:12]):
                    snapshot = self.archive_dir / name / Path(self.path).name
                    if snapshot.is_file():
                        text = snapshot.read_text(encoding="utf-8", errors="replace")
                        break
            self._cache[commit] = text
        return self._cache[commit]


def _values(source: str | None, python: bool = True) -> dict[str, int | float] | None:
    if source is None:
        return None
    try:
        return {k.name: k.value for k in kn.read_knobs(source, python=python).values()}
    except SyntaxError:
        return None


def build_history(rows: list[Row], files: _Files, extra_commits: list[str], direction: str = "min",
                  python: bool = True, budget: float = DEFAULT_BUDGET) -> History:
    history = History(rows=rows, direction=direction, python=python, budget=budget)
    last_kept: str | None = None
    for row in rows:
        text = files.at(row.commit)
        if text is not None:
            history.tried.setdefault(fingerprint(text, python), row.experiment)
        parent = files.at(row.parent) if row.parent not in ("", "-") else None
        if parent is None and last_kept is not None:
            parent = files.at(last_kept)
        if row.kept and text is not None:
            last_kept = row.commit
        history.moves += _moves(row, parent, text, python)
    for commit in extra_commits:  # attempts committed but maybe never recorded (kill -9)
        text = files.at(commit)
        if text is not None:
            history.tried.setdefault(fingerprint(text, python), None)
    return history


def _moves(row: Row, parent: str | None, text: str | None, python: bool = True) -> list[Move]:
    old, new = _values(parent, python), _values(text, python)
    if old is None or new is None or parent is None or text is None:
        return []
    changed = [n for n in new if n in old and new[n] != old[n]]
    if not changed:
        return []
    replayed = parent
    for name in changed:
        replayed = kn.set_knob(replayed, name, new[name], python=python)
    if fingerprint(replayed, python) != fingerprint(text, python):
        return []  # code changed too: not a clean lesson about these knobs
    return [Move(row.experiment, n, old[n], new[n], row.status, row.value, row.delta, row.margin) for n in changed]


def overridden(archive_dir: Path, rows: list[Row], knobs: dict[str, kn.Knob]) -> set[str]:
    """Knobs whose value in the best run's run_summary.json config differs from the file's
    top-level value: code further down (e.g. an `if device == "cuda":` block) overrides them on
    this machine, so turning them would change nothing."""
    best = next((r for r in reversed(rows) if r.kept and r.commit != "-"), None)
    if best is None:
        return set()
    try:
        config = json.loads((archive_dir / best.commit / "run_summary.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(config, dict):
        return set()
    return {name for name, knob in knobs.items()
            if isinstance(config.get(name), int | float) and not _same(config[name], knob.value)}


# --- the agent -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    old: int | float
    new: int | float
    source: str  # the edited file
    reason: str
    idea: Idea | None = None
    also: tuple[tuple[str, int | float, int | float], ...] = ()  # knobs moved along: (name, old, new)


def edit(source: str, knobs: dict[str, kn.Knob], name: str, new: int | float,
         python: bool = True) -> tuple[str, tuple] | None:
    """`source` with knob `name` set to `new`, plus the co-moves that keep the file's module-level
    asserts true (another knob of a failing assert scaled by the same ratio), or None if no
    such edit exists. Returns (edited source, ((name, old, new), ...) of the co-moves)."""
    tests = kn.constraints(source, python=python)
    values = {k.name: k.value for k in knobs.values()} | {name: new}
    failing = kn.violated(tests, values)
    if not failing:
        return kn.set_knob(source, name, new, python=python), ()
    old = knobs[name].value
    if old == 0:
        return None
    ratio = new / old
    for other in dict.fromkeys(n for test in failing for n in kn.names_in(test)):
        knob = knobs.get(other)
        if other == name or knob is None or not is_tunable(knob):
            continue
        moved = knob.value * ratio
        if knob.kind == "int":
            if abs(moved - round(moved)) > 1e-9 or round(moved) < 1:
                continue
            moved = round(moved)
        else:
            moved = kn.tidy(moved)
        if not kn.violated(tests, values | {other: moved}):
            edited = kn.set_knob(kn.set_knob(source, name, new, python=python), other, moved, python=python)
            return edited, ((other, knob.value, moved),)
    return None


class OfflineAgent:
    """Deterministic knob research; see the module docstring."""

    name = "offline"

    def propose(self, ctx: AgentContext) -> Proposal:
        path, source = self._editable(ctx)
        python = kn.is_python(path)
        knobs = kn.read_knobs(source, python=python)
        notes = Notes(ctx.archive_dir)
        history = self._history(ctx, path)
        history.tried.setdefault(fingerprint(source, python), None)
        self._learn(ctx, notes, history)
        knobs = {n: k for n, k in knobs.items() if n not in overridden(ctx.archive_dir, history.rows, knobs)}
        candidate = self._from_ideas(ctx, notes, source, knobs, history) or self._mutation(source, knobs, history, ctx)
        if candidate is None:
            raise AgentError("no untried configuration left",
                             hint="add ideas to ideas_queue.md, or switch to an LLM agent")
        (ctx.workdir / path).write_bytes(candidate.source.encode("utf-8"))  # line endings as they were
        old, new = kn.format_value(candidate.old), kn.format_value(candidate.new)
        reason = candidate.reason + "".join(
            f"; {n} {kn.format_value(a)} -> {kn.format_value(b)} to keep the file's asserts true"
            for n, a, b in candidate.also)
        if candidate.idea is not None:
            description = f"idea: {candidate.name} = {new} ({reason}; was {old})"
        else:
            description = f"{candidate.name} {old} -> {new} ({reason})"
        details = {"file": path, "knob": candidate.name, "old": candidate.old, "new": candidate.new,
                   "also": [list(c) for c in candidate.also]}
        if candidate.idea is not None:
            details["idea"] = candidate.idea.text
        return Proposal(description=description, details=details)

    # -- inputs --------------------------------------------------------------------------------

    @staticmethod
    def _editable(ctx: AgentContext) -> tuple[str, str]:
        """The first editable file with tunable knobs, and its text."""
        for rel in ctx.target.editable:
            file = ctx.workdir / rel
            if not file.is_file():
                continue
            source = file.read_bytes().decode("utf-8", errors="replace")
            try:
                found = kn.read_knobs(source, python=kn.is_python(rel))
            except SyntaxError as e:
                raise AgentError(f"{rel} does not parse (line {e.lineno}); the offline agent edits knobs only",
                                 hint="fix the file or reset to the best commit") from None
            if any(is_tunable(k) for k in found.values()):
                return rel, source
        raise AgentError(f"no tunable UPPER_CASE numeric knobs in {', '.join(ctx.target.editable)}",
                         hint="add module-level knobs like `LR = 0.01`, or use an LLM agent")

    @staticmethod
    def _history(ctx: AgentContext, path: str) -> History:
        try:
            repo: Repo | None = Repo(ctx.workdir)
        except UsageError:  # no git here: archive snapshots still give the history
            repo = None
        rows = Ledger(ctx.archive_dir / "results.tsv", ctx.target.metric).rows()
        extra = list(repo.refs(ATTEMPT_REFS).values()) if repo is not None else []
        return build_history(rows, _Files(repo, ctx.archive_dir, path), extra, ctx.target.direction,
                             kn.is_python(path), ctx.target.budget)

    # -- learning: insights and ideas from what the ledger says --------------------------------

    def _learn(self, ctx: AgentContext, notes: Notes, history: History) -> None:
        recorded = [r for r in history.rows if r.commit != "-"]
        if recorded and notes.insights_path.exists():
            last = recorded[-1]
            moves = sorted((m for m in history.moves if m.experiment == last.experiment),
                           key=lambda m: history.prior(m.name)[0])  # the move it is about first
            if moves and last.status in ("keep", "discard", "crash") and not notes.has_insight(last.experiment):
                notes.append_insight(_lesson(moves, last, ctx.target.metric, ctx.target.direction),
                                     last.experiment)

    # -- choosing ------------------------------------------------------------------------------

    def _from_ideas(self, ctx: AgentContext, notes: Notes, source: str, knobs: dict[str, kn.Knob],
                    history: History) -> Candidate | None:
        for idea in notes.pending():
            if idea.assignment is None:
                continue
            name, value = idea.assignment
            knob = knobs.get(name)
            if knob is None or not is_tunable(knob) or _in_flight(ctx, name, value):
                continue  # not this agent's to do; leave it for people or an LLM agent
            if knob.kind == "int" and isinstance(value, float):
                if not value.is_integer():
                    continue  # DEPTH = 2.5 is for a person to read, not to apply
                value = int(value)
            elif knob.kind == "float":
                value = float(value)
            if _same(knob.value, value):
                notes.mark_idea(idea.text, None, f"already in effect ({name} = {kn.format_value(value)})")
                continue
            made = edit(source, knobs, name, value, history.python)
            if made is None:
                notes.mark_idea(idea.text, None, "skipped: it breaks an assert of the file")
                continue
            key = fingerprint(made[0], history.python)
            if key in history.tried:
                notes.mark_idea(idea.text, history.tried[key], "already tried (same configuration)")
                continue
            reason = idea.why or "from ideas_queue.md"
            return Candidate(name, knob.value, value, made[0], reason, idea, made[1])
        return None

    def _mutation(self, source: str, knobs: dict[str, kn.Knob], history: History,
                  ctx: AgentContext | None = None) -> Candidate | None:
        for knob in self._knob_order(knobs, history):
            for direction, level, why in self._plan(knob, history):
                new = step_value(knob.name, knob.value, knob.kind, direction, level)
                if new is None:
                    continue
                made = edit(source, knobs, knob.name, new, history.python)
                if made is None or fingerprint(made[0], history.python) in history.tried:
                    continue  # invalid by the file's own asserts, or tried before
                if ctx is not None and _in_flight(ctx, knob.name, new):
                    continue  # another worker runs this change now
                return Candidate(knob.name, knob.value, new, made[0], why, also=made[1])
        return None

    @staticmethod
    def _knob_order(knobs: dict[str, kn.Knob], history: History) -> list[kn.Knob]:
        """A kept knob again at once (exploit); then never-tried knobs by priority; then the one
        tried longest ago (a rotation that the ledger alone determines)."""
        tunable = [k for k in knobs.values() if is_tunable(k)]
        file_order = {k.name: i for i, k in enumerate(tunable)}
        last_try = {m.name: m.experiment for m in history.moves}
        ordered = sorted(tunable, key=lambda k: (last_try.get(k.name, -1), history.prior(k.name)[0], file_order[k.name]))
        recorded = [r for r in history.rows if r.commit != "-"]
        if recorded and recorded[-1].status == "keep":
            won = history.leads().get(recorded[-1].experiment)
            if won is not None and won.name in knobs:
                ordered = [knobs[won.name]] + [k for k in ordered if k.name != won.name]
        return ordered

    @staticmethod
    def _plan(knob: kn.Knob, history: History) -> list[tuple[int, int, str]]:
        """(direction, level, why) to try for this knob, best first, from its own record."""
        moves = history.moves_of(knob.name)
        _, first, why_first = history.prior(knob.name)
        plan: list[tuple[int, int, str]] = []
        if not moves:
            plan.append((first, 0, f"first try of this knob; {why_first}"))
            plan.append((-first, 0, "first try of this knob"))
        else:
            last = moves[-1]
            d, level, word = last.direction, _level(last), _word(last.direction)
            if last.status == "keep":
                plan.append((d, level + 1, f"last change of this knob {word} was kept; trying further"))
                plan.append((d, level, f"last change of this knob {word} was kept; same step again"))
            else:
                verdict = "crashed" if last.status == "crash" else "was discarded"
                previous = moves[-2] if len(moves) > 1 else None
                if previous and previous.direction == d and previous.status == "keep":
                    # went too far after a success: the optimum lies between; a smaller step
                    plan.append((d, level - 1, f"moving it further {word} {verdict}; a smaller step"))
                elif previous and previous.direction == -d and _level(previous) == level and previous.status != "keep":
                    side = d if _less_bad(last, previous, history.direction) else -d
                    plan.append((side, level - 1, f"both directions were discarded; a smaller step {_word(side)}"))
                    plan.append((-side, level - 1, "both directions were discarded; a smaller step the other way"))
                else:
                    plan.append((-d, level, f"moving it {word} {verdict}; trying the other direction"))
                    plan.append((d, level - 1, f"moving it {word} {verdict}; a smaller step"))
        for level in FALLBACK_LEVELS:
            for d in (first, -first):
                plan.append((d, level, "nearby values were tried; another step size"))
        return [(d, max(MIN_LEVEL, min(MAX_LEVEL, lv)), why) for d, lv, why in plan]


# --- small helpers ---------------------------------------------------------------------------


def _level(move: Move) -> int:
    kind = "int" if isinstance(move.old, int) and isinstance(move.new, int) else "float"
    return step_level(move.name, move.old, move.new, kind)


def _word(direction: int) -> str:
    return "upward" if direction > 0 else "downward"


def _less_bad(a: Move, b: Move, direction: str) -> bool:
    """Did move a do better than move b? A crash is worst; deltas are value minus best."""
    if a.status == "crash" or a.delta is None:
        return False
    if b.status == "crash" or b.delta is None:
        return True
    return a.delta < b.delta if direction == "min" else a.delta > b.delta


def _same(a: int | float, b: int | float) -> bool:
    return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)), abs(float(b)))


def _in_flight(ctx: AgentContext, name: str, value: int | float) -> bool:
    """Another worker's attempt sets `name` to `value`: an idea's `NAME = v` or a move's `NAME old -> v`."""
    written = re.compile(rf"\b{re.escape(name)} (?:= |\S+ -> ){re.escape(kn.format_value(value))}(?![\w.])")
    return any(written.search(d) for d in ctx.in_flight)


def _lesson(moves: list[Move], row: Row, metric: str, direction: str) -> str:
    change = ", ".join(f"{m.name} {kn.format_value(m.old)} -> {kn.format_value(m.new)}" for m in moves)
    if row.status == "crash":
        why = f": {row.failure[:120]}" if row.failure else ""
        return f"{change} crashed{why}"
    value = f"{metric} {row.value:.4f}, " if row.value is not None else ""
    if row.delta is None:
        return f"{change} was {'kept' if row.status == 'keep' else 'discarded'} ({value}no delta)"
    delta, margin = f"Δ {row.delta:+.4f}", row.margin or 0.0
    gain = -row.delta if direction == "min" else row.delta
    if row.status == "keep":
        return f"{change} was kept ({value}{delta}, beyond the noise margin ±{margin:.4f})"
    if abs(row.delta) <= margin:
        verdict = f"within noise ±{margin:.4f}"
    elif gain > 0:
        verdict = f"better than noise ±{margin:.4f} but not confirmed"
    else:
        verdict = f"worse, beyond noise ±{margin:.4f}"
    return f"{change} was discarded ({value}{delta}, {verdict})"
