"""How a chat request reaches the teacher: straight over one aiohttp session (`teacher.http:
aiohttp`, the default), or through `openai.AsyncOpenAI` (`teacher.http: openai`).

Both raise the openai package's own exceptions (RateLimitError, APITimeoutError, ...), so retries,
Retry-After handling and fail-fast errors are one code path in the sampler. The aiohttp path
exists because the openai client spends ~0.65 ms of CPU per request building typed requests
(bench/sampling.py); against a remote API at seconds per answer that is nothing, against a local
vLLM at hundreds of requests/s on a small machine it is the bottleneck."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import openai

from curator.errors import CuratorError

try:  # the HTTP library under the openai client: httpx2 in openai >= 3, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - older openai
    import httpx as _http

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class RedirectRefused(CuratorError):
    """The teacher answered a chat request with a redirect. Never followed: the answer would come
    from another server (another origin, possibly) and be stored under this endpoint's keys."""


def refuse_redirect(status: int, headers: Mapping[str, str]) -> None:
    if 300 <= status < 400:  # (base_url is not quoted: it may carry credentials)
        target = headers.get("location") or "(no Location header)"
        raise RedirectRefused(f"the teacher answered HTTP {status}, a redirect to {target}: redirects are not followed "
                              "(set teacher.base_url to the server you mean, if you trust it)")


class OpenAITransport:
    def __init__(self, base_url: str, api_key: str, timeout_s: float, headers: dict[str, str] | None = None, connections: int = 1000):
        self.timeout_s = timeout_s
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s,
                                         http_client=_aiohttp_client(timeout_s, connections), default_headers=headers)
        self._options = {"timeout": timeout_s, "follow_redirects": False}

    async def post(self, body: dict[str, Any]) -> tuple[bytes, Mapping[str, str]]:
        # The raw POST, not the typed `chat.completions.create`: the typed path costs ~50% more
        # client CPU (param transforms, pydantic models) and we parse the JSON ourselves anyway.
        # The client's timeout bounds each read, so a body trickled a byte at a time would hold the
        # request for ever: asyncio.timeout bounds the whole request, body included.
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.client.post("/chat/completions", body=body, cast_to=_http.Response, options=self._options)
                content = raw.content
        except TimeoutError:
            raise openai.APITimeoutError(request=_http.Request("POST", self.url)) from None
        except openai.APIStatusError as e:  # httpx raises for a 3xx it does not follow
            refuse_redirect(e.status_code, e.response.headers)
            raise
        refuse_redirect(raw.status_code, raw.headers)
        return content, raw.headers

    async def close(self) -> None:
        await self.client.close()


def _aiohttp_client(timeout_s: float, connections: int):
    """aiohttp under the openai client: httpx's pool costs O(connections) per request, which at
    hundreds in flight made the client, not the teacher, the bottleneck (bench/sampling.py).
    Its pool is as large as limits.concurrency: the openai default (1,000 connections) held
    2,048 requests in flight to half the latency bound."""
    try:
        return openai.DefaultAioHttpClient(timeout=timeout_s, limits=_http.Limits(max_connections=connections, max_keepalive_connections=connections))
    except RuntimeError:  # openai installed without its aiohttp extra
        return None


class AiohttpTransport:
    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int, headers: dict[str, str] | None = None):
        import aiohttp

        self._aiohttp = aiohttp
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        # HTTP(S)_PROXY / NO_PROXY apply as they do for the openai client (httpx), read once here:
        # the session's trust_env reads them (and ~/.netrc) in a worker thread on every request,
        # two thread hops that cost more client CPU than the rest of the request (bench/sampling.py).
        self.proxy, self.proxy_auth = _env_proxy(self.url)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=self.timeout)
        self._request = _http.Request("POST", self.url)  # for the openai exceptions' `request`

    async def post(self, body: dict[str, Any]) -> tuple[bytes, Mapping[str, str]]:
        aiohttp = self._aiohttp
        try:
            async with self.session.post(self.url, data=_dumps(body), headers=self.headers, allow_redirects=False,
                                         proxy=self.proxy, proxy_auth=self.proxy_auth) as r:
                content = await r.read()
                if r.status >= 300:
                    refuse_redirect(r.status, r.headers)
                    raise _status_error(r.status, dict(r.headers), content, self._request)
                return content, r.headers
        except TimeoutError:
            raise openai.APITimeoutError(request=self._request) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            raise openai.APIConnectionError(message=f"connection error: {type(e).__name__}", request=self._request) from None

    async def close(self) -> None:
        await self.session.close()


def _env_proxy(url: str):
    """The proxy the environment gives for `url` (aiohttp's own trust_env lookup), or (None, None)."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def _status_error(status: int, headers: dict[str, str], content: bytes, request) -> openai.APIStatusError:
    """The same exception the openai client raises for this status, with the server's message."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    message = (err.get("message") if isinstance(err, dict) else None) or content.decode("utf-8", "replace")[:200] or f"HTTP {status}"
    response = _http.Response(status, headers=headers, content=content, request=request)
    cls = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(message, response=response, body=err if isinstance(err, dict) else body)


def make_transport(kind: str, base_url: str, api_key: str, timeout_s: float, connections: int, headers: dict[str, str] | None = None):
    """headers: teacher.headers with `{env: NAME}` values resolved (held in memory only)."""
    if kind == "aiohttp":
        return AiohttpTransport(base_url, api_key, timeout_s, connections, headers)
    return OpenAITransport(base_url, api_key, timeout_s, headers, connections)
