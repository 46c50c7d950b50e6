"""The `claude` backend: Claude Code run headless (`claude -p`) once per experiment.

Claude Code does the editing itself with its Read/Edit/Write tools; this module decides what it
may touch (an allow-list of tools and paths), runs it in its own process group under a timeout,
and reads the final `result` event of `--output-format stream-json`.

Permission mode: `dontAsk`, not `acceptEdits`. With acceptEdits, Claude Code 2.1 auto-approved a
Bash command that was on no allow-list (it counts simple shell writes as "edits"); dontAsk denies
every tool call that no allow rule names, and reports it in `permission_denials`. (As root,
bypassPermissions is refused anyway.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.agents.base import AgentContext, Proposal, Usage, describe, full_prompt, system_guidance
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, CapExceeded
from harness.llmlog import LlmLog

DEFAULT_MODEL = "sonnet"  # Claude Code's alias for its current Sonnet
OUTPUT_ALLOWANCE = 16_000  # output tokens one whole run may spend, for the cap estimate
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
    return _result_from(results[-1], tuple(tool_calls), tuple(denied), len(events))


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


def _result_from(result: dict, tool_calls: tuple, denied: tuple, n_events: int) -> ClaudeResult:
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
    rules = ["Read", "Glob", "Grep"]
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
        # Claude Code stops itself mid-run at this spend, so one run cannot overshoot --max-cost.
        cmd += ["--max-budget-usd", f"{max(budget_usd, 0.0):.4f}"]
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

    def propose(self, ctx: AgentContext) -> Proposal:
        binary = self._resolve_binary()
        prompt = full_prompt(ctx)
        model = self.settings.model or DEFAULT_MODEL
        self.caps.check_call(model, len(prompt) + len(system_guidance()), OUTPUT_ALLOWANCE)
        cmd = build_command(binary, ctx, self.settings, self.caps.remaining_cost)
        with self.log.call(experiment=ctx.experiment, backend=self.name, stage="propose",
                           model=model, prompt=prompt) as call:
            stdout, stderr, rc = self._run(cmd, prompt, ctx.workdir)
            result = self._interpret(stdout, stderr, rc)
            call.response = result.text
            call.tool_calls = list(result.tool_calls)
            call.tokens_in, call.tokens_out = result.usage.tokens_in, result.usage.tokens_out
            call.tokens_cached, call.cost_usd = result.usage.tokens_cached, result.cost_usd
            self.caps.add(result.cost_usd, result.usage.tokens)
            if result.subtype == "error_max_budget_usd":
                call.error = f"claude stopped at the cost cap: {result.text}"
                raise CapExceeded(f"stopping: claude reached the --max-cost budget (${self.caps.max_cost:.2f})",
                                  hint="raise --max-cost to go on")
            if result.subtype == "error_max_turns":
                call.note = f"{result.text}: the edits made so far are the proposal"
            elif result.is_error:
                call.error = f"claude reported an error ({result.subtype}): {result.text[:300]}"
                error = AgentError(call.error)
                error.usage = result.usage  # paid for even so: the ledger row counts it
                raise error
        hit_max_turns = result.subtype == "error_max_turns"
        return Proposal(
            description=(f"(claude reached --max-turns {self.settings.max_turns} before describing its change)"
                         if hit_max_turns else describe(result.text)),
            usage=result.usage,
            details={
                "num_turns": result.num_turns,
                "hit_max_turns": hit_max_turns,
                "permission_denials": list(result.permission_denials),
                "denied_tool_errors": list(result.denied_tool_errors),
                "tool_calls": len(result.tool_calls),
                "session_id": result.session_id,
                **result.extra,
            },
        )

    def _interpret(self, stdout: str, stderr: str, rc: int) -> ClaudeResult:
        try:
            result = parse_stream(stdout)
        except AgentError:
            if looks_like_login_problem(stderr):
                raise AgentSetupError(_NOT_LOGGED_IN) from None
            if not stdout.strip():
                raise AgentError(f"claude exited {rc} with no output: {stderr.strip()[-300:]}") from None
            raise
        if result.is_error and (result.extra.get("api_error_status") == 401 or looks_like_login_problem(result.text)):
            raise AgentSetupError(_NOT_LOGGED_IN)
        return result

    def _run(self, cmd: list[str], prompt: str, cwd: Path) -> tuple[str, str, int]:
        """Run claude in its own process group; on timeout kill the whole group (Claude Code
        starts helpers that would otherwise outlive it)."""
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(prompt, timeout=self.settings.timeout_s)
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
