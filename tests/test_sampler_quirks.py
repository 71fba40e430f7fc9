"""Teacher quirks seen in real servers (llama.cpp, proxies), reproduced with curator's own server:
n ignored, no usage block, one request served at a time."""

import asyncio
import json
import math

import aiohttp
import duckdb
import pytest

from conftest import cli, write_manifest, write_problems
from curator.config import load_manifest
from curator.sample.cost import request_cost
from curator.sample.parse import Usage
from curator.audit.report import build_report
from curator.store.catalog import query as q
from curator.run import run_manifest
from curator.audit.status import status
from curator.sample.tokencount import CharEstimate, PER_MESSAGE_TOKENS, PRIMING_TOKENS
from curator.sample.window import AdaptiveWindow


def log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ignored_n_fills_missing_samples_with_their_own_seeds(tmp_path, server):
    log = tmp_path / "requests.jsonl"
    url = server(n_mode="ignore", request_log=str(log))
    m = write_manifest(tmp_path, url, n=3, params=", seed: 7")
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    out = tmp_path / "out"
    # Every (prompt, index) once; no key twice in the files either.
    assert q(out, "SELECT count(*), count(DISTINCT key), count(DISTINCT (prompt_id, sample_index)) FROM samples") == [(18, 18, 18)]
    raw = duckdb.connect().execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{out}/shards/*.parquet')").fetchall()
    assert raw == [(18, 18)]
    # Sample i was answered by a request seeded seed + i: the n=3 request for index 0, then one
    # request each for 1 and 2 (never the n request's seed again).
    seed_of = {r["id"]: (r["seed"], r["n"]) for r in log_lines(log) if r.get("id")}
    for idx, request_id in q(out, "SELECT sample_index, request_id FROM samples"):
        assert seed_of[request_id] == (7 + idx, 3 if idx == 0 else 1), (idx, seed_of[request_id])
    assert res.stats.requests == 18
    assert any("ignores n" in n for n in res.stats.notices)
    assert res.stats.window == 16  # a server that answers at once never shrinks the window


def test_resumed_sample_indices_get_their_own_seed(tmp_path, server):
    """After n=1, raising n to 3 asks only for indices 1 and 2: one n=2 request seeded seed + 1,
    so it cannot repeat the answer stored for index 0 (seed + 0) on a seed-reproducible server."""
    log = tmp_path / "requests.jsonl"
    url = server(request_log=str(log))
    m = write_manifest(tmp_path, url, n=1, params=", seed: 7")
    run_manifest(load_manifest(m), progress=False)
    m.write_text(m.read_text().replace("n: 1", "n: 3"))
    res = run_manifest(load_manifest(m), progress=False)
    assert res.stats.already_stored == 6 and res.stats.stored == 12 and res.stats.requests == 6
    second = [r for r in log_lines(log) if r.get("id")][6:]
    assert {(r["n"], r["seed"]) for r in second} == {(2, 8)}
    assert q(tmp_path / "out", "SELECT count(*), count(DISTINCT key) FROM samples") == [(18, 18)]


def test_missing_usage_is_counted_locally_and_flagged(tmp_path, server):
    url = server(send_usage=False, cot_placement="think")
    m = write_manifest(tmp_path, url, n=2)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete and res.stats.usage_estimated == 12
    out = tmp_path / "out"
    rows = q(out, "SELECT usage_estimated, raw_content, messages_json, prompt_tokens, completion_tokens, cost_usd FROM samples")
    chars = CharEstimate()
    price = load_manifest(m).teacher.price
    for flagged, raw, messages_json, pt, ct, cost in rows:
        assert flagged is True
        assert ct == chars.count(raw)  # one choice per share: its own count, exactly
        messages = json.loads(messages_json)
        request_prompt = PRIMING_TOKENS + sum(PER_MESSAGE_TOKENS + chars.count(x["content"]) for x in messages)
        assert pt in (request_prompt // 2, request_prompt - request_prompt // 2)  # the request's prompt, shared by its 2 samples
        assert cost == pytest.approx(request_cost(Usage(pt, ct, None, None), price), rel=0.02)
    # Everything that shows totals says they include estimates, and the totals are the shards' sums.
    info = status(out)
    assert info["usage_estimated_samples"] == 12
    assert info["completion_tokens"] == sum(r[4] for r in rows)
    report = build_report(out)
    assert report["cost"]["samples_with_estimated_usage"] == 12
    assert report["tokens"]["completion"] == sum(r[4] for r in rows)
    receipt = json.loads(res.receipt.read_text())
    assert receipt["tokens"]["usage_estimated_samples"] == 12 and receipt["tokens"]["completion"] == sum(r[4] for r in rows)
    r = cli("status", out)
    assert "includes estimated usage of 12 samples" in r.stdout, r.stdout


def test_usage_from_the_server_is_not_flagged(tmp_path, server):
    url = server()
    res = run_manifest(load_manifest(write_manifest(tmp_path, url, n=1)), progress=False)
    assert res.stats.usage_estimated == 0
    assert q(tmp_path / "out", "SELECT bool_or(usage_estimated), min(completion_tokens) > 0 FROM samples") == [(False, True)]


def _word_tokenizer(path, texts):
    """A real tokenizer.json (word level, trained here: nothing is downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(path))
    return tok


def test_tokenizer_json_counts_exactly(tmp_path, server):
    pytest.importorskip("tokenizers")
    (tmp_path / "tok").mkdir()
    tok = _word_tokenizer(tmp_path / "tok" / "tokenizer.json", ["two plus two is four"])
    url = server(send_usage=False, cot_placement="reasoning_content")
    m = write_manifest(tmp_path, url, n=1, extra_teacher="tokenizer: tok/tokenizer.json")
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    rows = q(tmp_path / "out", "SELECT usage_estimated, raw_content, cot, completion_tokens, reasoning_tokens FROM samples")
    assert len(rows) == 6
    for flagged, raw, cot, ct, rt in rows:
        n_content = len(tok.encode(raw, add_special_tokens=False).ids)
        n_cot = len(tok.encode(cot, add_special_tokens=False).ids)
        assert flagged and ct == n_content + n_cot and rt == n_cot and n_cot > 0
    # The resolved manifest holds the tokenizer's absolute path: resume (which reads it from OUT)
    # finds the file, and has nothing left to buy.
    import yaml

    resolved = yaml.safe_load((tmp_path / "out" / "manifest.resolved.yaml").read_text())
    assert resolved["teacher"]["tokenizer"] == str(tmp_path / "tok" / "tokenizer.json")
    r = cli("resume", tmp_path / "out", "--no-progress")
    assert r.returncode == 0 and "requests 0," in r.stdout + r.stderr, r.stderr


@pytest.mark.parametrize("name, content, message", [
    ("missing.json", None, "teacher.tokenizer: {path}: file not found"),
    ("vocab.txt", "a b c", "expected a tokenizer.json or a .gguf model file"),
    ("broken.json", "{not json", "not a readable tokenizer.json"),
])
def test_bad_tokenizer_fails_before_sending(tmp_path, server, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    url = server()
    m = write_manifest(tmp_path, url, n=1, extra_teacher=f"tokenizer: {name}")
    r = cli("run", m, "--no-progress")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message.format(path=tmp_path / name) in lines[0], r.stderr
    assert not (tmp_path / "out" / "shards").exists() or not any((tmp_path / "out" / "shards").iterdir())


async def _plain_burst(url: str, n: int, timeout_s: float) -> int:
    """n requests at once with no window, as a plain client would: how many time out."""
    body = {"model": "teacher", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        async def one():
            try:
                async with s.post(url + "/chat/completions", json=body) as r:
                    await r.read()
                    return False
            except TimeoutError:
                return True
        return sum(await asyncio.gather(*(one() for _ in range(n))))


def test_serial_server_window_adapts_and_nothing_fails(tmp_path, server):
    latency_s, timeout_s = 0.04, 0.6
    url = server(max_concurrent=1, latency_ms=latency_s * 1000, problems=str(write_problems(tmp_path / "problems.jsonl", 60)),
                 problem_column="question")
    # The setup is a real trap: 64 at once against this server, most of them time out.
    assert asyncio.run(_plain_burst(url, 64, timeout_s)) > 40
    m = write_manifest(tmp_path, url, n=1, problems=60, limits=", concurrency: 64")
    m.write_text(m.read_text().replace("timeout_s: 10, max_retries: 4", f"timeout_s: {timeout_s}, max_retries: 1"))
    res = run_manifest(load_manifest(m), progress=False)
    s = res.stats
    assert res.complete and s.failed == 0 and s.stored == 60, s.errors
    assert s.requeued > 0  # timeouts happened and none of them cost a retry or a sample
    # Little's law: the window settles where the wait stays under half the timeout (~7 here).
    assert s.window_lowest <= math.ceil(timeout_s / 2 / latency_s) + 1 and s.window <= 16
    assert any("in-flight window 64 ->" in n for n in s.notices), s.notices
    assert q(tmp_path / "out", "SELECT count(*), count(DISTINCT key), max(attempts) FROM samples")[0][:2] == (60, 60)
    receipt = json.loads(res.receipt.read_text())
    assert receipt["window"]["lowest"] == s.window_lowest and receipt["window"]["requeued_timeouts"] == s.requeued


def test_window_cuts_once_per_congestion_event():
    async def go():
        w = AdaptiveWindow(32, timeout_s=10)
        tickets = [await w.acquire() for _ in range(32)]
        for t in tickets[:10]:  # ten timeouts of requests all sent before the cut: one event
            w.congested(t, "a timeout")
        assert (w.size, w.congestion_events) == (16, 1)
        for _ in range(32):
            w.release()
        later = await w.acquire()
        w.congested(later, "HTTP 503")  # sent after the cut: a new event
        assert (w.size, w.congestion_events) == (8, 2)
        w.release()
        for _ in range(200):  # successes grow it back (one per window of answers)
            w.success()
        assert 8 < w.size <= 32
        # A full window makes the next acquire wait until a slot is released.
        held = [await w.acquire() for _ in range(w.size)]
        waiter = asyncio.ensure_future(w.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        w.release()
        await asyncio.wait_for(waiter, 1)
        assert w.in_flight == len(held)

    asyncio.run(go())


def test_window_tells_random_faults_from_congestion():
    """A busy API's random 503s and hung requests must not shrink the window (AIMD under a few %
    random loss would settle near 6 in flight); a run of 503s, or timeouts that Little's law says
    were spent in the queue, do."""
    async def go():
        w = AdaptiveWindow(64, timeout_s=1.0)
        for i in range(400):  # 5% random 503s among fast answers
            t = await w.acquire()
            w.release()
            if i % 20 == 0:
                w.overloaded(t)
            else:
                w.success()
        assert (w.size, w.congestion_events) == (64, 0)
        # ~thousands of answers/s: 64 in flight wait ~ms, so a timeout is the teacher's, not our queue
        t = await w.acquire()
        assert w.throughput() > 1000 and not w.queued(t)
        w.release()
        for _ in range(10):  # a run of 503s is overload: cut after cut
            w.overloaded(await w.acquire())
            w.release()
        assert w.size < 8 and w.congestion_events >= 3
        for _ in range(40):  # then slow start: back to half the pre-burst window in ~30 answers
            w.success()
        assert w.size >= 32

        slow = AdaptiveWindow(64, timeout_s=1.0)
        for _ in range(4):  # a serial teacher: one answer every 0.1 s
            slow.success()
            await asyncio.sleep(0.1)
        tickets = [await slow.acquire() for _ in range(8)]
        assert not slow.queued(tickets[0]) and slow.queued(tickets[7])  # 8 / ~10 per s >= 0.5 s

    asyncio.run(go())
