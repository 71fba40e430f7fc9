"""Immutable zstd Parquet shards, written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial"
    pq.write_table(table, tmp, compression="zstd", row_group_size=5_000)
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def new_shard_name(prefix: str = "shard") -> str:
    # Time-ordered names, so a directory listing is storage order; uuid keeps workers apart.
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{name: r.get(name) for name in schema.names} for r in records], schema=schema)


def remove_partials(directory: Path) -> None:
    if directory.exists():
        for p in directory.glob(".*.partial"):
            p.unlink(missing_ok=True)


def read_column(paths: list[Path], column: str) -> list[Any]:
    out: list[Any] = []
    for p in paths:
        out.extend(pq.read_table(p, columns=[column]).column(column).to_pylist())
    return out
