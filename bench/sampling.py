"""Sampling throughput against the local teacher (server in its own process, same 2-core machine).

    python bench/sampling.py [--requests 5000] [--latency-ms 200] [--concurrency 256] [--replicas 1] [--no-zero]

    # the issue's figures: 2,048 in flight on one teacher, 8,192 over a fleet of 4 (2 s latency)
    python bench/sampling.py --requests 20000 --latency-ms 2000 --concurrency 2048 --no-zero
    python bench/sampling.py --requests 40000 --latency-ms 2000 --concurrency 8192 --replicas 4 --no-zero

Prints requests/s, client CPU seconds per 1,000 requests and the ratio to the latency bound
(in-flight / latency) for the given latency, then the same at zero latency, for each HTTP path
(`teacher.http`: the AsyncOpenAI client, and plain aiohttp). Storage is on (journal + fsync,
shards, catalog) exactly as in `curator run`; no filter chain. With --replicas K, K teacher
processes serve the run through `teacher.replicas` (and the bare client spreads over them in
turn). Client memory per in-flight request: the peak RSS of this process during the run minus
its RSS before, over the requests in flight. Wall time is the whole
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


class PeakRss:
    """The process's peak RSS while the block runs (sampled every 20 ms in a thread)."""

    def __enter__(self) -> "PeakRss":
        import threading

        import psutil

        self._proc = psutil.Process()
        self.before = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def per_request_kb(self, in_flight: int) -> float:
        return round((self.peak - self.before) / in_flight / 1024, 1)


def _servers(k: int, latency_ms: float) -> list[ServerProcess]:
    return [ServerProcess(ServerConfig.load({"latency_ms": latency_ms, "cot_words": 60})) for _ in range(k)]


def _server_cpu(servers: list[ServerProcess]) -> float:
    """CPU seconds the teacher processes used so far: on a small machine they share the cores with
    the client, so their CPU per request is part of the ceiling."""
    import psutil

    return sum(sum(psutil.Process(s.proc.pid).cpu_times()[:2]) for s in servers)


def one(tmp: Path, requests: int, latency_ms: float, concurrency: int, http: str = "openai", replicas: int = 1) -> dict:
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(requests)]
    data = tmp / f"p{latency_ms}-{http}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    servers = _servers(replicas, latency_ms)
    server = servers[0]
    fleet = f", replicas: [{', '.join(s.base_url for s in servers)}]" if replicas > 1 else ""
    try:
        m = tmp / f"m{latency_ms}-{http}.yaml"
        m.write_text(
            f"""name: bench
source: {{path: {data}, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}"}}
teacher: {{base_url: {server.base_url}, model: deepseek-reasoner, http: {http}, params: {{max_tokens: 1024, n: 1}}{fleet}}}
limits: {{concurrency: {concurrency}, timeout_s: 60, max_retries: 2}}
output: {tmp / f'out{latency_ms}-{http}'}
"""
        )
        manifest = load_manifest(m)
        s0 = _server_cpu(servers)
        with PeakRss() as mem:
            c0, t0 = cpu(), time.perf_counter()
            res = run_manifest(manifest, progress=False)
            wall, used = time.perf_counter() - t0, cpu() - c0
        served = _server_cpu(servers) - s0
    finally:
        for s in servers:
            s.stop()
    assert res.stats.stored == requests, res.stats.errors[:3]
    rps = requests / wall
    loop_rps = requests / res.stats.sampling_s
    out = {"http": http, "latency_ms": latency_ms, "concurrency": concurrency, "requests": requests, "wall_s": round(wall, 2),
           "requests_per_s": round(rps, 1), "sampling_loop_s": round(res.stats.sampling_s, 2), "loop_requests_per_s": round(loop_rps, 1),
           "client_cpu_s_per_1k": round(used / requests * 1000, 3), "teacher_cpu_s_per_1k": round(served / requests * 1000, 3), "replicas": replicas,
           "client_kb_per_in_flight": mem.per_request_kb(min(concurrency, requests))}
    if latency_ms:
        bound = concurrency / (latency_ms / 1000)
        out["latency_bound_rps"] = round(bound, 1)
        out["ratio_to_bound"] = round(rps / bound, 3)
        out["loop_ratio_to_bound"] = round(loop_rps / bound, 3)
    return out


