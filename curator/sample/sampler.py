"""The async sampling loop: AsyncOpenAI, bounded in-flight requests, RPM/TPM limits, retries.

Every answer goes to the store (journal + fsync) before it counts as done; filters judge only
stored answers. Request keys are deterministic, so resume sends only keys with no answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from curator.config import Manifest, Price
from curator.errors import CuratorError
from curator.sample.cost import request_cost
from curator.sample.fleet import Fleet
from curator.sample.parse import Usage, completion_problem, split_reasoning, trusted_usage
from curator.redact import redact, resolve_env
from curator.sample.ratelimit import RateLimiter, retry_after
from curator.sample.sources import Problem
from curator.sample.tokencount import CharEstimate, TokenCounter, prompt_tokens
from curator.sample.transport import RedirectRefused, make_transport
from curator.sample.window import AdaptiveWindow

# A request that timed out in the teacher's queue behind our own requests is sent again without
# using one of its retries, at most this many times (the window halves each time it happens).
_MAX_REQUEUES = 8
_MAX_NOTICES = 5  # shown live
_KEPT_NOTICES = 50  # kept in the receipt

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads


class FatalRequestError(CuratorError):
    """The server refused the request for a reason retrying cannot fix (bad key, model, params)."""


class MalformedResponse(CuratorError):
    """A 200 whose body is not a chat completion: retried like a 5xx."""


@dataclass
class Job:
    problem: Problem
    messages: list[dict[str, str]]
    indices: list[int]  # sample indices still without an answer
    keys: dict[int, str]
    _json: tuple[str, str] | None = None
    answered: set[int] = field(default_factory=set)  # indices answered (handed to the store) so far

    def stored_json(self) -> tuple[str, str]:
        """(row_json, messages_json), serialised once for the job's n samples."""
        if self._json is None:
            self._json = (json.dumps(self.problem.row, ensure_ascii=False, default=str), json.dumps(self.messages, ensure_ascii=False))
        return self._json


class JobFeed:
    """The jobs the workers take. Closed from the start for a fixed list; kept open while answers
    still on their way to the judge may ask for more (budget.per_prompt), so new jobs join the
    queue the workers already drain: the in-flight window stays full across rounds."""

    def __init__(self, jobs: list[Job], *, open_: bool = False):
        self._queue = deque(jobs)
        self._wake = asyncio.Event()
        self.closed = not open_

    def put(self, job: Job, *, front: bool = False) -> None:
        if front:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def empty(self) -> bool:
        return not self._queue

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> Job | None:
        """The next job; None once the feed is closed and drained."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()


@dataclass
class Stats:
    total_samples: int = 0
    already_stored: int = 0
    stored: int = 0
    received: int = 0  # answers handed to the store (stored counts them once journaled)
    requests: int = 0
    in_flight: int = 0
    retries: int = 0
    failed_attempts: int = 0  # HTTP attempts that ended without an answer (may still be billed)
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    usage_estimated: int = 0  # samples whose token counts were counted locally (no usage, or none to believe, from the server)
    requeued: int = 0  # attempts that timed out in the teacher's queue and were re-sent for free
    window: int = 0  # the in-flight window at the end (limits.concurrency unless congestion cut it)
    window_lowest: int = 0
    accepted: int = 0
    judged: int = 0
    started: float = field(default_factory=time.monotonic)
    sampling_s: float = 0.0  # wall time of the request loop alone (no loading, compaction, receipt)
    stop_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # how the sampler adapted to the teacher (n ignored, congestion)
    replicas: list[dict[str, Any]] = field(default_factory=list)  # per-replica figures (teacher.replicas, curator/sample/fleet.py)


def normalise_endpoint(base_url: str) -> str:
    return base_url.rstrip("/")


def sample_key(endpoint: str, model: str, messages: list[dict[str, str]], params: dict[str, Any], index: int) -> str:
    """Changing endpoint, model, messages or params gives new keys: old answers are never reused silently."""
    blob = json.dumps(
        {"endpoint": normalise_endpoint(endpoint), "model": model, "messages": messages, "params": params, "sample_index": index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_params(manifest: Manifest) -> dict[str, Any]:
    """Sampling params that shape an answer (and so the key); n is the number of samples, not a param."""
    p = manifest.teacher.params.model_dump(exclude_none=True)
    p.pop("n", None)
    return p


def request_body(model: str, messages: list[dict[str, str]], params: dict[str, Any], n: int, extra_seed: int) -> dict[str, Any]:
    """The chat completion request for `n` samples of a prompt, online or as a batch file line."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    body.update((k, v) for k, v in params.items() if k != "extra_body")
    body.update(params.get("extra_body") or {})
    if n > 1:
        body["n"] = n
    if extra_seed and "seed" in body:
        body["seed"] = body["seed"] + extra_seed
    return body


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, MalformedResponse)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return False


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        msg = exc.message
        body = exc.body if isinstance(exc.body, dict) else {}
        if isinstance(body.get("error"), dict):
            msg = body["error"].get("message", msg)
        elif isinstance(body.get("message"), str):
            msg = body["message"]
        return redact(f"HTTP {exc.status_code}: {' '.join(str(msg).split())}")
    text = redact(" ".join(str(exc).split()))  # a server's reply may quote our Authorization header
    return text if isinstance(exc, CuratorError) else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_body(content: bytes) -> dict[str, Any]:
    try:
        data = _loads(content)
    except ValueError:
        raise MalformedResponse("the server sent a body that is not JSON") from None
    if (problem := completion_problem(data)) is not None:
        raise MalformedResponse(f"malformed answer from the teacher: {problem}")
    return data


