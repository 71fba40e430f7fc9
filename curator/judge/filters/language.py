"""`language`: reject traces that drift out of the target language (R1-style "我们需要..." halfway
through an English chain of thought) or are written in another language altogether.

Per field (default `cot` and `completion`), after cleaning away what is not prose (code, URLs,
LaTeX, numbers, Greek letters; see `curator.engines.langid`):

1. Script ratios (all rows, vectorised): letters in scripts foreign to the target over all letters.
   Latin is never foreign by script (variables, `sin`, names); for a Latin-script target another
   Latin language is the detector's job. Greek is maths. `max_foreign_script_ratio: 0.0` rejects
   a single Han character in an English trace.
2. Sentence detector (`fasttext` default, `langdetect`, or `none`): sentences (split on .!?。！？…
   and newlines) with at least `min_sentence_letters` letters (a CJK character counts as 3) are
   labelled; one is foreign when its language differs from the target with confidence >=
   `min_confidence` and the label agrees with the sentence's script (no `ru` without Cyrillic; a
   `ja` without kana is `zh`).

Reasons: `wrong_language` when most of a field is in another language (over half its letters in
foreign scripts, CJK weighted x3; or over half the labelled sentences' letters foreign; or, for a
non-Latin target, no letter of the target's script at all), else `mixed_language` when the
script ratio or the number of foreign sentences exceeds its limit. Details name the field, the
scripts with ratios and the first offending sentences with their detected language.

Code (fenced blocks, inline code, indented code lines) is not prose and is left out by default,
so Chinese comments in a code block do not reject an English trace; `check_code: true` judges it too.

3. Foreign words (Latin-script targets with a function-word list, with a detector): discourse
   markers of another language (`langid.FOREIGN_MARKERS`: "donc", "en fait", "nämlich", "o sea")
   in a sentence too short for the detector or otherwise in the target language; quoted terms and
   names do not count. More than `max_foreign_words` gives `mixed_language` (`foreign_words: false`
   turns it off).

The expected language is `target` for every row, or per row: `target: prompt` (the language of the
row's prompt) or `target_column: COLUMN`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from curator.engines import langid
from curator.judge.base import SampleFilter, FilterParams, register, verdicts

WRONG_LANGUAGE_SHARE = 0.5  # over half of a field's (weighted) letters foreign: wrong, not mixed
MAX_EXAMPLES = 3
EXAMPLE_CHARS = 120

# Script -> the language its letters most likely are (details of script-only findings).
_SCRIPT_LANG = {"han": "zh", "hiragana": "ja", "katakana": "ja", "hangul": "ko", "cyrillic": "ru",
                "arabic": "ar", "hebrew": "he", "devanagari": "hi", "thai": "th"}
_CJK_SCRIPTS = {"han", "hiragana", "katakana", "hangul"}
_LANGDETECT_LANGS = frozenset(
    "af ar bg bn ca cs cy da de el en es et fa fi fr gu he hi hr hu id it ja kn ko lt lv mk ml mr ne "
    "nl no pa pl pt ro ru sk sl so sq sv sw ta te th tl tr uk ur vi zh".split()
)


def _language_code(v: str) -> str:
    v = langid.family(v.strip().lower())
    if v not in langid.FASTTEXT_LANGS:
        raise ValueError(f"unknown language code {v!r} (ISO 639-1 such as en, zh, ja, ko, ru, ar, de, fr, es)")
    if v == "el":
        raise ValueError("target el is not supported: Greek letters are read as maths and removed")
    return v


class LanguageParams(FilterParams):
    # A language code, or `prompt`: each CoT must be in the language its prompt is written in.
    target: str = "en"
    # A column holding each row's expected language (null: `target` decides for that row).
    target_column: str | None = None
    # target: prompt, when a prompt's language cannot be told (only maths, an unsure detector).
    prompt_fallback: str = "en"
    # Foreign discourse markers / function words inside a Latin-script text ("donc", "en fait",
    # "nämlich", "o sea"; langid.FOREIGN_MARKERS), which sentences too short for the detector carry.
    foreign_words: bool = True
    max_foreign_words: int = Field(0, ge=0)
    fields: list[str] = Field(default_factory=lambda: ["cot", "completion"], min_length=1)
    max_foreign_script_ratio: float = Field(0.0, ge=0.0, le=1.0)
    max_foreign_sentences: int = Field(0, ge=0)
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    min_sentence_letters: int = Field(20, ge=1)
    detector: Literal["fasttext", "langdetect", "none"] = "fasttext"
    check_code: bool = False  # judge code blocks and inline code too (comments, strings)
    # Worker processes for big batches: detection is pure CPU and the slowest step of a maths
    # chain (bench/filters.py); 1 keeps it in-process.
    workers: int = Field(2, ge=1)
    min_rows_per_worker: int = Field(200, ge=1)

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        if v.strip().lower() == "prompt":
            return "prompt"
        return _language_code(v)

    @field_validator("prompt_fallback")
    @classmethod
    def _known_fallback(cls, v: str) -> str:
        return _language_code(v)

    @model_validator(mode="after")
    def _detector_knows_target(self) -> "LanguageParams":
        if self.detector == "langdetect" and self.target != "prompt" and self.target not in _LANGDETECT_LANGS:
            raise ValueError(f"detector langdetect does not know language {self.target!r}; use detector: fasttext")
        return self


def _truncate(s: str, n: int = EXAMPLE_CHARS) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _snippet_script_lang(s: str, target: str) -> str | None:
    """The language a snippet's foreign letters suggest (han -> zh, kana -> ja, ...)."""
    has = lambda k: langid._PY_SCRIPT_RE[k].search(s) is not None  # noqa: E731
    native = set(langid.LANG_SCRIPTS.get(target, ()))
    if has("kana") and not {"hiragana", "katakana"} & native:
        return "ja"
    for script in ("han", "hangul", "cyrillic", "arabic", "hebrew", "devanagari", "thai"):
        if script not in native and has(script):
            return _SCRIPT_LANG[script]
    return None


