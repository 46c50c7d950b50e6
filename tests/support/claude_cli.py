"""Install the real Claude Code CLI (npm @anthropic-ai/claude-code) into a cache dir for tests.

The first call runs `npm install` into `<cache>/claude-code` (a few seconds with the npm registry
reachable); later calls only check a stamp file. npm may skip the package's postinstall (its
install-script policy), which is what puts the native binary in place: then `node install.cjs`
is run by hand. A file lock keeps parallel test workers from installing twice.

Cache dir: `$HARNESS_TEST_CACHE` if set, else `<repo>/.cache` (gitignored).
Version: `$HARNESS_TEST_CLAUDE_VERSION` (default pinned below) so CI and this machine agree.
`HARNESS_REQUIRE_CLIENTS=1` (CI) turns the skip when it cannot be installed into a failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLAUDE_VERSION = os.environ.get("HARNESS_TEST_CLAUDE_VERSION", "2.1.197")
INSTALL_TIMEOUT_S = 600.0
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "@anthropic-ai/claude-code"
# Every test run of Claude Code: no telemetry, update checks or other traffic of its own.
QUIET_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


class ClaudeInstallError(RuntimeError):
    """Claude Code could not be installed; the message says why (tests skip with it, loudly)."""


@dataclass(frozen=True)
class ClaudeInstall:
    binary: Path
    version: str
    install_seconds: float | None  # None: it was already cached


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_TEST_CACHE") or REPO_ROOT / ".cache")


def ensure_claude(cache: Path | None = None, version: str = CLAUDE_VERSION) -> ClaudeInstall:
    """Return the cached `claude` binary, installing @anthropic-ai/claude-code@version if needed."""
    prefix = (cache or cache_dir()) / "claude-code"
    binary = prefix / "node_modules" / ".bin" / "claude"
    stamp = prefix / ".installed"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / "claude-code.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits, then finds the stamp
        if _works(stamp, binary, version):
            return ClaudeInstall(binary, version, None)
        started = time.monotonic()
        _install(prefix, version)
        _place_native_binary(prefix)
        if not _version_ok(binary, version):
            raise ClaudeInstallError(f"npm installed {PACKAGE}@{version} but {binary} --version does not run")
        stamp.write_text(version, encoding="utf-8")
        return ClaudeInstall(binary, version, time.monotonic() - started)


def clients_required() -> bool:
    """HARNESS_REQUIRE_CLIENTS=1 (CI): a real client that cannot be installed fails the test."""
    return os.environ.get("HARNESS_REQUIRE_CLIENTS", "").strip().lower() not in ("", "0", "false", "no")


def require_claude() -> str:
    """The cached `claude` binary for a test, or a loud skip saying why it could not be had (a
    failure instead when HARNESS_REQUIRE_CLIENTS is set, as in CI)."""
    try:
        return str(ensure_claude().binary)
    except ClaudeInstallError as e:
        message = f"LOUD SKIP: the real Claude Code CLI could not be installed: {e}"
        if clients_required():
            pytest.fail(message.replace("LOUD SKIP", "HARNESS_REQUIRE_CLIENTS is set"), pytrace=False)
        print(message, file=sys.stderr)
        pytest.skip(message)


def _works(stamp: Path, binary: Path, version: str) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == version and binary.exists()
    except FileNotFoundError:
        return False


def _install(prefix: Path, version: str) -> None:
    npm = shutil.which("npm")
    if not npm:
        raise ClaudeInstallError("npm is not installed (apt-get install nodejs npm), so Claude Code cannot be")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{PACKAGE}@{version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClaudeInstallError(f"npm install {PACKAGE} took over {INSTALL_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        raise ClaudeInstallError(f"npm install {PACKAGE}@{version} failed: {done.stderr.strip()[-500:]}")


def _place_native_binary(prefix: Path) -> None:
    """Run the package's postinstall by hand when npm skipped it (the bin is then a stub)."""
    package_dir = prefix / "node_modules" / "@anthropic-ai" / "claude-code"
    binary = prefix / "node_modules" / ".bin" / "claude"
    if _version_ok(binary, None):
        return
    node = shutil.which("node")
    if not node or not (package_dir / "install.cjs").is_file():
        raise ClaudeInstallError(f"{PACKAGE}'s native binary is missing and install.cjs cannot be run")
    done = subprocess.run([node, "install.cjs"], cwd=package_dir, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ClaudeInstallError(f"node install.cjs failed: {done.stderr.strip()[-500:]}")


def _version_ok(binary: Path, version: str | None) -> bool:
    if not binary.exists():
        return False
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "DISABLE_AUTOUPDATER": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and (version is None or version in out.stdout)
