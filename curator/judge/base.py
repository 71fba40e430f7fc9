"""What a filter is, and the registry that maps chain names to filters.

A filter has a name, typed params (a pydantic model, filled from YAML) and one job: given a polars
frame of samples (columns of `curator.records.SAMPLE_SCHEMA`, plus `prior_passed`: whether every
earlier step of the chain accepted the row), return one verdict per row as a frame with columns
`key`, `passed` (bool), `reason` (str reason code, null when passed) and `details` (JSON str or null).

Two scopes, declared by the class a filter derives from:
- `SampleFilter` judges each row alone (the chain may split the frame into batches and call it as
  samples arrive);
- `DatasetFilter` (near-dup, majority vote) needs every stored sample and runs as a pass over all
  shards once sampling ends. With `streams = True` it is handed the shards as batches of only the
  `columns()` it reads (`apply_stream`), so a million traces never sit in memory at once.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import polars as pl
from pydantic import BaseModel, ConfigDict

VERDICT_COLUMNS = ["key", "passed", "reason", "details"]


class FilterParams(BaseModel):
    """Base for every filter's params: unknown keys are an error that names the key."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class FilterContext:
    """What a filter may need beyond its params: where the data lives, a shared process pool,
    the teacher config (for a judge), and the folder relative paths in the chain resolve against."""

    output_dir: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    workers: int = 2
    teacher: Any = None  # curator.config.Teacher, for filters that call a model
    _pool: Executor | None = None

    def pool(self) -> Executor:
        if self._pool is None:
            from curator.engines.lifeline import exit_with_parent

            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def resolve(self, path: str | Path) -> Path:
        from curator.pkgpath import resolve_path

        return resolve_path(path, self.base_dir)


class Filter:
    name: ClassVar[str] = ""
    Params: ClassVar[type[FilterParams]] = FilterParams
    scope: ClassVar[str] = "sample"

    def __init__(self, params: FilterParams, ctx: FilterContext):
        self.params = params
        self.ctx = ctx

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release worker processes or clients; the chain calls it when a run or re-judge ends."""


class SampleFilter(Filter):
    """Judges each row alone: `apply` may see any batch of stored samples."""

    scope: ClassVar[str] = "sample"


class DatasetFilter(Filter):
    """Judges each row against all the others: runs once over every stored sample."""

    scope: ClassVar[str] = "dataset"
    streams: ClassVar[bool] = False  # True: the runner calls apply_stream instead of apply

    def columns(self) -> list[str]:
        """The sample columns apply_stream reads (besides key and prior_passed)."""
        raise NotImplementedError

    def apply_stream(self, batches: Callable[[], Iterable[pl.DataFrame]], rows_hint: int = 0) -> pl.DataFrame:
        """Verdicts for every row of `batches()` (callable again for a second pass), frames of
        `columns()` + key + prior_passed."""
        raise NotImplementedError


def column(df: pl.DataFrame, name: str, default: Any = None) -> list[Any]:
    """A column as a list, or `default` for every row when the frame lacks it."""
    return df[name].to_list() if name in df.columns else [default] * df.height


def verdicts(keys: list[str], passed: list[bool], reasons: list[str | None], details: list[Any]) -> pl.DataFrame:
    """Build a verdict frame; details may be dicts (serialised to JSON) or None."""
    return pl.DataFrame(
        {
            "key": keys,
            "passed": passed,
            "reason": [None if p else (r or "rejected") for p, r in zip(passed, reasons)],
            "details": [None if d is None else (d if isinstance(d, str) else json.dumps(d, ensure_ascii=False, default=str)) for d in details],
        },
        schema={"key": pl.String, "passed": pl.Boolean, "reason": pl.String, "details": pl.String},
    )


_REGISTRY: dict[str, type[Filter]] = {}
_DISCOVERED = False


def register(cls: type[Filter]) -> type[Filter]:
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two filters are named {cls.name!r}: {_REGISTRY[cls.name].__qualname__} and {cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    # Every module in curator.judge.filters registers its filters on import; importing them all here
    # (not at package import) keeps `import curator` free of side effects and heavy imports.
    global _DISCOVERED
    if _DISCOVERED:
        return
    import curator.judge.filters as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in {"base", "chain"} and not mod.name.startswith("_"):
            importlib.import_module(f"curator.judge.filters.{mod.name}")
    _DISCOVERED = True


def get_filter(name: str) -> type[Filter]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown filter {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_filters() -> dict[str, type[Filter]]:
    _discover()
    return dict(_REGISTRY)
