"""MinHash signatures and LSH band keys, vectorised with numpy over a batch of texts: the first two
stages of near-dup (signatures -> band keys), and the word n-gram hashes decontamination shares.
How words, shingles and signatures are computed: see the docstring of `curator.engines.dedup`."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import xxhash


# ----------------------------------------------------------------------------------------------
# Words and n-gram hashes (shared with the decontamination filter)
# ----------------------------------------------------------------------------------------------

_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _WORD_BYTE[_c] = True
_WORD_BYTE[128:] = True  # non-ASCII text is pre-cleaned with a Unicode regex (see _clean)
_NON_WORD = re.compile(r"[\W_]+")

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_WORD_MUL = _U64(0x100000001B3)
_LOW_BYTES = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [_MASK64], dtype=_U64)  # mask of i low bytes
_NGRAM_MUL = _U64(0x9E3779B97F4A7C15)  # combines word hashes into n-gram hashes
_F64 = (_U64(33), _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53))
_F32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_MAX_BATCH_BYTES = 256 << 10  # texts are tokenised in batches of about this many bytes


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finalizer (a bijection), in place on a fresh uint64 array."""
    s, m1, m2 = _F64
    h ^= h >> s
    h *= m1
    h ^= h >> s
    h *= m2
    h ^= h >> s
    return h


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finalizer, as datasketch applies it in its affine32 scheme."""
    s1, m1, s2, m2 = _F32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s1)


def _clean(text: str | None) -> bytes:
    if not text:
        return b""
    t = text.lower()
    if not t.isascii():
        t = _NON_WORD.sub(" ", t)
    return t.encode("utf-8", "replace")


@dataclass
class Words:
    """The words of a batch of texts: `hashes[offsets[d]:offsets[d+1]]` are text d's words;
    word i is `buf[starts[i]:ends[i]]` (lowercased UTF-8)."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = n_texts + 1
    starts: np.ndarray
    ends: np.ndarray
    buf: bytes

    def text(self, first_word: int, n: int) -> str:
        """The words [first_word, first_word + n) joined by single spaces."""
        return " ".join(self.buf[self.starts[i] : self.ends[i]].decode("utf-8", "replace") for i in range(first_word, first_word + n))


def words(texts: Sequence[str | None]) -> Words:
    """Tokenise and hash the words of `texts` (vectorised over the batch).

    A word's hash: h = len; then for each 8-byte little-endian chunk c of its UTF-8 bytes
    (zero-padded), h = fmix64(h * K ^ c). Words over 64 bytes (URLs, base64) use xxh3_64 instead.
    Cost is O(bytes) for finding words (a lookup table) and O(words) for hashing them."""
    enc = [_clean(t) for t in texts]
    # Two separator bytes between texts: no word spans texts, and each text starts at a known
    # offset; 8 padding bytes let every word start be read as an (unaligned) uint64.
    raw = b" " + b"  ".join(enc) + b" " + bytes(8)
    nb = len(raw) - 8
    buf = np.frombuffer(raw, dtype=np.uint8, count=nb)
    lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    text_start = np.empty(len(enc) + 1, dtype=np.int64)
    text_start[0] = 1
    np.cumsum(lens + 2, out=text_start[1:])
    text_start[1:] += 1
    isw = _WORD_BYTE[buf]
    tr = np.flatnonzero(isw[1:] != isw[:-1]) + 1  # buf starts and ends with a separator
    starts, ends = tr[0::2], tr[1::2]
    offsets = np.searchsorted(starts, text_start, side="left").astype(np.int64)
    offsets[-1] = len(starts)
    if len(starts) == 0:
        return Words(np.empty(0, _U64), offsets, starts, ends, raw)
    u64 = np.ndarray((nb,), dtype="<u8", buffer=raw, strides=(1,))  # u64[i] = bytes i..i+7
    wl = ends - starts
    h = wl.astype(_U64)
    sel = np.arange(len(starts))
    k = 0
    while len(sel):
        rem = wl[sel] - 8 * k
        c = u64[starts[sel] + 8 * k] & _LOW_BYTES[np.minimum(rem, 8)]
        if k == 0:
            h *= _WORD_MUL
            h ^= c
            h = fmix64(h)
        else:
            h[sel] = fmix64((h[sel] * _WORD_MUL) ^ c)
        k += 1
        sel = sel[rem > 8]
        if k == 8 and len(sel):  # long words: hash the bytes with xxhash
            h[sel] = np.fromiter(
                (xxhash.xxh3_64_intdigest(raw[a:b]) for a, b in zip(starts[sel].tolist(), ends[sel].tolist())), dtype=_U64, count=len(sel)
            )
            break
    return Words(h, offsets, starts, ends, raw)


