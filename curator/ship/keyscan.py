"""Key-shaped strings in the text an export ships (prompts, CoT, completions, problem fields).

A dataset row can carry a credential (a scraped forum post, a teacher quoting its own system
prompt): an export says how many it found and where, never the value, and `--push-to-hub`
refuses to publish them unless told to (`--allow-secrets`). Only provider key shapes count
(`sk-`, `hf_`, `Bearer`, AKIA, GitHub, Slack, JWT, private key headers: `curator.redact`):
bare random-looking runs are ordinary in dataset text (hashes, ids), so they do not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from curator.redact import find_keys

# Stored column -> the name a warning uses for it. row_json is split into its own columns.
_FIELDS = {"messages_json": "prompt", "problem": "problem", "gold": "gold", "cot": "cot", "completion": "completion"}


@dataclass
class KeyScan:
    found: int = 0
    rows: int = 0
    fields: Counter = field(default_factory=Counter)  # field name -> key-shaped strings in it
    kinds: Counter = field(default_factory=Counter)  # "sk-", "hf_", ...

    def summary(self) -> str:
        """One line; names fields and kinds of key, never the strings themselves."""
        where = ", ".join(f"{f}: {n}" for f, n in sorted(self.fields.items(), key=lambda kv: (-kv[1], kv[0])))
        kinds = ", ".join(sorted(self.kinds))
        return f"{self.found} key-shaped strings ({kinds}) in {self.rows} exported rows ({where})"


def scan_rows(rows: list[dict[str, Any]]) -> KeyScan:
    scan = KeyScan()
    for r in rows:
        hit = False
        for col, name in _FIELDS.items():
            text = r.get(col)
            kinds = find_keys(text) if isinstance(text, str) else []
            if kinds:
                hit = True
                scan.fields[name] += len(kinds)
                scan.kinds.update(kinds)
        raw = r.get("row_json")
        if isinstance(raw, str) and find_keys(raw):  # cheap on the whole row; per column only when it holds one
            hit = True
            for name, kinds in _row_columns(raw):
                scan.fields[name] += len(kinds)
                scan.kinds.update(kinds)
        scan.rows += hit
    scan.found = sum(scan.fields.values())
    return scan


def _row_columns(raw: str) -> list[tuple[str, list[str]]]:
    try:
        row = json.loads(raw)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        return [("row", find_keys(raw))]
    out = []
    for col, value in row.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        kinds = find_keys(text)
        if kinds:
            out.append((f"row.{col}", kinds))
    return out
