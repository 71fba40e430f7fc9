"""`curator report` and `curator estimate`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from curator.cli.common import fail as _fail, guard as _guard


def _num(x: Any, digits: int = 1) -> str:
    from curator.audit.html_report import fmt_num

    return fmt_num(x, digits)


def print_report(r: dict[str, Any], console: Console) -> None:
    from curator.sample.cost import format_usd as usd
    from curator.audit.html_report import fmt_int, fmt_pct

    chain = r["chain"]
    models = sorted({str(c["model"]) for c in r.get("configurations") or []}) or [str(r.get("model"))]
    console.print(f"[bold]{r.get('name') or r['out_dir']}[/]  {r['out_dir']}  model {', '.join(models)}  "
                  + (f"chain {chain['name']}: " + " → ".join(s["filter"] for s in chain["steps"]) if chain else "no filter chain"),
                  highlight=False)
    if r.get("journal_rows_not_in_shards"):
        console.print(f"[yellow]{r['journal_rows_not_in_shards']:,} answers are still in the journal (a run is going on or was killed)[/]")

    t = Table(title="Funnel (sequential: each row counted at the first step it fails)", title_justify="left")
    for c, j in (("stage", "left"), ("remaining", "right"), ("of sampled", "right"), ("rejected here", "right"),
                 ("fails alone", "right"), ("reasons", "left")):
        t.add_column(c, justify=j)
    for s in r["funnel"]:
        name = s["stage"] if s["step"] is None else f"{s['step']}. {s['stage']}"
        reasons = ", ".join(f"{x['reason']} {x['count']:,}" for x in s["reasons"])
        if s["pending"]:
            reasons += (", " if reasons else "") + f"pending {s['pending']:,}"
        t.add_row(name, fmt_int(s["remaining"]), fmt_pct(s["share_of_sampled"]),
                  fmt_int(s["rejected"]) if s["step"] is not None else "",
                  fmt_int(s["rejects_alone"]) if s["rejects_alone"] is not None else "", reasons)
    console.print(t)

    tk = r["tokens"]
    perk = f"per_{r['per'] // 1000}k_accepted"
    t = Table(title="Tokens and dollars", title_justify="left")
    for c in ("", "total", "per sample", "per accepted", f"per {r['per'] // 1000}k accepted"):
        t.add_column(c, justify="right" if c else "left")
    for k in ("prompt", "cached_prompt", "completion", "reasoning", "total"):
        t.add_row(k.replace("_", " ") + " tokens", fmt_int(tk[k]), _num(tk["per_sample"][k]), _num(tk["per_accepted"][k]), fmt_int(tk[perk][k]))
    t.add_row("[bold]dollars[/]", usd(r["total_usd"]), usd(r["usd_per_sample"]), usd(r["usd_per_accepted"]), usd(r["usd_per_50k_accepted"]))
    console.print(t)
    bm = r["cost"].get("by_mode")
    if bm and bm["total_usd"]["online"] is not None:
        console.print(f"online vs batch (paid {bm['paid_in']}, batch discount {bm['batch_discount']:.0%}): "
                      f"total {usd(bm['total_usd']['online'])} vs {usd(bm['total_usd']['batch'])}; "
                      f"per {r['per'] // 1000}k accepted {usd(bm['usd_per_50k_accepted']['online'])} vs {usd(bm['usd_per_50k_accepted']['batch'])}; "
                      f"batch answers arrive within {bm['batch_completion_window']}", highlight=False)
    if r["cost"].get("samples_with_estimated_usage"):
        console.print(f"[yellow]totals include estimated token counts (and costs) for {r['cost']['samples_with_estimated_usage']:,} "
                      "samples: the teacher sent no usage; set teacher.tokenizer for exact local counts[/]")
    if r["cost"]["samples_without_cost"]:
        console.print(f"[yellow]{r['cost']['samples_without_cost']:,} samples have no cost (no price known): totals unknown, "
                      f"priced part {usd(r['cost']['usd_known_part'])}; set teacher.price in the manifest[/]")

    t = Table(title="Lengths", title_justify="left")
    for c in ("measure", "n", "mean", "p5", "median", "p95", "max"):
        t.add_column(c, justify="left" if c == "measure" else "right")
    for name, L in r["lengths"].items():
        for g in ("all", "accepted"):
            s = L[g]
            t.add_row(f"{name} ({g})", fmt_int(s["n"]), _num(s["mean"]), _num(s["p5"]), _num(s["p50"]), _num(s["p95"]), _num(s["max"]))
    console.print(t)

    L = r["languages"]
    if L.get("available"):
        line = f"languages: judged {L['judged']:,}, rejected {L['rejected']:,}"
        for key, d in L["details"].items():
            if d["kind"] != "number":
                line += f"; {key}: " + ", ".join(f"{v['value']} {v['count']:,}" for v in d["values"][:6])
        console.print(line, highlight=False)
    D = r["duplicates"]
    if D.get("available"):
        console.print(f"near-duplicates: {D['duplicates']:,} in {D['clusters']:,} clusters"
                      + (f"; largest {D['largest'][0]['size']:,}" if D["largest"] else ""), highlight=False)

    if len(r["sources"]) > 1:
        t = Table(title="Per source", title_justify="left")
        for c in ("source", "sampled", "accepted", "acceptance", "dollars", "per accepted"):
            t.add_column(c, justify="left" if c == "source" else "right")
        for s in r["sources"]:
            t.add_row(str(s["source"]), fmt_int(s["sampled"]), fmt_int(s["accepted"]), fmt_pct(s["acceptance_rate"]), usd(s["usd"]), usd(s["usd_per_accepted"]))
        console.print(t)

    dif = r.get("difficulty") or {}
    if dif.get("available"):
        t = Table(title=f"Difficulty: {fmt_int(dif['prompts'])} prompts by pass rate (solved by the sample steps / judged); "
                        f"mean {fmt_pct(dif['mean_pass_rate'])}", title_justify="left")
        for c in ("pass rate", "prompts", "", "samples/prompt", "accepted", "dollars", "per accepted"):
            t.add_column(c, justify="left" if c in ("pass rate", "") else "right")
        top = max((b["prompts"] for b in dif["buckets"]), default=0) or 1
        for b in dif["buckets"]:
            bar = "█" * round(12 * b["prompts"] / top)
            t.add_row(b["bucket"], fmt_int(b["prompts"]), bar, _num(b["samples_per_prompt"]), fmt_int(b["accepted"]), usd(b["usd"]),
                      usd(b["usd_per_accepted"]))
        console.print(t)
        e = dif["ended_with_nothing"]
        if e["prompts"]:
            ids = ", ".join(str(x["prompt_id"]) for x in e["examples"][:10])
            console.print(f"[yellow]{e['prompts']:,} prompts ended with no accepted sample[/] ({fmt_int(e['sampled'])} samples, "
                          f"{usd(e['usd'])}): worth a stronger teacher; e.g. {ids}"
                          + (" …" if e["prompts"] > 10 else "") + "  (all: SELECT * FROM prompts WHERE accepted = 0)", highlight=False)

    if len(r.get("configurations") or []) > 1:
        console.print(config_table(r["configurations"]))

    if r.get("replicas"):
        console.print(replica_table(r["replicas"]))

    t = Table(title="Drift over the run (rolling window vs the first)", title_justify="left")
    for c in ("signal", "status", "first window", "last window", "detail"):
        t.add_column(c, justify="left" if c in ("signal", "status", "detail") else "right")
    for s in r["drift"]:
        fmt = (lambda x: _num(x)) if s["metric"] == "cot_length" else fmt_pct
        t.add_row(s["label"], "[red]fired[/]" if s["fired"] else "[green]ok[/]", fmt(s["baseline"]), fmt(s["last"]),
                  s.get("note") or "; ".join(s["messages"]))
    console.print(t)


def config_table(configs: list[dict[str, Any]]) -> Table:
    """The output folder's configurations (a run changed model, params or template on the same OUT)."""
    from curator.audit.html_report import fmt_int
    from curator.sample.cost import format_usd as usd

    t = Table(title=f"Configurations: {len(configs)} in this folder (export takes the current one; --all-configs: all)", title_justify="left")
    t.add_column("configuration", overflow="fold")
    t.add_column("model, params, template", overflow="fold")
    for c in ("samples", "accepted", "dollars", "per accepted"):
        t.add_column(c, justify="right", no_wrap=True)
    for c in configs:
        t.add_row(c["id"] + ("\n(current)" if c["current"] else ""), f"{c['model']}\n{c['params_text']}\ntemplate {c['template_sha256'] or 'unknown'}",
                  fmt_int(c["samples"]), fmt_int(c["accepted"]), usd(c["usd"]), usd(c["usd_per_accepted"]))
    return t


