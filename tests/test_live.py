"""The loop's views: plain lines for logs and pipes, the rich.live panel for terminals."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from harness.events import Event
from harness.ledger import Row
from harness.live import LiveReporter, MetricsTail, PlainReporter, make_reporter


def keep_row(n: int = 7) -> Row:
    return Row(commit="a1b2c3d4e5f6", value=1.8234, memory_gb=1.0, status="keep",
               description="MATRIX_LR 0.04 -> 0.05", experiment=n, delta=-0.0123, margin=0.004)


def crash_row(n: int = 8) -> Row:
    return Row(commit="b2c3d4e5f6a7", value=None, memory_gb=0.0, status="crash", description="DEPTH 8\nwith tabs",
               experiment=n, failure="oom: CUDA out of memory")


def start_event(**extra: object) -> Event:
    return Event("loop_start", {"branch": "autoresearch/t", "best_value": 1.8357, "best_commit": "f00ba47deadbeef",
                                "margin": 0.004, "metric": "val_bpb", "direction": "min", "budget": 10,
                                "agent": "offline", "workers": 1, **extra})


def write_metrics(path: Path, steps: range, budget_s: float = 10.0, partial: bool = False) -> None:
    with open(path, "a") as f:
        for s in steps:
            f.write(json.dumps({"step": s, "train/loss": 3.0 - s / 100, "train/loss_smooth": 3.0 - s / 100,
                                "perf/tokens_per_sec": 12000.0, "time/training_seconds": s / 10,
                                "train/progress": s / 10 / budget_s}) + "\n")
        if partial:
            f.write('{"step": 999, "train/lo')  # a write in progress


def test_plain_reporter_writes_one_line_per_event_that_matters() -> None:
    out = io.StringIO()
    r = PlainReporter(out)
    r(start_event())
    r(Event("experiment", {"experiment": 7, "worker": 0}))
    r(Event("phase", {"experiment": 7, "phase": "training", "worker": 0}))
    r(Event("run_line", {"experiment": 7, "line": "step 10", "worker": 0}))
    r(Event("result", {"experiment": 7, "row": keep_row(), "best_value": 1.8234, "margin": 0.004, "kept": True}))
    r(Event("result", {"experiment": 8, "row": crash_row(), "best_value": 1.8234, "margin": 0.004, "kept": False,
                       "worker": 2}))
    r(Event("message", {"text": "disk almost full", "level": "warn"}))
    r(Event("loop_stop", {"reason": "STOP file", "experiments": 2, "kept": 1, "best_value": 1.8234,
                          "best_commit": "a1b2c3d4e5f6"}))
    lines = out.getvalue().splitlines()
    assert lines == [
        "loop: autoresearch/t  best val_bpb 1.835700 (f00ba47) (lower is better)  margin 0.0040  budget 10s  agent offline",
        "#007 started",
        "#007 a1b2c3d keep     val_bpb 1.823400  Δ -0.0123 (margin 0.0040)  MATRIX_LR 0.04 -> 0.05",
        "#008 b2c3d4e crash    val_bpb -  DEPTH 8 with tabs  [oom: CUDA out of memory]  (worker 2)",
        "warn: disk almost full",
        "stopped: STOP file. 2 experiments, 1 kept; best val_bpb 1.823400 (a1b2c3d)",
    ]


def test_plain_reporter_uses_the_target_metric_and_ascii_when_the_stream_needs_it() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    r = PlainReporter(out)
    r(start_event(metric="seconds"))
    r(Event("result", {"row": keep_row(), "kept": True}))
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert "#007 a1b2c3d keep     seconds 1.823400  d -0.0123 (margin 0.0040)" in text


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("EPIPE")


def test_reporters_never_raise_into_the_loop() -> None:
    PlainReporter(BrokenStream())(Event("result", {"row": keep_row()}))
    PlainReporter(io.StringIO())(Event("result", {"no row": 1}))  # malformed event
    live = LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    live(start_event())
    live(Event("result", {"row": None, "kept": True}))  # breaks the live view...
    assert live.broken
    live(Event("result", {"row": keep_row(), "kept": True}))  # ...which degrades to plain lines
    live.close()
    assert "#007 a1b2c3d keep" in live.console.file.getvalue()


def render_text(reporter: LiveReporter) -> str:
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(reporter.render())
    return console.export_text()


def test_live_reporter_shows_phase_budget_progress_loss_and_results(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    stream = io.StringIO()
    live = LiveReporter(Console(file=stream, force_terminal=True, width=160), refresh_per_second=20)
    try:
        live(start_event())
        live(Event("experiment", {"experiment": 9, "worker": 0}))
        live(Event("phase", {"experiment": 9, "phase": "agent", "worker": 0}))
        assert "#009 agent" in render_text(live)
        live(Event("phase", {"experiment": 9, "phase": "training", "worker": 0, "metrics_path": str(metrics),
                             "budget": 10}))
        text = render_text(live)
        assert "training" in text and "0%" in text  # no metrics yet: an empty bar, no crash
        write_metrics(metrics, range(0, 51), partial=True)
        text = render_text(live)
        assert "50%" in text and "5/10s" in text and "loss 2.5000" in text and "12,000 tok/s" in text
        assert "best 1.835700 f00ba47" in text and "±0.0040" in text
        write_metrics(metrics, range(51, 81))
        assert "80%" in render_text(live) and "loss 2.2000" in render_text(live)
        live(Event("result", {"experiment": 9, "row": keep_row(9), "best_value": 1.8234, "margin": 0.004,
                              "kept": True, "worker": 0}))
        text = render_text(live)
        assert "best 1.823400 a1b2c3d" in text and "#009 a1b2c3d keep" in text and "training" not in text
    finally:
        live(Event("loop_stop", {"reason": "done", "experiments": 1, "best_value": 1.8234,
                                 "best_commit": "a1b2c3d4e5f6"}))
    out = stream.getvalue()
    assert "#009 a1b2c3d keep" in out and "stopped: done" in out  # results stay in the scrollback
    assert not live.broken


def test_live_reporter_shows_one_row_per_worker(tmp_path: Path) -> None:
    live = LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=160))
    live(start_event(workers=2))
    for worker, n in ((1, 3), (2, 4)):
        live(Event("experiment", {"experiment": n, "worker": worker}))
    live(Event("phase", {"experiment": 4, "phase": "analysis", "worker": 2}))
    text = render_text(live)
    live.close()
    assert "w1 #003 starting" in text and "w2 #004 analysis" in text


def test_metrics_tail_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == {}
    write_metrics(path, range(3), partial=True)
    assert tail.read()["step"] == 2
    with open(path, "a") as f:
        f.write('ss": 1.0}\n{"step": 1000, "val/bpb": 1.8}\n')  # the eval line has no loss: keep the last loss
    assert tail.read()["step"] == 999


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_reporter_picks_plain_for_pipes_and_quiet() -> None:
    assert isinstance(make_reporter(False, io.StringIO()), PlainReporter)
    assert isinstance(make_reporter(True, FakeTTY()), PlainReporter)
    assert isinstance(make_reporter(False, FakeTTY()), LiveReporter)


def test_live_reporter_does_not_deadlock_with_its_refresh_thread(tmp_path: Path) -> None:
    """Events arrive while rich redraws many times a second: both sides take locks."""
    import threading

    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, range(50))
    live = LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=160), refresh_per_second=100)

    def feed() -> None:
        live(start_event())
        for n in range(200):
            live(Event("phase", {"experiment": n, "phase": "training", "metrics_path": str(metrics), "budget": 10}))
            live(Event("result", {"row": keep_row(n), "best_value": 1.8, "margin": 0.004, "kept": True}))
        live(Event("loop_stop", {"reason": "done", "experiments": 200}))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the live reporter deadlocked"
    assert not live.broken


def test_live_reporter_shows_the_deciding_phase_with_the_verdict() -> None:
    live = LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=160))
    live(start_event())
    live(Event("experiment", {"experiment": 9, "worker": 0}))
    live(Event("phase", {"experiment": 9, "phase": "deciding", "worker": 0, "value": 1.8234, "status": "keep"}))
    text = render_text(live)
    live(Event("phase", {"experiment": 9, "phase": "deciding", "worker": 0, "value": None, "status": "crash"}))
    crashed = render_text(live)
    live.close()
    assert "#009 deciding" in text and "val_bpb 1.823400 vs best 1.835700 -> keep" in text
    assert "val_bpb - vs best 1.835700 -> crash" in crashed
    assert not live.broken


class RecordingReporter:
    """Stands in for the terminal view: keeps every event the loop sends."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


