import json
import re

import duckdb
import pyarrow.parquet as pq
import pytest

from curator.store import catalog
from curator.store.rescue import rescue_paths
from curator.store.sample_store import (
    SampleStore,
    StoreLocked,
    journal_paths,
    shard_paths,
    stored_keys,
)


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
    s._unlock()  # the kill takes the process's locks with it
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


# --- faults: full disks, damaged files --------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from curator.errors import StoreError  # noqa: E402
from curator.store import shards as shards_mod  # noqa: E402
from curator.store.journal import Journal, scan_journal  # noqa: E402


def _abandon(s):
    """Drop a store as a kill would: no compaction, lock released."""
    if s._journal is not None:
        s._journal.close()
    s._unlock()  # the kill takes the process's locks with it


def test_journal_on_a_full_disk_keeps_only_whole_lines(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        j = Journal(d / "j.jsonl")
        with pytest.raises(StoreError, match=r"appending to journal .*j\.jsonl failed: No space left on device \(ENOSPC\)"):
            for i in range(1000):
                j.append([rec(i, cot="x" * 700)])
        j.close()
        scan = scan_journal(d / "j.jsonl")
        assert not scan.bad_lines and not scan.torn_tail
        assert len(scan.rows) == j.rows > 0  # every acknowledged row, and nothing half written
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_shard_larger_than_the_file_size_limit_fails_cleanly(tmp_path):
    """RLIMIT_FSIZE in a child (SIGXFSZ ignored): a real EFBIG mid-write, no partial file left."""
    code = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
from pathlib import Path
from curator.errors import StoreError
from curator.records import SAMPLE_SCHEMA
from curator.store.shards import records_to_table, write_atomic
rows = [dict(key=f"k{i}", cot=__import__("os").urandom(500).hex()) for i in range(100)]
try:
    write_atomic(records_to_table(rows, SAMPLE_SCHEMA), Path(sys.argv[1]) / "s.parquet")
except OSError as e:
    print("errno", e.errno)
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "errno 27", r.stdout + r.stderr  # EFBIG
    assert list(tmp_path.iterdir()) == []


def _disk_full(*a, **k):
    raise OSError(28, "No space left on device")


def test_shard_write_failure_keeps_journaling_and_the_next_start_compacts(tmp_path, monkeypatch):
    s = SampleStore(tmp_path, shard_rows=3)
    s.append([rec(0)])

    monkeypatch.setattr("curator.store.sample_store.write_atomic", _disk_full)
    s.append([rec(1), rec(2)])  # journaled (durable); the shard write behind it fails
    assert s.failed is not None and re.search(
        r"writing shard .*shards/shard-.*\.parquet failed: No space left on device \(ENOSPC\); free space, then `curator resume", str(s.failed)
    )
    s.append([rec(3)])  # answers still in flight are journaled, not dropped
    assert not shard_paths(tmp_path)
    s.close()  # releases the lock without touching the journal
    monkeypatch.undo()
    assert [r["key"] for r in scan_journal(journal_paths(tmp_path)[0]).rows] == ["k0000", "k0001", "k0002", "k0003"]
    s2 = SampleStore(tmp_path)
    assert s2.recovered == 4 and s2.keys == {"k0000", "k0001", "k0002", "k0003"}
    s2.close()


def test_journal_write_failure_goes_to_the_rescue_journal_and_the_next_start_stores_it(tmp_path, monkeypatch):
    out, rescue = tmp_path / "out", tmp_path / "rescue"
    monkeypatch.setenv("CURATOR_RESCUE_DIR", str(rescue))
    monkeypatch.setattr("curator.store.rescue._roots", lambda: [rescue])  # leave ~/.cache and /tmp alone
    s = SampleStore(out, shard_rows=100)
    s.append([rec(0)])

    # No disk takes a write (os.write is the same function for every journal): the call raises
    # and nothing of it counts as stored.
    with monkeypatch.context() as m:
        m.setattr("curator.store.journal.os.write", _disk_full)
        with pytest.raises(StoreError, match=r"appending to journal .*No space left on device \(ENOSPC\)"):
            s.append([rec(1)])
    assert "k0001" not in s.keys and s.failed is not None
    # Another disk has room again: OUT's journal is not tried any more, later answers go to the
    # rescue journal, and `failed` (what the run reports) names it.
    s.append([rec(2), rec(3)])
    assert {"k0002", "k0003"} <= s.keys
    rescued = rescue_paths(out)
    assert len(rescued) == 1 and rescued[0].is_relative_to(rescue) and str(rescued[0]) in str(s.failed)
    s.close()
    assert [r["key"] for r in scan_journal(journal_paths(out)[0]).rows] == ["k0000"]

    s2 = SampleStore(out)
    assert s2.keys == {"k0000", "k0002", "k0003"} and s2.recovered == 3
    assert any("stored 2 answers from rescue journal" in n for n in s2.notices), s2.notices
    assert not rescue_paths(out) and not list(rescue.iterdir())  # stored, then removed
    s2.close()


def test_shard_failure_then_journal_failure_names_the_rescue_file(tmp_path, monkeypatch):
    """The usual order when OUT's disk fills: the big shard write fails first, the small journal
    appends after it. The error the run reports still names the rescue file."""
    out, rescue = tmp_path / "out", tmp_path / "rescue"
    monkeypatch.setattr("curator.store.rescue._roots", lambda: [rescue])
    s = SampleStore(out, shard_rows=2)
    monkeypatch.setattr("curator.store.sample_store.write_atomic", _disk_full)
    s.append([rec(0), rec(1)])
    assert str(s.failed).startswith("writing shard")
    real_append = Journal.append

    def full_under_out(self, records):
        if self.path.is_relative_to(out):
            raise StoreError(f"appending to journal {self.path} failed: No space left on device (ENOSPC)")
        return real_append(self, records)

    monkeypatch.setattr(Journal, "append", full_under_out)
    s.append([rec(2)])
    [kept] = rescue_paths(out)
    assert str(s.failed).startswith("writing shard") and f"kept in {kept}" in str(s.failed), s.failed
    s.close()
    monkeypatch.undo()
    monkeypatch.setattr("curator.store.rescue._roots", lambda: [rescue])
    s2 = SampleStore(out)
    assert s2.keys == {"k0000", "k0001", "k0002"} and not rescue_paths(out)
    s2.close()


@pytest.mark.parametrize("how", ["world-writable", "someone else's", "symlink"])
def test_a_rescue_folder_that_is_not_private_is_never_read(tmp_path, monkeypatch, how):
    """Another local user could otherwise plant answers in a dataset through a shared temp dir."""
    from curator.store.rescue import rescue_dirs

    out, rescue = tmp_path / "out", tmp_path / "rescue"
    monkeypatch.setattr("curator.store.rescue._roots", lambda: [rescue])
    SampleStore(out).close()
    [d] = rescue_dirs(out)
    planted = tmp_path / "planted" if how == "symlink" else d
    planted.mkdir(parents=True)
    rescue.mkdir(mode=0o700, exist_ok=True)
    Journal(planted / "x.jsonl").append([rec(7, cot="POISON")])
    if how == "world-writable":
        os.chmod(d, 0o777)
    elif how == "someone else's":
        os.chmod(d, 0o700)
        try:
            os.chown(d, 12345, 12345)
        except PermissionError:
            pytest.skip("chown needs root")
    else:
        d.symlink_to(planted)
    s = SampleStore(out)
    assert "k0007" not in s.keys and s.recovered == 0
    s.close()
    # The same file in a private folder is read (so the test above can fail).
    if how != "symlink":
        os.chown(d, os.getuid(), os.getgid())
        os.chmod(d, 0o700)
        s = SampleStore(out)
        assert "k0007" in s.keys
        s.close()


def _garble_row_group(path, group: int) -> None:
    md = pq.read_metadata(path)
    col = md.row_group(group).column(0)  # `key`: checked on every start (other columns only when read)
    start = col.dictionary_page_offset + 20  # inside the dictionary page (checksummed)
    data = bytearray(path.read_bytes())
    for i in range(start, start + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_garbled_shard_is_quarantined_and_its_intact_row_groups_salvaged(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "ROW_GROUP_ROWS", 5)
    s = SampleStore(tmp_path, shard_rows=100)
    s.append([rec(i, key=f"k{i:04d}-" + "x" * 40 + str(i)) for i in range(20)])
    s.close()
    shard = shard_paths(tmp_path)[0]
    assert pq.read_metadata(shard).num_row_groups == 4
    lost = set(pq.ParquetFile(shard).read_row_group(2, columns=["key"]).column("key").to_pylist())
    _garble_row_group(shard, 2)
    s2 = SampleStore(tmp_path)
    assert [p.parent.name for p in s2.quarantined] == ["quarantine"] and not shard.exists()
    assert any("15 rows salvaged" in n for n in s2.notices), s2.notices
    assert s2.keys == {f"k{i:04d}-" + "x" * 40 + str(i) for i in range(20)} - lost
    s2.close()


def test_truncated_shard_whose_journal_survived_loses_nothing(tmp_path):
    s = SampleStore(tmp_path, shard_rows=100)
    s.append([rec(i) for i in range(6)])
    journal = s._journal.path
    saved = journal.read_bytes()
    s.compact()  # the shard is written, then the journal removed...
    journal.write_bytes(saved)  # ...but a kill came first: both are there
    shard = shard_paths(tmp_path)[0]
    shard.write_bytes(shard.read_bytes()[:100])  # inside the only row group: the footer copy cannot help
    _abandon(s)
    s2 = SampleStore(tmp_path)
    assert s2.recovered == 6 and s2.keys == {f"k{i:04d}" for i in range(6)}
    assert (tmp_path / "quarantine" / shard.name).exists()
    s2.close()


def test_shard_cut_short_gives_back_its_row_groups_before_the_cut(tmp_path, monkeypatch):
    """A power cut that truncates a shard takes its Parquet footer; the copy written beside it
    locates the row groups that are still whole, so only the rows after the cut are lost."""
    monkeypatch.setattr(shards_mod, "ROW_GROUP_ROWS", 5)
    s = SampleStore(tmp_path, shard_rows=100)
    s.append([rec(i) for i in range(20)])
    s.close()
    shard = shard_paths(tmp_path)[0]
    footer = shard.parent / f".{shard.name}.footer"
    assert footer.exists() and shard.read_bytes().endswith(footer.read_bytes())
    meta = pq.read_metadata(shard)
    groups = [set(pq.ParquetFile(shard).read_row_group(g, columns=["key"]).column("key").to_pylist()) for g in range(meta.num_row_groups)]
    assert len(groups) == 4
    # Cut inside the third row group: the first two are whole.
    rg = meta.row_group(2)
    start = min(rg.column(c).data_page_offset if rg.column(c).dictionary_page_offset is None else rg.column(c).dictionary_page_offset
                for c in range(rg.num_columns))
    shard.write_bytes(shard.read_bytes()[: start + 50])
    s2 = SampleStore(tmp_path)
    assert s2.keys == groups[0] | groups[1]
    assert any("10 rows salvaged" in n for n in s2.notices), s2.notices
    assert (tmp_path / "quarantine" / shard.name).exists() and (tmp_path / "quarantine" / footer.name).exists()
    s2.close()


def test_readers_skip_an_unreadable_verdict_file_and_the_store_quarantines_it(tmp_path, capfd):
    s = SampleStore(tmp_path)
    s.append([rec(1)])
    s.close()
    bad = tmp_path / "verdicts" / "v-bad.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 not really")
    con = catalog.connect(tmp_path, read_only=True)
    assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 1
    con.close()
    assert f"{bad}: unreadable Parquet file" in capfd.readouterr().err
    s = SampleStore(tmp_path)
    assert (tmp_path / "quarantine" / "v-bad.parquet").exists() and not bad.exists()
    s.close()
