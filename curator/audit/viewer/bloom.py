"""A Bloom filter per row group over every token of its text (numbers and short tokens too),
the 5-character pieces of its tokens, and its adjacent-token pairs, so a search the word index
cannot narrow (a number, or a rare phrase of common words) still reads only the few row groups
that may hold it. Search is a case-insensitive substring match, so a query's first and last
tokens may be cut inside a text token: those are looked up by their 5-character pieces (a piece
of the query's token is a piece of the text's token), whole tokens only where the query shows
both ends, and a pair by the last 5 characters of one token and the first 5 of the next (the
separator between them is in the query, so those ends are token ends in the text too).

Case: the text and the query go through the same per-character mapping (Arrow's lower-casing,
then the few letters whose case-insensitive twins lower-case differently, such as the long s,
the final sigma or the micro sign, mapped to one of them), so every text the exact match accepts
holds every looked-up entry. A false positive only costs reading a row group; a wrong result
cannot come from here."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PIECE = 5  # characters per token piece and per side of a pair
MIN_BITS, MAX_BITS = 1 << 12, 1 << 18  # per row group: at most 32 KB, 32 MB for 1,000 row groups
HASHES = 2
# U+0345 (a combining mark) is case-insensitively equal to the Greek iota, so it counts as a letter.
TOKEN_SEP = r"[^\p{L}\p{N}\x{0345}]+"
_TAG_TOKEN, _TAG_PIECE, _TAG_PAIR = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_MULT = np.uint64(0x100000001B3)


@functools.cache
def _fold() -> dict[int, str]:
    """Lower-case letters whose upper-case form lower-cases to another letter (s / long s, sigma /
    final sigma, ...): mapped to that letter, as RE2's case-insensitive match treats them alike."""
    out = {}
    for cp in range(0x80, 0x110000):
        c = chr(cp)
        if c != c.lower() and cp != 0x345:
            continue
        u = c.upper()
        if len(u) == 1 and len(u.lower()) == 1 and u.lower() != c:
            out[cp] = u.lower()
    return out


def normalize(tokens: pa.Array) -> pa.Array:
    low = pc.utf8_lower(tokens)
    wide = pc.match_substring_regex(low, r"[^\x00-\x7f]")
    if not pc.any(wide).as_py():
        return low
    table = _fold()
    vals = low.to_pylist()
    flags = wide.to_pylist()
    return pa.array([v.translate(table) if f else v for v, f in zip(vals, flags)], pa.string())


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(31))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_strings(arr: pa.Array, tag: np.uint64) -> np.ndarray:
    """A 64-bit hash of each string (polynomial over its UTF-8 bytes, then mixed), vectorised."""
    arr = pc.fill_null(arr, "").cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    off = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
    lens = np.diff(off)
    total = int(off[-1] - off[0])
    h = np.zeros(n, np.uint64)
    if total:
        data = np.frombuffer(arr.buffers()[2], np.uint8)[off[0]:off[-1]].astype(np.uint64)
        pos = np.arange(total, dtype=np.int64) - np.repeat(off[:-1] - off[0], lens)
        pows = np.cumprod(np.full(int(lens.max()), _MULT, np.uint64))
        with np.errstate(over="ignore"):
            w = (data + np.uint64(1)) * pows[pos]
        nz = lens > 0
        h[nz] = np.add.reduceat(w, (off[:-1] - off[0])[nz])
    with np.errstate(over="ignore"):
        return _mix(h ^ (lens.astype(np.uint64) * _TAG_PAIR) ^ tag)


def _pieces(tokens: pa.Array) -> pa.Array:
    """Every PIECE-character substring of every token at least that long."""
    lens = pc.utf8_length(tokens)
    out, o = [], 0
    while True:
        keep = pc.greater_equal(lens, o + PIECE)
        if not pc.any(keep).as_py():
            break
        sub = pc.filter(tokens, keep)
        if len(sub) < 8 and o >= 64:  # a few very long tokens (a blob): cut in Python, not one call per offset
            out.append(pa.array([t[i:i + PIECE] for t in sub.to_pylist() for i in range(o, len(t) - PIECE + 1)], pa.string()))
            break
        out.append(pc.utf8_slice_codeunits(sub, o, o + PIECE))
        o += 1
    return pa.concat_arrays(out) if out else pa.array([], pa.string())


