"""The search's Bloom filters may only rule a row group out when no text in it matches: every
substring of a text, cut anywhere and in any case, must be found in that text's filter."""

import random

import pyarrow as pa
import pyarrow.compute as pc

from curator.audit.viewer.bloom import (
    build_filter,
    group_entries,
    may_contain,
    query_entries,
)

TEXTS = [
    "Wait, let me check that again: 417 times 23 is 9591. So the answer is $\\boxed{9591}$.",
    "ΟΔΟΣ and οδος; the ſtar is a STAR; µ-meter vs μ-meter; Kelvin \u212a vs k; x\u0345y; İstanbul",
    "数学题：小明有 12 个苹果，给了小红 5 个，还剩几个？答案是 7。9876543210 is_a_number_with_underscores",
    "Let x be the number of pencils; then x plus 998001 equals 998417. outlet menu checkmate",
]


def _swap(s: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


def test_every_substring_in_any_case_is_kept():
    rng = random.Random(7)
    for text in TEXTS:
        packed = build_filter(group_entries([pa.array([text, "filler words only"])])[0])
        for _ in range(400):
            i = rng.randrange(len(text))
            j = rng.randrange(i + 1, len(text) + 1)
            q = _swap(text[i:j], rng)
            if not pc.any(pc.match_substring(pa.array([text]), q, ignore_case=True)).as_py():
                continue  # a case change RE2 does not undo (e.g. a dotted capital I): not a match at all
            assert may_contain(packed, query_entries(q)), (text, q)


def test_case_twins_and_rules_out():
    packed = build_filter(group_entries([pa.array(TEXTS)])[0])
    for q in ["οδοσ", "ΟΔΟς", "star", "ſTAR", "μ-METER", "K vs", "9876543210", "87654", "check that", "is_a_NUMBER"]:
        assert pc.any(pc.match_substring(pa.array(TEXTS), q, ignore_case=True)).as_py(), q
        assert may_contain(packed, query_entries(q)), q
    # a rare number and a phrase of common words (each word present) that the text does not hold
    for q in ["1234567890", "pencils equals", "outlet checkmate", "number of outlet pencils"]:
        assert not pc.any(pc.match_substring(pa.array(TEXTS), q, ignore_case=True)).as_py(), q
        assert not may_contain(packed, query_entries(q)), q
