"""One lock protocol for every command that writes to an output folder.

Writers (`run`, `resume`, `filter`, `batch write/read`, `estimate`'s pilot, and anything else that
writes shards or verdicts) hold OUT/.lock:
- exclusively (a plain run, resume, filter): no other writer at all;
- shared, plus their own OUT/.lock-wIofN exclusively (the workers of `--worker I/N`): the workers
  of one run write side by side, and anything exclusive (a run without --worker, a filter) is
  refused while any of them runs, and they are refused while it runs.
The holder writes who it is (pid, host, command line, since) into the file it holds exclusively,
so a refused writer names it in one line; nothing is touched before the lock is taken.

POSIX record locks (lockf), not flock: they die with their process (a kill -9 leaves no stale
lock: the next writer simply takes it, and the holder file it finds is overwritten), they are
not inherited by forked children (filter pools), and NFS carries them to the server (NLM on
NFSv3, built in on NFSv4), so writers on several machines exclude each other. On NFS a lock
whose machine died is released when the server's lease expires (about 90 s on NFSv4; NFSv3
waits for the client to reboot), and a mount with `nolock`/`local_lock` keeps locks per machine:
then only the writers of one machine exclude each other.

Readers (status, report, export, view) take no lock: `holders(OUT)` tells them, without taking
anything (F_GETLK, works on a read-only folder), whether a writer is at work."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curator.errors import StoreError, StoreLocked, os_error_text
from curator.store.layout import OutputDir

_HELD: set[str] = set()  # POSIX locks do not exclude the process that holds them: track our own
_FLOCK = "hhqqi4x"  # Linux struct flock: l_type, l_whence, l_start, l_len, l_pid
_deferred = threading.local()


def _me(command: str) -> dict[str, Any]:
    from curator.redact import redact

    cli = sys.argv and sys.argv[0].endswith(("curator", os.path.join("curator", "__main__.py")))
    line = " ".join(["curator", *sys.argv[1:]]) if cli and len(sys.argv) > 1 else f"curator {command}"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": redact(line)[:300], "since": time.time()}


def _conflict(fd: int, kind: int) -> tuple[int, int] | None:
    """(lock type, pid) of a lock another process holds that would block `kind`, or None. Never
    takes a lock (a probe that took one could make a writer starting meanwhile fail)."""
    if not sys.platform.startswith("linux"):
        try:  # elsewhere struct flock differs: probe by taking and dropping (a rare false refusal)
            fcntl.lockf(fd, kind | fcntl.LOCK_NB)
        except OSError:
            return (fcntl.F_WRLCK if kind == fcntl.LOCK_EX else fcntl.F_RDLCK, 0)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    want = fcntl.F_WRLCK if kind == fcntl.LOCK_EX else fcntl.F_RDLCK
    res = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, want, 0, 0, 0, 0))
    l_type, _, _, _, pid = struct.unpack(_FLOCK, res)
    return None if l_type == fcntl.F_UNLCK else (l_type, pid)


def _read_holder(path: Path, pid: int = 0) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or not data.get("pid"):
        data = {"pid": pid or None}  # the holder wrote nothing (yet, or an older curator)
    data["lock"] = str(path)
    return data


def _probe(path: Path, kind: int) -> tuple[int, int] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _conflict(fd, kind)
    except OSError:
        return None  # a filesystem without locks (NFS mounted nolock...): nothing to tell
    finally:
        os.close(fd)


def holders(out: OutputDir | Path | str) -> list[dict[str, Any]]:
    """Who writes to OUT right now (one dict per process: pid, host, command, since, lock); empty
    when nobody does. Takes no lock and writes nothing (read-only folders are fine)."""
    out = out if isinstance(out, OutputDir) else OutputDir(out)
    if str(out.lock.resolve()) in _HELD:
        return []  # this process writes (and closing a probe's fd would drop its own lock)
    c = _probe(out.lock, fcntl.LOCK_EX)
    if c is None:
        return []
    if c[0] == fcntl.F_WRLCK:
        return [_read_holder(out.lock, c[1])]
    found = []  # shared: the workers of a --worker I/N run
    for p in sorted(out.path.glob(".lock-w*of*")):
        if str(p.resolve()) in _HELD:
            continue
        w = _probe(p, fcntl.LOCK_EX)
        if w is not None:
            found.append({**_read_holder(p, w[1]), "worker": p.name[len(".lock-"):]})
    return found or [{"pid": c[1] or None, "lock": str(out.lock)}]


def describe(found: list[dict[str, Any]]) -> str:
    """`curator run m.yaml (pid 12, host h, since 2026-11-28 03:50:12 UTC)`, joined with '; '."""
    parts = []
    for h in found:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h["since"])) if h.get("since") else "?"
        who = h.get("command") or "a curator process"
        parts.append(f"{who} (pid {h.get('pid') or '?'}, host {h.get('host') or '?'}, since {since})")
    return "; ".join(parts) if parts else "a curator process (holder unknown)"


def in_progress_note(out: OutputDir | Path | str, found: list[dict[str, Any]]) -> str:
    """The line readers print while a writer is at work."""
    return (f"note: {out} is being written right now by {describe(found)}: these figures are a consistent "
            f"snapshot as of {time.strftime('%H:%M:%S')} and will change")


class WriterLock:
    """OUT's writer lock for one command. part: worker I of N (shared OUT/.lock + its own lock).
    Raises StoreLocked (one line naming the holder) when another writer holds it, StoreError when
    OUT cannot be written at all (a read-only archive)."""

    def __init__(self, out: OutputDir | Path | str, command: str, part: Any = None):
        self.out = out if isinstance(out, OutputDir) else OutputDir(out)
        self.command = command
        self.part = part
        self._fds: list[int] = []
        self._names: list[str] = []
        me = self.me = _me(command)
        try:
            if part is None:
                self._take(self.out.lock, fcntl.LOCK_EX, "another curator process is writing here", me)
            else:
                self._take(self.out.lock, fcntl.LOCK_SH, "a curator process without --worker is writing here", None)
                self._take(self.out.worker_lock(part.tag), fcntl.LOCK_EX, f"worker {part} is already running here", me)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, mode: int, busy: str, me: dict[str, Any] | None) -> None:
        name = str(path.resolve())
        if name in _HELD:
            raise StoreLocked(f"{self.out}: {busy} (lock held on {path}, by this process); nothing was changed")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.out}: cannot take the writer lock {path}: {os_error_text(e)}; `{self.me['command']}` writes "
                             "to the output folder (a read-only copy can be read with status, report, export --to DIR, view)") from None
        try:
            fcntl.lockf(fd, mode | fcntl.LOCK_NB)
        except OSError:
            who = holders(self.out) if path == self.out.lock else [_read_holder(path)]
            os.close(fd)
            raise StoreLocked(f"{self.out}: {busy}: {describe(who)} (lock held on {path}); "
                              f"`{self.me['command']}` was refused and nothing was changed") from None
        if me is not None:
            try:
                data = json.dumps(me).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except OSError:
                pass  # a full disk: the lock holds all the same, only its holder goes unnamed
        _HELD.add(name)
        self._fds.append(fd)
        self._names.append(name)

    def release(self) -> None:
        # The holder file is left as it is: emptying it would race a writer taking it next.
        while self._fds:
            os.close(self._fds.pop())
            _HELD.discard(self._names.pop())

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def critical() -> Iterator[None]:
    """A Ctrl-C arriving inside waits for the end (then goes to whoever would have had it): a
    compaction, a verdict swap or the catalog's bookkeeping is never cut in two, so a second
    Ctrl-C during a run's shutdown leaves no duplicate shard and no half-done state behind. Only
    the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread() or getattr(_deferred, "depth", 0):
        yield
        return
    prev = signal.getsignal(signal.SIGINT)
    _deferred.depth, _deferred.hit = 1, False

    def later(signum: int, frame: Any) -> None:
        if not _deferred.hit:
            print("curator: interrupt received; finishing the write in progress first", file=sys.stderr, flush=True)
        _deferred.hit = True

    try:
        signal.signal(signal.SIGINT, later)
    except (ValueError, OSError):
        _deferred.depth = 0
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev)
        _deferred.depth = 0
        if _deferred.hit and callable(prev):
            prev(signal.SIGINT, None)  # asyncio's handler cancels its task, the default one raises KeyboardInterrupt
