"""Each worker's own git worktree, `<archive>/worktrees/w<N>`, and the git steps the harness
(not the agent) does in one: reset to a commit, commit an attempt, re-apply a stale winner.

Worktrees are made with `git worktree add --detach` (no branch is checked out twice), reused
across attempts (reset to the best of the moment before each proposal) and removed when the
loop stops cleanly. One left behind by a crash is pruned or removed and made again on the next
start, with a line saying so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import git

from harness.errors import FatalError
from harness.repo import Repo

FOLDER = "worktrees"


def folder(archive: Path) -> Path:
    return Path(archive) / FOLDER


def _git(repo: Repo, *args: str, check: bool = True) -> tuple[int, str]:
    """Run git in `repo`'s working tree; (status, stdout+stderr). check=True raises FatalError."""
    env = {**os.environ, **repo._identity_env()}
    status, out, err = repo.git.execute(["git", *args], with_exceptions=False, with_extended_output=True, env=env)
    if check and status != 0:
        raise FatalError(f"git {' '.join(args[:2])} failed in {repo.root}: {(err or out).strip()[:300]}",
                         hint="check the repository with `git worktree list` and `git status`")
    return status, (out or "") + (err or "")


def registered(repo: Repo) -> set[Path]:
    """Paths of the worktrees git knows about (besides the main one)."""
    _, out = _git(repo, "worktree", "list", "--porcelain")
    paths = {Path(line[len("worktree "):]).resolve() for line in out.splitlines() if line.startswith("worktree ")}
    return paths - {repo.root}


def open_all(repo: Repo, archive: Path, count: int, at: str) -> tuple[list[Repo], list[str]]:
    """Worktrees w0..w<count-1>, detached at `at`, and what had to be repaired (one line each)."""
    messages: list[str] = []
    root = folder(archive)
    root.mkdir(parents=True, exist_ok=True)
    _git(repo, "worktree", "prune")  # forget worktrees whose folder is gone
    known = registered(repo)
    for stale in sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() not in known):
        shutil.rmtree(stale, ignore_errors=True)
        messages.append(f"removed {stale.name}, a worktree left behind by an interrupted loop")
    trees = []
    for n in range(count):
        path = root / f"w{n}"
        if path.resolve() in known:
            try:
                tree = Repo(path)
                reset(tree, at)
                trees.append(tree)
                continue
            except Exception as e:  # noqa: BLE001 - any damage: make it again
                messages.append(f"worktree {path.name} was damaged ({_first_line(e)}); made it again")
                _remove(repo, path)
        _git(repo, "worktree", "add", "--detach", "-f", str(path), at)
        trees.append(Repo(path))
    for extra in sorted(p for p in root.iterdir() if p.name.startswith("w") and p.name[1:].isdigit()
                        and int(p.name[1:]) >= count):
        _remove(repo, extra)
    return trees, messages


def close_all(repo: Repo, archive: Path) -> None:
    """Remove every worker worktree (on a clean stop)."""
    root = folder(archive)
    if root.is_dir():
        for path in sorted(root.iterdir()):
            _remove(repo, path)
    _git(repo, "worktree", "prune", check=False)


def _remove(repo: Repo, path: Path) -> None:
    _git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
    shutil.rmtree(path, ignore_errors=True)
    _git(repo, "worktree", "prune", check=False)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def reset(tree: Repo, sha: str) -> None:
    """Detached HEAD at `sha`, the tree exactly that commit: edits and untracked files gone."""
    _git(tree, "checkout", "-q", "--detach", "-f", sha)
    _git(tree, "reset", "-q", "--hard", sha)
    _git(tree, "clean", "-q", "-fdx")


def detach(tree: Repo) -> bool:
    """If an agent checked out a branch in its worktree, detach HEAD again (files stay as they
    are). True if it had to."""
    if tree.branch() is None:
        return False
    _git(tree, "checkout", "-q", "--detach")
    return True


def reapply(tree: Repo, commit: str, onto: str, paths: tuple[str, ...], message: str) -> str | None:
    """Put the change of `commit` (against its parent) on top of `onto` as a new commit made in
    `tree`; its sha, or None when it does not apply cleanly or changes nothing any more."""
    reset(tree, onto)
    status, _ = _git(tree, "cherry-pick", "--no-commit", commit, check=False)
    if status != 0 or not tree.changes():
        _git(tree, "cherry-pick", "--abort", check=False)
        reset(tree, onto)
        return None
    try:
        return tree.commit(paths, message)
    except (FatalError, git.GitCommandError):
        reset(tree, onto)
        return None
