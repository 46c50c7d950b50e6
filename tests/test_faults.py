"""Fault injection: every scenario breaks one thing for real (signals, floods, leaks, an agent
that rewrites history, a full disk, a corrupt .git/HEAD, a deleted data cache ...) and checks the
harness survives with nothing lost. The scenarios live in tests/support/faults.py, shared with
bench/fault_table.py, so the table prints exactly what is tested here. A group of scenarios that
shares one loop runs once per module and each scenario is its own test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support import faults
from support.faults import FaultResult

GROUPS: dict[str, Callable[[Path], list[FaultResult] | FaultResult]] = {
    "runs": faults.training_runs,
    "flood": faults.flood_output,
    "immutable": faults.immutable_evaluation,
    "agent": faults.agent_faults,
    "bad_input": faults.bad_input,
    "read_only": faults.read_only_archive,
    "harness": faults.interrupt_and_second_harness,
    "transient": faults.transient_agent_errors,
    "agent9": faults.kill9_in_agent_phase,
    "sigterm": faults.terminated_mid_run,
    "sighup": faults.hangup_mid_run,
    "stale_lock": faults.stale_lock,
    "no_ref": faults.commit_without_ref,
    "staged": faults.killed_while_committing,
    "user": faults.user_changes_refused,
    "git": faults.broken_git,
    "disk_log": faults.disk_full,
    "disk_record": faults.disk_full_when_recording,
}
_cache: dict[str, dict[str, FaultResult]] = {}


def results_of(group: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FaultResult]:
    """Run a group once per session; its scenarios are looked up by name."""
    if group not in _cache:
        out = GROUPS[group](tmp_path_factory.mktemp(group))
        _cache[group] = {r.scenario: r for r in (out if isinstance(out, list) else [out])}
    return _cache[group]


def check(res: FaultResult) -> None:
    if res.skipped:
        pytest.skip(f"{res.scenario}: {res.skipped}")
    assert res.survived and res.lost == 0, f"{res.scenario}: lost {res.lost}; {res.note}"


SCENARIOS = [
    ("runs", "run past its wall-clock limit (child sleep too)"),
    ("runs", "run leaks memory past memory_mb"),
    ("runs", "API keys of the harness not visible to the run"),
    ("runs", "network off in runs"),
    ("flood", "run prints ~1 GB"),
    ("immutable", "agent edits prepare.py / evaluate.py"),
    ("immutable", "the run itself modifies an immutable file"),
    *(("agent", name) for name, _, _ in faults.AGENT_FAULTS if not name.startswith("(")),
    ("agent", "K=5 failures in a row: back at the best"),
    ("agent", "an untracked user file survives every reset"),
    ("bad_input", "editable file is not UTF-8"),
    ("bad_input", "editable file of 50 MB"),
    ("bad_input", "metrics.jsonl with broken lines and NaN"),
    ("bad_input", "run_summary.json that is not JSON"),
    ("read_only", "archive folder is read-only"),
    ("harness", "Ctrl-C (SIGINT) mid-run, then resume"),
    ("harness", "a live lock refuses a second harness"),
    ("transient", "agent times out 3 times in a row (transient): backs off, goes on"),
    ("agent9", "kill -9 in the agent phase, restarted at once"),
    ("sigterm", "SIGTERM to the harness mid-run, then resume"),
    ("sighup", "SIGHUP to the harness mid-run, then resume"),
    ("stale_lock", "a stale lock from a dead pid is taken over"),
    ("no_ref", "kill -9 between an attempt's commit and its ref"),
    ("staged", "kill -9 between an attempt's git add and git commit"),
    ("user", "user's uncommitted tracked changes at loop start"),
    ("git", "git broken mid-loop (.git/HEAD corrupted)"),
    ("disk_log", "disk full while the run writes its log (tmpfs archive)"),
    ("disk_record", "disk full after the run, before recording (tmpfs archive)"),
]


@pytest.mark.parametrize(("group", "scenario"), SCENARIOS, ids=[s for _, s in SCENARIOS])
def test_fault(group: str, scenario: str, tmp_path_factory: pytest.TempPathFactory):
    found = results_of(group, tmp_path_factory)
    assert scenario in found, f"the {group} group did not report {scenario!r}: {sorted(found)}"
    check(found[scenario])


REAL = ["train.py prints a made-up val_bpb: 0.1", "data cache deleted between runs (real training)",
        "data cache modified between runs (real training)"]


@pytest.fixture(scope="module")
def real_results(tmp_path_factory: pytest.TempPathFactory, alr_env: dict[str, str]) -> dict[str, FaultResult]:
    return {r.scenario: r for r in faults.real_training(tmp_path_factory.mktemp("real"), alr_env)}


@pytest.mark.parametrize("scenario", REAL)
def test_fault_real_training(scenario: str, real_results: dict[str, FaultResult]):
    check(real_results[scenario])


def test_kill9_five_times_then_resume_is_consistent(tmp_path: Path):
    kills, state, res = faults.kill9_campaign(tmp_path, kills=5, seed=7, max_delay=3.0)
    assert len(kills) == 5
    assert not state.problems and state.lost == 0, "\n".join(k.line() for k in kills) + "\n" + res.note
    check(res)
    assert len(state.rows) >= 3  # the loop got somewhere between the kills


def test_audit_catches_what_it_is_meant_to_catch(tmp_path: Path):
    """The consistency audit itself: a duplicated row, a missing note and an orphan folder."""
    repo = faults.fault_repo(tmp_path / "r")
    assert faults.audit(repo, expected_rows=1).ok
    archive = repo / ".auto-log-research"
    ledger = (archive / "results.tsv").read_text()
    (archive / "results.tsv").write_text(ledger + ledger.splitlines()[-1] + "\n")
    faults.git(repo, "update-ref", "-d", "refs/notes/commits")
    (archive / ("f" * 40)).mkdir()
    found = faults.audit(repo, expected_rows=1)
    text = " ".join(found.problems)
    assert "recorded twice" in text and "no git note" in text and "orphan" in text
    assert found.lost == 3  # one row twice, two rows without their note
