"""Run untrusted Python (a model's solution plus its tests) in a throwaway, locked-down subprocess.

`run_python(code, tests)` starts a tiny launcher (`python -I -S -c LAUNCHER`, minimal environment,
own session) that, when it can, enters new network / mount / pid / ipc / uts namespaces, then forks
a supervisor (pid 1 of the new pid namespace) which sets up the filesystem and forks the judge and
the solution process:

* network: a new network namespace (no interfaces up, not even loopback); without one (not root
  and no user namespaces) an audit hook in the harness refuses socket connect/bind/send, DNS and
  spawning new programs (weaker: code that reaches libc through ctypes is blocked only by the hook
  on `ctypes.dlopen`);
* filesystem (mount namespace, as root): every mount remounted read-only and nosuid, fresh tmpfs on
  /tmp, /var/tmp, /dev/shm, /run/lock, an own size-limited tmpfs as cwd/HOME/TMPDIR, /root and /home
  masked by empty tmpfs (the interpreter's prefix bind-mounted back when it lives there), a fresh
  /proc that shows only the sandbox's processes;
* user: as root the solution runs under its own unused uid/gid (one per run, no groups,
  PR_SET_NO_NEW_PRIVS) and the judge under another, so the code cannot signal, ptrace or write
  anything of ours or the judge's, and RLIMIT_NPROC (not enforced for uid 0) counts only its processes;
* rlimits: CPU, address space, file size, open files, processes, no core dumps;
* time: wall-clock deadline in the supervisor and again in the parent; when the supervisor (pid 1)
  exits the kernel kills every process left in the namespace (fork bombs, setsid escapes);
* memory: besides RLIMIT_AS per process, the supervisor sums the resident memory of the whole
  namespace and kills it past `memory_mb * 2` (forked hogs);
* output: stdout/stderr beyond `max_output_mb` kills the run; only tails are kept;
* UNIX sockets: a seccomp filter (built with libseccomp through `pyseccomp`, loaded by the
  supervisor for itself and everything below it) makes socket(AF_UNIX) fail and disables io_uring,
  so no socket on the filesystem (/run, /tmp, the project...) can be reached; abstract sockets are
  per network namespace anyway. When the filter can't be built or loaded the run is refused with
  one line (status "error"); `seccomp="skip"` is the explicit opt-out.

Judging happens outside the solution's reach. The supervisor forks two processes: the judge
(scripts/harness.py, its own uid) and the solution process (scripts/solution.py, the run's uid).
The judge reads the tests from stdin, sends only the code to the solution process, and runs every
test unit in its own interpreter, reaching the solution's names through pipes: plain data comes
back as copies it compares itself, other objects as handles (see harness.py for the rules). Results
go to the parent on a socket pair only the judge holds (fd 3), one JSON line per event. The solution
process never sees the tests, the results pipe or the judge's memory (another uid; and the judge
is non-dumpable when a uid must be shared, without root), so frame walking, gc, patched builtins,
exit tricks, printed or written result lines, and objects whose __eq__ always says True gain
nothing. Without root (no own uids, no pid namespace) the solution runs as your uid and could reach
your other processes through /proc if ptrace is allowed between them: use root (a container) for
hostile code.
"""

from __future__ import annotations

import json
import marshal
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from curator.engines.sandbox.units import split_tests
from curator.errors import CuratorError

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


# Code that runs in the child processes lives in real files (scripts/, not a package: never
# imported), read once here and run under `python -I -S -c`, so the sandboxed user needs no read
# access to the package's folder.
_SCRIPTS = Path(__file__).resolve().parent / "scripts"
_LAUNCHER = (_SCRIPTS / "launcher.py").read_text(encoding="utf-8")
_HARNESS = (_SCRIPTS / "harness.py").read_text(encoding="utf-8")
_SOLUTION = (_SCRIPTS / "solution.py").read_text(encoding="utf-8")
_BOOT = (_SCRIPTS / "boot.py").read_text(encoding="utf-8")
_COMPILED: dict[str, bytes] = {}


