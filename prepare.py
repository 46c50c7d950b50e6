"""
Data, tokenizer, dataloader and the metric: the fixed contract of every experiment.

    python prepare.py                                 # Shakespeare, shipped in data/ (no network)
    python prepare.py --text PATH [--name NAME]       # your own UTF-8 corpus (a file or a folder of .txt)
    python prepare.py --dataset climbmix [--num-shards N]   # web-scale (GPU), downloads parquet shards

Prepared data lives in $ALR_CACHE_DIR/<dataset>/ (default ~/.cache/auto-log-research/<dataset>/):
tokenizer.pkl, token_bytes.npy, train.bin, val.bin (np.uint16 tokens, every document starts with
BOS) and manifest.json (sha256 of each file and the config that made them). Re-running is a no-op;
a missing or corrupt file is detected and the dataset rebuilt.
"""

# =================================================================================================
#  FIXED FILE. Agents must not edit prepare.py: it defines the data, the tokenizer and the metric
#  (evaluate_bpb) that every experiment is judged by. The harness treats changes to it as a
#  violation. Edit train.py instead.
# =================================================================================================

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import lzma
import math
import os
import pickle
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# torch, rustbpe, tiktoken, pyarrow and requests are imported inside the functions that use them,
# so the harness can import this module (is_prepared, verify_receipt) in a fraction of a second.

# -------------------------------------------------------------------------------------------------
# Constants of the contract (fixed)
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    max_seq_len: int  # context length of evaluation (and the default for training)
    vocab_size: int  # BPE tokens + 1 special (BOS)
    eval_tokens: int  # tokens of the val split that evaluate_bpb scores
    eval_batch_size: int  # sequences per forward pass in evaluate_bpb (fixed: train.py can't change it)


DATASETS: dict[str, DatasetSpec] = {
    "shakespeare": DatasetSpec(max_seq_len=256, vocab_size=4096, eval_tokens=2**17, eval_batch_size=32),
    "climbmix": DatasetSpec(max_seq_len=2048, vocab_size=8192, eval_tokens=40 * 524288, eval_batch_size=16),
}
TEXT_SPEC = DATASETS["shakespeare"]  # a user's --text corpus is sized like Shakespeare

# GPT-4 style split, with \p{N}{1,2} instead of {1,3} (as karpathy/autoresearch: small vocabularies)
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS_TOKEN = "<|bos|>"
FORMAT_VERSION = 1  # bump when the cache layout or the split changes: old caches then rebuild

# Shakespeare: the val split is these whole works (about 155K tokens >= EVAL_TOKENS + 1).
SHAKESPEARE_FILE = Path(__file__).resolve().parent / "data" / "shakespeare.jsonl.xz"
SHAKESPEARE_VAL = ("Julius Caesar", "Macbeth", "The Tempest", "Twelfth Night", "Sonnets")

# climbmix: karpathy/autoresearch's corpus. Shards 0..N-1 train; the last shard is the val split.
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_SHARD = 6542
CLIMBMIX_VAL_SHARD = CLIMBMIX_MAX_SHARD
TOKENIZER_TRAIN_CHARS = 1_000_000_000  # tokenizer training sees at most this much train text
TOKENIZER_DOC_CAP = 10_000  # ... and at most this many characters of each document

CACHE_FILES = ("tokenizer.pkl", "token_bytes.npy", "train.bin", "val.bin")
MANIFEST = "manifest.json"


class PrepareError(Exception):
    """A problem the user can fix; `python prepare.py` prints it as one line and exits with code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class DataNotPrepared(SystemExit):
    """Raised by Tokenizer.load when the cache is missing: exit code 2 when left to propagate."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _env_number(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (kind is float and not (math.isfinite(value) and value > 0)):
        wanted = "a positive number" if kind is float else "an integer"
        print(f"error: {name}={raw!r} is not {wanted}: fix or unset it", file=sys.stderr)
        raise SystemExit(2)
    return value


