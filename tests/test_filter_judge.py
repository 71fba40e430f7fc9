"""The `rubric_judge` filter against a tiny scripted OpenAI-compatible server (aiohttp, 127.0.0.1, port 0)."""

import asyncio
import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import polars as pl
import pytest
from aiohttp import web

from curator.judge.base import FilterContext, get_filter
from curator.judge.filters.rubric import clip, parse_scores

KEY = "sk-test-key-123456"

SCRIPT = {
    "GOOD": lambda n: '```json\n{"self_contained": 2, "connected": 2, "follows": 1}\n```',
    "BAD": lambda n: '{"self_contained": 0, "connected": 1, "follows": 0}',
    "PROSE": lambda n: 'Here is my grade. The steps are clear. {"self_contained": 2, "connected": 2, "follows": 2} Hope this helps!',
    "THINK": lambda n: '<think>Let me see, maybe {"self_contained": 0}.</think>\n{"self_contained": 1, "connected": 2, "follows": 1}',
    "GARBAGE": lambda n: "I would rate this quite highly overall.",
    "FLAKY": lambda n: "hmm" if n == 1 else '{"self_contained": 2, "connected": 1, "follows": 2}',
    "RANGE": lambda n: '{"self_contained": 5, "connected": 2, "follows": 2}',
}


