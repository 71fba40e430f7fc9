"""Render a report dict (`curator.audit.report.build_report`) as one self-contained HTML file.

Plots are PNGs drawn with matplotlib's Agg canvas (no pyplot, no global backend switch) and
embedded as base64; the report dict itself is embedded as JSON (`<script id="report-data">`), so
the file needs nothing beside it and a script can read its numbers back.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

from curator.sample.cost import format_usd

# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt_int(x: Any) -> str:
    return "–" if x is None else f"{int(round(x)):,}"


def fmt_num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def fmt_pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def usd(x: Any) -> str:
    return format_usd(x, unknown="unknown")


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float = 7.0, h: float = 3.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def plot_funnel(report: dict[str, Any]) -> str | None:
    stages = report["funnel"]
    if len(stages) < 2:
        return None
    fig = _figure(7, 0.45 * len(stages) + 0.8)
    ax = fig.add_subplot()
    labels = [s["stage"] if s["step"] is None else f"{s['step']}: {s['stage']}" for s in stages][::-1]
    vals = [s["remaining"] for s in stages][::-1]
    bars = ax.barh(labels, vals, color="#4c78a8")
    top = max(vals) or 1
    for b, v in zip(bars, vals):
        ax.text(b.get_width() + top * 0.01, b.get_y() + b.get_height() / 2, f"{v:,}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("samples remaining")
    ax.set_title("Funnel: samples surviving each step in order")
    return _png(fig)


def plot_hist(report: dict[str, Any], names: list[str], title: str) -> str | None:
    L = report["lengths"]
    name = next((n for n in names if L.get(n, {}).get("hist") and L[n]["all"]["n"]), None)
    if name is None:
        return None
    h = L[name]["hist"]
    edges = h["edges"]
    width = edges[1] - edges[0]
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(edges[:-1], h["all"], width=width, align="edge", color="#bab0ac", label="all samples")
    ax.bar(edges[:-1], h["accepted"], width=width, align="edge", color="#4c78a8", alpha=0.85, label="accepted")
    ax.set_xlabel(f"{name.replace('_', ' ')}")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_drift(signal: dict[str, Any]) -> str | None:
    s = signal["series"]
    if not s["seq"]:
        return None
    fig = _figure(7, 2.4)
    ax = fig.add_subplot()
    ax.plot(s["seq"], s["value"], color="#e45756" if signal["fired"] else "#4c78a8", lw=1.5, label=f"rolling {signal['window']}")
    if signal.get("baseline") is not None:
        ax.axhline(signal["baseline"], color="#54a24b", ls="--", lw=1, label="first window")
    if signal.get("threshold") is not None:
        ax.axhline(signal["threshold"], color="#e45756", ls=":", lw=1, label="threshold")
    if signal.get("first_seq") is not None:
        ax.axvline(signal["first_seq"], color="#e45756", lw=0.8)
    ax.set_xlabel("seq (storage order)")
    ax.set_ylabel(signal["unit"])
    ax.set_title(signal["label"] + (" — FIRED" if signal["fired"] else ""))
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _img(src: str | None, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="{src}">' if src else f'<p class="muted">no data for {esc(alt)}</p>'


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card .v{font-size:1.4em;font-weight:600}.card .k{color:#666;font-size:.85em}
.muted{color:#777}.warn{color:#b00;font-weight:600}.ok{color:#2a7}
code,.mono{font-family:ui-monospace,Menlo,monospace;font-size:.85em}
img{max-width:100%}
"""


def _cards(r: dict[str, Any]) -> str:
    items = [
        ("sampled", fmt_int(r["sampled"])),
        ("accepted", fmt_int(r["accepted"])),
        ("acceptance", fmt_pct(r["acceptance_rate"])),
        ("total cost", usd(r["total_usd"])),
        ("per accepted sample", usd(r["usd_per_accepted"])),
        (f"per {r['per'] // 1000}k accepted", usd(r["usd_per_50k_accepted"])),
        ("tokens", fmt_int(r["tokens"]["total"])),
    ]
    return '<div class="cards">' + "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{esc(k)}</div></div>' for k, v in items) + "</div>"


