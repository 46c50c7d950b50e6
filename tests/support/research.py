"""A real research repository in a temp dir: the project's prepare.py, analyze.py and a train.py
shrunk to a toy model (the knobs edited the way an agent would), committed with git."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A toy model: a second or two of start-up, a few hundred ms of evaluation on the tiny dataset.
TINY_KNOBS = {
    "DEPTH": 1,
    "MODEL_DIM": 64,
    "HEAD_DIM": 32,
    "SEQ_LEN": 64,
    "DEVICE_BATCH_SIZE": 8,
    "TOTAL_BATCH_SIZE": 512,
    "COMPILE": False,
}


def set_knobs(source: str, knobs: dict[str, object]) -> str:
    for name, value in knobs.items():
        source, n = re.subn(rf"^({name}\s*=\s*)([^#\n]+?)(\s*(#.*)?)$", rf"\g<1>{value}\g<3>", source, count=1,
                            flags=re.M)
        assert n == 1, f"no knob {name} in train.py"
    return source


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_research_repo(path: Path, knobs: dict[str, object] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("prepare.py", "analyze.py"):
        shutil.copy2(ROOT / name, path / name)
    train = set_knobs((ROOT / "train.py").read_text(), {**TINY_KNOBS, **(knobs or {})})
    (path / "train.py").write_text(train)
    (path / ".gitignore").write_text("__pycache__/\n/metrics.jsonl\n/run_summary.json\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "start")
    return path


def harness_env(alr_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment for a real `harness` subprocess: the tiny dataset, no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALR_", "HARNESS_"))}
    return {**env, **alr_env, **extra}


def harness(cwd: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `harness` console script (from this venv) as a user would."""
    exe = Path(sys.executable).parent / "harness"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# -- a toy target: fast, deterministic runs for testing the loop's logic ------------------------

TOY_MODEL = """\
X = 3.0     # the optimum is X = 1
Y = 1.0     # the optimum is Y = 2
CRASH = 0   # 1 makes the run fail
"""

TOY_EVALUATE = """\
import os, time
ns = {}
exec(open("model.py").read(), ns)
if os.path.exists("slow.flag"):
    print("slow run", flush=True)
    time.sleep(120)
if ns.get("CRASH"):
    raise RuntimeError("the model crashed")
seed = int(os.environ.get("ALR_SEED", "0"))
loss = (ns["X"] - 1) ** 2 + (ns["Y"] - 2) ** 2 + 0.0005 * seed
print("---")
print(f"loss: {loss:.6f}")
"""


def make_toy_repo(path: Path, **settings: object) -> Path:
    """A repo whose 'training' is evaluate.py scoring the knobs of model.py (loss, lower is
    better; seed adds 0.0005 of noise). Runs take a fraction of a second."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.py").write_text(TOY_MODEL)
    (path / "evaluate.py").write_text(TOY_EVALUATE)
    config = {
        "editable": ["model.py"], "run_command": f"{sys.executable} evaluate.py", "metric": "loss",
        "direction": "min", "immutable": ["evaluate.py"], "budget": 30, "grace_s": 30, "min_delta": 0.01,
        **settings,
    }
    lines = [f"{k} = {_toml(v)}" for k, v in config.items()]
    (path / "harness.toml").write_text("\n".join(lines) + "\n")
    (path / ".gitignore").write_text("__pycache__/\nslow.flag\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "start")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def scripted_agent(tmp: Path, steps: list[str]) -> str:
    """A `command` agent that runs shell step k for experiment k+1 (the last step repeats), so a
    retry within one experiment runs the same step again. Steps run in the repo root; their last
    stdout line is the description."""
    tmp.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(steps):
        (tmp / f"step{i}.sh").write_text("set -e\n" + step + "\n")
    script = tmp / "agent.sh"
    script.write_text(
        "set -e\n"
        "n=$((HARNESS_EXPERIMENT - 1))\n"
        f"last={len(steps) - 1}\n"
        'if [ "$n" -gt "$last" ]; then n=$last; fi\n'
        f'exec sh {tmp}/step$n.sh\n'
    )
    return f"sh {script}"


def set_toy(**knobs: object) -> str:
    """A shell step that sets knobs of model.py and describes it."""
    seds = " ".join(f"-e 's/^{k} = [^ ]*/{k} = {v}/'" for k, v in knobs.items())
    desc = ", ".join(f"{k}={v}" for k, v in knobs.items())
    return f"sed -i {seds} model.py\necho 'set {desc}'"
