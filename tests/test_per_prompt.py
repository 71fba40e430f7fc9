"""budget.per_prompt: sample until each prompt has K accepted answers (or M samples), over real
HTTP against the local teacher with half its answers wrong, judged by the real `math` filter."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict

import duckdb
import pytest

from conftest import ROOT, cli, write_manifest, write_problems
from curator.config import load_manifest
from curator.errors import ManifestError, RunError
from curator.run import run_manifest
from curator.store.catalog import query as q

K, M, N = 3, 7, 2
BUDGET = f"per_prompt: {{accepted: {K}, max_samples: {M}}}"


def log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def per_prompt_state(out):
    """prompt_id -> [(sample_index, accepted by the sample step)] in index order."""
    rows = q(out, "SELECT s.prompt_id, s.sample_index, v.passed FROM shards_raw s JOIN verdicts v USING (key) WHERE v.filter <> 'response' "
                  "ORDER BY 1, 2")
    by = defaultdict(list)
    for pid, idx, ok in rows:
        by[pid].append((idx, ok))
    return by


def check_k_or_m(by, prompts):
    assert len(by) == prompts
    for pid, samples in by.items():
        idx = [i for i, _ in samples]
        acc = sum(ok for _, ok in samples)
        # A prefix 0..T-1 of the indices, never above M, at least the first round.
        assert idx == list(range(len(idx))), (pid, idx)
        assert N <= len(idx) <= M, (pid, idx)
        assert acc >= K or len(idx) == M, (pid, samples)
        # Never asked for more once K were accepted: the sample before the last still lacked one.
        if len(idx) > N:
            assert sum(ok for _, ok in samples[:-1]) < K, (pid, samples)


def test_every_prompt_ends_with_k_accepted_or_m_samples(tmp_path, server):
    log = tmp_path / "requests.jsonl"
    probs = write_problems(tmp_path / "problems.jsonl", 40)
    url = server(problems=str(probs), problem_column="question", mix={"right": 0.5, "wrong": 0.5}, request_log=str(log))
    m = write_manifest(tmp_path, url, n=N, problems=40, params=", seed: 5", filters="[math]", budget=BUDGET)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete and res.stats.stop_reason is None
    by = per_prompt_state(tmp_path / "out")
    check_k_or_m(by, 40)
    # Both endings happen with a 50% wrong teacher, and top-ups happened at all.
    assert any(len(s) == M and sum(ok for _, ok in s) < K for s in by.values())
    assert any(len(s) > N and sum(ok for _, ok in s) == K for s in by.values())
    receipt = json.loads(res.receipt.read_text())["per_prompt"]
    assert receipt["reached_k"] + receipt["hit_max_samples"] == 40 and receipt["short"] == 0

    # What the server handed out is what is stored: every answered request once, n choices each.
    stored = q(tmp_path / "out", "SELECT request_id, count(*) FROM samples GROUP BY 1")
    answered = {r["id"]: r["n"] for r in log_lines(log) if r["status"] == 200 and r["id"]}
    assert dict(stored) == answered
    stats = json.loads(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats").read())
    assert stats["completions"] == sum(answered.values()) == q(tmp_path / "out", "SELECT count(*) FROM samples")[0][0]
    # Every request of a prompt has its own seed (seed + first index): no key asked twice.
    seeds = Counter((r["prompt"], r["seed"]) for r in log_lines(log) if r["status"] == 200)
    assert max(seeds.values()) == 1

    # Run again: everything is decided, nothing is bought.
    again = run_manifest(load_manifest(m), progress=False)
    assert again.stats.requests == 0


def test_max_accepted_still_stops(tmp_path, server):
    probs = write_problems(tmp_path / "problems.jsonl", 30)
    url = server(problems=str(probs), problem_column="question", mix={"right": 0.5, "wrong": 0.5})
    m = write_manifest(tmp_path, url, n=N, problems=30, params=", seed: 5", filters="[math]",
                       budget=f"max_accepted: 20, {BUDGET}", limits=", concurrency: 2")
    res = run_manifest(load_manifest(m), progress=False)
    assert "max_accepted" in res.stats.stop_reason
    assert 20 <= q(tmp_path / "out", "SELECT count(*) FILTER (WHERE accepted) FROM samples")[0][0] <= 20 + 2 * N


def test_kill_9_in_round_two_then_resume_matches_an_uninterrupted_run(tmp_path):
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import ServerProcess

    log = tmp_path / "requests.jsonl"
    probs = write_problems(tmp_path / "problems.jsonl", 60)
    srv = ServerProcess(ServerConfig.load({"latency_ms": 60, "jitter_ms": 40, "problems": str(probs), "problem_column": "question",
                                           "mix": {"right": 0.5, "wrong": 0.5}, "request_log": str(log)}))
    try:
        url = srv.base_url
        kw = dict(n=N, problems=60, params=", seed: 5", filters="[math]", budget=BUDGET, limits=", concurrency: 8")
        ref = write_manifest(tmp_path, url, out="ref", name="ref.yaml", **kw)
        run_manifest(load_manifest(ref), progress=False)
        ref_lines = len(log_lines(log))

        m = write_manifest(tmp_path, url, **kw)
        p = subprocess.Popen([sys.executable, "-m", "curator", "run", str(m), "--no-progress"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        journal = tmp_path / "out" / "journal"
        deadline, top_ups = time.monotonic() + 60, 0
        while time.monotonic() < deadline and p.poll() is None:
            lines = [ln for f in journal.glob("*.jsonl") for ln in f.read_text().splitlines()] if journal.exists() else []
            top_ups = sum(1 for ln in lines if ln.endswith("}") and json.loads(ln).get("sample_index", 0) >= N)
            if top_ups >= 10:
                break
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert top_ups >= 10, "the run ended before round two was under way"
        r = cli("resume", tmp_path / "out", "--no-progress")
        assert r.returncode == 0, r.stderr

        # Same final state as the uninterrupted run: the same keys, with the same verdicts.
        state = "SELECT key, accepted FROM samples ORDER BY key"
        assert q(tmp_path / "out", state) == q(tmp_path / "ref", state)
        check_k_or_m(per_prompt_state(tmp_path / "out"), 60)
        raw = duckdb.connect().execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{tmp_path}/out/shards/*.parquet')").fetchall()[0]
        assert raw[0] == raw[1]
        # No key bought twice: a (prompt, seed) pair answered twice can only be a request the kill
        # cut off in flight (at most the 8 workers), never one whose answer was stored.
        ours = [r for r in log_lines(log)[ref_lines:] if r["status"] == 200 and r["id"]]
        stored_ids = {rid for (rid,) in q(tmp_path / "out", "SELECT DISTINCT request_id FROM samples")}
        twice = Counter((r["prompt"], r["seed"]) for r in ours)
        repeated = [r for r in ours if twice[(r["prompt"], r["seed"])] > 1]
        assert len([r for r in repeated if r["id"] in stored_ids]) == len({(r["prompt"], r["seed"]) for r in repeated})
        assert len(repeated) - len({(r["prompt"], r["seed"]) for r in repeated}) <= 8
    finally:
        srv.stop()


@pytest.mark.parametrize("budget, filters, message", [
    ("per_prompt: {accepted: 2, max_samples: 1}", "[math]", "budget.per_prompt.max_samples (1) must be >= teacher.params.n (2)"),
    ("per_prompt: {accepted: 0, max_samples: 4}", "[math]", "field 'budget.per_prompt.accepted'"),
    ("per_prompt: {accepted: 2, max_samples: 4}", None, "budget.per_prompt needs a filter chain"),
])
def test_bad_per_prompt_is_one_line(tmp_path, budget, filters, message):
    m = write_manifest(tmp_path, "http://127.0.0.1:9/v1", n=2, filters=filters, budget=budget)
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_per_prompt_is_refused_in_batch_mode(tmp_path):
    """Rounds follow verdicts as they arrive; a batch answers hours later."""
    m = write_manifest(tmp_path, "http://127.0.0.1:9/v1", n=2, filters="[math]", extra_teacher="mode: batch",
                       budget="per_prompt: {accepted: 2, max_samples: 4}")
    with pytest.raises(ManifestError, match="it needs teacher.mode: online"):
        load_manifest(m)


def test_per_prompt_needs_a_sample_step(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=2, filters="[near_dup]", budget="per_prompt: {accepted: 2, max_samples: 4}")
    with pytest.raises(RunError, match="sample-scope step"):
        run_manifest(load_manifest(m), progress=False)


def mixed_problems(path, n=30):
    """Problems whose teacher wrong-answer rate runs from 0 to 1: a third never solved, a third always."""
    rates = [0.0, 1.0, 0.5]
    rows = [{"id": f"p{i}", "question": f"Tom has {i + 3} apples and buys {i + 2} more. How many now?", "answer": f"#### {2 * i + 5}",
             "wrong_rate": rates[i % 3]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {r["id"]: r["wrong_rate"] for r in rows}


def test_difficulty_view_report_export_and_pass_rate_filter(tmp_path, server):
    from curator.audit.report import build_report
    from curator.judge.runner import refilter
    from curator.ship.export import ExportOptions, export

    rates = mixed_problems(tmp_path / "problems.jsonl")
    url = server(problems=str(tmp_path / "problems.jsonl"), problem_column="question", wrong_rate_column="wrong_rate")
    m = write_manifest(tmp_path, url, n=N, params=", seed: 5", filters="[math]", budget=BUDGET)
    run_manifest(load_manifest(m), progress=False)
    out = tmp_path / "out"

    view = {r[0]: r[1:] for r in q(out, "SELECT prompt_id, sampled, judged, solved, accepted, pass_rate, tokens, cost_usd FROM prompts")}
    direct = {r[0]: r[1:] for r in q(out, "SELECT prompt_id, count(*), count(*) FILTER (WHERE accepted), "
                                          "sum(prompt_tokens + completion_tokens), sum(cost_usd) FROM samples GROUP BY 1")}
    assert set(view) == set(rates)
    for pid, (sampled, judged, solved, accepted, rate, tokens, usd) in view.items():
        assert (sampled, accepted, tokens) == direct[pid][:3] and usd == pytest.approx(direct[pid][3])
        assert judged == sampled and rate == pytest.approx(solved / judged)
        if rates[pid] == 1.0:
            assert (sampled, accepted, rate) == (M, 0, 0.0)  # never solved: sampled up to M
        if rates[pid] == 0.0:
            assert (sampled, accepted, rate) == (K, K, 1.0)  # always solved: K and not one more

    r = build_report(out)["difficulty"]
    assert r["available"] and sum(b["prompts"] for b in r["buckets"]) == 30
    by = {b["bucket"]: b for b in r["buckets"]}
    easy = [p for p in view if view[p][4] == 1.0]
    assert by["0%"]["prompts"] == 10 and by["100%"]["prompts"] == len(easy) >= 10
    assert by["100%"]["usd_per_accepted"] == pytest.approx(sum(view[p][6] for p in easy) / sum(view[p][3] for p in easy))
    assert by["0%"]["usd_per_accepted"] is None  # nothing accepted there
    nothing = r["ended_with_nothing"]
    assert nothing["prompts"] == 10 and {e["prompt_id"] for e in nothing["examples"]} == {p for p in rates if rates[p] == 1.0}
    text = cli("report", out)
    assert text.returncode == 0 and "10 prompts ended with no accepted sample" in text.stdout, text.stdout[-2000:]

    res = export(out, ExportOptions(format="hf", to=tmp_path / "hf", test_size=0))
    exported = {row["prompt_id"]: row["pass_rate"] for split in res.rows.values() for row in split}
    assert exported and all(exported[p] == pytest.approx(view[p][4]) for p in exported)

    # Difficulty filtering: drop what every sample solved, and what none did.
    (tmp_path / "difficulty.yaml").write_text("steps: [math, {pass_rate: {min: 0.01, max: 0.99}}]\n")
    _, (samples, accepted, _), reasons = refilter(out, str(tmp_path / "difficulty.yaml"))
    assert dict(reasons)["pass_rate:too_easy"] == sum(view[p][0] for p in easy)
    kept = q(out, "SELECT DISTINCT prompt_id FROM samples WHERE accepted")
    assert {p for (p,) in kept} == {p for p in rates if rates[p] == 0.5 and view[p][4] < 1}


def test_pass_rate_filter_min_samples_and_bad_params(tmp_path):
    import polars as pl

    from curator.judge.base import FilterContext
    from curator.judge.chain import load_chain

    chain = load_chain([{"pass_rate": {"max": 0.6, "min_samples": 3}}], FilterContext())
    df = pl.DataFrame({"key": list("abcdef"), "prompt_id": ["x", "x", "x", "y", "y", "z"],
                       "prior_passed": [True, False, False, True, True, False]})
    v = chain.steps[0].filter.apply(df)
    assert dict(zip(v["key"], v["reason"])) == {"a": None, "b": None, "c": None, "d": "few_samples", "e": "few_samples", "f": "few_samples"}
    with pytest.raises(ManifestError, match="min .* is above max"):
        load_chain([{"pass_rate": {"min": 0.8, "max": 0.2}}], FilterContext())


def test_estimate_projects_k_accepted_against_fixed_n(tmp_path, server):
    """The projection from a fixed-n pilot lands near what the K-accepted run then buys."""
    from curator.run import estimate

    rows = [{"id": f"p{i}", "question": f"Tom has {i + 3} apples and buys {i + 2} more. How many now?", "answer": f"#### {2 * i + 5}",
             "wrong_rate": (i * 37 % 100) / 99} for i in range(120)]
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    url = server(problems=str(tmp_path / "problems.jsonl"), problem_column="question", wrong_rate_column="wrong_rate")
    m = write_manifest(tmp_path, url, n=4, params=", seed: 5", filters="[math]", budget="per_prompt: {accepted: 2, max_samples: 10}")
    r = estimate(load_manifest(m), pilot=60, target=100, bootstrap=200)["per_prompt"]
    lo, hi = r["samples_per_prompt_interval"]
    assert lo <= r["samples_per_prompt"] <= hi and r["fixed_n"]["samples"] == 4 * 120
    res = run_manifest(load_manifest(m), progress=False)
    actual = q(tmp_path / "out", "SELECT count(*) / count(DISTINCT prompt_id), count(*) FILTER (WHERE accepted) FROM samples")[0]
    assert actual[0] == pytest.approx(r["samples_per_prompt"], rel=0.25)
    assert actual[1] == pytest.approx(r["accepted_total"], rel=0.25)
    assert res.complete
    text = cli("estimate", m, "--pilot", "60", "--target", "100")
    assert text.returncode == 0 and "against fixed n=4" in text.stdout, text.stdout + text.stderr


def test_top_ups_start_while_the_first_round_is_still_being_sent(tmp_path, server):
    """No barrier between rounds: a prompt's second round is sent as soon as its own verdicts are
    in, while other prompts' first-round requests are still going out."""
    log = tmp_path / "requests.jsonl"
    probs = write_problems(tmp_path / "problems.jsonl", 40)
    url = server(problems=str(probs), problem_column="question", mix={"right": 0.5, "wrong": 0.5}, request_log=str(log),
                 latency_ms=100)
    m = write_manifest(tmp_path, url, n=N, problems=40, params=", seed: 5", filters="[math]", budget=BUDGET,
                       limits=", concurrency: 2")
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    lines = [r for r in log_lines(log) if r["status"] == 200]
    first = [r for r in lines if r["seed"] == 5]  # the first round: one n=2 request per prompt, seed + 0
    top_up = [r for r in lines if r["seed"] != 5]
    assert len(first) == 40 and top_up
    assert min(r["t0"] for r in top_up) < max(r["t0"] for r in first)
