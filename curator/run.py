"""One run of a manifest: prompts -> sampler -> store -> (sample filters as it goes) -> dataset filters -> receipt."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import openai
import yaml

from curator.config import Manifest, ManifestError, load_manifest
from curator.cost import find_price, warn_unknown
from curator.errors import RunError, StoreError
from curator.filters.base import FilterContext
from curator.filters.chain import Chain, load_chain
from curator.judging import IncrementalJudge
from curator.progress import RunProgress
from curator.redact import register_secret
from curator.sampler import FatalRequestError, Job, Sampler, Stats, normalise_endpoint, request_params, sample_key
from curator.sources import fingerprint, load_problems
from curator.store import catalog
from curator.store.sample_store import SampleStore
from curator.templates import Renderer
from curator.tokencount import load_counter

RESOLVED_MANIFEST = "manifest.resolved.yaml"


@dataclass
class RunResult:
    run_id: str
    out_dir: Path
    stats: Stats
    receipt: Path
    complete: bool


def api_key_for(manifest: Manifest) -> str:
    env = manifest.teacher.api_key_env
    if env is None:
        return "EMPTY"  # local servers (vLLM, SGLang, llama.cpp) accept any key
    key = os.environ.get(env)
    if not key:
        raise RunError(f"environment variable {env} (teacher.api_key_env) is not set: export it with the teacher's API key")
    register_secret(key)  # from now on every message and receipt masks it
    return key


def build_jobs(manifest: Manifest, stored: set[str]) -> tuple[list[Job], int, int, str]:
    src_path = manifest.resolve(manifest.source.path)
    problems = load_problems(manifest.source, src_path)
    renderer = Renderer(manifest.template(), where=str(manifest.manifest_path or "prompt"))
    renderer.check_columns(set(problems[0].row), str(src_path))
    params = request_params(manifest)
    n = manifest.teacher.params.n
    jobs, total, have = [], 0, 0
    for p in problems:
        ctx = dict(p.row)
        ctx.setdefault("problem", p.problem)
        ctx.setdefault("gold", p.gold)
        ctx.setdefault("id", p.id)
        messages = renderer.render(ctx)
        keys = {i: sample_key(manifest.teacher.base_url, manifest.teacher.model, messages, params, i) for i in range(n)}
        missing = [i for i in range(n) if keys[i] not in stored]
        total += n
        have += n - len(missing)
        if missing:
            jobs.append(Job(p, messages, missing, keys))
    return jobs, total, have, fingerprint(src_path)


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("curator", "openai", "datasets", "polars", "duckdb", "pyarrow", "math-verify", "datasketch", "langdetect", "tenacity"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def write_resolved_manifest(manifest: Manifest, out_dir: Path) -> None:
    """Absolute paths and the template inline, so `curator resume OUT` needs nothing else."""
    data = manifest.redacted()
    src = data["source"]
    src["path"] = manifest.portable(manifest.source.path)
    if manifest.teacher.tokenizer:
        data["teacher"]["tokenizer"] = manifest.portable(manifest.teacher.tokenizer)
    if src.get("loader"):  # the loader sets these itself; written out, resume/status would refuse them
        for k in ("id", "problem", "answer"):
            src.pop(k, None)
    data["output"] = str(out_dir)
    if isinstance(manifest.filters, str):
        data["filters"] = manifest.portable(manifest.filters)
    path = out_dir / RESOLVED_MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)


def preflight(manifest: Manifest, api_key: str) -> None:
    """Fail in one line before anything is sent: server unreachable, bad key."""
    client = openai.OpenAI(base_url=normalise_endpoint(manifest.teacher.base_url), api_key=api_key, max_retries=2, timeout=min(30.0, manifest.limits.timeout_s))
    try:
        client.models.list()
    except openai.APIConnectionError as e:
        raise RunError(f"cannot reach the teacher at {manifest.teacher.base_url} (teacher.base_url): {type(e).__name__}") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        env = manifest.teacher.api_key_env or "(none)"
        raise RunError(f"the teacher at {manifest.teacher.base_url} refused the API key from {env} (HTTP {e.status_code})") from None
    except openai.APIError:
        pass  # no /models on this server: the first request will tell
    finally:
        client.close()


def load_filter_chain(manifest: Manifest, out_dir: Path) -> Chain | None:
    if manifest.filters is None:
        return None
    ctx = FilterContext(output_dir=out_dir, base_dir=manifest.base_dir, teacher=manifest.teacher)
    return load_chain(manifest.filters, ctx, where=str(manifest.manifest_path or "filters"))


def run_manifest(manifest: Manifest, *, progress: bool = True, command: str = "run") -> RunResult:
    out_dir = manifest.output_dir
    api_key = api_key_for(manifest)
    price = find_price(manifest.teacher.model, manifest.teacher.price)
    if price is None:
        warn_unknown(manifest.teacher.model)
        if manifest.budget.max_usd is not None:
            raise RunError(f"budget.max_usd is set but no price is known for model {manifest.teacher.model!r}: set teacher.price in the manifest")
    chain = load_filter_chain(manifest, out_dir)
    tokenizer = manifest.teacher.tokenizer
    counter = load_counter(manifest.resolve(tokenizer) if tokenizer else None)  # a bad file fails now, not mid-run
    later_session = (out_dir / RESOLVED_MANIFEST).exists()
    if not later_session:
        preflight(manifest, api_key)  # a first run: fail before anything is written

    store = SampleStore(out_dir, shard_rows=manifest.store.shard_rows)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    started = time.time()
    stats = Stats()
    try:
        jobs, total, have, source_fp = build_jobs(manifest, store.keys)
        write_resolved_manifest(manifest, out_dir)
        stats.total_samples = total
        stats.already_stored = have
        judge = IncrementalJudge(out_dir, chain, store.keys) if chain is not None else None
        if judge is not None:
            stats.accepted, stats.judged = judge.accepted, judge.judged

        def should_stop() -> str | None:
            b = manifest.budget
            if b.max_accepted is not None and judge is not None and judge.accepted >= b.max_accepted:
                return f"budget: {judge.accepted} accepted samples reached max_accepted {b.max_accepted}"
            if b.max_accepted is not None and judge is None and have + stats.received >= b.max_accepted:
                return f"budget: {have + stats.received} samples reached max_accepted {b.max_accepted} (no filter chain)"
            return None

        def hold() -> bool:
            # When answers bought but not judged yet (or still in flight) could fill
            # max_accepted, wait for their verdicts rather than buy more: no overshoot beyond
            # what was already in flight, and only the last few requests are slowed.
            b = manifest.budget
            if b.max_accepted is None or judge is None:
                return False
            pending = stats.received + stats.already_stored - judge.judged
            could_be = judge.accepted + pending + stats.in_flight * manifest.teacher.params.n
            return (pending > 0 or stats.in_flight > 0) and could_be >= b.max_accepted

        if later_session and jobs and should_stop() is None:
            # A later session checks the teacher only when it will buy something: a run killed
            # after its last answer, or one that reached max_accepted, finishes judging even
            # once the teacher is gone.
            preflight(manifest, api_key)
        monitor = _drift_monitor(out_dir)
        display = RunProgress(stats, enabled=progress)
        complete = False
        error: BaseException | None = None
        try:
            with display:
                _run_loop(_sample(manifest, api_key, price, store, stats, jobs, judge, should_stop, hold, display, monitor, counter))
        except (FatalRequestError, StoreError) as e:
            error = e
        except KeyboardInterrupt:
            stats.stop_reason = "interrupted"
            error = RunError("interrupted: stored answers are kept; `curator resume OUT` finishes the run")
        store.compact()
        if error is None and store.failed is not None:
            error = store.failed  # it failed after the last request was sent
        if judge is not None and error is None:
            stats.accepted = judge.finish()
        complete = error is None and stats.failed == 0 and stats.stop_reason is None
        try:
            receipt = write_receipt(manifest, out_dir, run_id, command, started, stats, source_fp, chain, complete, price is not None)
            _record_run(store, run_id, manifest.name, command, started, stats, complete, receipt)
        except (OSError, RunError, duckdb.Error):
            if error is None:
                raise
            # The full disk that stopped the store takes the receipt too: report the first error.
        if error is not None:
            raise RunError(str(error)) if not isinstance(error, RunError) else error
        return RunResult(run_id, out_dir, stats, receipt, complete)
    finally:
        if chain is not None:
            chain.close()
        store.close()


def _drift_monitor(out_dir: Path):
    """A live drift monitor primed with what earlier sessions stored (the run's first window
    is the baseline, the latest window the starting point), read with DuckDB top-N scans."""
    from curator.drift import DriftMonitor

    monitor = DriftMonitor()
    if any((out_dir / "shards").glob("*.parquet")):
        con = catalog.connect(out_dir, read_only=True)
        try:
            cols = "seq, cot, completion, gold, cot_source, finish_reason"
            first = con.sql(f"SELECT {cols} FROM shards_raw ORDER BY seq LIMIT {monitor.window}").fetchall()
            last = con.sql(f"SELECT {cols} FROM shards_raw ORDER BY seq DESC LIMIT {monitor.window}").fetchall()
        finally:
            con.close()
        names = [c.strip() for c in cols.split(",")]
        seen = {r[0] for r in first}
        rows = [dict(zip(names, r)) for r in first] + [dict(zip(names, r)) for r in reversed(last) if r[0] not in seen]
        monitor.prime(rows)
    return monitor


def _run_loop(coro) -> None:
    """uvloop when installed: it cuts the client's event-loop overhead per request (bench/sampling.py)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _drain(queue: asyncio.Queue) -> tuple[list[dict[str, Any]], bool]:
    """Wait for the first batch, then take whatever else is queued; True once the sentinel came."""
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    return [r for batch in items if batch is not None for r in batch], items[-1] is None


