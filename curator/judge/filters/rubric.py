"""`rubric_judge`: a judge model grades each trace on a 3 x (0-2) rubric through an
OpenAI-compatible API:
  self_contained  each step can be followed on its own (no unexplained jumps or references)
  connected       each step follows from the earlier ones (no dropped threads, no unresolved contradictions)
  follows         the final answer follows from the chain (not guessed, not contradicting it)
A sample passes when the sum (0-6) is at least `threshold`. Reasons: `low_rubric_score`,
`judge_error` (no parseable grade after `retries` re-asks, or the API failed), `not_judged`
(an earlier step already rejected the row and `judge_rejected` is false: no money spent on it).

The judge endpoint defaults to the run's teacher (base_url, model, api_key_env). The key is read
from the environment variable named by `api_key_env` and never logged or stored.
`apply` is synchronous: it runs its own event loop (`asyncio.run`), or, when called from inside a
running loop (a notebook), runs that loop on a short-lived thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
from pydantic import Field

from curator.judge.base import SampleFilter, FilterParams, register, verdicts
from curator.redact import redact, register_secret

CRITERIA = ("self_contained", "connected", "follows")

SYSTEM = "You grade chains of thought written by another model. Reply with one JSON object and nothing else."

PROMPT = """Grade the reasoning a model wrote while solving the problem below. Score each criterion 0, 1 or 2.

- self_contained: every step can be followed on its own; it states what it uses, with no unexplained jumps and no references to things never shown. 2 = no gaps, 1 = a few, 0 = many.
- connected: each step follows from the earlier ones; no abandoned threads, random restarts or contradictions left unresolved. 2 = fully connected, 1 = mostly, 0 = disjointed.
- follows: the final answer follows from the chain of reasoning (not guessed, not contradicting what was derived). 2 = fully, 1 = partly, 0 = not at all.

## Problem
{problem}

## Reasoning
{cot}

## Final answer
{completion}

Reply with only this JSON object, integers 0-2:
{{"self_contained": <0-2>, "connected": <0-2>, "follows": <0-2>}}"""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}")


def clip(text: str, limit: int) -> str:
    """Keep the head (2/3) and the tail (1/3) of a long text: the tail holds the conclusion."""
    if len(text) <= limit:
        return text
    head = (limit * 2) // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters omitted ...]\n{text[-tail:]}"


def _score(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and float(v).is_integer() and 0 <= v <= 2:
        return int(v)
    if isinstance(v, str) and v.strip() in {"0", "1", "2"}:
        return int(v.strip())
    return None


def _from_obj(obj: Any) -> dict[str, int] | None:
    if not isinstance(obj, dict):
        return None
    low = {str(k).strip().lower().replace("-", "_").replace(" ", "_"): v for k, v in obj.items()}
    out = {c: _score(low.get(c)) for c in CRITERIA}
    return out if all(v is not None for v in out.values()) else None  # type: ignore[return-value]


def parse_scores(text: str | None) -> dict[str, int] | None:
    """The rubric scores in a judge reply: a JSON object alone, in a code fence, or inside prose
    (after a `</think>` block of a reasoning judge); else `"key": n` pairs. None when incomplete."""
    if not text:
        return None
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        try:
            got = _from_obj(json.loads(cand.strip()))
            if got:
                return got
        except (ValueError, TypeError):
            pass
        for m in reversed(list(_OBJECT.finditer(cand))):
            try:
                got = _from_obj(json.loads(m.group(0)))
            except ValueError:
                got = None
            if got:
                return got
    pairs = {}
    for c in CRITERIA:
        found = re.findall(rf"[\"']?{c}[\"']?\s*[:=]\s*[\"']?([0-2])\b", text, re.I)
        if found:
            pairs[c] = int(found[-1])
    return pairs if len(pairs) == len(CRITERIA) else None


def _problem(row: dict[str, Any]) -> str:
    if row.get("problem"):
        return str(row["problem"])
    try:
        msgs = json.loads(row.get("messages_json") or "[]")
        users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        last = users[-1] if users else ""
        if isinstance(last, list):  # content parts
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        return str(last or "")
    except (ValueError, TypeError):
        return ""


def run_sync(factory):
    """Run the coroutine `factory()` to completion from sync code, with or without a running loop here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rubric-judge") as ex:
        return ex.submit(lambda: asyncio.run(factory())).result()


