"""`curator view OUT`: a local web viewer of an output directory's samples, verdicts and charts."""

from curator.audit.viewer.data import ViewerError
from curator.audit.viewer.server import serve_viewer

__all__ = ["ViewerError", "serve_viewer"]
