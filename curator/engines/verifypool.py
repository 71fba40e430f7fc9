"""The pool of long-lived Math-Verify worker processes (`VerifyPool`): each check runs in a worker's
main thread (Math-Verify's timeouts use `signal.alarm`), and the parent enforces its own per-item
deadline: a worker stuck past it (sympy hung in C code) is killed and replaced, and the item comes
back as a timeout. The comparison itself is `curator.engines.mathverify.judge`."""

from __future__ import annotations

import os
import threading
import time
from multiprocessing import connection as mp_connection
from typing import Any

from curator.engines.mathverify import judge


# --------------------------------------------------------------------------------------------
# the worker process

def _worker_main(conn, parent: int) -> None:
    import signal

    from curator.engines.lifeline import exit_with_parent

    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    try:
        import math_verify  # noqa: F401  (warm: sympy, latex2sympy, antlr)

        judge("$1$", "$1$", timeout_s=5)
    except Exception:
        pass
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tid, kwargs = msg
        kwargs = dict(kwargs)
        block = kwargs.pop("_test_block_s", None)
        try:
            if block:
                # Test hook: stand for C code that no signal interrupts (the parent must kill us).
                time.sleep(float(block))
            res = judge(**kwargs)
        except BaseException as e:  # noqa: BLE001 - report, keep serving
            res = {"status": "error", "match": False, "gold_parsed": "", "pred_parsed": "", "extracted": "", "error": f"{type(e).__name__}: {e}"[:300]}
        try:
            conn.send((tid, res))
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self, ctx):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="curator-mathverify")
        self.proc.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.started = 0.0
        self.deadline = 0.0
        self.spawned = time.monotonic()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except Exception:
            pass
        self.proc.join(timeout=5)
        try:
            self.conn.close()
        except Exception:
            pass


class VerifyPool:
    """A small pool of long-lived Math-Verify worker processes with a per-item deadline.

    `run(tasks)` takes dicts of `judge()` keyword arguments and returns one result dict each, in
    order. An item whose worker is still busy `timeout_s + grace_s` after it started comes back
    with status "timeout"; the worker is killed and a new one started. A worker that dies
    (segfault, OOM) yields status "error" for its item and is replaced."""

    def __init__(self, workers: int | None = None, *, grace_s: float = 1.0, start_timeout_s: float = 120.0, idle_s: float | None = 5.0):
        import multiprocessing as mp

        self.n = max(1, int(workers or _cpu_count()))
        # Workers idle this long are stopped (restarting costs ~0.2 s), so a process that judged a
        # batch does not keep children around; None keeps them until close().
        self.idle_s = idle_s
        self._timer: threading.Timer | None = None
        self._last_used = time.monotonic()
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        # fork: workers start in milliseconds with math-verify already imported, and, unlike
        # spawn/forkserver, do not re-run an unguarded `__main__` script. The child only runs
        # math-verify, so locks other threads of the parent held at fork time do not matter.
        method = os.environ.get("CURATOR_MATHVERIFY_START", "fork")
        if method not in mp.get_all_start_methods():
            method = "spawn"
        self._ctx = mp.get_context(method)
        if method == "fork":
            try:
                import math_verify  # noqa: F401  (imported once here, inherited by every worker)
            except Exception:
                pass
        self.start_failures = 0
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.killed = 0  # workers killed for overrunning (for tests / stats)

    def _ensure(self) -> None:
        self._workers = [w for w in self._workers if w.proc.is_alive() or w.task is not None]
        while len(self._workers) < self.n:
            self._workers.append(_Worker(self._ctx))

    def run(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return self._run(tasks)
            finally:
                self._last_used = time.monotonic()
                self._arm()

    def _arm(self) -> None:
        if self.idle_s is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.idle_s, self._idle_stop)
        self._timer.daemon = True
        self._timer.start()

    def _idle_stop(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # busy: the run re-arms the timer when it ends
        try:
            if self._workers and time.monotonic() - self._last_used >= (self.idle_s or 0) * 0.99:
                self._stop_workers()
        finally:
            self._lock.release()

    def _run(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        if not tasks:
            return []
        self._ensure()
        pending = list(range(len(tasks)))[::-1]  # pop() from the end = in order
        done = 0

        def fail(i: int, status: str, err: str = "") -> None:
            results[i] = {"status": status, "match": False, "gold_parsed": "", "pred_parsed": "", "extracted": "", **({"error": err} if err else {})}

        def replace(w: _Worker) -> None:
            w.kill()
            self._workers[self._workers.index(w)] = _Worker(self._ctx)

        while done < len(tasks):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and w.task is None and pending:
                    i = pending.pop()
                    try:
                        w.conn.send((i, tasks[i]))
                    except (OSError, EOFError, BrokenPipeError):
                        pending.append(i)
                        replace(w)
                        continue
                    w.task = i
                    w.started = now
                    w.deadline = now + float(tasks[i].get("timeout_s", 5.0)) + self.grace_s
            conns = [w.conn for w in self._workers]
            waits = [w.deadline - now for w in self._workers if w.task is not None]
            waits += [w.spawned + self.start_timeout_s - now for w in self._workers if not w.ready]
            timeout = max(0.0, min(waits)) if waits else 1.0
            ready = mp_connection.wait(conns, timeout=timeout)
            now = time.monotonic()
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        tid, res = w.conn.recv()
                    except (EOFError, OSError):
                        if w.task is not None:
                            fail(w.task, "error", "worker process died")
                            done += 1
                            w.task = None
                        elif not w.ready:
                            self.start_failures += 1
                            if self.start_failures > 3 * self.n:
                                raise RuntimeError(
                                    f"math-verify worker processes keep dying at start-up ({self.start_failures} times, "
                                    f"exit code {w.proc.exitcode}); is math-verify installed?"
                                )
                        replace(w)
                        continue
                    if tid == "ready":
                        w.ready = True
                        self.start_failures = 0
                        continue
                    if tid == w.task:
                        results[tid] = res
                        done += 1
                        w.task = None
                elif w.task is not None and now >= w.deadline:
                    fail(w.task, "timeout")
                    done += 1
                    w.task = None
                    self.killed += 1
                    replace(w)
                elif not w.ready and now - w.spawned > self.start_timeout_s:
                    replace(w)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the workers (the pool stays usable: the next run starts new ones)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._stop_workers()

    def _stop_workers(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except Exception:
                pass
        for w in self._workers:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.kill()
            try:
                w.conn.close()
            except Exception:
                pass
        self._workers = []


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except Exception:
        return os.cpu_count() or 1


_POOLS: dict[int, VerifyPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: int | None = None) -> VerifyPool:
    """One pool per worker count for the whole process: workers start once and serve every batch."""
    n = max(1, int(workers or _cpu_count()))
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = VerifyPool(n)
        return pool


def close_pools() -> None:
    """Stop every shared pool's workers (new ones start on the next use)."""
    with _POOLS_LOCK:
        for p in _POOLS.values():
            p.close()
        _POOLS.clear()


def close_pool(workers: int | None = None) -> None:
    """Stop the workers of the pool `shared_pool(workers)` returns, if it was started."""
    n = max(1, int(workers or _cpu_count()))
    with _POOLS_LOCK:
        p = _POOLS.pop(n, None)
    if p is not None:
        p.close()


import atexit  # noqa: E402

atexit.register(close_pools)
