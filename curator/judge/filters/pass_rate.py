"""`pass_rate`: difficulty filtering by how often the teacher solved a prompt (scope "dataset").

A prompt's pass rate is the share of its stored samples that every earlier step of the chain
accepted, so put it after the steps that judge correctness (`math`, `numeric`...). Every sample of
a prompt gets the prompt's verdict: `too_easy` above `max` (`max: 0.99` drops the prompts every
sample solved: nothing left to teach), `too_hard` below `min` (`min: 0.01` drops the ones nothing
solved; keep only hard ones with `max: 0.5`), `few_samples` with fewer than `min_samples` samples
(a rate over 2 samples says little). Details: `{"pass_rate": r, "samples": n}`.

With budget.per_prompt, a prompt stops once it has K accepted answers, so K / samples is its pass
rate read the way the run sampled it (easy prompts end with few samples, hence coarse rates):
`min_samples` guards the coarse end."""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from curator.judge.base import DatasetFilter, FilterParams, register, verdicts


class PassRateParams(FilterParams):
    min: float = Field(default=0.0, ge=0, le=1)
    max: float = Field(default=1.0, ge=0, le=1)
    min_samples: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> PassRateParams:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


@register
class PassRateFilter(DatasetFilter):
    name = "pass_rate"
    Params = PassRateParams
    streams = True  # reads only key, prompt_id and prior_passed, batch by batch

    def columns(self) -> list[str]:
        return ["key", "prompt_id"]

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        if "prior_passed" not in df.columns:
            df = df.with_columns(pl.lit(True).alias("prior_passed"))
        return self.apply_stream(lambda: [df.select("key", "prompt_id", "prior_passed")])

    def apply_stream(self, batches) -> pl.DataFrame:
        """Only key, prompt_id and prior_passed are held: a million samples are a few dozen MB."""
        parts = [b.select("key", "prompt_id", pl.col("prior_passed").fill_null(True)) for b in batches()]
        if not parts:
            return verdicts([], [], [], [])
        df = pl.concat(parts)
        rates = df.group_by("prompt_id").agg(pl.len().alias("samples"), pl.col("prior_passed").mean().alias("rate"))
        df = df.join(rates, on="prompt_id", how="left", maintain_order="left")
        p: PassRateParams = self.params
        reasons, details = [], []
        for n, r in zip(df["samples"].to_list(), df["rate"].to_list()):
            reasons.append("few_samples" if n < p.min_samples else "too_easy" if r > p.max else "too_hard" if r < p.min else None)
            details.append({"pass_rate": round(r, 4), "samples": n})
        return verdicts(df["key"].to_list(), [x is None for x in reasons], reasons, details)
