"""The `curator` command line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from curator.config import ManifestError, load_manifest

# No locals in tracebacks: a frame's locals can hold the API key.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Buy chain-of-thought from a teacher, keep what is right and clean, ship it to SFT.")
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from curator.redact import redact

    # Escaped: "[REDACTED]" or "[Errno 28]" in a message is text, not rich markup.
    err.print(f"[red]error:[/] {escape(redact(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn):
    """Expected failures end in one line, never a traceback; unexpected ones show a traceback with
    any API key masked (an exception message may quote a server's reply or a request header)."""
    from curator.errors import RunError, os_error_text
    from curator.store.sample_store import StoreLocked

    try:
        return fn()
    except (ManifestError, RunError, StoreLocked, FileNotFoundError) as e:
        _fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{os_error_text(e)}")
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:
        import traceback

        from curator.redact import redact

        err.out(redact("".join(traceback.format_exception(e))).rstrip(), highlight=False)
        _fail(f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]} (traceback above)", 1)


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="a run manifest (YAML)"),
    progress: bool = typer.Option(True, help="show the live progress display"),
) -> None:
    """Sample the teacher for every prompt of the manifest (only what is not stored yet), filter, store."""
    from curator.run import run_manifest

    warnings.simplefilter("default")
    result = _guard(lambda: run_manifest(load_manifest(manifest), progress=progress))
    _summary(result)


@app.command()
def resume(out: Path = typer.Argument(..., help="an output directory of an earlier run"), progress: bool = True) -> None:
    """Finish a run: send only the requests whose answers are not stored."""
    from curator.run import resume as do_resume

    result = _guard(lambda: do_resume(out, progress=progress))
    _summary(result)


def _summary(result) -> None:
    s = result.stats
    cost = f"${s.cost_usd:.4f}" if s.cost_known else "unknown (no price for this model)"
    err.print(
        f"stored {s.stored} new samples ({s.already_stored} already stored) in {result.out_dir}; "
        f"requests {s.requests}, retries {s.retries}, failed prompts {s.failed}; cost this run {cost}"
        + (f"; accepted {s.accepted}/{s.judged}" if s.judged else ""),
        highlight=False,
    )
    for e in s.errors[:5]:
        err.print(f"  {e}", highlight=False, markup=False)
    for notice in s.notices[:5]:
        err.print(f"  note: {notice}", highlight=False, markup=False)
    if s.usage_estimated:
        err.print(f"  note: tokens and cost include local estimates for {s.usage_estimated} samples (the teacher sent no usage)", highlight=False)
    if s.stop_reason:
        err.print(f"stopped: {s.stop_reason}", highlight=False, markup=False)
    if s.failed:
        _fail(f"{s.failed} prompts failed after retries; `curator resume {result.out_dir}` sends them again", 3)


@app.command()
def status(out: Path, as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Counts, tokens and cost so far of an output directory."""
    from curator.run import status as get_status

    info = _guard(lambda: get_status(out))
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


@app.command(name="filter")
def filter_cmd(
    out: Path = typer.Argument(..., help="an output directory"),
    chain: Optional[str] = typer.Option(None, "--chain", help="a chain file (filters/NAME.yaml); default: the manifest's"),
    workers: int = typer.Option(2, help="worker processes for heavy filters"),
) -> None:
    """Re-run a filter chain on stored samples (no sampling); verdicts replace the old ones atomically."""
    from curator.filters.base import FilterContext
    from curator.filters.chain import load_chain
    from curator.judging import run_chain
    from curator.errors import RunError
    from curator.run import RESOLVED_MANIFEST
    from curator.store import catalog

    def go():
        if not (out / RESOLVED_MANIFEST).exists():
            raise RunError(f"{out}: not a curator output directory (no {RESOLVED_MANIFEST})")
        m = load_manifest(out / RESOLVED_MANIFEST)
        spec = chain if chain is not None else m.filters
        if spec is None:
            raise RunError("no chain given (--chain) and the manifest names none")
        ctx = FilterContext(output_dir=out, base_dir=Path.cwd() if chain else m.base_dir, workers=workers, teacher=m.teacher)
        c = load_chain(spec, ctx)
        try:
            run_chain(out, c)
        finally:
            ctx.close()
            c.close()
        con = catalog.connect(out)
        try:
            return c.name, con.execute(
                "SELECT count(*), count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false) FROM samples"
            ).fetchall()[0], con.execute(
                "SELECT reject_reason, count(*) FROM samples WHERE accepted = false GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        finally:
            con.close()

    name, (total, acc, rej), reasons = _guard(go)
    print(f"chain {name}: {total} samples, {acc} accepted, {rej} rejected")
    for reason, n in reasons:
        print(f"  {reason}: {n}")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    config: Optional[Path] = typer.Option(None, help="server config YAML (latency, outcome mix, faults...)"),
    problems: Optional[Path] = typer.Option(None, help="problem file whose gold answers the scripted teacher uses"),
    latency_ms: Optional[float] = typer.Option(None),
    cot_placement: Optional[str] = typer.Option(None),
) -> None:
    """Start the local OpenAI-compatible teacher (scripted answers, latency, injected faults)."""
    import yaml

    from curator.server.config import ServerConfig
    from curator.server.runner import serve as do_serve

    data = yaml.safe_load(config.read_text()) if config else {}
    if problems:
        data["problems"] = str(problems)
    if latency_ms is not None:
        data["latency_ms"] = latency_ms
    if cot_placement:
        data["cot_placement"] = cot_placement
    do_serve(ServerConfig.model_validate(data), host=host, port=port)


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, help="output directory (default: the demo manifest's)"),
    progress: bool = True,
) -> None:
    """Run the demo manifest against a local teacher this command starts itself (no API key)."""
    from curator.demo import run_demo
    from curator.store import catalog

    result = _guard(lambda: run_demo(out=out, progress=progress))
    _summary(result)
    rows = catalog.query(result.out_dir, "SELECT coalesce(reject_reason, 'accepted'), count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC")
    print(f"demo output in {result.out_dir}:")
    for reason, n in rows:
        print(f"  {reason}: {n}")
    print(f"next: curator status {result.out_dir} | curator report {result.out_dir} | curator export {result.out_dir} --format messages")


# Commands that live in their own modules register themselves on `app` when imported.
from curator import cli_report as _cli_report  # noqa: E402,F401
from curator import cli_export as _cli_export  # noqa: E402,F401


def main() -> None:  # pragma: no cover
    app()

