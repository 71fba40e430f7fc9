"""`curator export`: a real run against the local teacher (right and wrong answers, a two-step chain),
then each format checked against the shape its trainer expects and against the catalog."""

import json
import math
import re
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import cli, write_manifest, write_problems
from curator.config import load_manifest
from curator.ship.export import (
    ExportError,
    ExportOptions,
    assistant_text,
    export,
    hf_features,
    split_rows,
)
from curator.judge.base import Filter, FilterParams, _REGISTRY, register, verdicts
from curator.run import run_manifest
from curator.teacher.runner import running_server
from curator.store import catalog

SYSTEM = "You are a careful math tutor."


# ---------------------------------------------------------------- test-only filters (the chain needs real steps)

class _BoxedGold(Filter):
    """Right when the last \\boxed{} of the answer equals the GSM8K gold after ####."""

    name = "test_boxed_gold"

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        keys, ok, details = [], [], []
        for k, c, g in zip(df["key"], df["completion"], df["gold"]):
            found = re.findall(r"\\boxed\{([^}]*)\}", c or "")
            keys.append(k)
            ok.append(bool(found) and found[-1] == (g or "").split("####")[-1].strip())
            details.append({"extracted": found[-1] if found else None})
        return verdicts(keys, ok, ["wrong_answer"] * len(keys), details)


class _MaxCotWords(Filter):
    name = "test_max_cot_words"

    class Params(FilterParams):
        max_words: int = 65

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        words = [len((c or "").split()) for c in df["cot"]]
        ok = [w <= self.params.max_words for w in words]
        return verdicts(df["key"].to_list(), ok, ["too_long"] * len(ok), [{"words": w} for w in words])


for _cls in (_BoxedGold, _MaxCotWords):
    if _REGISTRY.get(_cls.name) is None:
        register(_cls)

CHAIN = "{name: export-test, steps: [test_boxed_gold, {test_max_cot_words: {max_words: 65}}]}"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export-run")
    write_problems(tmp / "problems.jsonl", 10)
    cfg = {"problems": str(tmp / "problems.jsonl"), "problem_column": "question", "mix": {"right": 2, "wrong": 1}}
    with running_server(cfg) as url:
        m = write_manifest(tmp, url, n=2, problems=10, filters=CHAIN)
        m.write_text(m.read_text().replace("prompt: {user:", f'prompt: {{system: "{SYSTEM}", user:'))
        res = run_manifest(load_manifest(m), progress=False)
    assert res.complete
    return tmp / "out"


def q(out: Path, sql: str) -> list[dict]:
    con = catalog.connect(out, read_only=True)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def accepted(out: Path) -> list[dict]:
    return q(out, "SELECT * FROM samples WHERE accepted ORDER BY key")


def think(cot, completion) -> str:
    return f"<think>\n{cot.strip()}\n</think>\n\n{completion.strip()}"


def test_the_run_has_right_and_wrong_answers_and_both_steps_reject(out):
    counts = q(out, "SELECT count(*) n, count(*) FILTER (WHERE accepted) a FROM samples")[0]
    assert counts["n"] == 20 and 0 < counts["a"] < 20
    reasons = {r["reject_reason"] for r in q(out, "SELECT DISTINCT reject_reason FROM samples WHERE NOT accepted")}
    assert reasons == {"test_boxed_gold:wrong_answer", "test_max_cot_words:too_long"}


# ---------------------------------------------------------------- shapes

def test_assistant_text_placements():
    assert assistant_text(" why \n", "\n\\boxed{5}", "think") == "<think>\nwhy\n</think>\n\n\\boxed{5}"
    assert assistant_text("why", "\\boxed{5}", "thought-solution") == (
        "<|begin_of_thought|>\n\nwhy\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n\\boxed{5}\n\n<|end_of_solution|>"
    )
    assert assistant_text(None, "x", "think") == "<think>\n\n</think>\n\nx"


def test_messages_trl_conversational(out, tmp_path):
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "m", "--test-size", "0")
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stderr and "as messages" in r.stderr
    rows = jsonl(tmp_path / "m" / "train.jsonl")
    acc = accepted(out)
    assert not (tmp_path / "m" / "test.jsonl").exists()
    expected = set()
    for a in acc:
        sent = json.loads(a["messages_json"])
        expected.add((sent[0]["content"], sent[1]["content"], think(a["cot"], a["completion"])))
    got = set()
    for row in rows:
        assert list(row) == ["messages"]
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        assert all(set(m) == {"role", "content"} for m in msgs)
        assert msgs[0]["content"] == SYSTEM
        assert msgs[2]["content"].startswith("<think>\n") and "\n</think>\n\n" in msgs[2]["content"]
        got.add(tuple(m["content"] for m in msgs))
    # Only the accepted samples, each once.
    assert len(rows) == len(acc) and got == expected


