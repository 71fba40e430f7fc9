"""One run of a manifest: prompts -> sampler -> store -> (sample filters as it goes) -> dataset filters -> receipt.

What ties the stages together lives here and only here: the run's context (`RunContext`), the
three tasks of a session (request, store, judge), the receipt, `resume`, and the pilot of
`curator estimate`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import yaml

from curator.config import Manifest, ManifestError, Price
from curator.errors import RunError, StoreError
from curator.judge.base import FilterContext
from curator.judge.chain import Chain, load_chain
from curator.judge.runner import IncrementalJudge
from curator.redact import header_value, is_env_ref, register_secret, resolve_env
from curator.sample.cost import find_price, warn_unknown
from curator.sample.configs import check_at_start
from curator.sample.loop import fewer_collections, run_loop
from curator.sample.progress import RunProgress
from curator.sample.per_prompt import PerPromptPlan
from curator.sample.sampler import FatalRequestError, Job, JobFeed, Sampler, Stats, request_params, sample_key
from curator.sample.sources import fingerprint, load_problems
from curator.sample.templates import Renderer
from curator.sample.preflight import preflight
from curator.sample.tokencount import TokenCounter, load_counter
from curator.store import catalog
from curator.store.layout import OutputDir
from curator.store.live import fold_dead, remove_live, start_live
from curator.store.sample_store import SampleStore, stored_keys
from curator.store.workers import Board, FinishLock, Others, Part, check_split, pin_chain, record_split


@dataclass
class RunResult:
    run_id: str
    out_dir: Path
    stats: Stats
    receipt: Path
    complete: bool


def api_key_for(manifest: Manifest) -> str:
    headers = manifest.teacher.request_headers()  # a missing {env: NAME} variable (headers, extra_body) fails now, in one line
    for name, raw in (manifest.teacher.model_dump(include={"headers"})["headers"] or {}).items():
        header_value(headers[name], f"environment variable {raw['env']} (teacher.headers.{name})" if is_env_ref(raw) else f"teacher.headers.{name}")
    resolve_env(manifest.teacher.params.extra_body, "teacher.params.extra_body")
    env = manifest.teacher.api_key_env
    if env is None:
        return "EMPTY"  # local servers (vLLM, SGLang, llama.cpp) accept any key
    key = os.environ.get(env)
    if not key:
        raise RunError(f"environment variable {env} (teacher.api_key_env) is not set: export it with the teacher's API key")
    register_secret(key)  # from now on every message and receipt masks it
    return header_value(key, f"environment variable {env} (teacher.api_key_env)")


def prompt_jobs(manifest: Manifest) -> tuple[list[Job], str]:
    """One Job per prompt (no indices yet) with the key of every sample index the run may ask for:
    0..n-1, or 0..max_samples-1 with budget.per_prompt; and the source's fingerprint."""
    src_path = manifest.resolve(manifest.source.path)
    problems = load_problems(manifest.source, src_path, manifest.limits.max_problem_bytes)
    renderer = Renderer(manifest.template(), where=str(manifest.resolve(manifest.prompt) if isinstance(manifest.prompt, str) else manifest.manifest_path or "prompt"))
    renderer.check_columns(set(problems[0].row), str(src_path))
    params = request_params(manifest)
    per_prompt = manifest.budget.per_prompt
    upto = max(manifest.teacher.params.n, per_prompt.max_samples if per_prompt else 0)
    out = []
    for p in problems:
        ctx = {"problem": p.problem, "gold": p.gold, "id": p.id, **p.row}  # the row's own columns win
        messages = renderer.render(ctx, p.at, manifest.limits.max_prompt_bytes)  # every row before anything is sent
        keys = {i: sample_key(manifest.teacher.base_url, manifest.teacher.model, messages, params, i) for i in range(upto)}
        out.append(Job(p, messages, [], keys))
    return out, fingerprint(src_path)


