"""The agent-tunable knobs of a file: `UPPER_CASE = <number>` settings.

In a Python file (`python=True`): module-level assignments, found with `ast` (so strings,
comments and nested code never confuse it). In any other file (TOML, INI, YAML, .env-like
configs): lines that start with the name, then `=` or `:`, then a plain number and at most a
`#` or `;` comment (`BATCH = 64`, `LR: 3e-4  # why`); indented lines are not knobs. Either way
each knob has its line and the exact source span of its value, so `set_knob` can change one value
and leave every other byte of the file, comments and alignment included, as it was.

A line may opt out with a `# harness: fixed` comment: the knob is still read (it is part of the
configuration) but `Knob.fixed` tells agents not to turn it.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FIXED = re.compile(r"#.*\bharness:\s*fixed\b")
_TEXT_FIXED = re.compile(r"[#;].*\bharness:\s*fixed\b")
_TEXT_KNOB = re.compile(
    r"^(?P<name>[A-Z][A-Z0-9_]*)[ \t]*[=:][ \t]*"
    r"(?P<value>[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"(?P<rest>[ \t]*(?:[#;][^\r\n]*)?)\r?$", re.M)
_POW2_TEXT = re.compile(r"^\s*2\s*\*\*\s*\d+\s*$")
_SIG_DIGITS = 4  # floats are written with at most this many significant digits


@dataclass(frozen=True)
class Knob:
    name: str
    value: int | float
    lineno: int  # 1-based line of the value's start
    kind: str  # "int" or "float"
    text: str  # the value's source text as written ("2**17", "3e-4", "-1")
    start: int  # character offsets of that text in the source
    end: int
    fixed: bool = False  # the line says `# harness: fixed`


def is_python(path: str) -> bool:
    """Are this file's knobs Python assignments (else `KEY = value` lines)?"""
    return path.endswith((".py", ".pyw"))


def read_knobs(source: str, *, python: bool = True) -> dict[str, Knob]:
    """The module-level numeric UPPER_CASE assignments of `source`, in file order.

    A name assigned twice keeps its last assignment (the one in effect). Assignments inside
    `if`/`for`/functions are not knobs. Raises SyntaxError if the source does not parse.
    With python=False, the `KEY = number` lines of a config file instead (never raises).
    """
    if not python:
        return _read_text_knobs(source)
    tree = ast.parse(source)
    offsets = _line_offsets(source)
    lines = source.splitlines()
    knobs: dict[str, Knob] = {}
    for node in tree.body:
        target, value = _simple_assignment(node)
        if target is None or value is None or not _NAME.match(target):
            continue
        number = evaluate_number(value)
        if number is None:
            continue
        start = _offset(offsets, lines, value.lineno, value.col_offset)
        end = _offset(offsets, lines, value.end_lineno or value.lineno, value.end_col_offset or 0)
        line = lines[value.lineno - 1] if value.lineno <= len(lines) else ""
        knobs.pop(target, None)  # re-insert so file order follows the assignment in effect
        knobs[target] = Knob(
            name=target,
            value=number,
            lineno=value.lineno,
            kind="int" if isinstance(number, int) else "float",
            text=source[start:end],
            start=start,
            end=end,
            fixed=bool(_FIXED.search(line)),
        )
    return knobs


def _read_text_knobs(source: str) -> dict[str, Knob]:
    knobs: dict[str, Knob] = {}
    for m in _TEXT_KNOB.finditer(source):
        number = parse_number(m["value"].replace("_", ""))
        if number is None:
            continue
        name = m["name"]
        knobs.pop(name, None)  # the last setting wins, as in most config readers
        knobs[name] = Knob(
            name=name, value=number, lineno=source.count("\n", 0, m.start()) + 1,
            kind="int" if isinstance(number, int) else "float", text=m["value"],
            start=m.start("value"), end=m.end("value"), fixed=bool(_TEXT_FIXED.search(m["rest"])),
        )
    return knobs


def canonical_text(source: str) -> str:
    """A config file's text with its knob values as numbers and comments, spacing and blank lines
    dropped: two files that set the same values the same way read the same."""
    knobs = {k.lineno: k for k in _read_text_knobs(source).values()}
    lines = []
    for i, line in enumerate(source.splitlines(), start=1):
        if i in knobs:
            lines.append(f"{knobs[i].name}={knobs[i].value!r}")
        elif line.strip() and not line.lstrip().startswith(("#", ";")):
            lines.append(line.rstrip())
    return "\n".join(lines)