def cache_root() -> Path:
    if os.environ.get("ALR_CACHE_DIR"):
        return Path(os.environ["ALR_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "auto-log-research"


DATASET = os.environ.get("ALR_DATASET") or "shakespeare"


def cache_dir(dataset: str | None = None) -> Path:
    """Where a dataset's prepared files live ($ALR_CACHE_DIR/<dataset>)."""
    return cache_root() / (dataset or DATASET)


def _read_manifest(dataset: str | None = None) -> dict[str, Any] | None:
    try:
        manifest = json.loads((cache_dir(dataset) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT_VERSION else None


def dataset_config(dataset: str | None = None) -> DatasetSpec:
    """The constants a dataset was prepared with (its manifest), else the table's defaults.

    The manifest wins because it records what was actually built: the real vocabulary size (BPE
    stops early on a small corpus) and, for --text corpora, EVAL_TOKENS = min(EVAL_TOKENS, what the
    val split holds, rounded down to whole MAX_SEQ_LEN sequences).
    """
    manifest = _read_manifest(dataset)
    if manifest is not None:
        try:
            return DatasetSpec(**manifest["config"])
        except (KeyError, TypeError):
            pass
    return DATASETS.get(dataset or DATASET, TEXT_SPEC)


_CONFIG = dataset_config(DATASET)
MAX_SEQ_LEN: int = _CONFIG.max_seq_len
VOCAB_SIZE: int = _CONFIG.vocab_size
EVAL_TOKENS: int = _CONFIG.eval_tokens
EVAL_BATCH_SIZE: int = _CONFIG.eval_batch_size
TIME_BUDGET: float = _env_number("ALR_TIME_BUDGET", 300.0)  # seconds of training (wall clock)
SEED: int = _env_number("ALR_SEED", 0, int)
RUN_DIR = Path(os.environ.get("ALR_RUN_DIR") or ".")

# The receipt key is taken out of the environment at import, so code that runs later in this
# process (train.py) and its children cannot read it from os.environ.
_RECEIPT_KEY: str | None = os.environ.pop("ALR_EVAL_RECEIPT_KEY", None)
_RECEIPT_PATH: str | None = os.environ.get("ALR_EVAL_RECEIPT")

# -------------------------------------------------------------------------------------------------
# Cache checks (the harness calls is_prepared / prepared_files; train.py gets require_prepared)
# -------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_problem(dataset: str | None = None, deep: bool = True) -> str | None:
    """What is wrong with a dataset's cache (None: it is complete). deep=True also checks sha256."""
    folder = cache_dir(dataset)
    manifest = _read_manifest(dataset)
    if manifest is None:
        return f"no valid {MANIFEST} in {folder}"
    for name in CACHE_FILES:
        path = folder / name
        entry = manifest.get("files", {}).get(name, {})
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{name} has the wrong size"
        if deep and _sha256(path) != entry.get("sha256"):
            return f"{name} does not match its sha256 in {MANIFEST}"
    return None


def is_prepared(dataset: str | None = None) -> bool:
    """True if the dataset's cache is complete and every file matches the manifest's sha256."""
    return cache_problem(dataset, deep=True) is None


def prepared_files(dataset: str | None = None) -> list[Path]:
    """The files train.py reads (hash them to detect tampering): the manifest first."""
    folder = cache_dir(dataset)
    return [folder / MANIFEST, *(folder / name for name in CACHE_FILES)]


def prepare_command(dataset: str | None = None) -> str:
    dataset = dataset or DATASET
    if dataset == "shakespeare":
        return "python prepare.py"
    if dataset in DATASETS:
        return f"python prepare.py --dataset {dataset}"
    return f"python prepare.py --text PATH --name {dataset}"


def require_prepared(dataset: str | None = None) -> None:
    """Exit with code 2 and one line on stderr if the dataset is not prepared (cheap: no hashing)."""
    dataset = dataset or DATASET
    problem = cache_problem(dataset, deep=False)
    if problem is not None:
        message = f"error: data not prepared for dataset {dataset!r} ({problem}): run `{prepare_command(dataset)}`"
        print(message, file=sys.stderr)
        raise DataNotPrepared(message)


# -------------------------------------------------------------------------------------------------
# Corpora: each yields documents (str) for the train and val splits
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    kind: str  # shakespeare | text | climbmix
    train: Callable[[], Iterator[str]]  # called more than once (tokenizer, then token arrays)
    val: Callable[[], Iterator[str]]
    source: dict[str, Any]  # what identifies the input: part of the manifest's build key


def shakespeare_corpus() -> Corpus:
    lines = lzma.decompress(SHAKESPEARE_FILE.read_bytes()).decode("utf-8").splitlines()
    works = [json.loads(line) for line in lines]
    missing = set(SHAKESPEARE_VAL) - {w["title"] for w in works}
    if missing:
        raise PrepareError(f"{SHAKESPEARE_FILE} lacks the val works {sorted(missing)}: restore it from git", code=1)
    train = [w["text"] for w in works if w["title"] not in SHAKESPEARE_VAL]
    val = [w["text"] for w in works if w["title"] in SHAKESPEARE_VAL]
    source = {"file": SHAKESPEARE_FILE.name, "sha256": _sha256(SHAKESPEARE_FILE), "val": list(SHAKESPEARE_VAL)}
    return Corpus("shakespeare", lambda: iter(train), lambda: iter(val), source)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrepareError(f"{path} is not UTF-8 text (bad byte at offset {e.start}): convert it to UTF-8") from None
    except OSError as e:
        raise PrepareError(f"cannot read {path}: {e.strerror}") from None


def text_corpus(path: Path) -> Corpus:
    """A UTF-8 file (one document) or a folder of .txt files (one document each, sorted by path).

    Val split: the last 10% of the documents in sorted order (at least one); a single document
    is split by lines instead, its last 10% of lines going to val.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise PrepareError(f"{path} has no .txt files: give a UTF-8 text file or a folder of .txt files")
        docs = [text for text in (_read_utf8(p) for p in files) if text.strip()]
    elif path.is_file():
        docs = [text] if (text := _read_utf8(path)).strip() else []
    else:
        raise PrepareError(f"{path} does not exist: give a UTF-8 text file or a folder of .txt files")
    if not docs:
        raise PrepareError(f"{path} is empty: give a text file with your corpus")
    if len(docs) == 1:
        lines = docs[0].splitlines(keepends=True)
        if len(lines) < 10:
            raise PrepareError(f"{path} is too small to split into train and val: give at least 10 lines")
        cut = len(lines) - max(1, len(lines) // 10)
        train, val = ["".join(lines[:cut])], ["".join(lines[cut:])]
    else:
        cut = len(docs) - max(1, len(docs) // 10)
        train, val = docs[:cut], docs[cut:]
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(hashlib.sha256(doc.encode("utf-8")).digest())
    source = {"path": str(path), "documents": len(docs), "sha256": digest.hexdigest()}
    return Corpus("text", lambda: iter(train), lambda: iter(val), source)


def climbmix_shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def _parquet_ok(path: Path) -> bool:
    """A complete parquet file has a readable footer; a truncated download does not."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except Exception:  # pyarrow raises several types for a damaged footer
        return False
    return True


class _Retryable(Exception):
    pass


_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


def _advertised_sha256(responses: Iterable[Any]) -> str | None:
    """HuggingFace names an LFS file's sha256 in X-Linked-Etag (on the redirect) or ETag."""
    for response in responses:
        for header in ("X-Linked-Etag", "ETag"):
            match = _SHA256.match(response.headers.get(header, "").strip())
            if match:
                return match.group(1)
    return None


def _fetch(url: str, dest: Path) -> None:
    """One attempt: stream to dest.part, check size, sha256 (when the server names one) and the
    parquet footer, then rename into place."""
    import requests

    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=30) as response:
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise PrepareError(f"could not download {url}: HTTP {response.status_code} (check ALR_DATA_URL)", code=1)
            plain = "Content-Encoding" not in response.headers  # else Content-Length counts compressed bytes
            size = int(response.headers["Content-Length"]) if plain and "Content-Length" in response.headers else None
            sha = _advertised_sha256([*response.history, response])
            with open(part, "wb") as f:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
        problem = None
        if size is not None and part.stat().st_size != size:
            problem = f"got {part.stat().st_size} of {size} bytes"
        elif sha is not None and digest.hexdigest() != sha:
            problem = "sha256 mismatch"
        elif not _parquet_ok(part):
            problem = "not a complete parquet file"
        if problem:
            raise _Retryable(problem)
        os.replace(part, dest)
    except requests.RequestException as e:
        raise _Retryable(type(e).__name__) from None
    finally:
        part.unlink(missing_ok=True)


def download_shard(base_url: str, name: str, folder: Path, retries: int = 5, backoff: float = 1.0) -> bool:
    """Fetch one shard unless a complete copy is there. Returns True if it downloaded."""
    dest = folder / name
    if dest.is_file() and _parquet_ok(dest):
        return False
    dest.unlink(missing_ok=True)  # a truncated or damaged copy: fetch it again
    url = f"{base_url.rstrip('/')}/{name}"
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, dest)
            return True
        except _Retryable as e:
            if attempt == retries:
                raise PrepareError(
                    f"could not download {url} after {retries} tries ({e}): check the network or set ALR_DATA_URL",
                    code=1,
                ) from None
            time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))
    return False


