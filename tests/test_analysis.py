"""Post-run analysis: metrics/log parsing, failure classes (from real Python failures), trajectory
statistics, comparisons, analysis.md/json, plots, and `python analyze.py` as a real subprocess."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.analysis import (
    Curve,
    analyze_run,
    classify_failure,
    code_diff,
    config_diff,
    failure_summary,
    find_spikes,
    load_metrics,
    parse_summary,
    parting_point,
    trajectory,
)
from harness.plots import plot_progress, plot_run

ROOT = Path(__file__).resolve().parents[1]


# --- synthetic runs -------------------------------------------------------------------------
def loss_at(step: int, floor: float) -> float:
    return floor + 9.0 * math.exp(-step / 150) + 0.6 * math.exp(-step / 2500)


def write_run(
    run_dir: Path,
    *,
    steps: int = 600,
    seed: int = 0,
    floor: float = 1.2,
    step_ms: float = 50.0,
    budget: float = 30.0,
    noise: float = 0.05,
    loss_fn=None,
    config: dict | None = None,
    summary: bool = True,
) -> Path:
    """A realistic attempt folder: metrics.jsonl (train.py's keys), run.log, run_summary.json,
    train.py snapshot. `loss_fn(step, rng)` overrides the decaying curve."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    acc, lines = 0.0, []
    for i in range(steps):
        loss = loss_fn(i, rng) if loss_fn else loss_at(i, floor) + rng.gauss(0, noise)
        acc = 0.9 * acc + 0.1 * loss
        ms = step_ms * (1 + 0.04 * rng.random())
        progress = (i + 1) / steps
        lines.append(json.dumps({
            "step": i, "train/loss": loss, "train/loss_smooth": acc / (1 - 0.9 ** (i + 1)),
            "train/lr_multiplier": min(1.0, (i + 1) / 50) * (1.0 if progress < 0.6 else (1 - progress) / 0.4),
            "train/momentum": 0.95, "train/weight_decay": 0.1, "train/progress": progress,
            "perf/step_time_ms": ms, "perf/tokens_per_sec": 8192 / (ms / 1000), "perf/mfu_percent": 25.0,
            "time/training_seconds": progress * budget,
        }))
    value = round(floor * 0.8, 6)
    if summary:
        lines.append(json.dumps({"step": steps, "val/bpb": value}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    log = f"step {steps - 1:05d} | loss {acc:.4f}\n"
    if summary:
        log += f"---\nval_bpb: {value:.6f}\ntraining_seconds: {budget}\npeak_memory_mb: 812.5\ntotal_tokens_M: {steps * 8192 / 1e6:.3f}\nnum_steps: {steps}\ndevice: cpu\n"
    (run_dir / "run.log").write_text(log)
    cfg = config or {"LR": 0.01, "DEPTH": 4}
    (run_dir / "run_summary.json").write_text(json.dumps({"config": cfg, "results": {"val_bpb": value}, "seed": seed}))
    (run_dir / "train.py").write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items()) + "print('train')\n")
    return run_dir


def curve_of(run_dir: Path) -> Curve:
    return Curve.from_records(load_metrics(run_dir / "metrics.jsonl"))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.verify()  # decodes the chunks: a truncated or corrupt PNG fails here
    with Image.open(path) as img:
        assert img.size[0] > 300 and img.size[1] > 200


def python_failure(tmp_path: Path, source: str, name: str = "train.py") -> tuple[str, int]:
    """Run a real Python script and return its combined output and exit code."""
    script = tmp_path / name
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return proc.stdout + proc.stderr, proc.returncode


# --- reading files --------------------------------------------------------------------------
def test_load_metrics_keeps_readable_lines_of_a_damaged_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        b'{"step": 0, "train/loss": 10.5}\n'
        b"this is not json\n"
        b'{"step": 1, "train/loss": NaN, "perf/mfu_percent": Infinity}\n'
        b"\n"
        b"[1, 2, 3]\n"
        b'{"step": 2, "train/loss": nan, "x": -inf}\n'  # bare constants from a non-Python writer
        b'{"step": 3, "note": "caf\xe9"}\n'  # not UTF-8
        b'{"step": 4, "train/lo'  # torn by a crash mid-write
    )
    records = load_metrics(path)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert math.isnan(records[1]["train/loss"]) and records[1]["perf/mfu_percent"] == math.inf
    assert math.isnan(records[2]["train/loss"]) and records[2]["x"] == -math.inf
    assert load_metrics(tmp_path / "missing.jsonl") == []
    (tmp_path / "empty.jsonl").write_text("")
    assert load_metrics(tmp_path / "empty.jsonl") == []


