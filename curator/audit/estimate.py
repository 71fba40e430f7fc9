"""`curator estimate`: a pilot on a random sample of prompts, then a projection (with intervals) of
the cost and wall time of a target number of accepted samples.

The pilot is the manifest itself with `source.shuffle_seed` set (an existing one is kept) and
`source.limit` = pilot, written to the manifest's own output directory. Sample keys depend only on
endpoint, model, messages, params and sample index, so the full run later finds the pilot's
answers stored and does not buy them again: the pilot is kept, not wasted.

Intervals (90% by default):
- acceptance rate: Wilson score interval over the pilot's samples;
- cost, samples, requests and wall time per accepted sample: a bootstrap over prompts (samples of
  one prompt are resampled together, since they share a problem and succeed or fail together).
They cover the pilot's sampling noise only; see `caveats` in the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from curator.config import Manifest

DEFAULT_SEED = 20_240_501  # the pilot's shuffle when the manifest has none
BOOTSTRAP = 2000


def wilson(successes: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def pilot_manifest(manifest: Manifest, pilot: int, seed: int | None = None) -> Manifest:
    """The manifest restricted to a random `pilot` prompts (same output directory, same keys)."""
    src = manifest.source
    shuffle = src.shuffle_seed if src.shuffle_seed is not None else (seed if seed is not None else DEFAULT_SEED)
    limit = pilot if src.limit is None else min(pilot, src.limit)
    m = manifest.model_copy(deep=True)
    m.source = src.model_copy(update={"shuffle_seed": shuffle, "limit": limit})
    # The pilot samples a fixed n per prompt: unbiased pass rates for the K-accepted projection
    # (a K-accepted pilot stops early on easy prompts); its keys are the full run's first round.
    m.budget = m.budget.model_copy(update={"per_prompt": None})
    m.base_dir = manifest.base_dir
    m.manifest_path = manifest.manifest_path
    return m


@dataclass
class PromptStats:
    """Per-prompt sums of the pilot (numpy arrays, one entry per prompt)."""

    cost: Any
    accepted: Any
    samples: Any
    requests: Any
    latency: Any  # sum of request latencies
    tokens: Any  # prompt + completion tokens of its requests
    output_tokens: Any


def _prompt_stats(rows: list[dict[str, Any]]) -> PromptStats:
    import numpy as np

    by_prompt: dict[str, dict[str, Any]] = {}
    for r in rows:
        p = by_prompt.setdefault(r["prompt_id"], {"cost": 0.0, "accepted": 0, "samples": 0, "requests": {}, "tokens": 0, "out": 0})
        p["cost"] += r["cost_usd"] or 0.0
        p["accepted"] += bool(r["accepted"])
        p["samples"] += 1
        p["tokens"] += (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
        p["out"] += r["completion_tokens"] or 0
        p["requests"][r["request_id"] or r["key"]] = r["latency_s"] or 0.0
    ps = list(by_prompt.values())
    arr = lambda xs: np.asarray(xs, dtype=float)  # noqa: E731
    return PromptStats(
        cost=arr([p["cost"] for p in ps]),
        accepted=arr([p["accepted"] for p in ps]),
        samples=arr([p["samples"] for p in ps]),
        requests=arr([len(p["requests"]) for p in ps]),
        latency=arr([sum(p["requests"].values()) for p in ps]),
        tokens=arr([p["tokens"] for p in ps]),
        output_tokens=arr([p["out"] for p in ps]),
    )


def _rate(manifest: Manifest, latency_per_request, tokens_per_request):
    """Requests per second the full run can sustain: concurrency / latency, capped by RPM and TPM."""
    import numpy as np

    lim = manifest.limits
    lat = np.maximum(latency_per_request, 1e-3)
    rate = lim.concurrency / lat
    if lim.rpm:
        rate = np.minimum(rate, lim.rpm / 60.0)
    if lim.tpm:
        rate = np.minimum(rate, lim.tpm / 60.0 / np.maximum(tokens_per_request, 1.0))
    return rate


def project(manifest: Manifest, rows: list[dict[str, Any]], target: int, *, confidence: float = 0.9,
            bootstrap: int = BOOTSTRAP, seed: int = 0, price_known: bool = True) -> dict[str, Any]:
    """Projection for `target` accepted samples from the pilot's stored samples (`rows`: key,
    prompt_id, cost_usd, accepted, prompt_tokens, completion_tokens, request_id, latency_s)."""
    import numpy as np

    st = _prompt_stats(rows)
    P = len(st.cost)
    n_samples = int(st.samples.sum())
    n_acc = int(st.accepted.sum())
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    cost_known = price_known and all(r["cost_usd"] is not None for r in rows)

    # Point estimates.
    p_hat = n_acc / n_samples if n_samples else None
    p_lo, p_hi = wilson(n_acc, n_samples, confidence)
    req_total = float(st.requests.sum())
    lat_per_req = float(st.latency.sum() / req_total) if req_total else None
    tok_per_req = float(st.tokens.sum() / req_total) if req_total else None

    def ratio(num, den):
        return None if den == 0 else float(num / den)

    point = {
        "usd_per_accepted": ratio(st.cost.sum(), n_acc) if cost_known else None,
        "samples_per_accepted": ratio(n_samples, n_acc),
        "requests_per_accepted": ratio(req_total, n_acc),
        "usd_per_sample": ratio(st.cost.sum(), n_samples) if cost_known else None,
        "output_tokens_per_sample": ratio(st.output_tokens.sum(), n_samples),
        "tokens_per_accepted": ratio(st.tokens.sum(), n_acc),
    }
    rate = float(_rate(manifest, np.asarray(lat_per_req or 0.0), np.asarray(tok_per_req or 0.0))) if lat_per_req else None

    # Bootstrap over prompts.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, P, size=(bootstrap, P)) if P else np.zeros((bootstrap, 0), dtype=int)
    acc_b = st.accepted[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cpa_b = np.where(acc_b > 0, st.cost[idx].sum(axis=1) / acc_b, np.inf)
        rpa_b = np.where(acc_b > 0, st.requests[idx].sum(axis=1) / acc_b, np.inf)
        spa_b = np.where(acc_b > 0, st.samples[idx].sum(axis=1) / acc_b, np.inf)
        req_b = st.requests[idx].sum(axis=1)
        lat_b = st.latency[idx].sum(axis=1) / np.maximum(req_b, 1)
        tok_b = st.tokens[idx].sum(axis=1) / np.maximum(req_b, 1)
        wall_b = np.where(acc_b > 0, rpa_b / _rate(manifest, lat_b, tok_b), np.inf)

    def interval(samples) -> list[float | None]:
        if P == 0:
            return [None, None]
        lo, hi = np.percentile(samples, [lo_q, hi_q])
        return [None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi)]

    per_acc = {
        "usd": interval(cpa_b) if cost_known else [None, None],
        "samples": interval(spa_b),
        "requests": interval(rpa_b),
        "wall_s": interval(wall_b),
    }

    def scaled(x: float | None) -> float | None:
        return None if x is None else x * target

    usd_point = scaled(point["usd_per_accepted"])
    usd_iv = [scaled(v) for v in per_acc["usd"]]
    wall_point = None if (rate is None or point["requests_per_accepted"] is None) else target * point["requests_per_accepted"] / rate
    result = {
        "target_accepted": target,
        "confidence": confidence,
        "pilot": {
            "prompts": P,
            "samples": n_samples,
            "accepted": n_acc,
            "requests": int(req_total),
            "usd": float(st.cost.sum()) if cost_known else None,
            "mean_latency_s": lat_per_req,
            "tokens_per_request": tok_per_req,
        },
        "acceptance_rate": p_hat,
        "acceptance_interval": [p_lo, p_hi],
        "usd_per_sample": point["usd_per_sample"],
        "output_tokens_per_sample": point["output_tokens_per_sample"],
        "usd_per_accepted": point["usd_per_accepted"],
        "usd_per_accepted_interval": per_acc["usd"],
        "projected_usd": usd_point,
        "projected_usd_interval": usd_iv,
        "projected_samples": scaled(point["samples_per_accepted"]),
        # Samples to draw: from the Wilson interval (target / rate), the classical way to read it.
        "projected_samples_interval": [target / p_hi if p_hi else None, target / p_lo if p_lo else None],
        "projected_requests": scaled(point["requests_per_accepted"]),
        "projected_requests_interval": [scaled(v) for v in per_acc["requests"]],
        "projected_tokens": scaled(point["tokens_per_accepted"]),
        "requests_per_s": rate,
        "projected_wall_s": wall_point,
        "projected_wall_s_interval": [scaled(v) for v in per_acc["wall_s"]],
        "bootstrap": bootstrap,
    }
    result["sureness"] = _sureness(result)
    return result


def _sureness(r: dict[str, Any]) -> dict[str, Any]:
    """How sure: the interval's half-width relative to the point, and the pilot size for +-10%."""
    point = r["projected_usd"] if r["projected_usd"] is not None else r["projected_samples"]
    lo, hi = r["projected_usd_interval"] if r["projected_usd"] is not None else r["projected_samples_interval"]
    P = r["pilot"]["prompts"]
    if point is None or lo is None or hi is None or point == 0:
        return {"relative_half_width": None, "verdict": "unknown: no sample of the pilot was accepted" if r["pilot"]["samples"] else "unknown: empty pilot",
                "pilot_for_10pct": None}
    rel = (hi - lo) / 2 / point
    verdict = "tight" if rel <= 0.10 else ("moderate" if rel <= 0.25 else "rough")
    need = math.ceil(P * (rel / 0.10) ** 2) if rel > 0.10 else None
    return {"relative_half_width": rel, "verdict": verdict, "pilot_for_10pct": need}


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _betabinom_pmf(t: int, a: float, b: float) -> list[float]:
    """P(S = k), k = 0..t, for S ~ BetaBinomial(t, a, b): t samples of a prompt whose pass rate
    is drawn from Beta(a, b)."""
    base = _lbeta(a, b)
    lf = [math.lgamma(i + 1) for i in range(t + 1)]
    return [math.exp(lf[t] - lf[k] - lf[t - k] + _lbeta(k + a, t - k + b) - base) for k in range(t + 1)]


