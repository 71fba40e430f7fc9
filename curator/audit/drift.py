"""Drift signals over a run's order (`seq`): is the teacher getting worse as the run goes on?

Three kinds, each comparing a rolling window of the latest samples with the run's first window:

- reasoning collapse: the median CoT length (words) falls below `cot_ratio` x the first window's;
- format drift: the share of samples without a separate chain of thought (`cot_source` none:
  think markers gone) or without a `\\boxed{}` answer rises by `format_rise` or more;
- consistency degradation: the share of samples whose answer matches the gold (the `math`
  filter's verdict when there is one, else the last `\\boxed{}` against the gold) falls by
  `accuracy_drop` or more.

Shares must also differ by `min_z` standard errors (two-proportion z), so a small window's noise
does not raise a warning. `DriftMonitor` is live (`observe` the records as they are stored, get
warning lines back once per crossing); `drift_signals` runs the same monitor over a finished
output and adds the rolling series the report plots.
"""

from __future__ import annotations

import math
import re
import statistics
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from curator.engines.answers import last_boxed

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")

# --------------------------------------------------------------------------------------------
# Per-sample features
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _norm(answer: str | None) -> str | None:
    if answer is None:
        return None
    a = answer.strip().strip("$").strip()
    a = re.sub(r"\\text\{([^{}]*)\}", r"\1", a)
    a = a.replace("\\!", "").replace("\\,", "").replace("\\ ", "").replace("\\%", "").replace("%", "")
    a = re.sub(r"\s+", "", a).rstrip(".")
    if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", a):
        try:
            v = float(a.replace(",", ""))
            return str(int(v)) if v.is_integer() else repr(v)
        except ValueError:
            pass
    return a or None


def gold_answer(gold: str | None) -> str | None:
    """The final answer in a gold field: after GSM8K's `####`, a MATH solution's last \\boxed{}, or the text."""
    if gold is None or not str(gold).strip():
        return None
    g = str(gold)
    if "####" in g:
        return _norm(g.rsplit("####", 1)[1])
    boxed = last_boxed(g)
    return _norm(boxed if boxed is not None else g)


def predicted_answer(completion: str | None) -> str | None:
    boxed = last_boxed(completion)
    if boxed is not None:
        return _norm(boxed)
    nums = _NUMBER.findall(completion or "")
    return _norm(nums[-1]) if nums else None


def matches_gold(completion: str | None, gold: str | None) -> bool | None:
    """A cheap exact check (no Math-Verify): None when there is no gold to compare with."""
    g = gold_answer(gold)
    if g is None:
        return None
    return predicted_answer(completion) == g


def cot_words(cot: str | None) -> int:
    return len(cot.split()) if cot else 0


@dataclass(frozen=True)
class Features:
    seq: int | None
    cot_len: int
    no_think: bool
    no_boxed: bool
    correct: bool | None


def features(r: dict[str, Any]) -> Features:
    """What the signals look at, from one stored sample (a record dict or a report row).
    A `math_passed` field (the math filter's verdict) takes precedence over the gold check; a
    `cot_len` field (words, computed by the caller) stands in for the `cot` text."""
    return features_of(r.get("seq"), int(r["cot_len"]) if r.get("cot_len") is not None else cot_words(r.get("cot")),
                       r.get("cot_source"), r.get("completion"), r.get("gold"), r.get("math_passed"))


def features_of(seq: int | None, cot_len: int, cot_source: str | None, completion: str | None, gold: str | None,
                math_passed: bool | None, gold_cache: dict | None = None) -> Features:
    """`features` from the columns (the report streams them from DuckDB without building a dict a
    row); `gold_cache` keeps each distinct gold's parsed answer (a set has few distinct golds)."""
    correct = math_passed
    if correct is None:
        if gold_cache is None:
            correct = matches_gold(completion, gold)
        else:
            g = gold_cache.get(gold, gold_cache)
            if g is gold_cache:
                g = gold_cache[gold] = gold_answer(gold)
            correct = None if g is None else predicted_answer(completion) == g
    return Features(
        seq=seq,
        cot_len=cot_len,
        no_think=(cot_source or "none") == "none",
        no_boxed=_BOXED.search(completion or "") is None,
        correct=None if correct is None else bool(correct),
    )


