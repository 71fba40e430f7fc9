"""`curator filter OUT --engine ray`: the chain over the shards as a Ray Data pipeline.

    plan (driver)       shards' row groups, each key once (the local engine's storage order)
    read_piece (tasks)  row groups -> Arrow blocks with a dense row id
    ChainWorker (actor pool)
                        sample steps -> verdict files in the staging folder;
                        near-dup signatures -> work files; band keys -> the dataset
    repartition by (band, band_hash) (Ray Data's hash shuffle, the one `groupby` runs on)
    bucket_pairs (tasks) candidate pairs per partition
    driver              verify + union-find + keep rule (`engines.dedup.clusters_from_pairs`)
                        over the candidate pairs and the signatures of their rows only
    write_near_dup (tasks) near-dup verdicts, the duplicates broadcast with ray.put
    driver              other dataset steps (majority vote) as the local engine runs them,
                        chain.json, the atomic swap of OUT/verdicts

Verdicts are the local engine's, file format and all: the same VerdictWriter staging folder,
swapped in only at the end, so a killed driver leaves the old verdicts in place. Decontam's
n-gram index is built once on the driver and broadcast (ray.put) to the actors.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import RunError
from curator.judge.chain import Chain, Step
from curator.store.journal import read_journal
from curator.store.reading import frame_from_records
from curator.store.sample_store import journal_paths, shard_paths

MISSING_EXTRA = "--engine ray needs Ray: pip install 'curator[ray]'"


def _check_address(address: str) -> None:
    """A Ray address that does not answer is one line, before anything is touched (ray.init
    would otherwise wait a minute or more on it)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"--ray-address {address!r}: not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RunError(f"--ray-address {address}: Ray does not answer there ({e.strerror or e})") from None


def connect(address: str | None) -> Any:
    """Join the cluster at `address`, or start a local Ray; returns the ray module."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RunError(MISSING_EXTRA) from None
    if ray.is_initialized():
        return ray
    if address:
        _check_address(address)
    import curator

    # The package travels with the job, so every node runs this checkout's filters.
    env = {"py_modules": [str(Path(curator.__file__).parent)]}
    try:
        # "local": a new Ray of our own, never one `ray start` left running on this machine.
        ray.init(address=address or "local", runtime_env=env, logging_level="WARNING", log_to_driver=False,
                 include_dashboard=False, configure_logging=True)
    except (ConnectionError, TimeoutError) as e:
        raise RunError(f"--ray-address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per stage is noise on a CLI
    return ray


def _shard_plan(ray: Any, out_dir: Path) -> tuple[list[dict[str, Any]], pl.DataFrame | None, int]:
    """Pieces to read (one per row group) and the journal rows not in any shard, keeping the local
    engine's rule (`store.reading.iter_samples`): a key is read from the first shard holding it.
    Shards hand the driver only their keys' 64-bit hashes; key strings are read for the few
    shards whose hashes meet another's (after a crash recovery)."""
    from curator.judge.ray_stages import key_hashes, shard_keys

    paths = shard_paths(out_dir)
    task = ray.remote(num_cpus=0.5)(shard_keys)
    metas = ray.get([task.remote(str(p)) for p in paths])
    hashes = [np.unique(h) for _, h in metas]
    owner = np.concatenate([np.full(len(h), i) for i, h in enumerate(hashes)]) if hashes else np.empty(0, int)
    allh = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    uniq, counts = np.unique(allh, return_counts=True)
    shared = uniq[counts > 1]
    involved = sorted(set(owner[np.isin(allh, shared)].tolist()))
    again: dict[int, list[str]] = {}
    seen: set[str] = set()
    for i in involved:  # in storage order: the first shard holding a key keeps it
        keys = pq.read_table(paths[i], columns=["key"]).column("key").to_pylist()
        again[i] = sorted(seen.intersection(keys))
        seen.update(keys)
    pieces, base = [], 0
    for i, (p, (rgs, _)) in enumerate(zip(paths, metas)):
        skip = json.dumps(again.get(i, []))
        for rg, n in enumerate(rgs):
            pieces.append({"path": str(p), "rg": rg, "base": base, "skip": skip})
            base += n
    rows = [r for jp in journal_paths(out_dir) for r in read_journal(jp)]
    if rows:
        hit = np.isin(key_hashes([r["key"] for r in rows]), uniq)
        if hit.any():  # confirm on the strings of the shards that might hold them
            stored = {k for p in paths for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()}
            rows = [r for r, h in zip(rows, hit) if not (h and r["key"] in stored)]
    journal = None
    if rows:
        journal = frame_from_records(rows).with_columns(pl.Series("id", np.arange(base, base + len(rows), dtype=np.int64)))
    return pieces, journal, base + len(rows)


def _near_dup_step(chain: Chain) -> Step | None:
    """The near-dup step that runs on Ray: the first one, when only sample steps precede it
    (their verdicts are what its keep rule reads as prior_passed)."""
    for st in chain.steps:
        if st.scope == "sample":
            continue
        return st if st.name == "near_dup" else None
    return None


