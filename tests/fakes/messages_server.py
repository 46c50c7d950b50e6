"""A local stand-in for the Anthropic Messages API, driven by a script of canned replies.

    with MessagesServer() as server:
        server.enqueue([tool_use("Read", {"file_path": path}), text("done")])
        client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant-test")
        ...
        server.script_requests  # what the model was sent, in order

Requests that carry tools (the agent's turns) take the next scripted reply, in JSON or as SSE
when the request asks to stream. Other requests (Claude Code's side calls: titles, quota probes,
count_tokens, ...) get a short sensible answer and are recorded too. When the script runs out the
server answers 400, which no client retries, so a test that under-scripts fails fast and plainly.

The harness's summary stage (a tool-less call whose system prompt is harness/prompts/summary.md)
has a script of its own, `enqueue_summary`; unscripted, it gets a canned lesson. Either way it is
recorded in `summary_requests`, never in `script_requests`, so the agent turns keep their places.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)
SUMMARY_SIGN = "the lesson for insights.md"  # a phrase of harness/prompts/summary.md
CANNED_LESSON = "stand-in lesson: the change moved the metric the way the analysis shows"
_SECRET_HEADERS = {"x-api-key", "authorization", "proxy-authorization", "cookie"}


# --- replies a script is made of ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a message (content blocks + stop reason) or an HTTP error."""

    content: tuple[dict, ...] = ()
    stop_reason: str = "end_turn"
    usage: dict | None = None  # None: counted from the request and reply sizes
    status: int = 200
    error: dict | None = None  # {"type": ..., "message": ...} for status >= 400
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    sticky: bool = False  # answer every later request with this too (a key that stays invalid)
    raw: str | None = None  # a body sent as is (e.g. not JSON at all), with `status`


def text(body: str, *, usage: dict | None = None, stop_reason: str = "end_turn") -> Reply:
    return Reply(({"type": "text", "text": body},), stop_reason, usage)


def tool_use(name: str, args: dict, *, say: str | None = None, usage: dict | None = None) -> Reply:
    """A turn that calls one tool (optionally after some text). Works for any tool, Bash included."""
    return tool_uses([(name, args)], say=say, usage=usage)


def tool_uses(calls: list[tuple[str, dict]], *, say: str | None = None, usage: dict | None = None) -> Reply:
    blocks: list[dict] = [{"type": "text", "text": say}] if say else []
    for name, args in calls:
        blocks.append({"type": "tool_use", "id": f"toolu_fake{next(_ids):04d}", "name": name, "input": args})
    return Reply(tuple(blocks), "tool_use", usage)


def slow(reply: Reply, seconds: float) -> Reply:
    """`reply`, sent after `seconds` (a model that takes its time, or hangs past a timeout)."""
    return replace(reply, delay_s=seconds)


def garbage(body: str = "<html>502 from a proxy</html>", status: int = 200) -> Reply:
    """A reply that is not the Messages API at all (a misbehaving proxy)."""
    return Reply(status=status, raw=body)


def error(status: int, message: str = "scripted error", kind: str | None = None, *, sticky: bool = False) -> Reply:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}
    kind = kind or kinds.get(status, "api_error")
    # retry-after 0 keeps clients that honour it from sleeping in tests
    return Reply(status=status, error={"type": kind, "message": message}, headers={"retry-after": "0"},
                 sticky=sticky)


# --- recorded requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict
    body: Any
    scripted: bool  # True if it took a reply from the script
    reply_status: int
    summary: bool = False  # the harness's summary stage (its own script)


def is_summary_request(path: str, body: Any) -> bool:
    return (path.split("?")[0].endswith("/v1/messages") and isinstance(body, dict)
            and SUMMARY_SIGN in json.dumps(body.get("system") or ""))


def _redact_headers(headers: Any) -> dict:
    return {k.lower(): ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}


def _default_is_script_request(path: str, body: Any) -> bool:
    """Agent turns carry tools; Claude Code's side requests (titles, probes) do not."""
    return path.split("?")[0].endswith("/v1/messages") and isinstance(body, dict) and bool(body.get("tools"))


def every_messages_request(path: str, body: Any) -> bool:
    """A predicate for clients that make no side requests: every /v1/messages call is scripted."""
    return path.split("?")[0].endswith("/v1/messages")


