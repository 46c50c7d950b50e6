"""The command agent runs real shell commands in a real temporary repo."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.agents.base import AgentContext, TargetInfo
from harness.agents.command import CommandAgent
from harness.errors import AgentError, AgentSetupError, AgentTimeout

PROMPT = "Improve val_bpb.\nThe best is 1.234.\n"


def context(tmp_path: Path, retry_error: str | None = None) -> AgentContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "train.py").write_text("LR = 0.1\n")
    return AgentContext(workdir=work, archive_dir=tmp_path / "archive", experiment=7,
                        target=TargetInfo(editable=("train.py",)), prompt=PROMPT, retry_error=retry_error)


def test_prompt_on_stdin_and_in_a_file_env_set_and_last_line_is_the_description(tmp_path: Path):
    script = (
        'cat > stdin.txt; cp "$HARNESS_PROMPT_FILE" file.txt; '
        'echo "$HARNESS_EXPERIMENT|$HARNESS_ARCHIVE_DIR|${HARNESS_RETRY_ERROR-unset}|$PWD" > env.txt; '
        "sed -i 's/0.1/0.2/' train.py; "
        'echo "thinking..."; echo "LR 0.1 -> 0.2: a hotter LR"; echo; echo "   "; echo noise >&2'
    )
    ctx = context(tmp_path)
    proposal = CommandAgent(script).propose(ctx)
    work = ctx.workdir
    assert proposal.description == "LR 0.1 -> 0.2: a hotter LR"
    assert (work / "stdin.txt").read_text() == PROMPT
    assert (work / "file.txt").read_text() == PROMPT
    assert Path(proposal.details["prompt_file"]).is_relative_to(ctx.archive_dir)
    experiment, archive, retry, cwd = (work / "env.txt").read_text().strip().split("|")
    assert (experiment, archive, retry) == ("7", str(ctx.archive_dir), "unset")
    assert Path(cwd).resolve() == work.resolve()
    assert (work / "train.py").read_text() == "LR = 0.2\n"


def test_retry_error_is_passed_and_silence_gives_the_default_description(tmp_path: Path):
    ctx = context(tmp_path, retry_error="train.py line 3: invalid syntax")
    proposal = CommandAgent('printf "%s" "$HARNESS_RETRY_ERROR" > retry.txt').propose(ctx)
    assert (ctx.workdir / "retry.txt").read_text() == "train.py line 3: invalid syntax"
    assert proposal.description == "edit by command agent"


def test_a_command_that_does_not_read_stdin_still_works(tmp_path: Path):
    ctx = context(tmp_path)
    big = AgentContext(**{**ctx.__dict__, "prompt": "x" * 2_000_000})  # more than a pipe holds
    assert CommandAgent("echo done").propose(big).description == "done"


def test_non_zero_exit_is_an_agent_error_with_the_end_of_stderr(tmp_path: Path):
    script = "for i in $(seq 1 50); do echo line$i >&2; done; echo 'boom: no API key' >&2; exit 3"
    with pytest.raises(AgentError) as info:
        CommandAgent(script).propose(context(tmp_path))
    message = str(info.value)
    assert "exited with status 3" in message and "boom: no API key" in message
    assert "line50" in message and "line10\n" not in message  # only the last lines
    assert not isinstance(info.value, AgentTimeout)


def test_a_missing_program_is_a_setup_error(tmp_path: Path):
    with pytest.raises(AgentSetupError, match="not found"):
        CommandAgent("no-such-agent-binary-xyz --go").propose(context(tmp_path))


def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    ctx = context(tmp_path)
    script = "sleep 60 & echo $! > child.pid; wait"
    started = time.monotonic()
    with pytest.raises(AgentTimeout):
        CommandAgent(script, timeout_s=1.0).propose(ctx)
    assert time.monotonic() - started < 15
    child = int((ctx.workdir / "child.pid").read_text())
    assert not _alive(child), "the child sleep outlived the timeout"


def test_background_children_left_behind_are_stopped(tmp_path: Path):
    ctx = context(tmp_path)
    proposal = CommandAgent("sleep 60 & echo $! > child.pid; echo started it").propose(ctx)
    assert proposal.description == "started it"
    assert not _alive(int((ctx.workdir / "child.pid").read_text()))


def test_huge_output_is_capped_and_does_not_hang(tmp_path: Path):
    # ~50 MB on stdout and ~10 MB on stderr; only the tails are kept
    script = "head -c 50000000 /dev/zero | tr '\\0' 'a'; head -c 10000000 /dev/zero >&2; echo; echo final words"
    started = time.monotonic()
    proposal = CommandAgent(script, output_cap=64 * 1024).propose(context(tmp_path))
    assert time.monotonic() - started < 60
    assert proposal.description == "final words"
    assert proposal.details["stdout_bytes"] > 50_000_000 and proposal.details["stderr_bytes"] == 10_000_000


def test_an_empty_command_is_refused(tmp_path: Path):
    with pytest.raises(AgentSetupError):
        CommandAgent("  ")


def _alive(pid: int) -> bool:
    for _ in range(50):  # give the kernel a moment to reap it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        if _zombie(pid):
            return False
        time.sleep(0.05)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False
