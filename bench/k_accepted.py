"""K-accepted sampling (budget.per_prompt) against a fixed n, on prompts of mixed difficulty.

    python bench/k_accepted.py [--prompts 2000] [--k 2] [--first 2] [--max-samples 16] [--json]

The local teacher (its own process) answers each problem wrong with that problem's own rate,
drawn uniformly from 0 to 1 (seeded), so some prompts are always solved, some never. Everything
runs through the CLI (`curator run`), judged by the `math` filter:

1. K-accepted: n = --first, then top-ups until --k accepted or --max-samples samples.
2. A probe with n = --probe (default 2 x max samples) in one request per prompt: choice j of a
   request does not depend on n, so the probe tells, for every n, how many prompts a fixed-n run
   leaves with >= 1 accepted. The smallest n matching the K-accepted run's count is the baseline.
3. Fixed n: that n, run for real (its own output folder), whose figures are reported.

Prints samples bought, dollars, accepted samples and dollars per accepted sample of both, and
the ratios fixed-n / K-accepted."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.store.catalog import query  # noqa: E402
from curator.teacher.config import ServerConfig  # noqa: E402
from curator.teacher.runner import ServerProcess  # noqa: E402

MANIFEST = """name: k-accepted-bench
source: {{path: problems.jsonl, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}\\nPut your final answer within \\\\boxed{{}}."}}
teacher:
  base_url: {url}
  model: deepseek-reasoner
  http: aiohttp
  params: {{temperature: 0.6, max_tokens: 2048, n: {n}, seed: 11}}
  price: {{input: 0.55, cached_input: 0.14, output: 2.19}}
limits: {{concurrency: {concurrency}, timeout_s: 60, max_retries: 4}}
filters: [math]
output: {out}
{budget}
"""


def write_problems(path: Path, prompts: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(prompts):
            f.write(json.dumps({"id": f"q{i}", "question": f"Problem {i}: a shop sells {i % 97 + 3} pens a day for {i % 13 + 2} days. "
                                                           f"How many pens (case {rng.random():.6f})?",
                                "answer": str((i % 97 + 3) * (i % 13 + 2)), "wrong_rate": rng.random()}) + "\n")


def run(work: Path, name: str, url: str, n: int, concurrency: int, budget: str = "") -> tuple[Path, float]:
    m = work / f"{name}.yaml"
    m.write_text(MANIFEST.format(url=url, n=n, concurrency=concurrency, out=name, budget=budget))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "curator", "run", str(m), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"curator run {name} failed: {r.stderr[-2000:]}")
    return work / name, time.monotonic() - t0


def figures(out: Path, k: int) -> dict[str, float]:
    s = query(out, "SELECT count(*), sum(cost_usd), count(*) FILTER (WHERE accepted), count(DISTINCT prompt_id) FROM samples")[0]
    p = query(out, f"SELECT count(*) FILTER (WHERE accepted >= 1), count(*) FILTER (WHERE accepted >= {k}), "
                   f"sum(least(accepted, {k})) FROM prompts")[0]
    return {"samples": s[0], "usd": s[1], "accepted": s[2], "prompts": s[3], "prompts_with_1": p[0], "prompts_with_k": p[1],
            "usd_per_accepted": s[1] / s[2] if s[2] else None,
            # What a student set of at most K traces per prompt keeps: the rest of an easy prompt's traces add little.
            "accepted_up_to_k": int(p[2]), "usd_per_accepted_up_to_k": s[1] / p[2] if p[2] else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--first", type=int, default=2, help="n of the first round of the K-accepted run")
    ap.add_argument("--max-samples", type=int, default=16)
    ap.add_argument("--probe", type=int, help="n of the probe (default 2 x --max-samples)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="k-accepted-"))
    work.mkdir(parents=True, exist_ok=True)
    write_problems(work / "problems.jsonl", a.prompts, a.seed)
    probe_n = a.probe or 2 * a.max_samples
    srv = ServerProcess(ServerConfig.load({"problems": str(work / "problems.jsonl"), "problem_column": "question",
                                           "wrong_rate_column": "wrong_rate", "cot_words": 40}))
    try:
        url = srv.base_url
        k_out, k_wall = run(work, "k_accepted", url, a.first, a.concurrency,
                            f"budget: {{per_prompt: {{accepted: {a.k}, max_samples: {a.max_samples}}}}}")
        kf = figures(k_out, a.k)
        probe_out, _ = run(work, "probe", url, probe_n, a.concurrency)
        # Prompts with >= 1 accepted among their first j samples, for every j (sample j of the probe
        # is choice j of one request, as in any fixed-n run).
        first_ok = dict(query(probe_out, "SELECT prompt_id, min(sample_index) FILTER (WHERE accepted) FROM samples GROUP BY 1"))
        covered = [sum(1 for v in first_ok.values() if v is not None and v < j) for j in range(probe_n + 1)]
        n_fixed = next((j for j in range(1, probe_n + 1) if covered[j] >= kf["prompts_with_1"]), None)
        if n_fixed is None:
            raise SystemExit(f"even n={probe_n} leaves fewer prompts with an accepted sample ({covered[-1]}) than K-accepted "
                             f"({kf['prompts_with_1']}): raise --probe")
        f_out, f_wall = run(work, f"fixed_n{n_fixed}", url, n_fixed, a.concurrency)
        ff = figures(f_out, a.k)
    finally:
        srv.stop()

    ratio = lambda key: ff[key] / kf[key] if kf[key] else None  # noqa: E731
    res = {"prompts": a.prompts, "k": a.k, "first_round": a.first, "max_samples": a.max_samples, "fixed_n": n_fixed,
           "fixed_n_predicted_prompts_with_1": covered[n_fixed], "k_accepted": kf, "fixed": ff,
           "wall_s": {"k_accepted": k_wall, "fixed": f_wall},
           "ratio_fixed_over_k": {key: ratio(key) for key in ("samples", "usd", "accepted", "usd_per_accepted", "prompts_with_k",
                                                                "accepted_up_to_k", "usd_per_accepted_up_to_k")},
           "workdir": str(work)}
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{a.prompts:,} prompts, wrong rate uniform on [0, 1]; K-accepted: n={a.first} then up to K={a.k} accepted "
          f"or {a.max_samples} samples; fixed n={n_fixed} gives as many prompts with >= 1 accepted "
          f"({ff['prompts_with_1']:,} vs {kf['prompts_with_1']:,}; the probe predicted {covered[n_fixed]:,})")
    print(f"{'':26}{'K-accepted':>14}{'fixed n=' + str(n_fixed):>14}{'fixed / K':>12}")
    for key, label, fmt in (("samples", "samples bought", "{:,.0f}"), ("usd", "dollars", "${:,.4f}"),
                            ("accepted", "accepted samples", "{:,.0f}"), ("usd_per_accepted", "dollars per accepted", "${:,.6f}"),
                            ("accepted_up_to_k", f"accepted, <= {a.k} a prompt", "{:,.0f}"),
                            ("usd_per_accepted_up_to_k", "dollars per those", "${:,.6f}"),
                            ("prompts_with_1", "prompts with >= 1", "{:,.0f}"), ("prompts_with_k", f"prompts with >= {a.k}", "{:,.0f}")):
        r = ratio(key)
        print(f"{label:26}{fmt.format(kf[key]):>14}{fmt.format(ff[key]):>14}{(f'{r:.2f}x' if r is not None else '-'):>12}")
    print(f"wall: K-accepted {k_wall:.1f} s, fixed {f_wall:.1f} s (work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
