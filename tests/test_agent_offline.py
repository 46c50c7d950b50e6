"""The offline agent over many rounds in a real temporary git repo, with a scripted loop: each
attempt is committed and kept reachable under refs/auto-log-research/attempts/NNNN, its result
(from a known objective of the knob values) is written through harness.ledger, and a discarded
attempt is reset away, as the real loop does. No model, no training."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from support.research import harness, harness_env

from harness import knobs as kn
from harness.agents.base import AgentContext, TargetInfo
from harness.agents.offline import OfflineAgent, fingerprint, step_value
from harness.config import DEFAULT_BUDGET
from harness.errors import AgentError
from harness.ledger import Ledger, Row
from harness.notes import Notes

TRAIN = '''"""A train.py-like file: knobs at the top, code below."""
import os

SEED = 1234                  # never tuned
LOG_EVERY = 10               # logging only
EVAL_TOKENS = 2**14          # evaluation only
BETA2 = 0.95                 # harness: fixed
MATRIX_LR = 0.04             # main LR
DEPTH = 4                    # blocks
WARMDOWN_RATIO = 0.5         # fraction of the run
WEIGHT_DECAY = 0.0           # starts at zero
TOTAL_BATCH_SIZE = 2**13     # tokens per step
NAME = "toy"


def model():
    return MATRIX_LR * DEPTH
'''

MARGIN = 0.004


def objective(values: dict) -> float:
    """A smooth bowl with its minimum away from the defaults (lower is better)."""
    return (1.0 + math.log(values["MATRIX_LR"] / 0.1) ** 2 + 0.02 * (values["DEPTH"] - 3) ** 2
            + (values["WARMDOWN_RATIO"] - 0.7) ** 2 + (values["WEIGHT_DECAY"] - 0.1) ** 2
            + 0.05 * math.log2(values["TOTAL_BATCH_SIZE"] / 2**12) ** 2)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


class ScriptedLoop:
    """The loop's bookkeeping, by hand: commit, ref, ledger row, reset to the best."""

    def __init__(self, root: Path, source: str = TRAIN, file: str = "train.py", score=objective):
        self.score = score
        self.repo, self.archive, self.file = root / "repo", root / "repo" / ".auto-log-research", file
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "autoresearch/test")
        git(self.repo, "config", "user.name", "Test")
        git(self.repo, "config", "user.email", "test@example.com")
        (self.repo / ".gitignore").write_text(".auto-log-research/\n")
        (self.repo / file).write_text(source)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "baseline")
        self.ledger = Ledger(self.archive / "results.tsv")
        self.notes = Notes(self.archive)
        self.notes.ensure("a toy", "val_bpb", "min")
        self.best = git(self.repo, "rev-parse", "HEAD")
        self.best_value = self.score(self.values())
        self.ledger.append(Row(self.best, self.best_value, 0.1, "baseline", "baseline", 0, runs=(self.best_value,),
                               margin=MARGIN))
        self.experiment = 1

    def values(self) -> dict:
        source = (self.repo / self.file).read_text()
        return {k.name: k.value for k in kn.read_knobs(source, python=kn.is_python(self.file)).values()}

    def context(self, in_flight: tuple[str, ...] = (), budget: float = DEFAULT_BUDGET) -> AgentContext:
        return AgentContext(workdir=self.repo, archive_dir=self.archive, experiment=self.experiment,
                            target=TargetInfo(editable=(self.file,), budget=budget), prompt="",
                            in_flight=in_flight)

    def propose(self, **kw):
        return OfflineAgent().propose(self.context(**kw))

    def record(self, proposal, status: str | None = None, value: float | None = None) -> Row:
        """Commit what the agent left, decide (or take the scripted status), write the row."""
        git(self.repo, "commit", "-q", "-am", proposal.description)
        sha = git(self.repo, "rev-parse", "HEAD")
        git(self.repo, "update-ref", f"refs/auto-log-research/attempts/{self.experiment:04d}", sha)
        value = self.score(self.values()) if value is None else value
        delta = value - self.best_value
        status = status or ("keep" if delta < -MARGIN else "discard")
        row = Row(sha, None if status == "crash" else value, 0.1, status, proposal.description, self.experiment,
                  parent=self.best, runs=() if status == "crash" else (value,), delta=delta, margin=MARGIN,
                  best_before=self.best_value, agent="offline", failure="loss diverged" if status == "crash" else "")
        self.ledger.append(row)
        if "idea" in proposal.details:  # what the loop does with the idea the attempt tested
            self.notes.mark_idea(proposal.details["idea"], self.experiment, status, row.value)
        if status == "keep":
            self.best, self.best_value = sha, value
        else:
            git(self.repo, "reset", "-q", "--hard", self.best)
        self.experiment += 1
        return row

    def step(self, status: str | None = None, **kw):
        proposal = self.propose(**kw)
        row = self.record(proposal, status)
        return proposal, row


