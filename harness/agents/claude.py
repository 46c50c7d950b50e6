"""The `claude` backend: Claude Code run headless (`claude -p`) once per experiment.

Claude Code does the editing itself with its Read/Edit/Write tools; this module decides what it
may touch (an allow-list of tools and paths), runs it in its own process group under a timeout,
and reads the final `result` event of `--output-format stream-json`.

Permission mode: `dontAsk`, not `acceptEdits`. With acceptEdits, Claude Code 2.1 auto-approved a
Bash command that was on no allow-list (it counts simple shell writes as "edits"); dontAsk denies
every tool call that no allow rule names, and reports it in `permission_denials`. (As root,
bypassPermissions is refused anyway.) Reads are allowed by `Read(./**)` only, a rule Claude Code
also applies to Glob and Grep, so the model cannot read outside the repository (and the archive).

Cost: Claude Code checks `--max-budget-usd` after each model turn, so a run can pass it by one
turn. The harness holds back an estimate of one turn (`turn_reserve`) from what is left of
`--max-cost`, and caps each turn's output with CLAUDE_CODE_MAX_OUTPUT_TOKENS, so the night stays
under `--max-cost` unless one turn costs more than the reserve. There is no token limit to pass
on: `--max-tokens` is checked before each run, and one run can pass it by its own use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import pricing
from harness.agents.base import (
    AgentContext,
    Proposal,
    SummaryTask,
    Usage,
    describe,
    full_prompt,
    record_lesson,
    summary_enabled,
    summary_task,
    system_guidance,
)
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded, HarnessError
from harness.llmlog import LlmLog, PendingCall

DEFAULT_MODEL = "sonnet"  # Claude Code's alias for its current Sonnet
DEFAULT_SUMMARY_MODEL = "haiku"
TURN_OUTPUT_TOKENS = 16_000  # CLAUDE_CODE_MAX_OUTPUT_TOKENS unless the user set it: one turn's output
# Claude Code's own system prompt and tool definitions (~26k chars measured with 2.1), rounded up:
# part of every turn's input, so part of the one-turn reserve.
CLAUDE_CODE_OVERHEAD_CHARS = 60_000
SUMMARY_OUTPUT_TOKENS = 1_000
SUMMARY_TIMEOUT_S = 120.0
_TRANSIENT_SIGNS = ("overloaded", "rate limit", "unable to connect", "connection", "timed out", "timeout",
                    "server-side issue", "temporarily")
_LOGIN_SIGNS = ("not logged in", "invalid api key", "please run /login", "authentication_failed",
                "authentication_error", "x-api-key")
_NOT_FOUND = "claude not found: npm install -g @anthropic-ai/claude-code, or choose --agent offline"
_NOT_LOGGED_IN = "claude is not logged in: run `claude` once to log in, or set ANTHROPIC_API_KEY"


# --- parsing stream-json (plain code, tested on canned text) ---------------------------------


@dataclass(frozen=True)
class ClaudeResult:
    text: str
    is_error: bool
    num_turns: int
    cost_usd: float
    usage: Usage
    permission_denials: tuple[dict, ...] = ()
    denied_tool_errors: tuple[str, ...] = ()  # tool results refused by a deny rule (e.g. an Edit)
    tool_calls: tuple[dict, ...] = ()
    session_id: str | None = None
    subtype: str | None = None
    events: int = 0
    extra: dict = field(default_factory=dict)
    retries: int = 0  # API retries Claude Code made (its `api_retry` events)

    @property
    def denied_tools(self) -> list[str]:
        return sorted({str(d.get("tool_name")) for d in self.permission_denials if isinstance(d, dict)})

    @property
    def transient(self) -> bool:
        """An API error that may pass by itself: rate limits, overload, 5xx, no connection."""
        status = self.extra.get("api_error_status")
        if isinstance(status, int):
            return status in (408, 409, 429) or status >= 500
        low = self.text.lower()
        return any(sign in low for sign in _TRANSIENT_SIGNS)

    def log_details(self) -> dict:
        """What the model-call log keeps of a run beyond tokens and cost: a denied tool is
        recorded here, not dropped."""
        return {"num_turns": self.num_turns, "subtype": self.subtype,
                "permission_denials": list(self.permission_denials), "denied_tools": self.denied_tools,
                "denied_tool_errors": list(self.denied_tool_errors), "session_id": self.session_id}


def parse_stream(stdout: str) -> ClaudeResult:
    """Read Claude Code's stream-json output. Raises AgentError if it is not stream-json or
    has no final `result` event."""
    events = []
    for n, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AgentError(f"claude printed malformed stream-json on line {n}: {line[:120]!r}") from None
        if not isinstance(event, dict):
            raise AgentError(f"claude printed malformed stream-json on line {n}: not an object")
        events.append(event)
    results = [e for e in events if e.get("type") == "result"]
    if not results:
        raise AgentError(f"claude ended without a result event ({len(events)} events read)")
    tool_calls, denied = _tool_activity(events)
    retries = sum(1 for e in events if e.get("type") == "system" and e.get("subtype") == "api_retry")
    return _result_from(results[-1], tuple(tool_calls), tuple(denied), len(events), retries)


def _tool_activity(events: list[dict]) -> tuple[list[dict], list[str]]:
    calls, denied = [], []
    for event in events:
        content = (event.get("message") or {}).get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if event.get("type") == "assistant" and block.get("type") == "tool_use":
                calls.append({"name": block.get("name"), "input": block.get("input")})
            elif block.get("type") == "tool_result" and block.get("is_error"):
                body = str(block.get("content"))
                if "denied" in body.lower() or "permission" in body.lower():
                    denied.append(body[:300])
    return calls, denied


def _result_from(result: dict, tool_calls: tuple, denied: tuple, n_events: int, retries: int = 0) -> ClaudeResult:
    usage = result.get("usage") or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    tokens_in = int(usage.get("input_tokens") or 0) + int(usage.get("cache_creation_input_tokens") or 0)
    cost = float(result.get("total_cost_usd") or 0.0)
    return ClaudeResult(
        text=str(result.get("result") or "; ".join(map(str, result.get("errors") or ()))),
        is_error=bool(result.get("is_error")),
        num_turns=int(result.get("num_turns") or 0),
        cost_usd=cost,
        usage=Usage(tokens_in + cached, int(usage.get("output_tokens") or 0), cached, cost),
        permission_denials=tuple(result.get("permission_denials") or ()),
        denied_tool_errors=denied,
        tool_calls=tool_calls,
        session_id=result.get("session_id"),
        subtype=result.get("subtype"),
        events=n_events,
        extra={k: result.get(k) for k in ("duration_ms", "stop_reason", "terminal_reason", "api_error_status")},
        retries=retries,
    )


def looks_like_login_problem(text: str) -> bool:
    low = text.lower()
    return any(sign in low for sign in _LOGIN_SIGNS)


# --- the command line ------------------------------------------------------------------------


def _path_rule(path: Path, workdir: Path) -> str:
    """Claude Code path rules: `./x` is relative to the working dir, `//abs` is absolute."""
    try:
        return "./" + path.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return "/" + path.resolve().as_posix()


def allowed_tools(ctx: AgentContext, allow_shell: bool) -> list[str]:
    files = [ctx.workdir / f for f in ctx.target.editable] + [ctx.archive_dir / n for n in ctx.notes_files]
    # Read rules govern Glob and Grep too; a read anywhere else is denied (and reported).
    rules = ["Read(./**)"]
    if not ctx.archive_dir.resolve().is_relative_to(ctx.workdir.resolve()):
        rules.append(f"Read({_path_rule(ctx.archive_dir, ctx.workdir)}/**)")
    rules += [f"Edit({_path_rule(p, ctx.workdir)})" for p in files]
    if allow_shell:
        rules.append("Bash")
    return rules


def build_command(binary: str, ctx: AgentContext, settings: AgentSettings, budget_usd: float | None = None) -> list[str]:
    tools = ["Read", "Edit", "Write", "Glob", "Grep"] + (["Bash"] if settings.allow_shell else [])
    cmd = [
        binary, "-p",
        "--output-format", "stream-json", "--verbose",
        "--permission-mode", "dontAsk",
        "--tools", ",".join(tools),  # the model is not even offered other tools
        "--allowedTools", ",".join(allowed_tools(ctx, settings.allow_shell)),
        "--max-turns", str(settings.max_turns),
        "--model", settings.model or DEFAULT_MODEL,
        "--append-system-prompt", system_guidance(),
        "--no-session-persistence",
    ]
    if budget_usd is not None:
        # Checked by Claude Code after each turn: the caller leaves a turn's reserve below --max-cost.
        cmd += ["--max-budget-usd", f"{max(budget_usd, 0.0001):.4f}"]
    archive = ctx.archive_dir.resolve()
    if not archive.is_relative_to(ctx.workdir.resolve()):
        cmd += ["--add-dir", str(archive)]
    return cmd


# --- the backend -----------------------------------------------------------------------------


class ClaudeCodeAgent:
    name = "claude"

    def __init__(
        self,
        settings: AgentSettings,
        log: LlmLog,
        caps: Caps | None = None,
        *,
        binary: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.settings = settings
        self.log = log
        self.caps = caps or Caps(settings.max_cost, settings.max_tokens)
        self.binary = binary or os.environ.get("HARNESS_CLAUDE_BIN") or "claude"
        self.env = env  # None: inherit the harness's environment

    def _resolve_binary(self) -> str:
        found = shutil.which(self.binary)
        if not found:
            raise AgentSetupError(_NOT_FOUND)
        return found

    def _env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("CLAUDE_CODE_MAX_OUTPUT_TOKENS", str(TURN_OUTPUT_TOKENS))
        return env

    def turn_reserve(self, model: str, prompt_chars: int) -> tuple[float, int]:
        """(USD, tokens) one Claude Code turn may cost at most, by the standard estimate: its
        system prompt and our prompt as uncached input, plus a whole turn's output."""
        try:
            output = int(self._env()["CLAUDE_CODE_MAX_OUTPUT_TOKENS"])
        except ValueError:
            output = TURN_OUTPUT_TOKENS
        return pricing.estimate(model, prompt_chars + CLAUDE_CODE_OVERHEAD_CHARS, output)

    def propose(self, ctx: AgentContext) -> Proposal:
        binary = self._resolve_binary()
        deadline = time.monotonic() + self.settings.timeout_s
        usage, lesson = Usage(), None
        try:
            task = summary_task(ctx) if summary_enabled(self.settings.summary_model) else None
            if task is not None:
                lesson, usage = self._summary_stage(binary, ctx, task, deadline)
            result = self._propose_run(binary, ctx, deadline)
        except HarnessError as e:
            e.usage = usage + (getattr(e, "usage", None) or Usage())  # paid for even so: the row counts it
            raise
        usage += result.usage
        hit_max_turns = result.subtype == "error_max_turns"
        return Proposal(
            description=(f"(claude reached --max-turns {self.settings.max_turns} before describing its change)"
                         if hit_max_turns else describe(result.text)),
            usage=usage,
            details={**result.log_details(), "hit_max_turns": hit_max_turns, "tool_calls": len(result.tool_calls),
                     "retries": result.retries, "lesson": lesson, **result.extra},
        )

    def _propose_run(self, binary: str, ctx: AgentContext, deadline: float) -> ClaudeResult:
        prompt = full_prompt(ctx)
        model = self.settings.model or DEFAULT_MODEL
        reserve_cost, reserve_tokens = self.turn_reserve(model, len(prompt) + len(system_guidance()))
        self.caps.check_before(reserve_cost, reserve_tokens)
        budget = None if self.caps.remaining_cost is None else self.caps.remaining_cost - reserve_cost
        cmd = build_command(binary, ctx, self.settings, budget)
        with self.log.call(experiment=ctx.experiment, backend=self.name, stage="propose",
                           model=model, prompt=prompt) as call:
            result = self._invoke(cmd, prompt, ctx.workdir, deadline - time.monotonic(), call)
            if result.subtype == "error_max_budget_usd":
                call.error = f"claude stopped at the cost cap: {result.text}"
                cap = CapExceeded(f"stopping: claude reached the --max-cost budget (${self.caps.max_cost:.2f})",
                                  hint="raise --max-cost to go on")
                cap.usage = result.usage
                raise cap
            if result.subtype == "error_max_turns":
                call.note = f"{result.text}: the edits made so far are the proposal"
            elif result.is_error:
                call.error = f"claude reported an error ({result.subtype}): {result.text[:300]}"
                error = AgentError(call.error, transient=result.transient)
                error.usage = result.usage
                raise error
        return result

    def _summary_stage(self, binary: str, ctx: AgentContext, task: SummaryTask,
                       deadline: float) -> tuple[str | None, Usage]:
        """`claude -p --max-turns 1` with no tools and a small system prompt of its own, so the
        call is cheap: the lesson of the last experiment, appended to insights.md. A failed
        summary is logged and skipped."""
        model = self.settings.summary_model or DEFAULT_SUMMARY_MODEL
        self.caps.check_call(model, len(task.system) + len(task.prompt), SUMMARY_OUTPUT_TOKENS)
        cmd = [binary, "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "dontAsk",
               "--tools", "", "--max-turns", "1", "--model", model, "--system-prompt", task.system,
               "--no-session-persistence"]
        timeout = min(SUMMARY_TIMEOUT_S, deadline - time.monotonic())
        with self.log.call(experiment=ctx.experiment, backend=self.name, stage="summary",
                           model=model, prompt=task.prompt) as call:
            try:
                result = self._invoke(cmd, task.prompt, ctx.workdir, timeout, call)
            except AgentSetupError:
                raise
            except AgentTimeout as e:
                if deadline - time.monotonic() <= 0:
                    raise
                call.error = f"summary skipped: {e}"
                return None, Usage()
            except AgentError as e:
                call.error = f"summary skipped: {e}"
                return None, Usage()
            if result.is_error:
                call.error = f"summary skipped: claude reported an error ({result.subtype}): {result.text[:300]}"
                return None, result.usage
        return record_lesson(ctx, task, result.text), result.usage

    def _invoke(self, cmd: list[str], prompt: str, cwd: Path, timeout: float, call: PendingCall) -> ClaudeResult:
        """Run claude once and fill in the log entry. What the run cost is logged and counted
        before any error is raised, a login problem included."""
        if timeout <= 0:
            raise AgentTimeout(f"claude ran past the agent timeout ({self.settings.timeout_s:g}s) and was stopped",
                               hint="raise --agent-timeout, or lower --max-turns")
        stdout, stderr, rc = self._run(cmd, prompt, cwd, timeout)
        try:
            result = parse_stream(stdout)
        except AgentError:
            if looks_like_login_problem(stderr):
                raise AgentSetupError(_NOT_LOGGED_IN) from None
            if not stdout.strip():
                raise AgentError(f"claude exited {rc} with no output: {stderr.strip()[-300:]}") from None
            raise
        call.response = result.text
        call.tool_calls = list(result.tool_calls)
        call.tokens_in, call.tokens_out = result.usage.tokens_in, result.usage.tokens_out
        call.tokens_cached, call.cost_usd = result.usage.tokens_cached, result.cost_usd
        call.retries = result.retries
        call.details = result.log_details()
        self.caps.add(result.cost_usd, result.usage.tokens)
        if result.is_error and (result.extra.get("api_error_status") == 401 or looks_like_login_problem(result.text)):
            error = AgentSetupError(_NOT_LOGGED_IN)
            error.usage = result.usage
            raise error
        return result

    def _run(self, cmd: list[str], prompt: str, cwd: Path, timeout: float) -> tuple[str, str, int]:
        """Run claude in its own process group; on timeout kill the whole group (Claude Code
        starts helpers that would otherwise outlive it)."""
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=self._env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(prompt, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise AgentTimeout(f"claude ran past the agent timeout ({self.settings.timeout_s:g}s) and was stopped",
                               hint="raise --agent-timeout, or lower --max-turns") from None
        except BaseException:
            _kill_group(proc)
            raise
        return stdout, stderr, proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
