"""Runs on a Ray cluster: each training run is one Ray task with the resources it needs.

The task gets the attempt's snapshot (the tracked files of the worker's worktree: train.py,
prepare.py, ...), runs it in a temp folder on whichever node Ray picks, through the same
sandboxed runner as a local run, and sends back the run's outputs (run.log, metrics.jsonl,
run_summary.json, the evaluation receipt, ...) for the archive. Tracked files the run changed
come back too, so the harness's integrity check sees them as it would locally.

What a Ray error means for the attempt (`classify`):
- the node, the worker process, the object store, the node's disk, the task's runtime env, a
  cancel by someone else: infrastructure. Retried once; a second failure raises InfraError,
  which the loop records as `infra`, never against the idea.
- Ray's memory monitor killed the run's worker (OutOfMemoryError): the run used too much
  memory, so the attempt is an OOM crash, as it would be locally.
- a task that Ray does not start within HARNESS_RAY_SCHEDULE_TIMEOUT seconds (default 600: no
  node has room, or none ever will): InfraError at once, so the loop never waits forever.
- anything else is a FatalError: one line saying what failed.

`ray` is an optional dependency, imported only here and only when this executor is used. Nodes
need what a local run needs: this package installed (the task imports harness.runner), and the
data prepared in their cache (ALR_CACHE_DIR and ALR_DATASET are forwarded). HARNESS_RAY_RUNTIME_ENV
(JSON) is passed to every task as its Ray runtime_env, e.g. '{"pip": ["auto-log-research"]}'.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import runner
from harness.errors import FatalError, HarnessError, InfraError, UsageError
from harness.executors import AUTO, Resources, Slot
from harness.executors.local import thread_env

RETRIES = 1  # an infrastructure failure is retried this often before it is recorded as `infra`
FORWARDED = ("ALR_CACHE_DIR", "ALR_DATASET", "ALR_DEVICE")
MAX_SHIPPED_BYTES = 256 * 2**20  # the snapshot: code, not data (data is prepared on each node)
MAX_RETURNED_FILE = 64 * 2**20
POLL_S = 0.2
CONNECT_TIMEOUT_S = float(os.environ.get("HARNESS_RAY_CONNECT_TIMEOUT", "90"))
SCHEDULE_TIMEOUT_ENV = "HARNESS_RAY_SCHEDULE_TIMEOUT"
SCHEDULE_TIMEOUT_S = 600.0  # a run Ray has not started by then is an infra failure
RUNTIME_ENV_ENV = "HARNESS_RAY_RUNTIME_ENV"
# Runs the command as its child and ends the run's whole process group if the Ray worker that
# started it dies (else the training would go on, orphaned, holding the node's CPUs or GPU).
_DIE_WITH_PARENT = """\
import ctypes, os, signal, subprocess, sys
def die(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, die)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGUSR1))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() == 1:
    die()
