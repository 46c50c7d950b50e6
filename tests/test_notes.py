"""harness.knobs (reading and setting UPPER_CASE knobs) and harness.notes (insights.md and
ideas_queue.md), on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import knobs as kn
from harness.notes import Notes

TRAIN_LIKE = '''"""A toy trainer."""
import os

DEPTH = 4                    # transformer blocks
MODEL_DIM: int = 256         # width
TOTAL_BATCH_SIZE = 2**17     # tokens per step
MATRIX_LR = 0.04             # Muon LR
TINY_LR = 3e-4               # written in scientific notation
SHIFT = -1                   # negative
PRODUCT = 64 * 4             # an expression
SEED = 42                    # harness: fixed
NAME = "gpt"                 # not a number
FLAG = True                  # a bool is not a knob
lower_case = 3               # not UPPER_CASE
A = B = 5                    # chained: not a simple knob
MATRIX_LR = 0.05             # reassigned: this one is in effect

if os.environ.get("X"):
    DEPTH = 8                # inside an if: not a module-level knob


def f():
    INNER = 1
    return INNER
'''


# --- knobs ------------------------------------------------------------------------------------


def test_read_knobs_finds_module_level_numbers_with_lines_and_text():
    found = kn.read_knobs(TRAIN_LIKE)
    assert list(found) == ["DEPTH", "MODEL_DIM", "TOTAL_BATCH_SIZE", "TINY_LR", "SHIFT", "PRODUCT", "SEED",
                           "MATRIX_LR"]
    assert found["DEPTH"].value == 4 and found["DEPTH"].kind == "int" and found["DEPTH"].lineno == 4
    assert found["TOTAL_BATCH_SIZE"].value == 2**17 and found["TOTAL_BATCH_SIZE"].text == "2**17"
    assert found["TINY_LR"].value == 3e-4 and found["TINY_LR"].kind == "float" and found["TINY_LR"].text == "3e-4"
    assert found["SHIFT"].value == -1
    assert found["PRODUCT"].value == 256
    assert found["MATRIX_LR"].value == 0.05 and found["MATRIX_LR"].lineno == 16
    assert found["SEED"].fixed and not found["DEPTH"].fixed


def test_set_knob_changes_only_that_value_and_keeps_the_comment_column():
    out = kn.set_knob(TRAIN_LIKE, "DEPTH", 12)
    before, after = TRAIN_LIKE.splitlines(), out.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [3]
    assert after[3] == "DEPTH = 12                   # transformer blocks"
    assert after[3].index("#") == before[3].index("#")
    # the value in effect is the one changed, not the earlier assignment
    out = kn.set_knob(TRAIN_LIKE, "MATRIX_LR", 0.06000000000000001)
    assert "MATRIX_LR = 0.06             # reassigned" in out
    assert "MATRIX_LR = 0.04             # Muon LR" in out
    assert kn.read_knobs(out)["MATRIX_LR"].value == 0.06
    # powers of two written as 2**k stay so; scientific stays tidy
    assert "TOTAL_BATCH_SIZE = 2**18     # tokens" in kn.set_knob(TRAIN_LIKE, "TOTAL_BATCH_SIZE", 2**18)
    assert "TINY_LR = 4.5e-4             #" in kn.set_knob(TRAIN_LIKE, "TINY_LR", 3e-4 * 1.5)
    with pytest.raises(KeyError):
        kn.set_knob(TRAIN_LIKE, "NAME", 1)


def test_set_knob_keeps_at_least_one_space_before_a_comment_when_the_value_grows():
    src = "LR = 0.1 # short gap\nX = 1\n"
    assert kn.set_knob(src, "LR", 0.000123) == "LR = 1.23e-4 # short gap\nX = 1\n"
    assert kn.set_knob("N = 3\n", "N", 4) == "N = 4\n"


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"), (0.03, "0.03"), (3e-4, "3e-4"), (0.06000000000000001, "0.06"), (2.0, "2.0"),
    (1.5e-5, "1.5e-5"), (10000.0, "10000.0"), (0.0, "0.0"), (-0.5, "-0.5"), (123456.7, "1.235e5"),
])
def test_format_value_is_tidy_and_round_trips(value, text):
    assert kn.format_value(value) == text
    assert kn.parse_number(text) == pytest.approx(value, rel=1e-3)
    assert isinstance(kn.parse_number(text), type(value))


# --- notes: creation and Current Best -----------------------------------------------------------


def test_ensure_creates_both_files_once_and_never_overwrites(tmp_path: Path):
    notes = Notes(tmp_path / "archive")
    made = notes.ensure("Train a tiny GPT for 60 s.", "val_bpb", "min")
    assert {p.name for p in made} == {"insights.md", "ideas_queue.md"}
    insights = notes.insights_path.read_text()
    assert "## Current Best" in insights and "## Findings" in insights
    assert "Train a tiny GPT for 60 s." in insights and "lower is better" in insights
    assert notes.ideas() == []  # the template's examples sit in a comment
    notes.insights_path.write_text("# mine\n")
    assert notes.ensure("other", "val_bpb", "min") == []
    assert notes.insights_path.read_text() == "# mine\n"


def test_update_current_best_rewrites_only_that_section(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.ensure("toy", "val_bpb", "min")
    notes.append_insight("MATRIX_LR 0.04 -> 0.06 was kept", experiment=3)
    text = notes.insights_path.read_text().replace("## Findings", "## Agent thoughts\n\nkeep me: x < y\n\n## Findings")
    notes.insights_path.write_text(text)

    notes.update_current_best(1.2345678, "a" * 40, "MATRIX_LR 0.04 -> 0.06", 0.004, "val_bpb", (1.23, 1.239), "min")
    notes.update_current_best(1.1111111, "b" * 40, "DEPTH 4 -> 3", 0.005, "val_bpb", (1.111,), "min")
    after = notes.insights_path.read_text()
    assert after.count("## Current Best") == 1
    assert "1.111111" in after and "bbbbbbbbbbbb" in after and "DEPTH 4 -> 3" in after and "±0.005000" in after
    assert "1.234568" not in after
    assert "keep me: x < y" in after and "(exp 3) MATRIX_LR 0.04 -> 0.06 was kept" in after
    # everything outside the section is byte for byte what it was
    def outside(t: str) -> str:
        start = t.index("## Current Best")
        return t[:start] + t[t.index("## Agent thoughts"):]
    assert outside(after) == outside(text)


def test_update_current_best_adds_the_section_to_a_hand_written_file(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.insights_path.write_text("# My notes\n\nfree text\n\n## Findings\n\n- old finding\n")
    notes.update_current_best(0.9, "c" * 40, "baseline", None, "score", (), "max")
    text = notes.insights_path.read_text()
    assert text.index("free text") < text.index("## Current Best") < text.index("## Findings")
    assert "score: **0.900000** (higher is better)" in text and "- old finding" in text
    Notes(tmp_path / "fresh").update_current_best(0.5, "d" * 40, "x", 0.1, "m", (0.5,))
    assert "## Current Best" in (tmp_path / "fresh" / "insights.md").read_text()


def test_append_insight_adds_dated_bullets_in_order_and_creates_the_section(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.insights_path.write_text("# Insights\n\nno sections here\n")
    notes.append_insight("first\nlesson", experiment=1)
    notes.append_insight("second", experiment=2)
    findings = notes.findings()
    assert len(findings) == 2 and findings[0].endswith("(exp 1) first lesson") and findings[1].endswith("second")
    assert notes.has_insight(2) and not notes.has_insight(3)
    assert "no sections here" in notes.insights_path.read_text()


# --- notes: the ideas queue ---------------------------------------------------------------------

QUEUE = """# Ideas queue

