"""Filter fidelity: verdicts of the filters as shipped, on cases written outside the filters.

    python bench/filter_fidelity.py [--cases PATH] [--chain filters/r1-math.yaml] [--sets mv,adv,lang]
                                    [--workers 2] [--show-errors]

Runs the sample steps of a ready chain (default `filters/r1-math.yaml`, loaded with
`curator.judge.chain.load_chain` and applied with `apply_steps` on frames built by
`curator.judge.runner.frame_from_records`: exactly what `curator run` / `curator filter` do with each batch
of stored answers) on three sets, and reads the verdict of the step under test:

(a) `mv`: Math-Verify's own test cases (`--cases`, default `../shared/benchmarks/math_verify_cases.jsonl`
    beside the repository; `tests/data/math_verify_cases.jsonl` is a verbatim copy). The gold goes
    in the sample's `gold` as written; the prediction as written ends a short R1-style completion
    (a sentence of prose, a blank line, the prediction). Scored twice: with the chain's default
    params for every case, and with the settings a case itself writes (`precision`, `strict`,
    `allow_set_relation_comp`, given to the `math` step as a user would in the chain YAML).
    Three pairs of cases differ only in such a setting, so defaults alone cannot agree on all 255.
(b) `adv`: adversarial completions, generated per class (thousands separators with spaces, Unicode
    minus, boxed intermediate results and later final statements, power towers, decimal commas,
    `Answer $\\n9\\n$`, and the ambiguous cases whose rule is documented in docs/CONTRACTS.md), a right
    and a wrong variant each.
(d) `langid`: the labelled sentences of `tests/data/langid_eval.jsonl` (written before this bench),
    each as a whole CoT: English must pass, every other language must be rejected.
(c) `lang`: a language-mixing set: clean English (names, Latin phrases, notation, code), English with
    LaTeX, indented code with foreign comments, and foreign insertions of every length (one word, a
    phrase, a short sentence, a sentence, a paragraph) in Chinese, Russian, French, German, Spanish.

Per class: accuracy, false positives, false negatives, timeouts, samples/s through the chain.
math: FP = a wrong answer accepted, FN = a right answer rejected.
language: FP = a clean trace rejected, FN = a mixed trace accepted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CASES = ROOT.parent / "shared" / "benchmarks" / "math_verify_cases.jsonl"
SHIPPED_CASES = ROOT / "tests" / "data" / "math_verify_cases.jsonl"
WRITTEN_SETTINGS = ("precision", "strict", "allow_set_relation_comp")

PROMPT = "Solve the problem. Please reason step by step, and put your final answer within \\boxed{}."
COT = ("Okay, let me work through this carefully. First I restate what is asked, then I compute each "
       "part and check the result against the conditions of the problem. That seems consistent, so I "
       "can write the answer now.")
LEADS = [
    "Putting the steps together gives the result.",
    "Let me state the result clearly.",
    "After checking every case, here is what we get.",
]


def record(key: str, *, gold: str | None, completion: str, cot: str = COT, problem: str = "Compute the value.",
           prompt: str | None = None, **extra: Any) -> dict[str, Any]:
    """One stored sample as the sampler writes it (the columns the sample steps read)."""
    user = prompt if prompt is not None else f"{problem}\n\n{PROMPT}"
    return {
        "key": key, "run": "fidelity", "prompt_id": key, "sample_index": 0, "source": "fidelity",
        "problem": problem, "gold": gold, "row_json": json.dumps(extra.pop("row", {})),
        "messages_json": json.dumps([{"role": "user", "content": user}]),
        "cot": cot, "completion": completion, "cot_source": "reasoning_content", "raw_content": None,
        "finish_reason": "stop", "prompt_tokens": 40, "completion_tokens": 400, "reasoning_tokens": 300,
        "cached_tokens": 0, "cost_usd": 0.0, "model": "fidelity", "endpoint": "fidelity", "params_json": "{}",
        "request_id": key, "attempts": 1, "latency_s": 1.0, "created_at": 0.0, "seq": 0, **extra,
    }


# ---------------------------------------------------------------------------------------------
# (a) Math-Verify's cases


def mv_items(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    items = []
    for i, r in enumerate(x for x in rows if {"gold", "pred", "expected"} <= set(x["params"])):
        p = r["params"]
        items.append({
            "cls": r["func"].removeprefix("test_"), "want": bool(int(p["expected"])), "gold": p["gold"],
            "completion": f"{LEADS[i % len(LEADS)]}\n\n{p['pred']}", "nodeid": r["nodeid"],
            "settings": {k: p[k] for k in WRITTEN_SETTINGS if k in p},
        })
    return items


# ---------------------------------------------------------------------------------------------
# (b) adversarial math completions, a right and a wrong variant per case


def _spaced(n: int, sep: str) -> str:
    return f"{n:,}".replace(",", sep)


def adv_items(seed: int = 0, per_class: int = 24) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []

    def add(cls: str, gold: str, completion: str, want: bool, **kw: Any) -> None:
        out.append({"cls": cls, "gold": gold, "completion": completion, "want": want, **kw})

    seps = ["\\,", " ", "\\ ", "\\;", "~", "\u2009", "\u202f", "{\\,}"]
    for k in range(per_class):
        n = rng.choice([rng.randint(1_000, 99_999), rng.randint(100_000, 9_999_999), 10 ** rng.randint(3, 7)])
        sep = seps[k % len(seps)]
        gold = rng.choice([str(n), f"#### {n}", f"{n:,}"])
        add("thousands_space", gold, f"Adding the parts, the total count is\n\n$$\\boxed{{{_spaced(n, sep)}}}$$", True)
        add("thousands_space", gold, f"Adding the parts, the total count is\n\n$$\\boxed{{{_spaced(n + rng.choice([1, 10, 1000]), sep)}}}$$", False)
    # Lists stay lists: digits separated by a space are not always one number.
    add("thousands_space", "1, 2, 3", "The roots are $\\boxed{1, 2, 3}$.", True)
    add("thousands_space", "123", "The roots are $\\boxed{1, 2, 3}$.", False)

    for k in range(per_class):
        v = rng.choice([rng.randint(1, 500), rng.randint(1, 99) / 4, None])
        if v is None:
            a, b = rng.randint(1, 9), rng.randint(11, 19)
            txt, gold, wrong = f"−{a}/{b}", f"-\\frac{{{a}}}{{{b}}}", f"−{a + 1}/{b}"
        else:
            txt, gold, wrong = f"−{v:g}", f"-{v:g}", f"−{v + 1:g}"
        tmpl = rng.choice(["The answer is {x}.", "So the final answer is {x}.", "Answer: {x}", "Therefore, the minimum value is {x}."])
        add("unicode_minus", gold, "We simplify and take the smallest value.\n\n" + tmpl.format(x=txt), True)
        add("unicode_minus", gold, "We simplify and take the smallest value.\n\n" + tmpl.format(x=wrong), False)

    for k in range(per_class):
        inter, final = rng.randint(100, 999), rng.randint(1000, 20000)
        stmt = rng.choice(["The final answer is ${x}$.", "So the final answer is {x}.", "Therefore, the answer is $\\mathbf{{{x}}}$.",
                           "**Final answer:** {x}", "Final Answer: ${x}$"])
        fx = rng.choice([f"{final:,}", str(final), f"{final:,}".replace(",", "{,}")])
        comp = (f"First, the number of pairs is $\\boxed{{{inter}}}$. Each pair contributes {final // inter} "
                f"groups, plus {final % inter} left over.\n\n" + stmt.format(x=fx))
        add("boxed_then_final", str(final), comp, True)
        add("boxed_then_final", str(inter), comp, False)
        # The reverse: a boxed count corrected by a later plain final statement.
        b, f = rng.randint(3, 60), None
        f = b - rng.randint(1, 2)
        comp = rng.choice([
            f"Listing them gives $\\boxed{{{b}}}$ cases, but one was counted twice, so the final answer is {f}.",
            f"So there are $\\boxed{{{b}}}$ arrangements. Wait, the two mirror images are the same, so the answer is actually {f}.",
            f"This gives \\boxed{{{b}}}. Hmm, I double counted the empty set; removing it, the final answer is ${f}$.",
        ])
        add("boxed_then_final", str(f), comp, True)
        add("boxed_then_final", str(b), comp, False)
    # Controls: a restatement that agrees, and checks after the box, keep the box.
    for v in (7, 12, 144):
        add("boxed_then_final", str(v), f"Thus $\\boxed{{{v}}}$. So the final answer is {v}.", True)
        add("boxed_then_final", str(v), f"so we get \\boxed{{{v}}} apples. Check: {v} \\times 2 = {2 * v}.", True)
        add("boxed_then_final", str(2 * v), f"so we get \\boxed{{{v}}} apples. Check: {v} \\times 2 = {2 * v}.", False)

    towers = ["10^{10^{10}}", "2^{2^{2^{2^{2}}}}", "9^{9^{9}}", "3^{3^{3^{3}}}", "7^{7^{7^{7}}}", "10^{10^{100}}",
              "2^{3^{4^{5}}}", "\\frac{2^{2005}+1}{3 \\cdot 2^{2006}}", "10^{10^{10}} + 1", "(10^{10})^{10^{10}}"]
    for t in towers:
        add("power_tower", t, f"The value grows extremely fast; it is\n\n$$\\boxed{{{t}}}$$", True)
        add("power_tower", t, f"The value grows extremely fast; it is\n\n$$\\boxed{{{t.replace('^{', '^{ ', 1)}}}$$", True)
    add("power_tower", "10^{10^{10}}", "The value is $\\boxed{10^{10^{11}}}$", False)
    add("power_tower", "2^{2^{2^{2^{2}}}}", "The value is $\\boxed{2^{2^{2^{2^{3}}}}}$", False)

    for k in range(per_class):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        if b % 10 == 0:
            b += 1
        dec = f"{a},{b:02d}" if rng.random() < 0.5 else f"{a},{b}"
        val = dec.replace(",", ".")
        add("decimal_comma", dec, f"Rounding to two places, the length is $\\boxed{{{val}}}$ metres.", True)
        add("decimal_comma", dec, f"Rounding to two places, the length is $\\boxed{{{dec}}}$ metres.", True)
        add("decimal_comma", dec, f"Rounding to two places, the length is $\\boxed{{{float(val) + 1:g}}}$ metres.", False)
        add("decimal_comma", dec, f"Rounding to two places, the length is $\\boxed{{{dec.replace(',', '')}}}$ metres.", False)
    add("decimal_comma", "2, 3", "The roots are $\\boxed{2, 3}$.", True)
    add("decimal_comma", "1,234", "So $\\boxed{1234}$.", True)

    for k in range(per_class):
        v = rng.randint(1, 999)
        form = rng.choice(["Answer $\n{x}\n$", "**Answer** $\n{x}\n$", "Final answer:\n$$\n{x}\n$$", "Answer:\n$\n{x}\n$",
                           "The answer is\n$$\n{x}\n$$"])
        comp = f"We count {v + 3} tiles and remove the 3 corners.\n\n" + form.format(x=v)
        add("answer_dollar_newline", str(v), comp, True)
        add("answer_dollar_newline", str(v + 1), comp, False)

    # Ambiguous cases: the rule documented in docs/CONTRACTS.md (math) at default params.
    for v in (5, 12.5, 50, 75, 120):
        add("ambiguous_percent", f"{v:g}\\%", f"So the share is $\\boxed{{{v / 100:g}}}$.", True)
        add("ambiguous_percent", f"{v:g}\\%", f"So the share is $\\boxed{{{v:g}\\%}}$.", True)
        add("ambiguous_percent", f"{v:g}", f"So the share is $\\boxed{{{v:g}\\%}}$.", True)
        add("ambiguous_percent", f"{v:g}\\%", f"So the share is $\\boxed{{{v / 10:g}}}$.", False)
    for a, b in ((1, 3), (2, 3), (1, 7), (5, 6)):
        add("ambiguous_rounding", f"\\frac{{{a}}}{{{b}}}", f"So $\\boxed{{{a / b:.6f}}}$.", True)
        add("ambiguous_rounding", f"\\frac{{{a}}}{{{b}}}", f"So $\\boxed{{{a / b:.3f}}}$.", False)
        add("ambiguous_rounding", f"\\frac{{{a}}}{{{b}}}", f"So $\\boxed{{{a / b:.2f}}}$.", False)
    for v in (2, 3, 7):
        add("ambiguous_pm", f"\\pm {v}", f"So $x = \\boxed{{\\pm {v}}}$.", True)
        add("ambiguous_pm", f"\\pm {v}", f"So $x = \\boxed{{{v}, -{v}}}$.", True)
        add("ambiguous_pm", f"\\pm {v}", f"So $x = \\boxed{{{v}}}$.", False)
        add("ambiguous_pm", f"{v}", f"So $x = \\boxed{{\\pm {v}}}$.", False)
    return out


# ---------------------------------------------------------------------------------------------
# (c) language mixing

CLEAN_EN = [
    "Okay, so I need to find how many integers between 1 and 100 are divisible by 3 or 5. Let me use inclusion-exclusion.",
    "By the Théorème de Fermat (Fermat's little theorem), a^p is congruent to a modulo p, which settles the residue.",
    "This is the Satz von Vieta that German textbooks cite: the sum of the roots equals minus the linear coefficient.",
    "Müller's method would also work here, but Newton's method converges faster for this simple polynomial.",
    "We argue a priori that the sequence is bounded, and then, mutatis mutandis, the same bound holds for the tail.",
    "Suppose for contradiction (reductio ad absurdum) that the set is finite; vice versa for the other inclusion.",
    "Gödel, Poincaré, Erdős and L'Hôpital all appear in the references, but the proof only needs Cauchy–Schwarz.",
    "The result follows from the lemma of du Bois-Reymond together with de Moivre's formula, as in Hardy et al.",
    "Hmm, wait. Let me double-check that the denominator is never zero on the interval.",
    "So the answer seems to be 42, and I should verify it once more before writing it down.",
    "The naïve approach counts each pair twice, so we divide by two; the raison d'être of the factor is symmetry.",
    "Note that the matrix is positive definite, i.e. all its eigenvalues are positive, e.g. by Sylvester's criterion.",
    # English words that are foreign function words elsewhere (also, die, was, man, son, fin, once).
    "Also, the die was rolled once more, so a man with one son gets a fin of probability mass at the end.",
    "We pour the water into the pan, come back, and the con of this approach is the sale of speed for memory.",
    "The von Neumann algebra and van der Waerden's theorem, the del Pezzo surface and Le Gendre's notation.",
    "Hilbert's Nullstellensatz gives the Ansatz; as a Gedankenexperiment, the Zeitgeist of Schrödinger's cat.",
    "This holds a fortiori, ceteris paribus, and ad infinitum; by modus ponens, q.e.d. as Euclid would write.",
    "Vis-à-vis the earlier bound, the déjà vu is real: the naïve estimate is off by a factor of two per se.",
    "In code, `pero = 0` and `donc_total += x` are just variable names, and so is the key 'alors' in the dict.",
    "The French call it the “théorème des valeurs intermédiaires”, the Germans “der Zwischenwertsatz”.",
]
LATEX_EN = [
    r"Let $f(x) = x^2 - 5x + 6$. Then $f(x) = (x-2)(x-3)$, so the roots are $x = 2$ and $x = 3$.",
    r"We have $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$, hence for $n = 100$ the sum is $\boxed{5050}$.",
    r"By Cauchy–Schwarz, $(a_1 b_1 + a_2 b_2)^2 \le (a_1^2 + a_2^2)(b_1^2 + b_2^2)$, with equality iff $\vec a \parallel \vec b$.",
    r"Since $\alpha + \beta = \pi/2$, we get $\sin\alpha = \cos\beta$ and θ ≈ 0.785 rad.",
    "\\begin{align}\nx &= \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a} \\\\\n&= \\frac{5 \\pm 1}{2}\n\\end{align}\nSo both roots are integers.",
    "We can check this in Python:\n\n```python\ndef f(x):\n    return x * x - 5 * x + 6  # quick check\n```\n\nwhich prints zero for both roots.",
]
CODE_INDENTED = {
    "zh": "We can compute the prefix sums in one pass:\n\n    def prefix(a):\n        # 计算前缀和\n        out = [0]\n        for x in a:\n            out.append(out[-1] + x)  # 累加当前元素\n        return out\n\nEach query then takes constant time.",
    "ru": "Here is the loop:\n\n    total = 0\n    for i in range(n):  # суммируем все элементы\n        total += a[i]\n\nSo the sum is linear in n.",
    "fr": "Here is the loop:\n\n    total = 0\n    for i in range(n):  # on additionne tous les éléments\n        total += a[i]\n\nSo the sum is linear in n.",
    "de": "The helper is short:\n\n    int gcd(int a, int b) {\n        // größter gemeinsamer Teiler, rekursiv\n        return b == 0 ? a : gcd(b, a % b);\n    }\n\nIt runs in logarithmic time.",
    "es": "The helper is short:\n\n    def mcd(a, b):\n        # máximo común divisor, de forma recursiva\n        return a if b == 0 else mcd(b, a % b)\n\nIt runs in logarithmic time.",
}
HOST = "So the sum of the first two terms is 12, {x} we divide by 3 to get the average, which is 4."
HOST_START = "{x} Let me check the second case again, since the sign might flip when x is negative."
FOREIGN = {
    # length class -> language -> insertions
    "word": {
        "zh": ["所以", "因此", "等等"], "ru": ["итак", "значит", "подождите"],
        "fr": ["donc", "alors", "enfin"], "de": ["also gut", "nämlich", "genau"], "es": ["entonces", "pues", "bueno"],
    },
    "phrase": {
        "zh": ["也就是说", "我们需要"], "ru": ["то есть", "на самом деле"],
        "fr": ["en fait", "d'accord", "c'est-à-dire"], "de": ["das heißt", "zum Beispiel", "na ja"],
        "es": ["o sea", "es decir", "de acuerdo"],
    },
    "short_sentence": {
        "zh": ["好的，继续。", "对吗？"], "ru": ["Да, верно.", "Хорошо."],
        "fr": ["C'est bon.", "Très bien.", "Voyons voir."], "de": ["Das ist gut.", "Alles klar.", "Genau so."],
        "es": ["Muy bien.", "Está bien.", "Vale, sigamos."],
    },
    "mid_sentence": {  # 20-30 letters, none of langid.FOREIGN_MARKERS: the sentence detector's job
        "zh": ["这一步的计算其实没有问题。"], "ru": ["Сумма остаётся той же самой."],
        "fr": ["La somme reste la même partout."], "de": ["Die Summe bleibt überall gleich."],
        "es": ["La suma queda igual en todos los casos."],
    },
    "sentence": {
        "zh": ["我们需要再检查一下这个计算是否正确。"], "ru": ["Теперь нужно проверить, что это значение подходит."],
        "fr": ["Il faut maintenant vérifier que cette valeur convient bien."],
        "de": ["Jetzt müssen wir noch prüfen, ob dieser Wert wirklich passt."],
        "es": ["Ahora tenemos que comprobar que este valor es correcto."],
    },
    "paragraph": {
        "zh": ["首先，我们把两个方程相加，得到一个新的方程。然后，我们用第二个方程减去第一个方程。最后，我们检查每一个解是否满足原来的条件。"],
        "ru": ["Сначала сложим два уравнения и получим новое уравнение. Затем вычтем первое уравнение из второго. Наконец, проверим, удовлетворяет ли каждое решение исходным условиям."],
        "fr": ["D'abord, on additionne les deux équations pour obtenir une nouvelle équation. Ensuite, on soustrait la première de la seconde. Enfin, on vérifie que chaque solution satisfait les conditions de départ."],
        "de": ["Zuerst addieren wir die beiden Gleichungen und erhalten eine neue Gleichung. Dann ziehen wir die erste von der zweiten ab. Schließlich prüfen wir, ob jede Lösung die ursprünglichen Bedingungen erfüllt."],
        "es": ["Primero sumamos las dos ecuaciones y obtenemos una nueva ecuación. Luego restamos la primera de la segunda. Finalmente comprobamos que cada solución cumple las condiciones originales."],
    },
}
COMPLETION_EN = r"The average of the two terms is $\frac{12}{3} = 4$. **Answer:** $\boxed{4}$"


def _trace(rng: random.Random, middle: str) -> str:
    a, b = rng.sample(CLEAN_EN, 2)
    return f"{a}\n\n{middle}\n\n{b} So the answer is $\\boxed{{4}}$."


def lang_items(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for s in CLEAN_EN:
        out.append({"cls": "clean_en", "cot": _trace(rng, s), "want": True})
        out.append({"cls": "clean_en", "cot": s, "want": True})
    for s in LATEX_EN:
        out.append({"cls": "latex_en", "cot": _trace(rng, s), "want": True})
        out.append({"cls": "latex_en", "cot": s, "want": True})
    for lang, s in CODE_INDENTED.items():
        out.append({"cls": "indented_code", "cot": _trace(rng, s), "want": True, "lang": lang})
    for length, by_lang in FOREIGN.items():
        for lang, xs in by_lang.items():
            for x in xs:
                if length in ("word", "phrase"):
                    mids = [HOST.format(x=x), HOST_START.format(x=x[:1].upper() + x[1:] + ",")]
                else:
                    mids = [HOST.replace(", {x}", ". " + x + " So"), HOST_START.format(x=x)]
                for m in mids:
                    out.append({"cls": f"{lang}_{length}", "cot": _trace(rng, m), "want": False, "lang": lang})
    return out


# ---------------------------------------------------------------------------------------------
# running the chain as a user's run does


def load_sample_steps(chain_path: Path, workers: int, math_overrides: dict[str, Any] | None = None):
    """The chain's sample steps, loaded as `curator run` loads them; `math_overrides` are params a
    user would add to the `math` step in the chain YAML (only for (a)'s cases that write them)."""
    import yaml

    from curator.judge.base import FilterContext
    from curator.judge.chain import load_chain

    ctx = FilterContext(base_dir=chain_path.parent, workers=workers)
    if not math_overrides:
        return load_chain(chain_path, ctx)
    spec = yaml.safe_load(chain_path.read_text(encoding="utf-8"))
    for st in spec["steps"]:
        name = st.get("filter") if isinstance(st, dict) and "filter" in st else None
        if name == "math":
            st["params"] = {**(st.get("params") or {}), **math_overrides}
    return load_chain(spec, ctx)


def judge(chain, records: list[dict[str, Any]], step: str) -> tuple[list[dict[str, Any]], float]:
    """Verdicts of `step` for `records` when the chain's sample steps run on them in one batch."""
    from curator.judge.chain import apply_steps
    from curator.judge.runner import frame_from_records

    df = frame_from_records(records)
    t = time.perf_counter()
    frames = apply_steps(chain.sample_steps(), df)
    dt = time.perf_counter() - t
    names = [s.name for s in chain.sample_steps()]
    v = frames[names.index(step)]
    return [{"passed": bool(r["passed"]), "reason": r["reason"], "details": json.loads(r["details"]) if r["details"] else None}
            for r in v.to_dicts()], dt


def score(items: list[dict[str, Any]], verdicts: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "ok": 0, "fp": 0, "fn": 0, "timeouts": 0})
    for it, v in zip(items, verdicts):
        for cls in (it["cls"], "ALL"):
            t = table[cls]
            t["n"] += 1
            t["ok"] += v["passed"] == it["want"]
            if kind == "math":
                t["fp"] += v["passed"] and not it["want"]
                t["fn"] += it["want"] and not v["passed"]
            else:
                t["fp"] += it["want"] and not v["passed"]
                t["fn"] += v["passed"] and not it["want"]
            t["timeouts"] += v["reason"] == "verify_timeout"
    return dict(table)


