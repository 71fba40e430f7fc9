"""`curator report`: every number in the JSON and the HTML equals a DuckDB query over the shards
and verdict files themselves (not over the catalog views the report uses)."""

import base64
import json
import re
from pathlib import Path

import duckdb
import pytest

from conftest import cli, write_manifest
from curator.config import load_manifest
from curator.sample.cost import format_usd
from curator.audit.drift import gold_answer, predicted_answer
from curator.judge.base import Filter, register, verdicts
from curator.audit.html_report import read_embedded
from curator.run import run_manifest


@register
class _ReportGold(Filter):
    """A cheap stand-in for `math` (no worker processes): the last \\boxed{} equals the gold."""

    name = "test_report_gold"

    def apply(self, df):
        preds = [predicted_answer(c) for c in df["completion"].to_list()]
        golds = [gold_answer(g) for g in df["gold"].to_list()]
        ok = [p is not None and p == g for p, g in zip(preds, golds)]
        return verdicts(df["key"].to_list(), ok, [None if o else ("no_answer" if p is None else "wrong_answer") for o, p in zip(ok, preds)],
                        [{"pred": p, "gold": g} for p, g in zip(preds, golds)])


MIX = {"right": 0.55, "wrong": 0.1, "truncated": 0.06, "no_think": 0.05, "mixed_lang": 0.08, "duplicate": 0.08, "degenerate": 0.04, "no_boxed": 0.04}
CHAIN = "[format, {language: {target: en}}, test_report_gold, length, {near_dup: {field: cot, threshold: 0.8}}]"