def _program(name: str, source: str, python: str) -> bytes:
    """A script for scripts/boot.py: compiled once and marshal'd when the sandbox runs our
    interpreter (marshal is version-specific), else its source; length-prefixed."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        if name not in _COMPILED:
            _COMPILED[name] = b"M" + marshal.dumps(compile(source, name, "exec"))
        data = _COMPILED[name]
    else:
        data = b"S" + source.encode()
    return len(data).to_bytes(8, "big") + data


_BPF: bytes | None = None


def seccomp_filter() -> bytes:
    """The BPF program the sandbox loads: socket(AF_UNIX) fails with EACCES, io_uring is ENOSYS (its
    ops would bypass the socket rule), ptrace / process_vm_* / pidfd_getfd are EPERM (no reaching
    into another process), calls from a foreign ABI kill the process (libseccomp's default). Raises SeccompUnavailable when libseccomp (the pyseccomp package) can't build it."""
    global _BPF
    if _BPF is None:
        try:
            import errno
            import socket

            import pyseccomp as sc

            f = sc.SyscallFilter(sc.ALLOW)
            f.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.EQ, socket.AF_UNIX))
            f.add_rule(sc.ERRNO(errno.ENOSYS), "io_uring_setup")
            for call in ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"):
                f.add_rule(sc.ERRNO(errno.EPERM), call)
            with tempfile.TemporaryFile() as t:
                f.export_bpf(t)
                t.seek(0)
                _BPF = t.read()
        except Exception as e:  # ImportError, OSError (no libseccomp.so.2), RuntimeError
            raise SeccompUnavailable(f"{type(e).__name__}: {e}") from None
    return _BPF


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------

class SeccompUnavailable(CuratorError):
    """libseccomp can't build the sandbox's filter on this machine."""


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


def _site_paths(python: str) -> list[str]:
    """Our site-packages folders, for the judge (a fork of the `-S` launcher) when it runs our interpreter."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return []
    return [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


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
    seccomp: Literal["require", "skip"] = "require",
) -> SandboxResult:
    """Run `code`, then each test of `tests` (see `split_tests`), in a sandboxed subprocess.

    isolation="auto" uses namespaces when the kernel lets us; "basic" skips them (rlimits, own uid
    when root, and the audit hook only). uid: the uid to run as when we are root (default: a fresh
    unused one per run; the judge gets another). python: the interpreter (default: ours).
    seccomp="require" (default) refuses to run (status "error", one line) when the filter that
    denies UNIX sockets can't be built or loaded; "skip" is the explicit, weaker opt-out."""
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
    bpf = b""
    if seccomp == "require":
        try:
            bpf = seccomp_filter()
        except SeccompUnavailable as e:
            return SandboxResult(0, total, "error", error=f"sandbox: seccomp unavailable ({e}): cannot block UNIX sockets; "
                                 "install libseccomp2 and pyseccomp, or opt out with seccomp='skip'", duration_s=time.monotonic() - t0)
    is_root = os.geteuid() == 0
    run_uid = (uid if uid is not None else _alloc_uid()) if is_root else None
    judge_uid = _alloc_uid() if is_root else None
    workdir = tempfile.mkdtemp(prefix="curator-sbx-")
    # The results channel is a socket pair, not a pipe: a pipe can be reopened for writing through
    # /proc/<holder>/fd/N by anything that may ptrace the holder; a socket can't be opened at all.
    res_r, res_w = (s.detach() for s in socket.socketpair())
    os.set_inheritable(res_r, False)
    try:
        if run_uid is not None:
            # the solution owns the folder; the judge (its group) reads what it wrote there
            os.chown(workdir, run_uid, judge_uid if judge_uid is not None else run_uid)
            os.chmod(workdir, 0o770)
        else:
            os.chmod(workdir, 0o700)
        cpu = max(1, int(timeout_s + 0.999))
        file_b = max_file_mb * 1024 * 1024
        mem_b = memory_mb * 1024 * 1024
        cfg = {
            "marker": marker.decode(),
            "namespaces": isolation == "auto",
            "uid": judge_uid,
            "sol_uid": run_uid,
            "boot": _BOOT,
            "solution_program": _program("solution.py", _SOLUTION, python).hex(),
            "harness_code": _program("harness.py", _HARNESS, python)[8:].hex(),
            "seccomp": bpf.hex(),
            "site_paths": _site_paths(python),
            "results_fd": res_w,
            "workdir": workdir,
            "python": python,
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
        payload = json.dumps({"code": code, "units": units, "entry_point": entry_point}).encode()
        stdin_data = _program("launcher.py", _LAUNCHER, python) + len(cfg_b).to_bytes(8, "big") + cfg_b + payload
        out = _Stream(marker)
        err = _Stream(marker)
        res = _Stream(b"")
        killed_by_parent = None
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-c", _BOOT, "0"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=_minimal_env(workdir),
                start_new_session=True,
                close_fds=True,
                pass_fds=(res_w,),
            )
        except OSError as e:
            return SandboxResult(0, total, "error", error=f"cannot start the sandbox: {e}", duration_s=time.monotonic() - t0, uid=run_uid)
        finally:
            os.close(res_w)
            res_w = -1
        try:
            killed_by_parent = _pump(proc, stdin_data, out, err, res_r, res, deadline=t0 + timeout_s + 5.0, max_output=max_output_mb * 1024 * 1024)
        finally:
            _reap(proc)
        return _result(out, err, res, total, test_idx, killed_by_parent, time.monotonic() - t0, run_uid)
    finally:
        for fd in (res_r, res_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is None:
            _free_uid(run_uid)
        _free_uid(judge_uid)


def _pump(proc: subprocess.Popen, stdin_data: bytes, out: _Stream, err: _Stream, res_fd: int, res: _Stream, *, deadline: float, max_output: int) -> str | None:
    """Feed stdin, drain stdout/stderr/results until all close; returns why we killed it, if we did."""
    sel = selectors.DefaultSelector()
    assert proc.stdin and proc.stdout and proc.stderr
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    sel.register(res_fd, selectors.EVENT_READ, res)
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
                    data = os.read(key.fd, 65536)
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


def _result(out: _Stream, err: _Stream, res: _Stream, total: int, test_idx: list[int], killed_by_parent: str | None, duration: float, run_uid: int | None) -> SandboxResult:
    info: dict[str, Any] = {}
    started = done = gone = False
    killed = None
    exit_signal = sol_signal = None
    sol_err = None
    mem_seen = False
    unit_res: dict[int, dict[str, Any]] = {}
    # The supervisor's events come on stdout, tagged with the run's marker; the judge's come on
    # their own pipe (results), which only the judge holds: no line the solution prints counts.
    for ev in out.events:
        if "info" in ev and not info:
            info = ev["info"]
        elif "killed" in ev:
            killed = killed or ev["killed"]
        elif "exit" in ev:
            exit_signal = ev.get("signal")
        elif "sol_signal" in ev:
            sol_signal = ev["sol_signal"]
    for ev in res.events:
        if not isinstance(ev, dict):
            continue
        if "start" in ev:
            started = True
        elif "sol" in ev:
            if not ev["sol"]:
                sol_err = ev.get("err")
            mem_seen = mem_seen or bool(ev.get("mem"))
            gone = gone or bool(ev.get("gone"))
        elif "u" in ev:
            unit_res.setdefault(int(ev["u"]), ev)
            mem_seen = mem_seen or bool(ev.get("mem"))
        elif "gone" in ev:
            gone = True
        elif "done" in ev:
            done = True
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
    cpu = signal.SIGXCPU in (exit_signal, sol_signal)
    if killed == "timeout" or cpu:
        status: Status = "timeout"
        error = f"timed out ({'cpu' if cpu else 'wall clock'})"
    elif killed == "memory":
        status, error = "memory", "memory limit (all processes together)"
    elif killed == "output":
        status, error = "crashed", "output limit exceeded"
    elif gone and mem_seen:
        status, error = "memory", error or "MemoryError"
    elif gone:
        status = "crashed"
        error = f"the solution process died (signal {sol_signal})" if sol_signal else "the solution process exited before the tests finished"
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
