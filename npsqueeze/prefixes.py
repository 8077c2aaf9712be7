"""The start of a long text that decides its first tokens: truncating a 5 MB text to 512 tokens
should not tokenize all of it.

Only the words a cut crosses tokenize differently from the whole text, so a prefix somewhat longer
than the tokens it must give is enough; these functions find such a prefix by tokenizing prefixes of
growing length with the tokenizer's `encodings`, which never truncates unless asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import NpsqueezeError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

MAX_READ = 1 << 20  # characters of a text tokenized to find its first tokens


def prefixes(tokenizer: Tokenizer, texts: list[str], pairs: list[str | None] | None, max_length: int
             ) -> tuple[list[str], list[str | None] | None]:
    """Each text (and pair) cut to the start that decides its first `max_length` tokens (`prefix`):
    encoding the cut texts truncated to `max_length` gives the tokens, offsets and truncation of the
    whole texts, but tokenizes only as much of a long text as the limit needs.

    A pair too long for the limit gives its longer text one token more when the room is odd, so
    a text is cut only where it stays longer, in tokens, than its partner.
    """
    cut, cut_pairs = [], []
    for i, (t, p) in enumerate(zip(texts, pairs or [None] * len(texts))):
        what = f"input {i + 1}"
        t_cut = prefix(tokenizer, t, max_length, what)
        p_cut = p if p is None else prefix(tokenizer, p, max_length, what)
        if p is None or (t_cut is t and p_cut is p):
            pass
        elif t_cut is t or p_cut is p:  # one is cut: it must keep more tokens than the other has
            whole = t if t_cut is t else p
            if (n := count_tokens(tokenizer, whole)) >= max_length:
                t_cut, p_cut = (t, prefix(tokenizer, p, n, what)) if whole is t else (prefix(tokenizer, t, n, what), p)
        elif max(len(t), len(p)) <= MAX_READ:  # both long: only the whole texts tell which is longer
            t_cut, p_cut = t, p
        else:
            raise NpsqueezeError(f"{what}: a pair of texts both longer than the model's limit, one of "
                                 f"over {MAX_READ:,} characters: npsqueeze does not tokenize such a pair")
        cut.append(t_cut)
        cut_pairs.append(p_cut)
    return cut, None if pairs is None else cut_pairs


def prefix(tokenizer: Tokenizer, text: str, tokens: int, what: str = "a text") -> str:
    """The start of `text` whose tokens begin with the whole text's first `tokens`; `text` if short.

    Prefixes 4x longer each time are tokenized until two consecutive ones agree on more than
    `tokens` tokens, ids and offsets: only the words a cut crosses tokenize differently, so the
    text past the shorter prefix cannot change those tokens. A text whose first MAX_READ characters
    do not settle them (a long run of spaces, one huge word) is refused rather than tokenized whole:
    tokenizers' memory grows with the text.
    """
    n = min(16 * tokens, MAX_READ)  # characters; prose has ~4 a token
    before, cut = [], 0
    while n < len(text):
        e = tokenizer.encodings(text[:n], add_special_tokens=False)[0]
        now = list(zip(e.ids, e.offsets))
        if next((i for i, (a, b) in enumerate(zip(before, now)) if a != b), len(before)) > tokens:
            return text[:cut]
        if n == MAX_READ:
            raise NpsqueezeError(f"{what}: the first {MAX_READ:,} of its {len(text):,} characters do not settle "
                                 f"its first {tokens} tokens (a long run of spaces, or a huge word?)")
        before, cut, n = now, n, min(4 * n, MAX_READ)
    return text


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """How many tokens `text` has, special tokens aside."""
    return len(tokenizer.encodings(text, add_special_tokens=False)[0].ids)
