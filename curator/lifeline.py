"""Worker processes end when the run that started them is gone.

A worker forked or spawned by a run waits on a pipe or queue whose write end its siblings also
hold, so a `kill -9` of the run never reaches it as EOF; without a watch it lives on (~100 MB
each) after every kill. The parent's pid is passed in from the parent, not read with getppid()
in the child: a run killed while the child was still starting would otherwise be missed."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, interval_s: float = 0.2) -> None:
    """Start a daemon thread that ends this process as soon as `parent` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
