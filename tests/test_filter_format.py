"""The `format` filter on real failure modes of R1-style outputs, built through the real parser."""

import json

import polars as pl
import pytest

from curator.config import ManifestError
from curator.judge.base import FilterContext, get_filter
from curator.judge.chain import load_chain
from curator.sample.parse import split_reasoning

BOXED_PROMPT = [{"role": "user", "content": "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}."}]
PLAIN_PROMPT = [{"role": "user", "content": "What is 2+2?"}]
COT = "Okay, so I need to add 2 and 2. That gives 4. Wait, let me double-check: 2 + 2 = 4. Yes."


def sample(content, reasoning_content=None, finish="stop", messages=BOXED_PROMPT):
    s = split_reasoning({"content": content, "reasoning_content": reasoning_content})
    return {
        "cot": s.cot,
        "completion": s.completion,
        "cot_source": s.cot_source,
        "raw_content": content,
        "finish_reason": finish,
        "messages_json": json.dumps(messages),
    }


def judge(rows, **params):
    cls = get_filter("format")
    f = cls(cls.Params(**params), FilterContext())
    df = pl.DataFrame([{"key": f"k{i}", **r} for i, r in enumerate(rows)]).with_columns(pl.lit(True).alias("prior_passed"))
    out = f.apply(df)
    assert out.columns == ["key", "passed", "reason", "details"]
    assert out["key"].to_list() == df["key"].to_list()
    return [
        {"passed": r["passed"], "reason": r["reason"], "details": json.loads(r["details"]) if r["details"] else None}
        for r in out.to_dicts()
    ]


def one(row, **params):
    return judge([row], **params)[0]


def test_well_formed_think_block_passes():
    v = one(sample(f"<think>\n{COT}\n</think>\n\nThe answer is $\\boxed{{4}}$."))
    assert v == {"passed": True, "reason": None, "details": None}


def test_reasoning_content_passes():
    v = one(sample("The answer is \\boxed{4}.", reasoning_content=COT))
    assert v["passed"], v


def test_r1_missing_think_opening_is_accepted_by_default():
    # R1's chat template puts "<think>\n" into the prompt, so the output starts mid-thought.
    row = sample(f"{COT}\n</think>\n\nThe answer is \\boxed{{4}}.")
    assert row["cot_source"] == "think_unopened"
    assert one(row)["passed"]
    v = one(row, allow_unopened=False)
    assert v["reason"] == "unopened_think"


def test_two_think_blocks_rejected():
    v = one(sample(f"<think>{COT}</think>\n<think>Let me think again. 2+2=4.</think>\n\\boxed{{4}}"))
    assert not v["passed"]
    assert v["reason"] == "multiple_think"
    assert "think_tag_in_completion" in v["details"]["failed"]


def test_nested_think_rejected():
    v = one(sample(f"<think>{COT} <think>inner thought</think> more</think> \\boxed{{4}}"))
    assert v["reason"] == "multiple_think"


def test_closing_tag_in_answer_rejected():
    v = one(sample(f"<think>{COT}</think>\n\nThe answer is \\boxed{{4}}.\n</think>"))
    assert v["reason"] == "think_tag_in_completion"
    assert v["details"]["failed"] == ["think_tag_in_completion"]


def test_think_tag_leaking_into_content_beside_reasoning_content():
    v = one(sample("<think>\nhmm\n</think> \\boxed{4}", reasoning_content=COT))
    assert v["reason"] == "think_tag_in_completion"
    v = one(sample("\\boxed{4}", reasoning_content=COT + " </think>"))
    assert v["reason"] == "think_tag_in_cot"


def test_text_before_opening_tag_rejected():
    v = one(sample(f"Sure, let me think. <think>{COT}</think> \\boxed{{4}}"))
    assert v["reason"] == "malformed_think"


def test_truncated_is_reported_first_and_details_list_every_failure():
    row = sample(f"<think>\n{COT} Let me also consider the case where", finish="length")
    v = one(row)
    assert v["reason"] == "truncated"
    assert v["details"]["failed"] == ["truncated", "unclosed_think", "empty_completion"]
    assert v["details"]["finish_reason"] == "length"
    # Turned off, the next failure is reported.
    assert one(row, check_truncated=False)["reason"] == "unclosed_think"


