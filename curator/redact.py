"""Keep API keys out of everything a run prints or writes.

The key a run uses is registered (`register_secret`) when it is read from the environment;
`redact` replaces every registered value, and, for keys we were never told about (a server echoing
another header, a key in an exception from a library), anything shaped like a bearer token or a
provider key."""

from __future__ import annotations

import re

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
    return s
