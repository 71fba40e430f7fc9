"""`curator report OUT --json --no-html` on a big output directory: wall time and peak RSS.

    python bench/report_scale.py --out /tmp/v16b1m/out                        # this checkout only
    git archive 127792f | tar -x -C /tmp/base   # the code before this change, as a plain folder
    python bench/report_scale.py --out /tmp/v16b1m/out --baseline /tmp/base   # and that checkout, same run
    python bench/report_scale.py --out /tmp/v100k --rows 100000 --from /tmp/v16b1m/out   # a smaller copy first

Runs the shipped CLI (`python -m curator report OUT --json --no-html`) as a subprocess with each
checkout as the current directory (so that checkout's `curator` package is the one imported), and
reads the child's peak RSS from `resource.getrusage(RUSAGE_CHILDREN)` in a one-shot wrapper process
(so one run's peak never hides the next's). With --baseline it also compares the two JSON reports
(everything but `generated_at`): the numbers must be identical. Output directories are only read;
`--rows N --from BIG` copies BIG's first N samples' shards (whole 20k-row shards) and all verdicts.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs one command, then prints its wall time and the peak RSS of the command's process tree.
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    rc = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
wall = time.perf_counter() - t
print(json.dumps({"rc": rc, "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_report(checkout: Path, out_dir: Path, python: str, tmp: Path, tag: str) -> dict:
    stdout, stderr = tmp / f"{tag}.json", tmp / f"{tag}.err"
    cmd = [python, "-m", "curator", "report", str(out_dir), "--json", "--no-html"]
    res = subprocess.run([python, "-c", _WRAPPER, str(stdout), str(stderr), *cmd], cwd=checkout,
                         capture_output=True, text=True, check=True)
    fig = json.loads(res.stdout.strip().splitlines()[-1])
    if fig["rc"] != 0:
        sys.exit(f"{tag}: curator report failed ({fig['rc']}): {stderr.read_text()[-2000:]}")
    fig["report"] = json.loads(stdout.read_text())
    return fig


def _comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "generated_at"}


def _diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15):
        # A sum of doubles over threads: its last bits depend on which thread added which rows,
        # so the same code differs run to run at this size; `rounding` lists them apart.
        return [] if a == b else [f"~{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def make_subset(big: Path, rows: int, dest: Path) -> None:
    if dest.exists():
        return
    shards = sorted((big / "shards").glob("*.parquet"))
    import pyarrow.parquet as pq

    (dest / "shards").mkdir(parents=True)
    n = 0
    for p in shards:
        if n >= rows:
            break
        shutil.copy2(p, dest / "shards" / p.name)
        n += pq.read_metadata(p).num_rows
    shutil.copytree(big / "verdicts", dest / "verdicts")
    for name in ("manifest.resolved.yaml", "chain.json"):
        if (big / name).exists():
            shutil.copy2(big / name, dest / name)
    print(f"copied {n} samples of {big} to {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory to report on (only read)")
    ap.add_argument("--baseline", type=Path, help="another checkout (e.g. /work/main at the base commit) to time the same command in")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rows", type=int, help="with --from: make --out from the first ROWS samples of this folder")
    ap.add_argument("--from", dest="src", type=Path)
    ap.add_argument("--verbose", action="store_true", help="list the float sums that differ in their last bits")
    ap.add_argument("--keep", type=Path, help="copy the JSON reports (baseline.json, this.json) to this folder")
    a = ap.parse_args()
    if a.rows and a.src:
        make_subset(a.src, a.rows, a.out)
    with tempfile.TemporaryDirectory(prefix="report-bench-") as t:
        tmp = Path(t)
        runs = {}
        if a.baseline:
            runs["baseline"] = run_report(a.baseline, a.out, a.python, tmp, "baseline")
        runs["this"] = run_report(ROOT, a.out, a.python, tmp, "this")
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
            for tag in runs:
                shutil.copy2(tmp / f"{tag}.json", a.keep / f"{tag}.json")
    n = runs["this"]["report"].get("sampled")
    print(f"curator report {a.out} --json --no-html   ({n:,} samples)")
    for tag, f in runs.items():
        print(f"  {tag:9s} {f['wall_s']:8.1f} s   peak RSS {f['peak_rss_mb']:7.0f} MB")
    if "baseline" in runs:
        b, t = runs["baseline"], runs["this"]
        print(f"  ratio     {b['wall_s'] / t['wall_s']:8.1f}x faster, {b['peak_rss_mb'] / t['peak_rss_mb']:.1f}x less memory")
        diffs = _diff(_comparable(b["report"]), _comparable(t["report"]))
        rounding = [d for d in diffs if d.startswith("~")]
        diffs = [d for d in diffs if not d.startswith("~")]
        print("  numbers   identical" + (f" (but {len(rounding)} float sums in their last bits, rel. < 1e-12)" if rounding else "")
              if not diffs else f"  numbers   {len(diffs)} DIFFER:\n    " + "\n    ".join(diffs[:30]))
        if a.verbose and rounding:
            print("    " + "\n    ".join(rounding))
        if diffs:
            sys.exit(1)


if __name__ == "__main__":
    main()
