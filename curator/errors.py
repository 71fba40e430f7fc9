"""The package's one exception root, and the errors that end a command with one line (kept
import-light so the CLI starts fast). Every exception class defined in curator derives from
`CuratorError`; the CLI guard catches it (and OSError) for every command."""

from __future__ import annotations

import errno as _errno
import os
from pathlib import Path



class CuratorError(Exception):
    """The root: one line for the user, nothing stored was touched."""


class ManifestError(CuratorError):
    """One clear line: what is wrong in a manifest, chain or data file, and where."""


class PackageDataError(CuratorError, ValueError):
    """A `pkg:PACKAGE/path` that names a package that is not installed, or a path not inside it."""


class RunError(CuratorError):
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


class StoreLocked(RunError):
    """Another process holds the output folder's lock."""


class ExportError(CuratorError):
    """What is wrong with the export request or the output directory."""


class HubError(CuratorError):
    """Pushing to the Hugging Face Hub failed (network, token, repo)."""


class EngineError(CuratorError):
    """An engine (language detector, sandbox, verifier) could not start or answer."""
