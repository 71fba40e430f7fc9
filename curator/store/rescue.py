"""Rescue journals: where answers go when OUT's own journal cannot be written.

A run whose journal disk fills (or turns read-only) still has answers in flight, already paid
for. They are appended to a journal of the same format on another disk, in a folder named for
OUT's absolute path: under $CURATOR_RESCUE_DIR when set, then ~/.cache/curator/rescue, then
<tempdir>/curator-rescue-<uid>. The next start on OUT (any of those roots, whatever the
environment says then) stores them and removes the file.

Rescue folders are read only when they are private: real directories (no symlinks) owned by this
user that nobody else can write to. A shared temp dir would otherwise let another user plant
answers in a dataset, or read the ones written there."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any

from curator.errors import StoreError
from curator.store.journal import Journal

RESCUE_ENV = "CURATOR_RESCUE_DIR"


def _roots() -> list[Path]:
    roots: list[Path] = []
    if os.environ.get(RESCUE_ENV):
        roots.append(Path(os.environ[RESCUE_ENV]))
    try:
        roots.append(Path.home() / ".cache" / "curator" / "rescue")
    except RuntimeError:  # no HOME and no passwd entry
        pass
    roots.append(Path(tempfile.gettempdir()) / f"curator-rescue-{os.getuid()}")
    return list(dict.fromkeys(roots))


def rescue_dirs(out_dir: Path) -> list[Path]:
    """OUT's rescue folders, in the order a write tries them."""
    tag = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    return [root / tag for root in _roots()]


def _private(path: Path, want_dir: bool = True) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    return kind_ok and st.st_uid == os.getuid() and not st.st_mode & 0o022


def rescue_paths(out_dir: Path) -> list[Path]:
    """The rescue journals OUT has in private folders."""
    return [p for d in rescue_dirs(out_dir) if _private(d.parent) and _private(d)
            for p in sorted(d.glob("*.jsonl")) if _private(p, want_dir=False)]


def _make_private(d: Path) -> bool:
    try:
        d.parent.parent.mkdir(parents=True, exist_ok=True)
        for level in (d.parent, d):
            level.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return False
    return _private(d.parent) and _private(d)


class RescueJournal:
    """Appends to the first rescue folder that takes the rows; `paths` lists every file used."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.paths: list[Path] = []
        self._journal: Journal | None = None

    def append(self, rows: list[dict[str, Any]]) -> None:
        if self._journal is not None:
            try:
                self._journal.append(rows)
                return
            except StoreError:
                self.close()
        for d in rescue_dirs(self.out_dir):
            if not _make_private(d):
                continue
            try:
                j = Journal(d / f"{uuid.uuid4().hex}.jsonl")
            except StoreError:
                continue
            try:
                j.append(rows)
            except StoreError:
                j.close()
                for gone in (j.path.unlink, d.rmdir):
                    try:
                        gone()
                    except OSError:
                        pass
                continue
            self._journal = j
            self.paths.append(j.path)
            return
        raise StoreError(f"no rescue folder takes answers either ({', '.join(str(d.parent) for d in rescue_dirs(self.out_dir))})")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
