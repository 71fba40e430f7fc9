"""Read problems from JSONL (also gzipped) / JSON / Parquet / CSV files, a folder of such files, or a
Hugging Face dataset saved on disk; `source.loader` reads a benchmark's own layout (benchmarks.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.sample.loaders import LOADERS
from curator.config import ManifestError, Source


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    gold: str | None
    row: dict[str, Any]  # the whole source row, for templates and filters (tests, choices...)
    at: str = ""  # "FILE: row N (id 'x')", for errors about this row


SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonl.gz": "jsonl", ".ndjson.gz": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def file_suffix(path: Path) -> str:
    """`.jsonl.gz` for a gzipped file, else the last suffix, lowercased."""
    return "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def folder_files(folder: Path, suffixes) -> list[Path]:
    """A folder's data files with these suffixes, in name order (one benchmark split across
    files, like AIME 2025 I and II)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and file_suffix(p) in suffixes)


def _is_saved_dataset(path: Path) -> bool:
    return any((path / f).exists() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    return SUFFIX_FORMATS.get(file_suffix(path), "jsonl")


def _files(path: Path, fmt: str) -> list[tuple[Path, str]]:
    """(file, format) pairs to read: the file itself, a saved dataset, or the data files of a
    plain folder in name order (a benchmark split across files, like AIME 2025 I and II)."""
    if not path.is_dir() or _is_saved_dataset(path) or fmt == "hf":
        return [(path, _detect_format(path, fmt))]
    files = [p for p in folder_files(path, SUFFIX_FORMATS) if fmt == "auto" or SUFFIX_FORMATS[file_suffix(p)] == fmt]
    if not files:
        raise ManifestError(f"{path}: folder has no data files ({', '.join(SUFFIX_FORMATS)}) and is not a saved Hugging Face dataset (field 'source.path')")
    return [(p, SUFFIX_FORMATS[file_suffix(p)]) for p in files]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        with gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                _parse_line(path, lineno, raw, rows)
    except (OSError, EOFError) as e:  # a corrupt or truncated .gz
        raise ManifestError(f"{path}: cannot decompress ({e}) after {len(rows)} rows") from None
    return rows


def _parse_line(path: Path, lineno: int, raw: bytes, rows: list[dict[str, Any]]) -> None:
    if not raw.strip():
        return
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


def load_problems(source: Source, path: Path, max_bytes: int | None = None) -> list[Problem]:
    """max_bytes: limits.max_problem_bytes, checked on every row before anything is sent."""
    if not path.exists():
        raise ManifestError(f"{path}: source file not found (field 'source.path')")
    rows: list[dict[str, Any]] = []
    origin: list[tuple[Path, int]] = []  # (file, row in that file) so errors name the real file
    for file, fmt in _files(path, source.format):
        part = _read_table(file, fmt, source.split)
        if source.loader:
            part = LOADERS[source.loader](part, file)
        rows += part
        origin += [(file, i) for i in range(len(part))]
    if not rows:
        raise ManifestError(f"{path}: the dataset is empty")
    if source.loader:
        id_col, problem_col, answer_col = "id", "problem", ("answer" if "answer" in rows[0] else None)
    else:
        id_col, problem_col, answer_col = source.id, source.problem, source.answer
    columns = list(rows[0].keys())
    for field, col in (("id", id_col), ("problem", problem_col), ("answer", answer_col)):
        if col is not None and col not in rows[0]:
            raise ManifestError(f"{origin[0][0]}: field 'source.{field}' names column {col!r}, which does not exist; columns are {', '.join(columns)}")

    def at(i: int) -> str:
        return f"{origin[i][0]}: row {origin[i][1] + 1}"

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        pid = _text(row.get(id_col)) if id_col else str(i)
        if pid is None or pid == "":
            raise ManifestError(f"{at(i)}: empty id in column {id_col!r}")
        if pid in seen:
            j = seen[pid]
            where = f"rows {origin[j][1] + 1} and {origin[i][1] + 1}" if origin[j][0] == origin[i][0] else f"{at(j)} and {at(i)}"
            raise ManifestError(f"{origin[i][0]}: duplicate id {pid!r} in column {id_col!r} ({where})")
        seen[pid] = i
        text = _text(row.get(problem_col))
        if text is None or not text.strip():
            raise ManifestError(f"{at(i)} (id {pid!r}): empty problem in column {problem_col!r}")
        if max_bytes is not None and len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
            raise ManifestError(f"{at(i)} (id {pid!r}): the problem in column {problem_col!r} is {len(text.encode('utf-8')):,} bytes, "
                                f"over limits.max_problem_bytes ({max_bytes:,}); nothing was sent")
        gold = _text(row.get(answer_col)) if answer_col else None
        problems.append(Problem(id=pid, problem=text, gold=gold, row=row, at=f"{at(i)} (id {pid!r})"))

    if source.shuffle_seed is not None:
        random.Random(source.shuffle_seed).shuffle(problems)
    if source.limit is not None:
        problems = problems[: source.limit]
    return problems