def test_prompt_completion_with_reasoning_content(out, tmp_path):
    res = export(out, ExportOptions(format="prompt-completion", to=tmp_path / "pc", cot="field", test_size=0))
    rows = jsonl(tmp_path / "pc" / "train.jsonl")
    by_user = {}
    for a in accepted(out):
        by_user.setdefault(json.loads(a["messages_json"])[1]["content"], []).append((a["completion"].strip(), a["cot"].strip()))
    assert len(rows) == res.splits["train"] == len(accepted(out))
    for row in rows:
        assert list(row) == ["prompt", "completion"]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert len(row["completion"]) == 1
        c = row["completion"][0]
        assert c["role"] == "assistant" and set(c) == {"role", "content", "reasoning_content"}
        assert "<think>" not in c["content"] and c["reasoning_content"]
        assert (c["content"], c["reasoning_content"]) in by_user[row["prompt"][1]["content"]]
    # No LLaMA-Factory entry (no such format there) and no axolotl snippet for prompt-completion.
    assert not (tmp_path / "pc" / "dataset_info.json").exists() and not (tmp_path / "pc" / "axolotl.yaml").exists()


def test_sharegpt_as_openthoughts_publishes_it(out, tmp_path):
    export(out, ExportOptions(format="sharegpt", to=tmp_path / "s", cot="thought-solution", test_size=0))
    rows = jsonl(tmp_path / "s" / "train.jsonl")
    acc = {(json.loads(a["messages_json"])[1]["content"], a["cot"].strip(), a["completion"].strip()) for a in accepted(out)}
    for row in rows:
        assert list(row) == ["system", "conversations"]
        assert row["system"] == SYSTEM
        conv = row["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] and all(set(t) == {"from", "value"} for t in conv)
        m = re.fullmatch(
            r"<\|begin_of_thought\|>\n\n(.*)\n\n<\|end_of_thought\|>\n\n<\|begin_of_solution\|>\n\n(.*)\n\n<\|end_of_solution\|>",
            conv[1]["value"], re.S)
        assert m and (conv[0]["value"], m.group(1), m.group(2)) in acc
    export(out, ExportOptions(format="sharegpt", to=tmp_path / "s2", sharegpt_roles="user-assistant", test_size=0))
    row = jsonl(tmp_path / "s2" / "train.jsonl")[0]
    assert [t["from"] for t in row["conversations"]] == ["user", "assistant"]
    info = json.loads((tmp_path / "s2" / "dataset_info.json").read_text())
    assert next(iter(info.values()))["tags"]["user_tag"] == "user"


def test_alpaca_and_system_override(out, tmp_path):
    export(out, ExportOptions(format="alpaca", to=tmp_path / "a", system="Answer briefly.", test_size=0))
    rows = jsonl(tmp_path / "a" / "train.jsonl")
    users = {json.loads(a["messages_json"])[1]["content"] for a in accepted(out)}
    for row in rows:
        assert list(row) == ["instruction", "input", "output", "system"]
        assert row["system"] == "Answer briefly." and row["input"] == "" and row["instruction"] in users
        assert row["output"].startswith("<think>\n")
    # --system "" drops the teacher's system message.
    export(out, ExportOptions(format="messages", to=tmp_path / "nosys", system="", test_size=0))
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in jsonl(tmp_path / "nosys" / "train.jsonl"))
    card = (tmp_path / "a" / "README.md").read_text()
    assert "Answer briefly." in card


