"""`math`: is the sample's final answer mathematically equal to the gold? (Math-Verify, hardened)

Gold: GSM8K `#### 72`, a MATH solution with `\\boxed{}`, or a plain value (`\\frac{1}{2}`, `72`,
`y=2x+3`; read as LaTeX without `$`). Prediction: the sample's `completion` (the answer after the
chain of thought): its last `\\boxed{}` (with the boxes just before it when only "and" / commas
separate them), unless a later explicit final statement states another value; without a box, its
last answer statement; else the whole completion, where Math-Verify looks for "final answer is" /
"Answer:" patterns, then the last LaTeX / number (`grading.pick_final_answer`; `details.graded`
says which span and why). Cheap exact checks (`cheap_compare`) settle integers, answers identical
as written and the documented percent / decimal-comma / plus-minus rules before Math-Verify. With `cot_fallback: true`, a sample with no
answer in its completion is judged on the last `cot_tail_chars` of its CoT instead.

Checks run in worker processes (`curator.engines.verifypool.VerifyPool`), never threads: Math-Verify's
timeouts use signals. Reasons: `no_gold`, `bad_gold` (the gold cannot be read), `no_answer`,
`wrong_answer`, `verify_timeout`, `verify_error` (a worker crashed).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Literal

import polars as pl
from pydantic import Field

from curator.engines.answers import Boxed, decimal_comma_value, find_boxed, gsm8k_gold, normalize_minus, ungroup_thousands
from curator.engines.grading import FinalPick, normalize_math, percent_value, pick_final_answer, simple_value
from curator.engines.mathverify import judge
from curator.engines.verifypool import shared_pool
from curator.judge.base import FilterParams, SampleFilter, register, verdicts

Extraction = Literal["latex", "expr"]


def gold_task(gold: str) -> tuple[str, bool]:
    """(text to parse, whether it is a bare answer): GSM8K -> its `####` value; a solution with a
    `\\boxed{}` -> the whole text (Math-Verify picks the boxed part, joining `\\boxed{1}\\boxed{2}`);
    anything else is the answer itself."""
    gs = gsm8k_gold(gold)
    if gs is not None:
        return gs, True
    if find_boxed(gold):
        return gold, False
    return gold.strip(), True


_CONNECTOR_STRIP = re.compile(
    r"\\(?:text|textrm|mathrm|mbox)\s*\{([^{}]*)\}"  # \text{ and } -> and
)
_CONNECTOR_OK = re.compile(
    r"(?:and|or|for\s+part\s*\(?\w\)?|[A-Za-z](?:_\{?\w+\}?)?\s*=|\s|,|;|&)*",
    re.IGNORECASE,
)


def _is_connector(between: str) -> bool:
    """Text between two boxed answers that joins them into one answer (`, `, ` and `,
    `\\quad\\text{and}\\quad`, `\\) and \\( y_2 = `), not a new sentence."""
    t = _CONNECTOR_STRIP.sub(r" \1 ", between)
    t = re.sub(r"\\(?:quad|qquad|,|;|!|\(|\)|\[|\])|\$|\\ ", " ", t)
    return len(t) <= 60 and "\n\n" not in between and _CONNECTOR_OK.fullmatch(t) is not None


_INT = re.compile(r"^\s*-?\d{1,30}\s*$")


def final_boxes(completion: str) -> list[str]:
    """The completion's final boxed answer: the last `\\boxed{}` and the boxes just before it that
    only connectors (`, `, ` and `, `\\quad\\text{and}\\quad`) separate from it; [] without a box."""
    return [b.content for b in final_box_spans(completion)]


def final_box_spans(completion: str, boxes: list[Boxed] | None = None) -> list[Boxed]:
    """`final_boxes` with their positions in the completion (`boxes`: its `find_boxed`, if known)."""
    boxes = find_boxed(completion) if boxes is None else boxes
    if not boxes:
        return []
    first = len(boxes) - 1
    while first > 0 and _is_connector(completion[boxes[first - 1].end : boxes[first].start]):
        first -= 1
    return boxes[first:]


def pred_task(completion: str, latex: bool = True) -> str:
    """What Math-Verify reads from a completion: its final boxed answer (`final_boxes`), so an
    earlier, corrected boxed answer is not read as part of the answer; else the whole completion."""
    boxes = final_boxes(completion)
    if not boxes:
        return completion
    if not latex:  # expression extraction reads plain text only
        return ", ".join(boxes)
    return ", ".join("$\\boxed{" + b + "}$" for b in boxes)


_COMMA_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")


_FINAL_STOP = re.compile(r"(?<=\d)\.(?=\s*$)")


def graded_text(text: str) -> str:
    """A graded answer as Math-Verify should read it: Unicode minus as `-`, thousands separated by
    spaces or commas joined (`1\\,000`, `10,455` -> `10455`; a list `2, 3` stays a list)."""
    t = ungroup_thousands(normalize_minus(text.strip())).replace("{,}", ",")
    core = t.strip("$").strip()
    if _COMMA_THOUSANDS.fullmatch(core):
        return core.replace(",", "")
    return t


def pick_task(pick: FinalPick, latex: bool = True) -> str:
    """What Math-Verify reads for a picked answer: the boxed answer(s) or the stated value, boxed,
    so its boxed-first extraction reads exactly that span."""
    parts = list(pick.boxes) if pick.source == "boxed" else [pick.text]
    parts = [graded_text(x) for x in parts]
    if not latex:
        return ", ".join(parts)
    return ", ".join("$\\boxed{" + x + "}$" for x in parts)


def _gold_value(gtext: str, bare: bool) -> str | None:
    """The gold's answer as a string for the cheap checks: the bare gold, or the single box of a
    solution (None with several boxes: Math-Verify joins them)."""
    if bare:
        return gtext.strip()
    boxes = find_boxed(gtext)
    return boxes[0].content if len(boxes) == 1 else None


def _percent_readings(v, rule: str) -> set:
    return {v, v / 100} if rule == "either" else {v} if rule == "number" else {v / 100}


def cheap_compare(gold: str, pred: str, *, percent: str = "either", plus_minus: str = "both") -> tuple[bool, str] | None:
    """(equal?, which check) when an exact check settles it, else None (Math-Verify decides).

    In order: integers; identical normal forms (`normalize_math`: towers and huge expressions equal
    as written never reach Math-Verify); a percentage against a plain number (rule `percent`);
    a decimal comma (`1,22` = `1.22`); `\\pm a` against one sign (rule `plus_minus`); exact
    integers and simple fractions. Decimals against other values go to Math-Verify, which rounds
    to `precision`."""
    if _INT.match(gold) and _INT.match(pred):
        return int(gold.strip()) == int(pred.strip()), "integer"
    ng, np_ = normalize_math(gold), normalize_math(pred)
    if ng and ng == np_:
        return True, "identical"
    gp, pp = percent_value(gold), percent_value(pred)
    gv, pv = simple_value(gold), simple_value(pred)
    if (gp is not None or pp is not None) and (gp is not None or gv is not None) and (pp is not None or pv is not None):
        gs = _percent_readings(gp, percent) if gp is not None else {gv[0]}
        ps = _percent_readings(pp, percent) if pp is not None else {pv[0]}
        return bool(gs & ps), "percent"
    gd, pd = decimal_comma_value(gold), decimal_comma_value(pred)
    if gd is not None and (pv is not None or pd is not None):
        from fractions import Fraction

        other = Fraction(pd) if pd is not None else pv[0]
        if Fraction(gd) == other:
            return True, "decimal_comma"
        return None
    if pd is not None and gv is not None:
        from fractions import Fraction

        if Fraction(pd) == gv[0]:
            return True, "decimal_comma"
        return None  # `1,22` may also be the pair (1, 22): Math-Verify decides
    if ng.startswith("\\pm") and plus_minus == "either":
        x = ng[3:]
        if np_ in (x, "-" + x, "+" + x):
            return True, "plus_minus"
    if gv is not None and pv is not None and not gv[1] and not pv[1] and gv[0] == pv[0]:
        return True, "exact"  # unequal fractions: Math-Verify is quick on them and names the parse
    return None


def _parsed(text: str, how: str) -> str:
    """What a cheap check read, written as Math-Verify writes its parses (`1/2`, `-5`)."""
    if how == "integer":
        return text.strip()
    v = simple_value(graded_text(text))
    return str(v[0]) if v is not None else normalize_math(graded_text(text)).replace("\x01", " ")


def gold_alternatives(gtext: str, bare: bool, plus_minus: str = "both") -> list[str]:
    """Other readings of a bare gold Math-Verify should also try: a decimal comma (`1,22` is 1.22,
    and the set {1, 22} only if the prediction is one), and, with `plus_minus: either`, each sign
    of a `\\pm a` gold."""
    if not bare:
        return []
    out = []
    dc = decimal_comma_value(gtext)
    if dc is not None:
        out.append(dc)
    t = gtext.strip().strip("$").strip()
    if plus_minus == "either" and t.startswith("\\pm"):
        x = t[3:].strip()
        out += [x, "-" + x]
    return out


def answers_match(
    gold: str,
    pred: str,
    *,
    extraction: Iterable[Extraction] = ("latex", "expr"),
    precision: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
    timeout_s: float = 5.0,
    gold_is_answer: bool = False,
) -> bool:
    """Does `pred` state the same answer as `gold`? Runs in this process: call it from a main
    thread only (signals), or use `answers_match_many`, which runs in worker processes."""
    return judge(
        gold,
        pred,
        extraction=tuple(extraction),
        precision=precision,
        strict=strict,
        allow_set_relation_comp=allow_set_relation_comp,
        timeout_s=timeout_s,
        gold_is_answer=gold_is_answer,
    )["match"]


def answers_match_many(pairs: list[dict[str, Any]], *, workers: int | None = None) -> list[dict[str, Any]]:
    """Judge many pairs in the shared worker pool. Each item: `gold`, `pred` and any of
    `answers_match`'s keyword arguments; returns `judge()` result dicts (status, match, ...)."""
    tasks = []
    for p in pairs:
        t = dict(p)
        if "extraction" in t:
            t["extraction"] = tuple(t["extraction"])
        tasks.append(t)
    return shared_pool(workers).run(tasks)


