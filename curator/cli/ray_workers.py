"""`curator run MANIFEST --workers N --engine ray [--ray-address ADDR]`: the N workers of
`--worker I/N` as Ray tasks. Without an address Ray starts on this machine; with one it joins
that cluster. Every node must see the manifest, its files and OUT at the same paths (a shared
folder: NFS or similar) and have curator installed: that is the user's part. A task whose
process dies is run again by Ray (`max_retries`): the worker resumes its part like
`curator resume OUT --worker I/N` would.

The part's lock (OUT/.lock-wIofN, a POSIX lock) is released by the kernel when its holder dies,
on this host or, through NFS's lock manager, on another. It can outlive the holder for a while:
the tasks of a killed driver are still being killed when the same command runs again, and NFS
keeps a dead machine's lock until its lease ends (90 s by default in NFSv4). So a task that finds
its part locked waits up to `_LOCK_WAIT_S` for it before giving up with the lock's one line."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from curator.errors import RunError

_TASK_RETRIES = 3  # a task whose process or node died runs again (Ray's retry of system failures)
_LOCK_WAIT_S = 120.0


def _ray():
    try:
        import ray
    except ImportError:
        raise RunError("--engine ray needs Ray: install the ray extra (pip install -e '.[ray]')") from None
    return ray


def check_address(address: str) -> None:
    """A cluster that does not answer fails in one line now (ray.init would wait minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as e:
        why = "not HOST:PORT" if isinstance(e, ValueError) else (e.strerror or type(e).__name__)
        raise RunError(f"--ray-address {address}: the Ray cluster does not answer ({why})") from None


def work(manifest_path: str, index: int, count: int) -> dict[str, Any]:
    """One worker, inside a Ray task: `curator run MANIFEST --worker index/count`."""
    from curator.config import load_manifest
    from curator.errors import CuratorError, StoreLocked
    from curator.run import run_manifest
    from curator.store.workers import Part

    part = Part(index, count)
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            res = run_manifest(load_manifest(manifest_path), progress=False, part=part)
            break
        except StoreLocked as e:  # taken before anything is written: trying again is safe
            if time.monotonic() >= deadline:
                return {"worker": str(part), "error": str(e)}
            time.sleep(0.5)
        except CuratorError as e:
            return {"worker": str(part), "error": str(e)}
    s = res.stats
    return {"worker": str(part), "stored": s.stored, "already_stored": s.already_stored, "requests": s.requests,
            "failed_prompts": s.failed, "cost_usd": s.cost_usd if s.cost_known else None, "stop_reason": s.stop_reason,
            "complete": res.complete, "out_dir": str(res.out_dir)}


def run_on_ray(manifest: Path, workers: int, address: str | None) -> list[dict[str, Any]]:
    from curator.config import load_manifest

    if workers < 1:
        raise RunError(f"--workers {workers}: at least 1")
    load_manifest(manifest)  # a bad manifest fails here in one line, not in N tasks
    ray = _ray()
    if address:
        check_address(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = str(Path(__file__).resolve().parents[2])
    # Tasks import curator as this process does (a source checkout works as well as an install).
    ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}})
    try:
        task = ray.remote(num_cpus=1, max_retries=_TASK_RETRIES)(work)
        refs = [task.remote(str(manifest.resolve()), i, workers) for i in range(1, workers + 1)]
        results = []
        for i, ref in enumerate(refs, 1):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as e:
                first = " ".join(str(e).split())[:300]
                results.append({"worker": f"{i}/{workers}", "error": f"the Ray task failed ({type(e).__name__}: {first})"})
        return results
    finally:
        ray.shutdown()
