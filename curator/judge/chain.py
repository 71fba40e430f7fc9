"""A chain: an ordered list of filters, loaded from YAML, applied to stored samples.

Every step judges every sample (so the funnel and each reason stay visible); a step sees
`prior_passed`, whether every earlier step accepted the row. Verdicts go to OUT/verdicts/ as
Parquet through `curator.store.verdicts`, beside a chain.json naming the chain they belong to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import yaml
from pydantic import ValidationError

from curator.config import ManifestError
from curator.judge.base import Filter, FilterContext, get_filter
from curator.store.verdicts import VerdictWriter


@dataclass
class Step:
    index: int
    name: str
    params: dict[str, Any]
    filter: Filter

    @property
    def scope(self) -> str:
        return self.filter.scope


@dataclass
class Chain:
    name: str
    steps: list[Step]
    spec: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

    def close(self) -> None:
        for step in self.steps:
            step.filter.close()
            step.filter.ctx.close()

    def sample_steps(self) -> list[Step]:
        return [s for s in self.steps if s.scope == "sample"]

    def dataset_steps(self) -> list[Step]:
        return [s for s in self.steps if s.scope != "sample"]

    def meta(self) -> dict[str, Any]:
        """What chain.json records: verdicts of another digest belong to another chain."""
        return {"name": self.name, "digest": self.digest, "steps": self.spec["steps"]}

    def verdict_writer(self, out_dir: Path, *, replace: bool) -> VerdictWriter:
        return VerdictWriter(out_dir, self.meta(), [s.index for s in self.sample_steps()], replace=replace)


def _normalise_step(raw: Any, where: str, i: int) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, dict) and "filter" in raw:
        extra = set(raw) - {"filter", "params"}
        if extra:
            raise ManifestError(f"{where}: steps[{i}]: unknown key {sorted(extra)[0]!r} (a step has 'filter' and 'params')")
        return str(raw["filter"]), dict(raw.get("params") or {})
    if isinstance(raw, dict) and len(raw) == 1:
        name, params = next(iter(raw.items()))
        return str(name), dict(params or {})
    raise ManifestError(f"{where}: steps[{i}]: write a step as {{filter: NAME, params: {{...}}}} or {{NAME: {{...}}}}")


def load_chain(spec: str | Path | dict[str, Any] | list[Any], ctx: FilterContext, where: str = "filters", *,
               response: dict[str, Any] | None = None) -> Chain:
    """spec: a YAML file path (relative to ctx.base_dir), a mapping {name, steps}, or a list of steps.

    response: the params of the `response` step (curator/judge/filters/response.py) that every
    chain judging an output folder starts with, so no chain accepts an answer the provider
    filtered or an oversized one; a chain that lists `response` itself keeps it where it stands
    (its params first, these filling in the rest). None (the API's default): the chain as written."""
    if isinstance(spec, (str, Path)):
        path = ctx.resolve(spec)
        if not path.exists():
            raise ManifestError(f"{path}: filter chain file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ManifestError(f"{path}: invalid YAML: {e}") from None
        where = str(path)
        # Paths inside a chain file (benchmarks to decontaminate against) are relative to it.
        ctx = FilterContext(output_dir=ctx.output_dir, base_dir=path.parent, workers=ctx.workers, teacher=ctx.teacher)
        default_name = path.stem
    else:
        data = spec
        default_name = "inline"
    if isinstance(data, list):
        data = {"name": default_name, "steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ManifestError(f"{where}: a chain is a mapping with 'steps': a list of filters")
    raws = [_normalise_step(raw, where, i) for i, raw in enumerate(data["steps"])]
    if response is not None:
        listed = [j for j, (name, _p) in enumerate(raws) if name == "response"]
        for j in listed:
            raws[j] = ("response", {**response, **raws[j][1]})
        if not listed:
            raws.insert(0, ("response", dict(response)))
    shift = len(raws) - len(data["steps"])  # user steps' positions in messages stay theirs
    steps = []
    resolved = []
    for i, (name, params) in enumerate(raws):
        pos = i - shift
        try:
            cls = get_filter(name)
        except KeyError as e:
            raise ManifestError(f"{where}: steps[{pos}]: {e.args[0]}") from None
        try:
            p = cls.Params.model_validate(params)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = "unknown param" if err["type"] == "extra_forbidden" else err["msg"]
            raise ManifestError(f"{where}: steps[{pos}] ({name}): param '{loc}': {msg}") from None
        steps.append(Step(i, name, params, cls(p, ctx)))
        resolved.append({"filter": name, "params": p.model_dump(mode="json")})
    return Chain(name=str(data.get("name") or default_name), steps=steps, spec={"name": data.get("name") or default_name, "steps": resolved})


def _check(step: Step, df: pl.DataFrame, out: pl.DataFrame) -> pl.DataFrame:
    missing = set(df["key"].to_list()) - set(out["key"].to_list()) if out.height != df.height else set()
    if out.height != df.height or missing:
        raise RuntimeError(f"filter {step.name!r} returned {out.height} verdicts for {df.height} samples")
    return out.select(
        pl.col("key"),
        pl.lit(step.index, dtype=pl.Int32).alias("step"),
        pl.lit(step.name).alias("filter"),
        pl.col("passed").cast(pl.Boolean),
        pl.col("reason").cast(pl.String),
        pl.col("details").cast(pl.String),
    )


def apply_steps(steps: Iterable[Step], df: pl.DataFrame, prior: pl.Series | None = None) -> list[pl.DataFrame]:
    """Run steps in order over one frame; returns one verdict frame per step."""
    prior_passed = prior if prior is not None else pl.Series("prior_passed", [True] * df.height, dtype=pl.Boolean)
    out = []
    for step in steps:
        frame = df.with_columns(prior_passed.alias("prior_passed"))
        v = _check(step, frame, step.filter.apply(frame))
        # Align to df's order before combining with prior_passed.
        v = frame.select("key").join(v, on="key", how="left", maintain_order="left")
        prior_passed = prior_passed & v["passed"].fill_null(False)
        out.append(v)
    return out
