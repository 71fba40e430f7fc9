"""`math`: is the sample's final answer mathematically equal to the gold? (Math-Verify, hardened)

Gold: GSM8K `#### 72`, a MATH solution with `\\boxed{}`, or a plain value (`\\frac{1}{2}`, `72`,
`y=2x+3`; read as LaTeX without `$`). Prediction: the sample's `completion` (the answer after the
chain of thought): its last `\\boxed{}` (with the boxes just before it when only "and" / commas
separate them) if it has one, else the whole completion, where Math-Verify looks for "final answer
is" / "Answer:" patterns, then the last LaTeX / number. With `cot_fallback: true`, a sample with no
answer in its completion is judged on the last `cot_tail_chars` of its CoT instead.

Checks run in worker processes (`curator.engines.mathverify.VerifyPool`), never threads: Math-Verify's
timeouts use signals. Reasons: `no_gold`, `bad_gold` (the gold cannot be read), `no_answer`,
`wrong_answer`, `verify_timeout`, `verify_error` (a worker crashed).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Literal

import polars as pl
from pydantic import Field

from curator.engines.mathverify import judge, shared_pool
from curator.engines.answers import find_boxed, gsm8k_gold
from curator.judge.base import SampleFilter, FilterParams, register, verdicts

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
    boxes = find_boxed(completion)
    if not boxes:
        return []
    first = len(boxes) - 1
    while first > 0 and _is_connector(completion[boxes[first - 1].end : boxes[first].start]):
        first -= 1
    return [b.content for b in boxes[first:]]


def pred_task(completion: str, latex: bool = True) -> str:
    """What Math-Verify reads from a completion: its final boxed answer (`final_boxes`), so an
    earlier, corrected boxed answer is not read as part of the answer; else the whole completion."""
    boxes = final_boxes(completion)
    if not boxes:
        return completion
    if not latex:  # expression extraction reads plain text only
        return ", ".join(boxes)
    return ", ".join("$\\boxed{" + b + "}$" for b in boxes)


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
        raw: dict[int, str] = {}  # the boxed answer as written, for details
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
            boxes = final_boxes(pred)
            if bare and len(boxes) == 1 and _INT.match(gtext) and _INT.match(boxes[0]):
                # Integer gold, one integer box (most of GSM8K): equal iff the integers are, as
                # Math-Verify would say; no worker round trip, no sympy.
                same = int(gtext.strip()) == int(boxes[0].strip())
                passed[i], reasons[i] = same, (None if same else "wrong_answer")
                details[i] = {"gold_parsed": gtext.strip(), "pred_parsed": boxes[0].strip(), "extracted": boxes[0], "fast_path": "integer"}
                continue
            tasks.append({"gold": gtext, "pred": pred_task(pred, "latex" in p.extraction), "gold_is_answer": bare, **common})
            where.append(i)
            raw[i] = ", ".join(boxes)

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
        from curator.engines.mathverify import close_pool

        close_pool(self.params.workers)  # type: ignore[attr-defined]
