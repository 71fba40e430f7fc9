"""One output directory: journal -> shards -> catalog, with crash recovery and a writer lock.

Layout of OUT/:
    journal/<id>.jsonl     answers not yet compacted (fsynced before they count as stored)
    shards/*.parquet       immutable zstd shards
    verdicts/*.parquet     filter verdicts of the current chain (+ chain.json)
    receipts/<run>.json    one receipt per run
    catalog.duckdb         views over the above + the runs table
    quarantine/            files found unreadable at start (never deleted: paid data); their
                           readable rows were copied back into a new shard first

Each shard has a copy of its Parquet footer beside it (shards/.NAME.footer, see shards.py).
When the journal itself cannot be written (its disk is full or read-only), answers still arriving
(already paid for) go to a rescue journal on another disk (see rescue.py); the next start on OUT
stores them like any leftover journal, and the error line names the file.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curator.errors import StoreError, store_error
from curator.records import SAMPLE_SCHEMA
from curator.store import catalog
from curator.store.journal import Journal, read_journal, scan_journal
from curator.store.layout import QUARANTINE, OutputDir
from curator.store.locks import WriterLock, critical
from curator.store.rescue import RescueJournal, rescue_paths
from curator.store.shards import (ShardEncoder, footer_path, new_shard_name, warn, read_checked, readable_parquet, records_to_table, remove_partials,
                                  salvage_rows, write_atomic)
from curator.store.workers import Part



from curator.errors import StoreLocked  # noqa: E402,F401  (raised here; defined with the root)


def shard_paths(out_dir: Path) -> list[Path]:
    """The readable shards; an unreadable one is named on stderr and left out (resume quarantines it)."""
    return readable_parquet(OutputDir(out_dir).shards, hint=f"; `curator resume {out_dir}` moves it to {out_dir / QUARANTINE} and requests its lost rows again")


def journal_paths(out_dir: Path) -> list[Path]:
    """Every journal: a plain run's (OUT/journal/*.jsonl) and each worker's (OUT/journal/wIofN/*.jsonl)."""
    d = OutputDir(out_dir).journal
    return sorted(d.glob("*.jsonl")) + sorted(d.glob("*/*.jsonl")) if d.exists() else []


def journal_lines(out_dir: Path) -> int:
    """Answers in journals not compacted yet (every worker's too); a journal compacted away while
    this counts is skipped (its rows are in a shard by then)."""
    n = 0
    for p in journal_paths(out_dir):
        try:
            n += p.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return n


def stored_keys(out_dir: Path) -> set[str]:
    """Every key with a stored answer, in shards or in journals (the resume set)."""
    keys: set[str] = set()
    for p in shard_paths(out_dir):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    for p in journal_paths(out_dir):
        keys.update(r["key"] for r in read_journal(p))
    return keys


class SampleStore:
    """The single writer of an output directory: OUT's writer lock (store/locks.py) keeps every
    other writer out, a run's workers (--worker I/N) excepted."""

    def __init__(self, out_dir: Path, shard_rows: int = 20_000, part: Part | None = None, command: str = "run"):
        """part: this store is worker I of N (store/workers.py): OUT/.lock shared, its own lock,
        journal folder and shard names; start-up repairs only its own leftovers."""
        self.out_dir = out_dir
        self.shard_rows = shard_rows
        self.part = part
        layout = OutputDir(out_dir)
        self.journal_dir = layout.worker_journal(part.tag) if part else layout.journal
        self._shard_prefix = f"shard-{part.tag}" if part else "shard"
        out_dir.mkdir(parents=True, exist_ok=True)
        self._writer = WriterLock(layout, command, part)  # refused (one line naming the holder) before anything is touched
        self.notices: list[str] = []  # what start-up repaired, one line each (also on stderr)
        self._first_error: StoreError | None = None  # the first write that failed (a shard or the journal)
        self.journal_failed: StoreError | None = None  # the journal refused a write: later answers go to the rescue journal
        self._journal: Journal | None = None
        self._rescue = RescueJournal(out_dir)
        try:
            if part is None:
                remove_partials(out_dir / "shards")
                remove_partials(OutputDir(out_dir).verdicts)
            else:  # another worker's temp files are writes in progress, not leftovers
                remove_partials(out_dir / "shards", prefix=self._shard_prefix)
            # One pass over the shards' key and seq columns gives the stored keys, the next seq
            # and which shards are unreadable.
            self.keys: set[str] = set()
            self._last_seq = -1
            self.quarantined = self._quarantine()  # before recovery: a journal may still hold a lost shard's rows
            self.recovered = self._recover()
            self.next_seq = self._last_seq + 1
        except BaseException:
            self._unlock()
            raise
        self._pending: ShardEncoder | None = None  # journaled rows not yet in a shard, encoded as they come
        self._shard_name = ""  # the shard the open journal compacts into
        self._mutex = threading.RLock()
        self._views_fresh = False  # the catalog's views were refreshed after this store's last shard
        self.new_shards: list[Path] = []
        self.config_id: str | None = None  # stamped on every answer this session stores (curator/sample/configs.py)

    def _remember(self, keys: list[str], seqs: list[int | None]) -> None:
        self.keys.update(keys)
        self._last_seq = max([self._last_seq, *(s for s in seqs if s is not None)])

    def _write_recovered(self, rows: list[dict[str, Any]]) -> None:
        self._write_shard(rows)
        self._remember([r["key"] for r in rows], [r.get("seq") for r in rows])

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        warn(message)

    def _move_to_quarantine(self, path: Path) -> Path:
        qdir = self.out_dir / QUARANTINE
        qdir.mkdir(exist_ok=True)
        dest = qdir / path.name
        if dest.exists():
            dest = qdir / f"{path.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}{path.suffix}"
        footer = footer_path(path)
        if footer.exists():
            # First, and named after the shard's new name: a kill between the two moves leaves
            # the shard to be quarantined again, never a footer copy without its shard (which
            # the next start would remove as a leftover).
            shutil.move(footer, footer_path(dest))
        shutil.move(path, dest)  # a rescue journal may sit on another disk
        return dest

    def _write_shard(self, rows: list[dict[str, Any]] | ShardEncoder, name: str | None = None) -> Path:
        path = self.out_dir / "shards" / (name or new_shard_name(self._shard_prefix))
        try:
            data = rows.finish() if isinstance(rows, ShardEncoder) else records_to_table(rows, SAMPLE_SCHEMA)
            return write_atomic(data, path, keep_footer=True)
        except OSError as e:
            where = f" (its answers stay in {self._journal.path})" if self._journal is not None else ""
            err = StoreError(f"{store_error('writing shard', path, e, self.out_dir)}{where}")
            self._first_error = self._first_error or err
            raise err from None

    def _quarantine(self) -> list[Path]:
        """Move unreadable shards and verdict files to OUT/quarantine/, after copying every row
        that still reads into a new shard. Their other rows are then missing from the stored set,
        so the run requests them again (a journal not yet removed gives them back for free)."""
        moved: list[Path] = []
        shards = self.out_dir / "shards"
        bad = []
        for p in sorted(shards.glob("*.parquet")) if shards.exists() else []:
            table, problem = read_checked(p, ["key", "seq"])
            if problem is None:
                self._remember(table.column("key").to_pylist(), table.column("seq").to_pylist())
            else:
                bad.append((p, problem))
        for p, problem in bad:
            if self.part is not None and not p.name.startswith(self._shard_prefix + "-"):
                continue  # another worker's (left out by every reader); its owner or a plain resume repairs it
            rows = [r for r in salvage_rows(p) if isinstance(r.get("key"), str) and r["key"] not in self.keys]
            if rows:
                self._write_recovered(rows)
            dest = self._move_to_quarantine(p)
            moved.append(dest)
            self._notice(f"{p}: unreadable shard ({problem}); moved to {dest}, {len(rows)} rows salvaged, the rest will be requested again")
        vdir = OutputDir(self.out_dir).verdicts
        for p in sorted(vdir.glob("*.parquet")) if vdir.exists() and self.part is None else []:
            _, problem = read_checked(p, ["key", "step"])
            if problem is not None:
                dest = self._move_to_quarantine(p)
                moved.append(dest)
                self._notice(f"{p}: unreadable verdict file ({problem}); moved to {dest}; its samples are judged again")
        return moved

    def _recover(self) -> int:
        """Compact journals left by a killed run; rows already in a shard are dropped. A journal with
        lines that do not parse is kept in quarantine/ instead of removed (its good lines are stored)."""
        if self.part is not None:  # its own journal only; rescue journals wait for a plain resume
            rescued = []
            leftovers = sorted(self.journal_dir.glob("*.jsonl")) if self.journal_dir.exists() else []
        else:
            rescued = rescue_paths(self.out_dir)
            leftovers = journal_paths(self.out_dir) + rescued
        if not leftovers:
            return 0
        rows: dict[str, dict[str, Any]] = {}
        garbled: dict[Path, list[int]] = {}
        from_rescue = 0
        for p in leftovers:
            scan = scan_journal(p)
            if scan.bad_lines:
                garbled[p] = scan.bad_lines
            for r in scan.rows:
                if r["key"] not in self.keys and r["key"] not in rows:
                    rows[r["key"]] = r
                    from_rescue += p in rescued
        if rows:
            self._write_recovered(list(rows.values()))
        if from_rescue:
            self._notice(f"stored {from_rescue} answers from rescue journal(s) {', '.join(map(str, rescued))} (kept there when {self.out_dir / 'journal'} could not be written)")
        for p in leftovers:
            bad = garbled.get(p)
            if bad is None:
                p.unlink()
                if p in rescued:
                    try:
                        p.parent.rmdir()
                    except OSError:
                        pass  # another rescue file is still there
                continue
            dest = self._move_to_quarantine(p)
            shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
            self._notice(f"{p}: {len(bad)} garbled line(s) ({shown}) skipped; moved to {dest}, their answers will be requested again")
        return len(rows)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Durably store answers (journal + fsync); compact into a shard when the journal is full.

        When the journal cannot be written, these answers and later ones go to a rescue journal on
        another disk and `failed` is set (the caller stops buying). Raises StoreError (path + OS
        error) only when no disk takes them; nothing of that call then counts as stored."""
        with self._mutex:
            self._append(records)

    def _append(self, records: list[dict[str, Any]]) -> None:
        fresh = [r for r in records if r["key"] not in self.keys]
        if not fresh:
            return
        for r in fresh:
            r["seq"] = self.next_seq
            self.next_seq += 1
            if self.config_id is not None:
                r.setdefault("config_id", self.config_id)
        if self.journal_failed is None:
            try:
                if self._journal is None:
                    self._journal = Journal(self.journal_dir / f"{uuid.uuid4().hex}.jsonl")
                    # Named now, once: compacting this journal again (after an interrupt landed
                    # mid-compaction) replaces the same file instead of adding a second copy.
                    self._shard_name = new_shard_name(self._shard_prefix)
                self._journal.append(fresh)
            except StoreError as e:
                self.journal_failed = e
                self._first_error = self._first_error or e
        if self.journal_failed is not None:
            self._append_rescue(fresh)
        self.keys.update(r["key"] for r in fresh)
        if self.failed is not None:
            return  # no shard is written any more (a write failed): the next start compacts the journal
        if self._pending is None:
            self._pending = ShardEncoder(SAMPLE_SCHEMA)
        self._pending.add(fresh)
        if self._pending.rows >= self.shard_rows:
            try:
                self.compact()
            except StoreError:
                # These answers are durable in the journal, and so are the ones still in flight
                # (the journal may well sit on a disk with room): the caller stops buying and
                # reads `failed`; the next start compacts the journal.
                pass

    def _append_rescue(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._rescue.append(rows)
        except StoreError as e:
            raise StoreError(f"{self.failed}; the answers arriving now were lost: {e}") from None

    @property
    def failed(self) -> StoreError | None:
        """The first write that failed (the caller stops buying), naming every rescue file that
        holds answers since, whatever failed first."""
        if self._first_error is None or not self._rescue.paths:
            return self._first_error
        return StoreError(f"{self._first_error}{self._rescue_note()}")

    def _rescue_note(self) -> str:
        if not self._rescue.paths:
            return ""
        files = ", ".join(map(str, self._rescue.paths))
        return (f" (answers arriving since are kept in {files} on another disk; resume stores them, "
                f"or copy the file into {self.out_dir / 'journal'})")

    def compact(self) -> Path | None:
        """Journal -> one shard. Idempotent, so an interrupt (a second Ctrl-C) landing anywhere in
        it leaves nothing for the next call to duplicate: the shard's name is fixed per journal
        (writing it again replaces it), and each step is done before the state says so."""
        with self._mutex, critical():  # the storer thread and the main thread's shutdown never compact at once
            journal = self._journal
            if journal is None or self.failed is not None:
                return None  # after a failed write the journal stays as it is: the next start compacts it
            path = None
            if self._pending is not None and self._pending.rows:
                path = self._write_shard(self._pending, self._shard_name)
                if path not in self.new_shards:
                    self.new_shards.append(path)
                self._views_fresh = False
            # The shard is durable before the journal goes: a kill in between leaves both, and
            # recovery drops the journal's rows that the shard already holds.
            self._pending = None
            journal.close()
            journal.path.unlink(missing_ok=True)
            self._journal = None
            return path

    def open_catalog(self):
        """The writable catalog with fresh views (the caller closes it). A plain run is the only
        writer of OUT: until it writes another shard, `close` need not refresh the views again
        (a second DuckDB open and view rebuild at the end of every run)."""
        con = catalog.connect(self.out_dir)
        self._views_fresh = self.part is None
        return con

    def record_run(self, row: list) -> None:
        """One session's row in the catalog's `runs` table (catalog.record_run's columns); the
        views it refreshes on the way count as fresh for `close`. A Ctrl-C waits for it."""
        with critical():
            con = self.open_catalog()
            try:
                con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
            finally:
                con.close()

    def refresh_catalog(self) -> None:
        import duckdb

        path = self.out_dir / catalog.CATALOG
        try:
            self.open_catalog().close()
        except OSError as e:
            raise store_error("updating catalog", path, e, self.out_dir) from None
        except duckdb.IOException as e:
            raise StoreError(f"updating catalog {path} failed: {' '.join(str(e).split())[:200]}") from None

    def _unlock(self) -> None:
        self._writer.release()

    def close(self) -> None:
        """Compact and refresh the catalog, and always release the lock, even when the disk is full
        (the caller is then already reporting the first error; the journal keeps the answers)."""
        with critical():
            try:
                if self.failed is None:
                    self.compact()
                    if not self._views_fresh:
                        self.refresh_catalog()
            finally:
                if self._journal is not None and self.failed is not None:
                    self._journal.close()
                self._rescue.close()
                self._unlock()
