"""Fault injection for the research loop: each scenario sets up a real repository, breaks one
thing for real (signals, a run that hangs or floods its output, an agent that rewrites history,
a full disk, a corrupt .git/HEAD ...) and says whether the harness survived and what was lost.

Shared by tests/test_faults.py (one test per scenario) and bench/fault_table.py (the table), so
the table shows exactly what the tests check. Nothing here is mocked: the harness runs as a
`harness` subprocess, agents are shell scripts, runs are real processes, git is real.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.research import git, harness, make_toy_repo, scripted_agent, set_toy

from harness.config import ARCHIVE_DIR, load_config
from harness.ledger import Ledger, Row

HARNESS = str(Path(sys.executable).parent / "harness")
SECRET = "sk-ant-fault-suite-not-a-real-key"
USER_FILE = "my_notes.txt"  # an untracked file of the user's: must survive everything

# The toy target's run: model.py may carry a FAULT knob (set by an agent step) that makes the
# run misbehave; without one it hands over to evaluate.py (the normal toy evaluation).
FAULT_RUN = r'''
import json, os, subprocess, sys, time
ns = {}
exec(open("model.py").read(), ns)
fault = ns.get("FAULT", "")
run_dir = os.environ.get("ALR_RUN_DIR", ".")
if fault == "hang":
    child = subprocess.Popen(["sleep", "600"])
    open(os.path.join(run_dir, "child.pid"), "w").write(str(child.pid))
    print("hanging with child", child.pid, flush=True)
    time.sleep(600)
elif fault == "spew":
    block = b"x" * (1 << 20) + b"\n"
    for _ in range(int(ns.get("SPEW_MB", 1024))):
        os.write(1, block)
elif fault == "leak":
    hoard = []
    while True:
        hoard.append(b"y" * (32 << 20))
elif fault == "secrets":
    seen = [k for k in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MY_SERVICE_TOKEN") if k in os.environ]
    print("secrets visible to the run:", seen, flush=True)
    if seen:
        sys.exit(5)
elif fault == "network":
    with open("/proc/net/dev") as f:
        interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    print("network interfaces of the run:", interfaces, flush=True)
    if any(i != "lo" for i in interfaces):
        sys.exit(6)
elif fault == "tamper":
    with open("evaluate.py", "a") as f:
        f.write("\n# the run was here\n")
elif fault == "badmetrics":
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "train/loss": 2.5}\n{"step": 2, "train/lo\nnot json at all\n')
        f.write('{"step": 3, "train/loss": NaN}\n{"step": 4, "train/loss": nan}\n{"step": 5, "train/loss"')
elif fault == "badsummary":
    with open(os.path.join(run_dir, "run_summary.json"), "w") as f:
        f.write("{this is not json")
elif fault == "fill":
    subprocess.run([sys.executable, "evaluate.py"], check=True)  # the summary first, then fill the disk
    try:
        with open(os.path.join(run_dir, "filler.bin"), "wb") as f:
            for _ in range(32):  # 2 MB at most: fills the tiny tmpfs, harmless on a real disk
                f.write(b"0" * 65536)
                f.flush()
    except OSError as e:
        print("the disk is full now:", e, flush=True)
    sys.exit(0)
elif fault == "breakgit":
    with open(".git/HEAD", "w") as f:
        f.write("garbage\n")
os.execv(sys.executable, [sys.executable, "evaluate.py"])
'''


@dataclass(frozen=True)
class FaultResult:
    scenario: str
    survived: bool
    lost: int
    note: str
    skipped: str | None = None  # why the scenario could not run on this machine


@dataclass(frozen=True)
class Audit:
    """What is inconsistent in a research repository, and how many results are lost."""

    lost: int
    problems: tuple[str, ...]
    rows: tuple[Row, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0


# -- running the harness ----------------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    """os.environ without stray HARNESS_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    return {**env, **extra}


