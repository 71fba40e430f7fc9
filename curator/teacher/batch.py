"""The batch protocol of the local teacher: `/v1/files` (upload, retrieve, content) and
`/v1/batches` (create, retrieve, list, cancel), played out by a script (`ServerConfig.batch`).

A batch's state is a function of the time since it was created (validating -> in_progress ->
finalizing -> its end), computed when a client looks, so a test sets the timing and never
drives the server by hand. Its answers come from the same scripted teacher as
`/v1/chat/completions` (TeacherState.build_completion), made when the batch reaches its end.
Everything lives in memory: a restarted server has forgotten its files and batches, as a
provider never would, so tests keep one server across client kills."""

from __future__ import annotations

import time
import uuid
from hashlib import blake2b
from typing import Any

from aiohttp import web

from . import hostile
from .config import BatchScript
from .jsonio import dumps, loads

_ENDPOINT = "/v1/chat/completions"
_WINDOWS = ("24h",)


def _unit(text: str) -> float:
    """A uniform number in [0, 1) from a string: which rows error is fixed by their custom_id."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


class BatchAPI:
    def __init__(self, state: Any, script: BatchScript):
        # state: the app's TeacherState (not imported: app.py builds this object, never the reverse)
        self.state = state
        self.script = script
        self._dumps, self._loads = dumps, loads
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []  # creation order, for list (newest first)
        self._t0: dict[str, float] = {}  # batch id -> monotonic create time
        self._errored: dict[str, int] = {}  # custom_id -> times it errored
        self.calls = 0  # every HTTP call to the files and batches endpoints

    def stats(self) -> dict[str, Any]:
        return {
            "files_uploaded": len(self.files),
            "batches_created": len(self.batches),
            "batch_calls": self.calls,
            "batch_input_files": sorted(b["input_file_id"] for b in self.batches.values()),
        }

    # ------------------------------------------------------------------ helpers

    def _check(self, request: web.Request) -> web.Response | None:
        self.calls += 1
        st = self.state
        if st.auth is not None and request.headers.get("Authorization") != st.auth:
            return st._reject(401, "Incorrect API key provided.", "invalid_api_key")
        return hostile.redirect(st.config.hostile)

    def _json(self, obj: Any, status: int = 200) -> web.Response:
        return web.Response(body=self._dumps(obj), status=status, content_type="application/json")

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": filename,
               "purpose": purpose, "status": "processed"}
        self.files[fid] = obj
        self.contents[fid] = data
        return obj

    # ------------------------------------------------------------------ files

    async def upload(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        form = await request.post()
        field, purpose = form.get("file"), form.get("purpose")
        if field is None or not hasattr(field, "file"):
            return self.state._reject(400, "a multipart field `file` is required", param="file")
        if purpose != "batch":
            return self.state._reject(400, f"purpose must be 'batch' on this server, got {purpose!r}", param="purpose")
        return self._json(self._new_file(field.file.read(), field.filename or "upload.jsonl", "batch"))

    async def get_file(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        obj = self.files.get(request.match_info["file_id"])
        if obj is None:
            return self.state._reject(404, f"No such File object: {request.match_info['file_id']}", param="id")
        return self._json(obj)

    async def file_content(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        data = self.contents.get(request.match_info["file_id"])
        if data is None:
            return self.state._reject(404, f"No such File object: {request.match_info['file_id']}", param="id")
        return web.Response(body=data, content_type="application/octet-stream")

    # ------------------------------------------------------------------ batches

    async def create(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        try:
            req = self._loads(await request.read())
        except (ValueError, TypeError):
            return self.state._reject(400, "We could not parse the JSON body of your request.")
        fid = req.get("input_file_id")
        if fid not in self.files:
            return self.state._reject(404, f"No such File object: {fid}", param="input_file_id")
        if req.get("endpoint") != _ENDPOINT:
            return self.state._reject(400, f"endpoint must be {_ENDPOINT} on this server", param="endpoint")
        if req.get("completion_window") not in _WINDOWS:
            return self.state._reject(400, f"completion_window must be one of {', '.join(_WINDOWS)}", param="completion_window")
        bid = f"batch_{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": _ENDPOINT, "errors": None, "input_file_id": fid,
            "completion_window": req["completion_window"], "status": "validating", "output_file_id": None,
            "error_file_id": None, "created_at": now, "in_progress_at": None, "expires_at": now + 24 * 3600,
            "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.get("metadata"),
        }
        self._order.append(bid)
        self._t0[bid] = time.monotonic()
        return self._json(self._advance(bid))

    async def retrieve(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        bid = request.match_info["batch_id"]
        if bid not in self.batches:
            return self.state._reject(404, f"No such Batch object: {bid}", param="id")
        return self._json(self._advance(bid))

    async def list(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        ids = list(reversed(self._order))
        after = request.query.get("after")
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        limit = max(1, min(100, int(request.query.get("limit", 20))))
        page = [self._advance(b) for b in ids[:limit]]
        return self._json({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                           "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit})

    async def cancel(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        bid = request.match_info["batch_id"]
        if bid not in self.batches:
            return self.state._reject(404, f"No such Batch object: {bid}", param="id")
        b = self._advance(bid)
        if b["status"] in ("validating", "in_progress", "finalizing"):
            b["status"], b["cancelling_at"] = "cancelling", int(time.time())
        return self._json(b)

    # ------------------------------------------------------------------ the script

    def _advance(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        if b["status"] in ("completed", "expired", "failed", "cancelled"):
            return b
        if b["status"] == "cancelling":
            # The next look finds it cancelled, with the rows it had finished.
            self._finish(b, "cancelled")
            return b
        s, age = self.script, time.monotonic() - self._t0[bid]
        now = int(time.time())
        if age < s.validating_s:
            return b
        if b["in_progress_at"] is None:
            first_error = self._validate(b)
            if first_error is not None or s.end == "failed":
                b["status"], b["failed_at"] = "failed", now
                b["errors"] = {"object": "list", "data": [first_error or {
                    "code": "invalid_request", "message": "the batch failed validation (scripted by the test server)", "line": 1}]}
                return b
            b["status"], b["in_progress_at"] = "in_progress", now
        if age < s.validating_s + s.in_progress_s:
            return b
        if s.end == "expired":
            self._finish(b, "expired")
            return b
        if b["finalizing_at"] is None:
            b["status"], b["finalizing_at"] = "finalizing", now
        if age < s.validating_s + s.in_progress_s + s.finalizing_s:
            return b
        self._finish(b, "completed")
        return b

    def _lines(self, b: dict[str, Any]) -> list[Any]:
        return [self._loads(line) for line in self.contents[b["input_file_id"]].splitlines() if line.strip()]

    def _validate(self, b: dict[str, Any]) -> dict[str, Any] | None:
        seen: set[str] = set()
        try:
            lines = self.contents[b["input_file_id"]].splitlines()
        except KeyError:  # pragma: no cover
            return {"code": "invalid_file", "message": "input file is gone", "line": None}
        n = 0
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            n += 1
            try:
                line = self._loads(raw)
            except (ValueError, TypeError):
                return {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": i}
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or not cid:
                return {"code": "missing_custom_id", "message": "every line needs a string custom_id", "line": i}
            if cid in seen:
                return {"code": "duplicate_custom_id", "message": f"The custom_id {cid} is not unique in this file.", "line": i}
            seen.add(cid)
            if line.get("url") != _ENDPOINT or line.get("method") != "POST":
                return {"code": "invalid_url", "message": f"url must be {_ENDPOINT} with method POST", "line": i}
            body = line.get("body")
            if not isinstance(body, dict) or body.get("model") not in self.state.models:
                model = body.get("model") if isinstance(body, dict) else None
                return {"code": "model_not_found", "message": f"The model `{model}` does not exist", "line": i}
        b["request_counts"]["total"] = n
        if n == 0:
            return {"code": "empty_file", "message": "the input file has no requests", "line": None}
        return None

    def _finish(self, b: dict[str, Any], end: str) -> None:
        """Answer the batch's rows (all of them, or the finished share of an expired or cancelled
        one), write the output and error files, and set the end state."""
        s, state = self.script, self.state
        lines = self._lines(b)
        done = len(lines) if end == "completed" else int(len(lines) * s.finished_fraction)
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            rid = f"batch_req_{uuid.uuid4().hex[:20]}"
            if i >= done:
                code = "batch_expired" if end == "expired" else "batch_cancelled"
                err.append({"id": rid, "custom_id": cid, "response": None,
                            "error": {"code": code, "message": f"This request could not be executed before the batch was {end}."}})
                continue
            if s.error_fraction and _unit(cid) < s.error_fraction and self._errored.get(cid, 0) < s.error_times:
                self._errored[cid] = self._errored.get(cid, 0) + 1
                err.append({"id": rid, "custom_id": cid, "response": {"status_code": 500, "request_id": rid, "body": {
                    "error": {"message": "The server had an error processing this request (scripted).", "type": "server_error",
                              "param": None, "code": None}}}, "error": None})
                continue
            body = line["body"]
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            completion = state.build_completion(body["model"], body["messages"], int(body.get("n") or 1), max_tokens, {})
            out.append({"id": rid, "custom_id": cid, "response": {"status_code": 200, "request_id": rid, "body": completion},
                        "error": None})
        now = int(time.time())
        if out:
            b["output_file_id"] = self._new_file(b"".join(self._dumps(r) + b"\n" for r in out), f"{b['id']}_output.jsonl", "batch_output")["id"]
        if err:
            b["error_file_id"] = self._new_file(b"".join(self._dumps(r) + b"\n" for r in err), f"{b['id']}_error.jsonl", "batch_output")["id"]
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        b["status"] = end
        b[f"{end}_at"] = now


def add_routes(app: web.Application, api: BatchAPI) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/files", api.upload)
        app.router.add_get(f"{prefix}/files/{{file_id}}", api.get_file)
        app.router.add_get(f"{prefix}/files/{{file_id}}/content", api.file_content)
        app.router.add_post(f"{prefix}/batches", api.create)
        app.router.add_get(f"{prefix}/batches", api.list)
        app.router.add_get(f"{prefix}/batches/{{batch_id}}", api.retrieve)
        app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", api.cancel)
