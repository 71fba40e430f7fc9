"""A hostile teacher: answers that are well-formed HTTP but wrong in ways a client must not trust
(`ServerConfig.hostile`). Each behaviour is sent for real over HTTP, so tests exercise the client's
actual transports, not a mock:

  patch          merged into every completion body (dicts merge, anything else replaces):
                 `{usage: {prompt_tokens: -5}}`, `{usage: {completion_tokens: "many"}}`,
                 `{choices: []}`, `{usage: "none"}`
  finish_reason  every choice's finish_reason (`content_filter`)
  pad_chars      this many characters of filler appended to every choice's content (a huge answer)
  redirect_to    every chat and batch API (files, batches) request answered `307 Temporary Redirect`
                 to this URL
  redirect_paths any other request to one of these paths (`/v1/models`: the client's preflight, the
                 fleet's probe; `/v1/files`: batch mode's upload) answered `307` to the URL given
  trickle_s      the body sent one byte every `trickle_s` seconds (headers at once)"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

_FILLER = "The quick brown fox jumps over the lazy dog near the river bank at dawn. "


class Hostile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch: dict[str, Any] | None = None
    finish_reason: str | None = None
    pad_chars: int = Field(default=0, ge=0)
    redirect_to: str | None = None
    redirect_paths: dict[str, str] = Field(default_factory=dict)
    trickle_s: float | None = Field(default=None, gt=0)


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k), v)
    return out


def redirect(h: Hostile) -> web.Response | None:
    if h.redirect_to is None:
        return None
    return web.Response(status=307, headers={"Location": h.redirect_to})


def path_redirect(h: Hostile, path: str) -> web.Response | None:
    target = h.redirect_paths.get(path)
    return None if target is None else web.Response(status=307, headers={"Location": target})


def apply(h: Hostile, completion: dict[str, Any]) -> dict[str, Any]:
    """The completion as the hostile teacher sends it."""
    if h.finish_reason is not None or h.pad_chars:
        pad = (_FILLER * (h.pad_chars // len(_FILLER) + 1))[: h.pad_chars]
        for choice in completion["choices"]:
            if h.finish_reason is not None:
                choice["finish_reason"] = h.finish_reason
            if pad:
                msg = choice["message"]
                msg["content"] = (msg.get("content") or "") + "\n" + pad
    if h.patch is not None:
        completion = _merge(completion, h.patch)
    return completion


async def send(h: Hostile, request: web.Request, body: bytes) -> web.StreamResponse | None:
    """Trickle `body` out one byte at a time; None when the body goes out normally."""
    if h.trickle_s is None:
        return None
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.content_length = len(body)
    await resp.prepare(request)
    for i in range(len(body)):
        await resp.write(body[i:i + 1])
        await asyncio.sleep(h.trickle_s)
    await resp.write_eof()
    return resp
