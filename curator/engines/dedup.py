"""Near-duplicate detection as a pipeline of tables: signatures -> band keys -> grouping -> clusters.

Every stage writes a table (Parquet under a work dir), so each can move to another engine later:

1. **signatures** (`sigs/part-*.parquet`: `id int64, sig fixed_size_list<uint32>[num_perm]`) and
   **docs** (`docs/part-*.parquet`: `id, key, prompt_id, prior_passed, cot_len`), computed chunk
   by chunk. `id` is the row's position in the input (dense, 0-based).
2. **band keys** (`bands/band=NN/part-*.parquet`: `id, band_hash uint64, kh uint64`): the
   signature cut into `b` bands of `r` values, each band hashed to 64 bits; `kh` is an xxhash64
   of the sample key, used as an order-independent tie-break. Rows without any word have no
   signature and no band keys (they are never duplicates).
3. **grouping** in DuckDB, one band at a time: `GROUP BY band_hash HAVING count(*) > 1` gives
   buckets of candidates. A bucket of up to `max_bucket_pairs` members yields all its pairs;
   a larger one links each member to the bucket's centre (the member with the smallest `kh`),
   which is all union-find needs and never blows up quadratically. Candidate pairs are
   optionally verified: estimated Jaccard (share of equal signature values) >= threshold.
4. **clusters**: union-find over the verified pairs (vectorised in numpy over compact ids),
   then one row kept per cluster by the rule below.

Keep rule (the same in every entry point): within a cluster, keep the row that
(1) has `prior_passed` true (was accepted by every earlier step), then (2) has the shortest
CoT (`len(cot)`, null counts as 0), then (3) has the smallest key. Every other row is a
`near_duplicate` of it. With `scope_by_prompt`, a row is never a duplicate of a row of its own
prompt: every row of the kept row's prompt stays and the rows of the other prompts go.

Signatures: words are maximal runs of Unicode word characters (`\\w` minus `_`) of the
lowercased text, so case, whitespace and punctuation do not matter. Shingles are word n-grams
(a text shorter than n words is one shingle). Everything is vectorised over a batch of texts
with numpy: words are found with a byte lookup table over the whole batch, a word's 64-bit hash
mixes its 8-byte chunks with the MurmurHash3 finalizer (xxh3_64 for words over 64 bytes), an
n-gram's hash is a polynomial combination of its words' hashes, mixed again and folded to 32
bits (decontamination uses the same 64-bit n-gram hashes unfolded). The MinHash itself is datasketch's default `affine32` scheme (fmix32, then `a*h + b mod 2^32` with
datasketch's permutations for `seed`), computed for all permutations and all shingles of a
block in one numpy op, so `to_minhash(sig)` is a real `datasketch.MinHash` (and equals
`MinHash(seed=seed, hashfunc=int).update_batch(shingle_hashes(...))`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

FieldName = Literal["problem", "cot", "completion", "cot+completion", "problem+cot"]
FIELDS: tuple[str, ...] = ("problem", "cot", "completion", "cot+completion", "problem+cot")
from curator.engines.minhash import (  # noqa: F401  (re-exported: near-dup's public names)
    EMPTY, Words, _U64, _batches_by_bytes, _clean, band_hashes, fmix32, fmix64, jaccard_est, minhash_from_hashes,
    ngram_doc_offsets, ngram_hashes, optimal_bands, permutations, shingle_hashes, signatures, to_minhash, words,
)

KEEP_RULE = "prior_passed first, then shortest cot, then smallest key"


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


def _as_table(batch: pl.DataFrame | pa.RecordBatch | pa.Table) -> pa.Table:
    if isinstance(batch, pl.DataFrame):
        return batch.to_arrow()
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    return batch


def _str(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return col if pa.types.is_large_string(col.type) else pc.cast(col, pa.large_string())


def field_text(batch: pl.DataFrame | pa.RecordBatch | pa.Table, field: str) -> list[str | None]:
    """The text to deduplicate on: one column, or two joined by a newline (nulls as empty)."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    t = _as_table(batch)
    cols = field.split("+")
    if len(cols) == 1:
        return t.column(cols[0]).to_pylist()
    parts = [pc.fill_null(_str(t.column(c)), "") for c in cols]
    return pc.binary_join_element_wise(*parts, pa.scalar("\n", pa.large_string())).to_pylist()


