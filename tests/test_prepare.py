"""prepare.py through the paths a user takes: the real CLI in a subprocess, and the API train.py
imports (in-process, against a cache the CLI built)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY_CORPUS = ROOT / "tests" / "data" / "tiny"
sys.path.insert(0, str(ROOT))
import prepare  # noqa: E402


def run_prepare(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "prepare.py"), *args], env={**os.environ, **(env or {})},
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A script run from the repository root, as train.py is."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def digests(dataset: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in prepare.prepared_files(dataset)}


@pytest.fixture
def tiny(alr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> prepare.Tokenizer:
    monkeypatch.setenv("ALR_CACHE_DIR", alr_env["ALR_CACHE_DIR"])
    return prepare.Tokenizer.load("tiny")


@pytest.fixture(scope="module")
def multi_doc_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A dataset of 24 short documents (the tiny plays in eighths): its val split holds two
    documents, so evaluation crosses a BOS token, which must not be scored."""
    folder = tmp_path_factory.mktemp("multi-src")
    for path in sorted(TINY_CORPUS.glob("*.txt")):
        lines = path.read_text().splitlines(keepends=True)
        for part in range(8):
            (folder / f"{path.stem}_{part}.txt").write_text("".join(lines[part * len(lines) // 8 : (part + 1) * len(lines) // 8]))
    cache = tmp_path_factory.mktemp("multi-cache")
    proc = run_prepare("--text", str(folder), "--name", "multi", "--vocab-size", "512", env={"ALR_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    return str(cache)


@pytest.fixture(params=["tiny", "multi"])
def eval_tokenizer(request: pytest.FixtureRequest, alr_env: dict[str, str],
                   monkeypatch: pytest.MonkeyPatch) -> prepare.Tokenizer:
    cache = alr_env["ALR_CACHE_DIR"] if request.param == "tiny" else request.getfixturevalue("multi_doc_cache")
    monkeypatch.setenv("ALR_CACHE_DIR", cache)
    return prepare.Tokenizer.load(request.param)


# --- preparing ----------------------------------------------------------------------------------


def test_shakespeare_prepares_offline_then_rerun_is_a_noop(tmp_path: Path) -> None:
    env = {"ALR_CACHE_DIR": str(tmp_path), "ALR_DATA_URL": "http://127.0.0.1:9/unreachable"}
    first = run_prepare(env=env)
    assert first.returncode == 0, first.stderr
    assert "shakespeare: prepared" in first.stdout
    manifest = json.loads((tmp_path / "shakespeare" / "manifest.json").read_text())
    assert manifest["config"] == {"max_seq_len": 256, "vocab_size": 4096, "eval_tokens": 2**17, "eval_batch_size": 32}
    assert manifest["tokens"]["val"] >= 2**17 + 1  # the fixed val works hold all of EVAL_TOKENS
    assert manifest["tokens"]["train"] > 5 * manifest["tokens"]["val"]
    val = np.fromfile(tmp_path / "shakespeare" / "val.bin", dtype=np.uint16)
    assert val.size == manifest["tokens"]["val"] and val[0] == 4095  # documents start with BOS
    assert (val == 4095).sum() == len(prepare.SHAKESPEARE_VAL)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shakespeare").iterdir()}

    again = run_prepare(env=env)
    assert again.returncode == 0 and "already prepared, nothing to do" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shakespeare").iterdir()} == before


@pytest.mark.parametrize("damage", ["flip_byte", "delete_file", "truncate_manifest"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    monkeypatch.setenv("ALR_CACHE_DIR", str(tmp_path))
    args = ("--text", str(TINY_CORPUS), "--name", "tiny", "--vocab-size", "512")
    assert run_prepare(*args).returncode == 0
    good = digests("tiny")
    folder = prepare.cache_dir("tiny")
    if damage == "flip_byte":
        data = bytearray((folder / "train.bin").read_bytes())
        data[1000] ^= 0xFF
        (folder / "train.bin").write_bytes(bytes(data))
    elif damage == "delete_file":
        (folder / "token_bytes.npy").unlink()
    else:
        (folder / "manifest.json").write_text('{"format": 1, "conf')
    assert not prepare.is_prepared("tiny")

    rebuilt = run_prepare(*args)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "tiny: prepared" in rebuilt.stdout
    assert prepare.is_prepared("tiny")
    assert {k: v for k, v in digests("tiny").items() if k != "manifest.json"} == {
        k: v for k, v in good.items() if k != "manifest.json"}  # the build is deterministic


def test_text_dataset_reprepares_by_name_and_rebuilds_when_the_corpus_changes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in TINY_CORPUS.glob("*.txt"):
        (corpus / path.name).write_bytes(path.read_bytes())
    env = {"ALR_CACHE_DIR": str(tmp_path / "cache")}
    assert run_prepare("--text", str(corpus), "--vocab-size", "300", env=env).returncode == 0
    # the name defaults to the folder's; ALR_DATASET=<name> + plain `python prepare.py` finds it again
    same = run_prepare(env={**env, "ALR_DATASET": "corpus"})
    assert same.returncode == 0 and "already prepared" in same.stdout, same.stdout + same.stderr

    (corpus / "tempest.txt").write_text("A new val play.\n" * 2000)
    changed = run_prepare("--text", str(corpus), "--vocab-size", "300", env=env)
    assert changed.returncode == 0 and "corpus: prepared" in changed.stdout


def test_single_file_corpus_splits_by_lines(tmp_path: Path) -> None:
    text = (TINY_CORPUS / "comedy_of_errors.txt").read_text()
    (tmp_path / "play.txt").write_text(text)
    env = {"ALR_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_prepare("--text", str(tmp_path / "play.txt"), "--vocab-size", "400", env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "cache" / "play" / "manifest.json").read_text())
    train, val = manifest["tokens"]["train"], manifest["tokens"]["val"]
    assert 0.05 < val / (train + val) < 0.2  # the last 10% of the lines
    assert manifest["config"]["eval_tokens"] == (val - 1) // 256 * 256  # capped at what val holds


# --- bad inputs: one line on stderr, exit 2 -------------------------------------------------------


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    proc = run_prepare("--text", str(tmp_path / "empty.txt"), env={"ALR_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert one_line_error(proc).startswith("error: ") and "is empty" in proc.stderr


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("Fair Verona, où nous plaçons notre scène\n".encode("latin-1") * 20)
    proc = run_prepare("--text", str(tmp_path / "latin1.txt"), env={"ALR_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert "not UTF-8" in one_line_error(proc)


def test_missing_path_and_bad_name_are_refused(tmp_path: Path) -> None:
    missing = run_prepare("--text", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "does not exist" in one_line_error(missing)
    bad_name = run_prepare("--text", str(TINY_CORPUS), "--name", "shakespeare")
    assert bad_name.returncode == 2 and "bad dataset name" in one_line_error(bad_name)


def test_unknown_dataset_is_refused() -> None:
    proc = run_prepare("--dataset", "wikipedia")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "unknown dataset 'wikipedia'" in line and "--text" in line


def test_training_before_prepare_says_run_prepare(tmp_path: Path) -> None:
    script = "from prepare import Tokenizer\nTokenizer.load()\nprint('unreachable')\n"
    proc = run_python(script, env={"ALR_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 2 and "unreachable" not in proc.stdout
    line = one_line_error(proc)
    assert "data not prepared" in line and "`python prepare.py`" in line


def test_bad_time_budget_is_one_line() -> None:
    proc = run_python("import prepare", env={"ALR_TIME_BUDGET": "five minutes"})
    assert proc.returncode == 2 and "ALR_TIME_BUDGET" in one_line_error(proc)


def test_contract_constants_follow_the_environment(alr_env: dict[str, str]) -> None:
    code = ("import json, prepare as p\nprint(json.dumps([p.DATASET, p.MAX_SEQ_LEN, p.VOCAB_SIZE, p.EVAL_TOKENS,"
            " p.TIME_BUDGET, p.SEED, str(p.RUN_DIR)]))")
    proc = run_python(code, env={**alr_env, "ALR_TIME_BUDGET": "2.5", "ALR_SEED": "7", "ALR_RUN_DIR": "/tmp/r"})
    assert proc.returncode == 0, proc.stderr
    dataset, seq, vocab, eval_tokens, budget, seed, run_dir = json.loads(proc.stdout)
    manifest = json.loads((Path(alr_env["ALR_CACHE_DIR"]) / "tiny" / "manifest.json").read_text())
    assert (dataset, seq, budget, seed, run_dir) == ("tiny", 256, 2.5, 7, "/tmp/r")
    assert vocab == manifest["config"]["vocab_size"] == 1024
    assert eval_tokens == manifest["config"]["eval_tokens"] == (manifest["tokens"]["val"] - 1) // 256 * 256
    default = run_python(code, env={"ALR_CACHE_DIR": alr_env["ALR_CACHE_DIR"]})  # shakespeare, not prepared here
    assert json.loads(default.stdout)[:5] == ["shakespeare", 256, 4096, 2**17, 300.0]


# --- tokenizer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "To be, or not to be, that is the question:\n",
    "Unicode: 你好, naïve café — ünïcödé 🎭\r\n\ttabs  and   spaces",
    "numbers 1234567 and <|bos|> typed as plain text",
    "",
])
def test_encode_decode_round_trip(tiny: prepare.Tokenizer, text: str) -> None:
    ids = tiny.encode(text)
    assert tiny.decode(ids) == text
    assert all(0 <= i < tiny.get_vocab_size() for i in ids)
    assert tiny.bos_token_id not in ids  # special tokens come only from prepend_bos
    assert tiny.encode(text, prepend_bos=True) == [tiny.bos_token_id, *ids]


def test_token_bytes_count_utf8_bytes(tiny: prepare.Tokenizer) -> None:
    token_bytes = prepare.get_token_bytes("cpu", "tiny")
    assert token_bytes.shape == (tiny.get_vocab_size(),) and token_bytes[tiny.bos_token_id] == 0
    text = "O brave new world, that has such people in't! 你好 🎭"
    assert int(token_bytes[tiny.encode(text)].sum()) == len(text.encode("utf-8"))


# --- dataloader ---------------------------------------------------------------------------------


def test_train_loader_yields_shifted_random_windows(tiny: prepare.Tokenizer) -> None:
    train = np.fromfile(prepare.cache_dir("tiny") / "train.bin", dtype=np.uint16).astype(np.int64)
    loader = prepare.make_dataloader(tiny, 4, 32, "train", "cpu")
    x, y, epoch = next(loader)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64 and epoch == 1
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.is_contiguous() and y.is_contiguous()
    text = train.tobytes()
    for row in torch.cat([x, y[:, -1:]], dim=1).numpy():
        assert row.tobytes() in text  # each row is a real window of the train split
    same = next(prepare.make_dataloader(tiny, 4, 32, "train", "cpu"))  # seeded by ALR_SEED
    assert torch.equal(same[0], x)
    big = prepare.make_dataloader(tiny, 64, 256, "train", "cpu")
    epochs = [next(big)[2] for _ in range(1 + train.size // (64 * 256) + 1)]
    assert epochs[0] == 1 and epochs[-1] == 2  # epoch counts passes over the train tokens


def test_val_loader_is_sequential_and_wraps(tiny: prepare.Tokenizer) -> None:
    val = np.fromfile(prepare.cache_dir("tiny") / "val.bin", dtype=np.uint16).astype(np.int64)
    T = 1000
    loader = prepare.make_dataloader(tiny, 2, T, "val", "cpu")
    x, y, epoch = next(loader)
    assert epoch == 1 and x[0].tolist() == val[:T].tolist() and x[1].tolist() == val[T : 2 * T].tolist()
    assert y[1].tolist() == val[T + 1 : 2 * T + 1].tolist()
    windows_per_pass = (val.size - 1) // T
    batches = [next(loader) for _ in range(windows_per_pass // 2)]  # the last one holds a wrapped window
    assert [e for _, _, e in batches[-2:]] == [1, 2]
    assert batches[-1][0][-1].tolist() == val[:T].tolist()


# --- evaluate_bpb -------------------------------------------------------------------------------


class BiasModel(torch.nn.Module):
    """The same logits at every position: cross-entropy is then computable by hand."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = torch.nn.Parameter(bias)
        self.grad_enabled_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled_seen.append(torch.is_grad_enabled())
        assert not self.training  # evaluate_bpb puts the model in eval mode
        return self.bias.to(torch.bfloat16).expand(*x.shape, -1)  # low precision: prepare casts


def eval_targets(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The targets evaluate_bpb scores, read straight from the files, and the byte table."""
    cfg = prepare.dataset_config(dataset)
    val = np.fromfile(prepare.cache_dir(dataset) / "val.bin", dtype=np.uint16).astype(np.int64)
    return val[1 : cfg.eval_tokens + 1], np.load(prepare.cache_dir(dataset) / "token_bytes.npy")


def test_evaluate_bpb_uniform_logits_is_log2_vocab_per_token(eval_tokenizer: prepare.Tokenizer) -> None:
    V = eval_tokenizer.get_vocab_size()
    model = BiasModel(torch.zeros(V)).train()
    bpb = prepare.evaluate_bpb(model, eval_tokenizer, "cpu")
    targets, token_bytes = eval_targets(eval_tokenizer.dataset)
    if eval_tokenizer.dataset == "multi":
        assert (targets == eval_tokenizer.bos_token_id).sum() >= 1  # BOS is among the targets, unscored
    expected = math.log2(V) * (token_bytes[targets] > 0).sum() / token_bytes[targets].sum()
    assert bpb == pytest.approx(expected, rel=1e-6)  # float32 cross-entropy, float64 sums
    assert model.training and model.grad_enabled_seen and not any(model.grad_enabled_seen)


def test_evaluate_bpb_matches_a_hand_computation(eval_tokenizer: prepare.Tokenizer) -> None:
    V = eval_tokenizer.get_vocab_size()
    bias = torch.randn(V, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).double()
    bpb = prepare.evaluate_bpb(BiasModel(bias.float()), eval_tokenizer, "cpu")
    targets, token_bytes = eval_targets(eval_tokenizer.dataset)
    b = bias.numpy()
    log_z = math.log(np.exp(b - b.max()).sum()) + b.max()
    scored = targets[token_bytes[targets] > 0]
    expected = (log_z - b[scored]).sum() / (math.log(2) * token_bytes[targets].sum())
    assert bpb == pytest.approx(expected, rel=1e-6)


def test_evaluate_bpb_rejects_a_model_that_returns_a_loss(tiny: prepare.Tokenizer) -> None:
    class LossModel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor(1.0)

    model = LossModel().train()
    with pytest.raises(TypeError, match=r"must return logits \(B, T, V\)"):
        prepare.evaluate_bpb(model, tiny, "cpu")
    assert model.training


# --- receipts -----------------------------------------------------------------------------------

RECEIPT_SCRIPT = """
import os, torch, prepare
assert "ALR_EVAL_RECEIPT_KEY" not in os.environ, "the key must leave the environment at import"
class Uniform(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(*x.shape, prepare.VOCAB_SIZE)
print(repr(prepare.evaluate_bpb(Uniform(), prepare.Tokenizer.load(), "cpu")))
"""


def test_receipt_is_signed_and_tampering_is_detected(tiny: prepare.Tokenizer, alr_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    receipt, key = tmp_path / "receipt.jsonl", "s3cret-key"
    proc = run_python(RECEIPT_SCRIPT, env={**alr_env, "ALR_EVAL_RECEIPT": str(receipt), "ALR_EVAL_RECEIPT_KEY": key})
    assert proc.returncode == 0, proc.stderr
    line = receipt.read_text().strip()
    fields = prepare.verify_receipt(line, key)
    assert fields is not None and fields["val_bpb"] == float(proc.stdout) and fields["dataset"] == "tiny"
    cfg = prepare.dataset_config("tiny")
    val = np.fromfile(prepare.cache_dir("tiny") / "val.bin", dtype=np.uint16).astype(np.int64)
    token_bytes = np.load(prepare.cache_dir("tiny") / "token_bytes.npy")
    assert fields["tokens"] == cfg.eval_tokens and fields["bytes"] == token_bytes[val[1 : cfg.eval_tokens + 1]].sum()

    record = json.loads(line)
    assert prepare.verify_receipt(line, "other-key") is None
    assert prepare.verify_receipt(json.dumps({**record, "val_bpb": record["val_bpb"] - 0.1}), key) is None
    assert prepare.verify_receipt(json.dumps({**record, "extra": 1}), key) is None
    assert prepare.verify_receipt("not json", key) is None
    assert prepare.verify_receipt(json.dumps({k: v for k, v in record.items() if k != "hmac"}), key) is None


def test_no_receipt_without_a_key(alr_env: dict[str, str], tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.jsonl"
    proc = run_python(RECEIPT_SCRIPT, env={**alr_env, "ALR_EVAL_RECEIPT": str(receipt)})
    assert proc.returncode == 0, proc.stderr
    assert not receipt.exists()


# --- climbmix download against a local HTTP server ------------------------------------------------

WORDS = "the of and to in is was for on that with as by at from his her an are this which be or it".split()


def write_shard(path: Path, docs: int, seed: int) -> None:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS + [f"w{rng.randrange(300)}"]) for _ in range(rng.randrange(50, 300)))
             for _ in range(docs)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=64)


class ShardServer:
    """Serves a folder on 127.0.0.1; the first request for each name in `fail_once` gets a 503.
    `sha256` names files' hashes in X-Linked-Etag, as HuggingFace does for LFS files."""

    def __init__(self, folder: Path, fail_once: set[str]):
        self.requests: Counter[str] = Counter()
        self.sha256: dict[str, str] = {}
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.requests[name] += 1
                if name in fail_once and server.requests[name] == 1:
                    self.send_error(503, "try again")
                    return
                super().do_GET()

            def end_headers(self) -> None:
                sha = server.sha256.get(self.path.rsplit("/", 1)[-1])
                if sha:
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                super().end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/resolve/main"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def shard_server(tmp_path: Path) -> Iterator[ShardServer]:
    folder = tmp_path / "remote" / "resolve" / "main"
    folder.mkdir(parents=True)
    for i, index in enumerate([0, 1, prepare.CLIMBMIX_VAL_SHARD]):
        write_shard(folder / prepare.climbmix_shard_name(index), docs=300 if index else 400, seed=i)
    server = ShardServer(tmp_path / "remote", fail_once={"shard_00001.parquet"})
    val = folder / prepare.climbmix_shard_name(prepare.CLIMBMIX_VAL_SHARD)
    server.sha256[val.name] = hashlib.sha256(val.read_bytes()).hexdigest()  # checked when given
    yield server
    server.close()


def test_climbmix_downloads_retries_refetches_truncated_and_resumes(tmp_path: Path, shard_server: ShardServer) -> None:
    env = {"ALR_CACHE_DIR": str(tmp_path / "cache"), "ALR_DATA_URL": shard_server.url}
    shards = tmp_path / "cache" / "climbmix" / "shards"
    shards.mkdir(parents=True)
    remote0 = tmp_path / "remote" / "resolve" / "main" / "shard_00000.parquet"
    (shards / "shard_00000.parquet").write_bytes(remote0.read_bytes()[:-100])  # an interrupted download

    args = ("--dataset", "climbmix", "--num-shards", "2", "--vocab-size", "400", "--download-workers", "3")
    proc = run_prepare(*args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shard_server.requests == {"shard_00000.parquet": 1, "shard_00001.parquet": 2, "shard_06542.parquet": 1}
    assert (shards / "shard_00000.parquet").read_bytes() == remote0.read_bytes()
    assert not list(shards.glob("*.part"))
    manifest = json.loads((tmp_path / "cache" / "climbmix" / "manifest.json").read_text())
    assert manifest["config"]["max_seq_len"] == 2048 and manifest["config"]["vocab_size"] == 400
    assert manifest["tokens"]["val"] > 2049 and manifest["tokens"]["train"] > manifest["tokens"]["val"]

    again = run_prepare(*args, env=env)
    assert again.returncode == 0 and "already prepared" in again.stdout
    assert sum(shard_server.requests.values()) == 4  # complete shards are not fetched again


def test_climbmix_offline_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"ALR_CACHE_DIR": str(tmp_path), "ALR_DATA_URL": f"http://127.0.0.1:{port}"}
    proc = run_prepare("--dataset", "climbmix", "--num-shards", "1", "--retries", "2", env=env)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "could not download" in line and "ALR_DATA_URL" in line
    assert not list((tmp_path / "climbmix" / "shards").iterdir())


def test_climbmix_sha256_mismatch_is_refused(tmp_path: Path, shard_server: ShardServer) -> None:
    shard_server.sha256["shard_00000.parquet"] = "0" * 64
    env = {"ALR_CACHE_DIR": str(tmp_path / "cache"), "ALR_DATA_URL": shard_server.url}
    proc = run_prepare("--dataset", "climbmix", "--num-shards", "1", "--retries", "2", env=env)
    assert proc.returncode == 1
    assert "shard_00000.parquet after 2 tries (sha256 mismatch)" in one_line_error(proc)
    assert not (tmp_path / "cache" / "climbmix" / "shards" / "shard_00000.parquet").exists()
