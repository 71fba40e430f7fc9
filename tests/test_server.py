"""The local OpenAI-compatible teacher server, over real HTTP on loopback."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from curator.sample.parse import read_usage, split_reasoning
from curator.teacher import ServerConfig, ServerProcess, make_app, running_server
from curator.teacher.config import config_from_options
from curator.teacher.problems import ProblemIndex, normalize_gold
from curator.teacher.answers import wrong_answer

MSG = [{"role": "user", "content": "What is 6 times 7? Think step by step."}]


def client(url: str, **kw) -> OpenAI:
    kw.setdefault("api_key", "test")
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5)
    return OpenAI(base_url=url, **kw)


def raw(url: str, body: bytes | dict | None = None, headers: dict | None = None, method: str | None = None,
        timeout: float = 5):
    """(status, headers, body bytes) without any client-side interpretation."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def chat(c: OpenAI, messages=MSG, model="teacher", **kw):
    return c.chat.completions.create(model=model, messages=messages, **kw)


def split(choice) -> tuple:
    s = split_reasoning(choice.message.model_dump())
    return s.cot, s.completion, s.cot_source


@pytest.fixture(scope="module")
def url():
    with running_server({"hang_s": 5}) as u:
        yield u


@pytest.fixture(scope="module")
def c(url):
    return client(url)


# ---------------------------------------------------------------- placements and outcomes


@pytest.mark.parametrize("placement", ["reasoning_content", "reasoning", "think", "think_unopened", "none"])
def test_cot_placement(placement):
    with running_server({"cot_placement": placement}) as u:
        r = chat(client(u))
    msg = r.choices[0].message.model_dump()
    content = msg["content"]
    cot, completion, source = split(r.choices[0])
    assert completion.endswith("The answer is $\\boxed{42}$.")
    assert source == placement
    if placement in ("reasoning_content", "reasoning"):
        assert msg[placement] and "<think>" not in content and "</think>" not in content
        other = "reasoning" if placement == "reasoning_content" else "reasoning_content"
        assert msg.get(other) is None
    elif placement == "think":
        assert content.startswith("<think>\n") and "</think>" in content
    elif placement == "think_unopened":
        assert not content.startswith("<think>") and "</think>" in content
    else:
        assert cot == "" and "</think>" not in content
        assert msg.get("reasoning_content") is None and msg.get("reasoning") is None
    if placement != "none":
        assert 40 <= len(cot.split()) <= 80  # cot_words = 60


def _one(outcome: str, placement: str = "reasoning_content", **extra):
    with running_server({"mix": {outcome: 1.0}, "cot_placement": placement, **extra}) as u:
        return chat(client(u)).choices[0]


def test_outcome_right_and_wrong():
    cot, completion, _ = split(_one("right"))
    assert cot.endswith("So the answer is 42.") and completion.endswith("$\\boxed{42}$.")
    cot, completion, _ = split(_one("wrong"))
    assert cot.endswith("So the answer is 43.") and completion.endswith("The answer is $\\boxed{43}$.")
    assert wrong_answer("72") == "73" and wrong_answer("2.5") == "3.5" and wrong_answer("\\frac{1}{2}") == "wrong"


@pytest.mark.parametrize("placement", ["reasoning_content", "think", "think_unopened"])
def test_outcome_truncated(placement):
    ch = _one("truncated", placement)
    assert ch.finish_reason == "length"
    msg = ch.message.model_dump()
    if placement == "reasoning_content":
        assert msg["content"] == "" and msg["reasoning_content"]
        thought = msg["reasoning_content"]
    else:
        assert "</think>" not in msg["content"] and "boxed" not in msg["content"]
        thought = msg["content"]
    assert thought[-1] not in ".!?"  # cut mid-sentence
    if placement == "think":
        cot, completion, source = split(ch)
        assert source == "think" and completion == "" and cot


def test_outcome_no_think_ignores_placement():
    for placement in ("reasoning_content", "think"):
        ch = _one("no_think", placement)
        cot, completion, source = split(ch)
        assert source == "none" and cot == "" and completion.endswith("$\\boxed{42}$.")
        assert "<think>" not in ch.message.content


