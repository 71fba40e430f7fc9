"""The `length` filter: bounds in tokens/chars, and degeneration (loops, "Wait" loops) calibrated so
that a normal R1-style trace passes and a looping one fails."""

import json
import random
import time

import polars as pl

from curator.judge.base import FilterContext, get_filter
from curator.judge.filters.length import degeneration, wait_sentences, window_stats

# An R1-style trace: says "Wait," a few times, repeats "Let me check", restates an equation.
NORMAL = """Okay, so I need to find how many positive integers n up to 100 make n^2 + 1 divisible by 5. Hmm, let me think about this.

First, divisibility by 5 only depends on n mod 5. So I can look at the residues 0, 1, 2, 3, 4 and square each one.

0^2 = 0, so n^2 + 1 is 1 mod 5. Not divisible.
1^2 = 1, so n^2 + 1 is 2 mod 5. Not divisible.
2^2 = 4, so n^2 + 1 is 5, which is 0 mod 5. Divisible!
3^2 = 9, which is 4 mod 5, so n^2 + 1 is 10, which is 0 mod 5. Also divisible.
4^2 = 16, which is 1 mod 5, so n^2 + 1 is 2 mod 5. Not divisible.

So the residues that work are n ≡ 2 and n ≡ 3 (mod 5). Let me check that again. For n = 2: 4 + 1 = 5, yes. For n = 3: 9 + 1 = 10, yes. For n = 7: 49 + 1 = 50, yes, and 7 ≡ 2 mod 5. Good.

Wait, I should double-check residue 4 too. 4^2 = 16, 16 + 1 = 17, and 17 is not a multiple of 5. Right, so 4 does not work.

Now I need to count the integers from 1 to 100 with n ≡ 2 (mod 5). Those are 2, 7, 12, ..., 97. The count is (97 - 2)/5 + 1 = 19 + 1 = 20.

Similarly, n ≡ 3 (mod 5) gives 3, 8, 13, ..., 98. The count is (98 - 3)/5 + 1 = 20.

So the total would be 20 + 20 = 40. Let me check the endpoints. The largest number at most 100 that is 2 mod 5 is 97, since 102 is too big. The largest that is 3 mod 5 is 98. Okay.

Wait, is 100 itself included? 100 ≡ 0 (mod 5), so 100^2 + 1 = 10001, which ends in 1, so it is not divisible by 5. That matches the residue analysis.

Hmm, another way to see it: in every block of 5 consecutive integers exactly two of them work. There are 100/5 = 20 full blocks, so 2 × 20 = 40. Same answer.

Wait, but let me make sure I did not miss negative residues or something. The residues mod 5 are exactly 0 through 4, and I checked all five. The condition n^2 ≡ -1 ≡ 4 (mod 5) has exactly the two solutions n ≡ 2 and n ≡ 3, because 4 is a quadratic residue mod 5 and 5 is prime, so x^2 ≡ 4 has at most two roots.

Let me check with a few more examples to be safe. n = 12: 144 + 1 = 145 = 5 × 29. Yes. n = 13: 169 + 1 = 170 = 5 × 34. Yes. n = 14: 196 + 1 = 197, not divisible. Right. n = 18: 324 + 1 = 325 = 5 × 65. Yes, and 18 ≡ 3 mod 5.

Wait, one more thing: the problem says positive integers, so n starts at 1, not 0. The residue classes 2 and 3 do not include 0 anyway, so nothing changes.

So the answer is 40. Let me check the arithmetic one last time: 20 numbers in each class, two classes, 40 in total. I'm confident the answer is 40."""

COMPLETION = "The residues with $n^2 \\equiv -1 \\pmod 5$ are $n \\equiv 2, 3$. Each class has 20 members up to 100, so the answer is $\\boxed{40}$."

_WORDS = (
    "number residue prime square divisor factor sum product term equation value integer root solution "
    "triangle angle side area circle radius bound case element order subset modulus parity digit remainder"
).split()
_OPENERS = ["So", "Then", "Now", "Hmm, maybe", "Alternatively,", "But", "Therefore,", "Let me check:", "That means", "Actually,", "First,", "Next,"]


