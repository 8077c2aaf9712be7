"""transformers' everyday tokenizer calls on npsqueeze.Tokenizer: encode, decode, batch_decode, tokenize,
convert_tokens_to_ids, convert_ids_to_tokens, vocab_size, all_special_*, and __call__'s options, with
the same values and return types as transformers' BertTokenizerFast: live where transformers is
installed, else against the results make_golden.py recorded (tests/golden/tokens.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from checkpoints import minilm_path
from optional import transformers
from npsqueeze import NpsqueezeError, Tokenizer
from npsqueeze.config import WEIGHTS_DIR
from npsqueeze.tokenizer import BatchEncoding

API = json.loads((Path(__file__).parent / "golden" / "tokens.json").read_text())["api"]


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def folder(request, tmp_path_factory):
    """vocab.txt alone, and the real checkpoint (tokenizer.json, tokenizer_config.json)."""
    if request.param == "tokenizer.json":
        return minilm_path()
    d = tmp_path_factory.mktemp("vocab")
    shutil.copy(WEIGHTS_DIR / "vocab.txt", d / "vocab.txt")
    return d


@pytest.fixture(scope="module")
def ours(folder):
    return Tokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def fast(folder):
    transformers.logging.set_verbosity_error()  # batch_decode of one sequence warns
    return transformers.BertTokenizerFast.from_pretrained(folder)


def call(tok, method: str, args, kwargs):
    """`tok.method(*args, **kwargs)`, or the property `method` when args is None."""
    return getattr(tok, method) if args is None else getattr(tok, method)(*args, **kwargs)


def assert_same_value(got, want, where):
    """Equal, and of the same types all the way down (a str is not a list of one str, a tuple not a list)."""
    assert type(got) is type(want) or isinstance(want, dict) and isinstance(got, dict), (where, got, want)
    assert got == want, (where, got, want)
    if isinstance(want, (list, tuple)):
        for g, w in zip(got, want):
            assert_same_value(g, w, where)
    if isinstance(want, dict):
        for k in want:
            assert_same_value(got[k], want[k], (where, k))


@pytest.mark.parametrize("c", API, ids=lambda c: c["method"])
def test_api_matches_transformers_live(ours, fast, c):
    want = call(fast, c["method"], c["args"], c["kwargs"])
    got = call(ours, c["method"], c["args"], c["kwargs"])
    if c["method"] == "__call__":
        assert isinstance(got, BatchEncoding) and isinstance(got, dict)
        want = dict(want)
    assert_same_value(got, want, c)


@pytest.mark.parametrize("c", API, ids=lambda c: c["method"])
def test_api_matches_golden(ours, c):
    """The torch-free tier: what transformers returned, as JSON keeps it (tuples become lists)."""
    got = call(ours, c["method"], c["args"], c["kwargs"])
    assert json.loads(json.dumps(got)) == c["expected"], c


def test_batch_encoding_attributes(ours, fast):
    enc, ref = ours(["Hello world", "hi"], padding=True), fast(["Hello world", "hi"], padding=True)
    assert enc.input_ids == ref.input_ids and enc.attention_mask == ref.attention_mask
    assert enc["token_type_ids"] is enc.token_type_ids
    assert list(enc.keys()) == list(ref.keys())
    with pytest.raises(AttributeError):
        enc.offset_mapping
    arrays = ours(["Hello world", "hi"], padding=True, return_tensors="np")
    assert isinstance(arrays, BatchEncoding) and arrays.input_ids.shape == (2, 4)
    np.testing.assert_array_equal(arrays.input_ids, fast(["Hello world", "hi"], padding=True,
                                                         return_tensors="np").input_ids)


def test_encode_options_match_transformers(ours, fast):
    texts = ["The quick brown fox jumps over the lazy dog", "naïve café 北京 👍", ""]
    for text in texts:
        for pair in (None, "", "and a second text", "北京"):
            for kwargs in ({}, {"add_special_tokens": False}, {"max_length": 6}, {"max_length": 7, "truncation": True},
                           {"max_length": 8, "truncation": "only_first", "add_special_tokens": False}):
                try:
                    want = fast.encode(text, pair, **kwargs)
                except Exception:  # only_first with a first text too short: both refuse
                    with pytest.raises(NpsqueezeError):
                        ours.encode(text, pair, **kwargs)
                    continue
                assert ours.encode(text, pair, **kwargs) == want, (text, pair, kwargs)
    np.testing.assert_array_equal(ours.encode("hi", return_tensors="np"), fast.encode("hi", return_tensors="np"))


def test_call_options_match_transformers(ours, fast):
    texts, pairs = ["Hello world, how are you?", "a", "naïve café 北京 👍 " * 3], ["x", "", "second text here"]
    for kwargs in ({"padding": True, "pad_to_multiple_of": 4}, {"padding": "longest", "pad_to_multiple_of": 16},
                   {"padding": "max_length", "max_length": 24, "pad_to_multiple_of": 8},
                   {"padding": True, "truncation": True, "max_length": 8, "pad_to_multiple_of": 4},
                   {"add_special_tokens": False, "padding": True},
                   {"return_token_type_ids": False, "return_attention_mask": True, "padding": True},
                   {"return_attention_mask": False, "return_special_tokens_mask": True, "return_offsets_mapping": True},
                   {"max_length": 5}, {"max_length": 5, "padding": True}):
        for args in ((texts,), (texts, pairs), (texts[0],), (texts[0], pairs[0])):
            assert ours(*args, **kwargs) == dict(fast(*args, **kwargs)), (args, kwargs)
            want = fast(*args, **kwargs, return_tensors="np")
            if want["input_ids"].dtype == object:  # texts of different lengths, unpadded: arrays of arrays
                with pytest.raises(NpsqueezeError, match="pass padding=True"):
                    ours(*args, **kwargs, return_tensors="np")
                continue
            got = ours(*args, **kwargs, return_tensors="np")
            assert list(got) == list(want), (args, kwargs)
            for k in want:
                assert got[k].dtype == np.int64 and got[k].shape == want[k].shape, (k, args, kwargs)
                np.testing.assert_array_equal(got[k], want[k])


def test_is_split_into_words_matches_transformers(ours, fast):
    words = [["Hello", "world", "naïve"], ["北京", "欢迎", "你", "!"], [], ["un", "believ", "able"]]
    pairs = [["a", "b"], ["c"], ["d"], []]
    detail = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for args in ((words[0],), (words[0], pairs[0]), (words,), (words, pairs)):
        for kwargs in ({}, {"padding": True}, {"max_length": 5, "truncation": True, "padding": "max_length"}, detail):
            assert ours(*args, is_split_into_words=True, **kwargs) == dict(
                fast(*args, is_split_into_words=True, **kwargs)), (args, kwargs)


def test_pad_to_multiple_of_not_dividing_max_length(ours, fast):
    args = dict(max_length=10, truncation=True, padding="max_length", pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="not a multiple of pad_to_multiple_of"):
        fast(["a b c"], **args)
    with pytest.raises(NpsqueezeError, match="max_length 10, which is not a multiple of pad_to_multiple_of 8"):
        ours(["a b c"], **args)
    for bad in (0, -8, 2.5, "8"):
        with pytest.raises(NpsqueezeError, match="pad_to_multiple_of must be a positive integer"):
            ours("a", padding=True, pad_to_multiple_of=bad)


def test_decode_and_convert_return_types(ours, fast):
    ids = fast("Hello world, naïve café!")["input_ids"]
    for value in (ids, np.array(ids), tuple(ids)):
        assert ours.decode(value) == fast.decode(list(value))
    batch = [ids, ids[:3]]
    assert ours.decode(batch) == fast.decode(batch) and isinstance(ours.decode(batch), list)
    assert ours.decode(np.array([ids, ids])) == fast.decode(np.array([ids, ids]))
    assert ours.batch_decode(ids) == fast.batch_decode(ids) == [fast.decode(ids)]  # one sequence: a list of one
    assert ours.batch_decode(np.array([ids]), skip_special_tokens=True) == fast.batch_decode(
        np.array([ids]), skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(np.int64(7592)) == "hello"  # transformers: TypeError on a NumPy integer
    assert ours.convert_ids_to_tokens(np.array(ids)) == fast.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(("hello", "world")) == fast.convert_tokens_to_ids(("hello", "world"))
    assert ours.convert_tokens_to_ids([]) == fast.convert_tokens_to_ids([]) == []
    assert ours.vocab_size == fast.vocab_size == len(ours) == len(fast) == 30522
    # out-of-range ids: transformers gives None or an OverflowError; npsqueeze a one-line error
    for bad in (30522, -1):
        with pytest.raises(NpsqueezeError, match=f"token id {bad} is outside the vocabulary"):
            ours.convert_ids_to_tokens(bad)


def test_tokenize_matches_transformers(ours, fast):
    for text in ["Hello world, unaffable!", "naïve café 北京 👍 [MASK]", "", "   ", "x" * 120]:
        for pair in (None, "second text"):
            for special in (False, True):
                assert ours.tokenize(text, pair, add_special_tokens=special) == fast.tokenize(
                    text, pair, add_special_tokens=special)


def test_options_npsqueeze_does_not_take_are_one_clear_error():
    tok = Tokenizer.from_pretrained(WEIGHTS_DIR)
    with pytest.raises(NpsqueezeError, match=r"^the tokenizer takes no stride, return_overflowing_tokens \(windows"):
        tok("one two three", stride=1, return_overflowing_tokens=True)
    with pytest.raises(NpsqueezeError, match="^the tokenizer takes no verbose$"):
        tok.encode("one two three", verbose=False)
