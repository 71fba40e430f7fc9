"""Errors that end a command with one line (kept import-light so the CLI starts fast)."""

from curator.config import ManifestError  # noqa: F401  (re-exported)


class RunError(Exception):
    """One line for the user; the run stopped and nothing stored was touched."""
