"""Figures of a session still running, for `curator status` and `report` to read while it runs.

A session with a teacher fleet replaces OUT/live/<run_id>.json about once a second, from a task
of its own (never from the request path): its per-replica figures so far (requests, errors,
tokens, latency histogram, in flight, up or out). The receipt takes over when the session ends,
and the file goes; a killed session's file stays, so what it bought is still counted.

Readers merge them with the receipts (a session is counted once: by its receipt if it has one).
A file not replaced for `STALE_S`, or written by a process of this host that is gone, belongs to a
session that is no longer running."""

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


def read_live(out: OutputDir, skip: set[str]) -> list[dict[str, Any]]:
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
