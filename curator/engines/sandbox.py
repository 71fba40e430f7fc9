"""Run untrusted Python (a model's solution plus its tests) in a throwaway, locked-down subprocess.

`run_python(code, tests)` starts a tiny launcher (`python -I -S -c LAUNCHER`, minimal environment,
own session) that, when it can, enters new network / mount / pid / ipc / uts namespaces, then forks
a supervisor (pid 1 of the new pid namespace) which sets up the filesystem and forks the harness:

* network: a new network namespace (no interfaces up, not even loopback); without one (not root
  and no user namespaces) an audit hook in the harness refuses socket connect/bind/send, DNS and
  spawning new programs (weaker: code that reaches libc through ctypes is blocked only by the hook
  on `ctypes.dlopen`);
* filesystem (mount namespace, as root): every mount remounted read-only and nosuid, fresh tmpfs on
  /tmp, /var/tmp, /dev/shm, /run/lock, an own size-limited tmpfs as cwd/HOME/TMPDIR, /root and /home
  masked by empty tmpfs (the interpreter's prefix bind-mounted back when it lives there), a fresh
  /proc that shows only the sandbox's processes;
* user: as root the harness runs under its own unused uid/gid (one per run, no groups,
  PR_SET_NO_NEW_PRIVS), so it cannot signal, ptrace or write anything of ours, and RLIMIT_NPROC
  (not enforced for uid 0) counts only this run's processes;
* rlimits: CPU, address space, file size, open files, processes, no core dumps;
* time: wall-clock deadline in the supervisor and again in the parent; when the supervisor (pid 1)
  exits the kernel kills every process left in the namespace (fork bombs, setsid escapes);
* memory: besides RLIMIT_AS per process, the supervisor sums the resident memory of the whole
  namespace and kills it past `memory_mb * 2` (forked hogs);
* output: stdout/stderr beyond `max_output_mb` kills the run; only tails are kept.

Tests are run one unit at a time inside the harness (per assert), each result line tagged with a
random marker that is handed to the harness over stdin (never in argv, env or a file), so a
solution that prints cannot forge a pass. (Code running in the same interpreter could still dig the
marker out of memory; the threat model is a model's sloppy or reward-hacking code, e.g. `exit(0)`
or printing fake results, not an attacker targeting this harness.)
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

Status = Literal["ok", "failed", "timeout", "memory", "crashed", "error"]

TAIL_BYTES = 4096
UID_BASE = 2_000_000  # per-run uids are drawn from [UID_BASE, UID_BASE + UID_SPAN); no passwd entries
UID_SPAN = 1_000_000
MASKED_DIRS = ("/root", "/home")
# Replaced by fresh tmpfs in the sandbox; an interpreter or venv living there (a CI checkout in
# /tmp) is bind-mounted back read-only, like one under a masked dir.
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run/shm")


@dataclass
class SandboxResult:
    passed: int
    total: int
    status: Status
    stdout_tail: str = ""
    stderr_tail: str = ""
    duration_s: float = 0.0
    error: str | None = None  # first error worth showing: syntax error, first failed assert, kill reason
    protections: tuple[str, ...] = ()  # what was active: netns, mountns, pidns, setuid, audit_hook, rlimits...
    uid: int | None = None  # the uid the code ran as (None: ours)
    tests: list[dict[str, Any]] = field(default_factory=list)  # per test unit: {"ok": bool, "err": str|None}

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def network_isolated(self) -> bool:
        return "netns" in self.protections

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "total": self.total,
            "status": self.status,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "protections": list(self.protections),
            "uid": self.uid,
        }


# --------------------------------------------------------------------------------------------------
# Splitting tests into units (one unit = one counted test)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Code that runs in the child processes (kept as source: they run under `python -I`)
# --------------------------------------------------------------------------------------------------

# The launcher: runs as the caller (root here), reads its config from stdin (length-prefixed),
# enters namespaces, forks the supervisor, which forks the harness with dropped privileges.
_LAUNCHER = r'''
import os, sys, json, signal, time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38


def readn(n):
    buf = b""
    while len(buf) < n:
        b = os.read(0, n - len(buf))
        if not b:
            raise SystemExit("launcher: short config")
        buf += b
    return buf


cfg = json.loads(readn(int.from_bytes(readn(8), "big")))
MARK = cfg["marker"].encode()


def report(obj):
    try:
        os.write(1, b"\n" + MARK + json.dumps(obj).encode() + b"\n")
    except OSError:
        pass


libc = None
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except Exception:
    libc = None

is_root = os.geteuid() == 0
prot = []
mode = "none"
if cfg["namespaces"] and libc is not None:
    if is_root and libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) == 0:
        mode = "full"
        prot += ["netns", "pidns", "mountns", "ipcns"]
    elif libc.unshare(CLONE_NEWNET) == 0:
        mode = "net"
        prot += ["netns"]
    elif libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        mode = "userns"
        prot += ["netns", "userns"]


def mount(src, tgt, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(tgt), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s on %s: %s" % (src, tgt, os.strerror(e)))


def unescape(s):
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def setup_fs():
    uid, gid = cfg["uid"], cfg["uid"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Keep handles on what we re-expose under masked dirs before masking them.
    expose = []
    for p in cfg["expose"]:
        try:
            expose.append((p, os.open(p, os.O_PATH | os.O_DIRECTORY)))
        except OSError:
            pass
    # Everything read-only and nosuid (per-mount flags of our private copy; the host is untouched).
    with open("/proc/self/mountinfo") as f:
        mounts = [l.split() for l in f]
    ro_root = False
    for parts in mounts:
        mp, opts = unescape(parts[4]), parts[5].split(",")
        if mp == "/proc" or mp.startswith("/proc/"):
            continue
        fl = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        fl |= (MS_NODEV if "nodev" in opts else 0) | (MS_NOEXEC if "noexec" in opts else 0)
        try:
            mount(None, mp, None, fl)
            ro_root = ro_root or mp == "/"
        except OSError:
            pass
    if ro_root:
        prot.append("ro_fs")
    for d in cfg["mask"]:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for p, fd in expose:
            if p == d or p.startswith(d.rstrip("/") + "/"):
                os.makedirs(p, exist_ok=True)
                mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
                mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        mount(None, d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        prot.append("mask:" + d)
    for d in cfg["tmp_dirs"]:
        if os.path.isdir(d) and not os.path.islink(d):
            try:
                mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % cfg["tmp_mb"])
            except OSError:
                continue
            for p, fd in expose:
                if p == d or p.startswith(d.rstrip("/") + "/"):
                    os.makedirs(p, exist_ok=True)
                    mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
                    mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
                    prot.append("expose:" + p)
    for _, fd in expose:
        os.close(fd)
    wd = cfg["workdir"]
    os.makedirs(wd, exist_ok=True)
    mount("tmpfs", wd, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=700,uid=%d,gid=%d" % (cfg["work_mb"], uid, gid))
    prot.append("tmpfs_home")
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        prot.append("proc")
        return True
    except OSError:
        return False


def exec_harness():
    try:
        import resource
        for name, soft, hard in cfg["rlimits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg["uid"] is not None and is_root:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        os.chdir(cfg["workdir"])
        os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-c", cfg["harness"], "hook" if "netns" not in prot else "nohook"], cfg["env"])
    except BaseException as e:
        try:
            hint = ""
            if isinstance(e, PermissionError) and cfg["uid"] is not None:
                hint = " (is the interpreter reachable by uid %d? pass python=...)" % cfg["uid"]
            os.write(2, ("sandbox launcher: cannot start the harness: %r%s\n" % (e, hint)).encode())
        finally:
            os._exit(125)


def kill_uid(uid):
    # Kill every process of the run's uid (outside a pid namespace): kill(-1) as that uid reaches
    # exactly its own processes; fork/kill are serialised by the kernel so a fork bomb can't outrun it.
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(1000):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
                except OSError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_descendants():
    # We are a child subreaper: orphans of the sandbox (setsid escapes included) become our
    # children; kill and reap them round by round until none is left.
    me = str(os.getpid())
    for _ in range(500):
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if f.read().rsplit(")", 1)[1].split()[1] == me:
                            kids.append(int(d))
                except (OSError, IndexError):
                    pass
        if not kids:
            return
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        for k in kids:
            try:
                os.waitpid(k, 0)
            except OSError:
                pass


def rss_total():
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if d.isdigit() and d != "1":
            try:
                with open("/proc/%s/statm" % d) as f:
                    total += int(f.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                pass
    return total


def supervise():
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if mode != "full":
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    own_proc = False
    if mode == "full":
        try:
            own_proc = setup_fs()
        except OSError as e:
            os.write(2, ("sandbox launcher: filesystem setup failed: %s\n" % (e,)).encode())
            os._exit(125)
    if cfg["uid"] is not None and is_root:
        prot.append("setuid:%d" % cfg["uid"])
    # Inherited by the harness and kept across execve: setuid binaries (su, sudo) gain nothing.
    if libc is not None and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        prot.append("no_new_privs")
    if "netns" not in prot:
        prot.append("audit_hook")
    prot.append("rlimits")
    if own_proc:
        prot.append("mem_monitor")
    report({"info": {"protections": prot, "uid": cfg["uid"] if is_root else None}})
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    hpid = os.fork()
    if hpid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        exec_harness()
    deadline = time.monotonic() + cfg["wall_s"]
    killed = None
    st = None
    while True:
        try:
            pid, s = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == hpid:
            st = s
            break
        if pid:
            continue  # reaped an orphan (we are init of the namespace)
        now = time.monotonic()
        if now >= deadline:
            killed = "timeout"
            break
        if own_proc and rss_total() > cfg["mem_total"]:
            killed = "memory"
            break
        signal.sigtimedwait({signal.SIGCHLD}, min(0.05, deadline - now))
    if killed:
        report({"killed": killed})
        try:
            os.kill(hpid, signal.SIGKILL)
        except OSError:
            pass
    elif st is not None:
        if os.WIFSIGNALED(st):
            report({"exit": None, "signal": os.WTERMSIG(st)})
        else:
            report({"exit": os.WEXITSTATUS(st), "signal": None})
    if mode != "full":
        if cfg["uid"] is not None and is_root:
            kill_uid(cfg["uid"])
        kill_descendants()
    os._exit(0)  # as pid 1 of the namespace: the kernel now kills whatever is left in it


child = os.fork()
if child == 0:
    try:
        supervise()
    finally:
        os._exit(125)


def on_term(signum, frame):
    try:
        os.kill(child, signal.SIGKILL)
    except OSError:
        pass


signal.signal(signal.SIGTERM, on_term)
_, st = os.waitpid(child, 0)
os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 125)
'''

# The harness: runs as the sandbox user. Reads {marker, code, units, hook} from stdin, then stdin is
# /dev/null; executes the solution as module `solution`, then every unit in its namespace.
_HARNESS = r'''
import os as _os, sys as _sys, json as _json


def _main():
    chunks = []
    while True:
        b = _os.read(0, 1 << 20)
        if not b:
            break
        chunks.append(b)
    p = _json.loads(b"".join(chunks))
    del chunks
    fd = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(fd, 0)
    _os.close(fd)
    mark = p.pop("marker").encode()
    me = _os.getpid()
    out = _os.dup(1)

    def guard():
        if _os.getpid() != me:  # a forked child of the solution must never report
            _os._exit(0)

    def emit(obj):
        guard()
        for s in (_sys.stdout, _sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        data = b"\n" + mark + _json.dumps(obj).encode() + b"\n"
        while data:
            data = data[_os.write(out, data):]

    def fmt(e):
        try:
            msg = str(e)
        except BaseException:
            msg = "?"
        name = type(e).__name__
        if isinstance(e, SyntaxError):
            msg = "%s (line %s)" % (e.msg, e.lineno)
        return (name + (": " + msg if msg else ""))[:300]

    if len(_sys.argv) > 1 and _sys.argv[1] == "hook":
        blocked = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                   "socket.gethostbyname", "socket.gethostbyaddr", "subprocess.Popen", "os.system", "os.exec",
                   "os.posix_spawn", "os.spawn", "ctypes.dlopen", "pty.spawn"}

        def hook(event, args):
            if event in blocked:
                raise PermissionError("blocked in sandbox: " + event)

        _sys.addaudithook(hook)

    import types
    mod = types.ModuleType("solution")
    mod.__file__ = _os.path.join(_os.getcwd(), "solution.py")
    _sys.modules["solution"] = mod
    ns = mod.__dict__
    emit({"start": 1})
    try:
        code = compile(p["code"], "solution.py", "exec")
    except BaseException as e:
        code = None
        emit({"sol": 0, "err": fmt(e), "mem": isinstance(e, MemoryError)})
    if code is not None:
        try:
            exec(code, ns)
            guard()
            emit({"sol": 1})
        except BaseException as e:
            guard()
            emit({"sol": 0, "err": fmt(e), "mem": isinstance(e, MemoryError)})
    for i, u in enumerate(p["units"]):
        if code is None:
            emit({"u": i, "ok": 0, "err": "solution does not compile"})
            continue
        ok, err, mem = 1, None, False
        try:
            exec(compile(u["src"], "test_%d" % i, "exec"), ns)
        except SystemExit as e:
            guard()
            if e.code not in (None, 0):
                ok, err = 0, "SystemExit: %r" % (e.code,)
        except BaseException as e:
            guard()
            ok, err, mem = 0, fmt(e), isinstance(e, MemoryError)
        guard()
        emit({"u": i, "ok": ok, "err": err, "mem": mem})
    emit({"done": 1})
    _os._exit(0)  # skip atexit handlers and non-daemon threads the solution may have left


_main()
'''


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _alloc_uid() -> int:
    with _uid_lock:
        while True:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _free_uid(uid: int | None) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _expose_paths(python: str) -> list[str]:
    """Interpreter directories that live under a masked or tmpfs dir and must stay visible."""
    cands = {sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        cands -= {sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix}
        cands.add(os.path.dirname(os.path.dirname(python)))
    cands = {os.path.realpath(c) for c in cands if c}
    under = [c for c in cands if any(c == m or c.startswith(m + "/") for m in MASKED_DIRS + TMP_DIRS)]
    return sorted(c for c in under if not any(o != c and c.startswith(o.rstrip("/") + "/") for o in under))


def _minimal_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


class _Stream:
    """Line splitter that pulls out marker lines and keeps only a tail of the rest."""

    def __init__(self, marker: bytes):
        self.marker = marker
        self.partial = b""
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.events: list[dict[str, Any]] = []
        self.nbytes = 0

    def _keep(self, b: bytes) -> None:
        self.tail.append(b)
        self.tail_len += len(b)
        while self.tail_len > TAIL_BYTES * 2 and len(self.tail) > 1:
            self.tail_len -= len(self.tail.popleft())

    def feed(self, data: bytes) -> None:
        self.nbytes += len(data)
        buf = self.partial + data
        lines = buf.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            i = line.find(self.marker)
            if i >= 0:
                if i:
                    self._keep(line[:i])
                try:
                    self.events.append(json.loads(line[i + len(self.marker):]))
                except ValueError:
                    pass
            else:
                self._keep(line + b"\n")
        if len(self.partial) > 65536:
            self._keep(self.partial)
            self.partial = b""

    def text(self) -> str:
        data = b"".join(self.tail) + (self.partial if self.marker not in self.partial else b"")
        return data[-TAIL_BYTES:].decode("utf-8", errors="replace").strip("\n")


def run_python(
    code: str,
    tests: str | Sequence[str] | None,
    *,
    timeout_s: float = 10,
    memory_mb: int = 512,
    max_processes: int = 16,
    max_file_mb: int = 10,
    entry_point: str | None = None,
    setup: Sequence[str] = (),
    max_output_mb: int = 16,
    isolation: Literal["auto", "basic"] = "auto",
    uid: int | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run `code`, then each test of `tests` (see `split_tests`), in a sandboxed subprocess.

    isolation="auto" uses namespaces when the kernel lets us; "basic" skips them (rlimits, own uid
    when root, and the audit hook only). uid: the uid to run as when we are root (default: a fresh
    unused one per run). python: the interpreter (default: ours)."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        raise RuntimeError("curator.engines.sandbox needs Linux")
    if uid == 0:
        raise ValueError("run_python: uid 0 would run the code as root")
    t0 = time.monotonic()
    units = split_tests(tests, entry_point, setup)
    test_idx = [i for i, u in enumerate(units) if u["test"]]
    total = len(test_idx)
    python = python or sys.executable
    marker = ("@@curator-sandbox-" + secrets.token_hex(16) + "@@").encode()
    is_root = os.geteuid() == 0
    run_uid = (uid if uid is not None else _alloc_uid()) if is_root else None
    workdir = tempfile.mkdtemp(prefix="curator-sbx-")
    try:
        if run_uid is not None:
            os.chown(workdir, run_uid, run_uid)
        os.chmod(workdir, 0o700)
        cpu = max(1, int(timeout_s + 0.999))
        file_b = max_file_mb * 1024 * 1024
        mem_b = memory_mb * 1024 * 1024
        cfg = {
            "marker": marker.decode(),
            "namespaces": isolation == "auto",
            "uid": run_uid,
            "workdir": workdir,
            "python": python,
            "harness": _HARNESS,
            "env": _minimal_env(workdir),
            "expose": _expose_paths(python),
            "tmp_dirs": list(TMP_DIRS),
            "mask": [m for m in MASKED_DIRS if not (workdir == m or workdir.startswith(m + "/"))],
            "tmp_mb": 16,
            "work_mb": max(16, 2 * max_file_mb),
            "wall_s": timeout_s + 0.5,
            "mem_total": 2 * mem_b,
            "rlimits": [
                ["RLIMIT_CPU", cpu, cpu + 1],
                ["RLIMIT_AS", mem_b, mem_b],
                ["RLIMIT_FSIZE", file_b, file_b],
                ["RLIMIT_NOFILE", 256, 256],
                ["RLIMIT_NPROC", max_processes, max_processes],
                ["RLIMIT_CORE", 0, 0],
            ],
        }
        cfg_b = json.dumps(cfg).encode()
        payload = json.dumps({"marker": marker.decode(), "code": code, "units": units}).encode()
        stdin_data = len(cfg_b).to_bytes(8, "big") + cfg_b + payload
        out = _Stream(marker)
        err = _Stream(marker)
        killed_by_parent = None
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-c", _LAUNCHER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=_minimal_env(workdir),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            return SandboxResult(0, total, "error", error=f"cannot start the sandbox: {e}", duration_s=time.monotonic() - t0, uid=run_uid)
        try:
            killed_by_parent = _pump(proc, stdin_data, out, err, deadline=t0 + timeout_s + 5.0, max_output=max_output_mb * 1024 * 1024)
        finally:
            _reap(proc)
        return _result(out, err, total, test_idx, killed_by_parent, time.monotonic() - t0, run_uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is None:
            _free_uid(run_uid)


def _pump(proc: subprocess.Popen, stdin_data: bytes, out: _Stream, err: _Stream, *, deadline: float, max_output: int) -> str | None:
    """Feed stdin, drain stdout/stderr until both close; returns why we killed it, if we did."""
    sel = selectors.DefaultSelector()
    assert proc.stdin and proc.stdout and proc.stderr
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    pos = 0
    killed = None
    exited_at = None
    try:
        while len(sel.get_map()) > 0:
            now = time.monotonic()
            if killed is None and now >= deadline:
                killed = "timeout"
                _kill(proc)
                deadline = now + 2.0
            elif killed is not None and now >= deadline:
                break  # something still holds the pipes; give up on them
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 2.0:
                break
            for key, _ in sel.select(timeout=max(0.01, min(0.25, deadline - now))):
                if key.fileobj is proc.stdin:
                    try:
                        pos += os.write(proc.stdin.fileno(), stdin_data[pos : pos + 65536])
                    except (BrokenPipeError, OSError):
                        pos = len(stdin_data)
                    if pos >= len(stdin_data):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                key.data.feed(data)
                if killed is None and out.nbytes + err.nbytes > max_output:
                    killed = "output"
                    _kill(proc)
                    deadline = time.monotonic() + 2.0
    finally:
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f and not f.closed:
                    f.close()
            except OSError:
                pass
    return killed


def _kill(proc: subprocess.Popen) -> None:
    # SIGTERM lets the launcher SIGKILL the supervisor (pid 1 of the sandbox: everything in it dies
    # with it) and reap it; the process-group SIGKILL below is the backstop.
    try:
        proc.send_signal(signal.SIGTERM)
    except OSError:
        pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=3.0)
    except subprocess.TimeoutExpired:
        _kill(proc)
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            pass


def _result(out: _Stream, err: _Stream, total: int, test_idx: list[int], killed_by_parent: str | None, duration: float, run_uid: int | None) -> SandboxResult:
    info: dict[str, Any] = {}
    started = done = False
    killed = None
    exit_signal = None
    sol_err = None
    mem_seen = False
    unit_res: dict[int, dict[str, Any]] = {}
    for ev in out.events:
        if "info" in ev and not info:
            info = ev["info"]
        elif "start" in ev:
            started = True
        elif "sol" in ev:
            if not ev["sol"]:
                sol_err = ev.get("err")
            mem_seen = mem_seen or bool(ev.get("mem"))
        elif "u" in ev:
            unit_res.setdefault(int(ev["u"]), ev)
            mem_seen = mem_seen or bool(ev.get("mem"))
        elif "done" in ev:
            done = True
        elif "killed" in ev:
            killed = killed or ev["killed"]
        elif "exit" in ev:
            exit_signal = ev.get("signal")
    tests = []
    for i in test_idx:
        r = unit_res.get(i)
        tests.append({"ok": bool(r and r.get("ok")), "err": None if r is None else r.get("err"), "ran": r is not None})
    passed = sum(t["ok"] for t in tests)
    first_fail = next((t["err"] for t in tests if t["ran"] and not t["ok"]), None)
    setup_err = next((r.get("err") for i, r in sorted(unit_res.items()) if i not in set(test_idx) and not r.get("ok")), None)
    stderr_tail = err.text()
    error = sol_err or setup_err or first_fail
    killed = killed or killed_by_parent
    if killed == "timeout" or exit_signal in (signal.SIGXCPU,):
        status: Status = "timeout"
        error = f"timed out ({'cpu' if exit_signal == signal.SIGXCPU else 'wall clock'})"
    elif killed == "memory":
        status, error = "memory", "memory limit (all processes together)"
    elif killed == "output":
        status, error = "crashed", "output limit exceeded"
    elif done:
        status = "ok" if passed == total else ("memory" if mem_seen else "failed")
    elif not started:
        status = "error"
        error = error or (stderr_tail.splitlines()[-1] if stderr_tail else "the sandbox did not start")
    elif mem_seen or "MemoryError" in stderr_tail:
        status, error = "memory", error or "MemoryError"
    else:
        status = "crashed"
        error = f"the test process died (signal {exit_signal})" if exit_signal else "the test process exited before finishing the tests"
    return SandboxResult(
        passed=passed,
        total=total,
        status=status,
        stdout_tail=out.text(),
        stderr_tail=stderr_tail,
        duration_s=duration,
        error=error,
        protections=tuple(info.get("protections", ())),
        uid=info.get("uid", run_uid),
        tests=tests,
    )


_PROBE: tuple[str, ...] | None = None


def protections() -> tuple[str, ...]:
    """What the sandbox can enforce on this machine (runs a trivial program once)."""
    global _PROBE
    if _PROBE is None:
        _PROBE = run_python("x = 1", ["assert x == 1"], timeout_s=5).protections
    return _PROBE
