"""`curator view OUT`: the HTTP side. Static files from the package, JSON from `data.Holder`."""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from curator.audit.viewer.data import Holder, Query, ViewerError, check_output_dir
from curator.audit.report import clean
from curator.store.locks import holders, in_progress_note

STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/app.css": "app.css"}
# No inline script, no outside origin: even an HTML string that slipped into the page could not run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return resources.files("curator.audit.viewer").joinpath("static", name).read_bytes()


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    holder: Holder
    allowed_hosts: set[str] | None  # Host headers accepted (None: any, when bound to the network)
    server_version = "curator-view"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: one line per request would bury the URL and warnings

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, json.dumps(clean(obj), default=str).encode(), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        # A page on another site cannot read this one through DNS rebinding: its Host header names that site.
        if self.allowed_hosts is None:
            return True
        return (self.headers.get("Host") or "") in self.allowed_hosts

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if not self._host_ok():
            self._send(403, b"forbidden host", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if method == "GET" and url.path in STATIC:
                name = STATIC[url.path]
                self._send(200, _static(name), (mimetypes.guess_type(name)[0] or "application/octet-stream") + "; charset=utf-8")
            elif url.path.startswith("/api/"):
                self._api(method, url.path[5:], params)
            elif url.path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            else:
                self._send(404, b"not found", "text/plain; charset=utf-8")
        except ViewerError as e:
            self._json({"error": str(e)}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a page shows the error; the server goes on
            traceback.print_exc(file=sys.stderr)
            self._json({"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}, 500)

    def _api(self, method: str, name: str, p: dict[str, str]) -> None:
        h = self.holder
        if method == "POST" and name == "refresh":
            threading.Thread(target=h.refresh, daemon=True).start()
            self._json({"ok": True})
            return
        if name == "meta":
            snap = h.snap
            self._json({"ready": snap is not None, "refreshing": h.refreshing, "error": h.error,
                        **(snap.meta if snap else {"out_dir": str(h.out_dir.resolve())}),
                        "build_s": snap.build_s if snap else None, "report_state": h.report_state,
                        "search_index": h.index.status(snap.shard_files) if snap else None})
            return
        if name == "report":
            snap = h.snap
            stale = h.report_as_of is not None and snap is not None and h.report_as_of < snap.as_of
            if h.report_state == "idle" or (stale and h.report_state != "running"):
                h.start_report()  # normally started with each snapshot; here if that has not happened
            self._json({"state": h.report_state, "error": h.report_error, "as_of": h.report_as_of, "report": h.report})
            return
        snap = h.snap
        if snap is None:
            self._json({"error": h.error or "the data is still being read; try again in a moment"}, 503)
            return
        if name == "samples":
            self._json(snap.samples(Query.from_params(p)))
        elif name == "sample":
            s = snap.sample(p.get("key", ""))
            self._json(s if s is not None else {"error": f"no sample with key {p.get('key', '')[:80]!r} in this snapshot"}, 200 if s else 404)
        elif name == "prompt":
            s = snap.prompt(p.get("id", ""))
            self._json(s if s is not None else {"error": f"no prompt {p.get('id', '')[:80]!r} in this snapshot"}, 200 if s else 404)
        elif name == "clusters":
            try:
                off, lim = int(p.get("offset") or 0), min(200, int(p.get("limit") or 50))
            except ValueError:
                raise ViewerError("offset and limit are whole numbers") from None
            self._json(snap.clusters(max(0, off), max(1, lim)))
        elif name == "cluster":
            s = snap.cluster(p.get("rep", ""))
            self._json(s if s is not None else {"error": "no such cluster in this snapshot"}, 200 if s else 404)
        else:
            self._json({"error": f"unknown endpoint {name[:40]!r}"}, 404)


def make_server(out_dir: Path, host: str, port: int) -> tuple[ThreadingHTTPServer, Holder]:
    holder = Holder(out_dir)
    allowed = None
    if _loopback(host):
        allowed = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")} | {"127.0.0.1", "localhost"}
    handler = type("BoundHandler", (Handler,), {"holder": holder, "allowed_hosts": allowed})
    try:
        httpd = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ViewerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    httpd.daemon_threads = True
    if allowed is not None:
        real = httpd.server_address[1]
        allowed |= {f"{h}:{real}" for h in ("127.0.0.1", "localhost", "[::1]")}
    return httpd, holder


def serve_viewer(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8777) -> None:
    """Serve the viewer of an output directory until interrupted."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    httpd, holder = make_server(out_dir, host, port)
    if not _loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this machine on port {httpd.server_address[1]} can read "
              f"every prompt, trace and cost in {out_dir}", file=sys.stderr, flush=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    print(f"curator view: http://{shown}:{httpd.server_address[1]}/  ({out_dir.resolve()}; reading the data...)", flush=True)
    writers = holders(out_dir)
    if writers:  # the page's Refresh reads a new snapshot; /api/meta says `in_progress` too
        print(in_progress_note(out_dir, writers).replace("these figures are", "the page shows"), file=sys.stderr, flush=True)
    threading.Thread(target=holder.refresh, daemon=True).start()

    def stop(signum, frame):  # SIGTERM (and SIGINT where a shell left it ignored) ends it cleanly too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        holder.close()
