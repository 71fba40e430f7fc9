"""Near-dup through the real chain path (`curator filter OUT --chain ...`) at scale: peak RSS.

    python bench/chain_scale.py [N=200000] [--words 300]

Writes N synthetic samples (10% planted near-duplicates) into an output directory through the
store (journal -> shards), then runs a near_dup-only chain over it in a child process and prints
samples/s and the child's peak RSS, next to the RSS of the stored CoT text itself (what loading
every trace at once would at least cost)."""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = [f"w{i}" for i in range(5000)]


def build(out: Path, n: int, words: int) -> int:
    from curator.store.sample_store import SampleStore

    rng = random.Random(0)
    store = SampleStore(out, shard_rows=50_000)
    text_bytes = 0
    batch = []
    prev = None
    for i in range(n):
        if prev is not None and rng.random() < 0.1:
            w = prev.split()
            for _ in range(max(1, words // 150)):
                w[rng.randrange(len(w))] = rng.choice(VOCAB)
            cot = " ".join(w)
        else:
            cot = " ".join(rng.choice(VOCAB) for _ in range(words))
        prev = cot
        text_bytes += len(cot)
        batch.append({"key": f"k{i:08d}", "run": "scale", "prompt_id": str(i), "sample_index": 0, "problem": f"p{i}", "cot": cot, "completion": "42"})
        if len(batch) == 10_000:
            store.append(batch)
            batch = []
    store.append(batch)
    store.close()
    (out / "manifest.resolved.yaml").write_text("name: scale\n")
    return text_bytes


CHILD = """
import resource, sys, time
from pathlib import Path
from curator.judge.base import FilterContext
from curator.judge.chain import load_chain
from curator.judge.runner import run_chain
out = Path(sys.argv[1])
chain = load_chain({"name": "dedup", "steps": [{"filter": "near_dup", "params": {"field": "cot", "threshold": 0.8}}]}, FilterContext(output_dir=out, workers=2))
t = time.perf_counter()
run_chain(out, chain)
chain.close()
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=200_000)
    ap.add_argument("--words", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        out = Path(d) / "out"
        t = time.perf_counter()
        text = build(out, a.n, a.words)
        print(f"stored {a.n:,} samples ({text / 2**30:.2f} GiB of CoT text) in {time.perf_counter() - t:.0f} s", flush=True)
        r = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            raise SystemExit(r.stderr)
        secs, rss_kb = r.stdout.split()
        import duckdb

        dups = duckdb.connect().execute(f"SELECT count(*) FILTER (WHERE NOT passed) FROM read_parquet('{out}/verdicts/*.parquet')").fetchall()[0][0]
        print(f"near_dup over all shards via the chain: {a.n / float(secs):,.0f} samples/s, peak RSS {int(rss_kb) / 2**20:.2f} GiB, "
              f"{dups:,} rejected as near-duplicates (planted ~{a.n // 10:,})")


if __name__ == "__main__":
    main()