def test_outcome_mixed_lang_degenerate_no_boxed():
    cot, completion, _ = split(_one("mixed_lang"))
    assert any("\u4e00" <= ch <= "\u9fff" for ch in cot) and "the" in cot
    assert "boxed{42}" in completion
    cot, completion, _ = split(_one("degenerate"))
    assert cot.count("Wait, let me check again.") >= 20
    cot, completion, _ = split(_one("no_boxed"))
    assert "boxed" not in completion and completion.endswith("The answer is 42.")


def test_outcome_duplicate_identical_across_prompts():
    with running_server({"mix": {"duplicate": 1.0}}) as u:
        c = client(u)
        a = chat(c, [{"role": "user", "content": "Problem one"}]).choices[0].message
        b = chat(c, [{"role": "user", "content": "A different problem"}]).choices[0].message
    assert a.content == b.content and a.model_dump()["reasoning_content"] == b.model_dump()["reasoning_content"]


def test_distinct_prompts_get_distinct_thoughts(c):
    a = chat(c, [{"role": "user", "content": "Problem one"}]).choices[0].message.model_dump()["reasoning_content"]
    b = chat(c, [{"role": "user", "content": "Problem two"}]).choices[0].message.model_dump()["reasoning_content"]
    assert a != b


def test_mix_proportions_and_determinism():
    cfg = {"mix": {"right": 0.5, "wrong": 0.5}, "seed": 3}
    with running_server(cfg) as u:
        c = client(u)
        answers = [split(chat(c, [{"role": "user", "content": f"q{i}"}]).choices[0])[1] for i in range(60)]
        again = [split(chat(c, [{"role": "user", "content": f"q{i}"}]).choices[0])[1] for i in range(60)]
    assert answers == again
    wrong = sum("boxed{43}" in a for a in answers)
    assert 15 <= wrong <= 45


def test_determinism_same_request_same_content(url, c):
    a = chat(c, n=2)
    b = chat(c, n=2)
    assert [ch.message.model_dump() for ch in a.choices] == [ch.message.model_dump() for ch in b.choices]
    assert a.id != b.id
    with running_server({"seed": 99}) as u2:
        d = chat(client(u2), n=2)
    assert d.choices[0].message.model_dump() != a.choices[0].message.model_dump()


# ---------------------------------------------------------------- n