def bare(requests: int, latency_ms: float, concurrency: int, replicas: int = 1) -> dict:
    """Baseline in the same run: a bare aiohttp client posting the same requests to the same
    server, no retries, no parsing into records, no storage. What the machine allows."""
    import asyncio

    import aiohttp

    servers = _servers(replicas, latency_ms)

    async def go() -> float:
        urls = [s.base_url + "/chat/completions" for s in servers]
        it = iter(range(requests))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def worker() -> None:
                for i in it:
                    url = urls[i % len(urls)]
                    body = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "max_tokens": 1024}
                    async with session.post(url, json=body) as r:
                        json.loads(await r.read())

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t

    try:
        s0 = _server_cpu(servers)
        with PeakRss() as mem:
            c0 = cpu()
            wall = asyncio.run(go())
            used = cpu() - c0
        served = _server_cpu(servers) - s0
    finally:
        for s in servers:
            s.stop()
    return {"http": "bare", "latency_ms": latency_ms, "requests_per_s": round(requests / wall, 1), "client_cpu_s_per_1k": round(used / requests * 1000, 3),
            "teacher_cpu_s_per_1k": round(served / requests * 1000, 3),
            "client_kb_per_in_flight": mem.per_request_kb(min(concurrency, requests))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--http", nargs="+", default=["openai", "aiohttp"], choices=["openai", "aiohttp"])
    ap.add_argument("--replicas", type=int, default=1, help="teacher processes behind teacher.replicas")
    ap.add_argument("--no-zero", action="store_true", help="skip the second pass at zero latency")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for latency in (a.latency_ms,) if a.no_zero else (a.latency_ms, 0.0):
            base = bare(a.requests, latency, a.concurrency, a.replicas)
            bound = f", {base['requests_per_s'] / (a.concurrency / (latency / 1000)):.0%} of the latency bound" if latency else ""
            print(f"baseline (bare aiohttp, no storage) latency {latency:>3.0f} ms, {a.concurrency} in flight over {a.replicas} teacher(s): "
                  f"{base['requests_per_s']:,.0f} req/s{bound}, client CPU {base['client_cpu_s_per_1k']:.2f} s/1k req "
                  f"(teacher {base['teacher_cpu_s_per_1k']:.2f}), "
                  f"client memory {base['client_kb_per_in_flight']:.1f} kB per request in flight", flush=True)
            for http in a.http:
                r = one(Path(d), a.requests, latency, a.concurrency, http, a.replicas)
                r["ratio_loop_to_baseline"] = round(r["loop_requests_per_s"] / base["requests_per_s"], 3)
                r["ratio_to_baseline"] = round(r["requests_per_s"] / base["requests_per_s"], 3)
                report(r)


def report(r: dict) -> None:
    line = (f"http {r['http']:<7} latency {r['latency_ms']:>3.0f} ms, {r['concurrency']} in flight: "
            f"{r['requests_per_s']:,.0f} req/s end to end, {r['loop_requests_per_s']:,.0f} req/s in the request loop, "
            f"client CPU {r['client_cpu_s_per_1k']:.2f} s/1k req (teacher {r['teacher_cpu_s_per_1k']:.2f}), client memory {r['client_kb_per_in_flight']:.1f} kB per request in flight")
    if "ratio_to_bound" in r:
        line += (f"; of the latency bound ({r['latency_bound_rps']:,.0f} req/s): {r['ratio_to_bound']:.0%} end to end, "
                 f"{r['loop_ratio_to_bound']:.0%} in the loop")
    line += f"; loop/baseline {r['ratio_loop_to_baseline']:.2f}, end to end/baseline {r['ratio_to_baseline']:.2f}"
    print(line, flush=True)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
