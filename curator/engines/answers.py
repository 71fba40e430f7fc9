"""Answer extraction helpers shared by the answer-correctness filters (math, numeric, choice, exact).

Pure Python and regex only (no sympy, no math-verify), so they are cheap to import anywhere:
the majority-vote filter, the format filter and reports may use them too.

What a "final answer" is, in priority order (`final_answer`):
1. the last `\\boxed{...}` / `\\fbox{...}` (nested braces, `\\boxed 5`);
2. an answer label: "the (final) answer is X", "Answer: X", "Final Answer: X";
3. the last markdown-bold span `**X**`.
Gold answers: GSM8K solutions end with `#### 72`; MATH solutions carry a `\\boxed{}`; other
datasets give the plain value (`gold_answer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# --------------------------------------------------------------------------------------------
# \boxed{...}

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


@dataclass(frozen=True)
class Boxed:
    start: int  # index of the backslash
    end: int  # index just past the closing brace (or the bare token)
    content: str


def _braced(text: str, i: int) -> int | None:
    """text[i] == '{': index just past its matching '}', or None when it never closes.
    Escaped braces (`\\{`, `\\}`) are literal and do not count."""
    depth = 0
    n = len(text)
    j = i
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def find_boxed(text: str | None) -> list[Boxed]:
    """Every closed `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` in order of appearance (outermost only).
    An unclosed `\\boxed{` (a truncated answer) is skipped."""
    if not text:
        return []
    out: list[Boxed] = []
    pos = 0
    while True:
        m = _BOXED_RE.search(text, pos)
        if not m:
            return out
        j = m.end()
        # `\boxed {x}` is valid LaTeX: skip spaces before a brace.
        k = j
        while k < len(text) and text[k] in " \t":
            k += 1
        if k < len(text) and text[k] == "{":
            end = _braced(text, k)
            if end is None:
                pos = m.end()
                continue
            out.append(Boxed(m.start(), end, text[k + 1 : end - 1].strip()))
            pos = end
        elif k > j and k < len(text):
            # `\boxed 5`: one bare token up to whitespace, `$` or a closing delimiter.
            t = re.match(r"[^\s$}\\]+", text[k:])
            if t:
                tok = t.group(0).rstrip(".,;")
                out.append(Boxed(m.start(), k + t.end(), tok))
                pos = k + t.end()
            else:
                pos = m.end()
        else:
            pos = m.end()


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{}` (or `\\fbox{}`), or None. Empty boxes count as None."""
    boxes = find_boxed(text)
    for b in reversed(boxes):
        if b.content:
            return b.content
    return None


def all_boxed(text: str | None) -> list[str]:
    return [b.content for b in find_boxed(text) if b.content]


# --------------------------------------------------------------------------------------------
# markdown bold, answer labels

# `**X**` where the opening `**` is not glued to a preceding word character (so `2**3` is not bold).
_BOLD_RE = re.compile(r"(?<![\w*])\*\*(?=\S)([^*\n]+?)(?<=\S)\*\*(?!\*)")


def strip_markdown_bold(text: str) -> str:
    """`**73**` -> `73` (Math-Verify issue #76: a glued `**` breaks its number extraction)."""
    if "**" not in text:
        return text
    out = _BOLD_RE.sub(lambda m: m.group(1), text)
    # Leftover `**` markers around a label ("**Final Answer:**") are pure formatting too.
    return re.sub(r"(?<![\w*])\*\*|\*\*(?![\w*])", "", out)


def last_bold(text: str | None) -> str | None:
    if not text:
        return None
    found = _BOLD_RE.findall(text)
    return found[-1].strip() if found else None


_LABEL_RE = re.compile(
    r"(?:(?:final|correct)\s+answer|(?<![A-Za-z])answer)"  # "final answer", "answer"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be)|\s*[:：])"  # "... is" / "...:"
    r"[ \t]*(?:\*\*)?[ \t]*(?:[:：][ \t]*)?"
    r"(?P<ans>[^\n]+)",
    re.IGNORECASE,
)