def test_hf_dataset_reloads_with_declared_features(out, tmp_path):
    from datasets import load_dataset, load_from_disk

    d = tmp_path / "hf"
    res = export(out, ExportOptions(format="hf", to=d, test_size=0.2))
    feats = hf_features("think")
    dd = load_from_disk(str(d / "arrow"))
    assert set(dd) == {"train", "test"}
    for split in dd:
        assert dd[split].features == feats
        assert len(dd[split]) == res.splits[split]
    pq = load_dataset("parquet", data_files={k: str(d / v) for k, v in res_files(d).items()}, cache_dir=str(tmp_path / "cache"))
    assert pq["train"].features == feats and pq["train"].to_list() == dd["train"].to_list()

    rows = dd["train"].to_list() + dd["test"].to_list()
    acc = {a["key"]: a for a in accepted(out)}
    assert sorted(r["id"] for r in rows) == sorted(acc)
    ver = {}
    for v in q(out, "SELECT * FROM verdicts ORDER BY key, step"):
        ver.setdefault(v["key"], []).append({k: v[k] for k in ("step", "filter", "passed", "reason", "details")})
    for r in rows:
        a = acc[r["id"]]
        assert (r["prompt_id"], r["sample_index"], r["problem"], r["gold"], r["cot"], r["completion"]) == (
            a["prompt_id"], a["sample_index"], a["problem"], a["gold"], a["cot"], a["completion"])
        assert r["teacher"] == {"model": a["model"], "endpoint": a["endpoint"], "params": a["params_json"]}
        assert r["usage"] == {k: a[k] for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")}
        assert r["cost_usd"] == a["cost_usd"] and r["accepted"] is True and r["reject_reason"] is None
        assert r["verdicts"] == ver[r["id"]] and len(r["verdicts"]) == 3  # response + the chain's two
        assert r["request_messages"] == json.loads(a["messages_json"])
        assert r["messages"][:-1] == r["request_messages"]
        assert r["messages"][-1] == {"role": "assistant", "content": think(a["cot"], a["completion"])}


def res_files(d: Path) -> dict:
    return json.loads((d / "export.json").read_text())["files"]


def test_hf_field_mode_features(out, tmp_path):
    from datasets import load_from_disk

    export(out, ExportOptions(format="hf", to=tmp_path / "hf", cot="field", test_size=0))
    ds = load_from_disk(str(tmp_path / "hf" / "arrow"))["train"]
    assert ds.features == hf_features("field")
    m = ds[0]["messages"]
    assert m[-1]["reasoning_content"] and "<think>" not in m[-1]["content"] and m[0]["reasoning_content"] is None


def test_include_rejected_is_hf_only(out, tmp_path):
    from datasets import load_from_disk

    export(out, ExportOptions(format="hf", to=tmp_path / "all", include_rejected=True, test_size=0))
    rows = load_from_disk(str(tmp_path / "all" / "arrow"))["train"].to_list()
    truth = {r["key"]: r for r in q(out, "SELECT key, accepted, reject_reason FROM samples")}
    assert len(rows) == len(truth) == 20
    for r in rows:
        assert (r["accepted"], r["reject_reason"]) == (truth[r["id"]]["accepted"], truth[r["id"]]["reject_reason"])
        if not r["accepted"]:
            assert any(not v["passed"] for v in r["verdicts"])
    assert "includes **rejected**" in (tmp_path / "all" / "README.md").read_text()
    r = cli("export", out, "--format", "messages", "--include-rejected", "--to", tmp_path / "bad")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "--include-rejected is for --format hf only" in lines[0], r.stderr
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- split and order

def test_split_by_prompt_sizes_and_seed(out, tmp_path):
    acc = accepted(out)
    prompts = sorted({a["prompt_id"] for a in acc})
    res = export(out, ExportOptions(format="messages", to=tmp_path / "x", test_size=0.2, seed=0))
    n_test_prompts = math.ceil(0.2 * len(prompts))
    hf = export(out, ExportOptions(format="hf", to=tmp_path / "h", test_size=0.2, seed=0))
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "h" / "arrow"))
    train_p, test_p = set(dd["train"]["prompt_id"]), set(dd["test"]["prompt_id"])
    assert len(test_p) == n_test_prompts and not (train_p & test_p) and train_p | test_p == set(prompts)
    assert res.splits == hf.splits and sum(res.splits.values()) == len(acc)
    assert res.splits["test"] == sum(1 for a in acc if a["prompt_id"] in test_p)
    assert len(jsonl(tmp_path / "x" / "test.jsonl")) == res.splits["test"]
    # A whole number is a number of prompts; 0 means no test split.
    three = split_rows(acc, 3, 0)
    assert len({r["prompt_id"] for r in three["test"]}) == 3
    assert set(split_rows(acc, 0, 0)) == {"train"}
    # Another seed picks other prompts or another order.
    other = split_rows(acc, 0.2, 1)
    assert [r["key"] for r in other["train"]] != dd["train"]["id"]


