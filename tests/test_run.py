"""End to end over real HTTP: manifest -> local teacher -> journal/shards/DuckDB."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import duckdb
import pytest

from conftest import ROOT, cli, write_manifest, write_problems
from curator.config import load_manifest
from curator.store.catalog import query as q
from curator.run import run_manifest


HTTP = pytest.mark.parametrize("http", ["openai", "aiohttp"])  # both transports, same behaviour


def stats(base_url):
    return json.loads(urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats").read())


@pytest.mark.parametrize("placement", ["reasoning_content", "reasoning", "think", "think_unopened"])
def test_each_cot_placement_is_split(tmp_path, server, placement):
    url = server(cot_placement=placement, problems=str(write_problems(tmp_path / "problems.jsonl")), problem_column="question")
    m = write_manifest(tmp_path, url, n=2)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    out = tmp_path / "out"
    rows = q(out, "SELECT cot, completion, cot_source, gold, finish_reason, prompt_tokens, completion_tokens, reasoning_tokens, cost_usd FROM samples")
    assert len(rows) == 12
    for cot, completion, source, gold, finish, pt, ct, rt, cost in rows:
        assert source == placement
        assert cot and "<think>" not in cot and "</think>" not in cot
        assert "\\boxed{" + gold.split("#### ")[1] + "}" in completion and "</think>" not in completion
        assert finish == "stop" and pt > 0 and ct >= rt > 0 and cost > 0


def test_contract_columns_and_receipt(tmp_path, server):
    url = server(problems=str(write_problems(tmp_path / "problems.jsonl")), problem_column="question")
    m = write_manifest(tmp_path, url, n=1, api_key_env="TEST_TEACHER_KEY")
    os.environ["TEST_TEACHER_KEY"] = "sk-secret-never-stored-1234567890"
    try:
        run_manifest(load_manifest(m), progress=False)
    finally:
        del os.environ["TEST_TEACHER_KEY"]
    out = tmp_path / "out"
    cols = {r[0] for r in q(out, "SELECT column_name FROM (DESCRIBE samples)")}
    need = {"key", "prompt_id", "sample_index", "problem", "gold", "cot", "completion", "finish_reason", "prompt_tokens",
            "completion_tokens", "reasoning_tokens", "cached_tokens", "cost_usd", "model", "accepted", "reject_reason"}
    assert need <= cols
    receipts = list((out / "receipts").glob("*.json"))
    assert len(receipts) == 1
    r = json.loads(receipts[0].read_text())
    assert r["complete"] and r["counts"]["stored_this_run"] == 6 and r["source"]["sha256"] and r["versions"]["openai"]
    assert r["manifest"]["teacher"]["api_key_env"] == "TEST_TEACHER_KEY"
    # The key itself is nowhere in the output directory.
    for p in out.rglob("*"):
        if p.is_file():
            assert b"sk-secret-never-stored" not in p.read_bytes(), p
    assert q(out, "SELECT status, samples FROM runs") == [("complete", 6)]


@HTTP
@pytest.mark.parametrize("n_mode", ["support", "ignore", "reject"])
def test_n_samples_per_prompt(tmp_path, server, n_mode, http):
    url = server(n_mode=n_mode, mix={"right": 1, "wrong": 1})
    m = write_manifest(tmp_path, url, n=3, extra_teacher=f"http: {http}")
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    out = tmp_path / "out"
    assert q(out, "SELECT count(*), count(DISTINCT key), count(DISTINCT prompt_id) FROM samples") == [(18, 18, 6)]
    assert q(out, "SELECT list(DISTINCT sample_index ORDER BY sample_index) FROM samples")[0][0] == [0, 1, 2]
    s = stats(url)
    completions = s.get("completions", s.get("completions_served"))
    assert completions is None or completions >= 6
    if n_mode == "support":
        assert res.stats.requests == 6  # one request per prompt carries n=3


@HTTP
@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "reset", "malformed", "empty"])
def test_retry_on_each_fault_kind(tmp_path, server, fault, http):
    url = server(fail_first={fault: 1}, hang_s=3, retry_after_s=0.05)
    m = write_manifest(tmp_path, url, n=1, problems=4, limits=", timeout_s: 0.5" if fault == "timeout" else "", extra_teacher=f"http: {http}")
    text = m.read_text().replace("timeout_s: 10, ", "") if fault == "timeout" else m.read_text()
    m.write_text(text)
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete, res.stats.errors
    assert res.stats.retries == 4 and res.stats.stored == 4
    assert q(tmp_path / "out", "SELECT count(*), min(attempts), max(attempts) FROM samples") == [(4, 2, 2)]


@HTTP
def test_retry_after_is_honoured(tmp_path, server, http):
    url = server(fail_first={"429": 1}, retry_after_s=0.6)
    m = write_manifest(tmp_path, url, n=1, problems=2, extra_teacher=f"http: {http}")
    t = time.monotonic()
    res = run_manifest(load_manifest(m), progress=False)
    assert res.complete and time.monotonic() - t >= 0.55


@HTTP
@pytest.mark.parametrize(
    "setup, message",
    [
        (dict(model="no-such-model"), "HTTP 404"),
        (dict(api_key_env="CURATOR_TEST_BAD_KEY"), "refused the API key from CURATOR_TEST_BAD_KEY"),
        (dict(api_key_env="CURATOR_TEST_UNSET_KEY"), "CURATOR_TEST_UNSET_KEY (teacher.api_key_env) is not set"),
    ],
)
def test_fail_fast_with_one_line(tmp_path, server, setup, message, http):
    url = server(api_key="right-key")
    m = write_manifest(tmp_path, url, extra_teacher=f"http: {http}", **setup)
    env = {"CURATOR_TEST_BAD_KEY": "wrong-key"}
    if "UNSET" not in setup.get("api_key_env", "") and "BAD" not in setup.get("api_key_env", ""):
        # model case: the key is right, the model is not
        m.write_text(m.read_text().replace("model: no-such-model", "model: no-such-model\n  api_key_env: CURATOR_TEST_GOOD_KEY"))
        env = {"CURATOR_TEST_GOOD_KEY": "right-key"}
    t = time.monotonic()
    r = cli("run", m, "--no-progress", env=env)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert any(message in l for l in lines), r.stderr
    assert "Traceback" not in r.stderr and len(lines) <= 3, r.stderr
    assert time.monotonic() - t < 30


def test_unreachable_server(tmp_path):
    m = write_manifest(tmp_path, "http://127.0.0.1:9/v1")
    r = cli("run", m, "--no-progress")
    assert r.returncode != 0 and "cannot reach the teacher at http://127.0.0.1:9/v1" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_nothing_to_buy_needs_no_teacher(tmp_path):
    """A run killed after its last answer (while judging), or one that reached max_accepted,
    finishes on resume even when the teacher is gone; a session with answers still to buy checks
    the teacher first, as a first run does."""
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import running_server

    chain = str(ROOT / "filters" / "r1-math.yaml")
    problems = write_problems(tmp_path / "problems.jsonl")
    with running_server(ServerConfig.load({"problems": str(problems), "problem_column": "question", "mix": {"right": 0.7, "wrong": 0.3}})) as url:
        m = write_manifest(tmp_path, url, n=2, filters=chain)
        done = run_manifest(load_manifest(m), progress=False)
        m2 = write_manifest(tmp_path, url, n=1, problems=6, out="out2", name="m2.yaml", filters=chain, budget="max_accepted: 1",
                            limits=", concurrency: 1")
        capped = run_manifest(load_manifest(m2), progress=False)
    with running_server(ServerConfig.load({"fail_first": {"500": 5}})) as url3:
        m3 = write_manifest(tmp_path, url3, n=1, out="out3", name="m3.yaml", limits=", max_retries: 1")
        failing = cli("run", m3, "--no-progress")
    out = tmp_path / "out"
    accepted = q(out, "SELECT count(*) FILTER (WHERE accepted) FROM samples")[0][0]
    assert done.complete and accepted > 0
    shutil.rmtree(out / "verdicts")  # as if killed before any verdict was written
    r = cli("resume", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert q(out, "SELECT count(*), count(*) FILTER (WHERE accepted) FROM samples") == [(12, accepted)]

    # Stopped at max_accepted with prompts left: resume buys nothing, so it needs no teacher.
    assert "max_accepted" in capped.stats.stop_reason and q(tmp_path / "out2", "SELECT count(*) FROM samples")[0][0] < 6
    r = cli("resume", tmp_path / "out2", "--no-progress")
    assert r.returncode == 0 and "max_accepted" in r.stderr + r.stdout, r.stderr

    # Every prompt failed after retries: resume has answers to buy and checks the teacher first.
    assert failing.returncode == 3, failing.stderr
    r = cli("resume", tmp_path / "out3", "--no-progress")
    assert r.returncode != 0 and f"cannot reach the teacher at {url3}" in r.stderr, r.stderr


def test_budget_max_usd_stops_cleanly(tmp_path, server):
    url = server(cot_words=400)
    m = write_manifest(tmp_path, url, n=1, problems=60, budget="max_usd: 0.01", limits=", concurrency: 2")
    res = run_manifest(load_manifest(m), progress=False)
    assert res.stats.stop_reason and "max_usd" in res.stats.stop_reason
    spent = q(tmp_path / "out", "SELECT count(*), sum(cost_usd) FROM samples")[0]
    assert 0 < spent[0] < 60
    # stops within one request per worker of the budget
    per = spent[1] / spent[0]
    assert spent[1] < 0.01 + 3 * per


def test_budget_max_accepted_without_chain(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=1, problems=40, budget="max_accepted: 10", limits=", concurrency: 2")
    res = run_manifest(load_manifest(m), progress=False)
    assert "max_accepted" in res.stats.stop_reason
    assert 10 <= q(tmp_path / "out", "SELECT count(*) FROM samples")[0][0] <= 12


def test_rerun_sends_nothing_and_changed_params_never_reuse(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=2)
    run_manifest(load_manifest(m), progress=False)
    again = run_manifest(load_manifest(m), progress=False)
    assert again.stats.requests == 0 and again.stats.already_stored == 12
    m.write_text(m.read_text().replace("temperature: 0.6", "temperature: 0.7"))
    changed = run_manifest(load_manifest(m), progress=False)
    assert changed.stats.stored == 12
    assert q(tmp_path / "out", "SELECT count(*), count(DISTINCT key) FROM samples") == [(24, 24)]


def test_resume_after_kill_9(tmp_path, server):
    from curator.teacher.runner import ServerProcess
    from curator.teacher.config import ServerConfig

    srv = ServerProcess(ServerConfig.load({"latency_ms": 150, "jitter_ms": 50}))
    try:
        url = srv.base_url
        m = write_manifest(tmp_path, url, n=2, problems=60, limits=", concurrency: 8")
        ref = write_manifest(tmp_path, url, n=2, problems=60, limits=", concurrency: 8", out="ref", name="ref.yaml")
        cmd = [sys.executable, "-m", "curator", "run", str(m), "--no-progress"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        journal = tmp_path / "out" / "journal"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = sum(f.read_bytes().count(b"\n") for f in journal.glob("*.jsonl")) if journal.exists() else 0
            if rows >= 30:
                break
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert rows >= 30
        r = cli("resume", tmp_path / "out", "--no-progress")
        assert r.returncode == 0, r.stderr
        # 60 prompts, one request each (n=2 in one request): the kill may only cost the requests
        # that were in flight (at most the 8 workers), never the stored ones.
        sent = stats(url)["requests"]
        assert 60 <= sent <= 60 + 8, sent
        run_manifest(load_manifest(ref), progress=False)
        keys = q(tmp_path / "out", "SELECT key FROM samples ORDER BY key")
        assert keys == q(tmp_path / "ref", "SELECT key FROM samples ORDER BY key")
        assert len(keys) == 120
        # No key twice in the files themselves either.
        raw = duckdb.connect().execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{tmp_path}/out/shards/*.parquet')").fetchall()[0]
        assert raw == (120, 120)
    finally:
        srv.stop()


def test_bad_inputs_leave_stored_data_untouched(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=1)
    assert cli("run", m, "--no-progress").returncode == 0
    out = tmp_path / "out"
    snapshot = {p: p.read_bytes() for p in (out / "shards").glob("*.parquet")}
    bad = {
        "unknown column": (m.read_text().replace("problem: question", "problem: prompt"), "names column 'prompt', which does not exist"),
        "placeholder": (m.read_text().replace("{{ question }}", "{{ qestion }}"), "placeholder {{ qestion }} has no column"),
        "missing file": (m.read_text().replace("path: problems.jsonl", "path: nope.jsonl"), "nope.jsonl: source file not found"),
    }
    # Bad source files: empty, duplicate ids, not UTF-8 (each its own file, the manifest points at it)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "dups.jsonl").write_text('{"id": "a", "question": "q1", "answer": "1"}\n{"id": "a", "question": "q2", "answer": "2"}\n')
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "a", "question": "caf\xe9", "answer": "1"}\n')
    for name, message in (("empty.jsonl", "the dataset is empty"), ("dups.jsonl", "duplicate id 'a'"), ("latin1.jsonl", "line 1: not UTF-8")):
        bad[name] = (m.read_text().replace("path: problems.jsonl", f"path: {name}"), message)
    bad["bad yaml"] = ("name: [unclosed\n", "invalid YAML")
    for what, (text, message) in bad.items():
        m2 = tmp_path / "bad.yaml"
        m2.write_text(text)
        r = cli("run", m2, "--no-progress")
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, (what, r.stderr)
        assert len([l for l in r.stderr.splitlines() if l.strip()]) <= 2, (what, r.stderr)
    assert {p: p.read_bytes() for p in (out / "shards").glob("*.parquet")} == snapshot


def test_status_command(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=2)
    run_manifest(load_manifest(m), progress=False)
    r = cli("status", tmp_path / "out", "--json")
    info = json.loads(r.stdout)
    assert info["stored"] == 12 and info["prompts"] == 6 and info["cost_usd"] > 0
    # A kill between a shard's write and its journal's removal leaves the rows in both; status
    # counts each answer once (and a journal row not in any shard still counts).
    import pyarrow.parquet as pq

    shard = sorted((tmp_path / "out" / "shards").glob("*.parquet"))[0]
    rows = pq.read_table(shard).to_pylist()
    extra = dict(rows[0], key="k-only-in-journal", cost_usd=0.5)
    (tmp_path / "out" / "journal").mkdir(exist_ok=True)
    (tmp_path / "out" / "journal" / "left.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in [*rows, extra]))
    again = json.loads(cli("status", tmp_path / "out", "--json").stdout)
    assert (again["stored"], again["in_journal"]) == (13, 1)
    assert again["cost_usd"] == pytest.approx(info["cost_usd"] + 0.5)


@pytest.mark.parametrize("collapse", [True, False])
def test_live_drift_warnings(tmp_path, server, collapse):
    probs = write_problems(tmp_path / "problems.jsonl", 300)
    url = server(problems=str(probs), problem_column="question", cot_words=200,
                 **({"collapse_after": 300} if collapse else {}))
    m = write_manifest(tmp_path, url, n=2, limits=", concurrency: 8")
    res = run_manifest(load_manifest(m), progress=False)
    receipt = json.loads(res.receipt.read_text())
    if collapse:
        assert any("length" in w.lower() or "cot" in w.lower() for w in res.stats.warnings), res.stats.warnings
        assert receipt["drift_warnings"] == res.stats.warnings
    else:
        assert res.stats.warnings == [] and receipt["drift_warnings"] == []
