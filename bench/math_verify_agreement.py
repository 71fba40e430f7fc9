"""Agreement with Math-Verify's own test suite: ours vs Math-Verify alone vs a naive checker.

This measures the comparison `answers_match` ALONE, called with each test's own settings on the
prediction as written: not the `math` filter as shipped (its answer extraction, the chain's
default params). For the shipped path use `bench/filter_fidelity.py --sets mv`.

    python bench/math_verify_agreement.py [--cases PATH] [--workers N] [--show-disagreements]

Cases: `tests/data/math_verify_cases.jsonl` (shipped copy), else `../shared/benchmarks/...`.
Each line is one parametrized test of huggingface/Math-Verify: `func` (test function) and
`params` (`gold`, `pred`, `expected`, sometimes `precision` / `strict` / `allow_set_relation_comp`).
A case is *adaptable* when it has gold, pred and expected; the test function fixes the extraction
settings and float precision (see `case_settings`). The `test_yujianll.py` cases carry `result`
instead of `expected` (issue #14's examples) and are reported apart.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASE_PATHS = [
    ROOT / "tests" / "data" / "math_verify_cases.jsonl",
    ROOT.parent / "shared" / "benchmarks" / "math_verify_cases.jsonl",
]

LATEX_ONLY = {"test_latex_notation", "test_latex_notation_math", "test_relations_math", "test_matrix_extraction", "test_set_rel_assymetry"}
EXPR_ONLY = {"test_number_extraction"}
PRECISION_5 = {"test_float_precision", "test_sqrt_precision", "test_symbols"}


def find_cases() -> Path:
    for p in CASE_PATHS:
        if p.exists():
            return p
    raise FileNotFoundError("math_verify_cases.jsonl not found in: " + ", ".join(map(str, CASE_PATHS)))


def load_cases(path: Path | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(adaptable cases, issue-#14 cases with a `result` label)."""
    rows = [json.loads(line) for line in (path or find_cases()).read_text(encoding="utf-8").splitlines() if line.strip()]
    adaptable = [r for r in rows if {"gold", "pred", "expected"} <= set(r["params"])]
    labelled = [r for r in rows if {"gold", "pred", "result"} <= set(r["params"])]
    return adaptable, labelled


def case_settings(case: dict[str, Any]) -> dict[str, Any]:
    """The comparison settings a test function implies."""
    f, p = case["func"], case["params"]
    extraction = ("expr",) if f in EXPR_ONLY else ("latex",) if f in LATEX_ONLY else ("latex", "expr")
    return {
        "extraction": extraction,
        "precision": int(p.get("precision", 5 if f in PRECISION_5 else 6)),
        "strict": bool(p.get("strict", True)),
        "allow_set_relation_comp": bool(p.get("allow_set_relation_comp", False)),
    }


def expected(case: dict[str, Any]) -> bool:
    p = case["params"]
    return bool(int(p["expected"] if "expected" in p else p["result"]))


# ---------------------------------------------------------------------------------------------
# the three checkers


def ours(cases: list[dict[str, Any]], workers: int | None = None) -> list[bool]:
    from curator.judge.filters.math_answer import answers_match_many

    items = [{"gold": c["params"]["gold"], "pred": c["params"]["pred"], **case_settings(c), "timeout_s": 10.0} for c in cases]
    return [r["match"] for r in answers_match_many(items, workers=workers)]


def _mv_alone(args: tuple[str, str, dict[str, Any]]) -> bool:
    gold, pred, s = args
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    t = [LatexExtractionConfig(boxed_match_priority=0) if e == "latex" else ExprExtractionConfig() for e in s["extraction"]]
    return bool(verify(parse(gold, t), parse(pred, t), float_rounding=s["precision"], strict=s["strict"], allow_set_relation_comp=s["allow_set_relation_comp"]))


def math_verify_alone(cases: list[dict[str, Any]], workers: int | None = None) -> list[bool]:
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(_mv_alone, [(c["params"]["gold"], c["params"]["pred"], case_settings(c)) for c in cases], chunksize=8))


def _naive_answer(text: str) -> str | None:
    from curator.engines.answers import last_boxed

    b = last_boxed(text)
    if b is not None:
        return b
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return nums[-1] if nums else None