def fit_pass_rates(accepted, samples) -> tuple[float, float, float]:
    """Beta(a, b) of the prompts' pass rates, by the method of moments of a beta-binomial over the
    pilot (accepted of samples per prompt); returns (a, b, mean). With one sample per prompt the
    spread between prompts cannot be seen: a near-uniform difficulty is assumed."""
    import numpy as np

    acc, n = np.asarray(accepted, dtype=float), np.asarray(samples, dtype=float)
    keep = n > 0
    acc, n = acc[keep], n[keep]
    mu = float(acc.sum() / n.sum()) if n.sum() else 0.0
    mu = min(max(mu, 1e-4), 1 - 1e-4)
    nbar = float(n.mean()) if len(n) else 1.0
    rho = 1e-4
    if nbar > 1 and len(n) > 1:
        var = float(np.var(acc / n, ddof=1))  # spread of the per-prompt rates: binomial noise + difficulty
        # E[var of acc/n] = mu(1-mu)/n * (1 + (n-1) rho)
        rho = (var * nbar / (mu * (1 - mu)) - 1) / (nbar - 1)
    rho = min(max(rho, 1e-4), 0.999)
    total = 1 / rho - 1
    return mu * total, (1 - mu) * total, mu


def k_accepted_expectations(a: float, b: float, n: int, k: int, m: int) -> dict[str, float]:
    """Per prompt, under budget.per_prompt {accepted: k, max_samples: m} with a first round of n
    and pass rates ~ Beta(a, b): expected samples, accepted, and the chances of reaching k and of
    ending with nothing. Samples: T > t (t >= n) exactly when the first t hold fewer than k accepted."""
    cdf_below_k = lambda t: sum(_betabinom_pmf(t, a, b)[:k])  # noqa: E731
    samples = n + sum(cdf_below_k(t) for t in range(n, m))
    pn, pm = _betabinom_pmf(n, a, b), _betabinom_pmf(m, a, b)
    # Ends with S_n when the first round already has k, else min(k, S_m).
    first_k = sum(pn[k:])
    accepted = sum(s * p for s, p in enumerate(pn) if s >= k) + sum(min(k, s) * p for s, p in enumerate(pm)) - k * first_k
    return {"samples": samples, "accepted": accepted, "reach_k": sum(pm[k:]), "none": pm[0],
            "fixed_accepted": n * a / (a + b), "fixed_none": pn[0]}


