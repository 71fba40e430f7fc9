"""The `numeric`, `choice` and `exact` filters."""

from __future__ import annotations

import json
from fractions import Fraction

import polars as pl
import pytest

from curator.engines.answers import choice_letter, last_number, normalize_text, numbers, parse_number
from curator.judge.base import FilterContext, get_filter


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [f"k{i}" for i in range(len(rows))],
            "gold": [r.get("gold") for r in rows],
            "completion": [r.get("completion") for r in rows],
            "row_json": [json.dumps(r["row"]) if "row" in r else None for r in rows],
            "prior_passed": [True] * len(rows),
        },
        schema={"key": pl.String, "gold": pl.String, "completion": pl.String, "row_json": pl.String, "prior_passed": pl.Boolean},
    )


def run(name: str, rows: list[dict], **params) -> list[dict]:
    cls = get_filter(name)
    out = cls(cls.Params(**params), FilterContext()).apply(frame(rows))
    assert out.columns == ["key", "passed", "reason", "details"] and out.height == len(rows)
    return [{**r, "details": json.loads(r["details"]) if r["details"] else None} for r in out.to_dicts()]


# ---------------------------------------------------------------------------------------------
# numbers


def test_numbers_reads_common_forms():
    def v(s):
        n = last_number(s)
        return None if n is None else n.value

    assert v("total: $1,234.50") == Fraction("1234.5")
    assert v("costs \\$72.") == 72
    assert v("it fell by 45%") == 45 and last_number("45%").percent
    assert v("x = -3.5") == Fraction("-3.5")
    assert v("about 1.2e-5 m") == Fraction(12, 10**6)
    assert v("1.2 \\times 10^{-5}") == Fraction(12, 10**6)
    assert v("so \\frac{3}{4} of them") == Fraction(3, 4)
    assert v("-\\dfrac{1}{2}") == Fraction(-1, 2)
    assert v("3/4 cup") == Fraction(3, 4)
    assert v("14{,}916") == 14916
    assert v("no digits") is None
    assert [n.value for n in numbers("1, 2 and 3")] == [1, 2, 3]
    assert parse_number("72 \\text{ apples}").value == 72
    assert parse_number("x_2 = 5").value == 5


def test_numeric_filter():
    rows = [
        {"gold": "#### 1234", "completion": "So she has $1,234 left."},  # 0
        {"gold": "#### 72", "completion": "The answer is \\boxed{72}. Check: 72 \\times 2 = 144."},  # 1 boxed beats last number
        {"gold": "45", "completion": "**Answer:** 45%"},  # 2
        {"gold": "0.45", "completion": "It is 45%."},  # 3 percent as a fraction
        {"gold": "0.75", "completion": "\\boxed{\\frac{3}{4}}"},  # 4
        {"gold": "-7", "completion": "x = -7"},  # 5
        {"gold": "#### 72", "completion": "I think 73."},  # 6 wrong
        {"gold": "5", "completion": "I cannot tell."},  # 7 no number
        {"gold": None, "completion": "5"},  # 8
        {"gold": "five", "completion": "5"},  # 9 unreadable gold
        {"gold": "3.14159", "completion": "\\boxed{3.1416}"},  # 10 within rel_tol? no (default 1e-6)
        {"gold": "#### 1,234", "completion": "Final answer: 1234"},  # 11
        {"gold": "18.90", "completion": "The total is \\$18.9."},  # 12
    ]
    out = run("numeric", rows)
    got = [(r["passed"], r["reason"]) for r in out]
    assert got == [
        (True, None), (True, None), (True, None), (True, None), (True, None), (True, None),
        (False, "wrong_answer"), (False, "no_answer"), (False, "no_gold"), (False, "bad_gold"),
        (False, "wrong_answer"), (True, None), (True, None),
    ], got
    assert out[6]["details"] == {"gold": "72", "pred": "73", "extracted": "73"}
    # Tolerances are params.
    assert run("numeric", rows[10:11], rel_tol=1e-4)[0]["passed"]
    assert not run("numeric", rows[3:4], percent_as_fraction=False)[0]["passed"]
    assert run("numeric", rows[8:9], missing_gold="accept")[0]["passed"]


# ---------------------------------------------------------------------------------------------
# choice


@pytest.mark.parametrize(
    "text,letter",
    [
        ("After checking each option, the answer is (C).", "C"),
        ("the correct answer is: B", "B"),
        ("Answer: D", "D"),
        ("**Answer:** C", "C"),
        ("answer: c", "C"),
        ("So we pick $\\boxed{C}$.", "C"),
        ("\\boxed{\\text{(B)}}", "B"),
        ("\\boxed{B. 12 apples}", "B"),
        ("Therefore the right one is **C**.", "C"),
        ("Options A and B fail, so:\n\n**(D) 42**", "D"),
        ("A and B are wrong.\n\nC", "C"),
        ("The best choice is E", "E"),
        ("A good first step is to factor. It does not settle it.", None),  # the article "A"
        ("The answer is 12.", None),
        ("The answer is (F).", None),  # not an option letter
    ],
)
def test_choice_letter(text, letter):
    assert choice_letter(text) == letter


