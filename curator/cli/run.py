"""`curator run`, `resume`, `status` and `filter`: the commands that buy, store and judge."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from curator.cli.common import guard, print_run_summary


def run(
    manifest: Path = typer.Argument(..., help="a run manifest (YAML)"),
    progress: bool = typer.Option(True, help="show the live progress display"),
    detach: bool = typer.Option(False, "--detach", help="batch mode: return once the batches are submitted; `curator resume OUT` collects them"),
) -> None:
    """Sample the teacher for every prompt of the manifest (only what is not stored yet), filter, store."""
    from curator.config import load_manifest
    from curator.run import run_manifest

    warnings.simplefilter("default")
    result = guard(lambda: run_manifest(load_manifest(manifest), progress=progress, detach=detach))
    print_run_summary(result)


def resume(out: Path = typer.Argument(..., help="an output directory of an earlier run"), progress: bool = True,
           detach: bool = typer.Option(False, "--detach", help="batch mode: submit what is missing, collect nothing, return")) -> None:
    """Finish a run: send only the requests whose answers are not stored (batch mode: collect its batches)."""
    from curator.run import resume as do_resume

    result = guard(lambda: do_resume(out, progress=progress, detach=detach))
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