child = subprocess.Popen(sys.argv[1:])
code = child.wait()
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed",
                         hint="pip install 'auto-log-research[ray]' (or: pip install 'ray[default]')") from None
    return ray


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int, *, address: str | None = None, resources: Resources = AUTO,
                 emit: Callable[[str, str], None] | None = None):
        self.ray = _import_ray()
        self.address = address
        self.emit = emit or (lambda level, text: None)
        self.schedule_timeout_s = _schedule_timeout()
        self.runtime_env = _runtime_env()
        self.in_flight: dict[int, object] = {}  # worker -> its task (an ObjectRefGenerator)
        _connect(self.ray, address)
        try:
            self.slots = _plan(self.ray.cluster_resources(), workers, resources, self.emit)
            self._remote = self.ray.remote(_run_task)
            if self.runtime_env:
                self._remote.options(runtime_env=self.runtime_env)  # Ray checks it here
        except (TypeError, ValueError) as e:
            self.ray.shutdown()
            raise UsageError(f"{RUNTIME_ENV_ENV} is not a runtime_env Ray accepts: {_first_line(e)}",
                             hint="see https://docs.ray.io/en/latest/ray-core/handling-dependencies.html") from None
        except BaseException:
            self.ray.shutdown()
            raise

    def run(self, spec: runner.RunSpec, *, on_line=None, stop_event=None) -> runner.RunOutcome:
        slot = _slot_of(self.slots, spec.env)
        payload = _snapshot(spec.cwd)
        last: _Lost | None = None
        for attempt in range(RETRIES + 1):
            try:
                return self._run_once(spec, slot, payload, stop_event)
            except _Lost as e:
                last = e
                if attempt < RETRIES:
                    self.emit("warn", f"the Ray task {e.what} ({e.reason}); retrying it once")
        assert last is not None
        raise InfraError(f"the Ray task {last.what} twice: {last.reason}", hint=last.hint)

    def _run_once(self, spec: runner.RunSpec, slot: Slot, payload: dict[str, bytes], stop_event) -> runner.RunOutcome:
        ray = self.ray
        env = {**spec.env, **{k: os.environ[k] for k in FORWARDED if k in os.environ}}
        job = {"argv": spec.argv, "shell_command": spec.shell_command, "env": env,
               "local_cwd": str(spec.cwd), "local_out": str(spec.out_dir), "local_python": sys.executable,
               "wall_limit_s": spec.wall_limit_s, "memory_mb": spec.memory_mb,
               "output_cap_bytes": spec.output_cap_bytes, "network": spec.network,
               "home": spec.home is not None}
        options: dict = {"num_cpus": slot.cpus, "max_retries": 0, "name": f"alr-run-w{slot.worker}"}
        if slot.gpus:
            options["num_gpus"] = slot.gpus
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        submitted = time.monotonic()
        started: float | None = None  # when the task said it runs (its first item)
        task = None
        try:
            task = self._remote.options(**options).remote(payload, job)
            self.in_flight[slot.worker] = task
            while True:
                if stop_event is not None and stop_event.is_set():  # `finally` cancels it
                    return _outcome_without_run(spec, time.monotonic() - submitted, "stopped by the harness\n",
                                                interrupted=True)
                ready, _ = ray.wait([task], timeout=POLL_S)
                if ready:
                    item = ray.get(next(task))
                    if "started" in item:
                        started = time.monotonic()
                        continue
                    task, result = None, item  # finished: nothing to cancel
                    break
                if started is None and time.monotonic() - submitted > self.schedule_timeout_s:
                    raise InfraError(f"the Ray task was not started within {self.schedule_timeout_s:g} s: no node "
                                     f"of the cluster has room for a run asking for {_asks(slot)}",
                                     hint=f"check `ray status` (free and pending resources); {SCHEDULE_TIMEOUT_ENV} "
                                          "sets how long a run may wait")
        except HarnessError:
            raise
        except StopIteration:
            raise _Lost("was lost", "it ended without sending its result") from None
        except Exception as e:  # noqa: BLE001 - every Ray error is classified; see the module docstring
            kind = classify(ray, e)
            if kind == "oom":
                return _oom_outcome(spec, time.monotonic() - (started or submitted), e)
            if kind == "task":
                raise _Lost("failed on its node", _reason(e),
                            "is auto-log-research installed on every node? (see docs/scaling.md)") from e
            if kind == "lost":
                raise _Lost("was lost", _reason(e)) from e
            raise FatalError(f"the Ray executor failed: {_reason(e)}",
                             hint="this Ray error is not one the harness knows; run again with HARNESS_DEBUG=1 "
                                  "for the traceback, and check `ray status`") from e
        finally:
            self.in_flight.pop(slot.worker, None)
            if task is not None:  # given up on (an error, the deadline): it must not go on holding a node
                _cancel(ray, task)
        return _unpack(result, spec)

    def close(self) -> None:
        for task in list(self.in_flight.values()):
            _cancel(self.ray, task)
        try:
            self.ray.shutdown()
        except Exception:  # noqa: BLE001 - closing must not hide the loop's own result
            pass


def _cancel(ray, task) -> None:
    try:
        ray.cancel(task, force=True)
    except Exception:  # noqa: BLE001 - the task or the cluster may be gone already
        pass


def classify(ray, error: BaseException) -> str:
    """What a Ray error means for the attempt: "oom" (Ray's memory monitor killed the run: it
    used too much memory), "task" (the harness's task code raised on the node: the node's setup),
    "lost" (node, worker, object store, disk, runtime env, a cancel, the connection: the
    infrastructure), or "unknown"."""
    x = ray.exceptions
    if isinstance(error, x.OutOfMemoryError):
        return "oom"
    if isinstance(error, x.RayTaskError):
        return "task"
    if isinstance(error, x.RayError | ConnectionError):
        return "lost"
    return "unknown"


