"""A small git repository for one agent backend to edit: train.py, a fixed prepare.py, and the
notes an agent may read and write in a gitignored archive, committed once."""

from __future__ import annotations

import subprocess
from pathlib import Path

ARCHIVE = ".auto-log-research"


def make_agent_repo(root: Path, train: str, idea: str) -> Path:
    """`train` is train.py's text; `idea` the one line of ideas_queue.md."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(train)
    (root / "prepare.py").write_text("FIXED = 1\n")
    archive = root / ARCHIVE
    archive.mkdir()
    (archive / "insights.md").write_text("## Current Best\n")
    (archive / "ideas_queue.md").write_text(idea + "\n")
    (root / ".gitignore").write_text(f"{ARCHIVE}/\n")
    for cmd in (["init", "-q"], ["config", "user.name", "t"], ["config", "user.email", "t@t"],
                ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    return root