# --------------------------------------------------------------------------------------------
# The signals
# --------------------------------------------------------------------------------------------

SIGNALS = {
    # metric: (signal kind, label, what a feature value is)
    "cot_length": ("reasoning_collapse", "reasoning length collapse", "median CoT words"),
    "no_think": ("format_drift", "think markers disappearing", "share without a separate CoT"),
    "no_boxed": ("format_drift", "boxed answers disappearing", "share without \\boxed{}"),
    "accuracy": ("consistency", "accuracy falling", "share matching the gold answer"),
}


def _z(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two-proportion z statistic (pooled); 0 when undefined."""
    if n1 == 0 or n2 == 0:
        return 0.0
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0 if p1 == p2 else math.copysign(math.inf, p2 - p1)
    return (p2 - p1) / se


class _Window:
    """Running counts over a list of Features (a deque for the rolling window)."""

    def __init__(self, maxlen: int | None = None):
        self.items: deque[Features] = deque(maxlen=maxlen)
        self.no_think = 0
        self.no_boxed = 0
        self.known = 0
        self.correct = 0

    def __len__(self) -> int:
        return len(self.items)

    def _count(self, f: Features, sign: int) -> None:
        self.no_think += sign * f.no_think
        self.no_boxed += sign * f.no_boxed
        if f.correct is not None:
            self.known += sign
            self.correct += sign * f.correct

    def add(self, f: Features) -> None:
        if self.items.maxlen is not None and len(self.items) == self.items.maxlen:
            self._count(self.items[0], -1)
        self.items.append(f)
        self._count(f, +1)

    def median_cot(self) -> float:
        return float(statistics.median(f.cot_len for f in self.items)) if self.items else 0.0

    def share(self, metric: str) -> tuple[float, int]:
        """(share, denominator) of a proportion metric."""
        if metric == "accuracy":
            return (self.correct / self.known if self.known else float("nan")), self.known
        n = len(self.items)
        v = self.no_think if metric == "no_think" else self.no_boxed
        return (v / n if n else float("nan")), n

    def seq_range(self) -> tuple[int | None, int | None]:
        seqs = [f.seq for f in self.items if f.seq is not None]
        return (min(seqs), max(seqs)) if seqs else (None, None)


class DriftMonitor:
    """Live drift detection. Feed stored records in order; get warning lines back.

    The first `window` samples are the baseline; after that a rolling window of the latest
    `window` samples is compared with it (every `step` samples). Each signal warns once when it
    crosses its threshold and again only after it has recovered (half-way back)."""

    def __init__(
        self,
        window: int = 200,
        *,
        cot_ratio: float = 0.5,
        format_rise: float = 0.25,
        accuracy_drop: float = 0.2,
        min_z: float = 3.0,
        step: int | None = None,
    ):
        if window < 2:
            raise ValueError("window must be at least 2 samples")
        self.window = window
        self.cot_ratio = cot_ratio
        self.format_rise = format_rise
        self.accuracy_drop = accuracy_drop
        self.min_z = min_z
        self.step = step or max(1, window // 10)
        self.baseline = _Window()
        self.recent = _Window(maxlen=window)
        self.seen = 0
        self._since_check = 0
        self.active: set[str] = set()
        self.events: list[dict[str, Any]] = []  # every crossing: metric, seq range, values, message

    # -- state --------------------------------------------------------------------------------

    def observe(self, records: Iterable[dict[str, Any]]) -> list[str]:
        """Take newly stored records; return warning lines for signals that crossed just now."""
        rows = sorted(records, key=lambda r: (r.get("seq") is None, r.get("seq") or 0))
        out: list[str] = []
        for r in rows:
            out += self._add(features(r))
        return out

    def prime(self, records: Iterable[dict[str, Any]]) -> None:
        """Take answers stored before this process started (a resumed run), so the baseline is
        the run's first window, not this session's; signals already crossed are not re-announced."""
        self.observe(records)

    def observe_features(self, feats: Iterable[Features]) -> list[str]:
        out: list[str] = []
        for f in feats:
            out += self._add(f)
        return out

    def _add(self, f: Features) -> list[str]:
        self.seen += 1
        if len(self.baseline) < self.window:
            self.baseline.add(f)
            return []
        self.recent.add(f)
        self._since_check += 1
        if len(self.recent) < self.window or self._since_check < self.step:
            return []
        self._since_check = 0
        return self.check()

    def values(self) -> dict[str, dict[str, Any]]:
        """Each metric now: baseline value, window value, crossed?, recovered?"""
        b, w = self.baseline, self.recent
        out: dict[str, dict[str, Any]] = {}
        base_cot, win_cot = b.median_cot(), w.median_cot()
        crossed = base_cot > 0 and win_cot < self.cot_ratio * base_cot
        recovered = base_cot <= 0 or win_cot >= (1 + self.cot_ratio) / 2 * base_cot
        out["cot_length"] = {"baseline": base_cot, "value": win_cot, "crossed": crossed, "recovered": recovered,
                             "threshold": self.cot_ratio * base_cot}
        for metric, limit, sign in (("no_think", self.format_rise, +1), ("no_boxed", self.format_rise, +1),
                                    ("accuracy", self.accuracy_drop, -1)):
            pb, nb = b.share(metric)
            pw, nw = w.share(metric)
            enough = nb >= max(2, self.window // 4) and nw >= max(2, self.window // 4)
            if not enough or math.isnan(pb) or math.isnan(pw):
                out[metric] = {"baseline": None if math.isnan(pb) else pb, "value": None if math.isnan(pw) else pw,
                               "crossed": False, "recovered": True, "threshold": None}
                continue
            change = sign * (pw - pb)
            z = sign * _z(pb, nb, pw, nw)
            out[metric] = {"baseline": pb, "value": pw, "crossed": change >= limit and z >= self.min_z,
                           "recovered": change < limit / 2, "threshold": pb + sign * limit, "z": z}
        return out

    def check(self) -> list[str]:
        if len(self.baseline) < self.window or len(self.recent) < self.window:
            return []
        lo, hi = self.recent.seq_range()
        out = []
        for metric, v in self.values().items():
            if metric in self.active:
                if v["recovered"]:
                    self.active.discard(metric)
                continue
            if not v["crossed"]:
                continue
            self.active.add(metric)
            msg = self._message(metric, v, lo, hi)
            self.events.append({"metric": metric, "signal": SIGNALS[metric][0], "seq_from": lo, "seq_to": hi,
                                "baseline": v["baseline"], "value": v["value"], "message": msg})
            out.append(msg)
        return out

    def _message(self, metric: str, v: dict[str, Any], lo: int | None, hi: int | None) -> str:
        where = f"samples {lo}-{hi}" if lo is not None else f"the last {self.window} samples"
        first = f"the first {self.window}"
        if metric == "cot_length":
            change = (v["value"] / v["baseline"] - 1) if v["baseline"] else 0.0
            return (f"drift: reasoning length collapse: median CoT {v['value']:.0f} words over {where}, "
                    f"{v['baseline']:.0f} over {first} ({change:+.0%})")
        if metric == "no_think":
            return (f"drift: think markers disappearing: {v['value']:.0%} of {where} have no separate chain of "
                    f"thought, {v['baseline']:.0%} of {first}")
        if metric == "no_boxed":
            return (f"drift: boxed answers disappearing: {v['value']:.0%} of {where} have no \\boxed{{}} answer, "
                    f"{v['baseline']:.0%} of {first}")
        return (f"drift: accuracy falling: {v['value']:.0%} of {where} match the gold answer, "
                f"{v['baseline']:.0%} of {first}")


# --------------------------------------------------------------------------------------------
# Offline: a finished (or running) output
# --------------------------------------------------------------------------------------------


def default_window(n: int, cap: int = 200) -> int:
    """The live default (200) when the run is long enough, else a fifth of it (at least 20)."""
    return max(20, min(cap, n // 5))


def _series(values: Any, window: int, seqs: Any, how: str, points: int = 200) -> dict[str, list]:
    """Rolling value every few samples (for plots): median or mean of the last `window` values
    (NaN: no value, e.g. no gold to judge accuracy by)."""
    n = len(values)
    if n < window:
        return {"seq": [], "value": []}
    stride = max(1, (n - window) // points)
    xs, ys = [], []
    for end in range(window, n + 1, stride):
        part = [v for v in values[end - window:end] if v == v]
        if not part:
            continue
        xs.append(seqs[end - 1])
        ys.append(float(statistics.median(part)) if how == "median" else sum(part) / len(part))
    return {"seq": xs, "value": ys}


def drift_signals(df: Any, window: int | None = None, **thresholds: Any) -> list[dict[str, Any]]:
    """One dict per metric (`signal`, `metric`, `label`, `fired`, `first_seq`, `baseline`, `last`,
    `worst`, `messages`, `series`) for samples in `df` (polars DataFrame or list of dicts with
    seq, cot, completion, cot_source, gold and optionally math_passed), in seq order."""
    rows = df.sort("seq").to_dicts() if hasattr(df, "to_dicts") else sorted(df, key=lambda r: r.get("seq") or 0)
    return drift_from_features((features(r) for r in rows), len(rows), window, **thresholds)


def drift_from_features(feats: Iterable[Features], n: int, window: int | None = None, **thresholds: Any) -> list[dict[str, Any]]:
    """`drift_signals` over `n` features in seq order, read once (a stream: the report feeds a
    million without holding them; only compact arrays of the plotted values are kept)."""
    w = window or default_window(n)
    out: list[dict[str, Any]] = []
    if n < 2 * w:
        for metric, (kind, label, unit) in SIGNALS.items():
            out.append({"signal": kind, "metric": metric, "label": label, "unit": unit, "fired": False, "window": w,
                        "samples": n, "note": f"too few samples ({n}) for two windows of {w}", "first_seq": None,
                        "baseline": None, "last": None, "worst": None, "messages": [], "series": {"seq": [], "value": []}})
        return out
    mon = DriftMonitor(window=w, **thresholds)
    seqs = array("q")
    raw = {"cot_length": (array("d"), "median"), "no_think": (array("d"), "mean"),
           "no_boxed": (array("d"), "mean"), "accuracy": (array("d"), "mean")}
    nan = float("nan")
    for i, f in enumerate(feats):
        mon._add(f)
        seqs.append(f.seq if f.seq is not None else i)
        raw["cot_length"][0].append(float(f.cot_len))
        raw["no_think"][0].append(float(f.no_think))
        raw["no_boxed"][0].append(float(f.no_boxed))
        raw["accuracy"][0].append(nan if f.correct is None else float(f.correct))
    final = mon.values() if len(mon.recent) == w else {}
    for metric, (kind, label, unit) in SIGNALS.items():
        events = [e for e in mon.events if e["metric"] == metric]
        series = _series(raw[metric][0], w, seqs, raw[metric][1])
        ys = series["value"]
        worst = None
        if ys:
            worst = min(ys) if metric in ("cot_length", "accuracy") else max(ys)
        v = final.get(metric, {})
        out.append({
            "signal": kind,
            "metric": metric,
            "label": label,
            "unit": unit,
            "fired": bool(events),
            "window": w,
            "samples": n,
            "first_seq": events[0]["seq_to"] if events else None,
            "baseline": v.get("baseline"),
            "last": v.get("value"),
            "threshold": v.get("threshold"),
            "worst": worst,
            "messages": [e["message"] for e in events],
            "series": series,
        })
    return out
