"""What runs inside Ray workers for `curator filter --engine ray` (the driver is `ray_runner`).

- `read_piece`: one row group of a shard (or a slice of it), as Arrow tables with an `id` column
  (the row's position among all stored rows) and without the keys an earlier shard already holds;
- `ChainWorker`: a long-lived actor holding the chain's sample steps (Math-Verify's worker pool,
  the language detectors and decontam's broadcast n-gram index stay alive across batches). Per
  batch it writes the sample verdicts into the staging verdict folder and, when near-dup runs on
  Ray, the batch's signatures and keep-rule columns into the near-dup work folder; it returns the
  band keys (band, band_hash, id, kh): the only rows the shuffle carries;
- `bucket_pairs`: the grouping of one hash partition of band keys into candidate pairs (the same
  all-pairs / star rule as the local engine's DuckDB grouping);
- `write_near_dup`: near-dup verdicts for one work file, once the driver found the clusters.

Every file a worker writes is named by the ids it covers, so a batch Ray runs twice (a retried
task, an actor restarted on another node) replaces its own file instead of adding a copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curator.engines.dedup import EMPTY, band_hashes, field_text, signatures
from curator.judge.base import verdicts
from curator.store.reading import POLARS_SCHEMA
from curator.store.shards import write_atomic
from curator.store.verdicts import write_verdicts

BAND_SCHEMA = pa.schema([("band", pa.uint16()), ("band_hash", pa.uint64()), ("id", pa.int64()), ("kh", pa.uint64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
READ_ROWS = 1_000  # rows per block: 1,000 traces of ~30 KB are ~30 MB in the object store


def key_hashes(keys: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(k.encode()) for k in keys), dtype=np.uint64, count=len(keys))


def shard_keys(path: str) -> tuple[list[int], np.ndarray]:
    """Rows per row group of a shard and its keys' 64-bit hashes (the driver plans from these
    without holding every key string)."""
    pf = pq.ParquetFile(path)
    keys = pf.read(columns=["key"]).column("key").to_pylist()
    return [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)], key_hashes(keys)


def _with_all_columns(t: pa.Table) -> pa.Table:
    """Columns a shard written before they existed lacks come back as nulls (as the catalog shows them)."""
    for name in POLARS_SCHEMA:
        if name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows))
    return t


def read_piece(batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
    """One planned piece: {path, rg (row group), base (id of its first row), skip (JSON list of keys)}."""
    for path, rg, base, skip in zip(batch["path"], batch["rg"], batch["base"], batch["skip"]):
        pf = pq.ParquetFile(str(path))
        have = set(pf.schema_arrow.names)
        cols = [c for c in POLARS_SCHEMA if c in have]
        again = json.loads(str(skip))
        start = int(base)
        for rb in pf.iter_batches(batch_size=READ_ROWS, row_groups=[int(rg)], columns=cols):
            t = pa.Table.from_batches([rb])
            ids = pa.array(np.arange(start, start + t.num_rows, dtype=np.int64))
            start += t.num_rows
            t = _with_all_columns(t).append_column("id", ids)
            if again:
                t = t.filter(pc.invert(pc.is_in(t.column("key"), pa.array(again, pa.string()))))
            if t.num_rows:
                yield t


class ChainWorker:
    """One actor of the pool: builds the chain once, then judges every batch it is handed."""

    def __init__(self, spec: dict[str, Any], base_dir: str, out_dir: str, verdict_dir: str, teacher: Any,
                 indexes: dict[int, Any], near_dup: dict[str, Any] | None, prior: list[Any] | None = None):
        import ray

        from curator.judge.base import FilterContext
        from curator.judge.chain import load_chain

        ctx = FilterContext(output_dir=Path(out_dir), base_dir=Path(base_dir), workers=1, teacher=teacher)
        self.chain = load_chain(spec, ctx)
        self.steps = self.chain.sample_steps()
        for step in self.steps:
            if "workers" in type(step.filter.params).model_fields:
                # One core per actor: the pool's size is the parallelism, so Math-Verify keeps one
                # worker process (its timeouts need one) and language detection runs in the actor.
                step.filter.params.workers = 1
        for step in self.steps:
            if step.index in indexes:  # decontam: the n-grams the driver built once and broadcast
                step.filter.index = ray.get(indexes[step.index][0])
        self.verdict_dir = Path(verdict_dir)
        self.nd = near_dup
        # Near-dup alone (`curator run` with engine: ray): prior_passed from the stored verdicts.
        self.prior = pl.from_arrow(ray.get(prior[0])) if prior else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curator.judge.chain import apply_steps

        ids = batch.column("id").to_numpy()
        df = pl.from_arrow(batch.drop_columns(["id"])).select(list(POLARS_SCHEMA)).cast(POLARS_SCHEMA)
        name = f"{int(ids.min()):012d}-{int(ids.max()):012d}"
        frames = apply_steps(self.steps, df) if self.steps else []
        write_verdicts(self.verdict_dir, frames, f"batch-{name}")
        if self.nd is None:
            return pa.table({"rows": [df.height]})
        prior = np.ones(df.height, bool)
        if self.prior is not None:
            prior = df.select("key").join(self.prior, on="key", how="left", maintain_order="left")["ok"].fill_null(True).to_numpy()
        for step, f in zip(self.steps, frames):
            if step.index < self.nd["index"]:
                prior &= f["passed"].fill_null(False).to_numpy()
        return self._bands(df, ids, prior, name)

    def _bands(self, df: pl.DataFrame, ids: np.ndarray, prior: np.ndarray, name: str) -> pa.Table:
        nd = self.nd
        t = df.select([c for c in dict.fromkeys(["key", *nd["field"].split("+"), "cot", "prompt_id"])]).to_arrow()
        keys = t.column("key").combine_chunks()
        sigs = signatures(field_text(t, nd["field"]), nd["ngram"], nd["num_perm"], nd["seed"])
        pid = pc.coalesce(t.column("prompt_id"), keys) if nd["scope_by_prompt"] else keys
        cot_len = pc.fill_null(pc.utf8_length(t.column("cot")), 0).cast(pa.int64())
        signed = (sigs != EMPTY).any(axis=1)  # rows without a word are never duplicates
        sig_col = pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), nd["num_perm"])
        docs = pa.table({"id": ids, "key": keys, "prompt_id": pid, "prior_passed": prior, "cot_len": cot_len, "signed": signed, "sig": sig_col})
        # Written here, read back by the driver for the few rows in clusters: signatures never cross the shuffle.
        write_atomic(docs, Path(nd["work"]) / f"part-{name}.parquet")
        b, r = nd["bands"]
        if not signed.any():
            return BAND_SCHEMA.empty_table()
        bh = band_hashes(sigs[signed], b, r)
        kh = key_hashes(keys.filter(pa.array(signed)).to_pylist())
        return pa.table(
            {
                "band": np.tile(np.arange(b, dtype=np.uint16), int(signed.sum())),
                "band_hash": bh.ravel(),
                "id": np.repeat(ids[signed], b),
                "kh": np.repeat(kh, b),
            },
            schema=BAND_SCHEMA,
        )

    def __del__(self):
        chain = getattr(self, "chain", None)
        if chain is not None:
            chain.close()


def bucket_pairs(block: pa.Table, max_bucket_pairs: int = 32) -> pa.Table:
    """Candidate pairs of one hash partition of band keys (every (band, band_hash) lies whole in
    one partition): a bucket of up to `max_bucket_pairs` members gives all its pairs, a larger
    one links each member to its centre (smallest kh), as the local engine does."""
    if block.num_rows == 0:
        return PAIR_SCHEMA.empty_table()
    df = pl.from_arrow(block)
    g = df.group_by("band", "band_hash").agg(pl.len().alias("n"), pl.col("id").sort_by("kh", "id").first().alias("center")).filter(pl.col("n") > 1)
    if g.height == 0:
        return PAIR_SCHEMA.empty_table()
    m = df.join(g, on=["band", "band_hash"])
    star = m.filter((pl.col("n") > max_bucket_pairs) & (pl.col("id") != pl.col("center"))).select(
        pl.min_horizontal("id", "center").alias("a"), pl.max_horizontal("id", "center").alias("b")
    )
    small = m.filter(pl.col("n") <= max_bucket_pairs).select("band", "band_hash", "id")
    full = small.join(small, on=["band", "band_hash"], suffix="_y").filter(pl.col("id") < pl.col("id_y")).select(
        pl.col("id").alias("a"), pl.col("id_y").alias("b")
    )
    return pl.concat([star, full]).unique().to_arrow().cast(PAIR_SCHEMA)


def write_near_dup(batch: dict[str, np.ndarray], dups: Any, index: int, step_name: str, verdict_dir: str) -> dict[str, np.ndarray]:
    """Near-dup verdicts for work files: every key passes but the duplicates the driver found
    (dups: an ObjectRef of a table key, details)."""
    import ray

    dup = pl.from_arrow(ray.get(dups[0]))
    for path in batch["path"]:
        t = pl.read_parquet(str(path), columns=["id", "key"])
        j = t.join(dup, on="key", how="left", maintain_order="left")
        passed = j["details"].is_null().to_list()
        v = verdicts(j["key"].to_list(), passed, [None if p else "near_duplicate" for p in passed], j["details"].to_list())
        frame = v.select("key", pl.lit(index, dtype=pl.Int32).alias("step"), pl.lit(step_name).alias("filter"), "passed", "reason", "details")
        name = f"step{index:02d}-{int(t['id'].min()):012d}-{int(t['id'].max()):012d}"
        write_verdicts(Path(verdict_dir), [frame], name)
    return {"files": np.array([len(batch["path"])])}

