"""Cheap answer checks that need no computer algebra: `numeric`, `choice`, `exact`.

- `numeric`: the last number of the final answer (boxed / "answer is" / bold, else the whole
  completion) equals the gold number within `rel_tol` / `abs_tol`. Reads `1,234`, `$72`, `\\$72`,
  `45%`, `\\frac{3}{4}`, `1.2e-5`; a percentage also matches its fraction (`45%` ~ `0.45`) unless
  `percent_as_fraction: false`.
- `choice`: the option letter the completion commits to (`\\boxed{C}`, "the answer is (C)",
  "**C**", "Answer: C", a last line "C") equals the gold, which is a letter or the text of an option
  listed in the source row (`row_json`: `choices` / `options` as a list or a letter-keyed mapping).
- `exact`: normalised string equality of the final answer (or a regex group of the completion)
  with the gold.

Reasons: `no_gold`, `bad_gold` (the gold cannot be read), `no_answer`, `wrong_answer`.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Any, Callable, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from curator.engines.answers import (
    Number,
    choice_letter,
    final_answer,
    gold_answer,
    normalize_text,
    numbers,
    parse_number,
)
from curator.judge.base import SampleFilter, FilterParams, column, register, verdicts


Judged = tuple[bool, str | None, dict[str, Any] | None]


def judge_rows(df: pl.DataFrame, field: str, missing_gold: str, judge: Callable[[str, Any, Any], Judged]) -> pl.DataFrame:
    """The loop the gold-answer filters share: a row without gold passes or fails by
    `missing_gold`; every other row is `judge(gold, text, row_json)`."""
    passed, reasons, details = [], [], []
    for gold, text, row in zip(column(df, "gold"), column(df, field), column(df, "row_json")):
        if gold is None or not str(gold).strip():
            ok = missing_gold == "accept"
            verdict: Judged = (ok, None if ok else "no_gold", {"gold": None} if ok else None)
        else:
            verdict = judge(str(gold), text, row)
        passed.append(verdict[0])
        reasons.append(verdict[1])
        details.append(verdict[2])
    return verdicts(df["key"].to_list(), passed, reasons, details)


# ---------------------------------------------------------------------------------------------
# numeric


def numbers_close(a: Fraction | float, b: Fraction | float, rel_tol: float, abs_tol: float) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction) and a == b:
        return True
    return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)


def _candidates(n: Number, allow_pct: bool) -> list[Fraction]:
    out = [n.value]
    if n.percent and allow_pct:
        out.append(n.value / 100)
    return out


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{float(v):.12g}"


@register
class NumericAnswer(SampleFilter):
    name = "numeric"

    class Params(FilterParams):
        rel_tol: float = Field(1e-6, ge=0)
        abs_tol: float = Field(1e-9, ge=0)
        percent_as_fraction: bool = True
        missing_gold: Literal["reject", "accept"] = "reject"
        field: Literal["completion", "raw_content"] = "completion"

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: NumericAnswer.Params = self.params  # type: ignore[assignment]

        def judge(gold: str, text: str | None, _row: Any) -> Judged:
            g = parse_number(gold_answer(gold))
            if g is None:
                return False, "bad_gold", {"gold": gold[:200]}
            ans = final_answer(text or "")
            pred = parse_number(ans) if ans else None
            if pred is None:
                # No marked answer (or none with a number in it): the completion's last number.
                ns = numbers(text or "")
                pred = ns[-1] if ns else None
            if pred is None:
                return False, "no_answer", {"gold": _fmt(g.value), "extracted": (ans or "")[:200]}
            ok = any(
                numbers_close(a, b, p.rel_tol, p.abs_tol)
                for a in _candidates(g, p.percent_as_fraction)
                for b in _candidates(pred, p.percent_as_fraction)
            )
            return ok, None if ok else "wrong_answer", {"gold": _fmt(g.value), "pred": _fmt(pred.value), "extracted": pred.text[:200]}

        return judge_rows(df, p.field, p.missing_gold, judge)


# ---------------------------------------------------------------------------------------------
# choice


def row_choices(row_json: str | None, letters: str) -> dict[str, str]:
    """Letter -> option text from a source row: `choices` / `options` as a list (A, B, ...) or a
    mapping keyed by letter; also MMLU-style {"choices": {"label": [...], "text": [...]}}."""
    if not row_json:
        return {}
    try:
        row = json.loads(row_json)
    except (TypeError, ValueError):
        return {}
    if not isinstance(row, dict):
        return {}
    for key in ("choices", "options", "answer_choices", "candidates"):
        ch = row.get(key)
        if isinstance(ch, list):
            return {letters[i]: str(t) for i, t in enumerate(ch[: len(letters)])}
        if isinstance(ch, dict):
            if isinstance(ch.get("label"), list) and isinstance(ch.get("text"), list):
                return {str(lab).strip().upper(): str(t) for lab, t in zip(ch["label"], ch["text"])}
            return {str(k).strip().strip("()").upper(): str(v) for k, v in ch.items()}
    return {}


def gold_letter(gold: str, choices: dict[str, str], letters: str, index_base: int | None) -> str | None:
    """The gold as a letter: `C`, `(C)`, `C.`, `Answer: C`; the text of one of the options; or an
    option index when `index_base` is set (0 for MMLU-style integers)."""
    g = str(gold).strip()
    if index_base is not None and re.fullmatch(r"\d+", g):
        i = int(g) - index_base
        return letters[i] if 0 <= i < len(letters) else None
    m = re.fullmatch(rf"\s*(?:answer\s*[:：]?\s*)?[\(\[]?\s*([{re.escape(letters)}])\s*[\)\]]?\s*[.:]?\s*", g, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    if choices:
        ng = normalize_text(g)
        for letter, text in choices.items():
            if normalize_text(text) == ng:
                return letter
        m = re.match(rf"\s*[\(\[]?([{re.escape(letters)}])[\)\].:]\s+(.+)", g)  # "C. Paris"
        if m and normalize_text(choices.get(m.group(1).upper(), "")) == normalize_text(m.group(2)):
            return m.group(1).upper()
    return None


@register
class ChoiceAnswer(SampleFilter):
    name = "choice"

    class Params(FilterParams):
        letters: str = Field("ABCDE", min_length=2, description="the option letters, in order")
        index_base: int | None = Field(None, description="read a numeric gold as an option index from this base (0 for MMLU)")
        match_option_text: bool = Field(True, description="accept a completion whose final answer is an option's text")
        missing_gold: Literal["reject", "accept"] = "reject"

        @field_validator("letters")
        @classmethod
        def _upper(cls, v: str) -> str:
            v = v.strip().upper()
            if not v.isalpha() or len(set(v)) != len(v):
                raise ValueError("letters must be distinct letters, e.g. ABCDE")
            return v

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: ChoiceAnswer.Params = self.params  # type: ignore[assignment]

        def judge(gold: str, text: str | None, row: Any) -> Judged:
            choices = row_choices(row, p.letters)
            g = gold_letter(gold, choices, p.letters, p.index_base)
            if g is None:
                return False, "bad_gold", {"gold": gold[:200], "choices": len(choices)}
            pred = choice_letter(text or "", p.letters)
            extracted = pred
            if p.match_option_text and choices:
                # The final answer written out as an option's text ("\boxed{Paris}").
                ans = final_answer(text or "")
                if ans:
                    na = normalize_text(ans)
                    for letter, opt in choices.items():
                        if na and normalize_text(opt) == na:
                            pred, extracted = letter, ans
                            break
            if pred is None:
                return False, "no_answer", {"gold": g, "extracted": None}
            ok = pred == g
            return ok, None if ok else "wrong_answer", {"gold": g, "pred": pred, "extracted": extracted[:200] if extracted else None}

        return judge_rows(df, "completion", p.missing_gold, judge)


# ---------------------------------------------------------------------------------------------
# exact


@register
class ExactAnswer(SampleFilter):
    name = "exact"

    class Params(FilterParams):
        pattern: str | None = Field(None, description="regex over the completion; its `group` is the answer (last match wins)")
        group: int | str = 1
        gold_pattern: str | None = Field(None, description="regex to pull the answer out of the gold, same `group`")
        ignore_case: bool = True
        normalize: bool = Field(True, description="drop markdown, $, \\text{}, quotes, a final full stop; collapse spaces")
        missing_gold: Literal["reject", "accept"] = "reject"

        @field_validator("pattern", "gold_pattern")
        @classmethod
        def _compiles(cls, v: str | None) -> str | None:
            if v is not None:
                try:
                    re.compile(v)
                except re.error as e:
                    raise ValueError(f"invalid regex: {e}") from None
            return v

        @model_validator(mode="after")
        def _group_exists(self):
            for pat in (self.pattern, self.gold_pattern):
                if pat is None:
                    continue
                rx = re.compile(pat)
                ok = (isinstance(self.group, int) and 0 <= self.group <= rx.groups) or (isinstance(self.group, str) and self.group in rx.groupindex)
                if not ok:
                    raise ValueError(f"group {self.group!r} is not a group of pattern {pat!r}")
            return self

    def _norm(self, s: str) -> str:
        p: ExactAnswer.Params = self.params  # type: ignore[assignment]
        if p.normalize:
            return normalize_text(s, ignore_case=p.ignore_case)
        s = s.strip()
        return s.casefold() if p.ignore_case else s

    def _extract(self, rx: re.Pattern[str] | None, text: str, fallback) -> str | None:
        p: ExactAnswer.Params = self.params  # type: ignore[assignment]
        if rx is None:
            return fallback(text)
        last = None
        for m in rx.finditer(text):
            last = m
        if last is None:
            return None
        return last.group(p.group)

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: ExactAnswer.Params = self.params  # type: ignore[assignment]
        flags = re.IGNORECASE if p.ignore_case else 0
        rx = re.compile(p.pattern, flags | re.MULTILINE) if p.pattern else None
        grx = re.compile(p.gold_pattern, flags | re.MULTILINE) if p.gold_pattern else None

        def judge(gold: str, text: str | None, _row: Any) -> Judged:
            g = self._extract(grx, gold, lambda s: gold_answer(s) or s) if grx else (gold_answer(gold) or gold)
            if g is None:
                return False, "bad_gold", {"gold": gold[:200]}
            ans = self._extract(rx, text or "", lambda s: final_answer(s) or (s.strip() or None))
            if ans is None or not str(ans).strip():
                return False, "no_answer", {"gold": g[:200], "extracted": None}
            ok = self._norm(str(ans)) == self._norm(g)
            return ok, None if ok else "wrong_answer", {"gold": g[:200], "extracted": str(ans)[:200]}

        return judge_rows(df, "completion", p.missing_gold, judge)