def test_n_support_ignore_reject(c):
    r = chat(c, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert len({ch.message.model_dump()["reasoning_content"] for ch in r.choices}) == 3
    with running_server({"n_mode": "ignore"}) as u:
        assert len(chat(client(u), n=3).choices) == 1
    with running_server({"n_mode": "reject"}) as u:
        with pytest.raises(openai.BadRequestError):
            chat(client(u), n=3)
        assert len(chat(client(u), n=1).choices) == 1


# ---------------------------------------------------------------- gold lookup


def _gsm_rows(k: int):
    return [
        {"id": f"p{i}", "question": f"Natalia sold clips to {i} of her friends in April, and then half as many "
         f"in May. How many clips did she sell altogether? (variant {i})",
         "answer": f"Natalia sold {i} clips... so {i * 3}.\n#### {i * 3}"}
        for i in range(k)
    ]


def test_gold_lookup_jsonl_gsm8k(tmp_path):
    rows = _gsm_rows(1000)
    path = tmp_path / "gsm.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    cfg = {"problems": str(path), "problem_column": "question"}
    with running_server(cfg) as u:
        c = client(u)
        for i in (0, 7, 123, 999):
            prompt = f"Solve the problem.\n\n{rows[i]['question']}\n\nPut the final answer in \\boxed{{}}."
            r = chat(c, [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": prompt}])
            assert split(r.choices[0])[1].endswith(f"$\\boxed{{{i * 3}}}$.")
        r = chat(c, [{"role": "user", "content": "Something unrelated"}])
        assert "boxed{42}" in split(r.choices[0])[1]
        s = json.loads(raw(u.removesuffix("/v1") + "/stats")[2])
    assert s["problems"] == 1000 and s["gold_hits"] == 4 and s["gold_misses"] == 1


def test_gold_lookup_parquet_and_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uid": ["a", "b"], "problem": ["Compute 1+1 here.", "Compute 2+2 there."],
                             "gold": ["2", "4"]}), tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_text('id,problem,answer\n1,"Compute 3+3, please.",6\n2,Short,7\n', encoding="utf-8")
    with running_server({"problems": str(tmp_path / "p.parquet"), "id_column": "uid", "answer_column": "gold"}) as u:
        r = chat(client(u), [{"role": "user", "content": "Q: Compute 2+2 there. A:"}])
        assert "boxed{4}" in split(r.choices[0])[1]
    with running_server({"problems": str(tmp_path / "p.csv")}) as u:
        c = client(u)
        assert "boxed{6}" in split(chat(c, [{"role": "user", "content": "Compute 3+3, please."}]).choices[0])[1]
        assert "boxed{7}" in split(chat(c, [{"role": "user", "content": "A Short one"}]).choices[0])[1]


def test_problem_index_longest_match_and_speed():
    idx = ProblemIndex([("a", "Find x.", "1"), ("b", "Find x. Then find y given that x is positive and y = 2x.", "2")])
    assert idx.lookup("Please: Find x. Then find y given that x is positive and y = 2x. Thanks") == ("b", "2")
    assert idx.lookup("Please: Find x.") == ("a", "1")
    assert idx.lookup("nothing here") is None
    big = ProblemIndex((f"p{i}", f"Problem number {i}: compute the sum of the first {i} odd numbers.", str(i * i))
                       for i in range(5000))
    t = time.perf_counter()
    for i in range(0, 5000, 5):
        assert big.lookup(f"Instructions...\nProblem number {i}: compute the sum of the first {i} odd numbers.\n"
                          "Answer in a box.") == (f"p{i}", str(i * i))
    assert time.perf_counter() - t < 1.0
    assert normalize_gold("blah\n#### 1,000") == "1,000" and normalize_gold(72.0) == "72" and normalize_gold(None) is None


# ---------------------------------------------------------------- usage and max_tokens


def test_usage_block():
    with running_server({"cached_fraction": 0.5, "tokens_per_word": 1.3}) as u:
        r = chat(client(u), n=2)
    us = read_usage(r.usage.model_dump())
    words = sum(len(m["content"].split()) for m in MSG)
    assert us.prompt_tokens == math.ceil(words * 1.3) + 3 * len(MSG)
    assert us.cached_tokens == int(us.prompt_tokens * 0.5)
    cot_words = sum(len(ch.message.model_dump()["reasoning_content"].split()) for ch in r.choices)
    content_words = sum(len(ch.message.content.split()) for ch in r.choices)
    assert abs(us.reasoning_tokens - cot_words * 1.3) <= 2
    assert abs(us.completion_tokens - (cot_words + content_words) * 1.3) <= 2
    assert r.usage.total_tokens == us.prompt_tokens + us.completion_tokens
    assert 0 < us.reasoning_tokens < us.completion_tokens


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates(c, key):
    r = chat(c, **{key: 20})
    ch = r.choices[0]
    assert ch.finish_reason == "length" and r.usage.completion_tokens <= 20
    assert ch.message.content == ""  # cut inside the thought
    r = chat(c, extra_body={"mock": {"cot_words": 5}}, **{key: 20})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens <= 20
    assert r.choices[0].message.content and "boxed" not in r.choices[0].message.content
    r = chat(c, **{key: 5000})
    assert r.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------- faults


def test_fault_429_retry_after(url):
    status, headers, body = raw(url + "/chat/completions",
                                {"model": "teacher", "messages": MSG, "mock": {"fault": "429"}})
    assert status == 429
    assert float(headers["Retry-After"]) == pytest.approx(0.05)
    assert headers["x-ratelimit-reset-requests"] == "50ms"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("fault,exc", [("500", openai.InternalServerError), ("503", openai.InternalServerError),
                                       ("400", openai.BadRequestError), ("401", openai.AuthenticationError),
                                       ("429", openai.RateLimitError)])
def test_fault_status(c, fault, exc):
    with pytest.raises(exc) as ei:
        chat(c, extra_body={"mock": {"fault": fault}})
    assert ei.value.status_code == int(fault)


def test_fault_timeout_reset_malformed_empty(url):
    fast = client(url, timeout=0.3)
    t = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        chat(fast, extra_body={"mock": {"fault": "timeout"}})
    assert time.perf_counter() - t < 2
    with pytest.raises(openai.APIConnectionError):
        chat(fast, extra_body={"mock": {"fault": "reset"}})
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        raw(url + "/chat/completions", {"model": "teacher", "messages": MSG, "mock": {"fault": "reset"}})
    for fault in ("malformed", "empty"):
        status, _, body = raw(url + "/chat/completions", {"model": "teacher", "messages": MSG, "mock": {"fault": fault}})
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(body)
        with pytest.raises(ValueError):  # json.JSONDecodeError from the openai client
            chat(fast, extra_body={"mock": {"fault": fault}})
    # the server is still fine afterwards
    assert chat(fast).choices[0].finish_reason == "stop"


def test_timeout_fault_answers_after_hang():
    with running_server({"hang_s": 0.2}) as u:
        t = time.perf_counter()
        r = chat(client(u), extra_body={"mock": {"fault": "timeout"}})
        assert time.perf_counter() - t >= 0.2 and r.choices[0].finish_reason == "stop"


def test_fail_first_then_success():
    with running_server({"fail_first": {"429": 2, "500": 1}, "retry_after_s": 0.01}) as u:
        c = client(u)
        with pytest.raises(openai.RateLimitError):
            chat(c)
        with pytest.raises(openai.RateLimitError):
            chat(c)
        with pytest.raises(openai.InternalServerError):
            chat(c)
        assert chat(c).choices  # 4th attempt of the same body succeeds
        # a different body starts its own count; the openai client's own retries get it through
        r = client(u, max_retries=3).chat.completions.create(model="teacher", messages=[{"role": "user", "content": "other"}])
        assert r.choices
        s = json.loads(raw(u.removesuffix("/v1") + "/stats")[2])
    assert s["faults"] == {"429": 4, "500": 2} and s["responses"] == 2


def test_fault_rate_deterministic():
    def run():
        with running_server({"fault_rate": {"500": 0.3, "503": 0.2}, "seed": 5}) as u:
            out = []
            for i in range(40):
                status, _, _ = raw(u + "/chat/completions",
                                   {"model": "teacher", "messages": [{"role": "user", "content": str(i)}]})
                out.append(status)
            return out

    a, b = run(), run()
    assert a == b
    assert 8 <= sum(s != 200 for s in a) <= 32 and set(a) <= {200, 500, 503}


# ---------------------------------------------------------------- errors, auth, endpoints


def test_unknown_model_404(c, url):
    with pytest.raises(openai.NotFoundError):
        chat(c, model="gpt-nope")
    status, _, body = raw(url + "/chat/completions", {"model": "gpt-nope", "messages": MSG})
    assert status == 404
    assert json.loads(body) == {"error": {"message": "The model `gpt-nope` does not exist",
                                          "type": "invalid_request_error", "param": "model",
                                          "code": "model_not_found"}}


def test_api_key():
    with running_server({"api_key": "sekrit"}) as u:
        with pytest.raises(openai.AuthenticationError):
            chat(client(u, api_key="wrong"))
        assert chat(client(u, api_key="sekrit")).choices
        assert raw(u + "/models")[0] == 401
        assert raw(u + "/models", headers={"Authorization": "Bearer sekrit"})[0] == 200


def test_bad_requests(url, c):
    status, _, body = raw(url + "/chat/completions", b"{not json")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="streaming not supported"):
        chat(c, stream=True)
    status, _, _ = raw(url + "/chat/completions", {"model": "teacher", "messages": []})
    assert status == 400
    status, _, body = raw(url + "/chat/completions", {"model": "teacher", "messages": MSG, "mock": {"bogus": 1}})
    assert status == 400 and "bogus" in json.loads(body)["error"]["message"]


