"""The event loop a sampling session runs on, and what Ctrl-C does to it.

uvloop when installed: it cuts the client's event-loop overhead per request (bench/sampling.py).
The first Ctrl-C cancels the session: requests in flight are dropped (never acknowledged, so
resume asks for them again), answers already received are journaled, and the caller compacts.
Later Ctrl-Cs print a note and wait for that, where asyncio's own handler would raise
KeyboardInterrupt into the loop's teardown (its executor thread then prints a traceback, and a
half-stopped store was what a second Ctrl-C left). `kill -9` still stops at once and loses
nothing acknowledged.

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
import signal
import sys
import threading
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
    """A sampling session: `run_session` with rare garbage collections."""
    with fewer_collections():
        run_session(coro)


def run_session(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end; raises KeyboardInterrupt after it stopped because of a Ctrl-C."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    if threading.current_thread() is not threading.main_thread():
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)
        return
    state: dict[str, Any] = {"task": None, "loop": None, "hits": 0}

    async def main() -> None:
        state["task"], state["loop"] = asyncio.current_task(), asyncio.get_running_loop()
        await coro

    def on_sigint(signum: int, frame: Any) -> None:
        state["hits"] += 1
        task, loop = state["task"], state["loop"]
        if state["hits"] == 1 and task is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)
        else:
            print("curator: stopping; the answers already received are being stored (kill -9 loses nothing stored either)",
                  file=sys.stderr, flush=True)

    prev = signal.signal(signal.SIGINT, on_sigint)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            try:
                runner.run(main())
            except asyncio.CancelledError:
                if not state["hits"]:
                    raise
    finally:
        signal.signal(signal.SIGINT, prev)
    if state["hits"]:
        raise KeyboardInterrupt
