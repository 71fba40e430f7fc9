"""Synthetic teacher answers: a chain of thought and a completion for each outcome, placed as asked.

Everything here is deterministic given (seed, last user message, choice index), so the same request
always gets the same answer. Plain Python only: this runs on the server's hot path.
"""

from __future__ import annotations

import math
import random
from hashlib import blake2b

_TWO64 = float(2**64)

# Templates are dense in random slots ({a}..{m} numbers, {x} {y} nouns) so that the word shingles of
# two different answers barely overlap, even for long thoughts (near-duplicate filters must not fire
# on distinct prompts).
_EN = (
    "First, the {x} count is {a} and the {y} adds {b} more.",
    "Adding {a} {x} and {b} {y} gives {c} items in all.",
    "Check: {a} {x} times {b} is {m}, which matches.",
    "Hmm, the ratio of {a} {x} to {b} {y} needs care.",
    "Split it: {a} {x} first, then {b} {y} after that.",
    "Let x be the {x}; then x plus {a} equals {c}.",
    "So the {x} must be {b}, since {c} minus {a} is {b}.",
    "Verify with the {y}: {d} minus {b} leaves {c}.",
    "The {x} limit of {a} holds, so {b} {y} is fine.",
    "Edge case: zero {x} would give {b}, not {c}.",
    "No, {a} {y} cannot be negative, so drop that case.",
    "Running total of {x}: {c} plus {b} gives {d}.",
    "Okay, {a} and {b} agree with the {y} so far.",
    "Note {m} {x} divided by {a} is {b} {y} exactly.",
    "Count the {x} one by one: {a}, then {c}, then {d}.",
    "There are {a} {x} and {b} {y}, {c} in total.",
    "Write it as {a} {x} plus {b} {y} equals {c}.",
    "Substituting {b} {x} back gives {c} again, good.",
    "Only the final {x} matters, not the {a} {y}.",
    "A table of {a} {x} by {b} {y} holds {m} cells.",
    "Each of the {a} {x} holds {b} {y}: {m} total.",
    "Careful: {d} {x} minus {b} {y} is a difference, {c}.",
    "The difference of {d} and {b} {x} is {c}, as before.",
    "Keep the units: {a} {x} per {y}, times {b}.",
)

_NOUNS = (
    "apples", "boxes", "marbles", "tickets", "pages", "coins", "students", "trains", "hours", "meters",
    "cookies", "pencils", "books", "cars", "dollars", "minutes", "eggs", "chairs", "tiles", "cards",
    "bottles", "stamps", "shells", "flowers", "birds", "rows", "steps", "points", "miles", "days",
    "kittens", "buses", "seats", "games", "liters", "bricks", "candles", "ribbons", "plates", "shirts",
    "nails", "boats", "lamps", "cups", "bags", "keys", "rocks", "trees", "coats", "songs",
)

_ZH = (
    "我们需要计算这个值。",
    "首先，我们把问题分成两部分。",
    "让我再检查一下这个结果。",
    "这个条件意味着所有的数量都是正数。",
    "所以前面的步骤是正确的。",
)

_WAIT = "Wait, let me check again."

CANNED_COT = (
    "This looks like a standard problem. I recall that problems of this kind always have the same "
    "answer. Let me just use the known result without recomputing anything. The answer is 7."
)
CANNED_COMPLETION = "Using the well-known result, the answer is $\\boxed{7}$."


