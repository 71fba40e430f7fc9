"""Soak at CI size (bench/soak_harness.py; full size: bench/soak.py): 2,000 samples through the fault mix,
a 429 burst and 5 kill -9 of `curator run`, checked against the teacher's request log and an
uninterrupted run. Also the two server features the soak rests on: the request log and the burst."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from curator.teacher.config import ServerConfig
from curator.teacher.reqlog import prompt_hash
from curator.teacher.runner import running_server
from bench.soak_harness import FAULT_MIX, SoakOptions, format_figures, soak, violations


def _post(url: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_request_log_and_fault_burst(tmp_path):
    log = tmp_path / "requests.jsonl"
    cfg = ServerConfig.load({"request_log": str(log), "retry_after_s": 0.01,
                             "fault_burst": {"after_requests": 3, "duration_s": 0.6, "retry_after_s": 2}})
    msgs = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(3)]
    with running_server(cfg) as url:
        before = [_post(url, {"model": "teacher", "messages": m, "seed": 5}) for m in msgs[:2]]
        burst = [_post(url, {"model": "teacher", "messages": msgs[2]}) for _ in range(3)]
        time.sleep(0.7)
        after = _post(url, {"model": "teacher", "messages": msgs[2], "n": 2})
    assert [s for s, _, _ in before] == [200, 200]
    # The 3rd request starts the burst: everything gets 429, with the burst's own Retry-After.
    assert [s for s, _, _ in burst] == [429, 429, 429]
    assert all(h["Retry-After"] == "2" for _, h, _ in burst)
    assert after[0] == 200
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["status"], x["fault"]) for x in lines] == [(200, None)] * 2 + [(429, "429")] * 3 + [(200, None)]
    # Answers carry the completion id the client stores as request_id; faults carry none.
    assert [x["id"] for x in lines] == [before[0][2]["id"], before[1][2]["id"], None, None, None, after[2]["id"]]
    assert [x["prompt"] for x in lines] == [prompt_hash(m) for m in msgs[:2]] + [prompt_hash(msgs[2])] * 4
    assert (lines[0]["seed"], lines[0]["n"], lines[-1]["n"]) == (5, 1, 2)
    assert all(x["t0"] <= x["t1"] for x in lines)


def test_request_log_marks_resets_as_no_answer(tmp_path):
    log = tmp_path / "requests.jsonl"
    with running_server({"request_log": str(log), "fail_first": {"reset": 1}}) as url:
        body = {"model": "teacher", "messages": [{"role": "user", "content": "hi"}]}
        try:
            _post(url, body)
            raise AssertionError("the reset fault should break the connection")
        except (ConnectionError, urllib.error.URLError, OSError):
            pass
        assert _post(url, body)[0] == 200
        deadline = time.monotonic() + 5
        while len(log.read_text().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert {(x["status"], x["fault"], x["id"] is None) for x in lines} == {(None, "reset", True), (200, None, False)}


def test_soak_ci_size(tmp_path):
    o = SoakOptions(requests=2000, kills=5, seed=1, burst_s=2.5)
    f = soak(o, tmp_path)
    print(format_figures(f))  # shown with -s or on failure
    assert violations(f) == []
    # Each invariant on its own as well, so a failure names it.
    assert f["duplicates_stored"] == 0
    assert f["answers_lost"] == 0
    assert f["requests_paid_twice"] <= f["answers_not_stored_in_flight_at_kill"] <= f["requests_in_flight_at_kills"]
    assert f["distinct_keys_stored"] == f["answers_stored"] == 2000
    assert f["dataset"]["equal"] and f["dataset"]["verdict_rows"] == 2000 * 6  # the response step + r1-math's five
    assert 0 < f["dataset"]["accepted"] < 2000  # the outcome mix gives every verdict something to reject
    # The soak really was one: 5 kills while sampling, every fault kind and the burst happened.
    assert f["kills"] == f["kills_during_sampling"] == 5
    assert all(0 < n < 2000 for n in f["stored_at_kills"])
    assert set(f["faults_injected"]) == set(FAULT_MIX)
    assert f["burst_started_s"] is not None
    assert f["kills_in_burst"] == 1  # the session running when the burst started died inside it
    assert f["faults_injected"]["429"] > 0.10 * 2000
    assert f["requests_sent"] > 2000 and f["answers_served"] >= 2000
    assert f["orphans_after_kills"] == 0  # workers of a killed run exit by themselves
