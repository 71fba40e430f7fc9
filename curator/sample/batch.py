"""Batch mode (`teacher.mode: batch`): the missing keys' requests go to the provider's batch API
(`/v1/files` + `/v1/batches`) at its batch price, and offline engines read and write the same
line format (`curator batch write` / `curator batch read`, as `vllm run-batch` does).

The promise is the online path's: nothing is bought twice, nothing bought is lost.
- Each input file's rows (custom_id -> sample keys) are in the ledger (store/ledger.py) before
  its batch is created; a file recorded with no batch is looked up on the provider (list batches,
  match input_file_id) and adopted before a new batch is ever created from it.
- A batch's answers are stored (journal + fsync, the store's one path) before the ledger marks
  it done; a kill while downloading or storing downloads again and stores only missing keys.
- Rows the provider failed are sent again in a later batch, up to limits.max_retries times in a
  session; rows an expired or cancelled batch never ran are simply missing, and sent again.

Answers become records through the online path's RecordMaker (same schema, CoT split, usage),
priced with the model's batch discount."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from curator.config import Manifest, has_env_ref
from curator.errors import RunError
from curator.sample.parse import completion_problem
from curator.sample.sampler import (
    FatalRequestError,
    Job,
    RecordMaker,
    _one_line,
    normalise_endpoint,
    request_body,
    request_params,
)
from curator.sample.transport import refuse_redirect
from curator.store.layout import OutputDir
from curator.store.ledger import TERMINAL, BatchEntry, Ledger

ENDPOINT = "/v1/chat/completions"
_STORE_CHUNK = 2000  # records per store.append while reading an output file
_LIST_PAGE = 100

# Test hook: the process kills itself (SIGKILL, no cleanup) at this step, so tests can check what
# a kill there leaves behind. Steps: after_upload, mid_create, after_create, mid_poll, mid_download, mid_store.
KILL_ENV = "CURATOR_BATCH_KILL_AT"


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


try:
    from orjson import dumps as _odumps

    def _dumps(obj: Any) -> bytes:
        return _odumps(obj)
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# -- requests -> batch lines -------------------------------------------------------------------


def job_lines(manifest: Manifest, jobs: Iterable[Job], skip: set[str] = frozenset()) -> Iterator[tuple[str, list[str], bytes]]:
    """(custom_id, sample keys, line) for every request the jobs still need, keys in `skip` left
    out. A line asks for all of a prompt's missing samples at once (n) unless n_strategy is
    separate; its seed shift is its first sample index, as online (no two requests share a seed).
    The custom_id is the first sample's key: unique, and stable across sessions."""
    params = request_params(manifest)
    if has_env_ref(params.get("extra_body")):  # a batch file is written to disk: it may not carry a secret
        raise RunError("teacher.params.extra_body has {env: ...} values, which batch request files cannot carry (they are written to disk)")
    model = manifest.teacher.model
    separate = manifest.teacher.n_strategy == "separate"
    for job in jobs:
        idxs = [i for i in job.indices if job.keys[i] not in skip]
        groups = [[i] for i in idxs] if separate else ([idxs] if idxs else [])
        for g in groups:
            body = request_body(model, job.messages, params, len(g), g[0])
            cid = job.keys[g[0]]
            line = _dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"
            yield cid, [job.keys[i] for i in g], line


def write_chunks(lines: Iterable[tuple[str, list[str], bytes]], folder: Path, max_requests: int, max_bytes: int,
                 prefix: str = "input") -> Iterator[tuple[Path, dict[str, list[str]], int]]:
    """Batch files of at most max_requests lines and max_bytes bytes, written straight to disk
    (a 50,000-request file is never held in memory): (path, rows, bytes) for each."""
    folder.mkdir(parents=True, exist_ok=True)
    f, path, rows, size = None, None, {}, 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    part = 0
    try:
        for cid, keys, line in lines:
            if len(line) > max_bytes:
                raise RunError(f"request {cid} is {len(line):,} bytes, over teacher.batch.max_bytes {max_bytes:,}")
            if f is not None and (len(rows) >= max_requests or size + len(line) > max_bytes):
                f.close()
                yield path, rows, size
                f, rows, size = None, {}, 0
            if f is None:
                part += 1
                path = folder / f"{prefix}-{stamp}-{os.getpid()}-{part:03d}.jsonl"
                f = path.open("wb")
            f.write(line)
            rows[cid] = keys
            size += len(line)
        if f is not None:
            f.close()
            f = None
            yield path, rows, size
    finally:
        if f is not None:
            f.close()