<!--
  - [ ] COMMENTED = 1  # not an idea
-->

## Queue

- [ ] MATRIX_LR = 0.06  # short budgets like hot LRs
* [ ] try a cosine schedule
- [x] DEPTH = 3 → exp 4: discard 1.234000
+ plain bullet: WARMDOWN_RATIO = 0.7 (no checkbox, so pending free text)
1. [ ] WEIGHT_DECAY = 0.1 (regularize a little)
- [ ] TOTAL_BATCH_SIZE = 2**12 because more steps
   - [X] EMBEDDING_LR = 0.9 → exp 7: keep 1.100000

```
- [ ] IN_CODE = 2
```
"""


def test_ideas_parse_in_priority_order_with_assignments(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.ideas_path.write_text(QUEUE)
    ideas = notes.ideas()
    assert [i.done for i in ideas] == [False, False, True, False, False, False, True]
    assert ideas[0].assignment == ("MATRIX_LR", 0.06) and ideas[0].why == "short budgets like hot LRs"
    assert ideas[1].assignment is None and ideas[1].text == "try a cosine schedule"
    assert ideas[2].text == "DEPTH = 3" and ideas[2].result == "exp 4: discard 1.234000"
    assert ideas[3].assignment is None  # free text that mentions a knob is not an assignment
    assert ideas[4].assignment == ("WEIGHT_DECAY", 0.1) and ideas[4].why == "regularize a little"
    assert ideas[5].assignment == ("TOTAL_BATCH_SIZE", 4096) and ideas[5].why == "because more steps"
    assert ideas[6].assignment == ("EMBEDDING_LR", 0.9)
    assert [i.text for i in notes.pending()][0] == "MATRIX_LR = 0.06  # short budgets like hot LRs"


def test_mark_idea_checks_off_the_matching_line_and_keeps_the_rest(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.ideas_path.write_text(QUEUE)
    assert notes.mark_idea("MATRIX_LR = 0.06  # short budgets like hot LRs", 9, "keep", 1.05)
    assert notes.mark_idea("WEIGHT_DECAY = 0.10", 10, "discard", 1.2)  # same assignment, other text
    assert not notes.mark_idea("MATRIX_LR = 0.06", 11, "keep", 1.0)  # no longer pending
    assert not notes.mark_idea("nothing like this", 11, "keep", 1.0)
    lines = notes.ideas_path.read_text().splitlines()
    assert "- [x] MATRIX_LR = 0.06  # short budgets like hot LRs → exp 9: keep 1.050000" in lines
    assert "1. [x] WEIGHT_DECAY = 0.1 (regularize a little) → exp 10: discard 1.200000" in lines
    assert "  - [ ] COMMENTED = 1  # not an idea" in lines and "- [ ] IN_CODE = 2" in lines
    assert len(lines) == len(QUEUE.splitlines())
    done = [i for i in notes.ideas() if i.done]
    assert [i.result for i in done][:2] == ["exp 9: keep 1.050000", "exp 4: discard 1.234000"]


def test_add_idea_at_top_or_bottom_without_duplicates(tmp_path: Path):
    notes = Notes(tmp_path)
    notes.ensure("toy", "val_bpb", "min")
    assert notes.add_idea("DEPTH = 3  # smaller")
    assert notes.add_idea("MATRIX_LR = 0.08", top=True)
    assert notes.add_idea("free text idea")
    assert not notes.add_idea("DEPTH = 3   # smaller")  # already pending (spacing aside)
    assert [i.text for i in notes.ideas()] == ["MATRIX_LR = 0.08", "DEPTH = 3 # smaller", "free text idea"]
    text = notes.ideas_path.read_text()
    assert text.index("## Queue") < text.index("- [ ] MATRIX_LR = 0.08")
    # a file with no sections at all, or no file
    bare = Notes(tmp_path / "bare")
    assert bare.add_idea("X = 1")
    assert bare.ideas()[0].assignment == ("X", 1)


def test_constraints_judge_only_asserts_over_knobs():
    src = "from x import MAX\nA = 8\nB = 4\nassert A % B == 0\nassert A <= MAX\nassert 0 < B < A, 'order'\n"
    tests = kn.constraints(src)
    assert len(tests) == 3
    assert kn.violated(tests, {"A": 8, "B": 4}) == []
    assert [kn.names_in(t) for t in kn.violated(tests, {"A": 8, "B": 3})] == [["A", "B"]]
    assert len(kn.violated(tests, {"A": 8, "B": 16})) == 2  # A % B != 0 and B < A fails; MAX unknown