def labelled_answer(text: str | None) -> str | None:
    """The text after the last "answer is" / "Answer:" label, up to the end of that line,
    without markdown, `$` wrappers and a trailing full stop."""
    if not text:
        return None
    # answer_statements: also "Answer $\n9\n$" (a maths span over lines) and "Answer $9$".
    stmts = answer_statements(text)
    return stmts[-1].value if stmts else None


def _clean_inline(s: str) -> str:
    s = strip_markdown_bold(s).strip()
    s = re.sub(r"\s*I hope it is correct\.?\s*$", "", s, flags=re.IGNORECASE)
    s = s.strip().rstrip(".;,").strip()
    if s.startswith("$") and s.endswith("$") and len(s) >= 2:
        s = s.strip("$").strip()
    for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b):
            s = s[2:-2].strip()
    return s


def final_answer(text: str | None) -> str | None:
    """The model's final answer as a string: last boxed, else labelled answer, else last bold."""
    if not text:
        return None
    return last_boxed(text) or labelled_answer(text) or last_bold(text)


# --------------------------------------------------------------------------------------------
# gold answers


def gsm8k_gold(text: str | None) -> str | None:
    """`... #### 72` -> `72` (commas, `$` and spaces dropped); None when there is no `####`."""
    if not text or "####" not in text:
        return None
    ans = text.rsplit("####", 1)[1].strip().splitlines()[0] if text.rsplit("####", 1)[1].strip() else ""
    ans = ans.strip().replace("$", "")
    if re.fullmatch(r"-?[\d,]+(?:\.\d+)?", ans):
        ans = ans.replace(",", "")
    return ans.strip() or None


def gold_answer(gold: str | None) -> str | None:
    """A gold field reduced to its answer: GSM8K `#### x`, a MATH solution's last `\\boxed{}`,
    else the stripped value itself. None for null/blank."""
    if gold is None:
        return None
    g = str(gold).strip()
    if not g:
        return None
    gs = gsm8k_gold(g)
    if gs is not None:
        return gs
    b = last_boxed(g)
    if b is not None:
        return b
    return g


# --------------------------------------------------------------------------------------------
# numbers

_NUM_CORE = r"""
    (?P<sign>[-−+])?\s*
    (?P<cur>[$€£¥₹]|\\\$)?\s*
    (?P<num>
        \d{1,3}(?:,\d{3})+(?:\.\d+)?      # 1,234,567.89
      | \d+(?:\.\d+)?                     # 1234.5
      | \.\d+                             # .5
    )
    (?:\s*(?:e|E)(?P<exp>[-+]?\d+))?      # 1.2e-5
    (?:\s*(?:\\times|\\cdot|×|x|\*)\s*10\^\{?(?P<exp10>[-−+]?\d+)\}?)?   # 1.2 \times 10^{-5}
    (?P<pct>\s*(?:\\%|%|\s*percent\b))?
"""
_NUM_RE = re.compile(r"(?<![\w.])" + _NUM_CORE, re.VERBOSE | re.IGNORECASE)
_FRAC_RE = re.compile(
    r"(?P<sign>[-−])?\s*\\[dtc]?frac\s*\{\s*(?P<a>-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(?P<b>-?\d+(?:\.\d+)?)\s*\}"
    r"|(?P<sign2>[-−])?(?<![\w.])(?P<c>\d+)\s*/\s*(?P<d>\d+)(?![\w.])"
)


@dataclass(frozen=True)
class Number:
    value: Fraction
    percent: bool
    text: str

    def __float__(self) -> float:
        try:
            return float(self.value)
        except OverflowError:  # "9" * 400: exact as a Fraction, beyond a double
            return float("inf") if self.value > 0 else float("-inf")


# Beyond any answer a problem has; `10 ** exponent` past this costs seconds and megabytes per
# number ("1e999999999" in a trace would stall the filter).
MAX_EXPONENT = 1000