@pytest.fixture
def loop(tmp_path: Path) -> ScriptedLoop:
    return ScriptedLoop(tmp_path)


def test_the_top_actionable_idea_comes_first(loop: ScriptedLoop):
    loop.notes.add_idea("NO_SUCH_KNOB = 3  # for another file")
    loop.notes.add_idea("SEED = 7  # fixed: not the offline agent's to turn")
    loop.notes.add_idea("think about rotary embeddings")
    loop.notes.add_idea("DEPTH = 3  # a smaller model steps faster")
    loop.notes.add_idea("MATRIX_LR = 0.04  # already the value")
    loop.notes.add_idea("WARMDOWN_RATIO = 0.7  # decay longer", top=True)

    p1, _ = loop.step()
    assert p1.description == "idea: WARMDOWN_RATIO = 0.7 (decay longer; was 0.5)"
    assert p1.details["idea"] == "WARMDOWN_RATIO = 0.7 # decay longer"
    assert loop.ledger.rows()[-1].status == "keep"
    p2, _ = loop.step()
    assert p2.description.startswith("idea: DEPTH = 3 (a smaller model steps faster")
    assert "DEPTH = 3 " in git(loop.repo, "show", "HEAD:train.py")
    p3, _ = loop.step()
    assert not p3.description.startswith("idea:")  # the rest are not actionable here
    ideas = {i.text.split("#")[0].strip(): i for i in loop.notes.ideas()}
    assert ideas["WARMDOWN_RATIO = 0.7"].result == f"exp 1: keep {objective(_vals(loop, 1)):.6f}"
    assert ideas["DEPTH = 3"].done
    assert ideas["MATRIX_LR = 0.04"].result.startswith("already in effect")
    assert not ideas["NO_SUCH_KNOB = 3"].done and not ideas["SEED = 7"].done
    assert not ideas["think about rotary embeddings"].done


def _vals(loop: ScriptedLoop, experiment: int) -> dict:
    sha = git(loop.repo, "rev-parse", f"refs/auto-log-research/attempts/{experiment:04d}")
    return {k.name: k.value for k in kn.read_knobs(git(loop.repo, "show", f"{sha}:train.py") + "\n").values()}


def test_an_idea_whose_configuration_was_tried_is_checked_off_not_repeated(loop: ScriptedLoop):
    p1, _ = loop.step(status="discard")  # MATRIX_LR 0.04 -> 0.06 (first, by priority)
    assert p1.description.startswith("MATRIX_LR 0.04 -> 0.06 (first try of this knob")
    loop.notes.add_idea("MATRIX_LR = 0.06  # someone suggests it again")
    p2 = loop.propose()
    assert "MATRIX_LR = 0.06" not in p2.description
    assert loop.notes.ideas()[0].result == "exp 1: already tried (same configuration)"


def test_an_idea_in_flight_on_another_worker_is_skipped(loop: ScriptedLoop):
    loop.notes.add_idea("DEPTH = 3")
    proposal = loop.propose(in_flight=("idea: DEPTH = 3 (from ideas_queue.md; was 4)",))
    assert not proposal.description.startswith("idea: DEPTH")


