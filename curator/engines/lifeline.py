"""Worker processes end when the run that started them is gone.

A worker forked or spawned by a run waits on a pipe or queue whose write end its siblings also
hold, so a `kill -9` of the run never reaches it as EOF; without a watch it lives on (~100 MB
each) after every kill. The run's pid is passed in from the run, not read with getppid() in the
child: a run killed while the child was still starting would otherwise be missed."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable


def _watch_pid(pid: int) -> Callable[[], bool] | None:
    """An `alive()` check for the process `pid`; None if it is already gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): signal 0 probes it
        def probe() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True

        return probe if probe() else None
    poller = select.poll()  # not select(): it fails for fds >= 1024
    poller.register(fd, select.POLLIN)
    return lambda: not poller.poll(0)  # a pidfd turns readable when the process ends


def exit_with_parent(run_pid: int, interval_s: float = 0.2) -> None:
    """Start a daemon thread that ends this process as soon as the run `run_pid` is gone.

    The run's pid itself is watched, not our parent: under a fork server (Python 3.14's default
    start method on Linux) the parent is the server, not the run."""
    alive = _watch_pid(run_pid)
    if alive is None:
        os._exit(0)

    def watch() -> None:
        while alive():
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
