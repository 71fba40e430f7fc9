"""Errors that end a command with one line (kept import-light so the CLI starts fast)."""

from __future__ import annotations

import errno as _errno
import os
from pathlib import Path

from curator.config import ManifestError  # noqa: F401  (re-exported)


class RunError(Exception):
    """One line for the user; the run stopped and nothing stored was touched."""


class StoreError(RunError):
    """Writing the output directory failed (disk full, no permission, I/O error). What was stored
    before stays readable; the answers of the failed write are still in the journal."""


def os_error_text(e: OSError) -> str:
    """`No space left on device (ENOSPC)`: the words people search for plus the errno name, and
    never the Python repr with its duplicated path."""
    code = e.errno
    words = e.strerror or (os.strerror(code) if code else str(e) or type(e).__name__)
    name = _errno.errorcode.get(code) if code else None
    return f"{words} ({name})" if name else words


def store_error(what: str, path: Path | str, e: OSError, out_dir: Path | str | None = None) -> StoreError:
    hint = ""
    if e.errno in (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG):
        hint = "; free space, then `curator resume " + str(out_dir) + "`" if out_dir else "; free space and resume"
    elif e.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        hint = "; fix the permissions, then `curator resume " + str(out_dir) + "`" if out_dir else "; fix the permissions and resume"
    return StoreError(f"{what} {path} failed: {os_error_text(e)}{hint}")