def test_steps_adapt_to_keeps_and_discards(loop: ScriptedLoop):
    p, _ = loop.step(status="keep")
    assert p.description == "MATRIX_LR 0.04 -> 0.06 (first try of this knob; short budgets usually favour a higher LR)"
    p, _ = loop.step(status="discard")  # kept upward: further up with a bigger step (×1.5²)
    assert p.description.startswith("MATRIX_LR 0.06 -> 0.135 (last change of this knob upward was kept")
    # a discard sends the rotation to the other knobs, never-tried ones first by priority
    p, _ = loop.step(status="discard")
    assert p.description.startswith("TOTAL_BATCH_SIZE 8192 -> 4096 (first try")
    assert "TOTAL_BATCH_SIZE = 2**12     # tokens per step" in git(
        loop.repo, "show", "refs/auto-log-research/attempts/0003:train.py")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("DEPTH 4 -> 3 (first try")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("WARMDOWN_RATIO 0.5 -> 0.6 (first try")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("WEIGHT_DECAY 0.0 -> 0.1 (first try")
    # back to MATRIX_LR: it overshot after a success, so a smaller step the same way
    p, _ = loop.step(status="discard")
    assert p.description.startswith("MATRIX_LR 0.06 -> 0.09 (moving it further upward was discarded; a smaller step")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("TOTAL_BATCH_SIZE 8192 -> 16384 (moving it downward was discarded; trying the")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("DEPTH 4 -> 5 (moving it downward was discarded; trying the other direction")
    # WARMDOWN_RATIO was discarded upward: now the other direction, inside (0, 1)
    p, _ = loop.step(status="discard")
    assert p.description.startswith("WARMDOWN_RATIO 0.5 -> 0.4 (moving it upward was discarded; trying the other")
    p, _ = loop.step(status="discard")  # zero cannot go lower: a smaller step up instead
    assert p.description.startswith("WEIGHT_DECAY 0.0 -> 0.05 (moving it upward was discarded; a smaller step")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("MATRIX_LR 0.06 -> 0.07348 (moving it upward was discarded; a smaller step")
    p, _ = loop.step(status="discard")
    assert p.description.startswith("TOTAL_BATCH_SIZE 8192 -> 2048 (nearby values were tried; another step size")
    # both sides of DEPTH failed at ±1; an int has no smaller step, so another size
    p, _ = loop.step(status="discard")
    assert p.description.startswith("DEPTH 4 -> 2 (nearby values were tried; another step size")
    # both sides of WARMDOWN_RATIO failed: a smaller step toward the less bad side (up: Δ -0.03 < +0.05)
    p, _ = loop.step(status="discard")
    assert p.description.startswith("WARMDOWN_RATIO 0.5 -> 0.5505 (both directions were discarded; a smaller step upward")


def test_a_short_budget_shrinks_the_model_first(loop: ScriptedLoop):
    p, _ = loop.step(status="discard", budget=60)
    assert p.description == ("DEPTH 4 -> 3 (first try of this knob; runs get 60 s, under the 300 s the defaults"
                             " were chosen at: the compute-optimal model is smaller)")
    p, _ = loop.step(status="discard", budget=60)  # then the usual order
    assert p.description.startswith("MATRIX_LR 0.04 -> 0.06 (first try")


def test_a_short_budget_shrinks_the_width_before_the_depth(tmp_path: Path):
    loop = ScriptedLoop(tmp_path, TRAIN.replace("DEPTH = 4 ", "DEPTH = 4\nMODEL_DIM = 256 "), score=lambda v: 1.0)
    assert loop.propose(budget=60).description.startswith("MODEL_DIM 256 -> 128 (first try of this knob; runs get 60 s")
    git(loop.repo, "checkout", "-q", "train.py")
    assert loop.propose(budget=150).description.startswith("MODEL_DIM 256 -> 128")  # half counts as short
    git(loop.repo, "checkout", "-q", "train.py")
    assert loop.propose(budget=151).description.startswith("MATRIX_LR 0.04 -> 0.06 (first try")