def test_harness_loop_sends_each_phase_and_redraws_progress_png_after_every_experiment(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The real loop through the CLI on the toy target: the agent of experiment k records the
    progress.png it finds, so each experiment's plot is seen before the next one starts."""
    from click.testing import CliRunner
    from support.research import make_toy_repo, scripted_agent, set_toy

    from harness import live
    from harness.cli import cli

    repo = make_toy_repo(tmp_path / "repo")
    png = repo / ".auto-log-research" / "progress.png"
    seen = tmp_path / "seen.txt"
    record = f"sha256sum {png} | cut -c1-64 >> {seen}\n"
    agent = scripted_agent(tmp_path / "agent", [record + set_toy(X=2.0), record + set_toy(X=2.5),
                                                record + set_toy(CRASH=1)])
    reporter = RecordingReporter()
    monkeypatch.setattr(live, "make_reporter", lambda quiet=False, stream=None: reporter)
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "--tag", "t", "-q", "--repo", str(repo)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert png.is_file()  # drawn for the baseline
    result = runner.invoke(cli, ["loop", "--agent-command", agent, "--max-experiments", "3", "-q", "--repo", str(repo)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    hashes = seen.read_text().split()
    hashes.append(hashlib.sha256(png.read_bytes()).hexdigest())
    assert len(hashes) == 4 and len(set(hashes)) == 4, hashes  # baseline, then after each of 3 experiments
    assert png.read_bytes().startswith(b"\x89PNG")
    phases = [(e.data["experiment"], e.data["phase"]) for e in reporter.events if e.kind == "phase"]
    for n in (1, 2):
        mine = [ph for x, ph in phases if x == n]
        assert mine.index("training") < mine.index("analysis") < mine.index("deciding"), mine
    deciding = [e.data for e in reporter.events if e.kind == "phase" and e.data["phase"] == "deciding"]
    assert [(d["experiment"], d["status"]) for d in deciding] == [(1, "keep"), (2, "discard"), (3, "crash")]
    assert deciding[0]["value"] == pytest.approx(2.00025) and deciding[2]["value"] is None
