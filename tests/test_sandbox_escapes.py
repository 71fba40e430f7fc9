"""The sandbox against solutions that attack the judging itself, and against UNIX sockets outside its
folder. Real subprocesses; every trick below made wrong code pass (or reached the socket) before
the judge moved to its own process and the seccomp filter came in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from curator.engines.sandbox import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["assert add(1, 2) == 3", "assert add(2, 3) == 5", "assert add(10, 5) == 15"]

# Shared by the tricks: given something that looks like the judge's reporting function, report a
# pass for every test and stop; given a marker-looking bytes value, forge marker-tagged lines too.
FORGE = r'''
import os, sys, json, gc, types
def _lines(mark=b""):
    out = b""
    for i in range(100):
        out += b"\n" + mark + json.dumps({"u": i, "ok": 1, "err": None, "mem": False}).encode() + b"\n"
    return out + b"\n" + mark + b'{"done": 1}\n'
def _forge_with(emit):
    for i in range(100):
        emit({"u": i, "ok": 1, "err": None, "mem": False})
    emit({"done": 1})
    os._exit(0)
def _forge_locals(d):
    for k, v in list(d.items()):
        if callable(v) and getattr(v, "__name__", "") in ("emit", "send", "report"):
            try:
                _forge_with(v)
            except SystemExit:
                raise
            except BaseException:
                pass
def _markers():
    found = set()
    for o in gc.get_objects():
        if isinstance(o, types.FunctionType) and o.__closure__:
            for c in o.__closure__:
                try:
                    v = c.cell_contents
                except ValueError:
                    continue
                if isinstance(v, bytes) and v.startswith(b"@@curator"):
                    found.add(v)
                if isinstance(v, str) and v.startswith("@@curator"):
                    found.add(v.encode())
    return found
'''

TRICKS = {
    "frames": FORGE + "f = sys._getframe()\nwhile f is not None:\n    _forge_locals(f.f_locals)\n    f = f.f_back\n",
    "gc_functions": FORGE + "for o in gc.get_objects():\n    if isinstance(o, types.FunctionType) and o.__name__ in ('emit', 'send'):\n        try:\n            _forge_with(o)\n        except BaseException:\n            pass\n",
    "gc_referrers": FORGE + "for o in gc.get_referrers(sys.modules[__name__].__dict__):\n    if isinstance(o, types.FrameType):\n        f = o\n        while f is not None:\n            _forge_locals(f.f_locals)\n            f = f.f_back\n",
    "inspect_stack": FORGE + "import inspect\nfor fi in inspect.stack():\n    _forge_locals(fi.frame.f_locals)\n",
    "traceback_frames": FORGE + "try:\n    raise ValueError\nexcept ValueError as e:\n    f = e.__traceback__.tb_frame\n    while f is not None:\n        _forge_locals(f.f_locals)\n        f = f.f_back\n",
    "builtins_exec_noop": "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n",
    "sys_exit_in_call": "",  # add() itself raises SystemExit(0), see below
    "exit_patched": "import os, sys\nsys.exit = lambda *a: None\nos._exit = lambda *a: None\n",
    "marker_on_stdout": FORGE + "for m in _markers():\n    sys.stdout.buffer.write(_lines(m))\nsys.stdout.flush()\nos._exit(0)\n",
    "write_result_fds": FORGE + "ms = _markers() | {b''}\nfor fd in range(1, 64):\n    for m in ms:\n        try:\n            os.write(fd, _lines(m))\n        except OSError:\n            pass\nos._exit(0)\n",
    "printed_plain_results": "import os\nfor i in range(10):\n    print('{\"u\": %d, \"ok\": 1, \"err\": null, \"mem\": false}' % i)\nprint('{\"done\": 1}')\nos._exit(0)\n",
    "proc_fd_and_mem": FORGE + "for pid in os.listdir('/proc'):\n    if not pid.isdigit() or int(pid) == os.getpid():\n        continue\n    for fd in range(0, 16):\n        try:\n            with open('/proc/%s/fd/%d' % (pid, fd), 'wb', buffering=0) as f:\n                f.write(_lines())\n        except OSError:\n            pass\n    try:\n        open('/proc/%s/mem' % pid, 'rb+').close()\n        MEM = 'opened'\n    except OSError:\n        pass\n",
    "kill_the_judge": "import os, signal\nfor pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n    if pid != os.getpid():\n        try:\n            os.kill(pid, signal.SIGSTOP)\n        except OSError:\n            pass\n",
}
ADD = {
    "sys_exit_in_call": "def add(a, b):\n    raise SystemExit(0)\n",
}
WRONG = "\ndef add(a, b):\n    return 0\n"


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_a_solution_cannot_forge_passing_results(trick):
    code = TRICKS[trick] + ADD.get(trick, WRONG)
    r = run_python(code, TESTS, timeout_s=5)
    assert r.passed == 0 and r.status != "ok", (trick, r)


EQ_HACKS = {
    "always_equal": "class E:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n        return False\n    __hash__ = object.__hash__\ndef add(a, b):\n    return E()\n",
    "int_subclass_equal": "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n",
    "str_subclass_equal": "class S(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\ndef add(a, b):\n    return S('x')\n",
    "ordering_lies": "class L:\n    def __lt__(self, o):\n        return True\n    __gt__ = __le__ = __ge__ = __lt__\ndef add(a, b):\n    return L()\n",
    "arithmetic_lies": "class A:\n    def __sub__(self, o):\n        return 0\n    __rsub__ = __add__ = __radd__ = __sub__\ndef add(a, b):\n    return A()\n",
    "fake_numpy_array": "class F:\n    __module__ = 'numpy'\n    dtype = shape = None\n    def tolist(self):\n        return 0\n    def __eq__(self, o):\n        return True\n    def __sub__(self, o):\n        return 0\ndef add(a, b):\n    return F()\n",
}


@pytest.mark.parametrize("hack", sorted(EQ_HACKS))
def test_objects_that_claim_equality_are_not_equal(hack):
    tests = TESTS + ["assert add(1, 1) > 1 and add(1, 1) < 3", "assert abs(add(1, 2) - 3) < 1e-9", "assert abs(3 - add(1, 2)) < 1e-9"]
    r = run_python(EQ_HACKS[hack], tests, timeout_s=5)
    assert r.passed == 0 and r.status == "failed", (hack, r)


def test_a_solution_cannot_shadow_the_builtins_the_tests_use():
    code = "def add(a, b):\n    return 0\nabs = lambda x: 0\nall = lambda *a: True\nsorted = lambda *a, **k: [3]\nisinstance = lambda *a: True\n"
    tests = ["assert abs(add(1, 2) - 3) < 1e-9", "assert all(add(i, i) == 2 * i for i in range(1, 4))", "assert sorted([add(2, 1)]) == [3]",
             "assert isinstance(add(1, 1), str)"]
    r = run_python(code, tests)
    assert (r.passed, r.status) == (0, "failed"), r
    # the row's entry point may be named like a builtin: that name is the solution's
    r = run_python("def max(xs):\n    return -1\n", "def check(candidate):\n    assert candidate([1, 2]) == 2\n", entry_point="max")
    assert (r.passed, r.status) == (0, "failed"), r


def test_the_solution_sees_neither_tests_nor_expected_values():
    # The tests stay in the judge: the solution can only see the arguments it is called with.
    code = ("import gc\nKEY = 'SECRET' + '_EXPECTED'\n"
            "def add(a, b):\n    for o in gc.get_objects():\n        for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):\n"
            "            if isinstance(v, str) and KEY in v and v is not KEY:\n                return 1\n    return 0\n")
    r = run_python(code, "X = 'SECRET_EXPECTED'\nassert add(1, 2) == 0\n")
    assert (r.status, r.passed) == ("ok", 1), r


# --- correct solutions of many shapes still pass -------------------------------------------------------

HONEST = [
    # classes, LeetCode style, and objects the tests build from the solution's classes
    ("class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i\n",
     ["assert Solution().twoSum([2, 7, 11, 15], 9) == [0, 1]", "s = Solution()\nassert s.twoSum([3, 3], 6) == [0, 1]"]),
    ("class ListNode:\n    def __init__(self, val=0, next=None):\n        self.val, self.next = val, next\ndef reverse(h):\n    prev = None\n    while h:\n        h.next, prev, h = prev, h, h.next\n    return prev\n",
     ["assert isinstance(ListNode(1), ListNode) and not isinstance(5, ListNode)", "def to_list(n):\n    out = []\n    while n:\n        out.append(n.val)\n        n = n.next\n    return out", "assert to_list(reverse(ListNode(1, ListNode(2, ListNode(3))))) == [3, 2, 1]", "assert reverse(None) is None"]),
    # in-place changes to arguments
    ("def sort_in_place(xs):\n    xs.sort()\ndef fill(d):\n    d['k'] = 1\ndef rotate(m):\n    m[:] = [list(r) for r in zip(*m[::-1])]\n",
     ["a = [3, 1, 2]\nsort_in_place(a)\nassert a == [1, 2, 3]", "d = {}\nfill(d)\nassert d == {'k': 1}", "m = [[1, 2], [3, 4]]\nrotate(m)\nassert m == [[3, 1], [4, 2]]"]),
    # exceptions: builtin and the solution's own, caught by the tests
    ("class BadInput(ValueError):\n    pass\ndef check(x):\n    if x < 0:\n        raise BadInput('negative')\n    if x == 0:\n        raise ZeroDivisionError\n    return x\n",
     ["try:\n    check(-1)\n    assert False\nexcept BadInput:\n    pass", "try:\n    check(0)\n    assert False\nexcept ZeroDivisionError:\n    pass", "try:\n    check(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)"]),
    # generators, namedtuples, Counter, sets, tuples, big ints, floats, bytes, None
    ("from collections import Counter, namedtuple\nP = namedtuple('P', 'x y')\ndef gen(n):\n    yield from range(n)\ndef pt():\n    return P(1, 2)\ndef cnt(s):\n    return Counter(s)\ndef misc():\n    return ({1, 2}, (1, 'a'), 2 ** 20000, 0.1 + 0.2, b'\\x00', None)\n",
     ["assert list(gen(3)) == [0, 1, 2]", "assert pt() == (1, 2) and pt().y == 2", "assert cnt('aab') == {'a': 2, 'b': 1} and cnt('aab').most_common(1) == [('a', 2)]",
      "s, t, big, f, b, n = misc()\nassert s == {1, 2} and t == (1, 'a') and big == 2 ** 20000 and abs(f - 0.3) < 1e-9 and b == b'\\x00' and n is None"]),
    # callbacks from the tests, the solution's globals and state, printing, numpy
    ("import numpy as np\nCALLS = 0\nLIMIT = [1, 2, 3]\ndef apply(f, xs):\n    global CALLS\n    CALLS += 1\n    return [f(x) for x in xs]\ndef arr():\n    print('hello from arr')\n    return np.arange(3) * 2\n",
     ["assert apply(lambda x: x * 10, [1, 2]) == [10, 20]", "assert CALLS == 1 and LIMIT == [1, 2, 3] and len(LIMIT) == 3", "import numpy as np\nassert (arr() == np.array([0, 2, 4])).all() and arr().shape == (3,)", "assert sorted(['bb', 'a'], key=len) == ['a', 'bb']"]),
    # files the solution wrote, and the solution as a module
    ("open('out.txt', 'w').write('42')\ndef f():\n    return 1\n",
     ["assert open('out.txt').read() == '42'", "import solution\nassert solution.f() == 1", "from solution import f as g\nassert g() == 1"]),
    # HumanEval shape
    ("def rev(s):\n    return s[::-1]\n", "def check(candidate):\n    assert candidate('ab') == 'ba'\n    assert candidate('') == ''\n\ncheck(rev)\n"),
]


@pytest.mark.parametrize("i", range(len(HONEST)))
def test_correct_solutions_of_many_shapes_pass(i):
    code, tests = HONEST[i]
    r = run_python(code, tests, entry_point="rev" if isinstance(tests, str) else None, timeout_s=10)
    assert r.status == "ok" and r.passed == r.total > 0, r


# --- UNIX sockets outside the sandbox's folder ------------------------------------------------------


def _world_writable_dirs(tmp_path: Path) -> list[Path]:
    """Places a local service would put a socket: /run (a private copy when root), the system temp
    dir, and a folder inside the project."""
    out = []
    for base in ("/run", tempfile.gettempdir(), str(ROOT)):
        try:
            d = Path(tempfile.mkdtemp(prefix="sbx-sock-", dir=base))
        except OSError:
            continue
        os.chmod(d, 0o1777)
        out.append(d)
    return out


def test_no_unix_socket_outside_the_sandbox_is_reachable(tmp_path):
    dirs = _world_writable_dirs(tmp_path)
    assert dirs, "no writable place for a socket"
    listeners, accepted = [], []
    try:
        for d in dirs:
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(str(d / "s"))
            os.chmod(d / "s", 0o777)
            srv.listen(8)
            listeners.append(srv)

        def accept(srv):
            srv.settimeout(8)
            try:
                conn, _ = srv.accept()
                accepted.append(srv.getsockname())
                conn.close()
            except OSError:
                pass

        threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in listeners]
        for t in threads:
            t.start()
        paths = [str(d / "s") for d in dirs]
        code = f"""
