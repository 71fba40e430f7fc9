"""The sandbox launcher: a script, never imported. The parent runs it through scripts/boot.py
(`python -I -S -c BOOT 0`, program on stdin) as the caller (root here); it reads its config from
stdin (length-prefixed), enters namespaces, forks the supervisor, which forks the judge
(scripts/harness.py, in this interpreter) and the solution process (scripts/solution.py, a fresh
one), each with dropped privileges."""
import os, json, signal, time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
PR_SET_DUMPABLE, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 4, 22, 2


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
    uid, gid = cfg["sol_uid"], cfg["sol_uid"]
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
    # The solution owns it; the judge (its group) may read what the solution wrote there.
    gid = cfg["uid"] if cfg["uid"] is not None else gid
    mount("tmpfs", wd, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=770,uid=%d,gid=%d" % (cfg["work_mb"], uid, gid))
    prot.append("tmpfs_home")
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        prot.append("proc")
        return True
    except OSError:
        return False


def place(fds):
    """Put fds {target: source} at their targets and close every other fd above 2."""
    import fcntl
    tmp = {t: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 500) for t, src in fds.items()}
    lo = 3
    for k in sorted(tmp.values()):
        os.closerange(lo, k)
        lo = k + 1
    os.closerange(lo, 1 << 16)
    for t, fd in tmp.items():
        os.dup2(fd, t)
        os.close(fd)


def start_child(role, fds):
    # role "solution": a fresh interpreter (scripts/solution.py) under the run's uid, holding only
    # its two pipes. role "judge": this interpreter, forked (no second interpreter start), under
    # the judge's uid, runs scripts/harness.py; it holds the results fd.
    try:
        import resource
        if role == "solution":
            fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(fd, 0)
            os.close(fd)
            code_r, code_w = os.pipe()
            data = bytes.fromhex(cfg["solution_program"])
            while data:
                data = data[os.write(code_w, data[:16384]):]
            os.close(code_w)
            fds = dict(fds)
            fds[6] = code_r
        place(fds)
        for name, soft, hard in cfg["rlimits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        uid = cfg["uid"] if role == "judge" else cfg["sol_uid"]
        if uid is not None and is_root:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.chdir(cfg["workdir"])
        if role == "solution":
            # scripts/boot.py reads the server's code from fd 6 (filled here: it fits the pipe)
            argv = [cfg["python"], "-I", "-B", "-c", cfg["boot"], "6", "hook" if "netns" not in prot else "nohook"]
            os.execve(cfg["python"], argv, cfg["env"])
        import sys
        shared = cfg["uid"] is None or not is_root or cfg["uid"] == cfg["sol_uid"]
        sys.argv = ["-c", "shared" if shared else "own"]
        sys.path.extend(cfg["site_paths"])  # the tests may import numpy & co (no .pth files run)
        sys.dont_write_bytecode = True
        os.environ.clear()
        os.environ.update(cfg["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        data = bytes.fromhex(cfg["harness_code"])  # as for scripts/boot.py: marshal'd or source
        if data[:1] == b"M":
            import marshal
            code = marshal.loads(data[1:])
        else:
            code = compile(data[1:].decode(), "harness.py", "exec")
    except BaseException as e:
        try:
            hint = ""
            if isinstance(e, PermissionError) and cfg["uid"] is not None:
                hint = " (is the interpreter reachable by uid %d? pass python=...)" % cfg["sol_uid"]
            os.write(2, ("sandbox launcher: cannot start the %s: %r%s\n" % (role, e, hint)).encode())
        finally:
            os._exit(125)
    try:
        exec(code, {"__name__": "__main__"})
    finally:
        os._exit(0)


def load_seccomp():
    # The filter (built by the parent with libseccomp) denies socket(AF_UNIX) and io_uring: no
    # UNIX socket anywhere on the filesystem can be reached, whatever the mounts show.
    bpf = bytes.fromhex(cfg["seccomp"])
    buf = ctypes.create_string_buffer(bpf, len(bpf))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(bpf) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP): " + os.strerror(ctypes.get_errno()))


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
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
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
        prot.append("setuid:%d" % cfg["sol_uid"])
    # Inherited by the harness and kept across execve: setuid binaries (su, sudo) gain nothing.
    if libc is not None and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        prot.append("no_new_privs")
    if cfg["seccomp"]:
        try:
            if libc is None:
                raise OSError("ctypes is unavailable")
            load_seccomp()
        except OSError as e:
            os.write(2, ("sandbox: cannot install the seccomp filter (%s); refusing to run without it\n" % (e,)).encode())
            os._exit(125)
        prot.append("seccomp")
    if "netns" not in prot:
        prot.append("audit_hook")
    prot.append("rlimits")
    if own_proc:
        prot.append("mem_monitor")
    if cfg["uid"] is not None and is_root and cfg["sol_uid"] != cfg["uid"]:
        prot.append("judge_uid:%d" % cfg["uid"])
    prot.append("judge_process")
    report({"info": {"protections": prot, "uid": cfg["sol_uid"] if is_root else None}})
    res_fd = cfg["results_fd"]
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    hpid = os.fork()
    if hpid == 0:
        start_child("judge", {3: res_fd, 4: req_w, 5: rep_r})
    spid = os.fork()
    if spid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        start_child("solution", {4: req_r, 5: rep_w})
    for fd in (res_fd, req_r, req_w, rep_r, rep_w):
        os.close(fd)
    deadline = time.monotonic() + cfg["wall_s"]
    killed = None
    st = None
    sst = None
    while True:
        try:
            pid, s = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == hpid:
            st = s
            break
        if pid == spid:
            sst = s
        if pid:
            continue  # the solution, or an orphan (we are init of the namespace)
        now = time.monotonic()
        if now >= deadline:
            killed = "timeout"
            break
        if own_proc and rss_total() > cfg["mem_total"]:
            killed = "memory"
            break
        signal.sigtimedwait({signal.SIGCHLD}, min(0.05, deadline - now))
    if sst is None and not killed:
        # The judge is done: the solution sees its pipe close and exits; if it died first, say how.
        end = time.monotonic() + 0.5
        while sst is None and time.monotonic() < end:
            try:
                pid, s = os.waitpid(spid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                sst = s
            else:
                signal.sigtimedwait({signal.SIGCHLD}, 0.02)
    if sst is not None and os.WIFSIGNALED(sst):
        report({"sol_signal": os.WTERMSIG(sst)})
    if sst is None:
        try:
            os.kill(spid, signal.SIGKILL)
        except OSError:
            pass
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
            if cfg["sol_uid"] != cfg["uid"]:
                kill_uid(cfg["sol_uid"])
        kill_descendants()
    os._exit(0)  # as pid 1 of the namespace: the kernel now kills whatever is left in it


child = os.fork()
if child == 0:
    try:
        supervise()
    finally:
        os._exit(125)
os.close(cfg["results_fd"])  # only the judge writes results


def on_term(signum, frame):
    try:
        os.kill(child, signal.SIGKILL)
    except OSError:
        pass


signal.signal(signal.SIGTERM, on_term)
_, st = os.waitpid(child, 0)
os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 125)