def print_table(title: str, table: dict[str, dict[str, Any]], seconds: float) -> None:
    print(f"\n{title}")
    print(f"  {'class':<28} {'n':>5} {'right':>6} {'acc':>7} {'FP':>4} {'FN':>4} {'t/o':>4}")
    for cls in sorted(table, key=lambda c: (c == "ALL", c)):
        t = table[cls]
        print(f"  {cls:<28} {t['n']:>5} {t['ok']:>6} {t['ok'] / t['n']:>7.3f} {t['fp']:>4} {t['fn']:>4} {t['timeouts']:>4}")
    n = table["ALL"]["n"] if "ALL" in table else 0
    print(f"  {n} samples in {seconds:.1f}s through the chain's sample steps: {n / seconds if seconds else 0:,.1f} samples/s")


def show_errors(items: list[dict[str, Any]], verdicts: list[dict[str, Any]], field: str) -> None:
    for it, v in zip(items, verdicts):
        if v["passed"] != it["want"]:
            print(f"    WRONG [{it['cls']}] want {'accept' if it['want'] else 'reject'}, got {v['reason'] or 'accept'}: "
                  f"gold={it.get('gold')!r} {field}={it[field][-160:]!r} details={json.dumps(v['details'], ensure_ascii=False)[:300]}")