class _Lost(Exception):
    """The task (not the training) failed: a dead worker or node, a broken node setup, ..."""

    def __init__(self, what: str, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.what, self.reason = what, reason
        self.hint = hint or "check the cluster (`ray status`); the attempt was not counted against the idea"


def _asks(slot: Slot) -> str:
    cpus = f"{slot.cpus} CPU{'s' if slot.cpus != 1 else ''}"
    return f"{slot.gpus:g} GPU and {cpus}" if slot.gpus else cpus


def _schedule_timeout() -> float:
    text = os.environ.get(SCHEDULE_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else SCHEDULE_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"{SCHEDULE_TIMEOUT_ENV}={text!r} is not a positive number of seconds",
                         hint=f"e.g. {SCHEDULE_TIMEOUT_ENV}=600")
    return value


def _runtime_env() -> dict | None:
    text = os.environ.get(RUNTIME_ENV_ENV, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        value = e
    if not isinstance(value, dict):
        raise UsageError(f"{RUNTIME_ENV_ENV} is not a JSON object: {str(value)[:100]}",
                         hint=f"""e.g. {RUNTIME_ENV_ENV}='{{"pip": ["auto-log-research"]}}' (a Ray runtime_env)""")
    return value


def _oom_outcome(spec: runner.RunSpec, wall: float, error: BaseException) -> runner.RunOutcome:
    log = (f"OutOfMemoryError: the Ray node ran out of memory and Ray's memory monitor killed this run "
           f"({_reason(error)})\n")
    path = Path(spec.out_dir) / runner.LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(log)
    return runner.RunOutcome(None, int(signal.SIGKILL), False, True, False, wall, path, False, False)


# -- connecting and planning --------------------------------------------------------------------------


def _connect(ray, address: str | None) -> None:
    """ray.init, or one clear line: an unreachable address fails in seconds, not minutes."""
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--ray-address {address!r} is not host:port", hint="e.g. --ray-address 10.0.0.5:6379")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}",
                             hint="start it (`ray start --head`) or fix --ray-address / RAY_ADDRESS") from None
    kwargs = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        # A new cluster of this machine, for trying it out. "local" on purpose: with no address
        # Ray would first try the last cluster it knew (/tmp/ray), and wait on it if it is dead.
        kwargs.update(address="local", include_dashboard=False)
    else:
        kwargs.update(address=address)
    where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
    # ray.init must run on the main thread: the cluster processes it starts die with the thread
    # that started them. A timer signal bounds the wait on a cluster that never answers.
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGALRM, _connect_timeout)
        signal.setitimer(signal.ITIMER_REAL, CONNECT_TIMEOUT_S)
    try:
        ray.init(**kwargs)
    except _ConnectTimeout:
        raise UsageError(f"the Ray cluster ({where}) did not answer within {CONNECT_TIMEOUT_S:.0f} s",
                         hint="check that it runs (`ray status`) and that --ray-address / RAY_ADDRESS is right") from None
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise UsageError(f"cannot connect to the Ray cluster ({where}): {_first_line(e)}",
                         hint="check the address and that the cluster runs (`ray status`)") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class _ConnectTimeout(Exception):
    pass


def _connect_timeout(_signum, _frame) -> None:
    raise _ConnectTimeout