def needed_columns(field: str, scope_by_prompt: bool) -> list[str]:
    """Columns dedup reads: key, the field's columns, cot (for the keep rule), prompt_id if scoped."""
    cols = ["key", *field.split("+"), "cot"]
    if scope_by_prompt:
        cols.append("prompt_id")
    return list(dict.fromkeys(cols))


@dataclass
class DedupResult:
    """`duplicates`: one row per rejected sample, columns key, duplicate_of (the kept key),
    cluster (int, clusters numbered by kept key), cluster_size, jaccard_est (vs the kept row)."""

    duplicates: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, str]:
        """key -> verdict details JSON for every duplicate."""
        d = self.duplicates
        return {
            k: json.dumps({"duplicate_of": a, "cluster": c, "cluster_size": n, "jaccard_est": j, "keep_rule": KEEP_RULE})
            for k, a, c, n, j in zip(d["key"].to_list(), d["duplicate_of"].to_list(), d["cluster"].to_list(), d["cluster_size"].to_list(), d["jaccard_est"].to_list())
        }


_DUP_SCHEMA = {"key": pl.String, "duplicate_of": pl.String, "cluster": pl.Int64, "cluster_size": pl.Int64, "jaccard_est": pl.Float64}


def _sig_task(texts: list[str | None], ngram: int, num_perm: int, seed: int) -> np.ndarray:
    return signatures(texts, ngram, num_perm, seed)


def _submit_sigs(texts: list[str | None], ngram: int, num_perm: int, seed: int, pool: Executor | None, task_docs: int) -> Callable[[], np.ndarray]:
    """Start computing signatures (in `pool` if given, in tasks of `task_docs` texts); returns
    a callable that waits for them."""
    if pool is None:
        sigs = signatures(texts, ngram, num_perm, seed)
        return lambda: sigs
    futs = [pool.submit(_sig_task, texts[i : i + task_docs], ngram, num_perm, seed) for i in range(0, len(texts), task_docs)]
    return lambda: np.concatenate([f.result() for f in futs])


def _maxrss_mb() -> int:
    """Peak RSS of this process so far, in MiB (Linux reports KiB)."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    except ImportError:  # pragma: no cover - not on Windows
        return -1


def _to_polars(res: Any) -> pl.DataFrame:
    # DuckDB renamed fetch_arrow_table -> to_arrow_table (2.0); accept both.
    fetch = getattr(res, "to_arrow_table", None) or res.fetch_arrow_table
    return pl.from_arrow(fetch())


def _union_find(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the edges (a, b). Returns (node ids, root node id per node)."""
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ea, eb = inv[: len(a)], inv[len(a) :]
    parent = np.arange(len(nodes))
    while True:
        pa, pb = parent[ea], parent[eb]
        diff = pa != pb
        if not diff.any():
            break
        lo, hi = np.minimum(pa[diff], pb[diff]), np.maximum(pa[diff], pb[diff])
        np.minimum.at(parent, hi, lo)  # hook the larger root under the smaller
        while True:  # full path compression: every node points at its root
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
    return nodes, nodes[parent]