def build_jobs(manifest: Manifest, stored: set[str], part: Part | None = None,
               keys_out: dict[str, set[str]] | None = None, built: tuple[list[Job], str] | None = None) -> tuple[list[Job], int, int, str]:
    """The first round: each prompt's indices 0..n-1 with no stored answer; (jobs, samples in the
    round, of them stored, source fingerprint). part: only worker I of N's prompts; built:
    `prompt_jobs(manifest)` if already made."""
    prompts, fp = built or prompt_jobs(manifest)
    prompts = (part or Part(1, 1)).split(prompts, keys_out)  # keys_out["all"]: every key of the run (configuration check)
    n = manifest.teacher.params.n
    jobs, total, have = [], 0, 0
    for t in prompts:
        missing = [i for i in range(n) if t.keys[i] not in stored]
        total += n
        have += n - len(missing)
        if missing:
            jobs.append(Job(t.problem, t.messages, missing, t.keys))
    return jobs, total, have, fp


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
    path = OutputDir(out_dir).resolved_manifest
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")  # workers of one run write it side by side
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)


def load_filter_chain(manifest: Manifest, out_dir: Path) -> Chain | None:
    if manifest.filters is None:
        return None
    ctx = FilterContext(output_dir=out_dir, base_dir=manifest.base_dir, teacher=manifest.teacher)
    # Every chain starts with the `response` step (finish_reason, answer size): judge/filters/response.py.
    return load_chain(manifest.filters, ctx, where=str(manifest.manifest_path or "filters"),
                      response={"max_answer_chars": manifest.limits.max_answer_chars})


@dataclass
class RunContext:
    """One session of a run: what the request, store and judge tasks share, and what the receipt
    records. Built once by `run_manifest`; plain fields, no behaviour beyond the budget checks."""

    manifest: Manifest
    out: OutputDir
    api_key: str
    price: Price | None
    store: SampleStore
    chain: Chain | None
    counter: TokenCounter | None
    command: str
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    started: float = field(default_factory=time.time)
    stats: Stats = field(default_factory=Stats)
    jobs: list[Job] = field(default_factory=list)
    have: int = 0  # samples stored before this session
    source_fp: str | None = None
    judge: IncrementalJudge | None = None
    plan: PerPromptPlan | None = None  # budget.per_prompt: who needs more samples
    display: Any = None
    monitor: Any = None
    part: Part | None = None  # --worker I/N
    board: Board | None = None  # the workers' spend, for budgets across them
    all_keys: set[str] = field(default_factory=set)  # workers: every key of the run, to know when all parts are stored
    accepted_before: int = 0

    def others(self) -> Others:
        """What the other workers spent and accepted (nothing without --worker); publishes ours."""
        if self.board is None:
            return Others()
        judge = self.judge
        self.board.publish(self.stats.cost_usd, (judge.accepted - self.accepted_before) if judge else 0, self.stats.received)
        return self.board.others()

    @property
    def out_dir(self) -> Path:
        return self.out.path

    def should_stop(self) -> str | None:
        b, judge, stats = self.manifest.budget, self.judge, self.stats
        others = self.others()
        if b.max_usd is not None and self.board is not None and stats.cost_known:
            spent = stats.cost_usd + others.usd
            if spent + stats.in_flight * stats.cost_usd / max(1, stats.requests) >= b.max_usd:
                return f"budget: the workers spent ${spent:.4f} of max_usd ${b.max_usd}"
        if b.max_accepted is not None and judge is not None and judge.accepted + others.accepted >= b.max_accepted:
            return f"budget: {judge.accepted + others.accepted} accepted samples reached max_accepted {b.max_accepted}"
        have = len(self.store.keys) + others.received if self.part is not None else self.have + stats.received
        if b.max_accepted is not None and judge is None and have >= b.max_accepted:
            return f"budget: {have} samples reached max_accepted {b.max_accepted} (no filter chain)"
        return None

    def hold(self) -> bool:
        # When answers bought but not judged yet (or still in flight) could fill max_accepted,
        # wait for their verdicts rather than buy more: no overshoot beyond what was already in
        # flight, and only the last few requests are slowed.
        b, judge, stats = self.manifest.budget, self.judge, self.stats
        if b.max_accepted is None or judge is None:
            return False
        pending = stats.received + stats.already_stored - judge.judged
        could_be = judge.accepted + self.others().accepted + pending + stats.in_flight * self.manifest.teacher.params.n
        return (pending > 0 or stats.in_flight > 0) and could_be >= b.max_accepted


