"""The sandbox's judge: a script, never imported. Reads {code, units} from stdin, hands the code to the
solution process (scripts/solution.py, another process, its own uid when we are root) and runs every
test unit HERE, where the solution's code never runs. Results go out on fd 3, which the solution
process never holds; fd 4 / fd 5 are the request (marshal'd) / reply (JSON) pipes to it.

Names the tests use that the solution defines resolve to the solution's values: plain data (None,
bool, int, float, str, bytes, complex, list, tuple, dict, set, range, Decimal, Fraction, numpy
values) is copied here and compared here; any other object stays there and is reached through a
`Remote` handle (calls, attributes, items, iteration, len, bool, arithmetic are asked of it). A handle
compared with a value of the tests is never equal (an object whose __eq__ always says True gains
nothing), except a subclass of a plain type (namedtuple, Counter, IntEnum, numpy array), which
compares by the plain value it carries. Arguments the solution changes in place are copied back."""
import os as _os, sys as _sys, json as _json, marshal as _marshal, struct as _struct, builtins as _builtins


class SolutionGone(BaseException):
    """The solution process ended (exit, kill, crash): not an Exception, so tests can't swallow it."""


class RemoteExit(BaseException):
    """The solution raised SystemExit/KeyboardInterrupt inside a call: a failure, never a pass."""


