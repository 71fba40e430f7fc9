"""Append-only JSONL journal: an answer counts as stored once its line is written and fsynced.

A kill can leave at most a torn last line; `read_journal` skips it (that answer was never
acknowledged, so it is re-requested on resume). Any other line that does not parse (garbled by a
disk or a hand edit) is skipped too, and `scan_journal` says which lines those were."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from curator.errors import store_error
from curator.store.shards import write_all

try:
    from orjson import dumps as _orjson_dumps

    def _line(record: dict[str, Any]) -> bytes:
        return _orjson_dumps(record) + b"\n"
except ImportError:  # pragma: no cover
    def _line(record: dict[str, Any]) -> bytes:
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class Journal:
    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise store_error("creating journal", path, e, path.parent.parent) from None
        self.rows = 0

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(_line(r) for r in records)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as e:
            # A disk that filled mid-write leaves part of a line; cut it off, or the next append
            # would glue a good line onto it and that acknowledged answer would no longer parse.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the torn tail has no newline after it only if nothing else gets appended
            raise store_error("appending to journal", self.path, e, self.path.parent.parent) from None
        self.rows += len(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class JournalScan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of complete lines that did not parse
    torn_tail: bool = False  # a last line without newline: a write cut by a kill, never acknowledged


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        r = json.loads(raw)
    except ValueError:
        return None
    return r if isinstance(r, dict) and isinstance(r.get("key"), str) else None


def scan_journal(path: Path) -> JournalScan:
    scan = JournalScan()
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                scan.torn_tail = True
                break
            r = _parse(raw)
            if r is None:
                if raw.strip():
                    scan.bad_lines.append(n)
                continue
            scan.rows.append(r)
    return scan


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's records; a garbled line is skipped and named on stderr (once per process)."""
    from curator.store.shards import warn

    scan = scan_journal(path)  # a journal holds at most one shard's rows
    for n in scan.bad_lines:
        warn(f"{path}: line {n} is garbled (not a JSON record); skipped, `curator resume` requests its answer again")
    yield from scan.rows
