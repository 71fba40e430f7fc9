import json
import random

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from curator.engines import dedup as D
from curator.judge.base import FilterContext, get_filter
from curator.judge.chain import apply_steps, load_chain

VOCAB = [f"w{i}" for i in range(5000)] + "the of and to in is that for it as with was on be at by this we".split()


def text(seed: int, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n)]


def change(words: list[str], positions: list[int], tag: str) -> list[str]:
    out = list(words)
    for p in positions:
        out[p] = f"{tag}{p}"
    return out


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {"key": None, "prompt_id": None, "problem": "p", "cot": None, "completion": "c", "prior_passed": True}
    rows = [{**base, **r} for r in rows]
    for r in rows:
        r["prompt_id"] = r["prompt_id"] or r["key"]
    return pl.DataFrame(rows, schema={"key": pl.String, "prompt_id": pl.String, "problem": pl.String, "cot": pl.String, "completion": pl.String, "prior_passed": pl.Boolean})


def run(df: pl.DataFrame, tmp_path=None, **params) -> dict[str, dict]:
    cls = get_filter("near_dup")
    f = cls(cls.Params(**params), FilterContext(output_dir=tmp_path))
    v = f.apply(df)
    assert v.columns == ["key", "passed", "reason", "details"] and v.height == df.height
    return {k: (p, r, json.loads(d) if d else None) for k, p, r, d in v.iter_rows()}


def test_signatures_are_datasketch_minhashes():
    from datasketch import MinHash

    texts = ["The quick brown fox jumps over the lazy dog, again and again!", "", None, "two words", "Ünïcode — wörds “quoted” here, there and everywhere."]
    hv, off = D.shingle_hashes(texts, 5)
    sigs = D.signatures(texts, 5, 128, seed=1)
    for i in range(len(texts)):
        m = MinHash(num_perm=128, seed=1, hashfunc=int)
        m.update_batch(hv[off[i] : off[i + 1]].tolist())
        assert np.array_equal(m.hashvalues, sigs[i])
    assert list(np.diff(off)) == [8, 0, 0, 1, 3]  # short text: one shingle; empty: none
    a, b = D.signatures([" ".join(text(1)), " ".join(change(text(1), [10, 100], "x"))])
    assert D.to_minhash(a).jaccard(D.to_minhash(b)) == pytest.approx(float(D.jaccard_est(a, b)))


def _fmix64(h: int) -> int:
    m = (1 << 64) - 1
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    return h ^ (h >> 33)


def _ref_word_hash(w: bytes) -> int:
    import xxhash

    if len(w) > 64:
        return xxhash.xxh3_64_intdigest(w)
    h = len(w)
    for k in range(0, len(w), 8):
        h = _fmix64(((h * 0x100000001B3) & ((1 << 64) - 1)) ^ int.from_bytes(w[k : k + 8].ljust(8, b"\0"), "little"))
    return h


def test_word_hash_spec():
    ws = ["a", "abcdefg", "abcdefgh", "abcdefghi", "x" * 64, "y" * 65, "z" * 200, "naïve", "日本語", "a1b2"]
    w = D.words(["  ".join(ws[:5]), "--".join(ws[5:]), None, "A_B"])
    assert [w.text(i, 1) for i in range(len(w.hashes))] == ws + ["a", "b"]
    assert w.hashes.tolist() == [_ref_word_hash(x.encode()) for x in ws + ["a", "b"]]
    assert list(w.offsets) == [0, 5, 10, 10, 12]


def test_normalisation_and_bands():
    s = D.signatures(["Hello,   WORLD! This is -- a test...", "hello world this is a test"])
    assert np.array_equal(s[0], s[1])
    from datasketch.lsh import _optimal_param

    assert D.optimal_bands(0.8, 128) == _optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)
    assert D.optimal_bands(0.5, 64) == _optimal_param(0.5, 64, 0.5, 0.5)
    bh = D.band_hashes(s, 9, 13)
    assert bh.shape == (2, 9) and (bh[0] == bh[1]).all()