def test_models_and_stats(url, c):
    assert sorted(m.id for m in c.models.list().data) == ["deepseek-reasoner", "teacher"]
    root = url.removesuffix("/v1")
    raw(root + "/stats/reset", b"")
    chat(c, n=2)
    chat(c, model="deepseek-reasoner")
    with pytest.raises(openai.RateLimitError):
        chat(c, extra_body={"mock": {"fault": "429"}})
    s = json.loads(raw(root + "/stats")[2])
    assert s["requests"] == 3 and s["completions"] == 3 and s["responses"] == 2
    assert s["faults"] == {"429": 1} and s["by_model"] == {"teacher": 2, "deepseek-reasoner": 1}
    s = json.loads(raw(root + "/stats/reset", b"")[2])
    assert s["requests"] == 0 and s["faults"] == {}


def test_response_shape(c):
    r = chat(c, model="deepseek-reasoner")
    d = r.model_dump()
    assert d["id"].startswith("chatcmpl-") and d["object"] == "chat.completion"
    assert d["model"] == "deepseek-reasoner" and isinstance(d["created"], int)
    assert d["choices"][0]["message"]["role"] == "assistant"


# ---------------------------------------------------------------- mock override, drift, latency


def test_mock_override(c):
    r = chat(c, extra_body={"mock": {"outcome": "wrong", "cot_placement": "think", "cot_words": 200}})
    cot, completion, source = split(r.choices[0])
    assert source == "think" and "boxed{43}" in completion and len(cot.split()) >= 180
    t = time.perf_counter()
    chat(c, extra_body={"mock": {"latency_ms": 150}})
    assert time.perf_counter() - t >= 0.15


