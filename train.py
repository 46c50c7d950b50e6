"""A small modern GPT trained for a fixed wall-clock budget. The one file an agent edits.

Reads top to bottom: Config -> Model -> Optimizer -> Setup -> Training loop -> Summary.
The data, tokenizer, time budget and metric are fixed in prepare.py; everything here is fair game.
Run: `python train.py` (after `python prepare.py`). Output contract: docs/architecture.md.
"""

import time

T_START = time.time()  # total_seconds counts from here (imports included)

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from prepare import (  # noqa: E402
    DATASET,
    MAX_SEQ_LEN,
    RUN_DIR,
    SEED,
    TIME_BUDGET,
    Tokenizer,
    evaluate_bpb,
    make_dataloader,
)

# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

if os.environ.get("ALR_DEVICE"):
    device_type = os.environ["ALR_DEVICE"]
elif torch.cuda.is_available():
    device_type = "cuda"
elif torch.backends.mps.is_available():
    device_type = "mps"
else:
    device_type = "cpu"

# Defaults: the CPU config, chosen by measurement on a 2-core CPU at the 300 s budget (depth 1..6,
# width 128..320, batch 2k..8k tokens, LRs, soft-cap, weight decay, dropout and value embeddings
# compared on val_bpb; bench/bench_cpu.py). fp32: bf16 autocast is ~15x slower on such a CPU.
# torch.compile pays: ~30% more tokens/s for ~25 s of uncharged compiling (~3 s once inductor's cache has it).
DEPTH = 3                    # transformer blocks
MODEL_DIM = 128              # residual stream width
HEAD_DIM = 64                # attention head size (n_heads = MODEL_DIM // HEAD_DIM)
MLP_RATIO = 4                # MLP hidden width = MLP_RATIO * MODEL_DIM
SEQ_LEN = 256                # tokens per training sequence (<= MAX_SEQ_LEN)
DEVICE_BATCH_SIZE = 16       # sequences per forward/backward
TOTAL_BATCH_SIZE = 4096      # tokens per optimizer step (grad accumulation makes up the rest)
MATRIX_LR = 0.08             # Muon LR for 2-D hidden matrices
EMBEDDING_LR = 0.6           # AdamW LR for the token embedding
UNEMBEDDING_LR = 0.004       # AdamW LR for the (untied) output head
SCALAR_LR = 0.5              # AdamW LR for per-layer residual scalars
ADAM_BETAS = (0.8, 0.95)     # AdamW betas
WEIGHT_DECAY = 0.0           # Muon decoupled weight decay at the start (decays linearly to 0)
MUON_MOMENTUM = 0.95         # Muon momentum after its ramp
MUON_MOMENTUM_START = 0.85   # Muon momentum at step 0 (ramps up: early steps are noisy)
MUON_MOMENTUM_STEPS = 300    # steps of that ramp
NS_STEPS = 5                 # Newton-Schulz iterations that orthogonalize Muon's update
WARMUP_RATIO = 0.0           # fraction of the budget spent ramping the LR up
WARMDOWN_RATIO = 0.5         # fraction of the budget spent ramping the LR down at the end
FINAL_LR_FRAC = 0.0          # LR at the end, as a fraction of the peak
LOGIT_SOFTCAP = 0.0          # logits = cap * tanh(logits / cap); 0: off (better here: 2.158 vs 2.188 at 150 s)
ROPE_BASE = 10000.0          # rotary embedding base
DROPOUT = 0.0                # dropout on each block's attention and MLP output (train only)
VALUE_EMBEDS = False         # add a learned per-token embedding to every block's attention values
AUTOCAST_BF16 = False        # bf16 autocast (fp32 is ~15x faster on this CPU)
COMPILE = True               # torch.compile the model (its first step is uncharged)
UNCHARGED_STEPS = 1          # first steps (warm-up / compile) not charged to the budget  (harness: fixed)

if device_type == "cuda":  # the ~50M-parameter reference-class setup (karpathy/autoresearch)
    DEPTH = 8
    MODEL_DIM = 640
    HEAD_DIM = 128
    SEQ_LEN = MAX_SEQ_LEN
    DEVICE_BATCH_SIZE = 2**17 // SEQ_LEN
    TOTAL_BATCH_SIZE = 2**19
    MATRIX_LR = 0.04
    WEIGHT_DECAY = 0.2
    LOGIT_SOFTCAP = 15.0
    AUTOCAST_BF16 = True
    COMPILE = True
    UNCHARGED_STEPS = 10
