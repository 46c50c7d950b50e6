"""The one configuration place: the target (file, command, metric, direction), noise, limits,
agent. Values come from defaults < `[tool.harness]` in pyproject.toml or `harness.toml` <
environment / command-line options (click passes those in as `overrides`)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

ARCHIVE_DIR = ".auto-log-research"
READERS = ("summary", "regex", "json", "pytest", "coverage")
DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Target:
    """What is edited, how it is run, and how the result is read and judged."""

    editable: tuple[str, ...] = ("train.py",)
    run_command: str | None = None  # None: the budgeted training, `python train.py`
    metric: str = "val_bpb"
    direction: str = "min"
    reader: str = "summary"  # how to read the metric from a run: see harness/metric.py
    pattern: str | None = None  # regex (reader=regex) or "file.json:key.path" (reader=json)
    immutable: tuple[str, ...] = ("prepare.py", "analyze.py")
    budget: float = 300.0  # seconds of training (the run's own wall clock for other commands)
    description: str = ""

    @property
    def is_default(self) -> bool:
        return self.run_command is None

    def better(self, a: float, b: float) -> bool:
        """True if value a is better than value b in this target's direction."""
        return a < b if self.direction == "min" else a > b

    def improvement(self, value: float, best: float) -> float:
        """How much better `value` is than `best` (positive means better), in metric units."""
        return best - value if self.direction == "min" else value - best


@dataclass(frozen=True)
class Noise:
    z: float = 2.0  # keep only if the gain exceeds z standard deviations of run-to-run noise
    min_delta: float = 0.002  # ... and at least this much, in metric units
    confirm: bool = True  # re-run a candidate with another seed before it becomes the best
    baseline_runs: int = 2


@dataclass(frozen=True)
class Limits:
    grace_s: float = 120.0  # start-up + evaluation allowance on top of the budget
    memory_mb: int | None = None  # address-space cap for the run (None: no cap)
    output_cap_mb: float = 20.0  # run.log keeps at most this much
    network: bool = False  # allow network access in runs


@dataclass(frozen=True)
class AgentSettings:
    name: str = "offline"
    command: str | None = None  # for the `command` agent
    model: str | None = None  # proposal model
    summary_model: str | None = None  # cheaper model for notes and summaries
    max_turns: int = 30
    timeout_s: float = 900.0
    max_cost: float | None = None  # USD per loop invocation
    max_tokens: int | None = None  # tokens per loop invocation
    allow_shell: bool = False


@dataclass(frozen=True)
class Config:
    root: Path
    target: Target = field(default_factory=Target)
    noise: Noise = field(default_factory=Noise)
    limits: Limits = field(default_factory=Limits)
    agent: AgentSettings = field(default_factory=AgentSettings)
    archive_dir_name: str = ARCHIVE_DIR
    branch_prefix: str = "autoresearch/"
    max_consecutive_failures: int = 5
    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None

    @property
    def archive_dir(self) -> Path:
        return self.root / self.archive_dir_name

    @property
    def notes_files(self) -> tuple[str, ...]:
        return ("insights.md", "ideas_queue.md")


# Flat keys a user writes in [tool.harness] (or passes as options) -> (section, field).
_KEYS: dict[str, tuple[str | None, str]] = {
    **{f.name: ("target", f.name) for f in dataclasses.fields(Target)},
    **{f.name: ("noise", f.name) for f in dataclasses.fields(Noise)},
    **{f.name: ("limits", f.name) for f in dataclasses.fields(Limits)},
    "agent": ("agent", "name"),
    "agent_command": ("agent", "command"),
    "model": ("agent", "model"),
    "summary_model": ("agent", "summary_model"),
    "max_turns": ("agent", "max_turns"),
    "agent_timeout": ("agent", "timeout_s"),
    "max_cost": ("agent", "max_cost"),
    "max_tokens": ("agent", "max_tokens"),
    "allow_shell": ("agent", "allow_shell"),
    "archive_dir": (None, "archive_dir_name"),
    "branch_prefix": (None, "branch_prefix"),
    "max_consecutive_failures": (None, "max_consecutive_failures"),
    "workers": (None, "workers"),
    "executor": (None, "executor"),
    "ray_address": (None, "ray_address"),
}


def read_file_config(root: Path) -> tuple[dict[str, Any], Path | None]:
    """The [tool.harness] table of pyproject.toml, or the whole of harness.toml."""
    for name, table in (("harness.toml", None), ("pyproject.toml", ("tool", "harness"))):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix the file") from e
        for key in table or ():
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if data:
            return dict(data), path
    return {}, None


def load_config(root: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Build the Config for the repository at `root`; overrides (non-None values) win."""
    root = Path(root).resolve()
    file_values, source = read_file_config(root)
    values = {**file_values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    sections: dict[str | None, dict[str, Any]] = {None: {}, "target": {}, "noise": {}, "limits": {}, "agent": {}}
    for key, value in values.items():
        if key not in _KEYS:
            where = f" in {source}" if source and key in file_values else ""
            raise ConfigError(f"unknown setting {key!r}{where}", hint=f"known settings: {', '.join(sorted(_KEYS))}")
        section, name = _KEYS[key]
        sections[section][name] = value
    try:
        cfg = Config(
            root=root,
            target=Target(**_coerce(Target, sections["target"])),
            noise=Noise(**_coerce(Noise, sections["noise"])),
            limits=Limits(**_coerce(Limits, sections["limits"])),
            agent=AgentSettings(**_coerce(AgentSettings, sections["agent"])),
            **_coerce(Config, sections[None]),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad setting: {e}") from e
    validate(cfg)
    return cfg


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Turn TOML/CLI values into the field types (lists to tuples, numbers from strings)."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(types.get(name, ""))
        if kind.startswith("tuple"):
            value = tuple([value] if isinstance(value, str) else value)
        elif value is not None and kind.startswith("float"):
            value = float(value)
        elif value is not None and kind.startswith("int"):
            value = int(value)
        elif value is not None and kind.startswith("bool") and isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on")
        out[name] = value
    return out


def validate(cfg: Config) -> None:
    t = cfg.target
    if t.direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {t.direction!r}", hint="use 'min' (lower is better) or 'max'")
    if t.reader not in READERS:
        raise ConfigError(f"unknown metric reader {t.reader!r}", hint=f"use one of: {', '.join(READERS)}")
    if t.reader in ("regex", "json") and not t.pattern:
        raise ConfigError(f"reader {t.reader!r} needs a pattern", hint="set `pattern` in [tool.harness]")
    if t.reader == "regex":
        try:
            re.compile(t.pattern or "")
        except re.error as e:
            raise ConfigError(f"the metric pattern {t.pattern!r} is not a valid regex: {e}") from e
    if t.budget <= 0:
        raise ConfigError(f"budget must be positive, got {t.budget:g}", hint="e.g. --budget 300")
    if not t.editable:
        raise ConfigError("no editable file configured", hint="set `editable = [\"train.py\"]`")
    both = set(t.editable) & set(t.immutable)
    if both:
        raise ConfigError(f"{', '.join(sorted(both))} is both editable and immutable", hint="choose one")
    if cfg.noise.baseline_runs < 1:
        raise ConfigError("baseline_runs must be at least 1")
    if cfg.noise.z < 0 or cfg.noise.min_delta < 0:
        raise ConfigError("z and min_delta must not be negative")
    if cfg.workers < 1:
        raise ConfigError("workers must be at least 1")
    if cfg.agent.max_cost is not None and cfg.agent.max_cost < 0:
        raise ConfigError("max_cost must not be negative")
