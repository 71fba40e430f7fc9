"""JSON in and out of the local teacher: orjson when installed (the server's hot path), else json."""

from __future__ import annotations

from typing import Any

try:  # optional speed-up
    import orjson as _orjson

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)

    loads = _orjson.loads
    _JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)
except ImportError:  # pragma: no cover - depends on the environment
    import json as _json

    _encoder = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode("utf-8")

    def loads(data: bytes) -> Any:
        return _json.loads(data)

    _JSON_ERRORS = (ValueError, TypeError, UnicodeDecodeError)
