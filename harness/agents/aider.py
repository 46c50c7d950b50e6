"""The `aider` backend: the aider CLI run non-interactively (`aider --message-file ...`) once per
experiment, with any model aider supports (Anthropic, OpenAI, a local Ollama / OpenAI-compatible
server, ...).

aider edits the files in place. It runs with `--no-git`: the harness owns every commit, and
without a repo aider neither commits, stages, nor touches .gitignore, and only offers the files
it was given (no "add prepare.py to the chat?"). Network side trips of its own (update check,
analytics, URL scraping, shell commands) are switched off. Everything aider said to and heard
from the model is read back from its `--llm-history-file`; tokens and cost from its usage lines.
aider-chat pins ~100 exact dependencies, so it is never a dependency of this package: it is
found on PATH (or `HARNESS_AIDER_BIN`) and runs from its own environment.

Stage models: aider's own split is `--weak-model` (commit messages, chat summaries), which
`summary_model` sets; the harness makes no summary call of its own for aider.
Price: what aider printed, else nothing for a local model (Ollama, or an OpenAI-compatible server
on localhost), else harness.pricing (the most expensive tier for a model it does not know).
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import pricing
from harness.agents.base import AgentContext, Proposal, Usage, full_prompt, summary_enabled
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout
from harness.llmlog import LlmLog, redact

OUTPUT_ALLOWANCE = 8_000  # output tokens one aider run may spend, for the cap estimate
AIDER_OVERHEAD_CHARS = 12_000  # aider's own system prompt and edit-format examples, for the estimate
MAX_DESCRIPTION = 200
KILL_GRACE_S = 3.0
_NOT_FOUND = ("aider not found: install it in its own environment with `uv tool install aider-chat` "
              "(or `pipx install aider-chat`), or choose --agent offline")

# One-shot, git-free, quiet, and no network of its own. (aider declines shell commands under
# --yes-always anyway; --no-suggest-shell-commands keeps the model from spending tokens on them.)
BASE_FLAGS = (
    "--yes-always", "--no-git", "--no-gitignore", "--no-auto-commits", "--no-dirty-commits",
    "--no-stream", "--no-pretty", "--no-fancy-input", "--no-check-update", "--no-show-release-notes",
    "--no-show-model-warnings", "--no-analytics", "--no-detect-urls", "--no-suggest-shell-commands",
    "--no-auto-lint", "--no-restore-chat-history", "--map-tokens", "0", "--encoding", "utf-8",
)


# --- reading aider's output (plain code, tested on canned text) ------------------------------

_TOKENS = re.compile(
    r"^Tokens: (?P<sent>[\d.]+k?) sent(?:, (?P<write>[\d.]+k?) cache write)?"
    r"(?:, (?P<hit>[\d.]+k?) cache hit)?, (?P<recv>[\d.]+k?) received\.", re.MULTILINE)
_COST = re.compile(r"Cost: \$(?P<message>[\d.]+) message(?:, \$(?P<session>[\d.]+) session)?")
# litellm's names for errors that may pass by themselves (aider prints them when it gives up)
_TRANSIENT_ERRORS = ("RateLimitError", "ServiceUnavailableError", "InternalServerError", "APIConnectionError",
                     "Timeout", "overloaded", "Overloaded")
_AUTH_ERRORS = ("AuthenticationError", "invalid x-api-key", "Incorrect API key", "invalid api key")
_APPLIED = re.compile(r"^Applied edit to (?P<path>.+)$", re.MULTILINE)


def _count(text: str | None) -> int:
    """aider prints counts as 950, 2.1k or 12k; the k forms are rounded (good to ~5%)."""
    if not text:
        return 0
    return round(float(text[:-1]) * 1000) if text.endswith("k") else int(float(text))


def parse_usage(output: str) -> tuple[Usage, bool]:
    """Tokens summed over aider's per-message usage lines, and the cost it reported: its last
    cumulative "session" figure, else the sum of its "message" ones. The flag says whether aider
    printed a cost at all (it does only for models it can price)."""
    sent = received = cached = 0
    for m in _TOKENS.finditer(output):
        sent += _count(m["sent"])
        received += _count(m["recv"])
        cached += _count(m["hit"])
    costs = list(_COST.finditer(output))
    sessions = [m["session"] for m in costs if m["session"]]
    cost = float(sessions[-1]) if sessions else sum(float(m["message"]) for m in costs)
    return Usage(sent, received, cached, cost), bool(costs)


def parse_llm_history(text: str) -> tuple[int, list[str]]:
    """From aider's --llm-history-file: how many requests it sent, and each reply's text."""
    requests, replies, current = 0, [], None
    for line in text.splitlines():
        if line.startswith("TO LLM "):
            requests += 1
            current = None
        elif line.startswith("LLM RESPONSE "):
            current = []
            replies.append(current)
        elif current is not None and (line == "ASSISTANT" or line.startswith("ASSISTANT ")):
            current.append(line[len("ASSISTANT "):])
    return requests, ["\n".join(lines).strip() for lines in replies]


def applied_edits(output: str) -> list[str]:
    return [m["path"].strip() for m in _APPLIED.finditer(output)]


def _prose(reply: str) -> tuple[list[str], list[str]]:
    """The reply's prose lines before its first code fence, and after its last one."""
    before: list[str] = []
    after: list[str] = []
    inside = seen_fence = False
    lines = reply.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("```"):
            inside, seen_fence = not inside, True
            after = []
            continue
        next_is_fence = i + 1 < len(lines) and lines[i + 1].strip().startswith("```")
        if inside or not stripped or next_is_fence:  # next_is_fence: the file name of an edit block
            continue
        (after if seen_fence else before).append(stripped.strip("*`#> ").strip())
    return before, after