elif device_type == "mps":
    COMPILE = False  # unmeasured on Apple GPUs: eager is the safe default
    UNCHARGED_STEPS = 3

if COMPILE and device_type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
    print("note: torch.compile is off: it builds C++ kernels and no compiler (g++ or clang++) was found")
    COMPILE = False

# Everything UPPER_CASE above is a knob; run_summary.json records their final values.
_FIXED = ("T_START", "MAX_SEQ_LEN", "TIME_BUDGET", "SEED", "RUN_DIR", "DATASET")
CONFIG = {k: v for k, v in globals().items()
          if k.isupper() and k not in _FIXED and isinstance(v, int | float | str | bool | tuple)}
assert SEQ_LEN <= MAX_SEQ_LEN, f"SEQ_LEN must be <= MAX_SEQ_LEN={MAX_SEQ_LEN}"
assert MODEL_DIM % HEAD_DIM == 0, "MODEL_DIM must be a multiple of HEAD_DIM"
assert TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * SEQ_LEN) == 0, "TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * SEQ_LEN"

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def norm(x):
    """Parameter-free RMSNorm."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len, head_dim, base, device):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, T, 1, D/2)


def apply_rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)  # tables are fp32


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.n_head = MODEL_DIM // HEAD_DIM
        self.c_qkv = nn.Linear(MODEL_DIM, 3 * MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x, ve, cos, sin):
        B, T, C = x.shape
        q, k, v = self.c_qkv(x).view(B, T, 3, self.n_head, HEAD_DIM).unbind(2)
        if ve is not None:  # value embedding: token identity mixed straight into the values
            v = v + ve.view(B, T, self.n_head, HEAD_DIM)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))  # QK-norm: stable logits
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(MODEL_DIM, MLP_RATIO * MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.mlp = MLP()

    def forward(self, x, ve, cos, sin):
        x = x + F.dropout(self.attn(norm(x), ve, cos, sin), DROPOUT, self.training)
        return x + F.dropout(self.mlp(norm(x)), DROPOUT, self.training)


class GPT(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.lm_head = nn.Linear(MODEL_DIM, vocab_size, bias=False)  # untied from wte
        # Per-layer mix of the running residual and the first layer's input (x0), learned.
        self.resid_lambdas = nn.Parameter(torch.ones(DEPTH))
        self.x0_lambdas = nn.Parameter(torch.full((DEPTH,), 0.1))
        # Value embeddings (ResFormer / modded-nanogpt): one more token table per block, cheap FLOPs.
        self.value_embeds = nn.ModuleList(nn.Embedding(vocab_size, MODEL_DIM) for _ in range(DEPTH if VALUE_EMBEDS else 0))
        self.ve_lambdas = nn.Parameter(torch.full((len(self.value_embeds),), 0.5))
        cos, sin = rotary_tables(MAX_SEQ_LEN, HEAD_DIM, ROPE_BASE, self.wte.weight.device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self):
        nn.init.normal_(self.wte.weight, std=1.0)
        for ve in self.value_embeds:
            nn.init.normal_(ve.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        bound = 3**0.5 * MODEL_DIM**-0.5  # uniform with std 1/sqrt(fan_in)
        for block in self.blocks:
            nn.init.uniform_(block.attn.c_qkv.weight, -bound, bound)
            nn.init.uniform_(block.mlp.c_fc.weight, -bound, bound)
            # Zero output projections: every block starts as the identity.
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.ve_lambdas[i] * norm(self.value_embeds[i](idx)) if self.value_embeds else None
            x = block(x, ve, cos, sin)
        logits = self.lm_head(norm(x)).float()
        if LOGIT_SOFTCAP and torch.is_grad_enabled():
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        elif LOGIT_SOFTCAP:  # evaluation: cap in place, no extra (B, T, V) copies
            logits = logits.div_(LOGIT_SOFTCAP).tanh_().mul_(LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def matmul_params(self):
        """Parameters used in matmuls: the Linear layers' (embeddings are lookups, scalars negligible)."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------


