"""Read problems from JSONL / JSON / Parquet / CSV files or a Hugging Face dataset saved on disk."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.config import ManifestError, Source


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    gold: str | None
    row: dict[str, Any]  # the whole source row, for templates and filters (tests, choices...)


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix, "jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}: line {lineno}: not UTF-8 text (byte {e.start})") from None
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"{path}: line {lineno}: each line must be a JSON object")
            rows.append(obj)
    return rows


def _read_table(path: Path, fmt: str, split: str | None) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None
        if isinstance(data, dict) and split and split in data:
            data = data[split]
        if not isinstance(data, list):
            raise ManifestError(f"{path}: expected a JSON list of objects")
        return data
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise ManifestError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
    if fmt == "csv":
        import csv

        try:
            with path.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if fmt == "hf":
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise ManifestError(f"{path}: cannot load a saved Hugging Face dataset ({str(e).splitlines()[0]})") from None
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                if len(ds) != 1:
                    raise ManifestError(f"{path}: field 'source.split' is required, splits are {', '.join(ds)}")
                split = next(iter(ds))
            if split not in ds:
                raise ManifestError(f"{path}: no split {split!r}; splits are {', '.join(ds)}")
            ds = ds[split]
        return ds.to_list()
    raise ManifestError(f"{path}: unknown format {fmt!r}")


def fingerprint(path: Path) -> str:
    """sha256 over the file (or every file of a saved dataset), so a receipt says what was read."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def load_problems(source: Source, path: Path) -> list[Problem]:
    if not path.exists():
        raise ManifestError(f"{path}: source file not found (field 'source.path')")
    fmt = _detect_format(path, source.format)
    rows = _read_table(path, fmt, source.split)
    if not rows:
        raise ManifestError(f"{path}: the dataset is empty")
    columns = list(rows[0].keys())
    for field, col in (("id", source.id), ("problem", source.problem), ("answer", source.answer)):
        if col is not None and col not in rows[0]:
            raise ManifestError(f"{path}: field 'source.{field}' names column {col!r}, which does not exist; columns are {', '.join(columns)}")

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        pid = _text(row.get(source.id)) if source.id else str(i)
        if pid is None or pid == "":
            raise ManifestError(f"{path}: row {i + 1}: empty id in column {source.id!r}")
        if pid in seen:
            raise ManifestError(f"{path}: duplicate id {pid!r} in column {source.id!r} (rows {seen[pid] + 1} and {i + 1})")
        seen[pid] = i
        text = _text(row.get(source.problem))
        if text is None or not text.strip():
            raise ManifestError(f"{path}: row {i + 1} (id {pid!r}): empty problem in column {source.problem!r}")
        gold = _text(row.get(source.answer)) if source.answer else None
        problems.append(Problem(id=pid, problem=text, gold=gold, row=row))

    if source.shuffle_seed is not None:
        random.Random(source.shuffle_seed).shuffle(problems)
    if source.limit is not None:
        problems = problems[: source.limit]
    return problems
