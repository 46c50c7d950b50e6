"""`harness loop --workers N`: N experiments in flight, one story in the record.

One thread per worker slot asks the agent for an edit in the slot's own worktree (reset to the
best of that moment; harness/worktrees.py), commits it there and runs it through the executor
(this machine or a Ray cluster; harness/executors). Everything that changes the record (ledger
rows, notes, the research branch, refs) happens in this process under one lock, so the history
is one sequence of decisions, each row naming the parent its commit was made on.

Stale parents. An attempt starts from the best of the moment; while it runs, another worker may
keep something. The rule, applied when its result is in:
1. It is judged against the best at decision time, not the one it started from.
2. Not better by the noise margin (or crashed): recorded as usual, with its own parent.
3. Better, and its parent is still the best: confirmed with a second seed and kept as usual;
   the research branch fast-forwards to it.
4. Better, but its parent is no longer the best: its diff is re-applied on the current best as a
   new commit ("re-applied from <sha>", ref refs/auto-log-research/reapplied/<NNNN>), which is run
   again (and confirmed); it is kept only if it still wins at that decision. A re-apply that
   conflicts is a discard ("stale parent: could not re-apply"). The row is the re-applied
   commit's, with its true parent.

A run the executor could not finish (a lost Ray node or worker, after one retry) is recorded as
`infra`, never against the idea. Attempts interrupted by a kill are resumed on the next start.

The serial loop's safeguards hold here too, judged in decision order: the same (not transient)
agent error three times in a row stops the loop, every `max_consecutive_failures` failures in a
row are reported, and a worker whose agent failed backs off before its next proposal. Agents that
write the notes while proposing (the offline agent) propose one at a time, under the lock, so a
note update is never lost and no two workers get the same configuration.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import guard, worktrees
from harness.agents.base import Agent, Usage
from harness.context import build_context
from harness.decide import judge, mean
from harness.errors import AgentError, AgentTimeout, CapExceeded, InfraError
from harness.executors import AUTO, Executor, Resources, Slot, make_executor
from harness.lab import SEEDS, Attempt, Lab, RunResult, now
from harness.ledger import Row
from harness.loop import FAILURES, agent_backoff, pause, repeated_agent_error, stop_reason
from harness.repo import NOTES_REF, Repo, attempt_ref
from harness.session import recover
from harness.workers import STATUS_FILE, read_status, status_lines, write_status  # noqa: F401 - listing.py

REAPPLIED_REFS = "refs/auto-log-research/reapplied"
MAX_REAPPLY = 2  # a winner re-applied this often while the best kept moving is discarded
NOTE_WRITERS = ("offline",)  # agents that write the notes files while proposing: one proposal at a time


def reapplied_ref(experiment: int) -> str:
    return f"{REAPPLIED_REFS}/{experiment:04d}"


@dataclass
class Flight:
    """What one worker is doing now (for other agents, `harness status` and the live view)."""

    slot: Slot
    experiment: int | None = None
    phase: str = "idle"
    commit: str | None = None
    description: str = ""
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Job:
    experiment: int
    resume: str | None = None  # the commit of an interrupted attempt to run again


@dataclass(frozen=True)
class Measured:
    status: str  # keep | discard | crash | violation | win (better, but on a stale parent)
    results: tuple[RunResult, ...]
    best: Row  # the best it was judged against
    failure: str = ""

    @property
    def value(self) -> float | None:
        values = [r.value for r in self.results if r.value is not None]
        return mean(values) if values else None


class Stopped(Exception):
    """The loop is stopping (Ctrl-C): leave the attempt for the next start to resume."""


def run_parallel(lab: Lab, agent: Agent, rules, *, executor: Executor | None = None,
                 resources: Resources = AUTO, sleep=None):
    """The loop with lab.cfg.workers workers on lab.cfg.executor. Call with the lock held."""
    cfg = lab.cfg
    if executor is None:
        executor = make_executor(cfg.executor, cfg.workers, ray_address=cfg.ray_address,
                                 resources=resources,
                                 emit=lambda level, text: lab.emit("message", text=text, level=level))
    previous, lab.executor = lab.executor, executor  # Lab.run_once runs through it
    try:
        return Scheduler(lab, agent, rules, executor, sleep=sleep).run()
    finally:
        lab.executor = previous
        executor.close()


class Scheduler:
    def __init__(self, lab: Lab, agent: Agent, rules, executor: Executor, *, sleep=None):
        self.lab, self.agent, self.rules, self.executor = lab, agent, rules, executor
        self.lock = threading.RLock()  # the owner's: every change to the record happens under it
        self.flights = {s.worker: Flight(s) for s in executor.slots}
        self.sleep = sleep or (lambda seconds: lab.stop_event.wait(seconds))
        self.queue: deque[Job] = deque()
        self.allocated: set[int] = set()
        self.made_refs: dict[str, str] = {}  # refs this process set while agents were working
        self.started = self.done = self.kept = 0
        self.failures = 0  # failures in a row, in decision order
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.t0 = time.time()
        # one proposal at a time for agents that write notes (their read-modify-writes and the
        # owner's must not interleave), and so that each sees the attempts before it committed
        self.proposing = self.lock if agent.name in NOTE_WRITERS else contextlib.nullcontext()

    # -- the main thread ------------------------------------------------------------------------------

    def run(self):
        from harness.loop import LoopReport

        lab = self.lab
        best = lab.best()
        lab.emit("loop_start", branch=lab.repo.branch(), best_value=best.value if best else None,
                 best_commit=best.commit if best else None, margin=lab.noise().margin,
                 metric=lab.cfg.target.metric, direction=lab.cfg.target.direction, budget=lab.cfg.target.budget,
                 agent=self.agent.name, workers=len(self.flights), executor=self.executor.name)
        lab.lock.update(phase="workers")
        recover(lab)
        trees, repaired = worktrees.open_all(lab.repo, lab.archive, len(self.flights), lab.best().commit)
        for line in repaired:
            lab.emit("message", text=line, level="warn")
        self.queue.extend(Job(n, sha) for n, sha in lab.pending_attempts())
        self.allocated.update(j.experiment for j in self.queue)
        self._write_status()
        threads = [threading.Thread(target=self._worker, args=(slot, tree), name=f"worker-{slot.worker}", daemon=True)
                   for slot, tree in zip(self.executor.slots, trees, strict=True)]
        clean = False
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
            clean = True
        except KeyboardInterrupt:
            self.reason = "interrupted (Ctrl-C); unfinished attempts run again on the next `harness loop`"
            lab.stop_event.set()
            for t in threads:
                t.join()
        finally:
            self._write_status(final=True)
            if clean and self.error is None:
                worktrees.close_all(lab.repo, lab.archive)
        if self.error is not None:
            raise self.error
        best = lab.best()
        lab.emit("loop_stop", reason=self.reason or "stopped", experiments=self.done, kept=self.kept,
                 best_value=best.value if best else None, best_commit=best.commit if best else None)
        return LoopReport(self.reason or "stopped", self.done, self.kept, best)

    # -- one worker thread ------------------------------------------------------------------------------

    def _worker(self, slot: Slot, tree: Repo) -> None:
        while (job := self._next_job()) is not None:
            try:
                row = self._attempt(job, slot, tree)
            except Stopped:
                return
            except CapExceeded as e:
                self._stop(str(e))
                return
            except BaseException as e:  # noqa: BLE001 - a fatal error stops every worker, then the loop re-raises it
                self._fail(e)
                return
            finally:
                self._set(slot, experiment=None, phase="idle", commit=None, description="")
            if row.status == "agent_error":
                self._back_off(slot)

    def _back_off(self, slot: Slot) -> None:
        """An agent that fails at once must not spin; an API that is down gets longer pauses."""
        with self.lock:
            limit = self.rules.max_experiments
            if self.reason is not None or (limit is not None and self.started >= limit):
                return
            seconds = agent_backoff(self.lab.rows())
        self.lab.emit("message", level="info",
                      text=f"worker {slot.worker}: the agent failed; its next proposal in {seconds:g} s")
        pause(self.lab, seconds, lambda s: None if self.reason is not None else self.sleep(s))

    def _next_job(self) -> Job | None:
        with self.lock:
            if self.reason is not None or self.lab.stop_event.is_set():
                return None
            if self.queue:
                self.started += 1
                return self.queue.popleft()
            why = stop_reason(self.lab, self.rules, self.started, self.t0)
            if why is not None:
                self.reason = why
                return None
            n = max(self.lab.next_experiment(), max(self.allocated, default=-1) + 1)
            self.allocated.add(n)
            self.started += 1
            return Job(n)

    def _attempt(self, job: Job, slot: Slot, tree: Repo) -> Row:
        lab = self.lab
        if job.resume:  # its description is its commit message, without the trailer
            message = lab.repo.message(job.resume).split("\n\nExperiment:")[0].strip() or "resumed attempt"
            parent = lab.repo.resolve(f"{job.resume}^") or "-"
            lab.emit("message", level="info",
                     text=f"experiment {job.experiment} ({job.resume[:7]}) was interrupted: running it again")
            self._set(slot, experiment=job.experiment, phase="resumed", commit=job.resume, description=message)
            lab.emit("experiment", experiment=job.experiment, worker=slot.worker, device=slot.label,
                     description=message)
            att = Attempt(job.experiment, job.resume, parent, message, "resumed")
        else:
            with self.proposing:
                proposed = self._propose(job.experiment, slot, tree)
            if isinstance(proposed, Row):
                return self._record(proposed, slot)
            att = proposed
        return self._settle(att, slot, tree)

    def _stop(self, reason: str) -> None:
        with self.lock:
            self.reason = self.reason or reason

    def _fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
            self.reason = self.reason or f"error: {error}"
        self.lab.stop_event.set()  # runs in flight end now; their attempts resume next time

    # -- the agent, in the worker's worktree ------------------------------------------------------------

    def _propose(self, experiment: int, slot: Slot, tree: Repo) -> Attempt | Row:
        """Like loop.propose, in the worktree, with the ideas in flight and the owner's ref
        changes allowed for."""
        lab, cfg, w = self.lab, self.lab.cfg, slot.worker
        started = time.time()
        with self.lock:
            best = lab.best()
            worktrees.reset(tree, best.commit)
            snap = guard.snapshot(tree, lab.exclude)
            rows, margin = lab.rows(), lab.noise().margin
            lab.shield.snapshot({r.commit for r in rows if r.commit != "-"})
            last = rows[-1]
            analysis_md = lab.archive / best.commit / "analysis.md"
            if last.commit != "-" and (lab.archive / last.commit / "analysis.md").exists():
                analysis_md = lab.archive / last.commit / "analysis.md"
        self._set(slot, experiment=experiment, phase="agent", commit=None, description="")
        lab.emit("experiment", experiment=experiment, worker=w, device=slot.label)
        lab.emit("phase", experiment=experiment, phase="agent", worker=w)
        usage, retry_error, details = Usage(), None, {}
        for _ in range(2):  # an edit that does not parse goes back to the agent once
            ctx = build_context(cfg, tree.root, experiment, rows, margin=margin, last_analysis=_read(analysis_md),
                                last_failure=last.failure or None, retry_error=retry_error,
                                in_flight=self._in_flight(but=w))
            try:
                proposal = self.agent.propose(ctx)
            except AgentError as e:
                self._check_stopped(tree, best.commit)
                with self.lock:
                    self._inspect(tree, snap)
                worktrees.reset(tree, best.commit)
                usage += getattr(e, "usage", None) or Usage()  # what the failed proposal spent, if known
                # as loop.propose words it: loop.transient() tells a passing failure by this
                kind = type(e).__name__ + (" (transient)" if e.transient and not isinstance(e, AgentTimeout) else "")
                return self._row(experiment, "agent_error", getattr(e, "description", "") or "agent failed",
                                 usage, started, best, failure=f"{kind}: {e}")
            self._check_stopped(tree, best.commit)
            usage += proposal.usage
            details = proposal.details
            lab.emit("phase", experiment=experiment, phase="guard", worker=w)
            with self.lock:
                inspection = self._inspect(tree, snap)
            if inspection.status != "invalid" or retry_error is not None:
                break
            retry_error = inspection.reason
        description = " ".join(proposal.description.split())[:300] or "edit"
        if inspection.status != "ok":
            worktrees.reset(tree, best.commit)
            return self._row(experiment, inspection.status, description, usage, started, best,
                             failure=inspection.reason)
        lab.emit("phase", experiment=experiment, phase="commit", worker=w, description=description)
        with self.lock:
            sha = tree.commit(cfg.target.editable, description, {"Experiment": str(experiment)})
            self._set_ref(attempt_ref(experiment), sha)
        att = Attempt(experiment, sha, best.commit, description, self.agent.name, usage, started, details.get("idea"))
        lab.archive_attempt_files(att, ctx.prompt, workdir=tree.root)
        self._set(slot, commit=sha, description=description)
        return att

    def _check_stopped(self, tree: Repo, base: str) -> None:
        if self.lab.stop_event.is_set():  # Ctrl-C reached the agent too: its failure is not the idea's
            worktrees.reset(tree, base)
            raise Stopped

    def _inspect(self, tree: Repo, snap: guard.Snapshot) -> guard.Inspection:
        """guard.inspect against the refs as they should be now: the snapshot, plus what this
        process changed meanwhile (the research branch at the best, notes, attempt refs)."""
        lab = self.lab
        detached = worktrees.detach(tree)
        current = lab.repo.refs()
        expected = {ref: sha for ref, sha in snap.refs.items() if ref not in (NOTES_REF, "refs/stash")}
        expected.update({ref: current[ref] for ref in (NOTES_REF, "refs/stash") if ref in current})
        expected[f"refs/heads/{lab.repo.branch()}"] = lab.best().commit
        expected.update(self.made_refs)
        inspection = guard.inspect(tree, replace(snap, refs=expected, branch=None), lab.cfg.target.editable,
                                   lab.exclude)
        if tampered := lab.shield.restore():  # the ledger, the call log or archived attempts touched
            worktrees.reset(tree, snap.head)
            return guard.Inspection("violation", inspection.changed, (*inspection.problems, *tampered))
        if detached and inspection.status != "violation":
            worktrees.reset(tree, snap.head)
            return guard.Inspection("violation", inspection.changed, ("the agent checked out a branch (undone)",))
        return inspection

    def _set_ref(self, ref: str, sha: str) -> None:
        self.lab.repo.set_ref(ref, sha)
        self.made_refs[ref] = sha

    def _in_flight(self, but: int) -> tuple[str, ...]:
        with self.lock:
            return tuple(f.description for w, f in sorted(self.flights.items()) if w != but and f.description)

    # -- running and deciding ----------------------------------------------------------------------------

    def _settle(self, att: Attempt, slot: Slot, tree: Repo) -> Row:
        """Run an attempt (and confirm it) until it can be decided; see the module docstring."""
        lab, original = self.lab, att
        for tries in range(MAX_REAPPLY + 1):
            try:
                measured = self._measure(att, slot, tree)
            except InfraError as e:
                return self._record(self._infra_row(att, e), slot)
            if measured.status != "win":
                self._set(slot, phase="analysis")
                lab.emit("phase", experiment=att.experiment, phase="analysis", worker=slot.worker)
                lab._analyze(measured.results[0], measured.best, measured.value, measured.status,
                             measured.failure or None)
            with self.lock:  # the decision: nobody else may keep between this check and the record
                best = lab.best()
                if measured.status == "keep" and att.parent != best.commit:
                    measured = replace(measured, status="win")  # another worker kept first
                if measured.status != "win":
                    return self._record(self._final_row(att, measured, original, best), slot, att.idea)
                if tries == MAX_REAPPLY:
                    row = self._measured_row(att, measured, best, "stale parent: the best moved on during "
                                             f"{MAX_REAPPLY} re-applied runs")
                    return self._record(replace(row, status="discard"), slot, att.idea)
                self._set(slot, phase="re-apply")
                lab.emit("phase", experiment=att.experiment, phase="re-apply", worker=slot.worker)
                message = (f"{original.description}\n\nre-applied from {original.commit[:12]} "
                           f"(started from {original.parent[:12]}) onto {best.commit[:12]}")
                sha = worktrees.reapply(tree, att.commit, best.commit, lab.cfg.target.editable,
                                        message + f"\n\nExperiment: {att.experiment}")
                if sha is None:
                    row = self._measured_row(att, measured, best, f"stale parent: could not re-apply "
                                             f"{att.commit[:7]} onto the best {best.short}")
                    return self._record(replace(row, status="discard"), slot, att.idea)
                self._set_ref(reapplied_ref(att.experiment), sha)
            lab.emit("message", level="info",
                     text=f"experiment {att.experiment} beat the best from a stale parent: re-applied as "
                          f"{sha[:7]} on {best.short}; running it again")
            att = replace(att, commit=sha, parent=best.commit)
            lab.archive_attempt_files(att, workdir=tree.root)
            self._set(slot, commit=sha)
        raise AssertionError("unreachable: every pass of the loop returns or re-applies")

    def _measure(self, att: Attempt, slot: Slot, tree: Repo) -> Measured:
        lab, t = self.lab, self.lab.cfg.target
        run_dir = lab.archive / att.commit
        worktrees.reset(tree, att.commit)
        first = self._run(att, slot, tree, run_dir, SEEDS[0], "training")
        with self.lock:
            best, margin = lab.best(), lab.noise().margin
        verdict = judge(first.value, best.value, margin, t, final=not lab.cfg.noise.confirm)
        results = [first]
        if verdict.status in ("candidate", "keep") and att.parent != best.commit:
            return Measured("win", (first,), best)  # confirmed on the current best instead
        if verdict.status == "candidate":
            second = self._run(att, slot, tree, run_dir / f"seed{SEEDS[1]}", SEEDS[1], "confirm")
            results.append(second)
            with self.lock:
                best, margin = lab.best(), lab.noise().margin
            value = None if second.value is None else mean([first.value, second.value])
            verdict = judge(value, best.value, margin, t, final=True)
            if verdict.status == "keep" and att.parent != best.commit:
                return Measured("win", tuple(results), best)
        status = verdict.status
        failure = next((r.failure for r in results if r.failure), "") or ""
        if status == "crash" and any(r.untrusted for r in results):
            status = "violation"
        if status == "crash" and len(results) > 1 and first.value is not None:
            status, failure = "discard", f"confirmation run failed: {failure}"
        return Measured(status, tuple(results), best, failure)

    def _run(self, att: Attempt, slot: Slot, tree: Repo, run_dir: Path, seed: int, phase: str) -> RunResult:
        self._set(slot, experiment=att.experiment, phase=phase, commit=att.commit)
        result = self.lab.run_once(att.experiment, run_dir, seed, workdir=tree.root, worker=slot.worker,
                                   env=slot.env)
        if result.outcome.interrupted or self.lab.stop_event.is_set():
            raise Stopped
        return result

    def _final_row(self, att: Attempt, measured: Measured, original: Attempt, best: Row) -> Row:
        row = self._measured_row(att, measured, best, measured.failure)
        if att is not original and row.status != "keep":
            row = replace(row, failure=(row.failure + "; " if row.failure else "")
                          + f"stale parent: re-applied from {original.commit[:7]}, did not win on the best")
        return row

    def _measured_row(self, att: Attempt, measured: Measured, best: Row, failure: str) -> Row:
        """The row of a measured attempt, judged against `best` (the best at decision time)."""
        value = measured.value
        with self.lock:
            margin = self.lab.noise().margin
        return Row(commit=att.commit, value=value, memory_gb=measured.results[0].memory_gb, status=measured.status,
                   description=att.description, experiment=att.experiment, parent=att.parent,
                   runs=tuple(r.value for r in measured.results if r.value is not None),
                   delta=None if value is None else value - best.value, margin=margin, best_before=best.value,
                   train_s=sum(r.train_s for r in measured.results), wall_s=time.time() - att.started,
                   agent=att.agent, tokens=att.usage.tokens, cost_usd=att.usage.cost_usd, failure=failure,
                   timestamp=now())

    def _infra_row(self, att: Attempt, error: InfraError) -> Row:
        with self.lock:
            best, margin = self.lab.best(), self.lab.noise().margin
        return Row(commit=att.commit, value=None, memory_gb=0.0, status="infra", description=att.description,
                   experiment=att.experiment, parent=att.parent, margin=margin, best_before=best.value,
                   wall_s=time.time() - att.started, agent=att.agent, tokens=att.usage.tokens,
                   cost_usd=att.usage.cost_usd, failure=f"infra: {error}", timestamp=now())

    def _row(self, experiment: int, status: str, description: str, usage: Usage, started: float, best: Row,
             failure: str) -> Row:
        with self.lock:
            margin = self.lab.noise().margin
        return Row(commit="-", value=None, memory_gb=0.0, status=status, description=description,
                   experiment=experiment, parent=best.commit, margin=margin, best_before=best.value,
                   wall_s=time.time() - started, agent=self.agent.name, tokens=usage.tokens,
                   cost_usd=usage.cost_usd, failure=failure, timestamp=now())

    def _record(self, row: Row, slot: Slot, idea: str | None = None) -> Row:
        """The decision made permanent, in order: ledger row, note, then the branch (on a keep)."""
        lab = self.lab
        with self.lock:
            if row.status == "keep":
                best = lab.best()
                assert row.parent == best.commit, "a keep must sit on the current best"
            lab.emit("phase", experiment=row.experiment, phase="recording", worker=slot.worker)
            lab.record(row, idea=idea, worker=slot.worker)
            if row.kept:
                lab.reset_to_best()  # fast-forward the research branch (and the main tree) to it
                self.kept += 1
            self.done += 1
            self._safeguards(row)
            lab.lock.update(phase="workers")
        return row

    def _safeguards(self, row: Row) -> None:
        """The serial loop's, on the record in decision order. Call with the lock held."""
        lab = self.lab
        self.failures = self.failures + 1 if row.status in FAILURES else 0
        if self.failures and self.failures % lab.cfg.max_consecutive_failures == 0:
            lab.reset_to_best()
            lab.emit("message", level="warn",
                     text=f"{self.failures} failures in a row: every worker starts again from the best "
                          f"({lab.best().short}); check the agent's setup if this goes on")
        if row.status == "agent_error" and (why := repeated_agent_error(lab.rows())) is not None:
            self.reason = self.reason or why  # a rejected model or endpoint fails the same way all night

    # -- what others read ----------------------------------------------------------------------------------

    def _set(self, slot: Slot, **changes) -> None:
        with self.lock:
            flight = self.flights[slot.worker]
            if "phase" in changes and changes["phase"] != flight.phase:
                flight.since = time.time()
            for name, value in changes.items():
                setattr(flight, name, value)
            self._write_status()

    def _write_status(self, final: bool = False) -> None:
        state = {
            "pid": None if final else os.getpid(),
            "executor": self.executor.name,
            "updated": now(),
            "workers": [{"worker": w, "label": f.slot.label, "gpus": f.slot.gpus, "experiment": f.experiment,
                         "phase": "stopped" if final else f.phase, "commit": f.commit,
                         "description": f.description, "since": f.since}
                        for w, f in sorted(self.flights.items())],
        }
        write_status(self.lab.archive, state)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
