"""`format`: the sample is shaped like a training example: one well-formed think block, a non-empty
chain of thought, a final answer, no think tags leaking, and not cut off by the token limit.

Checks, in the order that picks the reported reason (details list every failed check):
  truncated               finish_reason is `length` (the server stopped at max_tokens)
  unclosed_think          `<think>` opened and never closed
  malformed_think         text (or `</think>`) before the opening `<think>`
  unopened_think          R1's "reasoning...</think>answer" without `<think>` (allow_unopened: false)
  multiple_think          nested `<think>` or a second think block after the first
  think_tag_in_completion a stray `<think>`/`</think>` after the think block
  think_tag_in_cot        think tags inside a CoT that came in `reasoning_content`/`reasoning`
  empty_cot               CoT shorter than min_cot_chars (no reasoning at all)
  empty_completion        nothing after the CoT
  no_boxed                no closed, non-empty `\\boxed{...}` (or `\\fbox{}`, `\\boxed 5`) in the
                          completion when one is required
"""

from __future__ import annotations

from functools import partial

import re
from typing import Literal

import polars as pl
from pydantic import Field

from curator.engines.answers import last_boxed
from curator.judge.base import SampleFilter, FilterParams, column, register, verdicts

OPEN = "<think>"
CLOSE = "</think>"
_LEADING_OPEN = re.compile(r"\s*<think>")
# \boxed in the request (JSON-escaped as \\boxed in messages_json).
_BOXED_ASKED = re.compile(r"\\\\?boxed")
_TRUNCATED = {"length", "max_tokens", "max_output_tokens"}
_INLINE = {"think", "think_unopened"}


class FormatParams(FilterParams):
    check_truncated: bool = True
    check_think_tags: bool = True  # the think-block structure and tags leaking into cot/completion
    allow_unopened: bool = True  # accept R1's "reasoning...</think>answer" (the template opened it)
    min_cot_chars: int = Field(default=1, ge=0)  # 0 turns the empty_cot check off
    require_completion: bool = True
    require_boxed: bool | Literal["auto"] = "auto"  # auto: when the request mentions \boxed


def _structure(raw: str, allow_unopened: bool) -> list[str]:
    """Think-block problems of an inline CoT, judged on raw_content (what the server sent)."""
    close = raw.find(CLOSE)
    if close < 0:
        return ["unclosed_think"] if OPEN in raw else []
    head = raw[:close]
    opens = head.count(OPEN)
    failed = []
    if opens == 0:
        if not allow_unopened:
            failed.append("unopened_think")
    elif not _LEADING_OPEN.match(head):
        failed.append("malformed_think")
    if opens > 1:
        failed.append("multiple_think")  # nested
    tail = raw[close + len(CLOSE):]
    if OPEN in tail and CLOSE in tail[tail.find(OPEN):]:
        failed.append("multiple_think")  # a second block
    return failed


@register
class FormatFilter(SampleFilter):
    name = "format"
    Params = FormatParams

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: FormatParams = self.params
        col = partial(column, df)
        keys = df["key"].to_list()
        passed, reasons, details = [], [], []
        for raw, cot, comp, src, fin, msgs in zip(
            col("raw_content"), col("cot"), col("completion"), col("cot_source"), col("finish_reason"), col("messages_json")
        ):
            raw, cot, comp, src = raw or "", cot or "", comp or "", src or "none"
            failed: list[str] = []
            if p.check_truncated and (fin or "") in _TRUNCATED:
                failed.append("truncated")
            if p.check_think_tags:
                if src in _INLINE:
                    failed += _structure(raw, p.allow_unopened)
                elif OPEN in cot or CLOSE in cot:
                    failed.append("think_tag_in_cot")
                if OPEN in comp or CLOSE in comp:
                    failed.append("think_tag_in_completion")
            if p.min_cot_chars and len(cot.strip()) < p.min_cot_chars:
                failed.append("empty_cot")
            if p.require_completion and not comp.strip():
                failed.append("empty_completion")
            boxed = p.require_boxed if p.require_boxed != "auto" else bool(msgs and _BOXED_ASKED.search(msgs))
            if boxed and last_boxed(comp) is None and not (p.require_completion and not comp.strip()):
                failed.append("no_boxed")
            failed = list(dict.fromkeys(failed))
            passed.append(not failed)
            reasons.append(failed[0] if failed else None)
            details.append({"failed": failed, "cot_source": src, "finish_reason": fin} if failed else None)
        return verdicts(keys, passed, reasons, details)
