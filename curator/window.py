"""The adaptive in-flight window: how many requests the sampler lets reach the teacher at once.

`limits.concurrency` is an upper bound, not what every server can take. A llama.cpp server (or a
small vLLM) serves one or a few requests at a time and queues the rest; with 64 in flight the
last in its queue waits 64 answers long, and once that passes `limits.timeout_s` our own
queueing produces timeouts that look like a broken teacher.

So the window is AIMD, as TCP's congestion window: it starts at the full concurrency (fast
servers pay nothing), halves on congestion (a timeout of a request that was queued behind
others, or HTTP 503 "overloaded"; a 429 is a rate limit, paced by curator/ratelimit.py), and grows
back by one request per window of successes. A burst of
timeouts from requests that were all sent before the cut is one event, not ten halvings.

After the first congestion event the window also stays under Little's law: in flight <=
throughput x timeout_s / 2, so the mean wait stays at half the timeout with the throughput the
server actually delivers (measured over the last answers)."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass
from typing import Callable

_RATE_SAMPLES = 32  # answers the throughput is measured over
_MIN_RATE_SAMPLES = 4


@dataclass(frozen=True)
class Ticket:
    seq: int  # send order
    in_flight: int  # requests in flight once this one was sent (itself included)
    sent_at: float


class AdaptiveWindow:
    def __init__(self, maximum: int, timeout_s: float, notify: Callable[[str], None] = lambda _m: None):
        self.maximum = maximum
        self.timeout_s = timeout_s
        self.notify = notify
        self.limit = float(maximum)
        self.in_flight = 0
        self.lowest = maximum
        self.congestion_events = 0
        self._sent = 0
        self._cut_at = 0  # send seq at the last cut: congestion of earlier requests is that same event
        self._last_timeout = -math.inf
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._done: collections.deque[float] = collections.deque(maxlen=_RATE_SAMPLES)

    @property
    def size(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> Ticket:
        if self._waiters or self.in_flight >= self.size:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # _wake took the slot for us
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.release()  # woken and cancelled at once: give the slot back
                else:
                    self._waiters.remove(fut)
                raise
        else:
            self.in_flight += 1
        self._sent += 1
        return Ticket(self._sent, self.in_flight, time.monotonic())

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.size:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def throughput(self) -> float | None:
        """Answers per second over the last few, or None before there are enough."""
        if len(self._done) < _MIN_RATE_SAMPLES:
            return None
        span = self._done[-1] - self._done[0]
        return (len(self._done) - 1) / span if span > 0 else None

    def _little_cap(self) -> float:
        rate = self.throughput()
        return self.maximum if rate is None else max(1.0, min(self.maximum, rate * self.timeout_s / 2))

    def success(self) -> None:
        self._done.append(time.monotonic())
        grown = self.limit + 1.0 / self.limit
        self.limit = min(grown, self.maximum if not self.congestion_events else max(self.limit, self._little_cap()))
        self._wake()

    def queued(self, ticket: Ticket) -> bool:
        """Whether this timed-out request may have waited behind our own others: it was not alone,
        or it was sent within a timeout of an earlier one timing out, whose answer the server
        may still have been generating (llama.cpp finishes an answer nobody waits for)."""
        queued = ticket.in_flight > 1 or ticket.sent_at - self._last_timeout < self.timeout_s
        self._last_timeout = max(self._last_timeout, time.monotonic())
        return queued

    def congested(self, ticket: Ticket, what: str) -> None:
        """A queued timeout or a 503 of the request sent with `ticket`: cut the window once per event."""
        if ticket.seq <= self._cut_at:
            return
        self._cut_at = self._sent
        self.congestion_events += 1
        before = self.size
        self.limit = max(1.0, min(self.limit / 2, self._little_cap()))
        self.lowest = min(self.lowest, self.size)
        rate = self.throughput()
        served = f"; the teacher answers {rate:.2f} requests/s" if rate else ""
        self.notify(
            f"teacher congested ({what} with {ticket.in_flight} in flight){served}: in-flight window {before} -> {self.size} "
            f"(limits.concurrency {self.maximum}); requests that timed out in the teacher's queue are re-sent, not failed"
        )
