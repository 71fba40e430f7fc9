"""Find the gold answer of a request: which known problem text occurs in the last user message."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

from curator.errors import ManifestError

DEFAULT_GOLD = "42"
_PREFIX = 40  # problems are indexed by their first 40 characters
_CACHE_MAX = 200_000


class ProblemsFileError(ManifestError, ValueError):
    """The problems file is missing or unreadable (one line for `curator serve`; a ValueError for
    callers that build a server from a dict)."""


def normalize_gold(value: Any) -> str | None:
    """Gold as text; GSM8K's `...#### 72` -> `72`; integral floats lose their `.0`."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        return normalize_gold(value)
    text = str(value)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    return text or None


def _read_rows(path: Path) -> Iterable[dict[str, Any]]:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield json.loads(line)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
                data = lists[0]  # {"data": [{...}, ...]}
            else:  # column-oriented {"problem": [...], "answer": [...]}
                keys = [k for k, v in data.items() if isinstance(v, list)]
                data = [dict(zip(keys, vals)) for vals in zip(*(data[k] for k in keys))]
        yield from data
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: unsupported problem file type {suffix!r} (jsonl, json, parquet, csv)")


class ProblemIndex:
    """Problem text -> (id, gold). `lookup(message)` finds the longest known problem inside `message`.

    Exact whole-message matches are one dict lookup; otherwise every 40-character window of the
    message is looked up in a dict of problem prefixes (problems shorter than that are indexed
    whole, by length), then the candidate is confirmed with `startswith`. Results are cached.
    """

    def __init__(self, entries: Iterable[tuple[str, str, str | None]] = ()):
        self.exact: dict[str, tuple[str, str | None]] = {}
        self.prefixes: dict[int, dict[str, list[tuple[str, str, str | None]]]] = {}
        self._cache: dict[str, tuple[str, str | None] | None] = {}
        for pid, problem, gold in entries:
            self.add(pid, problem, gold)

    def __len__(self) -> int:
        return len(self.exact)

    def add(self, pid: str, problem: str, gold: str | None) -> None:
        problem = problem.strip()
        if not problem:
            return
        self.exact[problem] = (pid, gold)
        k = min(_PREFIX, len(problem))
        self.prefixes.setdefault(k, {}).setdefault(problem[:k], []).append((problem, pid, gold))
        self._cache.clear()

    @classmethod
    def from_file(
        cls, path: str | Path, id_column: str = "id", problem_column: str = "problem", answer_column: str = "answer"
    ) -> ProblemIndex:
        path = Path(path)
        if not path.exists():
            raise ProblemsFileError(f"problems file not found: {path}")
        try:
            return cls._from_rows(path, id_column, problem_column, answer_column)
        except (ValueError, OSError) as e:  # bad JSON, bad encoding, unreadable, unknown suffix
            if isinstance(e, ProblemsFileError):
                raise
            text = " ".join(str(e).split())[:300]
            raise ProblemsFileError(text if str(path) in text else f"problems file {path}: {text}") from None

    @classmethod
    def _from_rows(cls, path: Path, id_column: str, problem_column: str, answer_column: str) -> ProblemIndex:
        index = cls()
        for i, row in enumerate(_read_rows(path)):
            if not isinstance(row, dict):
                continue
            problem = row.get(problem_column)
            if not isinstance(problem, str):
                if i == 0:
                    raise ProblemsFileError(f"{path}: no text column {problem_column!r} (columns: {', '.join(map(str, row))})")
                continue
            pid = row.get(id_column)
            index.add(str(pid) if pid is not None else str(i), problem, normalize_gold(row.get(answer_column)))
        return index

    def lookup(self, message: str) -> tuple[str, str | None] | None:
        """(id, gold) of the longest problem occurring in `message`, or None."""
        cache = self._cache
        hit = cache.get(message, cache)
        if hit is not cache:
            return hit  # type: ignore[return-value]
        found = self._search(message)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[message] = found
        return found

    def _search(self, message: str) -> tuple[str, str | None] | None:
        if not self.exact:
            return None
        whole = self.exact.get(message.strip())
        if whole is not None:
            return whole
        best: tuple[str, str, str | None] | None = None
        n = len(message)
        for k, table in self.prefixes.items():
            get = table.get
            for i in range(n - k + 1):
                cands = get(message[i : i + k])
                if cands is None:
                    continue
                for cand in cands:
                    if (best is None or len(cand[0]) > len(best[0])) and message.startswith(cand[0], i):
                        best = cand
        return (best[1], best[2]) if best is not None else None


def wrong_rates(path: str | Path, id_column: str, rate_column: str) -> dict[str, float]:
    """Problem id -> its chance of a wrong answer, from `rate_column` of the problems file."""
    out: dict[str, float] = {}
    for i, row in enumerate(_read_rows(Path(path))):
        if not isinstance(row, dict) or row.get(rate_column) is None:
            continue
        try:
            rate = float(row[rate_column])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: row {i + 1}: {rate_column} is not a number: {row[rate_column]!r}") from None
        if not 0 <= rate <= 1:
            raise ValueError(f"{path}: row {i + 1}: {rate_column} must be between 0 and 1, got {rate}")
        pid = row.get(id_column)
        out[str(pid) if pid is not None else str(i)] = rate
    return out
