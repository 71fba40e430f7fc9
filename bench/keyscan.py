"""What the export's key scan (curator/ship/keyscan.py) costs, against what the export already
does to every row (json.dumps of the row, as the JSONL formats write it) and against the plain
approach (one alternation regex over the text), same rows, same run, one core.

    .venv/bin/python bench/keyscan.py [--rows 2000] [--words 5000] [--near-miss 500]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.redact import _KEY_SHAPES  # noqa: E402
from curator.ship.keyscan import scan_rows  # noqa: E402

# Near misses the scan must look at and reject, one word in `--near-miss` of the text.
NEAR = ["task-1", "desk-top", "bearer", "hf_x", "eyJ", "AKIA", "xox", "-----BEGIN CERTIFICATE-----"]


def make_rows(n: int, words: int, near_miss: int, seed: int = 0) -> list[dict]:
    """Zipf-distributed words of a 20k vocabulary (CoT-like text), a key in one row of 500."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(20_000)]
    vocab[:10] = ["The", "of", "and", "to", "a", "in", "is", "that", "we", "x"]
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(NEAR) if rng.random() < 1 / near_miss else vocab[min(int(rng.paretovariate(1.2)) - 1, 19_999)]
                        for _ in range(words))
        if i % 500 == 0:
            text += " hf_" + "".join(rng.choice("abcdefghijKLMNOP0123456789") for _ in range(30))
        rows.append({"messages_json": json.dumps([{"role": "user", "content": text[:600]}]), "problem": text[:600], "gold": "42",
                     "cot": text, "completion": text[:1000], "row_json": json.dumps({"question": text[:600]})})
    return rows


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--words", type=int, default=5000)
    ap.add_argument("--near-miss", type=int, default=500, help="one near-miss word (task-1, bearer...) in this many")
    a = ap.parse_args()
    rows = make_rows(a.rows, a.words, a.near_miss)
    mb = sum(len(v) for r in rows for v in r.values()) / 1e6
    plain = re.compile("|".join(rf"\b(?:{rx})" for _, rx in _KEY_SHAPES.values()))
    fields = ("messages_json", "problem", "gold", "cot", "completion", "row_json")

    t_dump = timed(lambda: [json.dumps(r, ensure_ascii=False) for r in rows])
    found = {}
    t_scan = timed(lambda: found.setdefault("scan", scan_rows(rows)))
    t_plain = timed(lambda: found.setdefault("plain", sum(len(plain.findall(r[f])) for r in rows for f in fields)))
    print(f"{a.rows} rows, {mb:.1f} MB of text; found: scan {found['scan'].found}, plain regex {found['plain']}")
    print(f"  json.dumps of every row (baseline)  {t_dump:6.2f} s  {mb / t_dump:7.1f} MB/s")
    print(f"  key scan (anchored, curator)        {t_scan:6.2f} s  {mb / t_scan:7.1f} MB/s  = {t_scan / t_dump:.2f}x the dump")
    print(f"  one alternation regex (plain)       {t_plain:6.2f} s  {mb / t_plain:7.1f} MB/s  = {t_plain / t_scan:.1f}x the scan's time")


if __name__ == "__main__":
    main()
