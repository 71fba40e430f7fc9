"""`curator run`, `resume`, `status` and `filter`: the commands that buy, store and judge."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from curator.cli.common import guard, print_run_summary


def _part(worker: Optional[str]):
    from curator.store.workers import Part

    return Part.parse(worker) if worker is not None else None


_WORKER_HELP = ("run as worker I of N on a shared output folder (1/3, 2/3, 3/3 at once, on one machine or several): "
                "each takes the prompts whose key hashes into its part")


def run(
    manifest: Path = typer.Argument(..., help="a run manifest (YAML)"),
    progress: bool = typer.Option(True, help="show the live progress display"),
    detach: bool = typer.Option(False, "--detach", help="batch mode: return once the batches are submitted; `curator resume OUT` collects them"),
    worker: Optional[str] = typer.Option(None, "--worker", help=_WORKER_HELP, metavar="I/N"),
    workers: Optional[int] = typer.Option(None, "--workers", help="start N workers (--worker 1/N ... N/N) with --engine ray"),
    engine: str = typer.Option("local", "--engine", help="local, or ray: the --workers run as Ray tasks"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster (default: start Ray here)"),
) -> None:
    """Sample the teacher for every prompt of the manifest (only what is not stored yet), filter, store."""
    from curator.config import load_manifest
    from curator.run import run_manifest

    warnings.simplefilter("default")
    if workers is not None or engine != "local" or ray_address is not None:
        _run_workers(manifest, workers, engine, ray_address, worker)
        return
    result = guard(lambda: run_manifest(load_manifest(manifest), progress=progress, detach=detach, part=_part(worker)))
    print_run_summary(result)


def _run_workers(manifest: Path, workers: Optional[int], engine: str, address: Optional[str], worker: Optional[str]) -> None:
    from curator.cli.common import err, fail

    if worker is not None:
        fail("--worker I/N runs one worker; --workers N starts all of them: give one of the two")
    if engine != "ray":
        fail(f"--engine {engine}: --workers N runs on Ray (--engine ray); or start `curator run MANIFEST --worker I/N` N times")
    if workers is None:
        fail("--engine ray starts the workers of --workers N: give N")
    from curator.cli.ray_workers import run_on_ray

    results = guard(lambda: run_on_ray(manifest, workers, address))
    bad = []
    for r in results:
        if "error" in r:
            bad.append(r)
            err.print(f"worker {r['worker']}: error: {r['error']}", highlight=False, markup=False)
            continue
        cost = "unknown" if r["cost_usd"] is None else f"${r['cost_usd']:.4f}"
        err.print(f"worker {r['worker']}: stored {r['stored']} new samples ({r['already_stored']} already stored), "
                  f"requests {r['requests']}, failed prompts {r['failed_prompts']}, cost {cost}"
                  + (f"; stopped: {r['stop_reason']}" if r["stop_reason"] else ""), highlight=False, markup=False)
    if bad or any(r.get("failed_prompts") for r in results):
        fail(f"{len(bad)} of {len(results)} workers failed; `curator resume OUT --worker I/N` (or `curator resume OUT`) finishes them", 3)


def resume(
    out: Path = typer.Argument(..., help="an output directory of an earlier run"),
    progress: bool = True,
    detach: bool = typer.Option(False, "--detach", help="batch mode: submit what is missing, collect nothing, return"),
    worker: Optional[str] = typer.Option(None, "--worker", metavar="I/N",
                                         help="finish only part I of N of a run started with --worker (default: every part)"),
) -> None:
    """Finish a run: send only the requests whose answers are not stored (batch mode: collect its batches)."""
    from curator.run import resume as do_resume

    result = guard(lambda: do_resume(out, progress=progress, detach=detach, part=_part(worker)))
    print_run_summary(result)


def status(out: Path, as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Counts, tokens and cost so far of an output directory."""
    from curator.audit.status import status as get_status

    info = guard(lambda: get_status(out))
    if as_json:
        print(json.dumps(info, default=str))
        return
    cost = "unknown" if info["cost_usd"] is None else f"${info['cost_usd']:.4f}"
    print(f"{info['name']}: {info['stored']} samples over {info['prompts']} prompts; accepted {info['accepted']}, rejected {info['rejected']}")
    est = info.get("usage_estimated_samples") or 0
    print(f"tokens: prompt {info['prompt_tokens']:,}, completion {info['completion_tokens']:,}; cost {cost}"
          + (f" (includes estimated usage of {est} samples: the teacher sent no token counts)" if est else ""))
    if info.get("in_rescue"):
        print(f"{info['in_rescue']} of them are in a rescue journal (OUT's journal could not be written); `curator resume {out}` stores them")
    for r in info["runs"]:
        print(f"  run {r['run_id']} ({r['command']}): {r['status']}, {r['samples']} samples")
    for f in info.get("replicas") or []:
        p50, p95 = (f"{x:.3f}s" if x is not None else "-" for x in (f["latency_p50_s"], f["latency_p95_s"]))
        print(f"  replica {f['url']}: {f['requests']} requests, {f['errors']} errors, {f['tokens']:,} tokens, "
              f"latency p50 {p50} p95 {p95}, taken out {f['taken_out']}x"
              + ("" if f.get("up") is None else f"; now {'up' if f['up'] else 'OUT of service (probed)'}, {f['in_flight']} in flight"))
    _print_batches(info.get("batches") or [])


def _print_batches(batches: list[dict]) -> None:
    import time

    if not batches:
        return
    waiting = sum(not b["collected"] for b in batches)
    print(f"batches: {len(batches)} ({waiting} not collected yet)")
    for b in batches:
        c = b["counts"] or {}
        age = f", age {b['age_s'] / 60:.0f} min" if b.get("age_s") is not None else ""
        exp = f", expires {time.strftime('%Y-%m-%d %H:%M', time.localtime(b['expires_at']))}" if b.get("expires_at") and not b["collected"] else ""
        done = f"{c.get('completed', 0)}/{c.get('total', b['requests'])} done, {c.get('failed', 0)} failed" if c else f"{b['requests']} requests"
        stored = f", {b['stored']} answers stored" if b["collected"] else ""
        print(f"  {b['id'] or b.get('file_id')}: {b['state']} ({done}{stored}{age}{exp})")


def filter_cmd(
    out: Path = typer.Argument(..., help="an output directory"),
    chain: Optional[str] = typer.Option(None, "--chain", help="a chain file (filters/NAME.yaml); default: the manifest's"),
    workers: int = typer.Option(2, help="worker processes for heavy filters (with --engine ray: the actor pool's size)"),
    engine: str = typer.Option("local", "--engine", help="local (this machine's cores) or ray (a Ray Data pipeline; needs the ray extra)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster (HOST:PORT); default: start a local Ray"),
) -> None:
    """Re-run a filter chain on stored samples (no sampling); verdicts replace the old ones atomically."""
    from curator.judge.runner import refilter

    figures: dict = {}
    name, (total, acc, rej), reasons = guard(lambda: refilter(out, chain, workers=workers, engine=engine, ray_address=ray_address, figures=figures))
    print(f"chain {name}: {total} samples, {acc} accepted, {rej} rejected")
    if figures:
        print("ray: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    for reason, n in reasons:
        print(f"  {reason}: {n}")
