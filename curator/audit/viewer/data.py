"""The viewer's data: a snapshot of an output directory, queried read-only with DuckDB.

A snapshot copies the narrow columns of every stored sample (no trace text) plus its verdicts into
a private DuckDB file in a temp folder, so a page over a million samples is a query over a small
local table; the text of one sample is read from its own Parquet row group when it is opened.
The output's catalog.duckdb is never opened (a running `curator run` may hold its lock); like
`status`/`report`, the snapshot reads the Parquet files, and the journal is only counted."""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from curator.audit.viewer.search import WordIndex, match_rows
from curator.records import SAMPLE_SCHEMA
from curator.audit.report import chain_info
from curator.store import catalog
from curator.store.layout import OutputDir
from curator.store.shards import readable_parquet
from curator.audit.viewer.query import LENGTH_COLUMNS, PAGE_MAX, SEARCH_FIELDS, SORTS, TEXT_COLUMNS, Query, ViewerError, _like  # noqa: F401

# Samples above which a snapshot (~350 MB at a million) is dropped before its successor is built.
BIG_SNAPSHOT = 200_000


def check_output_dir(out_dir: Path) -> None:
    out = OutputDir(out_dir)
    if not out_dir.is_dir():
        raise ViewerError(f"{out_dir}: no such output directory")
    if not out.shards.exists() and not out.journal.exists():
        raise ViewerError(f"{out_dir}: not a curator output directory (no shards/ or journal/)")


def _journal_rows(out_dir: Path) -> int:
    d = OutputDir(out_dir).journal
    return sum(p.read_bytes().count(b"\n") for p in d.glob("*.jsonl")) if d.exists() else 0


def _manifest_name(out_dir: Path) -> tuple[str | None, str | None]:
    p = OutputDir(out_dir).resolved_manifest
    if not p.exists():
        return None, None
    import yaml

    try:
        m = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    return m.get("name"), (m.get("teacher") or {}).get("model")


