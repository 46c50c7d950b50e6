"""The research state the harness owns, and the steps of one experiment after the agent:
run (and confirm), analyze, decide, record, reset.

One Lab per repository and process. Everything it knows on start comes from git and the
archive (results.tsv, refs, the lock), which is what makes resuming after a kill -9 possible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness import analysis, atomic, integrity, run_files, runcheck, runner
from harness.agents.base import Usage
from harness.config import Config
from harness.decide import NoiseFloor, judge, mean, noise_floor
from harness.errors import FatalError, UsageError
from harness.events import Event, Reporter, null_reporter
from harness.executors import run_device
from harness.ledger import Ledger, Row
from harness.lock import Lock
from harness.metric import read_metric
from harness.notes import Notes
from harness.repo import Repo, attempt_ref
from harness.shield import Shield

SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)  # run i of a commit uses SEEDS[i]: candidate and best share seeds


@dataclass(frozen=True)
class Attempt:
    """An attempt that has been committed and waits to be run."""

    experiment: int
    commit: str
    parent: str
    description: str
    agent: str = "-"
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.time)
    idea: str | None = None  # the ideas_queue.md line it tests, if any


@dataclass(frozen=True)
class RunResult:
    value: float | None
    seed: int
    run_dir: Path
    outcome: runner.RunOutcome
    summary: dict
    failure: str | None  # one line, e.g. "exception: ValueError ... at train.py:12"
    untrusted: bool = False  # a value was printed but not by the fixed evaluation

    @property
    def memory_gb(self) -> float:
        mb = self.summary.get("peak_memory_mb")
        return float(mb) / 1024 if isinstance(mb, float) else 0.0

    @property
    def train_s(self) -> float:
        s = self.summary.get("training_seconds")
        return float(s) if isinstance(s, float) else self.outcome.wall_seconds


class LocalRunner:
    """Runs a RunSpec here, in a sandboxed subprocess (harness/runner.py)."""

    def run(self, spec: runner.RunSpec, *, on_line=None, stop_event=None) -> runner.RunOutcome:
        return runner.run(spec, on_line=on_line, stop_event=stop_event)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_path() -> str:
    """The PATH runs get: `python` in a run command means the harness's own interpreter (its venv)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


