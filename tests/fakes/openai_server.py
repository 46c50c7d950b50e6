"""A local stand-in for an OpenAI-compatible chat API, driven by a script of canned replies.

    with OpenAIServer() as server:
        server.enqueue([text(search_replace("train.py", "LR = 0.04", "LR = 0.05"))])
        env = {"OPENAI_API_BASE": server.base_url, "OPENAI_API_KEY": "dummy"}
        ...  # run a real client (aider, litellm, openai) against it
        server.chat_requests  # what the model was sent, in order

`POST /v1/chat/completions` takes the next scripted reply, as JSON or as SSE chunks when the
request asks to stream; `GET /v1/models` lists `fake-model`. When the script runs out the server
answers 400, which no client retries, so a test that under-scripts fails fast and plainly. A
`hang()` reply never answers (until the server stops): the scenario of a model that is stuck.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "fake-model"
_ids = itertools.count(1)


# --- replies a script is made of ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer: assistant text, an HTTP error, or a hang."""

    content: str = ""
    usage: dict | None = None  # None: counted from the request and reply sizes (chars / 4)
    status: int = 200
    error: str | None = None
    hang: bool = False


def text(body: str, *, usage: dict | None = None) -> Reply:
    return Reply(content=body, usage=usage)


def error(status: int, message: str = "scripted error") -> Reply:
    return Reply(status=status, error=message)


def hang() -> Reply:
    return Reply(hang=True)


def search_replace(path: str, search: str, replace: str, *, say: str = "") -> str:
    """An assistant reply holding one edit block in aider's SEARCH/REPLACE ("diff") format."""
    intro = f"{say}\n\n" if say else ""
    return f"{intro}{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: Any


class OpenAIServer:
    """Threaded HTTP server on 127.0.0.1 (a free port). Use as a context manager."""

    def __init__(self, replies: list[Reply] | None = None):
        self._script: list[Reply] = list(replies or [])
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[Recorded] = []
        self.unscripted: list[Recorded] = []  # chat requests that found the script empty
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # a short poll keeps stop() quick (serve_forever checks for shutdown once per poll)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    def enqueue(self, replies: list[Reply]) -> None:
        with self._lock:
            self._script.extend(replies)

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- used by the handler ---

    def _record(self, method: str, path: str, body: Any) -> Recorded:
        rec = Recorded(method, path, body)
        with self._lock:
            self.requests.append(rec)
        return rec

    def _next_reply(self, rec: Recorded) -> Reply | None:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            self.unscripted.append(rec)
            return None

    def _wait_forever(self) -> None:
        self._stopping.wait()


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            server._record("GET", self.path, None)
            if self.path.rstrip("/").endswith("/models"):
                created = int(time.time())
                self._json(200, {"object": "list", "data": [
                    {"id": MODEL_ID, "object": "model", "created": created, "owned_by": "fake"}]})
            else:
                self._json(404, _error_body(f"no route GET {self.path}", "not_found_error"))

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = raw.decode("utf-8", "replace")
            rec = server._record("POST", self.path, body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, _error_body(f"no route POST {self.path}", "not_found_error"))
                return
            reply = server._next_reply(rec)
            if reply is None:
                self._json(400, _error_body("fake server: the script has no reply left", "invalid_request_error"))
            elif reply.hang:
                server._wait_forever()
            elif reply.status >= 400:
                self._json(reply.status, _error_body(reply.error or "error", "api_error"))
            elif isinstance(body, dict) and body.get("stream"):
                self._stream(body, reply)
            else:
                self._json(200, _completion(body, reply))

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict, reply: Reply) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")  # the end of the stream is the end of the body
            self.end_headers()
            self.close_connection = True
            for chunk in _chunks(body, reply):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _error_body(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(body: Any, reply: Reply) -> dict:
    if reply.usage is not None:
        return reply.usage
    prompt = json.dumps(body.get("messages", []) if isinstance(body, dict) else body)
    tokens_in, tokens_out = len(prompt) // 4 + 1, len(reply.content) // 4 + 1
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def _completion(body: Any, reply: Reply) -> dict:
    return {
        "id": f"chatcmpl-fake{next(_ids):04d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": (body.get("model") if isinstance(body, dict) else None) or MODEL_ID,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                     "finish_reason": "stop"}],
        "usage": _usage(body, reply),
    }


def _chunks(body: dict, reply: Reply, size: int = 40) -> list[dict]:
    """The reply cut into SSE deltas, the way OpenAI streams: role first, text, stop, usage."""
    base = {"id": f"chatcmpl-fake{next(_ids):04d}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model") or MODEL_ID}
    pieces = [reply.content[i : i + size] for i in range(0, len(reply.content), size)]
    deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _usage(body, reply)})
    return chunks
