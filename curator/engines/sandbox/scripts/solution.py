"""The sandbox's solution process: a script, never imported. Runs as its own uid (when we are root);
never sees the tests nor the results channel. Serves the judge (scripts/harness.py) over two pipes
(fd 4: requests in, marshal'd; fd 5: replies out, JSON): runs the solution as module `solution`,
then answers lookups, calls and operations on its objects. Values go back as plain data (copied; the judge
compares them) or as handles to objects that stay here (see harness.py for what a handle can do)."""
import os as _os, sys as _sys, json as _json, marshal as _marshal, struct as _struct, operator as _op


def _main():
    rfd, wfd = 4, 5
    fd = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(fd, 0)
    _os.close(fd)
    if "hook" in _sys.argv[1:]:
        blocked = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                   "socket.gethostbyname", "socket.gethostbyaddr", "subprocess.Popen", "os.system", "os.exec",
                   "os.posix_spawn", "os.spawn", "ctypes.dlopen", "pty.spawn"}

        def hook(event, args):
            if event in blocked:
                raise PermissionError("blocked in sandbox: " + event)

        _sys.addaudithook(hook)

    objs = {}  # handle -> object; kept alive so a handle never names a recycled id
    jrefs = {}

    def read_exact(n):
        buf = b""
        while len(buf) < n:
            b = _os.read(rfd, n - len(buf))
            if not b:
                _os._exit(0)  # the judge is done (or gone)
            buf += b
        return buf

    def recv():
        return _marshal.loads(read_exact(_struct.unpack(">I", read_exact(4))[0]))

    def send(obj):
        for s in (_sys.stdout, _sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        data = _json.dumps(obj).encode()  # the judge parses us with a parser made for hostile input
        data = _struct.pack(">I", len(data)) + data
        while data:
            data = data[_os.write(wfd, data):]

    def handle(x, plain=None):
        h = id(x)
        objs[h] = x
        out = {"H": h, "n": type(x).__name__[:80]}
        if plain is not None:
            out["p"] = plain
        if isinstance(x, type) and issubclass(x, BaseException):
            out["x"] = [c.__name__ for c in x.__mro__ if c.__module__ == "builtins"][:1]
        return out

    scalars = {type(None), bool, int, float, str}

    def flat(x):
        """A list of plain scalars: JSON carries it as is (checked at C speed: long lists are common)."""
        ts = set(map(type, x))
        if not ts <= scalars:
            return False
        if int in ts:
            ints = [i for i in x if type(i) is int] if len(ts) > 1 else x
            return not ints or (max(ints).bit_length() < 10000 and min(ints).bit_length() < 10000)
        return True

    def enc(x, depth=0, path=None):
        t = type(x)
        if x is None or t is bool or t is str or t is float:
            return x
        if t is int:
            return x if x.bit_length() < 10000 else {"I": hex(x)}
        if depth > 200:
            return handle(x)
        path = path if path is not None else set()
        if t in (list, tuple, set, frozenset, dict):
            if id(x) in path:
                return handle(x)
            path.add(id(x))
            try:
                if t is list:
                    if flat(x):
                        return x
                    return [enc(i, depth + 1, path) for i in x]
                if t is tuple:
                    return {"T": [enc(i, depth + 1, path) for i in x]}
                if t is dict:
                    return {"D": [[enc(k, depth + 1, path), enc(v, depth + 1, path)] for k, v in x.items()]}
                return {"S" if t is set else "F": [enc(i, depth + 1, path) for i in x]}
            finally:
                path.discard(id(x))
        if t is bytes:
            return {"B": x.hex()}
        if t is bytearray:
            return {"BA": x.hex()}
        if t is complex:
            return {"C": [x.real, x.imag]}
        if t is range:
            return {"R": [x.start, x.stop, x.step]}
        mod = getattr(t, "__module__", "")
        if mod == "decimal" and t.__name__ == "Decimal":
            return {"Dec": str(x)}
        if mod == "fractions" and t.__name__ == "Fraction":
            return {"Fr": [x.numerator, x.denominator]}
        if mod == "numpy":
            if hasattr(x, "shape") and x.shape == () and hasattr(x, "item"):
                return enc(x.item(), depth + 1, path)  # a numpy scalar is its value
            dt = getattr(x, "dtype", None)
            if hasattr(x, "tolist") and getattr(dt, "kind", "O") in "biufcU" and isinstance(getattr(x, "shape", None), tuple):
                # an array of numbers or strings: the judge rebuilds it and computes on it itself
                return {"ND": [x.tolist(), str(dt.str), list(x.shape)]}
            if hasattr(x, "tolist"):
                return handle(x, enc(x.tolist(), depth + 1, path))
        # Subclasses of plain types keep their methods here but compare in the judge by their
        # plain value, read through the base type (never through the subclass's own methods).
        plain = None
        try:
            if isinstance(x, bool):
                plain = bool(int.__int__(x))
            elif isinstance(x, int):
                plain = int.__int__(x)
            elif isinstance(x, float):
                plain = float.__float__(x)
            elif isinstance(x, str):
                plain = str.__str__(x)
            elif isinstance(x, bytes):
                plain = {"B": bytes.__bytes__(x).hex()}
            elif isinstance(x, tuple):
                plain = {"T": [enc(i, depth + 1, path) for i in tuple.__iter__(x)]}
            elif isinstance(x, list):
                plain = [enc(i, depth + 1, path) for i in list.__iter__(x)]
            elif isinstance(x, dict):
                plain = {"D": [[enc(k, depth + 1, path), enc(v, depth + 1, path)] for k, v in dict.items(x)]}
            elif isinstance(x, (set, frozenset)):
                plain = {"S": [enc(i, depth + 1, path) for i in set(set.__iter__(x) if isinstance(x, set) else frozenset.__iter__(x))]}
        except Exception:
            plain = None
        return handle(x, plain)

    class JudgeCallable:
        """A callable the tests passed in (a key function, a callback): calling it asks the judge."""
        __slots__ = ("_j",)

        def __init__(self, j):
            self._j = j

        def __call__(self, *args, **kwargs):
            return rpc({"op": "jcall", "j": self._j, "a": [enc(a) for a in args], "k": [[k, enc(v)] for k, v in kwargs.items()]})

    def dec(v):
        if type(v) is list:
            if flat(v):
                return list(v)  # a copy: `was` below must keep what the judge sent
            return [dec(i) for i in v]
        if type(v) is not dict:
            return v
        if "H" in v:
            return objs[v["H"]]
        if "J" in v:
            j = jrefs.get(v["J"])
            if j is None:
                j = jrefs[v["J"]] = JudgeCallable(v["J"])
            return j
        if "T" in v:
            return tuple(dec(i) for i in v["T"])
        if "D" in v:
            return {dec(k): dec(x) for k, x in v["D"]}
        if "S" in v:
            return {dec(i) for i in v["S"]}
        if "F" in v:
            return frozenset(dec(i) for i in v["F"])
        if "B" in v:
            return bytes.fromhex(v["B"])
        if "BA" in v:
            return bytearray.fromhex(v["BA"])
        if "C" in v:
            return complex(*v["C"])
        if "R" in v:
            return range(*v["R"])
        if "I" in v:
            return int(v["I"], 16)
        if "Dec" in v:
            import decimal
            return decimal.Decimal(v["Dec"])
        if "Fr" in v:
            import fractions
            return fractions.Fraction(*v["Fr"])
        raise ValueError("unknown value tag")

    def fmt(e):
        try:
            msg = str(e)
        except BaseException:
            msg = "?"
        if isinstance(e, SyntaxError):
            msg = "%s (line %s)" % (e.msg, e.lineno)
        return msg[:2000]

    def exc_reply(e):
        if type(e).__module__ != "builtins":
            objs[id(type(e))] = type(e)
        base = next((c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins"), "Exception")
        return {"x": type(e).__name__[:80], "b": base, "m": fmt(e), "c": id(type(e)) if type(e).__module__ != "builtins" else None,
                "mem": isinstance(e, MemoryError)}

    mod = type(_sys)("solution")
    mod.__file__ = _os.path.join(_os.getcwd(), "solution.py")
    _sys.modules["solution"] = mod
    ns = mod.__dict__

    binops = {n: getattr(_op, n) for n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift",
                                            "rshift", "and_", "or_", "xor", "eq", "ne", "lt", "le", "gt", "ge")}
    unops = {n: getattr(_op, n) for n in ("neg", "pos", "abs", "invert", "index")}
    unops["float"] = float

    def serve(m):
        op = m["op"]
        if op == "run":
            code = compile(m["code"], "solution.py", "exec")
            exec(code, ns)
            return None
        if op == "global":
            name = m["name"]
            if name not in ns:
                raise NameError("name %r is not defined" % name)
            return enc(ns[name])
        if op == "module":
            return handle(mod)
        o = objs[m["h"]]
        if op == "call":
            args, kwargs = [dec(a) for a in m["a"]], {k: dec(v) for k, v in m["k"]}
            before = [(i, m["a"][i]) for i, a in enumerate(args) if type(a) in (list, dict, set, bytearray)]
            r = o(*args, **kwargs)
            # Arguments the call changed in place (sort this list, fill this dict) go back too.
            changed = []
            for i, was in before:
                now = enc(args[i])
                if now != was:
                    changed.append([i, now])
            return {"v": enc(r), "ch": changed}
        if op == "getattr":
            return enc(getattr(o, m["name"]))
        if op == "setattr":
            setattr(o, m["name"], dec(m["v"]))
            return None
        if op == "delattr":
            delattr(o, m["name"])
            return None
        if op == "getitem":
            return enc(o[dec(m["k"])])
        if op == "setitem":
            o[dec(m["k"])] = dec(m["v"])
            return None
        if op == "delitem":
            del o[dec(m["k"])]
            return None
        if op == "iter":
            return enc(iter(o))
        if op == "next":
            return enc(next(o))
        if op == "len":
            return len(o)
        if op == "bool":
            return bool(o)
        if op == "hash":
            return hash(o)
        if op == "repr":
            return repr(o)
        if op == "str":
            return str(o)
        if op == "contains":
            return dec(m["k"]) in o
        if op == "bin":
            other = dec(m["o"])
            f = binops[m["name"]]
            return enc(f(other, o) if m.get("r") else f(o, other))
        if op == "un":
            return enc(unops[m["name"]](o))
        if op == "isinst":
            return isinstance(dec(m["o"]), o)
        if op == "enter":
            return enc(o.__enter__())
        if op == "exit":
            return enc(o.__exit__(None, None, None))
        raise ValueError("unknown op " + op)

    def rpc(msg):
        """Ask the judge (a callback of the tests) and serve its requests until it answers."""
        send(msg)
        while True:
            m = recv()
            if "op" not in m:
                if "x" in m:
                    import builtins
                    cls = getattr(builtins, m.get("b", ""), None)
                    if not (isinstance(cls, type) and issubclass(cls, Exception)):
                        cls = RuntimeError
                    raise cls(m.get("m", ""))
                return dec(m.get("r"))
            answer(m)

    def answer(m):
        try:
            r = serve(m)
            reply = {"r": r}
        except BaseException as e:
            reply = exc_reply(e)
        try:
            send(reply)
        except (TypeError, ValueError) as e:  # a result JSON cannot carry
            send(exc_reply(e))

    while True:
        answer(recv())


_main()
