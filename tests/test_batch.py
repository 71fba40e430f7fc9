"""Batch mode over real HTTP against the local teacher's batch API (curator/teacher/batch.py):
each lifecycle end, kill -9 at each step then resume, and the offline engine round trip."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from conftest import cli, write_manifest

from curator.config import load_manifest
from curator.errors import RunError
from curator.run import resume, run_manifest
from curator.store import catalog
from curator.store.ledger import Ledger

PRICE = "price: {input: 0.55, cached_input: 0.14, output: 2.19}"
BATCH_PRICE = "price: {input: 0.55, cached_input: 0.14, output: 2.19, batch_discount: 0.5}"


def batch_manifest(tmp: Path, url: str, *, poll_s: float = 0.05, out: str = "out", name: str = "m.yaml", mode: str = "batch",
                   max_requests: int = 50_000, **kw) -> Path:
    extra = f"mode: {mode}\n  batch: {{poll_s: {poll_s}, max_requests: {max_requests}}}"
    p = write_manifest(tmp, url, out=out, name=name, extra_teacher=extra, **kw)
    p.write_text(p.read_text().replace(PRICE, BATCH_PRICE))
    return p


def rows(out: Path, sql: str):
    return catalog.query(out, sql)


def server_batches(url: str) -> list[tuple[str, list[str]]]:
    """(status, custom_ids of its input file) of every batch the server holds, read over HTTP."""
    c = openai.OpenAI(base_url=url, api_key="x")
    out = []
    for b in c.batches.list(limit=100):
        ids = [json.loads(x)["custom_id"] for x in c.files.content(b.input_file_id).text.splitlines() if x.strip()]
        out.append((b.status, ids))
    return out


def stored_once(out: Path, expected: int) -> None:
    total, distinct = rows(out, "SELECT count(*), count(DISTINCT key) FROM samples")[0]
    assert total == distinct == expected


def test_completed_same_keys_as_online_at_batch_price(tmp_path, server):
    url = server(batch={"in_progress_s": 0.2, "finalizing_s": 0.1})
    on = run_manifest(load_manifest(batch_manifest(tmp_path, url, mode="online", out="online", name="on.yaml", n=3)), progress=False)
    res = run_manifest(load_manifest(batch_manifest(tmp_path, url, n=3)), progress=False)
    assert res.complete and res.stats.stored == 18 and res.stats.requests == 6  # one line per prompt (n=3)
    out = tmp_path / "out"
    stored_once(out, 18)
    shape = "SELECT key, prompt_id, sample_index, cot_source, finish_reason, completion, prompt_tokens, completion_tokens FROM samples ORDER BY key"
    assert rows(out, shape) == rows(tmp_path / "online", shape)  # the teacher's answers are deterministic
    # the same answers, at half the price
    ((b,),), ((o,),) = rows(out, "SELECT sum(cost_usd) FROM samples"), rows(tmp_path / "online", "SELECT sum(cost_usd) FROM samples")
    assert b == pytest.approx(o * 0.5) and res.stats.cost_usd == pytest.approx(b)
    assert [s for s, _ in server_batches(url)] == ["completed"]
    assert Ledger(out / "batches" / "ledger.jsonl").open_batches() == []
    assert on.stats.requests == 6
    from curator.audit.report import build_report

    bm = build_report(out)["cost"]["by_mode"]  # report: online vs batch side by side
    assert bm["paid_in"] == "batch" and bm["total_usd"]["batch"] == pytest.approx(b) and bm["total_usd"]["online"] == pytest.approx(o)
    text = cli("report", out).stdout
    assert "online vs batch (paid batch, batch discount 50%)" in text


def test_split_at_max_requests(tmp_path, server):
    url = server()
    res = run_manifest(load_manifest(batch_manifest(tmp_path, url, n=2, problems=7, max_requests=3)), progress=False)
    assert res.complete
    batches = server_batches(url)
    assert sorted(len(ids) for _, ids in batches) == [1, 3, 3]
    stored_once(tmp_path / "out", 14)


def test_errored_rows_retried_in_a_later_batch_with_reasons_kept(tmp_path, server):
    # Which rows fail is decided by their keys' hash, and keys hash the server's (random) port:
    # 24 rows, so that none or all of them failing (2 in 2**24) cannot make the case vacuous.
    url = server(batch={"error_fraction": 0.5, "error_times": 1})
    res = run_manifest(load_manifest(batch_manifest(tmp_path, url, n=2, problems=24)), progress=False)
    assert res.complete and res.stats.failed == 0
    stored_once(tmp_path / "out", 48)
    batches = server_batches(url)
    assert len(batches) == 2
    first, second = sorted((ids for _, ids in batches), key=len, reverse=True)
    assert len(first) == 24 and 0 < len(second) < 24 and set(second) <= set(first)  # only the errored rows again
    led = Ledger(tmp_path / "out" / "batches" / "ledger.jsonl")
    assert len(led.row_errors) == 2 * len(second) and all("HTTP 500" in r[0] for r in led.row_errors.values())


def test_errored_rows_give_up_after_max_retries(tmp_path, server):
    url = server(batch={"error_fraction": 0.5, "error_times": 100})
    m = load_manifest(batch_manifest(tmp_path, url, n=1, problems=24))  # 24: as above
    m.limits.max_retries = 2
    res = run_manifest(m, progress=False)
    failing = [ids for _, ids in server_batches(url)]
    assert len(failing) == 3  # the first batch and two retries, then it stops
    lost = len(failing[0])  # newest first: the last retry holds only the rows that always fail
    assert not res.complete and res.stats.failed == lost > 0 and "HTTP 500" in res.stats.errors[0]
    stored_once(tmp_path / "out", 24 - lost)


def test_expired_keeps_finished_rows_and_resubmits_the_rest(tmp_path, server):
    url = server(batch={"end": "expired", "in_progress_s": 0.1, "finished_fraction": 0.5})
    m = load_manifest(batch_manifest(tmp_path, url, n=2, problems=8))
    m.limits.max_retries = 1
    res = run_manifest(m, progress=False)
    newest, oldest = [ids for _, ids in server_batches(url)]
    assert len(oldest) == 8 and len(newest) == 4 and set(newest) <= set(oldest)  # the 4 unfinished rows, once more
    stored_once(tmp_path / "out", 2 * (4 + 2))  # half of the first batch, half of the second
    assert res.stats.failed == 2 * 2 and not res.complete


def test_failed_validation_is_one_line_naming_the_batch(tmp_path, server):
    url = server(batch={"end": "failed"})
    with pytest.raises(RunError) as e:
        run_manifest(load_manifest(batch_manifest(tmp_path, url, n=1, problems=3)), progress=False)
    (status, _), = server_batches(url)
    assert status == "failed"
    msg = str(e.value)
    assert msg.startswith("batch batch_") and "failed validation: line 1: invalid_request" in msg and "\n" not in msg
    assert Ledger(tmp_path / "out" / "batches" / "ledger.jsonl").open_batches() == []


def test_detach_status_cancel_then_resume(tmp_path, server):
    url = server(batch={"in_progress_s": 60, "finished_fraction": 0.5})
    m = batch_manifest(tmp_path, url, n=2, problems=6)
    r = cli("run", m, "--no-progress", "--detach")
    assert r.returncode == 0, r.stderr
    assert "detached: 1 batches submitted" in r.stderr
    out = tmp_path / "out"
    st = json.loads(cli("status", out, "--json").stdout)
    (b,) = st["batches"]
    assert b["state"] in ("submitted", "in_progress") and b["requests"] == 6 and not b["collected"] and st["stored"] == 0
    text = cli("status", out).stdout
    assert f"{b['id']}: " in text and "not collected yet" in text
    openai.OpenAI(base_url=url, api_key="x").batches.cancel(b["id"])
    # Collects the cancelled batch's 3 finished rows, sends the other 3 again, returns.
    res = resume(out, progress=False, detach=True)
    batches = server_batches(url)
    assert [s for s, _ in batches] == ["in_progress", "cancelled"] and len(batches[0][1]) == 3
    assert set(batches[0][1]) < set(batches[1][1])
    assert res.stats.stored == 6 and not res.complete and res.stats.stop_reason.startswith("detached: 1 batches")
    stored_once(out, 6)


@pytest.mark.parametrize("step", ["after_upload", "mid_create", "after_create", "mid_poll", "mid_download", "mid_store"])
def test_kill_9_at_each_step_then_resume(tmp_path, server, step):
    url = server(batch={"in_progress_s": 0.3})
    ref = tmp_path / "ref"
    ref.mkdir()
    run_manifest(load_manifest(batch_manifest(ref, url, n=2, problems=6)), progress=False)
    (ref_cost,) = rows(ref / "out", "SELECT sum(cost_usd) FROM samples")[0]
    before = len(server_batches(url))

    m = batch_manifest(tmp_path, url, n=2, problems=6)
    r = cli("run", m, "--no-progress", env={"CURATOR_BATCH_KILL_AT": step})
    assert r.returncode == -9, r.stderr
    # What the kill left: the step it happened at, and no more.
    led = Ledger(tmp_path / "out" / "batches" / "ledger.jsonl")
    on_server = len(server_batches(url)) - before
    assert len(led.files) == 1 and on_server == (0 if step == "after_upload" else 1)
    assert len(led.batches) == (0 if step in ("after_upload", "mid_create") else 1)
    assert not any(b.done for b in led.batches.values())
    if step == "mid_poll":
        assert [b.status for b in led.batches.values()] == ["in_progress"]
    downloaded = list((tmp_path / "out" / "batches").glob("*.output.jsonl"))
    assert bool(downloaded) == (step in ("mid_download", "mid_store"))
    journaled = sum(len(p.read_text().splitlines()) for p in (tmp_path / "out" / "journal").glob("*.jsonl"))
    assert journaled == (12 if step == "mid_store" else 0)
    r = cli("resume", tmp_path / "out", "--no-progress")
    assert r.returncode == 0, r.stderr
    batches = server_batches(url)[: len(server_batches(url)) - before]
    ids = [c for _, cs in batches for c in cs]
    assert len(batches) == 1 and len(ids) == len(set(ids)) == 6  # exactly one batch for the row set
    stored_once(tmp_path / "out", 12)
    (cost,) = rows(tmp_path / "out", "SELECT sum(cost_usd) FROM samples")[0]
    assert cost == pytest.approx(ref_cost)
    st = json.loads(cli("status", tmp_path / "out", "--json").stdout)
    assert st["cost_usd"] == pytest.approx(ref_cost) and all(b["collected"] for b in st["batches"])


def test_offline_write_read_round_trip(tmp_path, server):
    url = server()
    m = batch_manifest(tmp_path, url, n=2, problems=5, mode="online")
    out = tmp_path / "out"
    req = tmp_path / "requests.jsonl"
    r = cli("batch", "write", m, "--to", req)
    assert r.returncode == 0 and "wrote 5 requests" in r.stderr, r.stderr
    lines = [json.loads(x) for x in req.read_text().splitlines()]
    assert {x["url"] for x in lines} == {"/v1/chat/completions"} and all(x["body"]["n"] == 2 for x in lines)

    # The local teacher plays the offline engine: same line format in, same line format out.
    c = openai.OpenAI(base_url=url, api_key="x")
    b = c.batches.create(input_file_id=c.files.create(file=req.open("rb"), purpose="batch").id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    b = c.batches.retrieve(b.id)
    results = c.files.content(b.output_file_id).content
    cut = tmp_path / "cut.jsonl"
    lines = results.splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:2]) + lines[2][:40])  # a file cut short mid-line
    r = cli("batch", "read", out, cut)
    assert r.returncode == 0 and "stored 4 new samples" in r.stderr and "line 3" in r.stderr, r.stderr

    full = tmp_path / "results.jsonl"
    bogus = json.loads(lines[0])
    bogus["custom_id"] = "not-a-request"
    full.write_bytes(results + json.dumps(bogus).encode() + b"\n")
    r = cli("batch", "read", out, full)
    assert r.returncode == 0 and "stored 6 new samples" in r.stderr and "(2 lines already stored)" in r.stderr, r.stderr
    assert "1 lines match no request" in r.stderr and "not-a-request" in r.stderr
    r = cli("batch", "read", out, full)
    assert "stored 0 new samples" in r.stderr, r.stderr
    stored_once(out, 10)
    r = cli("batch", "write", out, "--to", tmp_path / "again.jsonl")
    assert "wrote 0 requests" in r.stderr, r.stderr


def test_2000_prompts_n4_same_keys_and_verdicts_as_online(tmp_path, server):
    """Batch and online runs of one manifest store the same keys with the same record shapes, and
    the same chain gives the same verdicts (the local teacher answers deterministically)."""
    from conftest import ROOT, write_problems

    problems = write_problems(tmp_path / "problems.jsonl", 2000)
    url = server(problems=str(problems), problem_column="question", mix={"right": 0.6, "wrong": 0.2, "truncated": 0.1, "mixed_lang": 0.1},
                 cot_words=30)
    chain = str(ROOT / "filters" / "r1-math.yaml")
    on = batch_manifest(tmp_path, url, mode="online", out="online", name="on.yaml", n=4, filters=chain, max_requests=800)
    ba = batch_manifest(tmp_path, url, n=4, filters=chain, max_requests=800)
    r_on = run_manifest(load_manifest(on), progress=False)
    r_ba = run_manifest(load_manifest(ba), progress=False)
    assert r_on.complete and r_ba.complete and r_on.stats.stored == r_ba.stats.stored == 8000
    assert len(server_batches(url)) == 3  # 2,000 requests split at 800
    sql = "SELECT key, prompt_id, sample_index, accepted, reject_reason FROM samples ORDER BY key"
    got, want = rows(tmp_path / "out", sql), rows(tmp_path / "online", sql)
    assert got == want and 0 < sum(1 for r in got if r[3]) < 8000
    cols = "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM samples) ORDER BY 1"
    assert rows(tmp_path / "out", cols) == rows(tmp_path / "online", cols)
