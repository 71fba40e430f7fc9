"""`curator run MANIFEST --workers N --engine ray`: the N workers as tasks on a real local Ray,
against a real local teacher; a cluster that does not answer and inconsistent options are one
line, with nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, cli, write_manifest
from curator.teacher.config import ServerConfig
from curator.teacher.reqlog import prompt_hash
from curator.teacher.runner import ServerProcess

pytest.importorskip("ray", reason="the ray extra (in the test extra: CI installs it)")


def test_workers_as_ray_tasks_store_every_key_once(tmp_path):
    server = ServerProcess(ServerConfig.load({"latency_ms": 50}))
    try:
        m = write_manifest(tmp_path, server.base_url, n=2, problems=60)
        res = cli("run", m, "--workers", "2", "--engine", "ray", timeout=600)
        assert res.returncode == 0, res.stderr
        assert "worker 1/2: stored" in res.stderr and "worker 2/2: stored" in res.stderr
        out = tmp_path / "out"
        keys = [k for p in (out / "shards").glob("*.parquet") for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()]
        assert len(keys) == len(set(keys)) == 120
        assert {p.name.split("-")[1] for p in (out / "shards").glob("*.parquet")} == {"w1of2", "w2of2"}
        receipts = [json.loads(p.read_text()) for p in (out / "receipts").glob("*.json")]
        assert sorted(r["worker"] for r in receipts) == ["1/2", "2/2"]
        assert server.stats()["requests"] == sum(r["counts"]["requests"] for r in receipts) == 60
    finally:
        server.stop()


def test_bad_ray_options_are_one_line(tmp_path):
    m = write_manifest(tmp_path, "http://127.0.0.1:9/v1", n=1, problems=2)
    t0 = time.monotonic()
    res = cli("run", m, "--workers", "2", "--engine", "ray", "--ray-address", "127.0.0.1:9")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--ray-address 127.0.0.1:9: the Ray cluster does not answer" in res.stderr
    assert time.monotonic() - t0 < 60
    for args, msg in ((["--workers", "2"], "--workers N runs on Ray (--engine ray)"),
                      (["--engine", "ray"], "give N"),
                      (["--workers", "2", "--engine", "ray", "--worker", "1/2"], "give one of the two")):
        res = cli("run", m, *args)
        assert res.returncode == 2 and msg in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out").exists()


def _raw_keys(out: Path) -> list[str]:
    """Every key in every shard, duplicates included (the views would hide them)."""
    return [k for p in sorted((out / "shards").glob("*.parquet")) for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()]


def _lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX lock on `path` (from /proc/locks), None when nobody does."""
    ino = path.stat().st_ino if path.exists() else None
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        i = 1 if f[1] != "->" else 2
        if f[i] == "POSIX" and f[i + 2] == "WRITE" and int(f[i + 4].split(":")[-1]) == ino:
            return int(f[i + 3])
    return None


def _acknowledged(out: Path) -> dict[str, str]:
    """key -> prompt hash of every answer stored (journaled or in a shard) right now."""
    from curator.store.sample_store import journal_paths

    got = {}
    for p in journal_paths(out):
        for ln in p.read_text().splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue  # a line being written: not acknowledged yet
            got[r["key"]] = prompt_hash(json.loads(r["messages_json"]))
    for p in (out / "shards").glob("*.parquet"):
        for r in pq.read_table(p, columns=["key", "messages_json"]).to_pylist():
            got[r["key"]] = prompt_hash(json.loads(r["messages_json"]))
    return got


