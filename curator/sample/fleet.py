"""A fleet of teacher replicas (`teacher.replicas`): which replica gets a request, which ones are
out of service, and each replica's figures.

The fleet looks like one transport to the sampler (`post(body)`), so the window, the rate limits,
retries and requeues stay one code path. `teacher.base_url` stays the deployment's identity (it
is what sample keys hash); the replicas are only where requests go, so adding, removing or
reordering them never changes a key.

- Choice: the up replica with the fewest requests in flight (ties taken in turn). With the same
  in flight on each, a replica that answers twice as fast serves twice the requests.
- Health: a replica that refuses a connection is taken out at once; one whose last
  `_FAILURES_OUT` attempts all failed (5xx, timeout, connection lost) is taken out too. An out
  replica is probed (`GET /models` with the requests' headers, backing off to `_PROBE_MAX_S`) and put
  back when it answers (a redirect or a 401/403 is not an answer: the requests would be refused).
- A request whose replica refused it, or that took its replica out, goes to another replica
  without using one of the request's retries (the teacher did not fail; a machine did).
- With no replica up, requests wait up to `_GRACE_S` for a probe to bring one back, then the run
  fails with one line (`FleetDown`) and `curator resume OUT` finishes it."""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import openai

from curator.errors import CuratorError

_FAILURES_OUT = 5  # consecutive failed attempts that take a replica out
_PROBE_FIRST_S = 0.25
_PROBE_MAX_S = 2.0
_GRACE_S = 5.0  # with no replica up: how long requests wait for a probe before the run fails
_BUCKET = math.log(1.05)  # latency histogram: 5% wide buckets, so merged receipts give p50/p95 to 5%


class FleetDown(CuratorError):
    """Every replica of the fleet is out of service."""


_REFUSED = ("Connect call failed", "Cannot connect to host", "ClientConnectorError", "Connection refused", "ConnectError")
_LOST = ("Server disconnected", "ServerDisconnectedError", "Connection reset", "ConnectionResetError", "ClientOSError",
         "RemoteProtocolError", "ClientPayloadError")


def connection_failure(exc: BaseException) -> str | None:
    """"refused" (nothing listens), "lost" (the connection broke mid-request) or None (an answer
    came: a status, a real timeout). The openai client under aiohttp reports both as a
    ConnectTimeout inside APITimeoutError, so the cause chain is read, not the exception's class."""
    if not isinstance(exc, openai.APIConnectionError):
        return None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__name__} {e}"
        if isinstance(e, ConnectionRefusedError) or any(t in text for t in _REFUSED):
            return "refused"
        if isinstance(e, ConnectionResetError) or any(t in text for t in _LOST):
            return "lost"
        e = e.__cause__ or e.__context__
    return None if isinstance(exc, openai.APITimeoutError) else "lost"


@dataclass
class Replica:
    url: str
    transport: Any
    index: int
    in_flight: int = 0
    up: bool = True
    failures: int = 0  # consecutive failed attempts
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    taken_out: int = 0
    rerouted: int = 0  # its requests sent to another replica for free (refused, or it was taken out)
    last_error: str | None = None
    hist: dict[int, int] = field(default_factory=dict)  # latency bucket -> answers

    def observe(self, seconds: float) -> None:
        b = int(math.floor(math.log(max(seconds, 1e-4)) / _BUCKET))
        self.hist[b] = self.hist.get(b, 0) + 1

    def figures(self) -> dict[str, Any]:
        return {"url": self.url, "requests": self.requests, "errors": self.errors, "tokens": self.tokens, "in_flight": self.in_flight,
                "latency_p50_s": quantile(self.hist, 0.5), "latency_p95_s": quantile(self.hist, 0.95),
                "taken_out": self.taken_out, "rerouted": self.rerouted, "up": self.up, "last_error": self.last_error,
                "latency_hist": {str(k): v for k, v in sorted(self.hist.items())}}


