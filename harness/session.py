"""Opening a research session: checks of the repository, `harness init` (branch + baseline),
and recovery of whatever an interrupted harness left behind."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import atomic, guard, procs, runner
from harness.config import load_config
from harness.errors import FatalError, UsageError
from harness.events import Reporter, null_reporter
from harness.lab import SEEDS, Lab, now
from harness.ledger import Row
from harness.repo import Repo, attempt_ref


def open_lab(path: Path, overrides: dict[str, Any] | None = None, reporter: Reporter = null_reporter,
             *, initialized: bool = True) -> Lab:
    """A Lab for the repository containing `path`. With initialized=True the repository must be
    on the research branch that `harness init` started and that the archive belongs to."""
    repo = Repo(path)
    cfg = load_config(repo.root, overrides)
    lab = Lab(cfg, repo, reporter)
    if not repo.has_commits():
        raise UsageError("the repository has no commits yet", hint="commit your files first: git add -A && git commit -m start")
    branch = repo.branch()
    if branch is None:
        raise UsageError("HEAD is detached", hint="check out a branch first (e.g. `git checkout autoresearch/<tag>`)")
    if not initialized:
        return lab
    meta = lab.read_meta()
    if not meta or not lab.ledger.exists():
        raise UsageError("no research started in this repository", hint="run `harness init` first")
    if meta.get("branch") != branch:
        raise UsageError(f"the archive {cfg.archive_dir_name}/ belongs to branch {meta.get('branch')}, not {branch}",
                         hint=f"`git checkout {meta.get('branch')}`, or move {cfg.archive_dir_name}/ aside to start anew")
    if lab.best() is None:
        raise UsageError("no baseline recorded yet", hint="run `harness init` (it resumes an interrupted one)")
    for warning in lab.ledger.warnings:
        lab.emit("message", text=warning, level="warn")
    return lab


def user_changes(lab: Lab) -> list[str]:
    """Tracked files with uncommitted changes (the user's work until proven otherwise)."""
    return [c.path for c in lab.repo.changes(lab.exclude) if not c.untracked]


def exclude_archive(repo: Repo, name: str) -> None:
    """Keep the archive out of git without touching the user's tracked .gitignore."""
    exclude = Path(repo.git.execute(["git", "rev-parse", "--git-path", "info/exclude"]))
    exclude = exclude if exclude.is_absolute() else repo.root / exclude
    text = exclude.read_text() if exclude.exists() else ""
    if f"/{name}/" not in text.split("\n"):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + f"/{name}/\n")


def init(lab: Lab, tag: str | None, baseline_runs: int | None) -> Row:
    """Start a research branch at HEAD and measure the baseline (and its noise) N times."""
    repo, cfg = lab.repo, lab.cfg
    runs = baseline_runs or cfg.noise.baseline_runs
    if runs < 1:
        raise UsageError("--baseline-runs must be at least 1")
    branch, meta = repo.branch(), lab.read_meta()
    resuming = bool(meta) and meta.get("branch") == branch and lab.best() is None
    if lab.best() is not None:
        raise UsageError(f"research already started here (branch {meta.get('branch', '?')}, {len(lab.rows())} rows)",
                         hint="continue with `harness loop`, or move the archive folder aside to start anew")
    if meta and not resuming:
        raise UsageError(f"{cfg.archive_dir_name}/ belongs to branch {meta.get('branch')}",
                         hint=f"`git checkout {meta.get('branch')}` and run `harness init` again, or move the folder aside")
    dirty = user_changes(lab)
    if dirty:
        raise UsageError(f"uncommitted changes to {', '.join(dirty[:5])}",
                         hint="commit or stash them first: the baseline must be a commit")
    lab.check_target_files()
    untracked = [n for n in (*cfg.target.editable, *cfg.target.immutable) if not repo.has_file("HEAD", n)]
    if untracked:
        raise UsageError(f"{', '.join(untracked)} not committed: the baseline must be a commit that has it",
                         hint=f"git add {' '.join(untracked)} && git commit -m 'research target'")
    lab.prepared_files()  # "the data is not prepared" now, before a branch is made
    if not resuming:
        name = cfg.branch_prefix + (tag or datetime.now().strftime("%b%d").lower())
        if repo.branch_exists(name):
            raise UsageError(f"branch {name} already exists", hint="pick another --tag")
        lab.lock.acquire()
        repo.checkout_new_branch(name, repo.head())
        exclude_archive(repo, cfg.archive_dir_name)
        atomic.write_text(lab.meta_path, json.dumps({
            "branch": name, "tag": tag, "created": now(), "metric": cfg.target.metric,
            "direction": cfg.target.direction, "base": repo.head(), "target": cfg.target.record()}, indent=2))
    else:
        lab.lock.acquire()
    try:
        if lab.lock.previous is not None:  # an init that was killed: its baseline run may still go on
            for pid in runner.kill_leftovers(lab.archive):
                lab.emit("message", text=f"stopped run pid {pid}, left running by the init that was killed",
                         level="info")
        lab.capture_manifest()
        lab.notes.ensure(lab_description(lab), cfg.target.metric, cfg.target.direction)
        return measure_baseline(lab, runs)
    finally:
        lab.lock.release()


def lab_description(lab: Lab) -> str:
    from harness.context import target_info
    return target_info(lab.cfg).description


