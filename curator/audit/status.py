"""`curator status`: counts, tokens and cost so far of an output folder, cheap enough to call
while a run is writing (aggregates in DuckDB, no trace text loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curator.sample.fleet import merge_figures
from curator.store import catalog
from curator.store.journal import read_journal
from curator.store.layout import OutputDir
from curator.store.live import read_live
from curator.store.ledger import summary as batch_summary
from curator.store.locks import holders
from curator.store.rescue import rescue_paths
from curator.store.sample_store import journal_paths


def replica_figures(out_dir: Path) -> list[dict[str, Any]]:
    """Per-replica figures of a fleet (teacher.replicas) over every session: requests, errors,
    tokens, latency p50/p95 (from the merged histograms), from the receipts of ended sessions and
    the live files of running (or killed) ones. While sessions run, each replica also has `up`
    (False when a running session has it out of service) and `in_flight`; both None otherwise."""
    import json

    out = OutputDir(out_dir)
    groups, ended = [], set()
    # Live files before receipts: a session's receipt is written before its live file goes
    # (store/live.py), so each session is seen at least in one, and counted once.
    live = read_live(out)
    d = out.receipts
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # a receipt being replaced right now: the next call reads it
        ended.add(r.get("run_id"))
        groups.append(r.get("replicas") or [])
    live = [s for s in live if s.get("run_id") not in ended]
    merged = merge_figures(groups + [s.get("replicas") or [] for s in live])
    running = [f for s in live if s["running"] for f in s.get("replicas") or []]
    for m in merged:
        now = [f for f in running if f["url"] == m["url"]]
        m["up"] = all(f.get("up", True) for f in now) if now else None
        m["in_flight"] = sum(f.get("in_flight") or 0 for f in now) if now else None
    return merged


def status(out_dir: Path) -> dict[str, Any]:
    """Counts, tokens and cost so far: aggregates in DuckDB over the shards, plus the journal
    rows a running (or killed) run has not compacted yet and rescue journal rows; no trace text
    is loaded."""
    manifest = OutputDir(out_dir).manifest()
    writers = holders(out_dir)  # before reading: a writer seen now may have made what is read
    info = catalog.consistent(lambda: _figures(out_dir))
    return {"name": manifest.name, **info, "in_progress": writers or None,  # who writes right now (pid, host, command, since)
            "replicas": replica_figures(out_dir), "batches": batch_summary(OutputDir(out_dir).ledger)}  # batch mode: each batch as last seen


def _journal_rows(paths: list[Path], rescued: list[Path]) -> list[tuple[bool, dict[str, Any]]]:
    rows = []
    for path in paths:
        try:
            rows.extend((path in rescued, r) for r in read_journal(path))
        except FileNotFoundError:
            continue  # compacted meanwhile: its rows are in a shard, which is listed after this
    return rows


def _figures(out_dir: Path) -> dict[str, Any]:
    # Journals first, then shards: a compaction writes its shard before it removes the journal,
    # so every answer is in one or the other of what this reads (never in neither).
    rescued = rescue_paths(out_dir)
    loose = _journal_rows(journal_paths(out_dir) + rescued, rescued)
    con = catalog.connect(out_dir, read_only=True)
    try:
        keys, pt, ct, cost, unpriced, acc, rej, est = con.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(cost_usd), 0),"
            " count(*) FILTER (WHERE cost_usd IS NULL), count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false),"
            " count(*) FILTER (WHERE usage_estimated) FROM samples"
        ).fetchall()[0]
        prompts = {r[0] for r in con.execute("SELECT DISTINCT prompt_id FROM shards_raw").fetchall()}
        runs = [dict(zip([d[0] for d in con.description], r)) for r in con.execute("SELECT run_id, command, status, samples, cost_usd FROM runs ORDER BY started_at").fetchall()]
        # A kill between a shard's write and its journal's removal leaves rows in both: count once.
        seen = {k for (k,) in con.execute("SELECT key FROM shards_raw WHERE key IN (SELECT unnest($k))",
                                          {"k": [r["key"] for _, r in loose]}).fetchall()} if loose else set()
    finally:
        con.close()
    in_shards = keys
    in_rescue = 0
    for from_rescue, r in loose:
        if r["key"] in seen:
            continue
        seen.add(r["key"])
        keys += 1
        in_rescue += from_rescue
        prompts.add(r.get("prompt_id"))
        pt += r.get("prompt_tokens") or 0
        ct += r.get("completion_tokens") or 0
        est += bool(r.get("usage_estimated"))
        if r.get("cost_usd") is None:
            unpriced += 1
        else:
            cost += r["cost_usd"]
    return {
        "stored": keys,
        "in_journal": keys - in_shards - in_rescue,
        "in_rescue": in_rescue,  # kept on another disk when OUT's journal could not be written
        "prompts": len(prompts),
        "prompt_tokens": int(pt),
        "completion_tokens": int(ct),
        "cost_usd": None if unpriced else float(cost),
        "usage_estimated_samples": est,  # > 0: the token and cost totals include local estimates
        "accepted": acc,
        "rejected": rej,
        "runs": runs,
        "replicas": replica_figures(out_dir),  # live while sessions run (store/live.py)
        "batches": batch_summary(OutputDir(out_dir).ledger),  # batch mode: each batch as last seen
    }