import socket
RESULTS = {{}}
for p in {paths!r}:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(p)
        s.sendall(b'hello')
        RESULTS[p] = 'connected'
    except OSError as e:
        RESULTS[p] = 'blocked: ' + repr(e)
"""
        r = run_python(code, ["assert all(v.startswith('blocked') for v in RESULTS.values()), RESULTS"], timeout_s=5)
        for s in listeners:
            s.close()  # unblocks the accept threads
        for t in threads:
            t.join(10)
        assert not accepted, (accepted, r)
        assert (r.status, r.passed) == ("ok", 1), r
        assert "seccomp" in r.protections, r.protections
    finally:
        for s in listeners:
            s.close()
        for d in dirs:
            try:
                (d / "s").unlink()
            except OSError:
                pass
            os.rmdir(d)


def test_without_seccomp_the_sandbox_refuses_in_one_line():
    # A Python where pyseccomp can't be imported (as on a machine without libseccomp's bindings).
    prog = (
        "import sys, json; sys.modules['pyseccomp'] = None\n"
        "from curator.engines.sandbox import run_python\n"
        f"code, tests = 'def add(a, b):\\n    return a + b\\n', {TESTS!r}\n"
        "a = run_python(code, tests)\n"
        "b = run_python(code, tests, seccomp='skip')\n"
        "print(json.dumps([[r.status, r.passed, r.error, list(r.protections)] for r in (a, b)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", prog], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    (st, passed, err, _), (st2, passed2, _, prot2) = json.loads(out.stdout.splitlines()[-1])
    assert (st, passed) == ("error", 0) and "seccomp unavailable" in err and "\n" not in err, err
    # the weaker mode only by explicit opt-in
    assert (st2, passed2) == ("ok", 3) and "seccomp" not in prot2


def test_a_filter_the_kernel_refuses_stops_the_run_in_one_line(monkeypatch):
    from curator.engines.sandbox import runner

    monkeypatch.setattr(runner, "_BPF", b"\xff\xff\x00\x00\x00\x00\x00\x00")  # not a BPF program: EINVAL
    r = run_python("def add(a, b):\n    return a + b\n", TESTS)
    assert (r.status, r.passed) == ("error", 0), r
    assert "seccomp" in r.error and "refusing" in r.error and "\n" not in r.error, r.error
