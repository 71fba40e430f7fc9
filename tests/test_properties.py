"""Property-based tests: parsers and answer extractors take any text a teacher may send."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from curator.engines import answers
from curator.judge.filters.code_exec import extract_code
from curator.sample.parse import split_reasoning, split_spans

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text biased towards the characters the parsers look for, so the interesting branches are hit.
PIECES = st.sampled_from(["<think>", "</think>", "<think", "\\boxed{", "\\boxed ", "\\fbox{", "{", "}", "\\{", "\\}", "\\",
                          "####", "$", "**", "```", "```python\n", "\n", " ", "Answer:", "the answer is", "(C)", "B", "-",
                          ",", ".", "1,234", "3/4", "\\frac{1}{2}", "10^{", "e-5", "%", "−", "０", "٣"])
TEXT = st.one_of(st.text(), st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30).map("".join))
FIELD = st.one_of(st.none(), TEXT, st.integers(), st.lists(st.integers(), max_size=2))


@SETTINGS
@given(TEXT)
@example("  <think>a</think>b")
@example("x<think>a")
@example("</think></think><think>")
def test_spans_concatenate_back_to_the_content(content):
    sp = split_spans(content)
    assert "".join(sp.parts) == content
    assert sp.open in ("", "<think>") and sp.close in ("", "</think>")
    assert "</think>" not in sp.prefix + sp.cot  # the first closing tag ends the thought
    if sp.kind == "none":
        assert sp.completion == content


@SETTINGS
@given(st.fixed_dictionaries({}, optional={"content": FIELD, "reasoning_content": FIELD, "reasoning": FIELD}))
def test_split_reasoning_takes_any_message(message):
    s = split_reasoning(message)
    assert isinstance(s.cot, str) and isinstance(s.completion, str)
    assert s.cot_source in ("reasoning_content", "reasoning", "think", "think_unopened", "none")
    content = message.get("content") if isinstance(message.get("content"), str) else ""
    if s.cot_source in ("think", "think_unopened", "none"):
        # Everything kept is a stripped piece of the content, in order.
        assert s.completion in content and s.cot in content
        if s.cot_source == "none":
            assert s.completion == content.strip()
    else:
        assert s.cot == message[s.cot_source].strip()


@SETTINGS
@given(TEXT)
def test_boxed_contents_are_substrings(text):
    for b in answers.find_boxed(text):
        assert 0 <= b.start < b.end <= len(text)
        assert b.content in text[b.start:b.end]
    got = answers.last_boxed(text)
    assert got is None or (got and got in text)


@SETTINGS
@given(TEXT)
@example("#### ")
@example("####\n\n")
def test_gold_and_final_answers_come_from_the_text(text):
    for f in (answers.gsm8k_gold, answers.gold_answer, answers.final_answer, answers.labelled_answer, answers.last_bold):
        got = f(text)
        assert got is None or isinstance(got, str)
    g = answers.gsm8k_gold(text)
    if g is not None:
        assert "####" in text and g.replace(",", "") in text.replace(",", "").replace("$", "")


@SETTINGS
@given(TEXT)
@example("1e999999999 and 2 \\times 10^{-99999999}")  # once: seconds and a huge int per number
@example("9" * 400)  # exact, but past a double
def test_numbers_are_read_from_the_text(text):
    for n in answers.numbers(text):
        assert isinstance(n.value, Fraction) and n.text.strip() and isinstance(float(n), float)
        assert abs(n.value.numerator).bit_length() < 10_000
    got = answers.parse_number(text)
    assert got is None or isinstance(got.value, Fraction)


@SETTINGS
@given(TEXT, st.sampled_from(["ABCD", "ABCDE", "ABCDEFGHIJ"]))
def test_choice_letter_is_an_offered_letter_found_in_the_text(text, letters):
    got = answers.choice_letter(text, letters)
    assert got is None or (got in letters and (got in text or got.lower() in text))


@SETTINGS
@given(TEXT)
def test_extracted_code_is_a_fenced_block_of_the_text(text):
    code = extract_code(text)
    assert code is None or (code.strip() and code in text and "```" in text)
