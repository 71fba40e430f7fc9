"""Soak: a full run against the local teacher under a fault mix, a 429 burst and repeated `kill -9`
of the `curator run` process, checked against the server's own log of what it handed out.

Used by `bench/soak.py` (full size, prints figures) and `tests/test_soak.py` (CI size, asserts).

How the checks work. The teacher (its own process) logs one line per chat request: arrival and
end time, a hash of the messages, the status, the injected fault and, for an answer, its
completion id (curator/teacher/reqlog.py). Every stored row carries the completion id it came
from (`request_id`), so each answer the server handed out is either in the store or not:
- an answer not stored must have been in flight at a kill: requested before a kill (or within
  SEND_LAG_S after it: sent before, handled after), answered no earlier than `grace_s` before it
  (the killed client still had to parse, journal and fsync it); any other unstored answer is lost;
- a prompt answered more than once was paid twice; only answers lost at a kill may cause that;
- a key in more than one stored row is a duplicate.
Then the finished dataset is compared with an uninterrupted run of the same manifest (no faults,
no kills, the same port so the keys match): same keys, same answers, same verdicts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

# Per-request fault probabilities (the brief's mix: 10% 429, 5% 500/503, 2% timeouts, 2% resets,
# 1% malformed JSON, 1% empty body).
FAULT_MIX = {"429": 0.10, "500": 0.025, "503": 0.025, "timeout": 0.02, "reset": 0.02, "malformed": 0.01, "empty": 0.01}
# Outcomes, so that every filter of r1-math has something to reject (and near_dup has clusters).
OUTCOME_MIX = {"right": 0.74, "wrong": 0.08, "truncated": 0.04, "no_boxed": 0.04, "mixed_lang": 0.03,
               "duplicate": 0.04, "degenerate": 0.03}

# How long after a kill a request the killed client had already sent may still reach the handler.
SEND_LAG_S = 0.25


@dataclass
class SoakOptions:
    requests: int = 2000  # prompts, one sample each: one request each when nothing fails
    kills: int = 5
    seed: int = 0
    concurrency: int = 64
    latency_ms: float = 5.0
    jitter_ms: float = 5.0
    http: str = "openai"
    burst_s: float = 10.0  # 100% 429 for this long ...
    burst_at: float = 0.3  # ... from the server's (burst_at * requests)-th request
    burst_retry_after_s: float = 1.0
    retry_after_s: float = 0.02
    # Client timeout; the server's timeout faults hang far longer. Every timeout fault costs
    # this much wall time, and more once congestion cut the in-flight window to one or two.
    timeout_s: float = 1.0
    max_retries: int = 12  # with the burst's Retry-After, enough to ride out the burst
    shard_rows: int = 250  # small, so that kills also land around compactions
    chain: str = str(ROOT / "filters" / "r1-math.yaml")
    # A killed client may not have stored answers it received up to this long before the kill
    # (parse, queue, journal fsync; the figures print the measured lag of stored answers).
    grace_s: float = 1.0
    session_timeout_s: float = 900.0
    fault_mix: dict[str, float] = field(default_factory=lambda: dict(FAULT_MIX))


@dataclass
class Session:
    command: str
    started: float
    ended: float = 0.0
    killed_at: float | None = None  # epoch seconds
    stored_at_kill: int | None = None
    returncode: int | None = None
    survivors: list[str] = field(default_factory=list)  # its group's processes still alive a session later
    stderr_tail: str = ""


# ------------------------------------------------------------------------------ setup


def write_problems(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            a, b, c = rng.randint(2, 900), rng.randint(2, 900), rng.randint(2, 9)
            # The index first: the server finds gold answers by the first 40 characters.
            q = f"Problem {i}: a shop has {a} boxes and gets {b} more, then sells {c}. How many boxes are left?"
            f.write(json.dumps({"id": f"q{i}", "question": q, "answer": f"#### {a + b - c}"}) + "\n")


def write_manifest(path: Path, base_url: str, problems: Path, out: Path, o: SoakOptions) -> Path:
    path.write_text(
        f"""name: soak
