"""The batch ledger (OUT/batches/ledger.jsonl): what was uploaded, which batch was made of it, how
each batch ended, so that a kill at any moment never buys the same rows twice.

Append-only JSON lines, each fsynced before the step it records counts as done:
    {"ev": "file", "file_id", "rows": {custom_id: [sample keys]}, "bytes", "at"}   uploaded, no batch yet
    {"ev": "batch", "file_id", "batch_id", "at", "expires_at"}                      created (or adopted)
    {"ev": "state", "batch_id", "status", "counts", "at"}                           a state seen while polling
    {"ev": "row_errors", "batch_id", "errors": {sample key: reason}, "at"}         rows the provider failed
    {"ev": "done", "batch_id", "status", "stored", "at"}                            results stored (never before)
    {"ev": "offline", "path", "rows": {custom_id: [sample keys]}, "at"}            `curator batch write`
A line cut short by a kill is the last one; it is skipped (its step did not happen)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("completed", "expired", "failed", "cancelled")


@dataclass
class BatchEntry:
    batch_id: str
    file_id: str
    created: float
    expires_at: float | None = None
    status: str = "validating"
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False
    stored: int = 0


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, dict[str, Any]] = {}  # file_id -> {"rows", "bytes", "at", "batch_id"}
        self.batches: dict[str, BatchEntry] = {}
        self.row_errors: dict[str, list[str]] = {}  # sample key -> reasons, oldest first
        self.offline: dict[str, list[str]] = {}  # custom_id -> keys, from `curator batch write`
        if path.exists():
            with path.open("rb") as f:
                for raw in f:
                    try:
                        self._apply(json.loads(raw))
                    except ValueError:
                        continue  # the line a kill cut short

    def _apply(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "file":
            self.files[ev["file_id"]] = {"rows": ev["rows"], "bytes": ev.get("bytes"), "at": ev.get("at"), "batch_id": None}
        elif kind == "batch":
            self.files.setdefault(ev["file_id"], {"rows": {}, "bytes": None, "at": None, "batch_id": None})["batch_id"] = ev["batch_id"]
            self.batches[ev["batch_id"]] = BatchEntry(ev["batch_id"], ev["file_id"], ev.get("at") or 0.0, ev.get("expires_at"))
        elif kind == "state" and ev["batch_id"] in self.batches:
            b = self.batches[ev["batch_id"]]
            b.status, b.counts = ev["status"], ev.get("counts") or {}
        elif kind == "row_errors":
            for key, reason in ev["errors"].items():
                self.row_errors.setdefault(key, []).append(reason)
        elif kind == "done" and ev["batch_id"] in self.batches:
            b = self.batches[ev["batch_id"]]
            b.done, b.status, b.stored = True, ev.get("status") or b.status, ev.get("stored") or 0
        elif kind == "offline":
            self.offline.update(ev["rows"])

    def record(self, kind: str, **fields: Any) -> None:
        ev = {"ev": kind, **fields, "at": fields.get("at") or time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(ev, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._apply(ev)

    # -- what is outstanding -------------------------------------------------------------------

    def unbatched_files(self) -> list[str]:
        """Uploaded files no batch is known for: a kill came between upload and create (or during
        create, whose batch may exist on the provider's side)."""
        return [fid for fid, f in self.files.items() if f["batch_id"] is None]

    def open_batches(self) -> list[BatchEntry]:
        return [b for b in self.batches.values() if not b.done]

    def rows_of(self, batch: BatchEntry) -> dict[str, list[str]]:
        return self.files.get(batch.file_id, {}).get("rows") or {}

    def pending_keys(self) -> set[str]:
        """Keys in a batch still to come (or in a file about to become one): not to be sent again."""
        keys: set[str] = set()
        for fid, f in self.files.items():
            bid = f["batch_id"]
            if bid is None or not self.batches[bid].done:
                for ks in f["rows"].values():
                    keys.update(ks)
        return keys


def summary(ledger_path: Path) -> list[dict[str, Any]]:
    """Every batch of an output folder as its ledger last saw it (for `curator status`). A batch
    the provider finished whose answers are not stored yet shows as "downloading", never as done."""
    if not ledger_path.exists():
        return []
    led = Ledger(ledger_path)
    now = time.time()
    rows = []
    for b in led.batches.values():
        state = b.status
        if not b.done and b.status in TERMINAL:
            state = "downloading"
        elif not b.done and b.status == "validating":
            state = "submitted"
        rows.append({"id": b.batch_id, "state": state, "collected": b.done, "requests": len(led.rows_of(b)),
                     "counts": b.counts, "stored": b.stored, "age_s": now - b.created if b.created else None,
                     "expires_at": b.expires_at})
    for fid in led.unbatched_files():
        rows.append({"id": None, "file_id": fid, "state": "uploaded", "collected": False, "requests": len(led.files[fid]["rows"]),
                     "counts": {}, "stored": 0, "age_s": None, "expires_at": None})
    return rows