def download_climbmix(num_shards: int, workers: int = 8, retries: int = 5) -> list[Path]:
    """Download train shards 0..num_shards-1 and the val shard in parallel; returns their paths."""
    if not 1 <= num_shards <= CLIMBMIX_MAX_SHARD:
        raise PrepareError(f"--num-shards must be between 1 and {CLIMBMIX_MAX_SHARD}, got {num_shards}")
    folder = cache_dir("climbmix") / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    base_url = os.environ.get("ALR_DATA_URL") or CLIMBMIX_URL
    names = [climbmix_shard_name(i) for i in range(num_shards)] + [climbmix_shard_name(CLIMBMIX_VAL_SHARD)]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
        fetched = list(pool.map(lambda n: download_shard(base_url, n, folder, retries), names))
    print(f"climbmix: {sum(fetched)} shards downloaded, {len(names) - sum(fetched)} already complete")
    return [folder / n for n in names]


def _parquet_texts(paths: list[Path]) -> Iterator[str]:
    import pyarrow.parquet as pq

    for path in paths:
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            yield from pf.read_row_group(group, columns=["text"]).column("text").to_pylist()


def climbmix_corpus(num_shards: int, workers: int = 8, retries: int = 5) -> Corpus:
    paths = download_climbmix(num_shards, workers, retries)
    train_paths, val_paths = paths[:-1], paths[-1:]
    source = {"base": "climbmix-400b-shuffle", "shards": [[p.name, p.stat().st_size] for p in paths]}
    return Corpus("climbmix", lambda: _parquet_texts(train_paths), lambda: _parquet_texts(val_paths), source)


