"""The `majority_vote` filter: self-consistency over the samples of each prompt."""

import json

import polars as pl
import pytest

from curator.judge.base import FilterContext, get_filter
from curator.judge.filters.majority import extract_answer, normalize_answer


def judge(rows, prior=None, **params):
    cls = get_filter("majority_vote")
    assert cls.scope == "dataset"
    f = cls(cls.Params(**params), FilterContext())
    base = {"gold": None, "finish_reason": "stop"}
    df = pl.DataFrame([{**base, "key": f"k{i}", **r} for i, r in enumerate(rows)], schema_overrides={"gold": pl.String})
    df = df.with_columns(pl.Series("prior_passed", prior if prior is not None else [True] * df.height))
    out = f.apply(df)
    assert out["key"].to_list() == df["key"].to_list()
    return [
        {"passed": r["passed"], "reason": r["reason"], "details": json.loads(r["details"]) if r["details"] else None}
        for r in out.to_dicts()
    ]


def s(pid, completion, **kw):
    return {"prompt_id": pid, "completion": completion, **kw}


def test_three_of_four_agree():
    got = judge(
        [
            s("p1", "So the probability is $\\boxed{\\dfrac{1}{2}}$."),
            s("p1", "The answer is \\boxed{0.5}"),
            s("p1", "Thus \\boxed{\\frac{1}{2}}."),
            s("p1", "Hence \\boxed{\\frac{1}{3}}."),
        ]
    )
    assert [g["passed"] for g in got] == [True, True, True, False]
    assert got[3]["reason"] == "minority_answer"
    assert got[3]["details"] == {"answer": "1/3", "majority": "1/2", "agreement": 0.75, "votes": 4, "answer_raw": "\\frac{1}{3}"}
    assert got[0]["details"]["majority"] == "1/2" and got[0]["details"]["agreement"] == 0.75


def test_tie_has_no_majority():
    got = judge([s("p", "\\boxed{3}"), s("p", "\\boxed{3}"), s("p", "\\boxed{4}"), s("p", "\\boxed{4}")])
    assert [g["reason"] for g in got] == ["low_agreement"] * 4
    assert got[0]["details"]["tie"] is True and got[0]["details"]["majority"] is None


def test_no_answers():
    got = judge([s("p", "I am not sure how to proceed."), s("p", ""), s("p", None)])
    assert [g["reason"] for g in got] == ["no_answer"] * 3
    assert got[0]["details"] == {"answer": None, "majority": None, "agreement": 0.0, "votes": 0}


def test_some_without_answer():
    got = judge([s("p", "\\boxed{7}"), s("p", "\\boxed{7}"), s("p", "no idea")])
    assert [g["reason"] for g in got] == [None, None, "no_answer"]
    assert got[2]["details"]["majority"] == "7" and got[2]["details"]["votes"] == 2


def test_min_votes_and_min_agreement():
    # One valid vote is not a majority.
    got = judge([s("p", "\\boxed{7}"), s("p", "nothing here")])
    assert got[0]["reason"] == "low_agreement" and got[0]["details"]["votes"] == 1
    assert judge([s("p", "\\boxed{7}")], min_votes=1)[0]["passed"]
    # 2 of 4 (2, 1, 1): agreement 0.5 passes the default, not 0.6.
    rows = [s("p", "\\boxed{1}"), s("p", "\\boxed{1}"), s("p", "\\boxed{2}"), s("p", "\\boxed{3}")]
    assert [g["reason"] for g in judge(rows)] == [None, None, "minority_answer", "minority_answer"]
    assert [g["reason"] for g in judge(rows, min_agreement=0.6)] == ["low_agreement"] * 4


def test_prompts_are_voted_separately_and_order_kept():
    rows = [s("a", "\\boxed{1}"), s("b", "\\boxed{2}"), s("a", "\\boxed{1}"), s("b", "\\boxed{2}"), s("b", "\\boxed{5}"), s("a", "\\boxed{9}")]
    got = judge(rows)
    assert [g["reason"] for g in got] == [None, None, None, None, "minority_answer", "minority_answer"]
    assert got[1]["details"]["majority"] == "2"


def test_last_number_fallback_and_formats():
    rows = [
        s("p", "Adding them up, Tom has 12 apples."),
        s("p", "So the total is 12.0"),
        s("p", "**Answer:** $12$"),
        s("p", "Final Answer: \\boxed{12\\text{ apples}}"),
        s("p", "There are 1,2 and 13 left, so 13."),
    ]
    got = judge(rows)
    assert [g["passed"] for g in got] == [True, True, True, True, False]
    assert got[0]["details"]["agreement"] == 0.8


def test_gold_rows_are_skipped():
    got = judge([s("p", "\\boxed{1}", gold="2"), s("p", "\\boxed{2}", gold="2"), s("q", "\\boxed{3}", gold="")])
    assert got[0] == {"passed": True, "reason": None, "details": {"skipped": "has_gold"}}
    assert got[1]["passed"]
    assert got[2]["reason"] == "low_agreement"  # blank gold is no gold: one vote
    got = judge([s("p", "\\boxed{1}", gold="2"), s("p", "\\boxed{1}", gold="2")], skip_with_gold=False)
    assert [g["passed"] for g in got] == [True, True]


def test_truncated_samples_do_not_vote():
    rows = [
        s("p", "\\boxed{5}"),
        s("p", "\\boxed{5}"),
        s("p", "so x = 3, then 4, then 4", finish_reason="length"),
        s("p", "maybe 4", finish_reason="length"),
        s("p", "I think 4", finish_reason="length"),
    ]
    got = judge(rows)
    assert [g["reason"] for g in got] == [None, None, "no_answer", "no_answer", "no_answer"]
    assert got[0]["details"]["votes"] == 2


def test_rejected_samples_vote_unless_told():
    rows = [s("p", "\\boxed{1}"), s("p", "\\boxed{2}"), s("p", "\\boxed{2}")]
    prior = [True, False, False]
    assert [g["reason"] for g in judge(rows, prior=prior)] == ["minority_answer", None, None]
    got = judge(rows, prior=prior, count_rejected=False)
    assert got[0]["reason"] == "low_agreement" and got[0]["details"]["votes"] == 1


def test_empty_frame():
    cls = get_filter("majority_vote")
    df = pl.DataFrame(schema={"key": pl.String, "prompt_id": pl.String, "completion": pl.String, "gold": pl.String, "finish_reason": pl.String})
    assert cls(cls.Params(), FilterContext()).apply(df).height == 0


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("\\dfrac{3}{4}", "3/4"),
        ("\\tfrac34", "\\frac34"),
        ("0.75", "3/4"),
        ("6/8", "3/4"),
        ("-\\frac{1}{2}", "-1/2"),
        ("12.0", "12"),
        ("12.50", "25/2"),
        ("1,000", "1000"),
        ("x = 5", "5"),
        ("90^\\circ", "90"),
        ("90°", "90"),
        ("50\\%", "50"),
        ("\\text{Yes}", "Yes"),
        ("5\\text{ cm}", "5"),
        ("\\text{(C)}", "(C)"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("$\\sqrt{2}$", "\\sqrt{2}"),
        ("  ", None),
        (None, None),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_extract_answer():
    assert extract_answer("blah \\boxed{1} then \\boxed{2}.") == "2"
    assert extract_answer("We get 3 and then 7.") == "7"
    assert extract_answer("The answer is (1, 2).") == "(1, 2)"
    assert extract_answer("") is None and extract_answer("no numbers") is None