@register
class MathAnswer(SampleFilter):
    name = "math"

    class Params(FilterParams):
        precision: int = Field(6, ge=0, le=30, description="float rounding digits")
        timeout_s: float = Field(5.0, gt=0, description="per-sample budget; past it the worker is killed")
        workers: int | None = Field(None, ge=1, description="worker processes (default: CPU count)")
        extraction: list[Extraction] = Field(default_factory=lambda: ["latex", "expr"], min_length=1)
        missing_gold: Literal["reject", "accept"] = "reject"
        strict: bool = True
        allow_set_relation_comp: bool = False
        cot_fallback: bool = Field(False, description="judge the end of the CoT when the completion has no answer")
        cot_tail_chars: int = Field(2000, ge=100)
        # Ambiguous cases, decided on purpose (docs/CONTRACTS.md, "math: what counts as equal"):
        percent: Literal["either", "number", "fraction"] = Field(
            "either", description="n% against a plain number: equal to n or n/100 (either), only n, only n/100")
        plus_minus: Literal["both", "either"] = Field(
            "both", description="a \\pm a gold needs both signs (both) or accepts one sign (either)")
        final_statement: bool = Field(
            True, description="an explicit final statement after the last box that states another value is graded instead")

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: MathAnswer.Params = self.params  # type: ignore[assignment]
        keys = df["key"].to_list()
        golds = df["gold"].to_list() if "gold" in df.columns else [None] * df.height
        comps = df["completion"].to_list() if "completion" in df.columns else [None] * df.height
        cots = df["cot"].to_list() if (p.cot_fallback and "cot" in df.columns) else [None] * df.height

        passed: list[bool] = [False] * df.height
        reasons: list[str | None] = [None] * df.height
        details: list[Any] = [None] * df.height
        tasks: list[dict[str, Any]] = []
        where: list[int] = []
        raw: dict[int, str] = {}  # the graded answer as written, for details
        graded: dict[int, dict[str, Any]] = {}  # which span was graded and why (when there was a choice)
        common = {
            "extraction": tuple(p.extraction),
            "precision": p.precision,
            "strict": p.strict,
            "allow_set_relation_comp": p.allow_set_relation_comp,
            "timeout_s": p.timeout_s,
        }
        for i, (gold, comp, cot) in enumerate(zip(golds, comps, cots)):
            if gold is None or not str(gold).strip():
                if p.missing_gold == "accept":
                    passed[i] = True
                    details[i] = {"gold": None}
                else:
                    reasons[i] = "no_gold"
                continue
            pred = (comp or "").strip()
            if not pred and cot:
                pred = cot[-p.cot_tail_chars :]
            if not pred:
                reasons[i] = "no_answer"
                details[i] = {"gold_parsed": "", "pred_parsed": "", "extracted": ""}
                continue
            gtext, bare = gold_task(str(gold))
            gtext = normalize_minus(gtext)
            every = find_boxed(pred)
            spans = final_box_spans(pred, every)
            if bare and len(spans) == 1 and len(every) == 1 and _INT.match(gtext) and _INT.match(spans[0].content) \
                    and "answer" not in pred[spans[0].end :].lower():
                # Integer gold, one integer box, nothing after it (most of GSM8K): equal iff the
                # integers are, as Math-Verify would say; no worker round trip, no sympy.
                box = spans[0].content
                same = int(gtext.strip()) == int(box.strip())
                passed[i], reasons[i] = same, (None if same else "wrong_answer")
                details[i] = {"gold_parsed": gtext.strip(), "pred_parsed": box.strip(), "extracted": box, "fast_path": "integer"}
                continue
            pick = pick_final_answer(pred, spans, prefer_later_statement=p.final_statement, all_boxes=every)
            if pick is not None and (pick.source != "boxed" or pick.alternatives or len(pick.boxes) > 1):
                graded[i] = {"from": pick.source, "span": [pick.start, pick.end], "why": pick.why}
            elif pick is None:
                graded[i] = {"from": "completion", "span": [0, len(pred)], "why": "no boxed answer or answer statement: Math-Verify reads the whole completion"}
            gval = _gold_value(gtext, bare)
            if pick is not None and gval is not None:
                # Cheap exact checks first (most of GSM8K; towers equal as written): no worker
                # round trip, no sympy, no timeout.
                quick = cheap_compare(graded_text(gval), graded_text(pick.text), percent=p.percent, plus_minus=p.plus_minus)
                if quick is not None:
                    same, how = quick
                    passed[i], reasons[i] = same, (None if same else "wrong_answer")
                    details[i] = {"gold_parsed": _parsed(gval, how), "pred_parsed": _parsed(pick.text, how), "extracted": pick.text, "fast_path": how}
                    if i in graded:
                        details[i]["graded"] = graded[i]
                    continue
            if pick is None:
                # A sentence's full stop after the last number is not a decimal point ("is −5/12.").
                mv_pred = _FINAL_STOP.sub("", ungroup_thousands(normalize_minus(pred), plain_spaces=False))
            else:
                mv_pred = pick_task(pick, "latex" in p.extraction)
            alts = gold_alternatives(gtext, bare, p.plus_minus)
            tasks.append({"gold": gtext, "pred": mv_pred, "gold_is_answer": bare, **({"gold_alts": tuple(alts)} if alts else {}), **common})
            where.append(i)
            raw[i] = pick.text if pick is not None else ""

        results = shared_pool(p.workers).run(tasks) if tasks else []

        # Second chance on the CoT's end for samples whose completion had no answer.
        if p.cot_fallback:
            retry = [(k, i) for k, (i, r) in enumerate(zip(where, results)) if r["status"] == "no_answer" and cots[i]]
            if retry:
                rtasks = [{**tasks[k], "pred": pred_task(cots[i][-p.cot_tail_chars :], "latex" in p.extraction)} for k, i in retry]
                for (k, i), r in zip(retry, shared_pool(p.workers).run(rtasks)):
                    results[k] = {**r, "from_cot": True}
                    raw[i] = ", ".join(final_boxes(cots[i][-p.cot_tail_chars :]))

        for i, r in zip(where, results):
            d = {"gold_parsed": r.get("gold_parsed", ""), "pred_parsed": r.get("pred_parsed", ""), "extracted": raw.get(i) or r.get("extracted", "")}
            if r.get("from_cot"):
                d["from_cot"] = True
            elif i in graded:
                d["graded"] = graded[i]
            status = r["status"]
            if status == "ok" and r["match"]:
                passed[i] = True
            elif status == "ok":
                reasons[i] = "wrong_answer"
            elif status == "timeout":
                reasons[i] = "verify_timeout"
                d["timeout_s"] = p.timeout_s
            elif status == "error":
                reasons[i] = "verify_error"
                d["error"] = r.get("error", "")
            else:  # no_answer, bad_gold
                reasons[i] = status
            details[i] = d
        return verdicts(keys, passed, reasons, details)

    def close(self) -> None:
        """Stop this filter's worker processes (they are shared per worker count and otherwise
        live until the interpreter exits); the next `apply` starts new ones."""
        from curator.engines.verifypool import close_pool

        close_pool(self.params.workers)  # type: ignore[attr-defined]