# -- output lines -> records -------------------------------------------------------------------


@dataclass
class Outcome:
    stored: int = 0
    already: int = 0  # rows whose keys were all stored before (a re-read, a resumed download)
    unknown: list[str] | None = None  # custom_ids matching no request
    errors: dict[str, str] | None = None  # custom_id -> reason (rows the engine or provider failed)
    not_run: int = 0  # rows an expired or cancelled batch never ran
    bad_lines: list[int] | None = None  # unreadable lines (a file cut short)
    stale: int = 0  # answers for keys the current manifest no longer asks for (it changed): not stored


class Reader:
    """Turns batch output lines into stored records: custom_id -> keys -> (job, sample indices)
    -> RecordMaker.records -> store.append -> judge."""

    def __init__(self, maker: RecordMaker, jobs: list[Job], store, judge=None, stats=None, on_stored: Callable[[list[dict[str, Any]]], None] | None = None):
        self.maker, self.store, self.judge, self.stats, self.on_stored = maker, store, judge, stats, on_stored
        self.where: dict[str, tuple[Job, int]] = {}
        for job in jobs:
            for i, k in job.keys.items():
                self.where[k] = (job, i)

    def read(self, lines: Iterable[bytes], rows: dict[str, list[str]] | Callable[[str], list[str] | None], latency: float = 0.0) -> Outcome:
        lookup = rows.get if isinstance(rows, dict) else rows
        out = Outcome(unknown=[], errors={}, bad_lines=[])
        pending: list[dict[str, Any]] = []
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                out.bad_lines.append(n)
                continue
            keys = lookup(cid)
            if not keys:
                out.unknown.append(str(cid))
                continue
            reason = _line_error(line)
            if reason is not None:
                code = (line.get("error") or {}).get("code") if isinstance(line.get("error"), dict) else None
                if code in ("batch_expired", "batch_cancelled"):
                    out.not_run += 1
                else:
                    out.errors[cid] = reason
                continue
            missing = [k for k in keys if k in self.where and k not in self.store.keys]
            if not missing:
                if any(k not in self.where and k not in self.store.keys for k in keys):
                    out.stale += 1  # paid for, but the manifest no longer asks for these keys
                else:
                    out.already += 1
                continue
            job = self.where[missing[0]][0]
            indices = [self.where[k][1] for k in keys if k in self.where]
            body = line["response"]["body"]
            records, usage, cost, estimated = self.maker.records(job, body, indices, 1, latency)
            fresh = [r for r in records if r["key"] not in self.store.keys]
            if self.stats is not None:
                share = sum(r["cost_usd"] or 0.0 for r in fresh)
                self.stats.prompt_tokens += sum(r["prompt_tokens"] or 0 for r in fresh)
                self.stats.completion_tokens += sum(r["completion_tokens"] or 0 for r in fresh)
                if cost is None:
                    self.stats.cost_known = False
                else:
                    self.stats.cost_usd += share
                if estimated:
                    self.stats.usage_estimated += len(fresh)
                self.stats.received += len(fresh)
            pending.extend(fresh)
            if len(pending) >= _STORE_CHUNK:
                out.stored += self._store(pending)
                pending = []
        if pending:
            out.stored += self._store(pending)
        return out

    def _store(self, records: list[dict[str, Any]]) -> int:
        self.store.append(records)  # journal + fsync: stored from here on
        _kill_point("mid_store")
        if self.store.failed is not None:
            raise self.store.failed
        if self.stats is not None:
            self.stats.stored += len(records)
        if self.judge is not None:
            self.judge.judge(records)
            if self.stats is not None:
                self.stats.accepted, self.stats.judged = self.judge.accepted, self.judge.judged
        if self.on_stored is not None:
            self.on_stored(records)
        return len(records)