def test_latency():
    with running_server({"latency_ms": 100, "jitter_ms": 20}) as u:
        t = time.perf_counter()
        chat(client(u))
        assert 0.1 <= time.perf_counter() - t < 1.0


def test_collapse_after():
    with running_server({"collapse_after": 3, "cot_placement": "think"}) as u:
        c = client(u)
        before = [chat(c, [{"role": "user", "content": f"q{i}"}]).choices[0] for i in range(3)]
        after = [chat(c, [{"role": "user", "content": f"q{i}"}]).choices[0] for i in range(3)]
        s = json.loads(raw(u.removesuffix("/v1") + "/stats")[2])
    for ch in before:
        cot, completion, source = split(ch)
        assert source == "think" and "boxed{42}" in completion and len(cot.split()) >= 40
    for ch in after:
        content = ch.message.content
        assert "<think>" not in content and "</think>" not in content and "boxed" not in content
        assert "42" not in content and "43" in content
        assert len(content.split()) < 40
    assert s["collapsed"] is True


# ---------------------------------------------------------------- config, CLI, subprocess


def test_config_validation_and_yaml(tmp_path):
    with pytest.raises(ValueError):
        ServerConfig(mix={"great": 1.0})
    with pytest.raises(ValueError):
        ServerConfig(unknown_field=1)
    with pytest.raises(ValueError):
        ServerConfig(fault_rate={"500": 0.8, "503": 0.5})
    p = tmp_path / "s.yaml"
    p.write_text("latency_ms: 5\nmix: {right: 0.9, wrong: 0.1}\nfail_first: {'429': 1}\n", encoding="utf-8")
    cfg = ServerConfig.load(p, seed=4)
    assert cfg.latency_ms == 5 and cfg.mix == {"right": 0.9, "wrong": 0.1} and cfg.seed == 4
    assert cfg.fail_first == {"429": 1}
    cfg = config_from_options(str(p), latency_ms=7, mix="right=1", models="a,b", fail_first="500=2")
    assert cfg.latency_ms == 7 and cfg.mix == {"right": 1.0} and cfg.models == ["a", "b"]
    assert cfg.fail_first == {"500": 2}
    assert make_app(cfg) is not None


def test_server_process():
    with ServerProcess({"models": ["m1"], "latency_ms": 1}) as sp:
        assert sp.base_url.startswith("http://127.0.0.1:") and sp.base_url.endswith("/v1")
        r = chat(client(sp.base_url), model="m1")
        assert r.choices[0].finish_reason == "stop"
        assert sp.stats()["responses"] == 1
    assert sp.proc.poll() is not None