# -------------------------------------------------------------------------------------------------
# Building the cache: tokenizer, token arrays, manifest (all writes atomic)
# -------------------------------------------------------------------------------------------------


@contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
    """Write through a temp file in the same folder, then os.replace: readers never see half a file.

    (prepare.py does not use harness.atomic: it must work copied alone next to a train.py.)
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _capped(docs: Iterable[str]) -> Iterator[str]:
    total = 0
    for doc in docs:
        doc = doc[:TOKENIZER_DOC_CAP]
        total += len(doc)
        yield doc
        if total >= TOKENIZER_TRAIN_CHARS:
            return


def train_tokenizer(docs: Iterable[str], vocab_size: int) -> tuple[Any, np.ndarray]:
    """BPE with rustbpe on the train split; returns (tiktoken.Encoding, token byte lengths)."""
    import rustbpe
    import tiktoken

    if not 257 <= vocab_size <= 65536:
        raise PrepareError(f"vocab size must be between 257 and 65536 (uint16 token arrays), got {vocab_size}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_capped(docs), vocab_size - 1, pattern=SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    bos = len(ranks)  # BPE may stop short of vocab_size on a small corpus: BOS follows the last merge
    enc = tiktoken.Encoding(
        name="alr-bpe", pat_str=bpe.get_pattern(), mergeable_ranks=ranks, special_tokens={BOS_TOKEN: bos}
    )
    token_bytes = np.zeros(bos + 1, dtype=np.int32)  # BOS keeps 0 bytes: not scored by evaluate_bpb
    for token, rank in ranks.items():
        token_bytes[rank] = len(token)  # raw bytes, not decode(): a token may end mid UTF-8 character
    return enc, token_bytes


def _batched(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_tokens(enc: Any, docs: Iterable[str], path: Path) -> int:
    """Tokenize documents in batches (tiktoken threads) to a uint16 file: BOS doc BOS doc ..."""
    bos = enc.n_vocab - 1
    count = 0
    with _atomic_file(path) as f:
        for batch in _batched(docs, 256):
            for ids in enc.encode_ordinary_batch(batch, num_threads=os.cpu_count() or 1):
                arr = np.asarray([bos, *ids], dtype=np.uint16)
                arr.tofile(f)
                count += arr.size
    return count


def build(dataset: str, corpus: Corpus, spec: DatasetSpec) -> dict[str, Any]:
    """(Re)build a dataset's cache from its corpus; the manifest is written last, as the commit."""
    folder = cache_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # a crash from here on leaves it "not prepared"
    t0 = time.perf_counter()
    enc, token_bytes = train_tokenizer(corpus.train(), spec.vocab_size)
    t_tok = time.perf_counter() - t0
    with _atomic_file(folder / "tokenizer.pkl") as f:
        pickle.dump(enc, f)
    with _atomic_file(folder / "token_bytes.npy") as f:
        np.save(f, token_bytes)
    n_train = _write_tokens(enc, corpus.train(), folder / "train.bin")
    n_val = _write_tokens(enc, corpus.val(), folder / "val.bin")
    seq = spec.max_seq_len
    eval_tokens = min(spec.eval_tokens, (n_val - 1) // seq * seq)
    if eval_tokens < seq:
        raise PrepareError(f"the val split has {n_val} tokens, fewer than MAX_SEQ_LEN + 1 = {seq + 1}: add text")
    if eval_tokens < spec.eval_tokens:
        print(f"{dataset}: the val split holds {n_val:,} tokens, so EVAL_TOKENS = {eval_tokens:,}")
    config = DatasetSpec(seq, int(enc.n_vocab), eval_tokens, spec.eval_batch_size)
    manifest = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "kind": corpus.kind,
        "config": asdict(config),
        "build": _build_key(corpus, spec),
        "tokens": {"train": n_train, "val": n_val},
        "tokenizer_seconds": round(t_tok, 3),
        "files": {n: {"size": (folder / n).stat().st_size, "sha256": _sha256(folder / n)} for n in CACHE_FILES},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with _atomic_file(folder / MANIFEST) as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


def _build_key(corpus: Corpus, spec: DatasetSpec) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "kind": corpus.kind, "source": corpus.source, "spec": asdict(spec),
            "pattern": SPLIT_PATTERN}


