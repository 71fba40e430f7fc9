"""A hostile teacher (curator/teacher/hostile.py), over real HTTP: usage that lies, bodies that are
not chat completions, answers the provider filtered, redirects to another origin, a body trickled
byte by byte, a huge answer. Nothing wrong is accepted, no dollar mis-counted, nothing paid lost."""

import json
import time
from urllib.request import urlopen

import polars as pl
import pytest

from conftest import cli, write_manifest
from curator.audit.report import build_report
from curator.audit.status import status
from curator.config import load_manifest
from curator.judge.filters.length import LengthFilter, LengthParams
from curator.judge.base import FilterContext
from curator.run import run_manifest
from curator.sample.parse import Usage, implausible_usage
from curator.store.catalog import query as q
from curator.teacher.config import ServerConfig
from curator.teacher.runner import running_server


def server_stats(url: str) -> dict:
    with urlopen(url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read())


def samples(out):
    return q(out, "SELECT prompt_tokens, completion_tokens, cost_usd, usage_estimated FROM samples")


# -- 1. usage sanity ---------------------------------------------------------------------------


def test_negative_usage_is_counted_locally_and_max_usd_still_trips(tmp_path, server):
    url = server(hostile={"patch": {"usage": {"prompt_tokens": -100000, "completion_tokens": -5000000, "total_tokens": -5100000}}})
    m = write_manifest(tmp_path, url, n=1, problems=20, budget="max_usd: 0.001", limits=", concurrency: 1")
    res = run_manifest(load_manifest(m), progress=False)
    rows = samples(tmp_path / "out")
    assert rows and all(pt > 0 and ct > 0 and cost > 0 and est for pt, ct, cost, est in rows)
    # Each answer costs ~$0.0002 counted locally: the budget stops the run after a handful.
    assert res.stats.stop_reason and "max_usd" in res.stats.stop_reason
    assert res.stats.requests < 20 and server_stats(url)["responses"] < 20
    assert res.stats.usage_estimated == len(rows)
    notes = [n for n in res.stats.notices if "usage" in n]
    assert len(notes) == 1 and "prompt_tokens=-100000" in notes[0], res.stats.notices


def test_absurd_prompt_tokens_do_not_reach_status_or_report(tmp_path, server):
    url = server(hostile={"patch": {"usage": {"prompt_tokens": 10**12}}})
    m = write_manifest(tmp_path, url, n=2)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete and res.stats.cost_usd < 0.01
    out = tmp_path / "out"
    assert all(pt < 1000 and est for pt, _ct, _cost, est in samples(out))
    info = status(out)
    assert info["cost_usd"] < 0.01 and info["prompt_tokens"] < 10_000 and info["usage_estimated_samples"] == 12
    report = build_report(out)
    assert report["total_usd"] < 0.01
    r = cli("status", out)
    assert r.returncode == 0 and "$" in r.stdout and "includes estimated usage of 12 samples" in r.stdout, r.stdout


@pytest.mark.parametrize("usage", [{"completion_tokens": "many"}, {"prompt_tokens": 1.5}, "none", [1, 2],
                                   {"prompt_tokens_details": {"cached_tokens": -9}}, {"completion_tokens": True}])
def test_non_numeric_or_misshapen_usage_is_counted_locally(tmp_path, server, usage):
    """The answer is paid for and well-formed: it is stored, with local counts, not failed."""
    url = server(hostile={"patch": {"usage": usage}})
    res = run_manifest(load_manifest(write_manifest(tmp_path, url, n=2)), progress=False)
    assert res.complete and res.stats.failed == 0 and not res.stats.errors
    rows = samples(tmp_path / "out")
    assert len(rows) == 12 and all(isinstance(pt, int) and pt > 0 and ct > 0 and cost > 0 and est for pt, ct, cost, est in rows)


def test_honest_usage_far_above_the_text_within_max_tokens_is_trusted(tmp_path, server):
    """Hidden reasoning (o-series): billed tokens the text does not show, up to max_tokens."""
    url = server(hostile={"patch": {"usage": {"completion_tokens": 2000, "completion_tokens_details": {"reasoning_tokens": 1900}}}})
    res = run_manifest(load_manifest(write_manifest(tmp_path, url, n=1)), progress=False)  # max_tokens: 2048
    assert res.complete and res.stats.usage_estimated == 0
    assert {(ct, est) for _pt, ct, _c, est in samples(tmp_path / "out")} == {(2000, False)}


# -- 2. answer size and the length filter ------------------------------------------------------


def test_length_filter_measures_the_text_not_the_reported_usage():
    big = "word " * 400_000  # 2 MB of text, reported as 100 tokens
    df = pl.DataFrame([{"key": "k", "cot": "short", "completion": big, "prompt_tokens": 10, "completion_tokens": 100,
                        "reasoning_tokens": 5, "problem": "p"}])
    v = LengthFilter(LengthParams(check_degeneration=False), FilterContext()).apply(df).to_dicts()[0]
    assert v["passed"] is False and v["reason"] == "too_long"
    assert json.loads(v["details"])["total_tokens"] >= 400_000


