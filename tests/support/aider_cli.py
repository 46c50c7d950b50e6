"""Install the real aider CLI (aider-chat) into its own cached virtual environment for tests.

aider-chat pins about a hundred exact dependencies, so it must never share a venv with this
package. The first call creates `<cache>/aider-venv` and pip-installs a pinned aider-chat there
(about a minute with PyPI reachable); later calls only check a stamp file. An inter-process file
lock keeps parallel test workers (or several checkouts sharing a cache) from installing twice.

Cache dir: `$HARNESS_TEST_CACHE` if set, else `<repo>/.cache` (gitignored).
`HARNESS_REQUIRE_CLIENTS=1` (CI) turns the skip when it cannot be installed into a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

AIDER_VERSION = os.environ.get("HARNESS_TEST_AIDER_VERSION", "0.86.2")
INSTALL_TIMEOUT_S = 900.0
REPO_ROOT = Path(__file__).resolve().parents[2]
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens: a call to the internet fails at once


class AiderInstallError(RuntimeError):
    """aider-chat could not be installed; the message says why (tests skip with it)."""


@dataclass(frozen=True)
class AiderInstall:
    binary: Path
    version: str
    install_seconds: float | None  # None: it was already cached


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_TEST_CACHE") or REPO_ROOT / ".cache")


def ensure_aider(cache: Path | None = None, version: str = AIDER_VERSION) -> AiderInstall:
    """Return the cached aider binary, installing aider-chat==version first if needed."""
    venv = (cache or cache_dir()) / "aider-venv"
    binary = venv / "bin" / "aider"
    stamp = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "aider-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits and then finds the stamp
        if _stamp_ok(stamp, binary, version):
            return AiderInstall(binary, version, None)
        started = time.monotonic()
        _install(venv, version)
        if not binary.is_file():
            raise AiderInstallError(f"pip installed aider-chat=={version} but {binary} is missing")
        stamp.write_text(version, encoding="utf-8")
        return AiderInstall(binary, version, time.monotonic() - started)


def clients_required() -> bool:
    """HARNESS_REQUIRE_CLIENTS=1 (CI): a real client that cannot be installed fails the test
    (the same rule as support/claude_cli.py; this file also runs as a script, so it is repeated)."""
    return os.environ.get("HARNESS_REQUIRE_CLIENTS", "").strip().lower() not in ("", "0", "false", "no")


def require_aider() -> str:
    """The cached aider binary for a test, or a loud skip saying why it could not be had (a
    failure instead when HARNESS_REQUIRE_CLIENTS, or the older HARNESS_REQUIRE_AIDER, is set,
    as in CI)."""
    try:
        return str(ensure_aider().binary)
    except AiderInstallError as e:
        message = f"LOUD SKIP: the real aider CLI (aider-chat) could not be installed: {e}"
        if clients_required() or os.environ.get("HARNESS_REQUIRE_AIDER"):
            pytest.fail(message.replace("LOUD SKIP", "HARNESS_REQUIRE_CLIENTS is set"), pytrace=False)
        print(message, file=sys.stderr)
        pytest.skip(message)


def offline_env(base_url: str) -> dict[str, str]:
    """aider and litellm pointed at an OpenAI-compatible stand-in, and a dead proxy for
    everything else: a call to the internet fails at once (and aider's output shows it) instead
    of quietly succeeding on a machine with network."""
    return {
        "OPENAI_API_BASE": base_url,
        "OPENAI_API_KEY": "dummy-key-for-the-fake-server",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AIDER_CHECK_UPDATE": "false",
        "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }


def write_model_metadata(path: Path, model: str) -> Path:
    """Context size and prices for a fake model (aider's --model-metadata-file), so aider neither
    fetches litellm's price list nor warns about an unknown model; the prices make it print a cost."""
    path.write_text(json.dumps({model: {
        "max_tokens": 4096, "max_input_tokens": 32000, "max_output_tokens": 4096,
        "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
        "litellm_provider": "openai", "mode": "chat"}}))
    return path


def _stamp_ok(stamp: Path, binary: Path, version: str) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == version and binary.is_file()
    except FileNotFoundError:
        return False


def _install(venv: Path, version: str) -> None:
    # A fresh venv every time: a half-finished earlier install must not leave mixed versions.
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], "create the venv")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, f"aider-chat=={version}"], f"pip install aider-chat=={version}")


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AiderInstallError(f"could not {what}: timed out after {INSTALL_TIMEOUT_S:.0f} s") from e
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise AiderInstallError(f"could not {what} (exit {proc.returncode}): {tail}")


if __name__ == "__main__":
    # `python tests/support/aider_cli.py`: warm the cache ahead of a test run (CI does this).
    result = ensure_aider()
    took = "cached" if result.install_seconds is None else f"installed in {result.install_seconds:.1f} s"
    print(f"aider-chat {result.version}: {result.binary} ({took})")
