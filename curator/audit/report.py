"""The numbers of an output directory, computed with DuckDB over its shards and verdicts.

`build_report(out_dir)` returns one JSON-ready dict; `curator report` prints it (rich tables) and
renders it to HTML (`curator.audit.html_report`). Every figure is a query over the catalog views, so a
test (or a person with the DuckDB CLI) can recompute any of them.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from curator.audit.configs import configurations
from curator.audit.status import replica_figures
from curator.store import catalog
from curator.store.layout import OutputDir

PER = 50_000  # "per 50k accepted": the size of a typical distillation set (the card uses it too)
QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]
HIST_BINS = 30
# The report's DuckDB connection: its memory (beyond which it spills to disk) and threads.
MEMORY_LIMIT_MB = 500
THREADS = 2

# Length measures: name -> (SQL expression over a samples row, unit).
LENGTHS = {
    "cot_tokens": ("reasoning_tokens", "tokens"),
    "output_tokens": ("completion_tokens", "tokens"),
    "cot_chars": ("cot_chars", "chars"),
    "completion_chars": ("completion_chars", "chars"),
}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> dict[str, Any]:
    rows = _rows(con, sql, params)
    return rows[0] if rows else {}


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, numpy/decimal scalars -> float."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:
        f = float(obj)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return str(obj)


def chain_info(out_dir: Path) -> dict[str, Any] | None:
    data = OutputDir(out_dir).chain()
    if data is None:
        return None
    steps = [{"step": i, "filter": s.get("filter"), "params": s.get("params") or {}} for i, s in enumerate(data.get("steps", []))]
    return {"name": data.get("name"), "digest": data.get("digest"), "steps": steps}


# The CoT length in words is the number of `\S+` matches of DuckDB's regex engine (RE2: whitespace
# is space, \t, \n, \r, \f; any other byte, UTF-8 included, is part of a word): counted over the
# Arrow buffer with numpy instead, a word being a non-space byte after a space or at the start.
# 40k 3 KB CoTs: 0.3 s (2 threads: numpy releases the GIL) against 2.9 s for regexp_extract_all on 1 thread.
def _register_cot_words(con: duckdb.DuckDBPyConnection) -> None:
    import numpy as np
    import pyarrow as pa

    space = np.zeros(256, dtype=bool)
    space[list(b" \t\n\r\f")] = True

    def words(col):  # (no annotations: DuckDB evaluates them, and pyarrow is imported here)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        col = col.cast(pa.large_string())
        n = len(col)
        _, obuf, dbuf = col.buffers()
        off = np.frombuffer(obuf, dtype=np.int64)[col.offset:col.offset + n + 1]
        if n == 0 or off[-1] == off[0]:
            return pa.array(np.zeros(n, dtype=np.int64))
        data = np.frombuffer(dbuf, dtype=np.uint8)[off[0]:off[-1]]
        off = off - off[0]
        ws = space[data]
        start = np.empty(len(data) + 1, dtype=bool)  # one spare: reduceat's index may equal len(data)
        start[:-1] = ~ws
        start[1:-1] &= ws[:-1]
        start[-1] = False
        first, nonempty = off[:-1], off[1:] > off[:-1]
        start[first[nonempty]] = ~ws[first[nonempty]]  # a text's first byte starts a word whatever precedes it
        counts = np.add.reduceat(start, first, dtype=np.int64)
        counts[~nonempty] = 0
        return pa.array(counts)

    con.create_function("curator_cot_words", words, ["VARCHAR"], "BIGINT", type="arrow")


def _journal_rows(out_dir: Path) -> int:
    d = OutputDir(out_dir).journal
    if not d.exists():
        return 0
    return sum(p.read_bytes().count(b"\n") for p in [*d.glob("*.jsonl"), *d.glob("*/*.jsonl")])  # + workers' journals


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _block_table(con: duckdb.DuckDBPyConnection, steps: int) -> None:
    """TEMP table `blk`: for each sample, the first step it did not pass (null: passed all), that
    step's verdict (`block_passed`, `block_reason`: null when it has none) and the first failing step.
    A step with no verdict yet (a dataset step still to run) blocks as `pending`. One row a sample:
    no samples x steps grid (at 1M samples that grid alone was gigabytes)."""
    n = int(steps)
    if n > 62:
        raise ValueError(f"a chain of {n} steps: the report handles up to 62")
    # `judged`: a bit a step with a verdict; its lowest zero bit is the first step without one.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE blk AS
        WITH per AS (
            SELECT key, min(step) FILTER (WHERE passed IS NOT TRUE) AS first_unpassed,
                   min(step) FILTER (WHERE passed = false) AS first_fail,
                   bit_or(1::BIGINT << step::BIGINT) AS judged
            FROM rv WHERE step >= 0 AND step < {n} GROUP BY key
        ), fb AS (
            SELECT s.key, per.first_fail, coalesce(per.first_unpassed, {n}) AS unpassed,
                   CAST(round(log2((coalesce(per.judged, 0) + 1) & ~coalesce(per.judged, 0))) AS BIGINT) AS missing
            FROM (SELECT key FROM rs) s LEFT JOIN per USING (key)
        )
        SELECT fb.key, CASE WHEN least(fb.unpassed, fb.missing) < {n} THEN least(fb.unpassed, fb.missing) END AS first_block,
               fb.first_fail, v.passed AS block_passed, v.reason AS block_reason
        FROM fb LEFT JOIN rv v ON v.key = fb.key AND v.step = least(fb.unpassed, fb.missing)
        """
    )


