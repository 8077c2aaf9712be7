"""BERT's WordPiece tokenizer, on the `tokenizers` library: text -> token ids for the model, and back.

SqueezeBERT uses BERT's tokenizer and vocabulary unchanged (paper, section 5.1). The pipeline is BERT's:
normalize (clean control characters, space out CJK characters, lower-case and strip accents), split
on whitespace and punctuation, split each word into the longest WordPiece units of the vocabulary
("##" marks a unit that continues a word), then add the special tokens: `[CLS] A [SEP]`, or
`[CLS] A [SEP] B [SEP]` for a sentence pair, whose token types are 0 for `[CLS] A [SEP]` and 1 after.
Calling a `Tokenizer` follows transformers' `BertTokenizerFast` and returns the same ids.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Encoding, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordPiece

from .config import WEIGHTS_DIR, NpsqueezeError, checkpoint_folder, read_json
from .prefixes import prefixes

SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
           "mask_token": "[MASK]"}  # BERT's, unless tokenizer_config.json names others
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
              "only_second": "only_second", False: None, "do_not_truncate": None}
PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None,
           "do_not_pad": None}
MAX_INPUT_CHARS_PER_WORD = 100  # a longer word becomes [UNK], as in BERT
MAX_COPIES = 16  # truncating backends a Tokenizer keeps (a few MB each), one per (max_length, stride, strategy)
# Sizes checked before reading. The largest tokenizer.json on the Hub are tens of MB (vocabularies of
# 250,000 tokens with merges); BERT's is 0.7 MB. The largest vocab.txt (LaBSE, 501,153 tokens) is 5 MB.
MAX_TOKENIZER_JSON_BYTES = 64 << 20
MAX_VOCAB_BYTES = 16 << 20
MAX_VOCAB_TOKENS = 1 << 20


class BatchEncoding(dict):
    """What calling a Tokenizer returns: a dict of `input_ids`, `token_type_ids`, ... whose keys are
    also attributes (`enc.input_ids`), as transformers' BatchEncoding."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Tokenizer:
    """Text -> `input_ids`, `attention_mask`, `token_type_ids` (int64 [batch, seq]), and ids -> text.

    `backend` is a `tokenizers.Tokenizer` (normalizer, pre-tokenizer, WordPiece model, post-processor),
    never changed after construction: it neither truncates nor pads. Truncation is asked per call,
    padding done here; threads may share one Tokenizer.
    """

    def __init__(self, backend: Backend, special_tokens: dict[str, str] = SPECIAL,
                 model_max_length: int | None = None):
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.copies: dict[tuple, Backend] = {}  # (max_length, stride, strategy) -> a backend that truncates so
        self.lock = threading.Lock()  # guards `copies`
        self.model_max_length = model_max_length
        for name, token in special_tokens.items():
            setattr(self, name, token)
            setattr(self, name + "_id", backend.token_to_id(token))  # None when not in the vocabulary
        self.all_special_tokens = list(dict.fromkeys(special_tokens.values()))  # as transformers lists them
        self.num_special_tokens = {False: backend.num_special_tokens_to_add(False),
                                   True: backend.num_special_tokens_to_add(True)}  # [CLS] A [SEP] (B [SEP])

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        """Load from a checkpoint folder: `tokenizer.json` if present, else `vocab.txt`, with the
        settings of `tokenizer_config.json` (lower-casing, accents, special tokens, length limit)."""
        path = checkpoint_folder(path)
        settings = read_tokenizer_config(path / "tokenizer_config.json")
        special = {name: token_content(settings.get(name, token), name) for name, token in SPECIAL.items()}
        limit = settings.get("model_max_length")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < 10**6 else None
        if (path / "tokenizer.json").is_file():
            text = read_text(path / "tokenizer.json", MAX_TOKENIZER_JSON_BYTES)
            with library_errors(f"{path / 'tokenizer.json'}: not a readable tokenizer file"):
                tokenizer = cls(Backend.from_str(text), special, limit)
        elif (path / "vocab.txt").is_file():
            options = {k: settings[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
                       if k in settings}
            vocab = read_vocab(path / "vocab.txt")
            with library_errors(f"{path / 'vocab.txt'}: not a usable vocabulary"):
                tokenizer = cls(bert_backend(vocab, special, **options), special, limit)
        else:
            raise NpsqueezeError(
                f"no tokenizer in {path}: expected tokenizer.json or vocab.txt (the bert-base-uncased "
                f"vocabulary, which SqueezeBERT uses, ships with npsqueeze as {WEIGHTS_DIR / 'vocab.txt'})")
        if tokenizer.unk_token_id is None:
            raise NpsqueezeError(f"{path}: the vocabulary has no unknown token {special['unk_token']!r}")
        return tokenizer

    # --- text -> ids ---------------------------------------------------------------------------

    def __call__(self, text: str | list[str], text_pair: str | list[str | None] | None = None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False,
                 **unsupported) -> BatchEncoding:
        """Tokenize a text, a list of texts, or (text, text_pair) sentence pairs; arguments as in
        transformers (`truncation=None` truncates when max_length is given and padding is not; with
        `is_split_into_words` a text is a list of words). Returns `input_ids`, `token_type_ids`,
        `attention_mask` (unless return_...=False), and `offset_mapping` and `special_tokens_mask` on
        request: with `return_tensors="np"` int64 arrays [batch, seq] (a single text is a batch of one;
        offsets [batch, seq, 2]); by default Python lists, as transformers returns them (a single
        text's flat, a batch's one list per text).
        """
        if unsupported:  # transformers' other options (stride, return_overflowing_tokens, ...): one clear line
            raise NpsqueezeError(f"the tokenizer takes no {', '.join(unsupported)}"
                                 + (" (windows with a stride: tok.encodings(..., stride=))" if "stride" in unsupported else ""))
        if return_tensors not in (None, "np"):
            raise NpsqueezeError(f"return_tensors must be 'np' (NumPy arrays) or None (lists), got {return_tensors!r}"
                                 + (": npsqueeze has no torch" if return_tensors == "pt" else ""))
        if not isinstance(padding, (bool, str)) or padding not in PADDING:
            raise NpsqueezeError(f"padding must be one of {list(PADDING)}, got {padding!r}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise NpsqueezeError(f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}")
        if truncation is None:  # as transformers: a max_length alone truncates
            truncation = max_length is not None and padding is False
        single = is_single(text, is_split_into_words)
        texts, pairs = as_batch(text, text_pair, is_split_into_words)
        n_special = self.num_special_tokens[pairs is not None] if add_special_tokens else 0
        if strategy := check_truncation(truncation):
            max_length = self.check_max_length(max_length, n_special)
            if not is_split_into_words:  # read long texts only as far as needed
                texts, pairs = prefixes(self, texts, pairs, max_length)
        encodings = self.encodings(texts, pairs, max_length, truncation, add_special_tokens=add_special_tokens,
                                   is_split_into_words=is_split_into_words)
        length = self.check_max_length(max_length, n_special) if PADDING[padding] == "max_length" else None
        if length and pad_to_multiple_of and strategy and length % pad_to_multiple_of:
            raise NpsqueezeError(f"truncation and padding to max_length {length}, which is not a multiple of "
                                 f"pad_to_multiple_of {pad_to_multiple_of}")
        if PADDING[padding] is None and return_tensors and len({len(e.ids) for e in encodings}) > 1:
            raise NpsqueezeError("the texts have different lengths in tokens: pass padding=True to "
                                 "pad them into one array")
        keys = [k for k, wanted in [("input_ids", True), ("token_type_ids", return_token_type_ids is not False),
                                    ("attention_mask", return_attention_mask is not False),
                                    ("special_tokens_mask", return_special_tokens_mask),
                                    ("offset_mapping", return_offsets_mapping)] if wanted]
        multiple = pad_to_multiple_of if PADDING[padding] else None
        if return_tensors == "np":
            return BatchEncoding(self.pad(encodings, keys, length, multiple))
        # lists: padded together, or each text on its own (a batch of one needs no padding)
        groups = [encodings] if PADDING[padding] else [[e] for e in encodings]
        arrays = [self.pad(g, keys, length, multiple) for g in groups]
        lists = {k: [row for a in arrays for row in a[k].tolist()] for k in keys}
        if "offset_mapping" in lists:  # (start, end) tuples, as transformers gives them
            lists["offset_mapping"] = [[tuple(o) for o in row] for row in lists["offset_mapping"]]
        return BatchEncoding({k: v[0] for k, v in lists.items()} if single else lists)

    def encode(self, text: str | list[str], text_pair: str | list[str] | None = None, **kwargs) -> list:
        """The `input_ids` of calling the tokenizer (same arguments): a text's ids, a list of lists for a
        list of texts, as transformers' `encode`."""
        return self(text, text_pair, **kwargs)["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """A text's tokens (WordPiece units, "##" marking a continuation), without special tokens unless asked."""
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise NpsqueezeError("tokenize takes a string (and a pair string or None)")
        return self.encodings(text, pair, add_special_tokens=add_special_tokens)[0].tokens

    def encodings(self, text: str | list[str], text_pair: str | list[str | None] | None = None,
                  max_length: int | None = None, truncation: bool | str = False, stride: int = 0,
                  add_special_tokens: bool = True, is_split_into_words: bool = False) -> list[Encoding]:
        """Tokenize without padding: one `tokenizers.Encoding` per text (ids, type ids, offsets, ...).

        An Encoding whose `overflowing` is non-empty was truncated: `overflowing` holds the rest, cut
        into further encodings, each repeating the last `stride` tokens of the one before. In a list
        of pairs, a `None` pair encodes that text alone.
        """
        texts, pairs = as_batch(text, text_pair, is_split_into_words)
        backend = self.backend
        if strategy := check_truncation(truncation):
            n_special = self.num_special_tokens[pairs is not None] if add_special_tokens else 0
            backend = self.truncating(self.check_max_length(max_length, n_special), stride, strategy)
        inputs = texts if pairs is None else [t if p is None else (t, p) for t, p in zip(texts, pairs)]
        options = dict(add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words)
        try:
            with library_errors("cannot tokenize"):  # e.g. a text too short to truncate with only_first
                return backend.encode_batch(inputs, **options)
        except NpsqueezeError:
            # tokenizers reports whichever input failed first among its threads: name the first one
            for i, one in enumerate(inputs if len(inputs) > 1 else []):
                with library_errors(f"input {i + 1}: cannot tokenize"):
                    backend.encode_batch([one], **options)
            raise

    def truncating(self, max_length: int, stride: int, strategy: str) -> Backend:
        """A copy of the backend that truncates so, made on first use and never changed after.

        tokenizers reads truncation from the backend object, and a call lets other threads run while
        it encodes: setting truncation on a shared backend per call would hand one thread's settings
        to another. So each setting gets a backend of its own.
        """
        key = max_length, stride, strategy
        with self.lock:
            if key not in self.copies:
                with library_errors(f"cannot truncate to {max_length} tokens with stride {stride}"):
                    copy = Backend.from_str(self.backend.to_str())
                    copy.enable_truncation(max_length, stride=stride, strategy=strategy)
                if len(self.copies) == MAX_COPIES:  # drop the oldest
                    del self.copies[next(iter(self.copies))]
                self.copies[key] = copy
            return self.copies[key]

    def pad(self, encodings: list[Encoding], keys: list[str], length: int | None = None,
            multiple: int | None = None) -> dict[str, np.ndarray]:
        """Stack encodings into int64 arrays [batch, seq] (offset_mapping [batch, seq, 2]), padded on the
        right with [PAD] (attention 0, token type 0) to `length`, or to the longest encoding, rounded up
        to a multiple of `multiple`."""
        W = max([len(e.ids) for e in encodings] + [length or 0])
        if multiple:
            W = -(-W // multiple) * multiple
        if self.pad_token_id is None and any(len(e.ids) < W for e in encodings):
            raise NpsqueezeError(f"cannot pad: the vocabulary has no {self.pad_token!r} token")
        fields = {"input_ids": ("ids", self.pad_token_id), "token_type_ids": ("type_ids", 0),
                  "attention_mask": ("attention_mask", 0),
                  "special_tokens_mask": ("special_tokens_mask", 1),  # padding counts as special
                  "offset_mapping": ("offsets", 0)}
        out = {}
        for key in keys:
            attr, pad_value = fields[key]
            shape = (len(encodings), W, 2) if key == "offset_mapping" else (len(encodings), W)
            a = np.full(shape, pad_value or 0, np.int64)  # no [PAD] token: nothing to pad (checked above)
            for i, e in enumerate(encodings):
                values = getattr(e, attr)
                if len(values):  # an empty encoding has no offsets to place
                    a[i, :len(values)] = values
            out[key] = a
        return out

    def check_max_length(self, max_length: int | None, n_special: int) -> int:
        """The length to truncate or pad to: `max_length`, else the checkpoint's `model_max_length`;
        at least the `n_special` special tokens added to each text."""
        if max_length is None:
            max_length = self.model_max_length
        if max_length is None:
            raise NpsqueezeError("truncation and padding to max_length need max_length: the tokenizer "
                                 "has no model_max_length")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < max(n_special, 1):
            raise NpsqueezeError(f"max_length must be an integer of at least {max(n_special, 1)}"
                                 + (" (the special tokens added to each input)" if n_special else "")
                                 + f", got {max_length!r}")
        return max_length

    # --- ids -> text ---------------------------------------------------------------------------

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Token ids -> text: WordPiece units are joined back into words ("##" removed). A batch of
        sequences (2-D) gives a list of texts, as in transformers 5."""
        if is_batch_of_ids(token_ids):
            return [self.backend.decode(self.check_ids(ids).tolist(), skip_special_tokens=skip_special_tokens)
                    for ids in token_ids]
        return self.backend.decode(self.check_ids(token_ids).tolist(), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        """`decode` of each sequence of ids (a list of lists, or an array [batch, seq]); a single
        sequence gives a list of one text, as in transformers."""
        if len(sequences) == 0:
            return []
        texts = self.decode(sequences, skip_special_tokens)
        return [texts] if isinstance(texts, str) else texts

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """An id -> its token; a sequence of ids -> a list of tokens."""
        tokens = [self.backend.id_to_token(i) for i in self.check_ids(ids).tolist()]
        if np.ndim(ids) == 0:
            return tokens[0]
        skip = set(self.all_special_tokens) if skip_special_tokens else set()
        return [t for t in tokens if t not in skip]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """A token -> its id ([UNK]'s if it is not in the vocabulary); a list of tokens -> a list of ids."""
        if isinstance(tokens, str):
            i = self.backend.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """WordPiece units -> text, as `decode` joins them."""
        return self.backend.decoder.decode(tokens) if self.backend.decoder else " ".join(tokens)

    def check_ids(self, ids) -> np.ndarray:
        """An id or a 1-D sequence of ids, as a 1-D int array, or a one-line error."""
        ids = np.asarray(ids)
        if ids.ndim > 1 or ids.size and ids.dtype.kind not in "iu":
            raise NpsqueezeError(f"expected token ids: an integer or a 1-D sequence of integers, got "
                                 f"shape {ids.shape} dtype {ids.dtype}")
        ids = ids.reshape(-1).astype(np.int64)
        V = len(self)
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise NpsqueezeError(f"token id {ids[(ids < 0) | (ids >= V)][0]} is outside the vocabulary [0, {V})")
        return ids

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def vocab_size(self) -> int:
        """The vocabulary's size without added tokens, as transformers counts it (`len` counts them)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)


# --- the tokenizers library's failures, as one line ---------------------------------------------

STDERR = threading.Lock()  # one redirection of file descriptor 2 at a time
HELD: dict[int, int] = {}  # process id -> the file descriptor stderr is held in (a forked child makes its own)


@contextmanager
def library_errors(what: str):
    """Run tokenizers calls; any failure becomes one NpsqueezeError line starting with `what`.

    Its Rust side raises Exception on bad input, or panics (a tokenizer.json whose parts do not fit
    together): PanicException, a BaseException that `except Exception` misses, after Rust printed
    the panic, and with RUST_BACKTRACE set a backtrace, on stderr. So stderr (the file descriptor,
    which Rust writes to) is held in a file while the library runs: passed on, or dropped on a panic.
    """
    with STDERR:
        if os.getpid() not in HELD:
            with tempfile.TemporaryFile() as f:  # already unlinked: gone when the process ends
                HELD[os.getpid()] = os.dup(f.fileno())
        held = HELD[os.getpid()]
        os.ftruncate(held, 0)
        os.lseek(held, 0, os.SEEK_SET)
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held, 2)
        panic = None
        try:
            yield
        except NpsqueezeError:
            raise
        except Exception as e:
            raise NpsqueezeError(f"{what} ({first_line(e)})") from None
        except BaseException as e:
            if type(e).__name__ != "PanicException":
                raise
            panic = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if panic is None:  # what the library printed otherwise goes on to stderr
                os.lseek(held, 0, os.SEEK_SET)
                while data := os.read(held, 1 << 16):
                    while data:
                        data = data[os.write(2, data):]
        if panic is not None:
            raise NpsqueezeError(f"{what} (the tokenizers library panicked: {first_line(panic)})") from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


# --- building a BERT tokenizer from vocab.txt -----------------------------------------------------

def bert_backend(vocab: dict[str, int], special: dict[str, str] = SPECIAL, do_lower_case: bool = True,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True) -> Backend:
    """BERT's tokenizer over `vocab`, built as transformers' `BertTokenizerFast` builds it.

    `strip_accents=None` strips accents exactly when lower-casing, as the original BERT does.
    """
    unk = special["unk_token"]
    if unk not in vocab:
        raise NpsqueezeError(f"the vocabulary has no unknown token {unk!r}")
    backend = Backend(WordPiece(vocab, unk_token=unk, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents,
        lowercase=do_lower_case)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    # Special tokens typed in the text ("[MASK]") stay whole: matched before normalization.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in special.values() if t in vocab])
    cls, sep = special["cls_token"], special["sep_token"]
    for t in (cls, sep):
        if t not in vocab:
            raise NpsqueezeError(f"the vocabulary has no {t!r} token")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return backend


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token a line, its id the line number (as transformers reads it)."""
    text = read_text(path, MAX_VOCAB_BYTES)
    if text.count("\n") + text.count("\r") > MAX_VOCAB_TOKENS:
        raise NpsqueezeError(f"{path}: over {MAX_VOCAB_TOKENS:,} lines, too many tokens for a vocabulary")
    # universal newlines, as transformers' load_vocab reads the file
    vocab = {line.rstrip("\n"): i for i, line in enumerate(io.StringIO(text, newline=None))}
    if not vocab:
        raise NpsqueezeError(f"{path} is empty")
    return vocab


def read_text(path: Path, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes (checked before reading), or a one-line error."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > limit:
                raise NpsqueezeError(f"{path}: over {limit >> 20} MB, too large for a {path.name}")
            data = f.read(limit + 1)  # the size may have changed since
    except OSError as e:
        raise NpsqueezeError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise NpsqueezeError(f"{path}: over {limit >> 20} MB, too large for a {path.name}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NpsqueezeError(f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_tokenizer_config(path: Path) -> dict:
    d = read_json(path) or {}
    for key in ("do_lower_case", "tokenize_chinese_chars"):
        if key in d and not isinstance(d[key], bool):
            raise NpsqueezeError(f"{path}: {key} must be true or false, got {d[key]!r}")
    if d.get("strip_accents") is not None and not isinstance(d["strip_accents"], bool):
        raise NpsqueezeError(f"{path}: strip_accents must be true, false or null, got {d['strip_accents']!r}")
    return d


def token_content(token, name: str) -> str:
    """A special token as tokenizer_config.json stores it: a string, or an AddedToken's dict."""
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str) or not token:
        raise NpsqueezeError(f"tokenizer_config.json: {name} must be a non-empty string, got {token!r}")
    return token


def is_single(text, is_split_into_words: bool = False) -> bool:
    """Whether `text` is one text (a string; with is_split_into_words a list of words), not a batch."""
    if is_split_into_words:
        return isinstance(text, (list, tuple)) and not (text and isinstance(text[0], (list, tuple)))
    return isinstance(text, str)


def as_batch(text, text_pair, is_split_into_words: bool = False) -> tuple[list, list | None]:
    """(text, text_pair) as transformers accepts them -> a list of texts and a list of pairs or None.

    An empty pair of a single text is no pair, as in transformers (`if text_pair`); in a batch it
    stays an empty second text. Texts are checked for lone surrogates, which tokenizers refuses.
    """
    single = is_single(text, is_split_into_words)
    texts = [text] if single else text
    if not isinstance(texts, (list, tuple)) or not texts or not all(is_text(t, is_split_into_words) for t in texts):
        raise NpsqueezeError("text must be a list of words or a non-empty list of such lists (is_split_into_words)"
                             if is_split_into_words else "text must be a string or a non-empty list of strings")
    if single and not text_pair:
        text_pair = None
    pairs = None if text_pair is None else [text_pair] if single else text_pair
    if pairs is not None and (not isinstance(pairs, (list, tuple)) or len(pairs) != len(texts) or not all(
            p is None or is_text(p, is_split_into_words) for p in pairs)):
        raise NpsqueezeError("text_pair must match text: a string for a string, a list of the same "
                             "length for a list")
    for i, t in enumerate(texts):  # ASCII holds no surrogate: most texts need no search
        if not is_ascii(t):
            check_text(t, "the text" if single else f"input {i + 1}")
        if pairs is not None and pairs[i] is not None and not is_ascii(pairs[i]):
            check_text(pairs[i], "the text pair" if single else f"input {i + 1}'s pair")
    return list(texts), None if pairs is None else list(pairs)


def is_text(t, is_split_into_words: bool) -> bool:
    """Whether `t` is one text: a string, or with is_split_into_words a list of words."""
    if is_split_into_words:
        return isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t)
    return isinstance(t, str)


def is_ascii(t: str | list[str]) -> bool:
    return t.isascii() if isinstance(t, str) else all(w.isascii() for w in t)


SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str | list[str], what: str) -> None:
    """A one-line error naming `what` and the place of a lone surrogate, which is not Unicode text:
    U+DC80-U+DCFF are the bytes that were not UTF-8 in a file or argument read with surrogateescape."""
    words = [text] if isinstance(text, str) else text
    for j, word in enumerate(words):
        if m := SURROGATE.search(word):
            c = ord(m.group())
            cause = (f"byte 0x{c - 0xDC00:02x}, which is not UTF-8," if 0xDC80 <= c <= 0xDCFF
                     else f"a lone surrogate U+{c:04X}, which is not Unicode text,")
            word_j = "" if isinstance(text, str) else f" of word {j}"
            raise NpsqueezeError(f"{what} has {cause} at character {m.start()}{word_j} (counting from 0)")


def check_truncation(truncation) -> str | None:
    """The tokenizers strategy `truncation` names, None for no truncation, or a one-line error."""
    if not isinstance(truncation, (bool, str)) or truncation not in TRUNCATION:
        raise NpsqueezeError(f"truncation must be one of {list(TRUNCATION)}, got {truncation!r}")
    return TRUNCATION[truncation]


def is_batch_of_ids(ids) -> bool:
    """Whether `ids` is 2-D: an array [batch, seq], or a list of sequences."""
    if isinstance(ids, np.ndarray):
        return ids.ndim == 2
    return isinstance(ids, (list, tuple)) and len(ids) > 0 and isinstance(ids[0], (list, tuple, np.ndarray))