def measure_baseline(lab: Lab, runs: int) -> Row:
    commit, started = lab.repo.head(), time.time()
    lab.emit("experiment", experiment=0, worker=0)
    results = []
    for i in range(runs):
        lab.lock.update(phase="training", experiment=0, commit=commit)
        run_dir = lab.archive / commit if i == 0 else lab.archive / commit / f"seed{SEEDS[i]}"
        result = lab.run_once(0, run_dir, SEEDS[i % len(SEEDS)])
        if result.value is None:
            raise FatalError(f"the baseline run failed: {result.failure} (see {result.run_dir / 'run.log'}; "
                             "fix it, then `harness init` again)")
        results.append(result)
    values = tuple(r.value for r in results if r.value is not None)
    row = Row(commit=commit, value=sum(values) / len(values), memory_gb=results[0].memory_gb, status="baseline",
              description="baseline", experiment=0, parent="-", runs=values, train_s=sum(r.train_s for r in results),
              wall_s=time.time() - started, agent="-", timestamp=now())
    lab._analyze(results[0], row, row.value, "baseline", None)
    lab.record(row)
    return row


def save_unfinished_edit(lab: Lab, experiment: int | None) -> Path | None:
    """Copy the uncommitted editable files into <archive>/interrupted/<experiment>/ before they
    are discarded (an agent's half-made edit, or the user's own: either way nothing is lost)."""
    changed = [c for c in lab.repo.changes(lab.exclude) if c.path in lab.cfg.target.editable]
    if not changed:
        return None
    where = lab.archive / "interrupted" / f"{experiment if experiment is not None else 'unknown'}-{int(time.time())}"
    where.mkdir(parents=True, exist_ok=True)
    for c in changed:
        src = lab.repo.root / c.path
        if src.is_file():
            atomic.write_bytes(where / c.path.replace("/", "__"), src.read_bytes(), fsync=False)
    return where


def recover(lab: Lab, *, discard_unfinished: bool = True) -> list[str]:
    """Bring the repository back to a consistent state after an interruption. Returns what was
    done, one line each. Call with the lock held. `discard_unfinished=False` (harness run) leaves
    the editable files as they are: there they are the user's edit to test."""
    done = []
    repo, editable = lab.repo, lab.cfg.target.editable
    prev = lab.lock.previous
    if prev is not None:
        for pid in runner.kill_leftovers(lab.archive):
            done.append(f"stopped run pid {pid}, left running by the harness that was killed")
        for pid in procs.kill_marked(lab.archive):
            done.append(f"stopped agent process {pid}, left running by the harness that was killed")
    # "agent"/"guard" only happen in `harness loop`: that edit is the agent's, whoever recovers.
    if prev is not None and (prev.phase in ("agent", "guard") or prev.phase == "commit" and discard_unfinished):
        # commit: maybe `git add`ed, not committed. The edit is kept in the archive, not lost.
        kept = save_unfinished_edit(lab, prev.experiment)
        snap = guard.snapshot(repo, lab.exclude)
        guard.discard_edits(repo, repo.head(), snap, editable, lab.exclude)
        if kept:
            done.append(f"discarded the unfinished edit of interrupted experiment {prev.experiment} "
                        f"(a copy is in {kept.relative_to(repo.root)})")
    dirty = [p for p in user_changes(lab) if discard_unfinished or p not in editable]
    if dirty:
        raise UsageError(f"uncommitted changes to {', '.join(dirty[:5])}",
                         hint="test them with `harness run -m 'what changed'`, or commit/stash them first")
    best = lab.best()
    assert best is not None
    head = repo.head()
    recorded = {r.commit for r in lab.rows()}
    pending = {sha for _, sha in lab.pending_attempts()}
    if head != best.commit and head in recorded:
        if not discard_unfinished and any(c.path in editable for c in repo.changes(lab.exclude)):
            raise UsageError(f"HEAD ({head[:7]}) is an attempt already recorded (the harness was stopped before "
                             f"it went back to the best, {best.short}), and your edit sits on top of it",
                             hint="`git stash && harness run; git stash pop` (that run only puts HEAD back on "
                                  "the best), then `harness run` again to test your edit")
        lab.reset_to_best()
        done.append(f"reset to the best ({best.short}): the last attempt was recorded but not reset")
    elif head != best.commit and head not in pending and (n := _adopt_unreferenced_attempt(lab, head)) is not None:
        done.append(f"experiment {n} ({head[:7]}) was committed but its ref not written: it runs again")
    elif head != best.commit and head not in pending and discard_unfinished:  # `harness run` tests such a HEAD
        raise UsageError(f"HEAD ({head[:7]}) is neither the best ({best.short}) nor a recorded attempt",
                         hint=f"test it with `harness run`, or go back with `git reset --hard {best.short}`")
    last = lab.rows()[-1]
    if last.commit != "-" and repo.note(last.commit) is None:
        repo.add_note(last.commit, lab.note_text(last))
        done.append(f"added the missing git note of experiment {last.experiment}")
    for line in done:
        lab.emit("message", text=line, level="info")
    return done


def _adopt_unreferenced_attempt(lab: Lab, head: str) -> int | None:
    """A kill -9 between an attempt's commit and its ref leaves HEAD on a harness commit that no
    ref keeps. Give it its ref back (it then resumes as a pending attempt); returns its number."""
    best = lab.best()
    found = re.search(r"^Experiment: (\d+)$", lab.repo.message(head), re.M)
    if best is None or found is None or lab.repo.resolve(f"{head}^") != best.commit:
        return None
    number = int(found[1])
    if number in {r.experiment for r in lab.rows()}:
        return None
    lab.repo.set_ref(attempt_ref(number), head)
    return number
