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


def read_usage(usage: dict[str, Any] | None) -> Usage:
    usage = usage or {}
    cached = _get(usage, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek's own field
    return Usage(
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        reasoning_tokens=_get(usage, "completion_tokens_details", "reasoning_tokens"),
        cached_tokens=cached,
    )
