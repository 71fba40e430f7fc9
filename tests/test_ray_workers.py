"""`curator run MANIFEST --workers N --engine ray`: the N workers as tasks on a real local Ray,
against a real local teacher; a cluster that does not answer and inconsistent options are one
line, with nothing written."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest

from conftest import cli, write_manifest
from curator.teacher.config import ServerConfig
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