def test_thirty_rounds_never_repeat_and_make_progress(loop: ScriptedLoop):
    start = loop.best_value
    for _ in range(30):
        loop.step()
    rows = loop.ledger.rows()
    prints = [fingerprint(git(loop.repo, "show", f"{r.commit}:train.py") + "\n") for r in rows]
    assert len(set(prints)) == len(prints) == 31
    touched = {name for r in rows[1:] for name in _changed(loop, r)}
    assert touched <= {"MATRIX_LR", "DEPTH", "WARMDOWN_RATIO", "WEIGHT_DECAY", "TOTAL_BATCH_SIZE"}
    assert all(len(_changed(loop, r)) == 1 for r in rows[1:])  # one knob per experiment
    assert loop.best_value < start - 0.5  # the bowl's minimum is 1.0; the start is ~1.9
    assert sum(r.status == "keep" for r in rows) >= 5


def _changed(loop: ScriptedLoop, row: Row) -> list[str]:
    before = kn.read_knobs(git(loop.repo, "show", f"{row.parent}:train.py") + "\n")
    after = kn.read_knobs(git(loop.repo, "show", f"{row.commit}:train.py") + "\n")
    return [n for n in after if after[n].value != before[n].value]


def test_it_writes_what_it_learned_into_insights(loop: ScriptedLoop):
    loop.step(status="keep")
    loop.propose()  # reads the ledger row of exp 1 and writes the lesson
    git(loop.repo, "checkout", "--", "train.py")
    findings = loop.notes.findings()
    assert len(findings) == 1 and "(exp 1) MATRIX_LR 0.04 -> 0.06 was kept (val_bpb " in findings[0]
    loop.experiment = 2
    loop.record(loop.propose(), status="discard", value=loop.best_value + 0.002)
    loop.propose()
    loop.propose()  # a second look at the same row adds nothing
    findings = loop.notes.findings()
    assert len(findings) == 2
    assert "(exp 2) MATRIX_LR 0.06 -> 0.135 was discarded" in findings[1]
    assert "Δ +0.0020, within noise ±0.0040" in findings[1]


def test_a_crash_is_learned_and_the_other_direction_tried(loop: ScriptedLoop):
    loop.step(status="crash")
    proposal = loop.propose()
    assert "(exp 1) MATRIX_LR 0.04 -> 0.06 crashed: loss diverged" in loop.notes.findings()[0]
    assert proposal.description.startswith("TOTAL_BATCH_SIZE")  # the rotation moves on
    for _ in range(4):
        loop.step(status="discard")
    assert loop.propose().description.startswith(
        "MATRIX_LR 0.04 -> 0.02667 (moving it upward crashed; trying the other direction")


def test_same_inputs_give_the_same_proposal(tmp_path: Path):
    a, b = ScriptedLoop(tmp_path / "a"), ScriptedLoop(tmp_path / "b")
    for status in ("keep", "discard", "discard", "keep"):
        pa, _ = a.step(status=status)
        pb, _ = b.step(status=status)
        assert pa.description == pb.description
    first = a.propose()
    text = (a.repo / "train.py").read_text()
    git(a.repo, "checkout", "--", "train.py")
    again = a.propose()
    assert again.description == first.description and (a.repo / "train.py").read_text() == text
    assert b.propose().description == first.description


def test_an_attempt_committed_but_never_recorded_is_not_repeated(loop: ScriptedLoop):
    """kill -9 between the commit and the ledger row: the attempt ref still marks it tried."""
    proposal = loop.propose()
    git(loop.repo, "commit", "-q", "-am", proposal.description)
    git(loop.repo, "update-ref", "refs/auto-log-research/attempts/0001", "HEAD")
    git(loop.repo, "reset", "-q", "--hard", loop.best)
    assert loop.propose().description != proposal.description


