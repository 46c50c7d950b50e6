"""The research loop: { agent proposes -> guard -> commit -> run -> analyze -> decide -> record }
until a stop condition. `run_current` is the same flow without the agent (`harness run`)."""

from __future__ import annotations

import errno
import math
import time
from dataclasses import dataclass

from harness import caps, guard, procs
from harness.agents.base import Agent, Usage
from harness.context import build_context
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded, FatalError, UsageError
from harness.executors import Resources
from harness.lab import Attempt, Lab, now
from harness.ledger import Row
from harness.repo import attempt_ref
from harness.session import recover

FAILURES = ("crash", "invalid", "violation", "agent_error", "infra")
SAME_AGENT_ERROR_LIMIT = 3  # the same agent error this many times in a row stops the loop
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class StopRules:
    max_experiments: int | None = None  # in this invocation
    hours: float | None = None
    until: float | None = None  # stop once the best reaches this value
    patience: int | None = None  # stop after this many experiments in a row without a keep


@dataclass(frozen=True)
class LoopReport:
    reason: str
    experiments: int
    kept: int
    best: Row | None


def stop_reason(lab: Lab, rules: StopRules, done: int, started: float) -> str | None:
    best = lab.best()
    stop_file = lab.archive / "STOP"
    if stop_file.exists():
        stop_file.unlink(missing_ok=True)
        return "STOP file found (removed it)"
    if rules.max_experiments is not None and done >= rules.max_experiments:
        return f"reached --max-experiments {rules.max_experiments}"
    if rules.hours is not None and time.time() - started >= rules.hours * 3600:
        return f"reached --hours {rules.hours:g}"
    if rules.until is not None and best and best.value is not None:
        target = lab.cfg.target
        if best.value == rules.until or target.better(best.value, rules.until):
            return f"the best {target.metric} {best.value:.6f} reached --until {rules.until:g}"
    if rules.patience is not None:
        since = 0
        for row in reversed(lab.rows()):
            if row.kept:
                break
            since += 1
        if since >= rules.patience:
            return f"no keep in the last {since} experiments (--patience {rules.patience})"
    return None


def transient(row: Row) -> bool:
    """An agent error that may pass by itself (a timeout, rate limits, an API outage)."""
    kind = row.failure.split(":", 1)[0]
    return row.status == "agent_error" and (kind == "AgentTimeout" or kind.endswith("(transient)"))


def repeated_agent_error(rows: list[Row], limit: int = SAME_AGENT_ERROR_LIMIT) -> str | None:
    """A stop reason if the last `limit` rows are the same agent error (nothing will change).
    Transient errors never stop the loop: the caller backs off instead (see `agent_backoff`)."""
    last = rows[-limit:]
    if len(last) < limit or any(r.status != "agent_error" or transient(r) for r in last) \
            or len({r.failure for r in last}) > 1:
        return None
    return (f"the agent failed the same way {limit} times in a row ({last[-1].failure[:200]}); "
            "fix its setup (model name, API key, endpoint), then `harness loop` again")


def propose(lab: Lab, agent: Agent, experiment: int, last_failure: str | None) -> Attempt | Row:
    """Ask the agent for one edit and check it. An Attempt is committed and ready to run; a Row
    means there is nothing to run (no change, invalid, violation, agent error)."""
    repo, cfg = lab.repo, lab.cfg
    best = lab.best()
    assert best is not None
    started = time.time()
    snap = guard.snapshot(repo, lab.exclude)
    lab.shield.snapshot({r.commit for r in lab.rows() if r.commit != "-"})
    lab.lock.update(phase="agent", experiment=experiment, base=best.commit)
    lab.emit("experiment", experiment=experiment, worker=0)
    lab.emit("phase", experiment=experiment, phase="agent", worker=0)
    analysis_md = lab.archive / best.commit / "analysis.md"
    last = lab.rows()[-1]
    if last.commit != "-" and (lab.archive / last.commit / "analysis.md").exists():
        analysis_md = lab.archive / last.commit / "analysis.md"
    usage, retry_error, details = Usage(), None, {}
    for _ in range(2):  # an edit that does not parse goes back to the agent once
        ctx = build_context(cfg, repo.root, experiment, lab.rows(), margin=lab.noise().margin,
                            last_analysis=_read(analysis_md), last_failure=last_failure, retry_error=retry_error)
        try:
            proposal = agent.propose(ctx)
        except AgentError as e:
            _undo_agent(lab, snap)
            usage += getattr(e, "usage", None) or Usage()  # what the failed proposal spent, if known
            kind = type(e).__name__ + (" (transient)" if e.transient and not isinstance(e, AgentTimeout) else "")
            return _row(lab, experiment, "agent_error", getattr(e, "description", "") or "agent failed",
                        agent.name, usage, started, failure=f"{kind}: {e}")
        except (AgentSetupError, CapExceeded):
            _undo_agent(lab, snap)  # the loop stops: leave the tree at the best, as it was
            raise
        usage += proposal.usage
        details = proposal.details
        lab.emit("phase", experiment=experiment, phase="guard", worker=0)
        lab.lock.update(phase="guard")
        inspection = guard.inspect(repo, snap, cfg.target.editable, lab.exclude,
                                   keep=lab.archive / "rejected" / str(experiment))
        if tampered := lab.shield.restore():  # the ledger, the call log or archived attempts touched
            inspection = guard.Inspection("violation", inspection.changed, (*inspection.problems, *tampered))
            break
        if inspection.status != "invalid" or retry_error is not None:
            break
        retry_error = inspection.reason
    description = " ".join(proposal.description.split())[:300] or "edit"
    if inspection.status != "ok":
        guard.discard_edits(repo, snap.head, snap, cfg.target.editable, lab.exclude)
        return _row(lab, experiment, inspection.status, description, agent.name, usage, started,
                    failure=inspection.reason)
    lab.lock.update(phase="commit")
    sha = lab.commit_attempt(experiment, description)
    att = Attempt(experiment, sha, best.commit, description, agent.name, usage, started, details.get("idea"))
    lab.archive_attempt_files(att, ctx.prompt)
    return att


