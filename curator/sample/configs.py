"""A run's configuration: what enters every sample key besides the prompt's own row (endpoint,
model, sampling params, prompt template), its id, and the start-of-run check that an output
folder holds other configurations.

Keys already keep configurations apart (a changed temperature never reuses an answer); the id,
stored with every sample (`config_id`), keeps the report and the export from mixing them."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from curator.config import Manifest
from curator.sample.sampler import normalise_endpoint
from curator.store.configs import load_configs, save_config


def describe(manifest: Manifest) -> dict[str, Any]:
    """The configuration as recorded in OUT/configs/<id>.json and shown by the report."""
    return describe_data(manifest.redacted())


def describe_data(data: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a manifest as written to disk (`Manifest.redacted`, which the resolved
    manifest is): a resumed run and every reader of OUT find the same id, and nothing secret is in it."""
    t = data.get("teacher") or {}
    params = {k: v for k, v in (t.get("params") or {}).items() if v is not None and k != "n"}
    template = {k: v for k, v in (data.get("prompt") or {}).items() if v is not None}
    spec = {"endpoint": normalise_endpoint(str(t.get("base_url") or "")), "model": t.get("model"), "params": params, "template": template}
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return {
        "id": "c" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12],
        **spec,
        "template_sha256": hashlib.sha256(json.dumps(template, sort_keys=True).encode("utf-8")).hexdigest()[:12],
    }


def configuration_id(manifest: Manifest) -> str:
    return describe(manifest)["id"]


def current_id(out_dir: Path) -> str | None:
    """The id of the configuration OUT's latest run used (read from its resolved manifest as
    written, so a folder moved to a machine without its source or template files still tells);
    None when there is none."""
    from curator.store.layout import OutputDir

    out = OutputDir(out_dir)
    if not out.is_output_dir():
        return None
    data = out.manifest_data()
    return describe_data(data)["id"] if isinstance(data, dict) and isinstance(data.get("prompt"), dict) else None


def current_ids(out_dir: Path) -> set[str]:
    """The latest run's configuration and those whose requests it found byte-identical (a
    template edit that renders alike, samples stored before ids existed)."""
    cid = current_id(out_dir)
    if cid is None:
        return set()
    return {cid, *load_configs(out_dir).get(cid, {}).get("same_requests_as", [])}


def _params_of(entry: dict[str, Any]) -> dict[str, Any]:
    p = entry.get("params")
    if isinstance(p, str):  # a legacy group: its params_json
        try:
            p = json.loads(p)
        except ValueError:
            p = {}
    return {k: v for k, v in (p or {}).items() if k != "n"}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two configurations, as short phrases ("temperature 0.6 (now 0.9)")."""
    out = []
    for k in ("model", "endpoint"):
        if old.get(k) != new.get(k):
            out.append(f"{k} {old.get(k)} (now {new.get(k)})")
    po, pn = _params_of(old), _params_of(new)
    for k in sorted(set(po) | set(pn)):
        if po.get(k) != pn.get(k):
            shown = "changed" if k == "extra_body" else f"{po.get(k)} (now {pn.get(k)})"
            out.append(f"{k} {shown}")
    if "template" not in old:
        out.append("template unknown (stored before configuration ids)")
    elif old.get("template") != new.get("template"):
        out.append("template differs")
    return out or ["same requests"]


def check_at_start(out_dir: Path, manifest: Manifest, run_keys: set[str], store: Any = None) -> list[str]:
    """Record this run's configuration and say, in one line, when OUT holds samples of others:
    what differs and how many samples. Stored samples whose keys this run would ask for are its
    own (byte-identical requests), whatever id they carry. `store` (a SampleStore): stamps every
    answer it stores from now on with this configuration's id."""
    from curator.store import catalog

    me = describe(manifest)
    if store is not None:
        store.config_id = me["id"]
    others: list[dict[str, Any]] = []
    same: list[str] = []
    if _has_shards(out_dir):
        import pyarrow as pa

        con = catalog.connect(out_dir, read_only=True)
        try:
            con.register("run_keys", pa.table({"key": pa.array(list(run_keys), pa.string())}))
            rows = con.execute(
                """SELECT config_id, count(*) AS n, count(r.key) AS mine, any_value(model) AS model,
                          any_value(endpoint) AS endpoint, any_value(params_json) AS params, min(seq) AS first
                   FROM shards_raw s LEFT JOIN run_keys r USING (key) GROUP BY 1 ORDER BY first""").fetchall()
        finally:
            con.close()
        known = load_configs(out_dir)
        for cid, n, mine, model, endpoint, params, _ in rows:
            if cid == me["id"]:
                continue
            if mine:
                same.append(cid)
                continue
            others.append({"n": n, **(known.get(cid) or {"id": cid, "model": model, "endpoint": endpoint, "params": params})})
    save_config(out_dir, {**me, "same_requests_as": same})
    if not others:
        return []
    total = sum(o["n"] for o in others)
    what = "; ".join(f"{o['n']} of {o['id']}: {', '.join(differences(o, me))}" for o in others[:3])
    more = f"; and {len(others) - 3} more" if len(others) > 3 else ""
    line = (f"{out_dir} holds {total} samples of {len(others)} other configuration{'s' if len(others) > 1 else ''} "
            f"({what}{more}); this run is {me['id']}: `curator report` shows each, `curator export` takes this one "
            f"(--all-configs: all)")
    print(f"note: {line}", file=sys.stderr, flush=True)
    return [line]


def _has_shards(out_dir: Path) -> bool:
    from curator.store.layout import OutputDir

    d = OutputDir(out_dir).shards
    return d.is_dir() and any(d.glob("*.parquet"))