def _plan(cluster: dict, workers: int, resources: Resources, emit) -> list[Slot]:
    """What each worker's runs ask Ray for; UsageError when no run could ever be scheduled."""
    cpus, gpus = int(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpus_per_worker = resources.gpus_per_worker
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must not be negative, got {gpus_per_worker:g}")
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise UsageError(f"runs ask for {gpus_per_worker:g} GPU each, but the Ray cluster has {gpus:g}",
                         hint="use --gpus-per-worker 0 to train on CPUs, or add GPU nodes")
    if cpus < 1:
        raise UsageError("the Ray cluster has no CPUs", hint="check `ray status`")
    threads = resources.threads_per_worker or max(1, cpus // workers)
    if threads > cpus:
        raise UsageError(f"runs ask for {threads} CPUs each, but the Ray cluster has {cpus}",
                         hint="use a smaller --threads-per-worker, or add nodes")
    fit = int(gpus // gpus_per_worker) if gpus_per_worker else cpus // threads
    if workers > fit:
        what = f"{gpus:g} GPUs" if gpus_per_worker else f"{cpus} CPUs"
        emit("warn", f"--workers {workers}: the Ray cluster ({what}) runs only {fit} at once; the rest wait "
                     "for room (an autoscaling cluster adds nodes)")
    label = f"{gpus_per_worker:g} GPU" if gpus_per_worker else f"{threads} thread{'s' if threads > 1 else ''}"
    return [Slot(w, f"ray {label}", gpus_per_worker, threads, {**thread_env(threads), "ALR_WORKER": str(w)})
            for w in range(workers)]


def _slot_of(slots: list[Slot], env: dict[str, str]) -> Slot:
    worker = env.get("ALR_WORKER")
    return next((s for s in slots if str(s.worker) == worker), slots[0])


# -- shipping files both ways ---------------------------------------------------------------------------


def _snapshot(cwd: Path) -> dict[str, bytes]:
    """The tracked files of the worktree, as they are on disk."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=cwd, capture_output=True, check=True).stdout
    files, total = {}, 0
    for name in filter(None, names.decode().split("\0")):
        path = Path(cwd) / name
        if path.is_file():
            files[name] = data = path.read_bytes()
            total += len(data)
    if total > MAX_SHIPPED_BYTES:
        raise UsageError(f"the tracked files are {total / 2**20:.0f} MB: too much to ship to Ray for every run",
                         hint="keep data out of git; prepare it on each node (see docs/scaling.md)")
    return files


def _run_task(payload: dict[str, bytes], job: dict):
    """On a Ray node: write the snapshot, run it with harness.runner, return what it made. A
    generator: its first item says the task has started (the schedule deadline stops there)."""
    yield {"started": time.time(), "node": socket.gethostname()}
    with tempfile.TemporaryDirectory(prefix="alr-run-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        for name, data in payload.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        out.mkdir()
        local_cwd, local_out, local_py = job["local_cwd"], job["local_out"], job["local_python"]

        def here(text: str) -> str:
            return text.replace(local_out, str(out)).replace(local_cwd, str(src)).replace(local_py, sys.executable)

        env = {k: here(v) for k, v in job["env"].items()}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.environ.get("PATH", ""))])
        command = [here(a) for a in job["argv"]] if job["argv"] else ["/bin/sh", "-c", here(job["shell_command"])]
        spec = runner.RunSpec(argv=[sys.executable, "-c", _DIE_WITH_PARENT, *command], shell_command=None,
                              cwd=src, out_dir=out, env=env, wall_limit_s=job["wall_limit_s"],
                              memory_mb=job["memory_mb"], output_cap_bytes=job["output_cap_bytes"],
                              network=job["network"], home=Path(tmp) / "home" if job.get("home") else None)
        outcome = runner.run(spec)
        made = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                if p.is_file() and p.stat().st_size <= MAX_RETURNED_FILE}
        changed = {}
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            if p.is_file() and "__pycache__" not in p.parts and p.stat().st_size <= MAX_RETURNED_FILE:
                data = p.read_bytes()
                if payload.get(rel) != data:
                    changed[rel] = data
        yield {"returncode": outcome.returncode, "signal": outcome.signal, "timed_out": outcome.timed_out,
                "oom": outcome.oom, "interrupted": outcome.interrupted, "wall_seconds": outcome.wall_seconds,
                "log_truncated": outcome.log_truncated, "network_isolated": outcome.network_isolated,
                "out": made, "workdir": changed, "node": socket.gethostname()}


def _unpack(result: dict, spec: runner.RunSpec) -> runner.RunOutcome:
    out_dir, cwd = Path(spec.out_dir), Path(spec.cwd)
    for rel, data in result["out"].items():
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
    for rel, data in result["workdir"].items():  # files the run changed or made next to train.py
        target = (cwd / rel).resolve()
        if target.is_relative_to(cwd.resolve()):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return runner.RunOutcome(result["returncode"], result["signal"], result["timed_out"], result["oom"],
                             result["interrupted"], result["wall_seconds"], out_dir / runner.LOG_NAME,
                             result["log_truncated"], result["network_isolated"])


def _outcome_without_run(spec: runner.RunSpec, wall: float, log: str, *, interrupted: bool) -> runner.RunOutcome:
    path = Path(spec.out_dir) / runner.LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(log)
    return runner.RunOutcome(None, None, False, False, interrupted, wall, path, False, False)


def _reason(e: BaseException) -> str:
    """An error in one line: its first line, and its last when it carries a traceback."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    name = type(e).__name__
    if not lines:
        return name
    if len(lines) > 1:
        return f"{name}: {lines[0][:150]} ... {lines[-1][:150]}"
    return f"{name}: {lines[0][:300]}"


def _first_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200] if e is not None else "unknown"
