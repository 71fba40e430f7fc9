"""The final answer a careful grader reads, and the cheap exact checks that settle most answers
before Math-Verify: which span of a completion is graded (the last box, unless a later explicit
final statement states another value) and with what reason, normal forms, simple values,
percentages. Built on the extraction helpers of `curator.engines.answers`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from curator.engines.answers import Boxed, Statement, answer_statements, find_boxed, normalize_minus, numbers, ungroup_thousands


_EMPHASIS_RE = re.compile(r"\\(?:mathbf|textbf|boldsymbol|bm)\s*\{([^{}]*)\}")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "sqrt", "arcsin", "arccos", "arctan",
               "sinh", "cosh", "tanh", "max", "min", "gcd", "lcm", "mod", "det", "inf", "infty", "frac", "text", "and"}


def statement_answer(value: str) -> str | None:
    """The answer inside a statement's value: the value itself when it is maths (`4`, `\\frac{1}{2}`,
    `x = 3`, `18{,}067`), the part after the last "is" / "=" when the value is a sentence ("The
    volume of $V$ is 120" -> `120`); None when no clean answer can be cut out of it."""
    v = value.strip().replace("{,}", ",")
    for _ in range(2):
        v = _EMPHASIS_RE.sub(r"\1", v)

    def clean(x: str) -> str | None:
        x = x.strip().rstrip(".").strip()
        if len(x) >= 2 and x[0] == x[-1] == "$":
            x = x[1:-1].strip()
        if not x or len(x) > 120 or "$" in x:
            return None
        body = re.sub(r"\\(?:text|mathrm|mbox)\s*\{[^{}]*\}", " ", x)
        words = [w for w in _PROSE_WORD_RE.findall(body) if w.lower() not in _MATH_WORDS]
        return None if words else x

    got = clean(v)
    if got is not None:
        return got
    m = None
    for m in re.finditer(r"(?:\bis\b|=)", v):
        pass
    return clean(v[m.end():]) if m is not None else None


@dataclass(frozen=True)
class FinalPick:
    """The answer the math filter grades: `text` (what is compared with the gold), the span of the
    completion it came from, which rule chose it (`source`) and why."""

    text: str
    start: int
    end: int
    source: str  # boxed | statement_after_box | statement | completion
    why: str
    boxes: tuple[str, ...] = ()
    alternatives: int = 0  # other candidates the completion offered (earlier boxes, statements)


def _first_number(s: str) -> Fraction | None:
    n = numbers(ungroup_thousands(normalize_minus(s)))
    return n[0].value if n else None


def _same_statement(box: str, stmt: str) -> bool:
    """Does a statement restate the box (the same text, or the same first number)?"""
    a, b = normalize_math(box), normalize_math(stmt)
    if a == b:
        return True
    x, y = _first_number(box), _first_number(stmt)
    return x is not None and y is not None and x == y


_NEGATED_RE = re.compile(r"^(?:not|n't|never|no longer)\b", re.IGNORECASE)


def pick_final_answer(text: str | None, boxes: list[Boxed] | None = None, *, prefer_later_statement: bool = True,
                      all_boxes: list[Boxed] | None = None) -> FinalPick | None:
    """The final answer a careful grader reads: the last boxed answer (with the boxes just before
    it that only connectors separate from it, given as `boxes`), unless a later explicit final
    statement ("so the final answer is 4") states something else, which then wins; without a box,
    the last answer statement; else None (the caller reads the whole completion)."""
    if not text:
        return None
    found = find_boxed(text) if boxes is None else boxes
    if found:
        last = found[-1]
        joined = [b.content for b in found]
        box_text = ", ".join(joined)
        first = found[0]
        tail = text[last.end :]
        # Only statements after the last box matter here; most completions end with the box.
        later = []
        if "answer" in tail.lower():
            later = [Statement(s.start + last.end, s.end + last.end, s.value) for s in answer_statements(tail)
                     if not _NEGATED_RE.match(s.value) and statement_answer(s.value) is not None
                     and (any(c.isdigit() for c in s.value) or "\\" in s.value)]
        n_alt = len(all_boxes if all_boxes is not None else find_boxed(text)) - len(found) + len(later)
        if later and prefer_later_statement:
            s = later[-1]
            value = statement_answer(s.value) or s.value
            if not _same_statement(box_text, value):
                return FinalPick(value, s.start, s.end, "statement_after_box",
                                 "an explicit final statement after the last boxed answer states another value", tuple(joined), n_alt)
            return FinalPick(box_text, first.start, last.end, "boxed", "last boxed answer (restated by a later final statement)", tuple(joined), n_alt)
        why = "last boxed answer" + (" (earlier boxes are intermediate results)" if n_alt else "")
        return FinalPick(box_text, first.start, last.end, "boxed", why, tuple(joined), n_alt)
    stmts = [s for s in answer_statements(text) if not _NEGATED_RE.match(s.value)]
    if stmts:
        s = stmts[-1]
        value = statement_answer(s.value)
        if value is not None:
            return FinalPick(value, s.start, s.end, "statement", "no boxed answer: the last explicit answer statement", (), len(stmts) - 1)
    return None


# --------------------------------------------------------------------------------------------
# cheap exact comparison (before Math-Verify)

_NORM_DROP_RE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)(?![A-Za-z])|\\ |~|\s+")


