"""Ways to run the teacher server: blocking (`serve`), in a thread (`running_server`), in a subprocess
(`ServerProcess`, so a benchmark's client and server do not share a GIL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from aiohttp import web

from .app import make_app
from .config import ServerConfig

ConfigLike = ServerConfig | dict[str, Any] | str | Path | None

_SHUTDOWN_TIMEOUT = 0.25  # in-flight handlers (e.g. a hanging "timeout" fault) are cancelled after this


async def _start(config: ServerConfig, host: str, port: int) -> tuple[web.AppRunner, str]:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/v1"


def _install_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: ConfigLike = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server until SIGINT/SIGTERM. Prints `... http://HOST:PORT/v1` once it listens."""
    cfg = ServerConfig.load(config)
    _install_uvloop()

    async def main() -> None:
        runner, url = await _start(cfg, host, port)
        print(f"curator teacher server listening on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@contextlib.contextmanager
def running_server(config: ConfigLike = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start the server in a background thread with its own event loop; yield `http://HOST:PORT/v1`."""
    cfg = ServerConfig.load(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner, url = loop.run_until_complete(_start(cfg, host, port))
        except BaseException as e:  # report to the caller
            box["error"] = e
            ready.set()
            loop.close()
            return
        box["url"] = url
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(runner.cleanup())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=run, name="curator-teacher-server", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        thread.join()
        raise box["error"]
    try:
        yield box["url"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


_URL_RE = re.compile(r"(http://\S+/v1)")


class ServerProcess:
    """The server in a separate Python process (`python -m curator serve --config-json ...`).

    Starts on construction, waits until `/v1/models` answers; `.base_url`, `.stop()`; also a
    context manager.
    """

    def __init__(self, config: ConfigLike = None, host: str = "127.0.0.1", port: int = 0,
                 startup_timeout: float = 30.0, env: dict[str, str] | None = None):
        self.config = ServerConfig.load(config)
        self.host = host
        self.port = port
        self.base_url: str | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []  # everything the server printed on stdout
        root = str(Path(__file__).resolve().parents[2])
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
        full_env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "curator", "serve", "--config-json", self.config.model_dump_json(),
               "--host", host, "--port", str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     env=full_env)
        self._reader = threading.Thread(target=self._drain, name="curator-server-stdout", daemon=True)
        self._reader.start()
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.base_url is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"teacher server did not start within {timeout} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(f"teacher server exited with code {code} before listening: {''.join(self.output)}")
            m = _URL_RE.search(line)
            if m:
                self.base_url = m.group(1)
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        headers.update(self.config.require_headers)
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(self.base_url + "/models", headers=headers),
                                            timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise TimeoutError(f"teacher server at {self.base_url} does not answer") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        import json

        assert self.base_url is not None
        root = self.base_url[: -len("/v1")]
        with urllib.request.urlopen(root + "/stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self._reader.join(timeout=1)
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
