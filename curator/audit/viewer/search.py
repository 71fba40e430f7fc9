"""Text search over the stored traces without reading all of them.

DuckDB's full-text extension is not in the wheel (it downloads on first use), and a scan of a
million multi-KB traces takes seconds, so the viewer keeps a small word index: for every row group
of every shard, the words (lower-cased runs of letters and digits, 3+ characters, not all digits)
of its problem, CoT and completion, as one bitset of row groups per word. A query is answered by
reading only the row groups that hold every one of its words, in storage order, and stopping
once the page is full. The index only rules row groups out; each candidate is matched exactly
(case-insensitive substring), so it never changes what a search finds, only how fast.

Beside the word index, each row group has a Bloom filter (bloom.py) over every token (numbers
and short ones too), 5-character pieces and adjacent-word pairs: a row group is read only if both
keep it, so a number or a rare phrase of common words is narrowed too.

Shards are immutable once written, so the index is built once per shard file (in the background
after each snapshot) and kept across refreshes; a shard not indexed yet is simply read whole."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.audit.viewer.bloom import (
    build_filter,
    group_entries,
    may_contain,
    query_entries,
)

FIELDS = ("problem", "cot", "completion")
MIN_WORD = 3
_SEP = r"[^\p{L}\p{N}]+"


def query_words(q: str) -> list[str]:
    """The words of a query the index can rule row groups out with: every one lies inside a word
    of any text that contains the query (the query's first and last words may be cut)."""
    return [w for w in re.findall(r"[^\W_]+", q.lower()) if len(w) >= MIN_WORD and not w.isdigit()]


def group_words(table: pa.Table) -> list[str]:
    """Distinct index words of one row group. Splitting on spaces first keeps the regex work to
    the distinct tokens (a few thousand) instead of the whole text."""
    parts = []
    for col in table.columns:
        toks = pc.list_flatten(pc.split_pattern(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col, " "))
        parts.append(pc.unique(toks))
    return words_of(parts)


def words_of(parts: list[pa.Array]) -> list[str]:
    """Index words of the distinct space-separated pieces of a row group's fields."""
    if not parts:
        return []
    u = pc.unique(pa.chunked_array(parts).combine_chunks())
    u = pc.unique(pc.list_flatten(pc.split_pattern(pc.replace_substring_regex(pc.utf8_lower(u), _SEP, " "), " ")))
    keep = pc.and_(pc.greater_equal(pc.utf8_length(u), MIN_WORD), pc.invert(pc.match_substring_regex(u, r"^[0-9]+$")))
    return u.filter(keep).to_pylist()


class WordIndex:
    """word -> bitset (a Python int) of row-group ids; `groups[id]` = (file, row group)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.words: dict[str, int] = {}
        self.groups: list[tuple[str, int]] = []
        self.group_id: dict[tuple[str, int], int] = {}
        self.files: dict[str, tuple[int, float]] = {}  # indexed file -> (size, mtime) when indexed
        self.blooms: dict[int, np.ndarray] = {}  # row-group id -> its Bloom filter (bloom.py)
        self.building = False
        self.build_s = 0.0

    def covers(self, path: str) -> bool:
        try:
            st = Path(path).stat()
        except OSError:
            return False
        return self.files.get(path) == (st.st_size, st.st_mtime)

    def add_file(self, path: str) -> None:
        st = Path(path).stat()
        f = pq.ParquetFile(path)
        cols = [c for c in FIELDS if c in f.schema_arrow.names]
        local: dict[str, int] = {}
        blooms: dict[int, np.ndarray] = {}
        for g in range(f.metadata.num_row_groups):
            with self.lock:
                gid = self.group_id.get((path, g))
                if gid is None:
                    gid = len(self.groups)
                    self.groups.append((path, g))
                    self.group_id[(path, g)] = gid
            bit = 1 << gid
            entries, spaced = group_entries(f.read_row_group(g, columns=cols).columns)
            for w in words_of(spaced):
                local[w] = local.get(w, 0) | bit
            blooms[gid] = build_filter(entries)
        with self.lock:
            for w, bits in local.items():
                self.words[w] = self.words.get(w, 0) | bits
            self.blooms.update(blooms)
            self.files[path] = (st.st_size, st.st_mtime)

    def build(self, paths: list[str]) -> None:
        with self.lock:
            if self.building:
                return
            self.building = True
        t0 = time.time()
        # The first case-insensitive match in a process sets up RE2 and compute kernels (~1 s):
        # done here, not in the first search.
        pc.match_substring(pa.array(["warm up"]), "up", ignore_case=True)
        try:
            for p in paths:
                if not self.covers(p):
                    try:
                        self.add_file(p)
                    except (OSError, pa.ArrowException):
                        pass  # a file gone or unreadable: it is read whole when searched
        finally:
            # Arrow's allocator keeps what the build freed; handed back so the server's peak stays low.
            pa.default_memory_pool().release_unused()
            self.build_s = time.time() - t0
            with self.lock:
                self.building = False

    def candidates(self, words: list[str]) -> int | None:
        """Bitset of row groups that may hold every word; None when no word can narrow it down."""
        if not words:
            return None
        with self.lock:
            vocab = list(self.words.items())
        out = None
        for w in words:
            bits = 0
            for word, b in vocab:
                if w in word:
                    bits |= b
            out = bits if out is None else out & bits
        return out

    def candidates_for(self, q: str) -> int | None:
        """Bitset of row groups that may hold q: those the word index keeps (None: all) and whose
        Bloom filter holds every token, piece and pair of q (bloom.py)."""
        out = self.candidates(query_words(q))
        entries = query_entries(q)
        if not len(entries):
            return out
        with self.lock:
            blooms = list(self.blooms.items())
        bits = 0
        for gid, packed in blooms:
            if may_contain(packed, entries):
                bits |= 1 << gid
        return bits if out is None else out & bits

    def status(self, paths: list[str]) -> dict:
        done = sum(1 for p in paths if self.covers(p))
        return {"files_indexed": done, "files": len(paths), "building": self.building, "words": len(self.words),
                "build_s": round(self.build_s, 1)}


def match_rows(path: str, group: int, q: str, fields: tuple[str, ...]) -> list[int]:
    """Offsets (within the row group) of the rows whose fields contain q, case-insensitively."""
    f = pq.ParquetFile(path)
    cols = [c for c in fields if c in f.schema_arrow.names]
    if not cols:
        return []
    t = f.read_row_group(group, columns=cols)
    hit = None
    for c in cols:
        m = pc.fill_null(pc.match_substring(t.column(c), q, ignore_case=True), False)
        hit = m if hit is None else pc.or_(hit, m)
    return pc.indices_nonzero(hit).to_pylist()