def _near_dup_conf(step: Step, work: Path) -> dict[str, Any]:
    from curator.engines.dedup import optimal_bands

    p = step.filter.params
    return {
        "index": step.index, "name": step.name, "field": p.field, "ngram": p.ngram, "num_perm": p.num_perm, "seed": p.seed,
        "threshold": p.threshold, "verify": p.verify, "scope_by_prompt": step.filter._scope(), "work": str(work),
        "bands": (p.bands, p.rows) if p.bands else optimal_bands(p.threshold, p.num_perm),
    }


def _docs_files(work: Path) -> list[tuple[int, int, Path]]:
    out = []
    for f in work.glob("part-*.parquet"):
        lo, hi = f.stem.split("-")[1:3]
        out.append((int(lo), int(hi), f))
    return sorted(out)


def _clusters(pairs: np.ndarray, work: Path, nd: dict[str, Any]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Verify, union-find and keep rule on the driver, over the candidate pairs and the work-file
    rows of their ids only (the whole pair list sits in the driver's memory: see docs/SCALING.md)."""
    from curator.engines.dedup import clusters_from_pairs

    if len(pairs) == 0:
        return pl.DataFrame(schema={"key": pl.String, "duplicate_of": pl.String, "cluster": pl.Int64, "cluster_size": pl.Int64, "jaccard_est": pl.Float64}), {
            "candidate_pairs": 0, "verified_pairs": 0, "clusters": 0, "clustered_rows": 0}
    pairs = np.unique(pairs, axis=0)
    ea, eb = pairs[:, 0], pairs[:, 1]
    nodes = np.unique(pairs)
    parts = _docs_files(work)
    los = np.array([lo for lo, _, _ in parts], np.int64)
    his = np.array([hi for _, hi, _ in parts], np.int64)
    first = np.minimum(np.searchsorted(nodes, los), len(nodes) - 1)  # the first node >= each file's lo
    files = [f for (_, _, f), hit in zip(parts, (nodes[first] >= los) & (nodes[first] <= his)) if hit]
    # File by file: nearly every work file holds some clustered row, and reading them all at once
    # would put every signature (512 B a sample) in the driver.
    found = []
    for f in files:
        t = pq.read_table(f)
        found.append(pl.from_arrow(t.filter(pa.array(np.isin(t.column("id").to_numpy(), nodes)))))
    rows = pl.concat(found).unique("id").sort("id")
    if rows.height != len(nodes):
        raise RunError(f"near_dup on Ray: {len(nodes) - rows.height} rows of candidate pairs have no signature in {work}")
    node_sigs = np.asarray(rows["sig"].to_arrow().flatten(), np.uint32).reshape(len(nodes), nd["num_perm"])
    docs = rows.drop("sig", "signed")
    out, found = clusters_from_pairs(ea, eb, nodes, node_sigs, lambda ids: docs.filter(pl.col("id").is_in(pl.Series(ids))), verify=nd["verify"], threshold=nd["threshold"])
    return out, {"candidate_pairs": int(len(ea)), **found}


def _pipeline(ray: Any, out_dir: Path, chain: Chain, pieces: list[dict[str, Any]], journal: pl.DataFrame | None, verdict_dir: Path,
              nd: dict[str, Any] | None, workers: int, sample_steps: bool = True, prior: Any = None) -> Any:
    """The dataset up to the actor pool: pieces (and journal rows) -> ChainWorker. sample_steps:
    run the chain's sample steps in the actors (else only near-dup, prior_passed from `prior`)."""
    from ray.data import ActorPoolStrategy

    from curator.judge.ray_stages import ChainWorker, read_piece

    base_dir = chain.steps[0].filter.ctx.base_dir if chain.steps else Path.cwd()
    teacher = chain.steps[0].filter.ctx.teacher if chain.steps else None
    spec = chain.spec if sample_steps else {"name": chain.name, "steps": []}
    # Decontam's index: built once here, broadcast to every actor through the object store.
    indexes = {st.index: [ray.put(st.filter.index)] for st in chain.sample_steps() if st.name == "decontam"} if sample_steps else {}
    ds = ray.data.from_items(pieces, override_num_blocks=max(1, len(pieces))).map_batches(read_piece, batch_size=1, batch_format="numpy") if pieces else None
    if journal is not None:
        jds = ray.data.from_arrow(journal.to_arrow())
        ds = jds if ds is None else ds.union(jds)
    return ds.map_batches(
        ChainWorker,
        fn_constructor_kwargs={"spec": spec, "base_dir": str(base_dir), "out_dir": str(out_dir), "verdict_dir": str(verdict_dir),
                               "teacher": teacher, "indexes": indexes, "near_dup": nd, "prior": prior},
        batch_size=None, batch_format="pyarrow", compute=ActorPoolStrategy(size=max(1, workers)), num_cpus=1,
    )


def _near_dup(ray: Any, ds: Any, nd: dict[str, Any], work: Path, verdict_dir: Path, workers: int, n: int) -> dict[str, Any]:
    """Band keys through the hash shuffle -> candidate pairs -> clusters on the driver -> verdict
    files written by tasks (named step{NN}-{ids}); returns the figures."""
    from curator.engines.dedup import DedupResult
    from curator.judge.ray_stages import bucket_pairs, write_near_dup

    b = nd["bands"][0]
    parts = max(2 * workers, math.ceil(n * b / 4_000_000))
    grouped = ds.repartition(parts, keys=["band", "band_hash"]).map_batches(bucket_pairs, batch_size=None, batch_format="pyarrow")
    t1 = time.perf_counter()
    chunks = [np.column_stack([t.column("a").to_numpy(), t.column("b").to_numpy()]) for t in grouped.iter_batches(batch_size=None, batch_format="pyarrow") if t.num_rows]
    pairs = np.concatenate(chunks) if chunks else np.empty((0, 2), np.int64)
    t_pipe = round(time.perf_counter() - t1, 3)
    t2 = time.perf_counter()
    dups, found = _clusters(pairs, work, nd)
    det = DedupResult(dups).details()
    ref = ray.put(pa.table({"key": pa.array(list(det), pa.string()), "details": pa.array(list(det.values()), pa.string())}))
    files = [{"path": str(f)} for _, _, f in _docs_files(work)]
    signed = int(pl.scan_parquet([f["path"] for f in files]).select(pl.col("signed").sum()).collect().item()) if files else 0
    if files:
        ray.data.from_items(files, override_num_blocks=max(1, min(len(files), 4 * workers))).map_batches(
            write_near_dup, batch_size=8, batch_format="numpy",
            fn_kwargs={"dups": [ref], "index": nd["index"], "step_name": nd["name"], "verdict_dir": str(verdict_dir)},
        ).materialize()
    return {**found, "duplicates": dups.height, "bands": nd["bands"], "partitions": parts, "t_pipeline": t_pipe,
            "t_clusters": round(time.perf_counter() - t2, 3), "shuffle_rows": signed * b, "shuffle_bytes": signed * b * 26}


def run_chain_ray(out_dir: Path, chain: Chain, local_steps: Callable[..., None], *, workers: int = 2, address: str | None = None) -> dict[str, Any]:
    """Re-judge everything stored with `chain` on Ray; returns counts and the pipeline's figures.
    local_steps(out_dir, chain, writer, steps=...): how the local engine runs dataset steps (the
    runner's `run_dataset_steps`), for the ones that stay on the driver."""
    ray = connect(address)
    t0 = time.perf_counter()
    pieces, journal, n = _shard_plan(ray, out_dir)
    stats: dict[str, Any] = {"samples": n, "t_plan": round(time.perf_counter() - t0, 3)}
    writer = chain.verdict_writer(out_dir, replace=True)
    work = writer.dir / ".near_dup"
    nd_step = _near_dup_step(chain)
    try:
        if n:
            nd = None
            if nd_step is not None:
                work.mkdir()
                nd = _near_dup_conf(nd_step, work)
            ds = _pipeline(ray, out_dir, chain, pieces, journal, writer.dir, nd, workers)
            if nd is None:
                ds.materialize()
            else:
                stats.update(_near_dup(ray, ds, nd, work, writer.dir, workers, n))
        rest = [st for st in chain.dataset_steps() if st is not nd_step]
        shutil.rmtree(work, ignore_errors=True)
        local_steps(out_dir, chain, writer, steps=rest)
        writer.finish()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats["t_total"] = round(time.perf_counter() - t0, 3)
    return stats


def run_dataset_steps_ray(out_dir: Path, chain: Chain, writer: Any, local_steps: Callable[..., None], *, workers: int = 2,
                          address: str | None = None) -> dict[str, Any]:
    """The dataset steps of `curator run` (`engine: ray`): the sample steps' verdicts are already
    in `writer.dir`; near-dup runs on Ray with prior_passed broadcast from them, the new step
    files replace the old ones once written; the other dataset steps run as the local engine does."""
    from curator.store.verdicts import earlier_ok

    nd_step = _near_dup_step(chain)
    if nd_step is None:
        local_steps(out_dir, chain, writer)
        return {}
    ray = connect(address)
    pieces, journal, n = _shard_plan(ray, out_dir)
    stats: dict[str, Any] = {"samples": n}
    work = writer.dir / ".near_dup"
    shutil.rmtree(work, ignore_errors=True)
    try:
        if n:
            work.mkdir()
            nd = _near_dup_conf(nd_step, work)
            earlier = earlier_ok([str(p) for p in writer.dir.glob("*.parquet")], nd_step.index)
            old = set(writer.dir.glob(f"step{nd_step.index:02d}-*.parquet"))
            ds = _pipeline(ray, out_dir, chain, pieces, journal, writer.dir, nd, workers, sample_steps=False, prior=[ray.put(earlier.to_arrow())])
            stats.update(_near_dup(ray, ds, nd, work, writer.dir, workers, n))
            new = set(writer.dir.glob(f"step{nd_step.index:02d}-*.parquet"))
            for p in old - new:  # the previous verdicts of this step go once every new file is durable
                p.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local_steps(out_dir, chain, writer, steps=[st for st in chain.dataset_steps() if st is not nd_step])
    return stats


def shutdown() -> None:
    """Leave the cluster (or stop the local Ray this process started)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()

