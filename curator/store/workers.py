"""Several workers on one output folder (`curator run MANIFEST --worker I/N`).

Each worker owns the prompts whose first sample key hashes into part I of N (a prompt's n
samples stay together, so `n` still buys them in one request), and has its own lock
(OUT/.lock-wIofN), journal folder (OUT/journal/wIofN/) and shard names (shard-wIofN-*): no two
workers write the same file, and a worker's start-up repairs only its own leftovers. Every worker
also holds OUT/.lock shared, so a run without --worker (which holds it alone) never runs beside
them, and `curator resume OUT` without --worker finishes every part.

Budgets across workers: each worker publishes its session's spend and accepted count on its
board file (OUT/workers/wIofN.json, at most every `_PUBLISH_S`) and reads the others' before
buying (at most every `_READ_S`). So the workers together can overshoot `max_usd` by what they
have in flight plus what each spends in about `_PUBLISH_S + _READ_S`."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import RunError
from curator.store.layout import OutputDir

_PUBLISH_S = 0.1
_READ_S = 0.1


class BadWorker(RunError):
    """A --worker value that names no part, or that does not fit the output folder."""


@dataclass(frozen=True)
class Part:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> "Part":
        try:
            i, n = (int(x) for x in text.strip().split("/"))
        except ValueError:
            raise BadWorker(f"--worker {text}: expected I/N, e.g. --worker 1/3 (part 1 of 3)") from None
        if n < 1 or not 1 <= i <= n:
            raise BadWorker(f"--worker {text}: the part I must be between 1 and N (here N = {n})")
        return cls(i, n)

    def owns(self, first_key: str) -> bool:
        """Whether the prompt whose sample 0 has this key belongs to this part."""
        return int(first_key[:16], 16) % self.count == self.index - 1

    def split(self, prompts: list[Any], keys_out: dict[str, set[str]] | None = None) -> list[Any]:
        """This part's prompts (objects with `keys`: sample index -> key); keys_out["all"] and
        ["mine"] collect every key of the run and of the part."""
        mine = [t for t in prompts if self.owns(t.keys[0])]
        if keys_out is not None:
            keys_out["all"] = {k for t in prompts for k in t.keys.values()}
            keys_out["mine"] = {k for t in mine for k in t.keys.values()}
        return mine

    @property
    def tag(self) -> str:
        return f"w{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def check_split(out: OutputDir, part: Part | None, *, resuming: bool) -> None:
    """Refuse, before anything is touched, a part that does not fit how OUT was split."""
    path = out.workers_file
    split = json.loads(path.read_text())["workers"] if path.is_file() else None
    if part is None:
        return
    if split is None and resuming:
        raise BadWorker(f"{out.path} was started without --worker: `curator resume {out.path}` finishes it in one process")
    if split is not None and split != part.count:
        raise BadWorker(f"--worker {part}: {out.path} is split in {split} parts (--worker I/{split})")


def record_split(out: OutputDir, part: Part) -> None:
    path = out.workers_file
    if not path.is_file():
        write_json(path, {"workers": part.count})


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"  # workers never share a temp file
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class FinishLock:
    """Held while a worker runs the dataset steps (near-dup...) over everything stored, so two
    workers finishing at once take turns instead of replacing each other's verdicts."""

    def __init__(self, out: OutputDir):
        self.path = out.finish_lock
        self.fd = -1

    def __enter__(self) -> "FinishLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        self.fd = -1


@dataclass
class Others:
    usd: float = 0.0  # spent by the other workers' sessions that overlap this one
    accepted: int = 0  # accepted by them since this session started
    received: int = 0  # answers they received since this session started


class Board:
    """This worker's spend on OUT/workers/wIofN.json, and the other workers' read back."""

    def __init__(self, out: OutputDir, part: Part, run_id: str):
        self.out = out
        self.part = part
        self.run_id = run_id
        self.started = time.time()
        self.path = out.board(part.tag)
        self._published = 0.0
        self._read = 0.0
        self._others = Others()
        self._baseline: dict[tuple[str, str], tuple[int, int]] = {}  # (file, run_id) -> (accepted, received) at first sight

    def publish(self, usd: float, accepted: int, received: int, *, force: bool = False, done: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published < _PUBLISH_S:
            return
        self._published = now
        write_json(self.path, {"part": str(self.part), "run_id": self.run_id, "started": self.started, "updated": time.time(),
                                "cost_usd": usd, "accepted": accepted, "received": received, "done": done})

    def others(self) -> Others:
        now = time.monotonic()
        if now - self._read < _READ_S:
            return self._others
        self._read = now
        total = Others()
        folder = self.path.parent
        for p in folder.glob("*.json") if folder.is_dir() else []:
            if p == self.path:
                continue
            try:
                b = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if b.get("updated", 0) < self.started - 1:
                continue  # a session that ended before this one began: not this run's spend
            total.usd += b.get("cost_usd") or 0.0
            # What they had accepted/received when this session first saw them is already counted
            # in the verdicts and shards this session read at its start.
            key = (p.name, b.get("run_id", ""))
            base = self._baseline.setdefault(key, (b.get("accepted", 0), b.get("received", 0)) if b.get("started", 0) < self.started else (0, 0))
            total.accepted += max(0, b.get("accepted", 0) - base[0])
            total.received += max(0, b.get("received", 0) - base[1])
        self._others = total
        return total


def pin_chain(out: OutputDir, meta: dict[str, Any]) -> None:
    """Workers write their verdicts straight into OUT/verdicts, so the chain they judge with is
    written first (a chain replacing another is a re-judging of everything: `curator filter`)."""
    from curator.store.verdicts import write_chain_file

    old = out.chain()
    if old is None:
        out.verdicts.mkdir(parents=True, exist_ok=True)
        write_chain_file(out.chain_file, meta)
    elif old.get("digest") != meta["digest"]:
        raise BadWorker(f"the filter chain changed since {out.path}'s verdicts were written: run `curator filter {out.path}` "
                        "(it re-judges everything with the manifest's chain) before starting workers")
