"""curator.engines.sandbox: real subprocesses; hostile programs must leave the run and the machine unharmed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from curator.engines.sandbox import UID_BASE, UID_SPAN, run_python, split_tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
SYS_PY = "/usr/bin/python3"


def _procs_of(uid: int | None) -> list[psutil.Process]:
    if uid is None:
        return []
    out = []
    for p in psutil.process_iter(["uids"]):
        u = p.info["uids"]
        if u and uid in (u.real, u.effective):
            out.append(p)
    return out


def assert_clean(r, timeout: float = 2.0) -> None:
    """No process of the run's uid is left and we have no stray children."""
    deadline = time.monotonic() + timeout
    while True:
        left = _procs_of(r.uid)
        kids = [c for c in psutil.Process().children(recursive=True) if c.pid not in _KEEP]
        if not left and not kids:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: uid procs {left}, children {kids}")
        time.sleep(0.05)


_KEEP: set[int] = set()  # helper processes a test started on purpose


@pytest.fixture(autouse=True)
def _children_before():
    """Children other tests of the session left running (worker pools, servers) are not ours."""
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    _KEEP.update(before)
    yield
    _KEEP.difference_update(before)


@pytest.fixture
def victim():
    """A process of ours the sandboxed code will try to kill."""
    p = subprocess.Popen(["sleep", "60"])
    _KEEP.add(p.pid)
    yield p
    p.kill()
    p.wait()
    _KEEP.discard(p.pid)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of ours with a canary file; the sandbox must neither see nor touch it."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "canary.txt").write_text("alive")
    monkeypatch.setenv("HOME", str(h))
    return h


# --- correctness -----------------------------------------------------------------------------------


def test_correct_solution_passes():
    r = run_python("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"])
    assert (r.status, r.passed, r.total) == ("ok", 3, 3), r
    assert r.pass_rate == 1.0
    assert "rlimits" in r.protections
    if IS_ROOT:
        assert r.uid is not None and UID_BASE <= r.uid < UID_BASE + UID_SPAN
        assert {"netns", "pidns", "mountns", "ro_fs", "mask:/root"} <= set(r.protections), r.protections
    assert_clean(r)


def test_wrong_solution_counts_each_assert():
    r = run_python("def add(a, b):\n    return a * b\n", ["assert add(2, 2) == 4", "assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(3, 4) == 7"])
    assert (r.status, r.passed, r.total) == ("failed", 2, 4), r
    assert r.pass_rate == 0.5
    assert [t["ok"] for t in r.tests] == [True, False, True, False]
    assert r.error == "AssertionError"


def test_syntax_error():
    r = run_python("def add(a, b)\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(1, 1) == 2"])
    assert (r.status, r.passed, r.total) == ("failed", 0, 2), r
    assert r.error.startswith("SyntaxError")


def test_humaneval_check_and_stdout():
    tests = "def check(candidate):\n    assert candidate('ab') == 'ba'\n    assert candidate('') == ''\n    assert candidate('abc') == 'abc'\n\ncheck(rev)\n"
    r = run_python("print('hello from the solution')\ndef rev(s):\n    return s[::-1]\n", tests, entry_point="rev")
    assert (r.status, r.passed, r.total) == ("failed", 2, 3), r
    assert "hello from the solution" in r.stdout_tail


