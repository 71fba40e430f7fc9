"""`code`: does the sample's code pass the problem's tests? (run in `curator.engines.sandbox`)

Code: the last ```python fenced block of the completion (else its last ``` block of any language;
with `source: cot_and_completion`, of the CoT followed by the completion). Tests: the source row's
`tests_field` (default `tests`): a list of assert strings (MBPP style), a JSON string of such a
list, or a test-code string (every top-level assert is a test; HumanEval's `def check(candidate)`
is flattened with the row's `entry_point`). MBPP's `test_setup_code` / `test_imports` run first.

Each sample runs in its own sandboxed subprocesses (no network, no UNIX sockets, rlimits, wall clock;
the tests run in a judge process the solution can't reach, see docs/CONTRACTS.md); up to `workers`
at a time from a thread pool (the work is in the subprocesses). A sample passes when its
pass rate reaches `min_pass_rate`. Reasons: `no_code`, `no_tests`, `tests_failed`, `timeout`,
`memory`, `crashed`, `sandbox_error` (the sandbox itself could not start; the filter raises when
that happens to every sample of a batch), `skipped` (with `skip_rejected`).
Details: {passed, total, pass_rate, status, error?}.
"""

from __future__ import annotations

from functools import partial

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import polars as pl
from pydantic import Field

from curator.judge.base import SampleFilter, FilterParams, column, register, verdicts
from curator.engines.sandbox import SandboxResult, run_python

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_LANGS = {"python", "py", "python3", "py3"}


def extract_code(text: str | None) -> str | None:
    """The last ```python block of `text`, else its last fenced block; None when there is none."""
    if not text:
        return None
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    blocks = [(lang, body) for lang, body in blocks if body.strip()]
    if not blocks:
        return None
    py = [body for lang, body in blocks if lang in _PY_LANGS]
    return (py[-1] if py else blocks[-1][1]).strip("\n")


def row_tests(row: dict[str, Any], field: str) -> tuple[str | list[str] | None, str | None]:
    """(tests, why not) from a source row: a list of strings, a code string, or None."""
    t = row.get(field)
    if t is None:
        return None, f"row has no {field!r}"
    if isinstance(t, str):
        s = t.strip()
        if not s:
            return None, f"{field!r} is empty"
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                t = parsed
            else:
                return t, None
        else:
            return t, None
    if isinstance(t, list):
        items = [x for x in t if isinstance(x, str) and x.strip()]
        if not items:
            return None, f"{field!r} has no test strings"
        if len(items) != len(t):
            return None, f"{field!r} mixes strings and other values"
        return items, None
    return None, f"unsupported {field!r} format: {type(t).__name__}"


def setup_of(row: dict[str, Any]) -> list[str]:
    """MBPP's extras: `test_imports` (list of import lines) and `test_setup_code` (a string)."""
    out: list[str] = []
    imports = row.get("test_imports")
    if isinstance(imports, list):
        out += [x for x in imports if isinstance(x, str) and x.strip()]
    setup = row.get("test_setup_code")
    if isinstance(setup, str) and setup.strip():
        out.append(setup)
    return out


@register
class CodeExec(SampleFilter):
    name = "code"

    class Params(FilterParams):
        source: Literal["completion", "cot_and_completion"] = "completion"
        tests_field: str = Field("tests", min_length=1, description="row field with the tests")
        entry_point_field: str = Field("entry_point", min_length=1, description="row field naming the function under test")
        timeout_s: float = Field(10.0, gt=0, le=600, description="wall-clock/CPU budget per sample")
        memory_mb: int = Field(512, ge=64, le=65536, description="address-space limit per process")
        max_processes: int = Field(16, ge=1, le=4096, description="processes/threads the code may have")
        max_file_mb: int = Field(10, ge=1, le=10240)
        min_pass_rate: float = Field(1.0, ge=0.0, le=1.0)
        workers: int = Field(2, ge=1, le=256, description="samples run at the same time")
        skip_rejected: bool = Field(False, description="don't run samples an earlier step rejected (reason `skipped`)")
        seccomp: Literal["require", "skip"] = Field("require", description="`skip`: run even where the filter denying UNIX sockets can't load (weaker)")

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        p: CodeExec.Params = self.params  # type: ignore[assignment]
        n = df.height
        keys = df["key"].to_list()
        col = partial(column, df)
        comps, cots, rows_json = col("completion"), col("cot"), col("row_json")
        prior = df["prior_passed"].to_list() if "prior_passed" in df.columns else [True] * n

        passed = [False] * n
        reasons: list[str | None] = [None] * n
        details: list[Any] = [None] * n
        jobs: list[tuple[int, dict[str, Any]]] = []
        for i in range(n):
            if p.skip_rejected and prior[i] is False:
                reasons[i], details[i] = "skipped", {"skipped": True}
                continue
            text = comps[i] or ""
            if p.source == "cot_and_completion":
                text = (cots[i] or "") + "\n" + text
            code = extract_code(text)
            if code is None:
                reasons[i], details[i] = "no_code", {"error": "no fenced code block"}
                continue
            try:
                row = json.loads(rows_json[i]) if rows_json[i] else {}
            except ValueError:
                row = {}
            if not isinstance(row, dict):
                row = {}
            tests, why = row_tests(row, p.tests_field)
            if tests is None:
                reasons[i], details[i] = "no_tests", {"error": why}
                continue
            ep = row.get(p.entry_point_field)
            jobs.append((i, {"code": code, "tests": tests, "entry_point": ep if isinstance(ep, str) else None, "setup": setup_of(row)}))

        results: list[SandboxResult] = []
        if jobs:
            with ThreadPoolExecutor(max_workers=min(p.workers, len(jobs)), thread_name_prefix="code-filter") as pool:
                results = list(pool.map(self._run, [j for _, j in jobs]))
        errors = [r for r in results if r.status == "error"]
        if results and len(errors) == len(results):
            raise RuntimeError(f"code filter: the sandbox could not run any sample: {errors[0].error}")

        for (i, _), r in zip(jobs, results):
            rate = r.pass_rate
            d: dict[str, Any] = {"passed": r.passed, "total": r.total, "pass_rate": round(rate, 4), "status": r.status}
            if r.error and r.status != "ok":
                d["error"] = r.error[:300]
            details[i] = d
            if r.total == 0:
                reasons[i] = "no_tests"
            elif r.status == "error":
                reasons[i] = "sandbox_error"
            elif rate >= p.min_pass_rate and (r.status == "ok" or p.min_pass_rate < 1.0):
                passed[i] = True
            elif r.status in ("timeout", "memory", "crashed"):
                reasons[i] = r.status
            else:
                reasons[i] = "tests_failed"
        return verdicts(keys, passed, reasons, details)

    def _run(self, job: dict[str, Any]) -> SandboxResult:
        p: CodeExec.Params = self.params  # type: ignore[assignment]
        return run_python(
            job["code"],
            job["tests"],
            entry_point=job["entry_point"],
            setup=job["setup"],
            timeout_s=p.timeout_s,
            memory_mb=p.memory_mb,
            max_processes=p.max_processes,
            max_file_mb=p.max_file_mb,
            seccomp=p.seccomp,
        )
