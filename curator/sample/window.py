"""The adaptive in-flight window: how many requests the sampler lets reach the teacher at once.

`limits.concurrency` is an upper bound, not what every server can take. A llama.cpp server (or a
small vLLM) serves one or a few requests at a time and queues the rest; with 64 in flight the
last in its queue waits 64 answers long, and once that passes `limits.timeout_s` our own
queueing produces timeouts that look like a broken teacher.

So the window is AIMD, as TCP's congestion window: it starts at the full concurrency (fast
servers pay nothing), halves on congestion, and grows back by one request per window of
successes. A burst of timeouts from requests that were all sent before the cut is one event, not
ten halvings. A longer burst (a provider's minute of 503s) may cut it to 1; it then grows back by
one request per answer (TCP's slow start) up to half the window the burst began at, so a remote
API is not left at a few in flight for thousands of answers. Congestion is told apart from the random faults of a busy API (which must not
shrink the window: AIMD under 5% random loss settles near 6 in flight):
  - a timeout is ours when the request may have waited in the teacher's queue most of the
    timeout: in flight at send / measured throughput >= timeout_s / 2 (before any throughput is
    known: anything sent with others in flight);
  - HTTP 503 "overloaded" is congestion when it is more than 10% of the recent answers;
  - a 429 is a rate limit, paced by curator/sample/ratelimit.py, not a concurrency signal.

After the first congestion event the window also stays under Little's law: in flight <=
throughput x timeout_s / 2, so the mean wait stays at half the timeout with the throughput the
server actually delivers (measured over the last answers)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Callable

_RATE_SAMPLES = 32  # answers the throughput is measured over
_MIN_RATE_SAMPLES = 3
_RECENT = 64  # answers the share of overload errors is measured over
_OVERLOAD_SHARE = 0.1


@dataclass(frozen=True)
class Ticket:
    seq: int  # send order
    in_flight: int  # requests in flight once this one was sent (itself included)


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
        self._cut_time = -float("inf")
        self._ssthresh = 0.0  # below it the window grows one per answer (slow start), above one per window
        self._recent: collections.deque[bool] = collections.deque(maxlen=_RECENT)  # True: a 503
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
        return Ticket(self._sent, self.in_flight)

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
        self._recent.append(False)
        self._done.append(time.monotonic())
        grown = self.limit + (1.0 if self.limit < self._ssthresh else 1.0 / self.limit)
        self.limit = min(grown, self.maximum if not self.congestion_events else max(self.limit, self._little_cap()))
        self._wake()

    def queued(self, ticket: Ticket) -> bool:
        """Whether this timed-out request may have spent most of the timeout waiting behind our
        own requests in the teacher's queue (Little's law: the wait is in flight / throughput)."""
        rate = self.throughput()
        if rate is None:
            return ticket.in_flight > 1
        return ticket.in_flight / rate >= self.timeout_s / 2

    def overloaded(self, ticket: Ticket) -> None:
        """An HTTP 503: congestion once such answers are more than a few random ones."""
        self._recent.append(True)
        if sum(self._recent) >= max(2, _OVERLOAD_SHARE * len(self._recent)):  # only on a 503: a short deque
            self.congested(ticket, "HTTP 503")

    def congested(self, ticket: Ticket, what: str) -> None:
        """A queued timeout or a 503 of the request sent with `ticket`: cut the window once per event."""
        if ticket.seq <= self._cut_at:
            return
        self._cut_at = self._sent
        now = time.monotonic()
        if now - self._cut_time > self.timeout_s:  # a new episode, not the same burst going on
            self._ssthresh = self.limit / 2
        self._cut_time = now
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