def _naive_norm(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d[\d,]*(?:\.\d+)?", s):
        try:
            return str(Fraction(s.replace(",", "")))
        except ValueError:
            pass
    return s


def naive(cases: list[dict[str, Any]]) -> list[bool]:
    """Last `\\boxed{}` else last number, compared as normalised strings / exact numbers."""
    out = []
    for c in cases:
        g, p = _naive_answer(c["params"]["gold"]), _naive_answer(c["params"]["pred"])
        out.append(g is not None and p is not None and _naive_norm(g) == _naive_norm(p))
    return out


# Errors Math-Verify's issue tracker reports, with the right verdict (gold, pred, equal?).
KNOWN_ERRORS: list[tuple[str, str, bool]] = [
    ("$73$", "Thus the number is **73**.\n\n---\n\nFinal Answer: **73**", True),  # 76
    ("-3/4", "Final answer: **-3/4**", True),  # 76
    (r"$\frac{1}{2^{99}}$", r"$\frac{1}{2^{98}}$", False),  # 14
    (r"$\frac{1}{2004!}$", r"$\frac{1}{2006!}$", False),  # 14
    (r"$\frac{2^{2005}+1}{3 \cdot 2^{2006}}$", r"$\frac{1}{3 \cdot 2^{2006}}$", False),  # 14
    ("0.0000012", "0.0000013", False),  # 14 (tiny floats)
    (r"$1 - \frac{1}{\mathrm{e}}$", r"$1 + \frac{1}{\mathrm{e}}$", False),  # 14
    (r"$1 - \frac{1}{\mathrm{e}}$", r"$1 - e^{-1}$", True),  # 14
    ("3*x-1*y+13=0", "3x + 4y + 14=0", False),  # 60
    ("72", "The total is \\$72.", True),  # escaped dollar
    (r"$\frac{1}{2^{99}}$", r"$2^{-99}$", True),
    (r"$\frac{1}{10}$", "0.1", True),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--show-disagreements", action="store_true")
    a = ap.parse_args(argv)
    path = a.cases or find_cases()
    cases, labelled = load_cases(path)
    print(f"cases: {path} ({len(cases)} adaptable, {len(labelled)} issue-#14 cases with a 'result' label)")
    print("NOTE: measures answers_match alone (each test's own settings, no answer extraction, not the chain's "
          "default params); the filter as shipped: bench/filter_fidelity.py --sets mv")
    want = [expected(c) for c in cases]
    t0 = time.monotonic()
    mine = ours(cases, a.workers)
    t_ours = time.monotonic() - t0
    mv = math_verify_alone(cases, a.workers)
    nv = naive(cases)
    n = len(cases)
    for name, got in (("curator answers_match alone", mine), ("math-verify alone", mv), ("naive last-boxed/last-number", nv)):
        agree = sum(g == w for g, w in zip(got, want))
        print(f"{name:30s} {agree:4d}/{n} agree")
    print(f"(curator: {t_ours:.1f}s for {n} cases)")
    if a.show_disagreements:
        for c, g, w in zip(cases, mine, want):
            if g != w:
                print("  DISAGREE", c["nodeid"][:150], "ours", int(g), "expected", int(w))
    from curator.judge.filters.math_answer import answers_match_many

    default = {"extraction": ("latex", "expr"), "precision": 6, "strict": True, "allow_set_relation_comp": False}
    mine_k = [r["match"] for r in answers_match_many([{"gold": g, "pred": p, **default} for g, p, _ in KNOWN_ERRORS], workers=a.workers)]
    mv_k = [_mv_alone((g, p, default)) for g, p, _ in KNOWN_ERRORS]
    want_k = [w for _, _, w in KNOWN_ERRORS]
    print(f"known Math-Verify errors (issues #14, #60, #76): curator {sum(m == w for m, w in zip(mine_k, want_k))}/{len(want_k)}, "
          f"math-verify {sum(m == w for m, w in zip(mv_k, want_k))}/{len(want_k)} right")
    if labelled:
        want_l = [expected(c) for c in labelled]
        mine_l = ours(labelled, a.workers)
        mv_l = [
            _mv_alone((c["params"]["gold"], c["params"]["pred"], {"extraction": ("latex", "expr"), "precision": 6, "strict": True, "allow_set_relation_comp": False}))
            for c in labelled
        ]
        print(f"issue-#14 cases: curator {sum(g == w for g, w in zip(mine_l, want_l))}/{len(labelled)}, "
              f"math-verify {sum(g == w for g, w in zip(mv_l, want_l))}/{len(labelled)} agree with the file's labels")
        for c, g, m, w in zip(labelled, mine_l, mv_l, want_l):
            if g != w or m != w:
                p = c["params"]
                print(f"  {p['gold']!r} vs {p['pred']!r}: label {int(w)}, curator {int(g)}, math-verify {int(m)}")
    return 0 if all(g == w for g, w in zip(mine, want)) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
