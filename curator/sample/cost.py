"""Prices (a data file shipped with the package) and the cost of one request from its usage block."""

from __future__ import annotations

import functools
import math
import warnings
from importlib import resources

import yaml

from curator.config import Price
from curator.sample.parse import Usage

# A listed name matches a longer model name only at one of these boundaries, so "o1" prices
# "o1-2024-12-17" but never "o1x"; list the variants that cost differently ("o1-pro") by name.
_BOUNDARY = "-_:@./ "


@functools.cache
def price_table() -> dict[str, Price]:
    data = yaml.safe_load(resources.files("curator").joinpath("data/prices.yaml").read_text(encoding="utf-8"))
    return {name: Price.model_validate(p) for name, p in (data.get("models") or {}).items()}


def _lookup(model: str, table: dict[str, Price]) -> Price | None:
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name) and model[len(name)] in _BOUNDARY]
    return table[max(prefixes, key=len)] if prefixes else None


def find_price(model: str, override: Price | None = None) -> Price | None:
    """The manifest's override first, then an exact name, then the longest listed prefix.

    A router's "provider/model" name (OpenRouter, Together) is not stripped to "model": those
    hosts set their own prices, so such a model is unknown until the manifest prices it."""
    if override is not None:
        return override
    return _lookup(model, price_table())


def warn_unknown(model: str) -> None:
    warnings.warn(
        f"no price known for model {model!r}: cost is reported as unknown. "
        "Set it in the manifest: teacher: {price: {input: 0.55, cached_input: 0.14, output: 2.19}} ($ per million tokens)",
        stacklevel=2,
    )


def billed_output_tokens(usage: Usage) -> int | None:
    """Output tokens to bill: reasoning tokens are output. OpenAI and DeepSeek count them inside
    completion_tokens; a provider reporting more reasoning than completion tokens counts them
    apart, so they are added (never dropped, never counted twice)."""
    if usage.completion_tokens is None:
        return None
    reasoning = usage.reasoning_tokens or 0
    return usage.completion_tokens + reasoning if reasoning > usage.completion_tokens else usage.completion_tokens


def request_cost(usage: Usage, price: Price | None, *, batch: bool = False) -> float | None:
    """Dollars for one request; None when the price or the usage is unknown (never a guess).

    Cached prompt tokens are billed at `cached_input` (or `input` when the provider lists none);
    reasoning tokens are billed as output (see `billed_output_tokens`); `batch` takes the
    provider's batch discount off the whole request."""
    output = billed_output_tokens(usage)
    if price is None or usage.prompt_tokens is None or output is None:
        return None
    cached = max(0, min(usage.cached_tokens or 0, usage.prompt_tokens))
    cached_rate = price.input if price.cached_input is None else price.cached_input
    dollars = ((usage.prompt_tokens - cached) * price.input + cached * cached_rate + output * price.output) / 1e6
    if batch:
        dollars *= 1 - price.batch_discount
    return dollars


def by_mode(usd: float | None, price: Price | None, paid_in: str) -> dict[str, float | None]:
    """The same tokens bought online and through a batch API, from dollars paid in `paid_in`
    ("online" or "batch"): the batch discount applies to the whole request (request_cost)."""
    if usd is None or price is None:
        return {"online": None, "batch": None}
    keep = 1 - price.batch_discount
    online = usd if paid_in == "online" else usd / keep
    return {"online": online, "batch": online * keep}


def format_usd(x: float | None, unknown: str = "unknown") -> str:
    """Dollars for people: cents for large sums, more digits for small ones."""
    if x is None:
        return unknown
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    if x == 0:
        return "$0"
    # Under a dollar: three significant digits ($0.313, $0.000523), so per-sample costs stay legible.
    decimals = max(2, 2 - math.floor(math.log10(abs(x))))
    return f"${x:.{decimals}f}"