def test_same_input_and_seed_give_byte_identical_files(out, tmp_path):
    def snapshot(d: Path) -> dict:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    for fmt in ("hf", "messages", "sharegpt"):
        a = export(out, ExportOptions(format=fmt, to=tmp_path / f"{fmt}-a", test_size=0.2, seed=7))
        b = export(out, ExportOptions(format=fmt, to=tmp_path / f"{fmt}-b", test_size=0.2, seed=7))
        sa, sb = snapshot(a.dir), snapshot(b.dir)
        assert sa.keys() == sb.keys() and len(sa) >= 4
        assert sa == sb, [k for k in sa if sa[k] != sb[k]]
    # Re-exporting into the same directory replaces it, with the same bytes.
    before = snapshot(tmp_path / "messages-a")
    export(out, ExportOptions(format="messages", to=tmp_path / "messages-a", test_size=0.2, seed=7))
    assert snapshot(tmp_path / "messages-a") == before
    c = export(out, ExportOptions(format="messages", to=tmp_path / "seed8", test_size=0.2, seed=8))
    assert snapshot(c.dir)["train.jsonl"] != before["train.jsonl"]


# ---------------------------------------------------------------- card and trainer configs

def _card(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert m, text[:200]
    return yaml.safe_load(m.group(1)), m.group(2)


def _cell(body: str, label: str) -> str:
    m = re.search(rf"^\| {re.escape(label)} \| (.*?) \|$", body, re.M)
    assert m, label
    return m.group(1)


def test_card_header_and_numbers_match_duckdb(out, tmp_path):
    from huggingface_hub import DatasetCard

    d = tmp_path / "hf"
    res = export(out, ExportOptions(format="hf", to=d, test_size=0.2))
    meta, body = _card(d / "README.md")
    assert meta["license"] == "other" and meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"] and meta["pretty_name"] == "test-run"
    files = meta["configs"][0]["data_files"]
    assert {f["split"] for f in files} == {"train", "test"} and all((d / f["path"]).is_file() for f in files)
    card = DatasetCard.load(d / "README.md")  # the Hub's own parser accepts the header
    assert card.data.license == "other"

    tot = q(out, """SELECT count(*) n, count(*) FILTER (WHERE accepted) a, count(*) FILTER (WHERE NOT accepted) r,
                           count(DISTINCT prompt_id) p, sum(cost_usd) c, sum(prompt_tokens) pt, sum(completion_tokens) ct FROM samples""")[0]
    assert _cell(body, "samples stored") == str(tot["n"])
    assert _cell(body, "accepted") == str(tot["a"]) and _cell(body, "rejected") == str(tot["r"])
    assert _cell(body, "prompts") == str(tot["p"]) and _cell(body, "exported") == str(tot["a"])
    assert _cell(body, "split train") == str(res.splits["train"]) and _cell(body, "split test") == str(res.splits["test"])
    assert _cell(body, "prompt tokens (all stored)") == str(tot["pt"])
    assert _cell(body, "cost of all stored samples") == f"${tot['c']:,.4f}"
    assert _cell(body, "cost per 50k accepted samples") == f"${tot['c'] / tot['a'] * 50000:,.4f}"
    assert "deepseek-reasoner" in body and "temperature=0.6" in body and "max_tokens=2048" in body

    # Funnel: step 0 sees every sample; step 1 sees what step 0 kept; what is left is what was accepted.
    v = q(out, "SELECT step, count(*) FILTER (WHERE NOT passed) bad FROM verdicts GROUP BY step ORDER BY step")
    first = q(out, "SELECT reject_reason r, count(*) n FROM samples WHERE NOT accepted GROUP BY 1")
    by = {x["r"]: x["n"] for x in first}
    rows = re.findall(r"^\| (\d) \| (\w+) \| `(.*?)` \| (\d+) \| (\d+) \| (\d+) \| (.*) \|$", body, re.M)
    assert [r[1] for r in rows] == ["response", "test_boxed_gold", "test_max_cot_words"]  # response: every chain's first
    assert rows[0][3:6] == (str(tot["n"]), "0", str(tot["n"])) and v[0]["bad"] == 0
    assert rows[1][3:6] == (str(tot["n"]), str(v[1]["bad"]), str(tot["n"] - v[1]["bad"]))
    assert int(rows[2][4]) == by["test_max_cot_words:too_long"] and int(rows[2][5]) == tot["a"]
    assert json.loads(rows[2][2]) == {"max_words": 65}
    assert f"wrong_answer: {by['test_boxed_gold:wrong_answer']}" in rows[1][6]
    assert 'load_from_disk("arrow")' in body and 'load_dataset("parquet"' in body

    export(out, ExportOptions(format="messages", to=tmp_path / "lic", license="apache-2.0", test_size=0))
    meta, body = _card(tmp_path / "lic" / "README.md")
    assert meta["license"] == "apache-2.0" and meta["configs"][0]["data_files"] == [{"split": "train", "path": "train.jsonl"}]
    assert 'load_dataset("json", data_files={"train": "train.jsonl"})' in body


def _columns(path: Path) -> set:
    if path.suffix == ".jsonl":
        return set(jsonl(path)[0])
    import pyarrow.parquet as pq

    return set(pq.read_schema(path).names)


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca", "hf"])
def test_llamafactory_and_axolotl_point_at_the_files(out, tmp_path, fmt):
    d = tmp_path / fmt
    export(out, ExportOptions(format=fmt, to=d, test_size=0.2, name="distill"))
    info = json.loads((d / "dataset_info.json").read_text())
    assert set(info) == {"distill", "distill_test"}
    for entry in info.values():
        f = d / entry["file_name"]
        assert f.is_file()
        cols = _columns(f)
        assert set(entry["columns"].values()) <= cols
        assert entry.get("formatting", "alpaca") == ("alpaca" if fmt == "alpaca" else "sharegpt")
        if "tags" in entry:
            t = entry["tags"]
            first = jsonl(f)[0] if f.suffix == ".jsonl" else None
            if first is not None:
                msgs = first[entry["columns"]["messages"]]
                roles = {m[t["role_tag"]] for m in msgs}
                assert roles <= {t["user_tag"], t["assistant_tag"], t.get("system_tag")}
                assert all(t["content_tag"] in m for m in msgs)
    ax = yaml.safe_load((d / "axolotl.yaml").read_text())
    assert [x["path"] for x in ax["datasets"]] == [info["distill"]["file_name"]]
    assert [x["path"] for x in ax["test_datasets"]] == [info["distill_test"]["file_name"]]
    for x in ax["datasets"] + ax["test_datasets"]:
        assert (d / x["path"]).is_file() and x["ds_type"] == ("parquet" if fmt == "hf" else "json")
        if x["type"] == "chat_template":
            assert x["field_messages"] in _columns(d / x["path"])
        else:
            assert x["type"] == "alpaca"


# ---------------------------------------------------------------- errors, one line each

def test_push_to_hub_fails_fast_when_the_hub_cannot_be_reached(out, tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_dummy_token_for_tests", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hfhome")}
    t = time.monotonic()
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "p", "--push-to-hub", "someone/distill-test", env=env, timeout=60)
    assert time.monotonic() - t < 30
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "someone/distill-test" in errors[0] and "cannot be reached" in errors[0] and "http://127.0.0.1:9" in errors[0]
    # Everything up to the upload was done.
    assert (tmp_path / "p" / "train.jsonl").is_file() and (tmp_path / "p" / "README.md").is_file()


