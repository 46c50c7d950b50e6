"""Immutable evaluation: hashes of the fixed files, their restoration, and signed metric receipts.

Two guards keep a run's number honest:
- A Manifest of sha256 hashes, taken before the loop, of the repository files nobody may edit
  (prepare.py, analyze.py, harness/ if the repo has it, configured immutable files) and of the
  prepared data/tokenizer cache. `verify` lists what changed; `restore` puts repository files back
  from git, while a changed cache is fatal (only `python prepare.py` can rebuild it).
- Receipts: for each run the harness sets ALR_EVAL_RECEIPT / ALR_EVAL_RECEIPT_KEY; prepare.py's
  evaluate_bpb appends an HMAC-signed JSON line with the value it computed, and `check_metric`
  trusts a reported value only if a valid receipt carries it. The HMAC is checked here (same
  canonical JSON as prepare.py) so the harness never imports the target's prepare.py.
  A receipt shows the value came out of evaluate_bpb; it cannot stop code in the same process
  that goes out of its way to read the key before prepare.py removes it from the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.errors import FatalError, UsageError

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"  # in the archive: the evaluation as `harness init` measured it
RECEIPT_ENV = "ALR_EVAL_RECEIPT"
RECEIPT_KEY_ENV = "ALR_EVAL_RECEIPT_KEY"
RECEIPT_NAME = "eval_receipt.jsonl"
RECEIPT_MAC_FIELD = "hmac"
METRIC_FIELD = "val_bpb"
REL_TOLERANCE = 1e-6  # the summary prints 6 decimals
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Violation:
    path: str  # repo-relative for repository files, absolute for cache files
    kind: str  # "modified" | "deleted" | "added"
    cache: bool = False  # a prepared data/tokenizer file: not restorable from git

    @property
    def restorable(self) -> bool:
        return not self.cache

    def __str__(self) -> str:
        return f"{self.path} ({'cache file ' if self.cache else ''}{self.kind})"


@dataclass(frozen=True)
class RestoreResult:
    restored: tuple[str, ...]  # repository files put back (or removed, for added ones)
    failed: tuple[Violation, ...]  # repository files git could not put back as captured
    fatal: tuple[Violation, ...]  # cache files changed: the user must re-run prepare.py

    @property
    def ok(self) -> bool:
        return not (self.failed or self.fatal)

    def raise_if_fatal(self) -> None:
        """FatalError if the evaluation can no longer be trusted; otherwise nothing."""
        if self.fatal:
            names = ", ".join(Path(v.path).name for v in self.fatal)
            raise FatalError(
                f"the prepared data changed during the run ({names})",
                hint="re-run `python prepare.py`, then start the loop again",
            )
        if self.failed:
            raise FatalError(
                f"could not restore immutable files from git: {', '.join(map(str, self.failed))}",
                hint="commit the original versions (or `git checkout` them) and start again",
            )


@dataclass(frozen=True)
class Manifest:
    files: dict[str, str]  # repo-relative path -> sha256
    dirs: tuple[str, ...]  # repo-relative directories whose new files count as "added"
    cache: dict[str, str]  # absolute path -> sha256
    base_commit: str | None  # git HEAD when captured: where restore takes files from
    created: float = 0.0

    @classmethod
    def capture(cls, root: Path, paths: list[str], extra_files: list[Path]) -> Manifest:
        """Hash `paths` (files or directories, relative to root; missing ones are skipped) and the
        prepared cache files `extra_files` (a missing one is fatal: prepare has not run)."""
        root = Path(root).resolve()
        dirs = tuple(sorted(p for p in _norm(paths) if (root / p).is_dir()))
        files = {rel: _sha256(root / rel) for rel in _expand(root, paths)}
        cache = {}
        for f in extra_files:
            path = Path(f).resolve()
            if not path.is_file():
                raise FatalError(f"prepared file {path} is missing", hint="run `python prepare.py` first")
            cache[str(path)] = _sha256(path)
        return cls(files, dirs, cache, _head(root), time.time())

    def save(self, path: Path) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "base_commit": self.base_commit,
            "created": self.created,
            "files": self.files,
            "dirs": list(self.dirs),
            "cache": self.cache,
        }
        atomic.write_text(Path(path), json.dumps(data, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return cls(
                files=dict(data["files"]),
                dirs=tuple(data["dirs"]),
                cache=dict(data["cache"]),
                base_commit=data["base_commit"],
                created=float(data.get("created", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FatalError(
                f"cannot read the integrity manifest {path}: {e}",
                hint="delete it; the harness captures a fresh one at the next start",
            ) from e


def check_same_evaluation(saved: Manifest, now: Manifest, immutable: tuple[str, ...], archive_name: str) -> None:
    """Refuse to go on if the evaluation (immutable files, prepared data) is not the one the
    research started with. harness/ itself may change (an upgrade): it is not the measurement."""
    fixed = _norm(list(immutable))

    def evaluation(files: dict[str, str]) -> dict[str, str]:
        return {p: h for p, h in files.items() if any(p == f or p.startswith(f + "/") for f in fixed)}

    before, after = evaluation(saved.files), evaluation(now.files)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        names = " ".join(changed[:5])
        base = (saved.base_commit or "HEAD")[:10]
        raise UsageError(f"{names} changed since `harness init` measured the baseline (the evaluation is fixed)",
                         hint=f"put it back with `git checkout {base} -- {names}`, or start new research: move "
                              f"{archive_name}/ aside and `harness init --tag NEW`")
    def data(cache: dict[str, str]) -> dict[str, str]:  # prepare.py's own manifest holds a build time
        return {p: h for p, h in cache.items() if Path(p).name != "manifest.json"}

    if data(saved.cache) != data(now.cache):
        gone = sorted(set(data(saved.cache)) - set(data(now.cache)))
        what = f"{Path(gone[0]).parent} is not where it was" if gone else "its contents changed"
        raise FatalError(f"the prepared data is not the data the baseline was measured on ({what})",
                         hint="use the ALR_CACHE_DIR and ALR_DATASET of `harness init` (or re-run `python "
                              "prepare.py`, which rebuilds the same files)")


def verify(manifest: Manifest, root: Path) -> list[Violation]:
    """Every immutable file that was modified, deleted or added since `manifest` was captured."""
    root = Path(root).resolve()
    out = []
    for rel, digest in sorted(manifest.files.items()):
        path = root / rel
        if not path.is_file():
            out.append(Violation(rel, "deleted"))
        elif _sha256(path) != digest:
            out.append(Violation(rel, "modified"))
    for rel in sorted(set(_expand(root, list(manifest.dirs))) - set(manifest.files)):
        out.append(Violation(rel, "added"))
    for name, digest in sorted(manifest.cache.items()):
        path = Path(name)
        if not path.is_file():
            out.append(Violation(name, "deleted", cache=True))
        elif _sha256(path) != digest:
            out.append(Violation(name, "modified", cache=True))
    return out


def restore(
    violations: list[Violation],
    repo: Path,
    *,
    manifest: Manifest | None = None,
    base: str | None = None,
) -> RestoreResult:
    """Put repository files back with `git checkout <base> -- path` and delete added ones.

    `base` defaults to manifest.base_commit (the commit captured with the hashes), else HEAD.
    With `manifest`, a file counts as restored only if its hash matches again. Cache files are
    never touched: they come back in `fatal`, for the caller to stop on.
    """
    repo = Path(repo).resolve()
    rev = base or (manifest.base_commit if manifest else None) or "HEAD"
    restored: list[str] = []
    failed: list[Violation] = []
    for v in violations:
        if v.cache:
            continue
        if v.kind == "added":
            _remove_added(repo, v.path)
            ok = not (repo / v.path).exists()
        else:
            ok = _git_checkout(repo, rev, v.path) and _matches(manifest, repo, v.path)
        if ok:
            restored.append(v.path)
        else:
            failed.append(v)
    return RestoreResult(tuple(restored), tuple(failed), tuple(v for v in violations if v.cache))


# --- receipts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustVerdict:
    trusted: bool
    reason: str
    value: float | None  # the receipted value (the one to record when trusted)


def new_receipt_env(out_dir: Path) -> tuple[dict[str, str], str]:
    """The env vars for one run (receipt path in out_dir, a fresh key) and the key."""
    key = secrets.token_hex(32)
    path = Path(out_dir).resolve() / RECEIPT_NAME
    return {RECEIPT_ENV: str(path), RECEIPT_KEY_ENV: key}, key


def sign_receipt(fields: dict, key: str) -> str:
    """One receipt line, as prepare.py writes it (used by tests and by targets without prepare.py)."""
    return json.dumps({**fields, RECEIPT_MAC_FIELD: _mac(fields, key)}, sort_keys=True)


def verify_receipt(line: str, key: str) -> dict | None:
    """The receipt's fields if its HMAC is valid under `key`, else None."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get(RECEIPT_MAC_FIELD), str):
        return None
    mac = data.pop(RECEIPT_MAC_FIELD)
    return data if hmac.compare_digest(mac, _mac(data, key)) else None