class JudgeServer:
    def __init__(self):
        self.calls = Counter()
        self.inflight = 0
        self.max_inflight = 0
        self.prompts: list[str] = []
        self.models: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {KEY}":
            # Like some real servers, echo the key that was sent.
            return web.json_response({"error": {"message": f"Incorrect API key provided: {auth[7:]}", "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        user = body["messages"][-1]["content"]
        self.prompts.append(user)
        self.models.append(body["model"])
        marker = re.search(r"MARK:(\w+)", user).group(1)
        self.calls[marker] += 1
        if marker == "APIERR":
            return web.json_response({"error": {"message": "bad request", "type": "invalid_request_error"}}, status=400)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        await asyncio.sleep(0.02)
        self.inflight -= 1
        content = SCRIPT[marker](self.calls[marker])
        return web.json_response(
            {
                "id": "j1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )


@pytest.fixture
def judge_server():
    srv = JudgeServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    async def start():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", srv.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = site._server.sockets[0].getsockname()[1]

    def run():
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    srv.base_url = f"http://127.0.0.1:{box['port']}/v1"
    yield srv
    asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


@pytest.fixture(autouse=True)
def key_env(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)


def make(srv, ctx=None, **params):
    cls = get_filter("rubric_judge")
    params = {"base_url": srv.base_url, "model": "judge-1", "api_key_env": "JUDGE_KEY", **params}
    return cls(cls.Params(**params), ctx or FilterContext())


def frame(markers, prior=None, cot_extra=""):
    rows = [
        {
            "key": f"k{i}",
            "problem": "What is 2+2?",
            "cot": f"MARK:{m} First add 2 and 2, which is 4. {cot_extra}",
            "completion": "\\boxed{4}",
            "messages_json": json.dumps([{"role": "user", "content": "What is 2+2?"}]),
        }
        for i, m in enumerate(markers)
    ]
    df = pl.DataFrame(rows)
    return df.with_columns(pl.Series("prior_passed", prior if prior is not None else [True] * df.height))


def results(out):
    return [(r["passed"], r["reason"], json.loads(r["details"]) if r["details"] else None) for r in out.to_dicts()]


def test_scores_threshold_and_parsing(judge_server):
    out = make(judge_server).apply(frame(["GOOD", "BAD", "PROSE", "THINK", "RANGE"], ))
    got = results(out)
    assert out["key"].to_list() == ["k0", "k1", "k2", "k3", "k4"]
    assert got[0][:2] == (True, None)
    assert got[0][2]["scores"] == {"self_contained": 2, "connected": 2, "follows": 1}
    assert got[0][2]["score"] == 5 and got[0][2]["judge_tokens"] == 120
    assert got[1][:2] == (False, "low_rubric_score") and got[1][2]["score"] == 1
    assert got[2][:2] == (True, None) and got[2][2]["score"] == 6
    assert got[3][:2] == (True, None) and got[3][2]["score"] == 4  # the JSON after </think> counts
    assert got[4][:2] == (False, "judge_error")  # 5 is not a 0-2 score, every time
    assert judge_server.models == ["judge-1"] * len(judge_server.models)
    # The prompt carries the problem, the CoT, the answer and the rubric.
    p = judge_server.prompts[0]
    assert "What is 2+2?" in p and "\\boxed{4}" in p and "self_contained" in p and "follows" in p


def test_threshold_param(judge_server):
    assert results(make(judge_server, threshold=5).apply(frame(["GOOD"])))[0][0] is True
    assert results(make(judge_server, threshold=6).apply(frame(["GOOD"])))[0][1] == "low_rubric_score"


def test_unparseable_after_retries_is_judge_error(judge_server):
    got = results(make(judge_server, retries=2).apply(frame(["GARBAGE"])))
    assert got[0][:2] == (False, "judge_error")
    assert "unparseable" in got[0][2]["error"]
    assert judge_server.calls["GARBAGE"] == 3  # 1 + 2 retries


def test_retry_recovers(judge_server):
    got = results(make(judge_server, retries=1).apply(frame(["FLAKY"])))
    assert got[0][:2] == (True, None)
    assert judge_server.calls["FLAKY"] == 2


def test_api_error_is_judge_error(judge_server):
    got = results(make(judge_server, retries=0).apply(frame(["APIERR", "GOOD"])))
    assert got[0][1] == "judge_error" and "BadRequestError" in got[0][2]["error"]
    assert got[1][0] is True


def test_key_comes_from_env_and_never_shows(judge_server, monkeypatch):
    monkeypatch.setenv("OTHER_KEY", "sk-wrong-secret-99999")
    got = results(make(judge_server, api_key_env="OTHER_KEY", retries=0).apply(frame(["GOOD"])))
    assert got[0][1] == "judge_error"
    assert "sk-wrong-secret-99999" not in json.dumps(got) and "wrong-secret" not in json.dumps(got)
    monkeypatch.delenv("OTHER_KEY")
    with pytest.raises(ValueError, match="OTHER_KEY is not set"):
        make(judge_server, api_key_env="OTHER_KEY").apply(frame(["GOOD"]))


def test_concurrency_is_bounded(judge_server):
    out = make(judge_server, concurrency=3).apply(frame(["GOOD"] * 15))
    assert out["passed"].all()
    assert 2 <= judge_server.max_inflight <= 3


def test_rows_rejected_earlier_are_not_judged(judge_server):
    df = frame(["GOOD", "GOOD", "BAD"], prior=[True, False, False])
    got = results(make(judge_server).apply(df))
    assert got[0][0] is True
    assert got[1][:2] == (False, "not_judged") and got[2][:2] == (False, "not_judged")
    assert judge_server.calls["GOOD"] == 1
    got = results(make(judge_server, judge_rejected=True).apply(df))
    assert [g[1] for g in got] == [None, None, "low_rubric_score"]


def test_nothing_to_judge_needs_no_endpoint():
    cls = get_filter("rubric_judge")
    f = cls(cls.Params(), FilterContext())  # no base_url, no teacher: fine while nothing needs judging
    got = results(f.apply(frame(["GOOD"], prior=[False])))
    assert got[0][1] == "not_judged"
    with pytest.raises(ValueError, match="base_url and model"):
        f.apply(frame(["GOOD"]))


def test_defaults_to_the_teacher(judge_server):
    teacher = SimpleNamespace(base_url=judge_server.base_url, model="teacher-model", api_key_env="JUDGE_KEY")
    cls = get_filter("rubric_judge")
    f = cls(cls.Params(), FilterContext(teacher=teacher))
    assert results(f.apply(frame(["GOOD"])))[0][0] is True
    assert judge_server.models == ["teacher-model"]


def test_long_cot_is_clipped(judge_server):
    long = "step " * 20000  # 100k chars
    make(judge_server, max_chars=4000).apply(frame(["GOOD"], cot_extra=long))
    p = judge_server.prompts[0]
    assert len(p) < 4000 + 3000
    assert "characters omitted" in p and "MARK:GOOD" in p
    assert clip("abc", 10) == "abc"
    c = clip("x" * 100 + "END", 60)
    assert c.startswith("x" * 40) and c.endswith("END") and "43 characters omitted" in c


def test_apply_inside_a_running_loop_and_in_a_thread(judge_server):
    f = make(judge_server)

    async def from_async():
        return f.apply(frame(["GOOD"]))

    assert asyncio.run(from_async())["passed"].to_list() == [True]
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: f.apply(frame(["BAD", "GOOD"])), range(2)))
    assert all(o["passed"].to_list() == [False, True] for o in outs)


@pytest.mark.parametrize(
    "text, want",
    [
        ('{"self_contained": 1, "connected": 1, "follows": 1}', (1, 1, 1)),
        ('```\n{"self_contained": 2, "connected": 0, "follows": 2}\n```', (2, 0, 2)),
        ('Scores: {"Self-Contained": "2", "Connected": 1.0, "follows": 0}.', (2, 1, 0)),
        ("self_contained: 2\nconnected: 2\nfollows: 1", (2, 2, 1)),
        ('{"self_contained": 2, "connected": 2}', None),
        ('{"self_contained": 2, "connected": 2, "follows": 3}', None),
        ('{"self_contained": true, "connected": 2, "follows": 2}', None),
        ("", None),
        (None, None),
    ],
)
def test_parse_scores(text, want):
    got = parse_scores(text)
    assert (None if got is None else (got["self_contained"], got["connected"], got["follows"])) == want
