"""The DuckDB catalog: views over the shards and verdicts, and the table of runs.

The catalog holds no sample data of its own (the Parquet files do), so it can always be rebuilt
from them; `connect` refreshes the views each time so a moved output directory still works."""

from __future__ import annotations

from pathlib import Path

import duckdb

from curator.errors import StoreError
from curator.records import SAMPLE_SCHEMA, VERDICT_SCHEMA
from curator.store.layout import CATALOG, OutputDir  # noqa: F401  (CATALOG re-exported)
from curator.store.shards import readable_parquet


_DUCK_TYPES = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
}


# The one row a key keeps, of `shards_files` (a crash can leave a key in two shards).
DEDUP_SAMPLES = "QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq) = 1"

# A sample's configuration id. Samples stored before the column existed get one derived from what
# they recorded (endpoint, answering model, params): a template change among them cannot be told.
CONFIG_ID_SQL = ("coalesce(config_id, 'legacy-' || left(md5(concat_ws('|', coalesce(endpoint, ''), coalesce(model, ''), "
                 "coalesce(params_json, ''))), 8))")


def _empty_select(schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[str(f.type)]}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join(_q(p) for p in paths) + "]"


def chain_steps(out_dir: Path) -> tuple[int, list[int]]:
    """(steps of the chain, indices of its sample-scope steps: all of them for chains judged
    before chain.json recorded which)."""
    data = OutputDir(out_dir).chain()
    if data is None:
        return 0, []
    steps = len(data.get("steps", []))
    return steps, [int(i) for i in data.get("sample_steps", range(steps))]


def samples_sql(shards: str, verdicts: str, steps: int) -> str:
    """The `samples` view's query over any samples/verdicts relations (the report runs it over its
    narrow temp tables, so its numbers are the view's without re-reading the Parquet files)."""
    return f"""
        WITH v AS (
            SELECT key,
                   count(*) AS n_steps,
                   bool_and(passed) AS all_passed,
                   min_by(filter || ':' || reason, step) FILTER (WHERE NOT passed) AS reject_reason
            FROM {verdicts} GROUP BY key
        )
        SELECT s.*,
               CASE WHEN v.all_passed = false THEN false
                    WHEN v.n_steps >= {steps} AND {steps} > 0 THEN true
                    ELSE NULL END AS accepted,
               v.reject_reason
        FROM {shards} s LEFT JOIN v USING (key)
        """


def prompts_sql(samples: str, verdicts: str, steps: int, sample_steps: list[int]) -> str:
    """The `prompts` view's query. A prompt's difficulty: `solved` answers passed every sample-scope
    step (correctness, format: what a stronger teacher would change), `accepted` passed the whole
    chain (near-dup too); pass_rate = solved / judged. No chain: every count but sampled is null."""
    ns = len(sample_steps)
    return f"""
        WITH sv AS (
            SELECT key, count(DISTINCT step) = {ns} AS judged, bool_and(passed) AS ok
            FROM {verdicts} WHERE list_contains({[int(i) for i in sample_steps]}::INTEGER[], step) GROUP BY key
        )
        SELECT s.prompt_id,
               count(*) AS sampled,
               CASE WHEN {ns} > 0 THEN count(*) FILTER (WHERE sv.judged) END AS judged,
               CASE WHEN {ns} > 0 THEN count(*) FILTER (WHERE sv.judged AND sv.ok) END AS solved,
               CASE WHEN {steps} > 0 THEN count(*) FILTER (WHERE s.accepted) END AS accepted,
               CASE WHEN {ns} > 0 THEN (count(*) FILTER (WHERE sv.judged AND sv.ok)) / nullif(count(*) FILTER (WHERE sv.judged), 0) END AS pass_rate,
               sum(coalesce(s.prompt_tokens, 0) + coalesce(s.completion_tokens, 0))::BIGINT AS tokens,
               CASE WHEN count(*) FILTER (WHERE s.cost_usd IS NULL) = 0 THEN sum(s.cost_usd) END AS cost_usd
        FROM {samples} s LEFT JOIN sv USING (key)
        GROUP BY s.prompt_id
        """


class SnapshotChanged(StoreError):
    """A writer changed OUT's files while a reader listed them (a filter swapping its verdicts in)."""


