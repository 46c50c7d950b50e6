"""Git, and only git: the research branch, attempt commits, refs that keep them, notes, resets.

Every method runs real git (through GitPython's command wrapper). Nothing here decides anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import git

from harness.errors import FatalError, UsageError

ATTEMPT_REFS = "refs/auto-log-research/attempts"
NOTES_REF = "refs/notes/commits"  # the ref plain `git log` shows notes from
IDENTITY = {"GIT_AUTHOR_NAME": "auto-log-research", "GIT_AUTHOR_EMAIL": "harness@auto-log-research.local"}


def attempt_ref(experiment: int) -> str:
    return f"{ATTEMPT_REFS}/{experiment:04d}"


@dataclass(frozen=True)
class Change:
    code: str  # two-letter porcelain status, e.g. " M", "??", " D"
    path: str

    @property
    def untracked(self) -> bool:
        return self.code == "??"


class Repo:
    def __init__(self, path: Path):
        try:
            self._repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise UsageError(f"{path} is not inside a git repository",
                             hint="run `git init && git add -A && git commit -m baseline` first") from None
        if self._repo.bare:
            raise UsageError(f"{path} is a bare repository", hint="run the harness in a working tree")
        self.root = Path(self._repo.working_tree_dir).resolve()
        self.git = self._repo.git

    def _run(self, *args: str, env: dict | None = None) -> str:
        try:
            return self.git.execute(["git", *args], env={**os.environ, **(env or {})})
        except git.GitCommandError as e:
            raise FatalError(f"git {' '.join(args[:3])} failed: {(e.stderr or str(e)).strip()[:300]}",
                             hint="check the repository with `git status` and `git fsck`") from e

    # -- reading -------------------------------------------------------------------------------

    def has_commits(self) -> bool:
        try:
            self._repo.head.commit  # noqa: B018
            return True
        except ValueError:
            return False

    def head(self) -> str:
        return self._run("rev-parse", "HEAD").strip()

    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        out = self.git.execute(["git", "symbolic-ref", "-q", "--short", "HEAD"], with_exceptions=False)
        return out.strip() or None

    def resolve(self, rev: str) -> str | None:
        out = self.git.execute(["git", "rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], with_exceptions=False)
        return out.strip() or None

    def changes(self, exclude: tuple[str, ...] = ()) -> list[Change]:
        """Uncommitted changes (tracked and untracked), excluding paths under `exclude`."""
        out = self._run("status", "--porcelain=v1", "-z", "--untracked-files=all")
        items, parts = [], out.split("\0")
        i = 0
        while i < len(parts):
            entry = parts[i]
            i += 1
            if len(entry) < 4:
                continue
            code, path = entry[:2], entry[3:]
            if code[0] in "RC":
                i += 1  # the source path of a rename follows
            if any(path == e or path.startswith(e.rstrip("/") + "/") for e in exclude):
                continue
            items.append(Change(code, path))
        return items

    def show(self, rev: str, path: str) -> str | None:
        out = self.git.execute(["git", "show", f"{rev}:{path}"], with_exceptions=False, strip_newline_in_stdout=False)
        return out if out else None

    @property
    def git_dir(self) -> Path:
        """The repository's git directory (the main one, also from a worktree)."""
        return Path(self._repo.common_dir).resolve()

    def has_file(self, rev: str, path: str) -> bool:
        status, _, _ = self.git.execute(["git", "cat-file", "-e", f"{rev}:{path}"], with_exceptions=False,
                                        with_extended_output=True)
        return status == 0

    def message(self, rev: str) -> str:
        return self._run("log", "-1", "--format=%B", rev).strip()

    def refs(self, prefix: str = "refs/") -> dict[str, str]:
        out = self._run("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.git.execute(["git", "merge-base", "--is-ancestor", a, b], with_exceptions=False,
                                with_extended_output=True)[0] == 0

    def diff(self, a: str, b: str, paths: tuple[str, ...] = ()) -> str:
        return self._run("diff", a, b, "--", *paths)

    # -- writing -------------------------------------------------------------------------------

    def commit(self, paths: tuple[str, ...], message: str, trailers: dict[str, str] | None = None) -> str:
        """Commit exactly `paths` (as they are in the tree) with `message`; returns the sha."""
        body = message.strip() or "experiment"
        if trailers:
            body += "\n\n" + "\n".join(f"{k}: {v}" for k, v in trailers.items())
        self._run("add", "-A", "--", *paths)
        self._run("commit", "--no-verify", "-q", "-m", body, "--", *paths, env=self._identity_env())
        return self.head()

    def _identity_env(self) -> dict[str, str]:
        """A fallback author for repos (e.g. on CI) where user.email is not configured."""
        if self.git.execute(["git", "config", "user.email"], with_exceptions=False).strip():
            return {}
        name, email = IDENTITY["GIT_AUTHOR_NAME"], IDENTITY["GIT_AUTHOR_EMAIL"]
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}

    def set_ref(self, ref: str, sha: str) -> None:
        self._run("update-ref", ref, sha)

    def delete_ref(self, ref: str) -> None:
        self.git.execute(["git", "update-ref", "-d", ref], with_exceptions=False)

    def add_note(self, sha: str, text: str) -> None:
        self._run("notes", "--ref", NOTES_REF, "add", "-f", "-m", text, sha, env=self._identity_env())

    def note(self, sha: str) -> str | None:
        out = self.git.execute(["git", "notes", "--ref", NOTES_REF, "show", sha], with_exceptions=False)
        return out or None

    def reset_hard(self, sha: str) -> None:
        """Move the current branch and the tree to `sha`. Callers make sure nothing of the
        user's is uncommitted first (see Repo.save_user_changes)."""
        self._run("reset", "-q", "--hard", sha)

    def restore(self, rev: str, paths: list[str]) -> None:
        """Put tracked `paths` back as they are in `rev` (deleted ones come back too)."""
        if paths:
            self._run("checkout", rev, "--", *paths)

    def checkout_new_branch(self, name: str, at: str) -> None:
        self._run("checkout", "-q", "-b", name, at)

    def checkout(self, name: str) -> None:
        self._run("checkout", "-q", name)

    def branch_exists(self, name: str) -> bool:
        return self.resolve(f"refs/heads/{name}") is not None

    def stash_user_changes(self, message: str) -> bool:
        """Stash tracked changes (never lost: `git stash list`). Returns True if a stash was made."""
        before = self.resolve("refs/stash")
        self._run("stash", "push", "-q", "-m", message)
        return self.resolve("refs/stash") != before