def test_push_without_token_is_one_line(out, tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "", "HF_HOME": str(tmp_path / "empty-hf-home")}
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "p", "--push-to-hub", "someone/x", env=env)
    assert r.returncode != 0 and "no Hugging Face token" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bad_requests_are_one_line(out, tmp_path):
    cases = [
        (["export", tmp_path / "nope", "--format", "messages"], "not a curator output directory"),
        (["export", out, "--format", "csv"], "unknown format 'csv'"),
        (["export", out, "--format", "sharegpt", "--cot", "field"], "--cot field"),
        (["export", out, "--format", "messages", "--test-size", "2.5"], "--test-size"),
    ]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("do not delete")
    cases.append((["export", out, "--format", "messages", "--to", busy], "is not a curator export"))
    for args, message in cases:
        r = cli(*args)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode != 0 and len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, (args, r.stderr)
    assert (busy / "thesis.tex").read_text() == "do not delete"


def test_nothing_accepted_explains_why(tmp_path):
    write_problems(tmp_path / "problems.jsonl", 2)
    with running_server({"problems": str(tmp_path / "problems.jsonl"), "problem_column": "question"}) as url:
        m = write_manifest(tmp_path, url, n=1, problems=2)
        run_manifest(load_manifest(m), progress=False)
    with pytest.raises(ExportError, match="2 samples stored, 0 accepted, 0 rejected, 2 never judged"):
        export(tmp_path / "out", ExportOptions(format="messages", to=tmp_path / "e"))