def ensure_prepared(
    dataset: str, corpus: Corpus, spec: DatasetSpec, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Build unless an intact cache made from the same input and spec exists. Returns (manifest, built)."""
    manifest = _read_manifest(dataset)
    intact = manifest is not None and manifest.get("build") == json.loads(json.dumps(_build_key(corpus, spec)))
    if intact and not force and cache_problem(dataset, deep=True) is None:
        return manifest, False
    return build(dataset, corpus, spec), True


# -------------------------------------------------------------------------------------------------
# Runtime (imported by train.py): Tokenizer, get_token_bytes, make_dataloader, evaluate_bpb
# -------------------------------------------------------------------------------------------------


class Tokenizer:
    """The dataset's BPE tokenizer (a tiktoken Encoding built from rustbpe's merges, offline)."""

    def __init__(self, enc: Any, dataset: str):
        self.enc = enc
        self.dataset = dataset
        self.bos_token_id: int = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def load(cls, dataset: str | None = None) -> Tokenizer:
        dataset = dataset or DATASET
        require_prepared(dataset)
        with open(cache_dir(dataset) / "tokenizer.pkl", "rb") as f:
            return cls(pickle.load(f), dataset)

    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:
        ids = self.enc.encode_ordinary(text)  # ordinary: "<|bos|>" typed in text is just text
        return [self.bos_token_id, *ids] if prepend_bos else ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def get_vocab_size(self) -> int:
        return int(self.enc.n_vocab)

    def get_bos_token_id(self) -> int:
        return self.bos_token_id


def get_token_bytes(device: Any = "cpu", dataset: str | None = None) -> Any:
    """int32 tensor [vocab]: UTF-8 byte length of each token (0 for BOS)."""
    import torch

    require_prepared(dataset)
    return torch.from_numpy(np.load(cache_dir(dataset) / "token_bytes.npy")).to(device)


def _tokens(dataset: str, split: str) -> np.ndarray:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    require_prepared(dataset)
    return np.memmap(cache_dir(dataset) / f"{split}.bin", dtype=np.uint16, mode="r")


def make_dataloader(
    tokenizer: Tokenizer, B: int, T: int, split: str, device: Any = "cpu"
) -> Iterator[tuple[Any, Any, int]]:
    """Infinite iterator of (x, y, epoch): int64 tensors (B, T) on device, y = x shifted by one.

    train: B windows at uniformly random offsets (seeded by ALR_SEED); epoch = 1 + tokens served //
    train tokens. val: consecutive windows from the start, wrapping around (epoch counts passes).
    Windows cross document boundaries (documents are joined with BOS).
    """
    import torch

    tokens = _tokens(tokenizer.dataset, split)
    n = tokens.size
    if n < T + 1:
        raise ValueError(f"the {split} split has {n} tokens, too few for windows of T={T}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    rng = np.random.default_rng([SEED, 0 if split == "train" else 1])
    offsets = np.arange(T + 1)
    served, pos, epoch = 0, 0, 1
    while True:
        if split == "train":
            starts = rng.integers(0, n - T, size=B)
            epoch = 1 + served // n
        else:
            starts = np.empty(B, dtype=np.int64)
            for i in range(B):  # B iterations per batch, not per token
                if pos + T + 1 > n:
                    pos, epoch = 0, epoch + 1
                starts[i], pos = pos, pos + T
        batch = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64))
        served += B * T
        if cuda:  # pinned host memory lets the copy overlap with compute
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), epoch


def evaluate_bpb(model: Any, tokenizer: Tokenizer, device: Any = "cpu") -> float:
    """Bits per byte of the first EVAL_TOKENS of the val split (fixed: nothing train.py sets matters).

    Sequences of MAX_SEQ_LEN, EVAL_BATCH_SIZE at a time; model(x) must return logits (B, T, >=V).
    Sums cross-entropy (nats) over targets that have bytes (not BOS), divides by their bytes * ln 2.
    """
    import torch
    import torch.nn.functional as F

    cfg = dataset_config(tokenizer.dataset)
    seq, n_seq = cfg.max_seq_len, cfg.eval_tokens // cfg.max_seq_len
    val = np.asarray(_tokens(tokenizer.dataset, "val")[: n_seq * seq + 1], dtype=np.int64)
    inputs = torch.from_numpy(val[:-1].reshape(n_seq, seq))
    targets = torch.from_numpy(val[1:].reshape(n_seq, seq))
    token_bytes = get_token_bytes("cpu", tokenizer.dataset).long()
    total_bytes = int(token_bytes[targets].sum())
    token_bytes = token_bytes.to(device)
    nats = 0.0  # summed per batch in Python floats: MPS has no float64, and one sync per batch is cheap
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, n_seq, cfg.eval_batch_size):
                x = inputs[i : i + cfg.eval_batch_size].to(device)
                y = targets[i : i + cfg.eval_batch_size].to(device)
                logits = model(x)
                if not (torch.is_tensor(logits) and logits.dim() == 3 and logits.shape[:2] == x.shape):
                    got = _describe(logits)
                    raise TypeError(f"evaluate_bpb: model(x) must return logits (B, T, V); got {got}")
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                counted = token_bytes[y.flatten()] > 0
                nats += float(torch.where(counted, loss, 0.0).sum())  # a masked-out inf stays out
    finally:
        model.train(was_training)
    bpb = nats / (math.log(2) * total_bytes)
    _write_receipt(bpb, n_seq * seq, total_bytes, tokenizer.dataset)
    return bpb


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__


# -------------------------------------------------------------------------------------------------
# Receipts: evaluate_bpb signs what it computed, so the harness can trust the reported val_bpb
# -------------------------------------------------------------------------------------------------


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sign(fields: dict[str, Any], key: str) -> str:
    return hmac.new(key.encode("utf-8"), _canonical(fields), hashlib.sha256).hexdigest()


def _write_receipt(val_bpb: float, tokens: int, nbytes: int, dataset: str) -> None:
    if not (_RECEIPT_PATH and _RECEIPT_KEY):
        return
    fields = {"val_bpb": val_bpb, "tokens": tokens, "bytes": nbytes, "dataset": dataset}
    line = json.dumps({**fields, "hmac": _sign(fields, _RECEIPT_KEY)}) + "\n"
    fd = os.open(_RECEIPT_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))  # one write: a crash leaves no half line
    finally:
        os.close(fd)


def verify_receipt(line: str, key: str) -> dict[str, Any] | None:
    """The receipt's fields (val_bpb, tokens, bytes, dataset) if its HMAC is valid, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or set(record) != {"val_bpb", "tokens", "bytes", "dataset", "hmac"}:
        return None
    fields = {k: v for k, v in record.items() if k != "hmac"}
    if not isinstance(record["hmac"], str) or not hmac.compare_digest(record["hmac"], _sign(fields, key)):
        return None
    return fields


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Prepare data and tokenizer (once per dataset).")
    p.add_argument("--dataset", help="shakespeare | climbmix | a --text dataset prepared before "
                   "(default: $ALR_DATASET, else shakespeare)")
    p.add_argument("--text", type=Path, help="your own corpus: a UTF-8 text file or a folder of .txt files")
    p.add_argument("--name", help="name of the --text dataset (default: the file or folder name)")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary incl. BOS (default: the dataset's VOCAB_SIZE)")
    p.add_argument("--num-shards", type=int, default=10, help="climbmix train shards to download (val shard is extra)")
    p.add_argument("--download-workers", type=int, default=8)
    p.add_argument("--retries", type=int, default=5, help="download attempts per shard")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is intact")
    return p.parse_args(argv)


def _select(args: argparse.Namespace) -> tuple[str, Corpus, DatasetSpec]:
    if args.text is not None:
        name = args.name or re.sub(r"[^A-Za-z0-9._-]", "_", Path(args.text).stem) or "text"
        if not _NAME.match(name) or name in DATASETS:
            taken = ", ".join(DATASETS)
            raise PrepareError(f"bad dataset name {name!r}: use letters, digits, '.', '_', '-' (not {taken})")
        return name, text_corpus(args.text), TEXT_SPEC
    dataset = args.dataset or DATASET
    if dataset == "shakespeare":
        return dataset, shakespeare_corpus(), DATASETS[dataset]
    if dataset == "climbmix":
        return dataset, climbmix_corpus(args.num_shards, args.download_workers, args.retries), DATASETS[dataset]
    manifest = _read_manifest(dataset)
    if manifest is not None and manifest.get("kind") == "text":  # a --text dataset: same source, same spec
        build_key = manifest["build"]
        return dataset, text_corpus(Path(build_key["source"]["path"])), DatasetSpec(**build_key["spec"])
    known = " or ".join(DATASETS)
    raise PrepareError(f"unknown dataset {dataset!r}: use {known}, or `python prepare.py --text PATH --name {dataset}`")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        dataset, corpus, spec = _select(args)
        if args.vocab_size is not None:
            spec = DatasetSpec(spec.max_seq_len, args.vocab_size, spec.eval_tokens, spec.eval_batch_size)
        t0 = time.perf_counter()
        manifest, built = ensure_prepared(dataset, corpus, spec, force=args.force)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    tokens, cfg = manifest["tokens"], manifest["config"]
    state = f"prepared in {time.perf_counter() - t0:.1f}s" if built else "already prepared, nothing to do"
    print(f"{dataset}: {state} at {cache_dir(dataset)}")
    print(f"  train {tokens['train']:,} tokens, val {tokens['val']:,} tokens, vocab {cfg['vocab_size']}, "
          f"MAX_SEQ_LEN {cfg['max_seq_len']}, EVAL_TOKENS {cfg['eval_tokens']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