def ngram_hashes(w: Words, n: int, *, short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of every text.

    Returns (hashes uint64, index of each n-gram's first word in `w`); the n-grams of a text are
    contiguous and in text order (`ngram_doc_offsets` gives the per-text ranges). With `short`,
    a text of 1..n-1 words yields one n-gram of all its words; without, none."""
    lens = np.diff(w.offsets)
    L = len(w.hashes)
    if L >= n:
        m = L - n + 1
        h = w.hashes[:m].copy()
        for k in range(1, n):
            h *= _NGRAM_MUL
            h += w.hashes[k : k + m]
        doc_of = np.repeat(np.arange(len(lens)), lens)[:m]
        valid = (w.offsets[doc_of + 1] - np.arange(m)) >= n
        first = np.flatnonzero(valid)
        h = fmix64(h[first])
    else:
        h = np.empty(0, _U64)
        first = np.empty(0, np.int64)
    if short:
        sd = np.flatnonzero((lens > 0) & (lens < n))
        if len(sd):
            extra = np.empty(len(sd), _U64)
            for j, d in enumerate(sd):
                a, b = int(w.offsets[d]), int(w.offsets[d + 1])
                acc = int(w.hashes[a])
                for i in range(a + 1, b):
                    acc = (acc * int(_NGRAM_MUL) + int(w.hashes[i])) & _MASK64
                extra[j] = acc
            extra = fmix64(extra)
            h = np.concatenate([h, extra])
            first = np.concatenate([first, w.offsets[sd]])
            order = np.argsort(first, kind="stable")
            h, first = h[order], first[order]
    return h, first


def ngram_doc_offsets(w: Words, first: np.ndarray) -> np.ndarray:
    """Offsets into the n-gram arrays of `ngram_hashes`, per text (len = n_texts + 1)."""
    return np.searchsorted(first, w.offsets, side="left").astype(np.int64)


def _batches_by_bytes(texts: Sequence[str | None]) -> Iterator[tuple[int, int]]:
    i, n = 0, len(texts)
    while i < n:
        j, size = i, 0
        while j < n and (j == i or size < _MAX_BATCH_BYTES):
            size += len(texts[j] or "")
            j += 1
        yield i, j
        i = j


def shingle_hashes(texts: Sequence[str | None], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes (what a datasketch `hashfunc` would return) and per-text offsets."""
    hs, offs, base = [], [np.zeros(1, np.int64)], 0
    for i, j in _batches_by_bytes(texts):
        w = words(texts[i:j])
        h, first = ngram_hashes(w, ngram)
        hs.append(((h >> _U64(32)) ^ h).astype(np.uint32))
        offs.append(ngram_doc_offsets(w, first)[1:] + base)
        base += len(h)
    return (np.concatenate(hs) if hs else np.empty(0, np.uint32)), np.concatenate(offs)


# ----------------------------------------------------------------------------------------------
# MinHash signatures
# ----------------------------------------------------------------------------------------------

_PERMS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
EMPTY = np.uint32(0xFFFFFFFF)
_BLOCK = 8192  # shingles per numpy block (128 x 8192 uint32 = 4 MiB)


def permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b), as uint32 column vectors."""
    k = (num_perm, seed)
    if k not in _PERMS:
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=seed).permutations
        _PERMS[k] = (np.ascontiguousarray(a, np.uint32)[:, None], np.ascontiguousarray(b, np.uint32)[:, None])
    return _PERMS[k]


def minhash_from_hashes(hv: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """Signatures (n_texts, num_perm) uint32 from 32-bit shingle hashes grouped by `offsets`.
    A text without shingles gets all 0xFFFFFFFF (datasketch's empty MinHash)."""
    a, b = permutations(num_perm, seed)
    n = len(offsets) - 1
    out = np.full((n, num_perm), EMPTY, dtype=np.uint32)
    hv = fmix32(hv.astype(np.uint32, copy=False))
    counts = np.diff(offsets)
    docs = np.flatnonzero(counts > 0)
    work = np.empty((num_perm, _BLOCK), np.uint32)
    i = 0
    while i < len(docs):
        d0 = docs[i]
        s0 = offsets[d0]
        if counts[d0] > 4 * _BLOCK:  # one long text: running min over column blocks
            acc = out[d0]
            for s in range(s0, offsets[d0 + 1], _BLOCK):
                blk = a * hv[None, s : min(s + _BLOCK, offsets[d0 + 1])]
                blk += b
                np.minimum(acc, blk.min(axis=1), out=acc)
            i += 1
            continue
        j = i + 1
        while j < len(docs) and offsets[docs[j] + 1] - s0 <= _BLOCK and counts[docs[j]] <= 4 * _BLOCK:
            j += 1
        sel = docs[i:j]
        s1 = offsets[sel[-1] + 1]
        blk = work[:, : s1 - s0] if s1 - s0 <= _BLOCK else np.empty((num_perm, s1 - s0), np.uint32)
        np.multiply(a, hv[None, s0:s1], out=blk)  # (num_perm, shingles): every permutation in one op
        blk += b
        out[sel] = np.minimum.reduceat(blk, offsets[sel] - s0, axis=1).T
        i = j
    return out


def signatures(texts: Sequence[str | None], ngram: int = 5, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures (len(texts), num_perm) uint32 of word n-gram shingles."""
    outs = []
    for i, j in _batches_by_bytes(texts):
        hv, offs = shingle_hashes(texts[i:j], ngram)
        outs.append(minhash_from_hashes(hv, offs, num_perm, seed))
    return np.concatenate(outs) if outs else np.empty((0, num_perm), np.uint32)


def to_minhash(sig: np.ndarray, seed: int = 1):
    """A datasketch MinHash holding `sig` (for interop: LSH indexes, jaccard, ...)."""
    from datasketch import MinHash

    return MinHash(hashvalues=sig, seed=seed, scheme="affine32")


def jaccard_est(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of paired signature rows: the share of equal values."""
    return (sa == sb).mean(axis=-1)


# ----------------------------------------------------------------------------------------------
# Bands
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(b, r) with b*r <= num_perm minimising fp_weight*FP + fn_weight*FN, where FP / FN are the
    areas under the LSH S-curve P(s) = 1-(1-s^r)^b below / above the threshold (datasketch's
    `_optimal_param`, integrated numerically on a grid)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    s = np.linspace(0.0, 1.0, 4001)
    best, opt = math.inf, (1, 1)
    for b in range(1, num_perm + 1):
        rs = np.arange(1, num_perm // b + 1)
        p = 1.0 - (1.0 - s[None, :] ** rs[:, None]) ** b
        lo, hi = s <= threshold, s >= threshold
        fp = np.trapezoid(p[:, lo], s[lo], axis=1)
        fn = np.trapezoid(1.0 - p[:, hi], s[hi], axis=1)
        err = fp * fp_weight + fn * fn_weight
        k = int(np.argmin(err))
        if err[k] < best - 1e-12:
            best, opt = float(err[k]), (b, int(rs[k]))
    return opt


_BAND_MUL_CACHE: dict[int, np.ndarray] = {}


def band_hashes(sigs: np.ndarray, b: int, r: int) -> np.ndarray:
    """(n, b) uint64: band k's hash is fmix64(sum_j sig[k*r + j] * C_j mod 2^64), C_j fixed odd."""
    if r not in _BAND_MUL_CACHE:
        _BAND_MUL_CACHE[r] = np.random.default_rng(0x5EED + r).integers(0, 1 << 63, r, dtype=np.uint64) * _U64(2) + _U64(1)
    c = _BAND_MUL_CACHE[r]
    v = sigs[:, : b * r].reshape(len(sigs), b, r).astype(_U64)
    v *= c
    return fmix64(v.sum(axis=2, dtype=_U64))