def _to_number(m: re.Match) -> Number | None:
    raw = m.group("num").replace(",", "")
    v = Fraction(raw)
    exps = [int(m.group("exp")) if m.group("exp") else 0, int(m.group("exp10").replace("−", "-")) if m.group("exp10") else 0]
    if any(abs(e) > MAX_EXPONENT for e in exps):
        return None
    if exps[0]:
        v *= Fraction(10) ** exps[0]
    if exps[1]:
        v *= Fraction(10) ** exps[1]
    if m.group("sign") in ("-", "−"):
        v = -v
    return Number(v, bool(m.group("pct")), m.group(0).strip())


def numbers(text: str | None) -> list[Number]:
    """Every number in the text, in order: `1,234`, `$72`, `\\$72`, `45%`, `-3.5`, `1.2e-5`,
    `\\frac{1}{2}`, `3/4`. Fractions are exact."""
    if not text:
        return []
    s = text.replace("−", "-").replace("{,}", ",").replace(",\\!", ",").replace("\\!", "")
    found: list[tuple[int, int, Number]] = []
    taken: list[tuple[int, int]] = []
    for m in _FRAC_RE.finditer(s):
        if m.group("a") is not None:
            a, b, neg = m.group("a"), m.group("b"), m.group("sign")
        else:
            a, b, neg = m.group("c"), m.group("d"), m.group("sign2")
        if Fraction(b) == 0:
            continue
        v = Fraction(a) / Fraction(b)
        if neg:
            v = -v
        found.append((m.start(), m.end(), Number(v, False, m.group(0).strip())))
        taken.append((m.start(), m.end()))
    for m in _NUM_RE.finditer(s):
        if any(a <= m.start() < b or a < m.end() <= b for a, b in taken):
            continue
        n = _to_number(m)
        if n is not None:
            found.append((m.start(), m.end(), n))
    found.sort(key=lambda t: t[0])
    return [n for _, _, n in found]


def last_number(text: str | None) -> Number | None:
    ns = numbers(text)
    return ns[-1] if ns else None


def parse_number(text: str | None) -> Number | None:
    """The single number a short answer string states (`$1,234`, `45%`, `\\frac{3}{4}`, `72 \\text{ apples}`):
    the last number in it, or None."""
    if text is None:
        return None
    t = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}", " ", str(text))
    return last_number(t)


# --------------------------------------------------------------------------------------------
# text normalisation (for `exact`)

_LATEX_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def normalize_text(s: str | None, *, ignore_case: bool = True) -> str:
    """Loose string normal form: markdown bold, `$`, `\\text{}`, surrounding quotes and a final
    full stop dropped; whitespace collapsed; optionally lower-cased."""
    if s is None:
        return ""
    t = strip_markdown_bold(str(s)).strip()
    for _ in range(3):
        t2 = _LATEX_WRAP_RE.sub(r"\1", t)
        if t2 == t:
            break
        t = t2
    t = t.replace("\\$", "$").strip()
    if len(t) >= 2 and t[0] == t[-1] == "$":
        t = t[1:-1]
    t = t.strip().strip("\"'`“”‘’").strip()
    t = t.rstrip(".").strip()
    t = re.sub(r"\s+", " ", t)
    return t.casefold() if ignore_case else t


# --------------------------------------------------------------------------------------------
# multiple choice


