"""The `command` agent: any program that edits the working tree, run once per experiment.

CMD runs through the shell in the working tree, in its own process group, with:
- the prompt on stdin, and its path in HARNESS_PROMPT_FILE (a file under the archive's tmp/);
- HARNESS_EXPERIMENT, HARNESS_ARCHIVE_DIR, HARNESS_EDITABLE (space-separated), HARNESS_METRIC,
  HARNESS_DIRECTION, and HARNESS_RETRY_ERROR when the previous proposal was rejected.
Its last non-empty stdout line is the description (the hypothesis). A non-zero exit is an
AgentError carrying the end of stderr; running past the timeout kills the whole group
(AgentTimeout). Only the tail of each output stream is kept, so a chatty program can neither
hang the harness on a full pipe nor fill its memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from harness import atomic
from harness.agents.base import AgentContext, Proposal
from harness.errors import AgentError, AgentSetupError, AgentTimeout

DEFAULT_DESCRIPTION = "edit by command agent"
OUTPUT_CAP = 256 * 1024  # bytes of each stream's tail that are kept
MAX_DESCRIPTION = 300
STDERR_LINES = 8  # lines of stderr an AgentError quotes
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL


class _Tail:
    """Drains a pipe on a thread, keeping only its last `cap` bytes."""

    def __init__(self, pipe, cap: int):
        self.data = bytearray()
        self.total = 0
        self._pipe, self._cap = pipe, cap
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for chunk in iter(lambda: self._pipe.read1(65536), b""):
                self.total += len(chunk)
                self.data += chunk
                if len(self.data) > 2 * self._cap:  # trim in batches, not on every chunk
                    del self.data[: len(self.data) - self._cap]
        except (OSError, ValueError):
            pass  # the pipe was closed under us: what was read is what there is

    def text(self, timeout: float) -> str:
        self._thread.join(timeout)
        return bytes(self.data[-self._cap:]).decode("utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        return self.total > self._cap


class CommandAgent:
    """Runs a user-supplied command as the agent; see the module docstring."""

    name = "command"

    def __init__(self, command: str, timeout_s: float = 900.0, output_cap: int = OUTPUT_CAP):
        if not command or not command.strip():
            raise AgentSetupError("the command agent needs a command", hint="e.g. --agent-command './my_agent.sh'")
        self.command = command
        self.timeout_s = timeout_s
        self.output_cap = output_cap

    def propose(self, ctx: AgentContext) -> Proposal:
        prompt_file = write_prompt(ctx)
        started = time.monotonic()
        proc = subprocess.Popen(
            self.command, shell=True, cwd=ctx.workdir, env=self._env(ctx, prompt_file),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        out, err = _Tail(proc.stdout, self.output_cap), _Tail(proc.stderr, self.output_cap)
        feeder = threading.Thread(target=_feed, args=(proc.stdin, ctx.prompt.encode("utf-8")), daemon=True)
        feeder.start()
        try:
            code = proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise AgentTimeout(f"agent command ran past its {self.timeout_s:g} s timeout and was stopped",
                               hint="raise agent_timeout or make the command faster") from None
        finally:
            _kill_group(proc)  # whatever it left running in the background goes too
        stdout, stderr = out.text(timeout=5), err.text(timeout=5)
        if code != 0:
            raise _failure(code, stderr)
        details = {"prompt_file": str(prompt_file), "seconds": round(time.monotonic() - started, 3),
                   "stdout_bytes": out.total, "stderr_bytes": err.total}
        return Proposal(description=last_line(stdout) or DEFAULT_DESCRIPTION, details=details)

    def _env(self, ctx: AgentContext, prompt_file: Path) -> dict[str, str]:
        env = {
            **os.environ,
            "HARNESS_PROMPT_FILE": str(prompt_file),
            "HARNESS_EXPERIMENT": str(ctx.experiment),
            "HARNESS_ARCHIVE_DIR": str(ctx.archive_dir),
            "HARNESS_EDITABLE": " ".join(ctx.target.editable),
            "HARNESS_METRIC": ctx.target.metric,
            "HARNESS_DIRECTION": ctx.target.direction,
        }
        env.pop("HARNESS_RETRY_ERROR", None)  # never leak a stale one from the parent
        if ctx.retry_error:
            env["HARNESS_RETRY_ERROR"] = ctx.retry_error
        return env


def write_prompt(ctx: AgentContext) -> Path:
    """The prompt as a file the command can read (the archive's tmp/, outside the working tree)."""
    path = ctx.archive_dir / "tmp" / f"prompt-{ctx.experiment:04d}.md"
    atomic.write_text(path, ctx.prompt, fsync=False)
    return path


def last_line(text: str) -> str:
    """The last non-empty line, on one line and capped."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return " ".join(line.split())[:MAX_DESCRIPTION]
    return ""


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the command need not read its stdin
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            if not _group_alive(proc.pid):
                return
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _failure(code: int, stderr: str) -> AgentError:
    tail = "\n".join(line for line in stderr.splitlines() if line.strip())
    tail = "\n".join(tail.splitlines()[-STDERR_LINES:])
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    if code == 127 and "not found" in tail:
        return AgentSetupError(f"agent command not found (status 127): {tail[-300:]}",
                               hint="check --agent-command; the command runs through /bin/sh in the repo root")
    return AgentError(f"agent command {how}" + (f":\n{tail}" if tail else " (no stderr)"),
                      hint="run the command by hand in the repository to see what it does")
