"""`length`: the sample fits the student's sequence length, and its text has not degenerated.

Bounds (reason `too_long` / `too_short`): the CoT's and the completion's tokens are the larger of
the server's count (`reasoning_tokens`, `completion_tokens`) and the stored text's chars /
chars_per_token: a teacher's usage can make an answer longer (hidden reasoning, its tokenizer),
never shorter than its text (a 20 MB answer reported as 100 tokens is too long). The prompt's
tokens are `prompt_tokens`, else its chars / chars_per_token.
`max_total_tokens` (the student's max sequence length) counts prompt + CoT + completion.

Degeneration, measured on the CoT and on the completion separately (the final summary may restate
the CoT, so the two are never compared with each other):
- windows: every word start opens a window of `window_chars` bytes, hashed with a polynomial
  rolling hash (numpy, no Python loop over words). `dup_share` is the share of windows already
  seen earlier in the text; `max_repeats` the count of the most repeated window. A loop that fills
  the end of a trace drives dup_share up; a short sentence or paragraph said over and over drives
  max_repeats up. A normal trace restates a short phrase ("Let me check") but the 128 bytes around
  it differ, so both stay low (dup_share < 0.05, max_repeats <= 3 on R1 math traces).
- "Wait" sentences (sentence-initial `Wait`): `wait_loop` when one Wait sentence (normalised) is
  said `max_wait_repeats` times or more, or when Wait sentences exceed `max_wait_per_1k_words`
  (a normal R1 trace says "Wait," about 2-15 times per 1k words).
Reasons, in the order that picks the reported one: too_long, too_short, wait_loop,
degenerate_repetition; details list every failed check and the measures.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from curator.judge.base import SampleFilter, FilterParams, register, verdicts

_BASE = np.uint64(0x100000001B3)  # odd, so windows at different offsets normalise to one hash
_POW = np.ones(1, dtype=np.uint64)
_WAIT = re.compile(r"Wait\b[^.!?\n]*[.!?]?")  # a literal first: the regex engine skips ahead fast
_LEAD = " \t*\"'(_#>-"


def _powers(n: int) -> np.ndarray:
    global _POW
    if len(_POW) <= n:
        size = max(n + 1, 2 * len(_POW), 1 << 16)
        p = np.full(size, _BASE, dtype=np.uint64)
        p[0] = 1
        _POW = np.cumprod(p, dtype=np.uint64)  # wraps modulo 2**64
    return _POW


def window_stats(text: str, window: int = 128, min_windows: int = 50) -> tuple[int, float, int, str | None]:
    """(words, dup_share, max_repeats, repeated) of the `window`-byte windows opened at each word
    start; `repeated` is the most repeated window when it occurs 3 times or more.
    dup_share is 0 for texts with fewer than `min_windows` windows (too short to judge)."""
    if not text:
        return 0, 0.0, 0, None
    b = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    n = len(b)
    ws = b <= 32
    starts = np.flatnonzero(ws[:-1] & ~ws[1:]) + 1
    if not ws[0]:
        starts = np.concatenate(([0], starts))
    words = len(starts)
    if words * 24 < n:
        # Few spaces (Chinese, Japanese): CJK punctuation (U+3000-303F: E3 80 xx; fullwidth
        # ，！？： U+FF00-FF5F: EF BC/BD xx) opens windows too, so loops there are seen as well.
        cjk = np.flatnonzero(((b[:-1] == 0xE3) & (b[1:] == 0x80)) | ((b[:-1] == 0xEF) & ((b[1:] == 0xBC) | (b[1:] == 0xBD))))
        if len(cjk):
            starts = np.union1d(starts, cjk + 3)
            starts = starts[starts < n]
    starts = starts[starts + window <= n]
    m = len(starts)
    if m < 2:
        return words, 0.0, m, None
    pw = _powers(n)
    prefix = np.empty(n + 1, dtype=np.uint64)
    prefix[0] = 0
    np.cumsum(b.astype(np.uint64) * pw[:n], out=prefix[1:])
    h = (prefix[starts + window] - prefix[starts]) * pw[n - starts]
    h = (h >> np.uint64(32)).astype(np.uint32)  # the well-mixed high half; sorts twice as fast
    hs = np.sort(h)
    edges = np.flatnonzero(hs[1:] != hs[:-1])
    unique = len(edges) + 1
    ends = np.concatenate((edges, [m - 1]))
    runs = np.diff(np.concatenate(([-1], ends)))
    top = int(runs.argmax())
    repeats = int(runs[top])
    repeated = None
    if repeats >= 3:
        at = int(starts[int(np.argmax(h == hs[ends[top]]))])
        repeated = bytes(b[at:at + window]).decode("utf-8", "replace")
    share = (1.0 - unique / m) if m >= min_windows else 0.0
    return words, share, repeats, repeated


def wait_sentences(text: str) -> list[str]:
    """Sentences that start with "Wait" (after '.', '!', '?', a newline, or at the start)."""
    out = []
    for m in _WAIT.finditer(text):
        j = m.start() - 1
        while j >= 0 and text[j] in _LEAD:
            j -= 1
        if j < 0 or text[j] in ".!?\n:":
            out.append(" ".join(m.group().lower().split()))
    return out


def degeneration(text: str, window: int = 128) -> dict[str, Any]:
    words, share, repeats, repeated = window_stats(text, window)
    waits = wait_sentences(text) if "Wait" in text else []
    top, top_n = None, 0
    if waits:
        counts: dict[str, int] = {}
        for w in waits:
            counts[w] = counts.get(w, 0) + 1
        top, top_n = max(counts.items(), key=lambda kv: kv[1])
    return {
        "words": words,
        "dup_share": round(share, 4),
        "max_repeats": repeats,
        "repeated": repeated,
        "waits": len(waits),
        "wait_per_1k_words": round(1000 * len(waits) / words, 2) if words else 0.0,
        "top_wait": top,
        "top_wait_count": top_n,
    }


class LengthParams(FilterParams):
    max_total_tokens: int | None = Field(default=16384, gt=0)  # the student's max sequence length
    max_cot_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    min_cot_chars: int = Field(default=0, ge=0)
    max_cot_chars: int | None = Field(default=None, gt=0)
    min_completion_chars: int = Field(default=0, ge=0)
    max_completion_chars: int | None = Field(default=None, gt=0)
    chars_per_token: float = Field(default=4.0, gt=0)  # estimate when the server sent no usage
    check_degeneration: bool = True
    window_chars: int = Field(default=128, ge=8)  # longer than a templated phrase of an enumeration
    max_dup_share: float = Field(default=0.5, gt=0, le=1)
    max_repeats: int = Field(default=8, ge=2)  # one window this many times: a loop
    max_wait_repeats: int = Field(default=20, ge=2)  # one "Wait ..." sentence this many times anywhere
    max_wait_per_1k_words: float = Field(default=50.0, gt=0)
    min_words_for_rate: int = Field(default=200, ge=0)  # rate checks need some text


def _num(df: pl.DataFrame, c: str) -> pl.Expr:
    return pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, dtype=pl.Float64)


def _str_len(df: pl.DataFrame, c: str) -> pl.Expr:
    return pl.col(c).fill_null("").str.len_chars() if c in df.columns else pl.lit(0, dtype=pl.UInt32)


@register
class LengthFilter(SampleFilter):
    name = "length"
    Params = LengthParams

    def _sizes(self, df: pl.DataFrame) -> pl.DataFrame:
        cpt = self.params.chars_per_token
        cot_c, comp_c = _str_len(df, "cot"), _str_len(df, "completion")
        prompt_c = _str_len(df, "messages_json") if "messages_json" in df.columns else _str_len(df, "problem")
        rt, ct, pt = _num(df, "reasoning_tokens"), _num(df, "completion_tokens"), _num(df, "prompt_tokens")
        reported_comp = pl.when(ct.is_not_null() & rt.is_not_null()).then(ct - rt)
        return df.select(
            cot_c.alias("cot_chars"),
            comp_c.alias("completion_chars"),
            pl.max_horizontal(rt, cot_c / cpt).round().cast(pl.Int64).alias("cot_tokens"),
            pl.max_horizontal(reported_comp, comp_c / cpt).round().cast(pl.Int64).alias("completion_tokens"),
            (pt.fill_null(prompt_c / cpt) + pl.max_horizontal(ct, (cot_c + comp_c) / cpt)).round().cast(pl.Int64).alias("total_tokens"),
        )

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: LengthParams = self.params
        sizes = self._sizes(df).to_dicts()
        cots = df["cot"].to_list() if "cot" in df.columns else [None] * df.height
        comps = df["completion"].to_list() if "completion" in df.columns else [None] * df.height
        passed, reasons, details = [], [], []
        for s, cot, comp in zip(sizes, cots, comps):
            failed: list[str] = []
            if (
                (p.max_total_tokens and s["total_tokens"] > p.max_total_tokens)
                or (p.max_cot_tokens and s["cot_tokens"] > p.max_cot_tokens)
                or (p.max_completion_tokens and s["completion_tokens"] > p.max_completion_tokens)
                or (p.max_cot_chars and s["cot_chars"] > p.max_cot_chars)
                or (p.max_completion_chars and s["completion_chars"] > p.max_completion_chars)
            ):
                failed.append("too_long")
            if s["cot_chars"] < p.min_cot_chars or s["completion_chars"] < p.min_completion_chars:
                failed.append("too_short")
            info: dict[str, Any] = dict(s)
            if p.check_degeneration:
                for part, text in (("cot", cot), ("completion", comp)):
                    d = degeneration(text or "", p.window_chars)
                    rate_ok = d["words"] < p.min_words_for_rate or d["wait_per_1k_words"] <= p.max_wait_per_1k_words
                    looping = d["max_repeats"] >= p.max_repeats
                    # A loop whose repeated text is a "Wait ..." sentence is a wait loop.
                    wait_in_loop = looping and ("Wait" in (d["repeated"] or "") or d["top_wait_count"] >= p.max_repeats)
                    if d["top_wait_count"] >= p.max_wait_repeats or not rate_ok or wait_in_loop:
                        failed.append("wait_loop")
                    if d["dup_share"] > p.max_dup_share or looping:
                        failed.append("degenerate_repetition")
                    info[part] = d
            order = {"too_long": 0, "too_short": 1, "wait_loop": 2, "degenerate_repetition": 3}
            failed = sorted(set(failed), key=order.__getitem__)
            passed.append(not failed)
            reasons.append(failed[0] if failed else None)
            details.append({"failed": failed, **info} if failed else None)
        return verdicts(df["key"].to_list(), passed, reasons, details)
