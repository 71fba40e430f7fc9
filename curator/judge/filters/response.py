"""`response`: the teacher's answer is one a chain may judge at all. Every chain a run or `curator
filter` builds starts with it (curator.judge.chain.load_chain, `response=`), unless the chain lists
it itself (then where it stands and with its params):

  <finish_reason>  the choice ended for a reason other than `allowed` (default stop and the
                   truncation reasons, which `format` judges as `truncated`): `content_filter`,
                   `tool_calls`, ... The reason code is the finish_reason itself.
  too_large        CoT + completion longer than `max_answer_chars` (the manifest's
                   `limits.max_answer_chars`): stored whole, since it was paid for, never judged on.

A missing finish_reason passes (`allow_missing`): some servers and proxies send none, and nothing
says the answer was cut or filtered."""

from __future__ import annotations

import re
from functools import partial

import polars as pl
from pydantic import Field

from curator.judge.base import FilterParams, SampleFilter, column, register, verdicts

DEFAULT_MAX_ANSWER_CHARS = 1_000_000
_CODE = re.compile(r"[^a-z0-9]+")


class ResponseParams(FilterParams):
    allowed: list[str] = Field(default_factory=lambda: ["stop", "length", "max_tokens", "max_output_tokens"])
    allow_missing: bool = True
    max_answer_chars: int | None = Field(default=DEFAULT_MAX_ANSWER_CHARS, gt=0)


def _code(finish: str) -> str:
    """A finish_reason as a snake_case reason code (a hostile server chooses the string)."""
    return _CODE.sub("_", finish.lower()).strip("_")[:40] or "finish_reason"


@register
class ResponseFilter(SampleFilter):
    name = "response"
    Params = ResponseParams

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: ResponseParams = self.params
        col = partial(column, df)
        allowed = set(p.allowed)
        sizes = (df.select(pl.col("cot").fill_null("").str.len_chars() + pl.col("completion").fill_null("").str.len_chars())
                 .to_series().to_list() if {"cot", "completion"} <= set(df.columns) else [0] * df.height)
        passed, reasons, details = [], [], []
        for fin, size in zip(col("finish_reason"), sizes):
            failed = []
            if fin is None and not p.allow_missing:
                failed.append("no_finish_reason")
            elif fin is not None and fin not in allowed:
                failed.append(_code(fin))
            if p.max_answer_chars is not None and size > p.max_answer_chars:
                failed.append("too_large")
            passed.append(not failed)
            reasons.append(failed[0] if failed else None)
            details.append({"failed": failed, "finish_reason": fin, "answer_chars": size} if failed else None)
        return verdicts(df["key"].to_list(), passed, reasons, details)
