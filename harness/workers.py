"""What the workers are doing and what the runs cost in device time, for `harness status`, the
live view and the report. Reads only the archive.

- `workers.json`: written by a loop with workers while it runs (each worker: its device, the
  experiment and phase it is in, the attempt's description) and marked stopped when it ends. It
  is shown as "the workers" only while the loop that wrote it holds the lock, so a later serial
  loop (which does not write it) never shows stale workers.
- every run's `outcome.json` (Lab.run_once writes one per run: baseline, serial and parallel
  runs alike, local or Ray): its wall seconds, the worker, the device label and the GPUs and CPU
  threads it had. GPU-hours are the sum of wall seconds x GPUs over all runs; CPU core-hours the
  sum of wall seconds x threads over the runs that had no GPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.lock import held, read

STATUS_FILE = "workers.json"
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class RunTime:
    """One run as its outcome.json recorded it."""

    commit: str
    seed: int
    worker: int
    device: str  # "GPU 0", "1 thread", "ray 1 GPU", "cpu"; "?" for runs recorded before devices were
    gpus: float
    cpus: int
    seconds: float


class DeviceTime:
    """Totals over `self.runs`, for anything that holds runs."""

    runs: tuple[RunTime, ...]

    @property
    def run_hours(self) -> float:
        return sum(r.seconds for r in self.runs) / 3600

    @property
    def gpu_hours(self) -> float:
        """GPU-hours: each run's seconds times the GPUs it held."""
        return sum(r.seconds * r.gpus for r in self.runs) / 3600

    @property
    def cpu_hours(self) -> float:
        """CPU core-hours of the runs that had no GPU: seconds times the threads they were given."""
        return sum(r.seconds * r.cpus for r in self.runs if not r.gpus) / 3600


@dataclass(frozen=True)
class WorkerUsage(DeviceTime):
    """The runs of one worker on one device."""

    worker: int
    device: str
    runs: tuple[RunTime, ...]

    @property
    def commits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.commit for r in self.runs))


@dataclass(frozen=True)
class DeviceReport(DeviceTime):
    """All runs' device time, and the workers of the loop running now (None when none runs)."""

    runs: tuple[RunTime, ...] = ()
    live: dict | None = None  # workers.json of the running loop

    def by_worker(self) -> list[WorkerUsage]:
        groups: dict[tuple[int, str], list[RunTime]] = {}
        for r in self.runs:
            groups.setdefault((r.worker, r.device), []).append(r)
        return [WorkerUsage(w, d, tuple(runs)) for (w, d), runs in sorted(groups.items())]

    def worker_now(self, worker: int) -> dict | None:
        """What `worker` of the running loop does now, from workers.json."""
        for w in (self.live or {}).get("workers") or []:
            if w.get("worker") == worker:
                return w
        return None


def device_report(archive: Path) -> DeviceReport:
    return DeviceReport(tuple(run_times(archive)), live_status(archive))


def run_times(archive: Path) -> list[RunTime]:
    """Every run's outcome.json under the archive's attempt folders (<sha>/ and <sha>/seedN/)."""
    archive = Path(archive)
    out: list[RunTime] = []
    try:
        folders = sorted(p for p in archive.iterdir() if p.is_dir() and _SHA.match(p.name))
    except OSError:
        return out
    for folder in folders:
        for path in (folder / "outcome.json", *sorted(folder.glob("seed*/outcome.json"))):
            run = _run_time(folder.name, path)
            if run is not None:
                out.append(run)
    return out


def _run_time(commit: str, path: Path) -> RunTime | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunTime(commit, int(data.get("seed", 0)), int(data.get("worker", 0)), str(data.get("device", "?")),
                       float(data.get("gpus", 0.0)), int(data.get("cpus", 0)), float(data["wall_seconds"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


# -- workers.json ----------------------------------------------------------------------------------


def write_status(archive: Path, state: dict) -> None:
    try:
        atomic.write_text(Path(archive) / STATUS_FILE, json.dumps(state, indent=1), fsync=False)
    except OSError:
        pass  # a status view is not worth stopping the research for


def read_status(archive: Path) -> dict | None:
    """The workers file of the archive (written by a running or finished loop with workers)."""
    try:
        data = json.loads((Path(archive) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_status(archive: Path) -> dict | None:
    """workers.json if the loop that wrote it is the one holding the lock now, else None."""
    state = read_status(archive)
    lock_path = Path(archive) / "lock"
    owner = read(lock_path)
    if not state or owner is None or state.get("pid") != owner.pid or not held(lock_path):
        return None
    return state


def status_lines(archive: Path, running: bool = True) -> list[str]:
    """`harness status` lines: the workers of the running loop and what each runs, and the
    device time of all runs so far."""
    report = device_report(archive)
    lines = []
    if report.live and running:
        workers = report.live.get("workers") or []
        lines.append(f"workers     {len(workers)} on {report.live.get('executor', '?')}")
        for w in workers:
            what = "idle"
            if w.get("experiment") is not None:
                commit = f" {str(w['commit'])[:7]}" if w.get("commit") else ""
                desc = f": {w['description']}" if w.get("description") else ""
                what = f"#{w['experiment']:03d} {w.get('phase', '?')}{commit}{desc}"
            lines.append(f"  w{w.get('worker')} [{w.get('label', '')}] {what}"[:160])
    if report.runs:
        lines.append(f"device time GPU-hours {report.gpu_hours:.2f}, CPU core-hours {report.cpu_hours:.2f}, "
                     f"run-hours {report.run_hours:.2f} ({len(report.runs)} runs)")
    return lines
