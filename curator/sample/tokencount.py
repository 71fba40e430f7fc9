"""Count tokens locally when a teacher sends no usage block (llama.cpp when streaming, some proxies).

Counts made here are estimates: the sampler stores them with `usage_estimated = true`, and
reports say that their totals include estimates. Three counters, chosen by `teacher.tokenizer`:

  *.json   a Hugging Face `tokenizer.json` (needs the `tokenizers` package, imported lazily)
  *.gguf   the vocabulary of a GGUF model (needs llama-cpp-python, imported lazily; vocab only,
           no weights are loaded)
  (none)   a character estimate: one token per 4 ASCII characters (OpenAI's rule of thumb for
           English) plus one token per non-ASCII character (CJK text runs close to one token a
           character; accented Latin text is over-counted, which errs towards a higher cost)

Nothing is ever downloaded: a tokenizer is a local file or the character estimate."""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

from curator.config import ManifestError

# Chat templates wrap each message in a few tokens (role markers, separators); OpenAI documents
# ~3 per message plus 3 to prime the answer, and llama.cpp's templates are in the same range.
PER_MESSAGE_TOKENS = 3
PRIMING_TOKENS = 3


class TokenCounter(Protocol):
    kind: str  # "tokenizer.json" | "gguf" | "chars"

    def count(self, text: str) -> int: ...


class CharEstimate:
    kind = "chars"

    def count(self, text: str) -> int:
        if not text:
            return 0
        ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
        return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def _open(path: Path, what: str, needs: str, load: Callable[[], Any]) -> Any:
    """`load()`, with its two failures (package missing, file unreadable) as one-line errors."""
    try:
        return load()
    except ImportError:
        raise ManifestError(f"teacher.tokenizer: {path} is a {what}: reading it needs {needs}") from None
    except Exception as e:  # tokenizers raises a bare Exception, llama_cpp ValueError/RuntimeError
        raise ManifestError(f"teacher.tokenizer: {path}: not a readable {what} ({' '.join(str(e).split())[:120]})") from None


class HFTokenizer:
    kind = "tokenizer.json"

    def __init__(self, path: Path):
        def load():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))

        self._tok = _open(path, "tokenizer.json", "the `tokenizers` package (pip install tokenizers)", load)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids) if text else 0


class GGUFVocab:
    kind = "gguf"

    def __init__(self, path: Path):
        def load():
            from llama_cpp import Llama

            return Llama(model_path=str(path), vocab_only=True, verbose=False)

        self._llm = _open(path, "GGUF model", "llama-cpp-python (pip install llama-cpp-python)", load)

    def count(self, text: str) -> int:
        # special=True: a template token the model wrote (e.g. <|im_end|>) counts as the one token it is.
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0


def load_counter(path: Path | None) -> TokenCounter:
    """The counter for `teacher.tokenizer` (already resolved against the manifest's folder)."""
    if path is None:
        return CharEstimate()
    if not path.is_file():
        raise ManifestError(f"teacher.tokenizer: {path}: file not found")
    if path.suffix.lower() == ".gguf":
        return GGUFVocab(path)
    if path.suffix.lower() == ".json":
        return HFTokenizer(path)
    raise ManifestError(f"teacher.tokenizer: {path}: expected a tokenizer.json or a .gguf model file")


def prompt_tokens(counter: TokenCounter, messages: list[dict[str, Any]]) -> int:
    return PRIMING_TOKENS + sum(PER_MESSAGE_TOKENS + counter.count(str(m.get("content") or "")) for m in messages)
