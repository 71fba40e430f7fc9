"""The `math` filter on classes of real completions it used to judge wrong (issue 15), each class
written as a generator over many numbers and forms, plus the rules for the ambiguous cases.
Runs the filter as the ready chain builds it (default params), and once through the chain itself."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from curator.engines.answers import answer_statements, final_answer, labelled_answer
from curator.engines.grading import pick_final_answer
from curator.judge.base import FilterContext, get_filter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _stop_workers():
    yield
    from curator.engines.verifypool import close_pools

    close_pools()


def run(rows: list[tuple[str, str]], **params) -> list[dict]:
    cls = get_filter("math")
    f = cls(cls.Params(**params), FilterContext())
    df = pl.DataFrame(
        {"key": [f"k{i}" for i in range(len(rows))], "gold": [g for g, _ in rows], "completion": [c for _, c in rows],
         "cot": [None] * len(rows), "prior_passed": [True] * len(rows)},
        schema={"key": pl.String, "gold": pl.String, "completion": pl.String, "cot": pl.String, "prior_passed": pl.Boolean},
    )
    out = f.apply(df)
    return [{**r, "details": json.loads(r["details"]) if r["details"] else None} for r in out.to_dicts()]


def assert_verdicts(cases: list[tuple[str, str, bool]], **params) -> list[dict]:
    out = run([(g, c) for g, c, _ in cases], **params)
    bad = [(g, c, w, o["reason"], o["details"]) for (g, c, w), o in zip(cases, out) if o["passed"] != w]
    assert not bad, f"{len(bad)}/{len(cases)} wrong, e.g. {bad[:3]}"
    return out


RNG = random.Random(15)
NUMBERS = sorted({RNG.randint(1_000, 9_999_999) for _ in range(12)} | {1000, 10_000, 1_000_000, 1_234_567})


# ---- thousands separators written with spaces ----------------------------------------------

SEPARATORS = ["\\,", " ", "\\ ", "\\;", "~", "{\\,}", "\u2009", "\u202f", "\u00a0"]


@pytest.mark.parametrize("sep", SEPARATORS, ids=[repr(s) for s in SEPARATORS])
def test_thousands_with_spaces(sep):
    cases = []
    for n in NUMBERS:
        shown = f"{n:,}".replace(",", sep)
        wrong = f"{n + 1:,}".replace(",", sep)
        for gold in (str(n), f"#### {n}", f"{n:,}"):
            cases.append((gold, f"The total is\n\n$$\\boxed{{{shown}}}$$", True))
            cases.append((gold, f"The total is\n\n$$\\boxed{{{wrong}}}$$", False))
    assert_verdicts(cases)


def test_lists_are_not_thousands():
    assert_verdicts([
        ("1, 2, 3", r"The roots are $\boxed{1, 2, 3}$.", True),
        ("123", r"The roots are $\boxed{1, 2, 3}$.", False),
        (r"\boxed{32349}", r"so $\boxed{32, 349}$", False),  # Math-Verify's own case
        ("2 3", r"$\boxed{23}$", False),
    ])


# ---- Unicode minus ---------------------------------------------------------------------------

TEMPLATES = ["The answer is {x}.", "So the final answer is {x}.", "Answer: {x}", "Therefore, the minimum value is {x}.",
             "The answer is ${x}$.", "Thus $\\boxed{{{x}}}$."]


@pytest.mark.parametrize("tmpl", TEMPLATES)
def test_unicode_minus(tmpl):
    cases = []
    for v in (5, 17, 250, 0.25, 3.5):
        cases.append((f"-{v:g}", "We simplify.\n\n" + tmpl.format(x=f"\u2212{v:g}"), True))
        cases.append((f"-{v:g}", "We simplify.\n\n" + tmpl.format(x=f"\u2212{v + 1:g}"), False))
        cases.append((f"{v:g}", "We simplify.\n\n" + tmpl.format(x=f"\u2212{v:g}"), False))
    for a, b in ((1, 3), (5, 12)):
        cases.append((f"-\\frac{{{a}}}{{{b}}}", "We simplify.\n\n" + tmpl.format(x=f"\u2212{a}/{b}"), True))
    assert_verdicts(cases)


# ---- boxed intermediate results and a later final statement ---------------------------------

STATEMENTS = ["The final answer is ${x}$.", "So the final answer is {x}.", "Therefore, the answer is $\\mathbf{{{x}}}$.",
              "**Final answer:** {x}", "Final Answer: The final answer is ${x}$. I hope it is correct.",
              "Wait, the answer is actually {x}."]


@pytest.mark.parametrize("stmt", STATEMENTS)
def test_later_final_statement_wins_over_an_intermediate_box(stmt):
    cases = []
    for inter, final in ((255, 10_455), (12, 7), (3, 4), (640, 1_024)):
        for fx in {str(final), f"{final:,}", f"{final:,}".replace(",", "{,}")}:
            comp = f"First the count is $\\boxed{{{inter}}}$, then we add the rest.\n\n" + stmt.format(x=fx)
            cases.append((str(final), comp, True))
            cases.append((str(inter), comp, False))
    out = assert_verdicts(cases)
    g = out[0]["details"]["graded"]
    assert g["from"] == "statement_after_box" and "another value" in g["why"]
    comp = cases[0][1]
    assert str(10_455) in comp[g["span"][0] : g["span"][1]].replace(",", "").replace("{}", "")


def test_the_reverse_a_box_corrected_later_is_rejected():
    cases = []
    for b in (5, 9, 31):
        for comp in (f"Listing them gives $\\boxed{{{b}}}$ cases, but one was counted twice, so the final answer is {b - 1}.",
                     f"This gives \\boxed{{{b}}}. Hmm, I double counted; removing it, the final answer is ${b - 1}$."):
            cases.append((str(b), comp, False))
            cases.append((str(b - 1), comp, True))
    assert_verdicts(cases)
    # The rule is a param: final_statement: false grades the last box whatever follows it.
    assert_verdicts([(g, c, not w) for g, c, w in cases], final_statement=False)


def test_restatements_and_checks_after_the_box_keep_the_box():
    cases = []
    for v in (7, 12, 144, 1_000):
        cases += [
            (str(v), f"Thus $\\boxed{{{v}}}$. So the final answer is {v}.", True),
            (str(v), f"Thus $\\boxed{{{v}}}$. So the final answer is {v:,}.", True),
            (str(v), f"so we get \\boxed{{{v}}} apples. Check: {v} \\times 2 = {2 * v}.", True),
            (str(2 * v), f"so we get \\boxed{{{v}}} apples. Check: {v} \\times 2 = {2 * v}.", False),
            (str(v), f"\\boxed{{{v}}}. Note the answer is not {v + 1}, as one might think.", True),
        ]
    out = assert_verdicts(cases)
    assert out[0]["details"]["graded"]["from"] == "boxed" and "restated" in out[0]["details"]["graded"]["why"]


def test_details_say_which_span_was_graded():
    comp = r"First $\boxed{3}$ and then $\boxed{5}$."
    d = run([("5", comp)])[0]["details"]
    assert d["graded"]["from"] == "boxed" and comp[d["graded"]["span"][0] : d["graded"]["span"][1]] == r"\boxed{5}"
    assert "intermediate" in d["graded"]["why"]
    d = run([("9", "No box here. The answer is 9.")])[0]["details"]
    assert d["graded"]["from"] == "statement" and d["extracted"] == "9"
    d = run([("9", "It is nine, I think, or maybe 9")])[0]["details"]
    assert d["graded"]["from"] == "completion"


# ---- power towers and huge expressions equal as written --------------------------------------

TOWERS = ["10^{10^{10}}", "2^{2^{2^{2^{2}}}}", "9^{9^{9}}", "3^{3^{3^{3}}}", "7^{7^{7^{7}}}", "10^{10^{100}}", "2^{3^{4^{5}}}",
          "\\frac{2^{2005}+1}{3 \\cdot 2^{2006}}", "(10^{10})^{10^{10}}", "10^{10^{10}} + 1", "\\dfrac{9^{9^{9}}}{2}"]


def test_towers_equal_as_written_never_reach_the_timeout():
    cases = []
    for t in TOWERS:
        cases.append((t, f"It grows fast:\n\n$$\\boxed{{{t}}}$$", True))
        cases.append((t, f"It grows fast: $\\boxed{{{t.replace('^{', '^{ ')}}}$", True))  # spacing
        cases.append((f"${t}$", f"So $\\boxed{{{t}}}$", True))  # a gold written with delimiters
    # A budget far below what sympy needs on these: they must be decided before Math-Verify.
    out = assert_verdicts(cases, timeout_s=0.2)
    assert all(o["details"].get("fast_path") == "identical" for o in out)


def test_unequal_towers_are_not_accepted():
    out = run([("10^{10^{10}}", r"$\boxed{10^{10^{11}}}$"), ("2^{2^{2^{2^{2}}}}", r"$\boxed{2^{2^{2^{2^{3}}}}}$")], timeout_s=1)
    assert [o["passed"] for o in out] == [False, False]


# ---- decimal commas --------------------------------------------------------------------------


def test_decimal_comma_golds():
    cases = []
    for a, b in ((1, "22"), (0, "111"), (0, "5"), (3, "14"), (1000, "99"), (49, "02"), (12, "5")):
        dec = f"{a},{b}"
        val = f"{a}.{b}"
        cases += [
            (dec, f"Rounded, the length is $\\boxed{{{val}}}$ m.", True),
            (dec, f"Rounded, the length is $\\boxed{{{dec}}}$ m.", True),
            (dec, f"Rounded, the length is $\\boxed{{{float(val) + 1:g}}}$ m.", False),
            (dec, f"Rounded, the length is $\\boxed{{{a}{b}}}$ m.", False),
            (val, f"Rounded, the length is $\\boxed{{{dec}}}$ m.", True),
        ]
    # Thousands stay thousands, lists stay lists.
    cases += [("1,234", r"So $\boxed{1234}$.", True), ("1,234", r"So $\boxed{1.234}$.", False), ("2, 3", r"$\boxed{2, 3}$", True)]
    assert_verdicts(cases)


# ---- `Answer $\n9\n$` forms --------------------------------------------------------------------

FORMS = ["Answer $\n{x}\n$", "Answer $ \n {x} \n $", "Answer: $\n{x}\n$", "**Answer** $\n{x}\n$", "Final answer:\n$$\n{x}\n$$",
         "The answer is\n$$\n{x}\n$$", "Answer \\( \n {x} \n \\)", "Answer \\[\n{x}\n\\]"]


@pytest.mark.parametrize("form", FORMS, ids=range(len(FORMS)))
def test_answer_spanning_lines_is_read_the_same_everywhere(form):
    cases = []
    for v in (9, 42, 1_000, 7.5):
        comp = f"We count the tiles and remove the corners.\n\n" + form.format(x=f"{v:g}")
        cases.append((f"{v:g}", comp, True))
        cases.append((f"{v + 1:g}", comp, False))
        # The helpers other filters use (numeric, majority, choice) read the same value.
        assert final_answer(comp) == f"{v:g}" and labelled_answer(comp) == f"{v:g}"
    assert_verdicts(cases)


def test_answer_without_label_is_not_a_statement():
    assert answer_statements("the answer $x$ satisfies the equation") == []
    assert pick_final_answer("we get x = 3 from the answer $x$ above, then more text") is None


# ---- ambiguous cases: a rule, a param, a test each --------------------------------------------


@pytest.mark.parametrize("v", [5, 12.5, 50, 75, 120])
def test_percent_rule(v):
    g_pct, n, frac = f"{v:g}\\%", f"{v:g}", f"{v / 100:g}"
    # Default `percent: either`: n% equals n and n/100, whichever side writes the %.
    assert_verdicts([(g_pct, f"$\\boxed{{{frac}}}$", True), (g_pct, f"$\\boxed{{{n}}}$", True), (g_pct, f"$\\boxed{{{g_pct}}}$", True),
                     (n, f"$\\boxed{{{g_pct}}}$", True), (frac, f"$\\boxed{{{g_pct}}}$", True), (g_pct, f"$\\boxed{{{v / 10:g}}}$", False)])
    assert_verdicts([(g_pct, f"$\\boxed{{{frac}}}$", False), (g_pct, f"$\\boxed{{{n}}}$", True), (n, f"$\\boxed{{{g_pct}}}$", True)],
                    percent="number")
    assert_verdicts([(g_pct, f"$\\boxed{{{frac}}}$", True), (g_pct, f"$\\boxed{{{n}}}$", False), (frac, f"$\\boxed{{{g_pct}}}$", True)],
                    percent="fraction")


@pytest.mark.parametrize("a,b", [(1, 3), (2, 3), (1, 7), (5, 6), (22, 7)])
def test_rounded_decimal_rule(a, b):
    # A decimal equals an exact value when they agree after rounding to `precision` decimals (6).
    assert_verdicts([(f"\\frac{{{a}}}{{{b}}}", f"$\\boxed{{{a / b:.6f}}}$", True), (f"\\frac{{{a}}}{{{b}}}", f"$\\boxed{{{a / b:.3f}}}$", False),
                     (f"\\frac{{{a}}}{{{b}}}", f"$\\boxed{{{a / b:.2f}}}$", False)])
    assert_verdicts([(f"\\frac{{{a}}}{{{b}}}", f"$\\boxed{{{a / b:.3f}}}$", True)], precision=3)


@pytest.mark.parametrize("v", [2, 3, 7, "\\sqrt{2}"])
def test_plus_minus_rule(v):
    # Default `plus_minus: both`: \pm a is the set {a, -a}; one sign is half the answer.
    assert_verdicts([(f"\\pm {v}", f"$x = \\boxed{{\\pm {v}}}$", True), (f"\\pm {v}", f"$x = \\boxed{{{v}, -{v}}}$", True),
                     (f"\\pm {v}", f"$x = \\boxed{{{v}}}$", False), (f"{v}", f"$x = \\boxed{{\\pm {v}}}$", False)])
    assert_verdicts([(f"\\pm {v}", f"$x = \\boxed{{{v}}}$", True), (f"\\pm {v}", f"$x = \\boxed{{-{v}}}$", True),
                     (f"\\pm {v}", f"$x = \\boxed{{\\pm {v}}}$", True), (f"\\pm {v}", f"$x = \\boxed{{{v}+1}}$", False)], plus_minus="either")


def test_params_validate():
    P = get_filter("math").Params
    p = P()
    assert (p.percent, p.plus_minus, p.final_statement) == ("either", "both", True)
    for bad in ({"percent": "half"}, {"plus_minus": "one"}):
        with pytest.raises(ValueError):
            P(**bad)


# ---- the same classes through the ready chain, as a run applies it ----------------------------


def test_through_the_shipped_chain():
    from curator.judge.chain import apply_steps, load_chain
    from curator.judge.runner import frame_from_records

    rows = [("1000", r"$\boxed{1\,000}$", True), ("-5", "The answer is \u22125.", True),
            ("10455", r"So $\boxed{255}$ per month. The final answer is $10,455$.", True),
            ("5", r"This gives $\boxed{5}$ cases, but one was counted twice, so the final answer is 4.", False),
            ("10^{10^{10}}", r"$\boxed{10^{10^{10}}}$", True), ("1,22", r"$\boxed{1.22}$", True), ("9", "Answer $\n9\n$", True)]
    recs = [{"key": f"k{i}", "gold": g, "completion": c, "cot": "Let me think it through.", "messages_json": "[]", "finish_reason": "stop"}
            for i, (g, c, _) in enumerate(rows)]
    chain = load_chain(ROOT / "filters" / "r1-math.yaml", FilterContext(base_dir=ROOT))
    try:
        frames = apply_steps(chain.sample_steps(), frame_from_records(recs))
        math = frames[[s.name for s in chain.sample_steps()].index("math")]
        assert math["passed"].to_list() == [w for _, _, w in rows], math.to_dicts()
    finally:
        chain.close()
