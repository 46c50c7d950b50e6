"""harness.integrity: manifests over a real git repo, and receipts from the real prepare.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import integrity, runner
from harness.errors import FatalError
from harness.integrity import Manifest, Violation

REPO = Path(__file__).resolve().parents[1]
IMMUTABLE = ["prepare.py", "analyze.py", "harness"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "harness").mkdir(parents=True)
    (root / "prepare.py").write_text("EVAL_TOKENS = 1000\n")
    (root / "analyze.py").write_text("print('analysis')\n")
    (root / "train.py").write_text("LR = 0.01\n")
    (root / "harness" / "__init__.py").write_text("")
    (root / "harness" / "runner.py").write_text("LIMIT = 1\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def cache(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / "tiny"
    folder.mkdir(parents=True)
    files = [folder / "manifest.json", folder / "val.bin", folder / "tokenizer.pkl"]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 1000)
    return files


def capture(repo: Path, cache: list[Path]) -> Manifest:
    return Manifest.capture(repo, IMMUTABLE, cache)


def test_clean_repo_has_no_violations_and_manifest_round_trips(repo, cache, tmp_path):
    m = capture(repo, cache)
    assert set(m.files) == {"prepare.py", "analyze.py", "harness/__init__.py", "harness/runner.py"}
    assert m.base_commit == git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text("LR = 0.02\n")  # the editable file may change freely
    (repo / "harness" / "__pycache__").mkdir()
    (repo / "harness" / "__pycache__" / "runner.cpython-311.pyc").write_bytes(b"\0")
    assert integrity.verify(m, repo) == []
    path = tmp_path / "archive" / "integrity.json"
    m.save(path)
    assert Manifest.load(path) == m
    assert integrity.verify(Manifest.load(path), repo) == []


def test_modified_prepare_is_detected_and_restored_from_git(repo, cache):
    m = capture(repo, cache)
    (repo / "prepare.py").write_text("EVAL_TOKENS = 10  # easier\n")
    violations = integrity.verify(m, repo)
    assert violations == [Violation("prepare.py", "modified")]
    result = integrity.restore(violations, repo, manifest=m)
    assert result.restored == ("prepare.py",) and result.ok
    result.raise_if_fatal()  # nothing fatal: no exception
    assert (repo / "prepare.py").read_text() == "EVAL_TOKENS = 1000\n"
    assert integrity.verify(m, repo) == []


def test_deleted_and_added_files_are_put_right(repo, cache):
    m = capture(repo, cache)
    (repo / "analyze.py").unlink()
    (repo / "harness" / "sneaky.py").write_text("import os\n")
    violations = integrity.verify(m, repo)
    assert violations == [Violation("analyze.py", "deleted"), Violation("harness/sneaky.py", "added")]
    result = integrity.restore(violations, repo, manifest=m)
    assert set(result.restored) == {"analyze.py", "harness/sneaky.py"} and result.ok
    assert (repo / "analyze.py").exists() and not (repo / "harness" / "sneaky.py").exists()
    assert integrity.verify(m, repo) == []


def test_a_committed_change_is_undone_from_the_captured_commit(repo, cache):
    m = capture(repo, cache)
    (repo / "prepare.py").write_text("EVAL_TOKENS = 10\n")
    git(repo, "commit", "-q", "-am", "agent commits the easier eval")  # HEAD now has the change
    result = integrity.restore(integrity.verify(m, repo), repo, manifest=m)
    assert result.ok and (repo / "prepare.py").read_text() == "EVAL_TOKENS = 1000\n"


def test_a_file_git_cannot_restore_is_reported_failed(repo, cache):
    (repo / "extra_eval.py").write_text("SPLIT = 'val'\n")  # immutable but never committed
    m = Manifest.capture(repo, [*IMMUTABLE, "extra_eval.py"], cache)
    (repo / "extra_eval.py").write_text("SPLIT = 'train'\n")
    result = integrity.restore(integrity.verify(m, repo), repo, manifest=m)
    assert not result.ok and [v.path for v in result.failed] == ["extra_eval.py"]
    with pytest.raises(FatalError, match="could not restore"):
        result.raise_if_fatal()


def test_uncommitted_capture_is_not_silently_replaced_by_the_committed_version(repo, cache):
    (repo / "prepare.py").write_text("EVAL_TOKENS = 2000\n")  # captured, but not committed
    m = capture(repo, cache)
    (repo / "prepare.py").write_text("EVAL_TOKENS = 10\n")
    result = integrity.restore(integrity.verify(m, repo), repo, manifest=m)
    assert [v.path for v in result.failed] == ["prepare.py"]  # git's version is not the captured one


def test_changed_cache_file_is_fatal_not_restorable(repo, cache):
    m = capture(repo, cache)
    cache[1].write_bytes(b"\xff" * 1000)
    cache[2].unlink()
    violations = integrity.verify(m, repo)
    assert sorted(violations, key=lambda v: v.kind) == [
        Violation(str(cache[2].resolve()), "deleted", cache=True),
        Violation(str(cache[1].resolve()), "modified", cache=True),
    ]
    assert not any(v.restorable for v in violations)
    result = integrity.restore(violations, repo, manifest=m)
    assert result.restored == () and len(result.fatal) == 2 and not result.ok
    assert cache[1].read_bytes() == b"\xff" * 1000  # left alone for the user to see
    with pytest.raises(FatalError, match="prepared data changed") as e:
        result.raise_if_fatal()
    assert "prepare.py" in e.value.hint


def test_capture_without_prepared_data_is_fatal(repo, tmp_path):
    with pytest.raises(FatalError, match="missing") as e:
        Manifest.capture(repo, IMMUTABLE, [tmp_path / "nowhere" / "val.bin"])
    assert "prepare.py" in e.value.hint


def test_corrupt_manifest_file_is_fatal_with_a_way_out(tmp_path):
    path = tmp_path / "integrity.json"
    path.write_text("{not json")
    with pytest.raises(FatalError, match="cannot read the integrity manifest") as e:
        Manifest.load(path)
    assert "delete" in e.value.hint


# --- receipts ---------------------------------------------------------------------------------


def write_receipts(path: Path, key: str, *values: float) -> None:
    lines = [
        integrity.sign_receipt({"val_bpb": v, "tokens": 100, "bytes": 400, "dataset": "tiny"}, key)
        for v in values
    ]
    path.write_text("".join(line + "\n" for line in lines))


def test_new_receipt_env_gives_a_fresh_key_and_a_path_in_out_dir(tmp_path):
    env, key = integrity.new_receipt_env(tmp_path / "0001")
    env2, key2 = integrity.new_receipt_env(tmp_path / "0001")
    assert env == {
        "ALR_EVAL_RECEIPT": str(tmp_path / "0001" / "eval_receipt.jsonl"),
        "ALR_EVAL_RECEIPT_KEY": key,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", key) and key != key2


def test_valid_receipt_matching_the_printed_value_is_trusted(tmp_path):
    env, key = integrity.new_receipt_env(tmp_path)
    path = Path(env["ALR_EVAL_RECEIPT"])
    write_receipts(path, key, 1.9, 1.2345674321)  # e.g. a mid-run eval, then the final one
    verdict = integrity.check_metric(1.234567, path, key)  # as the summary prints it
    assert verdict.trusted and verdict.value == 1.2345674321
    assert integrity.check_metric(1.9, path, key).trusted  # any receipted evaluation counts


def test_tampered_receipt_is_not_trusted(tmp_path):
    path, key = tmp_path / "r.jsonl", "k" * 64
    write_receipts(path, key, 1.5)
    record = json.loads(path.read_text())
    record["val_bpb"] = 0.5
    path.write_text(json.dumps(record) + "\n")
    verdict = integrity.check_metric(0.5, path, key)
    assert not verdict.trusted and "signature" in verdict.reason


def test_receipt_signed_with_another_key_is_not_trusted(tmp_path):
    path = tmp_path / "r.jsonl"
    write_receipts(path, "a" * 64, 1.5)
    assert not integrity.check_metric(1.5, path, "b" * 64).trusted


def test_missing_receipt_is_not_trusted(tmp_path):
    verdict = integrity.check_metric(1.5, tmp_path / "none.jsonl", "k")
    assert not verdict.trusted and "no evaluation receipt" in verdict.reason and verdict.value is None


def test_reported_value_not_in_any_receipt_is_not_trusted(tmp_path):
    path, key = tmp_path / "r.jsonl", "k" * 64
    write_receipts(path, key, 1.5)
    verdict = integrity.check_metric(1.49, path, key)
    assert not verdict.trusted and "1.490000" in verdict.reason and "1.500000" in verdict.reason
    assert verdict.value == 1.5
    assert not integrity.check_metric(None, path, key).trusted
    assert not integrity.check_metric(float("nan"), path, key).trusted


def test_receipt_of_other_data_is_not_trusted(tmp_path):
    """evaluate_bpb called on another (easier) dataset, or on part of the validation set, signs a
    real receipt: its dataset and token count must be the fixed evaluation's."""
    path, key = tmp_path / "r.jsonl", "k" * 64
    write_receipts(path, key, 1.5)  # dataset "tiny", 100 tokens
    assert integrity.check_metric(1.5, path, key, expect={"dataset": "tiny", "tokens": 100}).trusted
    verdict = integrity.check_metric(1.5, path, key, expect={"dataset": "shakespeare", "tokens": 100})
    assert not verdict.trusted and "other data" in verdict.reason and "'shakespeare'" in verdict.reason
    assert not integrity.check_metric(1.5, path, key, expect={"dataset": "tiny", "tokens": 4096}).trusted


