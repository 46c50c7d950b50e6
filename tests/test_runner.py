"""harness.runner: real subprocesses, real signals, real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support.faults import alive

from harness import runner
from harness.errors import FatalError

REPO = Path(__file__).resolve().parents[1]

# A training-like script that forks a long-lived child (like a dataloader worker) and records
# both pids, then does what argv[1] says.
FORKING_SCRIPT = """
import os, signal, subprocess, sys, time
child = subprocess.Popen(["sleep", "1000"])
open("pids.tmp", "w").write(f"{os.getpid()} {child.pid}")
os.replace("pids.tmp", "pids")
print("started", flush=True)
mode = sys.argv[1]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "exit":
    sys.exit(0)
time.sleep(1000)
"""



def wait_for(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def spec(tmp_path: Path, code: str, *args: str, **kw) -> runner.RunSpec:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    kw.setdefault("wall_limit_s", 30.0)
    return runner.RunSpec(
        argv=[sys.executable, str(script), *args],
        shell_command=None,
        cwd=tmp_path,
        out_dir=tmp_path / "out",
        **kw,
    )


def read_pids(tmp_path: Path) -> list[int]:
    return [int(p) for p in (tmp_path / "pids").read_text().split()]


def test_success_writes_log_and_reports_exit(tmp_path):
    out = runner.run(spec(tmp_path, "print('hello'); print('---'); print('val_bpb: 1.5')"))
    assert out.ok and out.returncode == 0 and out.signal is None and out.failure is None
    assert out.log_path == tmp_path / "out" / "run.log"
    assert out.log_path.read_text() == "hello\n---\nval_bpb: 1.5\n"
    assert out.log_tail(13) == "val_bpb: 1.5\n"


def test_bad_exit_and_signal_are_data_not_exceptions(tmp_path):
    out = runner.run(spec(tmp_path, "import sys; print('FAIL: loss diverged'); sys.exit(3)"))
    assert (out.returncode, out.signal, out.oom, out.ok) == (3, None, False, False)
    assert out.failure == "exit code 3"
    out = runner.run(spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    assert out.returncode is None and out.signal == signal.SIGSEGV and not out.oom
    assert out.failure == "killed by SIGSEGV"


@pytest.mark.parametrize("network", [False, True])  # via unshare (if allowed) and directly
def test_missing_command_is_a_failed_run(tmp_path, network):
    s = runner.RunSpec(["/nonexistent/python"], None, tmp_path, tmp_path / "out", network=network)
    out = runner.run(s)
    assert out.returncode == 127 and not out.ok
    assert "/nonexistent/python" in out.log_tail()


def test_shell_command_runs_in_cwd(tmp_path):
    (tmp_path / "marker").write_text("here")
    s = runner.RunSpec(None, "cat marker; echo $ALR_SEED", tmp_path, tmp_path / "out", env={"ALR_SEED": "7"})
    out = runner.run(s)
    assert out.ok and out.log_path.read_text() == "here7\n"


def test_timeout_kills_the_whole_process_group(tmp_path):
    t0 = time.monotonic()
    out = runner.run(spec(tmp_path, FORKING_SCRIPT, "sleep", wall_limit_s=3.0))
    assert out.timed_out and not out.ok and out.signal == signal.SIGTERM
    assert out.failure.startswith("timeout")
    assert time.monotonic() - t0 < 15
    assert "started" in out.log_tail()
    for pid in read_pids(tmp_path):
        assert not alive(pid)


def test_child_ignoring_sigterm_gets_sigkill(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "TERM_GRACE_S", 0.5)
    out = runner.run(spec(tmp_path, FORKING_SCRIPT, "ignore-term", wall_limit_s=3.0))
    assert out.timed_out and out.signal == signal.SIGKILL and not out.oom
    for pid in read_pids(tmp_path):
        assert not alive(pid)


def test_leftover_children_die_when_the_run_exits(tmp_path):
    out = runner.run(spec(tmp_path, FORKING_SCRIPT, "exit"))
    assert out.ok and out.wall_seconds < 15  # did not wait for `sleep 1000` to close the pipe
    assert not alive(read_pids(tmp_path)[1])


def test_stop_event_stops_the_run_and_says_interrupted(tmp_path):
    stop = threading.Event()
    threading.Thread(target=lambda: (wait_for(tmp_path / "pids"), stop.set()), daemon=True).start()
    out = runner.run(spec(tmp_path, FORKING_SCRIPT, "sleep"), stop_event=stop)
    assert out.interrupted and not out.timed_out and out.failure == "interrupted"
    for pid in read_pids(tmp_path):
        assert not alive(pid)


def test_ctrl_c_in_the_caller_kills_the_run_and_reraises(tmp_path):
    spec(tmp_path, FORKING_SCRIPT)  # writes script.py
    parent = textwrap.dedent("""
        import sys
        from pathlib import Path
        from harness import runner
        s = runner.RunSpec([sys.executable, "script.py", "sleep"], None, Path("."), Path("out"))
        try:
            runner.run(s)
        except KeyboardInterrupt:
            print("reraised", flush=True)
            raise
        """)
    proc = subprocess.Popen(
        [sys.executable, "-c", parent],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(tmp_path / "pids")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "reraised" in output and "KeyboardInterrupt" in output
    assert proc.returncode != 0
    for pid in read_pids(tmp_path):
        assert not alive(pid)
    assert "started" in (tmp_path / "out" / "run.log").read_text()


def test_huge_output_is_capped_keeping_head_and_tail(tmp_path):
    code = """
        import sys
        out = sys.stdout.buffer
        out.write(b"first line\\n")
        block = (b"y" * 1023 + b"\\n") * 1024
        for _ in range(200):  # 200 MB
            out.write(block)
        out.write(b"---\\nval_bpb: 1.234567\\n")
        """
    cap = 1 << 20
    out = runner.run(spec(tmp_path, code, output_cap_bytes=cap, wall_limit_s=120))
    assert out.ok and not out.timed_out and out.log_truncated
    data = out.log_path.read_bytes()
    assert len(data) <= cap
    assert data.startswith(b"first line\n")
    assert data.endswith(b"---\nval_bpb: 1.234567\n")
    dropped = int(data.split(b"[... ")[1].split(b" bytes truncated")[0])
    assert dropped + len(data) > 200 * 2**20  # the marker counts what was left out


def test_small_output_is_not_truncated(tmp_path):
    out = runner.run(spec(tmp_path, "print('a' * 5000)", output_cap_bytes=4096 * 4))
    assert not out.log_truncated and out.log_path.read_text() == "a" * 5000 + "\n"


def test_on_line_sees_newline_and_carriage_return_lines(tmp_path):
    code = r"""
        import sys
        for i in range(3):
            print(f"\rstep {i} loss 2.{i}", end="", flush=True)
        print()
        print("---\nval_bpb: 1.0")
        """
    lines: list[str] = []
    out = runner.run(spec(tmp_path, code), on_line=lines.append)
    assert out.ok
    assert lines == ["step 0 loss 2.0", "step 1 loss 2.1", "step 2 loss 2.2", "---", "val_bpb: 1.0"]


def test_a_failing_on_line_does_not_break_the_log(tmp_path):
    def broken(line: str) -> None:
        raise RuntimeError("view crashed")

    out = runner.run(spec(tmp_path, "print('one'); print('two')"), on_line=broken)
    assert out.ok and out.log_path.read_text() == "one\ntwo\n"


def test_environment_is_scrubbed_of_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("CUDA_AUTH_SECRET", "nope")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("SOME_RANDOM_VAR", "unlisted")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    env = {"ALR_RUN_DIR": str(tmp_path), "ALR_EVAL_RECEIPT_KEY": "abc123"}
    out = runner.run(spec(tmp_path, code, env=env))
    seen = json.loads(out.log_path.read_text())
    assert "sk-ant-secret" not in out.log_path.read_text()
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "CUDA_AUTH_SECRET", "SOME_RANDOM_VAR", "PYTHONPATH"):
        assert name not in seen
    assert seen["CUDA_VISIBLE_DEVICES"] == "0" and seen["OMP_NUM_THREADS"] == "2"
    assert seen["ALR_RUN_DIR"] == str(tmp_path) and seen["ALR_EVAL_RECEIPT_KEY"] == "abc123"
    assert seen["PYTHONUNBUFFERED"] == "1" and seen["PATH"] == os.environ["PATH"]


def test_memory_limit_is_classified_as_oom(tmp_path):
    code = "print('allocating', flush=True); x = bytearray(4 * 2**30); print('allo' + 'cated')"
    out = runner.run(spec(tmp_path, code, memory_mb=512))
    assert out.oom and not out.ok and out.returncode == 1
    assert out.failure == "out of memory"
    assert "MemoryError" in out.log_tail() and "allocated" not in out.log_tail()


def test_without_memory_limit_a_plain_crash_is_not_oom(tmp_path):
    out = runner.run(spec(tmp_path, "raise ValueError('bad knob')"))
    assert not out.oom and out.returncode == 1


@pytest.fixture
def local_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    print("CONNECTED")
except OSError as e:
    print("BLOCKED", e)
"""


