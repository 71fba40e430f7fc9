"""A local OpenAI-compatible teacher for tests, benchmarks and the demo."""

from .app import make_app
from .config import ServerConfig
from .runner import ServerProcess, running_server, serve

__all__ = ["ServerConfig", "ServerProcess", "make_app", "running_server", "serve"]
