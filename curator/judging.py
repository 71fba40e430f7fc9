"""Apply a filter chain to an output directory: as answers arrive (sample steps), and as a pass
over all shards (dataset steps such as near-dup, or `curator filter OUT --chain ...`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from curator.filters.chain import Chain, VerdictWriter, apply_steps
from curator.records import SAMPLE_SCHEMA
from curator.store.sample_store import journal_paths, shard_paths

_POLARS_SCHEMA = pl.from_arrow(SAMPLE_SCHEMA.empty_table()).schema


def frame_from_records(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in _POLARS_SCHEMA} for r in records], schema=_POLARS_SCHEMA)


def read_samples(out_dir: Path, keys: set[str] | None = None) -> pl.DataFrame:
    """Every stored sample once (or those with the given keys), in storage order: shards, then
    journals not yet compacted. Shards are scanned lazily, so a key filter reads only what it needs."""
    from curator.store.journal import read_journal

    frames = []
    paths = shard_paths(out_dir)
    if paths:
        lazy = pl.scan_parquet(paths)
        if keys is not None:
            lazy = lazy.filter(pl.col("key").is_in(list(keys)))
        frames.append(lazy.select(list(_POLARS_SCHEMA)).cast(_POLARS_SCHEMA).collect())
    rows = [r for p in journal_paths(out_dir) for r in read_journal(p) if keys is None or r["key"] in keys]
    if rows:
        frames.append(frame_from_records(rows))
    if not frames:
        return pl.DataFrame(schema=_POLARS_SCHEMA)
    df = pl.concat(frames)
    return df.unique(subset="key", keep="first", maintain_order=True).sort("seq", nulls_last=True)


def _accepted(frames: list[pl.DataFrame]) -> pl.Series | None:
    if not frames:
        return None
    ok = frames[0]["passed"].fill_null(False)
    for f in frames[1:]:
        ok = ok & f["passed"].fill_null(False)
    return ok


class IncrementalJudge:
    """Sample steps on each new batch of stored answers; counts the accepted so far for budgets."""

    def __init__(self, out_dir: Path, chain: Chain, stored: set[str]):
        """stored: every key stored so far (the open store's `keys`: no second read of the shards)."""
        self.out_dir = out_dir
        self.chain = chain
        self.writer = VerdictWriter(out_dir, chain, replace=False)
        self.steps = chain.sample_steps()
        self.accepted = 0
        self.judged = 0
        self.catch_up(stored)

    def catch_up(self, stored: set[str]) -> None:
        """Judge stored answers that carry no verdict yet (a new chain, or rows a kill left unjudged)."""
        done = self.writer.judged_keys()
        sample_steps = [st.index for st in self.steps]
        self.accepted = accepted_count(self.writer.dir, sample_steps) if done and sample_steps else 0
        self.judged = len(done)
        missing = stored - done
        todo = read_samples(self.out_dir, keys=missing) if missing else pl.DataFrame(schema=_POLARS_SCHEMA)
        for start in range(0, todo.height, 5_000):
            self._judge_frame(todo.slice(start, 5_000))

    def _judge_frame(self, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        if not self.steps:
            self.judged += df.height
            return
        frames = apply_steps(self.steps, df)
        self.writer.write(frames, "batch")
        self.accepted += int(_accepted(frames).sum())
        self.judged += df.height

    def judge(self, records: list[dict[str, Any]]) -> None:
        self._judge_frame(frame_from_records(records))

    def finish(self) -> int:
        """Run the dataset steps and publish the verdicts; returns the accepted count over all steps."""
        run_dataset_steps(self.out_dir, self.chain, self.writer)
        self.writer.finish()
        self.accepted = accepted_count(self.writer.dir, [st.index for st in self.chain.steps])
        return self.accepted


def accepted_count(verdict_dir: Path, steps: list[int]) -> int:
    """Samples that every one of `steps` judged and accepted."""
    import duckdb

    files = [str(p) for p in verdict_dir.glob("*.parquet")]
    if not files or not steps:
        return 0
    con = duckdb.connect()
    try:
        return con.sql(
            "SELECT count(*) FROM (SELECT key FROM read_parquet($f) WHERE list_contains($s, step) GROUP BY key"
            " HAVING bool_and(passed) AND count(DISTINCT step) = len($s))",
            params={"f": files, "s": steps},
        ).fetchall()[0][0]
    finally:
        con.close()


def _earlier_ok(files: list[str], step: int) -> pl.DataFrame:
    """key -> whether every earlier step accepted it (from the verdict files written so far)."""
    import duckdb

    if not files:
        return pl.DataFrame(schema={"key": pl.String, "ok": pl.Boolean})
    con = duckdb.connect()
    try:
        return con.sql(
            "SELECT key, bool_and(passed) AS ok FROM read_parquet($files) WHERE step < $step GROUP BY key",
            params={"files": files, "step": step},
        ).pl()
    finally:
        con.close()


def _stream(out_dir: Path, columns: list[str], earlier: pl.DataFrame, batch: int):
    """Stored samples in batches with only `columns` + prior_passed, each key once."""
    for part in iter_samples(out_dir, batch, columns):
        yield part.join(earlier, on="key", how="left", maintain_order="left").with_columns(
            pl.col("ok").fill_null(True).alias("prior_passed")
        ).drop("ok")


def run_dataset_steps(out_dir: Path, chain: Chain, writer: VerdictWriter) -> None:
    steps = chain.dataset_steps()
    if not steps:
        return
    df = None
    for step in steps:
        files = [str(p) for p in writer.dir.glob("*.parquet")]
        earlier = _earlier_ok(files, step.index)
        if hasattr(step.filter, "apply_stream"):
            # Streamed over the shards: a million traces never sit in memory at once.
            cols = list(dict.fromkeys(["key", *step.filter.columns()]))
            frame = step.filter.apply_stream(lambda: _stream(out_dir, cols, earlier, 20_000))
            frame = frame.select(
                "key", pl.lit(step.index, dtype=pl.Int32).alias("step"), pl.lit(step.name).alias("filter"), "passed", "reason", "details"
            )
        else:
            if df is None:
                df = read_samples(out_dir)
            if df.height == 0:
                return
            prior = df.select("key").join(earlier, on="key", how="left", maintain_order="left")["ok"].fill_null(True)
            frame = apply_steps([step], df, prior)[0]
        if frame.height:
            writer.replace_step(step, frame)


def iter_samples(out_dir: Path, batch: int = 5_000, columns: list[str] | None = None):
    """Stored samples in batches, each key once, one shard at a time (never all in memory)."""
    from curator.store.journal import read_journal

    cols = columns or list(_POLARS_SCHEMA)
    seen: set[str] = set()
    for path in shard_paths(out_dir):
        pf = pq.ParquetFile(path)
        keys = pf.read(columns=["key"]).column("key").to_pylist()
        again = list(seen.intersection(keys))  # only after a crash recovery re-wrote a journal
        seen.update(keys)
        # Record batches, not the whole shard: 20k traces of 6k tokens would be ~0.5 GB at once.
        for rb in pf.iter_batches(batch_size=batch, columns=cols):
            part = pl.from_arrow(rb).cast({c: _POLARS_SCHEMA[c] for c in cols})
            part = part.filter(~pl.col("key").is_in(again)) if again else part
            if part.height:
                yield part
    rows = [r for p in journal_paths(out_dir) for r in read_journal(p) if r["key"] not in seen]
    if rows:
        yield frame_from_records(rows).select(cols)


def run_chain(out_dir: Path, chain: Chain) -> dict[str, int]:
    """Re-judge everything stored with `chain`, replacing the verdicts atomically at the end."""
    writer = VerdictWriter(out_dir, chain, replace=True)
    steps = chain.sample_steps()
    n = 0
    for part in iter_samples(out_dir):
        n += part.height
        if steps:
            writer.write(apply_steps(steps, part), "batch")
    run_dataset_steps(out_dir, chain, writer)
    writer.finish()
    return {"samples": n}
