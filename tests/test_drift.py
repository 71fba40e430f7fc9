"""Drift signals: reasoning-length collapse, format drift (think markers, boxed answers), and
consistency (accuracy) degradation, live (`DriftMonitor.observe`) and offline (`drift_signals`)."""

import random
import re

import pytest

from conftest import write_manifest, write_problems
from curator.config import load_manifest
from curator.audit.drift import DriftMonitor, drift_signals, gold_answer, last_boxed, matches_gold, predicted_answer
from curator.judge.runner import read_samples
from curator.run import run_manifest

ALL = {"cot_length", "no_think", "no_boxed", "accuracy"}


def record(i, *, short=False, bare=False, unboxed=False, wrong=False, rng=None):
    words = 6 if short else 60 + (rng.randint(-5, 5) if rng else 0)
    answer = "6" if wrong else "5"
    return {
        "seq": i,
        "cot": "" if bare else " ".join(["step"] * words),
        "cot_source": "none" if bare else "reasoning_content",
        "completion": f"The answer is {answer}." if unboxed else f"The answer is $\\boxed{{{answer}}}$.",
        "gold": "#### 5",
    }


def feed(mon, rows, chunk=7):
    out = []
    for i in range(0, len(rows), chunk):
        out += mon.observe(rows[i:i + chunk])
    return out


def metrics(mon):
    return [e["metric"] for e in mon.events]


def test_answers_and_gold():
    assert last_boxed(r"a \boxed{1} then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert gold_answer("Tom... #### 1,234") == "1234"
    assert gold_answer(r"so $\boxed{42}$") == "42"
    assert predicted_answer("The answer is $\\boxed{ 7.0 }$.") == "7"
    assert predicted_answer("The answer is 12.") == "12"
    assert matches_gold("$\\boxed{5}$", "#### 5") is True
    assert matches_gold("$\\boxed{6}$", "#### 5") is False
    assert matches_gold("$\\boxed{6}$", None) is None


def test_stable_run_raises_nothing():
    rng = random.Random(1)
    rows = [record(i, rng=rng, wrong=rng.random() < 0.3, unboxed=rng.random() < 0.05, bare=rng.random() < 0.05) for i in range(2000)]
    mon = DriftMonitor(window=200)
    assert feed(mon, rows) == []
    assert mon.events == []


def test_each_signal_fires_alone_once_and_after_the_change():
    cases = {
        "cot_length": dict(short=True),
        "no_think": dict(bare=True),
        "no_boxed": dict(unboxed=True),
        "accuracy": dict(wrong=True),
    }
    for metric, change in cases.items():
        rows = [record(i) for i in range(300)] + [record(i, **change) for i in range(300, 700)]
        mon = DriftMonitor(window=100)
        warnings = feed(mon, rows)
        expect = {metric} | ({"cot_length"} if metric == "no_think" else set())  # no CoT at all is also a collapse
        assert set(metrics(mon)) == expect, metric
        assert len(warnings) == len(expect), warnings  # once, not on every later check
        assert all(w.startswith("drift: ") for w in warnings)
        assert all(e["seq_to"] >= 300 for e in mon.events)
        assert all(e["seq_to"] <= 300 + 100 for e in mon.events)  # within one window of the change


def test_messages_say_what_and_where():
    rows = [record(i) for i in range(200)] + [record(i, short=True, unboxed=True, wrong=True) for i in range(200, 400)]
    mon = DriftMonitor(window=50)
    text = "\n".join(feed(mon, rows))
    assert "reasoning length collapse: median CoT 6 words over samples" in text and "60 over the first 50" in text
    # A warning comes as soon as the rolling window crosses: part-way into the change.
    assert re.search(r"boxed answers disappearing: \d+% of samples \d+-\d+ have no \\boxed\{\} answer, 0% of the first 50", text)
    assert re.search(r"accuracy falling: \d+% of samples \d+-\d+ match the gold answer, 100% of the first 50", text)


def test_signal_rearms_after_recovery():
    rows = ([record(i) for i in range(100)] + [record(i, short=True) for i in range(100, 200)]
            + [record(i) for i in range(200, 300)] + [record(i, short=True) for i in range(300, 400)])
    mon = DriftMonitor(window=40)
    feed(mon, rows)
    assert metrics(mon) == ["cot_length", "cot_length"]


def test_math_verdicts_take_precedence_over_the_gold_check():
    rows = [record(i) | {"math_passed": True} for i in range(200)] + [record(i) | {"math_passed": False} for i in range(200, 400)]
    sig = {s["metric"]: s for s in drift_signals(rows, window=50)}
    assert sig["accuracy"]["fired"] and not sig["cot_length"]["fired"]
    assert sig["accuracy"]["baseline"] == 1.0 and sig["accuracy"]["last"] == 0.0


def test_offline_needs_two_windows():
    sig = drift_signals([record(i) for i in range(30)], window=20)
    assert not any(s["fired"] for s in sig) and "too few samples" in sig[0]["note"]


# -- against the scripted teacher -----------------------------------------------------------------


def _run(tmp_path, server, **cfg):
    write_problems(tmp_path / "problems.jsonl", 300)
    url = server(problems=str(tmp_path / "problems.jsonl"), problem_column="question", cot_placement="think",
                 mix={"right": 0.8, "wrong": 0.2}, cot_words=60, **cfg)
    m = write_manifest(tmp_path, url, n=1, problems=300)
    run_manifest(load_manifest(m), progress=False)
    return tmp_path / "out"


def test_collapsing_teacher_fires_every_signal(tmp_path, server):
    out = _run(tmp_path, server, collapse_after=150)
    from curator.audit.report import build_report

    rep = build_report(out, drift_window=50)
    sig = {s["metric"]: s for s in rep["drift"]}
    assert set(sig) == ALL
    for metric, s in sig.items():
        assert s["fired"], (metric, s)
        assert s["first_seq"] >= 150 - 16  # not before the teacher collapsed (16 requests in flight)
        assert s["messages"]
    assert sig["cot_length"]["last"] < 0.5 * sig["cot_length"]["baseline"]
    assert sig["accuracy"]["baseline"] > 0.6 and sig["accuracy"]["last"] == 0.0

    # Live: the same records fed as the writer loop stores them.
    df = read_samples(out)
    mon = DriftMonitor(window=50)
    warnings = feed(mon, df.to_dicts(), chunk=16)
    assert set(metrics(mon)) == ALL and len(warnings) == 4


def test_steady_teacher_fires_nothing(tmp_path, server):
    out = _run(tmp_path, server)
    from curator.audit.report import build_report

    rep = build_report(out, drift_window=50)
    assert [s["metric"] for s in rep["drift"] if s["fired"]] == []
    mon = DriftMonitor(window=50)
    assert feed(mon, read_samples(out).to_dicts(), chunk=16) == []


@pytest.mark.parametrize("window", [0, 1])
def test_window_must_hold_two_samples(window):
    with pytest.raises(ValueError):
        DriftMonitor(window=window)


def test_prime_keeps_the_run_baseline_across_a_resume():
    before = [record(i) for i in range(150)]
    after = [record(i, short=True) for i in range(150, 300)]
    mon = DriftMonitor(window=50)
    mon.prime(before)  # answers stored by the killed run
    assert feed(mon, after) and metrics(mon) == ["cot_length"]
    fresh = DriftMonitor(window=50)  # without priming, the collapsed answers would be the baseline
    assert feed(fresh, after) == []