def long_trace(seed: int, words: int = 4500) -> str:
    """A long varied trace (about 6k tokens): distinct sentences with numbers, a few "Wait,", a few
    repeated "Let me check." - what a normal long R1 trace looks like to a repetition measure."""
    rng = random.Random(seed)
    paras, n = [], 0
    while n < words:
        sents = []
        for _ in range(rng.randint(2, 6)):
            body = " ".join(
                str(rng.randint(2, 999)) if rng.random() < 0.15 else rng.choice(["=", "+", "×"]) if rng.random() < 0.08 else rng.choice(_WORDS)
                for _ in range(rng.randint(6, 20))
            )
            s = f"{rng.choice(_OPENERS)} {body}."
            if rng.random() < 0.04:
                s = f"Wait, {rng.choice(['that is not right', 'is that correct', 'I made an error', 'let me redo this'])}. {s}"
            if rng.random() < 0.04:
                s += " Let me check."
            sents.append(s)
            n += len(s.split())
        paras.append(" ".join(sents))
    return "\n\n".join(paras)


def row(cot, completion=COMPLETION, **kw):
    r = {
        "key": kw.pop("key", "k"),
        "cot": cot,
        "completion": completion,
        "messages_json": json.dumps([{"role": "user", "content": "How many n <= 100 have 5 | n^2+1?"}]),
        "prompt_tokens": None,
        "completion_tokens": None,
        "reasoning_tokens": None,
    }
    r.update(kw)
    return r


