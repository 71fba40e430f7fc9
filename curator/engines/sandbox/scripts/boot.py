"""Bootstrap of the sandbox's child interpreters: a script, never imported, run as
`python -I -c BOOT FD ...`. Reads a length-prefixed program from FD (the launcher from stdin, the
solution server from fd 6): b"M" + code marshal'd by the parent when it runs the same interpreter
(saves compiling the script in every run), or b"S" + source; then runs it as __main__."""
import os as _os, sys as _sys, marshal as _marshal


def _boot():
    fd = int(_sys.argv[1])

    def readn(n):
        buf = b""
        while len(buf) < n:
            b = _os.read(fd, n - len(buf))
            if not b:
                raise SystemExit("sandbox boot: short program")
            buf += b
        return buf

    data = readn(int.from_bytes(readn(8), "big"))
    if fd != 0:
        _os.close(fd)
    if data[:1] == b"M":
        return _marshal.loads(data[1:])
    return compile(data[1:].decode("utf-8"), "<sandbox>", "exec")


exec(_boot(), {"__name__": "__main__"})