def digest(seed: int | str, message: str, index: int) -> tuple[float, int]:
    """(uniform in [0, 1), 64-bit seed for the text generator) for one choice."""
    h = blake2b(f"{seed}\x00{index}\x00{message}".encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(h[:8], "little") / _TWO64, int.from_bytes(h[8:], "little")


def uniform(*parts: object) -> float:
    h = blake2b("\x00".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / _TWO64


def pick(u: float, weights: list[tuple[str, float]], total: float) -> str:
    x = u * total
    acc = 0.0
    for name, w in weights:
        acc += w
        if x < acc:
            return name
    return weights[-1][0]


def wrong_answer(gold: str) -> str:
    """A different answer: numeric gold + 1, else "wrong"."""
    g = gold.strip().replace(",", "")
    try:
        return str(int(g) + 1)
    except ValueError:
        pass
    try:
        v = float(g)
    except ValueError:
        return "wrong"
    if math.isfinite(v):
        r = v + 1
        return str(int(r)) if r.is_integer() else repr(r)
    return "wrong"


def _sentences(rng: random.Random, words: int) -> list[str]:
    """English reasoning sentences totalling about `words` words."""
    out: list[str] = []
    count = 0
    randint = rng.randint
    choice = rng.choice
    while count < words:
        a, b = randint(2, 999), randint(2, 999)
        s = choice(_EN).format(a=a, b=b, c=a + b, d=a + 2 * b, m=a * b, x=choice(_NOUNS), y=choice(_NOUNS))
        out.append(s)
        count += s.count(" ") + 1
    return out


def reasoning(rng: random.Random, words: int, answer: str) -> str:
    """A CoT of about `words` words ending with the answer it reached."""
    body: list[str] = []
    if words > 12:
        body.append("Let me work through this problem carefully.")
        words -= 7
    if words > 5:
        body += _sentences(rng, words - 5)
    body.append(f"So the answer is {answer}.")
    return " ".join(body)


def truncated_reasoning(rng: random.Random, words: int) -> str:
    """A CoT cut mid-sentence after about `words` words."""
    ws = " ".join(_sentences(rng, words + 8)).split()[: max(words, 2)]
    while len(ws) > 1 and ws[-1][-1] in ".:;,!?":
        ws.pop()
    return " ".join(ws)


def mixed_reasoning(rng: random.Random, words: int, answer: str) -> str:
    parts = _sentences(rng, max(words - 5, 4))
    for zh in rng.sample(_ZH, 3):
        parts.insert(rng.randint(0, len(parts)), zh)
    parts.append(f"So the answer is {answer}.")
    return " ".join(parts)


def degenerate_reasoning(rng: random.Random, words: int) -> str:
    head = _sentences(rng, max(words // 3, 5))
    reps = max(20, words // 5)
    return " ".join(head) + " " + " ".join([_WAIT] * reps)


def completion(rng: random.Random, answer: str, boxed: bool = True) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    lead = f"Combining the steps above, starting from {a} and {b}, we reach the result."
    if boxed:
        return f"{lead}\n\nThe answer is $\\boxed{{{answer}}}$."
    return f"{lead}\n\nThe answer is {answer}."


def word_count(text: str) -> int:
    return len(text.split()) if text else 0


def first_words(text: str, k: int) -> str:
    if k <= 0:
        return ""
    return " ".join(text.split()[:k])


def render(placement: str, cot: str, answer: str, closed: bool) -> dict[str, str]:
    """The assistant message for a CoT placed as `placement`.

    `closed` is False when the thought was cut (truncation): no closing tag, no answer.
    `placement == "bare"` is the collapsed teacher: thought and answer run together, no markers.
    """
    if not cot:
        return {"role": "assistant", "content": answer}
    if placement == "reasoning_content":
        return {"role": "assistant", "content": answer, "reasoning_content": cot}
    if placement == "reasoning":
        return {"role": "assistant", "content": answer, "reasoning": cot}
    if placement == "think":
        content = f"<think>\n{cot}\n</think>\n\n{answer}" if closed else f"<think>\n{cot}"
        return {"role": "assistant", "content": content}
    if placement == "think_unopened":
        content = f"{cot}\n</think>\n\n{answer}" if closed else cot
        return {"role": "assistant", "content": content}
    if placement == "bare":
        return {"role": "assistant", "content": f"{cot}\n\n{answer}" if answer else cot}
    # "none": the thought is not shown at all
    return {"role": "assistant", "content": answer}
