"""Math-Verify in long-lived worker processes.

Math-Verify's timeouts use `signal.alarm`, which only works in a process's main thread; sympy can
also hang in C code where no signal gets through. So every check runs here, in the main thread of
a worker process, and the parent (`VerifyPool`) enforces its own per-item deadline: a worker stuck
past it is killed and replaced, and the item comes back as a timeout.

`judge()` is the comparison itself (gold text vs predicted text); it wraps Math-Verify's
`parse` + `verify` with fixes for errors its issue tracker reports:
- markdown bold glued to the answer (`**73**`, `**-3/4**`; issue #76) is unwrapped before parsing;
- `\\mathrm{e}` / `\\text{e}` (Euler's number) no longer cuts the parse (`1-1/\\mathrm{e}` parsed as `1`; #14);
- tiny or exact values are not equal just because they round alike (`1/2^99` vs `1/2^98`,
  `1/2004!` vs `1/2006!`; #14): exact values must be equal exactly, floats to the digits they carry;
- a bare equation without `$` (`3x-y+13=0`) is parsed as the equation, not its right-hand side,
  so two different equations no longer compare equal (#60);
- a parse whose normalised text has unbalanced braces (a cut-off expression) is not trusted;
- `\\fbox{}` is read like `\\boxed{}`; a boxed answer Math-Verify cannot read is retried without its
  units / currency markup.
Importing this module does not import math-verify; starting a `VerifyPool` does (workers are
forked from the parent, so they start in milliseconds with it already loaded).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

# --------------------------------------------------------------------------------------------
# text preparation (pure Python)

_EULER_RE = re.compile(r"\\(?:mathrm|text|textrm|operatorname|mathit)\s*\{\s*e\s*\}")
_ESC_DOLLAR_RE = re.compile(r"\\\$(?=\s*\d)")
_DELIMS = ("$", "\\(", "\\[", "\\boxed", "\\fbox", "\\begin")
_PLAIN_NUMBER_RE = re.compile(r"[-+−]?\s*[$€£]?\s*[\d.,\s]+\s*(?:%|\\%)?")
_ALLOWED_WORDS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "sqrt", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "max", "min", "gcd", "lcm", "mod", "det", "inf", "frac", "infty", "pi",
}


def _balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def is_bare_math(text: str) -> bool:
    """A short answer written without math delimiters that is more than a plain number:
    `3x-y+13=0`, `\\frac{\\sqrt3}{2}`, `x^2+1`, `(1, 2)`. Prose ("the answer is 5") is not."""
    t = text.strip()
    if not t or len(t) > 200 or "\n" in t or any(d in t for d in _DELIMS):
        return False
    if _PLAIN_NUMBER_RE.fullmatch(t):
        return False
    body = re.sub(r"\\(?:text|mathrm|textbf|mathbf|operatorname|mbox)\s*\{[^{}]*\}", " ", t)
    body = re.sub(r"\\[A-Za-z]+", " ", body)
    for w in re.findall(r"[A-Za-z]{3,}", body):
        if w.lower() not in _ALLOWED_WORDS:
            return False
    return True


def prepare_text(text: str, *, latex: bool) -> str:
    """What is handed to Math-Verify's `parse`."""
    from curator.engines.answers import strip_markdown_bold

    t = text or ""
    t = t.replace("\u2212", "-")  # Unicode minus: Math-Verify's number patterns want ASCII
    t = t.replace("\\fbox", "\\boxed")
    t = strip_markdown_bold(t)
    t = _EULER_RE.sub("e", t)
    t = _ESC_DOLLAR_RE.sub(" ", t)  # "\\$72": an escaped dollar hides the number from Math-Verify
    if latex and is_bare_math(t):
        t = "$" + t.strip().rstrip(".").strip() + "$"
    return t


_THOUSANDS_RE = re.compile(r"[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")  # `0,111` is a decimal comma
_SIMPLE_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)\s*(?:%|\\%)?")


def _bare_gold(g: str, latex: bool) -> str:
    """A gold that is only an answer: `1,234` is a number, `2, 3` / `1,2,3` a list, anything
    else without delimiters LaTeX (`\\frac{\\sqrt3}{2}`, `y=2x+3`)."""
    t = g.strip()
    if any(d in t for d in _DELIMS):
        return t
    if _THOUSANDS_RE.fullmatch(t):
        return t.replace(",", "")
    if _SIMPLE_NUMBER_RE.fullmatch(t) or not latex:
        return t
    return "$" + t.rstrip(".").strip() + "$"