def set_knob(source: str, name: str, value: int | float, *, python: bool = True) -> str:
    """`source` with knob `name` set to `value`; only that value's text changes.

    The gap before a trailing comment is widened or narrowed so the comment stays in its
    column. Raises KeyError if `name` is not a knob of `source`.
    """
    knob = read_knobs(source, python=python).get(name)
    if knob is None:
        raise KeyError(f"{name} is not a numeric UPPER_CASE knob of this file")
    new_text = format_value(value, like=knob.text)
    if not python and "e" in new_text and "." not in new_text:
        new_text = new_text.replace("e", ".0e")  # YAML reads `3e-4` as a string, `3.0e-4` as a float
    line_end = source.find("\n", knob.end)
    line_end = len(source) if line_end < 0 else line_end
    rest = source[knob.end:line_end]
    gap = len(rest) - len(rest.lstrip(" "))
    if rest[gap:gap + 1] in (("#",) if python else ("#", ";")):
        # keep the comment where it was; never let it touch the value
        min_gap = 2 if gap >= 2 else 1
        gap = max(min_gap, gap - (len(new_text) - len(knob.text)))
        rest = " " * gap + rest.lstrip(" ")
    return source[:knob.start] + new_text + rest + source[line_end:]


def format_value(value: int | float, like: str | None = None) -> str:
    """A tidy literal: ints stay ints (`2**k` if `like` was written so), floats keep at most
    four significant digits and read as floats (`0.03`, `3e-4`, `1.5`, `2.0`)."""
    if isinstance(value, bool):
        raise TypeError("a knob value is a number, not a bool")
    if isinstance(value, int):
        if like is not None and _POW2_TEXT.match(like) and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return str(value)
    value = tidy(float(value))
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value} as a knob value")
    if value == 0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e5:
        text = f"{value:.{_SIG_DIGITS}g}"
        if "e" in text:  # e.g. 1e+04 from %g; write it out
            text = f"{value:.1f}"
        return text if any(c in text for c in ".e") else text + ".0"
    mantissa, exponent = f"{value:.{_SIG_DIGITS - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def tidy(value: float) -> float:
    """`value` rounded to the digits format_value writes (so a written knob reads back equal)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{_SIG_DIGITS}g}")


def constraints(source: str, *, python: bool = True) -> list[ast.expr]:
    """The tests of the module-level `assert` statements (e.g. `assert MODEL_DIM % HEAD_DIM == 0`):
    the file's own statement of which knob combinations are valid. A config file has none."""
    if not python:
        return []
    return [node.test for node in ast.parse(source).body if isinstance(node, ast.Assert)]


def violated(tests: list[ast.expr], values: dict[str, int | float]) -> list[ast.expr]:
    """The tests that are false for these knob values. A test that names anything but knobs
    and constants (an import, a function call) cannot be judged here and is not reported."""
    out = []
    for test in tests:
        try:
            ok = _eval_test(test, values)
        except (ArithmeticError, ValueError, TypeError, KeyError):
            continue
        if not ok:
            out.append(test)
    return out


_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}


def _eval_test(node: ast.expr, values: dict[str, int | float]):
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval_test(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval_test(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        results = [_eval_test(v, values) for v in node.values]
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _eval_test(node.operand, values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _eval_test(node.left, values) % _eval_test(node.right, values)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_test(node.left, values), _eval_test(node.right, values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval_test(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    raise ValueError("not a knob expression")


def names_in(node: ast.expr) -> list[str]:
    """The names an expression uses, in order of appearance."""
    return list(dict.fromkeys(n.id for n in ast.walk(node) if isinstance(n, ast.Name)))


def evaluate_number(node: ast.expr) -> int | float | None:
    """The value of a constant numeric expression (`3`, `-1e-3`, `2**17`, `64 * 4`), else None."""
    try:
        value = _eval(node)
    except (ArithmeticError, ValueError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_number(text: str) -> int | float | None:
    """The value of numeric expression text such as "3e-4" or "2**17", else None."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    return evaluate_number(node)


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
}


def _eval(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large for a knob")
        return _BINOPS[type(node.op)](left, right)
    raise ValueError("not a constant number")


def _simple_assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _line_offsets(source: str) -> list[int]:
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _offset(offsets: list[int], lines: list[str], lineno: int, col_bytes: int) -> int:
    """Character offset of (line, UTF-8 byte column) as ast reports positions."""
    line = lines[lineno - 1] if lineno <= len(lines) else ""
    col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))
    return offsets[lineno - 1] + col
