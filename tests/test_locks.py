"""One writer at a time on an output folder, readers beside it, and Ctrl-C at the worst moment:
real `curator` subprocesses against the project's local teacher, real Parquet and DuckDB files,
real SIGINTs, a real read-only mount (or chmod when not root).

- `curator filter OUT` is refused while a run or a worker writes to OUT (and a run, a worker or
  a resume while a filter does), with one line naming the holder; nothing stored is touched; a
  holder killed with -9 leaves nothing that blocks the next writer.
- status, report, export read a consistent snapshot while a run writes, and say it is in progress.
- A second Ctrl-C while a run stops leaves no duplicate shard and no misleading error.
- report, status, view's data and export --to DIR work on a read-only output folder; what must
  write says so in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT, cli, write_manifest

from curator.store.sample_store import journal_paths
from curator.teacher.config import ServerConfig
from curator.teacher.runner import ServerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX locks, signals and mounts as on Linux")


@pytest.fixture
def teacher():
    servers = []

    def start(**cfg) -> str:
        srv = ServerProcess(ServerConfig.load(cfg))
        servers.append(srv)
        return srv.base_url

    yield start
    for s in servers:
        s.stop()


def _popen(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curator", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait()


def _one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _wait_for(cond, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _stored_files(out: Path) -> dict[str, bytes]:
    """Every shard and verdict file (and chain.json) with its bytes."""
    files = [*(out / "shards").glob("*.parquet"), *(out / "verdicts").glob("*")]
    return {str(p.relative_to(out)): p.read_bytes() for p in files if p.is_file()}


def _raw_rows(out: Path) -> tuple[int, int]:
    """(rows, distinct keys) over the shard files themselves: a duplicate shard shows here."""
    if not list((out / "shards").glob("*.parquet")):
        return 0, 0
    return duckdb.connect().execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet('{out}/shards/*.parquet')").fetchall()[0]


def _names_holder(line: str, pid: int, command: str) -> None:
    assert f"pid {pid}" in line and f"host {socket.gethostname()}" in line and command in line and "since 20" in line, line


# ------------------------------------------------------------------------------------ writers


def test_filter_is_refused_while_a_run_writes_and_the_run_keeps_one_chain(tmp_path, teacher):
    url = teacher(latency_ms=300, mix={"right": 0.7, "no_boxed": 0.3})
    m = write_manifest(tmp_path, url, n=2, problems=40, limits=", concurrency: 2", filters="[{filter: format, params: {require_boxed: true}}]")
    other = tmp_path / "other.yaml"
    other.write_text("name: other\nsteps:\n  - filter: length\n    params: {max_total_tokens: 1}\n")
    out = tmp_path / "out"
    run = _popen("run", m, "--no-progress")
    try:
        _wait_for(lambda: journal_paths(out) or run.poll() is not None, "the run's first answers")
        assert run.poll() is None, run.communicate()
        chain = out / "verdicts" / "chain.json"
        chain_before = chain.read_text() if chain.exists() else None
        staged = set(out.glob(".verdicts-*"))
        r = cli("filter", out, "--chain", other)
        assert run.poll() is None, "the run ended before the filter was tried: make the teacher slower"
        assert r.returncode == 2, (r.stdout, r.stderr)
        line = _one_error(r.stderr)
        assert "another curator process is writing here" in line and "nothing was changed" in line, line
        _names_holder(line, run.pid, f"curator run {m}")
        # The refused filter staged nothing and replaced nothing.
        assert (chain.read_text() if chain.exists() else None) == chain_before
        assert set(out.glob(".verdicts-*")) == staged  # the run's own staging folder, and no second one
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    finally:
        _stop(run)
    # Every stored sample carries the run's chain's verdict, and only that chain's.
    st = json.loads(cli("status", out, "--json").stdout)
    assert st["stored"] == 80 and st["accepted"] + st["rejected"] == 80 and st["rejected"] > 0
    assert st["in_progress"] is None
    steps = duckdb.connect().execute(f"SELECT DISTINCT filter FROM read_parquet('{out}/verdicts/*.parquet')").fetchall()
    assert sorted(steps) == [("format",), ("response",)]  # the run's chain: the response step every chain starts with, + format


def test_writers_are_refused_while_a_filter_holds_out_and_a_killed_holder_is_taken_over(tmp_path, teacher):
    url = teacher(latency_ms=5)
    m = write_manifest(tmp_path, url, n=2, problems=20, filters="[{filter: format}]")
    out = tmp_path / "out"
    assert cli("run", m, "--no-progress").returncode == 0
    judge = teacher(fault_rate={"timeout": 1.0}, hang_s=600)  # a judge model that never answers: the filter holds OUT until killed
    slow = tmp_path / "slow.yaml"
    slow.write_text(f"name: slow\nsteps:\n  - filter: rubric_judge\n    params: {{base_url: '{judge}', model: teacher, concurrency: 1, retries: 0, timeout_s: 600}}\n")
    before = _stored_files(out)
    filt = _popen("filter", out, "--chain", slow)
    try:
        _wait_for(lambda: list(out.glob(".verdicts-*")) or filt.poll() is not None, "the filter's staging folder")
        assert filt.poll() is None, filt.communicate()
        for args, command in (((("run", m, "--no-progress")), "another curator process is writing here"),
                              (("run", m, "--worker", "1/2", "--no-progress"), "a curator process without --worker is writing here"),
                              (("resume", out, "--no-progress"), "another curator process is writing here")):
            r = cli(*args)
            assert r.returncode == 2, (args, r.stderr)
            line = _one_error(r.stderr)
            assert command in line, line
            _names_holder(line, filt.pid, f"curator filter {out} --chain {slow}")
        assert filt.poll() is None, "the filter ended before the writers were tried: make the judge slower"
        assert _stored_files(out) == before  # the refused writers touched nothing stored
        assert not list(out.glob(".lock-w*"))  # nor left a worker's lock behind
        os.kill(filt.pid, signal.SIGKILL)
        filt.wait()
    finally:
        _stop(filt)
    # The dead holder's lock is gone with it: the next writer takes OUT at once.
    r = cli("filter", out)
    assert r.returncode == 0, r.stderr
    assert "chain" in r.stdout and json.loads(cli("status", out, "--json").stdout)["accepted"] == 40


def test_filter_is_refused_while_a_worker_runs(tmp_path, teacher):
    url = teacher(latency_ms=300)
    m = write_manifest(tmp_path, url, n=2, problems=40, limits=", concurrency: 1", filters="[{filter: format}]")
    out = tmp_path / "out"
    worker = _popen("run", m, "--worker", "1/2", "--no-progress")
    try:
        _wait_for(lambda: journal_paths(out) or worker.poll() is not None, "the worker's first answers")
        assert worker.poll() is None, worker.communicate()
        before = _stored_files(out)
        r = cli("filter", out)
        assert worker.poll() is None, "the worker ended before the filter was tried"
        assert r.returncode == 2, r.stderr
        line = _one_error(r.stderr)
        _names_holder(line, worker.pid, f"curator run {m} --worker 1/2")
        assert not list(out.glob(".verdicts-*"))
        assert set(before) <= set(_stored_files(out))  # the worker goes on; nothing of it was replaced
        # The other worker of the same run still runs beside it.
        other = cli("run", m, "--worker", "2/2", "--no-progress", timeout=300)
        assert other.returncode == 0, other.stderr
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    finally:
        _stop(worker)
    assert _raw_rows(out) == (80, 80)


# ------------------------------------------------------------------------------------ readers


def test_readers_during_a_run_read_a_consistent_snapshot_and_say_a_run_is_in_progress(tmp_path, teacher):
    url = teacher(latency_ms=400)
    m = write_manifest(tmp_path, url, n=2, problems=80, limits=", concurrency: 1", filters="[{filter: format}]")
    m.write_text(m.read_text() + "store: {shard_rows: 4}\n")  # a compaction every few answers
    out = tmp_path / "out"
    run = _popen("run", m, "--no-progress")
    seen = 0
    checked = 0
    try:
        _wait_for(lambda: list((out / "shards").glob("*.parquet")) or run.poll() is not None, "the run's first shard")
        while run.poll() is None and checked < 2:
            st = cli("status", out, "--json")
            rep = cli("report", out, "--json", "--no-html")
            exp = cli("export", out, "--format", "hf", "--include-rejected", "--to", tmp_path / "exp")  # nothing is judged before the end
            alive = run.poll() is None
            for r in (st, rep, exp):
                assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
            if not alive:
                break
            checked += 1
            info, report = json.loads(st.stdout), json.loads(rep.stdout)
            for got in (info["in_progress"], report["in_progress"]):
                assert got and got[0]["pid"] == run.pid and got[0]["command"].startswith("curator run"), got
            for r in (st, rep, exp):
                notes = [line for line in r.stderr.splitlines() if "is being written right now" in line]
                assert len(notes) == 1 and f"pid {run.pid}" in notes[0], r.stderr
            # Whole answers only, and never fewer than an earlier look saw.
            assert info["stored"] >= seen and info["stored"] % 2 == 0, info
            seen = info["stored"]
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    finally:
        _stop(run)
    assert checked >= 1, "the run ended before a reader could look: make the teacher slower"
    st = cli("status", out, "--json")
    assert json.loads(st.stdout)["in_progress"] is None and "is being written" not in st.stderr
    assert json.loads(st.stdout)["stored"] == 160


# ------------------------------------------------------------------------------------ Ctrl-C


def _footer_or_partial(shards: Path) -> bool:
    try:
        return any(n.startswith(".") for n in os.listdir(shards))
    except FileNotFoundError:
        return False


def test_a_second_ctrl_c_while_a_run_stops_leaves_no_duplicate_and_no_misleading_error(tmp_path, teacher):
    """The first Ctrl-C makes the run compact what it holds; the second lands at moments around
    that compaction (seen from outside as its footer copy or temp file appearing)."""
    url = teacher(latency_ms=10, cot_words=600)
    timings = [("after", 0.0), ("after", 0.002), ("after", 0.005), ("after", 0.01), ("delay", 0.0), ("delay", 0.05)]
    for i, (how, d) in enumerate(timings):
        tmp = tmp_path / f"t{i}"
        tmp.mkdir()
        m = write_manifest(tmp, url, n=2, problems=800, limits=", concurrency: 32")
        m.write_text(m.read_text() + "store: {shard_rows: 1000000}\n")  # everything waits in the journal for the stop
        out = tmp / "out"
        run = _popen("run", m, "--no-progress")
        try:
            _wait_for(lambda out=out, run=run: sum(p.stat().st_size for p in journal_paths(out)) > 1_500_000 if journal_paths(out)
                      else run.poll() is not None, "answers in the journal")
            run.send_signal(signal.SIGINT)
            if how == "after":
                deadline = time.monotonic() + 20
                while not _footer_or_partial(out / "shards") and run.poll() is None and time.monotonic() < deadline:
                    pass
            time.sleep(d)
            if run.poll() is None:
                run.send_signal(signal.SIGINT)
            _, err = run.communicate(timeout=120)
        finally:
            _stop(run)
        where = f"second Ctrl-C {how} {d}s: {err[-2000:]}"
        assert run.returncode in (2, 130), where
        line = _one_error(err)
        assert line.startswith("error: interrupted: stored answers are kept") and "Errno" not in err, where
        rows, keys = _raw_rows(out)
        assert rows == keys > 0, where  # no key in two shards
        assert not journal_paths(out), where
        if i == 0:  # what is stored is whole: resume buys only what is missing and ends with every key once
            r = cli("resume", out, "--no-progress", timeout=300)
            assert r.returncode == 0, r.stderr
            assert _raw_rows(out) == (1600, 1600), where


# ------------------------------------------------------------------------------------ read-only


@pytest.fixture
def read_only(tmp_path):
    """A real read-only view of a folder: chmod -R a-w where that binds us (not root), else a
    read-only bind mount (root ignores permission bits); skipped where neither is possible."""
    mounted: list[Path] = []
    chmodded: list[Path] = []

    def make(src: Path) -> Path:
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "a-w", str(src)], check=True)
            chmodded.append(src)
            return src
        dst = tmp_path / "ro-view"
        dst.mkdir()
        for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,bind,ro", str(dst)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                for p in mounted:
                    subprocess.run(["umount", "-l", str(p)], capture_output=True)
                pytest.skip(f"running as root and cannot make a read-only bind mount ({r.stderr.strip()}): chmod would not bind root")
            if cmd[1] == "--bind":
                mounted.append(dst)
        assert subprocess.run(["touch", str(dst / "probe")], capture_output=True).returncode != 0, "the view is not read-only"
        return dst

    yield make
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)
    for p in chmodded:
        subprocess.run(["chmod", "-R", "u+w", str(p)], capture_output=True)


def test_readers_work_on_a_read_only_output_folder(tmp_path, teacher, read_only):
    url = teacher(latency_ms=5, mix={"right": 0.8, "no_boxed": 0.2})
    m = write_manifest(tmp_path, url, n=2, problems=20, filters="[{filter: format, params: {require_boxed: true}}, {filter: near_dup}]")
    assert cli("run", m, "--no-progress").returncode == 0
    src = tmp_path / "out"
    expected = json.loads(cli("status", src, "--json").stdout)
    ro = read_only(src)

    st = cli("status", ro, "--json")
    assert st.returncode == 0 and "Traceback" not in st.stderr, st.stderr
    got = json.loads(st.stdout)
    assert (got["stored"], got["accepted"], got["rejected"]) == (expected["stored"], expected["accepted"], expected["rejected"])
    plain = cli("status", ro)
    assert plain.returncode == 0 and f"{expected['stored']} samples" in plain.stdout, plain.stderr

    for args in (("report", ro, "--json"), ("report", ro)):
        r = cli(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        notes = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(notes) == 1 and "report.html" in notes[0] and "not written" in notes[0], r.stderr
    report = json.loads(cli("report", ro, "--json").stdout)
    assert report["sampled"] == expected["stored"] and report["accepted"] == expected["accepted"]
    assert cli("report", ro, "--json", "--html", tmp_path / "r.html").returncode == 0 and (tmp_path / "r.html").exists()

    # The viewer's data: the snapshot and the report beside it.
    from curator.audit.viewer.data import Holder

    h = Holder(ro)
    try:
        h.refresh()
        assert h.error is None and h.snap is not None and h.snap.meta["sampled"] == expected["stored"], h.error
        _wait_for(lambda: h.report_state in ("ready", "failed"), "the viewer's report", timeout=120)
        assert h.report_state == "ready", h.report_error
    finally:
        h.close()

    ex = cli("export", ro)
    assert ex.returncode == 2, ex.stderr
    line = _one_error(ex.stderr)
    assert "--to DIR" in line and "export" in line, line
    ex = cli("export", ro, "--to", tmp_path / "exp")
    assert ex.returncode == 0, ex.stderr
    assert len((tmp_path / "exp" / "train.jsonl").read_text().splitlines()) > 0

    # What must write says so in one line.
    r = cli("filter", ro)
    assert r.returncode == 2, r.stderr
    line = _one_error(r.stderr)
    assert "writes to the output folder" in line and "Read-only file system" in line or "Permission denied" in line, line
