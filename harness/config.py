"""The one configuration place: the target (file, command, metric, direction), noise, limits,
agent. Values come from defaults < the target `harness init` recorded (the archive's meta.json)
< `[tool.harness]` in pyproject.toml or `harness.toml` < environment / command-line options
(click passes those in as `overrides`). Every key is listed in docs/targets.md."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

ARCHIVE_DIR = ".auto-log-research"
READERS = ("summary", "regex", "json", "pytest", "coverage")
DIRECTIONS = ("min", "max")
DEFAULT_IMMUTABLE = ("prepare.py", "analyze.py")  # the default target's fixed evaluation
# What `harness init` records of the target; all but `editable` decide what a number means, so a
# later change of them would compare values measured two ways.
RECORDED = ("editable", "run_command", "metric", "direction", "reader", "pattern", "immutable")
MEASUREMENT = tuple(k for k in RECORDED if k != "editable")


DEFAULT_BUDGET = 300.0  # seconds: prepare.py's TIME_BUDGET, the budget train.py's defaults were chosen at


@dataclass(frozen=True)
class Target:
    """What is edited, how it is run, and how the result is read and judged."""

    editable: tuple[str, ...] = ("train.py",)
    run_command: str | None = None  # None: the budgeted training, `python train.py`
    metric: str = "val_bpb"
    direction: str = "min"
    reader: str = "summary"  # how to read the metric from a run: see harness/metric.py
    pattern: str | None = None  # regex (reader=regex) or "file.json:key.path" (reader=json)
    immutable: tuple[str, ...] | None = None  # None: prepare.py, analyze.py (default target) or none
    budget: float = DEFAULT_BUDGET  # seconds of training (the run's own wall clock for other commands)
    description: str = ""

    def __post_init__(self) -> None:
        if self.immutable is None:  # the default target's evaluation files are not another's
            object.__setattr__(self, "immutable", DEFAULT_IMMUTABLE if self.is_default else ())

    @property
    def is_default(self) -> bool:
        return self.run_command is None

    @property
    def better_word(self) -> str:
        """"lower is better" or "higher is better"."""
        return "lower is better" if self.direction == "min" else "higher is better"

    def record(self) -> dict[str, Any]:
        """The target as `harness init` stores it in meta.json (JSON types)."""
        out = {k: getattr(self, k) for k in RECORDED}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def better(self, a: float, b: float) -> bool:
        """True if value a is better than value b in this target's direction."""
        return a < b if self.direction == "min" else a > b

    def improvement(self, value: float, best: float) -> float:
        """How much better `value` is than `best` (positive means better), in metric units."""
        return best - value if self.direction == "min" else value - best

    def delta_word(self, delta: float, margin: float | None = None) -> str:
        """`better`, `worse`, `same`, or `within noise` (better, by no more than `margin`), for a
        Δ of a value minus the best before it."""
        gain = self.improvement(delta, 0.0)
        if gain == 0:
            return "same"
        if gain < 0:
            return "worse"
        return "within noise" if margin is not None and gain <= margin else "better"


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
    max_cost: float | None = None  # USD per night (a caps session: harness/caps.py)
    max_tokens: int | None = None  # tokens per night
    allow_shell: bool = False
    backoff_s: float = 5.0  # first pause after a transient agent error (doubles, at most 5 min)


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
    gpus_per_worker: float | None = None  # None: 1 where there are GPUs, else 0 (CPU threads)
    threads_per_worker: int | None = None  # None: the CPU cores // workers

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
    "agent_backoff": ("agent", "backoff_s"),
    "archive_dir": (None, "archive_dir_name"),
    "branch_prefix": (None, "branch_prefix"),
    "max_consecutive_failures": (None, "max_consecutive_failures"),
    "workers": (None, "workers"),
    "executor": (None, "executor"),
    "ray_address": (None, "ray_address"),
    "gpus_per_worker": (None, "gpus_per_worker"),
    "threads_per_worker": (None, "threads_per_worker"),
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
            raise ConfigError(f"{path} is not valid TOML: {e}") from e
        for key in table or ():
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if data:
            return dict(data), path
    return {}, None


