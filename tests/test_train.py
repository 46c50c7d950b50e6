"""train.py, run for real: a copy with its knobs edited the way an agent edits them (regex on the
UPPER_CASE lines), on the tiny prepared dataset, as a subprocess."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth", "device"]
METRIC_KEYS = {"step", "train/loss", "train/loss_smooth", "train/lr_multiplier", "train/momentum",
               "train/weight_decay", "train/progress", "perf/step_time_ms", "perf/tokens_per_sec",
               "perf/mfu_percent", "time/training_seconds"}
# A toy model: a few seconds of training still takes many steps.
TINY_KNOBS = {"DEPTH": "2", "MODEL_DIM": "64", "HEAD_DIM": "32", "SEQ_LEN": "64",
              "DEVICE_BATCH_SIZE": "4", "TOTAL_BATCH_SIZE": "512", "COMPILE": "False"}


def edit_knobs(source: str, knobs: dict[str, str]) -> str:
    """Set top-level UPPER_CASE assignments, keeping their comments: what an agent's edit does."""
    for name, value in knobs.items():
        source, n = re.subn(rf"^{name} = [^#\n]*?(\s*#.*)?$", lambda m, v=value, k=name: f"{k} = {v}{m.group(1) or ''}",
                            source, count=1, flags=re.M)
        assert n == 1, f"no top-level knob {name} in train.py"
    return source


def make_workdir(root: Path, dest: Path, knobs: dict[str, str]) -> Path:
    dest.mkdir()
    (dest / "train.py").write_text(edit_knobs((root / "train.py").read_text(), knobs))
    shutil.copy(root / "prepare.py", dest / "prepare.py")
    return dest


def run_train(workdir: Path, env: dict[str, str], budget: float, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "ALR_TIME_BUDGET": str(budget), "ALR_RUN_DIR": str(workdir / "out"),
                "ALR_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py"], cwd=workdir, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def parse_summary(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    assert "---" in lines, f"no --- line in:\n{stdout}"
    block = lines[len(lines) - 1 - lines[::-1].index("---") + 1:]
    return dict(line.split(": ", 1) for line in block)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, alr_env: dict[str, str], project_root: Path):
    """One real 3-second run of the tiny config, inside a git repo (as the harness runs it)."""
    workdir = make_workdir(project_root, tmp_path_factory.mktemp("train") / "repo", TINY_KNOBS)
    git(workdir, "init", "-q")
    git(workdir, "config", "user.name", "Test")
    git(workdir, "config", "user.email", "test@example.com")
    git(workdir, "add", "train.py", "prepare.py")
    git(workdir, "commit", "-q", "-m", "tiny config")
    start = time.time()
    proc = run_train(workdir, alr_env, budget=3)
    return workdir, proc, time.time() - start


def test_run_ends_with_the_summary_block(finished_run):
    _, proc, wall = finished_run
    assert proc.returncode == 0, proc.stderr
    summary = parse_summary(proc.stdout)
    assert list(summary) == SUMMARY_KEYS
    assert 0 < float(summary["val_bpb"]) < 20
    assert float(summary["training_seconds"]) >= 3
    assert float(summary["training_seconds"]) < float(summary["total_seconds"]) <= wall
    assert int(summary["num_steps"]) > 3
    assert summary["depth"] == "2" and summary["device"] == "cpu"
    assert float(summary["num_params_M"]) < 1
    assert float(summary["mfu_percent"]) > 0 and float(summary["peak_memory_mb"]) > 0
    assert "threads 1" in proc.stdout  # OMP_NUM_THREADS is respected


def test_metrics_jsonl_has_one_line_per_step_with_the_contract_keys(finished_run):
    workdir, proc, _ = finished_run
    summary = parse_summary(proc.stdout)
    lines = [json.loads(line) for line in (workdir / "out" / "metrics.jsonl").read_text().splitlines()]
    steps, final = lines[:-1], lines[-1]
    assert [r["step"] for r in steps] == list(range(int(summary["num_steps"])))
    for record in steps:
        assert set(record) == METRIC_KEYS
        assert math.isfinite(record["train/loss"]) and 0 <= record["train/progress"] <= 1
    assert steps[-1]["train/loss"] < steps[0]["train/loss"]  # it learns
    charged = [r["time/training_seconds"] for r in steps]
    assert charged == sorted(charged) and charged[0] == 0  # the first (warm-up) step is not charged
    assert steps[-1]["train/lr_multiplier"] < 0.5  # warmdown reached by the end of the budget
    assert final == {"step": int(summary["num_steps"]), "val/bpb": pytest.approx(float(summary["val_bpb"]))}


