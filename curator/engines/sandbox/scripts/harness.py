"""The sandbox harness: a script, never imported. Runs as the sandbox user; reads {marker, code,
units, hook} from stdin, then stdin is /dev/null; executes the solution as module `solution`, then
every unit in its namespace."""
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