def recorded_target(root: Path, archive_dir_name: str) -> dict[str, Any]:
    """The target `harness init` recorded in the archive's meta.json ({} if none)."""
    try:
        meta = json.loads((root / archive_dir_name / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    target = meta.get("target") if isinstance(meta, dict) else None
    return {k: v for k, v in target.items() if k in RECORDED} if isinstance(target, dict) else {}


def load_config(root: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Build the Config for the repository at `root`; overrides (non-None values) win.

    The target recorded by `harness init` fills in what neither the file nor the options set
    (so `harness init --metric x` needs no repeating later); a file or option that contradicts
    it in how the metric is measured is refused (see `target_change`)."""
    root = Path(root).resolve()
    file_values, source = read_file_config(root)
    given = {**file_values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    recorded = recorded_target(root, str(given.get("archive_dir", ARCHIVE_DIR)))
    values = {**{k: v for k, v in recorded.items() if v is not None}, **given}
    sections: dict[str | None, dict[str, Any]] = {None: {}, "target": {}, "noise": {}, "limits": {}, "agent": {}}
    for key, value in values.items():
        if key not in _KEYS:
            where = f" in {source}" if source and key in file_values else ""
            close = difflib.get_close_matches(key, _KEYS, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown setting {key!r}{where}: {guess}every key is listed in docs/targets.md")
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
    change = target_change(recorded, cfg.target)
    if change:
        raise ConfigError(f"{change}, so its values would not compare: move {cfg.archive_dir_name}/ aside and "
                          "`harness init --tag <new>` to measure this way")
    return cfg


def target_change(recorded: dict[str, Any], target: Target) -> str | None:
    """How `target` measures differently from the recorded one, in words, or None."""
    now = target.record()
    for key in MEASUREMENT:
        if key in recorded and _same_setting(recorded[key]) != _same_setting(now[key]):
            was, is_ = _show(recorded[key]), _show(now[key])
            return f"this research was started with {key} {was}, but the config now says {is_}"
    return None


def _same_setting(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _show(value: Any) -> str:
    if value is None:
        return "unset (the default)"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value) + "]" if value else "none"
    return repr(value)


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
        raise ConfigError(f"unknown direction {t.direction!r}: use 'min' (lower is better) or 'max' (higher is better)")
    if t.reader not in READERS:
        raise ConfigError(f"unknown metric reader {t.reader!r}: use one of {', '.join(READERS)}")
    if t.reader in ("regex", "json") and not t.pattern:
        example = "'score=([0-9.]+)'" if t.reader == "regex" else "'results.json:metrics.score'"
        raise ConfigError(f"reader {t.reader!r} needs a pattern: set `pattern`, e.g. {example}")
    if t.reader == "regex":
        try:
            re.compile(t.pattern or "")
        except re.error as e:
            raise ConfigError(f"the metric pattern {t.pattern!r} is not a valid regex: {e}") from e
    if t.budget <= 0:
        raise ConfigError(f"budget must be positive, got {t.budget:g} (e.g. budget = 300)")
    if not t.editable:
        raise ConfigError('no editable file configured: set `editable = ["train.py"]`')
    both = set(t.editable) & set(t.immutable or ())
    if both:
        raise ConfigError(f"{', '.join(sorted(both))} is both editable and immutable: list it in one of the two")
    if cfg.noise.baseline_runs < 1:
        raise ConfigError("baseline_runs must be at least 1")
    if cfg.noise.z < 0 or cfg.noise.min_delta < 0:
        raise ConfigError("z and min_delta must not be negative")
    if cfg.workers < 1:
        raise ConfigError("workers must be at least 1")
    if cfg.gpus_per_worker is not None and cfg.gpus_per_worker < 0:
        raise ConfigError(f"gpus_per_worker must not be negative, got {cfg.gpus_per_worker:g}")
    if cfg.threads_per_worker is not None and cfg.threads_per_worker < 1:
        raise ConfigError(f"threads_per_worker must be at least 1, got {cfg.threads_per_worker}")
    if cfg.agent.max_cost is not None and cfg.agent.max_cost < 0:
        raise ConfigError("max_cost must not be negative")
