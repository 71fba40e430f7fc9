import asyncio
import time

from curator.sample.ratelimit import RateLimiter, parse_duration, retry_after


def test_parse_durations():
    assert parse_duration("1.5") == 1.5
    assert parse_duration("20ms") == 0.02
    assert parse_duration("6m0s") == 360
    assert parse_duration("1h2m") == 3720
    assert parse_duration("soon") is None


def test_retry_after_prefers_ms_then_header_then_reset():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "2"}) == 2
    assert retry_after({"x-ratelimit-reset-requests": "50ms"}) == 0.05
    assert retry_after({}) is None


def test_rpm_limit_spaces_requests():
    async def go():
        lim = RateLimiter(rpm=600, tpm=None)  # 10/s, bucket starts full (600)
        lim._req.level = 0  # empty bucket: each request waits 0.1 s
        t = time.monotonic()
        for _ in range(3):
            await lim.acquire(1)
        return time.monotonic() - t

    elapsed = asyncio.run(go())
    assert 0.25 <= elapsed < 1.0  # 3 x 0.1 s; the upper bound only has to catch a wrong rate


def test_tpm_reserve_and_refund():
    async def go():
        lim = RateLimiter(rpm=None, tpm=6000)  # 100 tokens/s
        await lim.acquire(6000)  # takes the whole bucket
        lim.refund(5000)  # the answer was short: 5000 come back
        t = time.monotonic()
        await lim.acquire(1000)
        return time.monotonic() - t

    assert asyncio.run(go()) < 0.05


def test_pause_holds_everyone():
    async def go():
        lim = RateLimiter(rpm=None, tpm=None)
        lim.pause(0.2)
        t = time.monotonic()
        await asyncio.gather(lim.acquire(1), lim.acquire(1))
        return time.monotonic() - t

    assert asyncio.run(go()) >= 0.19
