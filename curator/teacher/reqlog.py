"""A per-request log of the chat endpoint (`ServerConfig.request_log`): one JSON line per request,
written when the request ends, so a soak can tell which answers the server handed out and which
of them the client stored.

Line: {"t0": arrival (epoch s), "t1": end (epoch s), "prompt": prompt_hash(messages), "n": n,
"seed": seed, "status": HTTP status or null (connection reset / request cancelled), "fault":
injected fault kind or null, "id": the completion id of an answer (null otherwise)}.
A line with status 200, no fault and an id is an answer the server handed out (a paid request).
"""

from __future__ import annotations

import json
import time
from hashlib import blake2b
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What the handler tells the log through the request's storage (typed keys where aiohttp has them).
_Key = getattr(web, "RequestKey", None)
FAULT: Any = _Key("curator_fault", str) if _Key else "curator_fault"
ANSWER_ID: Any = _Key("curator_answer_id", str) if _Key else "curator_answer_id"


def prompt_hash(messages: Any) -> str:
    """Identity of a prompt as the server sees it; a client recomputes it from its own messages."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return blake2b(blob.encode("utf-8"), digest_size=12).hexdigest()


class RequestLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: a reader (the soak) can look at the file while the server runs, and a
        # server killed by a signal loses at most the line being written.
        self._f = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        if not self._f.closed:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._f.close()


def logged(handler: Handler, log: RequestLog) -> Handler:
    """`handler` with one log line per request. The handler marks injected faults with
    `request[FAULT]` and answers with `request[ANSWER_ID]`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        t0 = time.time()
        rec: dict[str, Any] = {"t0": t0}
        try:
            body = await request.read()  # cached by aiohttp: the handler reads the same bytes
            req = json.loads(body)
            if isinstance(req, dict):
                rec["prompt"] = prompt_hash(req.get("messages"))
                rec["n"] = req.get("n") or 1
                rec["seed"] = req.get("seed")
        except (ValueError, UnicodeDecodeError):
            pass
        status = None
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            # Also on CancelledError (a reset fault, or the client went away mid-request): the
            # line says no answer left the server.
            rec.update(t1=time.time(), status=status, fault=request.get(FAULT), id=request.get(ANSWER_ID))
            if status is None:
                rec["id"] = None
            log.write(rec)

    return wrapped


__all__ = ["ANSWER_ID", "FAULT", "RequestLog", "logged", "prompt_hash"]