def test_fixed_and_bookkeeping_knobs_are_never_touched_and_exhaustion_is_an_agent_error(tmp_path: Path):
    loop = ScriptedLoop(tmp_path, source="N_LAYER = 1\nSEED = 3\nEVAL_EVERY = 5\nLR = 0.1  # harness: fixed\n",
                        score=lambda values: 1.0)  # nothing beats the baseline: all are discarded
    seen = []
    with pytest.raises(AgentError, match="no untried configuration left"):
        for _ in range(10):
            proposal = loop.propose()
            seen.append(proposal.description.split(" (")[0])
            loop.record(proposal, value=1.0)
    assert seen == ["N_LAYER 1 -> 2", "N_LAYER 1 -> 3", "N_LAYER 1 -> 5"]
    assert (loop.repo / "train.py").read_text().startswith("N_LAYER = 1\n")  # left untouched


def test_no_tunable_knob_is_a_clear_agent_error(tmp_path: Path):
    loop = ScriptedLoop(tmp_path, source="SEED = 1\nname = 'x'\n", score=lambda values: 1.0)
    with pytest.raises(AgentError, match="no tunable UPPER_CASE numeric knobs"):
        loop.propose()


@pytest.mark.parametrize(("name", "value", "kind", "direction", "level", "expected"), [
    ("MATRIX_LR", 0.04, "float", 1, 0, 0.06),
    ("MATRIX_LR", 0.04, "float", -1, 0, 0.02667),
    ("MATRIX_LR", 0.04, "float", 1, 1, 0.09),
    ("WARMDOWN_RATIO", 0.9, "float", 1, 2, 0.9785),  # stays below 1
    ("WARMDOWN_RATIO", 0.0, "float", -1, 0, None),  # nothing below zero
    ("WEIGHT_DECAY", 0.0, "float", 1, 0, 0.1),
    ("DEPTH", 1, "int", -1, 0, None),
    ("DEPTH", 4, "int", 1, 1, 6),
    ("TOTAL_BATCH_SIZE", 2**13, "int", -1, 0, 2**12),  # powers of two stay so
    ("STEPS", 300, "int", 1, 0, 450),
])
def test_step_values_respect_bounds_and_kinds(name, value, kind, direction, level, expected):
    got = step_value(name, value, kind, direction, level)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)
    assert got is None or type(got) is type(value)


def test_knobs_overridden_further_down_on_this_machine_are_left_alone(loop: ScriptedLoop):
    """run_summary.json of the best run records DEPTH = 8 although the top of the file says 4
    (an `if device == "cuda":` block, say): turning the top-level DEPTH would change nothing."""
    summary = {"config": {"DEPTH": 8, "MATRIX_LR": 0.04, "WARMDOWN_RATIO": 0.5}, "device": "cuda"}
    (loop.archive / loop.best).mkdir(parents=True)
    (loop.archive / loop.best / "run_summary.json").write_text(json.dumps(summary))
    names = [loop.step(status="discard")[0].details["knob"] for _ in range(6)]
    assert "DEPTH" not in names and names[:3] == ["MATRIX_LR", "TOTAL_BATCH_SIZE", "WARMDOWN_RATIO"]


def test_a_crlf_file_keeps_its_line_endings_and_only_one_line_changes(tmp_path: Path):
    source = TRAIN.replace("\n", "\r\n")
    loop = ScriptedLoop(tmp_path, source=source)
    loop.propose()
    after = (loop.repo / "train.py").read_bytes().decode()
    assert after.count("\r\n") == source.count("\r\n")
    diff = [a for a, b in zip(source.split("\r\n"), after.split("\r\n"), strict=True) if a != b]
    assert diff == ["MATRIX_LR = 0.04             # main LR"]


def test_the_archive_snapshot_stands_in_for_a_commit_git_no_longer_has(loop: ScriptedLoop):
    gone = "d" * 40  # e.g. an attempt made in another clone; only its archive folder is here
    (loop.archive / gone).mkdir(parents=True)
    (loop.archive / gone / "train.py").write_text(kn.set_knob(TRAIN, "MATRIX_LR", 0.06))
    loop.ledger.append(Row(gone, 1.9, 0.1, "discard", "MATRIX_LR up", 1, parent=loop.best, runs=(1.9,),
                           delta=0.01, margin=MARGIN, best_before=loop.best_value))
    loop.experiment = 2
    proposal = loop.propose()
    assert proposal.description.startswith("TOTAL_BATCH_SIZE 8192 -> 4096")  # MATRIX_LR up was tried
    assert "(exp 1) MATRIX_LR 0.04 -> 0.06 was discarded" in loop.notes.findings()[0]