def consistent(read, tries: int = 10):
    """`read()` again when the files changed under it: a compaction removed a journal, a filter
    swapped its verdicts in, a worker replaced a dataset step's file. Shards are never rewritten,
    so a second read sees a whole state; readers never crash on a writer at work, nor show half
    of its change."""
    import time

    for attempt in range(tries):
        try:
            return read()
        except (duckdb.IOException, FileNotFoundError, SnapshotChanged):
            if attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def refresh_views(con: duckdb.DuckDBPyConnection, out_dir: Path) -> None:
    out_dir = out_dir.resolve()
    if not OutputDir(out_dir).verdicts.exists() and any(out_dir.glob(".verdicts-old-*")):
        raise SnapshotChanged(f"{out_dir}: no verdicts folder but {out_dir}/.verdicts-old-*: a filter is swapping its verdicts in "
                              f"(if none runs, one was killed mid-swap: `curator filter {out_dir}` judges again)")
    hint = f"; `curator resume {out_dir}` moves it to {OutputDir(out_dir).quarantine} and requests its lost rows again"
    # Explicit file lists, not globs: an unreadable file (cut short by a power loss) is named
    # once on stderr and left out, instead of failing every query.
    shards = readable_parquet(OutputDir(out_dir).shards, hint=hint)
    if shards:
        # A key appears once even if a crash left it in two shards (recovery re-wrote a journal).
        # The empty select by name: shards written before a column existed still show it (as null).
        files = f"SELECT * FROM read_parquet({_files(shards)}, union_by_name=true) UNION ALL BY NAME {_empty_select(SAMPLE_SCHEMA)}"
    else:
        files = _empty_select(SAMPLE_SCHEMA)
    # `shards_files`: every stored row, duplicates included, for a reader that computes its columns
    # (text lengths) before the dedup, so the texts never go through the window (the report).
    con.execute(f"CREATE OR REPLACE VIEW shards_files AS {files}")
    con.execute(f"CREATE OR REPLACE VIEW shards_raw AS SELECT * REPLACE ({CONFIG_ID_SQL} AS config_id) FROM shards_files {DEDUP_SAMPLES}")

    vfiles = readable_parquet(OutputDir(out_dir).verdicts, hint=hint.replace("requests its lost rows again", "judges its samples again"))
    if vfiles:
        ver = f"SELECT * FROM read_parquet({_files(vfiles)}, union_by_name=true) QUALIFY row_number() OVER (PARTITION BY key, step ORDER BY filename DESC) = 1"
        ver = f"SELECT * EXCLUDE (filename) FROM ({ver.replace('union_by_name=true', 'union_by_name=true, filename=true')})"
    else:
        ver = _empty_select(VERDICT_SCHEMA)
    con.execute(f"CREATE OR REPLACE VIEW verdicts AS {ver}")

    steps, sample_steps = chain_steps(out_dir)
    con.execute(f"CREATE OR REPLACE VIEW samples AS {samples_sql('shards_raw', 'verdicts', steps)}")
    con.execute(f"CREATE OR REPLACE VIEW prompts AS {prompts_sql('samples', 'verdicts', steps, sample_steps)}")
    _ensure_runs(con)


_RUNS_DDL = """CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY, name VARCHAR, command VARCHAR, status VARCHAR,
            started_at DOUBLE, ended_at DOUBLE, requests BIGINT, samples BIGINT,
            prompt_tokens BIGINT, completion_tokens BIGINT, cost_usd DOUBLE, receipt VARCHAR)"""


def _ensure_runs(con: duckdb.DuckDBPyConnection) -> None:
    exists = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'runs'").fetchall()[0][0]
    if not exists:
        con.execute(_RUNS_DDL)


def connect(out_dir: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open OUT/catalog.duckdb with fresh views. read_only=True never writes the file: views are
    built in an in-memory database instead (for readers while a run holds the catalog)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        raise FileNotFoundError(f"{out_dir}: no such output directory")
    if read_only:
        con = duckdb.connect(":memory:")
        path = out_dir / CATALOG
        if path.exists():
            try:
                con.execute(f"ATTACH {_q(path.resolve())} AS cat (READ_ONLY)")
                if con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name='cat' AND table_name='runs'").fetchall()[0][0]:
                    con.execute("CREATE VIEW runs AS SELECT * FROM cat.runs")
            except duckdb.Error:
                pass  # held by a writer: the shards are the data anyway
        refresh_views(con, out_dir)
        return con
    con = _open_writable(out_dir / CATALOG)
    try:
        refresh_views(con, out_dir)
    except BaseException:
        con.close()
        raise
    return con


def _open_writable(path: Path, wait_s: float = 60.0) -> duckdb.DuckDBPyConnection:
    """The catalog file for writing. Workers of one run (--worker I/N) each refresh it and record
    their session when they end: one holds it for a moment, the next waits its turn."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def query(out_dir: str | Path, sql: str, params: list | dict | None = None) -> list[tuple]:
    """One read-only query over an output directory's catalog (rows as tuples)."""
    con = connect(out_dir, read_only=True)
    try:
        return con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    finally:
        con.close()