def test_parse_summary_reads_after_the_last_separator_only():
    log = "---\nval_bpb: 9.9\nstep 10\n---\nval_bpb: 1.234500\nnum_steps: 812\ndevice: cuda\n  \nnoise line\n"
    assert parse_summary(log) == {"val_bpb": 1.2345, "num_steps": 812.0, "device": "cuda"}
    assert parse_summary("val_bpb: 1.0\n----\nx: 1\n") == {}
    assert parse_summary("") == {}
    assert parse_summary("done\n---\n") == {}


# --- failure classes, from real Python processes ----------------------------------------------
def test_syntax_error_of_the_main_script(tmp_path):
    log, rc = python_failure(tmp_path, "x = 1\ndef broken(:\n    pass\n")
    assert classify_failure(log, rc, False, False, None) == "syntax_error"
    line = failure_summary(log, rc, False, False, None)
    assert line.startswith("syntax_error: SyntaxError: ") and line.endswith("at train.py:2")


def test_indentation_error_in_an_imported_module(tmp_path):
    (tmp_path / "helper.py").write_text("def f():\nreturn 1\n")
    log, rc = python_failure(tmp_path, "import helper\n")
    assert "Traceback" in log
    assert classify_failure(log, rc, False, False, None) == "syntax_error"
    assert "IndentationError" in failure_summary(log, rc, False, False, None)


def test_import_error(tmp_path):
    log, rc = python_failure(tmp_path, "import os\nimport flash_attn_that_is_not_installed\n")
    assert classify_failure(log, rc, False, False, None) == "import_error"
    assert failure_summary(log, rc, False, False, None) == (
        "import_error: ModuleNotFoundError: No module named 'flash_attn_that_is_not_installed' at train.py:2"
    )


def test_exception_points_at_the_users_line_not_the_library(tmp_path):
    source = "import json\n\nprint('step 1')\njson.loads('{bad')\n"
    log, rc = python_failure(tmp_path, source)
    assert classify_failure(log, rc, False, False, None) == "exception"
    line = failure_summary(log, rc, False, False, None)
    assert line.startswith("exception: json.decoder.JSONDecodeError: ") and line.endswith("at train.py:4")


def test_chained_exception_reports_the_last_one(tmp_path):
    source = "try:\n    {}['k']\nexcept KeyError:\n    raise ValueError('shapes (2, 3) and (4,) do not match')\n"
    log, rc = python_failure(tmp_path, source)
    assert failure_summary(log, rc, False, False, None) == (
        "exception: ValueError: shapes (2, 3) and (4,) do not match at train.py:4"
    )


def test_divergence_by_message_or_exit_code(tmp_path):
    log, rc = python_failure(tmp_path, "import sys\nprint('FAIL: loss diverged at step 12 (loss=nan)')\nsys.exit(3)\n")
    assert rc == 3
    assert classify_failure(log, rc, False, False, None) == "nan_divergence"
    assert failure_summary(log, rc, False, False, None) == "nan_divergence: FAIL: loss diverged at step 12 (loss=nan)"
    assert classify_failure("", 3, False, False, None) == "nan_divergence"