async def _sample(manifest, api_key, price, store, stats, jobs, judge, should_stop, hold, display, monitor, counter=None) -> None:
    """Requests -> store (journal + fsync, in a thread) -> judge, each stage its own task, so a
    worker never waits for the disk and storing never waits for the filters."""
    to_store: asyncio.Queue = asyncio.Queue()
    to_judge: asyncio.Queue = asyncio.Queue()
    sampler = Sampler(manifest, api_key, to_store.put_nowait, price, stats, should_stop, hold, counter=counter, notify=display.warn)

    async def storer() -> None:
        while True:
            records, done = await _drain(to_store)
            if records:
                try:
                    await asyncio.to_thread(store.append, records)
                except BaseException as e:
                    sampler.abort(f"storing answers failed: {e}")  # nothing unstored may count as done
                    to_judge.put_nowait(None)
                    raise
                stats.stored += len(records)
                if store.failed is not None:
                    # A shard write failed: what is journaled stays there for the next start to
                    # compact and judge; in-flight answers are still journaled, nothing new is bought.
                    sampler.abort(f"storing answers failed: {store.failed}")
                else:
                    to_judge.put_nowait(records)
                    for message in monitor.observe(records):  # records carry their seq now
                        stats.warnings.append(message)
                        display.warn(message)
                display.refresh()
            if done:
                to_judge.put_nowait(None)
                return

    async def judger() -> None:
        while True:
            records, done = await _drain(to_judge)
            if records and judge is not None:
                await asyncio.to_thread(judge.judge, records)
                stats.accepted, stats.judged = judge.accepted, judge.judged
                display.refresh()
            if done:
                return

    tasks = [asyncio.create_task(storer()), asyncio.create_task(judger())]
    try:
        await sampler.run(jobs)
    finally:
        to_store.put_nowait(None)
        await asyncio.gather(*tasks)