def test_runs_isolated_python_with_minimal_env(home, monkeypatch):
    monkeypatch.setenv("CURATOR_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    code = f"""
import os, sys
ENV = dict(os.environ)
try:
    PARENT_ENV = open('/proc/{os.getpid()}/environ', 'rb').read()
except OSError as e:
    PARENT_ENV = b''
"""
    tests = [
        "assert 'hunter2' not in repr(ENV)",
        "assert not any('PROXY' in k.upper() or 'KEY' in k.upper() for k in ENV)",
        "assert b'hunter2' not in PARENT_ENV",
        f"assert os.path.expanduser('~') != {str(home)!r} and os.getcwd() == os.path.expanduser('~')",
        "assert sys.flags.isolated == 1",
        "import sys; assert sys.stdin.read() == ''",
    ]
    r = run_python(code, tests)
    assert (r.status, r.passed) == ("ok", 6), r


def test_cannot_forge_results():
    forge = "print('\\n@@curator-sandbox-' + '0' * 32 + '@@{\"u\": 0, \"ok\": 1}')\nprint('{\"done\": 1}')\n"
    r = run_python(forge + "import os\nos._exit(0)\n", ["assert False", "assert False"])
    assert r.passed == 0 and r.status == "crashed", r
    r = run_python("import sys\nsys.exit(0)\n", ["assert f(1) == 1"])
    assert r.passed == 0 and r.status == "failed", r
    r = run_python("x = 1", ["import sys; sys.exit(0)", "raise SystemExit(1)"])
    assert (r.passed, r.status) == (1, "failed"), r


# --- hostile programs ------------------------------------------------------------------------------


def test_fork_bomb():
    t0 = time.monotonic()
    r = run_python("import os\nwhile True:\n    os.fork()\n", ["assert True"], timeout_s=3, max_processes=16)
    assert time.monotonic() - t0 < 6
    assert r.status in ("ok", "failed", "crashed", "timeout"), r
    assert_clean(r)
    # one that swallows the errors and keeps forking until the clock runs out
    r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", ["assert True"], timeout_s=1, max_processes=16)
    assert r.status == "timeout", r
    assert r.duration_s < 5
    assert_clean(r)


def test_setsid_escape_is_killed():
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n"
    r = run_python(code, ["assert True"])
    assert r.status == "ok", r
    assert_clean(r)


def test_infinite_loop_and_sleep_time_out():
    for code in ("while True:\n    pass\n", "import time\ntime.sleep(60)\n"):
        t0 = time.monotonic()
        r = run_python(code, ["assert True"], timeout_s=1)
        assert r.status == "timeout", r
        assert time.monotonic() - t0 < 4
        assert_clean(r)
    # a hang inside a test: earlier tests still count
    r = run_python("def f(x):\n    while x: pass\n    return 1\n", ["assert f(0) == 1", "assert f(1) == 1"], timeout_s=1)
    assert (r.status, r.passed, r.total) == ("timeout", 1, 2), r


def test_memory_hogs():
    r = run_python("x = 'a' * 10**10\n", ["assert len(x) > 0"], memory_mb=256)
    assert r.status == "memory", r
    r = run_python("def grow():\n    x = []\n    while True:\n        x.append(bytearray(10**6))\n", ["assert True", "assert grow()"], memory_mb=256)
    assert (r.status, r.passed, r.total) == ("memory", 1, 2), r
    assert_clean(r)


@pytest.mark.skipif(not IS_ROOT, reason="the namespace-wide memory monitor needs a pid namespace")
def test_forked_memory_hogs_are_killed_together():
    code = "import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        break\nx = bytearray(200 * 2**20)\ntime.sleep(10)\n"
    r = run_python(code, ["assert True"], memory_mb=256, timeout_s=5)
    assert r.status == "memory", r
    assert r.duration_s < 5
    assert_clean(r)


def test_rm_rf_home_and_project(home):
    canary = home / "canary.txt"
    project_files = sorted(p.name for p in ROOT.iterdir())
    code = f"""
import os, shutil, subprocess
open(os.path.expanduser('~/mine.txt'), 'w').write('x')
shutil.rmtree(os.path.expanduser('~'), ignore_errors=True)
subprocess.run('rm -rf ~ ~/ {home} {ROOT}/curator 2>/dev/null', shell=True)
for p in [{str(canary)!r}, {str(ROOT / 'pyproject.toml')!r}]:
    try:
        os.remove(p)
    except OSError:
        pass
try:
    open({str(ROOT / 'pwned.txt')!r}, 'w').write('pwned')
    WROTE = True
except OSError:
    WROTE = False
"""
    r = run_python(code, ["assert not WROTE"])
    assert r.status == "ok", r
    assert canary.read_text() == "alive"
    assert (ROOT / "pyproject.toml").exists() and (ROOT / "curator" / "engines" / "sandbox" / "runner.py").exists()
    assert not (ROOT / "pwned.txt").exists()
    assert sorted(p.name for p in ROOT.iterdir()) == project_files
    assert_clean(r)


def test_huge_file():
    code = """
import os
try:
    with open('big.bin', 'wb') as f:
        while True:
            f.write(b'x' * 2**20)
except OSError as e:
    ERR = str(e)
SIZE = os.path.getsize('big.bin')
"""
    r = run_python(code, ["assert SIZE <= 4 * 2**20", "assert 'too large' in ERR.lower()"], max_file_mb=4)
    assert (r.status, r.passed) == ("ok", 2), r


def test_cannot_kill_other_processes(victim):
    code = f"""
import os, signal
RESULTS = []
for pid in (os.getppid(), 1, {os.getpid()}, {victim.pid}):
    try:
        os.kill(pid, signal.SIGKILL)
        RESULTS.append('killed')
    except OSError as e:
        RESULTS.append(type(e).__name__)
"""
    r = run_python(code, ["assert 'killed' not in RESULTS"])
    assert (r.status, r.passed) == ("ok", 1), r
    assert victim.poll() is None
    # kill(-1): everything the sandbox user may signal (Linux spares the caller): nothing of ours
    r = run_python("import os, signal\nif os.fork() == 0:\n    os.kill(-1, signal.SIGKILL)\n    os._exit(0)\nos.wait()\n", ["assert True"])
    assert r.status == "crashed", r
    assert victim.poll() is None
    assert_clean(r)


def test_no_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    try:
        code = f"""
import socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
    s.sendall(b'hello')
    RESULT = 'connected'
except OSError as e:
    RESULT = 'blocked: ' + repr(e)
"""
        r = run_python(code, ["assert RESULT.startswith('blocked')"])
        assert (r.status, r.passed) == ("ok", 1), r
        if IS_ROOT:
            assert "netns" in r.protections
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


def test_output_flood_is_cut():
    r = run_python("while True:\n    print('x' * 10000)\n", ["assert True"], max_output_mb=2)
    assert r.status == "crashed" and "output" in r.error, r
    assert len(r.stdout_tail) <= 4096
    assert_clean(r)


def test_parallel_runs_do_not_interfere():
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("def f():\n    return 1\n", ["assert f() == 1"])] * 3 + [("import os\nwhile True:\n    os.fork()\n", ["assert True"])]
    with ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda j: run_python(*j, timeout_s=5), jobs))
    assert [r.status for r in rs[:3]] == ["ok"] * 3, rs
    assert len({r.uid for r in rs}) == len(rs) or not IS_ROOT
    for r in rs:
        assert_clean(r)


# --- fallback without namespaces (audit hook) --------------------------------------------------------


@pytest.mark.skipif(not (IS_ROOT and os.path.exists(SYS_PY)), reason="needs root and a system python reachable by an unprivileged uid")
def test_basic_isolation_fallback(victim, home):
    # Without a mount namespace our venv's interpreter (under /root) is not reachable by the
    # sandbox uid, so this path runs the system python.
    code = f"""
import os, socket
try:
    socket.create_connection(('127.0.0.1', 9), timeout=1)
    NET = 'connected'
except OSError as e:
    NET = repr(e)
try:
    os.kill({victim.pid}, 9)
    KILLED = True
except OSError:
    KILLED = False
if os.fork() == 0:
    os.setsid()
    import time
    time.sleep(60)
"""
    r = run_python(code, ["assert 'blocked in sandbox' in NET", "assert not KILLED"], isolation="basic", python=SYS_PY)
    assert (r.status, r.passed) == ("ok", 2), r
    assert "audit_hook" in r.protections and "netns" not in r.protections
    assert victim.poll() is None
    assert (home / "canary.txt").exists()
    assert_clean(r)
    r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", ["assert True"], isolation="basic", python=SYS_PY, timeout_s=1)
    assert r.status == "timeout", r
    assert_clean(r)


# --- splitting tests ---------------------------------------------------------------------------------


def test_split_tests():
    assert [u["test"] for u in split_tests(["assert f(1)", "assert f(2)"])] == [True, True]
    units = split_tests("import math\nassert f(1) == 1\nx = 2\nassert f(x) == 2\n")
    assert [u["test"] for u in units] == [False, True, False, True]
    he = "def check(candidate):\n    '''doc'''\n    assert candidate(1) == 2\n    for i in range(3):\n        assert candidate(i) == i + 1\n\ncheck(inc)\n"
    units = split_tests(he, "inc")
    assert [u["src"] for u in units if not u["test"]] == ["candidate = inc"]
    assert sum(u["test"] for u in units) == 2
    # a check() with control flow runs as one test
    units = split_tests("def check(c):\n    if c(0):\n        return\n    assert c(1)\n", "f")
    assert [u["src"] for u in units if u["test"]] == ["check(f)"]
    assert split_tests("import unittest\nclass T(unittest.TestCase):\n    pass\n") == [{"src": "import unittest\nclass T(unittest.TestCase):\n    pass\n", "test": True}]
    assert split_tests(None) == [] and split_tests([]) == []


# --- hostile samples in one batch of the code filter -------------------------------------------------


def test_hostile_samples_fail_alone_in_a_code_filter_batch(tmp_path):
    """Each hostile solution is contained and rejected; the honest samples of the same batch pass."""
    import json

    import polars as pl

    from curator.judge.base import FilterContext, get_filter

    outside = tmp_path / "escaped.txt"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    good = "def add(a, b):\n    return a + b"
    hostile = {
        "fork_bomb": "import os\ndef add(a, b):\n    while True:\n        os.fork()",
        "infinite_loop": "def add(a, b):\n    while True:\n        pass",
        "alloc_10gb": "def add(a, b):\n    x = bytearray(10 * 2**30)\n    return a + b",
        "write_outside": f"def add(a, b):\n    open({str(outside)!r}, 'w').write('escaped')\n    return a + b",
        "network": f"import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n    return a + b",
    }
    samples = [("good1", good)] + list(hostile.items()) + [("good2", good)]
    row = json.dumps({"entry_point": "add", "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]})
    df = pl.DataFrame({"key": [k for k, _ in samples], "completion": [f"```python\n{c}\n```" for _, c in samples],
                       "cot": [None] * len(samples), "row_json": [row] * len(samples), "prior_passed": [True] * len(samples)},
                      schema={"key": pl.String, "completion": pl.String, "cot": pl.String, "row_json": pl.String, "prior_passed": pl.Boolean})
    cls = get_filter("code")
    f = cls(cls.Params.model_validate({"workers": 3, "timeout_s": 2, "memory_mb": 256, "max_processes": 16}), FilterContext())
    t0 = time.monotonic()
    try:
        out = {r["key"]: r for r in f.apply(df).to_dicts()}
    finally:
        try:
            conn, _ = listener.accept()
            conn.close()
            connected = True
        except BlockingIOError:
            connected = False
        listener.close()
    assert time.monotonic() - t0 < 60
    assert out["good1"]["passed"] and out["good2"]["passed"], out
    for key in hostile:
        assert out[key]["passed"] is False and out[key]["reason"], (key, out[key])
    assert out["infinite_loop"]["reason"] == "timeout"
    assert out["alloc_10gb"]["reason"] == "memory"
    assert out["write_outside"]["reason"] == "tests_failed" and not outside.exists()
    assert out["network"]["reason"] == "tests_failed" and not connected
    assert out["fork_bomb"]["reason"] in ("timeout", "crashed", "tests_failed")
    assert not [c for c in psutil.Process().children(recursive=True) if c.pid not in _KEEP]