class RubricParams(FilterParams):
    base_url: str | None = None  # default: the teacher's
    model: str | None = None  # default: the teacher's
    api_key_env: str | None = None  # the NAME of the env variable holding the key
    threshold: int = Field(default=4, ge=0, le=6)  # pass when the sum of the 3 scores >= threshold
    concurrency: int = Field(default=16, ge=1)
    max_chars: int = Field(default=20000, ge=500)  # CoT budget; problem and answer get a quarter each
    retries: int = Field(default=2, ge=0)  # re-asks after an unparseable reply or a failed call
    timeout_s: float = Field(default=120.0, gt=0)
    max_tokens: int = Field(default=1024, ge=16)
    temperature: float = Field(default=0.0, ge=0)
    judge_rejected: bool = False  # also grade rows an earlier step rejected (costs money)


@register
class RubricJudge(SampleFilter):
    name = "rubric_judge"
    Params = RubricParams

    def _endpoint(self) -> tuple[str, str, str]:
        p: RubricParams = self.params
        teacher = getattr(self.ctx, "teacher", None)
        base_url = p.base_url or getattr(teacher, "base_url", None)
        model = p.model or getattr(teacher, "model", None)
        env = p.api_key_env if p.api_key_env is not None else (getattr(teacher, "api_key_env", None) if not p.base_url else None)
        if not base_url or not model:
            raise ValueError("rubric_judge: set params base_url and model (or run it with a teacher configured)")
        if env:
            key = os.environ.get(env)
            if not key:
                raise ValueError(f"rubric_judge: environment variable {env} is not set (it should hold the judge's API key)")
            register_secret(key)  # its own key, if not the teacher's: masked like the teacher's
        else:
            key = "EMPTY"  # local servers take any key
        return base_url, model, key

    def _messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        lim = self.params.max_chars
        text = PROMPT.format(
            problem=clip(_problem(row), lim // 4),
            cot=clip(row.get("cot") or "", lim) or "(empty)",
            completion=clip(row.get("completion") or "", lim // 4) or "(empty)",
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]

    async def _judge_all(self, rows: list[dict[str, Any]], base_url: str, model: str, key: str) -> list[tuple[dict | None, str | None, int]]:
        import openai

        p: RubricParams = self.params
        client = openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=p.timeout_s, max_retries=2)
        sem = asyncio.Semaphore(p.concurrency)

        async def one(row: dict[str, Any]) -> tuple[dict | None, str | None, int]:
            messages = self._messages(row)
            error, tokens = None, 0
            async with sem:
                for _ in range(p.retries + 1):
                    try:
                        r = await client.chat.completions.create(
                            model=model, messages=messages, temperature=p.temperature, max_tokens=p.max_tokens
                        )
                    except openai.OpenAIError as e:
                        error = redact(f"{type(e).__name__}: {e}")[:300]  # verdict details never hold the key
                        continue
                    if r.usage is not None:
                        tokens += r.usage.total_tokens or 0
                    msg = r.choices[0].message if r.choices else None
                    content = (msg.content if msg else None) or ""
                    scores = parse_scores(content)
                    if scores:
                        return scores, None, tokens
                    error = f"unparseable reply: {content[:200]!r}"
            return None, error, tokens

        try:
            return await asyncio.gather(*(one(r) for r in rows))
        finally:
            await client.close()

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: RubricParams = self.params
        rows = df.to_dicts()
        todo = [i for i, r in enumerate(rows) if p.judge_rejected or r.get("prior_passed", True) is not False]
        results: dict[int, tuple[dict | None, str | None, int]] = {}
        if todo:
            base_url, model, key = self._endpoint()
            got = run_sync(lambda: self._judge_all([rows[i] for i in todo], base_url, model, key))
            results = dict(zip(todo, got))
        passed, reasons, details = [], [], []
        for i in range(len(rows)):
            if i not in results:
                passed.append(False)
                reasons.append("not_judged")
                details.append({"skipped": "rejected by an earlier step"})
                continue
            scores, error, tokens = results[i]
            if scores is None:
                passed.append(False)
                reasons.append("judge_error")
                details.append({"error": error, "judge_tokens": tokens})
                continue
            total = sum(scores.values())
            ok = total >= p.threshold
            passed.append(ok)
            reasons.append(None if ok else "low_rubric_score")
            details.append({"scores": scores, "score": total, "threshold": p.threshold, "judge_tokens": tokens})
        return verdicts([r["key"] for r in rows], passed, reasons, details)
