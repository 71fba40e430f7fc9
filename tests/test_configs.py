"""Several configurations in one output folder (issue 17): a run on an OUT holding samples of
another temperature, model or template says so at start, the report splits by configuration,
and the export takes only the latest run's unless --all-configs. Real runs against the local
teacher, the CLI in subprocesses, real shards."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import cli, write_manifest, write_problems
from curator.sample.configs import configuration_id
from curator.store import catalog
from curator.store.layout import OutputDir
from curator.store.reading import read_samples

CHAIN = "{name: fmt, steps: [format]}"


def q(out: Path, sql: str) -> list[tuple]:
    return catalog.query(out, sql)


def run(m: Path):
    r = cli("run", m, "--no-progress")
    assert r.returncode == 0, r.stderr
    return r


def notes(r) -> list[str]:
    """The line a run prints at its start (the summary at its end repeats it, wrapped)."""
    return [line for line in r.stderr.splitlines() if line.startswith("note: ") and "other configuration" in line]


@pytest.fixture
def teacher(tmp_path, server):
    problems = write_problems(tmp_path / "problems.jsonl", 4)
    return server(problems=str(problems), problem_column="question", models=["deepseek-reasoner", "other-teacher"])


def test_a_second_configuration_is_noticed_reported_apart_and_not_exported(tmp_path, teacher):
    m = write_manifest(tmp_path, teacher, n=2, problems=4, filters=CHAIN)
    base = m.read_text()
    out = tmp_path / "out"
    first = run(m)
    assert notes(first) == []
    a = configuration_id(OutputDir(out).manifest())

    # Hotter sampling on the same OUT: new keys (nothing reused), and one line saying what differs.
    m.write_text(base.replace("temperature: 0.6", "temperature: 0.9"))
    second = run(m)
    lines = notes(second)
    assert len(lines) == 1 and "holds 8 samples of 1 other configuration" in lines[0] and "temperature 0.6 (now 0.9)" in lines[0], second.stderr
    b = configuration_id(OutputDir(out).manifest())

    # Another model and another template: two other configurations now.
    m.write_text(base.replace("temperature: 0.6", "temperature: 0.9").replace("model: deepseek-reasoner", "model: other-teacher")
                 .replace("Put your final answer", "Write the final answer"))
    third = run(m)
    lines = notes(third)
    assert len(lines) == 1 and "holds 16 samples of 2 other configurations" in lines[0], third.stderr
    assert "model deepseek-reasoner (now other-teacher)" in lines[0] and "template differs" in lines[0]
    c = configuration_id(OutputDir(out).manifest())
    assert len({a, b, c}) == 3
    # Every stored sample carries its configuration's id.
    by_id = dict(q(out, "SELECT config_id, count(*) FROM samples GROUP BY 1"))
    assert by_id == {a: 8, b: 8, c: 8}

    # The same configuration again: nothing bought, and the same line (OUT still holds the others).
    again = run(m)
    assert "stored 0 new samples" in again.stderr and len(notes(again)) == 1 and "16 samples of 2 other" in notes(again)[0]

    # The report splits them: per configuration its model, params, samples, accepted and dollars.
    r = cli("report", out, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    cfgs = {x["id"]: x for x in rep["configurations"]}
    assert set(cfgs) == {a, b, c} and [x["id"] for x in rep["configurations"] if x["current"]] == [c]
    assert cfgs[a]["params"]["temperature"] == 0.6 and cfgs[b]["params"]["temperature"] == 0.9
    assert cfgs[a]["model"] == cfgs[b]["model"] == "deepseek-reasoner" and cfgs[c]["model"] == "other-teacher"
    assert cfgs[b]["template_sha256"] == cfgs[a]["template_sha256"] != cfgs[c]["template_sha256"]
    truth = {cid: (n, acc, usd) for cid, n, acc, usd in q(out, "SELECT config_id, count(*), count(*) FILTER (WHERE accepted), sum(cost_usd) FROM samples GROUP BY 1")}
    for cid, x in cfgs.items():
        assert (x["samples"], x["accepted"]) == truth[cid][:2] and x["usd"] == pytest.approx(truth[cid][2])
    assert sum(x["usd"] for x in cfgs.values()) == pytest.approx(rep["total_usd"])
    text = cli("report", out, "--no-html")
    assert "Configurations: 3 in this folder" in text.stdout and "other-teacher" in text.stdout, text.stdout
    html = (out / "report.html").read_text()
    assert "<h2>Configurations</h2>" in html and all(cid in html for cid in (a, b, c)) and "holds 3 configurations" in html

    # The export takes the latest run's configuration only; --all-configs takes every one.
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "cur", "--test-size", "0")
    assert r.returncode == 0 and "left out" in r.stderr, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "cur" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == truth[c][1] > 0
    assert all("Write the final answer" in row["messages"][0]["content"] for row in rows)
    assert json.loads((tmp_path / "cur" / "export.json").read_text())["configurations"] == [c]
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "all", "--test-size", "0", "--all-configs")
    assert r.returncode == 0 and "left out" not in r.stderr, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "all" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == sum(t[1] for t in truth.values())
    assert sorted(json.loads((tmp_path / "all" / "export.json").read_text())["configurations"]) == sorted({a, b, c})


def test_shards_from_before_configuration_ids_read_as_one_legacy_configuration(tmp_path, teacher):
    m = write_manifest(tmp_path, teacher, n=2, problems=4, filters=CHAIN)
    out = tmp_path / "out"
    run(m)
    # What an older curator wrote: no config_id column, no OUT/configs/.
    for p in OutputDir(out).shards.glob("*.parquet"):
        pq.write_table(pq.read_table(p).drop_columns(["config_id"]), p)
        (p.parent / f".{p.name}.footer").unlink(missing_ok=True)
    for p in OutputDir(out).configs.glob("*.json"):
        p.unlink()
    ids = {cid for (cid,) in q(out, "SELECT DISTINCT config_id FROM samples")}
    assert len(ids) == 1 and next(iter(ids)).startswith("legacy-")
    assert read_samples(out).height == 8  # the filters' reader: a missing column reads as null

    # The same manifest again: its requests are the stored ones, so they are its own: no notice,
    # nothing bought, and the export takes them.
    again = run(m)
    assert notes(again) == [], again.stderr
    rep = json.loads(cli("report", out, "--json").stdout)
    assert len(rep["configurations"]) == 1 and rep["configurations"][0]["current"] and rep["configurations"][0]["samples"] == 8
    r = cli("export", out, "--format", "messages", "--to", tmp_path / "e", "--test-size", "0")
    assert r.returncode == 0 and "left out" not in r.stderr, r.stderr
    accepted = q(out, "SELECT count(*) FILTER (WHERE accepted) FROM samples")[0][0]
    assert len((tmp_path / "e" / "train.jsonl").read_text().splitlines()) == accepted > 0