def write_receipt(manifest, out_dir, run_id, command, started, stats: Stats, source_fp, chain, complete, price_known) -> Path:
    d = out_dir / "receipts"
    d.mkdir(exist_ok=True)
    path = d / f"{run_id}.json"
    tmpl = manifest.prompt if isinstance(manifest.prompt, str) else None
    receipt = {
        "run_id": run_id,
        "command": command,
        "complete": complete,
        "stop_reason": stats.stop_reason,
        "started_at": started,
        "ended_at": time.time(),
        "manifest": manifest.redacted(),
        "manifest_sha256": _file_hash(manifest.manifest_path) if manifest.manifest_path else None,
        "template_sha256": _file_hash(manifest.resolve(tmpl)) if tmpl else None,
        "source": {"path": str(manifest.resolve(manifest.source.path)), "sha256": source_fp},
        "filters": chain.spec if chain else None,
        "versions": _versions(),
        "counts": {
            "samples_total": stats.total_samples,
            "already_stored": stats.already_stored,
            "stored_this_run": stats.stored,
            "requests": stats.requests,
            "retries": stats.retries,
            "failed_prompts": stats.failed,
            "accepted": stats.accepted if chain else None,
            "failed_attempts": stats.failed_attempts,
        },
        "drift_warnings": stats.warnings,
        "notices": stats.notices,
        "window": {"final": stats.window, "lowest": stats.window_lowest, "requeued_timeouts": stats.requeued},
        # usage_estimated_samples > 0: the token and dollar totals include local estimates (no usage from the server)
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens, "usage_estimated_samples": stats.usage_estimated},
        "cost_usd": stats.cost_usd if (stats.cost_known and price_known) else None,
        "errors": stats.errors[:50],  # redacted where they were made (sampler._one_line)
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(receipt, indent=2, default=str))
    os.replace(tmp, path)
    return path