def replica_table(replicas: list[dict[str, Any]]) -> Table:
    """Per-replica figures of a fleet (teacher.replicas) for the terminal report."""
    from curator.audit.html_report import fmt_int

    t = Table(title="Teacher replicas", title_justify="left")
    for c in ("replica", "requests", "errors", "tokens", "latency p50 s", "latency p95 s", "taken out"):
        t.add_column(c, justify="left" if c == "replica" else "right")
    for f in replicas:
        t.add_row(f["url"], fmt_int(f["requests"]), fmt_int(f["errors"]), fmt_int(f["tokens"]),
                  _num(f["latency_p50_s"], 3), _num(f["latency_p95_s"], 3), fmt_int(f.get("taken_out")))
    return t


def report(
    out: Path = typer.Argument(..., help="an output directory"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    html: Optional[Path] = typer.Option(None, "--html", help="where to write the HTML report (default OUT/report.html)"),
    no_html: bool = typer.Option(False, "--no-html", help="do not write the HTML report"),
    drift_window: Optional[int] = typer.Option(None, help="samples per drift window (default: 200, less for short runs)"),
) -> None:
    """Funnel, tokens and dollars, lengths, languages, duplicates, sources and drift of an output directory."""
    import duckdb

    from curator.audit.html_report import write_html
    from curator.audit.report import build_report

    # Not `_guard`: it imports the sampler (openai...), a second of start-up a report does not need.
    if not out.is_dir():
        _fail(f"{out}: no such output directory")
    if not (out / "shards").exists() and not (out / "journal").exists():
        _fail(f"{out}: not a curator output directory (no shards/ or journal/)")
    try:
        r = build_report(out, drift_window=drift_window)
    except (OSError, duckdb.Error, ValueError) as e:
        _fail(f"{out}: cannot read the output: {' '.join(str(e).split())}")
    path = None
    if not no_html:
        path = write_html(r, html or (out / "report.html"))
    if as_json:
        print(json.dumps(r, default=str))
        return
    console = Console()
    print_report(r, console)
    if path is not None:
        console.print(f"HTML report: {path}", highlight=False)


def estimate(
    manifest: Path = typer.Argument(..., help="a run manifest (YAML)"),
    pilot: int = typer.Option(50, help="prompts in the pilot (a random sample of the source)"),
    target: int = typer.Option(50_000, help="accepted samples to project for"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    confidence: float = typer.Option(0.9, min=0.5, max=0.999, help="interval coverage"),
    seed: Optional[int] = typer.Option(None, help="pilot shuffle seed when the manifest sets no source.shuffle_seed"),
    progress: bool = typer.Option(True, help="show the pilot's progress display"),
) -> None:
    """Run a pilot (kept in the output directory, reused by the full run) and project cost and wall time."""
    from curator.config import load_manifest
    from curator.run import estimate as do_estimate
    from curator.audit.estimate import summary_lines

    if pilot < 1:
        _fail("--pilot must be at least 1")
    if target < 1:
        _fail("--target must be at least 1")
    warnings.simplefilter("default")
    r = _guard(lambda: do_estimate(load_manifest(manifest), pilot=pilot, target=target, confidence=confidence,
                                   progress=progress and not as_json, seed=seed))
    if as_json:
        print(json.dumps(r, default=str))
        return
    console = Console()
    for line in summary_lines(r):
        console.print(line, highlight=False)
    for c in r["caveats"]:
        console.print(f"[dim]note: {c}[/]", highlight=False)


def view(
    out: Path = typer.Argument(..., help="an output directory"),
    port: int = typer.Option(8777, help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to bind; 0.0.0.0 lets anyone on the network read the data"),
) -> None:
    """Browse samples, verdicts, prompts, duplicate clusters and charts in a local web page (read-only)."""
    from curator.audit.viewer import serve_viewer

    _guard(lambda: serve_viewer(out, host, port))
