"""The `anthropic` backend: the official SDK's Messages API with file tools, a few turns per
experiment. The client is injected (`client_factory`), so tests point a real client at a local
stand-in. Retries follow ERRORS below, never the SDK's own policy (it is set to max_retries=0).

The whole experiment (summary, turns, retries and their backoff) is bounded by the agent timeout:
each call gets what is left of it as its HTTP timeout, and past it the experiment is an
AgentTimeout. Before proposing, one cheap tool-less call with the summary model turns the last
experiment's analysis into a lesson in insights.md (`summary_model = "none"` skips it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from harness.agents.edit_tools import TOOLS, EditTools, ToolError
from harness.caps import Caps
from harness.config import AgentSettings
from harness.errors import AgentError, AgentSetupError, AgentTimeout, HarnessError
from harness.llmlog import LlmLog, PendingCall

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_SUMMARY_MODEL = "claude-haiku-4-5"
MAX_OUTPUT_TOKENS = 8_192
SUMMARY_MAX_TOKENS = 400  # a lesson is 1-3 lines
MAX_RETRIES = 4


@dataclass(frozen=True)
class ErrorRule:
    retryable: bool
    message: str  # what the user reads (after "anthropic: ")


# Status code (or failure kind) -> what to do. Unlisted 5xx retry; unlisted 4xx do not.
ERRORS: dict[int | str, ErrorRule] = {
    400: ErrorRule(False, "the API rejected the request"),
    401: ErrorRule(False, "the API key was rejected: check ANTHROPIC_API_KEY"),
    403: ErrorRule(False, "this key may not use this model or feature"),
    404: ErrorRule(False, "unknown model or endpoint: check --model"),
    413: ErrorRule(False, "the request is too large"),
    429: ErrorRule(True, "rate limited"),
    500: ErrorRule(True, "the API had an internal error"),
    502: ErrorRule(True, "bad gateway"),
    503: ErrorRule(True, "the API is unavailable"),
    504: ErrorRule(True, "the API gateway timed out"),
    529: ErrorRule(True, "the API is overloaded"),
    "connection": ErrorRule(True, "could not reach the API"),
    "timeout": ErrorRule(True, "the API call timed out"),
}


def classify(exc: BaseException) -> ErrorRule | None:
    """The rule for an SDK exception, or None if it is not an API error at all."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ERRORS["timeout"]
    if isinstance(exc, anthropic.APIConnectionError):
        return ERRORS["connection"]
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        return ERRORS.get(status) or ErrorRule(status >= 500, f"the API answered HTTP {status}")
    return None


def default_client_factory() -> Any:
    try:
        import anthropic
    except ModuleNotFoundError:
        raise AgentSetupError("the anthropic package is missing: pip install 'auto-log-research[anthropic]'") from None
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise AgentSetupError("ANTHROPIC_API_KEY is not set: export it, or choose --agent claude or offline")
    return anthropic.Anthropic(max_retries=0)


