"""Headless Chromium driven over the DevTools protocol, with a minimal stdlib websocket client.

    with Browser.launch(tmp_path) as b:
        b.navigate("file:///.../report.html")
        b.evaluate("document.title")
        b.screenshot(tmp_path / "shot.png")
        b.messages   # every console call, uncaught exception, log entry and JS dialog, in order

`chromium_path()` finds the binary; in CI (`CI` set) it runs `apt-get install -y chromium` once
if the binary is missing. `browser_or_skip()` skips loudly when there is no browser (the reason
shows in `pytest -ra`), or fails the test when HARNESS_REQUIRE_CHROMIUM=1 (CI sets it, so the
browser checks cannot quietly stop running).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

REQUIRE_ENV = "HARNESS_REQUIRE_CHROMIUM"

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio")


def chromium_path() -> tuple[str | None, str]:
    """(path, reason): the chromium binary, or None and why there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found, ""
    if os.environ.get("CI") and shutil.which("apt-get"):
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("chromium"):
            return shutil.which("chromium"), ""
        return None, f"apt-get install chromium failed: {proc.stderr.strip()[-300:]}"
    return None, "no chromium binary on PATH (Debian: apt-get install -y chromium)"


def browser_or_skip(tmp: Path) -> Browser:
    """A launched headless browser; with none installed a loud skip, or a failure under
    HARNESS_REQUIRE_CHROMIUM=1."""
    binary, reason = chromium_path()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but there is no headless browser: {reason}", pytrace=False)
        print(f"\n*** SKIPPING browser checks: {reason} ***")
        pytest.skip(f"no headless browser: {reason} (set {REQUIRE_ENV}=1 to fail instead)")
    return Browser.launch(tmp)


class WebSocket:
    """Just enough of RFC 6455 for DevTools: masked text frames out, whole messages in."""

    def __init__(self, url: str, timeout: float = 30.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return bytes(buf)

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else b""
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (9, 10):  # ping/pong: DevTools does not need answers
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode("utf-8", errors="replace")

    def close(self) -> None:
        self.sock.close()


@dataclass
class Browser:
    proc: subprocess.Popen
    ws: WebSocket
    messages: list[str] = field(default_factory=list)
    _next_id: int = 0
    loads: int = 0  # load events seen

    @classmethod
    def launch(cls, tmp: Path, width: int = 1400, height: int = 3000) -> Browser:
        binary, reason = chromium_path()
        if binary is None:
            raise RuntimeError(reason)
        profile = Path(tmp) / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = open(Path(tmp) / "chromium-stderr.txt", "wb")  # noqa: SIM115 - lives as long as the browser
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=log)
        try:
            port = _devtools_port(profile, proc)
            pages = json.load(urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(p for p in pages if p.get("type") == "page")
            b = cls(proc, WebSocket(page["webSocketDebuggerUrl"]))
            for domain in ("Page", "Runtime", "Log"):
                b.send(f"{domain}.enable")
            b.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
            return b
        except BaseException:
            proc.kill()
            proc.wait()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def send(self, method: str, timeout: float = 30.0, **params: object) -> dict:
        self._next_id += 1
        my_id = self._next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)
        raise TimeoutError(f"{method}: no answer in {timeout} s")

    def _event(self, msg: dict) -> dict:
        method, p = msg.get("method", ""), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.messages.append(f"console.{p.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.messages.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded":
            entry = p.get("entry", {})
            self.messages.append(f"log.{entry.get('level')}: {entry.get('text')} ({entry.get('url', '')})")
        elif method == "Page.loadEventFired":
            self.loads += 1
        elif method == "Page.javascriptDialogOpening":
            self.messages.append(f"dialog: {p.get('type')} {p.get('message')}")
            self.send("Page.handleJavaScriptDialog", accept=True)
        return msg

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._event(json.loads(self.ws.recv()))
            if msg.get("method") == method:
                return msg.get("params", {})
        raise TimeoutError(f"no {method} in {timeout} s")

    def navigate(self, url: str, timeout: float = 30.0) -> float:
        """Load url and wait for its load event; returns the seconds it took."""
        start, loads = time.monotonic(), self.loads
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigate {url}: {result['errorText']}")
        while self.loads == loads:  # the event may already have come in while waiting for the answer
            self.wait_event("Page.loadEventFired", timeout)
        return time.monotonic() - start

    def evaluate(self, expression: str) -> object:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate {expression!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def drain(self, seconds: float) -> None:
        """Let the page run for a while, collecting its events."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.ws.sock], [], [], min(left, 0.2))
            if ready:
                self._event(json.loads(self.ws.recv()))

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """The viewport as a PNG, or with full_page the whole page however long it is."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        data = self.send("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Chromium writes the port it picked to <profile>/DevToolsActivePort once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} before it listened")
        try:
            return int(marker.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.05)
    raise TimeoutError(f"chromium did not open its DevTools port in {timeout} s")
