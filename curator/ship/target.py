"""The export folder: export never overwrites or deletes a file it did not write.

It writes into a folder that is new, empty, or holds an earlier export of its own and nothing
else. Its own files are those its manifest (`export.json`, key `written`: relative path ->
sha256) lists; one that changed since (a hand-edited README.md) is no longer its own. Any other
file in the folder makes it refuse with one line naming it, touching nothing. The new files are
staged in a hidden folder inside the target, then moved into place one by one; the manifest,
rewritten first with the old and new files both listed, always names every file of ours a kill
could leave behind, so the next export can replace them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from curator.errors import ExportError

MARKER = "export.json"
STAGING = ".curator-export-"
# Files an export wrote before export.json listed them (`written`): trusted by name.
_LEGACY = ("README.md", "dataset_info.json", "axolotl.yaml")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe(rel: Any) -> str | None:
    """A relative path inside the folder, or None (a hostile or broken manifest lists ../x or /x)."""
    if not isinstance(rel, str) or not rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel != p.as_posix() or p.parts[0].startswith(STAGING):
        return None
    return rel


def _walk(target: Path) -> list[str]:
    """Every file (and symlink) under target, relative, staging folders of ours left out."""
    out = []
    for root, dirs, files in os.walk(target):
        rel_root = Path(root).relative_to(target)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if not d.startswith(STAGING)]
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            out.append((rel_root / name).as_posix())
    return sorted(out)


def _own_files(target: Path) -> dict[str, str | None]:
    """rel path -> sha256 (None: trusted by name) of the files an earlier export wrote here."""
    marker = target / MARKER
    if not marker.is_file():
        return {}
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or "curator_export" not in data:
        raise ExportError(f"{marker}: is not a curator export's manifest; export never overwrites what it did not write: choose another --to")
    if isinstance(data.get("written"), dict):
        own = {}
        for rel, digest in data["written"].items():
            if _safe(rel) is None or not (digest is None or isinstance(digest, str)):
                raise ExportError(f"{marker}: lists {rel!r}, not a file of this folder; export touches nothing: choose another --to")
            own[rel] = digest
        return own
    # An export written before `written` existed: its files by name, the arrow folder whole.
    own = {rel: None for rel in [*(data.get("files") or {}).values(), *_LEGACY] if _safe(rel)}
    if data.get("format") == "hf":
        own.update({rel: None for rel in _walk(target) if rel.startswith("arrow/")})
    return own


def check_target(target: Path) -> dict[str, str | None]:
    """Refuse, before anything is written, a target holding files that are not an earlier export's
    own; return those own files (to replace)."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: exists and is not a directory")
    if not target.exists():
        return {}
    own = _own_files(target)
    foreign, changed = [], []
    for rel in _walk(target):
        if rel == MARKER:  # read above: ours, or refused
            continue
        if rel not in own:
            foreign.append(rel)
        # An export never writes a symlink: one, even listed by name, would have the new files
        # written through it into another folder (a received folder's manifest may list it).
        elif (target / rel).is_symlink() or (own[rel] is not None and _sha256(target / rel) != own[rel]):
            changed.append(rel)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ExportError(f"{target}: {foreign[0]}{more} is not a curator export's file; export never overwrites or deletes what it "
                          f"did not write: choose another --to (a new or empty folder), or move it out")
    if changed:
        raise ExportError(f"{target / changed[0]}: changed since curator exported it; export never overwrites what it did not write: "
                          f"choose another --to, or move it out")
    return own


def staging_dir(target: Path) -> tuple[Path, bool]:
    """A fresh hidden folder inside target for the new files (same disk: moves are renames), and
    whether target was created for it."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"{STAGING}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp, created


def _write_marker(target: Path, marker: dict[str, Any]) -> None:
    tmp = target / f".{MARKER}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target / MARKER)


def install(staging: Path, target: Path, own: dict[str, str | None], marker: dict[str, Any]) -> list[str]:
    """Move the staged files into target, remove the earlier export's files the new one does not
    have, write the manifest listing exactly the new files. Returns the new files (relative)."""
    new = {rel: _sha256(staging / rel) for rel in _walk(staging)}
    pending = {**own, **new}
    for rel in set(own) & set(new):
        if own[rel] != new[rel]:
            pending[rel] = None  # either version may be there after a kill
    _write_marker(target, {**marker, "written": dict(sorted(pending.items())), "complete": False})
    for rel in sorted(new):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)
    for rel in sorted(set(own) - set(new)):
        path = target / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        parent = path.parent
        while parent != target and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    _write_marker(target, {**marker, "written": dict(sorted(new.items()))})
    shutil.rmtree(staging, ignore_errors=True)
    return sorted(new)


def abandon(staging: Path, target: Path, created: bool) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    if created:
        try:
            target.rmdir()  # only if still empty
        except OSError:
            pass