def project_per_prompt(manifest: Manifest, rows: list[dict[str, Any]], prompts: int, *, confidence: float = 0.9,
                       bootstrap: int = 500, seed: int = 0, price_known: bool = True) -> dict[str, Any]:
    """budget.per_prompt against a fixed n, for `prompts` prompts, from the pilot's pass rates: the
    Beta fit's expectations, with an interval from a bootstrap over the pilot's prompts."""
    import numpy as np

    rule, n = manifest.budget.per_prompt, manifest.teacher.params.n
    st = _prompt_stats(rows)
    cost_known = price_known and bool(rows) and all(r["cost_usd"] is not None for r in rows)
    usd_per_sample = float(st.cost.sum() / st.samples.sum()) if cost_known and st.samples.sum() else None

    def one(acc, smp) -> dict[str, float]:
        a, b, _ = fit_pass_rates(acc, smp)
        return k_accepted_expectations(a, b, n, rule.accepted, rule.max_samples)

    point = one(st.accepted, st.samples)
    a, b, mu = fit_pass_rates(st.accepted, st.samples)
    rng = np.random.default_rng(seed)
    P = len(st.samples)
    boots = [one(st.accepted[i], st.samples[i]) for i in (rng.integers(0, P, P) for _ in range(bootstrap if P else 0))]
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100

    def iv(key: str, scale: float = 1.0) -> list[float | None]:
        if not boots:
            return [None, None]
        lo, hi = np.percentile([x[key] for x in boots], [lo_q, hi_q])
        return [float(lo) * scale, float(hi) * scale]

    usd = lambda samples: None if usd_per_sample is None else samples * usd_per_sample  # noqa: E731
    k_samples = point["samples"] * prompts
    fixed_samples = n * prompts
    res = {
        "accepted": rule.accepted,
        "max_samples": rule.max_samples,
        "first_round": n,
        "prompts": prompts,
        "pass_rate_fit": {"mean": mu, "alpha": a, "beta": b},
        "samples_per_prompt": point["samples"],
        "samples_per_prompt_interval": iv("samples"),
        "samples": k_samples,
        "samples_interval": iv("samples", prompts),
        "usd": usd(k_samples),
        "usd_interval": [usd(x) if x is not None else None for x in iv("samples", prompts)],
        "accepted_total": point["accepted"] * prompts,
        "usd_per_accepted": None if usd_per_sample is None or not point["accepted"] else usd(point["samples"]) / point["accepted"],
        "prompts_reaching_k": point["reach_k"] * prompts,
        "prompts_with_none": point["none"] * prompts,
        "fixed_n": {
            "samples": fixed_samples,
            "usd": usd(fixed_samples),
            "accepted_total": point["fixed_accepted"] * prompts,
            "usd_per_accepted": None if usd_per_sample is None or not point["fixed_accepted"] else usd(n) / point["fixed_accepted"],
            "prompts_with_none": point["fixed_none"] * prompts,
        },
    }
    if n < 2:
        res["note"] = ("the pilot drew one sample per prompt, which cannot show how difficulty varies between prompts: "
                       "the projection assumes it does not; a first round of n >= 2 gives a better one")
    return res


