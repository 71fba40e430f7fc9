"""`curator batch write` / `curator batch read`: requests for offline engines (`vllm run-batch`)
in the batch line format, and their output stored through the same store path as online answers."""

from __future__ import annotations

from pathlib import Path

import typer

from curator.cli.common import err, guard

app = typer.Typer(no_args_is_help=True, help="Batch files for offline engines (vllm run-batch) and batch APIs.")


def _open(target: Path):
    """(manifest, OutputDir, from_manifest) from an output folder, or from a manifest file (whose
    output folder the caller sets up, under the writer lock, the way `curator run` would)."""
    from curator.config import load_manifest
    from curator.store.layout import OutputDir

    if target.is_file():
        manifest = load_manifest(target)
        return manifest, OutputDir(manifest.output_dir), True
    out = OutputDir(target)
    return out.manifest(), out, False


@app.command("write")
def write(
    target: Path = typer.Argument(..., help="an output directory (or a manifest, whose output directory is set up)"),
    to: Path = typer.Option(..., "--to", help="the requests file to write (JSONL, the batch line format)"),
) -> None:
    """Write the requests still without an answer (and in no open batch) to a file for an offline engine."""

    def go():
        from curator.run import build_jobs, write_resolved_manifest
        from curator.sample.batch import write_offline
        from curator.store.ledger import Ledger
        from curator.store.sample_store import SampleStore

        manifest, out, from_manifest = _open(target)
        store = SampleStore(out.path, shard_rows=manifest.store.shard_rows)  # the writer lock: no run writes meanwhile
        try:
            if from_manifest:
                write_resolved_manifest(manifest, out.path)
            ledger = Ledger(out.ledger)
            jobs, total, have, _ = build_jobs(manifest, store.keys)
            pending = ledger.pending_keys()
            n = write_offline(manifest, jobs, ledger, store.keys | pending, to)
            return n, total, have, len(pending)
        finally:
            store.close()

    n, total, have, pending = guard(go)
    note = f"; {pending} samples wait in open batches and were left out" if pending else ""
    err.print(f"wrote {n} requests to {to} ({have} of {total} samples already stored{note})", highlight=False, soft_wrap=True)


@app.command("read")
def read(
    out: Path = typer.Argument(..., help="the output directory the requests were written from"),
    results: Path = typer.Argument(..., help="the engine's output file (vllm run-batch -o), JSONL"),
) -> None:
    """Store an offline engine's answers (each once: reading a file again stores nothing new) and judge them."""

    def go():
        from curator.judge.runner import IncrementalJudge
        from curator.run import build_jobs, load_filter_chain
        from curator.sample.batch import Reader, read_offline
        from curator.sample.configs import configuration_id
        from curator.sample.cost import find_price
        from curator.sample.sampler import RecordMaker, Stats
        from curator.sample.tokencount import load_counter
        from curator.store.layout import OutputDir
        from curator.store.ledger import Ledger
        from curator.store.sample_store import SampleStore

        o = OutputDir(out)
        manifest = o.manifest()
        if not results.is_file():
            raise FileNotFoundError(f"{results}: no such results file")
        price = find_price(manifest.teacher.model, manifest.teacher.price)
        tok = manifest.teacher.tokenizer
        counter = load_counter(manifest.resolve(tok) if tok else None)
        chain = load_filter_chain(manifest, o.path)
        store = SampleStore(o.path, shard_rows=manifest.store.shard_rows)
        try:
            store.config_id = configuration_id(manifest)  # the configuration `batch write` asked with
            jobs, _, _, _ = build_jobs(manifest, store.keys)
            judge = IncrementalJudge(o.path, chain, store.keys) if chain is not None else None
            stats = Stats()
            maker = RecordMaker(manifest, price, counter, batch=manifest.teacher.mode == "batch")
            res = read_offline(Reader(maker, jobs, store, judge, stats), Ledger(o.ledger), results)
            if judge is not None:
                stats.accepted = judge.finish()
            store.compact()
            return res, stats
        finally:
            if chain is not None:
                chain.close()
            store.close()

    res, stats = guard(go)
    cost = f"${stats.cost_usd:.4f}" if stats.cost_known else "unknown"
    err.print(f"stored {res.stored} new samples from {results} ({res.already} lines already stored); cost {cost}"
              + (f"; accepted {stats.accepted}/{stats.judged}" if stats.judged else ""), highlight=False, soft_wrap=True)
    if res.errors:
        first = next(iter(res.errors.items()))
        err.print(f"  {len(res.errors)} lines carry an error, not an answer (first: {first[0][:12]}: {first[1]}); "
                  f"`curator batch write {out} --to FILE` writes them again", highlight=False, markup=False, soft_wrap=True)
    if res.not_run:
        err.print(f"  {res.not_run} lines were never run (batch expired or cancelled)", highlight=False, soft_wrap=True)
    if res.unknown:
        err.print(f"  {len(res.unknown)} lines match no request written for {out} and were not stored (first custom_id: {res.unknown[0]})",
                  highlight=False, markup=False, soft_wrap=True)
    if res.bad_lines:
        err.print(f"  {len(res.bad_lines)} lines are not readable JSON (a file cut short?): line {', '.join(map(str, res.bad_lines[:5]))}",
                  highlight=False, soft_wrap=True)
