"""The configurations an output folder holds: one small JSON file per configuration a run used
(`OUT/configs/<id>.json`: endpoint, model, params, template, and the ids whose requests were
found byte-identical to it), written when a run starts, read by the report and the export.

Every stored sample carries its configuration's id (`config_id`); samples stored before that
column existed get a derived one in the catalog (`catalog.CONFIG_ID_SQL`)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from curator.store.layout import OutputDir


def load_configs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """id -> the configuration as recorded; unreadable files are skipped (the rows still say which id)."""
    d = OutputDir(out_dir).configs
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            out[data["id"]] = data
    return out


def save_config(out_dir: Path, entry: dict[str, Any]) -> None:
    """Record a configuration (merging the ids found identical to it with those recorded before)."""
    d = OutputDir(out_dir).configs
    d.mkdir(parents=True, exist_ok=True)
    old = load_configs(out_dir).get(entry["id"], {})
    entry = {**entry, "same_requests_as": sorted(set(old.get("same_requests_as", [])) | set(entry.get("same_requests_as", [])))}
    path = d / f"{entry['id']}.json"
    tmp = d / f".{entry['id']}.{uuid.uuid4().hex[:8]}.tmp"  # workers of one run write it side by side
    tmp.write_text(json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
