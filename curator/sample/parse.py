"""Split a chat completion choice into chain of thought and answer, and read its usage block."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_OPEN = "<think>"
_CLOSE = "</think>"
_LEADING_OPEN = re.compile(r"^\s*<think>\s*", re.S)


@dataclass(frozen=True)
class Split:
    cot: str
    completion: str
    cot_source: str  # reasoning_content | reasoning | think | think_unopened | none


@dataclass(frozen=True)
class Spans:
    """A content string cut into five consecutive pieces: `"".join(spans.parts) == content` always.
    prefix: text before the opening tag (whitespace, or stray text before a late `<think>`);
    open / close: the tags themselves ("" when absent); cot: between them; completion: after."""

    prefix: str
    open: str
    cot: str
    close: str
    completion: str
    kind: str  # think | think_unopened | none

    @property
    def parts(self) -> tuple[str, str, str, str, str]:
        return (self.prefix, self.open, self.cot, self.close, self.completion)


def split_spans(content: str) -> Spans:
    """Where the `<think>` block of a content string is, without dropping a character."""
    close = content.find(_CLOSE)
    if close >= 0:
        head, tail = content[:close], content[close:]
        close_tag, completion = tail[: len(_CLOSE)], tail[len(_CLOSE):]
        start = head.find(_OPEN)
        if start < 0:
            # R1's chat template puts "<think>\n" in the prompt, so the answer starts mid-thought.
            return Spans("", "", head, close_tag, completion, "think_unopened")
        # An opening tag after other text: that text is the prefix; the format filter judges it.
        return Spans(head[:start], _OPEN, head[start + len(_OPEN):], close_tag, completion, "think")
    m = _LEADING_OPEN.match(content)
    if m:
        # Opened and never closed: a truncated thought, no answer.
        start = content.index(_OPEN)
        return Spans(content[:start], _OPEN, content[start + len(_OPEN):], "", "", "think")
    return Spans("", "", "", "", content, "none")


def split_reasoning(message: dict[str, Any]) -> Split:
    """CoT from `reasoning_content` (DeepSeek, older vLLM), `reasoning` (vLLM >= 0.11, OpenRouter),
    else from `<think>...</think>` in the content, including R1's missing opening tag."""
    content = message.get("content")
    if not isinstance(content, str):
        content = ""  # null content (a tool call, a refusal) or a malformed reply
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value.strip():
            return Split(value.strip(), content.strip(), field)
    sp = split_spans(content)
    return Split(sp.cot.strip(), sp.completion.strip(), sp.kind)