def _record_run(store: SampleStore, run_id, name, command, started, stats: Stats, complete, receipt: Path) -> None:
    store.compact()
    con = catalog.connect(store.out_dir)
    try:
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [run_id, name, command, "complete" if complete else (stats.stop_reason or "incomplete"), started, time.time(),
             stats.requests, stats.stored, stats.prompt_tokens, stats.completion_tokens, stats.cost_usd, str(receipt)],
        )
    finally:
        con.close()


def resume(out_dir: Path, *, progress: bool = True) -> RunResult:
    path = out_dir / RESOLVED_MANIFEST
    if not path.exists():
        raise RunError(f"{out_dir}: no {RESOLVED_MANIFEST} here: is this a curator output directory?")
    manifest = load_manifest(path)
    return run_manifest(manifest, progress=progress, command="resume")


def status(out_dir: Path) -> dict[str, Any]:
    """Counts, tokens and cost so far: aggregates in DuckDB over the shards, plus the journal
    rows a running (or killed) run has not compacted yet and rescue journal rows; no trace text
    is loaded."""
    from curator.store.journal import read_journal
    from curator.store.rescue import rescue_paths
    from curator.store.sample_store import journal_paths

    if not (out_dir / RESOLVED_MANIFEST).exists():
        raise RunError(f"{out_dir}: not a curator output directory (no {RESOLVED_MANIFEST})")
    manifest = load_manifest(out_dir / RESOLVED_MANIFEST)
    con = catalog.connect(out_dir, read_only=True)
    try:
        keys, pt, ct, cost, unpriced, acc, rej, est = con.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(cost_usd), 0),"
            " count(*) FILTER (WHERE cost_usd IS NULL), count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false),"
            " count(*) FILTER (WHERE usage_estimated) FROM samples"
        ).fetchall()[0]
        prompts = {r[0] for r in con.execute("SELECT DISTINCT prompt_id FROM shards_raw").fetchall()}
        runs = [dict(zip([d[0] for d in con.description], r)) for r in con.execute("SELECT run_id, command, status, samples, cost_usd FROM runs ORDER BY started_at").fetchall()]
        rescued = rescue_paths(out_dir)
        loose = [(path in rescued, r) for path in journal_paths(out_dir) + rescued for r in read_journal(path)]
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
        "name": manifest.name,
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
    }


__all__ = ["run_manifest", "resume", "status", "RunError", "ManifestError", "RunResult"]
