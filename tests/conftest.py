"""Shared fixtures: the repository root, a tiny prepared dataset, and an isolated cache per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_CORPUS = ROOT / "tests" / "data" / "tiny"  # three short plays; the last (tempest.txt) is val
TINY_VOCAB = 1024  # small vocabulary: keeps the toy models of train/harness tests cheap


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _isolated_alr_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's real cache, or inherits contract variables from
    their shell: a test that needs prepared data asks for `alr_env`."""
    for name in [k for k in os.environ if k.startswith("ALR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ALR_CACHE_DIR", str(tmp_path / "alr-cache-empty"))


@pytest.fixture(scope="session")
def alr_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Env vars that point at a tiny dataset prepared once per session by the real CLI:
    `python prepare.py --text tests/data/tiny --name tiny --vocab-size 1024`. Its val split (The
    Tempest) is ~44K tokens, so EVAL_TOKENS for it is that, rounded down to whole MAX_SEQ_LEN
    sequences, and evaluate_bpb is quick on a toy model. Use as env={**os.environ, **alr_env}."""
    cache = tmp_path_factory.mktemp("alr-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALR_")}
    env["ALR_CACHE_DIR"] = str(cache)
    cmd = [sys.executable, str(ROOT / "prepare.py"), "--text", str(TINY_CORPUS), "--name", "tiny",
           "--vocab-size", str(TINY_VOCAB)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"preparing the tiny dataset failed:\n{proc.stdout}\n{proc.stderr}"
    return {"ALR_CACHE_DIR": str(cache), "ALR_DATASET": "tiny"}