def describe_reply(reply: str) -> str:
    """One line from the reply: the closing line if there is prose after the edits (the prompt
    asks for the hypothesis there), else the first sentence of the opening prose."""
    before, after = _prose(reply)
    if after:
        return after[-1][:MAX_DESCRIPTION]
    if before:
        return re.split(r"(?<=[.!?])\s", before[0], maxsplit=1)[0][:MAX_DESCRIPTION]
    return ""


_KNOB = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(.+?)\s*(?:#.*)?$")


def describe_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """What changed, when the reply says nothing usable: `KNOB old -> new`, else the files."""
    knobs, files = [], []
    for name in sorted(after):
        if before.get(name) == after[name]:
            continue
        files.append(name)
        old = {m[1]: m[2] for m in map(_KNOB.match, before.get(name, "").splitlines()) if m}
        for line in difflib.ndiff(before.get(name, "").splitlines(), after[name].splitlines()):
            m = _KNOB.match(line[2:]) if line.startswith("+ ") else None
            if m and old.get(m[1]) != m[2]:
                knobs.append(f"{m[1]} {old.get(m[1], '(new)')} -> {m[2]}")
    if knobs:
        return "; ".join(knobs)[:MAX_DESCRIPTION]
    return f"aider edited {', '.join(files)}" if files else ""


# --- the command line ------------------------------------------------------------------------


def find_aider(binary: str | None = None) -> str:
    """The aider executable: the given path, else $HARNESS_AIDER_BIN, else `aider` on PATH."""
    wanted = binary or os.environ.get("HARNESS_AIDER_BIN") or "aider"
    found = shutil.which(wanted)
    if not found:
        where = f" (looked for {wanted!r})" if wanted != "aider" else ""
        raise AgentSetupError(_NOT_FOUND + where)
    return found


def _inside(path: Path, workdir: Path) -> str | None:
    try:
        return path.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return None


def build_command(binary: str, ctx: AgentContext, settings: AgentSettings, scratch: Path,
                  extra_args: Sequence[str] = ()) -> list[str]:
    """`scratch` (outside the working tree) holds the message file and aider's history files,
    so aider leaves nothing behind in the repository."""
    cmd = [binary, *BASE_FLAGS,
           "--message-file", str(scratch / "message.md"),
           "--chat-history-file", str(scratch / "chat.md"),
           "--input-history-file", str(scratch / "input.history"),
           "--llm-history-file", str(scratch / "llm.history")]
    if settings.model:
        cmd += ["--model", settings.model]
    if settings.summary_model and summary_enabled(settings.summary_model):
        cmd += ["--weak-model", settings.summary_model]  # aider's own stage split
    cmd += list(extra_args)
    # Notes inside the working tree are editable, as the prompt allows. An editable file outside
    # it (a worker's worktree, with the archive elsewhere) would move aider's root up to a common
    # parent, so those notes go in read-only instead.
    for path in (ctx.archive_dir / name for name in ctx.notes_files):
        if path.is_file():
            rel = _inside(path, ctx.workdir)
            cmd += [rel] if rel else ["--read", str(path.resolve())]
    return [*cmd, *ctx.target.editable]


# --- running it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AiderRun:
    returncode: int | None  # None: stopped at the timeout
    output: str  # stdout and stderr together, in order
    duration_s: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_aider(cmd: list[str], cwd: Path, env: Mapping[str, str], timeout_s: float) -> AiderRun:
    """Run aider in its own process group; at the timeout (or on Ctrl-C) stop the whole group,
    so no helper it started outlives it. What it printed so far is kept either way."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        returncode: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        output, _ = proc.communicate()
        returncode = None
    except BaseException:
        _stop_group(proc)
        raise
    return AiderRun(returncode, output, time.monotonic() - started)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group, give it a moment to exit cleanly, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            try:
                proc.wait(KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass


def _tail(output: str, lines: int = 5) -> str:
    return " | ".join(ln.strip() for ln in output.strip().splitlines()[-lines:] if ln.strip())


# --- the backend -----------------------------------------------------------------------------


class AiderAgent:
    name = "aider"

    def __init__(
        self,
        settings: AgentSettings,
        log: LlmLog | None = None,
        caps: Caps | None = None,
        *,
        binary: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] | None = None,
    ):
        self.settings = settings
        self.log = log  # None: the archive's llm_calls.jsonl
        self.caps = caps or Caps(settings.max_cost, settings.max_tokens)
        self.binary = find_aider(binary)  # at construction: a missing aider stops the loop before the baseline
        self.env = env  # extra variables on top of the harness's environment
        # e.g. "--edit-format diff --model-metadata-file m.json": aider options the harness has no name for
        self.extra_args = tuple(extra_args if extra_args is not None
                                else shlex.split(os.environ.get("HARNESS_AIDER_ARGS", "")))

    def propose(self, ctx: AgentContext) -> Proposal:
        prompt = full_prompt(ctx)
        files = {name: _read(ctx.workdir / name) for name in ctx.target.editable}
        model = self.settings.model
        env = {**os.environ, **(self.env or {})}
        local = pricing.is_local(model, env)
        self.caps.check_call(model, len(prompt) + sum(map(len, files.values())) + AIDER_OVERHEAD_CHARS,
                             OUTPUT_ALLOWANCE, local=local)
        log = self.log or LlmLog.in_archive(ctx.archive_dir)
        with tempfile.TemporaryDirectory(prefix="harness-aider-") as tmp, \
                log.call(experiment=ctx.experiment, backend=self.name, stage="propose",
                         model=model, prompt=prompt) as call:
            scratch = Path(tmp)
            (scratch / "message.md").write_text(prompt, encoding="utf-8")
            cmd = build_command(self.binary, ctx, self.settings, scratch, self.extra_args)
            run = run_aider(cmd, ctx.workdir, env, self.settings.timeout_s)
            output = redact(run.output, env)  # env: aider's own, which may add keys to ours
            requests, replies = parse_llm_history(_read(scratch / "llm.history"))
            usage, call.note = priced_usage(output, model, local)
            edits = applied_edits(output)
            call.response = output
            call.tool_calls = [{"name": "edit", "path": p} for p in edits]
            call.tokens_in, call.tokens_out = usage.tokens_in, usage.tokens_out
            call.tokens_cached, call.cost_usd = usage.tokens_cached, usage.cost_usd
            call.retries = output.count("Retrying in ")  # litellm's backoff messages
            self.caps.add(usage.cost_usd, usage.tokens)
            self._fail_if_unusable(run, output, replies)  # the log records the error it raises
        after = {name: _read(ctx.workdir / name) for name in ctx.target.editable}
        changed = [name for name in files if files[name] != after[name]]
        last_reply = next(r for r in reversed(replies) if r)
        description = (describe_reply(last_reply) or describe_diff(files, after)
                       or "aider made no change")
        return Proposal(
            description=description,
            usage=usage,
            details={"changed_files": changed, "applied_edits": edits, "model_requests": requests,
                     "duration_s": round(run.duration_s, 3), "returncode": run.returncode},
        )


    def _fail_if_unusable(self, run: AiderRun, output: str, replies: list[str]) -> None:
        timeout = self.settings.timeout_s
        if run.timed_out:
            raise AgentTimeout(f"aider ran past the agent timeout ({timeout:g}s) and was stopped",
                               hint="raise --agent-timeout, or check that the model server answers")
        if run.returncode != 0:
            raise AgentError(f"aider exited {run.returncode}: {_tail(output)}",
                             hint="see aider's output in llm_calls.jsonl")
        if not any(replies):  # aider exits 0 even when every model call failed; it printed why
            raise no_reply_error(output)


def no_reply_error(output: str) -> AgentError | AgentSetupError:
    """What a run in which every model call failed means: a rejected key stops the loop (the
    same key fails all night); rate limits, overload and lost connections may pass."""
    if any(sign in output for sign in _AUTH_ERRORS):
        return AgentSetupError("aider: the model's API rejected the key (AuthenticationError)",
                               hint="check the API key aider uses (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...)")
    transient = any(sign in output for sign in _TRANSIENT_ERRORS)
    return AgentError(f"aider got no reply from the model: {_tail(output)}",
                      hint="check the model name, its API key and base URL", transient=transient)


def priced_usage(output: str, model: str | None, local: bool = False) -> tuple[Usage, str | None]:
    """Usage from aider's output, and a note for the log when its cost is not aider's own:
    aider's figure when it printed one; 0 for a local model; else harness.pricing, which
    prices a model it does not know at its most expensive tier (said once, on stderr too)."""
    usage, priced = parse_usage(output)
    if priced or not usage.tokens:
        return usage, None
    if local:
        return Usage(usage.tokens_in, usage.tokens_out, usage.tokens_cached, 0.0), "a local model: cost 0"
    found = pricing.lookup(model)
    cost = pricing.cost(model, usage.tokens_in - usage.tokens_cached, usage.tokens_out,
                        cache_read=usage.tokens_cached)
    note = "aider printed no cost; priced from harness.pricing"
    if found.source == "default":
        note = (f"aider printed no cost for {model or 'its default model'}, which harness.pricing does not "
                "know: counted at the most expensive tier, so --max-cost stops early")
        if pricing.first_time(note):
            print(f"note: {note}", file=sys.stderr)
    return Usage(usage.tokens_in, usage.tokens_out, usage.tokens_cached, cost), note


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