def clusters_from_pairs(
    ea: np.ndarray, eb: np.ndarray, nodes: np.ndarray, node_sigs: np.ndarray, docs_of: Callable[[np.ndarray], pl.DataFrame],
    *, verify: bool, threshold: float,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Stage 4 (verify, cluster, keep) over candidate pairs, wherever they were grouped.

    nodes: the sorted unique ids of the pairs; node_sigs: their signatures, in that order;
    docs_of(ids): id, key, prompt_id, prior_passed, cot_len of those ids. Returns the duplicates
    (`DedupResult.duplicates`) and counts (verified_pairs, clusters, clustered_rows). Nothing
    here depends on how ids were numbered: the keep rule and the cluster numbers follow keys."""
    if verify and len(ea):
        j = jaccard_est(node_sigs[np.searchsorted(nodes, ea)], node_sigs[np.searchsorted(nodes, eb)])
        ok = j >= threshold - 1e-9
        ea, eb = ea[ok], eb[ok]
    if len(ea) == 0:
        return pl.DataFrame(schema=_DUP_SCHEMA), {"verified_pairs": 0, "clusters": 0, "clustered_rows": 0}
    members, roots = _union_find(ea, eb)
    meta = pl.DataFrame({"id": members, "root": roots}).join(docs_of(members), on="id")
    meta = meta.sort(["root", pl.col("prior_passed").not_(), "cot_len", "key"])
    kept = meta.group_by("root", maintain_order=True).first().select(
        "root", pl.col("id").alias("kept_id"), pl.col("key").alias("duplicate_of"), pl.col("prompt_id").alias("kept_prompt")
    )
    kept = kept.sort("duplicate_of").with_row_index("cluster").with_columns(pl.col("cluster").cast(pl.Int64))
    sizes = meta.group_by("root").len("cluster_size")
    m = meta.join(kept, on="root").join(sizes, on="root")
    dups = m.filter((pl.col("id") != pl.col("kept_id")) & (pl.col("prompt_id") != pl.col("kept_prompt")) & (pl.col("key") != pl.col("duplicate_of")))
    ia = np.searchsorted(nodes, dups["id"].to_numpy())
    ib = np.searchsorted(nodes, dups["kept_id"].to_numpy())
    js = np.round(jaccard_est(node_sigs[ia], node_sigs[ib]), 4)
    out = (
        dups.with_columns(pl.Series("jaccard_est", js, dtype=pl.Float64), pl.col("cluster_size").cast(pl.Int64))
        .select(list(_DUP_SCHEMA))
        .unique("key", keep="first", maintain_order=True)
        .sort("key")
    )
    return out, {"verified_pairs": int(len(ea)), "clusters": kept.height, "clustered_rows": meta.height}


class _SigStore:
    """Reads rows of the chunked signature table by id (each file holds a dense id range)."""

    def __init__(self, parts: list[tuple[int, int, Path]], num_perm: int):
        self.parts = parts
        self.num_perm = num_perm

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Signatures of sorted unique `ids`, in that order."""
        out = np.empty((len(ids), self.num_perm), np.uint32)
        for lo, hi, path in self.parts:
            i, j = np.searchsorted(ids, [lo, hi])
            if i == j:
                continue
            col = pq.read_table(path, columns=["sig"]).column("sig").combine_chunks()
            sig = col.flatten().to_numpy().reshape(-1, self.num_perm)
            out[i:j] = sig[ids[i:j] - lo]
        return out


def dedup_batches(
    batches: Iterable[pl.DataFrame | pa.RecordBatch | pa.Table],
    field: str = "cot",
    *,
    ngram: int = 5,
    num_perm: int = 128,
    threshold: float = 0.8,
    bands: tuple[int, int] | None = None,
    seed: int = 1,
    verify: bool = True,
    scope_by_prompt: bool | None = None,
    max_bucket_pairs: int = 32,
    workdir: str | Path | None = None,
    pool: Executor | None = None,
    task_docs: int = 2000,
    duckdb_threads: int = 2,
    duckdb_memory: str = "1GB",
) -> DedupResult:
    """Near-duplicate clusters over a stream of sample batches (columns: key, the field's
    columns, cot, optionally prior_passed and prompt_id). Memory stays bounded by a batch plus
    the rows that are in clusters; the tables go to `workdir` (a temp dir, removed, if None).

    scope_by_prompt (default: True iff field == "problem"): rows of the same prompt_id are
    never duplicates of one another; in a cluster spanning prompts, the kept row's prompt keeps
    all its rows. So `field="problem"` is prompt-level dedup: when two prompts are near-dups,
    every sample of the losing prompt is rejected.
    """
    import duckdb

    if scope_by_prompt is None:
        scope_by_prompt = field == "problem"
    b, r = bands or optimal_bands(threshold, num_perm)
    if b * r > num_perm:
        raise ValueError(f"bands {b} x rows {r} > num_perm {num_perm}")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="curator-neardup-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"bands": b, "rows": r, "num_perm": num_perm, "ngram": ngram, "threshold": threshold, "field": field, "scope_by_prompt": scope_by_prompt}
    try:
        for sub in ("sigs", "docs", "bands"):
            shutil.rmtree(work / sub, ignore_errors=True)
            (work / sub).mkdir()
        # -- 1+2: signatures and band keys, chunk by chunk ------------------------------------
        parts: list[tuple[int, int, Path]] = []
        n_docs = n_signed = 0
        sig_type = pa.list_(pa.uint32(), num_perm)

        def finish(ci: int, lo: int, keys: pa.Array, pid: Any, prior: np.ndarray, cot_len: np.ndarray, sigs_of: Callable[[], np.ndarray]) -> int:
            # Write one chunk's docs, signatures and band keys; returns how many rows were signed.
            sigs = sigs_of()
            ids = np.arange(lo, lo + len(sigs), dtype=np.int64)
            signed = (sigs != EMPTY).any(axis=1)  # rows with at least one word
            name = f"part-{ci:06d}.parquet"
            pq.write_table(pa.table({"id": ids, "key": keys, "prompt_id": pid, "prior_passed": prior, "cot_len": cot_len}), work / "docs" / name)
            sig_arr = pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), type=sig_type)
            pq.write_table(pa.table({"id": ids, "sig": sig_arr}), work / "sigs" / name, compression="none")
            parts.append((lo, lo + len(sigs), work / "sigs" / name))
            if signed.any():
                kh = np.fromiter((xxhash.xxh3_64_intdigest(k.encode()) for k in keys.filter(pa.array(signed)).to_pylist()), dtype=_U64, count=int(signed.sum()))
                bh = band_hashes(sigs[signed], b, r)
                sid = ids[signed]
                for k in range(b):
                    d = work / "bands" / f"band={k:03d}"
                    d.mkdir(exist_ok=True)
                    pq.write_table(pa.table({"id": sid, "band_hash": bh[:, k], "kh": kh}), d / name)
            return int(signed.sum())

        # With a pool, chunk i's signatures are computed while chunk i-1 is written and i+1 read.
        pending: tuple | None = None
        for ci, batch in enumerate(batches):
            t = _as_table(batch)
            if t.num_rows == 0:
                continue
            cols = set(t.column_names)
            keys = _str(t.column("key")).combine_chunks()
            chunk = (
                ci,
                n_docs,
                keys,
                pc.coalesce(_str(t.column("prompt_id")), keys) if scope_by_prompt and "prompt_id" in cols else keys,
                pc.fill_null(t.column("prior_passed"), False).to_numpy() if "prior_passed" in cols else np.ones(t.num_rows, bool),
                (pc.fill_null(pc.utf8_length(_str(t.column("cot"))), 0).to_numpy() if "cot" in cols else np.zeros(t.num_rows)).astype(np.int64),
                _submit_sigs(field_text(t, field), ngram, num_perm, seed, pool, task_docs),
            )
            n_docs += t.num_rows
            del t
            if pending is not None:
                n_signed += finish(*pending)
            pending = chunk
        if pending is not None:
            n_signed += finish(*pending)
        pending = None
        stats.update(docs=n_docs, signed=n_signed, t_signatures=round(time.perf_counter() - t0, 3), maxrss_mb_signatures=_maxrss_mb())

        # -- 3: grouping in DuckDB, band by band ---------------------------------------------
        t1 = time.perf_counter()
        (work / "duckdb_tmp").mkdir(exist_ok=True)
        con = duckdb.connect()
        con.execute(f"SET threads={int(duckdb_threads)}; SET memory_limit='{duckdb_memory}'; SET preserve_insertion_order=false; SET temp_directory='{work / 'duckdb_tmp'}'")
        con.execute("CREATE TEMP TABLE edges (a BIGINT, b BIGINT)")
        for d in sorted((work / "bands").glob("band=*")):
            src = f"read_parquet('{d}/*.parquet')"
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE g AS
                    SELECT band_hash, count(*) AS n, arg_min(id, kh) AS center FROM {src}
                    GROUP BY band_hash HAVING count(*) > 1;
                CREATE OR REPLACE TEMP TABLE m AS
                    SELECT s.id, s.band_hash, g.n, g.center FROM {src} s JOIN g USING (band_hash);
                INSERT INTO edges
                    SELECT least(id, center), greatest(id, center) FROM m WHERE n > {int(max_bucket_pairs)} AND id <> center
                    UNION ALL
                    SELECT x.id, y.id FROM m x JOIN m y USING (band_hash) WHERE x.n <= {int(max_bucket_pairs)} AND x.id < y.id;
                """
            )
        e = con.sql("SELECT DISTINCT a, b FROM edges ORDER BY a, b").fetchnumpy()
        ea, eb = e["a"], e["b"]
        ea, eb = np.asarray(ea, np.int64), np.asarray(eb, np.int64)
        stats.update(candidate_pairs=len(ea), t_grouping=round(time.perf_counter() - t1, 3), maxrss_mb_grouping=_maxrss_mb())

        # -- 4: verify, cluster, keep ----------------------------------------------------------
        t2 = time.perf_counter()
        store = _SigStore(parts, num_perm)
        nodes = np.unique(np.concatenate([ea, eb]))
        node_sigs = store.gather(nodes)

        def docs_of(ids: np.ndarray) -> pl.DataFrame:
            con.register("cl", pa.table({"id": ids}))
            return _to_polars(con.sql(f"SELECT d.id, d.key, d.prompt_id, d.prior_passed, d.cot_len FROM cl JOIN read_parquet('{work / 'docs'}/*.parquet') d USING (id)"))

        try:
            out, found = clusters_from_pairs(ea, eb, nodes, node_sigs, docs_of, verify=verify, threshold=threshold)
        finally:
            con.close()
        stats.update(found, duplicates=out.height, t_clusters=round(time.perf_counter() - t2, 3), t_total=round(time.perf_counter() - t0, 3))
        if found["clusters"]:
            stats["maxrss_mb_clusters"] = _maxrss_mb()
        return DedupResult(out, stats)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def dedup_parquet(
    paths: str | Path | Sequence[str | Path],
    field: str = "cot",
    *,
    batch_size: int = 20_000,
    **kwargs: Any,
) -> DedupResult:
    """`dedup_batches` over Parquet files (globs allowed), read `batch_size` rows at a time with
    only the needed columns. Files may carry `prior_passed` (else every row counts as passed)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        s = str(p)
        if any(ch in s for ch in "*?["):
            base = Path(s).anchor or "."
            files.extend(sorted(Path(base).glob(str(Path(s).relative_to(base)))))
        else:
            files.append(Path(s))
    if not files:
        raise FileNotFoundError(f"no Parquet files match {paths}")
    scope = kwargs.get("scope_by_prompt")
    if scope is None:
        scope = field == "problem"
    want = needed_columns(field, scope) + ["prior_passed"]

    def gen() -> Iterator[pa.RecordBatch]:
        for f in files:
            pf = pq.ParquetFile(f)
            have = set(pf.schema_arrow.names)
            cols = [c for c in want if c in have]
            for c in field.split("+") + ["key"]:
                if c not in have:
                    raise ValueError(f"{f}: no column {c!r} (needed for field {field!r})")
            yield from pf.iter_batches(batch_size=batch_size, columns=cols)

    return dedup_batches(gen(), field, **kwargs)
