"""Prices (a data file shipped with the package) and the cost of one request from its usage block."""

from __future__ import annotations

import functools
import warnings
from importlib import resources

import yaml

from curator.config import Price
from curator.parse import Usage


@functools.cache
def price_table() -> dict[str, Price]:
    data = yaml.safe_load(resources.files("curator").joinpath("data/prices.yaml").read_text(encoding="utf-8"))
    return {name: Price.model_validate(p) for name, p in (data.get("models") or {}).items()}


def find_price(model: str, override: Price | None = None) -> Price | None:
    """The manifest's override first, then an exact name, then the longest listed prefix."""
    if override is not None:
        return override
    table = price_table()
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else None


def warn_unknown(model: str) -> None:
    warnings.warn(
        f"no price known for model {model!r}: cost is reported as unknown. "
        "Set it in the manifest: teacher: {price: {input: 0.55, cached_input: 0.14, output: 2.19}} ($ per million tokens)",
        stacklevel=2,
    )


def request_cost(usage: Usage, price: Price | None, *, batch: bool = False) -> float | None:
    """Dollars for one request; None when the price or the usage is unknown (never a guess).

    Cached prompt tokens are billed at `cached_input` (or `input` when the provider lists none);
    reasoning tokens are part of completion_tokens, as OpenAI and DeepSeek report them."""
    if price is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    cached = min(usage.cached_tokens or 0, usage.prompt_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    dollars = ((usage.prompt_tokens - cached) * price.input + cached * cached_rate + usage.completion_tokens * price.output) / 1e6
    if batch:
        dollars *= 1 - price.batch_discount
    return dollars