def _problems(path: Path, prefix: str, noun: str, n: int) -> None:
    rows = [{"id": f"{prefix}{i}", "question": f"{prefix.upper()} has {i + 3} {noun} and gets {i + 2} more. How many {noun} now?", "answer": f"#### {2 * i + 5}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """Two sources into one output directory, the full chain (format, language, gold, length, near_dup)."""
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import running_server

    tmp = tmp_path_factory.mktemp("report")
    _problems(tmp / "problems.jsonl", "a", "apples", 30)
    _problems(tmp / "other.jsonl", "b", "pears", 20)
    (tmp / "all.jsonl").write_text((tmp / "problems.jsonl").read_text() + (tmp / "other.jsonl").read_text())
    cfg = ServerConfig.load({"problems": str(tmp / "all.jsonl"), "problem_column": "question", "mix": MIX, "cot_words": 80, "cached_fraction": 0.25})
    with running_server(cfg) as url:
        m1 = write_manifest(tmp, url, n=2, filters=CHAIN, name="one.yaml")
        m2 = write_manifest(tmp, url, n=2, filters=CHAIN, name="two.yaml")
        m2.write_text(m2.read_text().replace("path: problems.jsonl", "path: other.jsonl"))
        run_manifest(load_manifest(m1), progress=False)
        run_manifest(load_manifest(m2), progress=False)
    return tmp / "out"


def q(sql: str):
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def S(out):
    return f"read_parquet('{out}/shards/*.parquet')"


def V(out):
    return f"read_parquet('{out}/verdicts/*.parquet')"


@pytest.fixture(scope="module")
def rep(out):
    r = cli("report", out, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def truth(out):
    """Accepted keys and the sequential funnel, from the files with plain Python."""
    steps = len(json.loads((out / "verdicts" / "chain.json").read_text())["steps"])
    keys = [k for (k,) in q(f"SELECT key FROM {S(out)}")]
    by_key = {k: {} for k in keys}
    for key, step, passed, reason in q(f"SELECT key, step, passed, reason FROM {V(out)}"):
        if key in by_key:
            by_key[key][step] = (passed, reason)
    remaining = [sum(all(by_key[k].get(j, (False,))[0] for j in range(s + 1)) for k in keys) for s in range(steps)]
    first_fail = {}
    for k in keys:
        for j in range(steps):
            if not by_key[k].get(j, (False,))[0]:
                first_fail[k] = (j, by_key[k].get(j, (None, "pending"))[1])
                break
    accepted = {k for k in keys if k not in first_fail}
    return steps, keys, accepted, remaining, first_fail


def test_counts_money_and_funnel_equal_duckdb(out, rep):
    steps, keys, accepted, remaining, first_fail = truth(out)
    assert len(keys) == len(set(keys)) == 100
    # No (key, step) twice among the verdict files, so plain queries over them are the truth.
    assert q(f"SELECT count(*) = count(DISTINCT (key, step)) FROM {V(out)}") == [(True,)]
    assert rep["sampled"] == 100 and rep["prompts"] == 50
    assert rep["accepted"] == len(accepted) and 0 < rep["accepted"] < 100
    assert rep["rejected"] == len(first_fail)
    (total, prompt, cached, completion, reasoning) = q(f"SELECT sum(cost_usd), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), sum(reasoning_tokens) FROM {S(out)}")[0]
    assert rep["total_usd"] == pytest.approx(total, rel=1e-12)
    assert rep["usd_per_sample"] == pytest.approx(total / 100, rel=1e-12)
    assert rep["usd_per_accepted"] == pytest.approx(total / len(accepted), rel=1e-12)
    assert rep["usd_per_50k_accepted"] == pytest.approx(total / len(accepted) * 50_000, rel=1e-12)
    t = rep["tokens"]
    assert (t["prompt"], t["cached_prompt"], t["completion"], t["reasoning"]) == (prompt, cached, completion, reasoning)
    assert cached > 0
    assert t["per_accepted"]["completion"] == pytest.approx(completion / len(accepted))
    assert t["per_50k_accepted"]["total"] == pytest.approx((prompt + completion) / len(accepted) * 50_000)
    acc_cost = q(f"SELECT sum(cost_usd) FROM {S(out)} WHERE list_contains({sorted(accepted)}, key)")[0][0]
    assert rep["cost"]["usd_on_accepted"] == pytest.approx(acc_cost, rel=1e-12)
    assert rep["cost"]["usd_on_rejected"] == pytest.approx(total - acc_cost, rel=1e-9)

    # Funnel: sampled -> each step in chain order (rows surviving steps 0..k) -> accepted.
    f = rep["funnel"]
    assert [s["stage"] for s in f] == ["sampled", "response", "format", "language", "test_report_gold", "length", "near_dup", "accepted"]
    assert [s["remaining"] for s in f] == [100, *remaining, len(accepted)]
    for s in f[1:-1]:
        here = [r for (j, r) in first_fail.values() if j == s["step"]]
        assert s["rejected"] == len(here)
        assert {x["reason"]: x["count"] for x in s["reasons"]} == {r: here.count(r) for r in set(here)}
        alone = q(f"SELECT count(*) FROM {V(out)} WHERE step = {s['step']} AND NOT passed")[0][0]
        assert s["rejects_alone"] == alone
    # The steps that should bite on this teacher do.
    by_stage = {s["stage"]: s for s in f}
    assert by_stage["format"]["rejected"] > 0 and by_stage["test_report_gold"]["rejected"] > 0
    assert by_stage["language"]["rejects_alone"] > 0 and by_stage["near_dup"]["rejects_alone"] > 0
    # Reject reasons overall are "filter:reason" of the first failing step.
    names = {s["step"]: s["filter"] for s in f[1:-1]}
    want = {}
    for j, r in first_fail.values():
        want[f"{names[j]}:{r}"] = want.get(f"{names[j]}:{r}", 0) + 1
    assert {x["reason"]: x["count"] for x in rep["reject_reasons"]} == want


def test_lengths_languages_duplicates_sources(out, rep):
    L = rep["lengths"]
    n, mean, mx = q(f"SELECT count(reasoning_tokens), avg(reasoning_tokens), max(reasoning_tokens) FROM {S(out)}")[0]
    assert (L["cot_tokens"]["all"]["n"], L["cot_tokens"]["all"]["max"]) == (n, mx)
    assert L["cot_tokens"]["all"]["mean"] == pytest.approx(mean)
    med = q(f"SELECT median(completion_tokens) FROM {S(out)}")[0][0]
    assert L["output_tokens"]["all"]["p50"] == pytest.approx(med)
    assert L["cot_tokens"]["accepted"]["n"] == rep["accepted"]
    for name in ("cot_tokens", "output_tokens", "cot_chars", "completion_chars"):
        h = L[name]["hist"]
        assert sum(h["all"]) == 100 and sum(h["accepted"]) == rep["accepted"]
    # Histogram bins hold exactly the rows in their range.
    h = L["cot_chars"]["hist"]
    lo, hi = h["edges"][3], h["edges"][4]
    assert h["all"][3] == q(f"SELECT count(*) FROM {S(out)} WHERE length(coalesce(cot, '')) >= {lo} AND length(coalesce(cot, '')) < {hi}")[0][0]

    lang = rep["languages"]
    assert lang["available"]
    rej = q(f"SELECT count(*) FROM {V(out)} WHERE filter = 'language' AND NOT passed")[0][0]
    assert lang["rejected"] == rej > 0
    zh = q(f"""SELECT count(*) FROM (SELECT unnest(json_extract_string(details, '$.examples[*].lang')) AS l FROM {V(out)}
               WHERE filter = 'language' AND NOT passed) WHERE l = 'zh'""")[0][0]
    assert {v["value"]: v["count"] for v in lang["details"]["examples.lang"]["values"]}["zh"] == zh > 0

    d = rep["duplicates"]
    dups = q(f"SELECT count(*), count(DISTINCT json_extract_string(details, '$.cluster')) FROM {V(out)} WHERE filter = 'near_dup' AND NOT passed")[0]
    assert (d["duplicates"], d["clusters"]) == dups and dups[0] >= 2
    biggest = q(f"""SELECT count(*) + 1 FROM {V(out)} WHERE filter = 'near_dup' AND NOT passed
                    GROUP BY json_extract_string(details, '$.cluster') ORDER BY 1 DESC LIMIT 1""")[0][0]
    assert d["largest"][0]["size"] == biggest
    assert "standard problem" in d["largest"][0]["example"]  # the canned duplicate answer

    src = {s["source"]: s for s in rep["sources"]}
    assert set(src) == {"problems.jsonl", "other.jsonl"}
    for name, (sampled, prompts, usd) in {r[0]: r[1:] for r in q(f"SELECT source, count(*), count(DISTINCT prompt_id), sum(cost_usd) FROM {S(out)} GROUP BY 1")}.items():
        assert (src[name]["sampled"], src[name]["prompts"]) == (sampled, prompts)
        assert src[name]["usd"] == pytest.approx(usd, rel=1e-12)
    assert sum(s["accepted"] for s in src.values()) == rep["accepted"]

    assert [r["status"] for r in rep["runs"]] == ["complete", "complete"]
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        attempts = con.execute("SELECT sum(requests) FROM runs").fetchone()[0]
    finally:
        con.close()
    assert rep["cost"]["http_attempts"] == attempts == 50  # one request per prompt (n=2 in one), no retries
    assert rep["cost"]["requests"] == q(f"SELECT count(DISTINCT request_id) FROM {S(out)}")[0][0] == 50
    assert {c["cot_source"]: c["count"] for c in rep["cot_sources"]} == dict(q(f"SELECT cot_source, count(*) FROM {S(out)} GROUP BY 1"))


def test_html_is_self_contained_and_shows_the_same_numbers(out, rep):
    path = out / "report.html"
    assert path.exists()
    text = path.read_text()
    # Self-contained: plots are embedded PNGs, nothing is fetched.
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) >= 5
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    embedded = read_embedded(path)
    assert {k: v for k, v in embedded.items() if k != "generated_at"} == {k: v for k, v in rep.items() if k != "generated_at"}
    # The visible numbers.
    for s in rep["funnel"]:
        assert f"<td>{s['remaining']:,}</td>" in text
    for x in rep["reject_reasons"]:
        assert x["reason"] in text
    for v in (rep["total_usd"], rep["usd_per_accepted"], rep["usd_per_50k_accepted"]):
        assert format_usd(v) in text
    assert f"{rep['tokens']['completion']:,}" in text
    for section in ("Funnel", "Tokens and dollars", "Lengths", "Languages", "Duplicate clusters", "Per source", "Drift over the run"):
        assert f"<h2>{section}</h2>" in text


def test_html_path_option_and_terminal_tables(out, tmp_path):
    target = tmp_path / "elsewhere" / "r.html"
    r = cli("report", out, "--html", target, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert target.exists() and "data:image/png;base64," in target.read_text()
    for words in ("Funnel", "Tokens and dollars", "Lengths", "Per source", "Drift", "near-duplicates", "languages:", f"HTML report: {target}"):
        assert words in r.stdout, words


def test_report_errors_in_one_line(tmp_path):
    r = cli("report", tmp_path / "missing")
    assert r.returncode != 0 and "no such output directory" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("report", tmp_path / "empty")
    assert r.returncode != 0 and "not a curator output directory" in r.stderr and "Traceback" not in r.stderr


def test_no_chain_counts_every_sample_as_accepted(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=2, problems=4)
    run_manifest(load_manifest(m), progress=False)
    from curator.audit.report import build_report

    r = build_report(tmp_path / "out")
    assert r["chain"] is None and r["sampled"] == r["accepted"] == 8
    assert [s["stage"] for s in r["funnel"]] == ["sampled"]
    total = q(f"SELECT sum(cost_usd) FROM {S(tmp_path / 'out')}")[0][0]
    assert r["usd_per_50k_accepted"] == pytest.approx(total / 8 * 50_000)