@dataclass
class _FakeState:
    """What tenacity's wait strategies read from a retry state: the attempt number."""

    attempt_number: int


def _reasoning_field(message: dict[str, Any]) -> str:
    """Where a choice carries its separate reasoning, counted as output (none for inline <think>)."""
    return "reasoning_content" if message.get("reasoning_content") else "reasoning"


def _shares(weights: list[int], total: int | None) -> list[int | None]:
    """Split a request-level token count over its choices so that the parts add up to the total."""
    if total is None:
        return [None] * len(weights)
    wsum = sum(weights) or len(weights)
    weights = weights if sum(weights) else [1] * len(weights)
    parts = [total * w // wsum for w in weights]
    parts[-1] += total - sum(parts)
    return parts


class RecordMaker:
    """A chat completion -> the records the store keeps (CoT split, usage shared over choices,
    cost at the price paid): one function for online answers and batch output lines alike."""

    def __init__(self, manifest: Manifest, price: Price | None, counter: TokenCounter | None = None, *, batch: bool = False):
        self.m = manifest
        self.t = manifest.teacher
        self.endpoint = normalise_endpoint(self.t.base_url)
        self._params_json = json.dumps(request_params(manifest), sort_keys=True)
        self.price = price
        self.batch = batch  # priced with the provider's batch discount
        self._counter = counter or CharEstimate()

    def records(self, job: Job, data: dict[str, Any], indices: list[int], attempts: int,
                latency: float) -> tuple[list[dict[str, Any]], Usage, float | None, bool]:
        """The stored records of one chat completion answering `indices` of `job`, with the
        request's usage (filled in locally when the server sent none), its cost and whether
        that usage was estimated."""
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))[: len(indices)]
        messages = [c.get("message") or {} for c in choices]
        splits = [split_reasoning(msg) for msg in messages]
        usage, self.untrusted = trusted_usage(data, job.messages, self.t.params)  # untrusted: why not believed
        estimated = usage.prompt_tokens is None or usage.completion_tokens is None
        weights = [len(s.cot) + len(s.completion) + 1 for s in splits]
        ctoks = _shares(weights, usage.completion_tokens)
        rtoks = _shares([len(s.cot) + 1 for s in splits], usage.reasoning_tokens)
        if estimated:
            usage, counted = self._estimated_usage(usage, job.messages, messages, splits)
            if counted is not None:  # each choice's own count, not a share of a total
                ctoks, rtoks = counted
                weights = [c + 1 for c in ctoks]
        cost = request_cost(usage, self.price, batch=self.batch)
        ptoks = _shares([1] * len(splits), usage.prompt_tokens)
        cached = _shares([1] * len(splits), usage.cached_tokens)
        now = time.time()
        row_json, messages_json = job.stored_json()
        params_json = self._params_json
        out = []
        for i, (choice, msg, sp) in enumerate(zip(choices, messages, splits)):
            idx = indices[i]
            out.append(
                {
                    "key": job.keys[idx],
                    "run": self.m.name,
                    "prompt_id": job.problem.id,
                    "sample_index": idx,
                    "source": self.m.source.path,
                    "problem": job.problem.problem,
                    "gold": job.problem.gold,
                    "row_json": row_json,
                    "messages_json": messages_json,
                    "cot": sp.cot,
                    "completion": sp.completion,
                    "cot_source": sp.cot_source,
                    "raw_content": msg.get("content"),
                    "finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": ptoks[i],
                    "completion_tokens": ctoks[i],
                    "reasoning_tokens": rtoks[i],
                    "cached_tokens": cached[i],
                    "cost_usd": None if cost is None else cost * (weights[i] / (sum(weights) or 1)),
                    "usage_estimated": estimated,
                    "model": data.get("model") if isinstance(data.get("model"), str) else self.t.model,
                    "endpoint": self.endpoint,
                    "params_json": params_json,
                    "request_id": None if data.get("id") is None else str(data.get("id")),
                    "attempts": attempts,
                    "latency_s": latency,
                    "created_at": now,
                }
            )
        return out, usage, cost, estimated

    def _estimated_usage(self, usage: Usage, request: list[dict[str, str]], messages: list[dict[str, Any]],
                         splits) -> tuple[Usage, tuple[list[int], list[int]] | None]:
        """The server sent no (or part of its) usage: count locally what is missing. Returns the
        filled-in usage and, when the completion was counted here, each choice's (completion,
        reasoning) tokens."""
        count = self._counter.count
        counted = None
        completion, reasoning = usage.completion_tokens, usage.reasoning_tokens
        if completion is None:
            per_choice, per_cot = [], []
            for m, sp in zip(messages, splits):
                cot = count(sp.cot)
                field = m.get(_reasoning_field(m)) or ""
                # A separate reasoning field is the CoT itself: tokenised once, not twice.
                per_choice.append(count(m.get("content") or "") + (cot if field == sp.cot else count(field)))
                per_cot.append(cot)
            counted = (per_choice, per_cot)
            completion, reasoning = sum(per_choice), sum(per_cot)
        filled = Usage(
            prompt_tokens=usage.prompt_tokens if usage.prompt_tokens is not None else prompt_tokens(self._counter, request),
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            cached_tokens=usage.cached_tokens,
        )
        return filled, counted