def _field_findings(texts: list[str | None], p: LanguageParams) -> list[dict[str, Any] | None]:
    """One finding per row: None when the field is clean, else what is wrong with it
    (`reason`, `details`)."""
    target = p.target
    latin_target = langid.is_latin_target(target)
    foreign_cls = langid.foreign_letter_class(target)
    native_cls = langid.native_letter_class(target)

    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String}).with_columns(
        langid.script_view(pl.col("t"), keep_code=p.check_code).alias("s"),
        langid.prose_view(pl.col("t"), keep_code=p.check_code).alias("p"),
    )
    # Whole-text counts. For a Latin target every non-Latin letter is foreign and Latin letters
    # are only needed for the details of the rows that fail (counted below, on those rows only).
    if latin_target:
        counts = [pl.col("s").str.count_matches(langid.NON_LATIN_LETTER).alias("nonlatin")]
    else:
        counts = [pl.col("p").str.count_matches(langid.LATIN_LETTER).alias("latin")]
        if foreign_cls:
            counts.append(pl.col("s").str.count_matches(foreign_cls).alias("foreign"))
        if native_cls:
            counts.append(pl.col("s").str.count_matches(native_cls).alias("native"))
    # Part of detection: `detector: none` judges scripts alone.
    marker_re = langid.marker_pattern(target) if p.foreign_words and p.detector != "none" else None
    if marker_re:
        counts.append(pl.col("p").str.count_matches(marker_re).alias("markers"))
    stats = frame.select(counts)
    n = len(texts)
    markers = stats["markers"].to_list() if marker_re else [0] * n
    if not foreign_cls:
        foreign = [0] * n
    elif latin_target:
        foreign = stats["nonlatin"].to_list()
    else:
        foreign = stats["foreign"].to_list()
    latin = None if latin_target else stats["latin"].to_list()
    native = stats["native"].to_list() if native_cls else None

    sentences: list[list[dict[str, Any]]] = [[] for _ in range(n)]  # foreign sentences per row
    checked = [0] * n
    checked_letters = [0] * n
    foreign_letters_by_lang: list[dict[str, int]] = [{} for _ in range(n)]
    if p.detector != "none":
        detector = langid.get_detector(p.detector)
        min_letters = p.min_sentence_letters
        sent = (
            frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), pl.col("p").str.extract_all(langid.SENTENCE).alias("x"))
            .explode("x")
            .drop_nulls("x")
            .with_columns(pl.col("x").str.len_chars().alias("chars"))
            .filter(pl.col("chars") >= -(-min_letters // langid.CJK_WEIGHT))
            .with_columns(langid.screen_expr(pl.col("x"), target).alias("need"))
        )
        # Sentences that cannot be foreign (langid.screen_expr: pure ASCII with English function
        # words, for en) skip the detector and the letter count: they count as checked, in the
        # target, weighted by their length (an upper bound on their letters) when long enough.
        screened = sent.filter(~pl.col("need"))
        if not latin_target:  # weigh CJK characters as the letter count below does
            screened = screened.with_columns(pl.col("chars") + (langid.CJK_WEIGHT - 1) * pl.col("x").str.count_matches(langid.CJK_LETTER))
        screened = (
            screened.filter(pl.col("chars") >= min_letters)
            .group_by("row")
            .agg(pl.len().alias("n"), pl.col("chars").sum().alias("letters"))
        )
        for r, k, nl in screened.iter_rows():
            checked[r] += k
            checked_letters[r] += nl
        cand = (
            sent.filter(pl.col("need"))
            .with_columns(
                (pl.col("x").str.count_matches(r"\p{L}") + (langid.CJK_WEIGHT - 1) * pl.col("x").str.count_matches(langid.CJK_LETTER)).alias("letters")
            )
            .filter(pl.col("letters") >= min_letters)
        )
        rows = cand["row"].to_list()
        texts_s = [s.strip() for s in cand["x"].to_list()]
        letters = cand["letters"].to_list()
        labels = detector.detect(texts_s)
        for r, s, nl, (lang, conf) in zip(rows, texts_s, letters, labels):
            checked[r] += 1
            checked_letters[r] += nl
            if lang is None or conf < p.min_confidence or langid.family(lang) == target:
                continue  # the common case, decided without another call
            lang = langid.foreign_label(detector, s, lang, conf, target, p.min_confidence)
            if lang is None:
                continue
            foreign_letters_by_lang[r][lang] = foreign_letters_by_lang[r].get(lang, 0) + nl
            sentences[r].append({"text": _truncate(s), "lang": lang, "confidence": round(conf, 3)})

    latin_only = [bool(native is not None and latin is not None and native[i] == 0 and latin[i] >= p.min_sentence_letters) for i in range(n)]
    suspicious = [i for i in range(n) if foreign[i] or sentences[i] or latin_only[i] or markers[i]]
    out: list[dict[str, Any] | None] = [None] * n
    if not suspicious:
        return out

    # Details (and the weighted shares) only for the few rows that may fail.
    sub = frame[suspicious]
    known = "".join(langid.SCRIPT_CLASSES.values())
    breakdown = sub.select(
        pl.col("p").str.count_matches(langid.LATIN_LETTER).alias("latin"),
        *[pl.col("s").str.count_matches(f"[{c}]").alias(k) for k, c in langid.SCRIPT_CLASSES.items()],
        pl.col("s").str.count_matches(rf"[\p{{L}}--[{langid._NOT_LANGUAGE}{known}]]").alias("other"),
        (pl.col("s").str.extract_all(rf"[^.!?。！？…\n]*{foreign_cls}[^.!?。！？…\n]*") if foreign_cls else pl.lit(None, dtype=pl.List(pl.String))).alias("snippets"),
    ).to_dicts()
    native_scripts = set(langid.LANG_SCRIPTS.get(target, ()))
    for i, b in zip(suspicious, breakdown):
        snippets = b.pop("snippets") or []
        per_script = {k: v for k, v in b.items() if v}
        total = sum(per_script.values())
        ratios = {k: round(v / total, 4) for k, v in sorted(per_script.items(), key=lambda kv: -kv[1]) if v} if total else {}
        foreign_scripts = {k: v for k, v in per_script.items() if k != "latin" and k not in native_scripts and v} if foreign[i] else {}
        ratio = foreign[i] / total if total else 0.0
        w = lambda k, v: v * (langid.CJK_WEIGHT if k in _CJK_SCRIPTS else 1)  # noqa: E731
        w_total = sum(w(k, v) for k, v in per_script.items())
        w_foreign = sum(w(k, v) for k, v in foreign_scripts.items())

        found = sentences[i]
        n_foreign = len(found)
        det_share = sum(foreign_letters_by_lang[i].values()) / checked_letters[i] if checked_letters[i] else 0.0

        reason = None
        language = None
        if w_total and w_foreign / w_total > WRONG_LANGUAGE_SHARE:
            reason = "wrong_language"
            top = max(foreign_scripts, key=lambda k: w(k, foreign_scripts[k]))
            language = "ja" if top == "han" and (per_script.get("hiragana") or per_script.get("katakana")) else _SCRIPT_LANG.get(top, top)
        elif det_share > WRONG_LANGUAGE_SHARE:
            reason = "wrong_language"
            language = max(foreign_letters_by_lang[i], key=foreign_letters_by_lang[i].get)
        elif latin_only[i] and (p.detector == "none" or det_share > 0 or not checked[i]):
            # A non-Latin target with not one letter of its script: written in a Latin language.
            reason = "wrong_language"
            language = max(foreign_letters_by_lang[i], key=foreign_letters_by_lang[i].get) if foreign_letters_by_lang[i] else "latin"
        elif ratio > p.max_foreign_script_ratio or n_foreign > p.max_foreign_sentences:
            reason = "mixed_language"
        words = langid.find_markers(frame["p"][i], target, p.min_sentence_letters) if markers[i] else []
        if reason is None and len(words) > p.max_foreign_words:
            reason = "mixed_language"
        if reason is None:
            continue

        examples = list(found[:MAX_EXAMPLES])
        if len(examples) < MAX_EXAMPLES and snippets:
            seen = {e["text"] for e in examples}
            extra = [_truncate(s) for s in snippets if s.strip()]
            extra = [s for s in dict.fromkeys(extra) if s not in seen][: MAX_EXAMPLES - len(examples)]
            if extra:
                labels = langid.get_detector(p.detector).detect(extra) if p.detector != "none" else [(None, 0.0)] * len(extra)
                for s, (lang, conf) in zip(extra, labels):
                    fixed = langid.script_consistent(lang, s) if lang and conf >= p.min_confidence else None
                    fixed = None if fixed == target else fixed
                    if fixed is None:  # no confident label that fits the script: name the script's language
                        examples.append({"text": s, "lang": _snippet_script_lang(s, target), "confidence": None})
                    else:
                        examples.append({"text": s, "lang": fixed, "confidence": round(conf, 3)})
        details: dict[str, Any] = {
            "target": target,
            "scripts": ratios,
            "foreign_script_ratio": round(ratio, 4),
            "foreign_sentences": n_foreign,
            "sentences_checked": checked[i],
            "detector": p.detector,
            "examples": examples,
        }
        if words:
            details["foreign_words"] = [{"text": w, "lang": lg} for w, lg in words[:MAX_EXAMPLES]]
            details["foreign_word_count"] = len(words)
        if language is not None:
            details = {"language": language, **details}
        out[i] = {"reason": reason, "details": details}
    return out


def judge(columns: dict[str, list[str | None]], params: dict[str, Any]) -> tuple[list[bool], list[str | None], list[dict[str, Any] | None]]:
    """Verdicts for rows given as {field: texts}: a plain function so it can run in a worker."""
    p = LanguageParams.model_validate(params)
    n = len(next(iter(columns.values()))) if columns else 0
    per_field = {f: _field_findings(columns[f], p) for f in p.fields}
    passed: list[bool] = []
    reasons: list[str | None] = []
    details: list[dict[str, Any] | None] = []
    for i in range(n):
        hits = [(f, per_field[f][i]) for f in p.fields if per_field[f][i] is not None]
        if not hits:
            passed.append(True)
            reasons.append(None)
            details.append(None)
            continue
        # The worse finding first (a field in another language), then field order.
        hits.sort(key=lambda h: h[1]["reason"] != "wrong_language")
        field, first = hits[0]
        d = {"field": field, **first["details"]}
        if len(hits) > 1:
            d["also"] = [{"field": f, "reason": h["reason"]} for f, h in hits[1:]]
        passed.append(False)
        reasons.append(first["reason"])
        details.append(d)
    return passed, reasons, details


@register
class LanguageFilter(SampleFilter):
    name = "language"
    Params = LanguageParams

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: LanguageParams = self.params  # type: ignore[assignment]
        missing = [f for f in p.fields if f not in df.columns]
        if missing:
            raise ValueError(f"language: no column {missing[0]!r} in the samples (fields: {p.fields})")
        columns = {f: df[f].cast(pl.String).to_list() for f in p.fields}
        params = p.model_dump()
        targets = row_targets(df, p)
        if targets is None:
            passed, reasons, details = self._judge(columns, params, df.height)
        else:
            # One pass per expected language, each row judged against its own.
            passed, reasons, details = [True] * df.height, [None] * df.height, [None] * df.height
            groups: dict[str, list[int]] = {}
            for i, t in enumerate(targets):
                groups.setdefault(t, []).append(i)
            for t, idx in groups.items():
                sub = {f: [v[i] for i in idx] for f, v in columns.items()}
                pa, re_, de = self._judge(sub, {**params, "target": t, "target_column": None}, len(idx))
                for k, i in enumerate(idx):
                    passed[i], reasons[i] = pa[k], re_[k]
                    details[i] = None if de[k] is None else {**de[k], "target_from": _target_source(p)}
        return verdicts(df["key"].to_list(), passed, reasons, details)

    def _judge(self, columns: dict[str, list[str | None]], params: dict[str, Any], height: int):
        p: LanguageParams = self.params  # type: ignore[assignment]
        parts = min(p.workers, height // p.min_rows_per_worker)
        if parts < 2:
            return judge(columns, params)
        bounds = [height * k // parts for k in range(parts + 1)]
        chunks = [{f: v[a:b] for f, v in columns.items()} for a, b in zip(bounds, bounds[1:])]
        passed, reasons, details = [], [], []
        for pa, re_, de in _pool(parts).map(judge, chunks, [params] * parts):
            passed += pa
            reasons += re_
            details += de
        return passed, reasons, details

    def close(self) -> None:
        global _POOL
        if _POOL is not None:
            _POOL[1].shutdown(cancel_futures=True)
            _POOL = None


_POOL: tuple[int, Any] | None = None


def _target_source(p: LanguageParams) -> str:
    return f"column {p.target_column}" if p.target_column else "prompt"


def prompt_text(problem: str | None, messages_json: str | None) -> str | None:
    """The text a sample's prompt is written in: the source problem when stored, else the last
    user message sent to the teacher."""
    if problem and problem.strip():
        return problem
    if not messages_json:
        return None
    try:
        msgs = json.loads(messages_json)
    except ValueError:
        return None
    users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else None
    if isinstance(last, list):  # content parts
        last = " ".join(x.get("text", "") for x in last if isinstance(x, dict))
    return last if isinstance(last, str) else None


def row_targets(df: pl.DataFrame, p: LanguageParams) -> list[str] | None:
    """Each row's expected language, or None when one fixed `target` holds for all rows.
    `target_column`: that column's code (null/blank: `target`); `target: prompt`: the language of
    the row's prompt (`prompt_fallback` when it cannot be told)."""
    if p.target_column is None and p.target != "prompt":
        return None
    n = df.height
    if p.target_column is not None:
        if p.target_column not in df.columns:
            raise ValueError(f"language: target_column {p.target_column!r} is not a column of the samples")
        raw = df[p.target_column].cast(pl.String).to_list()
        keys = df["key"].to_list()
        out: list[str | None] = []
        for k, v in zip(keys, raw):
            if v is None or not v.strip():
                out.append(None)
                continue
            try:
                out.append(_language_code(v))
            except ValueError as e:
                raise ValueError(f"language: sample {k}: column {p.target_column!r}: {e}") from None
    else:
        out = [None] * n
    if p.target != "prompt":
        return [t or p.target for t in out]
    need = [i for i, t in enumerate(out) if t is None]
    if need:
        problems = df["problem"].to_list() if "problem" in df.columns else [None] * n
        msgs = df["messages_json"].to_list() if "messages_json" in df.columns else [None] * n
        det = p.detector if p.detector != "none" else "none"
        cache: dict[str, str] = {}
        for i in need:
            text = prompt_text(problems[i], msgs[i])
            if text not in cache:
                lang = langid.text_language(text, det, p.min_confidence) if text else None
                try:
                    cache[text] = _language_code(lang) if lang else p.prompt_fallback
                except ValueError:
                    cache[text] = p.prompt_fallback
            out[i] = cache[text]
    return out  # type: ignore[return-value]


def _pool(workers: int):
    """Spawned workers: `judge` uses polars, and a child forked after polars started its thread
    pool deadlocks. (As with any spawn pool, a script calling this needs a __main__ guard.)"""
    global _POOL
    if _POOL is None or _POOL[0] != workers:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from curator.engines.lifeline import exit_with_parent

        if _POOL is not None:
            _POOL[1].shutdown()
        _POOL = (workers, ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                              initializer=exit_with_parent, initargs=(os.getpid(),)))
    return _POOL[1]