def _files_sql(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"



def _rows(cur: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


_NARROW = ["key", "prompt_id", "sample_index", "source", "model", "finish_reason", "cot_source", "prompt_tokens", "completion_tokens",
           "reasoning_tokens", "cached_tokens", "cost_usd", "latency_s", "attempts", "usage_estimated", "seq", "created_at"]


def _narrow_select(shards: list[Path]) -> str:
    """The columns the table shows, the text lengths, and where each row lives. A column no shard
    has (written before it existed) reads as null, as in the catalog's views."""
    types = {f.name: f.type for f in SAMPLE_SCHEMA}
    duck = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN"}
    present: set[str] = set()
    for p in shards:
        present.update(pq.read_schema(p).names)

    def col(name: str, expr: str | None = None) -> str:
        if name in present:
            return expr or name
        return f"CAST(NULL AS {duck[str(types[name])]})"

    cols = [f"{col(c)} AS {c}" for c in _NARROW]
    cols += [f"length(coalesce({col('cot')}, '')) AS cot_chars", f"length(coalesce({col('completion')}, '')) AS completion_chars",
             f"left({col('problem')}, 120) AS problem_head"]
    if not shards:
        return "SELECT " + ", ".join(cols) + ", NULL::VARCHAR AS filename, NULL::BIGINT AS row_number WHERE false"
    return (f"SELECT {', '.join(cols)}, filename, file_row_number AS row_number FROM read_parquet({_files_sql(shards)}, filename=true,"
            f" file_row_number=true, union_by_name=true)")


def row_groups(paths: list[Path | str]) -> dict[str, tuple[int | None, list[int]]]:
    """file -> (rows per row group when all but the last have the same count, else None; start row of each group)."""
    out: dict[str, tuple[int | None, list[int]]] = {}
    for p in paths:
        md = pq.ParquetFile(p).metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        uniform = sizes[0] if sizes and all(n == sizes[0] for n in sizes[:-1]) and sizes[-1] <= sizes[0] else None
        out[str(p)] = (uniform, starts)
    return out


LIST_COLUMNS = ("key, prompt_id, sample_index, source, model, finish_reason, accepted, reject_reason, cot_chars, completion_chars,"
                " completion_tokens, reasoning_tokens, cost_usd, latency_s, attempts, usage_estimated, problem_head, seq")


class Database:
    """One DuckDB instance for the server's life: each snapshot is a compressed in-memory database
    attached to it, so every snapshot (the one being read and the one a refresh builds) shares
    one memory limit, and what does not fit spills to a temp folder."""

    def __init__(self, memory_limit_mb: int = 600):
        self.limit_bytes = memory_limit_mb * 2**20
        memory_limit = f"{memory_limit_mb}MB"
        self.tmp = Path(tempfile.mkdtemp(prefix="curator-view-"))
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET temp_directory = '{self.tmp / 'spill'}'")
        # Order comes from ORDER BY where it matters; without it the scans stream in less memory.
        self.con.execute("SET preserve_insertion_order = false")
        self._n = 0
        self._lock = threading.Lock()

    def new_name(self) -> str:
        with self._lock:
            self._n += 1
            return f"snap{self._n}"

    def drop(self, name: str) -> None:
        try:
            cur = self.con.cursor()
            cur.execute("USE memory")
            cur.execute(f"DETACH DATABASE IF EXISTS {name}")
            cur.close()
        except duckdb.Error:
            pass  # the server is closing anyway

    def close(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass  # busy in the first load's thread (Ctrl-C right after start): the process is ending anyway
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Snapshot:
    """The output directory as of `as_of`: a private DuckDB file with tables `idx` (one narrow row
    per stored sample, with where its text lives) and `ver` (its verdicts), ordered for lookups."""

    out_dir: Path
    con: duckdb.DuckDBPyConnection
    name: str  # the attached database that holds this snapshot
    db: Database
    as_of: float
    build_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    shard_files: list[str] = field(default_factory=list)
    groups: dict[str, tuple[int | None, list[int]]] = field(default_factory=dict)  # file -> row groups (see row_groups)
    file_names: list[str] = field(default_factory=list)  # file_id -> shard path
    index: WordIndex | None = None  # shared with later snapshots (shards never change once written)

    @classmethod
    def build(cls, out_dir: Path, db: Database) -> Snapshot:
        t0 = time.time()
        name = db.new_name()
        con = db.con.cursor()
        try:
            con.execute(f"ATTACH ':memory:' AS {name} (COMPRESS)")  # compressed like a file: a million rows stay small
            con.execute(f"USE {name}")
            snap = cls(out_dir=out_dir, con=con, name=name, db=db, as_of=t0, build_s=0.0)
            snap._load()
            snap.build_s = time.time() - t0
            return snap
        except BaseException:
            db.drop(name)
            raise

    def close(self) -> None:
        self.db.drop(self.name)

    def _load(self) -> None:
        con, out = self.con, self.out_dir.resolve()
        # The catalog's own views (same dedup, same accepted / reject_reason rules as `samples`),
        # built in this private file instead of OUT/catalog.duckdb ...
        catalog.refresh_views(con, out)
        shards = readable_parquet(OutputDir(out).shards)
        self.shard_files = [str(p) for p in shards]
        # ... with `shards_raw` swapped for one narrow pass over the shards (the text is read
        # once for its lengths, never carried through the dedup window), and `verdicts` for a copy
        # kept by sample number. sid: so the five verdicts of a sample are stored and found by an
        # integer, not by its 64-character key five times over; kh: a sample found by its key
        # through an integer scan.
        groups = self.groups = row_groups(shards)
        self.file_names = list(groups)
        con.execute("CREATE TABLE files (file_id INTEGER, filename VARCHAR, rg_rows BIGINT)")
        if groups:
            con.executemany("INSERT INTO files VALUES (?, ?, ?)", [[i, f, groups[f][0]] for i, f in enumerate(self.file_names)])
        con.execute(f"CREATE TABLE raw AS {_narrow_select(shards)}")
        con.execute("CREATE TABLE base AS SELECT row_number() OVER (ORDER BY seq, key) AS sid, * FROM raw"
                    " QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq) = 1")
        con.execute("DROP TABLE raw")
        vfiles = readable_parquet(OutputDir(out).verdicts)
        if vfiles:
            # The catalog's rule: one verdict per (sample, step), the newest file's.
            con.execute(f"""
                CREATE TABLE ver AS SELECT b.sid, v.step, v.filter, v.passed, v.reason, v.details
                FROM read_parquet({_files_sql(vfiles)}, union_by_name=true, filename=true) v JOIN base b USING (key)
                QUALIFY row_number() OVER (PARTITION BY b.sid, v.step ORDER BY v.filename DESC) = 1""")
        else:
            con.execute("CREATE TABLE ver (sid BIGINT, step INTEGER, filter VARCHAR, passed BOOLEAN, reason VARCHAR, details VARCHAR)")
        con.execute("CREATE OR REPLACE VIEW shards_raw AS SELECT * FROM base")
        con.execute("CREATE OR REPLACE VIEW verdicts AS SELECT b.key, v.step, v.filter, v.passed, v.reason, v.details FROM ver v JOIN base b USING (sid)")
        con.execute(
            """
            CREATE TABLE idx AS
            SELECT s.* EXCLUDE (filename, row_number), split_part(s.reject_reason, ':', 1) AS reject_step,
                   f.file_id, s.row_number, s.row_number // f.rg_rows AS rg, hash(s.key) AS kh
            FROM samples s LEFT JOIN files f USING (filename)
            ORDER BY s.seq
            """
        )
        for view in ("samples", "verdicts", "shards_raw"):
            con.execute(f"DROP VIEW {view}")
        con.execute("DROP TABLE base")
        con.execute(
            """
            CREATE TABLE dups AS
            SELECT sid, json_extract_string(details, '$.duplicate_of') AS rep
            FROM ver WHERE filter = 'near_dup' AND NOT passed AND json_extract_string(details, '$.duplicate_of') IS NOT NULL
            """
        )
        name, model = _manifest_name(out)
        counts = _rows(con, "SELECT count(*) AS sampled, count(DISTINCT prompt_id) AS prompts, count(*) FILTER (WHERE accepted) AS accepted,"
                            " count(*) FILTER (WHERE accepted = false) AS rejected, count(*) FILTER (WHERE accepted IS NULL) AS pending FROM idx")[0]

        def facet(col: str) -> list[dict[str, Any]]:
            return _rows(con, f"SELECT {col} AS value, count(*) AS count FROM idx WHERE {col} IS NOT NULL AND {col} <> '' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200")

        self.meta = {
            "out_dir": str(out), "name": name, "model": model, "as_of": self.as_of,
            "journal_rows_not_in_shards": _journal_rows(out), "chain": chain_info(out), **counts,
            "facets": {"reason": facet("reject_reason"), "step": facet("reject_step"), "source": facet("source"),
                       "failed": _rows(con, "SELECT filter AS value, count(*) AS count FROM ver WHERE NOT passed GROUP BY 1 ORDER BY min(step)"),
                       "model": facet("model")},
            "clusters": _rows(con, "SELECT count(DISTINCT rep) AS n FROM dups")[0]["n"],
            "sorts": list(SORTS), "length_columns": sorted(LENGTH_COLUMNS),
        }

    # ----------------------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.db.con.cursor()  # one per request thread: cursors of one database are thread-safe
        cur.execute(f"USE {self.name}")
        return cur

    def samples(self, q: Query) -> dict[str, Any]:
        cur = self.cursor()
        try:
            where, params = q.where()
            order = f"{SORTS[q.sort]} {'DESC' if q.desc else 'ASC'} NULLS LAST, seq"
            if not q.q:
                total = cur.execute(f"SELECT count(*) FROM idx WHERE {where}", params).fetchall()[0][0]
                rows = _rows(cur, f"SELECT {LIST_COLUMNS} FROM idx WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                             [*params, q.limit, q.offset])
                return {"rows": rows, "total": total, "total_exact": True, "offset": q.offset, "limit": q.limit}
            return self._search(cur, q, where, params, order)
        finally:
            cur.close()

    def _search(self, cur, q: Query, where: str, params: list[Any], order: str, budget_s: float = 20.0) -> dict[str, Any]:
        """Row groups in storage order (those the word index rules out skipped, and those holding
        no row the filters keep), matched exactly, until this page plus one row is found: a common
        phrase answers from the first row groups, a rare word from the few that hold it. Results
        come in storage order; the sort applies within the page."""
        t0 = time.time()
        want = q.offset + q.limit + 1
        narrowed = where != "true"
        allowed = None
        if narrowed:
            allowed = set(cur.execute(f"SELECT DISTINCT file_id, rg FROM idx WHERE {where} AND rg IS NOT NULL", params).fetchall())
        index = self.index
        cand = index.candidates_for(q.q) if index is not None else None
        keys: list[str] = []
        scanned = skipped = 0
        stopped = False
        total_groups = sum(len(starts) for _, starts in self.groups.values())
        found_rows: list[dict[str, Any]] = []
        for file_id, f in enumerate(self.file_names):
            uniform, starts = self.groups.get(f, (None, []))
            covered = cand is not None and index.covers(f)
            for g, start in enumerate(starts):
                if len(keys) >= want or time.time() - t0 > budget_s:
                    stopped = len(keys) < want
                    break
                if allowed is not None and uniform is not None and (file_id, g) not in allowed:
                    skipped += 1
                    continue
                if covered:
                    gid = index.group_id.get((f, g))
                    if gid is None or not (cand >> gid) & 1:
                        skipped += 1
                        continue
                scanned += 1
                offsets = match_rows(f, g, q.q, q.fields)
                if not offsets:
                    continue
                rows = [start + o for o in offsets]
                found = _rows(cur, f"SELECT {LIST_COLUMNS} FROM idx WHERE file_id = ? AND row_number BETWEEN ? AND ?"
                                   f" AND row_number IN (SELECT unnest(?)) AND {where} ORDER BY row_number",
                              [file_id, rows[0], rows[-1], rows, *params])
                found_rows.extend(found)
                keys.extend(r["key"] for r in found)
            else:
                continue
            break
        more = len(keys) > q.offset + q.limit
        page = keys[q.offset:q.offset + q.limit]
        by_key = {r["key"]: r for r in found_rows}
        rows = [by_key[k] for k in page]
        col = SORTS[q.sort]
        present = [r for r in rows if r.get(col) is not None]
        rows = sorted(present, key=lambda r: r[col], reverse=q.desc) + [r for r in rows if r.get(col) is None]
        total = len(keys) if not more else q.offset + q.limit + 1
        return {"rows": rows, "total": total, "total_exact": not more and not stopped, "offset": q.offset, "limit": q.limit,
                "search": q.q, "groups_read": scanned, "groups_skipped": skipped, "groups_total": total_groups, "stopped": stopped,
                "indexed": index.status(self.shard_files) if index is not None else None}

    # ----------------------------------------------------------------------------------------

    def _texts(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Trace text of a few samples, read from their shards' row groups (not a scan)."""
        by_file: dict[str, list[int]] = {}
        for r in rows:
            by_file.setdefault(self.file_names[r["file_id"]], []).append(int(r["row_number"]))
        out: dict[str, dict[str, Any]] = {}
        schema_names = set(SAMPLE_SCHEMA.names)
        for path, numbers in by_file.items():
            f = pq.ParquetFile(path)
            cols = [c for c in TEXT_COLUMNS if c in f.schema_arrow.names and c in schema_names]
            starts, acc = [], 0
            for i in range(f.metadata.num_row_groups):
                starts.append(acc)
                acc += f.metadata.row_group(i).num_rows
            groups: dict[int, list[int]] = {}
            for n in numbers:
                g = max(i for i, s in enumerate(starts) if s <= n)
                groups.setdefault(g, []).append(n - starts[g])
            for g, offsets in groups.items():
                t = f.read_row_group(g, columns=cols)
                for o in offsets:
                    rec = t.slice(o, 1).to_pylist()[0]
                    out[rec["key"]] = rec
        return out

    def sample(self, key: str) -> dict[str, Any] | None:
        cur = self.cursor()
        try:
            found = _rows(cur, "SELECT * EXCLUDE (kh) FROM idx WHERE kh = hash(?) AND key = ?", [key, key])
            if not found:
                return None
            row = found[0]
            text = self._texts([row]).get(key, {})
            verdicts = _rows(cur, "SELECT step, filter, passed, reason, details FROM ver WHERE sid = ? ORDER BY step", [row["sid"]])
            for v in verdicts:
                try:
                    v["details"] = json.loads(v["details"]) if v["details"] else None
                except ValueError:
                    pass  # shown as the string it is
            dup = _rows(cur, "SELECT rep FROM dups WHERE sid = ?", [row["sid"]])
            members = cur.execute("SELECT count(*) FROM dups WHERE rep = ?", [key]).fetchall()[0][0]
            siblings = _rows(cur, "SELECT key, sample_index, accepted, reject_reason FROM idx WHERE prompt_id = ? ORDER BY sample_index, key",
                             [row["prompt_id"]]) if row["prompt_id"] is not None else []
            row.pop("file_id", None)
            row.pop("row_number", None)
            return {**row, **{k: v for k, v in text.items() if k != "key"}, "verdicts": verdicts,
                    "duplicate_of": dup[0]["rep"] if dup else None, "duplicates": members, "siblings": siblings}
        finally:
            cur.close()

    def prompt(self, prompt_id: str) -> dict[str, Any] | None:
        cur = self.cursor()
        try:
            rows = _rows(cur, "SELECT * EXCLUDE (kh) FROM idx WHERE prompt_id = ? ORDER BY sample_index, key LIMIT 64", [prompt_id])
            if not rows:
                return None
            texts = self._texts(rows)
            ver = _rows(cur, "SELECT sid, step, filter, passed, reason FROM ver WHERE sid IN (SELECT unnest(?)) ORDER BY sid, step",
                        [[r["sid"] for r in rows]])
            by_sid: dict[int, list] = {}
            for v in ver:
                by_sid.setdefault(v.pop("sid"), []).append(v)
            n = cur.execute("SELECT count(*), count(*) FILTER (WHERE accepted) FROM idx WHERE prompt_id = ?", [prompt_id]).fetchall()[0]
            samples = []
            for r in rows:
                t = texts.get(r["key"], {})
                r.pop("file_id", None)
                r.pop("row_number", None)
                samples.append({**r, "cot": t.get("cot"), "completion": t.get("completion"), "verdicts": by_sid.get(r["sid"], [])})
            first = texts.get(rows[0]["key"], {})
            return {"prompt_id": prompt_id, "problem": first.get("problem"), "gold": first.get("gold"), "n": n[0], "accepted": n[1],
                    "pass_rate": n[1] / n[0] if n[0] else None, "samples": samples, "shown": len(samples)}
        finally:
            cur.close()

    def clusters(self, offset: int, limit: int) -> dict[str, Any]:
        cur = self.cursor()
        try:
            total = cur.execute("SELECT count(DISTINCT rep) FROM dups").fetchall()[0][0]
            rows = _rows(cur, """SELECT d.rep, count(*) + 1 AS size, any_value(i.prompt_id) AS prompt_id, any_value(i.problem_head) AS problem_head
                                 FROM dups d LEFT JOIN idx i ON i.kh = hash(d.rep) AND i.key = d.rep GROUP BY d.rep ORDER BY size DESC, d.rep LIMIT ? OFFSET ?""",
                         [limit, offset])
            return {"rows": rows, "total": total, "offset": offset, "limit": limit}
        finally:
            cur.close()

    def cluster(self, rep: str, limit: int = 20) -> dict[str, Any] | None:
        cur = self.cursor()
        try:
            members = _rows(cur, "SELECT i.* EXCLUDE (kh) FROM dups d JOIN idx i USING (sid) WHERE d.rep = ? ORDER BY i.seq LIMIT ?", [rep, limit])
            head = _rows(cur, "SELECT * EXCLUDE (kh) FROM idx WHERE kh = hash(?) AND key = ?", [rep, rep])
            if not members or not head:
                return None
            total = cur.execute("SELECT count(*) FROM dups WHERE rep = ?", [rep]).fetchall()[0][0]
            texts = self._texts(head + members)
            rep_cot = texts.get(rep, {}).get("cot") or ""
            out = []
            for m in [*head, *members]:
                cot = texts.get(m["key"], {}).get("cot") or ""
                m.pop("file_id", None)
                m.pop("row_number", None)
                out.append({**m, "cot": cot, "diff": None if m["key"] == rep else word_diff(rep_cot, cot)})
            return {"rep": rep, "size": total + 1, "shown": len(out), "samples": out}
        finally:
            cur.close()


def word_diff(a: str, b: str, max_words: int = 4000) -> list[list[Any]]:
    """b against a as [op, text] pieces (op: = same, + only in b, - only in a), word by word."""
    import re

    wa, wb = re.findall(r"\S+\s*", a)[:max_words], re.findall(r"\S+\s*", b)[:max_words]
    out: list[list[Any]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(["=", "".join(wb[j1:j2])])
        else:
            if i2 > i1:
                out.append(["-", "".join(wa[i1:i2])])
            if j2 > j1:
                out.append(["+", "".join(wb[j1:j2])])
    return out


class Holder:
    """The current snapshot, swapped whole on refresh; the report is computed beside it by
    `curator report --json` in a child process (the same numbers, and its memory is not ours),
    once per snapshot, started when the snapshot is ready (at a million samples it takes under a
    minute and under a gigabyte: the charts page says "computing" until it is there)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.lock = threading.Lock()
        self.snap: Snapshot | None = None
        self.index = WordIndex()
        self.db = Database()
        self.error: str | None = None
        self.refreshing = False
        self.report: dict[str, Any] | None = None
        self.report_state = "idle"  # idle | running | ready | failed
        self.report_error: str | None = None
        self.report_as_of: float | None = None
        self._report_proc = None
        self._report_again = False  # a snapshot newer than the report being computed
        self._closing = False

    def refresh(self) -> None:
        with self.lock:
            if self.refreshing:
                return
            self.refreshing = True
        try:
            snap = None
            old = self.snap
            if old is not None and (old.meta.get("sampled") or 0) > BIG_SNAPSHOT:
                # A big snapshot and its successor do not both fit in the memory limit: the page
                # says "reading the data" until the new one is there.
                with self.lock:
                    self.snap = None
                old.close()
            for attempt in range(3):
                try:
                    snap = Snapshot.build(self.out_dir, self.db)
                    break
                except (duckdb.IOException, FileNotFoundError) as e:
                    # A file renamed away mid-read (a compaction, a chain swapping its verdicts): read again.
                    self.error = f"reading {self.out_dir} failed: {' '.join(str(e).split())[:300]}"
                    time.sleep(0.5 * (attempt + 1))
                except (duckdb.Error, OSError, ValueError) as e:
                    self.error = f"reading {self.out_dir} failed: {' '.join(str(e).split())[:300]}"
                    break
            if snap is not None:
                self.error = None
                snap.index = self.index
                with self.lock:
                    old, self.snap = self.snap, snap
                if old is not None:
                    # Requests that took the old snapshot a moment ago finish on it; then its memory goes.
                    t = threading.Timer(30.0, old.close)
                    t.daemon = True
                    t.start()
        finally:
            with self.lock:
                self.refreshing = False
        if self.snap is not None:
            self.start_report()
            self.index.build(self.snap.shard_files)

    def start_report(self) -> None:
        with self.lock:
            if self.report_state == "running":
                self._report_again = True
                return
            self.report_state = "running"
        threading.Thread(target=self._report, daemon=True).start()

    def _report(self) -> None:
        import os
        import subprocess
        import sys

        started = time.time()
        try:
            self._report_proc = p = subprocess.Popen([sys.executable, "-m", "curator", "report", str(self.out_dir), "--json", "--no-html"],
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
            out, err = p.communicate()
            if p.returncode != 0:
                raise ViewerError((err.strip().splitlines() or [f"curator report ended with code {p.returncode}"])[-1])
            self.report, self.report_as_of, self.report_state, self.report_error = json.loads(out), started, "ready", None
        except (ViewerError, ValueError, OSError) as e:
            self.report_state, self.report_error = "failed", str(e)
        with self.lock:
            again, self._report_again = self._report_again, False
        if again and not self._closing:
            self.start_report()  # the data changed while it ran

    def close(self) -> None:
        self._closing = True
        p = self._report_proc
        if p is not None and p.poll() is None:
            p.kill()  # started by this server: it goes with it
            p.wait()
        if self.snap is not None:
            self.snap.close()
        self.db.close()
