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
    rows = q(out, "SELECT s.prompt_id, s.sample_index, v.passed FROM shards_raw s JOIN verdicts v USING (key) WHERE v.step = 0 "
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


def test_per_prompt_needs_a_sample_step(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=2, filters="[near_dup]", budget="per_prompt: {accepted: 2, max_samples: 4}")
    with pytest.raises(RunError, match="sample-scope step"):
        run_manifest(load_manifest(m), progress=False)
