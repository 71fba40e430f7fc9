"""Online vs batch mode on the local teacher, and peak memory of batch files of 50,000 requests.

    python bench/batch.py [--prompts 1250] [--n 4] [--big 50000]

1. The same manifest (prompts x n = 5,000 samples by default, filter chain r1-math, model
   o4-mini priced from the package's price table: batch_discount 0.5) run with `curator run`
   (the CLI, in a subprocess) once with teacher.mode online and once with batch. The teacher runs
   in its own process; its /stats count every HTTP call it served. Printed: requests (chat
   requests online, batch lines in batch mode), HTTP calls, dollars, dollars per 50k accepted,
   wall time; batch figures also as ratios to online.
2. `curator batch write` of a 50,000-prompt manifest and `curator batch read` of the teacher's
   output file for it (made by the local teacher's batch API), each in a fresh subprocess: peak
   RSS (os.wait4) against the baseline of `curator --help` in the same run, and file sizes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.audit.report import build_report
from curator.teacher.config import ServerConfig
from curator.teacher.runner import ServerProcess

MODEL = "o4-mini"


def problems(path: Path, n: int) -> Path:
    rows = [{"id": f"q{i}", "question": f"Tom has {i + 3} apples and buys {i % 97 + 2} more. How many now?",
             "answer": f"#### {i + 3 + i % 97 + 2}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest(tmp: Path, name: str, data: Path, url: str, mode: str, n: int, chain: bool = True) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"""name: bench-{name}
source: {{path: {data}, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}\\nPut your final answer within \\\\boxed{{}}."}}
teacher:
  base_url: {url}
  model: {MODEL}
  params: {{temperature: 0.6, max_tokens: 2048, n: {n}}}
  mode: {mode}
  batch: {{poll_s: 0.5}}
limits: {{concurrency: 64, timeout_s: 60, max_retries: 2}}
output: {tmp / name}
{'filters: ' + str(ROOT / 'filters' / 'r1-math.yaml') if chain else ''}
""")
    return p


def stats(server: ServerProcess) -> dict:
    return server.stats()


def calls(s: dict) -> int:
    return s["requests"] + s["models_requests"] + s.get("batch_calls", 0)


def cli(*args: str | Path) -> tuple[float, int, subprocess.CompletedProcess | None]:
    """(wall s, peak RSS KiB, result) of `python -m curator ARGS` in a fresh process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen([sys.executable, "-m", "curator", *map(str, args)], cwd=ROOT, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0), fe.seek(0)
        out, err = fo.read(), fe.read()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"curator {' '.join(map(str, args))} failed ({p.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss, subprocess.CompletedProcess(p.args, p.returncode, out.decode(), err.decode())


def online_vs_batch(tmp: Path, prompts: int, n: int) -> None:
    data = problems(tmp / "problems.jsonl", prompts)
    cfg = {"models": [MODEL], "problems": str(data), "problem_column": "question", "latency_ms": 20, "cot_words": 60,
           "mix": {"right": 0.7, "wrong": 0.15, "truncated": 0.05, "mixed_lang": 0.05, "duplicate": 0.05},
           "batch": {"validating_s": 0.5, "in_progress_s": 2.0, "finalizing_s": 0.5}}
    rows = {}
    with ServerProcess(ServerConfig.load(cfg)) as server:
        for mode in ("online", "batch"):
            before = stats(server)
            wall, _, _ = cli("run", manifest(tmp, mode, data, server.base_url, mode, n), "--no-progress")
            after = stats(server)
            r = build_report(tmp / mode)
            rows[mode] = {
                "samples": r["sampled"], "accepted": r["accepted"],
                "chat_requests": after["requests"] - before["requests"],
                "batch_lines": None,
                "http_calls": calls(after) - calls(before),
                "batches": after.get("batches_created", 0) - before.get("batches_created", 0),
                "usd": r["total_usd"], "usd_per_50k_accepted": r["usd_per_50k_accepted"], "wall_s": round(wall, 2),
            }
            if mode == "batch":
                led = [json.loads(x) for x in (tmp / mode / "batches" / "ledger.jsonl").read_text().splitlines()]
                rows[mode]["batch_lines"] = sum(len(e["rows"]) for e in led if e["ev"] == "file")
    on, ba = rows["online"], rows["batch"]
    print(f"## {prompts} prompts x n={n} = {prompts * n} samples, model {MODEL} (price table, batch_discount 0.5), chain r1-math")
    print(f"{'':24}{'online':>14}{'batch':>14}{'batch/online':>14}")
    for k, label in (("samples", "samples stored"), ("accepted", "accepted"), ("chat_requests", "chat requests"),
                     ("batch_lines", "batch lines"), ("batches", "batches"), ("http_calls", "HTTP calls"), ("usd", "dollars"),
                     ("usd_per_50k_accepted", "$ per 50k accepted"), ("wall_s", "wall s (CLI)")):
        a, b = on[k], ba[k]
        ratio = f"{b / a:.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "-"
        fa = f"{a:,.4f}" if isinstance(a, float) else (f"{a:,}" if a is not None else "-")
        fb = f"{b:,.4f}" if isinstance(b, float) else (f"{b:,}" if b is not None else "-")
        print(f"{label:24}{fa:>14}{fb:>14}{ratio:>14}")
    same = build_report(tmp / "online")["accepted"] == build_report(tmp / "batch")["accepted"]
    print(f"same accepted count online and batch: {same}")


def memory(tmp: Path, big: int) -> None:
    data = problems(tmp / "big.jsonl", big)
    _, base_rss, _ = cli("--help")
    with ServerProcess(ServerConfig.load({"models": [MODEL], "cot_words": 60})) as server:
        m = manifest(tmp, "big", data, server.base_url, "batch", 1, chain=False)
        req = tmp / "requests.jsonl"
        w_wall, w_rss, _ = cli("batch", "write", m, "--to", req)
        # The local teacher answers the file as an engine would (same line format both ways).
        import openai

        c = openai.OpenAI(base_url=server.base_url, api_key="x", timeout=600)
        with req.open("rb") as f:
            fid = c.files.create(file=f, purpose="batch").id
        b = c.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.5)
            b = c.batches.retrieve(b.id)
        res = tmp / "results.jsonl"
        with c.files.with_streaming_response.content(b.output_file_id) as r:
            r.stream_to_file(res)
        r_wall, r_rss, out = cli("batch", "read", tmp / "big", res)
    print(f"## batch files of {big:,} requests (no filter chain), peak RSS of a fresh `curator` process")
    print(f"baseline `curator --help`: {base_rss / 1024:,.0f} MiB")
    print(f"batch write: {w_rss / 1024:,.0f} MiB peak ({w_rss / base_rss:.2f}x baseline), {w_wall:.1f} s, "
          f"requests file {req.stat().st_size / 2**20:,.1f} MiB")
    print(f"batch read:  {r_rss / 1024:,.0f} MiB peak ({r_rss / base_rss:.2f}x baseline), {r_wall:.1f} s, "
          f"results file {res.stat().st_size / 2**20:,.1f} MiB; {out.stderr.strip().splitlines()[0]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1250)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--big", type=int, default=50_000)
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        online_vs_batch(Path(d), a.prompts, a.n)
        if not a.skip_memory:
            memory(Path(d), a.big)


if __name__ == "__main__":
    main()
