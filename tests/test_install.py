"""The README's install (`pip install -e '.[test]'`) is quiet: every extra pyproject.toml asks of a
dependency is one that dependency's installed metadata provides, spelled as it spells it (older
pips, such as a fresh venv's own, compare the names as written and warn on any mismatch), and so
is every extra those extras ask of their own dependencies."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [("dependencies", Requirement(r)) for r in project.get("dependencies", [])]
    for extra, items in project.get("optional-dependencies", {}).items():
        reqs += [(f"[{extra}]", Requirement(r)) for r in items]
    return reqs


def _installed(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def _missing_extras(req: Requirement, seen: set[tuple[str, str]]) -> list[str]:
    """`dist[extra]` strings that the installed dist does not provide, following the requirements
    each requested extra turns on."""
    dist = _installed(req.name)
    if dist is None:
        return []  # not installed here (an extra CI does not install): nothing to compare against
    provided = set(dist.metadata.get_all("Provides-Extra") or [])
    missing = []
    for extra in sorted(req.extras):
        if (req.name, extra) in seen:
            continue
        seen.add((req.name, extra))
        if extra not in provided:
            missing.append(f"{req.name}[{extra}] (it provides: {', '.join(sorted(provided)) or 'no extras'})")
            continue
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.extras and sub.marker is not None and sub.marker.evaluate({"extra": extra}) \
                    and not sub.marker.evaluate({"extra": ""}):
                missing += [f"{m} (asked by {req.name}[{extra}])" for m in _missing_extras(sub, seen)]
    return missing


@pytest.mark.parametrize("where,req", [(w, r) for w, r in _requirements() if r.extras], ids=lambda x: str(x))
def test_requested_extras_exist(where, req):
    assert not _missing_extras(req, set()), f"pyproject {where}: {req}"


def test_math_verify_extras_and_antlr_runtime():
    """math-verify, named explicitly: no extra asked of it that its metadata lacks, and the antlr
    runtime installed is one its LaTeX parser has generated code for."""
    for _, req in _requirements():
        if req.name == "math-verify":
            assert not _missing_extras(req, set()), str(req)
    from latex2sympy2_extended import (
        antlr_parser,  # raises ImportError on an unsupported runtime
    )

    assert antlr_parser.PSParser is not None
    assert md.version("antlr4-python3-runtime").startswith(("4.9.3", "4.11", "4.13.2"))


def test_extras_check_catches_a_misspelled_extra():
    assert _missing_extras(Requirement("math-verify[antlr4_13_2]"), set())
    assert _missing_extras(Requirement("math-verify[no-such-extra]"), set())
    # math-verify[antlr4-13-2] exists, but turns on latex2sympy2_extended[antlr4_13_2], which
    # latex2sympy2_extended 1.11 spells antlr4-13-2: the check follows the chain and reports it.
    chained = _missing_extras(Requirement("math-verify[antlr4-13-2]"), set())
    if md.version("latex2sympy2_extended") == "1.11.0":
        assert any("latex2sympy2_extended" in m for m in chained), chained