def test_killed_by_a_signal(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('step 1', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "step 1\n"
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -9
    assert classify_failure("step 1\n" + out, proc.returncode, False, False, None) == "killed"
    assert failure_summary("step 1\n", None, False, False, 9) == "killed: killed by signal 9 (SIGKILL)"
    # the same exit with the runner's OOM flag (address-space cap / OOM killer) is an OOM
    assert classify_failure("step 1\n", -9, False, True, 9) == "oom"


def test_out_of_memory_from_the_traceback():
    log = (
        "step 00010 | loss 5.1\nTraceback (most recent call last):\n"
        '  File "/repo/train.py", line 210, in <module>\n    loss.backward()\n'
        '  File "/venv/lib/python3.11/site-packages/torch/_tensor.py", line 581, in backward\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    assert classify_failure(log, 1, False, False, None) == "oom"
    assert failure_summary(log, 1, False, False, None) == (
        "oom: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB at train.py:210"
    )
    memory_error = 'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\nMemoryError\n'
    assert classify_failure(memory_error, 1, False, False, None) == "oom"


def test_timeout_success_and_missing_summary():
    assert classify_failure("step 5\n", -15, True, False, 15) == "timeout"
    assert failure_summary("step 5 | loss 3.2\n", None, True, False, None) == (
        "timeout: ran past its time limit and was stopped; last line: step 5 | loss 3.2"
    )
    ok = "step 5\n---\nval_bpb: 1.1\n"
    assert classify_failure(ok, 0, False, False, None) is None
    assert failure_summary(ok, 0, False, False, None) is None
    assert classify_failure(ok, None, False, False, None) is None  # archived: exit code unknown
    assert classify_failure("step 5\nall done\n", 0, False, False, None) == "no_summary"
    assert classify_failure("", None, False, False, None) == "no_summary"
    # an exit 2 with a one-line message (data not prepared) has no traceback: still a failure
    assert failure_summary("data not prepared: run `python prepare.py`\n", 2, False, False, None) == (
        "exception: exit code 2; last line: data not prepared: run `python prepare.py`"
    )
    # an OOM the run caught (e.g. while probing batch sizes) and survived is not a failure
    survived = "torch.OutOfMemoryError: CUDA out of memory; retrying with batch 16\n" + ok
    assert classify_failure(survived, 0, False, False, None) is None
    # a traceback printed after the summary means the run crashed on the way out
    late = ok + 'Traceback (most recent call last):\n  File "train.py", line 9, in <module>\nRuntimeError: bye\n'
    assert classify_failure(late, None, False, False, None) == "exception"


# --- trajectory statistics ----------------------------------------------------------------
def test_decaying_run_is_still_improving(tmp_path):
    t = trajectory(curve_of(write_run(tmp_path / "r", steps=1000)))
    assert t.steps == 1000
    assert t.first_loss > 9 and t.min_loss < t.first_loss
    assert t.final_loss == pytest.approx(loss_at(999, 1.2), abs=0.05)
    # the noiseless curve's mean slope over the last 20% of the steps; 1000 steps take 30 s
    expected = (loss_at(999, 1.2) - loss_at(800, 1.2)) / 199 * 1000
    assert t.slope_per_1k_steps == pytest.approx(expected, rel=0.25)
    assert t.slope_per_minute == pytest.approx(t.slope_per_1k_steps * 2, rel=0.01)
    assert t.still_improving and not t.diverged and t.spike_steps == ()
    assert t.step_ms == pytest.approx(51.0, abs=0.3)
    assert t.tokens_per_sec == pytest.approx(8192 / 0.051, rel=0.01)
    assert t.mfu_percent == pytest.approx(25.0)
    assert t.tokens == pytest.approx(1000 * 8192, rel=1e-6)
    assert t.training_seconds == pytest.approx(30.0) and t.val_bpb == pytest.approx(0.96)


def test_flat_run_is_not_improving(tmp_path):
    t = trajectory(curve_of(write_run(tmp_path / "r", steps=800, loss_fn=lambda i, rng: 2.0 + rng.gauss(0, 0.05))))
    assert not t.still_improving and not t.diverged
    assert abs(t.slope_per_1k_steps) < 0.3  # one standard error is ~0.09 here


def test_spikes_are_found_at_their_steps(tmp_path):
    spikes = {300: 1.5, 301: 0.9, 700: 0.8, 1500: 2.0}

    def spiky(i, rng):
        return loss_at(i, 1.2) + rng.gauss(0, 0.05) + spikes.get(i, 0.0)

    t = trajectory(curve_of(write_run(tmp_path / "r", steps=2000, loss_fn=spiky)))
    assert t.spike_steps == (300.0, 700.0, 1500.0)  # 300-301 is one event
    clean = trajectory(curve_of(write_run(tmp_path / "c", steps=2000, seed=5)))
    assert clean.spike_steps == ()


def test_diverging_runs(tmp_path):
    def rising(i, rng):  # learns, then blows up
        return loss_at(i, 1.2) + rng.gauss(0, 0.05) + (0 if i < 400 else (i - 400) * 0.02)

    t = trajectory(curve_of(write_run(tmp_path / "up", steps=600, loss_fn=rising)))
    assert t.diverged and not t.still_improving

    def to_nan(i, rng):
        return loss_at(i, 1.2) if i < 250 else float("nan")

    t = trajectory(curve_of(write_run(tmp_path / "nan", steps=260, loss_fn=to_nan, summary=False)))
    assert t.diverged and t.nonfinite_losses == 10
    assert t.min_loss < loss_at(200, 1.2) and t.final_loss == t.min_loss  # last finite smoothed value


def test_find_spikes_needs_enough_points():
    assert find_spikes(np.array([1.0, 9.0, 1.0])) == []
    assert find_spikes(np.array([])) == []


# --- comparisons ----------------------------------------------------------------------------
def test_curves_part_where_one_falls_behind(tmp_path):
    base = write_run(tmp_path / "best", steps=1000, seed=1)

    def worse_after_half(i, rng):  # 1000 steps over 30 s: step 500 is second 15
        return loss_at(i, 1.2) + rng.gauss(0, 0.05) + (0.0 if i < 500 else 0.15)

    run = write_run(tmp_path / "run", steps=1000, seed=2, loss_fn=worse_after_half)
    axis, x, ahead = parting_point(curve_of(run), curve_of(base))
    assert axis == "seconds" and ahead == "other"
    assert x == pytest.approx(15.0, abs=1.0)


def test_curves_aligned_on_time_not_steps(tmp_path):
    # twice as many steps in the same budget, the same loss at the same training second: no parting
    def by_time(steps):
        return lambda i, rng: 1.2 + 9.0 * math.exp(-(i + 1) / steps * 30 / 5) + rng.gauss(0, 0.03)

    slow = write_run(tmp_path / "slow", steps=500, step_ms=60, loss_fn=by_time(500))
    fast = write_run(tmp_path / "fast", steps=1000, step_ms=30, seed=3, loss_fn=by_time(1000))
    assert parting_point(curve_of(fast), curve_of(slow)) == ("seconds", None, None)
    # on steps they would look very different: the fast run's step 500 is at second 15
    assert trajectory(curve_of(fast)).tokens_per_sec / trajectory(curve_of(slow)).tokens_per_sec == pytest.approx(2, rel=0.05)


def test_config_and_code_diff(tmp_path):
    best = write_run(tmp_path / "best", config={"LR": 0.01, "DEPTH": 4, "WARMUP": 10})
    run = write_run(tmp_path / "run", config={"LR": 0.02, "DEPTH": 4, "HEADS": 8})
    changes = config_diff({"LR": 0.01, "DEPTH": 4, "WARMUP": 10}, {"LR": 0.02, "DEPTH": 4, "HEADS": 8})
    assert [(c.knob, c.best, c.this) for c in changes] == [("LR", 0.01, 0.02), ("WARMUP", 10, None), ("HEADS", None, 8)]
    diff = code_diff(best / "train.py", run / "train.py")
    assert "-LR = 0.01\n+LR = 0.02\n" in diff and diff.startswith("--- best/train.py\n+++ this/train.py\n")
    assert code_diff(best / "train.py", best / "train.py") == ""
    assert code_diff(best / "missing.py", run / "train.py") is None


# --- the whole analysis ---------------------------------------------------------------------
def test_analyze_run_writes_markdown_json_and_plots(tmp_path):
    best = write_run(tmp_path / "aaaa111", steps=800, seed=1, config={"LR": 0.01, "DEPTH": 4})
    prev = write_run(tmp_path / "bbbb222", steps=800, seed=2, floor=1.4, step_ms=60)
    run = write_run(tmp_path / "cccc333", steps=800, seed=3, floor=1.1, step_ms=45, config={"LR": 0.02, "DEPTH": 4})
    a = analyze_run(run, best_dir=best, prev_dir=prev, status="keep", value=0.88)
    assert a.value == pytest.approx(0.88) and a.failure is None and a.problems == ()
    assert a.vs_best.other == "aaaa111" and a.vs_best.value_delta == pytest.approx(0.88 - 0.96)
    assert a.vs_best.tokens_per_sec_ratio == pytest.approx(50 / 45, rel=0.02)
    assert a.vs_best.ahead == "this" and a.vs_prev.ahead == "this"
    assert [(c.knob, c.best, c.this) for c in a.config_changes] == [("LR", 0.01, 0.02)]

    md = (run / "analysis.md").read_text()
    order = ["## Result", "## Trajectory", "## Throughput", "## vs best", "## vs previous", "## Config diff", "## Agent notes"]
    assert [md.index(h) for h in order] == sorted(md.index(h) for h in order)
    assert "## Failure" not in md
    assert "val_bpb: **0.8800**" in md and "status: keep" in md and "| LR | 0.01 | 0.02 |" in md
    assert "+LR = 0.02" in md and "peak memory: 812.5 MB" in md

    data = json.loads((run / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["vs_prev"]["other"] == "bbbb222" and data["trajectory"]["steps"] == 800
    assert set(a.plots) == {"loss.png", "schedule.png", "perf.png"}
    for name in a.plots:
        assert_png(run / name)


def test_agent_notes_survive_regeneration(tmp_path):
    run = write_run(tmp_path / "r")
    analyze_run(run, plots=False)
    md = (run / "analysis.md").read_text()
    (run / "analysis.md").write_text(md.split("## Agent notes")[0] + "## Agent notes\n\nLR 0.02 spikes at step 300.\n\n### more\n- x\n")
    analyze_run(run, status="discard", plots=False)
    md = (run / "analysis.md").read_text()
    assert md.count("## Agent notes") == 1 and "status: discard" in md
    assert md.endswith("## Agent notes\n\nLR 0.02 spikes at step 300.\n\n### more\n- x\n")


def test_crashed_run_with_only_a_log(tmp_path):
    run = tmp_path / "dead123"
    log, rc = python_failure(tmp_path, "print('step 1')\nraise RuntimeError('mat1 and mat2 shapes cannot be multiplied')\n")
    run.mkdir()
    (run / "run.log").write_text(log)
    a = analyze_run(run, best_dir=write_run(tmp_path / "best"), status="crash")
    assert a.failure == "exception: RuntimeError: mat1 and mat2 shapes cannot be multiplied at train.py:2"
    assert a.value is None and a.plots == () and a.trajectory.steps == 0
    assert "no metrics.jsonl" in a.problems
    md = (run / "analysis.md").read_text()
    failure = md[md.index("## Failure") : md.index("## Agent notes")]
    assert a.failure in failure and "raise RuntimeError" in failure  # the archived log tail
    assert "No training steps were recorded." in md
    assert "curves part at: n/a (the two runs share no stretch of loss curve)" in md
    assert "Knobs: not compared" in md and "train.py: no snapshot of both runs to compare." in md


def test_corrupt_and_empty_files_never_raise(tmp_path):
    run = tmp_path / "junk"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(os.urandom(3000))
    (run / "run_summary.json").write_text('{"config": [1, 2')
    (run / "run.log").write_text("")
    other = tmp_path / "empty"
    other.mkdir()
    (other / "metrics.jsonl").write_text("")
    (other / "run_summary.json").write_text("[]")
    a = analyze_run(run, best_dir=other, prev_dir=tmp_path / "does-not-exist")
    assert a.failure.startswith("no_summary") and a.value is None
    assert "metrics.jsonl has no readable training steps" in a.problems
    assert "run_summary.json is not a readable JSON object" in a.problems
    assert a.vs_best.parted_at is None and a.vs_best.axis == "none" and a.config_changes is None
    assert "## Failure" in (run / "analysis.md").read_text()
    json.loads((run / "analysis.json").read_text())


def test_the_harness_verdict_wins_over_the_log(tmp_path):
    run = write_run(tmp_path / "r", steps=100)  # its run.log claims val_bpb 0.96
    a = analyze_run(run, status="violation", failure="untrusted metric: no valid receipt", plots=False)
    assert a.value is None and a.failure == "untrusted metric: no valid receipt"
    assert "val_bpb: **n/a**" in (run / "analysis.md").read_text()


def test_nan_values_become_null_in_json(tmp_path):
    run = write_run(tmp_path / "nan", steps=100, loss_fn=lambda i, rng: float("nan") if i > 50 else 5.0, summary=False)
    a = analyze_run(run, status="crash", failure="nan_divergence: FAIL: loss diverged", plots=False)
    assert a.trajectory.diverged and a.failure.startswith("nan_divergence")
    json.loads((run / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


# --- plots ----------------------------------------------------------------------------------
def test_plot_run_without_steps_draws_nothing(tmp_path):
    (tmp_path / "r").mkdir()
    assert plot_run(tmp_path / "r") == []


def test_progress_plot(tmp_path):
    rows = [
        {"commit": "a1", "experiment": "0", "value": 1.30, "status": "baseline", "description": "baseline"},
        {"commit": "b2", "experiment": "1", "value": 1.31, "status": "discard", "description": "wider MLP"},
        {"commit": "c3", "experiment": "2", "value": 0.0, "status": "crash", "description": "flash attention"},
        {"commit": "d4", "experiment": "3", "value": 1.25, "status": "keep", "description": "LR 0.02 with a much longer warm-up period"},
        {"commit": "-", "experiment": "4", "value": None, "status": "no_change", "description": ""},
        {"commit": "e5", "experiment": "5", "value": None, "status": "crash", "description": "oom"},
        {"commit": "f6", "experiment": "6", "value": 1.22, "status": "keep", "description": "depth 6"},
    ]
    out = plot_progress(rows, tmp_path / "progress.png", metric="val_bpb", direction="min", noise_margin=0.01)
    assert_png(out)
    assert_png(plot_progress([], tmp_path / "empty.png", metric="acc", direction="max", noise_margin=None))
    # rows straight from results.tsv: strings, the metric's own column name
    ledger = [{"commit": "a1", "acc": "0.81", "status": "baseline", "experiment": "0", "description": "b"},
              {"commit": "b2", "acc": "0.000000", "status": "crash", "experiment": "1", "description": "x"},
              {"commit": "c3", "acc": "0.84", "status": "keep", "experiment": "2", "description": "y"}]
    assert_png(plot_progress(ledger, tmp_path / "ledger.png", metric="acc", direction="max", noise_margin=0.005))


# --- analyze.py, the fixed CLI --------------------------------------------------------------
LEDGER_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\texperiment\tfailure\n"


def make_archive(repo: Path) -> Path:
    archive = repo / ".auto-log-research"
    write_run(archive / "aaaa111", seed=1, floor=1.3)
    write_run(archive / "bbbb222", seed=2, floor=1.2)
    write_run(archive / "cccc333", seed=3, floor=1.25)
    dead = archive / "dddd444"
    dead.mkdir()
    (dead / "run.log").write_text('Traceback (most recent call last):\n  File "train.py", line 7, in <module>\nKeyError: \'x\'\n')
    (archive / "results.tsv").write_text(
        LEDGER_HEADER
        + "aaaa111\t1.040000\t0.8\tbaseline\tbaseline\t0\t\n"
        + "bbbb222\t0.960000\t0.8\tkeep\tLR 0.02\t1\t\n"
        + "cccc333\t1.000000\t0.8\tdiscard\tdepth 6\t2\t\n"
        + "dddd444\t0.000000\t0.0\tcrash\tbad idea\t3\texception: KeyError: 'x' at train.py:7\n"
    )
    for i, name in enumerate(["aaaa111", "bbbb222", "cccc333", "dddd444"]):  # run files written in this order
        for f in (archive / name).iterdir():
            os.utime(f, (time.time() - 100 + i, time.time() - 100 + i))
    return archive


def run_analyze(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "analyze.py"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_analyze_cli_defaults_to_latest_attempt_vs_best(tmp_path):
    archive = make_archive(tmp_path)
    proc = run_analyze(tmp_path, "--json", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run"] == "dddd444" and data["status"] == "crash"
    assert data["failure"] == "exception: KeyError: 'x' at train.py:7"
    assert data["vs_best"]["other"] == "bbbb222" and data["vs_prev"]["other"] == "cccc333"
    assert (archive / "dddd444" / "analysis.md").is_file()

    # an older attempt by name, markdown on stdout, with plots; its best is the best before it
    proc = run_analyze(tmp_path, str(archive / "cccc333"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# Analysis of run cccc333") and "status: discard" in proc.stdout
    assert "- run: bbbb222 · its val_bpb: 0.9600 · delta: +0.0400" in proc.stdout
    assert_png(archive / "cccc333" / "loss.png")
    # re-analysing it did not make it the "latest" attempt
    assert json.loads(run_analyze(tmp_path, "--json", "--no-plots").stdout)["run"] == "dddd444"


def test_analyze_cli_reads_a_damaged_ledger(tmp_path):
    """results.tsv is read by harness.ledger: corrupt lines and a torn tail are skipped."""
    archive = make_archive(tmp_path)
    ledger = archive / "results.tsv"
    lines = ledger.read_text().splitlines(keepends=True)
    lines.insert(2, "not a ledger row\n")
    lines.insert(3, "eeee555\tnot-a-number\t0.8\tkeep\tjunk\t2\t\n")
    ledger.write_text("".join(lines) + "ffff666\t0.5")  # a write cut short
    proc = run_analyze(tmp_path, "--json", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run"] == "dddd444" and data["status"] == "crash" and data["value"] is None
    assert data["vs_best"]["other"] == "bbbb222" and data["vs_prev"]["other"] == "cccc333"


def test_analyze_cli_explicit_dirs_and_errors(tmp_path):
    a = write_run(tmp_path / "x" / "one", seed=1)
    b = write_run(tmp_path / "x" / "two", seed=2, floor=1.5)
    proc = run_analyze(tmp_path, str(b), "--best", str(a), "--prev", str(a), "--json", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["vs_best"]["other"] == "one" and data["vs_best"]["ahead"] == "other"
    assert data["status"] is None and data["value"] == pytest.approx(1.2)

    proc = run_analyze(tmp_path)  # no archive at all
    assert proc.returncode == 2 and "no attempt folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_analyze(tmp_path, str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_fuzzed_run_data_never_raises(tmp_path):
    """Records of every shape train.py could write by mistake: the analysis still completes."""
    rng = random.Random(7)
    junk = [None, True, "nan", "1.5", "abc", [], {}, -1e308, 1e308, float("inf"), float("-inf"), float("nan"), 0, -3]
    keys = ["step", "train/loss", "train/loss_smooth", "train/progress", "time/training_seconds",
            "perf/step_time_ms", "perf/tokens_per_sec", "perf/mfu_percent", "train/lr_multiplier", "val/bpb"]

    def fuzz_run(path: Path, n: int) -> Path:
        path.mkdir()
        lines = [json.dumps({k: rng.choice(junk + [rng.uniform(-5, 20)]) for k in keys if rng.random() < 0.8})
                 for _ in range(n)]
        (path / "metrics.jsonl").write_text("\n".join(lines))
        (path / "run_summary.json").write_text(json.dumps({"config": rng.choice([None, [], {"LR": []}, "x"])}))
        (path / "run.log").write_text(rng.choice(["", "---\n", "---\nval_bpb: nan\n", "Traceback (most recent call last):\n"]))
        return path

    for i in range(12):
        run = fuzz_run(tmp_path / f"run{i}", rng.choice([0, 1, 3, 30, 300]))
        best = fuzz_run(tmp_path / f"best{i}", rng.choice([0, 2, 40, 300]))
        a = analyze_run(run, best_dir=best, prev_dir=best, plots=i < 3)
        assert (run / "analysis.md").is_file()
        json.loads((run / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
        assert not [p for p in a.problems if "failed" in p], a.problems