def _main():
    res_fd, req_fd, rep_fd = 3, 4, 5
    if len(_sys.argv) > 1 and _sys.argv[1] == "shared":
        # Same uid as the solution process: make us non-dumpable, so it can neither ptrace us nor
        # open /proc/<us>/fd/3 or /proc/<us>/mem.
        import ctypes
        if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            _os.write(2, b"sandbox judge: cannot make itself non-dumpable\n")
            _os._exit(125)
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

    def emit(obj):
        for s in (_sys.stdout, _sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        data = _json.dumps(obj).encode() + b"\n"
        while data:
            data = data[_os.write(res_fd, data):]

    def fmt(e):
        try:
            msg = str(e)
        except BaseException:
            msg = "?"
        name = type(e).__name__
        if isinstance(e, SyntaxError) and e.lineno is not None:
            msg = "%s (line %s)" % (e.msg, e.lineno)
        return (name + (": " + msg if msg else ""))[:300]

    state = {"gone": False}

    def read_exact(n):
        buf = b""
        while len(buf) < n:
            try:
                b = _os.read(rep_fd, n - len(buf))
            except OSError:
                b = b""
            if not b:
                state["gone"] = True
                raise SolutionGone("the solution process ended")
            buf += b
        return buf

    def recv():
        # JSON from an untrusted writer (marshal is faster but not made for hostile input); dec()
        # below then accepts only plain data and handles.
        n = _struct.unpack(">I", read_exact(4))[0]
        return _json.loads(read_exact(n))

    def send(obj):
        if state["gone"]:
            raise SolutionGone("the solution process ended")
        data = _marshal.dumps(obj)
        data = _struct.pack(">I", len(data)) + data
        try:
            while data:
                data = data[_os.write(req_fd, data):]
        except OSError:
            state["gone"] = True
            raise SolutionGone("the solution process ended")

    # ---- values: ours -> wire (trusted), wire -> ours (untrusted: only plain data and handles) ----
    jtable = {}  # our objects the solution may call back (key functions...): by id, kept alive

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

    def enc(x, depth=0):
        t = type(x)
        if x is None or t is bool or t is str or t is float:
            return x
        if t is int:
            return x if x.bit_length() < 10000 else {"I": hex(x)}
        if depth > 200:
            raise ValueError("argument nested too deep for the sandbox")
        if isinstance(x, Remote):
            return {"H": object.__getattribute__(x, "_h")}
        if isinstance(x, bool):
            return bool(x)
        if isinstance(x, int):
            return enc(int(x), depth + 1)
        if isinstance(x, float):
            return float(x)
        if isinstance(x, str):
            return str(x)
        if t is list and flat(x):
            return x
        if isinstance(x, list):
            return [enc(i, depth + 1) for i in x]
        if isinstance(x, tuple):
            return {"T": [enc(i, depth + 1) for i in x]}
        if isinstance(x, dict):
            return {"D": [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in x.items()]}
        if isinstance(x, frozenset):
            return {"F": [enc(i, depth + 1) for i in x]}
        if isinstance(x, set):
            return {"S": [enc(i, depth + 1) for i in x]}
        if isinstance(x, bytes):
            return {"B": bytes(x).hex()}
        if isinstance(x, bytearray):
            return {"BA": bytes(x).hex()}
        if t is complex:
            return {"C": [x.real, x.imag]}
        if t is range:
            return {"R": [x.start, x.stop, x.step]}
        mod = getattr(t, "__module__", "")
        if mod == "decimal" and t.__name__ == "Decimal":
            return {"Dec": str(x)}
        if mod == "fractions" and t.__name__ == "Fraction":
            return {"Fr": [x.numerator, x.denominator]}
        jtable[id(x)] = x
        return {"J": id(x)}

    exc_classes = {}  # the solution's exception classes, as local classes tests can catch

    def exc_class(cid, name, base):
        cls = exc_classes.get(cid)
        if cls is None:
            b = getattr(_builtins, base, None)
            if not (isinstance(b, type) and issubclass(b, Exception)):
                b = Exception
            cls = exc_classes[cid] = type(str(name), (b,), {"__module__": "solution"})
        return cls

    def dec(v, depth=0):
        t = type(v)
        if v is None or t is bool or t is int or t is float or t is str:
            return v
        if depth > 400:
            raise ValueError("value from the solution nested too deep")
        if t is list:
            if flat(v):
                return v
            return [dec(i, depth + 1) for i in v]
        if t is not dict or len(v) < 1:
            raise ValueError("malformed value from the solution")
        if "H" in v:
            h = v["H"]
            if type(h) is not int:
                raise ValueError("malformed handle from the solution")
            if "x" in v:
                return exc_class(h, v.get("n", "Error"), (v.get("x") or ["Exception"])[0])
            plain = dec(v["p"], depth + 1) if "p" in v else None
            return Remote(h, str(v.get("n", "?")), plain, "p" in v)
        if "T" in v:
            return tuple(dec(i, depth + 1) for i in v["T"])
        if "D" in v:
            d = {}
            for k, x in v["D"]:
                d[dec(k, depth + 1)] = dec(x, depth + 1)
            return d
        if "S" in v:
            return {dec(i, depth + 1) for i in v["S"]}
        if "F" in v:
            return frozenset(dec(i, depth + 1) for i in v["F"])
        if "B" in v:
            return bytes.fromhex(v["B"])
        if "BA" in v:
            return bytearray.fromhex(v["BA"])
        if "C" in v:
            re_, im = v["C"]
            return complex(float(re_), float(im))
        if "R" in v:
            return range(*[int(i) for i in v["R"]])
        if "I" in v:
            return int(v["I"], 16)
        if "ND" in v:
            return ndarray(*v["ND"])
        if "Dec" in v:
            import decimal
            return decimal.Decimal(str(v["Dec"]))
        if "Fr" in v:
            import fractions
            n, d = v["Fr"]
            return fractions.Fraction(int(n), int(d))
        raise ValueError("malformed value from the solution")

    def ndarray(data, dtype, shape):
        """A numpy array the solution returned, rebuilt here from plain data (a list without numpy)."""
        plain = dec(data)
        try:
            import numpy
        except ImportError:
            return plain
        dt = numpy.dtype(str(dtype))
        if dt.kind not in "biufcU":
            raise ValueError("unexpected array dtype from the solution")
        return numpy.array(plain, dtype=dt).reshape([int(i) for i in shape])

    def raise_remote(m):
        name, base, msg = str(m.get("x", "Exception")), str(m.get("b", "Exception")), str(m.get("m", ""))
        if m.get("mem"):
            raise MemoryError(msg)
        if m.get("c") is not None:
            raise exc_class(m["c"], name, base)(msg)
        cls = getattr(_builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            raise cls(msg)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            raise RemoteExit("%s: %s" % (name, msg))
        raise Exception("%s: %s" % (name, msg))

    def rpc(msg):
        send(msg)
        while True:
            m = recv()
            if type(m) is not dict:
                raise ValueError("malformed message from the solution")
            if m.get("op") == "jcall":  # the solution calls one of our callables back
                try:
                    f = jtable[m["j"]]
                    r = {"r": enc(f(*[dec(a) for a in m["a"]], **{str(k): dec(x) for k, x in m["k"]}))}
                except (SolutionGone, RemoteExit):
                    raise
                except Exception as e:
                    r = {"x": type(e).__name__, "b": next((c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins"), "Exception"), "m": fmt(e)}
                send(r)
                continue
            if "x" in m:
                raise_remote(m)
            return m.get("r")

    def ask(op, h, **kw):
        kw["op"], kw["h"] = op, h
        return rpc(kw)

    def typed(v, t, what):
        if type(v) is not t:
            raise TypeError("%s returned %s, not %s" % (what, type(v).__name__, t.__name__))
        return v

    def restore(args, changed):
        for i, now in changed:
            orig, new = args[int(i)], dec(now)
            if type(orig) is list and type(new) is list:
                orig[:] = new
            elif type(orig) is bytearray and type(new) is bytearray:
                orig[:] = new
            elif type(orig) in (dict, set) and type(new) is type(orig):
                orig.clear()
                orig.update(new)

    import operator as _op

    def binop(name, reflected=False):
        # Between two objects of the solution: its operator. With a value of the tests: never asked
        # of the solution (`abs(result - expected) < eps` must not hand it `expected`); a subclass
        # of a plain type computes on its plain value here.
        local = getattr(_op, name)

        def f(self, other):
            if isinstance(other, Remote):
                return dec(ask("bin", self._h, name=name, o=enc(other), r=reflected))
            if self._hp:
                return local(other, self._p) if reflected else local(self._p, other)
            raise TypeError("unsupported operand for %s: an object of the solution (%s) with a value of the tests" % (name.strip("_"), self._n))
        return f

    def compare(name, local):
        def f(self, other):
            if isinstance(other, Remote):
                return dec(ask("bin", self._h, name=name, o=enc(other)))
            if self._hp:
                return local(self._p, other)
            return NotImplemented
        return f

    class Remote:
        """An object that lives in the solution's process."""
        __slots__ = ("_h", "_n", "_p", "_hp")

        def __init__(self, h, n, p, hp):
            for k, v in (("_h", h), ("_n", n), ("_p", p), ("_hp", hp)):
                object.__setattr__(self, k, v)

        def __getattr__(self, name):
            if name.startswith("__array") or name in ("__length_hint__", "__fspath__"):
                raise AttributeError(name)
            return dec(ask("getattr", self._h, name=name))

        def __setattr__(self, name, value):
            ask("setattr", self._h, name=name, v=enc(value))

        def __delattr__(self, name):
            ask("delattr", self._h, name=name)

        def __call__(self, *args, **kwargs):
            r = ask("call", self._h, a=[enc(a) for a in args], k=[[k, enc(v)] for k, v in kwargs.items()])
            if type(r) is not dict:
                raise ValueError("malformed reply from the solution")
            restore(args, r.get("ch") or [])
            return dec(r.get("v"))

        def __getitem__(self, k):
            return dec(ask("getitem", self._h, k=enc(k)))

        def __setitem__(self, k, v):
            ask("setitem", self._h, k=enc(k), v=enc(v))

        def __delitem__(self, k):
            ask("delitem", self._h, k=enc(k))

        def __iter__(self):
            if self._hp:
                return iter(self._p)
            return dec(ask("iter", self._h))

        def __next__(self):
            return dec(ask("next", self._h))

        def __len__(self):
            if self._hp:
                return len(self._p)
            return typed(ask("len", self._h), int, "len()")

        def __bool__(self):
            if self._hp:
                return bool(self._p)
            return typed(ask("bool", self._h), bool, "bool()")

        def __contains__(self, k):
            if self._hp:
                return k in self._p
            return typed(ask("contains", self._h, k=enc(k)), bool, "in")

        def __hash__(self):
            if self._hp:
                try:
                    return hash(self._p)
                except TypeError:
                    pass
            return typed(ask("hash", self._h), int, "hash()")

        def __repr__(self):
            try:
                return typed(ask("repr", self._h), str, "repr()")
            except Exception:
                return "<%s object in the solution>" % self._n

        def __str__(self):
            return typed(ask("str", self._h), str, "str()")

        def __index__(self):
            if self._hp and type(self._p) is int:
                return self._p
            return typed(dec(ask("un", self._h, name="index")), int, "__index__")

        def __int__(self):
            if self._hp and type(self._p) in (int, float, bool):
                return int(self._p)
            return self.__index__()

        def __float__(self):
            if self._hp and type(self._p) in (int, float, bool):
                return float(self._p)
            return typed(dec(ask("un", self._h, name="float")), float, "__float__")

        def __instancecheck__(self, x):  # isinstance(result, SolutionClass): the solution's answer
            return typed(ask("isinst", self._h, o=enc(x)), bool, "isinstance()")

        def __enter__(self):
            return dec(ask("enter", self._h))

        def __exit__(self, *exc):
            return dec(ask("exit", self._h))

        __eq__ = compare("eq", lambda a, b: a == b)
        __ne__ = compare("ne", lambda a, b: a != b)
        __lt__ = compare("lt", lambda a, b: a < b)
        __le__ = compare("le", lambda a, b: a <= b)
        __gt__ = compare("gt", lambda a, b: a > b)
        __ge__ = compare("ge", lambda a, b: a >= b)

    for n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift", "rshift", "and", "or", "xor"):
        wire = n + "_" if n in ("and", "or") else n
        setattr(Remote, "__%s__" % n, binop(wire))
        setattr(Remote, "__r%s__" % n, binop(wire, True))
    def unop(name):
        local = getattr(_op, name)

        def f(self):
            return local(self._p) if self._hp else dec(ask("un", self._h, name=name))
        return f

    for n in ("neg", "pos", "abs", "invert"):
        setattr(Remote, "__%s__" % n, unop(n))

    builtin_names = set(dir(_builtins))
    entry = p.get("entry_point")

    class Namespace(dict):
        """The tests' globals: a name they don't define is looked up in the solution (live). A
        builtin stays the builtin (a solution's own `abs` or `all` must not judge it), except the
        entry point the row names."""

        def __missing__(self, name):
            if name in builtin_names and name != entry:
                raise KeyError(name)
            return dec(rpc({"op": "global", "name": name}))

    ns = Namespace()
    emit({"start": 1})
    compiled = True
    try:
        rpc({"op": "run", "code": p["code"]})
        emit({"sol": 1})
    except SolutionGone:
        emit({"sol": 0, "err": "the solution process ended", "gone": 1})
    except BaseException as e:
        compiled = not isinstance(e, SyntaxError)
        emit({"sol": 0, "err": fmt(e), "mem": isinstance(e, MemoryError)})
    if not state["gone"]:
        try:  # `import solution` / `from solution import f` in the tests
            _sys.modules["solution"] = dec(rpc({"op": "module"}))
        except BaseException:
            pass
    for i, u in enumerate(p["units"]):
        if not compiled:
            emit({"u": i, "ok": 0, "err": "solution does not compile"})
            continue
        if state["gone"]:
            emit({"u": i, "ok": 0, "err": "the solution process ended"})
            continue
        ok, err, mem = 1, None, False
        try:
            exec(compile(u["src"], "test_%d" % i, "exec"), ns)
        except SystemExit as e:
            if e.code not in (None, 0):
                ok, err = 0, "SystemExit: %r" % (e.code,)
        except SolutionGone:
            ok, err = 0, "the solution process ended"
        except BaseException as e:
            ok, err, mem = 0, fmt(e), isinstance(e, MemoryError)
        if state["gone"]:
            ok, err = 0, err or "the solution process ended"
        emit({"u": i, "ok": ok, "err": err, "mem": mem})
    if state["gone"]:
        emit({"gone": 1})
    emit({"done": 1})
    _os._exit(0)  # skip atexit handlers and threads the tests may have left


_main()
