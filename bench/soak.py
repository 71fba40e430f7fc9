"""Soak: sampling under a fault mix, a 100% 429 burst and repeated kill -9 of `curator run`.

    python bench/soak.py [--requests 10000] [--kills 20] [--seed 0] [--burst-s 10] [--json]

The local teacher runs in its own process with 10% 429 (Retry-After), 5% 500/503, 2% timeouts,
2% connection resets, 1% malformed JSON and 1% empty bodies, plus 100% 429 for --burst-s seconds
from its (0.3 x requests)-th request. `curator run` is killed with SIGKILL --kills times at random
(reproducible from --seed) moments while it samples, each time followed by `curator resume`,
until the run completes. Prints requests sent (server-side), answers stored, duplicates, lost
answers, requests paid twice vs requests in flight at the kills, whether the final dataset
(keys, answers, r1-math verdicts) equals an uninterrupted run's, wall time and requests/s.
Exit code 1 when an invariant fails. Checks: see bench/soak_harness.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soak_harness import SoakOptions, format_figures, soak, violations  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = SoakOptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=10_000, help="prompts (one sample each)")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--jitter-ms", type=float, default=d.jitter_ms)
    p.add_argument("--http", choices=("openai", "aiohttp"), default=d.http)
    p.add_argument("--burst-s", type=float, default=d.burst_s)
    p.add_argument("--burst-at", type=float, default=d.burst_at, help="burst starts at this fraction of --requests")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s)
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a new temp dir)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    a = p.parse_args(argv)
    o = SoakOptions(requests=a.requests, kills=a.kills, seed=a.seed, concurrency=a.concurrency, latency_ms=a.latency_ms,
                    jitter_ms=a.jitter_ms, http=a.http, burst_s=a.burst_s, burst_at=a.burst_at, timeout_s=a.timeout_s)
    figures = soak(o, a.workdir)
    bad = violations(figures)
    print(json.dumps(figures, default=str) if a.json else format_figures(figures))
    for b in bad:
        print(f"INVARIANT FAILED: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