def _line_error(line: dict[str, Any]) -> str | None:
    """Why an output line carries no answer, or None for an answer."""
    err = line.get("error")
    if err:
        if isinstance(err, dict):
            return f"{err.get('code') or 'error'}: {err.get('message') or ''}".strip()
        return str(err)
    resp = line.get("response")
    if not isinstance(resp, dict):
        return "no response"
    status = resp.get("status_code")
    body = resp.get("body")
    if status != 200:
        msg = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        return f"HTTP {status}: {msg or 'error'}"
    problem = completion_problem(body)
    if problem is not None:
        return f"a 200 whose body is not a chat completion: {problem}"
    return None


# -- the provider's batch API ------------------------------------------------------------------


class BatchRun:
    """One session of a batch-mode run. `ctx` is the run's RunContext (run.py)."""

    def __init__(self, ctx, *, detach: bool = False, notify: Callable[[str], None] | None = None):
        self.ctx = ctx
        self.m: Manifest = ctx.manifest
        self.opts = self.m.teacher.batch
        self.out: OutputDir = ctx.out
        self.detach = detach
        self.notify = notify or (lambda _m: None)
        self.ledger = Ledger(self.out.ledger)
        self.client = openai.OpenAI(base_url=normalise_endpoint(self.m.teacher.base_url), api_key=ctx.api_key,
                                    max_retries=self.m.limits.max_retries, timeout=self.m.limits.timeout_s,
                                    default_headers=self.m.teacher.request_headers(),
                                    # a 307 would re-send the batch file and teacher.headers to another origin
                                    http_client=openai.DefaultHttpxClient(follow_redirects=False))
        self.maker = RecordMaker(self.m, ctx.price, ctx.counter, batch=True)
        refresh = getattr(ctx.display, "refresh", None)
        self.reader = Reader(self.maker, ctx.jobs, ctx.store, ctx.judge, ctx.stats, on_stored=(lambda _r: refresh()) if refresh else None)
        self.sent: dict[str, int] = {}  # sample key -> batches it went out in this session
        self.given_up: set[str] = set()
        self.failure: str | None = None

    # -- steps ---------------------------------------------------------------------------------

    def _find_remote(self, file_ids: set[str]) -> dict[str, Any]:
        """file id -> the provider's batch created from it (newest first), by listing batches."""
        found: dict[str, Any] = {}
        # Newest first: a batch older than the oldest of these uploads cannot be made of them,
        # so a long history is not paged through.
        oldest = min((self.ledger.files[f].get("at") or 0) for f in file_ids) - 3600
        for b in self.client.batches.list(limit=_LIST_PAGE):
            if b.created_at < oldest:
                break
            if b.input_file_id in file_ids and b.input_file_id not in found:
                found[b.input_file_id] = b
                if len(found) == len(file_ids):
                    break
        return found

    def _create(self, file_id: str) -> None:
        b = self.client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window=self.opts.completion_window,
                                       metadata={"curator_run": self.m.name[:500]})
        _kill_point("mid_create")  # created on the provider's side, not yet in the ledger: resume adopts it
        self.ledger.record("batch", file_id=file_id, batch_id=b.id, expires_at=b.expires_at, created_at=b.created_at)
        _kill_point("after_create")
        self.notify(f"batch {b.id}: submitted ({len(self.ledger.files[file_id]['rows'])} requests)")

    def adopt(self) -> None:
        """Files uploaded by an earlier session that got no batch in the ledger: adopt the batch
        the provider made of them if there is one, else create it now (the file is paid for
        nothing; its rows are not uploaded again)."""
        todo = set(self.ledger.unbatched_files())
        if not todo:
            return
        remote = self._find_remote(todo)
        for fid in sorted(todo):
            if fid in remote:
                b = remote[fid]
                self.ledger.record("batch", file_id=fid, batch_id=b.id, expires_at=b.expires_at, created_at=b.created_at)
                self.notify(f"batch {b.id}: adopted (created before the last session ended)")
            else:
                self._create(fid)

    def submit(self) -> int:
        """Upload and create batches for every missing key not already in a batch; returns rows sent.
        A key goes out at most limits.max_retries + 1 times a session (errored rows, rows an
        expired or cancelled batch never ran); then it counts as failed, and resume tries again."""
        if self.failure is not None or self.ctx.should_stop() is not None:
            return 0
        b, stats = self.m.budget, self.ctx.stats
        if b.max_usd is not None and stats.cost_known and stats.cost_usd >= b.max_usd:
            # Checked between batches only: a batch's price is known once its answers are in.
            stats.stop_reason = f"budget: spent ${stats.cost_usd:.4f} of max_usd ${b.max_usd}"
            return 0
        store_keys, pending = self.ctx.store.keys, self.ledger.pending_keys()
        limit = self.m.limits.max_retries + 1
        spent = {k for k, n in self.sent.items() if n >= limit}
        for k in spent - store_keys - pending - self.given_up:
            self.given_up.add(k)
            self.ctx.stats.failed += 1
            reasons = self.ledger.row_errors.get(k) or ["never answered"]
            self.ctx.stats.errors.append(f"sample {k[:12]}: {reasons[-1]} (sent in {self.sent[k]} batches)")
        skip = pending | store_keys | spent
        sent = 0
        chunks = write_chunks(job_lines(self.m, self.ctx.jobs, skip), self.out.batches, self.opts.max_requests, self.opts.max_bytes)
        for path, rows, size in chunks:
            with path.open("rb") as f:
                uploaded = self.client.files.create(file=(path.name, f), purpose="batch")
            # Recorded before create: from here a kill can never lead to a second batch of these rows.
            self.ledger.record("file", file_id=uploaded.id, rows=rows, bytes=size, path=path.name)
            _kill_point("after_upload")
            self._create(uploaded.id)
            path.unlink(missing_ok=True)  # the provider has it; the ledger has its rows
            for keys in rows.values():
                for k in keys:
                    self.sent[k] = self.sent.get(k, 0) + 1
            sent += len(rows)
            self.ctx.stats.requests += len(rows)
        return sent

    def poll(self, entry: BatchEntry) -> bool:
        """Look at one open batch; collect it once it ended. True when it is done."""
        if all(k in self.ctx.store.keys for ks in self.ledger.rows_of(entry).values() for k in ks):
            # Every answer is stored already (a kill after storing, before the ledger said so).
            self.ledger.record("done", batch_id=entry.batch_id, status=entry.status, stored=0)
            return True
        b = self.client.batches.retrieve(entry.batch_id)
        counts = b.request_counts.model_dump() if b.request_counts else {}
        if b.status != entry.status or counts != entry.counts:
            self.ledger.record("state", batch_id=b.id, status=b.status, counts=counts)
            self.notify(f"batch {b.id}: {b.status} ({counts.get('completed', 0)}/{counts.get('total', 0)} done, {counts.get('failed', 0)} failed)")
        if b.status not in TERMINAL:
            _kill_point("mid_poll")
            return False
        self.collect(entry, b)
        return True

    def _download(self, file_id: str, dest: Path) -> Path:
        tmp = dest.with_suffix(".part")
        with self.client.files.with_streaming_response.content(file_id) as resp:
            resp.stream_to_file(tmp)
        os.replace(tmp, dest)
        return dest

    def collect(self, entry: BatchEntry, b) -> None:
        """Download a finished batch's output and error files, store the answers, note the errors,
        and only then mark the batch done."""
        rows = self.ledger.rows_of(entry)
        stored = 0
        if b.status == "failed":
            first = (b.errors.data[0] if b.errors and b.errors.data else None)
            where = f"line {first.line}: " if first is not None and first.line else ""
            what = f"{first.code}: {first.message}" if first is not None else "no reason given"
            self.failure = f"batch {b.id} failed validation: {where}{what}"
        latency = max(0.0, time.time() - (b.created_at or time.time()))
        self.notify(f"batch {b.id}: downloading")
        for file_id, kind in ((b.output_file_id, "output"), (b.error_file_id, "errors")):
            if not file_id:
                continue
            path = self._download(file_id, self.out.batches / f"{b.id}.{kind}.jsonl")
            _kill_point("mid_download")
            with path.open("rb") as f:
                res = self.reader.read(f, rows, latency)
            stored += res.stored
            if res.errors:
                # Keyed by sample key: a retry's custom_id may differ (fewer samples left).
                self.ledger.record("row_errors", batch_id=b.id, errors={k: reason for cid, reason in res.errors.items() for k in rows.get(cid, [])})
            if res.stale:
                msg = (f"batch {b.id}: {res.stale} answers are for requests the manifest no longer makes (it changed since "
                       "they were sent); not stored, the file is kept in " + str(path))
                self.ctx.stats.warnings.append(msg)
                self.notify(msg)
            if res.unknown:
                self.notify(f"batch {b.id}: {len(res.unknown)} lines name no request of this batch (first {res.unknown[0]!r}); not stored")
        self.ledger.record("done", batch_id=b.id, status=b.status, stored=stored)
        counts = b.request_counts.model_dump() if b.request_counts else {}
        self.notify(f"batch {b.id}: {b.status}, {stored} answers stored" + (f", {counts.get('failed', 0)} rows failed" if counts.get("failed") else ""))

    # -- the session ---------------------------------------------------------------------------

    def run(self) -> None:
        stats = self.ctx.stats
        t0 = time.monotonic()
        try:
            self.adopt()
            if self.detach:
                # Look once: collect what has ended, send what is missing, wait for nothing.
                for entry in self.ledger.open_batches():
                    self.poll(entry)
            self.submit()
            if self.detach:
                n = len(self.ledger.open_batches())
                stats.stop_reason = f"detached: {n} batches submitted; `curator resume {self.out.path}` collects them"
                return
            while True:
                opened = self.ledger.open_batches()
                stats.in_flight = sum(len(self.ledger.rows_of(b)) for b in opened)  # requests bought, answers not stored
                if not opened:
                    if self.failure is not None:
                        break
                    if self.submit() == 0:
                        break
                    continue
                progressed = False
                for entry in opened:
                    if self.poll(entry):
                        progressed = True
                if progressed:
                    self.submit()  # the rows that erred or never ran go in a new batch
                    continue
                time.sleep(self.opts.poll_s)
        except openai.APIStatusError as e:
            refuse_redirect(e.status_code, e.response.headers)  # one line naming the target
            if e.status_code in (401, 403, 404, 400):
                raise FatalRequestError(_one_line(e)) from None
            raise RunError(f"batch API: {_one_line(e)}; `curator resume {self.out.path}` picks up where this stopped") from None
        except openai.APIConnectionError as e:
            raise RunError(f"batch API unreachable ({_one_line(e)}); `curator resume {self.out.path}` picks up where this stopped") from None
        finally:
            stats.in_flight = 0
            stats.sampling_s = time.monotonic() - t0
            self.client.close()
        if self.failure is not None:
            raise RunError(self.failure)


