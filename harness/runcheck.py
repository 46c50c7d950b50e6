"""Is a target's run command there to run? Checked at `harness init`, so a typo is one line now
and not a failed baseline (or a night of crashes) later.

The command runs under `/bin/sh -c`. This reads it with shlex and checks only what it can be
sure of, per simple command (the parts between `&&`, `||`, `;`, `|`):
- the program, after any `VAR=value` assignments, on the PATH that runs get (the harness's own
  interpreter's folder first) or, for a path like `./run.sh`, in the repository;
- for `python X.py`: that X.py exists; for `python -m pkg`: that pkg is importable there.
Shell syntax it cannot follow (substitutions, `$VAR` programs, subshells, control flow) ends the
check with no complaint; after a `cd`, relative paths are no longer checked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
_UNSURE = re.compile(r"[$`*?\[\]{}()]")
_KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
             "function", "select", "!", "[[", "]]", "eval", "(", ")", "{", "}"}
_BUILTINS = {"cd", ".", "source", "export", "set", "unset", "true", "false", ":", "test", "[", "echo",
             "printf", "exit", "read", "shift", "trap", "wait", "ulimit", "umask", "alias", "type", "pwd"}
_PREFIXES = {"exec", "time", "nohup", "command", "env"}  # run the command that follows them
_PYTHON_OPTIONS_WITH_ARG = {"-W", "-X", "-Q"}


def tokens(command: str) -> list[str]:
    """Words and operators of a shell command (quotes removed). Raises ValueError if unbalanced."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def simple_commands(words: list[str]) -> list[list[str]]:
    """The words of each simple command, redirections (`> out.txt`, `2>&1`) left out."""
    out: list[list[str]] = [[]]
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word and set(word) <= set(";&|"):
            out.append([])
        elif word and set(word) <= set("<>&") and set(word) & set("<>"):
            skip = True  # the redirection's target follows
        else:
            out[-1].append(word)
    return [c for c in out if c]


def check_command(command: str, cwd: Path, path: str) -> str | None:
    """The first sure problem with `command` run in `cwd` with this PATH, as one line, or None."""
    try:
        parsed = tokens(command)
    except ValueError as e:
        return f"the run command {command!r} cannot be read by the shell: {e}"
    moved = False  # after a `cd`, relative paths mean something else
    for words in simple_commands(parsed):
        while words and (_ASSIGNMENT.match(words[0]) or words[0] in _PREFIXES):
            words = words[1:]  # `FOO=1`, `env`, `exec`, `time`: the program comes after them
            if words and words[0].startswith("-"):
                return None  # `env -u NAME`, `time -p`: options this does not follow
        if not words:
            continue
        program = words[0]
        if program in _KEYWORDS or _UNSURE.search(program):
            return None  # shell syntax this does not follow: no verdict
        if program == "cd":
            moved = True
            continue
        if program in _BUILTINS:
            continue
        problem, exe = _find_program(program, cwd, path, moved)
        if problem:
            return problem
        if exe and _PYTHON.match(Path(program).name):
            problem = _check_python(exe, words[1:], cwd, path, moved)
            if problem:
                return problem
    return None


def _find_program(program: str, cwd: Path, path: str, moved: bool) -> tuple[str | None, str | None]:
    if "/" not in program:
        exe = shutil.which(program, path=path)
        if exe is None:
            return f"the run command's program {program!r} was not found on the PATH runs get", None
        return None, exe
    file = Path(os.path.expanduser(program))
    if not file.is_absolute():
        if moved:
            return None, None
        file = cwd / file
    if not file.exists():
        return f"the run command's program {program} was not found in {cwd}", None
    if not os.access(file, os.X_OK):
        return f"the run command's program {program} is not executable: `chmod +x {program}` or run it with sh", None
    return None, str(file)


def _check_python(exe: str, args: list[str], cwd: Path, path: str, moved: bool) -> str | None:
    """For `python X.py`: X.py exists; for `python -m pkg`: pkg is importable."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-c" or arg == "-":
            return None  # code on the command line or on stdin
        if arg == "-m":
            module = args[i + 1] if i + 1 < len(args) else ""
            return None if moved or not module or _UNSURE.search(module) else _check_module(exe, module, cwd, path)
        if arg in _PYTHON_OPTIONS_WITH_ARG:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        script = Path(os.path.expanduser(arg))
        if _UNSURE.search(arg) or (moved and not script.is_absolute()):
            return None
        if not (cwd / script).is_file():
            return f"{arg} (run by the run command) does not exist in {cwd}"
        return None
    return None


def _check_module(exe: str, module: str, cwd: Path, path: str) -> str | None:
    top = module.split(".")[0]
    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)"
    try:
        proc = subprocess.run([exe, "-c", code, top], cwd=cwd, capture_output=True, timeout=60,
                              env={**os.environ, "PATH": path})
    except (OSError, subprocess.SubprocessError):
        return None  # could not ask: the baseline run will tell
    if proc.returncode == 1:
        return f"the run command's module {top!r} is not importable by {exe} (install it there, e.g. `pip install {top}`)"
    return None
