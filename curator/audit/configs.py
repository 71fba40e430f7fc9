"""The report split by configuration (endpoint, model, params, template: curator/sample/configs.py):
per configuration its samples, accepted samples and dollars, the latest run's marked current.

Configurations whose requests the latest run found byte-identical to its own count as it (the
same rule the export follows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curator.sample.configs import current_id
from curator.store.configs import load_configs


def params_text(params: dict[str, Any] | None) -> str:
    """`temperature=0.6, max_tokens=2048`; extra_body by its keys only (gateways take tokens there)."""
    out = []
    for k, v in sorted((params or {}).items()):
        if k == "n" or v is None:
            continue
        out.append(f"extra_body={{{', '.join(sorted(v))}}}" if k == "extra_body" and isinstance(v, dict) else f"{k}={v}")
    return ", ".join(out)


def _params(entry: dict[str, Any], params_json: str | None) -> dict[str, Any]:
    if isinstance(entry.get("params"), dict):
        return entry["params"]
    try:
        p = json.loads(params_json or "{}")
    except ValueError:
        return {}
    return p if isinstance(p, dict) else {}


def configurations(con, out_dir: Path, accepted: str, samples_from: str) -> list[dict[str, Any]]:
    """One entry per configuration, in the order they were first stored. `accepted` and
    `samples_from` are the report's SQL for "accepted" and its samples relation."""
    cur = con.execute(
        f"""SELECT config_id, count(*) AS samples, count(*) FILTER (WHERE {accepted}) AS accepted,
                   sum(cost_usd) AS usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unknown,
                   sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))::BIGINT AS tokens,
                   any_value(model) AS model, any_value(endpoint) AS endpoint, any_value(params_json) AS params_json,
                   min(seq) AS first_seq, max(seq) AS last_seq
            FROM {samples_from} GROUP BY 1 ORDER BY first_seq""")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    known = load_configs(out_dir)
    now = current_id(out_dir)
    same = set(known.get(now, {}).get("same_requests_as", [])) if now else set()
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        gid = now if r["config_id"] in same else r["config_id"]
        entry = known.get(gid) or {}
        g = groups.get(gid)
        if g is None:
            g = groups[gid] = {
                "id": gid, "current": gid == now, "ids": [],
                "model": entry.get("model") or r["model"], "endpoint": entry.get("endpoint") or r["endpoint"],
                "params": _params(entry, r["params_json"]),
                "template_sha256": entry.get("template_sha256"),  # None: stored before configuration ids
                "samples": 0, "accepted": 0, "usd": 0.0, "unknown": 0, "tokens": 0,
                "first_seq": r["first_seq"], "last_seq": r["last_seq"],
            }
        g["ids"].append(r["config_id"])
        for k in ("samples", "accepted", "unknown", "tokens"):
            g[k] += r[k] or 0
        g["usd"] += r["usd"] or 0.0
        g["last_seq"] = max(g["last_seq"], r["last_seq"])
    out = []
    for g in groups.values():
        unknown = g.pop("unknown")
        g["usd"] = g["usd"] if unknown == 0 else None
        g["usd_per_accepted"] = g["usd"] / g["accepted"] if g["usd"] is not None and g["accepted"] else None
        g["params_text"] = params_text(g["params"])
        out.append(g)
    return out