ASSERTS = '''from prepare import MAX_SEQ_LEN

MODEL_DIM = 256
HEAD_DIM = 64
SEQ_LEN = 256
DEVICE_BATCH_SIZE = 32
TOTAL_BATCH_SIZE = 8192
assert SEQ_LEN <= MAX_SEQ_LEN, "names an import: not judged by the agent"
assert MODEL_DIM % HEAD_DIM == 0
assert TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * SEQ_LEN) == 0
'''


def test_the_files_asserts_are_kept_true_by_moving_a_partner_knob(tmp_path: Path):
    loop = ScriptedLoop(tmp_path, source=ASSERTS, score=lambda values: 1.0)
    loop.notes.add_idea("MODEL_DIM = 90  # no partner can make this divide")
    loop.notes.add_idea("HEAD_DIM = 48")
    proposal, _ = loop.step()
    assert proposal.description == ("idea: HEAD_DIM = 48 (from ideas_queue.md; MODEL_DIM 256 -> 192 to keep the "
                                    "file's asserts true; was 64)")
    assert loop.notes.ideas()[0].result == "skipped: it breaks an assert of the file"
    for _ in range(4):
        proposal, _ = loop.step()
        if proposal.details["knob"] == "TOTAL_BATCH_SIZE":
            break
    assert proposal.description.startswith("TOTAL_BATCH_SIZE 8192 -> 4096 (first try of this knob; smaller batches")
    assert proposal.details["also"] == [["DEVICE_BATCH_SIZE", 32, 16]]
    # the pair counts as a move of the batch size: next time, the other direction
    while (proposal := loop.step()[0]).details["knob"] != "TOTAL_BATCH_SIZE":
        pass
    assert proposal.description.startswith("TOTAL_BATCH_SIZE 8192 -> 16384 (moving it downward was discarded")
    for r in loop.ledger.rows()[1:]:
        text = git(loop.repo, "show", f"{r.commit}:train.py")
        values = {k.name: k.value for k in kn.read_knobs(text).values()}
        assert not kn.violated(kn.constraints(text), values)


def test_fingerprints_ignore_comments_spacing_and_spelling_but_not_code():
    base = "N = 2**12  # tokens\nLR = 3e-4\n\ndef f():\n    return N\n"
    assert fingerprint(base) == fingerprint("N = 4096\nLR   = 0.0003   # other comment\n\ndef f():\n    return N\n")
    assert fingerprint(base) != fingerprint(base.replace("2**12", "2**13"))
    assert fingerprint(base) != fingerprint(base.replace("return N", "return N + 1"))


# --- any file with UPPER_CASE numeric knobs, either direction -----------------------------------

CONFIG_TOML = """\
# solver settings (a TOML file: not Python)
title = "toy"
SEED = 7                 # never tuned
MATRIX_LR = 0.04         # main LR
TOTAL_BATCH_SIZE = 8192  # tokens per step
DEPTH: 4                 ; YAML/INI-style lines count too
  NESTED = 3             # indented: not a knob
NAME = "not a number"

[extra]
WARMDOWN_RATIO = 0.5
"""