def _wait(cond, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, f"no {what} in {timeout} s"
        time.sleep(0.05)


def test_ray_workers_survive_a_killed_task_and_a_killed_driver(tmp_path, cluster):
    """kill -9 of the Ray worker process running worker 1/2: Ray runs the task again, which takes
    the dead holder's lock and resumes its part; then kill -9 of the driver: the same command again
    finishes. Every key stored once, nothing acknowledged lost, no stored prompt bought again."""
    prompts, n, conc = 120, 2, 4
    log = tmp_path / "requests.jsonl"
    server = ServerProcess(ServerConfig.load({"latency_ms": 250, "request_log": str(log)}))
    try:
        m = write_manifest(tmp_path, server.base_url, n=n, problems=prompts, limits=f", concurrency: {conc}")
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "curator", "run", str(m), "--workers", "2", "--engine", "ray", "--ray-address", cluster.address]
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kills: list[tuple[float, dict[str, str]]] = []  # (when, what was acknowledged then)
        try:
            lock = out / ".lock-w1of2"
            _wait(lambda: any(p.stat().st_size for p in (out / "journal" / "w1of2").glob("*.jsonl"))
                  if (out / "journal" / "w1of2").is_dir() else False, driver, "answer journaled by worker 1/2")
            victim = _lock_holder(lock)
            assert victim is not None and victim != driver.pid
            os.kill(victim, signal.SIGKILL)
            kills.append((time.time(), _acknowledged(out)))
            # Ray runs the task again in another process, which takes over the lock and buys more.
            _wait(lambda: _lock_holder(lock) not in (None, victim), driver, "retry of worker 1/2 holding its lock")
            seen = len(kills[-1][1])
            _wait(lambda: len(_acknowledged(out)) >= seen + 4 * n, driver, "answer stored after the retry")
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
            kills.append((time.time(), _acknowledged(out)))
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        assert driver.returncode == -signal.SIGKILL
        assert len(kills[-1][1]) < prompts * n, "the run ended before the driver was killed: the kill proved nothing"

        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        raw = _raw_keys(out)
        assert len(raw) == len(set(raw)) == prompts * n  # every key exactly once
        for _, acked in kills:
            assert set(acked) <= set(raw)  # nothing acknowledged lost
        # The teacher's log: every stored answer is one it handed out, and no prompt stored at a
        # kill was bought again after it.
        lines = [json.loads(ln) for ln in log.read_text().splitlines()]
        handed = {x["id"]: x for x in lines if x["status"] == 200 and x["id"]}
        rows = [r for p in (out / "shards").glob("*.parquet") for r in pq.read_table(p, columns=["request_id"]).to_pylist()]
        used = {r["request_id"] for r in rows}
        assert len(used) == prompts and used <= set(handed)
        for when, acked in kills:
            again = [x for x in handed.values() if x["t0"] > when and x["prompt"] in set(acked.values())]
            assert not again, f"{len(again)} stored prompts bought again after a kill"
        # What was bought and not stored: only answers cut off by the kills (in flight, or not yet journaled).
        assert len(set(handed) - used) <= 2 * 2 * conc
    finally:
        server.stop()


def test_a_ray_task_waits_for_a_dying_holder_of_its_lock(tmp_path, cluster):
    """A previous worker 1/2 still holds the part's lock when the Ray run starts (a killed driver's
    task not yet reaped, a dead NFS client's lock not yet expired): the task waits for the lock
    instead of failing, then resumes what the dead holder left."""
    server = ServerProcess(ServerConfig.load({"latency_ms": 1000}))
    try:
        m = write_manifest(tmp_path, server.base_url, n=1, problems=60, limits=", concurrency: 8")
        slow = write_manifest(tmp_path, server.base_url, n=1, problems=60, limits=", concurrency: 1", name="slow.yaml")
        out = tmp_path / "out"
        old = subprocess.Popen([sys.executable, "-m", "curator", "run", str(slow), "--worker", "1/2", "--no-progress"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait(lambda: bool(_acknowledged(out)) if out.is_dir() else False, old, "answer stored by the old worker")
            driver = subprocess.Popen([sys.executable, "-m", "curator", "run", str(m), "--workers", "2", "--engine", "ray",
                                       "--ray-address", cluster.address], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Once the task of part 2 holds its lock, the task of part 1 has met the old holder's.
            _wait(lambda: _lock_holder(out / ".lock-w2of2") is not None, driver, "the Ray tasks starting")
            time.sleep(1.0)
            assert old.poll() is None, "the old worker ended by itself: nothing was held"
            os.kill(old.pid, signal.SIGKILL)
            old.wait()
            _, err = driver.communicate(timeout=240)
        finally:
            for p in (old, locals().get("driver")):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        assert driver.returncode == 0, err[-3000:]
        raw = _raw_keys(out)
        assert len(raw) == len(set(raw)) == 60
    finally:
        server.stop()