def check_metric(reported: float | None, receipt_path: Path, key: str, expect: dict | None = None) -> TrustVerdict:
    """Trust `reported` only if a validly signed receipt in `receipt_path` carries the same value,
    and (with `expect`) came from evaluating the expected dataset on all its validation tokens,
    not from evaluate_bpb called on some other, easier data."""
    try:
        lines = Path(receipt_path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return TrustVerdict(False, "no evaluation receipt: the value did not come from evaluate_bpb", None)
    except (OSError, UnicodeDecodeError) as e:
        return TrustVerdict(False, f"evaluation receipt unreadable: {e}", None)
    values = []
    for line in filter(str.strip, lines):
        fields = verify_receipt(line, key)
        if fields is None:
            return TrustVerdict(False, "evaluation receipt has a bad signature (tampered or forged)", None)
        value = fields.get(METRIC_FIELD)
        wrong = [k for k, v in (expect or {}).items() if fields.get(k) != v]
        if wrong:
            return TrustVerdict(False, "evaluate_bpb ran on other data than the fixed evaluation ("
                                + ", ".join(f"{k} {fields.get(k)!r}, expected {expect[k]!r}" for k in wrong) + ")",
                                None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
    if not values:
        return TrustVerdict(False, "evaluation receipt is empty", None)
    if reported is None:
        return TrustVerdict(False, "the run reported no value", values[-1])
    for value in reversed(values):  # the last evaluation is normally the final one
        if _same(reported, value):
            return TrustVerdict(True, "matches a signed evaluation receipt", value)
    shown = ", ".join(f"{v:.6f}" for v in values[-3:])
    return TrustVerdict(False, f"reported {reported:.6f} but evaluate_bpb computed {shown}", values[-1])


def _mac(fields: dict, key: str) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def _same(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    # 6 printed decimals round by up to 5e-7: allow that on top of the relative tolerance
    return abs(a - b) <= max(REL_TOLERANCE * max(abs(a), abs(b)), 5.01e-7)


# --- files ------------------------------------------------------------------------------------


def _norm(paths: list[str]) -> list[str]:
    return [Path(p).as_posix().strip("/") for p in paths if str(p).strip("/")]


def _expand(root: Path, paths: list[str]) -> list[str]:
    """The files named by `paths` (directories walked), repo-relative, skipping caches."""
    out = []
    for rel in _norm(paths):
        path = root / rel
        if path.is_file():
            out.append(rel)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                parts = f.relative_to(root).parts
                if f.is_file() and not _SKIP_DIRS & set(parts) and not f.name.endswith(_SKIP_SUFFIXES):
                    out.append(f.relative_to(root).as_posix())
    return sorted(set(out))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _head(root: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_checkout(repo: Path, rev: str, rel: str) -> bool:
    proc = subprocess.run(["git", "checkout", rev, "--", rel], cwd=repo, capture_output=True, text=True)
    return proc.returncode == 0


def _matches(manifest: Manifest | None, repo: Path, rel: str) -> bool:
    if manifest is None or rel not in manifest.files:
        return True
    path = repo / rel
    return path.is_file() and _sha256(path) == manifest.files[rel]


def _remove_added(repo: Path, rel: str) -> None:
    path = repo / rel
    if path.is_file() or path.is_symlink():
        path.unlink()
