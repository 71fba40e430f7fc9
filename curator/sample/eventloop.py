"""The event loop a sampling session runs on, and how the garbage collector behaves meanwhile.

uvloop when installed: it cuts the client's event-loop overhead per request (bench/sampling.py).

A session allocates container objects by the million (jobs, problems and messages at start-up;
coroutines, futures and buffers of thousands of requests in flight) and almost none of them is
a reference cycle, so reference counting frees them. CPython's default thresholds still run a
young collection every 700 allocations, and each of them walked every request in flight again:
a quarter of the client's CPU at 512 in flight, and a third of the start-up's for 20k prompts.
So while a session runs, young collections run every 50k objects, and what is alive when it
starts (modules, manifest; then the jobs, when the loop starts) is frozen out of the full
collections. Everything is back to normal afterwards."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

_THRESHOLDS = (50_000, 20, 10)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Rare collections inside the block; nested blocks freeze what was built in between."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def run_loop(coro: Coroutine[Any, Any, None]) -> None:
    with fewer_collections():
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
            return
        uvloop.run(coro)