def judge(rows, **params):
    cls = get_filter("length")
    f = cls(cls.Params(**params), FilterContext())
    rows = [{**r, "key": f"k{i}"} for i, r in enumerate(rows)]
    df = pl.DataFrame(rows, schema_overrides={"prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "reasoning_tokens": pl.Int64})
    out = f.apply(df.with_columns(pl.lit(True).alias("prior_passed")))
    assert out["key"].to_list() == df["key"].to_list()
    return [
        {"passed": r["passed"], "reason": r["reason"], "details": json.loads(r["details"]) if r["details"] else None}
        for r in out.to_dicts()
    ]


def one(r, **params):
    return judge([r], **params)[0]


def test_normal_r1_trace_passes():
    d = degeneration(NORMAL)
    assert d["waits"] == 4 and d["top_wait_count"] == 1
    assert d["max_repeats"] <= 2 and d["dup_share"] < 0.05
    assert one(row(NORMAL)) == {"passed": True, "reason": None, "details": None}


def test_long_normal_traces_pass():
    for seed in range(20):
        cot = long_trace(seed)
        v = one(row(cot))
        assert v["passed"], (seed, v)


def test_wait_loop_30_times_fails():
    # The model gets stuck saying the same thing and then recovers (or not).
    looping = NORMAL + "\n\n" + "Wait, let me recompute. " * 30 + "\n\nSo the answer is 40."
    v = one(row(looping))
    assert not v["passed"]
    assert v["reason"] == "wait_loop"
    assert "degenerate_repetition" in v["details"]["failed"]
    d = v["details"]["cot"]
    assert d["top_wait"] == "wait, let me recompute." and d["top_wait_count"] == 30
    assert d["max_repeats"] >= 20 and "Wait, let me recompute." in d["repeated"]


def test_wait_loop_with_varying_steps_between():
    # Not verbatim consecutive: the same "Wait" sentence keeps coming back between computations.
    parts = [f"Wait, let me recompute. {k} times {k + 3} is {k * (k + 3)}, plus {k} gives {k * (k + 3) + k}." for k in range(25)]
    v = one(row(NORMAL + "\n\n" + " ".join(parts)))
    assert v["reason"] == "wait_loop"
    assert v["details"]["cot"]["top_wait_count"] == 25


def test_wait_rate():
    # Almost every sentence starts with "Wait": hesitation without progress.
    rng = random.Random(1)
    text = " ".join(f"Wait, {rng.choice(_WORDS)} {rng.randint(0, 10**6)} {rng.choice(_WORDS)}." for _ in range(200))
    v = one(row(text))
    assert v["reason"] == "wait_loop"
    assert v["details"]["cot"]["wait_per_1k_words"] > 50
    assert one(row(text), max_wait_per_1k_words=1000, max_wait_repeats=1000)["passed"]


def test_paragraph_loop_fails():
    para = "So the sum of the residues is 2 + 3 = 5, and each class has twenty members, which gives forty in total when we add them."
    v = one(row(NORMAL + "\n\n" + " ".join([para] * 12)))
    assert v["reason"] == "degenerate_repetition"
    assert v["details"]["failed"] == ["degenerate_repetition"]


def test_loop_filling_the_end_of_a_trace_fails():
    block = "\n\n".join(NORMAL.split("\n\n")[3:6])
    v = one(row(NORMAL + "\n\n" + "\n\n".join([block] * 6)))
    assert v["reason"] == "degenerate_repetition"
    assert v["details"]["cot"]["dup_share"] > 0.5 or v["details"]["cot"]["max_repeats"] >= 6


def test_token_level_degeneration():
    v = one(row(NORMAL + " " + "the " * 500))
    assert v["reason"] == "degenerate_repetition"


def test_loop_in_completion():
    v = one(row(NORMAL, completion="The answer is \\boxed{40}. " * 40))
    assert v["reason"] == "degenerate_repetition"
    assert v["details"]["completion"]["max_repeats"] >= 8


def test_degeneration_can_be_turned_off():
    assert one(row(NORMAL + " " + "the " * 500), check_degeneration=False)["passed"]


def test_too_long_from_usage_and_from_estimate():
    # Usage counts when the server sent them: 300 prompt + 16200 completion > 16384.
    v = one(row(NORMAL, prompt_tokens=300, completion_tokens=16200, reasoning_tokens=16000))
    assert v["reason"] == "too_long"
    assert v["details"]["total_tokens"] == 16500
    assert v["details"]["cot_tokens"] == 16000 and v["details"]["completion_tokens"] == 200
    assert one(row(NORMAL, prompt_tokens=100, completion_tokens=16200, reasoning_tokens=16000))["passed"]
    assert one(row(NORMAL, prompt_tokens=300, completion_tokens=16200, reasoning_tokens=16000), max_total_tokens=None)["passed"]
    # No usage: chars / 4.
    big = long_trace(3, words=14000)  # ~80k chars ~ 20k tokens
    v = one(row(big))
    assert v["reason"] == "too_long"
    assert v["details"]["total_tokens"] > 16384
    assert one(row(big), max_total_tokens=40000)["passed"]
    assert one(row(big), max_total_tokens=40000, chars_per_token=1.5)["reason"] == "too_long"


def test_per_part_bounds():
    assert one(row(NORMAL, reasoning_tokens=900), max_cot_tokens=800)["reason"] == "too_long"
    assert one(row(NORMAL, reasoning_tokens=700), max_cot_tokens=800)["passed"]
    assert one(row(NORMAL), max_cot_chars=1000)["reason"] == "too_long"
    assert one(row(NORMAL), max_completion_chars=50)["reason"] == "too_long"
    assert one(row(NORMAL), max_completion_tokens=10)["reason"] == "too_long"
    v = one(row("Easy: 4."), min_cot_chars=100)
    assert v["reason"] == "too_short" and v["details"]["cot_chars"] == 8
    assert one(row(NORMAL, completion="40"), min_completion_chars=5)["reason"] == "too_short"


def test_reason_order_too_long_first():
    looping = NORMAL + " " + "Wait, let me recompute. " * 30
    v = one(row(looping), max_cot_chars=1000)
    assert v["reason"] == "too_long"
    assert v["details"]["failed"] == ["too_long", "wait_loop", "degenerate_repetition"]


def test_helpers_on_edge_cases():
    assert window_stats("") == (0, 0.0, 0, None)
    assert window_stats("short")[:3] == (1, 0.0, 0)
    assert wait_sentences("Wait, no. But wait, yes. Waiting is fine.\n**Wait** here. x Wait.") == ["wait, no.", "wait** here."]
    d = degeneration("é" * 50 + ". " + "Wait, ünïcödé. " * 3)
    assert d["waits"] == 3
    assert one(row(None, completion=None))["passed"]


def test_speed_on_6k_token_traces():
    """Measured: about 3,000-4,500 samples/s per core on 6k-token traces (CPU time, loaded 2-core VM)."""
    traces = [long_trace(100 + i) for i in range(200)]
    assert 20_000 < sum(map(len, traces)) / len(traces) < 32_000  # ~6k tokens each
    df = pl.DataFrame([row(t, key=f"k{i}") for i, t in enumerate(traces)], schema_overrides={"prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "reasoning_tokens": pl.Int64})
    df = df.with_columns(pl.lit(True).alias("prior_passed"))
    cls = get_filter("length")
    f = cls(cls.Params(), FilterContext())
    t0 = time.process_time()
    out = f.apply(df)
    rate = df.height / max(time.process_time() - t0, 1e-9)
    print(f"length filter: {rate:.0f} samples/s per core on ~6k-token traces")
    assert out["passed"].all()
    assert rate > 500  # a loose floor (CI machines are shared); the target is >= 2,000/s


def test_loop_in_text_without_spaces():
    normal = "我们需要找到满足条件的正整数。首先，考虑模五的余数，平方以后加一。余数为二和三时可以整除，其余不行。每一类在一百以内有二十个，所以一共四十个。"
    assert one(row(normal * 1))["passed"]
    v = one(row(normal + "等等，让我重新计算一下这个结果是否正确。" * 30))
    assert v["reason"] == "degenerate_repetition"