def test_knobs_of_a_config_file_are_read_and_set_byte_for_byte():
    knobs = kn.read_knobs(CONFIG_TOML, python=False)
    assert {k: v.value for k, v in knobs.items()} == {"SEED": 7, "MATRIX_LR": 0.04, "TOTAL_BATCH_SIZE": 8192,
                                                       "DEPTH": 4, "WARMDOWN_RATIO": 0.5}
    edited = kn.set_knob(CONFIG_TOML, "MATRIX_LR", 0.06, python=False)
    diff = [(a, b) for a, b in zip(CONFIG_TOML.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert diff == [("MATRIX_LR = 0.04         # main LR", "MATRIX_LR = 0.06         # main LR")]
    assert "DEPTH: 5                 ; YAML" in kn.set_knob(CONFIG_TOML, "DEPTH", 5, python=False)
    assert "MATRIX_LR = 3.0e-5 " in kn.set_knob(CONFIG_TOML, "MATRIX_LR", 3e-5, python=False)  # YAML-safe float
    assert fingerprint(CONFIG_TOML, python=False) == fingerprint(
        CONFIG_TOML.replace("0.04         # main LR", "4e-2 # other comment"), python=False)
    assert fingerprint(CONFIG_TOML, python=False) != fingerprint(edited, python=False)


def test_the_offline_agent_turns_the_knobs_of_a_non_python_file(tmp_path: Path):
    loop = ScriptedLoop(tmp_path, source=CONFIG_TOML, file="params.toml",
                        score=lambda v: 1.0 + abs(v["MATRIX_LR"] - 0.09) + abs(v["WARMDOWN_RATIO"] - 0.7))
    seen = []
    for _ in range(6):
        proposal, row = loop.step()
        seen.append((proposal.description.split(" (")[0], row.status))
    assert seen == [("MATRIX_LR 0.04 -> 0.06", "keep"), ("MATRIX_LR 0.06 -> 0.135", "discard"),
                    ("TOTAL_BATCH_SIZE 8192 -> 4096", "discard"), ("DEPTH 4 -> 3", "discard"),
                    ("WARMDOWN_RATIO 0.5 -> 0.6", "keep"), ("WARMDOWN_RATIO 0.6 -> 0.7714", "keep")]
    depth = git(loop.repo, "show", "refs/auto-log-research/attempts/0004:params.toml")
    assert "DEPTH: 3                 ; YAML/INI-style lines count too" in depth  # the file's own syntax
    text = (loop.repo / "params.toml").read_text()
    assert 'title = "toy"' in text and "SEED = 7 " in text and "  NESTED = 3" in text
    assert loop.best_value == pytest.approx(1.0 + 0.03 + 0.0714)


TOY_SCORE = """\
import tomllib
with open("params.toml", "rb") as f:
    p = tomllib.load(f)
print("---")
print(f"score: {10 - (p['X'] - 4) ** 2:.6f}")
"""


def test_offline_on_a_toml_file_with_a_max_metric_through_the_cli(tmp_path: Path):
    """Higher is better here: the agent's first move up (X 1 -> 1.5) raises the score and must
    be kept, a second bigger one too, and the third overshoots (worse, discarded)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.toml").write_text("X = 1.0  # the score peaks at X = 4\n")
    (repo / "score.py").write_text(TOY_SCORE)
    (repo / "harness.toml").write_text(
        'editable = ["params.toml"]\nimmutable = ["score.py"]\nrun_command = "python score.py"\n'
        'metric = "score"\ndirection = "max"\nbudget = 30\ngrace_s = 30\nmin_delta = 0.01\n')
    (repo / ".gitignore").write_text("__pycache__/\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "T"], ["config", "user.email", "t@e.com"],
                 ["add", "-A"], ["commit", "-qm", "start"]):
        git(repo, *args)
    env = harness_env({})
    for args in (["init", "--tag", "t", "-q"], ["loop", "-q", "--max-experiments", "3"]):
        result = harness(repo, env, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    rows = Ledger(repo / ".auto-log-research" / "results.tsv", "score").rows()
    assert [r.status for r in rows] == ["baseline", "keep", "keep", "discard"]
    assert [r.description.split(" (")[0] for r in rows[1:]] == ["X 1.0 -> 1.5", "X 1.5 -> 3.375", "X 3.375 -> 17.09"]
    assert rows[2].value > rows[1].value > rows[0].value
    assert (repo / "params.toml").read_text() == "X = 3.375  # the score peaks at X = 4\n"
    assert "score: higher is better" in harness(repo, env, "log").stdout