class Lab:
    def __init__(self, cfg: Config, repo: Repo, reporter: Reporter = null_reporter):
        self.cfg = cfg
        self.repo = repo
        self.reporter = reporter
        self.archive = cfg.archive_dir
        self.ledger = Ledger(self.archive / "results.tsv", cfg.target.metric)
        self.notes = Notes(self.archive)
        self.exclude = (cfg.archive_dir_name,)
        self.lock = Lock(self.archive / "lock")
        self.shield = Shield(self.archive, repo.git_dir / "auto-log-research" / "shield")
        self.stop_event = threading.Event()
        self.executor = LocalRunner()  # how runs are executed: see harness/executors
        self.manifest: integrity.Manifest | None = None
        self.receipt_expect: dict | None = None  # set by prepared_files(): the dataset and eval tokens
        self._rows: list[Row] | None = None
        self._rows_lock = threading.Lock()  # workers read rows() while the owner records (parallel.py)

    # -- state ------------------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        with self._rows_lock:  # a read that raced a record() must not cache the ledger without its row
            if self._rows is None:
                self._rows = self.ledger.rows()
            return self._rows

    def best(self) -> Row | None:
        return next((r for r in reversed(self.rows()) if r.kept), None)

    def noise(self) -> NoiseFloor:
        return noise_floor(self.rows(), self.cfg.noise)

    def emit(self, kind: str, **data) -> None:
        try:
            self.reporter(Event(kind, data))
        except Exception:  # a broken view must never stop the research
            pass

    @property
    def meta_path(self) -> Path:
        return self.archive / "meta.json"

    def read_meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}

    # -- checks -------------------------------------------------------------------------------------

    def check_target_files(self) -> None:
        t = self.cfg.target
        for name in (*t.editable, *(t.immutable or ())):
            if not (self.repo.root / name).is_file():
                what = "editable" if name in t.editable else "immutable"
                raise UsageError(f"{name} ({what} in the target) is missing in {self.repo.root}: "
                                 "fix the target's file list in the config, or restore the file")
        if not t.is_default:
            problem = runcheck.check_command(t.run_command or "", self.repo.root, run_path())
            if problem:
                raise UsageError(f"{problem}: fix `run_command` in the config")

    def prepared_files(self) -> list[Path]:
        """The data/tokenizer cache files prepare.py made (checked for tampering), or a clear error."""
        if not self.cfg.target.is_default:
            return []
        code = ("import json, sys, prepare\n"
                "ok = prepare.is_prepared()\n"
                "c = prepare.dataset_config(prepare.DATASET)\n"
                "print(json.dumps({'dataset': prepare.DATASET, 'tokens': c.eval_tokens // c.max_seq_len * c.max_seq_len})"
                " if ok else 'null')\n"
                "print(json.dumps([str(p) for p in prepare.prepared_files()] if ok else None))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=self.repo.root, capture_output=True, text=True,
                              env=runner.scrubbed_env(os.environ) | {"PYTHONPATH": str(self.repo.root)})
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FatalError(f"prepare.py could not be checked: {tail[0]}", hint="run `python prepare.py`")
        *_, expected, files = [json.loads(line) for line in proc.stdout.strip().splitlines()[-2:]]
        self.receipt_expect = expected  # what a receipt of this evaluation must say (dataset, tokens)
        if files is None:
            raise UsageError("the data is not prepared", hint="run `python prepare.py` first (once)")
        return [Path(p) for p in files]

    def capture_manifest(self) -> None:
        """Hash the fixed files and the data cache before runs. The first capture (at `harness
        init`) is kept in the archive: what the baseline was measured with. A later start whose
        evaluation files or data differ from it is refused, so a change made while no harness was
        running (or by a run that was then killed) cannot become the trusted state."""
        t = self.cfg.target
        paths = [*t.immutable, "harness"] if (self.repo.root / "harness").is_dir() else list(t.immutable)
        fresh = integrity.Manifest.capture(self.repo.root, paths, self.prepared_files())
        saved_path = self.archive / integrity.MANIFEST_NAME
        if saved_path.exists():
            integrity.check_same_evaluation(integrity.Manifest.load(saved_path), fresh, t.immutable,
                                            self.cfg.archive_dir_name)
        else:
            fresh.save(saved_path)
        self.manifest = fresh

    # -- running -------------------------------------------------------------------------------------

    def run_once(self, experiment: int, run_dir: Path, seed: int, *, budget: float | None = None,
                 workdir: Path | None = None, worker: int = 0, env: dict[str, str] | None = None) -> RunResult:
        """Train the tree in `workdir` (default: the repository) once, into run_dir, through
        self.executor, and read a trusted value."""
        cfg, t = self.cfg, self.cfg.target
        workdir = workdir or self.repo.root
        budget = budget or t.budget
        self._clear_run_outputs(run_dir)
        if self.manifest and self._enforce_integrity(workdir, before=True):
            return self._refused_run(run_dir, seed, "violation: files the evaluation depends on were changed "
                                                    "before the run (restored; not run)")
        receipt_env, key = integrity.new_receipt_env(run_dir)
        env = {"ALR_TIME_BUDGET": f"{budget:g}", "ALR_RUN_DIR": str(run_dir), "ALR_SEED": str(seed),
               "HARNESS_EXPERIMENT": str(experiment), **receipt_env, "PATH": run_path(), **(env or {})}
        spec = runner.RunSpec(
            argv=[sys.executable, t.editable[0]] if t.is_default else None,
            shell_command=None if t.is_default else t.run_command,
            cwd=workdir, out_dir=run_dir, env=env,
            wall_limit_s=budget + cfg.limits.grace_s, memory_mb=cfg.limits.memory_mb,
            output_cap_bytes=int(cfg.limits.output_cap_mb * 2**20), network=cfg.limits.network,
            home=self.archive / "run-home",
        )
        self.emit("phase", experiment=experiment, phase="training", metrics_path=str(run_dir / "metrics.jsonl"),
                  budget=budget, seed=seed, worker=worker)
        started = time.time()  # a metric file older than this is a previous run's
        outcome = self.executor.run(
            spec, on_line=lambda line: self.emit("run_line", experiment=experiment, line=line, worker=worker),
            stop_event=self.stop_event)
        atomic.write_text(run_dir / "outcome.json", json.dumps({
            "returncode": outcome.returncode, "signal": outcome.signal, "timed_out": outcome.timed_out,
            "oom": outcome.oom, "interrupted": outcome.interrupted, "wall_seconds": round(outcome.wall_seconds, 3),
            "log_truncated": outcome.log_truncated, "network_isolated": outcome.network_isolated, "seed": seed,
            **run_device(self.executor, worker)}),  # worker, device, GPUs: what GPU-hours are summed from
            fsync=False)
        log = outcome.log_path.read_text(encoding="utf-8", errors="replace") if outcome.log_path.exists() else ""
        reading = read_metric(t, log, workdir, since=started)
        value, untrusted, failure = reading.value, False, None
        if self.manifest and self._enforce_integrity(workdir, before=False):
            value, untrusted, failure = None, True, "violation: the run changed files the evaluation depends on (restored)"
        elif value is not None and t.is_default:
            verdict = integrity.check_metric(value, Path(receipt_env["ALR_EVAL_RECEIPT"]), key,
                                             expect=self.receipt_expect)
            if not verdict.trusted:
                value, untrusted, failure = None, True, f"untrusted metric: {verdict.reason}"
        # pytest exits 1 when some tests fail: for the pass-rate reader that is a result, not a crash
        finished = outcome.ok or (t.reader == "pytest" and outcome.returncode == 1)
        if not finished:
            value = None
            failure = failure or analysis.failure_summary(
                log[-20000:], outcome.returncode, outcome.timed_out, outcome.oom, outcome.signal)
        if failure is None and value is None:
            failure = f"no_metric: {reading.error}"
        return RunResult(value, seed, run_dir, outcome, reading.summary, failure, untrusted)

    @staticmethod
    def _refused_run(run_dir: Path, seed: int, failure: str) -> RunResult:
        log = run_dir / runner.LOG_NAME
        atomic.write_text(log, failure + "\n", fsync=False)
        outcome = runner.RunOutcome(None, None, False, False, False, 0.0, log, False, False)
        return RunResult(None, seed, run_dir, outcome, {}, failure, untrusted=True)

    def _clear_run_outputs(self, run_dir: Path) -> None:
        """Empty run_dir of an earlier (interrupted) run's outputs; keep the attempt's own files."""
        keep = {"diff.patch", "prompt.md", *(Path(n).name for n in self.cfg.target.editable)}
        if run_dir.exists():
            for item in run_dir.iterdir():
                if item.name in keep:
                    continue
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)

    def _enforce_integrity(self, workdir: Path, *, before: bool) -> bool:
        """Restore any change to the fixed files. Cache changes are fatal. True if anything changed."""
        assert self.manifest is not None
        violations = integrity.verify(self.manifest, workdir)
        if not violations:
            return False
        result = integrity.restore(violations, workdir, manifest=self.manifest)
        result.raise_if_fatal()
        where = "before the run" if before else "during the run"
        self.emit("message", text=f"restored fixed files changed {where}: {', '.join(map(str, violations))}",
                  level="warn")
        return True

    # -- one experiment after the agent ----------------------------------------------------------------

    def evaluate(self, att: Attempt) -> Row:
        """Run an attempt (and its confirmation), decide, record, reset. Returns the ledger row."""
        best = self.best()
        if best is None or best.value is None:
            raise UsageError("no baseline recorded", hint="run `harness init` first")
        noise = self.noise()
        run_dir = self.archive / att.commit
        self.lock.update(phase="training", experiment=att.experiment, base=att.parent, commit=att.commit)
        first = self.run_once(att.experiment, run_dir, SEEDS[0])
        results = [first]
        verdict = judge(first.value, best.value, noise.margin, self.cfg.target, final=not self.cfg.noise.confirm)
        if verdict.status == "candidate":
            self.lock.update(phase="confirm")
            self.emit("phase", experiment=att.experiment, phase="confirm", worker=0)
            second = self.run_once(att.experiment, run_dir / f"seed{SEEDS[1]}", SEEDS[1])
            results.append(second)
            if second.value is None:
                verdict = judge(None, best.value, noise.margin, self.cfg.target, final=True)
            else:
                verdict = judge(mean([first.value, second.value]), best.value, noise.margin, self.cfg.target, final=True)
        values = tuple(r.value for r in results if r.value is not None)
        status = verdict.status
        failure = next((r.failure for r in results if r.failure), "")
        if status == "crash" and any(r.untrusted for r in results):
            status = "violation"
        if status == "crash" and len(results) > 1 and first.value is not None:
            status, failure = "discard", f"confirmation run failed: {failure}"
        value = mean(values) if values else None
        self.emit("phase", experiment=att.experiment, phase="analysis", worker=0)
        self.lock.update(phase="analysis")
        self._analyze(first, best, value, status, failure)
        self.emit("phase", experiment=att.experiment, phase="deciding", worker=0, value=value, status=status)
        row = Row(
            commit=att.commit, value=value, memory_gb=first.memory_gb, status=status,
            description=att.description, experiment=att.experiment, parent=att.parent, runs=values,
            delta=None if value is None else value - best.value, margin=noise.margin, best_before=best.value,
            train_s=sum(r.train_s for r in results), wall_s=time.time() - att.started, agent=att.agent,
            tokens=att.usage.tokens, cost_usd=att.usage.cost_usd, failure=failure or "", timestamp=now(),
        )
        self.record(row, idea=att.idea)
        return row

    def _analyze(self, run: RunResult, best: Row, value: float | None, status: str, failure: str | None) -> None:
        prev = next((r for r in reversed(self.rows()) if r.commit != "-" and r.value is not None), None)
        try:
            analysis.analyze_run(
                run.run_dir, best_dir=self.archive / best.commit, code_file=Path(self.cfg.target.editable[0]).name,
                prev_dir=self.archive / prev.commit if prev else None,
                metric=self.cfg.target.metric, direction=self.cfg.target.direction,
                value=value, status=status, failure=failure)
        except OSError as e:
            self.emit("message", text=f"analysis could not be written: {e}", level="warn")
        for problem in run_files.data_problems(run.run_dir):
            self.emit("message", text=f"{run.run_dir.name[:7]}: {problem}", level="warn")

    # -- recording ---------------------------------------------------------------------------------------

    def record(self, row: Row, *, idea: str | None = None, worker: int = 0) -> None:
        """Make a decision permanent: the ledger row first (the commit point), then git and notes."""
        self.lock.update(phase="recording")
        self.ledger.append(row)
        with self._rows_lock:
            self._rows = None
        if row.commit != "-":
            self.repo.add_note(row.commit, self.note_text(row))
        best = self.best()
        if best is not None and best.value is not None:  # every time: the margin moves with new repeats
            self.notes.update_current_best(best.value, best.commit, best.description, self.noise().margin,
                                           self.cfg.target.metric, best.runs, self.cfg.target.direction)
        if idea:
            self.notes.mark_idea(idea, row.experiment, row.status, row.value)
        self._plot_progress()
        if best is not None and not row.kept:
            self.reset_to_best()
        self.lock.update(phase="idle", experiment=None, commit=None)
        self.emit("result", experiment=row.experiment, row=row, metric=self.cfg.target.metric,
                  best_value=best.value if best else None,
                  margin=self.noise().margin, kept=row.kept, worker=worker)

    def _plot_progress(self) -> None:
        try:
            from harness.plots import plot_progress

            plot_progress([r.__dict__ for r in self.rows()], self.archive / "progress.png",
                          metric=self.cfg.target.metric, direction=self.cfg.target.direction,
                          noise_margin=self.noise().margin)
        except Exception as e:  # a plot must never stop the research
            self.emit("message", text=f"progress.png not updated: {e}", level="warn")

    def note_text(self, row: Row) -> str:
        t = self.cfg.target
        value = "none" if row.value is None else f"{row.value:.6f}"
        lines = [f"{t.metric}: {value} ({t.better_word})   status: {row.status}   experiment: {row.experiment}"]
        if row.delta is not None and row.best_before is not None:
            word = t.delta_word(row.delta, row.margin)
            lines.append(f"delta vs best: {row.delta:+.6f} ({word}; best {row.best_before:.6f}, "
                         f"margin {row.margin or 0:.6f})")
        if row.runs:
            lines.append("runs: " + ", ".join(f"{v:.6f}" for v in row.runs))
        lines.append(f"seconds: train {row.train_s:.1f}, wall {row.wall_s:.1f}   agent: {row.agent}")
        if row.failure:
            lines.append(f"failure: {row.failure}")
        return "\n".join(lines)

    def reset_to_best(self) -> None:
        """HEAD and the tree back to the all-time best. The user's changes are never destroyed:
        anything tracked and modified that is not an editable file is stashed first."""
        best = self.best()
        if best is None or self.repo.head() == best.commit and not self.repo.changes(self.exclude):
            return
        foreign = [c for c in self.repo.changes(self.exclude)
                   if not c.untracked and c.path not in self.cfg.target.editable]
        if foreign:
            self.repo.stash_user_changes("auto-log-research: changes found before a reset")
            self.emit("message", level="warn",
                      text=f"stashed uncommitted changes to {', '.join(c.path for c in foreign)} (see `git stash list`)")
        self.repo.reset_hard(best.commit)

    # -- attempts --------------------------------------------------------------------------------------------

    def commit_attempt(self, experiment: int, description: str) -> str:
        sha = self.repo.commit(self.cfg.target.editable, description, {"Experiment": str(experiment)})
        self.repo.set_ref(attempt_ref(experiment), sha)
        return sha

    def archive_attempt_files(self, att: Attempt, prompt: str | None = None, *, workdir: Path | None = None) -> None:
        """Keep the attempt's file(s), its diff against the parent, and the prompt that led to it."""
        run_dir = self.archive / att.commit
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in self.cfg.target.editable:  # atomic: a kill -9 never leaves half a file to resume with
            src = (workdir or self.repo.root) / name
            if src.is_file():
                atomic.write_bytes(run_dir / Path(name).name, src.read_bytes(), fsync=False)
        atomic.write_text(run_dir / "diff.patch", self.repo.diff(att.parent, att.commit, self.cfg.target.editable),
                          fsync=False)
        if prompt:
            atomic.write_text(run_dir / "prompt.md", prompt, fsync=False)

    def next_experiment(self) -> int:
        refs = self.repo.refs("refs/auto-log-research/attempts/")
        nums = [int(r.rsplit("/", 1)[1]) for r in refs if r.rsplit("/", 1)[1].isdigit()]
        return max([self.ledger.next_experiment(), *(n + 1 for n in nums)])

    def pending_attempts(self) -> list[tuple[int, str]]:
        """Committed attempts with no ledger row: interrupted before they were recorded."""
        recorded = {r.experiment for r in self.rows()}
        out = []
        for ref, sha in self.repo.refs("refs/auto-log-research/attempts/").items():
            num = ref.rsplit("/", 1)[1]
            if num.isdigit() and int(num) not in recorded:
                out.append((int(num), sha))
        return sorted(out)