def run_manifest(manifest: Manifest, *, progress: bool = True, command: str = "run", detach: bool = False,
                 part: Part | None = None, resolved: Manifest | None = None) -> RunResult:
    """part: run as worker I of N on a shared OUT (curator/store/workers.py); resolved: what
    manifest.resolved.yaml records, if not `manifest` (estimate's pilot: the full run's)."""
    with fewer_collections():  # curator/sample/loop.py
        return _run_manifest(manifest, progress, command, detach, part, resolved or manifest)


def _run_manifest(manifest: Manifest, progress: bool, command: str, detach: bool, part: Part | None, resolved: Manifest) -> RunResult:
    out = OutputDir(manifest.output_dir)
    check_split(out, part, resuming=command == "resume")
    if part is not None and manifest.teacher.mode == "batch":
        raise RunError(f"--worker {part}: batch mode (teacher.mode: batch) submits every missing key from one process; run it without --worker")
    api_key = api_key_for(manifest)
    price = find_price(manifest.teacher.model, manifest.teacher.price)
    if price is None:
        warn_unknown(manifest.teacher.model)
        if manifest.budget.max_usd is not None:
            raise RunError(f"budget.max_usd is set but no price is known for model {manifest.teacher.model!r}: set teacher.price in the manifest")
    chain = load_filter_chain(manifest, out.path)
    tokenizer = manifest.teacher.tokenizer
    counter = load_counter(manifest.resolve(tokenizer) if tokenizer else None)  # a bad file fails now, not mid-run
    # Every row loaded and rendered (size limits, null or missing columns) before OUT is created
    # or opened: a refused run leaves no folder behind, and an existing one byte-identical.
    built = prompt_jobs(manifest)
    later_session = out.is_output_dir()
    if not later_session:
        preflight(manifest, api_key)  # a first run: fail before anything is written

    store = SampleStore(out.path, shard_rows=manifest.store.shard_rows, part=part, command=command)
    ctx = RunContext(manifest, out, api_key, price, store, chain, counter, command, part=part)
    stats = ctx.stats
    try:
        keys: dict[str, set[str]] = {}
        if manifest.budget.per_prompt is None:
            ctx.jobs, total, ctx.have, ctx.source_fp = build_jobs(manifest, store.keys, part, keys, built)
            prompts = []
        else:
            prompts, ctx.source_fp = built
            prompts = (part or Part(1, 1)).split(prompts, keys)
        del built  # the prompts held for the row checks: what is left to send lives on in the jobs
        write_resolved_manifest(resolved, out.path)  # under the writer lock, as every write to OUT
        fold_dead(out, exclusive=part is None)  # killed sessions' live figures become their receipts
        stats.notices += check_at_start(out.path, manifest, keys["all"], store)  # and stamps the store's answers
        judged = store.keys
        if part is not None:
            record_split(out, part)
            ctx.board = Board(out, part, ctx.run_id)
            ctx.all_keys, judged = keys.get("all", set()), store.keys & keys.get("mine", set())
            if chain is not None:
                pin_chain(out, {**chain.meta(), "sample_steps": [s.index for s in chain.sample_steps()]})
        ctx.judge = IncrementalJudge(out.path, chain, judged, engine=manifest.engine, ray_address=manifest.ray_address) if chain is not None else None
        if ctx.judge is not None:
            stats.accepted, stats.judged = ctx.judge.accepted, ctx.judge.judged
            ctx.accepted_before = ctx.judge.accepted
        if manifest.budget.per_prompt is not None:
            ctx.plan, ctx.jobs, total, ctx.have = _plan(manifest, ctx.judge, prompts, store.keys)
        stats.total_samples = total
        stats.already_stored = ctx.have

        if later_session and ctx.jobs and ctx.should_stop() is None:
            # A later session checks the teacher only when it will buy something: a run killed
            # after its last answer, or one that reached max_accepted, finishes judging even
            # once the teacher is gone.
            preflight(manifest, api_key)
        ctx.monitor = _drift_monitor(out.path)
        ctx.display = RunProgress(stats, enabled=progress)
        error: BaseException | None = None
        try:
            with ctx.display:
                if manifest.teacher.mode == "batch":  # files and polls instead of requests: its own loop
                    from curator.sample.batch import run_batches

                    run_batches(ctx, detach=detach)
                else:
                    run_loop(_sample(ctx))
        except (FatalRequestError, StoreError) as e:
            error = e
        except KeyboardInterrupt:
            stats.stop_reason = "interrupted"
            error = RunError("interrupted: stored answers are kept; `curator resume OUT` finishes the run")
        store.compact()
        if error is None and store.failed is not None:
            error = store.failed  # it failed after the last request was sent
        if ctx.judge is not None and error is None:
            stats.accepted = _finish_judging(ctx)
        if ctx.board is not None:
            ctx.board.publish(stats.cost_usd, (ctx.judge.accepted - ctx.accepted_before) if ctx.judge else 0, stats.received,
                              force=True, done=True)
        complete = error is None and stats.failed == 0 and stats.stop_reason is None
        try:
            receipt = write_receipt(ctx, complete)
            _record_run(ctx, complete, receipt)
        except (OSError, RunError, duckdb.Error):
            if error is None:
                raise
            # The full disk that stopped the store takes the receipt too: report the first error.
        if error is not None:
            raise RunError(str(error)) if not isinstance(error, RunError) else error
        return RunResult(ctx.run_id, out.path, stats, receipt, complete)
    finally:
        if chain is not None:
            chain.close()
        store.close()


