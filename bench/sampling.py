"""Sampling throughput against the local teacher (server in its own process, same 2-core machine).

    python bench/sampling.py [--requests 5000] [--latency-ms 200] [--concurrency 256]

Prints requests/s, client CPU seconds per 1,000 requests and the ratio to the latency bound
(in-flight / latency) for the given latency, then the same at zero latency, for each HTTP path
(`teacher.http`: the AsyncOpenAI client, and plain aiohttp). Storage is on (journal + fsync,
shards, catalog) exactly as in `curator run`; no filter chain. Wall time is the whole
`run_manifest` call: loading, keys, preflight, sampling, compaction, catalog and receipt."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.config import load_manifest  # noqa: E402
from curator.run import run_manifest  # noqa: E402
from curator.teacher.config import ServerConfig  # noqa: E402
from curator.teacher.runner import ServerProcess  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(tmp: Path, requests: int, latency_ms: float, concurrency: int, http: str = "openai") -> dict:
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(requests)]
    data = tmp / f"p{latency_ms}-{http}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server = ServerProcess(ServerConfig.load({"latency_ms": latency_ms, "cot_words": 60}))
    try:
        m = tmp / f"m{latency_ms}-{http}.yaml"
        m.write_text(
            f"""name: bench
source: {{path: {data}, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}"}}
teacher: {{base_url: {server.base_url}, model: deepseek-reasoner, http: {http}, params: {{max_tokens: 1024, n: 1}}}}
limits: {{concurrency: {concurrency}, timeout_s: 60, max_retries: 2}}
output: {tmp / f'out{latency_ms}-{http}'}
"""
        )
        manifest = load_manifest(m)
        c0, t0 = cpu(), time.perf_counter()
        res = run_manifest(manifest, progress=False)
        wall, used = time.perf_counter() - t0, cpu() - c0
    finally:
        server.stop()
    assert res.stats.stored == requests, res.stats.errors[:3]
    rps = requests / wall
    loop_rps = requests / res.stats.sampling_s
    out = {"http": http, "latency_ms": latency_ms, "concurrency": concurrency, "requests": requests, "wall_s": round(wall, 2),
           "requests_per_s": round(rps, 1), "sampling_loop_s": round(res.stats.sampling_s, 2), "loop_requests_per_s": round(loop_rps, 1),
           "client_cpu_s_per_1k": round(used / requests * 1000, 3)}
    if latency_ms:
        bound = concurrency / (latency_ms / 1000)
        out["latency_bound_rps"] = round(bound, 1)
        out["ratio_to_bound"] = round(rps / bound, 3)
        out["loop_ratio_to_bound"] = round(loop_rps / bound, 3)
    return out


def bare(requests: int, latency_ms: float, concurrency: int) -> dict:
    """Baseline in the same run: a bare aiohttp client posting the same requests to the same
    server, no retries, no parsing into records, no storage. What the machine allows."""
    import asyncio

    import aiohttp

    server = ServerProcess(ServerConfig.load({"latency_ms": latency_ms, "cot_words": 60}))

    async def go() -> float:
        url = server.base_url + "/chat/completions"
        it = iter(range(requests))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def worker() -> None:
                for i in it:
                    body = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "max_tokens": 1024}
                    async with session.post(url, json=body) as r:
                        json.loads(await r.read())

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t

    try:
        c0 = cpu()
        wall = asyncio.run(go())
        used = cpu() - c0
    finally:
        server.stop()
    return {"http": "bare", "latency_ms": latency_ms, "requests_per_s": round(requests / wall, 1), "client_cpu_s_per_1k": round(used / requests * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--http", nargs="+", default=["openai", "aiohttp"], choices=["openai", "aiohttp"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for latency in (a.latency_ms, 0.0):
            base = bare(a.requests, latency, a.concurrency)
            print(f"baseline (bare aiohttp, no storage) latency {latency:>3.0f} ms: {base['requests_per_s']:,.0f} req/s, "
                  f"client CPU {base['client_cpu_s_per_1k']:.2f} s/1k req", flush=True)
            for http in a.http:
                r = one(Path(d), a.requests, latency, a.concurrency, http)
                r["ratio_loop_to_baseline"] = round(r["loop_requests_per_s"] / base["requests_per_s"], 3)
                report(r)


def report(r: dict) -> None:
    line = (f"http {r['http']:<7} latency {r['latency_ms']:>3.0f} ms, {r['concurrency']} in flight: "
            f"{r['requests_per_s']:,.0f} req/s end to end, {r['loop_requests_per_s']:,.0f} req/s in the request loop, "
            f"client CPU {r['client_cpu_s_per_1k']:.2f} s/1k req")
    if "ratio_to_bound" in r:
        line += (f"; of the latency bound ({r['latency_bound_rps']:,.0f} req/s): {r['ratio_to_bound']:.0%} end to end, "
                 f"{r['loop_ratio_to_bound']:.0%} in the loop")
    line += f"; loop/baseline {r['ratio_loop_to_baseline']:.2f}"
    print(line, flush=True)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