def normalize_math(s: str | None) -> str:
    """A strict normal form for comparing two answers as written: `$`/delimiters, spacing
    commands, `\\left`/`\\right`, `\\dfrac`/`\\tfrac`, Unicode minus, space-grouped thousands and a
    final full stop removed. Two answers with the same normal form are the same answer."""
    if s is None:
        return ""
    t = normalize_minus(str(s)).strip()
    t = ungroup_thousands(t)
    if len(t) >= 2 and t[0] == t[-1] == "$":
        t = t.strip("$")
    for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
        if t.startswith(a) and t.endswith(b):
            t = t[2:-2]
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    t = re.sub(r",\s+", ",\x01", t)  # `32, 349` is a list, `32,349` a number: keep them apart
    t = re.sub(r"(?<=\d)\s+(?=\d)", "\x01", t)  # and `2 3` is not `23`
    t = _NORM_DROP_RE.sub("", t)
    return t.rstrip(".")


_SIMPLE_VALUE_RE = re.compile(
    r"(?P<neg>-)?(?:(?P<int>\d+)|(?P<dec>\d*\.\d+)|\\frac\{(?P<fa>\d+)\}\{(?P<fb>\d+)\}|\\frac(?P<sa>\d)(?P<sb>\d)|(?P<sla>\d+)/(?P<slb>\d+))"
)


def simple_value(s: str | None) -> tuple[Fraction, bool] | None:
    """(exact value, written as a decimal) of an integer, decimal or simple fraction written plainly
    (`-12`, `0.5`, `\\frac{3}{4}`, `\\frac34`, `3/4`, `1,234`); None for anything else."""
    t = normalize_math(s)
    if re.fullmatch(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?", t):
        t = t.replace(",", "")
    m = _SIMPLE_VALUE_RE.fullmatch(t)
    if not m or len(t) > 60:
        return None
    g = m.groupdict()
    if g["int"] is not None:
        v, dec = Fraction(int(g["int"])), False
    elif g["dec"] is not None:
        v, dec = Fraction(g["dec"]), True
    else:
        a, b = (g["fa"], g["fb"]) if g["fa"] is not None else (g["sa"], g["sb"]) if g["sa"] is not None else (g["sla"], g["slb"])
        if int(b) == 0:
            return None
        v, dec = Fraction(int(a), int(b)), False
    return (-v if g["neg"] else v), dec


_PERCENT_RE = re.compile(r"(.*?)\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\s+percent)\s*")


def percent_value(s: str | None) -> Fraction | None:
    """The number of a plain percentage (`50\\%`, `12.5 %`, `75 percent`), else None."""
    if not s:
        return None
    m = _PERCENT_RE.fullmatch(normalize_minus(str(s)).strip().strip("$").strip())
    if not m:
        return None
    v = simple_value(m.group(1))
    return v[0] if v else None
