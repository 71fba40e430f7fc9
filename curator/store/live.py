"""Figures of a session still running, for `curator status` and `report` to read while it runs.

A session with a teacher fleet replaces OUT/live/<run_id>.json about once a second, from a task
of its own (never from the request path): its per-replica figures so far (requests, errors,
tokens, latency histogram, in flight, up or out). The receipt takes over when the session ends,
and the file goes; a killed session's file stays, so what it bought is still counted.

Readers merge them with the receipts (a session is counted once: by its receipt if it has one).
A file not replaced for `STALE_S`, or written by a process of this host that is gone, belongs to a
session that is no longer running. The next sampling session, holding the writer lock, folds a
dead session's file into a receipt of its own (`fold_dead`): receipt written first, file removed
after, and readers list the live files before the receipts, so it is counted once at every moment."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from curator.store.layout import OutputDir
from curator.store.workers import write_json

EVERY_S = 1.0
STALE_S = 10.0


def start_live(out: OutputDir, run_id: str, worker: Any, replicas: Callable[[], list[dict[str, Any]]]) -> asyncio.Task:
    """The publishing task (cancel it when the session's requests end); `replicas` is read on the
    event loop, so the figures are one consistent snapshot; the file is written in a thread."""
    path = out.live(run_id)
    head = {"run_id": run_id, "worker": str(worker) if worker else None, "host": socket.gethostname(), "pid": os.getpid()}

    async def publish() -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            data = {**head, "updated": time.time(), "replicas": replicas()}
            try:
                await asyncio.to_thread(write_json, path, data)
            except OSError:
                pass  # a full or read-only disk: the run goes on, status shows the receipt later

    return asyncio.get_running_loop().create_task(publish())


def read_live(out: OutputDir, skip: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The live files of sessions not in `skip` (run ids with a receipt), each with `running`."""
    d = out.live_dir
    now, host = time.time(), socket.gethostname()
    found = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # removed (its receipt is written) between the listing and the read
        if data.get("run_id") in skip:
            continue
        data["running"] = now - data.get("updated", 0) < STALE_S and (data.get("host") != host or _alive(data.get("pid")))
        found.append(data)
    return found


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_live(out: OutputDir, run_id: str) -> None:
    Path(out.live(run_id)).unlink(missing_ok=True)


def fold_dead(out: OutputDir, exclusive: bool) -> int:
    """Called by a sampling session that holds OUT's writer lock: each live file whose session is
    dead becomes that session's receipt (its figures, marked `killed`), then goes; returns how
    many. Dead: its process is gone on this host, or, under the exclusive lock (no other writer
    anywhere), any file at all. A worker (shared lock) leaves other hosts' files to a later one."""
    host, folded = socket.gethostname(), 0
    for data in read_live(out):
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.startswith("."):
            continue
        receipt = Path(out.receipts) / f"{run_id}.json"
        if not receipt.exists():
            if not (exclusive or (data.get("host") == host and not _alive(data.get("pid")))):
                continue
            write_json(receipt, {"run_id": run_id, "worker": data.get("worker"), "complete": False, "killed": True,
                                 "ended_at": data.get("updated"), "host": data.get("host"), "pid": data.get("pid"),
                                 "note": "killed session: written by a later session from its last live figures (replicas only)",
                                 "replicas": data.get("replicas") or None})
        remove_live(out, run_id)
        folded += 1
    return folded
