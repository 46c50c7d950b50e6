"""Check what an agent did before it can cost a training run, and undo what it must not do.

Before the agent runs we take a Snapshot (refs, HEAD, branch, untracked files). Afterwards
`inspect` compares: git operations of its own are undone (refs put back), files outside the
editable set are restored, and the edit itself must exist, be text and (for Python) parse.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.repo import Repo

MAX_EDITABLE_BYTES = 5 * 2**20


@dataclass(frozen=True)
class Snapshot:
    head: str
    branch: str | None
    refs: dict[str, str]
    untracked: frozenset[str]
    stashes: tuple[str, ...] = ()  # the user's stash entries (refs/stash keeps only the top one)


@dataclass(frozen=True)
class Inspection:
    status: str  # "ok", "no_change", "invalid", "violation"
    changed: tuple[str, ...]  # editable files the agent changed
    problems: tuple[str, ...]  # what was wrong, one line each (restored where possible)

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


def snapshot(repo: Repo, exclude: tuple[str, ...]) -> Snapshot:
    untracked = frozenset(c.path for c in repo.changes(exclude) if c.untracked)
    return Snapshot(repo.head(), repo.branch(), repo.refs(), untracked, _stashes(repo))


def _stashes(repo: Repo) -> tuple[str, ...]:
    out = repo.git.execute(["git", "stash", "list", "--format=%H"], with_exceptions=False)
    return tuple(out.split()) if out else ()


def undo_git_operations(repo: Repo, before: Snapshot) -> list[str]:
    """Put HEAD, the branch and every ref back where they were. Returns what was undone."""
    problems = []
    if repo.branch() != before.branch and before.branch:
        repo.git.execute(["git", "checkout", "-q", "-f", before.branch], with_exceptions=False)
        problems.append(f"the agent switched branches (back on {before.branch})")
    after = repo.refs()
    for ref, sha in before.refs.items():
        if after.get(ref) != sha:
            repo.set_ref(ref, sha)
            problems.append(f"the agent {'moved' if ref in after else 'deleted'} {ref} (restored)")
    for ref in after.keys() - before.refs.keys():
        if ref.startswith(("refs/heads/", "refs/tags/")):
            repo.delete_ref(ref)
            problems.append(f"the agent created {ref} (removed)")
    if repo.head() != before.head:
        repo.git.execute(["git", "reset", "-q", "--soft", before.head])
        problems.append("the agent moved HEAD (put back)")
    lost = [sha for sha in before.stashes if sha not in _stashes(repo)]
    for sha in reversed(lost):  # oldest first, so `git stash list` keeps its order
        repo.git.execute(["git", "stash", "store", "-m", "restored by auto-log-research", sha], with_exceptions=False)
    if lost:
        problems.append(f"the agent dropped {len(lost)} stash entr{'y' if len(lost) == 1 else 'ies'} (restored)")
    if problems:
        # The index may hold the agent's own commit or reset; the files stay as they are.
        repo.git.execute(["git", "reset", "-q"], with_exceptions=False)
    return problems


def inspect(repo: Repo, before: Snapshot, editable: tuple[str, ...], exclude: tuple[str, ...],
            keep: Path | None = None) -> Inspection:
    """What the agent did, with its forbidden changes undone. With `keep`, whatever is undone
    (a changed file, a created one) is first copied there: it may have been the user's."""
    problems = undo_git_operations(repo, before)
    changes = repo.changes(exclude)
    forbidden_tracked, forbidden_new, changed = [], [], []
    for c in changes:
        if c.path in editable:
            changed.append(c)
        elif c.untracked:
            if c.path not in before.untracked:
                forbidden_new.append(c.path)
        else:
            forbidden_tracked.append(c.path)
    if keep is not None and (forbidden_tracked or forbidden_new):
        for path in (*forbidden_tracked, *forbidden_new):
            _keep_copy(repo.root / path, keep / path)
    kept_note = (f"copies of what was undone are in {keep.relative_to(repo.root) if keep.is_relative_to(repo.root) else keep}"
                 if keep is not None and (forbidden_tracked or forbidden_new) else None)
    if forbidden_tracked:
        repo.restore(before.head, forbidden_tracked)
        problems.append(f"changed files it may not touch: {', '.join(forbidden_tracked)} (restored)")
    for path in forbidden_new:
        (repo.root / path).unlink(missing_ok=True)
    if forbidden_new:
        problems.append(f"created files it may not create: {', '.join(forbidden_new)} (removed)")
    if kept_note:
        problems.append(kept_note)
    if problems:
        if changed:
            repo.restore(before.head, [c.path for c in changed if not c.untracked])
        return Inspection("violation", tuple(c.path for c in changed), tuple(problems))
    if not changed:
        return Inspection("no_change", (), ("the agent changed nothing",))
    for c in changed:
        problem = check_file(repo.root / c.path, deleted="D" in c.code)
        if problem:
            return Inspection("invalid", tuple(x.path for x in changed), (problem,))
    return Inspection("ok", tuple(c.path for c in changed), ())


def _keep_copy(src: Path, dst: Path) -> None:
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def check_file(path: Path, *, deleted: bool = False) -> str | None:
    """Why an edited file cannot be run (deleted, too big, not UTF-8, does not parse), or None."""
    if deleted or not path.exists():
        return f"{path.name} was deleted"
    size = path.stat().st_size
    if size > MAX_EDITABLE_BYTES:
        return f"{path.name} is {size / 2**20:.0f} MB (limit {MAX_EDITABLE_BYTES // 2**20} MB)"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return f"{path.name} is not UTF-8 text ({e.reason} at byte {e.start})"
    if path.suffix == ".py":
        try:
            ast.parse(text, filename=path.name)
        except SyntaxError as e:
            return f"{path.name} does not parse: {e.msg} at line {e.lineno}"
    return None


def discard_edits(repo: Repo, base: str, before: Snapshot, editable: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Throw away the agent's uncommitted edits to the editable files (tree back to base)."""
    for c in repo.changes(exclude):
        if c.path in editable:
            if c.untracked:
                (repo.root / c.path).unlink(missing_ok=True)
            else:
                repo.restore(base, [c.path])
