"""Faults and bad input end to end: real `curator` subprocesses, a real local teacher, real OS
errors (a size-limited tmpfs for ENOSPC, an immutable directory for EPERM), real damaged files."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, cli, write_manifest

from curator.teacher.config import ServerConfig
from curator.teacher.runner import ServerProcess
from curator.store.journal import read_journal
from curator.store.rescue import rescue_paths
from curator.store.sample_store import QUARANTINE, journal_paths, stored_keys

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux mounts and file attributes")

PROBLEMS = 40
N = 2


def server_stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats").read())


def manifest(tmp: Path, url: str, *, shard_rows: int, concurrency: int = 4, name: str = "m.yaml", out: str = "out") -> Path:
    m = write_manifest(tmp, url, n=N, problems=PROBLEMS, limits=f", concurrency: {concurrency}", name=name, out=out)
    m.write_text(m.read_text() + f"store: {{shard_rows: {shard_rows}}}\n")
    return m


def raw_keys(out: Path) -> tuple[int, int]:
    """(rows, distinct keys) over the shard files themselves: duplicates would show here."""
    return duckdb.connect().execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{out}/shards/*.parquet')").fetchall()[0]


def one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def teacher():
    """A teacher in its own process, slow enough that a run is still going when the test acts."""
    servers = []

    def start(**cfg) -> str:
        srv = ServerProcess(ServerConfig.load({"latency_ms": 40, "cot_words": 120, **cfg}))
        servers.append(srv)
        return srv.base_url

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def tmpfs():
    """Mount a size-limited tmpfs (a real ENOSPC); skipped where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(path: Path, size_kb: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the disk-full test needs one")
        mounted.append(path)
        return path

    yield mount
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def _assert_stopped_cleanly(out: Path, stderr: str, message: str) -> str:
    line = one_error_line(stderr)
    assert message in line and f"{out}/shards/shard-" in line and "curator resume" in line, line
    # No half-written shard, and every shard that is there reads in full.
    assert not list((out / "shards").glob(".*partial"))
    for p in (out / "shards").glob("*.parquet"):
        pq.read_table(p)
    # The answers the failed shard was to hold are still in the journal.
    assert journal_paths(out)
    return line


def _resume_completes(out: Path, url: str, stored_before: set[str]) -> None:
    sent_before = server_stats(url)["requests"]
    r = cli("resume", out, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    # Pays nothing twice: one request (n=2) per prompt that had no stored answer, and no more.
    missing_prompts = PROBLEMS - len(stored_before) // N
    assert server_stats(url)["requests"] - sent_before == missing_prompts
    assert stored_keys(out) >= stored_before and len(stored_keys(out)) == PROBLEMS * N
    assert raw_keys(out) == (PROBLEMS * N, PROBLEMS * N)
    assert not journal_paths(out)


def test_disk_full_while_writing_a_shard_then_resume(tmp_path, teacher, tmpfs):
    url = teacher()
    m = manifest(tmp_path, url, shard_rows=10)
    out = tmp_path / "out"
    tmpfs(out / "shards", 48)  # room for two shards of 10 answers (~17 kB each), not for all 80
    r = cli("run", m, "--no-progress", timeout=300)
    assert r.returncode == 2, r.stderr
    _assert_stopped_cleanly(out, r.stderr, "No space left on device (ENOSPC)")
    assert list((out / "shards").glob("*.parquet")), "the disk filled before the first shard: make the tmpfs bigger"
    stored = stored_keys(out)
    assert 0 < len(stored) < PROBLEMS * N
    # The journal sits on a disk with room: answers still in flight when the shard write failed
    # are journaled too, so every answer the server sent is stored (nothing paid for is lost).
    assert server_stats(url)["requests"] == len(stored) // N
    # `status` reads the partial output fine.
    st = cli("status", out, "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["stored"] == len(stored), st.stderr

    subprocess.run(["mount", "-o", "remount,size=64m", str(out / "shards")], check=True)  # free space
    _resume_completes(out, url, stored)


def test_disk_full_under_the_journal_keeps_answers_in_flight_in_a_rescue_journal(tmp_path, teacher, tmpfs, monkeypatch):
    """The journal's own disk fills: the answers still arriving (paid for) go to a rescue journal
    on another disk, the error line names it, and resume stores them without buying them again."""
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("CURATOR_RESCUE_DIR", str(rescue))
    # Answers spread over time (jitter), so the journal takes a few appends before its disk fills
    # rather than one batch of all eight that fails whole.
    url = teacher(jitter_ms=150)
    m = manifest(tmp_path, url, shard_rows=30, concurrency=8)
    out = tmp_path / "out"
    tmpfs(out / "journal", 8)  # a few answers (~1.5 kB each), not a journal of 30
    r = cli("run", m, "--no-progress", timeout=300)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert f"appending to journal {out}/journal/" in line and "No space left on device (ENOSPC)" in line, line
    rescued = rescue_paths(out)
    assert len(rescued) == 1 and f"kept in {rescued[0]} on another disk" in line and "curator resume" in line, line
    in_rescue = {r["key"] for r in read_journal(rescued[0])}
    stored = stored_keys(out)  # OUT's journal (the lines written before the disk filled) and shards
    assert in_rescue and stored and not in_rescue & stored
    # Nothing paid for is lost: every answer the teacher sent is in OUT or in the rescue journal.
    assert server_stats(url)["requests"] == len(stored | in_rescue) // N < PROBLEMS
    # `status` counts them too, and says where they are.
    st = cli("status", out)
    assert st.returncode == 0 and f"{len(in_rescue)} of them are in a rescue journal" in st.stdout, st.stdout + st.stderr
    info = json.loads(cli("status", out, "--json").stdout)
    assert (info["stored"], info["in_rescue"]) == (len(stored) + len(in_rescue), len(in_rescue))

    subprocess.run(["mount", "-o", "remount,size=64m", str(out / "journal")], check=True)  # free space
    sent_before = server_stats(url)["requests"]
    r = cli("resume", out, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"stored {len(in_rescue)} answers from rescue journal(s) {rescued[0]}" in r.stderr, r.stderr
    assert server_stats(url)["requests"] - sent_before == PROBLEMS - len(stored | in_rescue) // N
    assert raw_keys(out) == (PROBLEMS * N, PROBLEMS * N)
    assert not rescue_paths(out) and not journal_paths(out)


def test_permission_denied_on_the_shard_directory_then_resume(tmp_path, teacher):
    """As root chmod does not stop us; an immutable directory does (EPERM)."""
    url = teacher()
    m = manifest(tmp_path, url, shard_rows=10)
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    r = subprocess.run(["chattr", "+i", str(out / "shards")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {r.stderr.strip()}")
    try:
        r = cli("run", m, "--no-progress", timeout=300)
    finally:
        subprocess.run(["chattr", "-i", str(out / "shards")], check=True)
    assert r.returncode == 2, r.stderr
    _assert_stopped_cleanly(out, r.stderr, "Operation not permitted (EPERM)")
    stored = stored_keys(out)
    assert stored and not list((out / "shards").glob("*.parquet"))
    _resume_completes(out, url, stored)


def test_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, teacher):
    # 20 rounds of 1.5 s: the first run outlasts two refused CLI starts even on loaded cores.
    url = teacher(latency_ms=1500)
    m = manifest(tmp_path, url, shard_rows=25, concurrency=2)
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "curator", "run", str(m), "--no-progress"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not journal_paths(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal_paths(out) and first.poll() is None, "the first run ended before the second started"
        sent = server_stats(url)["requests"]
        for cmd in (("run", m), ("resume", out)):
            r = cli(*cmd, "--no-progress")
            assert r.returncode == 2, r.stderr
            line = one_error_line(r.stderr)
            assert "another curator process is writing here" in line and str(out / ".lock") in line, line
        assert first.poll() is None, "the refused runs must not disturb the first"
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    # The first run's data is whole: every key once, and exactly one request per prompt was sent,
    # so the refused runs bought nothing.
    assert raw_keys(out) == (PROBLEMS * N, PROBLEMS * N)
    assert server_stats(url)["requests"] == PROBLEMS and sent <= PROBLEMS


def _complete_run(tmp_path: Path, url: str, shard_rows: int) -> Path:
    m = manifest(tmp_path, url, shard_rows=shard_rows)
    r = cli("run", m, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    return tmp_path / "out"


def test_truncated_shard_is_named_by_readers_and_quarantined_on_resume(tmp_path, teacher):
    url = teacher()
    out = _complete_run(tmp_path, url, shard_rows=20)
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) >= 3
    victim = shards[1]
    lost = set(pq.read_table(victim, columns=["key"]).column("key").to_pylist())
    data = victim.read_bytes()
    cut = random.Random(7).randrange(1, len(data) - 1)  # a power cut: the file ends anywhere
    victim.write_bytes(data[:cut])

    chain = tmp_path / "chain.yaml"
    chain.write_text("name: fmt\nsteps:\n  - filter: format\n")
    for cmd in (("status", out, "--json"), ("report", out, "--json"), ("filter", out, "--chain", chain)):
        r = cli(*cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        assert f"warning: {victim}: unreadable Parquet file" in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)
    assert json.loads(cli("status", out, "--json").stdout)["stored"] == PROBLEMS * N - len(lost)

    sent = server_stats(url)["requests"]
    r = cli("resume", out, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{victim}: unreadable shard" in r.stderr and str(out / QUARANTINE) in r.stderr, r.stderr
    kept = out / QUARANTINE / victim.name
    assert kept.read_bytes() == data[:cut]  # paid data is never deleted
    assert not victim.exists()
    # Exactly the prompts of the rows not salvaged were requested again (the shard's footer copy
    # gives back the row groups before the cut: all or none here, a shard of 20 is one group).
    salvaged = int(re.search(r"(\d+) rows salvaged", r.stderr).group(1))
    assert salvaged in (0, len(lost))
    assert server_stats(url)["requests"] - sent == (len(lost) - salvaged) // N
    assert raw_keys(out) == (PROBLEMS * N, PROBLEMS * N)
    r = cli("status", out, "--json")
    assert r.returncode == 0 and "warning" not in r.stderr and json.loads(r.stdout)["stored"] == PROBLEMS * N


def test_garbled_journal_tail_after_a_kill_is_named_and_its_answers_requested_again(tmp_path, teacher):
    url = teacher(latency_ms=100)
    m = manifest(tmp_path, url, shard_rows=100_000)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "curator", "run", str(m), "--no-progress"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    rows = 0
    while time.monotonic() < deadline and rows < 30:
        rows = sum(f.read_bytes().count(b"\n") for f in journal_paths(out)) if (out / "journal").exists() else 0
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert rows >= 30
    journal = journal_paths(out)[0]
    lines = journal.read_bytes().split(b"\n")
    good = [l for l in lines if l][:20]
    # The disk garbled the tail: two whole lines of noise, then a line cut mid-record.
    journal.write_bytes(b"\n".join(good) + b"\n" + b"\x00\x00\xff garbage {\"key\n" + b'{"not": "a record"}\n' + lines[21][:40])
    recs = [json.loads(l) for l in good]
    want = {r["key"] for r in recs}
    whole = [pid for pid in {r["prompt_id"] for r in recs} if sum(r["prompt_id"] == pid for r in recs) == N]

    r = cli("status", out, "--json")
    assert r.returncode == 0 and f"warning: {journal}: line 21 is garbled" in r.stderr, r.stderr
    assert json.loads(r.stdout)["stored"] == len(want)

    sent = server_stats(url)["requests"]
    r = cli("resume", out, "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{journal}: 2 garbled line(s) (21, 22)" in r.stderr, r.stderr
    assert (out / QUARANTINE / journal.name).exists()  # kept, not deleted
    assert server_stats(url)["requests"] - sent == PROBLEMS - len(whole)  # one request per prompt not whole
    assert stored_keys(out) >= want and raw_keys(out) == (PROBLEMS * N, PROBLEMS * N)


# --- secrets ------------------------------------------------------------------------------------------

KEY = "sk-curator-test-" + "Zq9x" * 8
KEY_ENV = "CURATOR_ROBUSTNESS_KEY"


def test_api_key_reaches_no_file_and_no_output(tmp_path, server):
    """Real runs with a key, including a server whose error replies quote the Authorization
    header; then every file under the test directory and every captured output is scanned."""
    from curator.redact import MASK

    env = {KEY_ENV: KEY}
    outputs: list[str] = []

    def run(*args, code: int | None = 0):
        extra = ("--no-progress",) if args[0] in ("run", "resume") else ()
        r = cli(*args, *extra, env=env, timeout=300)
        outputs.extend([r.stdout, r.stderr])
        if code is not None:
            assert r.returncode == code, r.stderr
        return r

    chain = tmp_path / "chain.yaml"
    chain.write_text("name: fmt\nsteps:\n  - filter: format\n")
    # A: every request fails once with a 500 quoting the key, then succeeds; filtered, reported, exported.
    url = server(api_key=KEY, echo_auth=True, fail_first={"500": 1})
    (tmp_path / "a").mkdir()
    m = write_manifest(tmp_path / "a", url, n=1, problems=4, api_key_env=KEY_ENV, filters=str(chain))
    run("run", m)
    out = tmp_path / "a" / "out"
    run("status", out)
    run("report", out, "--json")
    run("filter", out, "--chain", chain)
    run("export", out, "--format", "messages", "--to", tmp_path / "a" / "export")
    assert (out / "report.html").exists() and list((tmp_path / "a" / "export").iterdir())
    # B: retries run out on every prompt: the errors (quoting the key) go to the receipt and stderr.
    url = server(api_key=KEY, echo_auth=True, fail_first={"500": 50})
    (tmp_path / "b").mkdir()
    m = write_manifest(tmp_path / "b", url, n=1, problems=2, api_key_env=KEY_ENV)
    r = run("run", m, code=3)
    assert "HTTP 500" in r.stderr and MASK in r.stderr, r.stderr
    receipt = json.loads(next((tmp_path / "b" / "out" / "receipts").glob("*.json")).read_text())
    assert receipt["errors"] and all(MASK in e for e in receipt["errors"]), receipt["errors"]
    # C: a 400 on the first request stops the run with one line, quoting the key.
    url = server(api_key=KEY, echo_auth=True, fail_first={"400": 1})
    (tmp_path / "c").mkdir()
    m = write_manifest(tmp_path / "c", url, n=1, problems=2, api_key_env=KEY_ENV)
    r = run("run", m, code=None)
    assert r.returncode != 0 and "HTTP 400" in one_error_line(r.stderr) and MASK in r.stderr, r.stderr
    # D: a key written into the manifest is refused, and the refusal does not repeat it.
    (tmp_path / "d").mkdir()
    m = write_manifest(tmp_path / "d", url, n=1, problems=2)
    m.write_text(m.read_text().replace("  params:", f"  api_key: {KEY}\n  params:"))
    r = run("run", m, code=None)
    assert r.returncode != 0 and "teacher.api_key is not allowed" in r.stderr, r.stderr
    m.unlink()  # the one file that holds the key on purpose

    scanned = 0
    for p in tmp_path.rglob("*"):
        if p.is_file():
            scanned += 1
            assert KEY.encode() not in p.read_bytes(), p
    assert scanned > 20
    for text in outputs:
        assert KEY not in text and KEY[-12:] not in text, text


def test_redact_masks_registered_keys_and_key_shapes():
    from curator.redact import MASK, redact, register_secret

    register_secret("plain-secret-value")
    assert redact("x plain-secret-value y") == f"x {MASK} y"
    assert redact("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {MASK}"
    assert redact('{"api_key": "zzzzzzzzzzzz"}') == f'{{"api_key": "{MASK}"}}'
    assert redact("key sk-proj-" + "a" * 30) == f"key {MASK}"
    assert redact("sk-learn and task-1, EMPTY, Bearer of news") == "sk-learn and task-1, EMPTY, Bearer of news"
