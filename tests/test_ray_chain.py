"""`curator filter OUT --engine ray` on a real two-node Ray cluster on this machine: the verdicts
are the local engine's (every step's passed/reason/details per key, accepted, reject_reason, the
near-dup clusters and kept rows); a killed driver or a lost worker node loses nothing; a missing
extra and a silent address are one line each and touch nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, cli, write_manifest, write_problems
from curator.records import SAMPLE_SCHEMA
from curator.store.catalog import query
from curator.store.journal import Journal
from curator.store.shards import write_atomic

CHAIN = """name: ray-test
steps:
  - filter: format
    params: {require_boxed: auto}
  - math
  - filter: language
    params: {target: en}
  - filter: length
    params: {max_total_tokens: 16384}
  - filter: decontam
    params: {benchmarks: [bench.jsonl], ngram: 6, fields: [problem, completion]}
  - filter: near_dup
    params: {field: cot, threshold: 0.8}
  - filter: majority_vote
    params: {skip_with_gold: false}
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A real output folder: 240 answers from the local teacher in several shards (a quarter of
    them one canned CoT: a near-dup bucket bigger than the all-pairs limit), plus a shard a crash
    recovery left holding keys another shard has, and a journal not yet compacted."""
    import pyarrow.parquet as pq

    from curator.config import load_manifest
    from curator.run import run_manifest
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import running_server

    tmp = tmp_path_factory.mktemp("raychain")
    probs = write_problems(tmp / "problems.jsonl", 60)
    (tmp / "bench.jsonl").write_text(json.dumps({"question": "Tom has 10 apples and buys 9 more. How many now?"}) + "\n")
    (tmp / "chain.yaml").write_text(CHAIN)
    mix = {"right": 0.4, "wrong": 0.15, "truncated": 0.05, "duplicate": 0.3, "mixed_lang": 0.1}
    with running_server(ServerConfig.load({"problems": str(probs), "problem_column": "question", "mix": mix})) as url:
        m = write_manifest(tmp, url, n=4)
        m.write_text(m.read_text() + "store: {shard_rows: 50}\n")
        run_manifest(load_manifest(m), progress=False)
    out = tmp / "out"
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) >= 2
    again = pq.read_table(shards[0]).slice(0, 5).cast(SAMPLE_SCHEMA)
    write_atomic(again, out / "shards" / "shard-zz-recovered.parquet")
    # A journal a crash left uncompacted: 5 answers no shard holds (copies of canned ones, so
    # they join the big near-dup cluster) and 2 a shard already holds (read from the shard).
    rows = pq.read_table(shards[-1]).to_pylist()
    canned = [r for r in rows if "well-known result" in (r["completion"] or "")][:5]
    Journal(out / "journal" / "journal-crash.jsonl").append([{**r, "key": r["key"] + "-j"} for r in canned] + rows[:2])
    return tmp, out


def snapshot(out: Path) -> dict:
    return {
        "verdicts": query(out, "SELECT key, step, filter, passed, reason, details FROM verdicts ORDER BY key, step"),
        "samples": query(out, "SELECT key, accepted, reject_reason FROM samples ORDER BY key"),
        "chain": json.loads((out / "verdicts" / "chain.json").read_text()),
    }


def staging(out: Path) -> list[Path]:
    return sorted(out.glob(".verdicts-*"))


def filter_cmd(tmp: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "curator", "filter", str(out), "--chain", str(tmp / "chain.yaml"), *map(str, extra)]


@pytest.fixture(scope="module")
def local(stored):
    tmp, out = stored
    r = cli("filter", out, "--chain", tmp / "chain.yaml", timeout=300)
    assert r.returncode == 0, r.stderr
    return snapshot(out)


def _ray(tmp, out, address, timeout=300):
    r = subprocess.run(filter_cmd(tmp, out, "--engine", "ray", "--ray-address", address), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_ray_engine_writes_the_local_verdicts(stored, local, cluster):
    tmp, out = stored
    nd = [v for v in local["verdicts"] if v[2] == "near_dup" and not v[3]]
    sizes = {json.loads(v[5])["cluster_size"] for v in nd}
    assert nd and max(sizes) > 32  # the star rule of big buckets is exercised, not only all-pairs
    assert any(v[2] == "decontam" and not v[3] for v in local["verdicts"])
    # The catalog shows shards (240 keys); the chain judges the journal rows too (245 keys).
    assert len(local["samples"]) == 240 and len({v[0] for v in local["verdicts"]}) == 245

    # Another chain's verdicts first, so the Ray run has something to replace.
    (tmp / "other.yaml").write_text("name: other\nsteps: [length]\n")
    assert cli("filter", out, "--chain", tmp / "other.yaml").returncode == 0
    r = _ray(tmp, out, cluster.address)
    assert "240 samples" in r.stdout
    got = snapshot(out)
    assert got["chain"] == local["chain"]
    assert got["samples"] == local["samples"]
    assert got["verdicts"] == local["verdicts"]
    assert not staging(out) and not list((out / "verdicts").glob(".*near_dup*"))
    assert list((out / "verdicts").glob("batch-" + "[0-9]" * 12 + "-" + "[0-9]" * 12 + ".parquet"))  # written by the actors


def _wait_for_batches(out: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        for d in staging(out):
            if len(list(d.glob("batch-*.parquet"))) >= n:
                return d
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    raise AssertionError("the Ray chain wrote no verdict batch in time")


def test_driver_killed_mid_chain_rerun_ends_with_the_same_verdicts(stored, local, cluster):
    tmp, out = stored
    before = snapshot(out)  # the local verdicts (the previous test's Ray run left the same)
    assert before == local
    proc = subprocess.Popen(filter_cmd(tmp, out, "--engine", "ray", "--ray-address", cluster.address), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stage = _wait_for_batches(out, proc, 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stage.exists() and proc.returncode == -signal.SIGKILL
    # Nothing published: the old verdicts stand until the swap.
    assert snapshot(out) == before
    _ray(tmp, out, cluster.address)
    assert snapshot(out) == local


def test_worker_node_lost_mid_chain_ends_with_the_same_verdicts(stored, local, cluster):
    tmp, out = stored
    # Ray Data spreads actors over nodes (SPREAD by default): one of the two lives on this node.
    worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    proc = subprocess.Popen(filter_cmd(tmp, out, "--engine", "ray", "--ray-address", cluster.address), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_batches(out, proc, 1)
        cluster.remove_node(worker, allow_graceful=False)
        cluster.add_node(num_cpus=2, object_store_memory=100 << 20)  # a replacement joins
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"worker node lost: the Ray run itself ended with {proc.returncode}")
    if proc.returncode != 0:  # Ray could not finish on its own: the same command again does
        _ray(tmp, out, cluster.address)
    assert snapshot(out) == local


def test_silent_address_and_missing_extra_are_one_line_and_touch_nothing(stored, local, tmp_path):
    tmp, out = stored
    before, staged = snapshot(out), staging(out)  # (a killed driver's staging folder may be there)
    r = cli("filter", out, "--chain", tmp / "chain.yaml", "--engine", "ray", "--ray-address", "127.0.0.1:9")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:9" in err[0] and "does not answer" in err[0], r.stderr
    # Ray not installed: a `ray` package that cannot be imported stands in front of the real one.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    r = cli("filter", out, "--chain", tmp / "chain.yaml", "--engine", "ray", env={"PYTHONPATH": str(tmp_path)})
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and "curator[ray]" in err[0], r.stderr
    assert snapshot(out) == before and staging(out) == staged


def test_run_with_engine_ray_in_the_manifest_judges_as_the_local_engine(tmp_path, cluster):
    """`engine: ray` in a manifest: `curator run` runs near-dup on the cluster once sampling ends;
    re-judging the same folder locally afterwards changes no verdict."""
    probs = write_problems(tmp_path / "problems.jsonl", 30)
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "Tom has 10 apples and buys 9 more. How many now?"}) + "\n")
    (tmp_path / "chain.yaml").write_text(CHAIN)
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import running_server

    mix = {"right": 0.5, "wrong": 0.1, "duplicate": 0.3, "mixed_lang": 0.1}
    with running_server(ServerConfig.load({"problems": str(probs), "problem_column": "question", "mix": mix})) as url:
        m = write_manifest(tmp_path, url, n=4, filters="chain.yaml")
        m.write_text(m.read_text() + f"engine: ray\nray_address: '{cluster.address}'\n")
        r = cli("run", m, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    after_run = snapshot(out)
    assert any(v[2] == "near_dup" and not v[3] for v in after_run["verdicts"])
    assert not list((out / "verdicts").glob(".near_dup*"))
    # Ray's near-dup files are named by the ids they cover (the local engine's by a random suffix).
    steps = json.loads((out / "verdicts" / "chain.json").read_text())["steps"]
    nd = next(i for i, s in enumerate(steps) if s["filter"] == "near_dup")  # 6: the `response` step comes first
    assert list((out / "verdicts").glob(f"step{nd:02d}-" + "[0-9]" * 12 + "-" + "[0-9]" * 12 + ".parquet"))
    r = cli("filter", out, timeout=300)  # the manifest's chain, local engine
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == after_run