def _funnel(r: dict[str, Any]) -> str:
    rows = []
    for s in r["funnel"]:
        reasons = ", ".join(f"{esc(x['reason'])}: {fmt_int(x['count'])}" for x in s["reasons"]) or ""
        name = esc(s["stage"]) if s["step"] is None else f"{s['step']}. {esc(s['stage'])}"
        rows.append([name, fmt_int(s["remaining"]), fmt_pct(s["share_of_sampled"]),
                     fmt_int(s["rejected"]) if s["step"] is not None else "", fmt_int(s["pending"]) if s["pending"] else "",
                     fmt_int(s["rejects_alone"]) if s["rejects_alone"] is not None else "", reasons])
    table = _table(["stage", "remaining", "of sampled", "rejected here", "pending", "fails alone", "reasons (first failing step)"], rows, "funnel")
    note = ('<p class="muted">Sequential: a row is counted at the first step it fails. "fails alone": rows the step '
            "rejects whatever the earlier steps said (every step judges every sample).</p>")
    if r["chain"] is None:
        note = '<p class="muted">No filter chain has run on this output: every stored sample counts as accepted.</p>'
    reasons = ""
    if r["reject_reasons"]:
        reasons = "<h3>Reject reasons</h3>" + _table(["filter:reason", "samples", "of sampled"],
                                                    [[f'<span class="mono">{esc(x["reason"])}</span>', fmt_int(x["count"]), fmt_pct(x["count"] / r["sampled"] if r["sampled"] else None)] for x in r["reject_reasons"]])
    return table + note + _img(plot_funnel(r), "funnel") + reasons


def _money(r: dict[str, Any]) -> str:
    t = r["tokens"]
    perk = f"per_{r['per'] // 1000}k_accepted"
    rows = []
    for k in ("prompt", "cached_prompt", "completion", "reasoning", "total"):
        rows.append([k.replace("_", " ") + " tokens", fmt_int(t[k]), fmt_num(t["per_sample"][k]), fmt_num(t["per_accepted"][k]), fmt_int(t[perk][k])])
    c = r["cost"]
    rows.append(["<b>dollars</b>", usd(r["total_usd"]), usd(r["usd_per_sample"]), usd(r["usd_per_accepted"]), usd(r["usd_per_50k_accepted"])])
    out = _table(["", "total", "per sample", "per accepted", f"per {r['per'] // 1000:,}k accepted"], rows)
    if c["samples_without_cost"]:
        out += (f'<p class="warn">{fmt_int(c["samples_without_cost"])} samples have no cost (no price known for the model): '
                f'totals are unknown; the priced part is {usd(c["usd_known_part"])}. Set teacher.price in the manifest.</p>')
    elif r["sampled"]:
        out += (f'<p>Spent on accepted samples: {usd(c["usd_on_accepted"])}; on rejected ones: {usd(c["usd_on_rejected"])}. '
                f'Requests answered: {fmt_int(c["requests"])}'
                + (f' (HTTP attempts in the recorded runs, retries included: {fmt_int(c["http_attempts"])})' if c.get("http_attempts") is not None else "")
                + ".</p>")
    return out


def _lengths(r: dict[str, Any]) -> str:
    rows = []
    for name, L in r["lengths"].items():
        for group in ("all", "accepted"):
            s = L[group]
            rows.append([f"{esc(name)} ({group})", fmt_int(s["n"]), fmt_num(s["mean"]), fmt_num(s["p5"]), fmt_num(s["p25"]),
                         fmt_num(s["p50"]), fmt_num(s["p75"]), fmt_num(s["p95"]), fmt_num(s["max"])])
    table = _table(["measure", "n", "mean", "p5", "p25", "median", "p75", "p95", "max"], rows)
    return (table + _img(plot_hist(r, ["cot_tokens", "cot_chars"], "Chain-of-thought length"), "CoT length histogram")
            + _img(plot_hist(r, ["output_tokens", "completion_chars"], "Completion (output) length"), "completion length histogram"))


