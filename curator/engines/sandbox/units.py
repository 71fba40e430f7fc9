"""Splitting a row's tests into units: one unit = one counted test (run by the sandbox's judge)."""

from __future__ import annotations

import ast
from typing import Any, Sequence


def _contains_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _flattenable(body: list[ast.stmt]) -> bool:
    """Can a function body run statement by statement at module level? (asserts, no return/yield)"""

    def bad(node: ast.AST) -> bool:
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return False  # a nested def may return
        return any(bad(c) for c in ast.iter_child_nodes(node))

    return any(_contains_assert(s) for s in body) and not any(bad(s) for s in body)


def split_tests(tests: str | Sequence[str] | None, entry_point: str | None = None, setup: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Turn a row's tests into ordered units {"src": code, "test": bool}; setup units run but don't count.

    * a list of strings: one test per string (MBPP/APPS-style asserts);
    * a code string: every top-level statement that contains an `assert` is a test, the rest is setup;
      with no top-level asserts but a `def check(candidate)` (HumanEval) and an entry point, the body
      of `check` is flattened the same way with `candidate = <entry_point>`; otherwise the whole
      string is one test (passes when it runs without an exception, e.g. a unittest script)."""
    units: list[dict[str, Any]] = [{"src": s, "test": False} for s in setup if s and s.strip()]
    ep = entry_point if entry_point and entry_point.isidentifier() else None
    if tests is None:
        return units
    if not isinstance(tests, str):
        items = [t for t in tests if isinstance(t, str) and t.strip()]
        if ep and any("candidate" in t for t in items):
            units.append({"src": f"candidate = {ep}", "test": False})
        return units + [{"src": t, "test": True} for t in items]
    if not tests.strip():
        return units
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return units + [{"src": tests, "test": True}]
    body = tree.body
    if any(_contains_assert(s) and not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for s in body):
        for s in body:
            is_test = _contains_assert(s) and not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            units.append({"src": ast.unparse(s), "test": is_test})
        return units
    check = next((s for s in body if isinstance(s, ast.FunctionDef) and s.name == "check"), None)
    if check is not None and ep:
        arg = check.args.args[0].arg if check.args.args else "candidate"
        for s in body:
            if s is check:
                continue
            # drop a top-level call of check(...): we call it ourselves, unit by unit
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name) and s.value.func.id == "check":
                continue
            units.append({"src": ast.unparse(s), "test": False})
        inner = check.body
        if inner and isinstance(inner[0], ast.Expr) and isinstance(inner[0].value, ast.Constant) and isinstance(inner[0].value.value, str):
            inner = inner[1:]  # docstring
        if _flattenable(inner):
            units.append({"src": f"{arg} = {ep}", "test": False})
            for s in inner:
                is_test = _contains_assert(s) and not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                units.append({"src": ast.unparse(s), "test": is_test})
        else:
            units.append({"src": ast.unparse(check), "test": False})
            units.append({"src": f"check({ep})", "test": True})
        return units
    return units + [{"src": tests, "test": True}]