def test_huge_answer_is_stored_and_rejected_with_its_reason(tmp_path, server):
    url = server(hostile={"pad_chars": 1_500_000, "patch": {"usage": {"completion_tokens": 50}}})
    chain = "[{length: {check_degeneration: false, max_total_tokens: 100000}}, math]"
    m = write_manifest(tmp_path, url, n=1, problems=2, filters=chain)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    out = tmp_path / "out"
    rows = q(out, "SELECT length(raw_content), accepted, reject_reason FROM samples")
    # Paid for, so stored whole; rejected by the default response step (limits.max_answer_chars: 1,000,000).
    assert [(n >= 1_500_000, acc, why) for n, acc, why in rows] == [(True, False, "response:too_large")] * 2
    # A larger limit lets it through to the chain's own steps: the length step measures the text.
    m.write_text(m.read_text().replace("max_backoff_s: 0.5", "max_backoff_s: 0.5, max_answer_chars: 5000000"))
    r = cli("filter", out)
    assert r.returncode == 0, r.stderr
    assert q(out, "SELECT DISTINCT reject_reason FROM samples") == [("response:too_large",)]  # the stored manifest's limit
    res = run_manifest(load_manifest(m), progress=False)  # the manifest's new limit applies to its chain
    assert q(out, "SELECT DISTINCT reject_reason FROM samples") == [("length:too_long",)]


# -- 3. bodies that are not chat completions ---------------------------------------------------


@pytest.mark.parametrize("patch", [{"choices": []}, {"choices": [1]}, {"choices": [{"index": "a", "message": {}}]},
                                   {"choices": [{"index": 0, "message": {"content": ["x"]}, "finish_reason": "stop"}]}])