@pytest.mark.skipif(not (REPO / "prepare.py").exists(), reason="prepare.py not in this checkout")
def test_our_receipts_and_prepare_py_verify_each_other():
    fields = {"val_bpb": 1.25, "tokens": 10, "bytes": 40, "dataset": "tiny"}
    line = integrity.sign_receipt(fields, "k" * 64)
    check = "import json, sys, prepare; print(json.dumps([prepare.verify_receipt(sys.stdin.read(), k) for k in sys.argv[1:]]))"
    proc = subprocess.run(
        [sys.executable, "-c", check, "k" * 64, "j" * 64],
        cwd=REPO,
        input=line,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout) == [fields, None]


# --- end to end: prepare.py's evaluate_bpb writes the receipt in a sandboxed run ----------------

EVAL_SCRIPT = """
import os, sys
import torch
import prepare
from prepare import VOCAB_SIZE, Tokenizer, evaluate_bpb

class Uniform(torch.nn.Module):  # logits of zeros: val_bpb is log2(V) per token over bytes
    def forward(self, x):
        return torch.zeros(*x.shape, VOCAB_SIZE)

print("key visible:", "ALR_EVAL_RECEIPT_KEY" in os.environ)
bpb = evaluate_bpb(Uniform(), Tokenizer.load())
print("---")
print(f"val_bpb: {bpb * float(sys.argv[1]):.6f}")
"""


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("alr-cache")
    env = {"ALR_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "prepare.py", "--text", "tests/data/tiny", "--name", "tiny"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    return cache


@pytest.mark.skipif(not (REPO / "prepare.py").exists(), reason="prepare.py not in this checkout")
@pytest.mark.parametrize("factor", ["1.0", "0.9"])  # honest, and a run that prints a better number
def test_receipt_from_a_real_evaluation(tmp_path, tiny_cache, factor):
    (tmp_path / "eval.py").write_text(textwrap.dedent(EVAL_SCRIPT))
    out_dir = tmp_path / "0001"
    env, key = integrity.new_receipt_env(out_dir)
    env |= {"ALR_CACHE_DIR": str(tiny_cache), "ALR_DATASET": "tiny", "PYTHONPATH": str(REPO)}
    spec = runner.RunSpec([sys.executable, "eval.py", factor], None, tmp_path, out_dir, env, 300.0)
    out = runner.run(spec)
    log = out.log_path.read_text()
    assert out.ok, log
    assert "key visible: False" in log  # prepare.py took it out of the environment
    reported = float(re.search(r"^val_bpb: (\S+)$", log, re.M).group(1))
    verdict = integrity.check_metric(reported, Path(env["ALR_EVAL_RECEIPT"]), key)
    assert verdict.trusted == (factor == "1.0"), verdict.reason
    assert verdict.value == pytest.approx(reported / float(factor), rel=1e-6)


def test_a_start_with_another_evaluation_than_init_is_refused():
    from harness.errors import FatalError, UsageError

    def manifest(prepare: str, data: str, built: str, harness_code: str = "h1") -> integrity.Manifest:
        return integrity.Manifest({"prepare.py": prepare, "harness/cli.py": harness_code}, ("harness",),
                                  {"/c/tiny/manifest.json": built, "/c/tiny/train.bin": data}, "abc123")

    saved = manifest("p1", "d1", "t1")
    # prepare.py rebuilt the same data (its own manifest has a new build time); the harness was upgraded
    integrity.check_same_evaluation(saved, manifest("p1", "d1", "t2", harness_code="h2"), ("prepare.py",), "arch")
    with pytest.raises(UsageError, match=r"prepare.py changed since `harness init`"):
        integrity.check_same_evaluation(saved, manifest("p2", "d1", "t1"), ("prepare.py",), "arch")
    with pytest.raises(FatalError, match="not the data the baseline was measured on"):
        integrity.check_same_evaluation(saved, manifest("p1", "d2", "t1"), ("prepare.py",), "arch")
