"""Append-only JSONL journal: an answer counts as stored once its line is written and fsynced.

A kill can leave at most a torn last line; `read_journal` skips it (that answer was never
acknowledged, so it is re-requested on resume)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

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
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.rows = 0

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(_line(r) for r in records)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.rows += len(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # torn write at a kill: never acknowledged
            try:
                yield json.loads(raw)
            except ValueError:
                continue
