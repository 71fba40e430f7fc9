"""Benchmark row layouts (`source.loader`): the rows of one file as published -> problem rows.

Every loader returns rows with `id`, `problem`, `answer` (the gold the correctness filter reads;
absent for code) plus what the prompt and filters need. A bad row raises one ManifestError
naming the file, the row (1-based, data rows) and the field.

- gsm8k:     {question, answer: "...#### 1,234"} -> answer "1234", the worked solution in `solution`.
- aime:      {question, answer} -> answer the integer 0-999 (a stray `^\\circ` dropped).
- gpqa:      the GPQA CSV (Question, Correct Answer, Incorrect Answer 1-3, Record ID) -> the four
             options in a per-row order fixed by the record id, `choices` (what the `choice` filter
             reads), `options` ("A) ..." lines for the prompt), answer the correct letter.
- humaneval: {task_id, prompt, entry_point, test, canonical_solution} -> `tests` (the
             `def check(candidate)` code the `code` filter runs) and `entry_point`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curator.config import ManifestError
from curator.engines.answers import gsm8k_gold  # the filters' reading of `#### N`: loader and filter cannot disagree

Row = dict[str, Any]
LETTERS = "ABCD"


def _text(path: Path, i: int, row: Row, field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if field not in row else ("empty" if isinstance(value, str) or value is None else f"a {type(value).__name__}, not text")
        raise ManifestError(f"{path}: row {i + 1}: field {field!r} is {got}")
    return value


def gsm8k(rows: list[Row], path: Path) -> list[Row]:
    out = []
    for i, row in enumerate(rows):
        question, solution = _text(path, i, row, "question"), _text(path, i, row, "answer")
        gold = gsm8k_gold(solution)
        if gold is None or not re.fullmatch(r"-?\d*\.?\d+", gold):
            raise ManifestError(f"{path}: row {i + 1}: field 'answer' does not end in '#### <number>' (ends {solution.strip()[-40:]!r})")
        out.append({"id": f"gsm8k-{path.stem}/{i}", "question": question, "problem": question, "solution": solution, "answer": gold})
    return out


_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")


def aime(rows: list[Row], path: Path) -> list[Row]:
    out = []
    for i, row in enumerate(rows):
        if isinstance(row.get("answer"), int) and not isinstance(row.get("answer"), bool):
            row = {**row, "answer": str(row["answer"])}  # stored as a JSON number
        question, raw = _text(path, i, row, "question"), _text(path, i, row, "answer")
        # AIME answers are integers 0-999; one 2025 answer is written `336^\circ`.
        answer = _DEGREES.sub("", raw).strip()
        if not re.fullmatch(r"\d{1,3}", answer):
            raise ManifestError(f"{path}: row {i + 1}: field 'answer' is {raw!r}, not an AIME answer (an integer 0-999)")
        out.append({"id": f"{path.stem}/{i + 1}", "question": question, "problem": question, "answer": str(int(answer)), "answer_text": raw})
    return out


GPQA_OPTIONS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def gpqa_order(record_id: str) -> list[int]:
    """A permutation of the four options (index 0 is the correct one), fixed by the record id:
    sorting by a hash needs no RNG, so the order (and every stored key) is the same on any
    machine and Python version."""
    return sorted(range(4), key=lambda k: hashlib.sha256(f"gpqa:{record_id}:{k}".encode()).digest())


def gpqa(rows: list[Row], path: Path) -> list[Row]:
    out = []
    for i, row in enumerate(rows):
        rid = _text(path, i, row, "Record ID").strip()
        question = _text(path, i, row, "Question").strip()
        texts = [_text(path, i, row, f).strip() for f in GPQA_OPTIONS]
        if texts[0] in texts[1:]:
            # Two identical wrong options happen (rows 90 and 127); a wrong one equal to the right one
            # would make the gold letter ambiguous.
            raise ManifestError(f"{path}: row {i + 1} (id {rid!r}): field 'Correct Answer' equals an incorrect answer, so the gold letter is ambiguous")
        order = gpqa_order(rid)
        choices = [texts[k] for k in order]
        out.append(
            {
                "id": rid,
                "question": question,
                "problem": question,
                "choices": choices,
                "options": "\n".join(f"{LETTERS[j]}) {c}" for j, c in enumerate(choices)),
                "answer": LETTERS[order.index(0)],
                "answer_text": texts[0],
                "domain": (row.get("High-level domain") or "").strip(),
                "subdomain": (row.get("Subdomain") or "").strip(),
            }
        )
    return out


def humaneval(rows: list[Row], path: Path) -> list[Row]:
    out = []
    for i, row in enumerate(rows):
        tid = _text(path, i, row, "task_id")
        prompt, tests = _text(path, i, row, "prompt"), _text(path, i, row, "test")
        entry = _text(path, i, row, "entry_point").strip()
        if not entry.isidentifier():
            raise ManifestError(f"{path}: row {i + 1} (id {tid!r}): field 'entry_point' is {entry!r}, not a function name")
        if "def check(" not in tests:
            raise ManifestError(f"{path}: row {i + 1} (id {tid!r}): field 'test' has no 'def check(candidate)' for the code filter to run")
        out.append(
            {
                "id": tid,
                "problem": prompt,
                "entry_point": entry,
                "tests": tests,
                "canonical_solution": row.get("canonical_solution") or "",
            }
        )
    return out


LOADERS: dict[str, Callable[[list[Row], Path], list[Row]]] = {"gsm8k": gsm8k, "aime": aime, "gpqa": gpqa, "humaneval": humaneval}