def _finish_judging(ctx: RunContext) -> int:
    """The dataset steps (near-dup...) judge every stored sample against the others: a worker runs
    them only once every part is stored (the last one to finish), one worker at a time."""
    judge = ctx.judge
    if ctx.part is None:
        return judge.finish()
    with FinishLock(ctx.out):
        if not ctx.chain.dataset_steps() or ctx.all_keys <= stored_keys(ctx.out_dir):
            return judge.finish()
    ctx.stats.notices.append(f"worker {ctx.part}: the dataset steps run when the last worker ends (or `curator filter {ctx.out_dir}`)")
    return judge.accepted


def _plan(manifest: Manifest, judge: IncrementalJudge | None, prompts: list[Job], stored: set[str]) -> tuple[PerPromptPlan, list[Job], int, int]:
    """budget.per_prompt: what every prompt has (stored, accepted by the sample steps, after the
    judge caught up with answers a kill left unjudged) and its first job of this session."""
    if judge is None or not [s for s in judge.steps if s.name != "response"]:
        raise RunError("budget.per_prompt needs a filter chain with at least one sample-scope step (math, format...): "
                       "dataset steps (near_dup, majority_vote) run only after sampling")
    rule = manifest.budget.per_prompt
    plan = PerPromptPlan(prompts, rule, manifest.teacher.params.n, stored, judge.accepted_keys())
    jobs = plan.first_jobs()
    have = sum(len(st.stored) for st in plan.prompts)
    return plan, jobs, have + plan.outstanding, have


def _drift_monitor(out_dir: Path):
    """A live drift monitor primed with what earlier sessions stored (the run's first window
    is the baseline, the latest window the starting point), read with DuckDB top-N scans."""
    from curator.audit.drift import DriftMonitor

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