def choice_letter(text: str | None, letters: str = "ABCDE") -> str | None:
    """The option letter a completion commits to, or None. Looks, in order, at: the last
    `\\boxed{}` (`\\boxed{C}`, `\\boxed{\\text{(C)}}`, `\\boxed{C. text}`); the last answer label
    ("the answer is (C)", "Answer: C", "**Answer:** C"); the last bold span (`**C**`, `**(C) foo**`);
    a last line that is only a letter; and finally the last parenthesised letter `(C)`."""
    if not text:
        return None
    L = re.escape(letters)
    lead = re.compile(rf"^\s*(?:\*\*)?\s*[\(\[]?\s*([{L}])\s*(?:[\)\].:}},]|\*\*|$|\s)")
    alone = re.compile(rf"[\(\[]?\s*([{L}])\s*[\)\]]?\.?", re.IGNORECASE)

    def first_letter(s: str | None) -> str | None:
        if not s:
            return None
        s = _LATEX_WRAP_RE.sub(r"\1", s).strip().strip("$").strip()
        s = re.sub(r"^(?:option|choice)\s+", "", s, flags=re.IGNORECASE)
        m = lead.match(s) or alone.fullmatch(s)
        if m:
            return m.group(1).upper()
        return None

    b = last_boxed(text)
    got = first_letter(b)
    if got:
        return got
    for m in reversed(list(_LABEL_RE.finditer(text))):
        got = first_letter(m.group("ans"))
        if got:
            return got
    bolds = _BOLD_RE.findall(text)
    for s in reversed(bolds):
        got = first_letter(s)
        if got:
            return got
    # "the correct option is C", "I choose (B)"
    m = None
    for m in re.finditer(
        rf"(?i:(?:correct|right|best)\s+(?:option|choice)\s+is|\bI\s+(?:choose|select|pick)|\bchoose)\s*[:：]?\s*(?:(?i:option|choice)\s+)?[\(\[]?([{L}])(?![A-Za-z])",
        text,
    ):
        pass
    if m is not None:
        return m.group(1).upper()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        last = lines[-1]
        mm = re.fullmatch(rf"[\(\[]?\s*([{L}])\s*[\)\]]?\.?", strip_markdown_bold(last).strip().strip("$"))
        if mm:
            return mm.group(1).upper()
    paren = re.findall(rf"\(([{L}])\)", text)
    if paren:
        return paren[-1].upper()
    return None


# --------------------------------------------------------------------------------------------
# the final answer a careful grader reads (math filter), with the span and the reason

# Minus signs that are not ASCII: U+2212 (what LaTeX renders and teachers copy), the small and
# full-width hyphen-minus. En/em dashes are punctuation more often than signs: left alone.
_MINUS_RE = re.compile("[\u2212\ufe63\uff0d]")


def normalize_minus(text: str) -> str:
    return _MINUS_RE.sub("-", text) if text else text


# Thousands separators that are spaces: LaTeX thin/medium/thick spaces, `~`, `\ `, `{\,}`, and
# Unicode thin, narrow no-break and no-break spaces. A group is exactly three digits, so lists
# (`1, 2, 3`), decimals and `2 3` are left alone.
_SPACE_SEP = r"(?:\{\\[,:;]\}|\\[,:;]|\\ |~|[\u2009\u202f\u00a0\u2007])"
_SPACE_GROUPED_RE = re.compile(rf"(?<![\d.,])(\d{{1,3}})((?:{_SPACE_SEP}\d{{3}})+)(?![\d])")
_PLAIN_SPACE_GROUPED_RE = re.compile(r"(?<![\d.,])(\d{1,3})((?: \d{3})+)(?![\d]|\.\d| \d)")


def ungroup_thousands(text: str, *, plain_spaces: bool = True) -> str:
    """`1\\,000` / `1 000 000` / `1{\\,}000` / `1 000` (U+2009) -> `1000000`. `plain_spaces` also
    joins groups separated by an ordinary space: right for a short answer (a box, a gold), not for
    prose where two numbers may stand side by side."""
    if not text or not any(c.isdigit() for c in text):
        return text
    t = _SPACE_GROUPED_RE.sub(lambda m: m.group(1) + re.sub(r"\D", "", m.group(2)), text)
    if plain_spaces:
        t = _PLAIN_SPACE_GROUPED_RE.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), t)
    return t


# A bare decimal with a decimal comma: `1,22`, `0,111`, `1000,99`. One comma, no space; not a
# thousands grouping (which has exactly three digits after the comma and 1-3 non-zero-led before).
_DECIMAL_COMMA_RE = re.compile(r"\s*([-+]?)(\d+),(\d+)\s*")