def completion_problem(data: Any) -> str | None:
    """What makes a 200's JSON not a chat completion this client can store, or None: every
    choice an object with an integer index, a message object whose content is text (or null)
    and a text (or null) finish_reason. One line, shown per prompt."""
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    choices = data.get("choices")
    if not isinstance(choices, list):
        return "no `choices` list"
    if not choices:
        return "`choices` is empty"
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            return f"choices[{i}] is not an object"
        index, msg = c.get("index", 0), c.get("message")
        if type(index) is not int:
            return f"choices[{i}].index is not an integer"
        if msg is not None and not isinstance(msg, dict):
            return f"choices[{i}].message is not an object"
        for name, v in (("message.content", (msg or {}).get("content")), ("finish_reason", c.get("finish_reason"))):
            if v is not None and not isinstance(v, str):
                return f"choices[{i}].{name} is not text"
    return None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    cached_tokens: int | None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def read_usage(usage: Any) -> Usage:
    usage = usage if isinstance(usage, dict) else {}
    cached = _get(usage, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek's own field
    return Usage(
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        reasoning_tokens=_get(usage, "completion_tokens_details", "reasoning_tokens"),
        cached_tokens=cached,
    )


# A chat template and a provider's own system preamble add tokens the request's text does not
# show; a model can spend tokens no text shows (special tokens, hidden reasoning). These margins
# keep every honest server inside the bounds; a count past them is a lie or a bug.
PROMPT_SLACK_TOKENS = 4096
CHOICE_SLACK_TOKENS = 16
# Hidden reasoning (o-series) is billed up to max_tokens; with no max_tokens, up to this a choice.
UNCAPPED_CHOICE_TOKENS = 262_144
# No tokenizer packs more than this many bytes of text into one token (128 in the largest BPE
# vocabularies): fewer tokens than bytes / this for the text received is an under-count.
MAX_BYTES_PER_TOKEN = 256


def text_bytes(text: Any) -> int:
    """UTF-8 size of a string (a token holds at least one byte, except special tokens)."""
    if not isinstance(text, str):
        return 0
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def implausible_usage(usage: Usage, *, prompt_bytes: int, messages: int, answer_bytes: int, choices: int,
                      max_tokens: int | None) -> str | None:
    """Why the server's usage cannot be trusted (shown to the user), or None. Counts must be
    non-negative integers; prompt tokens within the request's bytes (+ template margin),
    completion and reasoning tokens within max_tokens a choice or the answer's bytes (whichever
    is larger), and at least the answer's bytes / MAX_BYTES_PER_TOKEN. Missing counts are not
    judged here (they are counted locally anyway)."""
    p, c, r, k = usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.cached_tokens
    top_p = prompt_bytes + 4 * messages + PROMPT_SLACK_TOKENS
    top = max(choices * (max_tokens or UNCAPPED_CHOICE_TOKENS), answer_bytes + choices * CHOICE_SLACK_TOKENS)
    # The common case, every count present and plausible, in one expression (it runs per request).
    if (type(p) is int and type(c) is int and type(k) in (int, type(None)) and type(r) in (int, type(None))
            and 0 <= p <= top_p and answer_bytes // MAX_BYTES_PER_TOKEN <= c <= top
            and (r is None or 0 <= r <= top) and (k is None or 0 <= k <= p) and (r is None or r <= c or c + r <= top)):
        return None
    fields = (("prompt_tokens", usage.prompt_tokens), ("completion_tokens", usage.completion_tokens),
              ("reasoning_tokens", usage.reasoning_tokens), ("cached_tokens", usage.cached_tokens))
    for name, v in fields:
        if v is not None and (type(v) is not int or v < 0):
            return f"{name}={v!r} is not a non-negative integer"
    if p is not None:
        if p > top_p:
            return f"prompt_tokens={p} for a {prompt_bytes}-byte prompt (at most {top_p})"
        if k is not None and k > p:
            return f"cached_tokens={k} > prompt_tokens={p}"
    for name, v in fields[1:3]:
        if v is not None and v > top:
            return f"{name}={v} for {answer_bytes} bytes of answer (at most {top})"
    if type(c) is int and type(r) is int and r > c and c + r > top:  # billed apart: the sum (cost.billed_output_tokens)
        return f"reasoning_tokens={r} on top of completion_tokens={c} for {answer_bytes} bytes of answer (at most {top} in all)"
    if c is not None and c < answer_bytes // MAX_BYTES_PER_TOKEN:
        return f"completion_tokens={c} for {answer_bytes} bytes of answer"
    return None


def max_tokens_of(params: Any) -> int | None:
    """The request's cap on tokens a choice (teacher.params: max_tokens, or max_completion_tokens
    among its extra keys or in extra_body)."""
    hit = _CAPS.get(id(params))
    if hit is not None and hit[0] is params:  # one manifest's params, asked per request
        return hit[1]
    extra = {**(getattr(params, "model_extra", None) or {}), **(getattr(params, "extra_body", None) or {})}
    cap = extra.get("max_completion_tokens") or extra.get("max_tokens") or getattr(params, "max_tokens", None)
    cap = cap if type(cap) is int and cap > 0 else None
    _CAPS[id(params)] = (params, cap)
    return cap


_CAPS: dict[int, tuple[Any, int | None]] = {}


def trusted_usage(data: dict[str, Any], request: list[dict[str, Any]], params: Any) -> tuple[Usage, str | None]:
    """The completion's usage when plausible (`implausible_usage`); else no counts at all (the
    caller counts every one locally and flags the samples usage_estimated) and the reason.
    params: teacher.params (its max_tokens bounds what a choice may bill)."""
    raw = data.get("usage")
    if not isinstance(raw, dict):
        return _NO_USAGE, None if raw is None else "usage is not an object"
    usage = read_usage(raw)
    answer = 0
    for c in data["choices"]:
        m = c.get("message") or {}
        answer += text_bytes(m.get("content")) + text_bytes(m.get("reasoning_content") or m.get("reasoning"))
    why = implausible_usage(usage, prompt_bytes=sum(text_bytes(m.get("content")) for m in request), messages=len(request),
                            answer_bytes=answer, choices=len(data["choices"]), max_tokens=max_tokens_of(params))
    return (usage, None) if why is None else (_NO_USAGE, why)


_NO_USAGE = Usage(None, None, None, None)
