"""The start of a long text that decides its first tokens: truncating a 5 MB text to 512 tokens
should not tokenize all of it (the tokenizers library's memory grows with the text).

Only the words a cut crosses tokenize differently from the whole text, so a prefix somewhat longer
than the tokens it must give is enough; these functions find such a prefix by tokenizing prefixes of
growing length with the tokenizer's `encodings`, which never truncates unless asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import NpsqueezeError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

MAX_READ = 1 << 20  # characters of a text tokenized at once, to find or count its first tokens
# Leading whitespace the scan skips; the tokenizers library still reads it once (see README for its memory).
MAX_LEAD = 8 << 20
SPACES = " \t\n\r"  # whitespace that BERT's normalizer and pre-tokenizer split at and drop


def prefixes(tokenizer: Tokenizer, texts: list[str], pairs: list[str | None] | None, max_length: int
             ) -> tuple[list[str], list[str | None] | None]:
    """Each text (and pair) cut to the start that decides its first `max_length` tokens (`prefix`):
    encoding the cut texts truncated to `max_length` gives the tokens, offsets and truncation of the
    whole texts, but tokenizes only as much of a long text as the limit needs.

    A pair too long for the limit gives its longer text (in tokens; the second on a tie) one token
    more when the room is odd: so of a pair, the text that is longer whole is cut where it stays
    longer than its partner's cut.
    """
    cut, cut_pairs = [], []
    for i, (t, p) in enumerate(zip(texts, pairs or [None] * len(texts))):
        what = f"input {i + 1}"
        t_cut = prefix(tokenizer, t, max_length, what)
        p_cut = p if p is None else prefix(tokenizer, p, max_length, what)
        if p is None or (t_cut is t and p_cut is p):
            pass
        elif t_cut is t:  # the pair is cut: it must keep more tokens than the whole text has
            p_cut = prefix(tokenizer, p, max(max_length, count_tokens(tokenizer, t, what)), what)
        elif p_cut is p:
            t_cut = prefix(tokenizer, t, max(max_length, count_tokens(tokenizer, p, what)), what)
        elif (n_t := count_tokens(tokenizer, t, what)) > (n_p := count_tokens(tokenizer, p, what)):  # both cut
            t_cut, p_cut = keep_longer(tokenizer, t, n_t, p, p_cut, what)
        else:
            p_cut, t_cut = keep_longer(tokenizer, p, n_p, t, t_cut, what)
        cut.append(t_cut)
        cut_pairs.append(p_cut)
    return cut, None if pairs is None else cut_pairs


def keep_longer(tokenizer: Tokenizer, longer: str, n_longer: int, shorter: str, shorter_cut: str, what: str
                ) -> tuple[str, str]:
    """Cuts of a pair's two texts, `longer` having more tokens whole (`n_longer`): the longer's cut has
    more tokens than the shorter's cut."""
    longer_cut = prefix(tokenizer, longer, count_tokens(tokenizer, shorter_cut, what), what)
    if longer_cut is longer:  # the shorter's cut ends in part of a word with more tokens than the whole word
        return longer, prefix(tokenizer, shorter, n_longer, what)  # whole, as it has no more tokens
    return longer_cut, shorter_cut


def prefix(tokenizer: Tokenizer, text: str, tokens: int, what: str = "a text") -> str:
    """The start of `text` whose tokens begin with the whole text's first `tokens`; `text` if short.

    Prefixes 4x longer each time are tokenized until two consecutive ones agree on more than
    `tokens` tokens, ids and offsets: only the words a cut crosses tokenize differently, so the
    text past the shorter prefix cannot change those tokens. Leading whitespace, which BERT's
    tokenizer drops, is skipped. A text whose next MAX_READ characters do not settle them (a long
    run of spaces inside, one huge word) is refused rather than tokenized whole.
    """
    n = min(16 * tokens, MAX_READ)  # characters; prose has ~4 a token
    if len(text) <= n:
        return text
    lead = len(text) - len(text.lstrip(SPACES)) if splits_at_spaces(tokenizer) else 0
    if lead > MAX_LEAD:
        raise NpsqueezeError(f"{what} starts with {lead:,} characters of whitespace: npsqueeze skips at most "
                             f"{MAX_LEAD:,}; strip the text first")
    rest = text[lead:]
    before, cut = [], 0
    while n < len(rest):
        e = tokenizer.encodings(rest[:n], add_special_tokens=False)[0]
        now = list(zip(e.ids, e.offsets))
        if next((i for i, (a, b) in enumerate(zip(before, now)) if a != b), len(before)) > tokens:
            return text[:lead + cut]
        if n == MAX_READ:
            raise NpsqueezeError(f"{what}: the first {MAX_READ:,} of its {len(rest):,} characters do not settle "
                                 f"its first {tokens} tokens (a long run of spaces, or a huge word?): split or "
                                 f"shorten it")
        before, cut, n = now, n, min(4 * n, MAX_READ)
    return text


def count_tokens(tokenizer: Tokenizer, text: str, what: str = "a text") -> int:
    """How many tokens `text` has, special tokens aside. A text over MAX_READ characters is counted
    in pieces cut at whitespace, where BERT's tokenizer splits anyway: the same count, in bounded memory."""
    if splits_at_spaces(tokenizer):  # leading whitespace gives no token
        text = text.lstrip(SPACES)
    n, start = 0, 0
    while len(text) - start > MAX_READ:
        end = max(text.rfind(c, start + 1, start + MAX_READ) for c in SPACES)
        if end < 0 or not splits_at_spaces(tokenizer):
            raise NpsqueezeError(f"{what}: npsqueeze counts the tokens of a text of {len(text):,} characters only "
                                 f"in pieces cut at whitespace, at most {MAX_READ:,} characters apart: shorten "
                                 f"it, or truncate with only_first / only_second")
        n += len(tokenizer.encodings(text[start:end], add_special_tokens=False)[0].ids)
        start = end
    return n + len(tokenizer.encodings(text[start:], add_special_tokens=False)[0].ids)


def splits_at_spaces(tokenizer: Tokenizer) -> bool:
    """Whether no token crosses whitespace and whitespace gives no token, as in BERT's tokenizer:
    its normalizer and pre-tokenizer, and no added token holding a space."""
    backend = tokenizer.backend
    return (type(backend.normalizer).__name__ in ("BertNormalizer", "NoneType")
            and type(backend.pre_tokenizer).__name__ == "BertPreTokenizer"
            and not any(set(t.content) & set(SPACES) for t in backend.get_added_tokens_decoder().values()))