def _error_detail(exc: BaseException) -> str:
    """The API's own error message when it sent one, else the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message"):
        return str(body["error"]["message"])
    return getattr(exc, "message", None) or str(exc)


def _block_dicts(content: Any) -> list[dict]:
    return [b.model_dump(exclude_none=True) if hasattr(b, "model_dump") else dict(b) for b in content]


@dataclass(frozen=True)
class CallResult:
    content: list[dict]
    stop_reason: str | None
    usage: Usage


class AnthropicAgent:
    name = "anthropic"

    def __init__(
        self,
        settings: AgentSettings,
        log: LlmLog,
        caps: Caps | None = None,
        *,
        client_factory: Callable[[], Any] = default_client_factory,
        backoff_s: float = 1.0,
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.log = log
        self.caps = caps or Caps(settings.max_cost, settings.max_tokens)
        self.client_factory = client_factory
        self.backoff_s = backoff_s
        self.max_retries = max_retries
        self.sleep = sleep
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            # Whatever client we are handed, our retry table is the only retry policy in force.
            self._client = self.client_factory().with_options(max_retries=0)
        return self._client

    # --- one experiment ----------------------------------------------------------------------

    def propose(self, ctx: AgentContext) -> Proposal:
        deadline = time.monotonic() + self.settings.timeout_s
        model = self.settings.model or DEFAULT_MODEL
        tools = EditTools(ctx.workdir, ctx.archive_dir, ctx.target.editable, ctx.notes_files)
        system = [{"type": "text", "text": system_guidance(), "cache_control": {"type": "ephemeral"}}]
        # The prompt is the stable prefix of every later turn: cache it too.
        messages: list[dict] = [{"role": "user", "content": [
            {"type": "text", "text": full_prompt(ctx), "cache_control": {"type": "ephemeral"}}]}]
        usage, last_text, turns, lesson = Usage(), "", 0, None
        try:
            task = summary_task(ctx) if summary_enabled(self.settings.summary_model) else None
            if task is not None:
                lesson, spent = self._summary_stage(ctx, task, deadline)
                usage += spent
            while turns < self.settings.max_turns and tools.finished is None:
                turns += 1
                result = self._call(ctx.experiment, "propose", model, system, messages, TOOLS, deadline=deadline)
                usage += result.usage
                messages.append({"role": "assistant", "content": result.content})
                last_text = "\n".join(b["text"] for b in result.content if b.get("type") == "text") or last_text
                uses = [b for b in result.content if b.get("type") == "tool_use"]
                if not uses:
                    break
                messages.append({"role": "user", "content": [self._run_tool(tools, b) for b in uses]})
            if tools.finished is None and turns >= self.settings.max_turns and not tools.changed:
                raise AgentError(f"no edit after {turns} model turns (--max-turns {self.settings.max_turns})")
        except HarnessError as e:
            e.usage = usage  # the calls before the failure were paid for: the ledger row counts them
            raise
        description = tools.finished or describe(last_text)
        return Proposal(
            description=describe(description),
            usage=usage,
            details={"turns": turns, "files_changed": sorted(tools.changed), "finished": tools.finished is not None,
                     "model": model, "lesson": lesson},
        )

    @staticmethod
    def _run_tool(tools: EditTools, block: dict) -> dict:
        try:
            output, is_error = tools.run(block["name"], block.get("input")), False
        except ToolError as e:
            output, is_error = f"error: {e}", True
        return {"type": "tool_result", "tool_use_id": block["id"], "content": output, "is_error": is_error}

    # --- the summary stage --------------------------------------------------------------------

    def summarize(self, system: str, prompt: str, experiment: int | None = None,
                  max_tokens: int = SUMMARY_MAX_TOKENS, deadline: float | None = None) -> tuple[str, Usage]:
        """One tool-less call with the cheaper summary model: its text and what it cost."""
        model = self.settings.summary_model or DEFAULT_SUMMARY_MODEL
        result = self._call(experiment, "summary", model, [{"type": "text", "text": system}],
                            [{"role": "user", "content": prompt}], None, max_tokens=max_tokens, deadline=deadline)
        return "\n".join(b["text"] for b in result.content if b.get("type") == "text"), result.usage

    def _summary_stage(self, ctx: AgentContext, task: SummaryTask, deadline: float) -> tuple[str | None, Usage]:
        """The lesson of the last experiment, written to insights.md. A failed summary is logged
        and skipped: the proposal matters more than its notes."""
        try:
            text, usage = self.summarize(task.system, task.prompt, ctx.experiment, deadline=deadline)
        except AgentTimeout:
            raise
        except AgentError:
            return None, Usage()
        return record_lesson(ctx, task, text), usage

    # --- the one place that calls the model --------------------------------------------------

    def _call(self, experiment: int | None, stage: str, model: str, system: list | None, messages: list,
              tools: list | None, max_tokens: int = MAX_OUTPUT_TOKENS, deadline: float | None = None) -> CallResult:
        request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
        if system:
            request["system"] = system
        if tools:
            request["tools"] = tools
        prompt_chars = len(str(system or "")) + len(str(messages)) + len(str(tools or ""))
        self.caps.check_call(model, prompt_chars, max_tokens)
        deadline = deadline if deadline is not None else time.monotonic() + self.settings.timeout_s
        self._time_left(deadline)
        client = self.client
        with self.log.call(experiment=experiment, backend=self.name, stage=stage, model=model,
                           prompt=messages) as call:
            call.note = pricing.lookup(model).note
            response = self._create_with_retries(client, request, call, deadline)
            try:
                content = _block_dicts(response.content)
                usage = self._usage(model, response.usage)
            except Exception as e:  # a reply the SDK let through but that is not a message
                call.error = f"anthropic: the API's reply could not be read: {type(e).__name__}: {e}"
                raise AgentError(call.error) from None
            call.response = content
            call.tool_calls = [{"name": b["name"], "input": b.get("input")} for b in content if b.get("type") == "tool_use"]
            call.tokens_in, call.tokens_out = usage.tokens_in, usage.tokens_out
            call.tokens_cached, call.cost_usd = usage.tokens_cached, usage.cost_usd
            self.caps.add(usage.cost_usd, usage.tokens)
        return CallResult(content, response.stop_reason, usage)

    def _timeout(self, detail: str = "") -> AgentTimeout:
        return AgentTimeout(f"anthropic: the experiment ran past the agent timeout ({self.settings.timeout_s:g}s)"
                            + (f"; last error: {detail}" if detail else ""),
                            hint="raise --agent-timeout, or check that the API answers")

    def _time_left(self, deadline: float) -> float:
        """Seconds left of the experiment's agent timeout; AgentTimeout once it has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        return left

    def _create_with_retries(self, client: Any, request: dict, call: PendingCall, deadline: float) -> Any:
        attempt = 0
        while True:
            try:
                # The HTTP timeout is what is left of the experiment's: a hung call cannot outlast it.
                return client.messages.create(**request, timeout=self._time_left(deadline))
            except AgentTimeout as e:
                call.error = str(e)
                raise
            except Exception as e:  # classified below
                rule = classify(e)
                if rule is None:  # not an API error: a bug or an SDK surprise, still one line
                    call.error = f"anthropic: the SDK failed: {type(e).__name__}: {e}"
                    raise AgentError(call.error) from None
                detail = _error_detail(e)
                if rule.retryable and deadline - time.monotonic() <= 0:
                    timeout = self._timeout(f"{rule.message}: {detail}")
                    call.error = str(timeout)
                    raise timeout from None
                if not rule.retryable or attempt >= self.max_retries:
                    tries = f" after {attempt + 1} tries" if rule.retryable else ""
                    call.error = f"anthropic: {rule.message}{tries}: {detail}"
                    if getattr(e, "status_code", None) == 401:
                        raise AgentSetupError(call.error, hint="set ANTHROPIC_API_KEY to a valid key") from None
                    # Rate limits, overload, 5xx and lost connections may pass by themselves.
                    raise AgentError(call.error, transient=rule.retryable) from None
                pause = min(60.0, self.backoff_s * 2**attempt)
                if pause >= deadline - time.monotonic():
                    call.error = (f"anthropic: {rule.message}, and the agent timeout "
                                  f"({self.settings.timeout_s:g}s) ends before the next retry: {detail}")
                    raise AgentTimeout(call.error, hint="raise --agent-timeout, or check that the API answers") from None
                call.retries += 1
                self.sleep(pause)
                attempt += 1

    @staticmethod
    def _usage(model: str, u: Any) -> Usage:
        uncached = int(getattr(u, "input_tokens", 0) or 0)
        written = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
        read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
        out = int(getattr(u, "output_tokens", 0) or 0)
        return Usage(uncached + written + read, out, read, pricing.cost(model, uncached, out, written, read))
