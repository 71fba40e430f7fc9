"""`curator estimate`: the pilot is kept (the full run reuses it), and the projection's own interval
holds the true cost per 50k accepted samples."""

import json

import numpy as np
import pytest
import yaml

from conftest import cli, write_manifest, write_problems
from curator.config import Manifest, load_manifest
from curator.audit.drift import gold_answer, predicted_answer
from curator.audit.estimate import pilot_manifest, project, summary_lines, wilson
from curator.judge.base import Filter, register, verdicts
from curator.audit.report import build_report
from curator.run import estimate, run_manifest


@register
class _EstimateGold(Filter):
    """The last \\boxed{} equals the gold (a stand-in for `math` without worker processes)."""

    name = "test_estimate_gold"

    def apply(self, df):
        ok = [predicted_answer(c) == gold_answer(g) for c, g in zip(df["completion"].to_list(), df["gold"].to_list())]
        return verdicts(df["key"].to_list(), ok, ["wrong_answer"] * len(ok), [None] * len(ok))


def test_wilson_known_values():
    lo, hi = wilson(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # z^2 / (n + z^2)
    lo, hi = wilson(5, 10, 0.95)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson(10, 10, 0.95)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    a, b = wilson(41, 80, 0.9)
    c, d = wilson(41, 80, 0.99)
    assert c < a < 41 / 80 < b < d


def _manifest(**limits) -> Manifest:
    return Manifest.model_validate({"name": "sim", "source": {"path": "x.jsonl"}, "prompt": {"user": "{{ problem }}"},
                                    "teacher": {"base_url": "http://127.0.0.1:1/v1", "model": "deepseek-reasoner"},
                                    "limits": limits or {}, "output": "out"})


def test_interval_coverage_by_simulation():
    """Many pilots from one known population: the 90% interval holds the population's cost per
    accepted sample about 90% of the time (prompts differ in difficulty and in length)."""
    rng = np.random.default_rng(7)
    P, n = 600, 2
    hard = rng.random(P) < 0.4
    p_acc = np.where(hard, 0.15, 0.85)
    rows = []
    for i in range(P):
        per_prompt = rng.lognormal(0, 0.4)
        for j in range(n):
            rows.append({"key": f"{i}-{j}", "prompt_id": f"p{i}", "cost_usd": 0.001 * per_prompt * rng.lognormal(0, 0.2),
                         "accepted": bool(rng.random() < p_acc[i]), "prompt_tokens": 100, "completion_tokens": 1000,
                         "request_id": f"r{i}-{j}", "latency_s": 1.0})
    true = sum(r["cost_usd"] for r in rows) / sum(r["accepted"] for r in rows)
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    ids = list(by_prompt)
    m = _manifest()
    hits, trials = 0, 150
    for t in range(trials):
        pick = rng.choice(len(ids), size=60, replace=False)
        pilot = [r for k in pick for r in by_prompt[ids[k]]]
        res = project(m, pilot, 1, bootstrap=800, seed=t)
        lo, hi = res["usd_per_accepted_interval"]
        hits += lo <= true <= hi
    assert 0.82 <= hits / trials <= 0.98, hits / trials


def test_wall_time_uses_concurrency_and_limits():
    rows = [{"key": str(i), "prompt_id": str(i), "cost_usd": 0.01, "accepted": True, "prompt_tokens": 500, "completion_tokens": 500,
             "request_id": str(i), "latency_s": 2.0} for i in range(20)]
    # 10 in flight at 2 s a request: 5 requests/s -> 1000 accepted in 200 s
    assert project(_manifest(concurrency=10), rows, 1000)["projected_wall_s"] == pytest.approx(200)
    # RPM 60 caps it at 1 request/s
    assert project(_manifest(concurrency=10, rpm=60), rows, 1000)["projected_wall_s"] == pytest.approx(1000)
    # TPM 30,000 at 1,000 tokens a request: 0.5 requests/s
    assert project(_manifest(concurrency=10, tpm=30_000), rows, 1000)["projected_wall_s"] == pytest.approx(2000)


def test_pilot_manifest_keeps_a_seed_and_caps_the_limit(tmp_path):
    m = _manifest()
    p = pilot_manifest(m, 50)
    assert p.source.limit == 50 and p.source.shuffle_seed is not None and m.source.limit is None
    m.source.shuffle_seed, m.source.limit = 3, 20
    p = pilot_manifest(m, 50)
    assert (p.source.shuffle_seed, p.source.limit) == (3, 20)


def test_pilot_is_kept_and_the_true_cost_is_inside_the_interval(tmp_path, server):
    write_problems(tmp_path / "problems.jsonl", 400)
    url = server(problems=str(tmp_path / "problems.jsonl"), problem_column="question", mix={"right": 0.5, "wrong": 0.5}, cot_words=200)
    m = write_manifest(tmp_path, url, n=1, problems=400, filters="[test_estimate_gold]")
    est = estimate(load_manifest(m), pilot=80, target=50_000)
    out = tmp_path / "out"

    assert est["pilot"]["prompts"] == 80 and est["pilot"]["samples"] == 80
    assert est["pilot_run"]["stored_now"] == 80
    ids = {int(p[1:]) for p in _prompt_ids(out)}
    assert ids != set(range(80))  # a random sample of the prompts, not the first 80
    lo, hi = est["acceptance_interval"]
    assert lo < 0.5 < hi
    # `resume` would finish the real run, not the pilot.
    resolved = yaml.safe_load((out / "manifest.resolved.yaml").read_text())
    assert resolved["source"]["limit"] is None and resolved["source"]["shuffle_seed"] is None
    lines = "\n".join(summary_lines(est))
    assert "projected cost for 50,000 accepted" in lines and "90% interval" in lines and "how sure" in lines

    # Estimating again buys nothing.
    again = estimate(load_manifest(m), pilot=80, target=50_000)
    assert again["pilot_run"]["requests"] == 0 and again["projected_usd"] == pytest.approx(est["projected_usd"])

    # The full run reuses the pilot's 80 answers: kept, not wasted.
    full = run_manifest(load_manifest(m), progress=False)
    assert full.stats.already_stored == 80 and full.stats.requests == 320 and full.stats.stored == 320
    rep = build_report(out)
    assert rep["sampled"] == 400
    commands = [r["command"] for r in rep["runs"]]
    assert commands.count("estimate") == 2 and commands[-1] == "run"

    # The truth: what 50k accepted samples cost on this teacher, measured over every prompt.
    true = rep["usd_per_50k_accepted"]
    lo, hi = est["projected_usd_interval"]
    assert lo < true < hi, (lo, true, hi)
    assert est["acceptance_interval"][0] < rep["acceptance_rate"] < est["acceptance_interval"][1]
    assert est["projected_wall_s"] > 0 and est["projected_wall_s_interval"][0] <= est["projected_wall_s"] <= est["projected_wall_s_interval"][1]


def _prompt_ids(out):
    import duckdb

    con = duckdb.connect()
    try:
        return [r[0] for r in con.execute(f"SELECT prompt_id FROM read_parquet('{out}/shards/*.parquet')").fetchall()]
    finally:
        con.close()


def test_cli_json_without_a_chain(tmp_path, server):
    url = server(cot_words=100)
    m = write_manifest(tmp_path, url, n=2, problems=30)
    r = cli("estimate", m, "--pilot", "10", "--target", "1000", "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    assert est["pilot"]["prompts"] == 10 and est["pilot"]["samples"] == 20 and est["acceptance_rate"] == 1.0
    assert est["projected_samples"] == pytest.approx(1000)
    assert est["projected_usd"] == pytest.approx(1000 * est["pilot"]["usd"] / 20)
    lo, hi = est["projected_usd_interval"]
    assert lo <= est["projected_usd"] <= hi
    assert est["source_prompts"] == 30 and est["remaining_accepted"] == 1000 - 20
    text = cli("estimate", m, "--pilot", "10", "--target", "1000", "--no-progress", env={"COLUMNS": "200"})
    assert text.returncode == 0 and "0 answers bought now, 20 already stored" in text.stdout and "projected cost for 1,000 accepted" in text.stdout


def test_unknown_price_projects_tokens_not_dollars(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=1, problems=10, model="teacher")
    m.write_text(m.read_text().replace("price: {input: 0.55, cached_input: 0.14, output: 2.19}", ""))
    with pytest.warns(UserWarning, match="no price known"):
        est = estimate(load_manifest(m), pilot=5, target=100)
    assert est["projected_usd"] is None and est["projected_usd_interval"] == [None, None] and est["projected_tokens"] > 0
    assert "projected cost: unknown (no price for model 'teacher'" in "\n".join(summary_lines(est))
