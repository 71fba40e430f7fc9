"""The aiohttp application: an OpenAI-compatible `/v1/chat/completions` that answers from a script.

Hot path is plain Python + json (orjson when installed); no pydantic per request.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import time
import uuid
from hashlib import blake2b
from typing import Any

from aiohttp import web

from curator.teacher import answers as T
from . import hostile
from .batch import BatchAPI, add_routes as add_batch_routes
from .config import COT_PLACEMENTS, FAULTS, OUTCOMES, ServerConfig
from .jsonio import _JSON_ERRORS, dumps, loads
from .problems import DEFAULT_GOLD, ProblemIndex, wrong_rates
from .reqlog import ANSWER_ID, FAULT, RequestLog, logged

MOCK_KEYS = frozenset({"outcome", "cot_placement", "fault", "cot_words", "latency_ms"})
MAX_N = 128

_MALFORMED = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type="application/json", headers=headers)


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error shaped like OpenAI's: {"error": {"message", "type", "param", "code"}}."""
    return _json_response({"error": {"message": message, "type": type_, "param": param, "code": code}}, status, headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


class TeacherState:
    """Config compiled for the hot path, the problem index, and the counters behind `/stats`."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.models = frozenset(config.models)
        self.auth = f"Bearer {config.api_key}" if config.api_key is not None else None
        if config.problems:
            self.index = ProblemIndex.from_file(
                config.problems, config.id_column, config.problem_column, config.answer_column
            )
        else:
            self.index = ProblemIndex()
        self.wrong_rates: dict[str, float] = {}
        if config.problems and config.wrong_rate_column:
            self.wrong_rates = wrong_rates(config.problems, config.id_column, config.wrong_rate_column)
        self.mix = [(k, float(w)) for k, w in config.mix.items() if w > 0]
        self.mix_total = sum(w for _, w in self.mix)
        self.fault_rate = [(k, float(p)) for k, p in config.fault_rate.items() if p > 0]
        cum, self.fail_first = 0, []
        for k, n in config.fail_first.items():
            if n > 0:
                cum += n
                self.fail_first.append((k, cum))
        self.tpw = config.tokens_per_word
        self.id_prefix = uuid.uuid4().hex[:12]
        self.created_at = time.time()
        self.batch_api = None  # the batch protocol (batch.py), set by make_app
        self.reset()

    def reset(self) -> None:
        """Zero the counters; also forgets fail_first attempts and restarts collapse/fault sequences."""
        self.requests = 0  # chat completion requests received
        self.responses = 0  # successful chat completion responses
        self.completions = 0  # choices served (drives collapse_after)
        self.faults: dict[str, int] = {}
        self.errors: dict[str, int] = {}  # status -> count, for rejected requests (not injected faults)
        self.by_model: dict[str, int] = {}
        self.gold_hits = 0
        self.gold_misses = 0
        self.models_requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.attempts: dict[bytes, int] = {}
        self.fault_counter = 0
        self.seq = 0
        self.started = time.monotonic()
        self.burst_from: float | None = None  # monotonic start of the fault burst, once it began
        self.burst_started_at: float | None = None  # the same as epoch seconds, for /stats

    def stats(self) -> dict[str, Any]:
        c = self.config
        return {
            "requests": self.requests,
            "responses": self.responses,
            "completions": self.completions,
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "errors": dict(self.errors),
            "by_model": dict(self.by_model),
            "gold_hits": self.gold_hits,
            "gold_misses": self.gold_misses,
            "models_requests": self.models_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "problems": len(self.index),
            "collapsed": c.collapse_after is not None and self.completions >= c.collapse_after,
            "uptime_s": time.time() - self.created_at,
            "burst_started_at": self.burst_started_at,
        }

    # ------------------------------------------------------------------ helpers

    def _reject(self, status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
                param: str | None = None) -> web.Response:
        key = str(status)
        self.errors[key] = self.errors.get(key, 0) + 1
        return error_response(status, message, type_, code, param)

    def _burst_active(self) -> bool:
        b = self.config.fault_burst
        if b is None:
            return False
        now = time.monotonic()
        if self.burst_from is None:
            due = (b.start_s is not None and now - self.started >= b.start_s) or (
                b.after_requests is not None and self.requests >= b.after_requests)
            if not due:
                return False
            self.burst_from, self.burst_started_at = now, time.time()
        return now - self.burst_from < b.duration_s

    def _choose_fault(self, body: bytes) -> str | None:
        if self._burst_active():
            return self.config.fault_burst.fault
        if self.fail_first:
            h = blake2b(body, digest_size=16).digest()
            a = self.attempts.get(h, 0)
            self.attempts[h] = a + 1
            for kind, upto in self.fail_first:
                if a < upto:
                    return kind
        if self.fault_rate:
            c = self.fault_counter
            self.fault_counter += 1
            x = T.uniform(self.config.seed, "fault", c)
            acc = 0.0
            for kind, p in self.fault_rate:
                acc += p
                if x < acc:
                    return kind
        return None

    async def _fault(self, request: web.Request, kind: str) -> web.StreamResponse | None:
        """The injected fault's response; None for "timeout" (hang, then answer normally)."""
        self.faults[kind] = self.faults.get(kind, 0) + 1
        request[FAULT] = kind  # for the request log
        c = self.config
        echo = f" (request had Authorization: {request.headers.get('Authorization')})" if c.echo_auth else ""
        if kind == "429":
            ra = c.retry_after_s
            if self._burst_active() and c.fault_burst.retry_after_s is not None:
                ra = c.fault_burst.retry_after_s
            return error_response(
                429,
                "Rate limit reached for requests (injected by the curator test server).",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": f"{ra:g}", "x-ratelimit-reset-requests": f"{round(ra * 1000)}ms"},
            )
        if kind == "500":
            return error_response(500, "The server had an error while processing your request." + echo, "server_error")
        if kind == "503":
            return error_response(503, "The engine is currently overloaded, please try again later.",
                                  "server_error", "overloaded")
        if kind == "400":
            return error_response(400, "Invalid request (injected by the curator test server)." + echo)
        if kind == "401":
            return error_response(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if kind == "malformed":
            return web.Response(body=_MALFORMED, content_type="application/json")
        if kind == "empty":
            return web.Response(body=b"", content_type="application/json")
        if kind == "reset":
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    try:  # linger 0: close with RST, the client sees "connection reset by peer"
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    except OSError:
                        pass
                transport.abort()
            raise asyncio.CancelledError  # nothing more to send; aiohttp drops the request quietly
        if kind == "timeout":
            await asyncio.sleep(c.hang_s)
            return None
        raise AssertionError(kind)  # pragma: no cover

    # ------------------------------------------------------------------ handlers

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return self._reject(401, "Incorrect API key provided.", "invalid_api_key")
        body = await request.read()
        try:
            req = loads(body)
        except _JSON_ERRORS:
            return self._reject(400, "We could not parse the JSON body of your request. (The request body is not "
                                     "valid JSON.)")
        if not isinstance(req, dict):
            return self._reject(400, "The request body must be a JSON object.")
        c = self.config
        if any(request.headers.get(k) != v for k, v in c.require_headers.items()) or any(req.get(k) != v for k, v in c.require_body.items()):
            return self._reject(401, "Missing or wrong gateway credentials.", "invalid_api_key")
        model = req.get("model")
        if not isinstance(model, str) or model not in self.models:
            return self._reject(404, f"The model `{model}` does not exist", "model_not_found", param="model")
        self.by_model[model] = self.by_model.get(model, 0) + 1
        if req.get("stream"):
            return self._reject(400, "streaming not supported by the test server", param="stream")

        mock = req.get("mock")
        if mock is not None:
            problem = _check_mock(mock)
            if problem:
                return self._reject(400, problem, param="mock")
        else:
            mock = {}

        moved = hostile.redirect(self.config.hostile)
        if moved is not None:
            return moved
        fault = mock.get("fault") or self._choose_fault(body)
        if fault is not None:
            resp = await self._fault(request, fault)
            if resp is not None:
                return resp

        messages = req.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return self._reject(400, "`messages` must be a non-empty list of message objects.", param="messages")
        n = req.get("n")
        if n is None:
            n = 1
        elif type(n) is not int or n < 1 or n > MAX_N:
            return self._reject(400, f"`n` must be an integer between 1 and {MAX_N}.", param="n")
        if n > 1:
            if c.n_mode == "reject":
                return self._reject(400, "This server does not support n > 1.", "unsupported_parameter", param="n")
            if c.n_mode == "ignore":
                n = 1
        max_tokens = req.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = req.get("max_tokens")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            return self._reject(400, "`max_tokens` must be a positive integer.", param="max_tokens")

        latency = mock.get("latency_ms")
        if latency is None:
            latency = c.latency_ms + (random.random() * c.jitter_ms if c.jitter_ms else 0.0)
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)

        seed = req.get("seed")
        resp = self.build_completion(model, messages, n, max_tokens, mock, seed if type(seed) is int else None)
        request[ANSWER_ID] = resp["id"]  # for the request log
        out = dumps(hostile.apply(c.hostile, resp))
        return await hostile.send(c.hostile, request, out) or web.Response(body=out, content_type="application/json")

    def build_completion(self, model: str, messages: list[dict[str, Any]], n: int, max_tokens: int | None,
                         mock: dict[str, Any], request_seed: int | None = None) -> dict[str, Any]:
        c = self.config
        tpw = self.tpw
        user = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                user = _text_of(m.get("content"))
                break
        else:
            user = _text_of(messages[-1].get("content"))
        found = self.index.lookup(user) if self.index.exact else None
        if found is not None and found[1] is not None:
            gold = found[1]
            self.gold_hits += 1
        else:
            gold = DEFAULT_GOLD
            self.gold_misses += 1

        placement = mock.get("cot_placement") or c.cot_placement
        cot_words = mock.get("cot_words")
        if cot_words is None:
            cot_words = c.cot_words
        forced = mock.get("outcome")
        budget = int(max_tokens / tpw) if max_tokens is not None else None
        collapse_after = c.collapse_after
        # As a real server: another request seed, another draw (a prompt's later samples, asked
        # one request at a time with seed + index, are not copies of its first one).
        base_seed = c.seed if request_seed is None else f"{c.seed}+{request_seed}"
        wrong_rate = self.wrong_rates.get(found[0]) if found is not None and self.wrong_rates else None

        choices = []
        reasoning_total = 0
        completion_total = 0
        for i in range(n):
            u, rs = T.digest(base_seed, user, i)
            collapsed = collapse_after is not None and self.completions >= collapse_after
            self.completions += 1
            if forced:
                outcome = forced
            elif wrong_rate is not None:
                outcome = "wrong" if u < wrong_rate else "right"
            else:
                outcome = T.pick(u, self.mix, self.mix_total)
            rng = random.Random(rs)
            place = placement
            finish = "stop"
            closed = True
            if collapsed:
                wrong = T.wrong_answer(gold)
                cot = T.reasoning(rng, max(1, cot_words // 10), wrong)
                ans = T.completion(rng, wrong, boxed=False)
                if place in ("think", "think_unopened"):
                    place = "bare"
            elif outcome == "right":
                cot = T.reasoning(rng, cot_words, gold)
                ans = T.completion(rng, gold)
            elif outcome == "wrong":
                wrong = T.wrong_answer(gold)
                cot = T.reasoning(rng, cot_words, wrong)
                ans = T.completion(rng, wrong)
            elif outcome == "truncated":
                cot = T.truncated_reasoning(rng, cot_words)
                ans = ""
                finish = "length"
                closed = False
            elif outcome == "no_think":
                cot = ""
                ans = T.completion(rng, gold)
            elif outcome == "mixed_lang":
                cot = T.mixed_reasoning(rng, cot_words, gold)
                ans = T.completion(rng, gold)
            elif outcome == "duplicate":
                cot = T.CANNED_COT
                ans = T.CANNED_COMPLETION
            elif outcome == "degenerate":
                cot = T.degenerate_reasoning(rng, cot_words)
                ans = T.completion(rng, gold)
            else:  # no_boxed
                cot = T.reasoning(rng, cot_words, gold)
                ans = T.completion(rng, gold, boxed=False)
            if place == "none":  # the thought is never shown; a truncated answer rambles in content
                if not closed:
                    ans = cot
                cot = ""
            cw = T.word_count(cot)
            aw = T.word_count(ans)
            if budget is not None and cw + aw > budget:
                finish = "length"
                if cw >= budget:
                    cot = T.first_words(cot, budget)
                    cw = budget
                    ans, aw = "", 0
                    closed = False
                else:
                    ans = T.first_words(ans, budget - cw)
                    aw = budget - cw
            choices.append({
                "index": i,
                "message": T.render(place, cot, ans, closed),
                "logprobs": None,
                "finish_reason": finish,
            })
            if place != "bare":
                reasoning_total += math.ceil(cw * tpw)
            completion_total += math.ceil((cw + aw) * tpw)

        prompt_words = 0
        for m in messages:
            content = m.get("content")
            prompt_words += len((content if isinstance(content, str) else _text_of(content)).split())
        prompt_tokens = math.ceil(prompt_words * tpw) + 3 * len(messages)
        cached = int(prompt_tokens * c.cached_fraction)
        self.responses += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_total
        self.seq += 1
        out = {
            "id": f"chatcmpl-{self.id_prefix}{self.seq:08x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_curator_test",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_total,
                "total_tokens": prompt_tokens + completion_total,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning_total},
            },
        }
        if not c.send_usage:
            del out["usage"]
        return out

    async def list_models(self, request: web.Request) -> web.Response:
        self.models_requests += 1
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return self._reject(401, "Incorrect API key provided.", "invalid_api_key")
        if any(request.headers.get(k) != v for k, v in self.config.require_headers.items()):
            return self._reject(401, "Missing or wrong gateway credentials.", "invalid_api_key")
        created = int(self.created_at)
        data = [{"id": m, "object": "model", "created": created, "owned_by": "curator"} for m in self.config.models]
        return _json_response({"object": "list", "data": data})

    async def get_stats(self, request: web.Request) -> web.Response:
        out = self.stats()
        if self.batch_api is not None:
            out.update(self.batch_api.stats())
        return _json_response(out)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return _json_response(self.stats())


STATE_KEY = web.AppKey("curator_teacher_state", TeacherState)


def _check_mock(mock: Any) -> str | None:
    """Why a `mock` override is invalid, or None."""
    if not isinstance(mock, dict):
        return "`mock` must be an object."
    unknown = set(mock) - MOCK_KEYS
    if unknown:
        return f"unknown `mock` keys: {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(MOCK_KEYS))})"
    if mock.get("outcome") is not None and mock["outcome"] not in OUTCOMES:
        return f"mock.outcome must be one of {', '.join(OUTCOMES)}"
    if mock.get("cot_placement") is not None and mock["cot_placement"] not in COT_PLACEMENTS:
        return f"mock.cot_placement must be one of {', '.join(COT_PLACEMENTS)}"
    if mock.get("fault") is not None and mock["fault"] not in FAULTS:
        return f"mock.fault must be one of {', '.join(FAULTS)}"
    cw = mock.get("cot_words")
    if cw is not None and (type(cw) is not int or cw < 0):
        return "mock.cot_words must be a non-negative integer"
    lat = mock.get("latency_ms")
    if lat is not None and (type(lat) not in (int, float) or lat < 0):
        return "mock.latency_ms must be a non-negative number"
    return None


def _queued(handler, slots: int):
    """At most `slots` requests in service; the others wait their turn (FIFO), and a client that
    gives up while waiting leaves the queue (aiohttp cancels its handler), as with llama.cpp."""
    sem = asyncio.Semaphore(slots)

    async def queued(request: web.Request) -> web.StreamResponse:
        async with sem:
            return await handler(request)

    return queued


def make_app(config: ServerConfig | dict[str, Any] | None = None) -> web.Application:
    """The aiohttp application for `config` (a ServerConfig, a dict, or None for defaults)."""
    cfg = config if isinstance(config, ServerConfig) else ServerConfig.load(config)
    state = TeacherState(cfg)
    # Batch input files are uploaded whole (a provider accepts up to 200 MB).
    @web.middleware
    async def redirects(request: web.Request, handler: Any) -> web.StreamResponse:
        return hostile.path_redirect(state.config.hostile, request.path) or await handler(request)

    app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[redirects] if cfg.hostile.redirect_paths else [])
    app[STATE_KEY] = state
    chat = state.chat_completions
    if cfg.request_log:
        log = RequestLog(cfg.request_log)
        chat = logged(chat, log)

        async def close_log(app: web.Application) -> None:
            log.close()

        app.on_cleanup.append(close_log)
    if cfg.max_concurrent is not None:
        chat = _queued(chat, cfg.max_concurrent)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", state.list_models)
    app.router.add_get("/stats", state.get_stats)
    app.router.add_post("/stats/reset", state.reset_stats)
    state.batch_api = BatchAPI(state, cfg.batch)
    add_batch_routes(app, state.batch_api)
    return app