def test_planted_near_dups_exact_dups_and_unrelated(tmp_path):
    rows = [{"key": f"k{i:02d}", "cot": " ".join(text(i))} for i in range(20)]
    para = change(text(3), [20, 120, 220], "para")  # 3 of 300 words changed
    rows.append({"key": "z-para", "cot": " ".join(para)})
    rows.append({"key": "z-exact", "cot": " ".join(text(7)).upper() + " !!"})  # case and punctuation ignored
    rows.append({"key": "z-empty", "cot": None})
    rows.append({"key": "z-empty2", "cot": ""})
    out = run(frame(rows), tmp_path)
    rejected = {k: d for k, (p, r, d) in out.items() if not p}
    assert set(rejected) == {"z-para", "z-exact"}
    assert rejected["z-para"]["duplicate_of"] == "k03" and rejected["z-exact"]["duplicate_of"] == "k07"
    d = rejected["z-para"]
    assert d["cluster_size"] == 2 and 0.8 <= d["jaccard_est"] < 1.0 and isinstance(d["cluster"], int)
    assert rejected["z-exact"]["jaccard_est"] == 1.0
    assert all(r == "near_duplicate" for p, r, _ in out.values() if not p)
    assert not list(tmp_path.iterdir())  # work tables cleaned up


def test_dissimilar_paraphrase_is_not_a_duplicate():
    far = change(text(3), list(range(0, 300, 10)), "x")  # 30 words changed: Jaccard ~ 0.35
    out = run(frame([{"key": "a", "cot": " ".join(text(3))}, {"key": "b", "cot": " ".join(far)}]))
    assert all(p for p, _, _ in out.values())


def test_keep_rule_correct_long_beats_incorrect_short():
    base = text(11)
    rows = [
        {"key": "a-short-wrong", "cot": " ".join(base), "prior_passed": False},
        {"key": "b-long-right", "cot": " ".join(base + ["more", "words"]), "prior_passed": True},
        {"key": "c-longer-right", "cot": " ".join(base + ["more", "words", "still", "more"]), "prior_passed": True},
    ]
    out = run(frame(rows))
    assert out["b-long-right"][0] and not out["a-short-wrong"][0] and not out["c-longer-right"][0]
    assert out["a-short-wrong"][2]["duplicate_of"] == "b-long-right"
    assert out["a-short-wrong"][2]["cluster_size"] == 3 and "keep_rule" in out["a-short-wrong"][2]
    # ties on correctness and length: smallest key
    out = run(frame([{"key": "k2", "cot": "same text. " * 20}, {"key": "k1", "cot": "Same Text! " * 20}]))
    assert out["k1"][0] and out["k2"][2]["duplicate_of"] == "k1"


def test_transitive_cluster():
    a = text(21)
    b = change(a, [30, 90, 150, 210], "b")
    c = change(b, [60, 120, 180, 240], "c")
    sa, sb, sc = D.signatures([" ".join(x) for x in (a, b, c)], 5, 256)
    assert D.jaccard_est(sa, sb) >= 0.8 and D.jaccard_est(sb, sc) >= 0.8 and D.jaccard_est(sa, sc) < 0.8
    params = {"num_perm": 256, "bands": 32, "rows": 8}
    out = run(frame([{"key": "a", "cot": " ".join(a)}, {"key": "c", "cot": " ".join(c)}]), **params)
    assert all(p for p, _, _ in out.values())  # A and C alone are not near-dups
    rows = [{"key": "a", "cot": " ".join(a)}, {"key": "b", "cot": " ".join(b), "prior_passed": False}, {"key": "c", "cot": " ".join(c), "prior_passed": False}]
    out = run(frame(rows), **params)
    assert out["a"][0] and not out["b"][0] and not out["c"][0]
    assert out["c"][2]["duplicate_of"] == "a" and out["c"][2]["cluster_size"] == 3 and out["c"][2]["jaccard_est"] < 0.8
    assert out["b"][2]["cluster"] == out["c"][2]["cluster"]