def _undo_agent(lab: Lab, snap: guard.Snapshot) -> None:
    """Undo what a failed agent left behind: its git operations, forbidden files, its edits."""
    guard.inspect(lab.repo, snap, lab.cfg.target.editable, lab.exclude)
    for line in lab.shield.restore():
        lab.emit("message", text=line, level="warn")
    guard.discard_edits(lab.repo, snap.head, snap, lab.cfg.target.editable, lab.exclude)


def _row(lab: Lab, experiment: int, status: str, description: str, agent: str, usage: Usage, started: float,
         failure: str) -> Row:
    best = lab.best()
    return Row(commit="-", value=None, memory_gb=0.0, status=status, description=description,
               experiment=experiment, parent=best.commit if best else "-", margin=lab.noise().margin,
               best_before=best.value if best else None, wall_s=time.time() - started, agent=agent,
               tokens=usage.tokens, cost_usd=usage.cost_usd, failure=failure, timestamp=now())


def _read(path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def resume_pending(lab: Lab) -> list[Row]:
    """Evaluate attempts that were committed but never recorded (interrupted runs)."""
    rows = []
    best = lab.best()
    assert best is not None
    for experiment, sha in lab.pending_attempts():
        parent = lab.repo.resolve(f"{sha}^") or "-"
        message = lab.repo.message(sha).split("\n\nExperiment:")[0].strip()
        if parent != best.commit:
            row = Row(commit=sha, value=None, memory_gb=0.0, status="infra", description=message,
                      experiment=experiment, parent=parent, failure="interrupted; not re-run because the best changed",
                      timestamp=now())
            lab.record(row)
            rows.append(row)
            continue
        lab.emit("message", text=f"experiment {experiment} ({sha[:7]}) was interrupted: running it again", level="info")
        if lab.repo.head() != sha:
            lab.repo.reset_hard(sha)
        rows.append(lab.evaluate(Attempt(experiment, sha, parent, message, "resumed")))
    return rows


def run_loop(lab: Lab, agent: Agent, rules: StopRules, *, sleep=time.sleep,
             resources: Resources | None = None) -> LoopReport:
    """The overnight loop. Call with the lock held. Several workers, or runs on a Ray cluster:
    harness/parallel.py."""
    procs.mark_agents(lab.archive)  # so a harness that starts after a kill -9 can stop our agents
    if lab.cfg.workers > 1 or lab.cfg.executor != "local" or (resources is not None and resources != Resources()):
        # (asked-for GPUs or threads per worker hold for one worker too: it runs in its slot)
        from harness.parallel import run_parallel

        report = run_parallel(lab, agent, rules, resources=resources or Resources())
    else:
        report = _run_serial(lab, agent, rules, sleep)
    if not report.reason.startswith("interrupted"):
        # A loop that ended (a stop condition, a cap) ends its night for --max-cost / --max-tokens;
        # one that was interrupted (Ctrl-C, kill -9) goes on counting the same spend when resumed.
        caps.close_session(lab.archive)
    return report


def _run_serial(lab: Lab, agent: Agent, rules: StopRules, sleep) -> LoopReport:
    started, done, kept, reason = time.time(), 0, 0, "stopped"
    consecutive = 0
    best = lab.best()
    lab.emit("loop_start", branch=lab.repo.branch(), best_value=best.value if best else None,
             best_commit=best.commit if best else None, margin=lab.noise().margin, metric=lab.cfg.target.metric,
             direction=lab.cfg.target.direction, budget=lab.cfg.target.budget, agent=agent.name, workers=1)
    try:
        recover(lab)
        for row in resume_pending(lab):
            done += 1
            kept += row.kept
        while (why := stop_reason(lab, rules, done, started)) is None:
            last = lab.rows()[-1]
            result = propose(lab, agent, lab.next_experiment(), last.failure or None)
            if isinstance(result, Row):
                lab.record(result)
                row = result
            else:
                row = lab.evaluate(result)
            done += 1
            kept += row.kept
            consecutive = consecutive + 1 if row.status in FAILURES else 0
            if consecutive and consecutive % lab.cfg.max_consecutive_failures == 0:
                lab.reset_to_best()
                lab.emit("message", level="warn",
                         text=f"{consecutive} failures in a row: back at the best ({lab.best().short}); "
                              "check the agent's setup if this goes on")
            if row.status == "agent_error":
                if (why := repeated_agent_error(lab.rows())) is not None:
                    break  # a rejected model or endpoint fails the same way all night
                if rules.max_experiments is None or done < rules.max_experiments:
                    pause(lab, agent_backoff(lab.rows(), lab.cfg.agent.backoff_s), sleep)
        reason = why
    except KeyboardInterrupt:
        reason = "interrupted (Ctrl-C); the unfinished attempt runs again on the next `harness loop`"
        _clean_after_interrupt(lab)
    except CapExceeded as e:
        reason = str(e).removeprefix("stopping: ") + (f"; {e.hint}" if e.hint else "")
        _clean_after_interrupt(lab)  # a cap can stop an agent mid-edit: drop the half-made change
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        # The archive cannot take the result: stop rather than loop; the attempt stays pending.
        what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror or "not writable"
        raise FatalError(f"cannot write {e.filename or 'the archive'}: {what}",
                         hint="free disk space (or make the archive writable), then `harness loop` again") from e
    best = lab.best()
    lab.emit("loop_stop", reason=reason, experiments=done, kept=kept, best_value=best.value if best else None,
             best_commit=best.commit if best else None)
    return LoopReport(reason, done, kept, best)


def agent_backoff(rows: list[Row], base: float = 5.0) -> float:
    """Seconds to wait after an agent error: a failing agent must not spin, and an API that is
    down or rate-limited gets longer and longer pauses (`base` doubling, at most 5 min) rather
    than a stop."""
    streak = 0
    for r in reversed(rows):
        if r.status != "agent_error":
            break
        streak += 1
    if rows and transient(rows[-1]):
        return min(300.0, base * 2 ** (streak - 1))
    return min(60.0, 2.0 ** min(streak, 6))


def pause(lab: Lab, seconds: float, sleep=time.sleep) -> None:
    """Wait `seconds`, waking early when a STOP file appears (it is then handled as usual)."""
    waited = 0.0
    while waited < seconds and not (lab.archive / "STOP").exists():
        step = min(1.0, seconds - waited)
        sleep(step)
        waited += step


def _clean_after_interrupt(lab: Lab) -> None:
    state = lab.lock.state
    if state and state.phase in ("agent", "guard"):
        guard.discard_edits(lab.repo, lab.repo.head(), guard.snapshot(lab.repo, lab.exclude),
                            lab.cfg.target.editable, lab.exclude)
    lab.reset_to_best()


def run_current(lab: Lab, description: str | None) -> Row:
    """`harness run`: test the tree as it is (or an unrecorded HEAD commit) as one experiment.
    Call with the lock held. The user's work is never thrown away: changes to files the target
    may not edit, or an edit that cannot run, stop it with nothing changed."""
    repo, editable = lab.repo, lab.cfg.target.editable
    recover(lab, discard_unfinished=False)  # a killed harness's leftovers; refuses non-editable changes
    changed = [c for c in repo.changes(lab.exclude) if c.path in editable]
    pending = lab.pending_attempts()
    if pending:
        if changed:
            n, sha = pending[0]
            raise UsageError(f"experiment {n} ({sha[:7]}) was interrupted and is not recorded yet, and the tree "
                             "has a new edit", hint="`git stash && harness run && git stash pop` (that run finishes "
                                                    "it), then `harness run` again to test your edit")
        return resume_pending(lab)[-1]
    best = lab.best()
    assert best is not None
    experiment = lab.next_experiment()
    started = time.time()
    if changed:
        for c in changed:
            problem = guard.check_file(repo.root / c.path, deleted="D" in c.code)
            if problem:
                raise UsageError(f"{problem}: nothing was run or recorded",
                                 hint=f"fix {c.path} and `harness run` again (`git diff {c.path}` shows your edit)")
        sha = lab.commit_attempt(experiment, description or "manual edit")
        parent = best.commit if repo.resolve(f"{sha}^") == best.commit else repo.resolve(f"{sha}^") or "-"
    else:
        head = repo.head()
        recorded = {r.commit for r in lab.rows()}
        if head == best.commit or head in recorded:
            raise UsageError("nothing to run: the tree is the recorded best",
                             hint=f"edit {editable[0]} first, then `harness run -m 'what you changed'`")
        if not repo.is_ancestor(best.commit, head):
            raise UsageError(f"HEAD ({head[:7]}) does not descend from the best ({best.short})",
                             hint=f"git reset --hard {best.short}, then make your change")
        sha, parent = head, best.commit
        repo.set_ref(attempt_ref(experiment), sha)
        description = description or repo.message(sha)
    att = Attempt(experiment, sha, parent, description or "manual edit", "manual", Usage(), started)
    lab.archive_attempt_files(att)
    return lab.evaluate(att)


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
