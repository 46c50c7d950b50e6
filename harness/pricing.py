"""What a model call costs: a table of per-model prices and the usage → USD arithmetic.

Prices are USD per million tokens (input, output, 5-minute cache write, cache read), from
Anthropic's public price list. A model missing from the table is priced by its family, and a model
of no known family at the most expensive tier, so a cost cap errs on the side of stopping early.
A local model (Ollama, or an OpenAI-compatible server on this machine) costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float


def _tier(input_price: float, output_price: float) -> Price:
    # Prompt caching prices are fixed multiples of the input price: writes 1.25x, reads 0.1x.
    return Price(input_price, output_price, input_price * 1.25, input_price * 0.1)


# Exact model ids (dated snapshots are matched by prefix, e.g. claude-sonnet-4-5-20250929).
PRICES: dict[str, Price] = {
    "claude-opus-4-6": _tier(5.0, 25.0),
    "claude-opus-4-5": _tier(5.0, 25.0),
    "claude-opus-4-1": _tier(15.0, 75.0),
    "claude-opus-4-0": _tier(15.0, 75.0),
    "claude-opus-4": _tier(15.0, 75.0),
    "claude-sonnet-4-6": _tier(3.0, 15.0),
    "claude-sonnet-4-5": _tier(3.0, 15.0),
    "claude-sonnet-4-0": _tier(3.0, 15.0),
    "claude-sonnet-4": _tier(3.0, 15.0),
    "claude-3-7-sonnet": _tier(3.0, 15.0),
    "claude-haiku-4-5": _tier(1.0, 5.0),
    "claude-3-5-haiku": _tier(0.8, 4.0),
}

# Family fallbacks for ids the table does not list yet (newer versions, aliases like "sonnet").
FAMILIES: dict[str, Price] = {
    "haiku": _tier(1.0, 5.0),
    "sonnet": _tier(3.0, 15.0),
    "opus": _tier(15.0, 75.0),
}

# No known family at all: the most expensive tier we know of, so caps stop early, not late.
DEFAULT_PRICE = _tier(15.0, 75.0)
FREE = Price(0.0, 0.0, 0.0, 0.0)

# Model names that always run on the user's own machine (litellm's Ollama providers).
LOCAL_PREFIXES = ("ollama/", "ollama_chat/")
# Where an OpenAI-compatible endpoint is configured (aider/litellm and the openai SDK read these).
OPENAI_BASE_VARS = ("OPENAI_API_BASE", "OPENAI_BASE_URL")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


@dataclass(frozen=True)
class PriceLookup:
    price: Price
    source: str  # "table", "family:<name>" or "default"
    note: str | None = None  # said in the log when the price is a guess


def is_loopback(url: str | None) -> bool:
    """True for a URL on this machine (localhost, 127.x.x.x, ::1)."""
    host = (urlparse(url or "").hostname or "").lower()
    return host in _LOOPBACK or host.startswith("127.")


def is_local(model: str | None, env: Mapping[str, str]) -> bool:
    """True if `model` runs on this machine: an Ollama model, or an OpenAI-compatible one
    (`openai/<name>` or a bare name) whose base URL in `env` is on localhost."""
    name = (model or "").strip().lower()
    if name.startswith(LOCAL_PREFIXES):
        return True
    if "/" in name and not name.startswith("openai/"):
        return False  # another provider's model (anthropic/..., openrouter/...)
    if "/" not in name and name and lookup(name).source != "default":
        return False  # a bare claude-* name goes to Anthropic whatever the OpenAI base URL
    return any(is_loopback(env.get(var)) for var in OPENAI_BASE_VARS)


def lookup(model: str | None, local: bool = False) -> PriceLookup:
    name = (model or "").strip().lower()
    if local or name.startswith(LOCAL_PREFIXES):
        return PriceLookup(FREE, "local")
    for key in sorted(PRICES, key=len, reverse=True):  # longest prefix wins
        if name == key or name.startswith(key + "-"):
            return PriceLookup(PRICES[key], "table")
    for family, price in FAMILIES.items():
        if family in name:
            return PriceLookup(
                price, f"family:{family}", f"price of {model!r} not in the table; priced as {family}"
            )
    return PriceLookup(
        DEFAULT_PRICE, "default", f"unknown model {model!r}; priced at the conservative default tier"
    )


def cost(
    model: str | None,
    tokens_in: int,
    tokens_out: int,
    cache_write: int = 0,
    cache_read: int = 0,
    local: bool = False,
) -> float:
    """USD for one call. tokens_in counts uncached input only, as the Messages API reports it."""
    p = lookup(model, local).price
    total = tokens_in * p.input + tokens_out * p.output + cache_write * p.cache_write + cache_read * p.cache_read
    return total / 1_000_000


def estimate(model: str | None, prompt_chars: int, max_output_tokens: int, local: bool = False) -> tuple[float, int]:
    """(USD, tokens) a call could cost at most: the prompt at ~4 chars a token, all uncached,
    plus the whole output allowance. Used to stop before a call, never to bill one."""
    tokens_in = prompt_chars // 4 + 1
    return cost(model, tokens_in, max_output_tokens, local=local), tokens_in + max_output_tokens


_said: set[str] = set()


def first_time(note: str | None) -> str | None:
    """`note` the first time this process sees it, else None: a guessed price is said once."""
    if note is None or note in _said:
        return None
    _said.add(note)
    return note