async def _drain(queue: asyncio.Queue) -> tuple[list[dict[str, Any]], bool]:
    """Wait for the first batch, then take whatever else is queued; True once the sentinel came."""
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    return [r for batch in items if batch is not None for r in batch], items[-1] is None


async def _sample(ctx: RunContext) -> None:
    """Requests -> store (journal + fsync, in a thread) -> judge, each stage its own task, so a
    worker never waits for the disk and storing never waits for the filters."""
    to_store: asyncio.Queue = asyncio.Queue()
    to_judge: asyncio.Queue = asyncio.Queue()
    store, stats, judge, display, monitor = ctx.store, ctx.stats, ctx.judge, ctx.display, ctx.monitor
    plan = ctx.plan
    feed = JobFeed(ctx.jobs, open_=plan is not None)

    def more(jobs: list[Job]) -> None:
        for job in jobs:
            stats.total_samples += len(job.indices)
            # Ahead of the first rounds still queued: a hard prompt's chain of rounds runs beside
            # them instead of after them all (a long tail with the window half empty), and a
            # budget stop leaves prompts finished rather than many with one round.
            feed.put(job, front=True)
        if plan.done():
            feed.close()  # every prompt has K accepted, M samples, or a failed request

    def failed(job: Job) -> None:
        if plan is not None:
            plan.failed(job)
            more([])

    sampler = Sampler(ctx.manifest, ctx.api_key, to_store.put_nowait, ctx.price, stats, ctx.should_stop, ctx.hold,
                      counter=ctx.counter, notify=display.warn, on_failed=failed)
    if plan is not None and plan.done():
        feed.close()

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
                try:
                    ok = await asyncio.to_thread(judge.judge, records)
                except BaseException as e:
                    sampler.abort(f"judging answers failed: {e}")  # nothing waits for verdicts that will not come
                    raise
                stats.accepted, stats.judged = judge.accepted, judge.judged
                if plan is not None:
                    more(plan.observe([(r["key"], a) for r, a in zip(records, ok)]))
                display.refresh()
            if done:
                return

    tasks = [asyncio.create_task(storer()), asyncio.create_task(judger())]
    live = start_live(ctx.out, ctx.run_id, ctx.part, sampler.fleet.figures) if sampler.fleet is not None else None
    try:
        await sampler.run(feed)
    finally:
        to_store.put_nowait(None)
        live is not None and live.cancel()
        await asyncio.gather(*tasks)


def write_receipt(ctx: RunContext, complete: bool) -> Path:
    manifest, stats, chain, run_id = ctx.manifest, ctx.stats, ctx.chain, ctx.run_id
    d = ctx.out.receipts
    d.mkdir(exist_ok=True)
    path = d / f"{run_id}.json"
    tmpl = manifest.prompt if isinstance(manifest.prompt, str) else None
    receipt = {
        "run_id": run_id,
        "command": ctx.command,
        "worker": str(ctx.part) if ctx.part else None,
        "complete": complete,
        "stop_reason": stats.stop_reason,
        "started_at": ctx.started,
        "ended_at": time.time(),
        "manifest": manifest.redacted(),
        "manifest_sha256": _file_hash(manifest.manifest_path) if manifest.manifest_path else None,
        "template_sha256": _file_hash(manifest.resolve(tmpl)) if tmpl else None,
        "source": {"path": str(manifest.resolve(manifest.source.path)), "sha256": ctx.source_fp},
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
        # budget.per_prompt: prompts that reached K accepted, stopped at max_samples, or neither (stopped early)
        "per_prompt": ctx.plan.summary() if ctx.plan is not None else None,
        "drift_warnings": stats.warnings,
        "notices": stats.notices,
        "window": {"final": stats.window, "lowest": stats.window_lowest, "requeued_timeouts": stats.requeued},
        # teacher.replicas: requests, errors, tokens, latency p50/p95 (+ histogram, to merge sessions), rerouted per replica
        "replicas": stats.replicas or None,
        # usage_estimated_samples > 0: the token and dollar totals include local estimates (no usage from the server)
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens, "usage_estimated_samples": stats.usage_estimated},
        "cost_usd": stats.cost_usd if (stats.cost_known and ctx.price is not None) else None,
        "errors": stats.errors[:50],  # redacted where they were made (sampler._one_line)
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(receipt, indent=2, default=str))
    os.replace(tmp, path)
    remove_live(ctx.out, run_id)  # the receipt has the session's figures now
    return path


