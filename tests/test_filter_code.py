"""The `code` filter: real sandboxed subprocesses, one verdict per sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from curator.judge.filters import code_exec
from curator.judge.base import FilterContext, get_filter
from curator.judge.filters.code_exec import extract_code, row_tests
from curator.engines.sandbox import SandboxResult

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

ROOT = Path(__file__).resolve().parents[1]

ADD_ROW = {"id": "add", "entry_point": "add", "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 5", "assert add(-1, -1) == -2"]}


def fence(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n\n```{lang}\n{code}\n```\n"


def frame(samples: list[tuple[str, str | None, dict | None]], cots: list[str | None] | None = None, prior: list[bool] | None = None) -> pl.DataFrame:
    n = len(samples)
    return pl.DataFrame(
        {
            "key": [k for k, _, _ in samples],
            "completion": [c for _, c, _ in samples],
            "cot": cots or [None] * n,
            "row_json": [None if r is None else json.dumps(r) for _, _, r in samples],
            "prior_passed": prior or [True] * n,
        },
        schema={"key": pl.String, "completion": pl.String, "cot": pl.String, "row_json": pl.String, "prior_passed": pl.Boolean},
    )


def run(df: pl.DataFrame, **params) -> dict[str, dict]:
    cls = get_filter("code")
    f = cls(cls.Params.model_validate({"workers": 2, **params}), FilterContext())
    out = f.apply(df)
    assert out.columns == ["key", "passed", "reason", "details"]
    assert out.height == df.height
    return {r["key"]: {**r, "details": json.loads(r["details"]) if r["details"] else None} for r in out.to_dicts()}


def test_verdicts_for_good_wrong_and_broken_samples():
    df = frame(
        [
            ("good", fence("def add(a, b):\n    return a + b"), ADD_ROW),
            ("wrong", fence("def add(a, b):\n    return a * b"), ADD_ROW),  # 2 * 2 == 4 only
            ("syntax", fence("def add(a, b)\n    return a + b"), ADD_ROW),
            ("nocode", "The answer is to add them.", ADD_ROW),
            ("notests", fence("def add(a, b):\n    return a + b"), {"id": "x"}),
            ("norow", fence("def add(a, b):\n    return a + b"), None),
            ("exit", fence("import os\nos._exit(0)"), ADD_ROW),
        ]
    )
    v = run(df)
    assert v["good"]["passed"] and v["good"]["reason"] is None
    assert v["good"]["details"] == {"passed": 4, "total": 4, "pass_rate": 1.0, "status": "ok"}
    assert not v["wrong"]["passed"] and v["wrong"]["reason"] == "tests_failed"
    assert v["wrong"]["details"]["pass_rate"] == 0.25 and v["wrong"]["details"]["status"] == "failed"
    assert v["syntax"]["reason"] == "tests_failed" and v["syntax"]["details"]["error"].startswith("SyntaxError")
    assert v["nocode"]["reason"] == "no_code"
    assert v["notests"]["reason"] == "no_tests" and v["norow"]["reason"] == "no_tests"
    assert v["exit"]["reason"] == "crashed"


def test_timeout_memory_and_fork_bomb_reasons():
    df = frame(
        [
            ("loop", fence("def add(a, b):\n    while True:\n        pass"), ADD_ROW),
            ("hog", fence("def add(a, b):\n    return len('x' * 10**10)"), ADD_ROW),
            ("bomb", fence("import os\nwhile True:\n    os.fork()"), ADD_ROW),
        ]
    )
    v = run(df, timeout_s=1, memory_mb=256)
    assert v["loop"]["reason"] == "timeout" and v["loop"]["details"]["status"] == "timeout"
    assert v["hog"]["reason"] == "memory"
    assert not v["bomb"]["passed"] and v["bomb"]["reason"] in ("tests_failed", "crashed")


def test_min_pass_rate():
    df = frame([("wrong", fence("def add(a, b):\n    return a * b if a == b else a + b"), ADD_ROW)])  # fails -1,-1
    assert run(df)["wrong"]["reason"] == "tests_failed"
    v = run(df, min_pass_rate=0.75)["wrong"]
    assert v["passed"] and v["details"]["pass_rate"] == 0.75


def test_test_formats_and_code_sources():
    humaneval = {"entry_point": "rev", "tests": "def check(candidate):\n    assert candidate('ab') == 'ba'\n    assert candidate('') == ''\n\ncheck(rev)\n"}
    as_json = {"tests": json.dumps(["assert rev('ab') == 'ba'", "assert rev('x') == 'x'"])}
    mbpp = {"test_list": ["assert rev(S) == 'cba'"], "test_setup_code": "S = 'abc'", "test_imports": ["import math"]}
    sol = "def rev(s):\n    return s[::-1]"
    two_blocks = fence("def rev(s):\n    return s") + "Better:\n" + fence(sol) + "Output:\n```text\nba\n```\n"
    df = frame(
        [
            ("he", fence(sol), humaneval),
            ("json", fence(sol, lang=""), as_json),
            ("last_python", two_blocks, humaneval),
            ("in_cot", "See above.", humaneval),
        ],
        cots=[None, None, None, "Let me write it:\n" + fence(sol)],
    )
    v = run(df)
    assert v["he"]["passed"] and v["he"]["details"]["total"] == 2
    assert v["json"]["passed"] and v["json"]["details"]["total"] == 2
    assert v["last_python"]["passed"]
    assert v["in_cot"]["reason"] == "no_code"
    assert run(df.filter(pl.col("key") == "in_cot"), source="cot_and_completion")["in_cot"]["passed"]
    assert run(frame([("mbpp", fence(sol), mbpp)]), tests_field="test_list")["mbpp"]["passed"]


def test_extract_code_and_tests_of():
    assert extract_code(None) is None and extract_code("no fences") is None
    assert extract_code("```py\na = 1\n```\n```\nb = 2\n```") == "a = 1"
    assert extract_code("```\nb = 2\n```\n```bash\nls\n```") == "ls"
    assert extract_code("```python\n```") is None
    assert row_tests({"tests": {"inputs": []}}, "tests")[0] is None
    assert row_tests({"tests": "assert f()"}, "tests") == ("assert f()", None)
    assert row_tests({"tests": []}, "tests")[0] is None


def test_skip_rejected_and_params():
    df = frame([("a", fence("def add(a, b):\n    return a + b"), ADD_ROW)], prior=[False])
    v = run(df, skip_rejected=True)["a"]
    assert not v["passed"] and v["reason"] == "skipped"
    assert run(df)["a"]["passed"]  # by default every sample is judged
    cls = get_filter("code")
    with pytest.raises(Exception):
        cls.Params.model_validate({"timeout": 3})
    with pytest.raises(Exception):
        cls.Params.model_validate({"min_pass_rate": 1.5})


def test_raises_when_the_sandbox_cannot_run_at_all(monkeypatch):
    monkeypatch.setattr(code_exec, "run_python", lambda *a, **k: SandboxResult(0, 1, "error", error="boom"))
    with pytest.raises(RuntimeError, match="boom"):
        run(frame([("a", fence("x = 1"), ADD_ROW)]))


def test_demo_problems_pass_with_reference_solutions():
    refs = {
        "add": "def add(a, b):\n    return a + b",
        "is_palindrome": "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
        "fizzbuzz": "def fizzbuzz(n):\n    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i) for i in range(1, n + 1)]",
        "two_sum": "def two_sum(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n        if target - x in seen:\n            return [seen[target - x], i]\n        seen[x] = i",
        "merge_intervals": "def merge_intervals(intervals):\n    out = []\n    for s, e in sorted(intervals):\n        if out and s <= out[-1][1]:\n            out[-1][1] = max(out[-1][1], e)\n        else:\n            out.append([s, e])\n    return out",
        "nth_prime": "def nth_prime(n):\n    limit = 200000\n    sieve = bytearray([1]) * limit\n    sieve[0:2] = b'\\x00\\x00'\n    for i in range(2, int(limit ** 0.5) + 1):\n        if sieve[i]:\n            sieve[i * i::i] = bytearray(len(sieve[i * i::i]))\n    return [i for i in range(limit) if sieve[i]][n - 1]",
    }
    rows = [json.loads(line) for line in (ROOT / "data" / "code-demo.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) >= 5 and all({"id", "problem", "tests", "entry_point"} <= set(r) for r in rows)
    df = frame([(r["id"], fence(refs[r["entry_point"]]), r) for r in rows] + [(r["id"] + "-bad", fence(f"def {r['entry_point']}(*a):\n    return None"), r) for r in rows])
    v = run(df)
    for r in rows:
        assert v[r["id"]]["passed"], v[r["id"]]
        assert not v[r["id"] + "-bad"]["passed"]


def test_chain_yaml_loads():
    from curator.judge.base import all_filters
    from curator.judge.chain import load_chain

    if not {"format", "length"} <= set(all_filters()):
        pytest.skip("format/length filters not available yet")
    chain = load_chain(ROOT / "filters" / "code.yaml", FilterContext(base_dir=ROOT))
    assert [s.name for s in chain.steps] == ["format", "code", "length"]
