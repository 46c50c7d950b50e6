"""Keep the harness's own records safe from an agent's turn.

The archive lives in the working tree (gitignored), where an agent with a shell can reach it:
`rm -rf .auto-log-research`, `git clean -fdx`, or a stray `> results.tsv` would take the night's
record with it. Before each agent turn the shield keeps a copy of the files only the harness
writes (the ledger and the model-call log are append-only; meta.json and manifest.json never
change) and hard links of every attempt's files, in the git directory, outside the tree. After
the turn, `restore()` puts back whatever was deleted, truncated or rewritten, and says what, so
the attempt is recorded as a violation. The notes (insights.md, ideas_queue.md) are the agent's to
edit: only a deleted one is put back.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

APPEND_ONLY = ("results.tsv", "llm_calls.jsonl")  # may grow during a turn (the harness logs calls)
FIXED = ("meta.json", "manifest.json")
NOTES = ("insights.md", "ideas_queue.md")  # the agent's to edit, not to delete
_ATTEMPT_DIR = re.compile(r"[0-9a-f]{40}")
SET_ASIDE = ("rejected", "interrupted")  # what the harness undid or discarded, kept for the user


class Shield:
    def __init__(self, archive: Path, backup: Path):
        self.archive = Path(archive)
        self.backup = Path(backup)
        self._saved: dict[str, tuple[int, str]] = {}  # name -> (size, sha256) at the last snapshot
        self._links = True  # False once the file system refuses hard links: folders go unshielded
        self._mutex = threading.Lock()  # parallel workers' agents take turns at once

    def snapshot(self, recorded: set[str]) -> None:
        """Remember the records as they are now (call right before an agent's turn). Only the
        folders of `recorded` attempts are shielded: the harness itself still writes (and on a
        resume clears) the folders of attempts in flight."""
        with self._mutex:
            self.backup.mkdir(parents=True, exist_ok=True)
            for name in (*APPEND_ONLY, *FIXED, *NOTES):
                src = self.archive / name
                if not src.is_file():
                    self._saved.pop(name, None)
                    continue
                data = src.read_bytes()
                self._saved[name] = (len(data), _sha(data))
                copy = self.backup / name
                if not copy.is_file() or copy.stat().st_size != len(data) or _sha(copy.read_bytes()) != _sha(data):
                    _write(copy, data)
            self._link_attempt_files(recorded)

    def restore(self) -> list[str]:
        """Put back what changed since the snapshot that should not have. Returns one line that
        says what was put back, or nothing."""
        touched = []
        with self._mutex:
            for name, (size, digest) in self._saved.items():
                path, copy = self.archive / name, self.backup / name
                data = path.read_bytes() if path.is_file() else None
                kept = data is not None and (name in NOTES or _sha(data[:size]) == digest
                                             and (name in APPEND_ONLY or len(data) == size))
                if kept:
                    continue
                _write(path, copy.read_bytes()[:size])
                touched.append(name)
            gone = self._restore_attempt_files()
        if gone:
            touched.append(f"{gone} archived attempt file{'s' if gone > 1 else ''}")
        if not touched:
            return []
        names = ", ".join(touched[:-1]) + (" and " if len(touched) > 1 else "") + touched[-1]
        return [f"the agent deleted or rewrote {names} in {self.archive.name}/ (all restored)"]

    def _link_attempt_files(self, recorded: set[str]) -> None:
        root = self.backup / "attempts"
        if root.is_dir():  # the backup mirrors the archive as of now: drop what is gone since
            for copy in [c for c in root.rglob("*") if c.is_file()]:
                rel = copy.relative_to(root)
                if rel.parts[0] not in (*recorded, *SET_ASIDE) or not (self.archive / rel).is_file():
                    copy.unlink()
        if not self._links:
            return
        for folder in [*_attempt_dirs(self.archive), *(self.archive / name for name in SET_ASIDE)]:
            if folder.name not in (*recorded, *SET_ASIDE):
                continue
            for src in folder.rglob("*"):
                if not src.is_file():
                    continue
                dst = self.backup / "attempts" / src.relative_to(self.archive)
                if dst.exists() and os.path.samefile(src, dst):
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    dst.unlink(missing_ok=True)
                    os.link(src, dst)
                except OSError:  # another file system, or links not allowed: copies would cost too much
                    self._links = False
                    return

    def _restore_attempt_files(self) -> int:
        root = self.backup / "attempts"
        if not root.is_dir():
            return 0
        restored = 0
        for copy in root.rglob("*"):
            if not copy.is_file():
                continue
            path = self.archive / copy.relative_to(root)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(copy, path)
            except OSError:
                shutil.copy2(copy, path)
            restored += 1
        return restored


def _attempt_dirs(archive: Path) -> list[Path]:
    try:
        return [p for p in archive.iterdir() if p.is_dir() and _ATTEMPT_DIR.fullmatch(p.name)]
    except OSError:
        return []


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".shield-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