def _record_run(ctx: RunContext, complete: bool, receipt: Path) -> None:
    stats = ctx.stats
    ctx.store.compact()
    ctx.store.record_run([ctx.run_id, ctx.manifest.name, ctx.command, "complete" if complete else (stats.stop_reason or "incomplete"),
                          ctx.started, time.time(), stats.requests, stats.stored, stats.prompt_tokens, stats.completion_tokens,
                          stats.cost_usd, str(receipt)])


def resume(out_dir: Path, *, progress: bool = True, detach: bool = False, part: Part | None = None) -> RunResult:
    """Without part: one process finishes every part of a run split with --worker I/N too."""
    out = OutputDir(out_dir)
    check_split(out.require(), part, resuming=True)  # before anything is opened or written
    return run_manifest(out.manifest(), progress=progress, command="resume", detach=detach, part=part)


def estimate(manifest: Manifest, *, pilot: int = 50, target: int = 50_000, confidence: float = 0.9, progress: bool = False,
             seed: int | None = None, bootstrap: int | None = None) -> dict[str, Any]:
    """`curator estimate`: run (or reuse) a pilot of random prompts, then project cost and wall time.
    The pilot's answers stay in the manifest's output folder (same keys), reused by the full run."""
    from curator.audit.estimate import BOOTSTRAP, pilot_manifest, summarise_pilot

    if pilot < 1:
        raise ValueError("--pilot must be at least 1 prompt")
    pm = pilot_manifest(manifest, pilot, seed)
    out_dir = manifest.output_dir
    started = time.monotonic()
    # `curator resume OUT` must finish the real run, not the pilot: the pilot records the real
    # manifest, under its writer lock (a refused pilot changes nothing).
    res = run_manifest(pm, progress=progress, command="estimate", resolved=manifest)
    pilot_wall = time.monotonic() - started

    jobs, _, _, _ = build_jobs(pm, set())
    keys = [k for j in jobs for k in j.keys.values()]
    con = catalog.connect(out_dir, read_only=True)
    try:
        con.execute("CREATE TEMP TABLE pilot_keys (key VARCHAR)")
        con.executemany("INSERT INTO pilot_keys VALUES (?)", [[k] for k in keys])
        has_chain = pm.filters is not None
        cur = con.execute(
            f"""
            SELECT s.key, s.prompt_id, s.cost_usd, {'coalesce(s.accepted, false)' if has_chain else 'true'} AS accepted,
                   s.prompt_tokens, s.completion_tokens, s.request_id, s.latency_s
            FROM samples s JOIN pilot_keys USING (key)
            """
        )
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        accepted_total = con.execute("SELECT count(*) FILTER (WHERE accepted) FROM samples").fetchone()[0] if has_chain else \
            con.execute("SELECT count(*) FROM samples").fetchone()[0]
    finally:
        con.close()
    st = res.stats
    pilot_run = {"stored_now": st.stored, "already_stored": st.already_stored, "requests": st.requests, "wall_s": pilot_wall,
                 "samples_per_s": st.stored / pilot_wall if st.stored and pilot_wall > 0 else None}
    return summarise_pilot(manifest, pm, rows, accepted_total, pilot_run, target, confidence=confidence,
                           bootstrap=BOOTSTRAP if bootstrap is None else bootstrap)


__all__ = ["run_manifest", "resume", "estimate", "RunContext", "RunError", "ManifestError", "RunResult"]
