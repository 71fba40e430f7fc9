"""Immutable zstd Parquet shards, written atomically (temp file, fsync, rename, fsync dir).

A shard that cannot be read (cut short by a power loss, garbled bytes) is never deleted:
`read_checked` finds it, `salvage_rows` reads the row groups that are still intact, and the store
moves the file to OUT/quarantine/ (see sample_store). Sample shards keep a copy of their Parquet
footer beside them (`.NAME.footer`, written first): a file cut short loses its own footer, and
without one no row group can be located, so the copy is what gives back the row groups before
the cut."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Small enough that a damaged shard still gives back most of its rows, big enough for zstd.
ROW_GROUP_ROWS = 1_000


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """os.write until all is written (a write may take less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(table: pa.Table | pa.Buffer, path: Path, *, keep_footer: bool = False) -> Path:
    """Serialise in memory, then write with plain os calls: a full disk or a missing permission
    surfaces as the OSError with its errno (pyarrow's own file writer reports it as a bare message),
    and the temp file is removed so no half-written shard is left for a later read to trip over.
    A Buffer is a file already serialised (a `ShardEncoder`'s).
    keep_footer: first write the copy of the footer that `salvage_rows` reads a cut file with."""
    if isinstance(table, pa.Buffer):
        data = table
    else:
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_page_checksum=True)
        data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_footer:
        tail = memoryview(data)[-8:]
        size = int.from_bytes(bytes(tail[:4]), "little") + 8  # metadata, its length, "PAR1"
        _write_file(memoryview(data)[-size:], footer_path(path), sync_dir=False)
    _write_file(data, path)
    return path


def footer_path(path: Path) -> Path:
    return path.parent / f".{path.name}.footer"


def _write_file(data, path: Path, sync_dir: bool = True) -> None:
    tmp = path.parent / f".{path.name}.partial"
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        if sync_dir:
            fsync_dir(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the directory itself refuses: remove_partials clears it on the next start
        raise


def new_shard_name(prefix: str = "shard") -> str:
    # Time-ordered names, so a directory listing is storage order; uuid keeps workers apart.
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    # Column by column: a dict per row handed to from_pylist costs ~9x the CPU, which at the end
    # of a sampling run was seconds of the client's time per shard (bench/sampling.py).
    return pa.Table.from_arrays([pa.array([r.get(f.name) for r in records], type=f.type) for f in schema], schema=schema)


class ShardEncoder:
    """A shard's Parquet bytes, built in memory one row group at a time as rows arrive (what
    `write_atomic` writes, row group for row group). A sampling run encodes its answers while it
    waits for the teacher, so closing the shard at its end encodes one row group, not 20,000 rows,
    and the answers wait for their shard compressed instead of as Python dicts (bench/sampling.py)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.rows = 0
        self._waiting: list[dict[str, Any]] = []  # less than a row group, not encoded yet
        self._buf = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(self._buf, schema, compression="zstd", write_page_checksum=True)
        self._done: pa.Buffer | None = None

    def add(self, records: list[dict[str, Any]]) -> None:
        self._waiting.extend(records)
        self.rows += len(records)
        if len(self._waiting) >= ROW_GROUP_ROWS:
            full = len(self._waiting) - len(self._waiting) % ROW_GROUP_ROWS
            self._encode(self._waiting[:full])
            self._waiting = self._waiting[full:]

    def _encode(self, rows: list[dict[str, Any]]) -> None:
        self._writer.write_table(records_to_table(rows, self.schema), row_group_size=ROW_GROUP_ROWS)

    def finish(self) -> pa.Buffer:
        """The whole file's bytes (footer included). Calling it again gives the same bytes: a
        compaction done again after an interrupt writes the same shard."""
        if self._done is None:
            if self._waiting:
                self._encode(self._waiting)
                self._waiting = []
            self._writer.close()
            self._done = self._buf.getvalue()
        return self._done


def remove_partials(directory: Path, prefix: str = "") -> None:
    """Temp files of writes a kill cut short, and footer copies whose shard never landed (only
    those of files named `prefix-*` when given: a worker's own, not its neighbours' writes)."""
    pat = f".{prefix}-*" if prefix else ".*"
    if directory.exists():
        for p in directory.glob(f"{pat}.partial"):
            p.unlink(missing_ok=True)
        for p in directory.glob(f"{pat}.footer"):
            if not (directory / p.name[1:-len(".footer")]).exists():
                p.unlink(missing_ok=True)


def read_column(paths: list[Path], column: str) -> list[Any]:
    out: list[Any] = []
    for p in paths:
        out.extend(pq.read_table(p, columns=[column]).column(column).to_pylist())
    return out


def _problem(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


_FOOTER_OK: dict[tuple[str, int, int], str | None] = {}


def footer_problem(path: Path) -> str | None:
    """Why the file's Parquet footer cannot be read, or None. Cached by (path, size, mtime): readers
    call this for every shard on every query, and shards never change once written."""
    try:
        st = path.stat()
    except OSError as e:
        return _problem(e)
    sig = (str(path), st.st_size, st.st_mtime_ns)
    if sig not in _FOOTER_OK:
        try:
            pq.read_metadata(path)
            _FOOTER_OK[sig] = None
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for broken files
            _FOOTER_OK[sig] = _problem(e)
    return _FOOTER_OK[sig]


def read_checked(path: Path, columns: list[str]) -> tuple[pa.Table | None, str | None]:
    """The given columns of every row group, page checksums verified, or why they cannot be read."""
    problem = footer_problem(path)
    if problem is not None:
        return None, problem
    try:
        return pq.ParquetFile(path, page_checksum_verification=True).read(columns=columns), None
    except Exception as e:
        return None, _problem(e)


def salvage_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of the row groups that still read in full (page checksums catch garbled bytes).
    When the file's own footer is gone (cut short), its copy beside the file locates them; with
    neither, nothing can be read."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except Exception:
        try:
            meta = pq.read_metadata(pa.BufferReader(b"PAR1" + footer_path(path).read_bytes()))
            pf = pq.ParquetFile(path, metadata=meta, page_checksum_verification=True)
        except Exception:
            return []
    rows: list[dict[str, Any]] = []
    for i in range(pf.num_row_groups):
        try:
            rows.extend(pf.read_row_group(i).to_pylist())
        except Exception:
            continue
    return rows


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process (readers call in here on every query)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def readable_parquet(directory: Path, *, hint: str = "") -> list[Path]:
    """The `*.parquet` files of a directory whose footer reads, sorted; each one that does not is
    named on stderr (once) and left out, so status/report/filter work on the rest."""
    if not directory.exists():
        return []
    out = []
    for p in sorted(directory.glob("*.parquet")):
        problem = footer_problem(p)
        if problem is None:
            out.append(p)
        else:
            warn(f"{p}: unreadable Parquet file ({problem}); left out{hint}")
    return out