def orthogonalize(G, steps):
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (batched over dim 0).
    Quintic coefficients from modded-nanogpt: they push singular values into ~[0.7, 1.2] fast."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()  # bf16 matmuls are slow on CPU
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b*A + c*A@A, fused: no elementwise passes
        X = torch.baddbmm(X, B, X, beta=a)  # a*X + B@X
    return X.mT if transposed else X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz, for 2-D hidden matrices. Same-shape matrices are
    stacked so one batched Newton-Schulz serves them all (fewer, larger matmuls)."""

    def __init__(self, params, lr, momentum, weight_decay, ns_steps):
        params = list(params)
        groups = [{"params": [p for p in params if p.shape == shape]} for shape in {p.shape for p in params}]
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = group["params"]
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grads)
            buf = state["momentum_buffer"]
            buf.lerp_(grads, 1 - group["momentum"])
            update = orthogonalize(grads.lerp_(buf, group["momentum"]), group["ns_steps"])  # Nesterov
            rows, cols = params[0].shape
            scale = group["lr"] * max(1.0, rows / cols) ** 0.5  # same RMS update for tall matrices
            decay = 1 - group["lr"] * group["weight_decay"]
            for p, u in zip(params, update.unbind(0), strict=True):
                p.mul_(decay).add_(u.to(p.dtype), alpha=-scale)


def make_optimizers(model):
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    # AdamW LRs were tuned at width 768; scale by 1/sqrt(width) as in karpathy/autoresearch.
    s = (MODEL_DIM / 768) ** -0.5
    adamw = torch.optim.AdamW(
        [
            {"params": [model.wte.weight, *model.value_embeds.parameters()], "lr": EMBEDDING_LR * s},
            {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * s},
            {"params": [model.resid_lambdas, model.x0_lambdas, model.ve_lambdas], "lr": SCALAR_LR},
        ],
        betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=device_type == "cuda",
    )
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START, weight_decay=WEIGHT_DECAY, ns_steps=NS_STEPS)
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


def muon_momentum(step):
    frac = min(step / MUON_MOMENTUM_STEPS, 1.0)
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM


def weight_decay(progress):
    return WEIGHT_DECAY * (1 - progress)


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------

# Known dense bf16 peaks (FLOP/s), matched in order against torch.cuda.get_device_name().
GPU_PEAK_FLOPS = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12),
    ("T4", 65e12),
]


def measure_matmul_peak(device, dtype, n=2048, repeats=3):
    """Best-of-N timed square matmul: the peak MFU is measured against when no table entry fits.
    On a shared CPU this also tracks what the machine can give right now."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up threads and caches
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()
    elif device_type == "mps":
        torch.mps.synchronize()


def peak_flops():
    if device_type == "cuda":
        name = torch.cuda.get_device_name()
        for key, flops in GPU_PEAK_FLOPS:
            if key in name:
                return flops, f"{name} (bf16 table)"
        return measure_matmul_peak(device, torch.bfloat16), f"{name} (measured bf16 matmul)"
    return measure_matmul_peak(device, torch.float32), f"{device_type} (measured fp32 matmul)"


def peak_memory_mb():
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip()
        return sha if out.returncode == 0 and sha else None
    except (OSError, subprocess.SubprocessError):
        return None


def finite_or_none(x):
    return x if math.isfinite(x) else None  # JSON has no NaN/inf


tokenizer = Tokenizer.load()  # exits 2 with one line if prepare.py has not run
if os.environ.get("OMP_NUM_THREADS"):  # the harness splits CPU threads between workers
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
torch.manual_seed(SEED)
device = torch.device(device_type)
if device_type == "cuda":
    torch.cuda.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
autocast = torch.autocast(device_type, dtype=torch.bfloat16) if AUTOCAST_BF16 else nullcontext()

PEAK_FLOPS, peak_source = peak_flops()
vocab_size = tokenizer.get_vocab_size()
with device:
    model = GPT(vocab_size)
model.init_weights()
num_params = sum(p.numel() for p in model.parameters())
# MFU numerator (PaLM appendix B): 6 FLOPs per matmul parameter per token (forward 2 + backward 4)
# plus attention scores and values, 12 * depth * width * seq_len per token (causal mask not halved).
flops_per_token = 6 * model.matmul_params() + 12 * DEPTH * MODEL_DIM * SEQ_LEN
optimizers = make_optimizers(model)
train_model = torch.compile(model, dynamic=False) if COMPILE else model
grad_accum = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * SEQ_LEN)
loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, SEQ_LEN, "train", device)
x, y, epoch = next(loader)

print(f"device: {device_type}, peak {PEAK_FLOPS / 1e12:.2f} TFLOP/s from {peak_source}, threads {torch.get_num_threads()}")
print(f"params: {num_params / 1e6:.2f}M, depth {DEPTH}, width {MODEL_DIM}, vocab {vocab_size}")
print(f"batch: {TOTAL_BATCH_SIZE} tokens/step ({DEVICE_BATCH_SIZE}x{SEQ_LEN} x {grad_accum} accum), budget {TIME_BUDGET:g}s")