def run_batches(ctx, *, detach: bool = False) -> None:
    """Batch mode's session loop, called by run.run_manifest in place of the online loop."""
    notify = getattr(ctx.display, "note", None)
    BatchRun(ctx, detach=detach, notify=notify).run()


# -- offline engines (`curator batch write` / `curator batch read`) ----------------------------


def write_offline(manifest: Manifest, jobs: list[Job], ledger: Ledger, skip: set[str], dest: Path) -> int:
    """Write the missing requests to one file in the batch line format (what `vllm run-batch -i`
    reads); their rows go to the ledger so `read_offline` maps custom_ids back. Returns lines."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    rows: dict[str, list[str]] = {}
    with tmp.open("wb") as f:
        for cid, keys, line in job_lines(manifest, jobs, skip):
            f.write(line)
            rows[cid] = keys
    ledger.record("offline", path=str(dest), rows=rows)  # before the file exists under its name
    os.replace(tmp, dest)
    return len(rows)


def read_offline(reader: Reader, ledger: Ledger, path: Path) -> Outcome:
    """Store an engine's output file (`vllm run-batch -o`, or a provider's output file). Lines are
    matched by custom_id to requests written by `write_offline` or sent in a batch; a line
    matching none is reported, not stored; a line cut short is reported by number."""
    batch_rows: dict[str, list[str]] = {}
    for f in ledger.files.values():
        batch_rows.update(f["rows"])

    def lookup(cid: str) -> list[str] | None:
        return ledger.offline.get(cid) or batch_rows.get(cid)

    with path.open("rb") as f:
        return reader.read(f, lookup)
