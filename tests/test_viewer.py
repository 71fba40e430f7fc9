"""`curator view OUT` in a real headless Chromium (Debian's package, driven by Playwright) over an
output directory built by a real `curator run` against the local teacher."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, cli
from curator.store.catalog import query as q

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"

import playwright.sync_api as playwright_api  # noqa: E402 - the `test` extra installs it
if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package", pytrace=False)

INJECTION = ('Let me think. <script>window.__pwned=1</script> Then <img src=x onerror="window.__pwned=1"> and '
             '[x](javascript:window.__pwned=1) <a href="javascript:window.__pwned=1">click</a> So the answer is 4.')
INJECTED_PROMPT = 'inj"<b>1</b>/?#&x'


def _manifest(tmp: Path, url: str, out: Path, *, n: int = 4, limit: int | None = None, concurrency: int = 16) -> Path:
    m = tmp / "m.yaml"
    m.write_text(f"""
name: viewer-test
source: {{path: {ROOT / 'data' / 'demo-math.jsonl'}, id: id, problem: question, answer: answer{f', limit: {limit}' if limit else ''}}}
prompt: {ROOT / 'prompts' / 'r1-math.yaml'}
teacher:
  base_url: {url}
  model: deepseek-reasoner
  params: {{temperature: 0.6, max_tokens: 4096, n: {n}}}
  price: {{input: 0.55, cached_input: 0.14, output: 2.19}}
limits: {{concurrency: {concurrency}, timeout_s: 30, max_retries: 4, max_backoff_s: 0.5}}
filters: {ROOT / 'filters' / 'r1-math.yaml'}
output: {out}
""")
    return m


TEACHER = {"problems": str(ROOT / "data" / "demo-math.jsonl"), "problem_column": "question", "answer_column": "answer",
           "cot_words": 120, "mix": {"right": 0.6, "wrong": 0.1, "truncated": 0.05, "mixed_lang": 0.08, "duplicate": 0.12,
                                     "degenerate": 0.03, "no_boxed": 0.02}}


def _inject(out: Path) -> list[str]:
    """Two answers whose text carries markup, stored through the store's own writer."""
    from curator.store.sample_store import SampleStore

    rows = []
    for i in range(2):
        rows.append({"key": f"{'f' * 60}{i:04d}", "run": "viewer-test", "prompt_id": INJECTED_PROMPT, "sample_index": i, "source": "injected",
                     "problem": "What is 2+2? <script>window.__pwned=1</script>", "gold": "<img src=x onerror=\"window.__pwned=1\">4",
                     "cot": INJECTION, "completion": "The answer is $\\boxed{4}$. <script>window.__pwned=1</script>", "cot_source": "reasoning_content",
                     "raw_content": "x", "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 20, "reasoning_tokens": 15,
                     "cached_tokens": 0, "cost_usd": 0.0001, "usage_estimated": False, "model": "deepseek-reasoner<script>",
                     "attempts": 1, "latency_s": 0.1, "created_at": time.time()})
    store = SampleStore(out)
    try:
        store.append(rows)
    finally:
        store.close()
    return [r["key"] for r in rows]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    from curator.teacher.runner import running_server

    tmp = tmp_path_factory.mktemp("viewer")
    out = tmp / "out"
    with running_server(TEACHER) as url:
        r = cli("run", _manifest(tmp, url, out), "--no-progress", timeout=300)
        assert r.returncode == 0, r.stderr
    _inject(out)
    r = cli("filter", out, timeout=300)  # judges the injected answers too (the chain as the run built it)
    assert r.returncode == 0, r.stderr
    dups = q(out, "SELECT count(*) FROM verdicts WHERE filter = 'near_dup' AND NOT passed")[0][0]
    assert dups >= 2, "the test data needs near-duplicates"
    return out


class Viewer:
    def __init__(self, out: Path, *extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "curator", "view", str(out), "--port", "0", *extra], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://[\d.]+:(\d+)/", line)
        assert m, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.url = f"http://127.0.0.1:{m.group(1)}/"

    def api(self, path: str):
        return json.loads(urllib.request.urlopen(self.url + "api/" + path, timeout=30).read())

    def wait_ready(self, timeout: float = 60) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            meta = self.api("meta")
            if meta["ready"] and not meta["refreshing"]:
                return meta
            time.sleep(0.2)
        raise AssertionError("viewer never became ready")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture(scope="module")