CAVEATS = [
    "The intervals cover the pilot's sampling noise only: not price changes, tighter rate limits than the manifest's, "
    "or a teacher that drifts later in the run.",
    "Dataset-scope filters (near_dup, majority_vote) judged the pilot alone: with more samples they find more "
    "duplicates, so acceptance at full scale can be lower.",
    "Wall time assumes the manifest's concurrency stays full at the pilot's mean latency, capped by limits.rpm/tpm; "
    "server-side rate limits (HTTP 429) make it longer.",
]


def _by_mode(manifest: Manifest, price, result: dict[str, Any]) -> dict[str, Any]:
    """The projection online and through a batch API side by side (issue 13): the pilot was
    bought in the manifest's mode; a batch comes back within its completion window, so its wall
    time is that window at most (providers usually finish well within it)."""
    from curator.sample.cost import by_mode

    mode = manifest.teacher.mode
    return {"paid_in": mode, "batch_discount": None if price is None else price.batch_discount,
            "projected_usd": by_mode(result["projected_usd"], price, mode),
            "usd_per_accepted": by_mode(result["usd_per_accepted"], price, mode),
            "online_wall_s": result["projected_wall_s"], "batch_completion_window": manifest.teacher.batch.completion_window}


def summarise_pilot(manifest: Manifest, pm: Manifest, rows: list[dict[str, Any]], accepted_total: int, pilot_run: dict[str, Any],
                    target: int, *, confidence: float = 0.9, bootstrap: int = BOOTSTRAP) -> dict[str, Any]:
    """The projection from a pilot's stored rows (`curator.run.estimate` runs the pilot and reads them)."""
    from curator.sample.cost import find_price
    from curator.sample.sources import load_problems

    price = find_price(manifest.teacher.model, manifest.teacher.price)
    result = project(manifest, rows, target, confidence=confidence, bootstrap=bootstrap, price_known=price is not None)
    full_prompts = len(load_problems(manifest.source, manifest.resolve(manifest.source.path)))
    n = manifest.teacher.params.n
    available = full_prompts * n
    result.update({
        "manifest": manifest.name,
        "concurrency": manifest.limits.concurrency,
        "model": manifest.teacher.model,
        "out_dir": str(manifest.output_dir),
        "price_known": price is not None,
        "price": None if price is None else price.model_dump(),
        "pilot_seed": pm.source.shuffle_seed,
        "pilot_run": pilot_run,
        "accepted_stored": accepted_total,
        "remaining_accepted": max(0, target - accepted_total),
        "remaining_usd": None if result["usd_per_accepted"] is None else max(0, target - accepted_total) * result["usd_per_accepted"],
        "source_prompts": full_prompts,
        "source_samples": available,
        "source_expected_accepted": None if result["acceptance_rate"] is None else available * result["acceptance_rate"],
        "caveats": list(CAVEATS),
    })
    result["by_mode"] = _by_mode(manifest, price, result)
    if result["source_expected_accepted"] is not None and result["source_expected_accepted"] < target:
        result["caveats"].insert(0, f"The source has {full_prompts:,} prompts x n={n}: at this acceptance rate it yields about "
                                    f"{result['source_expected_accepted']:,.0f} accepted samples, fewer than the target {target:,}.")
    if manifest.budget.per_prompt is not None:
        result["per_prompt"] = project_per_prompt(manifest, rows, full_prompts, confidence=confidence,
                                                  bootstrap=min(bootstrap, 500), price_known=price is not None)
    if manifest.source.limit is not None and manifest.source.shuffle_seed is None:
        result["caveats"].append("The manifest takes the first source.limit rows in file order while the pilot drew from all "
                                 "rows: set source.shuffle_seed so every pilot answer is reused by the full run.")
    return result




def fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "unknown"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The estimate as plain lines (the CLI prints them with rich)."""
    from curator.sample.cost import format_usd

    conf = f"{r['confidence']:.0%}"
    p = r["pilot"]
    lines = [
        f"pilot: {p['prompts']} prompts, {p['samples']} samples, {p['accepted']} accepted "
        f"({r['pilot_run']['stored_now']} answers bought now, {r['pilot_run']['already_stored']} already stored); "
        f"pilot cost {format_usd(p['usd'])}",
    ]
    if r["acceptance_rate"] is not None:
        a, b = r["acceptance_interval"]
        lines.append(f"acceptance: {r['acceptance_rate']:.1%} ({conf} Wilson interval {a:.1%} – {b:.1%})")
    if r["output_tokens_per_sample"] is not None:
        lines.append(f"tokens per answer: {r['output_tokens_per_sample']:,.0f} output; {format_usd(r['usd_per_sample'])} per sample")
    t = r["target_accepted"]
    if r["projected_usd"] is not None:
        lo, hi = r["projected_usd_interval"]
        lines.append(f"projected cost for {t:,} accepted: {format_usd(r['projected_usd'])} "
                     f"({conf} interval {format_usd(lo)} – {format_usd(hi, unknown='unbounded')}); "
                     f"{format_usd(r['usd_per_accepted'])} per accepted sample")
    elif not r["price_known"]:
        lines.append(f"projected cost: unknown (no price for model {r['model']!r}: set teacher.price in the manifest)")
    else:
        lines.append("projected cost: unknown (no pilot sample was accepted)")
    if r["projected_samples"] is not None:
        lo, hi = r["projected_samples_interval"]
        lines.append(f"samples to draw: {r['projected_samples']:,.0f} ({conf}: {lo:,.0f} – {hi:,.0f}); "
                     f"requests: {r['projected_requests']:,.0f}; tokens: {r['projected_tokens']:,.0f}")
    if r["projected_wall_s"] is not None:
        lo, hi = r["projected_wall_s_interval"]
        lines.append(f"wall time: {fmt_duration(r['projected_wall_s'])} ({conf}: {fmt_duration(lo)} – {fmt_duration(hi)}) "
                     f"at {r['requests_per_s']:,.1f} requests/s (mean latency {r['pilot']['mean_latency_s']:.2f} s, "
                     f"concurrency {r['concurrency']})"
                     + (f"; the pilot itself stored {r['pilot_run']['samples_per_s']:,.1f} samples/s" if r["pilot_run"]["samples_per_s"] else ""))
    bm = r.get("by_mode")
    if bm and bm["projected_usd"]["online"] is not None:
        lines.append(f"online vs batch for {t:,} accepted: {format_usd(bm['projected_usd']['online'])} in about "
                     f"{fmt_duration(bm['online_wall_s'])} vs {format_usd(bm['projected_usd']['batch'])} "
                     f"({bm['batch_discount']:.0%} off) within the batch window of {bm['batch_completion_window']}")
    if r["accepted_stored"]:
        lines.append(f"already accepted in {r['out_dir']}: {r['accepted_stored']:,}; remaining {r['remaining_accepted']:,}"
                     + (f" ≈ {format_usd(r['remaining_usd'])}" if r["remaining_usd"] is not None else ""))
    pp = r.get("per_prompt")
    if pp:
        f = pp["fixed_n"]
        lo, hi = pp["samples_per_prompt_interval"]
        rng_ = f" ({conf}: {lo:.2f} – {hi:.2f})" if lo is not None else ""
        lines.append(f"per_prompt {{accepted: {pp['accepted']}, max_samples: {pp['max_samples']}}} over {pp['prompts']:,} prompts "
                     f"(pilot pass rate {pp['pass_rate_fit']['mean']:.1%}): {pp['samples_per_prompt']:.2f} samples per prompt{rng_}, "
                     f"{pp['samples']:,.0f} samples, {format_usd(pp['usd'])}"
                     + (f" ({format_usd(pp['usd_interval'][0])} – {format_usd(pp['usd_interval'][1])})" if pp["usd_interval"][0] is not None and pp["usd"] is not None else "")
                     + f"; {pp['accepted_total']:,.0f} accepted, {format_usd(pp['usd_per_accepted'])} each; "
                     f"{pp['prompts_with_none']:,.0f} prompts with none")
        lines.append(f"  against fixed n={pp['first_round']}: {f['samples']:,.0f} samples, {format_usd(f['usd'])}; "
                     f"{f['accepted_total']:,.0f} accepted, {format_usd(f['usd_per_accepted'])} each; {f['prompts_with_none']:,.0f} prompts with none")
        if pp.get("note"):
            lines.append(f"  note: {pp['note']}")
    s = r["sureness"]
    if s["relative_half_width"] is not None:
        extra = f"; a pilot of about {s['pilot_for_10pct']:,} prompts would bring it to ±10%" if s["pilot_for_10pct"] else ""
        lines.append(f"how sure: {s['verdict']} (±{s['relative_half_width']:.0%} at {conf}, from {p['prompts']} prompts){extra}")
    else:
        lines.append(f"how sure: {s['verdict']}")
    return lines
