"""A small local web server that shows the report and keeps it current while the loop runs.

    /            the report page; its inline script polls /api/state and swaps in /fragment
                 when a new experiment lands (no external assets, no page reload)
    /fragment    the report's body alone
    /api/state   JSON: version, experiment count, latest experiment, counts by status, best, rows mtime

Rendering is cached by the archive files' mtimes and sizes, so a page load costs one dict lookup
until something changes; the diffs between keeps are cached by commit pair, so a new experiment
does not run `git diff` again for every keep. Binds loopback by default: the archive may hold
private notes. A request whose Host header names anything but the address it was reached on
(localhost, 127.0.0.1, [::1], or the --host given) gets 403: a web page in the user's browser
cannot read the archive through a rebound DNS name.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.config import Config, load_config
from harness.errors import UsageError
from harness.report import ReportData, collect
from harness.web import page

WATCHED = ("results.tsv", "insights.md", "ideas_queue.md", "llm_calls.jsonl")


@dataclass(frozen=True)
class Snapshot:
    version: str
    page: bytes
    fragment: bytes
    state: bytes
    generated: str = ""  # when it was rendered, for the page header


class Dashboard:
    """Renders the archive at most once per change of the watched files; safe across threads."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._diffs: dict = {}  # (commit, commit, files) -> diff: commits never change

    def version(self) -> str:
        parts = []
        for name in WATCHED:
            try:
                st = (self.cfg.archive_dir / name).stat()
                parts.append(f"{st.st_mtime_ns:x}.{st.st_size:x}")
            except OSError:
                parts.append("0")
        return "-".join(parts)

    def snapshot(self) -> Snapshot:
        version = self.version()
        with self._lock:  # one render at a time; the others wait and reuse it
            if self._snapshot is None or self._snapshot.version != version:
                d = collect(self.cfg.root, self.cfg, self._diffs)
                generated = page.generated_at()
                self._snapshot = Snapshot(
                    version=version,
                    page=page.render(d, live=True, version=version, generated=generated).encode("utf-8"),
                    fragment=page.body(d).encode("utf-8"),
                    state=json.dumps(state(d, version, self.cfg)).encode("utf-8"),
                    generated=generated,
                )
            return self._snapshot


def state(d: ReportData, version: str, cfg: Config) -> dict:
    best = d.best
    try:
        mtime = (cfg.archive_dir / "results.tsv").stat().st_mtime
    except OSError:
        mtime = None
    return {
        "version": version,
        "metric": d.metric,
        "direction": d.direction,
        "experiments": len(d.rows),
        "latest_experiment": max((r.experiment for r in d.rows), default=None),
        "counts": dict(Counter(r.status for r in d.rows)),
        "best": None if best is None else {"value": best.value, "commit": best.commit, "experiment": best.experiment},
        "rows_mtime": mtime,
    }


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def split_host(header: str) -> tuple[str, str]:
    """(name, port) of a Host header: `127.0.0.1:8765` -> ('127.0.0.1', '8765'), `[::1]` -> ('::1', '');
    ('', '') when it is not one."""
    h = header.strip().lower()
    if h.startswith("["):
        name, _, rest = h[1:].partition("]")
        if rest and not rest.startswith(":"):
            return "", ""
        return name, rest[1:]
    if h.count(":") > 1:  # an IPv6 address must come in brackets
        return "", ""
    name, _, port = h.partition(":")
    return name, port


def host_allowed(header: str | None, bound_host: str, port: int) -> bool:
    """True if a request's Host header names this server: a loopback name or the bound address,
    with this port (or none). Bound to a wildcard, any IP literal is fine too: DNS rebinding needs
    a name, and a name other than localhost is refused."""
    name, given_port = split_host(header or "")
    if not name or (given_port and given_port != str(port)):
        return False
    if name in LOOPBACK_NAMES or name == bound_host.lower().strip("[]"):
        return True
    if bound_host in WILDCARDS:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True
    return False


def make_handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "harness-dashboard"

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            host, port = self.server.server_address[:2]
            if not host_allowed(self.headers.get("Host"), getattr(self.server, "bound_host", host), port):
                return self._send(403, b"forbidden: open the dashboard through localhost or 127.0.0.1\n",
                                  "text/plain")
            path = self.path.split("?", 1)[0]
            if path == "/favicon.ico":
                return self._send(204, b"", "image/x-icon")
            if path not in ("/", "/index.html", "/fragment", "/api/state"):
                return self._send(404, b"not found\n", "text/plain")
            try:
                snap = dashboard.snapshot()
            except Exception as e:  # a half-written or broken archive must not kill the server
                return self._send(500, f"cannot read the archive: {e}\n".encode(), "text/plain")
            if path == "/api/state":
                return self._send(200, snap.state, "application/json", snap.version)
            body = snap.fragment if path == "/fragment" else snap.page
            return self._send(200, body, "text/html; charset=utf-8", snap.version, snap.generated)

        def _send(self, code: int, body: bytes, kind: str, version: str = "", generated: str = "") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if version:
                self.send_header("X-Report-Version", version)
            if generated:
                self.send_header("X-Report-Generated", generated)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per poll every 2 s would drown the terminal

    return Handler


def make_server(root: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """Bind the server (port 0 picks a free one); a port in use is a UsageError."""
    cfg = load_config(Path(root))

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET  # --host ::1 works too
        bound_host = host

    try:
        server = Server((host.strip("[]"), port), make_handler(Dashboard(cfg)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} is in use: pass --port N") from e
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}", hint="pass --host/--port") from e
    server.daemon_threads = True
    return server


def url_host(host: str) -> str:
    """The host part of a URL: IPv6 addresses go in brackets."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def serve(root: Path, host: str = "127.0.0.1", port: int = 8765, *,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; `ready` gets the URL once the socket listens."""
    server = make_server(root, host, port)
    url = f"http://{url_host(host)}:{server.server_address[1]}/"
    if ready:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
