from curator.sample.parse import read_usage, split_reasoning


def test_reasoning_content_field():
    s = split_reasoning({"content": "The answer is 4.", "reasoning_content": "2+2 is 4."})
    assert (s.cot, s.completion, s.cot_source) == ("2+2 is 4.", "The answer is 4.", "reasoning_content")


def test_reasoning_field_vllm_openrouter():
    s = split_reasoning({"content": "4", "reasoning": "add them"})
    assert (s.cot, s.completion, s.cot_source) == ("add them", "4", "reasoning")


def test_empty_reasoning_field_falls_back_to_think_tags():
    s = split_reasoning({"content": "<think>hmm</think>\n\n4", "reasoning_content": ""})
    assert (s.cot, s.completion, s.cot_source) == ("hmm", "4", "think")


def test_think_tags_in_content():
    s = split_reasoning({"content": "<think>\nLet me see.\n</think>\n\nThe answer is $\\boxed{4}$."})
    assert s.cot == "Let me see." and s.completion == "The answer is $\\boxed{4}$." and s.cot_source == "think"


def test_r1_missing_opening_tag():
    s = split_reasoning({"content": "Okay, so 2+2.\n</think>\n\n**4**"})
    assert (s.cot, s.completion, s.cot_source) == ("Okay, so 2+2.", "**4**", "think_unopened")


def test_unclosed_think_is_all_cot_no_answer():
    s = split_reasoning({"content": "<think>I was cut off mid"})
    assert (s.cot, s.completion, s.cot_source) == ("I was cut off mid", "", "think")


def test_no_cot():
    s = split_reasoning({"content": "just 4", "reasoning_content": None})
    assert (s.cot, s.completion, s.cot_source) == ("", "just 4", "none")


def test_usage_openai_and_deepseek_shapes():
    u = read_usage({"prompt_tokens": 10, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 20}})
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.cached_tokens) == (10, 30, 20, 4)
    u = read_usage({"prompt_tokens": 10, "completion_tokens": 3, "prompt_cache_hit_tokens": 8})
    assert u.cached_tokens == 8 and u.reasoning_tokens is None
    assert read_usage(None).prompt_tokens is None
