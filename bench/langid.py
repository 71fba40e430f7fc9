"""Language-ID bench: both detector backends on the labelled set, in one run, then the `language`
filter's throughput on synthetic ~6k-token traces.

    python bench/langid.py                      # everything
    python bench/langid.py --skip-filter -v     # detectors only, list the misses
    python bench/langid.py --traces 400 --tokens 6000

1. Accuracy of each detector on tests/data/langid_eval.jsonl (each text cleaned as the filter
   cleans it; label corrected by script as the filter does): overall, on short texts (fewer than
   20 letters, CJK x3 — the filter skips those, the figure shows why) and on the rest; and
   sentences/s over the cleaned texts.
2. False positives on real English the detectors never saw: sentences (>= 20 letters) of the
   Python standard library's docstrings labelled non-English with confidence >= 0.5. With
   `max_foreign_sentences: 0`, a per-sentence false-positive rate p rejects about 1-(1-p)^k of clean
   traces of k sentences, so this is the figure that matters on long traces.
3. Filter throughput (samples/s, one process) on synthetic English traces of ~N tokens (4 chars a
   token) with a few drifting ones, and how many of each it rejects.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import polars as pl

from curator.engines import langid
from curator.judge.base import FilterContext
from curator.judge.filters.language import LanguageFilter, LanguageParams

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "langid_eval.jsonl"
MIN_LETTERS = 20
MIN_CONF = 0.5


def weighted_letters(s: str) -> int:
    return sum(1 for c in s if c.isalpha()) + (langid.CJK_WEIGHT - 1) * sum(
        1 for c in s if langid._PY_SCRIPT_RE["han"].match(c) or langid._PY_SCRIPT_RE["kana"].match(c) or langid._PY_SCRIPT_RE["hangul"].match(c)
    )


def label(det: langid.Detector, texts: list[str]) -> list[tuple[str | None, float]]:
    out = []
    for t, (lang, conf) in zip(texts, det.detect(texts)):
        fixed = langid.script_consistent(lang, t) if lang else None
        out.append((fixed, conf))
    return out


def timed(det: langid.Detector, texts: list[str], min_seconds: float) -> float:
    """Sentences per CPU-second of det.detect over texts (single-threaded, so CPU time is one
    core's time and the figure holds on a busy machine), repeated for at least min_seconds."""
    n = 0
    t0 = time.process_time()
    while True:
        det.detect(texts)
        n += len(texts)
        dt = time.process_time() - t0
        if dt >= min_seconds:
            return n / dt


def eval_detectors(names: list[str], verbose: bool) -> dict[str, dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [langid.clean_text(r["text"]) for r in rows]
    gold = [r["lang"] for r in rows]
    short = [weighted_letters(t) < MIN_LETTERS for t in texts]
    print(f"labelled set: {len(rows)} texts ({sum(short)} short), {len(set(gold))} languages: "
          + ", ".join(f"{k} {v}" for k, v in sorted(Counter(gold).items())))
    results = {}
    for name in names:
        t0 = time.perf_counter()
        det = langid.get_detector(name)
        load = time.perf_counter() - t0
        preds = label(det, texts)
        ok = [p[0] == g for p, g in zip(preds, gold)]
        conf_ok = [p[0] == g for p, g in zip(preds, gold) if p[1] >= MIN_CONF]
        long_idx = [i for i in range(len(rows)) if not short[i]]
        short_idx = [i for i in range(len(rows)) if short[i]]
        speed = timed(det, texts, 2.0 if name == "fasttext" else 0.0)
        r = {
            "acc": sum(ok) / len(ok),
            "acc_short": sum(ok[i] for i in short_idx) / max(1, len(short_idx)),
            "acc_long": sum(ok[i] for i in long_idx) / max(1, len(long_idx)),
            "acc_confident": sum(conf_ok) / max(1, len(conf_ok)),
            "coverage": len(conf_ok) / len(ok),
            "sent_s": speed,
            "load_s": load,
            "per_lang": {g: sum(o for o, gg in zip(ok, gold) if gg == g) / gold.count(g) for g in sorted(set(gold))},
        }
        results[name] = r
        if verbose:
            for i, (p, g) in enumerate(zip(preds, gold)):
                if p[0] != g:
                    print(f"  {name} miss: gold {g} got {p[0]} ({p[1]:.2f}) {'[short] ' if short[i] else ''}{texts[i][:70]!r}")
    return results


def stdlib_sentences(limit: int, seed: int = 0) -> list[str]:
    """Sentences of >= MIN_LETTERS letters from the standard library's docstrings (real English
    prose the bench author did not write)."""
    base = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(base.glob("*.py")) + sorted(base.glob("*/*.py")):
        if "test" in path.parts or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                d = ast.get_docstring(node)
                if d:
                    docs.append(d)
    sents = []
    for d in docs:
        for para in d.split("\n\n"):
            lines = para.splitlines()
            # Doctests, indented code and option tables are not prose.
            if not lines or any(ln.lstrip().startswith((">>>", "...")) or ln.startswith("    ") for ln in lines):
                continue
            sents += [s for s in langid.split_sentences(langid.clean_text(para)) if weighted_letters(s) >= MIN_LETTERS]
    sents = list(dict.fromkeys(sents))
    random.Random(seed).shuffle(sents)
    return sents[:limit]


def flagged(det: langid.Detector, sents: list[str], target: str) -> list[tuple[str, str, float]]:
    """Sentences the filter would count as foreign to target: the same screening
    (langid.needs_detector) and rule (langid.foreign_label)."""
    out = []
    sents = [s for s, need in zip(sents, langid.needs_detector(sents, target)) if need]
    for s, (lang, conf) in zip(sents, det.detect(sents)):
        f = langid.foreign_label(det, s, lang, conf, target, MIN_CONF)
        if f is not None:
            out.append((s, f, conf))
    return out


def false_positives(names: list[str], n: int, verbose: bool) -> dict[str, tuple[int, int, int, int]]:
    """(English sentences flagged, English sentences, labelled foreign sentences flagged, labelled
    foreign sentences) per detector, target en."""
    sents = stdlib_sentences(n)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    foreign = [t for t in (langid.clean_text(r["text"]) for r in rows if r["lang"] != "en") if weighted_letters(t) >= MIN_LETTERS]
    out = {}
    need = sum(langid.needs_detector(sents, "en"))
    need_f = sum(langid.needs_detector(foreign, "en"))
    print(f"screening (target en): {need}/{len(sents)} English docstring sentences and {need_f}/{len(foreign)} "
          f"labelled foreign sentences go to the detector")
    for name in names:
        det = langid.get_detector(name)
        fp = flagged(det, sents, "en")
        tp = flagged(det, foreign, "en")
        out[name] = (len(fp), len(sents), len(tp), len(foreign))
        if verbose:
            for s, lang, conf in fp[:15]:
                print(f"  {name} fp: {lang} ({conf:.2f}) {s[:90]!r}")
    return out


# ---- synthetic traces ------------------------------------------------------------------------

_EN = [r["text"] for r in map(json.loads, DATA.read_text(encoding="utf-8").splitlines()) if r["lang"] == "en"] if DATA.exists() else []
_TEMPLATES = [
    "So {a} times {b} is {c}, which is larger than {d}.",
    "Let me recompute: ${a} + {b} = {c}$, and then subtract ${d}$ to get ${e}$.",
    "Wait, I should double-check whether $n = {a}$ actually satisfies the condition.",
    "Hmm, that doesn't look right, because the sum should be divisible by {a}.",
    "Now consider the expression $\\frac{{{a}x + {b}}}{{x - {c}}}$ as $x \\to \\infty$; it tends to ${a}$.",
    "The discriminant is $\\Delta = b^2 - 4ac = {a}^2 - 4 \\cdot {b} \\cdot {c}$, so we need it to be non-negative.",
    "If the angle $\\theta$ satisfies $\\sin\\theta = 0.{a}$, then $\\cos\\theta$ follows from the Pythagorean identity.",
    "Okay, so the number of ways to choose {a} items out of {b} is $\\binom{{{b}}}{{{a}}}$.",
    "Let's try small cases first: for $n = {a}$ we get {b}, and for $n = {c}$ we get {d}.",
    "Therefore the remainder when ${a}^{{{b}}}$ is divided by {c} must be {d}.",
    "Alternatively, we can set up the recurrence $a_{{n+1}} = {a} a_n + {b}$ with $a_0 = {c}$.",
    "By the AM-GM inequality, $x + y \\ge 2\\sqrt{{xy}}$, with equality when $x = y = {a}$.",
    "Let me verify by plugging $x = {a}$ back in: ${a}^2 - {b} \\cdot {a} + {c} = {d}$.",
    "But wait, the problem says the digits must be distinct, so {a} is not allowed.",
    "I think the cleanest approach is to count the complement and subtract from {a}.",
    "So the probability is $\\frac{{{a}}}{{{b}}}$, which simplifies once we cancel the common factor.",
    "Each of the {a} vertices has degree {b}, so the graph has {c} edges by the handshake lemma.",
    "Then $f'(x) = {a}x^2 - {b}x + {c}$, and setting this to zero gives the critical points.",
    "Hold on, I made an arithmetic slip: {a} plus {b} is {c}, not {d}.",
    "This means the sequence is eventually periodic with period {a}.",
]
_CODE = "```python\ndef solve(n):\n    total = 0\n    for i in range(1, n + 1):\n        total += i * i\n    return total\n```"
_ZH_DRIFT = "我们需要重新计算这个表达式。首先把分子和分母同时乘以二，然后化简。所以结果应该是十二。"
_FR_DRIFT = "Il ne reste plus qu'à vérifier que cette valeur satisfait bien l'équation de départ."


def synth_trace(rng: random.Random, tokens: int, drift: str | None) -> str:
    out: list[str] = []
    size = 0
    target_chars = tokens * 4
    drift_at = rng.randint(target_chars // 4, 3 * target_chars // 4) if drift else -1
    while size < target_chars:
        para = []
        for _ in range(rng.randint(3, 7)):
            if rng.random() < 0.3 and _EN:
                para.append(rng.choice(_EN))
            else:
                n = [rng.randint(2, 99) for _ in range(5)]
                para.append(rng.choice(_TEMPLATES).format(a=n[0], b=n[1], c=n[2], d=n[3], e=n[4]))
        if rng.random() < 0.08:
            para.append("\n" + _CODE + "\n")
        text = " ".join(para)
        if drift and size <= drift_at < size + len(text) + 2:
            text += " " + (_ZH_DRIFT if drift == "zh" else _FR_DRIFT)
        out.append(text)
        size += len(text) + 2
    return "\n\n".join(out)


def bench_filter(n: int, tokens: int, detectors: list[str], langdetect_rows: int) -> None:
    rng = random.Random(0)
    kinds = ["zh" if i % 40 == 7 else "fr" if i % 40 == 23 else None for i in range(n)]
    cots = [synth_trace(rng, tokens, k) for k in kinds]
    df = pl.DataFrame(
        {
            "key": [f"k{i}" for i in range(n)],
            "cot": cots,
            "completion": [f"The answer is $\\boxed{{{rng.randint(1, 999)}}}$." for _ in range(n)],
            "prior_passed": [True] * n,
        }
    )
    chars = sum(map(len, cots)) / n
    sample = [x for c in cots[:20] for x in langid.split_sentences(langid.clean_text_keep_lines(c)) if weighted_letters(x) >= MIN_LETTERS]
    print(f"screening (target en): {sum(langid.needs_detector(sample, 'en'))}/{len(sample)} sentences of 20 synthetic traces go to the detector")
    print(f"synthetic traces: {n} x ~{chars / 4:,.0f} tokens ({chars:,.0f} chars), {sum(k is not None for k in kinds)} drifting "
          f"({kinds.count('zh')} into Chinese, {kinds.count('fr')} into French)")
    for name in detectors:
        rows = n if name != "langdetect" else min(n, langdetect_rows)
        sub = df.head(rows)
        f = LanguageFilter(LanguageParams(detector=name), FilterContext())
        f.apply(sub.head(2))  # load the model outside the clock
        t0, c0 = time.perf_counter(), time.process_time()
        v = f.apply(sub)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        rejected = dict(zip(v["key"], v["passed"].not_()))
        drift_keys = {f"k{i}" for i in range(rows) if kinds[i]}
        fn = sum(1 for k in drift_keys if not rejected[k])
        fp = sum(1 for k, r in rejected.items() if r and k not in drift_keys)
        print(f"  filter detector={name}: {rows / cpu:,.0f} samples per CPU-second, {rows / dt:,.0f} samples/s wall "
              f"({rows} rows, {dt:.2f}s wall, {cpu:.2f}s CPU, 1 process); "
              f"rejected {sum(rejected.values())}: missed drifts {fn}/{len(drift_keys)}, clean rejected {fp}/{rows - len(drift_keys)}")
        reasons = Counter(v.filter(~pl.col("passed"))["reason"].to_list())
        if reasons:
            print("    reasons: " + ", ".join(f"{k} {c}" for k, c in reasons.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default="fasttext,langdetect")
    ap.add_argument("--fp-sentences", type=int, default=3000, help="stdlib docstring sentences for the false-positive check (0: skip)")
    ap.add_argument("--traces", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=6000)
    ap.add_argument("--langdetect-traces", type=int, default=10, help="langdetect is slow: filter-bench it on this many traces")
    ap.add_argument("--skip-filter", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    names = [x.strip() for x in a.detectors.split(",") if x.strip()]

    res = eval_detectors(names, a.verbose)
    for name, r in res.items():
        print(f"  {name}: acc {r['acc']:.1%} (short {r['acc_short']:.1%}, >= {MIN_LETTERS} letters {r['acc_long']:.1%}; "
              f"confident >= {MIN_CONF}: {r['acc_confident']:.1%} of {r['coverage']:.0%}), {r['sent_s']:,.0f} sent/s, load {r['load_s']:.2f}s")
        print("    per language: " + ", ".join(f"{k} {v:.0%}" for k, v in r["per_lang"].items()))
    if "fasttext" in res and "langdetect" in res:
        ft, ld = res["fasttext"], res["langdetect"]
        print(f"fasttext: acc {ft['acc']:.1%}, {ft['sent_s']:,.0f} sent/s; langdetect: acc {ld['acc']:.1%}, "
              f"{ld['sent_s']:,.0f} sent/s (ratio {ft['sent_s'] / ld['sent_s']:.0f}x)")
    if a.fp_sentences:
        fps = false_positives(names, a.fp_sentences, a.verbose)
        print(f"target en, sentences >= {MIN_LETTERS} letters, min_confidence {MIN_CONF}, odds >= {langid.FOREIGN_ODDS:g}:")
        for k, (f, t, tp, nf) in fps.items():
            print(f"  {k}: English flagged foreign {f}/{t} = {f / max(1, t):.3%} (stdlib docstrings); "
                  f"labelled foreign sentences flagged {tp}/{nf} = {tp / max(1, nf):.1%}")
    if not a.skip_filter:
        bench_filter(a.traces, a.tokens, [n for n in names] + ["none"], a.langdetect_traces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
