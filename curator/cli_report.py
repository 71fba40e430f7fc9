"""`curator report` (registered on the main app)."""

from curator.cli import app  # noqa: F401