def run_harness(repo: Path, *args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    return harness(repo, env or base_env(), *args, timeout=timeout)


def loop(repo: Path, agent: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_harness(repo, "loop", "-q", "--agent-command", agent, *args, env=env)


def output(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def rows(repo: Path) -> list[Row]:
    cfg = load_config(repo)
    return Ledger(repo / ARCHIVE_DIR / "results.tsv", cfg.target.metric).rows()


def fault_repo(path: Path, **settings: object) -> Path:
    """A toy repo (see support.research.make_toy_repo) whose run goes through FAULT_RUN, with a
    research branch started (`harness init`) and an untracked file of the user's."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.py").write_text(FAULT_RUN)
    (path / "prepare.py").write_text("# the toy target's fixed preparation (immutable)\n")
    config = {"run_command": f"{sys.executable} run.py", "immutable": ["evaluate.py", "run.py", "prepare.py"],
              "budget": 5, "grace_s": 10, **settings}
    make_toy_repo(path, **config)
    proc = run_harness(path, "init", "--tag", "t", "-q")
    assert proc.returncode == 0, output(proc)
    (path / USER_FILE).write_text("the user's own notes\n")
    return path


def set_fault(fault: str, **knobs: object) -> str:
    """An agent step that makes this attempt's run misbehave in the named way."""
    extra = "".join(f"\necho '{k} = {v}' >> model.py" for k, v in knobs.items())
    return f"echo 'FAULT = \"{fault}\"' >> model.py{extra}\necho 'run fault {fault}'"


# -- checking consistency ---------------------------------------------------------------------


def audit(repo: Path, expected_rows: int | None = None, allowed_untracked: tuple[str, ...] = (USER_FILE,),
          pending_ok: bool = True) -> Audit:
    """The checks of the kill -9 bar: HEAD is the best (or the one pending attempt), the tree is
    clean, results.tsv has no torn or duplicate rows, every recorded commit exists with its
    archive folder and git note, every attempt ref has a row or is the single pending one, and
    no archive folder is an orphan. `lost` counts rows/commits/folders/notes that should exist
    and don't, and rows counted twice."""
    archive = repo / ARCHIVE_DIR
    problems: list[str] = []
    lost = 0
    ledger = Ledger(archive / "results.tsv", load_config(repo).target.metric)
    recorded = ledger.rows()
    problems += ledger.warnings
    raw = (archive / "results.tsv").read_bytes() if (archive / "results.tsv").exists() else b""
    if raw and not raw.endswith(b"\n"):
        problems.append("results.tsv ends in a torn line")
    numbers = [r.experiment for r in recorded]
    twice = len(numbers) - len(set(numbers))
    if twice:
        problems.append(f"{twice} experiment number(s) recorded twice")
        lost += twice
    refs = dict(_attempt_refs(repo))
    pending = {n: sha for n, sha in refs.items() if n not in set(numbers)}
    if len(pending) > 1 or (pending and not pending_ok):
        problems.append(f"attempt refs without a row: {sorted(pending)}")
    gaps = sorted(set(range(max(numbers, default=-1) + 1)) - set(numbers) - set(pending))
    missing = max(len(gaps), (expected_rows or 0) - len(set(numbers)))
    if missing:
        problems.append(f"{missing} ledger row(s) missing" + (f" (experiments {gaps})" if gaps else ""))
        lost += missing
    for r in recorded:
        lost += _check_recorded(repo, r, refs, problems)
    commits = {r.commit for r in recorded} | set(pending.values())
    orphans = [p.name for p in archive.iterdir() if re.fullmatch(r"[0-9a-f]{40}", p.name) and p.name not in commits]
    if orphans:
        problems.append(f"orphan archive folders: {[o[:7] for o in orphans]}")
    problems += _check_head_and_tree(repo, recorded, set(pending.values()), allowed_untracked)
    return Audit(lost, tuple(problems), tuple(recorded))


def _attempt_refs(repo: Path) -> list[tuple[int, str]]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/auto-log-research/attempts/")
    pairs = [line.split(" ") for line in out.splitlines() if line]
    return [(int(ref.rsplit("/", 1)[1]), sha) for ref, sha in pairs]


def _check_recorded(repo: Path, r: Row, refs: dict[int, str], problems: list[str]) -> int:
    if r.commit == "-":
        return 0
    lost = 0
    if _git_ok(repo, "cat-file", "-e", f"{r.commit}^{{commit}}") is False:
        problems.append(f"experiment {r.experiment}: commit {r.short} does not exist")
        return 1
    if not (repo / ARCHIVE_DIR / r.commit).is_dir():
        problems.append(f"experiment {r.experiment}: no archive folder for {r.short}")
        lost += 1
    if not _git_ok(repo, "notes", "show", r.commit):
        problems.append(f"experiment {r.experiment}: no git note on {r.short}")
        lost += 1
    if r.experiment > 0 and r.status != "baseline" and refs.get(r.experiment) != r.commit:
        problems.append(f"experiment {r.experiment}: its attempt ref is missing or moved")
        lost += 1
    return lost


def _check_head_and_tree(repo: Path, recorded: list[Row], pending: set[str], allowed: tuple[str, ...]) -> list[str]:
    problems = []
    best = next((r for r in reversed(recorded) if r.kept), None)
    head = git(repo, "rev-parse", "HEAD")
    if best is not None and head != best.commit and head not in pending:
        problems.append(f"HEAD {head[:7]} is neither the best ({best.short}) nor the pending attempt")
    if not git(repo, "branch", "--show-current").startswith("autoresearch/"):
        problems.append("not on the research branch")
    allowed_lines = {f"?? {name}" for name in allowed}
    dirty = [ln for ln in git(repo, "status", "--porcelain").splitlines() if ln not in allowed_lines]
    if dirty:
        problems.append(f"working tree not clean: {dirty[:4]}")
    return problems


def _git_ok(repo: Path, *args: str) -> bool:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True).returncode == 0


def user_file_intact(repo: Path) -> bool:
    path = repo / USER_FILE
    return path.is_file() and path.read_text() == "the user's own notes\n"


# -- helpers for checks -----------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True if `pid` is a live process (zombies count as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def dead_pid() -> int:
    """The pid of a process that has exited (for a stale lock)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def lock_phase(repo: Path, pid: int | None = None) -> str | None:
    """The phase in the lock file; with `pid`, "starting" unless that process holds the lock."""
    import json

    try:
        data = json.loads((repo / ARCHIVE_DIR / "lock").read_text())
    except (OSError, ValueError):
        data = {}
    if pid is not None and data.get("pid") != pid:
        return "starting"
    return data.get("phase")


def hostname() -> str:
    return socket.gethostname()


def result(name: str, checks: dict[str, bool], state: Audit, extra: str = "") -> FaultResult:
    """A FaultResult from named checks: survived if all hold and the repository is consistent."""
    failed = [what for what, ok in checks.items() if not ok]
    survived = not failed and not state.problems
    note = extra if survived else "; ".join([*(f"FAILED: {f}" for f in failed), *state.problems, extra])
    return FaultResult(name, survived, state.lost, note.strip("; "))



def skipped(name: str, why: str) -> FaultResult:
    return FaultResult(name, True, 0, f"SKIPPED: {why}", skipped=why)


def by_experiment(recorded: tuple[Row, ...]) -> dict[int, Row]:
    return {r.experiment: r for r in recorded}


# -- scenarios: training runs -----------------------------------------------------------------


def training_runs(tmp: Path) -> list[FaultResult]:
    """A run past its wall-clock limit (with a child `sleep`), a memory leak past memory_mb, API
    keys in the harness's environment, and a run that looks for a network."""
    from harness.runner import network_isolation_prefix

    repo = fault_repo(tmp / "runs", budget=3, grace_s=3, memory_mb=600, output_cap_mb=1)
    steps = [set_fault("hang"), set_fault("leak"), set_fault("secrets"), set_fault("network")]
    env = base_env(ANTHROPIC_API_KEY=SECRET, OPENAI_API_KEY=SECRET, MY_SERVICE_TOKEN=SECRET)
    proc = loop(repo, scripted_agent(tmp / "runs-agent", steps), "--max-experiments", "4", env=env)
    state = audit(repo, expected_rows=5)
    row = by_experiment(state.rows)
    archive = repo / ARCHIVE_DIR
    ran = proc.returncode == 0 and len(state.rows) == 5
    out: list[FaultResult] = []

    hang = row.get(1)
    pid_file = archive / hang.commit / "child.pid" if hang else None
    child = int(pid_file.read_text()) if pid_file and pid_file.exists() else None
    out.append(result("run past its wall-clock limit (child sleep too)", {
        "loop finished": ran,
        "recorded as a crash": bool(hang and hang.status == "crash"),
        "failure says timeout": bool(hang and "timeout" in hang.failure),
        "the child sleep was started": child is not None,
        "the child sleep is dead": child is not None and not alive(child),
    }, state, f"limit 6 s; failure: {hang.failure if hang else '-'}"))

    leak = row.get(2)
    out.append(result("run leaks memory past memory_mb", {
        "loop finished": ran,
        "recorded as a crash": bool(leak and leak.status == "crash"),
        "classified out of memory": bool(leak and re.search(r"oom|memory", leak.failure, re.I)),
    }, state, f"memory_mb 600; failure: {leak.failure if leak else '-'}"))

    secrets = row.get(3)
    logs = "".join(p.read_text(errors="replace") for p in archive.glob("*/run.log"))
    out.append(result("API keys of the harness not visible to the run", {
        "loop finished": ran,
        "the run saw none (it exits 5 if it does)": bool(secrets and secrets.status != "crash"),
        "no key in any run.log": SECRET not in logs,
    }, state, "ANTHROPIC_API_KEY, OPENAI_API_KEY, MY_SERVICE_TOKEN set in the harness env"))

    net = row.get(4)
    if network_isolation_prefix() is None:
        out.append(skipped("network off in runs", "no unprivileged network namespace on this machine"))
    else:
        out.append(result("network off in runs", {
            "loop finished": ran,
            "the run saw only lo (it exits 6 otherwise)": bool(net and net.status != "crash"),
        }, state, "unshare --user --net: /proc/net/dev of the run lists only lo"))
    return out


def flood_output(tmp: Path) -> FaultResult:
    """~1 GB on stdout: run.log stays capped, the pipe is drained, the summary at the end is read.
    (Its own repo: draining 1 GB takes longer than the short limit the hang scenario uses.)"""
    repo = fault_repo(tmp / "flood", budget=3, grace_s=90, output_cap_mb=1)
    started = time.time()
    proc = loop(repo, scripted_agent(tmp / "flood-agent", [set_fault("spew")]), "--max-experiments", "1")
    wall = time.time() - started
    state = audit(repo, expected_rows=2)
    spew = by_experiment(state.rows).get(1)
    log = repo / ARCHIVE_DIR / spew.commit / "run.log" if spew else None
    data = log.read_bytes() if log and log.exists() else b""
    return result("run prints ~1 GB", {
        "loop finished": proc.returncode == 0,
        "run.log capped at 1 MB": 0 < len(data) <= 2**20 + 256,
        "truncation marked": b"bytes truncated" in data,
        "summary at the end still read": bool(spew and spew.value is not None),
    }, state, f"run.log {len(data) / 2**20:.2f} MB; status {spew.status if spew else '-'}; loop {wall:.0f} s")


# -- scenarios: immutable evaluation ----------------------------------------------------------


def immutable_evaluation(tmp: Path) -> list[FaultResult]:
    repo = fault_repo(tmp / "immutable")
    fixed = {name: (repo / name).read_text() for name in ("evaluate.py", "prepare.py", "run.py")}
    steps = ["echo 'loss = 0' >> evaluate.py\necho 'pass' >> prepare.py\n" + set_toy(X=2.0), set_fault("tamper")]
    proc = loop(repo, scripted_agent(tmp / "imm-agent", steps), "--max-experiments", "2")
    state = audit(repo, expected_rows=3)
    row = by_experiment(state.rows)
    intact = all((repo / n).read_text() == text for n, text in fixed.items())
    edit, run = row.get(1), row.get(2)
    return [
        result("agent edits prepare.py / evaluate.py", {
            "loop finished": proc.returncode == 0,
            "violation": bool(edit and edit.status == "violation"),
            "restored": intact and "restored" in (edit.failure if edit else ""),
        }, state, edit.failure if edit else ""),
        result("the run itself modifies an immutable file", {
            "loop finished": proc.returncode == 0,
            "violation": bool(run and run.status == "violation"),
            "restored": intact,
            "said so": "restored fixed files changed during the run" in output(proc),
        }, state, run.failure if run else ""),
    ]


# -- scenarios: agent faults ------------------------------------------------------------------

AGENT_FAULTS = [  # (scenario, agent step, expected status)
    ("agent fails (exit 1)", "echo 'no luck' >&2\nexit 1", "agent_error"),
    ("agent hangs past --agent-timeout 2", "sleep 30", "agent_error"),
    ("(a real improvement)", set_toy(X=2.0), "keep"),
    ("agent changes nothing", "echo 'nothing to do'", "no_change"),
    ("agent edit does not parse", "echo 'X = (' >> model.py\necho 'broken'", "invalid"),
    ("agent touches forbidden files", "echo hacked >> evaluate.py\necho hacked >> harness.toml\n" + set_toy(Y=2.0),
     "violation"),
    ("agent deletes the editable file", "rm -f model.py\necho 'deleted it'", "invalid"),
    ("agent deletes another tracked file", "rm -f evaluate.py\n" + set_toy(Y=2.0), "violation"),
    ("agent wipes the archive (rm -rf .auto-log-research/*)", "rm -rf .auto-log-research/*\n" + set_toy(X=1.5),
     "violation"),
    ("agent commits itself", set_toy(X=1.5) + "\ngit commit -qam mine", "violation"),
    ("agent runs git reset --hard HEAD~1", "git reset -q --hard HEAD~1\n" + set_toy(X=1.5), "violation"),
    ("agent switches branch", "git checkout -q main\n" + set_toy(X=1.5), "violation"),
    ("agent runs git checkout -b", "git checkout -q -b agent-branch\n" + set_toy(X=1.5), "violation"),
    ("agent creates a tag", "git tag agent-tag\n" + set_toy(X=1.5), "violation"),
    ("agent deletes refs/auto-log-research/* and notes",
     "git update-ref -d refs/auto-log-research/attempts/0003\ngit update-ref -d refs/notes/commits\n"
     + set_toy(X=1.5), "violation"),
    ("agent rewrites history (commit --amend)", set_toy(X=1.5) + "\ngit commit -q --amend -am rewritten",
     "violation"),
]


def agent_faults(tmp: Path) -> list[FaultResult]:
    repo = fault_repo(tmp / "agent", max_consecutive_failures=5)
    fixed = {name: (repo / name).read_text() for name in ("evaluate.py", "harness.toml")}
    steps = [step for _, step, _ in AGENT_FAULTS]
    n = len(steps)
    started = time.time()
    proc = loop(repo, scripted_agent(tmp / "agent-script", steps), "--max-experiments", str(n),
                "--agent-timeout", "2")
    wall = time.time() - started
    state = audit(repo, expected_rows=n + 1)
    row = by_experiment(state.rows)
    text = output(proc)
    keep = row.get(3)
    refs = git(repo, "for-each-ref", "--format=%(refname)")
    common = {
        "loop finished all experiments": proc.returncode == 0 and len(state.rows) == n + 1,
        "HEAD is the best": bool(keep) and git(repo, "rev-parse", "HEAD") == keep.commit,
        "fixed files intact": all((repo / k).read_text() == v for k, v in fixed.items()),
    }
    out = []
    for i, (name, _, status) in enumerate(AGENT_FAULTS, start=1):
        if name.startswith("("):
            continue
        r = row.get(i)
        checks = {**common, f"recorded as {status}": bool(r and r.status == status)}
        if "tag" in name or "checkout -b" in name:
            checks["the new ref was removed"] = "agent-tag" not in refs and "agent-branch" not in refs
        if "refs/auto-log-research" in name:
            checks["refs restored"] = "attempts/0003" in refs and "refs/notes/commits" in refs
        if "timeout" in name:
            checks["stopped as a timeout"] = bool(r and "AgentTimeout" in r.failure)
        if "forbidden files" in name:
            copy = repo / ARCHIVE_DIR / "rejected" / str(i) / "evaluate.py"
            checks["what was undone is kept"] = copy.is_file() and "hacked" in copy.read_text()
        if "wipes the archive" in name:
            checks["said what it restored"] = bool(r and "results.tsv" in r.failure and "attempt files" in r.failure
                                                   and "(all restored)" in r.failure)
            checks["notes restored"] = (repo / ARCHIVE_DIR / "insights.md").is_file()
        out.append(result(name, checks, state, (r.failure if r else "no row")[:90]))
    warned = text.count("failures in a row: back at the best")
    out.append(result("K=5 failures in a row: back at the best", {
        **common, "said so twice (after 5 and 10)": warned == 2}, state, f"{n} experiments in {wall:.0f} s"))
    out.append(result("an untracked user file survives every reset", {
        **common, "file intact": user_file_intact(repo)}, state, f"{USER_FILE} untouched"))
    return out


def transient_agent_errors(tmp: Path) -> FaultResult:
    """An agent that hangs past its timeout three times in a row (what an API outage looks like
    from the loop): each is recorded, the loop backs off and goes on, and the fourth works."""
    repo = fault_repo(tmp / "transient", agent_backoff=0.2)
    steps = ["sleep 30", "sleep 30", "sleep 30", set_toy(X=2.0)]
    started = time.time()
    proc = loop(repo, scripted_agent(tmp / "transient-agent", steps), "--max-experiments", "4", "--agent-timeout", "1")
    wall = time.time() - started
    state = audit(repo, expected_rows=5)
    statuses = [r.status for r in state.rows[1:]]
    return result("agent times out 3 times in a row (transient): backs off, goes on", {
        "loop finished all 4": proc.returncode == 0 and len(state.rows) == 5,
        "three timeouts recorded": statuses[:3] == ["agent_error"] * 3
        and all("AgentTimeout" in r.failure for r in state.rows[1:4]),
        "not stopped as 'the same way 3 times'": "failed the same way" not in output(proc),
        "the fourth was kept": statuses[3:] == ["keep"],
    }, state, f"backoff 0.2 s doubling; {wall:.0f} s in all")


AGENT_LEFT_RUNNING = r"""
import sys, time
src = open("model.py").read()
open("model.py", "w").write(src.replace("X = 3.0", "X = 2.5"))  # half of its edit ...
open("agent.started", "w").write("1")
time.sleep(120)  # ... then it thinks for a long time
"""


def kill9_in_agent_phase(tmp: Path) -> FaultResult:
    """kill -9 of the harness while its agent is mid-edit, and a restart right away: the agent
    left running is stopped (it would go on editing the next attempt's tree), its half edit is set
    aside in the archive, and the loop goes on."""
    repo = fault_repo(tmp / "agent9")
    (tmp / "slow_agent.py").write_text(AGENT_LEFT_RUNNING)
    slow = f"{sys.executable} {tmp / 'slow_agent.py'}"
    proc = start_loop(repo, slow, "--max-experiments", "1")
    reached = wait_for(lambda: (repo / "agent.started").exists() and lock_phase(repo) == "agent")
    left = [p for p in _processes_in(repo.resolve()) if p != proc.pid]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    (repo / "agent.started").unlink(missing_ok=True)
    again = loop(repo, scripted_agent(tmp / "agent9-next", [set_toy(Y=2.0)]), "--max-experiments", "1")
    text = output(again)
    state = audit(repo, expected_rows=2)
    copies = list((repo / ARCHIVE_DIR / "interrupted").glob("*/model.py"))
    return result("kill -9 in the agent phase, restarted at once", {
        "the agent was mid-edit": reached and bool(left),
        "the left-over agent was stopped": "stopped agent process" in text and not any(alive(p) for p in left),
        "its half edit was set aside": bool(copies) and "X = 2.5" in copies[0].read_text(),
        "the next experiment ran": again.returncode == 0 and bool(state.rows and state.rows[-1].status == "keep"),
    }, state, _first_error(text) if again.returncode else "recover(): agent stopped, edit kept in interrupted/")


def terminated_mid_run(tmp: Path, sig: signal.Signals = signal.SIGTERM) -> FaultResult:
    """SIGTERM (kill, a scheduler's stop) or SIGHUP (the terminal closed) mid-run: stopped like
    Ctrl-C, with the run killed and HEAD back at the best; the next loop runs the attempt once."""
    repo = fault_repo(tmp / sig.name.lower())
    agent = scripted_agent(tmp / f"{sig.name.lower()}-agent", [set_toy(X=2.0)])
    (repo / "slow.flag").touch()
    proc = start_loop(repo, agent, "--max-experiments", "1")
    training = wait_for(lambda: lock_phase(repo) == "training" and "slow run" in _run_logs(repo))
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    runs_left = [p for p in _processes_in(repo.resolve()) if alive(p)]
    after = rows(repo)
    head_is_best = git(repo, "rev-parse", "HEAD") == after[0].commit
    (repo / "slow.flag").unlink()
    resumed = loop(repo, agent, "--max-experiments", "1")
    state = audit(repo, expected_rows=2)
    return result(f"{sig.name} to the harness mid-run, then resume", {
        "reached training": training,
        "clean exit saying interrupted": proc.returncode == 0 and "interrupted" in out,
        "the run was stopped with it": not runs_left,
        "nothing half-recorded, HEAD at the best": len(after) == 1 and head_is_best,
        "resume ran it once": resumed.returncode == 0 and [r.experiment for r in state.rows] == [0, 1],
    }, state, "handled as Ctrl-C")


def hangup_mid_run(tmp: Path) -> FaultResult:
    return terminated_mid_run(tmp, signal.SIGHUP)


# -- scenarios: bad input ---------------------------------------------------------------------

BIG = "{ git show HEAD:model.py; yes '# padding padding padding padding padding padding padding' | head -c 52428800; } > m.tmp"


def bad_input(tmp: Path) -> list[FaultResult]:
    repo = fault_repo(tmp / "badinput")
    steps = [
        "printf 'X = 1.0\\n# caf\\351 latin-1\\n' > model.py\necho 'latin-1 bytes'",
        BIG + "\nmv m.tmp model.py\necho '50 MB of model'",
        set_fault("badmetrics"),
        set_fault("badsummary"),
    ]
    proc = loop(repo, scripted_agent(tmp / "bad-agent", steps), "--max-experiments", "4")
    state = audit(repo, expected_rows=5)
    row = by_experiment(state.rows)
    archive = repo / ARCHIVE_DIR
    ran = proc.returncode == 0 and len(state.rows) == 5

    def analysis_of(r: Row | None) -> str:
        path = archive / r.commit / "analysis.md" if r and r.commit != "-" else None
        return path.read_text() if path and path.exists() else ""

    latin, big, metrics, summary = (row.get(i) for i in (1, 2, 3, 4))
    return [
        result("editable file is not UTF-8", {
            "loop finished": ran, "invalid": bool(latin and latin.status == "invalid"),
            "says not UTF-8": "not UTF-8" in (latin.failure if latin else "")}, state, latin.failure if latin else ""),
        result("editable file of 50 MB", {
            "loop finished": ran, "invalid": bool(big and big.status == "invalid"),
            "says the size": "50 MB" in (big.failure if big else "")}, state, big.failure if big else ""),
        result("metrics.jsonl with broken lines and NaN", {
            "loop finished": ran, "recorded with its value": bool(metrics and metrics.value is not None),
            "analysis written": bool(analysis_of(metrics)),
            "said in one line": "metrics.jsonl: 3 of 6 lines unreadable (skipped)" in output(proc)}, state,
            f"status {metrics.status if metrics else '-'}; analysis.md written"),
        result("run_summary.json that is not JSON", {
            "loop finished": ran, "recorded with its value": bool(summary and summary.value is not None),
            "analysis says so": "not a readable JSON object" in analysis_of(summary),
            "said in one line": "run_summary.json is not a JSON object" in output(proc)}, state,
            "analysis.md: run_summary.json is not a readable JSON object"),
    ]


def read_only_archive(tmp: Path) -> FaultResult:
    """The archive folder made immutable (chattr +i: as root, chmod would not stop writes)."""
    name = "archive folder is read-only"
    repo = fault_repo(tmp / "readonly")
    archive = repo / ARCHIVE_DIR
    before = (archive / "results.tsv").read_bytes()
    lock = subprocess.run(["chattr", "+i", str(archive)], capture_output=True, text=True)
    if lock.returncode != 0:
        return skipped(name, f"chattr +i not possible here ({lock.stderr.strip()[:60]})")
    try:
        proc = loop(repo, scripted_agent(tmp / "ro-agent", [set_toy(X=2.0)]), "--max-experiments", "1")
    finally:
        subprocess.run(["chattr", "-i", str(archive)], check=True)
    text = output(proc)
    state = audit(repo, expected_rows=1)
    return result(name, {
        "refused with an error": proc.returncode not in (0, None),
        "no traceback": "Traceback" not in text,
        "one clear line": "error:" in text and len(text.strip().splitlines()) <= 4,
        "ledger unchanged": (archive / "results.tsv").read_bytes() == before,
    }, state, _first_error(text))


def _first_error(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.startswith("error:")), text.strip()[-120:])


# -- scenarios: the harness process -----------------------------------------------------------


def start_loop(repo: Path, agent: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([HARNESS, "loop", "-q", "--agent-command", agent, *args], cwd=repo,
                            env=env or base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_logs(repo: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (repo / ARCHIVE_DIR).glob("*/run.log"))


def interrupt_and_second_harness(tmp: Path) -> list[FaultResult]:
    """Ctrl-C (SIGINT) in the middle of a run; while that run was going, a second harness was
    refused by the live lock. Then `harness loop` again: the interrupted attempt runs once."""
    repo = fault_repo(tmp / "sigint")
    agent = scripted_agent(tmp / "sigint-agent", [set_toy(X=2.0), set_toy(Y=2.0)])
    (repo / "slow.flag").touch()
    proc = start_loop(repo, agent, "--max-experiments", "2")
    training = wait_for(lambda: lock_phase(repo) == "training" and "slow run" in _run_logs(repo))
    second = run_harness(repo, "loop", "-q", "--agent-command", agent, "--max-experiments", "1")
    proc.send_signal(signal.SIGINT)
    first_out, _ = proc.communicate(timeout=60)
    after_int = rows(repo)
    head_is_best = git(repo, "rev-parse", "HEAD") == after_int[0].commit
    (repo / "slow.flag").unlink()
    resumed = loop(repo, agent, "--max-experiments", "2")
    state = audit(repo, expected_rows=3)
    recorded = by_experiment(state.rows)
    return [
        result("Ctrl-C (SIGINT) mid-run, then resume", {
            "reached training": training,
            "clean exit saying interrupted": proc.returncode == 0 and "interrupted" in first_out,
            "nothing half-recorded": len(after_int) == 1 and head_is_best,
            "resume ran it once, then one more": resumed.returncode == 0 and sorted(recorded) == [0, 1, 2],
            "interrupted attempt recorded": bool(recorded.get(1) and recorded[1].description == "set X=2.0"),
        }, state, "back at the best on Ctrl-C; the attempt re-ran on the next loop"),
        result("a live lock refuses a second harness", {
            "refused (exit 2)": second.returncode == 2,
            "says another harness": "another harness" in output(second),
        }, state, _first_error(output(second))),
    ]


def stale_lock(tmp: Path) -> FaultResult:
    """A lock left by a harness that died mid-edit (pid gone), with its agent's edit in the tree."""
    import json

    repo = fault_repo(tmp / "stale")
    lock = {"pid": dead_pid(), "host": hostname(), "started": time.time() - 600, "phase": "agent",
            "experiment": 1, "base": rows(repo)[0].commit, "commit": None}
    (repo / ARCHIVE_DIR / "lock").write_text(json.dumps(lock))
    (repo / "model.py").write_text((repo / "model.py").read_text().replace("Y = 1.0", "Y = 9.0"))
    proc = loop(repo, scripted_agent(tmp / "stale-agent", [set_toy(X=2.0)]), "--max-experiments", "1")
    state = audit(repo, expected_rows=2)
    last = state.rows[-1] if state.rows else None
    return result("a stale lock from a dead pid is taken over", {
        "loop ran": proc.returncode == 0 and bool(last and last.status == "keep"),
        "the dead harness's edit was discarded": "discarded the unfinished edit" in output(proc),
        "Y = 9.0 not kept": "Y = 9.0" not in (repo / "model.py").read_text(),
        "lock released": not (repo / ARCHIVE_DIR / "lock").exists(),
    }, state, "recover(): unfinished edit of experiment 1 discarded")


# -- scenarios: the user's work ---------------------------------------------------------------


def user_changes_refused(tmp: Path) -> FaultResult:
    repo = fault_repo(tmp / "user")
    mine = "# the user's uncommitted work\n"
    with open(repo / "harness.toml", "a") as f:
        f.write(mine)
    model = (repo / "model.py").read_text() + "# and a thought in model.py\n"
    (repo / "model.py").write_text(model)
    proc = loop(repo, scripted_agent(tmp / "user-agent", [set_toy(X=2.0)]), "--max-experiments", "1")
    text = output(proc)
    kept = (repo / "harness.toml").read_text().endswith(mine) and (repo / "model.py").read_text() == model
    git(repo, "checkout", "-q", "--", "harness.toml", "model.py")
    state = audit(repo, expected_rows=1)
    return result("user's uncommitted tracked changes at loop start", {
        "refused (exit 2)": proc.returncode == 2,
        "one clear line naming the files": "uncommitted changes to" in text and "harness.toml" in text,
        "no traceback": "Traceback" not in text,
        "both files untouched": kept,
        "untracked file untouched": user_file_intact(repo),
    }, state, _first_error(text))


# -- scenarios: fatal conditions --------------------------------------------------------------


def broken_git(tmp: Path) -> FaultResult:
    """The run overwrites .git/HEAD with garbage: the harness aborts with a clear error (exit 3);
    once HEAD is repaired, `harness loop` goes on and the repository is consistent."""
    repo = fault_repo(tmp / "git")
    agent = scripted_agent(tmp / "git-agent", [set_fault("breakgit"), set_toy(X=2.0)])
    proc = loop(repo, agent, "--max-experiments", "2")
    text = output(proc)
    head = (repo / ".git" / "HEAD").read_text()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/autoresearch/t\n")
    again = loop(repo, agent, "--max-experiments", "1")
    state = audit(repo)
    return result("git broken mid-loop (.git/HEAD corrupted)", {
        "aborted with exit 3": proc.returncode == 3,
        "clear error, no traceback": "error:" in text and "Traceback" not in text,
        "HEAD really was broken": head == "garbage\n",
        "after repair the loop goes on": again.returncode == 0,
    }, state, _first_error(text) + f" | after repair: {len(state.rows)} rows")


def _mount_namespace() -> list[str] | None:
    """A prefix that runs a command in a private mount namespace where it may mount a tmpfs."""
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        try:
            if subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=20).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def disk_full(tmp: Path, fault: str = "spew") -> FaultResult:
    """The archive on a small tmpfs (in a private mount namespace) fills up: a real ENOSPC, while
    the run writes its log ("spew"), or from the run itself after its summary, so the harness
    meets it when it records ("fill"). The harness aborts (exit 3) with nothing half-written;
    with room again, the interrupted attempt runs on the next `harness loop`."""
    when = "while the run writes its log" if fault == "spew" else "after the run, before recording"
    name = f"disk full {when} (tmpfs archive)"
    prefix = _mount_namespace()
    if prefix is None:
        return skipped(name, "cannot mount a tmpfs here, not even in a user+mount namespace")
    tmp = tmp / f"disk-{fault}"
    repo = fault_repo(tmp / "repo")
    archive, before, after = repo / ARCHIVE_DIR, tmp / "archive.before", tmp / "archive.after"
    shutil.copytree(archive, before)
    size_kb = sum(-(-p.stat().st_size // 4096) * 4 for p in before.rglob("*") if p.is_file()) + 512
    agent = scripted_agent(tmp / "agent", [set_fault(fault, SPEW_MB=8)])
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs '{archive}' && cp -a '{before}/.' '{archive}/' || exit 99\n"
              f"'{HARNESS}' loop -q --agent-command '{agent}' --max-experiments 1; rc=$?\n"
              f"df -k '{archive}' | tail -1; cp -a '{archive}' '{after}'; exit $rc\n")
    proc = subprocess.run([*prefix, "sh", "-c", script], cwd=repo, env=base_env(), capture_output=True, text=True,
                          timeout=300)
    text = output(proc)
    if proc.returncode == 99:
        return skipped(name, f"tmpfs mount failed: {text.strip()[-80:]}")
    ledger_after = (after / "results.tsv").read_bytes() if (after / "results.tsv").exists() else b""
    clean_ledger = ledger_after == (before / "results.tsv").read_bytes()
    shutil.rmtree(archive)
    shutil.copytree(after, archive, ignore=shutil.ignore_patterns("filler.bin"))  # the user frees space
    again = loop(repo, agent, "--max-experiments", "1")
    state = audit(repo, expected_rows=2)
    resumed = by_experiment(state.rows).get(1)
    return result(name, {
        "aborted with exit 3": proc.returncode == 3,
        "says disk full, no traceback": "disk full" in text.lower() and "Traceback" not in text,
        "results.tsv untouched (no torn row)": clean_ledger,
        "with room again the attempt runs once": again.returncode == 0 and bool(resumed and resumed.value),
    }, state, f"{size_kb} KB tmpfs via {' '.join(prefix)}; " + _first_error(text))


def disk_full_when_recording(tmp: Path) -> FaultResult:
    return disk_full(tmp, "fill")


# -- scenarios with real training (the project's prepare.py / train.py, tiny dataset) ---------

FAKE_TRAIN = "printf 'print(\"---\")\\nprint(\"val_bpb: 0.100000\")\\n' > train.py\necho 'print a made-up val_bpb'"
CACHE_FILE = 'f=$(ls "$ALR_CACHE_DIR"/*/*.bin "$ALR_CACHE_DIR"/*/*.npy 2>/dev/null | sort | head -1); test -n "$f"'


def prepare_tiny(cache: Path) -> dict[str, str]:
    """Prepare the tiny test dataset into `cache` (what tests/conftest.py's alr_env does)."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALR_")} | {"ALR_CACHE_DIR": str(cache)}
    cmd = [sys.executable, str(root / "prepare.py"), "--text", str(root / "tests" / "data" / "tiny"), "--name", "tiny",
           "--vocab-size", "1024"]
    subprocess.run(cmd, env=env, cwd=root, capture_output=True, check=True, timeout=300)
    return {"ALR_CACHE_DIR": str(cache), "ALR_DATASET": "tiny"}


def real_training(tmp: Path, alr_env: dict[str, str]) -> list[FaultResult]:
    """With the real training target: a train.py that prints `val_bpb: 0.1` without evaluating
    (not trusted: violation); the data cache deleted, then modified, between runs (fatal, exit 3,
    nothing half-written; after re-preparing, the interrupted attempt runs once)."""
    from support.research import make_research_repo

    original = Path(alr_env["ALR_CACHE_DIR"])
    cache = tmp / "cache"
    shutil.copytree(original, cache)  # this scenario breaks its cache: never the shared one
    env = base_env(**{**alr_env, "ALR_CACHE_DIR": str(cache)}, HARNESS_BUDGET="1")
    repo = make_research_repo(tmp / "research")
    init = run_harness(repo, "init", "--tag", "t", "-q", "--baseline-runs", "1", env=env)
    assert init.returncode == 0, output(init)
    steps = [FAKE_TRAIN, CACHE_FILE + '\nrm -f "$f"\necho "# try" >> train.py\necho "cache file deleted"',
             CACHE_FILE + '\nprintf x >> "$f"\necho "# again" >> train.py\necho "cache file modified"']
    agent = scripted_agent(tmp / "real-agent", steps)
    first = loop(repo, agent, "--max-experiments", "3", env=env)
    after_delete = rows(repo)
    shutil.rmtree(cache)
    shutil.copytree(original, cache)  # the user re-prepares
    second = loop(repo, agent, "--max-experiments", "2", env=env)
    after_modify = rows(repo)
    shutil.rmtree(cache)
    shutil.copytree(original, cache)
    state = audit(repo, expected_rows=3, allowed_untracked=())
    fake = by_experiment(state.rows).get(1)
    resumed = by_experiment(state.rows).get(2)
    fatal = {
        "aborted with exit 3": first.returncode == 3 and second.returncode == 3,
        "clear report": all("prepared data changed" in output(p) and "Traceback" not in output(p)
                            for p in (first, second)),
    }
    return [
        result("train.py prints a made-up val_bpb: 0.1", {
            "recorded as violation": bool(fake and fake.status == "violation"),
            "not trusted": bool(fake and fake.value is None and "untrusted" in fake.failure),
        }, state, fake.failure[:90] if fake else "no row"),
        result("data cache deleted between runs (real training)", {
            **fatal, "nothing half-written": [r.experiment for r in after_delete] == [0, 1],
        }, state, _first_error(output(first))),
        result("data cache modified between runs (real training)", {
            **fatal, "the deleted-cache attempt ran once after re-preparing": bool(resumed and resumed.value),
            "nothing half-written": [r.experiment for r in after_modify] == [0, 1, 2],
        }, state, "experiment 3 stays pending until the next `harness loop`"),
    ]


# -- kill -9 at random moments ------------------------------------------------------------------

KILL9_AGENT = r'''
import os, re, time
n = int(os.environ["HARNESS_EXPERIMENT"])
time.sleep(0.2)  # an agent takes a moment: kills land in the agent phase too
src = open("model.py").read()
kind = n % 4
if kind == 1:  # closer to the optimum every time: a keep (until it is within the noise)
    src, what = re.sub(r"^X = .*$", f"X = {1 + 2 * 0.8 ** n:.6f}", src, flags=re.M), f"X toward 1 ({n})"
elif kind == 2:
    src, what = re.sub(r"^Y = .*$", f"Y = {2.5 + n / 100:.2f}", src, flags=re.M), f"Y away from 2 ({n})"
elif kind == 3:
    src, what = re.sub(r"^CRASH = .*$", "CRASH = 1", src, flags=re.M), "a crash"
else:
    what = "nothing this time"
open("model.py", "w").write(src)
print(what)
'''


@dataclass(frozen=True)
class Kill:
    number: int
    delay: float
    phase: str | None  # what the harness was doing when it died (from its lock file)
    rows_before: int
    started: bool  # the harness (resuming the previous kill) was still running at the kill
    orphans: int  # processes of the killed harness (agent, run) still alive right after
    error: str = ""  # what the harness said if it exited by itself before the kill

    def line(self) -> str:
        state = "running" if self.started else f"EXITED: {self.error}"
        return (f"kill {self.number:02d}: after {self.delay:5.2f}s in phase {self.phase or '-':9} rows {self.rows_before:3d}"
                f"  harness {state}  orphans {self.orphans}")


def _processes_in(repo: Path) -> list[int]:
    """Live processes whose working directory is `repo` (an agent's or a run's, left behind)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(entry / "cwd")) == repo and int(entry.name) != os.getpid() and alive(int(entry.name)):
                out.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return out


def kill9_campaign(tmp: Path, kills: int = 20, seed: int = 1234, max_delay: float = 4.0,
                   report: Callable[[str], None] = lambda _: None) -> tuple[list[Kill], Audit, FaultResult]:
    """`harness loop` killed with SIGKILL `kills` times at random moments (seeded), each kill
    followed by a restart that resumes; then a last clean `harness loop --max-experiments 1`
    and the audit of the whole repository."""
    import random

    repo = fault_repo(tmp / "kill9")
    (tmp / "kill9_agent.py").write_text(KILL9_AGENT)
    agent = f"{sys.executable} {tmp / 'kill9_agent.py'}"
    rng = random.Random(seed)
    report(f"seed {seed}: {kills} kills, delays uniform in [0.05, {max_delay}] s")
    done: list[Kill] = []
    for number in range(1, kills + 1):
        delay = rng.uniform(0.05, max_delay)
        before = len(rows(repo))
        proc = start_loop(repo, agent)
        time.sleep(delay)
        phase = lock_phase(repo, proc.pid)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        started = proc.returncode == -signal.SIGKILL  # not: it had exited by itself (an error)
        orphans = _processes_in(repo.resolve())  # the restart right away must stop these itself
        kill = Kill(number, delay, phase, before, started, len(orphans),
                    "" if started else (out or "").strip().splitlines()[-1:][0] if out.strip() else "no output")
        done.append(kill)
        report(kill.line())
    final = loop(repo, agent, "--max-experiments", "1")
    state = audit(repo, allowed_untracked=(USER_FILE,), pending_ok=False)
    survived_all = all(k.started for k in done)
    res = result(f"kill -9 x{kills} at random moments, resumed each time", {
        "every restart resumed (none exited by itself)": survived_all,
        "the last loop finished": final.returncode == 0,
        "user file intact": user_file_intact(repo),
    }, state, f"seed {seed}; {len(state.rows)} rows; phases hit: "
              + ", ".join(sorted({k.phase or '-' for k in done})))
    return done, state, res


def commit_without_ref(tmp: Path) -> FaultResult:
    """The state a kill -9 leaves between the attempt's `git commit` and its `git update-ref`
    (made with the harness's own Repo.commit, stopping where the kill would): HEAD on an attempt
    commit that no ref keeps. The next `harness loop` gives it its ref back and runs it once."""
    from harness.repo import Repo

    repo = fault_repo(tmp / "noref")
    (repo / "model.py").write_text((repo / "model.py").read_text().replace("X = 3.0", "X = 2.0"))
    sha = Repo(repo).commit(("model.py",), "set X=2.0", {"Experiment": "1"})
    proc = loop(repo, scripted_agent(tmp / "noref-agent", [set_toy(Y=2.0)]), "--max-experiments", "1")
    state = audit(repo, expected_rows=2)
    first = by_experiment(state.rows).get(1)
    return result("kill -9 between an attempt's commit and its ref", {
        "loop resumed": proc.returncode == 0,
        "said so": "its ref not written" in output(proc),
        "the attempt ran once": bool(first and first.commit == sha and first.status == "keep"),
    }, state, "recover() re-creates refs/auto-log-research/attempts/0001")


def killed_while_committing(tmp: Path) -> FaultResult:
    """The state a kill -9 leaves after the attempt's `git add` and before its `git commit`
    (found by bench/kill9.py): the edit staged, the dead harness's lock in phase "commit"."""
    import json

    repo = fault_repo(tmp / "staged")
    lock = {"pid": dead_pid(), "host": hostname(), "started": time.time(), "phase": "commit",
            "experiment": 1, "base": rows(repo)[0].commit, "commit": None}
    (repo / ARCHIVE_DIR / "lock").write_text(json.dumps(lock))
    (repo / "model.py").write_text((repo / "model.py").read_text().replace("Y = 1.0", "Y = 9.0"))
    git(repo, "add", "model.py")
    proc = loop(repo, scripted_agent(tmp / "staged-agent", [set_toy(X=2.0)]), "--max-experiments", "1")
    state = audit(repo, expected_rows=2)
    return result("kill -9 between an attempt's git add and git commit", {
        "loop resumed": proc.returncode == 0,
        "the half-made attempt was discarded": "discarded the unfinished edit" in output(proc),
        "the next experiment ran": bool(state.rows and state.rows[-1].status == "keep"),
    }, state, _first_error(output(proc)) if proc.returncode else "recover() discards a staged, uncommitted edit")
