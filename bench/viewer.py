"""`curator view` on a generated output directory of 1,000,000 samples, measured in the browser.

    python bench/viewer.py                      # 1M samples, ~3 KB CoTs (several minutes, ~3 GB of text)
    python bench/viewer.py --rows 50000         # a quick look
    python bench/viewer.py --out /tmp/v1m --reuse   # measure again on an output generated earlier

Generates shards with the real schema through the store's writer (`write_atomic`, 20,000-row shards,
1,000-row row groups as `curator run` writes them) and verdicts of a 5-step chain (format, math,
language, length, near_dup) with realistic reject shares and details, starts the shipped CLI
(`python -m curator view OUT`), and times in headless Chromium (Debian's /usr/bin/chromium through
Playwright): first page, a page filtered by reject reason, text searches (a common phrase, a rare
word found only near the end, so the whole text is read), a sample view, a prompt view, a
duplicate cluster; plus the server's peak RSS. Baseline, same run: the same table page as one
query over the catalog's `samples` view (`catalog.connect(OUT, read_only=True)`), which is what
the viewer would cost without its snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.records import SAMPLE_SCHEMA, VERDICT_SCHEMA  # noqa: E402
from curator.store.shards import new_shard_name, write_atomic  # noqa: E402

SHARD_ROWS = 20_000
N_SAMPLES = 4  # per prompt
RARE = "zanzibarquux"
RARE_NUMBER = "9876543210"  # digits only: the word index leaves numbers out (a full scan before the Bloom filters)
CHAIN = ["format", "math", "language", "length", "near_dup"]
# First failing step -> (share, reason)
OUTCOMES = [(None, 0.70, None), (0, 0.05, "truncated"), (1, 0.12, "wrong_answer"), (2, 0.05, "mixed_language"),
            (3, 0.04, "wait_loop"), (4, 0.04, "near_duplicate")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

SENTENCES = [
    "Let x be the number of {a}; then x plus {b} equals {c}.",
    "Each of the {a} boxes holds {b} apples: {c} total.",
    "Wait, let me check that again: {a} times {b} is {c}.",
    "Verify with the pencils: {c} minus {b} leaves {a}.",
    "Okay, so {a} and {b} agree with the tickets so far, giving {c}.",
    "Hmm, the ratio of {a} to {b} needs care; it simplifies to about {c}.",
    "Running total of pages: {a} plus {b} gives {c}.",
    "No, {a} cannot be negative, so drop that case and keep {b}.",
    "A table of {a} rows by {b} columns holds {c} cells.",
    "Note {c} divided by {b} is {a} exactly.",
    "So we need to find how many {a} remain after removing {b}.",
    "First, split the problem into two parts: the first {a} days and the last {b}.",
]


def _cot_pool(n: int, chars: int, rng: random.Random) -> list[str]:
    pool = []
    for _ in range(n):
        parts, size = [], 0
        while size < chars:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            s = rng.choice(SENTENCES).format(a=a, b=b, c=a * b if rng.random() < 0.5 else a + b)
            parts.append(s)
            size += len(s) + 1
        pool.append(" ".join(parts) + f" So the answer is {rng.randint(1, 999)}.")
    return pool


def generate(out: Path, rows: int, cot_chars: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "verdicts").mkdir(parents=True, exist_ok=True)
    pool = _cot_pool(20_000, cot_chars, rng)
    problems = [f"Problem {i}: Ava has {i % 97 + 3} boxes with {i % 13 + 2} apples each and gives away {i % 7}. How many are left?"
                for i in range(rows // N_SAMPLES + 1)]
    shares = np.array([o[1] for o in OUTCOMES])
    t0 = time.time()
    accepted_keys: list[str] = []
    for start in range(0, rows, SHARD_ROWS):
        n = min(SHARD_ROWS, rows - start)
        idx = np.arange(start, start + n)
        keys = [os.urandom(32).hex() for _ in range(n)]
        pidx = idx // N_SAMPLES
        cots = [pool[j] for j in nprng.integers(0, len(pool), n)]
        if start + n >= rows:  # a rare word only near the end: a search for it reads everything
            cots[-3] = cots[-3] + " " + RARE
            cots[-5] = cots[-5] + " " + RARE_NUMBER
        comp_tokens = nprng.integers(300, 3000, n)
        table = pa.table({
            "key": keys, "run": ["bench"] * n, "prompt_id": [f"p{p:07d}" for p in pidx], "sample_index": (idx % N_SAMPLES).astype(np.int32),
            "source": np.where(pidx % 3 == 0, "gsm8k.jsonl", "math.jsonl").tolist(), "problem": [problems[p] for p in pidx],
            "gold": [f"#### {p % 500}" for p in pidx], "row_json": [None] * n, "messages_json": [None] * n, "cot": cots,
            "completion": [f"Combining the steps above we reach the result.\n\nThe answer is $\\boxed{{{p % 500}}}$." for p in pidx],
            "cot_source": ["reasoning_content"] * n, "raw_content": [None] * n,
            "finish_reason": np.where(nprng.random(n) < 0.05, "length", "stop").tolist(),
            "prompt_tokens": nprng.integers(40, 200, n), "completion_tokens": comp_tokens, "reasoning_tokens": (comp_tokens * 0.9).astype(np.int64),
            "cached_tokens": np.zeros(n, dtype=np.int64), "cost_usd": comp_tokens * 2.19e-6, "usage_estimated": nprng.random(n) < 0.02,
            "model": ["deepseek-reasoner"] * n, "endpoint": ["http://127.0.0.1:8765/v1"] * n, "params_json": ['{"temperature": 0.6}'] * n,
            "request_id": [f"req-{i}" for i in idx], "attempts": nprng.integers(1, 3, n).astype(np.int32), "latency_s": nprng.gamma(2.0, 20.0, n),
            "created_at": 1.79e9 + idx * 0.01, "seq": idx.astype(np.int64),
        }, schema=SAMPLE_SCHEMA)
        write_atomic(table, out / "shards" / new_shard_name(), keep_footer=True)

        first_fail = nprng.choice(len(OUTCOMES), n, p=shares)
        v_key, v_step, v_filter, v_pass, v_reason, v_details = [], [], [], [], [], []
        for i in range(n):
            fs, reason = OUTCOMES[first_fail[i]][0], OUTCOMES[first_fail[i]][2]
            if fs is None:
                accepted_keys.append(keys[i])
            for s, f in enumerate(CHAIN):
                ok = s != fs
                d = None
                if f == "math":
                    d = json.dumps({"gold_parsed": str(pidx[i] % 500), "extracted": str(pidx[i] % 500 if ok else pidx[i] % 500 + 1)})
                if not ok and f == "language":
                    d = json.dumps({"field": "cot", "target": "en", "examples": [{"text": "让我再检查一下这个结果", "lang": "zh", "confidence": 0.99}]})
                if not ok and f == "length":
                    d = json.dumps({"failed": ["wait_loop"], "waits": 24})
                if not ok and f == "near_dup":
                    rep = accepted_keys[rng.randrange(max(1, len(accepted_keys) // 50))] if accepted_keys else keys[0]
                    d = json.dumps({"duplicate_of": rep, "cluster_size": 2, "jaccard_est": 0.9})
                v_key.append(keys[i]); v_step.append(s); v_filter.append(f); v_pass.append(ok)
                v_reason.append(None if ok else reason); v_details.append(d)
        vt = pa.table({"key": v_key, "step": v_step, "filter": v_filter, "passed": v_pass, "reason": v_reason, "details": v_details},
                      schema=VERDICT_SCHEMA)
        write_atomic(vt, out / "verdicts" / f"batch-{start // SHARD_ROWS:05d}.parquet")
        print(f"\r  generated {start + n:,}/{rows:,} samples ({time.time() - t0:.0f} s)", end="", flush=True)
    print()
    (out / "verdicts" / "chain.json").write_text(json.dumps({"name": "bench", "digest": "bench", "steps": [{"filter": f} for f in CHAIN]}))
    (out / "manifest.resolved.yaml").write_text("name: bench-1m\nteacher: {model: deepseek-reasoner}\n")


class PeakRSS(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.peak_children = 0
        self.stop = False

    def run(self) -> None:
        import psutil

        while not self.stop:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                kids = sum(c.memory_info().rss for c in self.proc.children(recursive=True))
                self.peak_children = max(self.peak_children, kids)
            except psutil.Error:
                return
            time.sleep(0.05)


def baseline(out: Path, reason: str) -> float:
    from curator.store import catalog

    t0 = time.perf_counter()
    con = catalog.connect(out, read_only=True)
    con.execute("SELECT key, prompt_id, accepted, reject_reason, length(cot), completion_tokens, cost_usd FROM samples"
                " WHERE reject_reason = ? ORDER BY seq LIMIT 50", [reason]).fetchall()
    con.execute("SELECT count(*) FROM samples WHERE reject_reason = ?", [reason]).fetchall()
    con.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cot-chars", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="use the samples already in --out")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--no-charts", action="store_true", help="skip the charts page (`curator report --json` over everything: minutes at 1M)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="curator-bench-view-")) / "out"
    if not (args.reuse and (out / "shards").exists()):
        t0 = time.time()
        generate(out, args.rows, args.cot_chars)
        print(f"generated {args.rows:,} samples in {time.time() - t0:.0f} s -> {out}")
    if args.generate_only:
        return
    size = sum(p.stat().st_size for p in (out / "shards").glob("*.parquet"))
    print(f"shards: {size / 1e9:.2f} GB on disk")

    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen([sys.executable, "-m", "curator", "view", str(out), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    rss.start()
    t_start = time.time()
    url = "http://127.0.0.1:" + re.search(r":(\d+)/", proc.stdout.readline()).group(1) + "/"
    import urllib.request

    while True:
        meta = json.loads(urllib.request.urlopen(url + "api/meta").read())
        if meta["ready"]:
            break
        if meta.get("error") and not meta.get("refreshing"):
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
            raise SystemExit(meta["error"])
        time.sleep(0.2)
    ready_s = time.time() - t_start
    print(f"server ready (snapshot of {meta['sampled']:,} samples built) in {ready_s:.1f} s (snapshot {meta['build_s']:.1f} s)")

    times: dict[str, float] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})

        def timed(name: str, action) -> None:
            page.evaluate("document.body && (document.body.dataset.ready = '')") if page.url.startswith("http") else None
            t0 = time.perf_counter()
            action()
            page.wait_for_selector('body[data-ready="1"]', timeout=600_000)
            times[name] = time.perf_counter() - t0
            count = page.locator("#count").all_text_contents()
            print(f"  {name:<34} {times[name] * 1000:8.0f} ms  {count[0] if count else ''}", flush=True)

        reason = "math:wrong_answer"
        # While the word index is still being built in the background (the first minute of a session).
        timed("first page", lambda: page.goto(url))
        timed("filtered by reject reason", lambda: page.goto(url + "#/samples?reason=" + reason))
        timed("filtered: reason + sort by cost", lambda: page.goto(url + "#/samples?reason=" + reason + "&sort=cost&desc=1"))
        timed("filtered: length range + estimated", lambda: page.goto(url + "#/samples?length_col=completion_tokens&min_len=2000&max_len=2050&usage_estimated=yes"))
        timed("filtered: failed step near_dup", lambda: page.goto(url + "#/samples?failed=near_dup"))
        timed("page 1000 (offset 49,950)", lambda: page.goto(url + "#/samples?offset=49950"))
        timed("search common phrase 'let me check'", lambda: page.goto(url + "#/samples?q=let%20me%20check"))
        timed("search common, only rejected", lambda: page.goto(url + "#/samples?q=let%20me%20check&status=rejected"))
        timed("back to the reason page", lambda: page.goto(url + "#/samples?reason=" + reason))
        timed("sample view (click)", lambda: page.click("#samples-table a.sample-link >> nth=0"))
        timed("prompt view (click)", lambda: page.click("#prompt-link"))
        timed("duplicate clusters list", lambda: page.goto(url + "#/clusters"))
        timed("a cluster (click)", lambda: page.click("#clusters-table a.cluster-link >> nth=0"))
        t0 = time.time()
        while True:
            idx = json.loads(urllib.request.urlopen(url + "api/meta").read())["search_index"]
            if idx["files_indexed"] == idx["files"] and not idx["building"]:
                break
            time.sleep(0.5)
        print(f"word index: {idx['files']} shards, {idx['words']:,} words, built in {idx['build_s']:.0f} s "
              f"(ready {time.time() - t_start:.0f} s after start)")
        timed("search rare word (index)", lambda: page.goto(url + "#/samples?q=" + RARE))
        timed("search rare word, only rejected", lambda: page.goto(url + "#/samples?q=" + RARE + "&status=rejected"))
        timed("search common phrase (index)", lambda: page.goto(url + "#/samples?q=let%20me%20check&fields=cot"))
        timed("search absent word (index)", lambda: page.goto(url + "#/samples?q=qwertyuiop"))
        timed("search rare number (full scan)", lambda: page.goto(url + "#/samples?q=" + RARE_NUMBER))
        # Both words are in every row group, never side by side: only the word pairs rule groups out.
        timed("search phrase of common words", lambda: page.goto(url + "#/samples?q=pencils%20leaves"))
        if not args.no_charts:
            timed("charts (curator report --json)", lambda: page.goto(url + "#/charts"))
        timed("refresh (new snapshot)", lambda: page.click("#refresh"))
        page.screenshot(path=str(out.parent / "bench-viewer.png"))
        b.close()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    rss.stop = True
    base = baseline(out, reason)
    print(f"baseline: the same filtered page as a query over the catalog's samples view: {base * 1000:.0f} ms"
          f" (viewer: {times['filtered by reject reason'] * 1000:.0f} ms, {base / times['filtered by reject reason']:.1f}x faster)")
    print(f"server peak RSS {rss.peak / 2**20:.0f} MiB; its `curator report --json` child peak {rss.peak_children / 2**20:.0f} MiB")
    under = [k for k, v in times.items() if v >= 1.0]
    print("pages at or over 1 s: " + (", ".join(under) if under else "none"))
    print(f"screenshot: {out.parent / 'bench-viewer.png'}")


if __name__ == "__main__":
    main()
