"""near_dup: drop near-duplicate samples, keeping one per cluster (scope "dataset").

MinHash over word n-grams of `field` -> LSH band keys -> DuckDB grouping -> union-find clusters,
the same chunked code path as `curator.engines.dedup.dedup_parquet` (see that module for the details).

Keep rule: in each cluster keep the row with `prior_passed` true (correct first), then the
shortest CoT (`len(cot)`), then the smallest key. The others are rejected with reason
`near_duplicate` and details `{"duplicate_of": kept key, "cluster": id, "cluster_size": n,
"jaccard_est": estimated Jaccard with the kept row, "keep_rule": ...}`. Rows of a transitive
cluster (A~B~C) may have jaccard_est below the threshold against the kept row.

`field: problem` is prompt-level dedup (`scope_by_prompt` defaults to true for it): samples of the
same prompt_id are never duplicates of one another; when two prompts' problems are near-dups,
every sample of the prompt that loses (by the keep rule applied to its best sample) is rejected.
"""

from __future__ import annotations

import tempfile
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from curator.engines.dedup import dedup_batches, needed_columns
from curator.judge.base import DatasetFilter, FilterParams, register, verdicts


@register
class NearDup(DatasetFilter):
    streams = True  # the shards come in batches: signatures are built without holding every CoT
    name = "near_dup"

    class Params(FilterParams):
        field: Literal["problem", "cot", "completion", "cot+completion", "problem+cot"] = "cot"
        ngram: int = Field(5, ge=1, le=64)
        num_perm: int = Field(128, ge=16, le=1024)
        threshold: float = Field(0.8, gt=0.0, lt=1.0)
        bands: int | None = Field(None, ge=1, description="LSH bands; default: optimal for threshold")
        rows: int | None = Field(None, ge=1, description="rows per band; set with bands")
        verify: bool = True  # drop candidate pairs whose estimated Jaccard < threshold
        scope_by_prompt: bool | None = None  # default: true iff field == "problem"
        seed: int = 1
        batch_size: int = Field(20_000, ge=100)

        @model_validator(mode="after")
        def _bands(self):
            if (self.bands is None) != (self.rows is None):
                raise ValueError("set both bands and rows, or neither")
            if self.bands is not None and self.bands * self.rows > self.num_perm:
                raise ValueError(f"bands x rows = {self.bands * self.rows} > num_perm {self.num_perm}")
            return self

    def _scope(self) -> bool:
        p = self.params
        return p.scope_by_prompt if p.scope_by_prompt is not None else p.field == "problem"

    def columns(self) -> list[str]:
        """The sample columns this filter reads (the chain streams only these over the shards)."""
        return needed_columns(self.params.field, self._scope())

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        missing = [c for c in ["key", *p.field.split("+")] if c not in df.columns]
        if missing:
            raise ValueError(f"near_dup: no column {missing[0]!r} in samples (field {p.field!r})")
        cols = [c for c in self.columns() + ["prior_passed"] if c in df.columns]
        return self.apply_stream(lambda: df.select(cols).iter_slices(p.batch_size), rows_hint=df.height)

    def apply_stream(self, batches, rows_hint: int = 0) -> pl.DataFrame:
        """Verdicts over batches read one at a time (columns of `columns()` + prior_passed), so
        deduplicating all shards holds a batch, the signatures' tables and the keys, never every
        trace at once."""
        p = self.params
        keys: list[str] = []

        def tap():
            for b in batches():
                keys.extend(b["key"].to_list())
                yield b

        # Signatures in the shared process pool when there is enough to pay for it.
        pool = self.ctx.pool() if self.ctx.workers > 1 and rows_hint >= 4000 else None
        out_dir = self.ctx.output_dir
        tmp_parent = out_dir if out_dir is not None and out_dir.is_dir() else None
        with tempfile.TemporaryDirectory(prefix=".neardup-", dir=tmp_parent) as work:
            res = dedup_batches(
                tap(),
                p.field,
                ngram=p.ngram,
                num_perm=p.num_perm,
                threshold=p.threshold,
                bands=(p.bands, p.rows) if p.bands else None,
                seed=p.seed,
                verify=p.verify,
                scope_by_prompt=self._scope(),
                workdir=work,
                pool=pool,
                task_docs=max(500, min(4000, rows_hint // (2 * max(1, self.ctx.workers)) or 1)),
                duckdb_threads=max(1, self.ctx.workers),
            )
        self.stats = res.stats
        det = res.details()
        passed = [k not in det for k in keys]
        return verdicts(keys, passed, [None if ok else "near_duplicate" for ok in passed], [det.get(k) for k in keys])
