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


def split_reasoning(message: dict[str, Any]) -> Split:
    """CoT from `reasoning_content` (DeepSeek, older vLLM), `reasoning` (vLLM >= 0.11, OpenRouter),
    else from `<think>...</think>` in the content, including R1's missing opening tag."""
    content = message.get("content") or ""
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value.strip():
            return Split(value.strip(), content.strip(), field)
    close = content.find(_CLOSE)
    if close >= 0:
        head, tail = content[:close], content[close + len(_CLOSE):]
        m = _LEADING_OPEN.match(head)
        if m:
            return Split(head[m.end():].strip(), tail.strip(), "think")
        if _OPEN not in head:
            # R1's chat template puts "<think>\n" in the prompt, so the answer starts mid-thought.
            return Split(head.strip(), tail.strip(), "think_unopened")
        # An opening tag after other text: keep everything; the format filter judges it.
        start = head.find(_OPEN)
        return Split(head[start + len(_OPEN):].strip(), tail.strip(), "think")
    m = _LEADING_OPEN.match(content)
    if m:
        # Opened and never closed: a truncated thought, no answer.
        return Split(content[m.end():].strip(), "", "think")
    return Split("", content.strip(), "none")


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
