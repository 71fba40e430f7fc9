"""One output directory: journal -> shards -> catalog, with crash recovery and a writer lock.

Layout of OUT/:
    journal/<id>.jsonl     answers not yet compacted (fsynced before they count as stored)
    shards/*.parquet       immutable zstd shards
    verdicts/*.parquet     filter verdicts of the current chain (+ chain.json)
    receipts/<run>.json    one receipt per run
    catalog.duckdb         views over the above + the runs table
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curator.records import SAMPLE_SCHEMA
from curator.store import catalog
from curator.store.journal import Journal, read_journal
from curator.store.shards import new_shard_name, records_to_table, remove_partials, write_atomic


class StoreLocked(Exception):
    pass


_HELD: set[str] = set()  # POSIX locks do not exclude the process that holds them: track our own


def shard_paths(out_dir: Path) -> list[Path]:
    d = out_dir / "shards"
    return sorted(d.glob("*.parquet")) if d.exists() else []


def journal_paths(out_dir: Path) -> list[Path]:
    d = out_dir / "journal"
    return sorted(d.glob("*.jsonl")) if d.exists() else []


def stored_keys(out_dir: Path) -> set[str]:
    """Every key with a stored answer, in shards or in journals (the resume set)."""
    keys: set[str] = set()
    for p in shard_paths(out_dir):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    for p in journal_paths(out_dir):
        keys.update(r["key"] for r in read_journal(p))
    return keys


class SampleStore:
    """The single writer of an output directory (a POSIX lock on OUT/.lock keeps a second one out).

    lockf, not flock: flock locks belong to the open file and so are inherited by forked worker
    processes (filter pools), which would then hold the directory after this store closed."""

    def __init__(self, out_dir: Path, shard_rows: int = 20_000):
        self.out_dir = out_dir
        self.shard_rows = shard_rows
        out_dir.mkdir(parents=True, exist_ok=True)
        self._lock_name = str(out_dir.resolve())
        busy = StoreLocked(f"{out_dir}: another curator process is writing here (lock held on {out_dir / '.lock'})")
        if self._lock_name in _HELD:
            raise busy
        self._lock_fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(self._lock_fd)
            raise busy from None
        _HELD.add(self._lock_name)
        remove_partials(out_dir / "shards")
        remove_partials(out_dir / "verdicts")
        self.recovered = self._recover()
        self.keys = stored_keys(out_dir)
        self.next_seq = self._max_seq() + 1
        self._journal: Journal | None = None
        self._pending: list[dict[str, Any]] = []  # journaled rows not yet in a shard
        self.new_shards: list[Path] = []

    def _max_seq(self) -> int:
        best = -1
        for p in shard_paths(self.out_dir):
            col = pq.read_table(p, columns=["seq"]).column("seq")
            if len(col):
                best = max(best, max(v for v in col.to_pylist() if v is not None))
        return best

    def _recover(self) -> int:
        """Compact journals left by a killed run; rows already in a shard are dropped."""
        leftovers = journal_paths(self.out_dir)
        if not leftovers:
            return 0
        in_shards: set[str] = set()
        for p in shard_paths(self.out_dir):
            in_shards.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
        rows: dict[str, dict[str, Any]] = {}
        for p in leftovers:
            for r in read_journal(p):
                if r["key"] not in in_shards:
                    rows.setdefault(r["key"], r)
        if rows:
            write_atomic(records_to_table(list(rows.values()), SAMPLE_SCHEMA), self.out_dir / "shards" / new_shard_name())
        for p in leftovers:
            p.unlink()
        return len(rows)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Durably store answers (journal + fsync); compact into a shard when the journal is full."""
        fresh = [r for r in records if r["key"] not in self.keys]
        if not fresh:
            return
        for r in fresh:
            r["seq"] = self.next_seq
            self.next_seq += 1
        if self._journal is None:
            self._journal = Journal(self.out_dir / "journal" / f"{uuid.uuid4().hex}.jsonl")
        self._journal.append(fresh)
        self.keys.update(r["key"] for r in fresh)
        self._pending.extend(fresh)
        if len(self._pending) >= self.shard_rows:
            self.compact()

    def compact(self) -> Path | None:
        if self._journal is None:
            return None
        path = None
        if self._pending:
            path = write_atomic(records_to_table(self._pending, SAMPLE_SCHEMA), self.out_dir / "shards" / new_shard_name())
            self.new_shards.append(path)
        # The shard is durable before the journal goes: a kill in between leaves both, and
        # recovery drops the journal's rows that the shard already holds.
        self._journal.close()
        self._journal.path.unlink()
        self._journal = None
        self._pending = []
        return path

    def refresh_catalog(self) -> None:
        con = catalog.connect(self.out_dir)
        con.close()

    def close(self) -> None:
        self.compact()
        self.refresh_catalog()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
            _HELD.discard(self._lock_name)