source: {{path: {problems}, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}\\nPut your final answer within \\\\boxed{{}}."}}
teacher:
  base_url: {base_url}
  model: deepseek-reasoner
  http: {o.http}
  params: {{temperature: 0.6, max_tokens: 2048, n: 1, seed: 7}}
  price: {{input: 0.55, cached_input: 0.14, output: 2.19}}
limits: {{concurrency: {o.concurrency}, timeout_s: {o.timeout_s}, max_retries: {o.max_retries}, max_backoff_s: 2}}
store: {{shard_rows: {o.shard_rows}}}
filters: {o.chain}
output: {out}
""",
        encoding="utf-8",
    )
    return path


def server_config(o: SoakOptions, problems: Path, faults: bool, log: Path | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"latency_ms": o.latency_ms, "jitter_ms": o.jitter_ms, "mix": OUTCOME_MIX,
                           "problems": str(problems), "id_column": "id", "problem_column": "question",
                           "answer_column": "answer", "seed": o.seed, "cot_words": 60}
    if faults:
        cfg.update(fault_rate=o.fault_mix, retry_after_s=o.retry_after_s, hang_s=max(30.0, 10 * o.timeout_s))
        if o.burst_s > 0:
            cfg["fault_burst"] = {"fault": "429", "after_requests": int(o.burst_at * o.requests), "duration_s": o.burst_s,
                                  "retry_after_s": o.burst_retry_after_s}
    if log is not None:
        cfg["request_log"] = str(log)
    return cfg


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ------------------------------------------------------------------------------ progress and processes


class Progress:
    """Rows stored so far in OUT (shard rows + complete journal lines), cheap enough to poll."""

    def __init__(self, out: Path):
        self.out = out
        self._shard_rows: dict[Path, int] = {}

    def journals(self) -> set[Path]:
        from curator.store.sample_store import journal_paths

        return set(journal_paths(self.out))

    def count(self) -> int:
        import pyarrow.parquet as pq

        from curator.store.sample_store import journal_paths, shard_paths

        total = 0
        for p in shard_paths(self.out):
            if p not in self._shard_rows:
                try:
                    self._shard_rows[p] = pq.ParquetFile(p).metadata.num_rows
                except (OSError, ValueError):
                    continue  # vanished or not readable yet
            total += self._shard_rows[p]
        for p in journal_paths(self.out):
            try:
                total += p.read_bytes().count(b"\n")
            except OSError:
                pass  # compacted away between listing and reading
        return total


def _group_members(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # Own session: whatever the run forks (filter workers) stays findable by its group after the
    # kill, to count and clean up orphans. The kill itself only hits the run's own pid.
    return subprocess.Popen([sys.executable, "-m", "curator", *args, "--no-progress"], cwd=ROOT, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                            start_new_session=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def _reap_group(pgid: int) -> list[str]:
    """SIGKILL (by pid) what a killed run left behind in its process group; their command lines."""
    left = _group_members(pgid)
    names = [_cmdline(pid) for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return names


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_sessions(manifest: Path, out: Path, o: SoakOptions, logs: Path, max_final: int = 5,
                 burst_started: Callable[[], float | None] = lambda: None) -> list[Session]:
    """`curator run`, then `curator resume` after each of the `kills` SIGKILLs, until a session
    ends by itself with success (at most `max_final` such sessions, for runs that end with
    failed prompts after retries)."""
    rng = random.Random(o.seed)
    lo, hi = max(1, int(0.05 * o.requests)), max(2, int(0.95 * o.requests))
    span = range(lo, hi)
    targets = sorted(rng.sample(span, o.kills)) if o.kills <= len(span) else sorted(rng.choice(span) for _ in range(o.kills))
    progress = Progress(out)
    sessions: list[Session] = []
    killed: list[tuple[Session, int]] = []  # (session, its process group), not swept yet
    finals = 0
    burst_killed, burst_at, next_poll = False, None, 0.0

    def sweep() -> None:
        # A killed run's children get a whole session to notice and exit by themselves (the
        # next run starts at once, as under a supervisor); whatever is left then is an orphan.
        while killed:
            sess, pgid = killed.pop()
            sess.survivors = _reap_group(pgid)

    try:
        while True:
            k = len(sessions)
            args = ["run", str(manifest)] if k == 0 else ["resume", str(out)]
            err = logs / f"session-{k:02d}.err"
            kill_now = k < len(targets)
            before = progress.count()
            old_journals = progress.journals()
            s = Session(args[0], time.time())
            p = _start(args, err)
            deadline = time.monotonic() + o.session_timeout_s
            if kill_now:
                # Kill once this session stored something of its own (recovery of the old
                # journals is over and the count grew) and the count passed this kill's random
                # target; then a random few ms more, so the kill lands anywhere between fsyncs
                # and compactions.
                # The session running when the 429 burst starts is killed inside it (nothing is
                # stored then, so a stored-count target could never land there).
                target = max(targets[k], before + 1)
                jitter = rng.uniform(0, 0.05)
                while p.poll() is None and time.monotonic() < deadline:
                    if not (progress.journals() & old_journals) and progress.count() >= target:
                        break
                    if burst_at is None and not burst_killed and o.burst_s > 0 and time.monotonic() >= next_poll:
                        burst_at, next_poll = burst_started(), time.monotonic() + 0.1
                    if burst_at is not None and not burst_killed and time.time() - burst_at < o.burst_s / 2:
                        burst_killed = True
                        jitter = rng.uniform(0, o.burst_s / 3)
                        break
                    time.sleep(0.01)
                time.sleep(jitter)
                if p.poll() is None:
                    sweep()
                    s.stored_at_kill = progress.count()
                    s.killed_at = time.time()
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
                    killed.append((s, p.pid))
            try:
                s.returncode = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                s.returncode = p.wait()
                _reap_group(p.pid)
                s.stderr_tail = _tail(err)
                sessions.append(s)
                raise RuntimeError(f"session {k} ({args[0]}) did not end within {o.session_timeout_s} s:\n{s.stderr_tail}")
            s.ended = time.time()
            s.stderr_tail = _tail(err)
            sessions.append(s)
            if s.killed_at is None:
                if s.returncode == 0:  # complete (fewer kills than asked if it ended before a target)
                    return sessions
                if s.returncode != 3:  # 3: failed prompts after retries, resume sends them again
                    raise RuntimeError(f"session {k} ({args[0]}) failed with code {s.returncode}:\n{s.stderr_tail}")
                finals += 1
                if finals > max_final:
                    raise RuntimeError(f"run still incomplete after {finals} unkilled sessions:\n{s.stderr_tail}")
    finally:
        sweep()


# ------------------------------------------------------------------------------ checks


def read_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def _stored(out: Path) -> dict[str, Any]:
    """Raw rows of the finished output (every shard row and journal line, no dedup view)."""
    import duckdb

    from curator.teacher.reqlog import prompt_hash
    from curator.store.journal import read_journal
    from curator.store.sample_store import journal_paths, shard_paths

    rows: list[tuple[str, str, str, str, str, float]] = []
    files = [str(p) for p in shard_paths(out)]
    if files:
        con = duckdb.connect()
        try:
            rows = con.execute("SELECT key, request_id, messages_json, cot, completion, created_at FROM read_parquet($f, union_by_name=true)",
                               {"f": files}).fetchall()
        finally:
            con.close()
    for p in journal_paths(out):
        rows.extend((r["key"], r.get("request_id"), r["messages_json"], r["cot"], r["completion"], r["created_at"])
                    for r in read_journal(p))
    counts = Counter(r[0] for r in rows)
    return {
        "rows": len(rows),
        "keys": set(counts),
        "duplicates": sum(c - 1 for c in counts.values()),
        "request_ids": Counter(r[1] for r in rows),
        "prompt_to_key": {prompt_hash(json.loads(r[2])): r[0] for r in rows},
        "content": {r[0]: (r[3], r[4]) for r in rows},
        "created_at": {r[1]: r[5] for r in rows},
    }


def _verdicts(out: Path) -> tuple[set[tuple], set[tuple]]:
    from curator.store import catalog

    con = catalog.connect(out, read_only=True)
    try:
        verdicts = set(con.execute("SELECT key, step, filter, passed, reason, details FROM verdicts").fetchall())
        samples = set(con.execute("SELECT key, accepted, reject_reason FROM samples").fetchall())
    finally:
        con.close()
    return verdicts, samples


def compare_datasets(out: Path, ref: Path) -> dict[str, Any]:
    a, b = _stored(out), _stored(ref)
    va, sa = _verdicts(out)
    vb, sb = _verdicts(ref)
    same_content = sum(1 for k, v in a["content"].items() if b["content"].get(k) == v)
    return {
        "keys_equal": a["keys"] == b["keys"],
        "keys_only_in_soak": len(a["keys"] - b["keys"]),
        "keys_only_in_reference": len(b["keys"] - a["keys"]),
        "answers_differing": len(a["content"]) - same_content,
        "verdicts_equal": va == vb and sa == sb,
        "verdict_rows": len(va),
        "verdict_rows_differing": len(va ^ vb),
        "accepted": sum(1 for r in sa if r[1]),
        "reference_accepted": sum(1 for r in sb if r[1]),
        "equal": a["keys"] == b["keys"] and same_content == len(a["content"]) and va == vb and sa == sb,
    }


def analyse(log: list[dict[str, Any]], out: Path, sessions: list[Session], grace_s: float, expected: int) -> dict[str, Any]:
    stored = _stored(out)
    kills = [s.killed_at for s in sessions if s.killed_at is not None]
    answers = [r for r in log if r.get("status") == 200 and r.get("fault") is None and r.get("id")]

    def at_a_kill(r: dict[str, Any]) -> bool:
        # t0 may trail the kill by a little: a request the client sent just before it died
        # reaches the handler a moment later. The next session sends nothing for a second or
        # more (interpreter start, recovery), so SEND_LAG_S cannot take in its requests.
        return any(r["t0"] <= k + SEND_LAG_S and r["t1"] >= k - grace_s for k in kills)

    unstored = [r for r in answers if r["id"] not in stored["request_ids"]]
    unstored_at_kill = [r for r in unstored if at_a_kill(r)]

    def before_next_kill(r: dict[str, Any]) -> float | None:
        later = [k for k in kills if k >= r["t0"]]
        return round(min(later) - r["t1"], 3) if later else None
    per_prompt = Counter(r.get("prompt") for r in answers)
    unmapped = [p for p in per_prompt if p not in stored["prompt_to_key"]]
    # How long after the server sent an answer the client had turned it into a record: what
    # grace_s must cover (plus the journal fsync).
    lags = sorted(stored["created_at"][r["id"]] - r["t1"] for r in answers if r["id"] in stored["created_at"])
    return {
        "requests_sent": len(log),
        "answers_served": len(answers),
        "answers_stored": stored["rows"],
        "distinct_keys_stored": len(stored["keys"]),
        "expected_keys": expected,
        "duplicates_stored": stored["duplicates"],
        "answers_not_stored": len(unstored),
        "answers_not_stored_in_flight_at_kill": len(unstored_at_kill),
        "answers_lost": len(unstored) - len(unstored_at_kill),
        "requests_paid_twice": sum(c - 1 for c in per_prompt.values()),
        "requests_in_flight_at_kills": sum(1 for r in log if "t1" in r and at_a_kill(r)),
        "answered_prompts_never_stored": len(unmapped),
        "answer_to_record_lag_s": {"p50": round(lags[len(lags) // 2], 4), "p99": round(lags[int(len(lags) * 0.99)], 4),
                                   "max": round(lags[-1], 4)} if lags else None,
        "lost_detail": [{"t0": r["t0"], "t1": r["t1"], "kill_minus_t1": before_next_kill(r)}
                        for r in unstored if not at_a_kill(r)][:20],
        "statuses": dict(sorted(Counter(str(r.get("fault") or r.get("status")) for r in log).items())),
    }


# ------------------------------------------------------------------------------ the whole soak


def soak(o: SoakOptions, workdir: Path | None = None) -> dict[str, Any]:
    """Reference run, soak run with kills, checks; returns the figures (a JSON-able dict)."""
    from curator.teacher.runner import ServerProcess

    work = Path(workdir or tempfile.mkdtemp(prefix="curator-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    problems = work / "problems.jsonl"
    write_problems(problems, o.requests, o.seed)

    # Uninterrupted reference first; the soak server then takes the same port, so the keys
    # (which hash the endpoint) are comparable one to one.
    ref_out = work / "ref"
    srv = ServerProcess(server_config(o, problems, faults=False, log=None))
    try:
        port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
        ref_manifest = write_manifest(work / "ref.yaml", srv.base_url, problems, ref_out, o)
        t0 = time.perf_counter()
        p = _start(["run", str(ref_manifest)], logs / "reference.err")
        rc = p.wait(timeout=o.session_timeout_s)
        ref_wall = time.perf_counter() - t0
        ref_requests = srv.stats()["requests"]
    finally:
        srv.stop()
    if rc != 0:
        raise RuntimeError(f"reference run failed ({rc}):\n{_tail(logs / 'reference.err')}")

    out = work / "soak"
    req_log = work / "requests.jsonl"
    srv = _server_on_port(server_config(o, problems, faults=True, log=req_log), port)
    try:
        manifest = write_manifest(work / "soak.yaml", srv.base_url, problems, out, o)
        t0, e0 = time.perf_counter(), time.time()
        sessions = run_sessions(manifest, out, o, logs, burst_started=lambda: srv.stats().get("burst_started_at"))
        wall = time.perf_counter() - t0
        server_stats = srv.stats()
    finally:
        srv.stop()  # flushes and closes the request log

    figures: dict[str, Any] = {"options": asdict(o), "workdir": str(work)}
    figures.update(analyse(read_log(req_log), out, sessions, o.grace_s, o.requests))
    kills = [s for s in sessions if s.killed_at is not None]
    burst_at = server_stats.get("burst_started_at")
    figures.update({
        "server_requests": server_stats["requests"],
        "faults_injected": server_stats["faults"],
        "kills": len(kills),
        "kills_during_sampling": sum(1 for s in kills if s.stored_at_kill is not None and s.stored_at_kill < o.requests),
        "stored_at_kills": [s.stored_at_kill for s in kills],
        "kill_times": [s.killed_at for s in kills],
        "orphans_after_kills": sum(len(s.survivors) for s in kills),
        "orphan_commands": sorted(Counter(c for s in kills for c in s.survivors).items()),
        "sessions": len(sessions),
        "session_codes": [s.returncode for s in sessions],
        "burst_started_s": None if burst_at is None else round(burst_at - e0, 2),
        "burst_s": o.burst_s,
        "kills_in_burst": sum(1 for s in kills if burst_at is not None and burst_at <= s.killed_at <= burst_at + o.burst_s),
        "wall_s": round(wall, 2),
        "requests_per_s": round(server_stats["requests"] / wall, 1),
        "samples_per_s": round(o.requests / wall, 1),
        "reference_wall_s": round(ref_wall, 2),
        "reference_requests": ref_requests,
        "reference_samples_per_s": round(o.requests / ref_wall, 1),
    })
    figures["dataset"] = compare_datasets(out, ref_out)
    return figures


def _server_on_port(cfg: dict[str, Any], port: int, tries: int = 50):
    """The port was just freed by the reference server; retry briefly if the OS still holds it."""
    from curator.teacher.runner import ServerProcess

    for i in range(tries):
        try:
            return ServerProcess(cfg, port=port)
        except (RuntimeError, TimeoutError):
            if i == tries - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def violations(f: dict[str, Any]) -> list[str]:
    """The invariants a soak must hold; empty when all hold."""
    bad = []
    if f["duplicates_stored"]:
        bad.append(f"{f['duplicates_stored']} duplicate rows stored")
    if f["answers_lost"]:
        bad.append(f"{f['answers_lost']} answers lost (served, not stored, not in flight at a kill)")
    if f["requests_paid_twice"] > f["requests_in_flight_at_kills"]:
        bad.append(f"{f['requests_paid_twice']} requests paid twice > {f['requests_in_flight_at_kills']} in flight at kills")
    if f["requests_paid_twice"] > f["answers_not_stored_in_flight_at_kill"]:
        bad.append(f"{f['requests_paid_twice']} paid twice > {f['answers_not_stored_in_flight_at_kill']} answers lost at kills")
    if f["distinct_keys_stored"] != f["expected_keys"]:
        bad.append(f"{f['distinct_keys_stored']} keys stored, expected {f['expected_keys']}")
    if f["kills_during_sampling"] != f["options"]["kills"]:
        bad.append(f"{f['kills_during_sampling']} kills landed during sampling, asked for {f['options']['kills']}")
    if f["orphans_after_kills"]:
        bad.append(f"{f['orphans_after_kills']} processes of killed runs still alive a session later: {f['orphan_commands']}")
    if f["server_requests"] != f["requests_sent"]:
        bad.append(f"server counted {f['server_requests']} requests, its log {f['requests_sent']}")
    if not f["dataset"]["equal"]:
        bad.append(f"final dataset differs from the uninterrupted run: {f['dataset']}")
    return bad


def format_figures(f: dict[str, Any]) -> str:
    o = f["options"]
    d = f["dataset"]
    lines = [
        f"soak: {o['requests']} samples, {o['kills']} kills, seed {o['seed']}, concurrency {o['concurrency']}, "
        f"latency {o['latency_ms']:g}+{o['jitter_ms']:g} ms, http {o['http']}",
        f"  requests sent (server log)        {f['requests_sent']}   (server /stats: {f['server_requests']})",
        f"  faults injected                   {f['faults_injected']}",
        f"  429 burst                         {f['burst_s']:g} s from t={f['burst_started_s']} s; kills inside it: {f['kills_in_burst']}",
        f"  answers served (200, no fault)    {f['answers_served']}",
        f"  answers stored                    {f['answers_stored']}   (distinct keys {f['distinct_keys_stored']} of {f['expected_keys']})",
        f"  duplicates stored                 {f['duplicates_stored']}",
        f"  answers not stored                {f['answers_not_stored']}   (in flight at a kill: {f['answers_not_stored_in_flight_at_kill']})",
        f"  answers lost                      {f['answers_lost']}",
        f"  requests paid twice               {f['requests_paid_twice']}   (requests in flight at kills: {f['requests_in_flight_at_kills']})",
        f"  kills during sampling             {f['kills_during_sampling']}/{f['kills']}   (stored at kills: {f['stored_at_kills']})",
        f"  orphan processes after kills      {f['orphans_after_kills']}   {f['orphan_commands']}",
        f"  answer -> record lag (client)     {f['answer_to_record_lag_s']}   (grace at kills {o['grace_s']} s)",
        f"  sessions                          {f['sessions']}   (exit codes {f['session_codes']})",
        f"  final dataset == uninterrupted    {d['equal']}   (keys equal {d['keys_equal']}, answers differing "
        f"{d['answers_differing']}, verdict rows {d['verdict_rows']}, differing {d['verdict_rows_differing']}, "
        f"accepted {d['accepted']} vs {d['reference_accepted']})",
        f"  soak wall time                    {f['wall_s']} s   ({f['requests_per_s']} requests/s, {f['samples_per_s']} samples/s)",
        f"  uninterrupted run                 {f['reference_wall_s']} s   ({f['reference_requests']} requests, "
        f"{f['reference_samples_per_s']} samples/s)",
    ]
    return "\n".join(lines)


__all__ = ["SoakOptions", "soak", "violations", "format_figures", "FAULT_MIX", "OUTCOME_MIX"]