def test_malformed_body_is_one_line_per_prompt_and_resume_retries(tmp_path, patch):
    with running_server(ServerConfig.load({"hostile": {"patch": patch}})) as url:
        m = write_manifest(tmp_path, url, n=1, problems=3, limits=", max_retries: 1")
        r = cli("run", m, "--no-progress")
    assert r.returncode == 3, r.stderr
    lines = [line.strip() for line in r.stderr.splitlines() if line.strip().startswith("prompt p")]
    assert sorted(line.split(":")[0] for line in lines) == ["prompt p0", "prompt p1", "prompt p2"], r.stderr
    assert all("malformed" in line and "Error" not in line and "Traceback" not in line for line in lines), r.stderr
    assert "Traceback" not in r.stderr
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with running_server(ServerConfig.load({}), port=port):
        r = cli("resume", tmp_path / "out", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert q(tmp_path / "out", "SELECT count(*) FROM samples") == [(3,)]


# -- 4. finish_reason other than stop / length -------------------------------------------------


@pytest.mark.parametrize("chain", ["[math]", "[{length: {}}]", "[{majority_vote: {}}]"])
def test_content_filtered_answers_are_stored_and_rejected_in_every_chain(tmp_path, server, chain):
    url = server(hostile={"finish_reason": "content_filter"})
    m = write_manifest(tmp_path, url, n=2, filters=chain)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete and res.stats.accepted == 0
    out = tmp_path / "out"
    assert q(out, "SELECT count(*), bool_and(finish_reason = 'content_filter'), bool_and(NOT accepted) FROM samples") == [(12, True, True)]
    assert q(out, "SELECT DISTINCT reject_reason FROM samples") == [("response:content_filter",)]
    # The same through `curator filter` with a chain given on the command line.
    (tmp_path / "c.yaml").write_text("steps: [{format: {}}]\n")
    r = cli("filter", out, "--chain", tmp_path / "c.yaml")
    assert r.returncode == 0, r.stderr
    assert q(out, "SELECT DISTINCT reject_reason FROM samples") == [("response:content_filter",)]


# -- 5. redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["aiohttp", "openai"])
def test_redirect_to_another_origin_is_not_followed(tmp_path, server, http):
    foreign = server()
    target = foreign + "/chat/completions"
    url = server(hostile={"redirect_to": target})
    m = write_manifest(tmp_path, url, n=1, extra_teacher=f"http: {http}")
    r = cli("run", m, "--no-progress")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "redirect" in errors[0] and target in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert server_stats(foreign)["requests"] == 0
    out = tmp_path / "out"
    assert not list((out / "shards").glob("*.parquet")) if (out / "shards").exists() else True
    assert q(out, "SELECT count(*) FROM samples") == [(0,)]


def test_batch_mode_does_not_follow_a_redirect(tmp_path, server):
    """Batch mode's own client (files, batches) refuses a redirect as the chat transports do: one
    line naming the target; the other origin gets nothing, nothing is stored."""
    foreign = server()
    target = foreign + "/files"
    url = server(hostile={"redirect_to": target})
    m = write_manifest(tmp_path, url, n=1, extra_teacher="mode: batch\n  batch: {poll_s: 0.05}")
    r = cli("run", m, "--no-progress")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "redirect" in errors[0] and target in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    st = server_stats(foreign)
    assert st["batch_calls"] == 0 and st["files_uploaded"] == 0 and st["requests"] == 0, st
    assert q(tmp_path / "out", "SELECT count(*) FROM samples") == [(0,)]


def test_the_preflight_does_not_follow_a_redirect_nor_send_headers_to_another_origin(tmp_path, server):
    """`GET /models` (the check before the run) redirected to another origin: httpx follows it and
    drops Authorization, but not `teacher.headers`, so a gateway key went to the foreign server."""
    foreign = server()
    target = foreign + "/models"
    url = server(hostile={"redirect_paths": {"/v1/models": target}})
    m = write_manifest(tmp_path, url, n=1, extra_teacher="headers: {X-Gateway-Key: {env: GW_TOKEN}}")
    r = cli("run", m, "--no-progress", env={"GW_TOKEN": "gw-secret-4f1e9a"})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "redirect" in errors[0] and target in errors[0], r.stderr
    assert server_stats(foreign)["models_requests"] == 0 and server_stats(foreign)["requests"] == 0


def test_batch_mode_does_not_follow_a_redirect_of_its_upload(tmp_path, server):
    """Batch mode's own client (files, batches): a 307 re-sends the POST, the whole batch file and
    `teacher.headers`, to the other origin."""
    foreign = server()
    url = server(hostile={"redirect_paths": {"/v1/files": foreign + "/files"}})
    m = write_manifest(tmp_path, url, n=1, extra_teacher="mode: batch\n  batch: {poll_s: 0.05}\n  headers: {X-Gateway-Key: {env: GW_TOKEN}}")
    r = cli("run", m, "--no-progress", env={"GW_TOKEN": "gw-secret-4f1e9a"})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "redirect" in errors[0] and foreign + "/files" in errors[0], r.stderr
    assert server_stats(foreign)["files_uploaded"] == 0


# -- 6. timeouts bound the whole request -------------------------------------------------------


@pytest.mark.parametrize("http", ["aiohttp", "openai"])
def test_a_trickled_body_times_out_and_is_retried(tmp_path, server, http):
    url = server(hostile={"trickle_s": 0.3})  # a ~700-byte body: 3+ minutes
    m = write_manifest(tmp_path, url, n=1, problems=1, extra_teacher=f"http: {http}", limits=", max_retries: 1")
    m.write_text(m.read_text().replace("timeout_s: 10", "timeout_s: 1.5"))
    t0 = time.monotonic()
    res = run_manifest(load_manifest(m), progress=False)
    took = time.monotonic() - t0
    assert res.stats.failed == 1 and res.stats.stored == 0
    assert "timed out" in res.stats.errors[0].lower(), res.stats.errors
    assert server_stats(url)["requests"] == 2  # the first attempt and one retry (max_retries: 1)
    assert took < 2 * 1.5 + 5, took


@pytest.mark.parametrize("usage, max_tokens, why", [
    (Usage(40, 900, 800, 10), 1024, None),  # hidden reasoning within max_tokens: billed, believed
    (Usage(40, 50_000, None, None), 1024, "completion_tokens=50000"),  # over 2 x max_tokens and the 40,000 bytes
    (Usage(40, 200_000, None, None), None, None),  # no max_tokens: up to 262,144 a choice
    (Usage(40, 10, None, None), 1024, "completion_tokens=10 for 40000 bytes"),  # under bytes / 256
    (Usage(5000, 900, None, None), 1024, "prompt_tokens=5000"),  # a 100-byte prompt
    (Usage(40, 900, None, 41), 1024, "cached_tokens=41 > prompt_tokens=40"),
    (Usage(40, 900, 2**40, None), 1024, "reasoning_tokens="),
    (Usage(None, 900, None, None), 1024, None),  # missing counts are counted locally, not judged
    (Usage(-1, 900, None, None), 1024, "prompt_tokens=-1 is not a non-negative integer"),
    (Usage(40, 900, 1000, None), 1024, None),  # reasoning counted apart (billed 1,900): within the bound
    # Counted apart, reasoning is billed on top of completion (cost.billed_output_tokens): the sum
    # must stay within the bound, not each count alone (it billed up to twice max_tokens).
    (Usage(40, 30_000, 35_000, None), 1024, "reasoning_tokens=35000"),
])
def test_usage_bounds(usage, max_tokens, why):
    got = implausible_usage(usage, prompt_bytes=100, messages=1, answer_bytes=40_000, choices=2, max_tokens=max_tokens)
    assert (got is None) if why is None else (got is not None and why in got), got