def decimal_comma_value(text: str | None) -> str | None:
    """`1,22` -> `1.22`; None when the text is not a number with a decimal comma (`1,234` is a
    thousands grouping, `2, 3` a list)."""
    if not text:
        return None
    m = _DECIMAL_COMMA_RE.fullmatch(text)
    if not m:
        return None
    sign, a, b = m.groups()
    thousands = len(b) == 3 and len(a) <= 3 and not (a.startswith("0"))
    if thousands:
        return None
    return f"{sign}{a}.{b}"


_DELIM_PAIRS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
# "Answer $9$" / "Answer \( 9 \)" with no colon or "is": a label only when the maths closes the line.
_BARE_LABEL_RE = re.compile(r"(?<![A-Za-z])(?:final\s+)?answer(?:\*\*)?[ \t]+(?=\$|\\\(|\\\[)", re.IGNORECASE)
# "Final answer:" / "The answer is" closing a line, the maths on the next lines.
_NEWLINE_LABEL_RE = re.compile(
    r"(?<![A-Za-z])(?:(?:final|correct)\s+)?answer(?:\*\*)?(?:\s+(?:is|would\s+be|will\s+be))?[ \t]*[:：]?(?:\*\*)?[ \t]*\n\s*(?=\$|\\\(|\\\[)",
    re.IGNORECASE,
)
_STATEMENT_FILLER_RE = re.compile(
    r"^(?:(?:actually|now|then|simply|just|therefore|thus|indeed|exactly|still|really|clearly|equal\s+to|given\s+by|:|=)\s*)+",
    re.IGNORECASE,
)


def _delimited(text: str, i: int) -> tuple[int, str] | None:
    """text[i:] starts with a maths delimiter: (end index, content) of the span it opens, which may
    run over line breaks (`$\\n9\\n$`): the answer a label introduces is the whole span."""
    for a, b in _DELIM_PAIRS:
        if text.startswith(a, i):
            j = text.find(b, i + len(a))
            if j < 0 or j - i > 400:
                return None
            return j + len(b), text[i + len(a) : j].strip()
    return None


@dataclass(frozen=True)
class Statement:
    start: int  # where the label starts
    end: int  # end of the stated value
    value: str  # the value, cleaned like `labelled_answer` cleans it


def answer_statements(text: str | None) -> list[Statement]:
    """Every explicit answer statement ("the final answer is X", "Answer: X", "Answer $X$"), in
    order. A value that opens a maths span (`$`, `$$`, `\\(`, `\\[`) is the whole span, line breaks
    included; otherwise it runs to the end of the line."""
    if not text:
        return []
    out: list[Statement] = []
    for m in list(_LABEL_RE.finditer(text)) + list(_BARE_LABEL_RE.finditer(text)) + list(_NEWLINE_LABEL_RE.finditer(text)):
        i = m.start("ans") if "ans" in m.groupdict() else m.end()
        k = i
        while k < len(text) and text[k] in " \t*":
            k += 1
        span = _delimited(text, k)
        if span is not None:
            closes_line = _clean_inline(text[span[0]:].split("\n", 1)[0]) == ""
            if not closes_line and "\n" not in text[k : span[0]]:
                span = None  # "Answer: $x$ apples, since ...": the whole line, as before
        if span is not None:
            end, value = span
        elif m.re is not _LABEL_RE:
            continue  # "the answer $x$ satisfies ...": prose, not a label
        else:
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            value = _clean_inline(text[i:end])
        inner = _LABEL_RE.search(value[:40])  # "Final Answer: The final answer is $5$"
        if inner:
            rest = value[inner.start("ans"):]
            sub = _delimited(rest, 0)
            value = sub[1] if sub and not rest[sub[0]:].strip(" .") else _clean_inline(rest)
        value = _STATEMENT_FILLER_RE.sub("", value.strip()).strip()
        if value:
            out.append(Statement(m.start(), end, value))
    out.sort(key=lambda s: s.start)
    return out