def quantile(hist: Mapping[Any, int], q: float) -> float | None:
    """The q-quantile of a latency histogram (bucket mid-points, seconds), None when empty."""
    total = sum(hist.values())
    if not total:
        return None
    need, acc = q * total, 0
    for b in sorted(hist, key=int):
        acc += hist[b]
        if acc >= need:
            return round(math.exp((int(b) + 0.5) * _BUCKET), 4)
    return None


def merge_figures(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-replica figures of several sessions (receipts) added up, percentiles from the merged
    histograms; replicas in first-seen order."""
    merged: dict[str, dict[str, Any]] = {}
    for figures in groups:
        for f in figures or []:
            m = merged.setdefault(f["url"], {"url": f["url"], "requests": 0, "errors": 0, "tokens": 0, "taken_out": 0, "rerouted": 0, "hist": {}})
            for k in ("requests", "errors", "tokens", "taken_out", "rerouted"):
                m[k] += f.get(k) or 0
            for b, n in (f.get("latency_hist") or {}).items():
                m["hist"][int(b)] = m["hist"].get(int(b), 0) + n
    out = []
    for m in merged.values():
        hist = m.pop("hist")
        m["latency_p50_s"], m["latency_p95_s"] = quantile(hist, 0.5), quantile(hist, 0.95)
        out.append(m)
    return out


# A body's usage.total_tokens (a quote inside a JSON string is escaped, so this matches only the key).
_TOTAL_TOKENS = re.compile(rb'"total_tokens"\s*:\s*(\d+)')


class Fleet:
    """Several transports behind one `post`; see the module's docstring."""

    def __init__(self, urls: list[str], make_transport: Callable[[str], Any], *, api_key: str,
                 notify: Callable[[str], None] = lambda _m: None, abort: Callable[[str], None] = lambda _m: None,
                 stats: Any = None, probe: Callable[[str], Awaitable[bool]] | None = None,
                 headers: Mapping[str, str] | None = None):
        """abort: stops the run (no replica left); stats: gets `replicas` (the figures) at close;
        headers: `teacher.headers` resolved, sent with the probes as with the requests."""
        self.abort = abort
        self.stats = stats
        self.replicas = [Replica(url.rstrip("/"), make_transport(url.rstrip("/")), i) for i, url in enumerate(urls)]
        self.api_key = api_key
        self.headers = dict(headers or {})
        self.notify = notify
        self._probe_fn = probe or self._http_probe
        self._probes: dict[int, asyncio.Task] = {}
        self._back = asyncio.Event()  # set whenever a replica comes back
        self._turn = 0
        self._session = None

    @classmethod
    def for_teacher(cls, teacher: Any, limits: Any, api_key: str, **kw: Any) -> "Fleet | None":
        """The fleet of `teacher.replicas` (one transport each), None without replicas."""
        from curator.sample.transport import make_transport

        if not teacher.replicas:
            return None
        headers = teacher.request_headers()
        return cls(teacher.replicas, lambda url: make_transport(teacher.http, url, api_key, limits.timeout_s, limits.concurrency, headers),
                   api_key=api_key, headers=headers, **kw)

    # -- choice -------------------------------------------------------------------------------

    def _pick(self, avoid: set[int]) -> Replica | None:
        best: Replica | None = None
        n = len(self.replicas)
        self._turn = (self._turn + 1) % n
        for k in range(n):
            r = self.replicas[(self._turn + k) % n]
            if r.up and r.index not in avoid and (best is None or r.in_flight < best.in_flight):
                best = r
        return best

    async def _choose(self, avoid: set[int]) -> Replica:
        r = self._pick(avoid) or self._pick(set())
        if r is not None:
            return r
        deadline = time.monotonic() + _GRACE_S
        while r is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.abort(self.down_message())  # the run stops: nothing new is sent, resume finishes
                raise FleetDown(self.down_message())
            self._back.clear()
            try:
                await asyncio.wait_for(self._back.wait(), left)
            except asyncio.TimeoutError:
                pass
            r = self._pick(set())
        return r

    def down_message(self) -> str:
        why = "; ".join(f"{r.url}: {r.last_error or 'out'}" for r in self.replicas)
        return f"every teacher replica is out of service ({why}); stored answers are kept, `curator resume OUT` finishes the run"

    @property
    def up(self) -> int:
        return sum(r.up for r in self.replicas)

    # -- one request --------------------------------------------------------------------------

    async def post(self, body: dict[str, Any]) -> tuple[bytes, Mapping[str, str]]:
        avoid: set[int] = set()
        hops = 0
        while True:
            r = await self._choose(avoid)
            r.in_flight += 1
            r.requests += 1
            start = time.monotonic()
            try:
                content, headers = await r.transport.post(body)
            except BaseException as e:
                r.in_flight -= 1
                if isinstance(e, Exception) and self._failed(r, e) and hops <= 2 * len(self.replicas):
                    # Refused, or its replica is out: another replica gets it, no retry spent
                    # (with none left, _choose waits for a probe, then fails the run).
                    avoid.add(r.index)
                    hops += 1
                    r.rerouted += 1
                    continue
                raise
            r.in_flight -= 1
            r.failures = 0
            r.observe(time.monotonic() - start)
            m = _TOTAL_TOKENS.search(content)
            r.tokens += int(m.group(1)) if m else 0
            return content, headers

    def _failed(self, r: Replica, e: Exception) -> bool:
        """Count a failed attempt against its replica; True when the request should go elsewhere
        for free (refused, or this failure took the replica out)."""
        if isinstance(e, openai.APIStatusError) and e.status_code < 500 and e.status_code != 408:
            return False  # the request's fault (400, 401, 429...), not the replica's
        r.errors += 1
        r.failures += 1
        r.last_error = _describe(e)
        failure = connection_failure(e)
        lost, refused = failure is not None, failure == "refused"
        r.last_error = f"connection {failure}" if failure else r.last_error
        if r.up and (refused or r.failures >= _FAILURES_OUT):
            self._take_out(r, "refuses connections" if refused else f"its last {r.failures} attempts failed")
        # A connection that failed (refused, or lost with its replica) says nothing about the
        # request: another replica gets it. With no other one up, only an out replica's requests
        # go round (they wait for a probe); a lone replica's lost connection is a normal retry.
        return not r.up or (lost and self._pick({r.index}) is not None)

    # -- health -------------------------------------------------------------------------------

    def _take_out(self, r: Replica, why: str) -> None:
        r.up = False
        r.taken_out += 1
        left = self.up
        self.notify(f"teacher replica {r.url} taken out of service ({why}: {r.last_error}); "
                    f"{left} of {len(self.replicas)} replicas left" + ("; probing it" if left else "; probing all"))
        if r.index not in self._probes or self._probes[r.index].done():
            self._probes[r.index] = asyncio.get_running_loop().create_task(self._probe(r))

    async def _probe(self, r: Replica) -> None:
        wait = _PROBE_FIRST_S
        while not r.up:
            await asyncio.sleep(wait)
            if await self._probe_fn(r.url):
                r.up = True
                r.failures = 0
                self._back.set()
                self.notify(f"teacher replica {r.url} answers again: back in service ({self.up} of {len(self.replicas)} up)")
                return
            wait = min(wait * 2, _PROBE_MAX_S)

    async def _http_probe(self, url: str) -> bool:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            # The requests' own headers (a gateway that requires one refuses a bare probe), and
            # never to another origin: requests refuse redirects, so a probe does not follow one.
            headers = {"Authorization": f"Bearer {self.api_key}", **self.headers}
            async with self._session.get(url + "/models", headers=headers, allow_redirects=False) as resp:
                # A redirect or refused credentials: the requests would be refused too, so it stays out.
                return resp.status < 300 or (400 <= resp.status < 500 and resp.status not in (401, 403, 407))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    # -- figures and shutdown -------------------------------------------------------------------

    def figures(self) -> list[dict[str, Any]]:
        return [r.figures() for r in self.replicas]

    async def close(self) -> None:
        if self.stats is not None:
            self.stats.replicas = self.figures()
        for t in self._probes.values():
            t.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        for r in self.replicas:
            await r.transport.close()
        if self._session is not None:
            await self._session.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}"
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    return type(e).__name__
