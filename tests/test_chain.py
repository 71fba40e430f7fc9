"""The chain end to end: applied as answers arrive, re-run on stored data, errors in chain files."""

import json
import urllib.request

import pytest

from conftest import cli, write_manifest, write_problems
from curator.config import ManifestError, load_manifest
from curator.judge.base import FilterContext
from curator.judge.chain import load_chain
from curator.run import run_manifest
from curator.store.catalog import query

CHAIN = """
name: test-math
steps:
  - filter: format
    params: {require_boxed: auto}
  - {math: {}}
  - length
"""


def served(url):
    return json.loads(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats").read())["requests"]


@pytest.fixture
def judged_run(tmp_path, server):
    probs = write_problems(tmp_path / "problems.jsonl", 12)
    url = server(problems=str(probs), problem_column="question", mix={"right": 0.5, "wrong": 0.3, "truncated": 0.2})
    (tmp_path / "chain.yaml").write_text(CHAIN)
    m = write_manifest(tmp_path, url, n=3, filters="chain.yaml")
    res = run_manifest(load_manifest(m), progress=False)
    return tmp_path, url, res


def test_chain_applied_as_it_goes_every_step_judges_every_sample(judged_run):
    tmp, url, res = judged_run
    out = tmp / "out"
    assert res.complete and res.stats.judged == 36
    # 3 steps + the `response` step every chain starts with (judge/filters/response.py)
    assert query(out, "SELECT count(*) FROM verdicts") == [(36 * 4,)]
    assert query(out, "SELECT DISTINCT filter FROM verdicts WHERE step = 0") == [("response",)]
    assert query(out, "SELECT count(*) FROM samples WHERE accepted IS NULL") == [(0,)]
    # Truncated answers are rejected by the format step, wrong ones by math, for a stated reason.
    assert query(out, "SELECT count(*) FROM samples WHERE finish_reason = 'length' AND reject_reason <> 'format:truncated'") == [(0,)]
    rows = query(out, "SELECT gold, completion, accepted, reject_reason FROM samples WHERE finish_reason = 'stop'")
    for gold, completion, accepted, reason in rows:
        right = "\\boxed{" + gold.split("#### ")[1] + "}" in completion
        assert accepted == right, (gold, completion, reason)
        if not right:
            assert reason == "math:wrong_answer"
    # The math step says what it extracted.
    details = query(out, "SELECT details FROM verdicts WHERE filter = 'math' AND NOT passed LIMIT 1")[0][0]
    assert json.loads(details)
    assert res.stats.accepted == query(out, "SELECT count(*) FROM samples WHERE accepted")[0][0]
    # chain.json names the chain the verdicts belong to
    assert json.loads((out / "verdicts" / "chain.json").read_text())["name"] == "test-math"


def test_filter_command_rejudges_without_sampling(judged_run):
    tmp, url, _ = judged_run
    out = tmp / "out"
    before = served(url)
    (tmp / "lenient.yaml").write_text("name: lenient\nsteps:\n  - filter: format\n    params: {check_truncated: false, min_cot_chars: 0, require_completion: false, require_boxed: false}\n")
    r = cli("filter", out, "--chain", tmp / "lenient.yaml")
    assert r.returncode == 0, r.stderr
    assert "chain lenient: 36 samples" in r.stdout
    assert served(url) == before  # nothing was bought
    assert json.loads((out / "verdicts" / "chain.json").read_text())["name"] == "lenient"
    assert query(out, "SELECT count(*), count(DISTINCT step) FROM verdicts") == [(72, 2)]  # + response
    assert query(out, "SELECT count(*) FROM samples WHERE accepted") == [(36,)]
    # and back: the manifest's own chain restores its verdicts
    r = cli("filter", out)
    assert r.returncode == 0, r.stderr
    assert query(out, "SELECT count(DISTINCT step) FROM verdicts") == [(4,)]


def test_max_accepted_counts_judged_samples(tmp_path, server):
    probs = write_problems(tmp_path / "problems.jsonl", 40)
    url = server(problems=str(probs), problem_column="question", mix={"right": 0.5, "wrong": 0.5})
    (tmp_path / "chain.yaml").write_text(CHAIN)
    m = write_manifest(tmp_path, url, n=1, filters="chain.yaml", budget="max_accepted: 5", limits=", concurrency: 1")
    res = run_manifest(load_manifest(m), progress=False)
    assert "max_accepted" in res.stats.stop_reason
    accepted, total = query(tmp_path / "out", "SELECT count(*) FILTER (WHERE accepted), count(*) FROM samples")[0]
    assert 5 <= accepted <= 6 and total < 40


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps:\n  - filter: nope\n", "unknown filter 'nope'"),
        ("steps:\n  - filter: format\n    params: {bogus: 1}\n", "steps[0] (format): param 'bogus': unknown param"),
        ("steps: 3\n", "a chain is a mapping with 'steps'"),
        ("steps:\n  - filter: format\n    parms: {}\n", "unknown key 'parms'"),
    ],
)
def test_chain_file_errors_name_file_and_step(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ManifestError) as e:
        load_chain(str(p), FilterContext(base_dir=tmp_path))
    assert message in str(e.value) and str(p) in str(e.value)


def test_ready_chains_load():
    from conftest import ROOT

    for name in ("r1-math", "code", "no-gold"):
        chain = load_chain(str(ROOT / "filters" / f"{name}.yaml"), FilterContext(base_dir=ROOT))
        assert chain.steps, name


def test_rejudge_streams_shards_and_counts_each_key_once(tmp_path):
    """A key that a crash left in two shards is judged once; journals not yet compacted count too."""
    from curator.judge.runner import run_chain
    from curator.records import SAMPLE_SCHEMA
    from curator.store.sample_store import SampleStore
    from curator.store.shards import records_to_table, write_atomic

    def rec(i):
        return {"key": f"k{i}", "prompt_id": str(i), "sample_index": 0, "problem": "p", "cot": "c" * 10,
                "completion": "\\boxed{1}", "finish_reason": "stop", "messages_json": "[]", "seq": i}

    s = SampleStore(tmp_path, shard_rows=3)
    s.append([rec(i) for i in range(6)])  # two shards of 3
    write_atomic(records_to_table([rec(1), rec(4)], SAMPLE_SCHEMA), tmp_path / "shards" / "shard-zz-dup.parquet")
    s.append([rec(6)])  # stays in the journal
    chain = load_chain({"name": "f", "steps": ["format"]}, FilterContext(base_dir=tmp_path))
    assert run_chain(tmp_path, chain) == {"samples": 7}
    s.close()
    assert query(tmp_path, "SELECT count(*), count(DISTINCT key) FROM verdicts") == [(7, 7)]
