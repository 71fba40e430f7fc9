"""The r1-math chain (format, math, language, length, near_dup) over N stored samples, through the
shipped command: `curator filter OUT --chain filters/r1-math.yaml`, with the local engine and with
`--engine ray` (a local Ray this command starts) at 1 and 2 actor workers.

    python bench/scale.py [--samples 1000000] [--words 1000] [--data DIR] [--skip-local]

Prints per run: wall time, samples/s, the CPU seconds of the whole process tree (so samples per
CPU-second: the per-core figure, which a shared machine's load does not skew as it skews wall
time), the Ray overhead as a ratio of CPU seconds against the local engine measured in the same
run, the peak RSS of the CLI (the Ray driver), of the largest Ray actor (the chain's sample steps
plus near-dup's signatures of one batch) and of the largest other Ray worker (the shuffle's
grouping tasks), and the near-dup figures the Ray engine reports: band keys shuffled (rows and
bytes), partitions, candidate pairs.
Every run must leave the same verdicts: the bench checks it.

Data: N samples in the real schema, written as shards (`store.shards.write_atomic`, 20,000 rows
each) by a pool of generator processes: an R1-style English CoT from the local teacher's own
generator (`curator.teacher.answers.reasoning`; length log-normal around --words words, clipped to
[100, 8 x words]), a boxed completion (80 % right, 20 % wrong), token counts at 1.3 tokens/word,
and 5 % near-duplicates (an earlier CoT of the same worker with 1 % of its words replaced).
Reused from --data when present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARD = 20_000

MANIFEST = """name: scale
source: {{path: {problems}, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}"}}
teacher: {{base_url: "http://127.0.0.1:9/v1", model: deepseek-reasoner, price: {{input: 0.55, output: 2.19}}}}
output: {out}
"""


def _shard(args: tuple[Path, int, int, int]) -> int:
    """Write shard `i` (rows [lo, hi)); returns its CoT bytes."""
    import numpy as np

    from curator.records import SAMPLE_SCHEMA
    from curator.store.shards import records_to_table, write_atomic
    from curator.teacher import answers as T

    out, i, lo, hi = args
    rng = random.Random(i)
    nrng = np.random.default_rng(i)
    lens = np.clip(nrng.lognormal(math.log(WORDS), 0.6, hi - lo), 100, 8 * WORDS).astype(int)
    rows, recent, size = [], [], 0
    for j, n in zip(range(lo, hi), lens.tolist()):
        gold = str(j % 997)
        right = rng.random() < 0.8
        ans = gold if right else T.wrong_answer(gold)
        if recent and rng.random() < 0.05:
            w = rng.choice(recent).split(" ")
            for _ in range(max(1, len(w) // 100)):
                w[rng.randrange(len(w))] = rng.choice(("apples", "pears", "nine", "seven", "count"))
            cot = " ".join(w)
        else:
            cot = T.reasoning(rng, int(n), ans)
            recent = (recent + [cot])[-50:]
        comp = T.completion(rng, ans)
        size += len(cot)
        words = cot.count(" ") + 1
        rows.append({
            "key": f"{j:016x}", "run": "scale", "prompt_id": f"p{j // 4}", "sample_index": j % 4, "source": "scale",
            "problem": f"Problem {j // 4}: what is {j % 997} after all the steps?", "gold": f"#### {gold}",
            "cot": cot, "completion": comp, "cot_source": "reasoning_content", "finish_reason": "stop",
            "prompt_tokens": 40, "completion_tokens": int(1.3 * (words + comp.count(" ") + 1)), "reasoning_tokens": int(1.3 * words),
            "cached_tokens": 0, "model": "deepseek-reasoner", "endpoint": "http://127.0.0.1:9/v1", "attempts": 1, "seq": j,
        })
    write_atomic(records_to_table(rows, SAMPLE_SCHEMA), out / "shards" / f"shard-{i:06d}.parquet")
    return size


WORDS = 1000


def _init(words: int) -> None:
    global WORDS
    WORDS = words


def generate(out: Path, n: int, words: int) -> None:
    done = out / ".generated"
    if done.exists() and json.loads(done.read_text()) == {"samples": n, "words": words}:
        print(f"data: {out} (reused)")
        return
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out.parent / "problems.jsonl").write_text('{"id": "p0", "question": "q", "answer": "1"}\n')
    (out / "manifest.resolved.yaml").write_text(MANIFEST.format(problems=out.parent / "problems.jsonl", out=out))
    t = time.perf_counter()
    jobs = [(out, i, lo, min(n, lo + SHARD)) for i, lo in enumerate(range(0, n, SHARD))]
    with ProcessPoolExecutor(os.cpu_count(), initializer=_init, initargs=(words,)) as pool:
        size = sum(pool.map(_shard, jobs))
    done.write_text(json.dumps({"samples": n, "words": words}))
    print(f"data: {n:,} samples, {size / 1e9:.2f} GB of CoT, {len(jobs)} shards, generated in {time.perf_counter() - t:.0f} s -> {out}")


class Peaks:
    """Peak RSS and CPU time of every process of a run: the command and its whole process tree (a
    local Ray's GCS, raylet and workers are children of the command), sampled every 0.2 s."""

    def __init__(self, root_pid: int):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.rss: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.titles: dict[int, set[str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ps = self.psutil
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except ps.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    with p.oneshot():
                        rss, t = p.memory_info().rss, p.cpu_times()
                        title = " ".join(p.cmdline())[:80]
                except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                    continue
                self.rss[p.pid] = max(rss, self.rss.get(p.pid, 0))
                self.cpu[p.pid] = max(t.user + t.system, self.cpu.get(p.pid, 0.0))
                self.titles.setdefault(p.pid, set()).add(title)
            time.sleep(0.2)

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        kind = {pid: ("actor" if any("MapWorker" in t for t in ts) else "ray" if any(t.startswith("ray::") for t in ts) else "other")
                for pid, ts in self.titles.items()}
        mb = lambda k: max((r for pid, r in self.rss.items() if kind[pid] == k), default=0) / 2**20  # noqa: E731
        return {"cli_mb": self.rss.get(self.root.pid, 0) / 2**20, "actor_mb": mb("actor"), "task_mb": mb("ray"),
                "cpu_s": sum(self.cpu.values()), "actor_cpu_s": sum(c for pid, c in self.cpu.items() if kind[pid] == "actor")}


def run(out: Path, label: str, extra: list[str]) -> dict:
    from curator.store.catalog import query

    cmd = [sys.executable, "-m", "curator", "filter", str(out), "--chain", str(ROOT / "filters" / "r1-math.yaml"), *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = Peaks(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    mem = peaks.finish()
    if proc.returncode:
        sys.exit(f"{label}: failed\n{stderr[-3000:]}")
    figures = {}
    for line in stdout.splitlines():
        if line.startswith("ray: "):
            figures = dict(kv.split("=", 1) for kv in line[5:].split(", ") if "=" in kv)
    verdicts = query(out, "SELECT hash(string_agg(key || step || passed || coalesce(reason, '') || coalesce(details, ''), ',' ORDER BY key, step)) FROM verdicts")[0][0]
    return {"label": label, "wall": wall, "mem": mem, "figures": figures, "verdicts": verdicts, "stdout": stdout}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--words", type=int, default=1000, help="median CoT length in words (R1 maths: 500-3,000)")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--skip-local", action="store_true")
    a = ap.parse_args()
    out = a.data or Path(f"/tmp/curator-scale/{a.samples}-{a.words}/out")
    generate(out, a.samples, a.words)
    cores = os.cpu_count() or 1
    runs = []
    if not a.skip_local:
        runs.append((run(out, "local (--workers 2)", ["--workers", "2"]), cores))
    for w in (1, 2):
        runs.append((run(out, f"ray, {w} worker{'s' if w > 1 else ''}", ["--engine", "ray", "--workers", str(w)]), w))
    n = a.samples
    base = runs[0][0]["mem"]["cpu_s"] if not a.skip_local else None
    print(f"\nr1-math chain over {n:,} stored samples ({cores} cores on this machine, shared: wall times depend on the load,")
    print("CPU seconds do not). samples/CPU-s counts every process of the run (Ray's GCS, raylet, agents and workers too);")
    print("'CPU vs local' is the Ray overhead: the run's CPU seconds over the local engine's.")
    print(f"{'run':<20} {'wall s':>7} {'samples/s':>9} {'CPU s':>7} {'samples/CPU-s':>13} {'CPU vs local':>12} {'in actors':>9} {'CLI MB':>7} {'actor MB':>8} {'task MB':>8}")
    for r, c in runs:
        m = r["mem"]
        ratio = f"{m['cpu_s'] / base:.2f}" if base else "-"
        share = f"{m['actor_cpu_s'] / m['cpu_s']:.0%}" if m["actor_cpu_s"] else "-"
        print(f"{r['label']:<20} {r['wall']:>7.1f} {n / r['wall']:>9.0f} {m['cpu_s']:>7.0f} {n / m['cpu_s']:>13.0f} {ratio:>12} {share:>9} "
              f"{m['cli_mb']:>7.0f} {m['actor_mb']:>8.0f} {m['task_mb']:>8.0f}")
    for r, _ in runs:
        if r["figures"]:
            f = r["figures"]
            print(f"{r['label']}: band keys shuffled {int(f.get('shuffle_rows', 0)):,} rows = {int(f.get('shuffle_bytes', 0)) / 2**20:.0f} MiB "
                  f"over {f.get('partitions')} partitions; candidate pairs {f.get('candidate_pairs')}, clusters {f.get('clusters')}, "
                  f"duplicates {f.get('duplicates')}; plan {f.get('t_plan')} s, pipeline {f.get('t_pipeline')} s, driver clusters {f.get('t_clusters')} s")
    same = len({r["verdicts"] for r, _ in runs}) == 1
    print(f"verdicts identical across runs: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
