"""Several workers on one output folder (`curator run MANIFEST --worker I/N`), as real
subprocesses against a real local teacher: together they store every key exactly once; a worker
killed with -9 loses nothing acknowledged and is resumed alone; a second copy of a worker is
refused; status/report see the union while they run; budgets hold across workers; bad --worker
values are one line and touch nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from conftest import ROOT, cli, write_manifest
from curator.store.sample_store import journal_paths, stored_keys
from curator.teacher.config import ServerConfig
from curator.teacher.reqlog import prompt_hash
from curator.teacher.runner import ServerProcess

CHAIN = "[{filter: format}, {filter: near_dup}]"


def _worker(m: Path, part: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curator", "run", str(m), "--worker", part, "--no-progress", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _raw_keys(out: Path) -> list[str]:
    """Every key in every shard, duplicates included (the views would hide them)."""
    return [k for p in sorted((out / "shards").glob("*.parquet")) for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()]


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_three_workers_kill_one_resume_it_alone(tmp_path):
    prompts, n, conc = 240, 2, 4
    log = tmp_path / "requests.jsonl"
    server = ServerProcess(ServerConfig.load({"latency_ms": 200, "mix": {"right": 0.8, "duplicate": 0.1, "no_boxed": 0.1},
                                              "request_log": str(log)}))
    try:
        m = write_manifest(tmp_path, server.base_url, n=n, problems=prompts, filters=CHAIN, limits=f", concurrency: {conc}")
        out = tmp_path / "out"
        procs = {i: _worker(m, f"{i}/3") for i in (1, 2, 3)}
        victim_journal = out / "journal" / "w2of3"
        deadline = time.monotonic() + 90
        while not any(p.stat().st_size for p in victim_journal.glob("*.jsonl")) if victim_journal.exists() else True:
            assert procs[2].poll() is None, procs[2].communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)

        os.kill(procs[2].pid, signal.SIGKILL)
        procs[2].wait()
        # status and report see the union while the other workers run.
        st = cli("status", out, "--json")
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["stored"] > 0
        assert cli("report", out, "--json").returncode == 0
        for i in (1, 3):
            _, err = procs[i].communicate(timeout=120)
            assert procs[i].returncode == 0, err
        acknowledged = {r["key"] for p in journal_paths(out) for r in map(json.loads, p.read_text().splitlines())}
        assert acknowledged and all(p.parent.name == "w2of3" for p in journal_paths(out))
        stored_before = stored_keys(out)

        res = cli("resume", out, "--worker", "2/3", "--no-progress", timeout=120)
        assert res.returncode == 0, res.stderr
        raw = _raw_keys(out)
        assert len(raw) == len(set(raw)) == prompts * n  # every key exactly once, none in two shards
        assert acknowledged <= set(raw) and stored_before <= set(raw) and not journal_paths(out)
        # No two workers wrote the same file: every shard is named after its worker.
        owners = {p.name.split("-")[1] for p in (out / "shards").glob("*.parquet")}
        assert owners == {"w1of3", "w2of3", "w3of3"}
        # The server's count: one answer per prompt stored, plus only answers the killed worker had
        # not acknowledged (in flight, or received and not yet journaled), all of its own part.
        served = server.stats()["requests"]
        lines = [json.loads(ln) for ln in log.read_text().splitlines()]
        handed = {x["id"]: x["prompt"] for x in lines if x["status"] == 200}
        cut = len(lines) - len(handed)  # the killed worker's requests in flight: cut off, never answered
        assert len(lines) == served and cut <= conc
        rows = [r for p in (out / "shards").glob("*.parquet")
                for r in pq.read_table(p, columns=["request_id", "messages_json"]).to_pylist()]
        used = {r["request_id"] for r in rows}
        assert len(used) == prompts and used <= set(handed)
        lost = set(handed) - used
        victim_prompts = {prompt_hash(json.loads(r["messages_json"])) for p in (out / "shards").glob("shard-w2of3-*.parquet")
                          for r in pq.read_table(p, columns=["messages_json"]).to_pylist()}
        assert len(lost) <= 2 * conc and {handed[i] for i in lost} <= victim_prompts
        receipts = [json.loads(p.read_text()) for p in (out / "receipts").glob("*.json")]
        assert sorted(r["worker"] for r in receipts) == ["1/3", "2/3", "3/3"]
        assert sum(r["counts"]["requests"] for r in receipts) == served - cut - len(lost) - len(acknowledged) // n

        # Every sample judged by every step once all parts were stored (the near-dup step over the union),
        # and the verdicts are those of re-judging everything in one process.
        con_rows = json.loads(cli("report", out, "--json").stdout)
        assert con_rows["sampled"] == prompts * n and con_rows["pending"] == 0
        before = _accepted(out)
        assert cli("filter", out).returncode == 0
        assert _accepted(out) == before and 0 < len(before[0]) < prompts * n
    finally:
        server.stop()


def test_a_second_copy_of_a_worker_is_refused(tmp_path):
    server = ServerProcess(ServerConfig.load({"latency_ms": 3000}))
    try:
        m = write_manifest(tmp_path, server.base_url, n=1, problems=40, limits=", concurrency: 1")
        first = _worker(m, "1/2")
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 1:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        twin = cli("run", m, "--worker", "1/2", "--no-progress")
        assert twin.returncode == 2 and twin.stderr.count("\n") == 1, twin.stderr
        assert "worker 1/2 is already running" in twin.stderr and ".lock-w1of2" in twin.stderr
        # A run without --worker takes OUT alone: refused while a worker holds it.
        plain = cli("run", m, "--no-progress")
        assert plain.returncode == 2 and "another curator process is writing here" in plain.stderr, plain.stderr
        assert first.poll() is None, "the worker ended before the checks: they proved nothing"
        other = cli("resume", tmp_path / "out", "--worker", "2/2", "--no-progress", timeout=180)  # the other part runs beside it
        assert other.returncode == 0, other.stderr
        first.kill()
        first.wait()
    finally:
        server.stop()


def _accepted(out: Path) -> tuple[set[str], dict[str, str]]:
    from curator.store import catalog

    rows = catalog.query(out, "SELECT key, accepted, reject_reason FROM samples")
    assert all(r[1] is not None for r in rows)
    return {r[0] for r in rows if r[1]}, {r[0]: r[2] for r in rows if not r[1]}


def test_budget_holds_across_workers(tmp_path):
    server = ServerProcess(ServerConfig.load({"latency_ms": 200}))
    try:
        max_usd = 0.02
        m = write_manifest(tmp_path, server.base_url, n=1, problems=900, limits=", concurrency: 4", budget=f"max_usd: {max_usd}")
        procs = [_worker(m, f"{i}/3") for i in (1, 2, 3)]
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert "stopped: budget" in err, err
        from curator.store import catalog

        spent, rows = catalog.query(tmp_path / "out", "SELECT sum(cost_usd), count(*) FROM samples")[0]
        per = spent / rows
        # Alone, each worker would spend max_usd (3x in all); together they stop near it: the
        # overshoot is what they have in flight plus ~0.2 s of buying each (README).
        assert max_usd * 0.9 <= spent <= max_usd + 3 * (4 + 4) * per, (spent, per)
    finally:
        server.stop()


def test_bad_worker_values_touch_nothing(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=1, problems=4)
    for bad, msg in (("3/2", "--worker 3/2: the part I must be between 1 and N"), ("0/2", "between 1 and N"),
                     ("x", "--worker x: expected I/N")):
        res = cli("run", m, "--worker", bad, "--no-progress")
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and msg in res.stderr, res.stderr
        assert not (tmp_path / "out").exists()

    assert cli("run", m, "--no-progress").returncode == 0
    out = tmp_path / "out"
    before = _snapshot(out)
    res = cli("resume", out, "--worker", "1/2", "--no-progress")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "was started without --worker" in res.stderr and f"curator resume {out}" in res.stderr
    assert _snapshot(out) == before

    m2 = write_manifest(tmp_path, url, n=1, problems=4, out="out2", name="m2.yaml")
    assert cli("run", m2, "--worker", "1/3", "--no-progress").returncode == 0
    before = _snapshot(tmp_path / "out2")
    res = cli("resume", tmp_path / "out2", "--worker", "1/2", "--no-progress")
    assert res.returncode == 2 and "is split in 3 parts (--worker I/3)" in res.stderr, res.stderr
    assert _snapshot(tmp_path / "out2") == before
    # resume without --worker finishes every part in one process.
    res = cli("resume", tmp_path / "out2", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert len(stored_keys(tmp_path / "out2")) == 4
