"""The house rules of docs/ARCHITECTURE.md, checked on the code itself: imports run downward (no
circles, counting imports inside functions), engines import no stage, the root stays small, no
module grows past 600 lines, every exception derives from the one root; and `curator demo` runs
from an installed wheel (its manifest, prompt, chain and problems ship in the package)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import curator
from curator.errors import CuratorError

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "curator"

# Lower floors never import higher ones; within a floor only a folder imports itself (plus the
# one sideways door: a dataset card quotes the report's funnel).
FLOOR = {"root": 0, "engines": 1, "teacher": 1, "store": 2, "sample": 3, "judge": 4, "audit": 5, "ship": 5,
         "run": 6, "cli": 7, "__main__": 8}
SIDEWAYS = {("ship", "audit")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "scripts" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every curator module `name` imports, at the top or inside a function."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                target = sub if sub in known else mod
                if target in known and target != name:
                    out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known and a.name != name)
    # A package's __init__ is imported on the way to its modules; that is not an arrow.
    return {t for t in out if not (t != "curator" and name.startswith(t + "."))}


def _room(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in FLOOR:
        return parts[1]
    return "root" if len(parts) == 2 and not (PKG / parts[1]).is_dir() else parts[1]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {n: _imports(n, p, known) for n, p in mods.items()}


def test_imports_run_downward_and_make_no_circle():
    graph = _graph()
    wrong = []
    for a, targets in graph.items():
        for b in targets:
            ra, rb = _room(a), _room(b)
            if b == "curator" or ra == rb or (ra, rb) in SIDEWAYS:
                continue
            if FLOOR[rb] >= FLOOR[ra]:
                wrong.append(f"{a} ({ra}) imports {b} ({rb})")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(sorted(wrong))

    # Tarjan would do; a depth-first search that reports the first circle is enough here.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            circle = visit(n)
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_engines_and_teacher_import_no_stage():
    graph = _graph()
    for a, targets in graph.items():
        if _room(a) in ("engines", "teacher"):
            assert all(_room(b) in (_room(a), "root") for b in targets), (a, targets)
        if _room(a) == "store":
            assert not any(_room(b) in ("judge", "audit", "ship", "sample", "run", "cli") for b in targets), (a, targets)


def test_root_is_small_and_no_module_is_long():
    root_modules = sorted(p.name for p in PKG.glob("*.py"))
    assert len(root_modules) <= 10, root_modules
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long


def test_every_exception_derives_from_the_one_root():
    strays = []
    for m in pkgutil.walk_packages(curator.__path__, "curator."):
        if m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException) and not issubclass(cls, CuratorError):
                strays.append(f"{m.name}.{cls.__name__}")
    assert not strays, strays


def test_no_python_in_string_literals_runs_in_a_child():
    """The sandbox's launcher and harness are real files that the sandbox reads and runs."""
    from curator.engines.sandbox import runner

    scripts = PKG / "engines" / "sandbox" / "scripts"
    assert runner._LAUNCHER == (scripts / "launcher.py").read_text(encoding="utf-8")
    assert runner._HARNESS == (scripts / "harness.py").read_text(encoding="utf-8")
    for path in scripts.glob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_packaged_demo_is_the_repository_demo():
    """The wheel's demo runs the same prompt, chain, problems and teacher as manifests/demo.yaml."""
    demo = PKG / "teacher" / "demo"
    assert (demo / "prompt.yaml").read_bytes() == (ROOT / "prompts" / "r1-math.yaml").read_bytes()
    assert (demo / "chain.yaml").read_bytes() == (ROOT / "filters" / "r1-math.yaml").read_bytes()
    assert (demo / "problems.jsonl").read_bytes() == (ROOT / "data" / "demo-math.jsonl").read_bytes()
    ours, theirs = yaml.safe_load((demo / "manifest.yaml").read_text()), yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    for k in ("name", "teacher", "limits", "budget"):
        assert ours[k] == theirs[k], k
    s_ours, s_theirs = yaml.safe_load((demo / "server.yaml").read_text()), yaml.safe_load((ROOT / "manifests" / "demo-server.yaml").read_text())
    s_ours.pop("problems"), s_theirs.pop("problems")
    assert s_ours == s_theirs


@pytest.mark.timeout(600)
def test_demo_runs_from_an_installed_wheel(tmp_path):
    """`pip wheel .`, the wheel unpacked as an install would place it (a pure-Python wheel is a zip
    of site-packages), and `python -m curator demo` run from a folder with no checkout in sight."""
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("curator-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"curator/teacher/demo/manifest.yaml", "curator/teacher/demo/problems.jsonl",
                "curator/engines/sandbox/scripts/harness.py", "curator/data/prices.yaml"} <= names
        z.extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import curator; print(curator.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(site)), probe
    # The console script the wheel declares (what `.venv/bin/curator` runs) starts the app.
    (eps,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    script = next(line.split("=", 1)[1].strip() for line in (site / eps).read_text().splitlines() if line.startswith("curator ="))
    mod, attr = script.split(":")
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['curator', '--help']; from {mod} import {attr}; {attr}()"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "demo" in r.stdout and "view" in r.stdout, (script, r.stderr[-2000:])
    r = subprocess.run([sys.executable, "-m", "curator", "demo", "--no-progress"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = work / "out" / "demo"
    assert (out / "manifest.resolved.yaml").is_file() and any((out / "shards").glob("*.parquet"))
    assert "accepted:" in r.stdout and "format:truncated" in r.stdout, r.stdout