def funnel(con: duckdb.DuckDBPyConnection, chain: dict[str, Any] | None, sampled: int) -> tuple[list[dict[str, Any]], int, int]:
    """Sequential funnel: sampled -> rows surviving steps 0..k -> accepted. Returns (funnel, accepted, pending)."""
    out = [{"stage": "sampled", "step": None, "filter": None, "remaining": sampled, "rejected": 0, "pending": 0,
            "share_of_sampled": 1.0 if sampled else None, "reasons": [], "rejects_alone": None}]
    if chain is None or not chain["steps"]:
        return out, sampled, 0
    n = len(chain["steps"])
    _block_table(con, n)
    for s in chain["steps"]:
        k = s["step"]
        row = _one(
            con,
            """
            SELECT count(*) FILTER (WHERE first_block IS NULL OR first_block > ?) AS remaining,
                   count(*) FILTER (WHERE first_block = ? AND block_passed = false) AS rejected,
                   count(*) FILTER (WHERE first_block = ? AND block_passed IS NULL) AS pending
            FROM blk
            """,
            [k, k, k],
        )
        reasons = _rows(
            con,
            """
            SELECT block_reason AS reason, count(*) AS count FROM blk
            WHERE first_block = ? AND block_passed = false GROUP BY 1 ORDER BY 2 DESC, 1
            """,
            [k],
        )
        alone = _one(con, "SELECT count(*) FILTER (WHERE passed = false) AS n FROM rv WHERE step = ?", [k])["n"]
        out.append({
            "stage": s["filter"], "step": k, "filter": s["filter"], "remaining": row["remaining"],
            "rejected": row["rejected"], "pending": row["pending"], "share_of_sampled": _div(row["remaining"], sampled),
            "reasons": reasons, "rejects_alone": alone,
        })
    acc = _one(con, "SELECT count(*) FILTER (WHERE first_block IS NULL) AS a, count(*) FILTER (WHERE first_block IS NOT NULL AND first_fail IS NULL) AS p FROM blk")
    out.append({"stage": "accepted", "step": None, "filter": None, "remaining": acc["a"], "rejected": 0, "pending": 0,
                "share_of_sampled": _div(acc["a"], sampled), "reasons": [], "rejects_alone": None})
    return out, acc["a"], acc["p"]