def test_field_and_prompt_scope():
    shared = " ".join(text(31, 60))
    rows = [
        {"key": "p1-s0", "prompt_id": "p1", "problem": shared, "cot": "short", "prior_passed": True},
        {"key": "p1-s1", "prompt_id": "p1", "problem": shared, "cot": "a much longer trace", "prior_passed": False},
        {"key": "p2-s0", "prompt_id": "p2", "problem": shared + " Answer briefly.", "cot": "tiny", "prior_passed": False},
        {"key": "p2-s1", "prompt_id": "p2", "problem": shared + " Answer briefly.", "cot": "a trace", "prior_passed": False},
        {"key": "p3-s0", "prompt_id": "p3", "problem": " ".join(text(32, 60)), "cot": "x"},
    ]
    out = run(frame(rows), field="problem")  # scope_by_prompt defaults to true for "problem"
    assert {k for k, v in out.items() if not v[0]} == {"p2-s0", "p2-s1"}
    assert out["p2-s1"][2]["duplicate_of"] == "p1-s0"
    out = run(frame(rows), field="problem", scope_by_prompt=False)
    assert {k for k, v in out.items() if v[0]} == {"p1-s0", "p3-s0"}
    # cot+completion joins the two columns
    rows = [{"key": "a", "cot": " ".join(text(41)), "completion": "The answer is 4."}, {"key": "b", "cot": " ".join(text(41)), "completion": "The answer is 4"}]
    assert not run(frame(rows), field="cot+completion")["b"][0]


def test_deterministic_and_order_independent():
    rng = random.Random(5)
    rows = []
    for i in range(60):
        base = text(100 + i % 15)
        rows.append({"key": f"k{i:03d}", "cot": " ".join(change(base, rng.sample(range(300), 1), f"v{i}-")), "prior_passed": i % 3 != 0})
    df = frame(rows)
    a = run(df)
    assert run(df) == a
    assert run(df.sample(fraction=1.0, shuffle=True, seed=1)) == a
    assert sum(not p for p, _, _ in a.values()) == 45  # 15 clusters of 4


def test_dedup_parquet_matches_filter_and_chain(tmp_path):
    rows = [{"key": f"k{i:03d}", "cot": " ".join(change(text(i % 30), [i], "v"))} for i in range(90)]
    df = frame(rows)
    for i in range(3):
        df.slice(i * 30, 30).write_parquet(tmp_path / f"s{i}.parquet")
    res = D.dedup_parquet(str(tmp_path / "s*.parquet"), "cot", batch_size=7, workdir=tmp_path / "work")
    assert res.stats["docs"] == 90 and res.duplicates.height == 60
    for sub in ("sigs", "docs", "bands"):
        assert list((tmp_path / "work" / sub).rglob("*.parquet"))
    sig = pq.read_table(next((tmp_path / "work" / "sigs").glob("*.parquet")))
    assert sig.schema.field("sig").type.list_size == 128
    assert res.details() == {k: json.dumps(v) for k, v in ((k, json.loads(d)) for k, d in res.details().items())}
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:  # signatures in worker processes: same result
        res2 = D.dedup_parquet(sorted(tmp_path.glob("s*.parquet")), "cot", batch_size=20, pool=pool, task_docs=6)
    assert res2.duplicates.equals(res.duplicates)
    via_filter = {k: d for k, (p, _, d) in run(df).items() if not p}
    assert {k: json.loads(v) for k, v in res.details().items()} == via_filter
    # and through a chain, whose later steps see prior_passed
    ctx = FilterContext(output_dir=tmp_path)
    chain = load_chain([{"near_dup": {"threshold": 0.8}}], ctx)
    (v,) = apply_steps(chain.steps, df.drop("prior_passed"))
    assert v.filter(~pl.col("passed"))["reason"].unique().to_list() == ["near_duplicate"] and v.filter(~pl.col("passed")).height == 60


def test_params_validation():
    cls = get_filter("near_dup")
    with pytest.raises(Exception):
        cls.Params(bands=20, rows=10)
    with pytest.raises(Exception):
        cls.Params(bands=4)
    with pytest.raises(Exception):
        cls.Params(field="title")
    assert cls.scope == "dataset"


def test_filter_uses_ctx_pool_for_big_frames(tmp_path):
    rows = [{"key": f"k{i:05d}", "cot": " ".join(change(text(i % 3000, 40), [i % 40], "v"))} for i in range(4500)]
    df = frame(rows)
    cls = get_filter("near_dup")
    ctx = FilterContext(output_dir=tmp_path, workers=2)
    try:
        f = cls(cls.Params(), ctx)
        pooled = f.apply(df)
        assert ctx._pool is not None
    finally:
        ctx.close()
    single = cls(cls.Params(), FilterContext(workers=1)).apply(df)
    assert pooled.equals(single)
    assert (~pooled["passed"]).sum() == 1500 and f.stats["docs"] == 4500