def test_truncated_inside_the_answer():
    v = one(sample(f"<think>{COT}</think> The answer is \\boxed{{4", finish="length"))
    assert v["reason"] == "truncated"
    assert "no_boxed" in v["details"]["failed"]  # the unclosed \boxed{ has no content yet


def test_empty_reasoning_rejected():
    # R1 sometimes skips thinking: an empty think block.
    v = one(sample("<think>\n\n</think>\n\nThe answer is \\boxed{4}."))
    assert v["reason"] == "empty_cot"
    # A server with no reasoning at all.
    v = one(sample("The answer is \\boxed{4}.", reasoning_content=""))
    assert v["reason"] == "empty_cot"
    assert v["details"]["cot_source"] == "none"
    assert one(sample("The answer is \\boxed{4}."), min_cot_chars=0)["passed"]


def test_min_cot_chars():
    row = sample(f"<think>{COT}</think> \\boxed{{4}}")
    assert one(row, min_cot_chars=len(COT))["passed"]
    assert one(row, min_cot_chars=len(COT) + 1)["reason"] == "empty_cot"


def test_empty_completion_rejected():
    row = sample(f"<think>{COT}</think>")
    v = one(row)
    assert v["reason"] == "empty_completion"
    assert v["details"]["failed"] == ["empty_completion"]  # no_boxed is not piled on
    assert one(row, require_completion=False, require_boxed=False)["passed"]
    assert one(row, require_completion=False)["reason"] == "no_boxed"


def test_boxed_auto_follows_the_prompt():
    plain_answer = "<think>" + COT + "</think> The answer is 4."
    assert one(sample(plain_answer))["reason"] == "no_boxed"  # the prompt asked for \boxed
    assert one(sample(plain_answer, messages=PLAIN_PROMPT))["passed"]
    assert one(sample(plain_answer, messages=PLAIN_PROMPT), require_boxed=True)["reason"] == "no_boxed"
    assert one(sample(plain_answer), require_boxed=False)["passed"]


def test_boxed_forms():
    for ans in ("\\boxed{4}", "\\boxed {4}", "$\\boxed 4$", "\\fbox{4}", "\\boxed{\\frac{1}{2}}"):
        assert one(sample(f"<think>{COT}</think> {ans}"))["passed"], ans
    assert one(sample(f"<think>{COT}</think> \\boxed{{}}"))["reason"] == "no_boxed"
    assert one(sample(f"<think>{COT}</think> \\boxed{{ }}"))["reason"] == "no_boxed"


def test_tag_checks_can_be_turned_off():
    row = sample(f"<think>{COT}</think>\n<think>again</think>\n\\boxed{{4}}")
    assert one(row, check_think_tags=False)["passed"]


def test_batch_mixed_and_order_kept():
    rows = [
        sample(f"<think>{COT}</think> \\boxed{{4}}"),
        sample(f"<think>{COT}", finish="length"),
        sample("\\boxed{4}", reasoning_content=COT),
        sample(f"{COT}</think> 4"),
    ]
    got = judge(rows)
    assert [v["reason"] for v in got] == [None, "truncated", None, "no_boxed"]


def test_null_columns_are_tolerated():
    df = pl.DataFrame(
        {"key": ["a"], "cot": [None], "completion": [None], "cot_source": [None], "raw_content": [None], "finish_reason": [None], "messages_json": [None]},
        schema={c: pl.String for c in ["key", "cot", "completion", "cot_source", "raw_content", "finish_reason", "messages_json"]},
    )
    cls = get_filter("format")
    out = cls(cls.Params(), FilterContext()).apply(df)
    assert out["reason"].to_list() == ["empty_cot"]


def test_chain_yaml_params(tmp_path):
    ctx = FilterContext(base_dir=tmp_path)
    chain = load_chain([{"format": {"require_boxed": True, "allow_unopened": False}}], ctx)
    assert chain.steps[0].filter.params.require_boxed is True
    chain = load_chain([{"filter": "format", "params": {"require_boxed": "auto"}}], ctx)
    assert chain.steps[0].filter.params.require_boxed == "auto"
    with pytest.raises(ManifestError, match="unknown param"):
        load_chain([{"format": {"require_box": True}}], ctx)
    with pytest.raises(ManifestError, match="require_boxed"):
        load_chain([{"format": {"require_boxed": "sometimes"}}], ctx)
