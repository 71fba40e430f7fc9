"""The output folder's layout, known in one place: every path, the "is this an output folder"
check, the resolved manifest and the chain that wrote the verdicts.

    OUT/manifest.resolved.yaml  what `curator resume OUT` runs
    OUT/shards/*.parquet        stored samples (+ .NAME.footer copies)
    OUT/journal/*.jsonl         answers not yet compacted
    OUT/verdicts/*.parquet      one verdict per (sample, filter step), + chain.json
    OUT/receipts/<run>.json     one per session
    OUT/quarantine/             shards that could not be read, kept, never deleted
    OUT/catalog.duckdb          views over the above + the runs table
    OUT/.lock                   held by the single writer (shared by the workers of --worker I/N)
    OUT/.lock-wIofN             held by worker I of N; its journal is OUT/journal/wIofN/
    OUT/workers.json            how many parts --worker split the run in
    OUT/workers/wIofN.json      each worker's spend, read by the others (budgets across workers)
    OUT/live/<run>.json         a running session's per-replica figures (gone once its receipt is written, or folded into one)
    OUT/batches/ledger.jsonl    batch mode: uploaded files, their rows, batches, their ends
    OUT/configs/<id>.json       each configuration a run used (endpoint, model, params, template)
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.errors import RunError

if TYPE_CHECKING:
    from curator.config import Manifest

RESOLVED_MANIFEST = "manifest.resolved.yaml"
CHAIN_FILE = "chain.json"
CATALOG = "catalog.duckdb"
QUARANTINE = "quarantine"


class NotAnOutputDir(RunError):
    """The folder given is not (yet) a curator output folder."""


class OutputDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def shards(self) -> Path:
        return self.path / "shards"

    @property
    def journal(self) -> Path:
        return self.path / "journal"

    @property
    def verdicts(self) -> Path:
        return self.path / "verdicts"

    @property
    def receipts(self) -> Path:
        return self.path / "receipts"

    @property
    def quarantine(self) -> Path:
        return self.path / QUARANTINE

    @property
    def catalog(self) -> Path:
        return self.path / CATALOG

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    def worker_lock(self, tag: str) -> Path:
        return self.path / f".lock-{tag}"

    def worker_journal(self, tag: str) -> Path:
        return self.journal / tag

    @property
    def workers_file(self) -> Path:
        return self.path / "workers.json"

    def board(self, tag: str) -> Path:
        return self.path / "workers" / f"{tag}.json"

    @property
    def live_dir(self) -> Path:
        return self.path / "live"

    def live(self, run_id: str) -> Path:
        return self.live_dir / f"{run_id}.json"

    @property
    def finish_lock(self) -> Path:
        return self.path / ".lock-finish"

    @property
    def batches(self) -> Path:
        return self.path / "batches"

    @property
    def ledger(self) -> Path:
        return self.batches / "ledger.jsonl"

    @property
    def configs(self) -> Path:
        return self.path / "configs"

    @property
    def resolved_manifest(self) -> Path:
        return self.path / RESOLVED_MANIFEST

    @property
    def chain_file(self) -> Path:
        return self.verdicts / CHAIN_FILE

    def is_output_dir(self) -> bool:
        return self.resolved_manifest.is_file()

    def require(self) -> "OutputDir":
        """Raise the one-line error every command gives for a folder that is not an output folder."""
        if not self.path.is_dir():
            raise NotAnOutputDir(f"{self.path}: no such output directory")
        if not self.is_output_dir():
            raise NotAnOutputDir(f"{self.path}: not a curator output directory (no {RESOLVED_MANIFEST})")
        return self

    def manifest(self) -> "Manifest":
        from curator.config import load_manifest

        return load_manifest(self.require().resolved_manifest)

    def manifest_data(self) -> dict[str, Any]:
        """The resolved manifest as plain data (no validation: readers that only show it)."""
        import yaml

        return yaml.safe_load(self.resolved_manifest.read_text(encoding="utf-8")) or {}

    def chain(self) -> dict[str, Any] | None:
        """{name, digest, steps} of the chain whose verdicts are stored, None before any ran."""
        path = self.chain_file
        return json.loads(path.read_text()) if path.exists() else None

    @cached_property
    def resolved(self) -> Path:
        return self.path.resolve()


def as_output_dir(out: "OutputDir | Path | str") -> OutputDir:
    return out if isinstance(out, OutputDir) else OutputDir(out)