def step_funnel(con: duckdb.DuckDBPyConnection, out_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The chain and its funnel alone (the dataset card's table): the same numbers as the report's."""
    chain = chain_info(out_dir)
    con.execute("CREATE OR REPLACE TEMP TABLE rs AS SELECT key FROM shards_raw")
    con.execute("CREATE OR REPLACE TEMP TABLE rv AS SELECT v.* FROM verdicts v SEMI JOIN rs USING (key)")
    sampled = con.execute("SELECT count(*) FROM rs").fetchone()[0]
    return chain, funnel(con, chain, sampled)[0]


def _accepted_expr(has_chain: bool) -> str:
    # No chain: every stored sample is kept (what `export` would ship).
    return "(blk.first_block IS NULL)" if has_chain else "true"


def _samples_from(has_chain: bool) -> str:
    return "rs s LEFT JOIN blk USING (key)" if has_chain else "rs s"


def costs(con, has_chain: bool, sampled: int, accepted: int, per: int) -> dict[str, Any]:
    acc = _accepted_expr(has_chain)
    r = _one(
        con,
        f"""
        SELECT sum(cost_usd) AS usd_known,
               count(*) FILTER (WHERE cost_usd IS NULL) AS unknown,
               sum(cost_usd) FILTER (WHERE {acc}) AS usd_accepted,
               sum(cost_usd) FILTER (WHERE NOT {acc}) AS usd_rejected,
               sum(prompt_tokens) AS prompt, sum(cached_tokens) AS cached, sum(completion_tokens) AS completion,
               sum(reasoning_tokens) AS reasoning,
               count(DISTINCT request_id) AS requests,
               count(*) FILTER (WHERE usage_estimated) AS estimated
        FROM {_samples_from(has_chain)}
        """,
    )
    complete = r["unknown"] == 0 and sampled > 0
    total = (r["usd_known"] or 0.0) if complete else None
    if sampled == 0:
        total = 0.0
    tokens = {
        "prompt": int(r["prompt"] or 0),
        "cached_prompt": int(r["cached"] or 0),
        "completion": int(r["completion"] or 0),
        "reasoning": int(r["reasoning"] or 0),
    }
    tokens["total"] = tokens["prompt"] + tokens["completion"]
    tokens["per_sample"] = {k: _div(v, sampled) for k, v in tokens.items() if not isinstance(v, dict)}
    tokens["per_accepted"] = {k: _div(v, accepted) for k, v in tokens.items() if k not in ("per_sample",)}
    tokens[f"per_{per // 1000}k_accepted"] = {k: (None if v is None else v * per) for k, v in tokens["per_accepted"].items()}
    return {
        "total_usd": total,
        "usd_known_part": r["usd_known"] or 0.0,
        "samples_without_cost": r["unknown"],
        # > 0: token and dollar totals include local counts (the teacher sent no usage; curator/sample/tokencount.py)
        "samples_with_estimated_usage": r["estimated"],
        "usd_per_sample": _div(total, sampled),
        "usd_per_accepted": _div(total, accepted),
        "usd_per_50k_accepted": None if _div(total, accepted) is None else _div(total, accepted) * per,
        "usd_on_accepted": r["usd_accepted"] if complete else None,
        "usd_on_rejected": (r["usd_rejected"] or 0.0) if complete else None,
        "requests": r["requests"],
        "tokens": tokens,
    }


def lengths(con, has_chain: bool) -> dict[str, Any]:
    acc = _accepted_expr(has_chain)
    out: dict[str, Any] = {}
    qs = ", ".join(str(q) for q in QUANTILES)
    for name, (expr, unit) in LENGTHS.items():
        stats = {}
        for group, cond in (("all", "true"), ("accepted", acc)):
            r = _one(
                con,
                f"""
                SELECT count(x) AS n, avg(x) AS mean, min(x) AS min, max(x) AS max, quantile_cont(x, [{qs}]) AS q
                FROM (SELECT {expr} AS x FROM {_samples_from(has_chain)} WHERE {cond})
                """,
            )
            q = r.get("q") or [None] * len(QUANTILES)
            stats[group] = {"n": r["n"], "mean": r["mean"], "min": r["min"], "max": r["max"],
                            **{f"p{int(p * 100)}": v for p, v in zip(QUANTILES, q)}}
        hist = None
        top = stats["all"]["max"]
        if stats["all"]["n"]:
            width = max(1, math.ceil((float(top) + 1) / HIST_BINS))
            edges = [i * width for i in range(HIST_BINS + 1)]
            counts = {}
            for group, cond in (("all", "true"), ("accepted", acc)):
                rows = _rows(
                    con,
                    f"""
                    SELECT least(CAST(floor(x / {width}) AS BIGINT), {HIST_BINS - 1}) AS b, count(*) AS n
                    FROM (SELECT {expr} AS x FROM {_samples_from(has_chain)} WHERE {cond}) WHERE x IS NOT NULL GROUP BY 1
                    """,
                )
                c = [0] * HIST_BINS
                for row in rows:
                    c[int(row["b"])] = row["n"]
                counts[group] = c
            hist = {"edges": edges, **counts}
        out[name] = {"unit": unit, **stats, "hist": hist}
    return out


def _lang_details(con) -> dict[str, Any]:
    """Language statistics from the `language` step's verdicts: reasons, the language a rejected
    trace was written in (`language`), the languages of its offending sentences (`examples[].lang`),
    the foreign scripts found (`scripts`), the field that failed, and numeric measures (mean, max).
    Unknown keys are summarised the same way (strings -> counts, numbers -> mean/max)."""
    steps = _rows(con, "SELECT DISTINCT step FROM rv WHERE filter = 'language'")
    if not steps:
        return {"available": False}
    con.execute("CREATE OR REPLACE TEMP TABLE lang AS SELECT v.*, TRY_CAST(v.details AS JSON) AS d FROM rv v WHERE v.filter = 'language'")
    base = "SELECT * FROM lang"
    summary = _one(con, f"SELECT count(*) AS judged, count(*) FILTER (WHERE passed) AS passed, count(*) FILTER (WHERE NOT passed) AS rejected FROM ({base})")
    reasons = _rows(con, f"SELECT reason, count(*) AS count FROM ({base}) WHERE NOT passed GROUP BY 1 ORDER BY 2 DESC, 1")
    keys = [r["k"] for r in _rows(con, f"SELECT DISTINCT unnest(json_keys(d)) AS k FROM ({base}) WHERE d IS NOT NULL AND json_type(d) = 'OBJECT' ORDER BY 1")]
    by_key: dict[str, Any] = {}
    for k in keys:
        path = "$." + json.dumps(k)
        kinds = {r["t"] for r in _rows(con, f"SELECT DISTINCT json_type(d, '{path}') AS t FROM ({base}) WHERE d IS NOT NULL")}
        kinds -= {None, "NULL"}
        if not kinds:
            continue
        if kinds <= {"VARCHAR"}:
            vals = _rows(con, f"SELECT json_extract_string(d, '{path}') AS value, count(*) AS count FROM ({base}) WHERE json_extract_string(d, '{path}') IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20")
            by_key[k] = {"kind": "category", "values": vals}
        elif kinds <= {"DOUBLE", "UBIGINT", "BIGINT", "INTEGER"}:
            r = _one(con, f"SELECT count(x) AS n, avg(x) AS mean, max(x) AS max FROM (SELECT TRY_CAST(json_extract(d, '{path}') AS DOUBLE) AS x FROM ({base}))")
            by_key[k] = {"kind": "number", **r}
        elif kinds <= {"OBJECT"}:
            # {"scripts": {"latin": 0.9, "han": 0.1}}: in how many verdicts each inner key appears.
            vals = _rows(con, f"SELECT unnest(json_keys(json_extract(d, '{path}'))) AS value, count(*) AS count FROM ({base}) WHERE json_type(d, '{path}') = 'OBJECT' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20")
            by_key[k] = {"kind": "keys", "values": vals}
        elif kinds <= {"ARRAY"}:
            # [{"text": ..., "lang": "zh", ...}]: count the languages named in the list.
            vals = _rows(con, f"""
                SELECT value, count(*) AS count FROM (
                    SELECT unnest(json_extract_string(d, '{path}[*].lang')) AS value FROM ({base}) WHERE json_type(d, '{path}') = 'ARRAY')
                WHERE value IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20""")
            if vals:
                by_key[k + ".lang"] = {"kind": "category", "values": vals}
    return {"available": True, "step": steps[0]["step"], **summary, "reasons": reasons, "details": by_key}


def duplicates(con, top: int = 10) -> dict[str, Any]:
    """Near-duplicate clusters from the `near_dup` step's details (duplicate_of, cluster, cluster_size)."""
    steps = _rows(con, "SELECT DISTINCT step FROM rv WHERE filter = 'near_dup'")
    if not steps:
        return {"available": False}
    base = """SELECT v.key, v.passed, TRY_CAST(v.details AS JSON) AS d FROM rv v WHERE v.filter = 'near_dup'"""
    rej = f"""SELECT key, coalesce(json_extract_string(d, '$.cluster'), json_extract_string(d, '$.duplicate_of')) AS cluster,
                     json_extract_string(d, '$.duplicate_of') AS keep,
                     TRY_CAST(json_extract(d, '$.cluster_size') AS BIGINT) AS size_hint
              FROM ({base}) WHERE NOT passed"""
    summary = _one(con, f"SELECT count(*) AS judged, count(*) FILTER (WHERE NOT passed) AS duplicates FROM ({base})")
    clusters = _rows(
        con,
        f"""
        SELECT cluster, greatest(count(*) + 1, coalesce(max(size_hint), 0)) AS size, any_value(keep) AS keep
        FROM ({rej}) r GROUP BY cluster ORDER BY size DESC, cluster LIMIT {int(top)}
        """,
    )
    kept = [c["keep"] for c in clusters if c["keep"]]
    text = {}
    if kept:
        text = {r["key"]: r for r in _rows(con, "SELECT key, prompt_id, left(coalesce(nullif(cot, ''), completion, ''), 240) AS example FROM shards_raw WHERE list_contains(?, key)", [kept])}
    for c in clusters:
        t = text.get(c["keep"], {})
        c["example"], c["prompt_id"] = t.get("example"), t.get("prompt_id")
    n_clusters = _one(con, f"SELECT count(DISTINCT cluster) AS n FROM ({rej})")["n"]
    sizes = _rows(con, f"SELECT size, count(*) AS clusters FROM (SELECT cluster, greatest(count(*) + 1, coalesce(max(size_hint), 0)) AS size FROM ({rej}) GROUP BY 1) GROUP BY 1 ORDER BY 1")
    return {"available": True, "step": steps[0]["step"], **summary, "clusters": n_clusters, "largest": clusters, "sizes": sizes}


def sources(con, has_chain: bool, per: int) -> list[dict[str, Any]]:
    acc = _accepted_expr(has_chain)
    rows = _rows(
        con,
        f"""
        SELECT source, count(*) AS sampled, count(DISTINCT prompt_id) AS prompts,
               count(*) FILTER (WHERE {acc}) AS accepted,
               CASE WHEN count(*) FILTER (WHERE cost_usd IS NULL) = 0 THEN sum(cost_usd) END AS usd,
               sum(completion_tokens) AS completion_tokens
        FROM {_samples_from(has_chain)} GROUP BY source ORDER BY sampled DESC, source
        """,
    )
    for r in rows:
        r["acceptance_rate"] = _div(r["accepted"], r["sampled"])
        r["usd_per_accepted"] = _div(r["usd"], r["accepted"])
        r["usd_per_50k_accepted"] = None if r["usd_per_accepted"] is None else r["usd_per_accepted"] * per
    return rows


def drift(con, out_dir: Path, window: int | None = None) -> list[dict[str, Any]]:
    from curator.audit.drift import drift_from_features, features_of

    has_math = bool(_rows(con, "SELECT 1 FROM rv WHERE filter = 'math' LIMIT 1"))
    math_join = (
        "LEFT JOIN (SELECT key, bool_and(passed) AS math_passed FROM rv WHERE filter = 'math' GROUP BY key) m USING (key)"
        if has_math else ""
    )
    math_passed = "m.math_passed" if has_math else "NULL::BOOLEAN"
    n = con.execute("SELECT count(*) FROM rs").fetchone()[0]
    # Streamed in batches (DuckDB sorts and spills under the memory limit): the texts never sit in
    # Python all at once. NULLS FIRST: the order the polars sort of the earlier code gave.
    # (On `con` itself: a cursor does not see the connection's temp tables.)
    cur = con.execute(
        f"""
        SELECT s.seq, s.cot_len, s.cot_source, s.completion,
               CASE WHEN {math_passed} IS NULL THEN s.gold END AS gold, {math_passed} AS math_passed
        FROM rs s {math_join} ORDER BY s.seq NULLS FIRST
        """
    )

    def feats():
        golds: dict = {}
        while batch := cur.fetchmany(20_000):
            for seq, cot_len, cot_source, completion, gold, passed in batch:
                yield features_of(seq, int(cot_len) if cot_len is not None else 0, cot_source, completion, gold, passed, golds)

    return drift_from_features(feats(), n, window)


def _by_mode(teacher: dict[str, Any], money: dict[str, Any]) -> dict[str, Any]:
    """Online vs batch dollars for the same answers (issue 13): what was paid, in the run's mode,
    priced the other way with the model's batch discount."""
    from curator.config import Price
    from curator.sample.cost import by_mode, find_price

    price = find_price(teacher.get("model") or "", Price.model_validate(teacher["price"]) if teacher.get("price") else None)
    paid_in = teacher.get("mode") or "online"
    total, per50k = by_mode(money["total_usd"], price, paid_in), by_mode(money["usd_per_50k_accepted"], price, paid_in)
    return {"paid_in": paid_in, "batch_discount": None if price is None else price.batch_discount,
            "total_usd": total, "usd_per_50k_accepted": per50k,
            "batch_completion_window": (teacher.get("batch") or {}).get("completion_window", "24h")}


# Pass-rate buckets of the difficulty section: (label, low, high), a rate r in (low, high];
# exactly 0 and exactly 1 are their own buckets (the ones nothing solved, the ones every sample did).
PASS_BUCKETS = [("0%", -1.0, 0.0), ("0-25%", 0.0, 0.25), ("25-50%", 0.25, 0.5), ("50-75%", 0.5, 0.75),
                ("75-<100%", 0.75, 0.999999999), ("100%", 0.999999999, 1.0)]


def difficulty(con, has_chain: bool, out_dir: Path, top: int = 20) -> dict[str, Any]:
    """Per prompt (catalog view `prompts`): the pass-rate histogram, the prompts that ended with no
    accepted sample (the hard ones worth a stronger teacher), and dollars per accepted sample by
    pass-rate bucket (what the easy prompts cost against the hard ones)."""
    if not has_chain:
        return {"available": False}
    # The view's own query, over the report's narrow tables (the view re-reads every Parquet column).
    steps, sample_steps = catalog.chain_steps(out_dir)
    samples = f"({catalog.samples_sql('rs', 'rv', steps)})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE prompts_r AS {catalog.prompts_sql(samples, 'rv', steps, sample_steps)}")
    con.execute("CREATE OR REPLACE TEMP TABLE rp AS SELECT * FROM prompts_r WHERE pass_rate IS NOT NULL")
    total = _one(con, "SELECT count(*) AS prompts, avg(pass_rate) AS mean_pass_rate, median(pass_rate) AS median_pass_rate, "
                      "avg(sampled) AS mean_samples FROM rp")
    if not total["prompts"]:
        return {"available": False}
    case = " ".join(f"WHEN pass_rate > {lo} AND pass_rate <= {hi} THEN {i}" for i, (_, lo, hi) in enumerate(PASS_BUCKETS))
    rows = {r["b"]: r for r in _rows(
        con,
        f"""
        SELECT CASE {case} END AS b, count(*) AS prompts, sum(sampled) AS sampled, sum(accepted) AS accepted,
               CASE WHEN count(*) FILTER (WHERE cost_usd IS NULL) = 0 THEN sum(cost_usd) END AS usd
        FROM rp GROUP BY 1
        """,
    )}
    buckets = []
    for i, (label, lo, hi) in enumerate(PASS_BUCKETS):
        r = rows.get(i, {"prompts": 0, "sampled": 0, "accepted": 0, "usd": 0.0})
        buckets.append({"bucket": label, "low": max(lo, 0.0), "high": hi if hi < 0.99 else 1.0, "prompts": r["prompts"],
                        "sampled": r["sampled"], "accepted": r["accepted"], "usd": r["usd"],
                        "usd_per_accepted": _div(r["usd"], r["accepted"]), "samples_per_prompt": _div(r["sampled"], r["prompts"])})
    nothing = _one(con, "SELECT count(*) AS prompts, sum(sampled) AS sampled, "
                        "CASE WHEN count(*) FILTER (WHERE cost_usd IS NULL) = 0 THEN sum(cost_usd) END AS usd FROM prompts_r WHERE accepted = 0")
    listed = _rows(con, f"SELECT prompt_id, sampled, solved, accepted, pass_rate, cost_usd AS usd FROM prompts_r WHERE accepted = 0 "
                        f"ORDER BY sampled DESC, prompt_id LIMIT {int(top)}")
    return {"available": True, **total, "buckets": buckets,
            "ended_with_nothing": {"prompts": nothing["prompts"], "sampled": nothing["sampled"], "usd": nothing["usd"], "examples": listed}}


def build_report(out_dir: str | Path, *, per: int = PER, drift_window: int | None = None) -> dict[str, Any]:
    """Everything `curator report` shows, as one JSON-ready dict."""
    out_dir = Path(out_dir)
    con = catalog.connect(out_dir, read_only=True)
    # Bounded: at 1M samples the report's tables outgrow this and DuckDB spills them to a scratch
    # folder of its own (the viewer runs the report beside its snapshot; both must fit).
    scratch = tempfile.mkdtemp(prefix="curator-report-")
    try:
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT_MB}MB'")
        con.execute(f"SET threads = {THREADS}")
        con.execute("SET temp_directory = ?", [scratch])
        con.execute("SET preserve_insertion_order = false")
        _register_cot_words(con)
        chain = chain_info(out_dir)
        has_chain = bool(chain and chain["steps"])
        # One pass over the Parquet files: the columns the report reads (no CoT text), and the
        # verdicts of stored samples; every query below reads these two tables.
        # The CoT's lengths are computed before the dedup window (`shards_files`): through the
        # window, every CoT text would be sorted and spilled (minutes at 1M samples).
        con.execute(
            f"""
            CREATE TEMP TABLE rs AS
            SELECT * FROM (
                SELECT key, prompt_id, sample_index, source, gold, completion, cot_source, finish_reason,
                       prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cost_usd, usage_estimated, request_id,
                       latency_s, created_at, seq, {catalog.CONFIG_ID_SQL} AS config_id, model, endpoint, params_json,
                       length(coalesce(cot, '')) AS cot_chars, length(coalesce(completion, '')) AS completion_chars,
                       curator_cot_words(coalesce(cot, '')) AS cot_len
                FROM shards_files
            ) {catalog.DEDUP_SAMPLES}
            """
        )
        con.execute("CREATE TEMP TABLE rv AS SELECT v.* FROM verdicts v SEMI JOIN rs USING (key)")
        base = _one(con, "SELECT count(*) AS sampled, count(DISTINCT prompt_id) AS prompts, min(created_at) AS first, max(created_at) AS last FROM rs")
        sampled = base["sampled"]
        fun, accepted, pending = funnel(con, chain, sampled)
        if not has_chain:
            con.execute("CREATE OR REPLACE TEMP TABLE blk AS SELECT key, NULL::BIGINT AS first_block, NULL::BIGINT AS first_fail FROM rs")
        # As the `samples` view names them: "<filter>:<reason>" of the first failing step.
        rejected, reasons = 0, []
        if has_chain:
            rejected = _one(con, "SELECT count(*) AS n FROM blk WHERE first_fail IS NOT NULL")["n"]
            reasons = _rows(
                con,
                """SELECT v.filter || ':' || v.reason AS reason, count(*) AS count
                   FROM blk JOIN rv v ON v.key = blk.key AND v.step = blk.first_fail GROUP BY 1 ORDER BY 2 DESC, 1""",
            )
        money = costs(con, has_chain, sampled, accepted, per)
        runs = []
        if _rows(con, "SELECT 1 FROM duckdb_views() WHERE view_name = 'runs' UNION ALL SELECT 1 FROM duckdb_tables() WHERE table_name = 'runs'"):
            runs = _rows(con, "SELECT run_id, command, status, started_at, ended_at, requests, samples, prompt_tokens, completion_tokens, cost_usd FROM runs ORDER BY started_at")
        # HTTP attempts (retries included) against answered requests: a gap is retries, or
        # requests a provider may have billed without an answer being stored (timeouts).
        money["http_attempts"] = sum(r["requests"] or 0 for r in runs) if runs else None
        manifest_name = None
        resolved = out_dir / "manifest.resolved.yaml"
        model = None
        if resolved.exists():
            import yaml

            m = yaml.safe_load(resolved.read_text()) or {}
            manifest_name = m.get("name")
            model = (m.get("teacher") or {}).get("model")
            money["by_mode"] = _by_mode(m.get("teacher") or {}, money)
        report: dict[str, Any] = {
            "out_dir": str(out_dir.resolve()),
            "name": manifest_name,
            "model": model,
            "generated_at": time.time(),
            "chain": chain,
            "sampled": sampled,
            "prompts": base["prompts"],
            "accepted": accepted,
            "rejected": rejected,
            "pending": pending,
            "acceptance_rate": _div(accepted, sampled),
            "journal_rows_not_in_shards": _journal_rows(out_dir),
            "per": per,
            "funnel": fun,
            "reject_reasons": reasons,
            **{k: money[k] for k in ("total_usd", "usd_per_sample", "usd_per_accepted", "usd_per_50k_accepted")},
            "cost": {k: v for k, v in money.items() if k not in ("tokens",)},
            "tokens": money["tokens"],
            "lengths": lengths(con, has_chain),
            "finish_reasons": _rows(con, "SELECT finish_reason, count(*) AS count FROM rs GROUP BY 1 ORDER BY 2 DESC, 1"),
            "cot_sources": _rows(con, "SELECT cot_source, count(*) AS count FROM rs GROUP BY 1 ORDER BY 2 DESC, 1"),
            "languages": _lang_details(con),
            "duplicates": duplicates(con),
            "sources": sources(con, has_chain, per),
            "configurations": configurations(con, out_dir, _accepted_expr(has_chain), _samples_from(has_chain)),
            "difficulty": difficulty(con, has_chain, out_dir),
            "runs": runs,
            "replicas": replica_figures(out_dir),
            "wall_s": (base["last"] - base["first"]) if base["first"] is not None else None,
        }
        report["drift"] = drift(con, out_dir, drift_window)
        return clean(report)
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)


def drift_warnings(report: dict[str, Any]) -> list[str]:
    return [m for s in report.get("drift", []) for m in s.get("messages", [])]
