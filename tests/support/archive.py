"""Build a realistic research archive in a real temporary git repository, with no training.

The repo gets a tiny train.py committed once per attempt (discarded attempts are reset away but
kept reachable under refs/auto-log-research/attempts/, as the loop does), a results.tsv written
through harness.ledger, per-attempt folders (metrics.jsonl, train.py snapshot, run.log), notes and
a model-call log. Descriptions and notes carry HTML and script payloads on purpose.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from harness.ledger import Ledger, Row

XSS_DESCRIPTION = "<script>alert(1)</script> raise LR <img src=x onerror=\"console.log('XSS-IMG')\">"
XSS_NOTE = "<script>console.log('XSS-NOTES')</script> <b>bold claim</b>"

# Status per experiment after the baseline (0); cycled for longer archives.
PATTERN = ("keep", "discard", "crash", "keep", "no_change", "discard", "agent_error", "keep", "crash",
           "discard", "infra", "violation")
FAILURES = {
    "crash": ("oom: CUDA out of memory at step 12", "diverged: loss nan at step 40"),
    "agent_error": ("agent: exited with code 1",),
    "infra": ("infra: worker lost",),
    "violation": ("violation: touched prepare.py",),
    "no_change": ("no_change: the agent edited nothing",),
}
TRAIN_PY = '''"""A tiny trainer for tests."""
DEPTH = 4            # layers
MATRIX_LR = {lr}     # learning rate of matrices
WARMUP = {warmup}    # warm-up steps

print("training")
'''


def harness_command() -> list[str]:
    """The installed `harness` script of this interpreter's environment (PATH may not hold it)."""
    script = Path(sys.executable).parent / "harness"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from harness.cli import main; main()"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def init_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "autoresearch/test")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    (root / ".gitignore").write_text(".auto-log-research/\n")


def _commit(root: Path, lr: float, warmup: int, message: str) -> str:
    (root / "train.py").write_text(TRAIN_PY.format(lr=f"{lr:.4f}", warmup=warmup))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def write_metrics(folder: Path, final_loss: float, steps: int = 600) -> None:
    lines = []
    for s in range(steps):
        loss = final_loss + 3.0 * math.exp(-s / 80)
        lines.append(json.dumps({"step": s, "train/loss": loss + 0.05 * math.sin(s), "train/loss_smooth": loss,
                                 "perf/tokens_per_sec": 12000.0, "time/training_seconds": s * 0.5,
                                 "train/progress": s / steps}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def make_archive(root: Path, n: int = 12, *, metric: str = "val_bpb") -> list[Row]:
    """An archive of n attempts (experiment 0 is the baseline) in a new git repo at root."""
    init_repo(root)
    archive = root / ".auto-log-research"
    archive.mkdir()
    ledger = Ledger(archive / "results.tsv", metric)
    best_value, best_commit, lr, margin = 1.9, "", 0.02, 0.004
    rows, calls = [], []
    for i in range(n):
        status = "baseline" if i == 0 else PATTERN[(i - 1) % len(PATTERN)]
        description = "baseline" if i == 0 else f"MATRIX_LR {lr:.4f} -> {lr * 1.1:.4f}"
        if i == 3:
            description = XSS_DESCRIPTION
        commit, value, failure = "-", None, ""
        if status in ("baseline", "keep", "discard", "crash", "infra", "violation"):
            commit = _commit(root, lr * (1.1 if i else 1), 10 + i, description)
        if status in ("baseline", "keep", "discard"):
            value = best_value - 0.01 if status == "keep" else best_value + (0.005 if status == "discard" else 0)
        if status in FAILURES:
            seen = sum(r.status == status for r in rows)  # alternate between the messages of a status
            failure = FAILURES[status][seen % len(FAILURES[status])]
        tokens = 0 if status == "baseline" else 1000 + 37 * i
        row = Row(
            commit=commit, value=value, memory_gb=1.2, status=status, description=description, experiment=i,
            parent=best_commit or "-", runs=(value, value + 0.0005) if value is not None else (),
            delta=None if value is None or i == 0 else value - best_value, margin=margin if i else None,
            best_before=best_value if i else None, train_s=300.0 if commit != "-" else 0.0,
            wall_s=420.0 if commit != "-" else 30.0, agent="offline", tokens=tokens, cost_usd=tokens * 2e-6,
            failure=failure, timestamp=f"2025-01-01T{i // 60:02d}:{i % 60:02d}:00+00:00",
        )
        ledger.append(row)
        rows.append(row)
        calls.append({"experiment": i, "backend": "fake", "stage": "propose", "model": "fake-model",
                      "tokens_in": tokens, "tokens_out": 50, "tokens_cached": 0, "cost_usd": tokens * 2e-6,
                      "duration_s": 1.0, "error": None})
        if commit != "-":
            _archive_attempt(archive / commit, root, with_metrics=value is not None, value=value)
        if status in ("baseline", "keep"):
            best_value, best_commit = value, commit
            lr *= 1.1
        elif commit != "-":  # the loop keeps discarded attempts reachable, then resets to the best
            git(root, "update-ref", f"refs/auto-log-research/attempts/{i:04d}", commit)
            git(root, "reset", "-q", "--hard", best_commit)
    (archive / "insights.md").write_text(f"## Current Best\n{best_value:.6f} ({best_commit[:7]})\n\n- {XSS_NOTE}\n")
    (archive / "ideas_queue.md").write_text(
        "# Ideas\n- [ ] WARMUP = 20  # smoother start <i>maybe</i>\n"
        "- [x] MATRIX_LR = 0.022  # faster → exp 1: keep 1.890000\n"
        "- [x] DEPTH = 6  # capacity → exp 2: discard 1.895000\n")
    (archive / "llm_calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    return rows


def _archive_attempt(folder: Path, root: Path, *, with_metrics: bool, value: float | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text((root / "train.py").read_text())
    (folder / "run.log").write_text("training\n" + (f"---\nval_bpb: {value:.6f}\n" if value else "Traceback: boom\n"))
    if with_metrics:
        write_metrics(folder, value or 1.0)