class Sampler:
    def __init__(
        self,
        manifest: Manifest,
        api_key: str,
        submit: Callable[[list[dict[str, Any]]], None],
        price: Price | None,
        stats: Stats,
        should_stop: Callable[[], str | None] = lambda: None,
        hold: Callable[[], bool] = lambda: False,
        counter: TokenCounter | None = None,
        notify: Callable[[str], None] = lambda _m: None,
        on_failed: Callable[[Job], None] = lambda _j: None,
    ):
        self.m = manifest
        self.t = manifest.teacher
        self.limits = manifest.limits
        self.endpoint = normalise_endpoint(self.t.base_url)
        self._params_json = json.dumps(request_params(manifest), sort_keys=True)  # as stored: {env: NAME} values unresolved
        self.params = resolve_env(request_params(manifest), "teacher.params")  # what is sent: only ever in memory
        self.price = price
        self.stats = stats
        self.submit = submit  # hands answers to the store; they count as done once journaled
        self.should_stop = should_stop
        self.hold = hold  # True while the budget can only be judged once the filters catch up
        self.limiter = RateLimiter(self.limits.rpm, self.limits.tpm)
        # Retries are ours (tenacity), so the client's own are off. With teacher.replicas a fleet stands in (keys still hash base_url).
        self.fleet = Fleet.for_teacher(self.t, self.limits, api_key, notify=self._notice, abort=self.abort, stats=stats)
        self.transport = self.fleet or make_transport(self.t.http, self.endpoint, api_key, self.limits.timeout_s, self.limits.concurrency, self.t.request_headers())
        self.n_mode = self.t.n_strategy
        self.notify = notify  # shows a notice to the user (live display); stats.notices keeps them
        self._counter = counter or CharEstimate()  # a configured tokenizer was loaded up front
        self.maker = RecordMaker(manifest, price, self._counter)
        self._notices_seen = 0
        self.on_failed = on_failed  # a job given up on (its unanswered indices wait for resume)
        self._feed: JobFeed | None = None
        self.window = AdaptiveWindow(self.limits.concurrency, self.limits.timeout_s, self._notice)
        self._fatal: FatalRequestError | None = None
        self._any_success = False
        self._cost_per_request: float | None = None

    # -- one HTTP request, retried -------------------------------------------------------------

    def _estimate_tokens(self, messages: list[dict[str, str]], n: int) -> int:
        prompt = sum(len(m["content"]) for m in messages) // 4 + 8
        return prompt + n * (self.t.params.max_tokens or 4096)

    async def _post(self, messages: list[dict[str, str]], n: int, extra_seed: int) -> tuple[dict[str, Any], int, float]:
        body = request_body(self.t.model, messages, self.params, n, extra_seed)
        start = time.monotonic()
        state = {"attempts": 0, "requeued": 0}

        async def attempt_once() -> dict[str, Any]:
            while True:
                state["attempts"] += 1
                if state["attempts"] > 1:
                    self.stats.retries += 1
                self.stats.failed_attempts += 1  # taken back below once an answer parses
                reserved = self._estimate_tokens(messages, n)
                await self.limiter.acquire(reserved)
                ticket = await self.window.acquire()
                self.stats.requests += 1
                try:
                    content, headers = await self.transport.post(body)
                    data = _parse_body(content)
                except openai.APITimeoutError:
                    self.limiter.refund(reserved)
                    if self.window.queued(ticket) and state["requeued"] < _MAX_REQUEUES:
                        # It waited behind our own requests: our queueing, not the teacher's
                        # failure, so the window shrinks and the attempt costs no retry.
                        self.window.congested(ticket, "a timeout")
                        state["requeued"] += 1
                        self.stats.requeued += 1
                        continue
                    raise
                except openai.APIStatusError as e:
                    self.limiter.refund(reserved)
                    if e.status_code == 503:  # overloaded; a 429 is a rate limit, which the limiter paces
                        self.window.overloaded(ticket)
                    raise
                except BaseException:
                    self.limiter.refund(reserved)
                    raise
                finally:
                    self.window.release()
                self.window.success()
                self.stats.failed_attempts -= 1
                self.limiter.observe(headers)
                used = data["usage"].get("total_tokens") if isinstance(data.get("usage"), dict) else None
                self.limiter.refund(reserved - used if type(used) is int and 0 <= used <= reserved else 0)
                return data

        try:
            # Most requests succeed at once: tenacity's machinery (~0.1 ms a request) only
            # runs for the ones that need a retry.
            data = await attempt_once()
        except Exception as e:
            if not _is_retryable(e) or self.limits.max_retries == 0:
                raise
            data = await self._retry(attempt_once, first_wait=self._first_wait(e))
        return data, state["attempts"], time.monotonic() - start

    def _asked_wait(self, exc: BaseException) -> float | None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        asked = retry_after(headers) if isinstance(exc, openai.APIStatusError) else None
        if asked is None:
            return None
        asked = min(asked, self.limits.max_backoff_s)
        self.limiter.pause(asked)  # the server asked everyone to wait, not just this request
        return asked

    def _first_wait(self, exc: BaseException) -> float:
        asked = self._asked_wait(exc)
        return asked if asked is not None else wait_exponential_jitter(multiplier=0.25, max=self.limits.max_backoff_s, jitter=0.5)(_FakeState(1))

    async def _retry(self, attempt_once, first_wait: float) -> dict[str, Any]:
        """Retries 2..max_retries+1 with tenacity: exponential backoff with jitter, or the server's
        Retry-After / x-ratelimit-reset-* when it sent one."""
        await asyncio.sleep(first_wait)

        def _wait(rs) -> float:
            asked = self._asked_wait(rs.outcome.exception())
            if asked is not None:
                return asked
            return wait_exponential_jitter(multiplier=0.25, max=self.limits.max_backoff_s, jitter=0.5)(_FakeState(rs.attempt_number + 1))

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.limits.max_retries),
            wait=_wait,
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        ):
            with attempt:
                data = await attempt_once()
        return data

    # -- one job: a prompt and the sample indices it still lacks ---------------------------------

    def _records(self, job: Job, data: dict[str, Any], indices: list[int], attempts: int, latency: float) -> list[dict[str, Any]]:
        out, usage, cost, estimated = self.maker.records(job, data, indices, attempts, latency)
        self._account(usage, cost)
        if estimated:
            self.stats.usage_estimated += len(out)
        if self.maker.untrusted and not any("usage is not plausible" in n for n in self.stats.notices):  # once a run
            self._notice(f"the teacher's usage is not plausible ({self.maker.untrusted}): such answers are counted locally, flagged usage_estimated")
        return out

    def _notice(self, message: str) -> None:
        self._notices_seen += 1
        # The receipt keeps the first ones and the last one: a long congested run would otherwise
        # write thousands of near-identical lines into it.
        if len(self.stats.notices) < _KEPT_NOTICES:
            self.stats.notices.append(message)
        else:
            self.stats.notices[-1] = f"{message} (notice {self._notices_seen}; {self._notices_seen - _KEPT_NOTICES} earlier ones not kept)"
        if self._notices_seen <= _MAX_NOTICES:
            self.notify(message)

    def _account(self, usage: Usage, cost: float | None) -> None:
        s = self.stats
        s.prompt_tokens += usage.prompt_tokens or 0
        s.completion_tokens += usage.completion_tokens or 0
        if cost is None:
            s.cost_known = False
        else:
            s.cost_usd += cost
            done = max(1, s.requests)
            self._cost_per_request = s.cost_usd / done

    async def _run_job(self, job: Job) -> None:
        pending = list(job.indices)
        while pending:
            batch = pending[:1] if self.n_mode == "separate" else pending
            # A request's seed is the manifest's seed + its first sample index, however the n
            # samples are split into requests (n at once, one each, the rest after a short
            # answer, a resume): no two requests of a prompt share a seed, and so an answer.
            seed_shift = batch[0]
            try:
                data, attempts, latency = await self._post(job.messages, len(batch), seed_shift)
            except openai.BadRequestError as e:
                if len(batch) > 1 and self.t.n_strategy == "auto" and re.search(r"\bn\b", _one_line(e)):
                    if self.n_mode != "separate":
                        self.n_mode = "separate"
                        self._notice(f"the teacher refuses n={len(batch)} ({_one_line(e)}): one request per sample from now on")
                    continue
                raise
            records = self._records(job, data, batch, attempts, latency)
            self._any_success = True
            self.stats.received += len(records)
            done = {r["sample_index"] for r in records}
            job.answered |= done
            self.submit(records)
            if len(batch) > 1 and len(done) < len(batch) and self.t.n_strategy == "auto" and self.n_mode != "separate":
                self.n_mode = "separate"
                self._notice(
                    f"the teacher answered {len(done)} of n={len(batch)} choices (it ignores n): the missing samples are sent "
                    "as separate requests from now on (teacher.n_strategy: separate skips the n attempt)"
                )
            pending = [i for i in pending if i not in done]

    def abort(self, message: str) -> None:
        """Stop sending (storage failed): in-flight answers finish, nothing new is bought."""
        self._fatal = FatalRequestError(message)
        if self._feed is not None:
            self._feed.close()

    # -- the loop -------------------------------------------------------------------------------

    def _projected_usd(self) -> float:
        per = self._cost_per_request or 0.0
        return self.stats.cost_usd + self.stats.in_flight * per

    def _budget_stop(self) -> str | None:
        b = self.m.budget
        if b.max_usd is not None and self.stats.cost_known and self._projected_usd() >= b.max_usd:
            return f"budget: spent ${self.stats.cost_usd:.4f} of max_usd ${b.max_usd}"
        return self.should_stop()

    async def run(self, jobs: list[Job] | JobFeed) -> None:
        feed = jobs if isinstance(jobs, JobFeed) else JobFeed(jobs)
        self._feed = feed
        if self._fatal is not None:
            feed.close()

        def stop(reason: str | None = None) -> None:
            if reason:
                self.stats.stop_reason = reason
            feed.close()  # wakes the workers waiting for a job that will not come

        async def worker() -> None:
            while (job := await feed.get()) is not None:
                if self._fatal is not None or self.stats.stop_reason:
                    return stop()
                while self.hold() and self._fatal is None:
                    await asyncio.sleep(0.02)
                reason = self._budget_stop()
                if reason:
                    return stop(reason)
                self.stats.in_flight += 1
                failed = False
                try:
                    await self._run_job(job)
                except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError, RedirectRefused) as e:
                    self._fatal = FatalRequestError(_one_line(e))
                    failed = True
                except openai.BadRequestError as e:
                    failed = True
                    if not self._any_success:
                        self._fatal = FatalRequestError(_one_line(e))
                    else:  # one bad prompt (too long...) must not stop a paid-for run
                        self.stats.failed += 1
                        self.stats.errors.append(f"prompt {job.problem.id}: {_one_line(e)}")
                except Exception as e:  # retries exhausted: record, go on, resume will retry
                    if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt)):
                        raise
                    failed = True
                    self.stats.failed += 1
                    self.stats.errors.append(f"prompt {job.problem.id}: {_one_line(e)}")
                finally:
                    self.stats.in_flight -= 1
                if failed:
                    self.on_failed(job)
                    if self._fatal is not None:
                        return stop()

        workers = self.limits.concurrency if not feed.closed else min(self.limits.concurrency, max(1, len(feed)))
        t0 = time.monotonic()
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            self.stats.sampling_s = time.monotonic() - t0
            self.stats.window, self.stats.window_lowest = self.window.size, self.window.lowest
            if self._notices_seen > _MAX_NOTICES:
                self.notify(f"{self._notices_seen - _MAX_NOTICES} more notices like these (see the receipt)")
            await self.transport.close()
        if self._fatal is not None:
            raise self._fatal