def _languages(r: dict[str, Any]) -> str:
    L = r["languages"]
    if not L.get("available"):
        return '<p class="muted">No <code>language</code> step in the chain.</p>'
    out = f"<p>Judged {fmt_int(L['judged'])}, passed {fmt_int(L['passed'])}, rejected {fmt_int(L['rejected'])}.</p>"
    if L["reasons"]:
        out += _table(["reason", "samples"], [[esc(x["reason"]), fmt_int(x["count"])] for x in L["reasons"]])
    for key, d in L["details"].items():
        if d["kind"] == "number":
            out += f"<p><code>{esc(key)}</code>: mean {fmt_num(d['mean'], 3)}, max {fmt_num(d['max'], 3)} over {fmt_int(d['n'])} verdicts</p>"
        else:
            out += f"<h4><code>{esc(key)}</code></h4>" + _table(["value", "samples"], [[esc(v["value"]), fmt_int(v["count"])] for v in d["values"]])
    return out


def _dups(r: dict[str, Any]) -> str:
    D = r["duplicates"]
    if not D.get("available"):
        return '<p class="muted">No <code>near_dup</code> step in the chain.</p>'
    out = f"<p>{fmt_int(D['duplicates'])} near-duplicates in {fmt_int(D['clusters'])} clusters (of {fmt_int(D['judged'])} judged).</p>"
    if D["largest"]:
        out += _table(["cluster", "size", "kept sample", "prompt", "kept text (start)"],
                      [[esc(c["cluster"]), fmt_int(c["size"]), f'<span class="mono">{esc((c["keep"] or "")[:12])}</span>', esc(c["prompt_id"]), esc(c["example"])] for c in D["largest"]])
    return out


def _sources(r: dict[str, Any]) -> str:
    return _table(["source", "prompts", "sampled", "accepted", "acceptance", "dollars", "per accepted", f"per {r['per'] // 1000}k accepted"],
                  [[esc(s["source"]), fmt_int(s["prompts"]), fmt_int(s["sampled"]), fmt_int(s["accepted"]), fmt_pct(s["acceptance_rate"]),
                    usd(s["usd"]), usd(s["usd_per_accepted"]), usd(s["usd_per_50k_accepted"])] for s in r["sources"]])


def _difficulty(r: dict[str, Any]) -> str:
    d = r.get("difficulty") or {}
    if not d.get("available"):
        return "<p>No filter chain has judged the samples: no pass rates.</p>"
    top = max((b["prompts"] for b in d["buckets"]), default=0) or 1
    rows = [[esc(b["bucket"]), fmt_int(b["prompts"]), "█" * round(30 * b["prompts"] / top), fmt_num(b["samples_per_prompt"]),
             fmt_int(b["accepted"]), usd(b["usd"]), usd(b["usd_per_accepted"])] for b in d["buckets"]]
    e = d["ended_with_nothing"]
    out = (f"<p>{fmt_int(d['prompts'])} prompts; pass rate = solved by the sample steps / judged; mean {fmt_pct(d['mean_pass_rate'])}, "
           f"median {fmt_pct(d['median_pass_rate'])}.</p>"
           + _table(["pass rate", "prompts", "", "samples/prompt", "accepted", "dollars", "per accepted"], rows))
    if e["prompts"]:
        out += (f"<p>{fmt_int(e['prompts'])} prompts ended with no accepted sample ({fmt_int(e['sampled'])} samples, {usd(e['usd'])}): "
                "worth a stronger teacher.</p>"
                + _table(["prompt", "sampled", "solved", "dollars"],
                         [[esc(x["prompt_id"]), fmt_int(x["sampled"]), fmt_int(x["solved"]), usd(x["usd"])] for x in e["examples"]]))
    return out


