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
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import openai
import yaml

from curator.config import Manifest, ManifestError, load_manifest
from curator.cost import find_price, warn_unknown
from curator.filters.base import FilterContext
from curator.filters.chain import Chain, load_chain
from curator.judging import IncrementalJudge
from curator.progress import RunProgress
from curator.sampler import FatalRequestError, Job, Sampler, Stats, normalise_endpoint, request_params, sample_key
from curator.sources import fingerprint, load_problems
from curator.store import catalog
from curator.store.sample_store import SampleStore
from curator.templates import Renderer

RESOLVED_MANIFEST = "manifest.resolved.yaml"


class RunError(Exception):
    """One line for the user; the run stopped and nothing stored was touched."""


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
    src["path"] = str(manifest.resolve(manifest.source.path))
    data["output"] = str(out_dir)
    if isinstance(manifest.filters, str):
        data["filters"] = str(manifest.resolve(manifest.filters))
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
    preflight(manifest, api_key)

    store = SampleStore(out_dir, shard_rows=manifest.store.shard_rows)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    started = time.time()
    stats = Stats()
    try:
        jobs, total, have, source_fp = build_jobs(manifest, store.keys)
        write_resolved_manifest(manifest, out_dir)
        stats.total_samples = total
        stats.already_stored = have
        judge = IncrementalJudge(out_dir, chain) if chain is not None else None
        if judge is not None:
            stats.accepted, stats.judged = judge.accepted, judge.judged

        def should_stop() -> str | None:
            b = manifest.budget
            if b.max_accepted is not None and judge is not None and judge.accepted >= b.max_accepted:
                return f"budget: {judge.accepted} accepted samples reached max_accepted {b.max_accepted}"
            if b.max_accepted is not None and judge is None and have + stats.stored >= b.max_accepted:
                return f"budget: {have + stats.stored} samples reached max_accepted {b.max_accepted} (no filter chain)"
            return None

        display = RunProgress(stats, enabled=progress)
        complete = False
        error: BaseException | None = None
        try:
            with display:
                _run_loop(_sample(manifest, api_key, price, store, stats, jobs, judge, should_stop, display))
        except FatalRequestError as e:
            error = e
        except KeyboardInterrupt:
            stats.stop_reason = "interrupted"
            error = RunError("interrupted: stored answers are kept; `curator resume OUT` finishes the run")
        store.compact()
        if judge is not None and error is None:
            judge.finish()
            stats.accepted = judge.accepted
        complete = error is None and stats.failed == 0 and stats.stop_reason is None
        receipt = write_receipt(manifest, out_dir, run_id, command, started, stats, source_fp, chain, complete, price is not None)
        _record_run(store, run_id, manifest.name, command, started, stats, complete, receipt)
        if error is not None:
            raise RunError(str(error)) if not isinstance(error, RunError) else error
        return RunResult(run_id, out_dir, stats, receipt, complete)
    finally:
        store.close()


def _run_loop(coro) -> None:
    """uvloop when installed: it cuts the client's event-loop overhead per request (bench/sampling.py)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _sample(manifest, api_key, price, store, stats, jobs, judge, should_stop, display) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    closed = asyncio.Event()

    async def writer() -> None:
        while not (closed.is_set() and queue.empty()):
            try:
                first = await asyncio.wait_for(queue.get(), timeout=0.1)
            except asyncio.TimeoutError:
                continue
            items = [first]
            while not queue.empty():
                items.append(queue.get_nowait())
            records = [r for recs, _ in items for r in recs]
            try:
                await asyncio.to_thread(store.append, records)
                if judge is not None:
                    await asyncio.to_thread(judge.judge, records)
                    stats.accepted, stats.judged = judge.accepted, judge.judged
                stats.stored += len(records)
                for _, fut in items:
                    fut.set_result(None)
            except BaseException as e:  # the disk failed: nobody may think these answers are safe
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
            display.refresh()

    async def append(records: list[dict[str, Any]]) -> None:
        fut = asyncio.get_running_loop().create_future()
        await queue.put((records, fut))
        await fut

    sampler = Sampler(manifest, api_key, append, price, stats, should_stop)
    wtask = asyncio.create_task(writer())
    try:
        await sampler.run(jobs)
    finally:
        closed.set()
        await wtask


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
        },
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "cost_usd": stats.cost_usd if (stats.cost_known and price_known) else None,
        "errors": stats.errors[:50],
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
    from curator.judging import read_samples

    if not (out_dir / RESOLVED_MANIFEST).exists():
        raise RunError(f"{out_dir}: not a curator output directory (no {RESOLVED_MANIFEST})")
    df = read_samples(out_dir)
    manifest = load_manifest(out_dir / RESOLVED_MANIFEST)
    info: dict[str, Any] = {
        "name": manifest.name,
        "stored": df.height,
        "prompts": df["prompt_id"].n_unique() if df.height else 0,
        "prompt_tokens": int(df["prompt_tokens"].sum() or 0),
        "completion_tokens": int(df["completion_tokens"].sum() or 0),
        "cost_usd": None if df["cost_usd"].null_count() else float(df["cost_usd"].sum() or 0.0),
    }
    con = catalog.connect(out_dir, read_only=True)
    try:
        row = con.execute("SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false) FROM samples").fetchall()[0]
        info["accepted"], info["rejected"] = row
        info["runs"] = [dict(zip([d[0] for d in con.description], r)) for r in con.execute("SELECT run_id, command, status, samples, cost_usd FROM runs ORDER BY started_at").fetchall()]
    finally:
        con.close()
    return info


__all__ = ["run_manifest", "resume", "status", "RunError", "ManifestError", "RunResult", "asdict"]