os.makedirs(RUN_DIR, exist_ok=True)
metrics_file = open(os.path.join(RUN_DIR, "metrics.jsonl"), "w")
# Python's GC scans the whole heap every few thousand allocations: ~500 ms stalls mid-training.
gc.collect()
gc.freeze()
gc.disable()

# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------

setup_seconds = time.time() - T_START
step = 0
training_seconds = 0.0  # charged time: steps after the uncharged warm-up ones
loss_ema = 0.0
initial_loss = None
while True:
    sync()
    t0 = time.time()
    progress = min(training_seconds / TIME_BUDGET, 1.0)
    lrm, momentum, wd = lr_multiplier(progress), muon_momentum(step), weight_decay(progress)
    for _ in range(grad_accum):
        with autocast:
            loss = train_model(x, y)
        train_loss = loss.detach()
        (loss / grad_accum).backward()
        x, y, epoch = next(loader)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if opt is optimizers[1]:
                group["momentum"], group["weight_decay"] = momentum, wd
        opt.step()
    model.zero_grad(set_to_none=True)
    loss_f = train_loss.item()  # also waits for the device
    dt = time.time() - t0
    if step >= UNCHARGED_STEPS:
        training_seconds += dt

    initial_loss = loss_f if initial_loss is None else initial_loss
    diverged = not math.isfinite(loss_f) or loss_f > 100 or (step >= 10 and loss_f > 3 * initial_loss)
    loss_ema = 0.9 * loss_ema + 0.1 * loss_f
    tokens_per_sec = TOTAL_BATCH_SIZE / dt
    record = {
        "step": step,
        "train/loss": finite_or_none(loss_f),
        "train/loss_smooth": finite_or_none(loss_ema / (1 - 0.9 ** (step + 1))),
        "train/lr_multiplier": lrm,
        "train/momentum": momentum,
        "train/weight_decay": wd,
        "train/progress": progress,
        "perf/step_time_ms": dt * 1000,
        "perf/tokens_per_sec": tokens_per_sec,
        "perf/mfu_percent": 100 * flops_per_token * tokens_per_sec / PEAK_FLOPS,
        "time/training_seconds": training_seconds,
    }
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()  # a live viewer tails this file
    if diverged:
        print(f"FAIL: loss diverged at step {step}: loss {loss_f:.4g} (initial {initial_loss:.4g})", flush=True)
        sys.exit(3)
    if step % 10 == 0:
        print(f"step {step:05d} | loss {loss_f:.4f} | lrm {lrm:.2f} | {dt * 1000:.0f} ms | "
              f"{tokens_per_sec:,.0f} tok/s | mfu {record['perf/mfu_percent']:.1f}% | "
              f"{100 * progress:.1f}% of budget | epoch {epoch}", flush=True)
    step += 1
    if step > UNCHARGED_STEPS and training_seconds >= TIME_BUDGET:
        break

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

t_eval = time.time()
with autocast:
    val_bpb = evaluate_bpb(model, tokenizer, device)
eval_seconds = time.time() - t_eval
metrics_file.write(json.dumps({"step": step, "val/bpb": val_bpb}) + "\n")
metrics_file.close()

total_tokens = step * TOTAL_BATCH_SIZE
charged_steps = max(step - UNCHARGED_STEPS, 0)
results = {
    "val_bpb": val_bpb,
    "training_seconds": training_seconds,
    "total_seconds": time.time() - T_START,
    "peak_memory_mb": peak_memory_mb(),
    "mfu_percent": 100 * flops_per_token * charged_steps * TOTAL_BATCH_SIZE / max(training_seconds, 1e-9) / PEAK_FLOPS,
    "total_tokens_M": total_tokens / 1e6,
    "num_steps": step,
    "num_params_M": num_params / 1e6,
    "depth": DEPTH,
    "device": device_type,
}
print("---")
for key, value in results.items():
    print(f"{key}: {value:.6f}" if isinstance(value, float) else f"{key}: {value}")

summary = {"config": CONFIG, "results": results, "git_commit": git_commit(), "dataset": DATASET,
           "seed": SEED, "device": device_type, "peak_flops": PEAK_FLOPS,
           "timing": {"setup_seconds": setup_seconds, "eval_seconds": eval_seconds}}
summary_path = os.path.join(RUN_DIR, "run_summary.json")
with open(summary_path + ".tmp", "w") as f:  # write then rename: a reader never sees half a file
    json.dump(summary, f, indent=2)
os.replace(summary_path + ".tmp", summary_path)
