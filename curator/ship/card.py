"""The dataset card (README.md with the Hub's YAML header) of an export.

Every number comes from the catalog (DuckDB views over the shards and verdicts), so the card says
what the files hold: size, teacher, sampling params, the filter chain and its funnel, what the data
cost (all stored samples, accepted or not, since rejected ones were paid for too) and that cost per
50,000 accepted samples. No timestamps or absolute paths: the same output gives the same card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from curator.audit.report import PER, step_funnel
from curator.ship.formats import SHAREGPT_ROLES
from curator.store.layout import OutputDir



def _q(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def _clean_url(url: str | None) -> str | None:
    return re.sub(r"//[^/@]+@", "//", url) if url else url


def _manifest(out_dir: Path) -> dict[str, Any]:
    try:
        data = OutputDir(out_dir).manifest_data()
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def collect_summary(out_dir: Path, opts) -> dict[str, Any]:
    """Counts, teacher, params, chain, funnel and cost of `out_dir`, straight from the catalog."""
    from curator.store import catalog

    m = _manifest(out_dir)
    card_cfg = m.get("card") if isinstance(m.get("card"), dict) else {}
    con = catalog.connect(out_dir, read_only=True)
    try:
        stored, accepted, rejected, unjudged, prompts, cost, cost_nulls, pt, ct = _q(
            con,
            """SELECT count(*), count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false),
                      count(*) FILTER (WHERE accepted IS NULL), count(DISTINCT prompt_id), sum(cost_usd),
                      count(*) FILTER (WHERE cost_usd IS NULL), sum(prompt_tokens), sum(completion_tokens) FROM samples""",
        )[0]
        acc_tokens = _q(con, "SELECT avg(completion_tokens), avg(reasoning_tokens), max(completion_tokens) FROM samples WHERE accepted")[0]
        teachers = [
            {"model": r[0], "endpoint": _clean_url(r[1]), "samples": r[2], "accepted": r[3]}
            for r in _q(con, "SELECT model, endpoint, count(*), count(*) FILTER (WHERE accepted) FROM samples GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2")
        ]
        params = [
            {"params": json.loads(r[0]) if r[0] else {}, "samples": r[1]}
            for r in _q(con, "SELECT params_json, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1")
        ]
        sources = [{"source": r[0], "samples": r[1], "accepted": r[2]}
                   for r in _q(con, "SELECT source, count(*), count(*) FILTER (WHERE accepted) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1")]
        judged = _q(con, "SELECT count(DISTINCT key) FROM verdicts")[0][0]
        chain_meta, steps = step_funnel(con, out_dir)
    finally:
        con.close()

    funnel, left = [], None
    for f in steps:
        if f["step"] is not None:
            funnel.append({"step": f["step"], "filter": f["filter"], "params": chain_meta["steps"][f["step"]]["params"],
                           "in": left, "rejected": f["rejected"], "out": f["remaining"],
                           "reasons": {r["reason"] or "rejected": r["count"] for r in f["reasons"]}})
        left = f["remaining"]

    cost_known = stored > 0 and cost_nulls == 0
    total_cost = float(cost or 0.0) if cost_known else None
    return {
        "name": m.get("name") or out_dir.name,
        "license": getattr(opts, "license", None) or card_cfg.get("license") or m.get("license") or "other",
        "stored": stored,
        "accepted": accepted,
        "rejected": rejected,
        "unjudged": unjudged,
        "prompts": prompts,
        "judged": judged,
        "prompt_tokens": int(pt or 0),
        "completion_tokens": int(ct or 0),
        "accepted_mean_completion_tokens": float(acc_tokens[0]) if acc_tokens[0] is not None else None,
        "accepted_mean_reasoning_tokens": float(acc_tokens[1]) if acc_tokens[1] is not None else None,
        "accepted_max_completion_tokens": int(acc_tokens[2]) if acc_tokens[2] is not None else None,
        "teachers": teachers,
        "params": params,
        "sources": sources,
        "chain": {"name": chain_meta["name"], "steps": [{"filter": st["filter"], "params": st["params"]} for st in chain_meta["steps"]]}
        if chain_meta else None,
        "funnel": funnel,
        "cost_usd": total_cost,
        "cost_per_50k_accepted": (total_cost / accepted * PER) if (total_cost is not None and accepted) else None,
    }


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return label
    return "n>1T" if n > 10**12 else "1B<n<10B"


def card_metadata(summary: dict[str, Any], files: dict[str, str], counts: dict[str, int]) -> dict[str, Any]:
    return {
        "license": summary["license"],
        "pretty_name": summary["name"],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "distillation", "reasoning", "chain-of-thought", "curator"],
        "size_categories": [size_category(sum(counts.values()))],
        "configs": [{"config_name": "default", "data_files": [{"split": k, "path": files[k]} for k in files]}],
    }


def money(x: float | None) -> str:
    return "unknown (no price for the model)" if x is None else f"${x:,.4f}"


def _fmt_params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(p.items()) if v is not None) or "(defaults)"


_SHAPES = {
    "hf": "One row per sample with the full record: `id` (the sample key), `prompt_id`, `sample_index`, `source`, `problem`, "
          "`gold`, `request_messages` (the prompt as sent), `messages` (prompt + the assistant answer, CoT placed as below), "
          "`cot`, `completion`, `cot_source`, `finish_reason`, `teacher` (model, endpoint, params), `usage` (token counts), "
          "`cost_usd`, `accepted`, `reject_reason`, `verdicts` (one entry per filter step) and `source_row` (the source row as JSON).",
    "messages": 'TRL conversational language modeling: `{"messages": [{"role": "system", ...}?, {"role": "user", ...}, {"role": "assistant", ...}]}`.',
    "prompt-completion": 'TRL conversational prompt-completion: `{"prompt": [{"role": "system", ...}?, {"role": "user", ...}], "completion": [{"role": "assistant", ...}]}`.',
    "sharegpt": 'ShareGPT as OpenThoughts / Bespoke-Stratos publish it: `{"system": ..., "conversations": [{"from": USER, "value": ...}, {"from": ASSISTANT, "value": ...}]}`.',
    "alpaca": 'Alpaca: `{"instruction": <the user prompt>, "input": "", "output": <the answer>, "system": ...}`.',
}

_COT = {
    "think": "at the start of the assistant content: `<think>\\n{cot}\\n</think>\\n\\n{answer}` (what open-r1 trains on)",
    "field": "in the assistant message's `reasoning_content` field; `content` holds the answer alone (chat templates such as Qwen3's read it)",
    "thought-solution": "Bespoke-Stratos / OpenThoughts style: `<|begin_of_thought|>\\n\\n{cot}\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\n{answer}\\n\\n<|end_of_solution|>`",
}


def _load_snippet(opts, files: dict[str, str], repo_id: str | None) -> str:
    lines = ["```python"]
    if repo_id:
        lines += ["from datasets import load_dataset", "", f'ds = load_dataset("{repo_id}")']
    elif opts.format == "hf":
        df = ", ".join(f'"{k}": "{v}"' for k, v in files.items())
        lines += ["from datasets import load_dataset, load_from_disk", "",
                  "# from this directory:", f'ds = load_dataset("parquet", data_files={{{df}}})',
                  "# or, with the exact features and no conversion:", 'ds = load_from_disk("arrow")']
    else:
        df = ", ".join(f'"{k}": "{v}"' for k, v in files.items())
        lines += ["from datasets import load_dataset", "", "# from this directory:", f'ds = load_dataset("json", data_files={{{df}}})']
    if opts.format in ("messages", "prompt-completion") or (opts.format == "hf"):
        col = ' ds["train"].select_columns(["messages"])' if opts.format == "hf" else ' ds["train"]'
        lines += ["", "# SFT with TRL (chat template applied by the trainer):", "from trl import SFTConfig, SFTTrainer",
                  f"trainer = SFTTrainer(model=..., train_dataset={col.strip()}, args=SFTConfig(...))"]
    lines.append("```")
    return "\n".join(lines)


def render_card(summary: dict[str, Any], opts, files: dict[str, str], counts: dict[str, int], name: str,
                repo_id: str | None = None, extras: list[str] = ()) -> str:
    meta = card_metadata(summary, files, counts)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).strip()
    exported = sum(counts.values())
    teachers = summary["teachers"]
    models = ", ".join(f"`{t['model']}`" for t in teachers) or "(none)"
    out = ["---", header, "---", "", f"# {summary['name']}", ""]
    out += [f"Chain-of-thought distillation data: answers of {models} to {summary['prompts']} prompts, "
            f"filtered by curator and exported as **{opts.format}** for supervised fine-tuning of a student model.", ""]
    out += ["## Size", "", "| | |", "|---|---|",
            f"| samples stored | {summary['stored']} |",
            f"| prompts | {summary['prompts']} |",
            f"| accepted | {summary['accepted']} |",
            f"| rejected | {summary['rejected']} |",
            f"| never judged | {summary['unjudged']} |",
            f"| exported | {exported} |"]
    out += [f"| split {k} | {v} |" for k, v in counts.items()]
    out += [f"| prompt tokens (all stored) | {summary['prompt_tokens']} |",
            f"| completion tokens (all stored) | {summary['completion_tokens']} |"]
    if summary["accepted_mean_completion_tokens"] is not None:
        out += [f"| mean completion tokens (accepted) | {summary['accepted_mean_completion_tokens']:.1f} |",
                f"| max completion tokens (accepted) | {summary['accepted_max_completion_tokens']} |"]
    out += [""]
    split_note = (f"Test prompts are picked by a seeded hash (seed {opts.seed}, test size {opts.test_size}); all samples of one "
                  f"prompt are in the same split. Rows are ordered by a seeded hash of their key.")
    out += [split_note, ""]
    if opts.include_rejected:
        out += ["This export includes **rejected** (and never judged) samples with their verdicts: filter on `accepted` before training.", ""]
    else:
        out += ["Only accepted samples (every filter step passed) are exported.", ""]

    out += ["## Teacher and sampling", "", "| model | endpoint | samples | accepted |", "|---|---|---|---|"]
    out += [f"| `{t['model']}` | {t['endpoint']} | {t['samples']} | {t['accepted']} |" for t in teachers]
    out += ["", "Sampling params as sent:", ""]
    out += [f"- {_fmt_params(p['params'])} ({p['samples']} samples)" for p in summary["params"]]
    out += [""]

    out += ["## Filter chain and funnel", ""]
    chain = summary["chain"]
    if not chain:
        out += ["No filter chain has judged these samples.", ""]
    else:
        out += [f"Chain `{chain['name']}`: every step judges every sample; a sample is accepted when all steps pass. "
                f"{summary['judged']} samples judged.", "",
                "| step | filter | params | in | rejected | out | reasons |", "|---|---|---|---|---|---|---|"]
        for f in summary["funnel"]:
            reasons = ", ".join(f"{r}: {n}" for r, n in f["reasons"].items()) or "-"
            params = json.dumps(f["params"], sort_keys=True) if f["params"] else "-"
            out.append(f"| {f['step']} | {f['filter']} | `{params}` | {f['in']} | {f['rejected']} | {f['out']} | {reasons} |")
        out += [""]

    out += ["## Cost", "", "| | |", "|---|---|",
            f"| cost of all stored samples | {money(summary['cost_usd'])} |",
            f"| cost per 50k accepted samples | {money(summary['cost_per_50k_accepted'])} |", "",
            "The cost counts every sample bought, rejected ones included, at the prices curator knew for the model.", ""]

    out += ["## Format", "", _SHAPES[opts.format].replace("USER", json.dumps(_roles(opts)[0])).replace("ASSISTANT", json.dumps(_roles(opts)[1])), ""]
    out += [f"The chain of thought is {_COT[opts.cot]}.", ""]
    if opts.system is None:
        out += ["The prompt is the request as sent to the teacher, its system message included when it had one.", ""]
    elif opts.system == "":
        out += ["The prompt is the request as sent to the teacher, without its system message.", ""]
    else:
        out += ["The prompt is the request as sent to the teacher, with this system message instead of the teacher's:", "",
                "```text", opts.system, "```", ""]
    out += ["## Files", ""]
    out += [f"- `{v}`: {k} split ({counts.get(k, 0)} rows)" for k, v in files.items()]
    extra_doc = {"dataset_info.json": f"LLaMA-Factory dataset entries (`{name}`, ...): put this directory as `dataset_dir`",
              "axolotl.yaml": "axolotl `datasets:` / `test_datasets:` entries"}
    out += [f"- `{k}`: {v}" for k, v in extra_doc.items() if k in extras and not repo_id]
    if opts.format == "hf" and not repo_id:
        out += ["- `arrow/`: the same DatasetDict saved with `save_to_disk`"]
    out += ["", "## How to load", "", _load_snippet(opts, files, repo_id), ""]
    out += ["## License", ""]
    if summary["license"] == "other":
        out += ["`other`: not set. Check the terms of the teacher's outputs and of the source prompts, then export with `--license`.", ""]
    else:
        out += [f"`{summary['license']}`. Check that the teacher's terms and the source prompts' license allow it.", ""]
    return "\n".join(out)


def _roles(opts) -> tuple[str, str]:
    return SHAREGPT_ROLES.get(getattr(opts, "sharegpt_roles", "human-gpt"), ("human", "gpt"))