def test_choice_filter():
    row = {"question": "Capital of France?", "choices": ["Berlin", "Madrid", "Paris", "Rome"]}
    rows = [
        {"gold": "C", "completion": "The answer is (C).", "row": row},  # 0
        {"gold": "(C)", "completion": "\\boxed{C}", "row": row},  # 1
        {"gold": "Paris", "completion": "**C**", "row": row},  # 2 gold as option text
        {"gold": "Paris", "completion": "The answer is \\boxed{\\text{Paris}}", "row": row},  # 3 answer as option text
        {"gold": "C", "completion": "Answer: B", "row": row},  # 4 wrong
        {"gold": "C", "completion": "I am not sure.", "row": row},  # 5 no answer
        {"gold": "Lyon", "completion": "C", "row": row},  # 6 gold is not an option
        {"gold": None, "completion": "C"},  # 7
        {"gold": "c", "completion": "Final answer: C"},  # 8 lowercase gold letter, no row
        {"gold": "B", "completion": "A", "row": {"options": {"A": "x", "B": "y"}}},  # 9
    ]
    out = run("choice", rows)
    got = [(r["passed"], r["reason"]) for r in out]
    assert got == [
        (True, None), (True, None), (True, None), (True, None), (False, "wrong_answer"), (False, "no_answer"),
        (False, "bad_gold"), (False, "no_gold"), (True, None), (False, "wrong_answer"),
    ], got
    assert out[4]["details"] == {"gold": "C", "pred": "B", "extracted": "B"}


def test_choice_index_gold_and_letters():
    row = {"choices": {"label": ["A", "B", "C", "D"], "text": ["red", "green", "blue", "black"]}}
    out = run("choice", [{"gold": "2", "completion": "The answer is C", "row": row}], index_base=0)
    assert out[0]["passed"]  # MMLU-style 0-based index
    assert run("choice", [{"gold": "3", "completion": "The answer is C", "row": row}], index_base=1)[0]["passed"]
    out = run("choice", [{"gold": "2", "completion": "The answer is C", "row": row}])
    assert out[0]["reason"] == "bad_gold"  # without index_base a number is not a letter
    assert run("choice", [{"gold": "blue", "completion": "(C)", "row": row}])[0]["passed"]
    out = run("choice", [{"gold": "G", "completion": "Answer: G"}], letters="ABCDEFGHIJ")
    assert out[0]["passed"]
    with pytest.raises(Exception):
        get_filter("choice").Params(letters="AAB")


# ---------------------------------------------------------------------------------------------
# exact


def test_normalize_text():
    assert normalize_text("  **Paris.** ") == "paris"
    assert normalize_text("$\\text{Paris}$") == "paris"
    assert normalize_text('"New   York"') == "new york"
    assert normalize_text("Paris", ignore_case=False) == "Paris"


def test_exact_filter():
    rows = [
        {"gold": "Paris", "completion": "The capital is Paris. So the answer is \\boxed{\\text{Paris}}."},  # 0
        {"gold": "paris", "completion": "Answer: **Paris.**"},  # 1
        {"gold": "Paris", "completion": "Answer: Lyon"},  # 2
        {"gold": "Paris", "completion": ""},  # 3
        {"gold": None, "completion": "Paris"},  # 4
    ]
    out = run("exact", rows)
    assert [(r["passed"], r["reason"]) for r in out] == [(True, None), (True, None), (False, "wrong_answer"), (False, "no_answer"), (False, "no_gold")]
    # case-sensitive
    assert not run("exact", rows[1:2], ignore_case=False)[0]["passed"]


def test_exact_pattern():
    rows = [
        {"gold": "yes", "completion": "VERDICT: no\n...\nVERDICT: Yes"},  # last match wins
        {"gold": "yes", "completion": "no verdict here"},
        {"gold": "#### 42", "completion": "RESULT=42"},
    ]
    out = run("exact", rows, pattern=r"VERDICT:\s*(\w+)")
    assert [(r["passed"], r["reason"]) for r in out][:2] == [(True, None), (False, "no_answer")]
    assert run("exact", rows[2:], pattern=r"RESULT=(?P<v>\d+)", group="v")[0]["passed"]
    with pytest.raises(Exception):
        get_filter("exact").Params(pattern=r"VERDICT: \w+")  # no group 1
    with pytest.raises(Exception):
        get_filter("exact").Params(pattern=r"(unclosed")
