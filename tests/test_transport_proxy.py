"""The aiohttp transport (`teacher.http: aiohttp`, the default) honours HTTP(S)_PROXY / NO_PROXY
as the openai client does. It reads them once, when the transport is made, instead of through
aiohttp's trust_env (two worker-thread hops per request: bench/sampling.py)."""

import asyncio
import socket

import openai
import pytest

from curator.sample.transport import AiohttpTransport

BODY = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "max_tokens": 64}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def post(url: str) -> bytes:
    t = AiohttpTransport(url, "EMPTY", 10, 4)
    try:
        content, _ = await t.post(BODY)
        return content
    finally:
        await t.close()


def test_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(server, monkeypatch):
    url = server()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert b'"choices"' in asyncio.run(post(url))

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # nothing listens: only the proxy fails
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(post(url))

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert b'"choices"' in asyncio.run(post(url))