_UNIT_RE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")


def _clean_boxed(content: str) -> str:
    c = content
    c = _UNIT_RE.sub(" ", c)
    c = c.replace("\\$", " ").replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "")
    c = c.replace("\\,", "").replace("\\!", "").replace("\\ ", " ").replace("{,}", ",")
    c = re.sub(r"\s+", " ", c).strip()
    return c


# --------------------------------------------------------------------------------------------
# the comparison (runs in a worker's main thread)

_TIMEOUT_FLAG = threading.local()


class _TimeoutLogHandler(logging.Handler):
    """Math-Verify swallows its own timeouts and only logs "Timeout during ..."; notice them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if str(record.getMessage()).startswith("Timeout during"):
                _TIMEOUT_FLAG.hit = True
        except Exception:
            pass


_LOG_SETUP = False


def _setup_logging() -> None:
    global _LOG_SETUP
    if _LOG_SETUP:
        return
    lg = logging.getLogger("math_verify")
    lg.addHandler(_TimeoutLogHandler(level=logging.WARNING))
    lg.setLevel(logging.WARNING)
    lg.propagate = False
    _LOG_SETUP = True


def _targets(extraction: tuple[str, ...]):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    out = []
    for e in extraction:
        if e == "latex":
            # The boxed answer first: a teacher asked for \boxed{} puts its final answer there.
            out.append(LatexExtractionConfig(boxed_match_priority=0))
        elif e == "expr":
            out.append(ExprExtractionConfig())
        else:
            raise ValueError(f"unknown extraction {e!r}")
    return out


def _float_digits(x) -> int:
    """Significant digits a parsed float literal carries (`9.54e-7` -> 3)."""
    try:
        r = repr(float(x))
    except Exception:
        return 15
    mant = r.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0").rstrip("0")
    return max(1, len(mant))


def _numeric_guard(g, p, precision: int) -> bool:
    """False when two values Math-Verify called equal are numbers that differ (issue #14: after
    rounding to `precision` decimals every tiny value equals 0, and `evalf(chop=True)` calls
    `1/2^99 - 1/2^98` zero). Exact values must agree to 40 significant digits. With a float
    involved, agreement is relative, to the significant digits the gold's float carries (or, for an
    exact gold, the prediction's, which must carry at least 3), at most `precision`."""
    try:
        from sympy import Expr, Float, UnevaluatedExpr, nan, oo, zoo

        if not isinstance(g, Expr) or not isinstance(p, Expr):
            return True
        if g.free_symbols or p.free_symbols:
            return True
        for e in (g, p):
            if e.has(UnevaluatedExpr) or e.has(oo) or e.has(-oo) or e.has(zoo) or e.has(nan):
                return True  # percentages and infinities: Math-Verify's own rules apply
        gv = g.doit().evalf(60)
        pv = p.doit().evalf(60)
        if not (gv.is_number and pv.is_number):
            return True
        if not (gv.is_real and pv.is_real):
            gr, gi = gv.as_real_imag()
            pr, pi_ = pv.as_real_imag()
            return _numeric_guard(gr, pr, precision) and _numeric_guard(gi, pi_, precision)
        gv, pv = Float(gv, 60), Float(pv, 60)
        scale = max(abs(gv), abs(pv))
        diff = abs(gv - pv)
        if scale == 0 or diff == 0:
            return True
        g_floats = list(g.atoms(Float))
        p_floats = list(p.atoms(Float))
        if not g_floats and not p_floats:
            return bool(diff <= scale * Float("1e-40", 60))
        if diff <= scale * Float("1e-12", 60):
            return True  # binary float noise: 0.1 vs 1/10
        if g_floats:
            digits = min(_float_digits(f) for f in g_floats)
        else:
            digits = min(_float_digits(f) for f in p_floats)
            if digits < min(3, precision):
                return False
        digits = max(1, min(digits, precision))
        ref = abs(gv) if gv != 0 else scale
        return bool(diff <= ref * Float(0.5 * 10 ** (1 - digits), 60) * (1 + Float("1e-9")))
    except Exception:
        return True


def _to_str(x: Any) -> str:
    try:
        s = str(x)
    except Exception:
        s = repr(type(x))
    return s if len(s) <= 500 else s[:497] + "..."


