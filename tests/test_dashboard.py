"""`harness dashboard` as a real subprocess: state endpoint, self-updating page, port errors."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest
import support.browser
from support.archive import harness_command, init_repo, make_archive
from support.browser import browser_or_skip

from harness.dashboard import Dashboard, host_allowed, make_server
from harness.ledger import Ledger, Row

SHOTS = Path(os.environ["HARNESS_SCREENSHOTS"]) if os.environ.get("HARNESS_SCREENSHOTS") else None
NEW_DESCRIPTION = "NEW-EXPERIMENT DEPTH 6 <b>not bold</b>"


def start_dashboard(repo: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*harness_command(), "dashboard", "--repo", str(repo), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("dashboard: http://"):
        proc.kill()
        raise AssertionError(f"dashboard did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split()[1]


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def get(url: str) -> tuple[bytes, float]:
    start = time.monotonic()
    with urlopen(url, timeout=10) as r:
        body = r.read()
    return body, time.monotonic() - start


def state(url: str) -> dict:
    return json.loads(get(url + "api/state")[0])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    repo = tmp_path / "repo"
    make_archive(repo, 12)
    proc, url = start_dashboard(repo, "--port", "0")
    yield repo, url
    assert stop(proc) == 0  # Ctrl-C is a clean stop


def add_experiment(repo: Path) -> None:
    Ledger(repo / ".auto-log-research" / "results.tsv").append(Row(
        commit="c0ffee1234567", value=1.86, memory_gb=1.0, status="keep", description=NEW_DESCRIPTION,
        experiment=12, delta=-0.01, margin=0.004, best_before=1.87))


def wait_for(predicate, seconds: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def test_state_endpoint_follows_the_ledger(served: tuple[Path, str]) -> None:
    repo, url = served
    s = state(url)
    assert s["experiments"] == 12 and s["latest_experiment"] == 11 and s["metric"] == "val_bpb"
    assert s["counts"] == {"baseline": 1, "keep": 3, "discard": 3, "crash": 2, "no_change": 1, "agent_error": 1,
                           "infra": 1}
    assert s["best"]["value"] == 1.87 and s["best"]["experiment"] == 8
    page, cold = get(url)
    _, warm = get(url)
    html = page.decode()
    assert 'data-live="1"' in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    print(f"page load: first {cold * 1000:.0f} ms, cached {warm * 1000:.0f} ms")
    add_experiment(repo)
    wait_for(lambda: state(url)["experiments"] == 13, 5, "the new experiment showing in /api/state")
    s = state(url)
    assert s["latest_experiment"] == 12 and s["best"] == {"value": 1.86, "commit": "c0ffee1234567", "experiment": 12}
    assert "NEW-EXPERIMENT DEPTH 6 &lt;b&gt;not bold&lt;/b&gt;" in get(url + "fragment")[0].decode()
    with pytest.raises(HTTPError) as err:
        urlopen(url + "etc/passwd", timeout=10)
    assert err.value.code == 404


def test_page_updates_itself_in_the_browser(served: tuple[Path, str], tmp_path: Path) -> None:
    repo, url = served
    with browser_or_skip(tmp_path) as b:
        seconds = b.navigate(url)
        print(f"dashboard page loaded in the browser in {seconds:.2f} s")
        b.drain(2.5)  # at least one poll of /api/state
        assert "live: 12 experiments" in b.evaluate("document.getElementById('live-status').textContent")
        generated = b.evaluate("document.getElementById('generated').textContent")
        b.screenshot((SHOTS or tmp_path) / "dashboard.png")
        time.sleep(1.1)  # the header's time has a resolution of one second
        add_experiment(repo)

        def shows_new() -> bool:
            b.drain(0.2)
            return NEW_DESCRIPTION in b.evaluate("document.getElementById('report').innerText")

        wait_for(shows_new, 8, "the page showing the new experiment")
        assert b.evaluate("document.querySelectorAll('table.sortable tbody tr').length") == 13
        assert b.evaluate("document.querySelectorAll('b').length") == 1  # only the page's own <b> (metric)
        assert b.evaluate("document.getElementById('generated').textContent") != generated  # refreshed on swap
        b.drain(2.5)
        assert b.messages == []
        b.screenshot((SHOTS or tmp_path) / "dashboard-after.png", full_page=True)


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_repo(repo)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*harness_command(), "dashboard", "--repo", str(repo), "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: port {port} is in use: pass --port N"
    assert proc.stdout == ""


def test_dashboard_of_an_empty_archive(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_repo(repo)
    proc, url = start_dashboard(repo, "--port", "0")
    try:
        s = state(url)
        assert s["experiments"] == 0 and s["best"] is None and s["latest_experiment"] is None
        assert "Nothing yet" in get(url)[0].decode()
    finally:
        assert stop(proc) == 0


def request(url: str, host: str | None) -> tuple[int, bytes]:
    """GET url with this Host header (None: none at all), as a rebinding page's fetch would send it."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("GET", "/api/state", skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_default_bind_is_loopback_and_other_host_names_get_403(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_repo(repo)
    proc, url = start_dashboard(repo, "--port", "0")  # no --host
    try:
        assert url.startswith("http://127.0.0.1:")
        port = urlparse(url).port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert request(url, host)[0] == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                     f"127.0.0.1:{port + 1}", f"192.168.1.5:{port}", "", None):
            status, body = request(url, host)
            assert status == 403 and b"forbidden" in body, host
    finally:
        assert stop(proc) == 0
    server = make_server(repo, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_host_rules_when_bound_elsewhere() -> None:
    assert host_allowed("10.0.0.2:80", "10.0.0.2", 80) and not host_allowed("10.0.0.3:80", "10.0.0.2", 80)
    assert host_allowed("10.0.0.3:80", "0.0.0.0", 80)  # bound to every address: any IP literal
    assert not host_allowed("rebound.example:80", "0.0.0.0", 80)  # but never a name
    assert not host_allowed("::1", "127.0.0.1", 80)  # an IPv6 address needs brackets


def test_dashboard_on_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"cannot bind ::1 here: {e}")
    repo = tmp_path / "repo"
    make_archive(repo, 3)
    proc, url = start_dashboard(repo, "--host", "::1", "--port", "0")
    try:
        assert url.startswith("http://[::1]:")
        assert state(url)["experiments"] == 3
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    init_repo(tmp_path / "repo")
    proc = subprocess.run([*harness_command(), "dashboard", "--repo", str(tmp_path / "repo"), "--port", port],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Invalid value for '--port'" in proc.stderr


def test_a_new_experiment_does_not_diff_every_keep_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import report
    from harness.config import load_config

    repo = tmp_path / "repo"
    make_archive(repo, 24)
    calls: list[tuple[str, str]] = []
    real = report.commit_diff
    monkeypatch.setattr(report, "commit_diff", lambda root, archive, a, b, files: calls.append((a, b))
                        or real(root, archive, a, b, files))
    dash = Dashboard(load_config(repo))
    first = dash.snapshot()
    keeps = len(calls)
    assert keeps >= 5
    assert dash.snapshot() is first  # nothing changed: nothing rendered
    add_experiment(repo)
    second = dash.snapshot()
    assert second.version != first.version and b"NEW-EXPERIMENT" in second.fragment
    assert len(calls) == keeps + 1  # only the new keep's diff
    assert second.generated and b'<span id="generated">' in second.page


def test_browser_checks_skip_loudly_or_fail_when_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support.browser, "chromium_path", lambda: (None, "no chromium here"))
    monkeypatch.delenv(support.browser.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium here.*HARNESS_REQUIRE_CHROMIUM=1"):
        browser_or_skip(tmp_path)
    monkeypatch.setenv(support.browser.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="HARNESS_REQUIRE_CHROMIUM=1 but there is no headless browser"):
        browser_or_skip(tmp_path)
