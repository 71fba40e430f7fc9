"""The `language` filter on short foreign insertions in Latin script (issue 15): every marker of
`langid.FOREIGN_MARKERS` inside English prose, short foreign sentences below the detector's
length, English that quotes names, terms and Latin phrases (must pass), indented code with
foreign comments (must pass), and per-row expected languages (`target: prompt`, `target_column`)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from curator.engines import langid
from curator.judge.base import FilterContext, get_filter
from curator.judge.filters.language import LanguageParams

COMPLETION = r"The average is $\frac{12}{3} = 4$. **Answer:** $\boxed{4}$"
BEFORE = "Okay, so I need the average of the first two terms. Let me write out each term carefully first."
AFTER = "Then I check the result against the original conditions of the problem. So the answer is $\\boxed{4}$."


def run(rows: list[dict], **params) -> list[tuple[bool, str | None, dict | None]]:
    cls = get_filter("language")
    f = cls(cls.Params.model_validate(params), FilterContext())
    cols = {k: [r.get(k) for r in rows] for k in ("cot", "completion", "problem", "messages_json", "lang")}
    df = pl.DataFrame({"key": [f"k{i}" for i in range(len(rows))], **cols},
                      schema={"key": pl.String, **{k: pl.String for k in cols}}).with_columns(pl.lit(True).alias("prior_passed"))
    out = f.apply(df)
    return [(r["passed"], r["reason"], json.loads(r["details"]) if r["details"] else None) for r in out.to_dicts()]


def trace(middle: str) -> dict:
    return {"cot": f"{BEFORE}\n\n{middle}\n\n{AFTER}", "completion": COMPLETION}


MARKERS = [(lang, w.replace("['\u2019]", "'").replace(r"\.\s?", ".").replace(r"\.", "."))
           for lang in ("fr", "de", "es", "it", "pt") for w in langid.FOREIGN_MARKERS[lang]]


@pytest.mark.parametrize("lang,word", MARKERS, ids=[f"{lg}-{w}" for lg, w in MARKERS])
def test_every_foreign_marker_inside_english_is_caught(lang, word):
    mids = [f"So the sum of the first two terms is 12, {word} we divide by 3 to get the average, which is 4.",
            f"{word[:1].upper() + word[1:]}, let me check the second case again, since the sign might flip when x is negative."]
    for passed, reason, d in run([trace(m) for m in mids]):
        assert (passed, reason) == (False, "mixed_language")
        assert d["foreign_words"][0]["lang"] == lang and d["foreign_word_count"] >= 1


SHORT_SENTENCES = {
    "fr": ["C'est bon.", "Très bien.", "Voyons voir.", "Bon, d'accord.", "Oui, c'est ça."],
    "de": ["Das ist gut.", "Alles klar.", "Genau so.", "Na ja.", "Stimmt nicht."],
    "es": ["Muy bien.", "Está bien.", "Vale, sigamos.", "Claro que sí.", "Bueno, pues."],
    "zh": ["好的。", "对吗？"], "ru": ["Хорошо.", "Да, верно."],
}


@pytest.mark.parametrize("lang", sorted(SHORT_SENTENCES))
def test_short_foreign_sentences_below_the_detector_length(lang):
    rows = [trace(f"Let me see. {s} Now back to the sum of the two terms.") for s in SHORT_SENTENCES[lang]]
    for (passed, reason, _), s in zip(run(rows), SHORT_SENTENCES[lang]):
        assert (passed, reason) == (False, "mixed_language"), s


CLEAN = [
    "By the Théorème de Fermat (Fermat's little theorem), a^p is congruent to a modulo p.",
    "This is the Satz von Vieta, as German textbooks call it: the roots sum to minus the linear coefficient.",
    "Müller's method would also work, and so would the method of Brent; Gauß and Schrödinger agree.",
    "We argue a priori that it is bounded and, mutatis mutandis, vice versa; reductio ad absurdum does the rest.",
    "This holds a fortiori, ceteris paribus, ad infinitum, per se; by modus ponens, q.e.d., as in Hardy et al.",
    "The von Neumann algebra, van der Waerden's theorem, the del Pezzo surface, de Moivre and Le Gendre.",
    "Hilbert's Nullstellensatz gives the Ansatz; a Gedankenexperiment about the Zeitgeist, and the Eigenvalue.",
    "Vis-à-vis the first bound, the déjà vu is real: the naïve estimate misses a factor, the raison d'être of it.",
    "Also, the die was rolled once more, so a man with one son gets a fin of probability mass at the end.",
    "We pour the water into the pan, come back, and the con of this approach is the sale of speed for memory.",
    "The French name is “théorème des valeurs intermédiaires”; in German it is \"der Zwischenwertsatz\".",
    "In French one writes *donc* where we write so, and *c'est-à-dire* where we write that is.",
    "The variables `pero`, `donc_total` and `alors` are only names in the code, like x and y.",
    r"Let $f(x) = x^2 - 5x + 6$, so $(x-2)(x-3) = 0$ and θ ≈ 0.785; by Cauchy–Schwarz $\langle u, v\rangle^2 \le \|u\|^2\|v\|^2$.",
    "Hmm. Wait. Okay. Right. So x = 3. Yes! Good.",
    "No bug here: the constant Ist is just the initial state in the paper's notation, like Pero in the appendix.",
]


@pytest.mark.parametrize("text", CLEAN, ids=range(len(CLEAN)))
def test_english_quoting_names_terms_and_latin_passes(text):
    assert run([trace(text)]) == [(True, None, None)]
    assert run([{"cot": text, "completion": COMPLETION}]) == [(True, None, None)]


INDENTED_CODE = {
    "zh": "    def prefix(a):\n        # 计算前缀和\n        out = [0]\n        for x in a:\n            out.append(out[-1] + x)  # 累加当前元素\n        return out",
    "ru": "    total = 0\n    for i in range(n):  # суммируем все элементы\n        total += a[i]",
    "fr": "    total = 0\n    for i in range(n):  # on additionne donc tous les éléments\n        total += a[i]",
    "de": "    int ggt(int a, int b) {\n        // größter gemeinsamer Teiler, also rekursiv\n        return b == 0 ? a : ggt(b, a % b);\n    }",
    "es": "    def mcd(a, b):\n        # máximo común divisor, pues de forma recursiva\n        return a if b == 0 else mcd(b, a % b)",
    "ja": "\tx = 1  // これは初期値です\n\ty = x * 2;",
}


@pytest.mark.parametrize("lang", sorted(INDENTED_CODE))
def test_indented_code_with_foreign_comments_is_code(lang):
    assert run([trace("We compute it like this:\n\n" + INDENTED_CODE[lang] + "\n\nwhich runs in linear time.")]) == [(True, None, None)]


def test_indented_prose_in_another_language_still_counts():
    for text in ("    我们需要再检查一下这个计算是否正确。", "    因为 x = 3，所以答案是 4。", "    Il faut donc vérifier le résultat."):
        passed, reason, _ = run([trace("Note:\n\n" + text)])[0]
        assert (passed, reason) == (False, "mixed_language"), text


def test_foreign_words_params():
    row = trace("So the sum is 12, donc we divide by 3.")
    assert run([row])[0][1] == "mixed_language"
    assert run([row], foreign_words=False)[0][0] is True
    assert run([row], max_foreign_words=1)[0][0] is True
    assert run([row], detector="none")[0][0] is True  # scripts alone cannot see Latin-script words
    # A French target: French words are native, German and English prose is the detector's job.
    fr = {"cot": "Donc, il faut vérifier que la somme des deux premiers termes vaut bien douze. C'est bon.", "completion": None}
    assert run([fr], target="fr")[0][0] is True
    assert run([{**fr, "cot": fr["cot"] + " Also gut, nämlich zwölf."}], target="fr")[0][1] == "mixed_language"


def test_a_foreign_sentence_the_detector_judges_is_not_counted_twice():
    s = "Il ne reste plus qu'à vérifier que cette valeur satisfait bien l'équation de départ."
    passed, reason, d = run([trace(s)])[0]
    assert (passed, reason) == (False, "mixed_language") and d["foreign_sentences"] == 1
    assert run([trace(s)], max_foreign_sentences=1)[0][0] is True
    assert run([trace(s)], min_confidence=0.9999)[0][0] is True


# ---- per-row expected language ----------------------------------------------------------------

EN_COT = "Okay, so we need the minimum. Let me check the derivative and the endpoints carefully. So the answer is 5."
ZH_COT = "首先，我们需要求函数的最小值。然后检查导数和端点。所以答案是 5。"
RU_COT = "Сначала найдём производную и приравняем её к нулю. Затем проверим концы отрезка. Ответ: 5."


def test_target_prompt():
    rows = [
        {"cot": EN_COT, "problem": "Find the minimum of f on [0, 1]."},
        {"cot": ZH_COT, "problem": "求函数 f 在 [0, 1] 上的最小值。"},
        {"cot": RU_COT, "problem": "Найдите минимум функции f на отрезке [0, 1]."},
        {"cot": ZH_COT, "problem": "Find the minimum of f on [0, 1]."},
        {"cot": EN_COT, "problem": "求函数 f 在 [0, 1] 上的最小值。"},
        # No problem column value: the last user message; only maths in it: prompt_fallback (en).
        {"cot": ZH_COT, "messages_json": json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "求 $x^2$ 的最小值。"}])},
        {"cot": EN_COT, "problem": "$x^2 + 1$"},
    ]
    got = run(rows, target="prompt")
    assert [g[0] for g in got] == [True, True, True, False, False, True, True]
    assert got[3][2]["target"] == "zh" or got[3][2]["target"] == "en"
    assert got[3][2]["target"] == "en" and got[3][2]["target_from"] == "prompt"
    assert got[4][2]["target"] == "zh"
    assert run([{"cot": ZH_COT, "problem": "$x^2 + 1$"}], target="prompt", prompt_fallback="zh")[0][0] is True


def test_target_column():
    rows = [{"cot": EN_COT, "lang": "en"}, {"cot": ZH_COT, "lang": "zh"}, {"cot": RU_COT, "lang": "RU"},
            {"cot": ZH_COT, "lang": "en"}, {"cot": EN_COT, "lang": None}, {"cot": ZH_COT, "lang": ""}]
    got = run(rows, target_column="lang")
    assert [g[0] for g in got] == [True, True, True, False, True, False]
    assert got[3][2]["target_from"] == "column lang"
    # Null rows fall back to `target`, which may itself be `prompt`.
    assert run([{"cot": ZH_COT, "lang": None, "problem": "求最小值。"}], target_column="lang", target="prompt")[0][0] is True
    with pytest.raises(ValueError, match=r"sample k0: column 'lang': unknown language code 'klingon'"):
        run([{"cot": EN_COT, "lang": "klingon"}], target_column="lang")
    with pytest.raises(ValueError, match="target_column 'language' is not a column"):
        run([{"cot": EN_COT}], target_column="language")


def test_params():
    assert LanguageParams(target="Prompt").target == "prompt"
    assert LanguageParams(target="prompt", detector="langdetect").target == "prompt"
    p = LanguageParams()
    assert (p.target_column, p.prompt_fallback, p.foreign_words, p.max_foreign_words) == (None, "en", True, 0)
    for bad in ({"prompt_fallback": "xx"}, {"target": "english"}, {"max_foreign_words": -1}):
        with pytest.raises(ValueError):
            LanguageParams.model_validate(bad)
