"""The default target end to end with real training: `harness init` and `harness loop --agent
offline` as real subprocesses on a real research repo (a small train.py, the tiny dataset)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.research import git, harness, harness_env, make_research_repo

from harness.ledger import Ledger


@pytest.mark.slow
def test_offline_loop_on_real_training(tmp_path: Path, alr_env: dict[str, str]):
    repo = make_research_repo(tmp_path / "repo")
    env = harness_env(alr_env)
    r = harness(repo, env, "init", "--tag", "cpu", "--budget", "3", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "baseline val_bpb" in r.stdout
    archive = repo / ".auto-log-research"
    (archive / "ideas_queue.md").write_text("# Ideas\n\n- [ ] MATRIX_LR = 0.05  # a little higher\n")
    r = harness(repo, env, "loop", "--agent", "offline", "--max-experiments", "2", "--budget", "3", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = Ledger(archive / "results.tsv").rows()
    assert [r.status for r in rows][0] == "baseline" and len(rows) == 3
    first = rows[1]
    assert first.description.startswith("idea: MATRIX_LR") and first.agent == "offline"
    assert "[x]" in (archive / "ideas_queue.md").read_text()  # the idea is marked with its result
    for row in rows:
        run = archive / row.commit
        for name in ("run.log", "metrics.jsonl", "run_summary.json", "analysis.md", "loss.png"):
            assert (run / name).exists(), f"{name} missing for {row.status} {row.short}"
        assert row.value is not None and 1.0 < row.value < 12.0
    # every attempt is in git with its result as a note; HEAD is the best
    for row in rows[1:]:
        assert "val_bpb:" in git(repo, "notes", "show", row.commit)
    best = max((r for r in rows if r.kept), key=lambda r: r.experiment)
    assert git(repo, "rev-parse", "HEAD") == best.commit
    status = harness(repo, env, "status")
    assert status.returncode == 0 and "best" in status.stdout
    analysis = harness(repo, env, "log")
    assert analysis.stdout.count("#00") == 3
