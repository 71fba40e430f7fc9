"""Filter throughput on synthetic R1-style traces of ~6k tokens.

    python bench/filters.py [--samples 2000] [--chain filters/r1-math.yaml] [--workers 2]

Prints samples/s for each filter of the chain alone and for the whole chain (sample steps in
batches as `curator run` applies them, then the dataset steps), on the same frame in one run."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from curator.judge.base import FilterContext  # noqa: E402
from curator.judge.chain import apply_steps, load_chain  # noqa: E402
from curator.judge.runner import frame_from_records  # noqa: E402

WORDS = ("so we need to compute the total number of items then subtract what was given away "
         "let me check the arithmetic again carefully first multiply the boxes by the count per box "
         "which gives the product and then the remainder follows from subtraction hmm that seems right").split()
FILLERS = ["Wait, let me double-check that.", "Hmm, is that right?", "So the total is {x}.", "Let me verify: {a} times {b} is {x}."]


def trace(rng: random.Random, words: int, answer: int) -> str:
    out, n = [], 0
    while n < words:
        k = rng.randint(8, 20)
        sent = " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + f" {rng.randint(1, 999)}."
        if rng.random() < 0.08:
            a, b = rng.randint(2, 50), rng.randint(2, 50)
            sent = rng.choice(FILLERS).format(a=a, b=b, x=a * b)
        out.append(sent)
        n += k
        if rng.random() < 0.1:
            out.append("\n\n")
    return " ".join(out) + f" So the answer is {answer}."


def make_samples(n: int, words: int = 4600, seed: int = 0, latex: bool = False) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ans = rng.randint(1, 10_000)
        wrong = rng.random() < 0.15
        cot = trace(rng, words, ans)
        if rng.random() < 0.03:
            cot += " 我们需要再检查一遍这个计算结果是否正确。"
        shown = ans + 1 if wrong else ans
        # GSM8K-style integers take the math filter's integer fast path; fractions go to Math-Verify.
        gold, box = (f"\\frac{{{ans}}}{{7}}", f"\\frac{{{shown}}}{{7}}") if latex else (f"#### {ans}", str(shown))
        rows.append({
            "key": f"k{i:07d}", "run": "bench", "prompt_id": str(i // 4), "sample_index": i % 4, "source": "bench",
            "problem": f"Problem {i}: compute the total.", "gold": gold, "row_json": "{}",
            "messages_json": json.dumps([{"role": "user", "content": f"Problem {i}. Put your final answer within \\boxed{{}}."}]),
            "cot": cot, "completion": f"The total is {shown}.\n\n**Answer:** $\\boxed{{{box}}}$",
            "cot_source": "reasoning_content", "raw_content": None, "finish_reason": "stop",
            "prompt_tokens": 40, "completion_tokens": int(words * 1.3) + 20, "reasoning_tokens": int(words * 1.3),
            "cached_tokens": 0, "cost_usd": 0.01, "model": "bench", "endpoint": "bench", "params_json": "{}",
            "request_id": str(i), "attempts": 1, "latency_s": 1.0, "created_at": 0.0, "seq": i,
        })
    return frame_from_records(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--chain", default=str(ROOT / "filters" / "r1-math.yaml"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latex-answers", action="store_true", help="fraction answers (Math-Verify path) instead of integers")
    a = ap.parse_args()
    df = make_samples(a.samples, latex=a.latex_answers)
    tokens = int(df["reasoning_tokens"].mean())
    print(f"{a.samples} synthetic samples, ~{tokens:,} CoT tokens each, chain {Path(a.chain).name}", flush=True)
    ctx = FilterContext(base_dir=ROOT, workers=a.workers)
    chain = load_chain(a.chain, ctx)
    # Warm-up: worker pools and detector models load once per process, not per sample.
    apply_steps(chain.steps, df.head(8))
    for step in chain.steps:
        t = time.perf_counter()
        apply_steps([step], df)
        dt = time.perf_counter() - t
        print(f"  {step.name:<14} {a.samples / dt:>10,.0f} samples/s  ({step.scope})", flush=True)
    t = time.perf_counter()
    prior = None
    frames = []
    for start in range(0, df.height, 500):
        frames.extend(apply_steps(chain.sample_steps(), df.slice(start, 500)))
    if chain.dataset_steps():
        apply_steps(chain.dataset_steps(), df, prior)
    dt = time.perf_counter() - t
    print(f"  whole chain    {a.samples / dt:>10,.0f} samples/s on {a.workers} workers", flush=True)
    chain.close()


if __name__ == "__main__":
    main()