def _parsed_ok(parsed: list, source: str) -> list:
    """Drop a sympy parse whose normalised text has unbalanced braces although the source's are
    balanced: Math-Verify's normalisation cut the expression (as `\\mathrm{e}` did, issue #14)."""
    if len(parsed) == 2 and isinstance(parsed[1], str) and not isinstance(parsed[0], str) and _balanced(source):
        if not _balanced(parsed[1]):
            return [parsed[1]]
    return parsed


def judge(
    gold: str,
    pred: str,
    *,
    extraction: tuple[str, ...] | list[str] = ("latex", "expr"),
    precision: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
    timeout_s: float = 5.0,
    gold_is_answer: bool = False,
    gold_alts: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Compare a gold text with a predicted text (both may be whole solutions).

    gold_is_answer: the gold is a bare answer (`\\frac{1}{2}`, `72`, `y=2x+3`), read as LaTeX
    even without `$` delimiters.
    gold_alts: other bare readings of the gold (a decimal comma `1,22` -> `1.22`, one sign of
    `\\pm a`), tried in the same time budget when the gold as written does not match.
    Returns {"status": "ok"|"no_answer"|"bad_gold"|"timeout", "match": bool,
             "gold_parsed", "pred_parsed", "extracted"}."""
    from math_verify import parse, verify

    from curator.engines.answers import last_boxed

    _setup_logging()
    extraction = tuple(extraction)
    latex = "latex" in extraction
    targets = _targets(extraction)
    deadline = time.monotonic() + float(timeout_s)
    _TIMEOUT_FLAG.hit = False

    def budget() -> int | None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        return max(1, math.ceil(left))

    def result(status: str, match: bool = False, G=None, P=None, extracted: str = "") -> dict[str, Any]:
        return {
            "status": status,
            "match": bool(match),
            "gold_parsed": _to_str(G[0]) if G else "",
            "pred_parsed": _to_str(P[0]) if P else "",
            "extracted": extracted,
        }

    if gold_alts:
        first = judge(gold, pred, extraction=extraction, precision=precision, strict=strict,
                      allow_set_relation_comp=allow_set_relation_comp, timeout_s=timeout_s, gold_is_answer=gold_is_answer)
        if first["match"]:
            return first
        for alt in gold_alts:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r = judge(alt, pred, extraction=extraction, precision=precision, strict=strict,
                      allow_set_relation_comp=allow_set_relation_comp, timeout_s=left, gold_is_answer=True)
            if r["match"]:
                return {**r, "gold_reading": alt}
        return first

    gtext = prepare_text(gold, latex=latex)
    if gold_is_answer:
        gtext = _bare_gold(gtext, latex)
    ptext = prepare_text(pred, latex=latex)

    b = budget()
    if b is None:
        return result("timeout")
    G = _parsed_ok(parse(gtext, targets, parsing_timeout=b), gtext)
    if _TIMEOUT_FLAG.hit or budget() is None:
        return result("timeout", G=G)
    if not G:
        return result("bad_gold")

    P = _parsed_ok(parse(ptext, targets, parsing_timeout=budget() or 1), ptext)
    if _TIMEOUT_FLAG.hit:
        return result("timeout", G=G)
    extracted = P[-1] if P and isinstance(P[-1], str) else (_to_str(P[0]) if P else "")
    if latex and (not P or all(isinstance(x, str) for x in P)):
        # A boxed answer Math-Verify could not read: retry without units / currency markup.
        boxed = last_boxed(ptext)
        if boxed:
            cleaned = _clean_boxed(boxed)
            if cleaned and cleaned != boxed and budget() is not None:
                src = "$\\boxed{" + cleaned + "}$"
                P2 = _parsed_ok(parse(src, targets, parsing_timeout=budget() or 1), src)
                if P2 and not isinstance(P2[0], str):
                    P = P2
                    extracted = boxed
    if not P:
        return result("no_answer", G=G)

    timed_out = False
    for g in G:
        for p in P:
            b = budget()
            if b is None:
                return result("timeout", G=G, P=P, extracted=extracted)
            _TIMEOUT_FLAG.hit = False
            ok = verify(g, p, float_rounding=precision, strict=strict, allow_set_relation_comp=allow_set_relation_comp, timeout_seconds=b)
            if _TIMEOUT_FLAG.hit:
                timed_out = True
            if ok and _numeric_guard(g, p, precision):
                return result("ok", True, G, P, extracted)
    if timed_out:
        return result("timeout", G=G, P=P, extracted=extracted)
    return result("ok", False, G, P, extracted)