def _pair_hash(ends: np.ndarray, starts: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(ends * np.uint64(0xFF51AFD7ED558CCD) ^ starts ^ _TAG_PAIR)


def _token_ids(col: pa.Array) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """The text's tokens in order, as ids into a dictionary of distinct tokens. Split on spaces
    first, so the regex runs over the distinct space-separated pieces only (a few thousand)."""
    enc = pc.dictionary_encode(pc.list_flatten(pc.split_pattern(col, " ")))
    parts = pc.split_pattern_regex(enc.dictionary, TOKEN_SEP)
    sub = pc.dictionary_encode(pc.list_flatten(parts))
    sub_ids = sub.indices.to_numpy(zero_copy_only=False)
    starts = parts.offsets.to_numpy()[:-1].astype(np.int64)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False).astype(np.int64)
    occ = enc.indices.to_numpy(zero_copy_only=False)
    n = counts[occ]
    first = np.repeat(starts[occ], n)
    within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    seq = sub_ids[first + within]
    # A separator at either end of a space-separated piece leaves an empty token: dropped, so the
    # tokens on both sides of "is $\\boxed" stay adjacent.
    empty = np.asarray(pc.equal(pc.utf8_length(sub.dictionary), 0).to_numpy(zero_copy_only=False))
    return sub.dictionary, seq[~empty[seq]], enc.dictionary


def group_entries(columns: list[pa.ChunkedArray | pa.Array]) -> tuple[np.ndarray, list[pa.Array]]:
    """Hashes of the entries of one row group's text fields (tokens, pieces, adjacent pairs), and
    each field's distinct space-separated pieces (the word index starts from those)."""
    hashes, spaced = [], []
    for col in columns:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if len(col) == 0:
            continue
        raw, seq, pieces = _token_ids(col)
        spaced.append(pieces)
        words = normalize(raw)
        hashes.append(hash_strings(words, _TAG_TOKEN))
        hashes.append(hash_strings(_pieces(words), _TAG_PIECE))
        ends = hash_strings(pc.utf8_slice_codeunits(words, -PIECE, 1 << 30), _TAG_PAIR)
        starts = hash_strings(pc.utf8_slice_codeunits(words, 0, PIECE), _TAG_PAIR)
        # Pairs only of tokens that are not all digits (numbers are looked up as tokens and pieces;
        # their pairs would fill the filter); pairs across a row or an empty token are extra
        # entries, harmless (they only add false positives).
        wordy = np.asarray(pc.invert(pc.match_substring_regex(words, r"^[0-9]*$")).to_numpy(zero_copy_only=False))
        a, b = seq[:-1], seq[1:]
        keep = wordy[a] & wordy[b]
        hashes.append(_pair_hash(ends[a[keep]], starts[b[keep]]))
    return (np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)), spaced


def _positions(h: np.ndarray, bits: int) -> np.ndarray:
    step = (h >> np.uint64(32)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return np.concatenate([(h + np.uint64(i) * step) & np.uint64(bits - 1) for i in range(HASHES)]).astype(np.int64)


def build_filter(h: np.ndarray) -> np.ndarray:
    """A packed bit array sized to the entries (a power of two between MIN_BITS and MAX_BITS)."""
    want = max(MIN_BITS, min(MAX_BITS, 8 * len(h)))
    bits = 1 << (want - 1).bit_length()
    bits = min(bits, MAX_BITS)
    flags = np.zeros(bits, bool)
    flags[_positions(h, bits)] = True
    return np.packbits(flags, bitorder="little")


def may_contain(packed: np.ndarray, h: np.ndarray) -> bool:
    pos = _positions(h, len(packed) * 8)
    return bool(np.all((packed[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1))


def query_entries(q: str) -> np.ndarray:
    """Hashes every row group holding q (case-insensitively, as a substring) has in its filter."""
    raw = [t for t in pc.split_pattern_regex(pa.array([q]), TOKEN_SEP)[0].as_py()]
    if not any(raw):
        return np.zeros(0, np.uint64)
    open_left, open_right = raw[0] != "", raw[-1] != ""  # the query's ends may be cut inside a text token
    toks = normalize(pa.array([t for t in raw if t], pa.string())).to_pylist()
    n = len(toks)
    whole = [t for i, t in enumerate(toks) if (i > 0 or not open_left) and (i < n - 1 or not open_right)]
    out = [hash_strings(pa.array(whole, pa.string()), _TAG_TOKEN),
           hash_strings(_pieces(pa.array(toks, pa.string())), _TAG_PIECE)]
    ends, starts = [], []
    for i in range(n - 1):
        a, b = toks[i], toks[i + 1]
        if a.isascii() and a.isdigit() or b.isascii() and b.isdigit():
            continue  # the text's pairs leave out all-digit tokens
        if (len(a) >= PIECE or i > 0 or not open_left) and (len(b) >= PIECE or i + 1 < n - 1 or not open_right):
            ends.append(a[-PIECE:])
            starts.append(b[:PIECE])
    if ends:
        out.append(_pair_hash(hash_strings(pa.array(ends, pa.string()), _TAG_PAIR),
                              hash_strings(pa.array(starts, pa.string()), _TAG_PAIR)))
    return np.concatenate(out)
