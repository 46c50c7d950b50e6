"""Where training runs execute when the loop has workers: this machine or a Ray cluster.

An executor runs one RunSpec and says how it ended (a RunOutcome, harness/runner.py), like the
Lab's default LocalRunner. `slots` says what each worker's runs get: GPU ids or a thread count
(environment variables added to the run), so N runs in flight never fight over one device.

    executor = make_executor("local", workers=2)         # checks resources; UsageError if short
    outcome = executor.run(spec, on_line=print)          # may raise InfraError (ray: lost worker)
    executor.close()

`run_device(executor, worker)` says what a run had (device label, GPUs, CPU threads); Lab.run_once
writes it into each run's outcome.json, which is where GPU-hours come from (harness/workers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from harness.errors import UsageError
from harness.runner import RunOutcome, RunSpec

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Resources:
    """What each worker's runs ask for; None: decided from what there is."""

    gpus_per_worker: float | None = None  # default: 1 where there are GPUs, else 0 (CPU threads)
    threads_per_worker: int | None = None  # default: the CPU cores // workers


AUTO = Resources()


@dataclass(frozen=True)
class Slot:
    """What one worker's runs get."""

    worker: int
    label: str  # "GPU 0", "1 thread", for views
    gpus: float = 0.0
    cpus: int = 1
    env: dict[str, str] = field(default_factory=dict)  # added to the run's environment


class Executor(Protocol):
    name: str
    slots: list[Slot]

    def run(self, spec: RunSpec, *, on_line: Callable[[str], None] | None = None,
            stop_event=None) -> RunOutcome: ...

    def close(self) -> None: ...


def run_device(executor: object, worker: int) -> dict:
    """What a run of `worker` through `executor` has, for its outcome.json. A run outside the
    executors (the Lab's own runner: `harness init`, a serial loop) sees this machine as it is."""
    slots = getattr(executor, "slots", None) or []
    slot = next((s for s in slots if s.worker == worker), None)
    if slot is None:
        from harness.executors.local import serial_slot

        slot = serial_slot()
    return {"worker": worker, "device": slot.label, "gpus": slot.gpus, "cpus": slot.cpus}


def make_executor(kind: str, workers: int, *, ray_address: str | None = None, resources: Resources = AUTO,
                  emit: Callable[[str, str], None] | None = None) -> Executor:
    """The executor for `harness loop --executor KIND --workers N`. `emit(level, text)` gets
    warnings (e.g. more workers than the cluster runs at once)."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if kind == "local":
        from harness.executors.local import LocalExecutor

        return LocalExecutor(workers, resources)
    if kind == "ray":
        from harness.executors.ray_executor import RayExecutor

        return RayExecutor(workers, address=ray_address, resources=resources, emit=emit)
    raise UsageError(f"unknown executor {kind!r}", hint=f"use one of: {', '.join(EXECUTORS)}")