def _drift(r: dict[str, Any]) -> str:
    sig = r["drift"]
    if not sig:
        return ""
    rows = []
    for s in sig:
        status = '<span class="warn">fired</span>' if s["fired"] else '<span class="ok">ok</span>'
        val = (lambda x: fmt_num(x) if s["metric"] == "cot_length" else fmt_pct(x))
        rows.append([esc(s["label"]), status, val(s["baseline"]), val(s["last"]), val(s["worst"]),
                     fmt_int(s["first_seq"]) if s["first_seq"] is not None else "", esc(s.get("note") or "; ".join(s["messages"]))])
    out = _table(["signal", "status", "first window", "last window", "worst window", "fired at seq", "detail"], rows)
    out += f'<p class="muted">Rolling windows of {fmt_int(sig[0]["window"])} samples in storage order, compared with the first window.</p>'
    return out + "".join(_img(plot_drift(s), s["label"]) for s in sig)


def _configs(r: dict[str, Any]) -> str:
    cs = r.get("configurations") or []
    return _table(["configuration", "model", "endpoint", "params", "template", "samples", "accepted", "dollars", "per accepted"],
                         [[f'<span class="mono">{esc(c["id"])}</span>' + (" (current)" if c["current"] else ""), esc(c["model"]), esc(c["endpoint"]),
                           esc(c["params_text"]), f'<span class="mono">{esc(c["template_sha256"] or "unknown")}</span>', fmt_int(c["samples"]),
                           fmt_int(c["accepted"]), usd(c["usd"]), usd(c["usd_per_accepted"])] for c in cs])


def _runs(r: dict[str, Any]) -> str:
    if not r["runs"]:
        return '<p class="muted">No runs recorded in the catalog.</p>'
    return _table(["run", "command", "status", "started", "samples", "requests", "dollars"],
                  [[f'<span class="mono">{esc(x["run_id"])}</span>', esc(x["command"]), esc(x["status"]),
                    esc(time.strftime("%Y-%m-%d %H:%M", time.localtime(x["started_at"])) if x["started_at"] else ""),
                    fmt_int(x["samples"]), fmt_int(x["requests"]), usd(x["cost_usd"])] for x in r["runs"]])


def render_html(report: dict[str, Any]) -> str:
    r = report
    title = f"curator report: {r.get('name') or Path(r['out_dir']).name}"
    chain = r["chain"]
    chain_line = (f"chain <b>{esc(chain['name'])}</b>: " + " → ".join(esc(s["filter"]) for s in chain["steps"])) if chain else "no filter chain"
    warn = ""
    if r.get("journal_rows_not_in_shards"):
        warn = f'<p class="warn">{fmt_int(r["journal_rows_not_in_shards"])} answers are in the journal, not yet in shards: a run is going on or was killed (resume compacts them).</p>'
    if len(r.get("configurations") or []) > 1:
        warn += (f'<p class="warn">This folder holds {len(r["configurations"])} configurations (a later run changed the model, params or '
                 "template): the figures below add them up; Configurations splits them; `curator export` takes the current one unless --all-configs.</p>")
    fired = [m for s in r["drift"] for m in s["messages"]]
    if fired:
        warn += "".join(f'<p class="warn">{esc(m)}</p>' for m in fired)
    data = json.dumps(r, default=str).replace("</", "<\\/")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">{esc(r["out_dir"])} · model {esc(", ".join(sorted({str(c["model"]) for c in r.get("configurations") or []})) or r.get("model"))} · {chain_line} · '
        f'generated {esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["generated_at"])))}</p>',
        warn,
        _cards(r),
        "<h2>Funnel</h2>", _funnel(r),
        "<h2>Tokens and dollars</h2>", _money(r),
        "<h2>Lengths</h2>", _lengths(r),
        "<h2>Languages</h2>", _languages(r),
        "<h2>Duplicate clusters</h2>", _dups(r),
        "<h2>Per source</h2>", _sources(r),
        "<h2>Configurations</h2>", _configs(r),
        "<h2>Difficulty</h2>", _difficulty(r),
        "<h2>Drift over the run</h2>", _drift(r),
        "<h2>Runs</h2>", _runs(r),
        f'<script type="application/json" id="report-data">{data}</script>',
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(path)
    return path


def read_embedded(path: str | Path) -> dict[str, Any]:
    """The report dict embedded in an HTML report."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="report-data">') + len('<script type="application/json" id="report-data">')
    end = text.index("</script>", start)
    return json.loads(text[start:end])  # "<\/" is a JSON escape of "</"
