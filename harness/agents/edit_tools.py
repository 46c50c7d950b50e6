"""The file tools API backends give the model, and their implementations.

Plain code with no network: `EditTools.run(name, args)` returns the text of a tool_result or
raises ToolError (sent back to the model as an error result, so it can correct itself). Only the
editable files and the two notes files can change; everything under the working tree and the
archive can be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_VIEW_CHARS = 60_000  # one file view; longer files are shown in part, with a note
MAX_WRITE_CHARS = 400_000  # a rewrite larger than this is refused (a runaway reply)
MAX_NOTE_CHARS = 4_000

TOOLS: list[dict] = [
    {
        "name": "view_file",
        "description": "Show a file of the working tree (e.g. train.py) with line numbers.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "path relative to the repository root"},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            "required": ["path"],
        },
    },
    {
        "name": "replace_in_file",
        "description": "Replace one exact occurrence of old_string with new_string in an editable file. "
        "old_string must match exactly once (include enough surrounding lines).",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
            },
            "required": ["path", "old_string", "new_string"],
        },
    },
    {
        "name": "write_file",
        "description": "Replace the whole content of an editable file (prefer replace_in_file).",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "append_note",
        "description": "Append a short note to insights.md (validated findings) or ideas_queue.md "
        "(hypotheses, one '- [ ] KNOB = value  # why' line each).",
        "input_schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "enum": ["insights.md", "ideas_queue.md"]},
                           "text": {"type": "string"}},
            "required": ["file", "text"],
        },
    },
    {
        "name": "read_archive_file",
        "description": "Read a file of the experiment archive, e.g. 'results.tsv', 'insights.md' or "
        "'<commit>/analysis.md'. Long files show their end.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "path relative to the archive"}},
            "required": ["path"],
        },
    },
    {
        "name": "finish",
        "description": "Call once the edit is made: a one-line description of the hypothesis tested.",
        "input_schema": {
            "type": "object",
            "properties": {"description": {"type": "string"}},
            "required": ["description"],
        },
    },
]


class ToolError(Exception):
    """A tool call the model got wrong; the message goes back to it as an error result."""


@dataclass
class EditTools:
    """The tools bound to one working tree. Mutable: it records what changed and the finish."""

    workdir: Path
    archive_dir: Path
    editable: tuple[str, ...] = ("train.py",)
    notes_files: tuple[str, ...] = ("insights.md", "ideas_queue.md")
    changed: set[str] = field(default_factory=set)
    finished: str | None = None

    def run(self, name: str, args: object) -> str:
        handler = getattr(self, f"_tool_{name}", None)
        if handler is None or name not in {t["name"] for t in TOOLS}:
            raise ToolError(f"unknown tool {name!r}; use one of: {', '.join(t['name'] for t in TOOLS)}")
        if not isinstance(args, dict):
            raise ToolError(f"{name} takes a JSON object of arguments")
        spec = next(t for t in TOOLS if t["name"] == name)["input_schema"]
        for key in spec["required"]:
            if key not in args:
                raise ToolError(f"{name} needs argument {key!r}")
        for key, value in args.items():
            want = spec["properties"].get(key, {}).get("type")
            if want == "string" and not isinstance(value, str):
                raise ToolError(f"{name}: {key} must be a string")
            if want == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ToolError(f"{name}: {key} must be an integer")
        return handler(**{k: v for k, v in args.items() if k in spec["properties"]})

    # --- paths -------------------------------------------------------------------------------

    def _inside(self, base: Path, rel: str) -> Path:
        if "\0" in rel:
            raise ToolError(f"{rel!r} contains a NUL byte; give a plain relative path like 'train.py'")
        try:
            path = (base / rel).resolve()
        except (OSError, ValueError) as e:  # e.g. a name too long, a symlink loop
            raise ToolError(f"{rel!r} is not a usable path: {e}") from None
        if not path.is_relative_to(base.resolve()):
            raise ToolError(f"{rel!r} is outside the allowed directory")
        return path

    @staticmethod
    def _read_utf8(target: Path, rel: str) -> str:
        """An editable file's text; one that is not UTF-8 cannot be edited by string replacement."""
        try:
            return target.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ToolError(f"{rel} is not UTF-8 text (bad byte at offset {e.start}); "
                            "rewrite it whole with write_file") from None
        except OSError as e:
            raise ToolError(f"cannot read {rel}: {e.strerror or e}") from None

    def _editable(self, rel: str) -> Path:
        clean = Path(rel).as_posix().removeprefix("./")
        if clean not in self.editable:
            raise ToolError(f"{rel!r} may not be edited; editable: {', '.join(self.editable)}")
        return self._inside(self.workdir, clean)

    # --- tools -------------------------------------------------------------------------------

    def _tool_view_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        target = self._inside(self.workdir, path)
        if not target.is_file():
            raise ToolError(f"no such file: {path}")
        lines = target.read_text(encoding="utf-8", errors="replace").splitlines()
        first = max(1, start_line or 1)
        last = min(len(lines), end_line or len(lines))
        if lines and first > len(lines):
            raise ToolError(f"start_line {first} is past the end of {path} ({len(lines)} lines)")
        if end_line is not None and end_line < first:
            raise ToolError(f"end_line {end_line} is before start_line {first}")
        shown = "\n".join(f"{n:5d}\t{lines[n - 1]}" for n in range(first, last + 1))
        if len(shown) > MAX_VIEW_CHARS:
            shown = shown[:MAX_VIEW_CHARS] + "\n[... cut: ask for a line range with start_line/end_line]"
        return shown or "(empty file)"

    def _tool_replace_in_file(self, path: str, old_string: str, new_string: str) -> str:
        target = self._editable(path)
        text = self._read_utf8(target, path)
        count = text.count(old_string) if old_string else 0
        if count != 1:
            found = "not found" if count == 0 else f"found {count} times"
            raise ToolError(f"old_string {found} in {path}; it must match exactly once (view_file first)")
        if old_string == new_string:
            raise ToolError("old_string and new_string are the same; nothing would change")
        target.write_text(text.replace(old_string, new_string, 1), encoding="utf-8")
        self.changed.add(path.removeprefix("./"))
        return f"replaced 1 occurrence in {path}"

    def _tool_write_file(self, path: str, content: str) -> str:
        target = self._editable(path)
        if len(content) > MAX_WRITE_CHARS:
            raise ToolError(f"content is {len(content):,} chars; the limit is {MAX_WRITE_CHARS:,}")
        target.write_text(content, encoding="utf-8")
        self.changed.add(path.removeprefix("./"))
        return f"wrote {len(content.splitlines())} lines to {path}"

    def _tool_append_note(self, file: str, text: str) -> str:
        if file not in self.notes_files:
            raise ToolError(f"notes go to one of: {', '.join(self.notes_files)}")
        if len(text) > MAX_NOTE_CHARS:
            raise ToolError(f"a note is at most {MAX_NOTE_CHARS} chars")
        target = self._inside(self.archive_dir, file)
        old = self._read_utf8(target, file) if target.exists() else ""
        sep = "" if not old or old.endswith("\n") else "\n"
        target.write_text(old + sep + text.rstrip("\n") + "\n", encoding="utf-8")
        self.changed.add(f"{self.archive_dir.name}/{file}")
        return f"appended to {file}"

    def _tool_read_archive_file(self, path: str) -> str:
        target = self._inside(self.archive_dir, path)
        if not target.is_file():
            raise ToolError(f"no such archive file: {path}")
        text = target.read_text(encoding="utf-8", errors="replace")
        if len(text) > MAX_VIEW_CHARS:
            text = f"[... first {len(text) - MAX_VIEW_CHARS:,} chars cut]\n" + text[-MAX_VIEW_CHARS:]
        return text or "(empty file)"

    def _tool_finish(self, description: str) -> str:
        if not description.strip():
            raise ToolError("finish needs a one-line description")
        self.finished = description.strip().splitlines()[0]
        return "recorded"
