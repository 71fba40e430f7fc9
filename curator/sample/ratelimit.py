"""Requests-per-minute and tokens-per-minute limits, fed back by the server's rate-limit headers.

Tokens are reserved before a request from an estimate (prompt + max_tokens) and the unused part is
given back when the usage block arrives, so the limiter neither starves nor overshoots TPM."""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import parsedate_to_datetime
from typing import Mapping


class _Bucket:
    def __init__(self, per_minute: float):
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        # An ask above capacity waits for a full bucket rather than forever.
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: str | None) -> float | None:
    """'1.5', '20ms', '6m0s', '1h2m' (OpenAI's x-ratelimit-reset-* style) or an HTTP date -> seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """How long the server asked us to wait: retry-after-ms, Retry-After, then x-ratelimit-reset-*."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    for name in ("retry-after", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        seconds = parse_duration(headers.get(name))
        if seconds is not None:
            return seconds
    return None


class RateLimiter:
    def __init__(self, rpm: float | None, tpm: float | None):
        self._req = _Bucket(rpm) if rpm else None
        self._tok = _Bucket(tpm) if tpm else None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        async with self._lock:  # first come, first served: no starvation of big requests
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                for bucket, amount in ((self._req, 1), (self._tok, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait_for(amount))
                if wait <= 0:
                    if self._req is not None:
                        self._req.level -= 1
                    if self._tok is not None:
                        self._tok.level -= min(tokens, self._tok.capacity)
                    return
                await asyncio.sleep(wait)

    def refund(self, tokens: int) -> None:
        if self._tok is not None and tokens:
            self._tok.level = min(self._tok.capacity, self._tok.level + tokens)

    def pause(self, seconds: float) -> None:
        """Hold every request (the server said so): shared by all workers, not per request."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """On success: when the server says a limit is exhausted, wait for its reset."""
        if not headers:
            return
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is not None and remaining.strip() in {"0", "0.0"}:
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self.pause(reset)