def test_run_summary_json_records_knobs_results_and_commit(finished_run):
    workdir, proc, _ = finished_run
    data = json.loads((workdir / "out" / "run_summary.json").read_text())
    assert data["config"]["DEPTH"] == 2 and data["config"]["MODEL_DIM"] == 64  # the edited knobs
    assert data["config"]["MATRIX_LR"] == 0.08 and "TIME_BUDGET" not in data["config"]  # an unedited default
    summary = parse_summary(proc.stdout)
    assert list(data["results"]) == SUMMARY_KEYS
    assert data["results"]["val_bpb"] == pytest.approx(float(summary["val_bpb"]), abs=1e-6)
    assert data["git_commit"] == git(workdir, "rev-parse", "HEAD")
    assert (data["dataset"], data["seed"], data["device"]) == ("tiny", 0, "cpu")


def test_diverging_loss_fails_fast_with_exit_code_3(tmp_path, alr_env, project_root):
    # An absurd head LR with the logit cap lifted: the logits, hence the loss, blow up within a few steps.
    workdir = make_workdir(project_root, tmp_path / "boom", {**TINY_KNOBS, "UNEMBEDDING_LR": "1e30", "LOGIT_SOFTCAP": "1e30"})
    start = time.time()
    proc = run_train(workdir, alr_env, budget=120, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("FAIL: loss diverged")
    assert time.time() - start < 60  # long before the budget is spent
    assert not (workdir / "out" / "run_summary.json").exists()


def test_train_before_prepare_says_so_in_one_line_and_exits_2(tmp_path, project_root):
    workdir = make_workdir(project_root, tmp_path / "fresh", TINY_KNOBS)
    proc = run_train(workdir, {"ALR_CACHE_DIR": str(tmp_path / "empty-cache")}, budget=3)
    assert proc.returncode == 2
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(output) == 1 and "python prepare.py" in output[0], output


def test_compiled_run_charges_only_the_steps_after_compiling(tmp_path, alr_env, project_root):
    # The CPU default compiles: the first (compiling) step is not charged, the summary is complete.
    workdir = make_workdir(project_root, tmp_path / "compiled", {**TINY_KNOBS, "COMPILE": "True"})
    proc = run_train(workdir, alr_env, budget=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = parse_summary(proc.stdout)
    assert int(summary["num_steps"]) > 2 and math.isfinite(float(summary["val_bpb"]))
    steps = [json.loads(line) for line in (workdir / "out" / "metrics.jsonl").read_text().splitlines()][:-1]
    assert steps[0]["time/training_seconds"] == 0.0  # the compile step is excluded from the budget
    assert json.loads((workdir / "out" / "run_summary.json").read_text())["config"]["COMPILE"] is True


def test_without_a_cxx_compiler_compile_is_turned_off_with_a_note(tmp_path, alr_env, project_root):
    workdir = make_workdir(project_root, tmp_path / "nocc", {**TINY_KNOBS, "COMPILE": "True"})
    empty = tmp_path / "empty-path"
    empty.mkdir()
    proc = run_train(workdir, {**alr_env, "PATH": str(empty)}, budget=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "torch.compile is off" in proc.stdout and "g++" in proc.stdout
    assert json.loads((workdir / "out" / "run_summary.json").read_text())["config"]["COMPILE"] is False


def test_value_embeddings_and_dropout_knobs_train(tmp_path, alr_env, project_root):
    workdir = make_workdir(project_root, tmp_path / "ve", {**TINY_KNOBS, "VALUE_EMBEDS": "True", "DROPOUT": "0.1"})
    proc = run_train(workdir, alr_env, budget=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = parse_summary(proc.stdout)
    assert math.isfinite(float(summary["val_bpb"])) and int(summary["num_steps"]) > 2
