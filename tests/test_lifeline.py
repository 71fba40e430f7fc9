"""Worker processes of a killed run end by themselves.

Each case starts a real process that starts a pool and hands its workers a task that blocks
(or kills itself while the workers are still starting); the test sends SIGKILL to that process
only and then watches the workers' pids. Before `curator.engines.lifeline`, a Math-Verify worker that
was busy, or still warming up when the run died, lived on for good (CI's soak found two)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MATHVERIFY_BUSY = """
import threading
from curator.engines.verifypool import VerifyPool
pool = VerifyPool(2, idle_s=None)
t = threading.Thread(target=pool.run, args=([{"gold": "1", "pred": "1", "timeout_s": 60, "_test_block_s": 60}] * 2,), daemon=True)
t.start()
import time
while not all(w.task is not None for w in pool._workers) or len(pool._workers) < 2:
    time.sleep(0.01)
print(" ".join(str(w.proc.pid) for w in pool._workers), flush=True)
time.sleep(120)
"""

MATHVERIFY_STARTING = """
from curator.engines.verifypool import VerifyPool
pool = VerifyPool(2, idle_s=None)
pool._ensure()
print(" ".join(str(w.proc.pid) for w in pool._workers), flush=True)
import time
time.sleep(120)
"""

FILTER_POOL = """
import time
from curator.judge.base import FilterContext
pool = FilterContext(workers=2).pool()
futs = [pool.submit(time.sleep, 120) for _ in range(2)]
while len(pool._processes) < 2:
    time.sleep(0.01)
print(" ".join(str(p) for p in pool._processes), flush=True)
time.sleep(120)
"""

FORKSERVER_POOL = """
if __name__ == "__main__":
    import multiprocessing as mp
    import os
    import time
    from concurrent.futures import ProcessPoolExecutor
    from curator.engines.lifeline import exit_with_parent
    # Python 3.14's default start method: the workers' parent is the fork server, not the run.
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver"), initializer=exit_with_parent, initargs=(os.getpid(),))
    assert pool.submit(sum, [1, 2]).result(timeout=60) == 3  # the watch does not end a live run's workers
    futs = [pool.submit(time.sleep, 120) for _ in range(2)]
    while len(pool._processes) < 2 or not all(f.running() for f in futs):
        time.sleep(0.01)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""

LANGUAGE_POOL = """
if __name__ == "__main__":
    import time
    from curator.judge.filters.language import _pool
    pool = _pool(2)
    # Both workers started and serving (a queued task counts as running() before any worker
    # took it, and a worker still starting would exit on the queue's EOF anyway).
    assert [f.result(timeout=60) for f in [pool.submit(sum, [1, 2]) for _ in range(4)]] == [3] * 4
    futs = [pool.submit(time.sleep, 120) for _ in range(2)]
    while len(pool._processes) < 2 or not all(f.running() for f in futs):
        time.sleep(0.01)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.mark.parametrize("script", [MATHVERIFY_BUSY, MATHVERIFY_STARTING, FILTER_POOL, LANGUAGE_POOL, FORKSERVER_POOL],
                         ids=["mathverify-busy", "mathverify-starting", "filter-pool", "language-pool", "forkserver-pool"])
def test_workers_exit_when_the_run_is_killed(tmp_path: Path, script: str) -> None:
    path = tmp_path / "run.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the script printed no worker pids within 120 s"
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, f"the script printed {line!r}"
        assert all(_alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if _alive(p)]
        assert not left, f"workers still alive 5 s after their run was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
