"""Writing and counting verdicts: one Parquet file per step and batch in OUT/verdicts (or in a
staging folder swapped in atomically when a chain replaces another), beside chain.json."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from curator.records import VERDICT_SCHEMA
from curator.store.layout import CHAIN_FILE, OutputDir
from curator.store.locks import critical
from curator.store.shards import fsync_dir, write_atomic


class VerdictWriter:
    """Writes verdict files for one chain into OUT/verdicts (or a staging dir swapped in at the end).

    chain: {name, digest, steps} as chain.json records it; sample_steps: the indices of the
    chain's sample-scope steps (a key judged by all of them needs no second judgement)."""

    def __init__(self, out_dir: Path, chain: dict[str, Any], sample_steps: list[int], *, replace: bool):
        self.out_dir = out_dir
        self.chain = chain
        self.sample_steps = list(sample_steps)
        self.final = OutputDir(out_dir).verdicts
        old = OutputDir(out_dir).chain()
        same = old is not None and old.get("digest") == chain["digest"]
        self.staging = replace or not same
        self.dir = out_dir / f".verdicts-{uuid.uuid4().hex[:8]}" if self.staging else self.final
        self.dir.mkdir(parents=True, exist_ok=True)

    def judged_keys(self) -> set[str]:
        """Keys that already carry a verdict from every sample step of this chain (resume)."""
        if self.staging:
            return set()
        steps = set(self.sample_steps)
        seen: dict[str, set[int]] = {}
        for p in self.final.glob("*.parquet"):
            t = pq.read_table(p, columns=["key", "step"])
            for k, s in zip(t.column("key").to_pylist(), t.column("step").to_pylist()):
                seen.setdefault(k, set()).add(s)
        return {k for k, s in seen.items() if steps <= s}

    def write(self, frames: list[pl.DataFrame], tag: str) -> None:
        write_verdicts(self.dir, frames, f"{tag}-{uuid.uuid4().hex[:12]}")

    def replace_step(self, index: int, frame: pl.DataFrame) -> None:
        """Dataset-scope steps are recomputed over everything: their old files go once the new one is durable."""
        old = list(self.dir.glob(f"step{index:02d}-*.parquet"))
        self.write([frame], f"step{index:02d}")
        for p in old:
            p.unlink(missing_ok=True)

    def finish(self) -> None:
        # sample_steps: the steps that judge each answer alone (the catalog's pass rate of a prompt).
        meta = {"name": self.chain["name"], "digest": self.chain["digest"], "steps": self.chain["steps"],
                "sample_steps": self.sample_steps}
        write_chain_file(self.dir / CHAIN_FILE, meta)
        with critical():  # never a Ctrl-C between the two renames: OUT/verdicts would be gone
            self._swap()

    def _swap(self) -> None:
        if self.staging:
            old = self.out_dir / f".verdicts-old-{uuid.uuid4().hex[:8]}"
            if self.final.exists():
                self.final.rename(old)
            self.dir.rename(self.final)
            fsync_dir(self.out_dir)
            shutil.rmtree(old, ignore_errors=True)
            self.dir = self.final
            self.staging = False


def write_chain_file(path: Path, meta: dict[str, Any]) -> None:
    """Atomically: workers of one run (--worker I/N) write it side by side, and readers never see half."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


def write_verdicts(directory: Path, frames: list[pl.DataFrame], name: str) -> None:
    """One verdict file `name`.parquet, atomically: a worker that redoes a batch under the same
    name (a Ray retry) replaces its file instead of adding a second copy."""
    frames = [f for f in frames if f.height]
    if frames:
        write_atomic(pl.concat(frames).to_arrow().cast(VERDICT_SCHEMA), directory / f"{name}.parquet")


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


def accepted_keys(verdict_dir: Path, steps: list[int]) -> set[str]:
    """Keys that every one of `steps` judged and accepted (budget.per_prompt counts them on resume)."""
    import duckdb

    files = [str(p) for p in verdict_dir.glob("*.parquet")]
    if not files or not steps:
        return set()
    con = duckdb.connect()
    try:
        rows = con.sql(
            "SELECT key FROM read_parquet($f) WHERE list_contains($s, step) GROUP BY key"
            " HAVING bool_and(passed) AND count(DISTINCT step) = len($s)",
            params={"f": files, "s": steps},
        ).fetchall()
        return {r[0] for r in rows}
    finally:
        con.close()


def earlier_ok(files: list[str], step: int) -> pl.DataFrame:
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
