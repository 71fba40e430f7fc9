"""Apply a filter chain to an output directory: as answers arrive (sample steps), and as a pass
over all shards (dataset steps such as near-dup, or `curator filter OUT --chain ...`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curator.judge.base import DatasetFilter
from curator.judge.chain import Chain, apply_steps
from curator.store.reading import POLARS_SCHEMA, frame_from_records, iter_samples, read_samples  # noqa: F401  (re-exported)
from curator.store.verdicts import VerdictWriter, accepted_count, accepted_keys, earlier_ok  # noqa: F401  (re-exported)

_POLARS_SCHEMA = POLARS_SCHEMA


def _accepted(frames: list[pl.DataFrame]) -> pl.Series | None:
    if not frames:
        return None
    ok = frames[0]["passed"].fill_null(False)
    for f in frames[1:]:
        ok = ok & f["passed"].fill_null(False)
    return ok


class IncrementalJudge:
    """Sample steps on each new batch of stored answers; counts the accepted so far for budgets."""

    def __init__(self, out_dir: Path, chain: Chain, stored: set[str], *, engine: str = "local", ray_address: str | None = None):
        """stored: every key stored so far (the open store's `keys`: no second read of the shards).
        engine "ray": the dataset steps run on Ray (joined now: a missing extra fails before any spend)."""
        self.out_dir = out_dir
        self.chain = chain
        self.engine, self.ray_address = engine, ray_address
        if engine == "ray" and chain.dataset_steps():
            from curator.judge.ray_runner import connect

            connect(ray_address)
        self.writer = chain.verdict_writer(out_dir, replace=False)
        self.steps = chain.sample_steps()
        self.accepted = 0
        self.judged = 0
        self.catch_up(stored)

    def catch_up(self, stored: set[str]) -> None:
        """Judge stored answers that carry no verdict yet (a new chain, or rows a kill left unjudged)."""
        done = self.writer.judged_keys()
        sample_steps = [st.index for st in self.steps]
        self.accepted = accepted_count(self.writer.dir, sample_steps) if done and sample_steps else 0
        self.judged = len(done)
        missing = stored - done
        todo = read_samples(self.out_dir, keys=missing) if missing else pl.DataFrame(schema=_POLARS_SCHEMA)
        for start in range(0, todo.height, 5_000):
            self._judge_frame(todo.slice(start, 5_000))

    def _judge_frame(self, df: pl.DataFrame) -> list[bool]:
        if df.height == 0:
            return []
        if not self.steps:
            self.judged += df.height
            return [True] * df.height
        frames = apply_steps(self.steps, df)
        self.writer.write(frames, "batch")
        ok = _accepted(frames)
        self.accepted += int(ok.sum())
        self.judged += df.height
        return ok.to_list()

    def judge(self, records: list[dict[str, Any]]) -> list[bool]:
        """Judge a batch with the sample steps; whether each record passed all of them, in order."""
        return self._judge_frame(frame_from_records(records))

    def accepted_keys(self) -> set[str]:
        """Stored keys every sample step accepted (verdicts written so far, this chain's)."""
        return accepted_keys(self.writer.dir, [st.index for st in self.steps])

    def finish(self) -> int:
        """Run the dataset steps and publish the verdicts; returns the accepted count over all steps."""
        if self.engine == "ray":
            from curator.judge.ray_runner import run_dataset_steps_ray

            run_dataset_steps_ray(self.out_dir, self.chain, self.writer, run_dataset_steps, address=self.ray_address)
        else:
            run_dataset_steps(self.out_dir, self.chain, self.writer)
        self.writer.finish()
        self.accepted = accepted_count(self.writer.dir, [st.index for st in self.chain.steps])
        return self.accepted


def _stream(out_dir: Path, columns: list[str], earlier: pl.DataFrame, batch: int):
    """Stored samples in batches with only `columns` + prior_passed, each key once."""
    for part in iter_samples(out_dir, batch, columns):
        yield part.join(earlier, on="key", how="left", maintain_order="left").with_columns(
            pl.col("ok").fill_null(True).alias("prior_passed")
        ).drop("ok")


def run_dataset_steps(out_dir: Path, chain: Chain, writer: VerdictWriter, steps: list | None = None) -> None:
    """The chain's dataset steps (or `steps`, some of them) over every stored sample, in order."""
    steps = chain.dataset_steps() if steps is None else steps
    if not steps:
        return
    df = None
    for step in steps:
        files = [str(p) for p in writer.dir.glob("*.parquet")]
        earlier = earlier_ok(files, step.index)
        if isinstance(step.filter, DatasetFilter) and step.filter.streams:
            # Streamed over the shards: a million traces never sit in memory at once.
            cols = list(dict.fromkeys(["key", *step.filter.columns()]))
            frame = step.filter.apply_stream(lambda: _stream(out_dir, cols, earlier, 20_000))
            frame = frame.select(
                "key", pl.lit(step.index, dtype=pl.Int32).alias("step"), pl.lit(step.name).alias("filter"), "passed", "reason", "details"
            )
        else:
            if df is None:
                df = read_samples(out_dir)
            if df.height == 0:
                return
            prior = df.select("key").join(earlier, on="key", how="left", maintain_order="left")["ok"].fill_null(True)
            frame = apply_steps([step], df, prior)[0]
        if frame.height:
            writer.replace_step(step.index, frame)


def run_chain(out_dir: Path, chain: Chain) -> dict[str, int]:
    """Re-judge everything stored with `chain`, replacing the verdicts atomically at the end."""
    writer = chain.verdict_writer(out_dir, replace=True)
    steps = chain.sample_steps()
    n = 0
    for part in iter_samples(out_dir):
        n += part.height
        if steps:
            writer.write(apply_steps(steps, part), "batch")
    run_dataset_steps(out_dir, chain, writer)
    writer.finish()
    return {"samples": n}


def refilter(out: Path, chain_spec: str | None = None, *, workers: int = 2, engine: str = "local",
             ray_address: str | None = None, figures: dict | None = None) -> tuple[str, tuple[int, int, int], list[tuple[str, int]]]:
    """`curator filter OUT [--chain CHAIN] [--engine ray]`: re-judge everything stored; returns the
    chain's name, (samples, accepted, rejected) and the reject reasons with their counts.
    figures: filled with the Ray pipeline's figures (shuffle volume, pairs, times)."""
    from curator.judge.base import FilterContext
    from curator.judge.chain import load_chain
    from curator.errors import RunError
    from curator.store import catalog
    from curator.store.layout import OutputDir

    if engine not in ("local", "ray"):
        raise RunError(f"--engine {engine!r}: choose local or ray")
    m = OutputDir(out).manifest()
    spec = chain_spec if chain_spec is not None else m.filters
    if spec is None:
        raise RunError("no chain given (--chain) and the manifest names none")
    ctx = FilterContext(output_dir=out, base_dir=Path.cwd() if chain_spec else m.base_dir, workers=workers, teacher=m.teacher)
    if engine == "ray":
        from curator.judge.ray_runner import connect

        connect(ray_address)  # a missing extra or a silent address: one line, before anything is read
    elif ray_address:
        raise RunError("--ray-address needs --engine ray")
    c = load_chain(spec, ctx, response={"max_answer_chars": m.limits.max_answer_chars})
    try:
        if engine == "ray":
            from curator.judge.ray_runner import run_chain_ray

            (figures if figures is not None else {}).update(run_chain_ray(out, c, run_dataset_steps, workers=workers, address=ray_address))
        else:
            run_chain(out, c)
    finally:
        ctx.close()
        c.close()
    con = catalog.connect(out)
    try:
        counts = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE accepted = false) FROM samples"
        ).fetchall()[0]
        reasons = con.execute(
            "SELECT reject_reason, count(*) FROM samples WHERE accepted = false GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    finally:
        con.close()
    return c.name, counts, reasons
