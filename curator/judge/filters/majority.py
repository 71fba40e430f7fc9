"""`majority_vote`: self-consistency when there is no gold answer.

Samples are grouped by `prompt_id`; each completion's final answer (last `\\boxed{}`, else an
"answer is" label or bold span, else the last number) is normalised and voted on. A sample passes
when it agrees with its prompt's majority answer, the majority holds at least `min_agreement` of
the valid votes, and there are at least `min_votes` valid votes. Reasons: `minority_answer`,
`low_agreement` (too few votes, too little agreement, or a tie for first place), `no_answer`.
Details (also on passing rows, so the majority can serve as a pseudo-gold label):
`{"answer": a, "majority": m, "agreement": 0.75, "votes": 4}`.

Truncated samples (finish_reason `length`) never vote: what they "answer" is wherever they stopped.
Rows that carry a gold answer pass untouched when `skip_with_gold` (the answer filters judge them).
"""

from __future__ import annotations

from functools import partial

import re
from collections import Counter
from fractions import Fraction

import polars as pl
from pydantic import Field

from curator.engines.answers import final_answer, last_number, normalize_text
from curator.judge.base import DatasetFilter, FilterParams, column, register, verdicts

_TRUNCATED = {"length", "max_tokens", "max_output_tokens"}
_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right|displaystyle)(?![A-Za-z])|\\q?quad(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_VAR_PREFIX = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(?!=)")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_UNIT = re.compile(r"\\(?:text|mathrm|mbox|textnormal)\s*\{[^{}]*\}")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+)")


def normalize_answer(ans: str | None) -> str | None:
    """A canonical string for voting: `\\dfrac{1}{2}`, `0.5` and `1/2` all become `1/2`;
    `\\text{}` and `$` wrappers, spacing commands, `\\left`/`\\right`, degrees, a `x =` prefix,
    thousands separators, a trailing `.0` and all whitespace go. A number with a unit in
    `\\text{}` (`5\\text{ cm}`) is the number."""
    if ans is None:
        return None
    s, number = _canon(ans)
    if not number and _UNIT.search(ans):
        bare, number = _canon(_UNIT.sub("", ans))
        if number:
            return bare
    return s


def _canon(ans: str) -> tuple[str | None, bool]:
    s = normalize_text(ans, ignore_case=False)  # \text{}, $, bold, quotes, a final full stop
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-")
    s = _SPACING.sub("", s)
    s = _DEGREES.sub("", s)
    s = re.sub(r"\\?%$", "", s)
    s = re.sub(r"\s+", "", s)
    s = _VAR_PREFIX.sub("", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d.])(\d+)\.0+(?![\d])", r"\1", s)  # 12.0 -> 12 (also inside tuples)
    try:
        if _NUMBER.fullmatch(s):
            return _fraction_str(Fraction(s)), True
        m = _FRACTION.fullmatch(s)
        if m:
            neg, a, b = (m.group(1), m.group(2), m.group(3)) if m.group(2) is not None else ("", m.group(4), m.group(5))
            if int(b) != 0:
                v = Fraction(int(a), int(b))
                return _fraction_str(-v if neg else v), True
    except (ValueError, ZeroDivisionError):
        pass
    return (s or None), False


def _fraction_str(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def extract_answer(completion: str | None) -> str | None:
    """The completion's final answer, raw: last boxed / labelled / bold answer, else the last number."""
    if not completion or not completion.strip():
        return None
    ans = final_answer(completion)
    if ans:
        return ans
    num = last_number(completion)
    return num.text if num is not None else None


class MajorityParams(FilterParams):
    min_agreement: float = Field(default=0.5, gt=0, le=1)
    min_votes: int = Field(default=2, ge=1)
    skip_with_gold: bool = True  # rows with a gold answer pass untouched
    count_rejected: bool = True  # samples an earlier step rejected still vote


@register
class MajorityVoteFilter(DatasetFilter):
    name = "majority_vote"
    Params = MajorityParams

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: MajorityParams = self.params
        col = partial(column, df)
        keys, pids, comps = col("key"), col("prompt_id"), col("completion")
        golds, fins, prior = col("gold"), col("finish_reason"), col("prior_passed", True)

        raw = [None if (f or "") in _TRUNCATED else extract_answer(c) for c, f in zip(comps, fins)]
        norm = [normalize_answer(a) for a in raw]
        has_gold = [p.skip_with_gold and g is not None and str(g).strip() != "" for g in golds]

        ballots: dict[str, Counter] = {}
        for pid, a, g, ok in zip(pids, norm, has_gold, prior):
            if a is not None and not g and (p.count_rejected or ok is not False):
                ballots.setdefault(pid, Counter())[a] += 1

        tally: dict[str, tuple[str | None, float, int, bool]] = {}
        for pid, c in ballots.items():
            votes = sum(c.values())
            top = c.most_common(2)
            tie = len(top) > 1 and top[0][1] == top[1][1]
            tally[pid] = (None if tie else top[0][0], top[0][1] / votes, votes, tie)

        passed, reasons, details = [], [], []
        for pid, a, shown, g in zip(pids, norm, raw, has_gold):
            if g:
                passed.append(True)
                reasons.append(None)
                details.append({"skipped": "has_gold"})
                continue
            maj, agreement, votes, tie = tally.get(pid, (None, 0.0, 0, False))
            d = {"answer": a, "majority": maj, "agreement": round(agreement, 4), "votes": votes}
            if tie:
                d["tie"] = True
            if a is not None and shown is not None and shown != a:
                d["answer_raw"] = shown
            if a is None:
                reason = "no_answer"
            elif tie or votes < p.min_votes or agreement < p.min_agreement:
                reason = "low_agreement"
            elif a != maj:
                reason = "minority_answer"
            else:
                reason = None
            passed.append(reason is None)
            reasons.append(reason)
            details.append(d)
        return verdicts(keys, passed, reasons, details)