def test_network_is_cut_when_isolation_is_reported(tmp_path, local_server):
    if runner.network_isolation_prefix() is None:
        pytest.skip("this OS does not allow an unprivileged network namespace")
    out = runner.run(spec(tmp_path, CONNECT, str(local_server)))
    assert out.network_isolated
    assert out.log_tail().startswith("BLOCKED")


def test_network_true_allows_connections(tmp_path, local_server):
    out = runner.run(spec(tmp_path, CONNECT, str(local_server), network=True))
    assert not out.network_isolated
    assert out.log_tail().startswith("CONNECTED")


def test_unwritable_out_dir_is_fatal_with_a_clear_message(tmp_path):
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the archive folder should be")
    s = runner.RunSpec(["true"], None, tmp_path, blocker / "0001")
    with pytest.raises(FatalError) as e:
        runner.run(s)
    assert "cannot write the run log" in str(e.value) and "writable" in e.value.hint
    assert "\n" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_out_dir_is_fatal(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    archive.chmod(0o555)
    try:
        with pytest.raises(FatalError, match="cannot write the run log"):
            runner.run(runner.RunSpec(["true"], None, tmp_path, archive / "0001"))
    finally:
        archive.chmod(0o755)


def test_disk_full_while_logging_is_fatal_and_the_run_still_ends(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "run.log").symlink_to("/dev/full")
    with pytest.raises(FatalError, match="disk full"):
        runner.run(spec(tmp_path, "print('x' * 100000)"))


def test_spec_needs_exactly_one_command(tmp_path):
    with pytest.raises(ValueError):
        runner.run(runner.RunSpec(None, None, tmp_path, tmp_path / "out"))


def test_without_unshare_the_run_goes_ahead_unisolated(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no unshare to be found
    runner._probe_isolation.cache_clear()
    try:
        out = runner.run(spec(tmp_path, "print('ran')"))
    finally:
        runner._probe_isolation.cache_clear()
    assert out.ok and not out.network_isolated and out.log_tail() == "ran\n"


def test_kill_leftovers_stops_our_runs_and_leaves_a_recycled_pid_alone(tmp_path):
    """What a restarted harness does with the run.pid files a kill -9 left: a process started for
    that run folder (its ALR_RUN_DIR) dies with its group; another process is not touched."""
    ours_dir, other_dir = tmp_path / "archive" / "aaaa", tmp_path / "archive" / "bbbb"
    for d in (ours_dir, other_dir):
        d.mkdir(parents=True)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "ALR_RUN_DIR": str(ours_dir)}, start_new_session=True)
    stranger = subprocess.Popen(sleeper, env={**os.environ, "ALR_RUN_DIR": str(tmp_path / "elsewhere")},
                                start_new_session=True)
    try:
        (ours_dir / runner.PID_NAME).write_text(str(ours.pid))
        (other_dir / runner.PID_NAME).write_text(str(stranger.pid))  # the pid was reused by someone else
        assert runner.kill_leftovers(tmp_path / "archive") == [ours.pid]
        assert ours.wait(timeout=10) == -signal.SIGKILL
        assert stranger.poll() is None
        assert not list((tmp_path / "archive").glob("*/" + runner.PID_NAME))  # both files handled
    finally:
        for p in (ours, stranger):
            p.kill()
            p.wait()


def test_run_home_is_not_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("ALR_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    s = spec(tmp_path, "import os; print(os.environ['HOME']); print(os.environ['ALR_CACHE_DIR'])",
             home=tmp_path / "run-home")
    out = runner.run(s)
    home, cache = out.log_path.read_text().split()
    assert home == str(tmp_path / "run-home") and (tmp_path / "run-home").is_dir()
    assert cache == str(tmp_path / "user-home" / ".cache" / "auto-log-research")  # the data stays findable
