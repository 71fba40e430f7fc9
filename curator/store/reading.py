"""Reading stored samples back: every key once, in storage order, shards then journals not yet
compacted; as one frame (with an optional key filter) or in batches that never hold a whole
shard in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from curator.records import SAMPLE_SCHEMA
from curator.store.journal import read_journal
from curator.store.sample_store import journal_paths, shard_paths

POLARS_SCHEMA = pl.from_arrow(SAMPLE_SCHEMA.empty_table()).schema


def frame_from_records(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in POLARS_SCHEMA} for r in records], schema=POLARS_SCHEMA)


def read_samples(out_dir: Path, keys: set[str] | None = None) -> pl.DataFrame:
    """Every stored sample once (or those with the given keys), in storage order: shards, then
    journals not yet compacted. Shards are scanned lazily, so a key filter reads only what it needs."""
    frames = []
    paths = shard_paths(out_dir)
    if paths:
        # Shards written before a column existed (config_id) read it as null.
        lazy = pl.scan_parquet(paths, schema=POLARS_SCHEMA, missing_columns="insert", extra_columns="ignore")
        if keys is not None:
            lazy = lazy.filter(pl.col("key").is_in(list(keys)))
        frames.append(lazy.select(list(POLARS_SCHEMA)).cast(POLARS_SCHEMA).collect())
    rows = [r for p in journal_paths(out_dir) for r in read_journal(p) if keys is None or r["key"] in keys]
    if rows:
        frames.append(frame_from_records(rows))
    if not frames:
        return pl.DataFrame(schema=POLARS_SCHEMA)
    df = pl.concat(frames)
    return df.unique(subset="key", keep="first", maintain_order=True).sort("seq", nulls_last=True)


def iter_samples(out_dir: Path, batch: int = 5_000, columns: list[str] | None = None):
    """Stored samples in batches, each key once, one shard at a time (never all in memory)."""
    cols = columns or list(POLARS_SCHEMA)
    seen: set[str] = set()
    for path in shard_paths(out_dir):
        pf = pq.ParquetFile(path)
        keys = pf.read(columns=["key"]).column("key").to_pylist()
        again = list(seen.intersection(keys))  # only after a crash recovery re-wrote a journal
        seen.update(keys)
        # Record batches, not the whole shard: 20k traces of 6k tokens would be ~0.5 GB at once.
        have = [c for c in cols if c in pf.schema_arrow.names]  # a shard older than a column: null
        for rb in pf.iter_batches(batch_size=batch, columns=have):
            part = pl.from_arrow(rb).with_columns(pl.lit(None, POLARS_SCHEMA[c]).alias(c) for c in cols if c not in have)
            part = part.select(cols).cast({c: POLARS_SCHEMA[c] for c in cols})
            part = part.filter(~pl.col("key").is_in(again)) if again else part
            if part.height:
                yield part
    rows = [r for p in journal_paths(out_dir) for r in read_journal(p) if r["key"] not in seen]
    if rows:
        yield frame_from_records(rows).select(cols)