def viewer(out_dir):
    v = Viewer(out_dir)
    v.wait_ready()
    yield v
    err = v.stop()
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    ctx.close()
    assert not errors, errors


def _goto(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector('body[data-ready="1"]', timeout=30_000)


def _ready(page) -> None:
    page.wait_for_selector('body[data-ready="1"]', timeout=30_000)


def test_filter_open_sample_follow_duplicate_link(viewer, out_dir, page):
    _goto(page, viewer.url)
    # A near-duplicate that an earlier step rejected first (the demo teacher's copies are wrong too):
    # filter by that reject reason and by the near_dup step having failed.
    key, reason = q(out_dir, """SELECT s.key, s.reject_reason FROM samples s JOIN verdicts v USING (key)
                                WHERE v.filter = 'near_dup' AND NOT v.passed ORDER BY s.seq LIMIT 1""")[0]
    expected = q(out_dir, """SELECT key FROM samples WHERE reject_reason = ? AND key IN
                             (SELECT key FROM verdicts WHERE filter = 'near_dup' AND NOT passed) ORDER BY seq""", [reason])
    page.select_option("#f-reason", reason)
    page.select_option("#f-failed", "near_dup")
    page.evaluate("document.body.dataset.ready = ''")
    page.click("#apply")
    _ready(page)
    assert f"of {len(expected)}" in page.text_content("#count")
    reasons = page.locator("#samples-table tbody td.reason").all_text_contents()
    assert reasons == [reason] * len(expected)
    assert expected[0][0] == key

    page.evaluate("document.body.dataset.ready = ''")
    page.click("#samples-table a.sample-link >> nth=0")
    _ready(page)
    assert page.text_content("#sample-key") == key
    assert page.text_content("#sample-reason") == reason
    verdict_rows = page.locator("#verdicts tbody tr").all_text_contents()
    steps = q(out_dir, "SELECT count(*) FROM verdicts WHERE key = ?", [key])[0][0]
    assert len(verdict_rows) == steps and any("near_dup" in r and "reject" in r for r in verdict_rows)
    details = json.loads(q(out_dir, "SELECT details FROM verdicts WHERE key = ? AND filter = 'near_dup'", [key])[0][0])
    problem = q(out_dir, "SELECT problem FROM samples WHERE key = ?", [key])[0][0]
    assert page.text_content("#problem") == problem

    page.evaluate("document.body.dataset.ready = ''")
    page.click("#verdicts a.dup-link")
    _ready(page)
    assert page.text_content("#sample-key") == details["duplicate_of"]
    rep_accepted = q(out_dir, "SELECT accepted FROM samples WHERE key = ?", [details["duplicate_of"]])[0][0]
    assert ("accepted" if rep_accepted else "rejected") in page.text_content(".sample-head")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "viewer-duplicate-representative.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    # Its cluster: the representative and every copy, with the differences marked.
    _goto(page, viewer.url + "#/cluster/" + details["duplicate_of"])
    n = q(out_dir, "SELECT count(*) FROM verdicts WHERE filter = 'near_dup' AND NOT passed AND json_extract_string(details, '$.duplicate_of') = ?",
          [details["duplicate_of"]])[0][0]
    assert page.locator("#cluster-samples .card").count() == min(n, 20) + 1


def test_language_spans_marked_and_prompt_view(viewer, out_dir, page):
    key, pid = q(out_dir, "SELECT key, prompt_id FROM samples WHERE reject_reason = 'language:mixed_language' ORDER BY seq LIMIT 1")[0]
    _goto(page, viewer.url + "#/sample/" + key)
    marked = page.locator("#trace mark.foreign").all_text_contents()
    details = json.loads(q(out_dir, "SELECT details FROM verdicts WHERE key = ? AND filter = 'language'", [key])[0][0])
    assert marked and set(marked) <= {e["text"] for e in details["examples"]}
    assert page.locator("#trace mark.boxed").count() >= 1  # the \\boxed{} answer is highlighted

    _goto(page, viewer.url + "#/prompt/" + pid)
    n, acc = q(out_dir, "SELECT count(*), count(*) FILTER (WHERE accepted) FROM samples WHERE prompt_id = ?", [pid])[0]
    assert page.locator("#prompt-samples .card").count() == n
    assert f"({acc} of {n} samples accepted)" in page.text_content("#pass-rate")


def test_search_sort_and_paging(viewer, out_dir, page):
    (word,) = q(out_dir, "SELECT 'wait, let me check again' FROM samples LIMIT 1")[0]
    want = q(out_dir, "SELECT count(*) FROM samples WHERE cot ILIKE ? OR problem ILIKE ? OR completion ILIKE ?", [f"%{word}%"] * 3)[0][0]
    assert want
    _goto(page, viewer.url + "#/samples?q=" + word.replace(" ", "%20").upper())
    # The scan stops once it has this page plus one row: an exact count only when it read everything.
    assert (f"of {want}" if want <= 50 else "of at least 51") in page.text_content("#count")
    keys = [h.rsplit("/", 1)[1] for h in page.locator("#samples-table a.sample-link").evaluate_all("els => els.map(e => e.getAttribute('href'))")]
    assert len(keys) == min(want, 50)
    assert q(out_dir, "SELECT count(*) FROM samples WHERE list_contains(?, key) AND cot ILIKE ?", [keys, f"%{word}%"])[0][0] == len(keys)
    # Sorted by cost, descending: the first row is the dearest sample.
    _goto(page, viewer.url + "#/samples?sort=cost&desc=1")
    top = q(out_dir, "SELECT max(cost_usd) FROM samples")[0][0]
    first_key = page.locator("#samples-table a.sample-link >> nth=0").get_attribute("href").rsplit("/", 1)[1]
    assert q(out_dir, "SELECT cost_usd FROM samples WHERE key = ?", [first_key])[0][0] == top
    total = q(out_dir, "SELECT count(*) FROM samples")[0][0]
    assert f"rows 1–50 of {total:,}" in page.text_content("#count")
    page.evaluate("document.body.dataset.ready = ''")
    page.click("#next")
    _ready(page)
    assert f"rows 51–100 of {total:,}" in page.text_content("#count")


def test_injected_markup_renders_as_text(viewer, out_dir, page):
    keys = [k for (k,) in q(out_dir, "SELECT key FROM samples WHERE source = 'injected' ORDER BY key")]
    assert len(keys) == 2
    _goto(page, viewer.url + "#/sample/" + keys[0])
    assert INJECTION in page.text_content("#trace")
    assert "<script>" in page.text_content("#problem")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#app img, #app script, #app a[href^='javascript']").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-injected-sample.png"), full_page=True)
    # The prompt whose id holds markup and URL characters, through a link.
    page.evaluate("document.body.dataset.ready = ''")
    page.click("#prompt-link")
    _ready(page)
    assert page.text_content("#prompt-id") == INJECTED_PROMPT
    assert page.locator("#prompt-samples .card").count() == 2
    # The table, found by text search and by model.
    _goto(page, viewer.url + "#/samples?q=__pwned&fields=cot")
    assert "of 2" in page.text_content("#count")
    assert page.locator("#app img, #app script").count() == 0
    for h in page.locator("#app a").evaluate_all("els => els.map(e => e.getAttribute('href'))"):
        assert h.startswith("#/"), h
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_charts_show_the_report_numbers(viewer, out_dir, page):
    r = cli("report", out_dir, "--json", "--no-html")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    _goto(page, viewer.url + "#/charts")
    kpis = page.text_content("#kpis")
    assert f"{rep['sampled']:,}sampled" in kpis and f"{rep['accepted']:,}accepted" in kpis
    funnel = page.locator("#funnel svg text.val").all_text_contents()
    assert [int(t.split(" ")[0].replace(",", "")) for t in funnel] == [s["remaining"] for s in rep["funnel"]]
    assert page.locator("#lengths svg").count() == len(rep["lengths"])
    assert page.locator("#drift .card").count() == len(rep["drift"])


def test_not_an_output_dir_is_one_line(tmp_path):
    r = cli("view", tmp_path, "--port", "0", timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not a curator output directory" in r.stderr
    r = cli("view", tmp_path / "nope", "--port", "0", timeout=30)
    assert r.returncode == 2 and "no such output directory" in r.stderr and "Traceback" not in r.stderr


def test_empty_run_and_network_warning(tmp_path, page):
    (tmp_path / "shards").mkdir()
    v = Viewer(tmp_path, "--host", "0.0.0.0")
    try:
        v.wait_ready()
        _goto(page, v.url)
        assert "No samples stored yet" in page.text_content("#empty")
        _goto(page, v.url + "#/charts")
        assert "0sampled" in page.text_content("#kpis")
    finally:
        err = v.stop()
    assert "anyone who can reach this machine" in err and "Traceback" not in err


def test_run_in_progress(tmp_path, page):
    """A run is writing (its journal growing, the catalog locked): the viewer reads what is
    stored, says answers are still in the journal, and the run is not disturbed."""
    from curator.teacher.runner import running_server

    out = tmp_path / "out"
    with running_server({**TEACHER, "latency_ms": 250}) as url:
        run = subprocess.Popen([sys.executable, "-m", "curator", "run", str(_manifest(tmp_path, url, out, n=1, limit=24, concurrency=1)),
                                "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ})
        try:
            end = time.time() + 60
            while time.time() < end and not any(p.stat().st_size for p in (out / "journal").glob("*.jsonl")):
                time.sleep(0.1)
            v = Viewer(out)
            try:
                meta = v.wait_ready()
                assert run.poll() is None, "the run ended before the viewer looked"
                assert meta["journal_rows_not_in_shards"] > 0
                _goto(page, v.url)
                assert "still in the journal" in page.text_content("#notice")
                assert "No samples stored yet" in page.text_content("#empty")
                _, err = run.communicate(timeout=120)
                assert run.returncode == 0, err
                # Refresh: the compacted answers show, the notice goes.
                page.evaluate("document.body.dataset.ready = ''")
                page.click("#refresh")
                _ready(page)
                assert "of 24" in page.text_content("#count")
                assert page.is_hidden("#notice")
            finally:
                err = v.stop()
            assert "Traceback" not in err, err
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()


def test_search_with_the_word_index_finds_what_a_scan_finds(viewer, out_dir, page):
    """Once the word index covers every shard, a search reads only the row groups that may hold
    its words, and finds exactly the rows a full scan (DuckDB ILIKE) finds."""
    end = time.time() + 60
    while True:
        idx = viewer.api("meta")["search_index"]
        if idx["files_indexed"] == idx["files"] and not idx["building"]:
            break
        assert time.time() < end, idx
        time.sleep(0.2)
    assert idx["words"] > 0
    sentence = json.loads(q(out_dir, "SELECT details FROM verdicts WHERE filter = 'language' AND NOT passed LIMIT 1")[0][0])["examples"][0]["text"]
    # A digits-only query and a phrase of two words that are each in many samples but rarely
    # side by side (the Bloom filters' numbers and word pairs), cut inside words too.
    cots = [c for (c,) in q(out_dir, "SELECT cot FROM samples WHERE cot IS NOT NULL")]
    nums = sorted({m for c in cots for m in re.findall(r"\d{3,}", c)}, key=lambda m: sum(m in c for c in cots))
    pairs = {}
    for c in cots:
        for m in re.finditer(r"(?=\b([A-Za-z]{4,}) ([A-Za-z]{4,})\b)", c):
            pairs[m.group(1) + " " + m.group(2)] = pairs.get(m.group(1) + " " + m.group(2), 0) + 1
    rare = [p for p, n in pairs.items() if n == 1 and all(sum(w in c for c in cots) > 3 for w in p.split())]
    extra = [(nums[0], "cot")] + [(p, "cot") for p in rare[:1]] + [(p[1:-1].upper(), "cot") for p in rare[:1]]
    assert len(extra) == 3, (len(nums), len(rare))
    narrowed = {sentence, "PWNED=1", "no such words anywhere"}
    for text, fields in ((sentence, "problem,cot,completion"), ("PWNED=1", "cot"), ("no such words anywhere", "cot"), *extra):
        cols = fields.split(",")
        want = sorted(k for (k,) in q(out_dir, f"SELECT key FROM samples WHERE {' OR '.join(c + ' ILIKE ?' for c in cols)}",
                                      [f"%{text}%"] * len(cols)))
        assert len(want) < 50
        r = viewer.api("samples?" + urllib.parse.urlencode({"q": text, "fields": fields, "limit": 50}))
        assert sorted(x["key"] for x in r["rows"]) == want and r["total"] == len(want) and r["total_exact"]
        # The extra queries are about equality only: in two row groups a rare pair, or a cut word
        # looked up by its 5-letter pieces, may sit in both (test_viewer_bloom checks the narrowing).
        assert text not in narrowed or r["groups_read"] < r["groups_total"] or r["groups_total"] == 1
    _goto(page, viewer.url + "#/samples?q=" + urllib.parse.quote(sentence))
    assert "row groups" in page.text_content("#count")
