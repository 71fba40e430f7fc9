"""Teacher fleets (`teacher.replicas`): requests spread over several real local teachers, a
replica killed mid-run is taken out and its requests go to the others without a retry, one that
comes up later is put back, none left fails in one line and `resume` finishes; keys never depend
on the replicas; per-replica figures in the receipt, `status` and `report`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, cli, write_manifest
from curator.store.sample_store import stored_keys
from curator.teacher.config import ServerConfig
from curator.teacher.runner import ServerProcess

IDENTITY = "https://teacher.example/v1"  # what keys hash; never contacted when replicas are set


def _replicas(urls: list[str]) -> str:
    return "replicas: [" + ", ".join(urls) + "]"


def _receipt(out: Path) -> dict:
    return json.loads(max((out / "receipts").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curator", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_requests(server: ServerProcess, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.stats()["requests"] < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the replica"
        time.sleep(0.05)


def _served(server: ServerProcess) -> int:
    return server.stats()["requests"]


def test_load_spread_kill_one_mid_run_no_retry_spent(tmp_path):
    fast = [ServerProcess(ServerConfig.load({"latency_ms": 20})) for _ in range(2)]
    slow = ServerProcess(ServerConfig.load({"latency_ms": 200}))
    victim = ServerProcess(ServerConfig.load({"latency_ms": 20}))
    servers = [*fast, slow, victim]
    try:
        urls = [s.base_url for s in servers]
        m = write_manifest(tmp_path, IDENTITY, n=1, problems=600, extra_teacher=_replicas(urls), limits=", concurrency: 16")
        proc = _start_cli("run", m, "--no-progress")
        _wait_requests(victim, 30, proc)
        victim.proc.kill()  # kill -9: its in-flight requests lose their connection, new ones are refused
        victim.proc.wait()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        out = tmp_path / "out"
        assert len(stored_keys(out)) == 600
        r = _receipt(out)
        assert r["complete"] and r["counts"]["retries"] == 0 and r["counts"]["failed_prompts"] == 0
        figs = {f["url"]: f for f in r["replicas"]}
        assert figs[victim.base_url]["taken_out"] >= 1 and not figs[victim.base_url]["up"]
        assert "taken out of service" in " ".join(r["notices"])
        # Each replica's answered requests are what its server counted (the victim's are lost with it).
        for s in (*fast, slow):
            f = figs[s.base_url]
            assert f["requests"] - f["errors"] == _served(s)
            assert f["tokens"] > 0 and f["latency_p50_s"] is not None and f["latency_p95_s"] >= f["latency_p50_s"]
        # The slow replica (10x the latency) got far fewer requests than either fast one.
        assert figs[slow.base_url]["requests"] * 3 < min(figs[s.base_url]["requests"] for s in fast)
        assert abs(figs[slow.base_url]["latency_p50_s"] - 0.2) < 0.1
        answered = sum(f["requests"] - f["errors"] for f in figs.values())
        assert answered >= 600 and sum(_served(s) for s in (*fast, slow)) + figs[victim.base_url]["requests"] >= 600

        st = cli("status", out, "--json")
        assert st.returncode == 0, st.stderr
        sfigs = {f["url"]: f for f in json.loads(st.stdout)["replicas"]}
        assert sfigs[slow.base_url]["requests"] == figs[slow.base_url]["requests"]
        text = cli("status", out)
        assert f"replica {slow.base_url}:" in text.stdout
        rep = cli("report", out, "--json")
        assert rep.returncode == 0, rep.stderr
        assert {f["url"] for f in json.loads(rep.stdout)["replicas"]} == set(urls)
        assert "Teacher replicas" in cli("report", out).stdout
    finally:
        for s in servers:
            s.stop()


def test_a_replica_that_comes_up_later_is_put_back(tmp_path):
    port = _free_port()
    late_url = f"http://127.0.0.1:{port}/v1"
    first = ServerProcess(ServerConfig.load({"latency_ms": 100}))
    late = None
    try:
        m = write_manifest(tmp_path, IDENTITY, n=1, problems=800, extra_teacher=_replicas([first.base_url, late_url]),
                           limits=", concurrency: 8")
        proc = _start_cli("run", m, "--no-progress")
        _wait_requests(first, 40, proc)
        late = ServerProcess(ServerConfig.load({"latency_ms": 100}), port=port)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        figs = {f["url"]: f for f in _receipt(tmp_path / "out")["replicas"]}
        assert figs[late_url]["taken_out"] >= 1 and figs[late_url]["up"]
        assert _served(late) > 20 and figs[late_url]["requests"] - figs[late_url]["errors"] == _served(late)
        assert len(stored_keys(tmp_path / "out")) == 800
    finally:
        first.stop()
        if late is not None:
            late.stop()


GW_KEY = "gwkey-Rt5mQ8zXb2LkP7nVw4Hs"


def test_probes_carry_the_gateway_headers_and_a_replica_refusing_them_stays_out(tmp_path, monkeypatch):
    """Replicas behind gateways that require a header on every path (chat and /models): the
    probes send `teacher.headers` (env values resolved) as the requests do, so a replica that
    comes up later is put back without one refused probe; one whose gateway refuses those
    credentials answers the probe 401 and stays out (its requests would be refused too)."""
    monkeypatch.setenv("CURATOR_TEST_GW_KEY", GW_KEY)
    ports = [_free_port(), _free_port()]
    late_url, wrong_url = (f"http://127.0.0.1:{p}/v1" for p in ports)
    gateway = {"latency_ms": 100, "require_headers": {"X-Gateway-Key": GW_KEY}}
    first = ServerProcess(ServerConfig.load(gateway))
    late = wrong = None
    try:
        m = write_manifest(tmp_path, IDENTITY, n=1, problems=800, limits=", concurrency: 8",
                           extra_teacher=_replicas([first.base_url, late_url, wrong_url])
                           + "\n  headers: {X-Gateway-Key: {env: CURATOR_TEST_GW_KEY}}")
        proc = _start_cli("run", m, "--no-progress")
        _wait_requests(first, 40, proc)
        late = ServerProcess(ServerConfig.load(gateway), port=ports[0])
        wrong = ServerProcess(ServerConfig.load({**gateway, "require_headers": {"X-Gateway-Key": "another-key"}}), port=ports[1])
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        figs = {f["url"]: f for f in _receipt(tmp_path / "out")["replicas"]}
        assert figs[late_url]["taken_out"] >= 1 and figs[late_url]["up"]
        assert _served(late) > 20 and figs[late_url]["requests"] - figs[late_url]["errors"] == _served(late)
        for s in (first, late):
            st = s.stats()
            assert st["errors"] == {} and st["models_requests"] >= (1 if s is late else 0), st  # no probe refused
        st = wrong.stats()
        assert st["models_requests"] >= 1 and st["requests"] == 0 and not figs[wrong_url]["up"], st
        assert len(stored_keys(tmp_path / "out")) == 800
        assert GW_KEY not in err
    finally:
        first.stop()
        for s in (late, wrong):
            if s is not None:
                s.stop()


def test_none_left_fails_in_one_line_and_resume_finishes(tmp_path):
    servers = [ServerProcess(ServerConfig.load({"latency_ms": 30})) for _ in range(2)]
    ports = [int(s.base_url.rsplit(":", 1)[1].split("/")[0]) for s in servers]
    urls = [s.base_url for s in servers]
    back = None
    try:
        m = write_manifest(tmp_path, IDENTITY, n=2, problems=300, extra_teacher=_replicas(urls), limits=", concurrency: 8")
        proc = _start_cli("run", m, "--no-progress")
        _wait_requests(servers[0], 20, proc)
        for s in servers:
            s.proc.kill()
            s.proc.wait()
        _, err = proc.communicate(timeout=60)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert proc.returncode != 0 and len(lines) == 1, err
        assert "every teacher replica is out of service" in lines[0] and "curator resume" in lines[0]
        out = tmp_path / "out"
        stored = stored_keys(out)
        assert 0 < len(stored) < 600
        back = ServerProcess(ServerConfig.load({"latency_ms": 5}), port=ports[1])
        res = cli("resume", out, "--no-progress")
        assert res.returncode == 0, res.stderr
        assert len(stored_keys(out)) == 600
        assert _served(back) == (600 - len(stored)) // 2 or _served(back) >= (600 - len(stored)) // 2  # n=2 per request
        r = _receipt(out)
        assert r["complete"] and r["counts"]["stored_this_run"] == 600 - len(stored)
    finally:
        for s in servers:
            s.stop()
        if back is not None:
            back.stop()


def test_keys_do_not_depend_on_the_replicas(tmp_path, server):
    a, b = server(), server()
    m = write_manifest(tmp_path, IDENTITY, n=2, problems=6, extra_teacher=_replicas([a, b]))
    assert cli("run", m, "--no-progress").returncode == 0
    keys = stored_keys(tmp_path / "out")
    assert len(keys) == 12
    # Reordered, one removed, one added: nothing is bought again.
    c = server()
    for reps in ([b, a], [b], [c, a]):
        m2 = write_manifest(tmp_path, IDENTITY, n=2, problems=6, extra_teacher=_replicas(reps), name="m2.yaml")
        res = cli("run", m2, "--no-progress")
        assert res.returncode == 0, res.stderr
        assert "stored 0 new samples (12 already stored)" in res.stderr and "requests 0" in res.stderr
    assert stored_keys(tmp_path / "out") == keys


@pytest.mark.parametrize("reps, msg", [
    (["http://127.0.0.1:9/v1", "localhost:8000/v1"], "replica 2 'localhost:8000/v1' is not a URL"),
    (["http://127.0.0.1:9/v1", "ftp://x/v1"], "replica 2 'ftp://x/v1' is not a URL"),
    (["http://127.0.0.1:9/v1", "http://127.0.0.1:8/v1", "HTTP://127.0.0.1:9/v1/"], "replicas 1 and 3 are the same URL"),
])
def test_bad_replicas_are_one_line_manifest_errors(tmp_path, reps, msg):
    m = write_manifest(tmp_path, IDENTITY, extra_teacher=_replicas(reps))
    res = cli("run", m, "--no-progress")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and msg in res.stderr and "teacher.replicas" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def _status(out: Path) -> dict:
    st = cli("status", out, "--json")
    assert st.returncode == 0, st.stderr
    return json.loads(st.stdout)


def test_status_shows_per_replica_figures_while_the_run_goes(tmp_path):
    """Running sessions (here two workers of one run) publish their per-replica figures
    (OUT/live/): `status` shows them merged across the workers, and they grow, before the run
    ends; a killed session's figures still count, and the next session folds them into a receipt;
    once a session's receipt is written the receipt holds them and its live file is gone."""
    fast = ServerProcess(ServerConfig.load({"latency_ms": 150}))
    slow = ServerProcess(ServerConfig.load({"latency_ms": 900}))
    try:
        urls = [fast.base_url, slow.base_url]
        m = write_manifest(tmp_path, IDENTITY, n=1, problems=400, extra_teacher=_replicas(urls), limits=", concurrency: 2")
        out = tmp_path / "out"
        procs = [_start_cli("run", m, "--worker", f"{i}/2", "--no-progress") for i in (1, 2)]
        try:
            seen: list[dict[str, dict]] = []
            deadline = time.monotonic() + 90
            while len(seen) < 2:
                for p in procs:
                    assert p.poll() is None, p.communicate()
                assert time.monotonic() < deadline, "no live replica figures in status"
                if (out / "manifest.resolved.yaml").exists():
                    figs = {f["url"]: f for f in _status(out)["replicas"]}
                    if figs and (not seen or figs[fast.base_url]["requests"] > seen[-1][fast.base_url]["requests"]):
                        seen.append(figs)
                time.sleep(0.3)
            text = cli("status", out).stdout
            assert all(p.poll() is None for p in procs), "a worker ended before the last look: the figures were not live"
            first, second = seen
            assert set(second) == set(urls)
            for url in urls:
                assert second[url]["requests"] >= first[url]["requests"] and second[url]["up"] is True
                assert second[url]["in_flight"] is not None and second[url]["tokens"] > 0
            # The slow replica answers 6x slower: fewer requests, a higher median, as the receipt would say.
            assert second[slow.base_url]["requests"] < second[fast.base_url]["requests"]
            assert second[slow.base_url]["latency_p50_s"] > 3 * second[fast.base_url]["latency_p50_s"]
            assert f"replica {slow.base_url}:" in text and "now up" in text
            for p in procs:
                p.kill()  # kill -9: no receipt; what they bought still counts
                p.wait()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        killed = {f["url"]: f for f in _status(out)["replicas"]}
        files = [json.loads(p.read_text()) for p in (out / "live").glob("*.json")]
        assert sorted(f["worker"] for f in files) == ["1/2", "2/2"]
        for url in urls:  # merged across the workers
            assert killed[url]["requests"] == sum(r["requests"] for f in files for r in f["replicas"] if r["url"] == url)
            assert killed[url]["up"] is None and killed[url]["in_flight"] is None  # no session is running
        assert killed[fast.base_url]["requests"] >= second[fast.base_url]["requests"]

        # The next session (more in flight: keys do not depend on limits) finishes every part.
        m2 = write_manifest(tmp_path, IDENTITY, n=1, extra_teacher=_replicas(urls), limits=", concurrency: 24", name="m2.yaml")
        res = cli("run", m2, "--no-progress", timeout=120)
        assert res.returncode == 0, res.stderr
        assert len(stored_keys(out)) == 400
        final = {f["url"]: f for f in _status(out)["replicas"]}
        r = {f["url"]: f for f in _receipt(out)["replicas"]}
        # The killed sessions' files were folded into receipts of their own by the next session
        # (it held the writer lock), and the last one's went with its receipt.
        assert list((out / "live").glob("*.json")) == []
        folded = [json.loads(p.read_text()) for p in (out / "receipts").glob("*.json")]
        folded = sorted((f for f in folded if f.get("killed")), key=lambda f: f["worker"])
        assert [(f["run_id"], f["worker"], f["replicas"]) for f in folded] == \
            [(f["run_id"], f["worker"], f["replicas"]) for f in sorted(files, key=lambda f: f["worker"])]
        for url in urls:  # the killed sessions' figures (counted once) plus the last session's receipt
            assert final[url]["requests"] == killed[url]["requests"] + r[url]["requests"]
        # (A killed session's file is its last publication: answers of its last second are not in it.)
        assert sum(f["requests"] for f in r.values()) > 0
    finally:
        fast.stop()
        slow.stop()
