"""Keep API keys out of everything a run prints or writes.

The key a run uses is registered (`register_secret`) when it is read from the environment;
`redact` replaces every registered value, and, for keys we were never told about (a server echoing
another header, a key in an exception from a library), anything shaped like a bearer token or a
provider key."""

from __future__ import annotations

import os
import re
from typing import Any

from curator.errors import RunError

MASK = "[REDACTED]"
_SECRETS: set[str] = set()

# Shapes of credentials worth masking even when unregistered. Short prefixes need a long tail so
# ordinary words ("sk-learn", "task-1") survive.
_PATTERNS = [
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(\b(?:authorization|x-api-key|api[_-]?key)[\"']?\s*[:=]\s*[\"']?)(?!bearer\s)[^\s\"',;}]{8,}"),
    re.compile(r"()\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}"),
    re.compile(r"()\bhf_[A-Za-z0-9]{20,}"),
]

# Provider key shapes, for telling a key apart from ordinary text (dataset rows, manifest values):
# kind -> (literals a key starts with, pattern matched where one occurs). Finding the literals
# runs at C speed; a regex scan of every position runs at a few MB/s, and exports scan every CoT.
# Only prefixed shapes: bare high-entropy runs are ordinary in dataset text (hashes, ids).
_KEY_SHAPES = {
    "sk-": (("sk-", "rk-", "pk-"), r"[srp]k-[A-Za-z0-9_-]{16,}"),
    "hf_": (("hf_",), r"hf_[A-Za-z0-9]{20,}"),
    "bearer": (("bearer",), r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}"),  # found in the lowercased text
    "AKIA": (("AKIA", "ASIA"), r"A[KS]IA[A-Z0-9]{16}\b"),
    "github": (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"),
    "gitlab": (("glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),
    "slack": (("xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    "google": (("AIza",), r"AIza[A-Za-z0-9_-]{35}\b"),
    "jwt": (("eyJ",), r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "private key": (("-----BEGIN ",), r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
}
_SHAPES = [(kind, anchors, re.compile(rx)) for kind, (anchors, rx) in _KEY_SHAPES.items()]
# A random-looking run: 20+ letters and digits mixed with many distinct characters (hex and
# base64 keys); model names and words split into short parts at - _ . /
_RANDOM_RUN = re.compile(r"[A-Za-z0-9]{20,}")


def register_secret(value: str | None) -> None:
    # Very short values ("EMPTY", "x") would mask ordinary words everywhere and protect nothing.
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: object) -> str:
    s = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, MASK)
    for pat in _PATTERNS:
        s = pat.sub(lambda m: m.group(1) + MASK, s)
    for start, stop, _ in reversed(_key_spans(s)):  # the other provider shapes (AWS, GitHub, JWT...)
        s = s[:start] + MASK + s[stop:]
    return s


def find_keys(text: str) -> list[str]:
    """The kind of each provider-key-shaped string in `text` ("sk-", "hf_", "bearer"...), in
    order, overlaps counted once: what a warning may say about them without printing them."""
    return [kind for _, _, kind in _key_spans(text)]


def _key_spans(text: str) -> list[tuple[int, int, str]]:
    spans = []
    lower = None
    for kind, anchors, rx in _SHAPES:
        if kind == "bearer":
            lower = text.lower() if lower is None else lower
        hay = lower if kind == "bearer" else text
        for anchor in anchors:
            pos = hay.find(anchor)
            while pos >= 0:
                # A key starts a word: "task-..." holds "sk-" but is no key.
                if pos == 0 or kind == "private key" or not (text[pos - 1].isalnum() or text[pos - 1] == "_"):
                    m = rx.match(text, pos)
                    if m:
                        spans.append((m.start(), m.end(), kind))
                pos = hay.find(anchor, pos + 1)
    out, end = [], -1
    for start, stop, kind in sorted(spans):
        if start >= end:
            out.append((start, stop, kind))
            end = stop
    return out


def looks_like_key(value: str) -> bool:
    """A provider key shape, or a long random-looking run (a bare hex or base64 key)."""
    if find_keys(value):
        return True
    return any(re.search(r"\d", r) and re.search(r"[A-Za-z]", r) and len(set(r)) >= 10 for r in _RANDOM_RUN.findall(value))


def is_env_ref(value: Any) -> bool:
    """`{env: NAME}`: a value read from the environment when a request is made, never written."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("env"), str)


def literal_keys(value: Any, where: str) -> str | None:
    """The field (dotted path) of the first literal string in `value` that looks like a key."""
    if is_env_ref(value):
        return None
    if isinstance(value, str):
        return where if looks_like_key(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = literal_keys(v, f"{where}.{k}" if isinstance(k, str) else f"{where}[{k}]")
        if found:
            return found
    return None


class MissingEnv(RunError):
    """An `{env: NAME}` value whose variable is not set."""


def header_value(value: str, what: str) -> str:
    """`value`, if an HTTP header can carry it. The HTTP clients refuse a line break as a
    connection error ("cannot reach the teacher"): a key pasted with its newline, say so."""
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise RunError(f"{what} holds a line break or control character, which an HTTP header cannot carry: export it without")
    return value


def resolve_env(value: Any, where: str) -> Any:
    """`value` with every `{env: NAME}` replaced by the variable's value, which is registered as a
    secret (masked in every message from now on). Only ever held in memory, for a request."""
    if is_env_ref(value):
        got = os.environ.get(value["env"])
        if not got:
            raise MissingEnv(f"environment variable {value['env']} ({where}) is not set: export it before the run")
        register_secret(got)
        return got
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
