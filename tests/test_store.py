import json

import duckdb
import pyarrow.parquet as pq
import pytest

from curator.store import catalog
from curator.store.sample_store import SampleStore, StoreLocked, journal_paths, shard_paths, stored_keys


def rec(i, **kw):
    r = {"key": f"k{i:04d}", "run": "t", "prompt_id": str(i // 2), "sample_index": i % 2, "problem": f"p{i}",
         "gold": "1", "cot": "c", "completion": "a", "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.001}
    r.update(kw)
    return r


def test_append_compact_and_views(tmp_path):
    s = SampleStore(tmp_path, shard_rows=3)
    s.append([rec(i) for i in range(5)])  # 5 >= 3: one shard now
    assert len(shard_paths(tmp_path)) == 1 and not journal_paths(tmp_path)
    s.append([rec(i) for i in range(5, 7)])
    assert len(journal_paths(tmp_path)) == 1
    s.append([rec(0)])  # a stored key is never stored twice
    s.close()
    assert len(shard_paths(tmp_path)) == 2 and not journal_paths(tmp_path)
    con = catalog.connect(tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT key), min(seq), max(seq) FROM samples").fetchall()[0] == (7, 7, 0, 6)
    assert con.execute("SELECT count(*) FROM samples WHERE accepted IS NULL AND reject_reason IS NULL").fetchall()[0][0] == 7
    # zstd shards
    assert pq.ParquetFile(shard_paths(tmp_path)[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_recovery_of_journal_with_torn_line_and_keys_already_in_shards(tmp_path):
    s = SampleStore(tmp_path, shard_rows=100)
    s.append([rec(i) for i in range(3)])
    s.compact()
    s.append([rec(i) for i in range(3, 6)])
    journal = journal_paths(tmp_path)[0]
    # Simulate a kill: the store is never closed, a row is half written, and the journal also
    # holds a key that a shard already has (kill between shard rename and journal unlink).
    with journal.open("a") as f:
        f.write(json.dumps(rec(1)) + "\n")
        f.write('{"key": "k9999", "run": "t", "probl')
    s._journal.close()
    import os

    from curator.store import sample_store
    os.close(s._lock_fd)
    sample_store._HELD.discard(s._lock_name)
    s2 = SampleStore(tmp_path)
    assert s2.recovered == 3  # k0003..k0005; k0001 was in a shard; the torn row was never acknowledged
    assert stored_keys(tmp_path) == {f"k{i:04d}" for i in range(6)}
    s2.close()
    con = catalog.connect(tmp_path, read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM samples").fetchall()[0] == (6, 6)


def test_second_writer_is_refused(tmp_path):
    s = SampleStore(tmp_path)
    with pytest.raises(StoreLocked, match="another curator process"):
        SampleStore(tmp_path)
    s.close()
    SampleStore(tmp_path).close()


def test_partial_shard_left_by_a_kill_is_ignored_and_removed(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / ".shard-x.parquet.partial").write_bytes(b"PAR1garbage")
    s = SampleStore(tmp_path)
    s.append([rec(1)])
    s.close()
    assert not list((tmp_path / "shards").glob(".*partial"))
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/shards/*.parquet')").fetchall()[0][0] == 1


def test_read_only_connect_on_empty_output(tmp_path):
    con = catalog.connect(tmp_path, read_only=True)
    assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 0
    assert not (tmp_path / "catalog.duckdb").exists()


def test_forked_workers_do_not_keep_the_directory_locked(tmp_path):
    """Filter pools fork while a store is open; the lock must not live on in them."""
    import multiprocessing as mp
    import subprocess
    import sys

    s = SampleStore(tmp_path)
    ctx = mp.get_context("fork")
    child = ctx.Process(target=__import__("time").sleep, args=(5,))
    child.start()
    try:
        s.close()
        probe = "from curator.store.sample_store import SampleStore; import sys; SampleStore(__import__('pathlib').Path(sys.argv[1])).close()"
        r = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        child.terminate()
        child.join()


def test_lock_excludes_another_process(tmp_path):
    import subprocess
    import sys

    s = SampleStore(tmp_path)
    try:
        probe = "from curator.store.sample_store import SampleStore; import sys; SampleStore(__import__('pathlib').Path(sys.argv[1]))"
        r = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "another curator process is writing here" in r.stderr
    finally:
        s.close()