def math_records(items: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [record(f"{prefix}{i:05d}", gold=it["gold"], completion=it["completion"]) for i, it in enumerate(items)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="Math-Verify's cases (JSONL)")
    ap.add_argument("--chain", type=Path, default=ROOT / "filters" / "r1-math.yaml")
    ap.add_argument("--sets", default="mv,adv,lang,langid")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--show-errors", action="store_true")
    a = ap.parse_args(argv)
    sets = set(a.sets.split(","))
    print(f"chain {a.chain} (sample steps applied as `curator run` applies them to each stored batch)")
    chain = load_sample_steps(a.chain, a.workers)
    warm = [record("warm", gold="1", completion="\\boxed{1}")]
    judge(chain, warm, "math")  # worker pools and models load once per process
    try:
        if "mv" in sets:
            path = a.cases
            if not path.exists():
                print(f"{path} not found; using the shipped copy {SHIPPED_CASES}")
                path = SHIPPED_CASES
            items = mv_items(path)
            v, dt = judge(chain, math_records(items, "mv"), "math")
            print_table(f"(a) Math-Verify's cases ({path}), math step, default params of the chain", score(items, v, "math"), dt)
            if a.show_errors:
                show_errors(items, v, "completion")
            # The same cases, each with the settings it writes (a user's chain YAML would set them).
            written = list(v)
            groups: dict[str, list[int]] = defaultdict(list)
            for i, it in enumerate(items):
                if it["settings"]:
                    groups[json.dumps(it["settings"], sort_keys=True)].append(i)
            dt2 = dt
            for key, idx in groups.items():
                ch = load_sample_steps(a.chain, a.workers, json.loads(key))
                vv, d = judge(ch, math_records([items[i] for i in idx], "mvs"), "math")
                dt2 += d
                for i, r in zip(idx, vv):
                    written[i] = r
            print_table("(a') the same, with the settings a case writes (precision / strict / allow_set_relation_comp)",
                        score(items, written, "math"), dt2)
            if a.show_errors:
                show_errors(items, written, "completion")
        if "adv" in sets:
            items = adv_items()
            v, dt = judge(chain, math_records(items, "adv"), "math")
            print_table("(b) adversarial completions, math step, default params", score(items, v, "math"), dt)
            if a.show_errors:
                show_errors(items, v, "completion")
        if "langid" in sets:
            # An independent labelled set (tests/data/langid_eval.jsonl, not written for this bench):
            # each text alone as a CoT; English must pass, every other language must be caught.
            rows = [json.loads(x) for x in (ROOT / "tests" / "data" / "langid_eval.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
            items = [{"cls": f"{r['lang']}_{r['tag']}" if r["lang"] == "en" else f"{r['lang']}_{'short' if r['tag'] == 'short' else 'other'}",
                      "cot": r["text"], "want": r["lang"] == "en"} for r in rows]
            recs = [record(f"lid{i:05d}", gold="4", completion=COMPLETION_EN, cot=it["cot"]) for i, it in enumerate(items)]
            v, dt = judge(chain, recs, "language")
            print_table("(d) tests/data/langid_eval.jsonl, each text as a whole CoT, language step (FP = English rejected)",
                        score(items, v, "language"), dt)
            if a.show_errors:
                show_errors(items, v, "cot")
        if "lang" in sets:
            items = lang_items()
            recs = [record(f"lang{i:05d}", gold="4", completion=COMPLETION_EN, cot=it["cot"]) for i, it in enumerate(items)]
            v, dt = judge(chain, recs, "language")
            table = score(items, v, "language")
            print_table("(c) language mixing, language step, default params (FP = clean rejected, FN = mixed accepted)", table, dt)
            if a.show_errors:
                show_errors(items, v, "cot")
    finally:
        chain.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