class MessagesServer:
    def __init__(self, is_script_request: Callable[[str, Any], bool] = _default_is_script_request):
        self._script: list[Reply] = []
        self._summaries: list[Reply] = []
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.is_script_request = is_script_request
        self._httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    # lifecycle
    def start(self) -> MessagesServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MessagesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # script
    def enqueue(self, replies: list[Reply]) -> None:
        with self._lock:
            self._script.extend(replies)

    def enqueue_summary(self, replies: list[Reply]) -> None:
        with self._lock:
            self._summaries.extend(replies)

    @property
    def remaining(self) -> int:
        return len(self._script)

    @property
    def script_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.scripted]

    @property
    def summary_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.summary]

    def _next_summary(self) -> Reply:
        with self._lock:
            return self._summaries.pop(0) if self._summaries else text(CANNED_LESSON)

    def _next(self) -> Reply | None:
        with self._lock:
            if not self._script:
                return None
            return self._script[0] if self._script[0].sticky else self._script.pop(0)

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)


# --- HTTP ------------------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-keep-alive (Claude Code does at exit) are not test failures


def _usage_for(body: Any, reply: Reply) -> dict:
    if reply.usage is not None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, **reply.usage}
    return {
        "input_tokens": max(1, len(json.dumps(body)) // 4),
        "output_tokens": max(1, len(json.dumps(list(reply.content))) // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message(body: Any, reply: Reply) -> dict:
    return {
        "id": f"msg_fake{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake") if isinstance(body, dict) else "claude-fake",
        "content": list(reply.content),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage_for(body, reply),
    }


def _chunks(s: str, n: int = 40) -> list[str]:
    return [s[i : i + n] for i in range(0, len(s), n)] or [""]


def sse_events(message: dict) -> list[tuple[str, dict]]:
    """The event sequence the real API streams for `message`."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            for part in _chunks(block["text"]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": part}}))
        else:  # tool_use
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}}))
            for part in _chunks(json.dumps(block["input"])):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": part}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _side_reply(path: str, body: Any) -> tuple[int, dict]:
    """Answers for requests that are not agent turns."""
    route = path.split("?")[0]
    if route.endswith("/count_tokens"):
        return 200, {"input_tokens": max(1, len(json.dumps(body)) // 4)}
    if route.endswith("/v1/messages"):
        # A title / topic / quota side request: a short answer that parses as JSON or as text.
        reply = Reply(({"type": "text", "text": '{"title": "experiment", "isNewTopic": false}'},), "end_turn")
        return 200, _message(body, reply)
    if re.search(r"/v1/models", route):
        return 200, {"data": [], "has_more": False, "first_id": None, "last_id": None}
    return 200, {}


def _make_handler(server: MessagesServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _read_body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode("utf-8", "replace")

        def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_fake{next(_ids):04d}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _send_sse(self, message: dict) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for name, data in sse_events(message):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True

        def _handle(self) -> None:
            body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else None
            headers = _redact_headers(self.headers)
            if is_summary_request(self.path, body):
                reply = server._next_summary()
                server._record(Recorded(self.command, self.path, headers, body, False, reply.status, summary=True))
                self._answer(body, reply)
                return
            if not server.is_script_request(self.path, body):
                status, payload = _side_reply(self.path, body)
                server._record(Recorded(self.command, self.path, headers, body, False, status))
                self._send_json(status, payload)
                return
            reply = server._next()
            if reply is None:
                reply = error(400, "fake Messages server: the script has no reply left for this request")
            server._record(Recorded(self.command, self.path, headers, body, True, reply.status))
            self._answer(body, reply)

        def _answer(self, body: Any, reply: Reply) -> None:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.raw is not None:
                data = reply.raw.encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if reply.status >= 400:
                self._send_json(reply.status, {"type": "error", "error": reply.error}, reply.headers)
                return
            message = _message(body, reply)
            if isinstance(body, dict) and body.get("stream"):
                self._send_sse(message)
            else:
                self._send_json(200, message, reply.headers)

        do_POST = _handle
        do_GET = _handle
        do_HEAD = _handle

    return Handler
