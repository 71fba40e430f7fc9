"""Cost arithmetic to the cent against hand-computed cases, price lookup, unknown models."""

import json

import duckdb
import pytest

from conftest import cli, write_manifest
from curator.config import Price, load_manifest
from curator.sample.cost import billed_output_tokens, find_price, format_usd, price_table, request_cost, warn_unknown
from curator.sample.parse import Usage, read_usage
from curator.run import run_manifest

R1 = Price(input=0.55, cached_input=0.14, output=2.19)


def cents(x: float) -> float:
    return round(x * 100) / 100


def test_uncached_input():
    # 1,000 prompt tokens at $0.55/M + 2,000 output tokens at $2.19/M = 0.00055 + 0.00438
    assert request_cost(Usage(1000, 2000, None, None), R1) == pytest.approx(0.00493, abs=1e-12)


def test_cached_input_billed_at_cached_rate():
    # 600 uncached x 0.55 + 400 cached x 0.14 + 2000 x 2.19 = 330 + 56 + 4380 = 4766 (micro-dollars)
    assert request_cost(Usage(1000, 2000, None, 400), R1) == pytest.approx(0.004766, abs=1e-12)
    # DeepSeek reports its cache hits as prompt_cache_hit_tokens: read_usage takes either field.
    ds = read_usage({"prompt_tokens": 1000, "completion_tokens": 2000, "prompt_cache_hit_tokens": 400})
    oa = read_usage({"prompt_tokens": 1000, "completion_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 400}})
    assert request_cost(ds, R1) == request_cost(oa, R1) == pytest.approx(0.004766, abs=1e-12)


def test_no_cached_rate_listed_means_full_input_rate():
    p = Price(input=1.0, output=2.0)
    # 1,000 prompt tokens (500 cached, no cached rate) x $1 + 100 x $2 = 1200 micro-dollars
    assert request_cost(Usage(1000, 100, None, 500), p) == pytest.approx(0.0012, abs=1e-12)


def test_cached_count_is_clamped_to_the_prompt():
    assert request_cost(Usage(100, 0, None, 10_000), R1) == pytest.approx(100 * 0.14 / 1e6, abs=1e-15)


def test_reasoning_tokens_are_output_and_never_counted_twice():
    # OpenAI / DeepSeek: completion_tokens (2000) already includes the 1500 reasoning tokens.
    inside = Usage(1000, 2000, 1500, None)
    assert billed_output_tokens(inside) == 2000
    assert request_cost(inside, R1) == pytest.approx(0.00493, abs=1e-12)
    # A provider that reports reasoning apart (more reasoning than completion tokens): 500 + 1500.
    apart = Usage(1000, 500, 1500, None)
    assert billed_output_tokens(apart) == 2000
    assert request_cost(apart, R1) == pytest.approx(0.00493, abs=1e-12)
    # Reasoning tokens cost the output rate, not the input rate: 1000 more reasoning tokens = +$0.00219.
    more = Usage(1000, 3000, 2500, None)
    assert request_cost(more, R1) - request_cost(inside, R1) == pytest.approx(0.00219, abs=1e-12)


def test_batch_discount():
    o3 = find_price("o3")
    assert o3.batch_discount == 0.5
    # 10,000 x $2 + 5,000 x $8 = $0.06; half off in batch
    u = Usage(10_000, 5_000, 4_000, 0)
    assert request_cost(u, o3) == pytest.approx(0.06, abs=1e-12)
    assert request_cost(u, o3, batch=True) == pytest.approx(0.03, abs=1e-12)
    # No discount listed: batch changes nothing.
    assert request_cost(u, R1, batch=True) == request_cost(u, R1)


def test_to_the_cent_at_scale():
    # A 50k-sample run's usage: 1,000,000 uncached x 0.55 + 234,567 cached x 0.14 + 9,876,543 x 2.19
    # = 0.55 + 0.03283938 + 21.62962917 = $22.21246855
    u = Usage(1_234_567, 9_876_543, 8_000_000, 234_567)
    cost = request_cost(u, R1)
    assert cost == pytest.approx(22.21246855, abs=1e-9)
    assert cents(cost) == 22.21


def test_override_beats_the_table():
    mine = Price(input=1.0, cached_input=0.5, output=3.0, batch_discount=0.25)
    assert find_price("deepseek-reasoner", mine) is mine
    assert find_price("never-heard-of-it", mine) is mine
    # 1000 x 1 + 1000 x 0.5 + 1000 x 3 = 4500 micro-dollars; batch takes a quarter off
    u = Usage(2000, 1000, None, 1000)
    assert request_cost(u, mine) == pytest.approx(0.0045, abs=1e-12)
    assert request_cost(u, mine, batch=True) == pytest.approx(0.003375, abs=1e-12)


def test_prefix_match_longest_and_at_a_boundary():
    table = price_table()
    assert find_price("deepseek-reasoner") == table["deepseek-reasoner"]
    assert find_price("deepseek-reasoner-0528") == table["deepseek-reasoner"]
    assert find_price("gpt-4o-mini-2024-07-18") == table["gpt-4o-mini"]  # not gpt-4o
    assert find_price("gpt-4o-2024-08-06") == table["gpt-4o"]
    assert find_price("o3-mini-2025-01-31") == table["o3-mini"]  # not o3
    assert find_price("o1-pro-2025-03-19") == table["o1-pro"]  # not o1
    assert find_price("gpt-4.1-nano-2025-04-14") == table["gpt-4.1-nano"]
    assert find_price("o1x") is None  # a prefix only counts at a boundary
    # Routers set their own prices: a provider/model name is not priced as the model.
    assert find_price("deepseek/deepseek-r1") is None


def test_every_listed_price_is_valid():
    table = price_table()
    assert len(table) >= 10
    for name, p in table.items():
        assert p.input >= 0 and p.output >= p.input * 0.5, name
        assert p.cached_input is None or p.cached_input <= p.input, name


def test_unknown_model_is_none_and_warns_how_to_set_it():
    assert find_price("my-own-finetune") is None
    assert request_cost(Usage(10, 10, None, None), None) is None
    assert request_cost(Usage(None, 10, None, None), R1) is None  # no usage block: unknown, not zero
    assert request_cost(Usage(10, None, None, None), R1) is None
    with pytest.warns(UserWarning, match=r"no price known for model 'my-own-finetune'.*teacher: \{price: \{input"):
        warn_unknown("my-own-finetune")


def test_format_usd():
    assert format_usd(None) == "unknown"
    assert format_usd(22.21246855) == "$22.21"
    assert format_usd(1234.5) == "$1,234"
    assert format_usd(0.00493) == "$0.00493"
    assert format_usd(0.3126) == "$0.313"
    assert format_usd(0.000523) == "$0.000523"
    assert format_usd(0) == "$0"


def test_stored_cost_splits_each_request_exactly(tmp_path, server):
    """The sampler stores each request's cost split over its n choices: per request, the parts add
    up to the cost of the request's usage (token counts split the same way)."""
    url = server(cached_fraction=0.5, mix={"right": 1, "wrong": 1, "truncated": 1})
    m = write_manifest(tmp_path, url, n=3, problems=5)
    run_manifest(load_manifest(m), progress=False)
    rows = duckdb.connect().execute(
        f"""SELECT request_id, sum(prompt_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(cached_tokens), sum(cost_usd), count(*)
            FROM read_parquet('{tmp_path}/out/shards/*.parquet') GROUP BY 1"""
    ).fetchall()
    assert len(rows) == 5 and all(r[6] == 3 for r in rows)
    for _, p, c, r, cached, cost, _ in rows:
        assert cached > 0
        assert cost == pytest.approx(request_cost(Usage(p, c, r, cached), R1), abs=1e-12)


def test_unknown_model_run_stores_null_cost_and_reports_unknown(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, n=1, problems=3, model="teacher")
    m.write_text(m.read_text().replace("price: {input: 0.55, cached_input: 0.14, output: 2.19}", ""))
    with pytest.warns(UserWarning, match="no price known for model 'teacher'"):
        res = run_manifest(load_manifest(m), progress=False)
    assert not res.stats.cost_known
    out = tmp_path / "out"
    assert duckdb.connect().execute(f"SELECT count(*), count(cost_usd) FROM read_parquet('{out}/shards/*.parquet')").fetchone() == (3, 0)
    receipt = json.loads(next((out / "receipts").glob("*.json")).read_text())
    assert receipt["cost_usd"] is None
    r = cli("report", out, "--json", "--no-html")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["total_usd"] is None and rep["usd_per_accepted"] is None and rep["usd_per_50k_accepted"] is None
    assert rep["cost"]["samples_without_cost"] == 3
    text = cli("report", out, "--no-html", env={"COLUMNS": "200"})
    assert "3 samples have no cost (no price known)" in text.stdout and "set teacher.price" in text.stdout
