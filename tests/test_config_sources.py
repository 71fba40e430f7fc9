import json

import pytest

from curator.config import ManifestError, load_manifest
from curator.sample.sources import load_problems
from curator.sample.templates import Renderer

MANIFEST = """
name: gsm8k-r1
source: {path: data/gsm8k.jsonl, id: id, problem: question, answer: answer, limit: 1000}
prompt: prompts/r1-math.yaml
teacher:
  base_url: http://127.0.0.1:8000/v1
  model: deepseek-reasoner
  api_key_env: DEEPSEEK_API_KEY
  params: {temperature: 0.6, top_p: 0.95, max_tokens: 32768, n: 4}
limits: {concurrency: 256, rpm: 3000, tpm: 10000000, timeout_s: 1800, max_retries: 8}
filters: filters/r1-math.yaml
output: out/gsm8k-r1
budget: {max_usd: 700, max_accepted: 50000}
"""


def write_project(tmp_path, manifest=MANIFEST, rows=None):
    (tmp_path / "data").mkdir()
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "r1-math.yaml").write_text("user: |-\n  {{ question }}\n  Put your final answer within \\boxed{}.\n")
    rows = rows if rows is not None else [{"id": "a", "question": "1+1?", "answer": "#### 2"}]
    (tmp_path / "data" / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    return path


def test_contract_manifest_loads_and_resolves_relative_paths(tmp_path):
    m = load_manifest(write_project(tmp_path))
    assert m.output_dir == (tmp_path / "out" / "gsm8k-r1").resolve()
    assert m.teacher.params.n == 4 and m.limits.concurrency == 256 and m.budget.max_usd == 700
    tpl = m.template()
    msgs = Renderer(tpl).render({"question": "What is $\\frac{1}{2}$?"})
    # LaTeX braces pass through untouched, in the template and in values
    assert msgs == [{"role": "user", "content": "What is $\\frac{1}{2}$?\nPut your final answer within \\boxed{}."}]


def test_inline_prompt(tmp_path):
    m = load_manifest(write_project(tmp_path, MANIFEST.replace("prompt: prompts/r1-math.yaml", "prompt: {system: 'Be brief.', user: 'Q: {{ question }}'}")))
    assert Renderer(m.template()).render({"question": "x"}) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: x"}]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("limits: {concurrency: 256", "limits: {concurrency: -1"), "field 'limits.concurrency'"),
        (("model: deepseek-reasoner", "model: deepseek-reasoner\n  api_key: sk-123"), "api_key_env"),
        (("name: gsm8k-r1", "name: gsm8k-r1\nbogus: 1"), "field 'bogus': unknown field"),
        (("prompt: prompts/r1-math.yaml", "prompt: prompts/missing.yaml"), "missing.yaml: file not found"),
    ],
)
def test_manifest_errors_name_file_and_field(tmp_path, edit, expected):
    path = write_project(tmp_path, MANIFEST.replace(*edit))
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_missing_manifest_and_bad_yaml(tmp_path):
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="bad.yaml: line"):
        load_manifest(p)


def _load(tmp_path, rows, **src):
    m = load_manifest(write_project(tmp_path, rows=rows))
    s = m.source.model_copy(update=src)
    return load_problems(s, m.resolve(s.path))


def test_gold_and_ids(tmp_path):
    ps = _load(tmp_path, [{"id": 1, "question": "q1", "answer": "#### 2"}, {"id": 2, "question": "q2", "answer": 3}])
    assert [(p.id, p.problem, p.gold) for p in ps] == [("1", "q1", "#### 2"), ("2", "q2", "3")]


def test_bad_sources(tmp_path):
    with pytest.raises(ManifestError, match="duplicate id 'a'.*rows 1 and 2"):
        _load(tmp_path, [{"id": "a", "question": "q", "answer": "1"}, {"id": "a", "question": "r", "answer": "1"}])


def test_unknown_column(tmp_path):
    with pytest.raises(ManifestError, match="source.problem' names column 'prompt', which does not exist; columns are id, question, answer"):
        _load(tmp_path, [{"id": "a", "question": "q", "answer": "1"}], problem="prompt")


def test_empty_dataset(tmp_path):
    with pytest.raises(ManifestError, match="the dataset is empty"):
        _load(tmp_path, [])


def test_non_utf8(tmp_path):
    m = load_manifest(write_project(tmp_path))
    (tmp_path / "data" / "gsm8k.jsonl").write_bytes(b'{"id": "a", "question": "ok", "answer": "1"}\n{"id": "b", "question": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(ManifestError, match="gsm8k.jsonl: line 2: not UTF-8"):
        load_problems(m.source, m.resolve(m.source.path))


def test_parquet_csv_and_saved_hf_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "x", "question": "q", "answer": "#### 1"}]
    m = load_manifest(write_project(tmp_path, rows=rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("id,question,answer\nx,q,#### 1\n")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    for path in ("d.parquet", "d.csv", "hf"):
        s = m.source.model_copy(update={"path": path, "split": "train" if path == "hf" else None})
        ps = load_problems(s, tmp_path / path)
        assert [(p.id, p.problem, p.gold) for p in ps] == [("x", "q", "#### 1")], path


def test_limit_and_shuffle_are_deterministic(tmp_path):
    rows = [{"id": str(i), "question": f"q{i}", "answer": "1"} for i in range(50)]
    a = [p.id for p in _load(tmp_path, rows, shuffle_seed=3, limit=10)]
    b = [p.id for p in load_problems(load_manifest(tmp_path / "m.yaml").source.model_copy(update={"shuffle_seed": 3, "limit": 10}), tmp_path / "data" / "gsm8k.jsonl")]
    assert a == b and len(a) == 10 and a != [str(i) for i in range(10)]


def test_placeholder_without_column(tmp_path):
    m = load_manifest(write_project(tmp_path, MANIFEST.replace("prompt: prompts/r1-math.yaml", "prompt: {user: '{{ questoin }}'}")))
    with pytest.raises(ManifestError, match=r"placeholder \{\{ questoin \}\} has no column"):
        Renderer(m.template(), "m.yaml").check_columns({"id", "question", "answer"}, "data/gsm8k.jsonl")
