"""npsqueeze.Tokenizer against transformers' BertTokenizerFast and the slow (pure Python) BertTokenizer,
computed live on the same vocabulary: exact ids, token types, masks, offsets, decoded text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from optional import given, settings, st, transformers
from checkpoints import minilm_path
from npsqueeze import NpsqueezeError, Tokenizer
from npsqueeze.config import WEIGHTS_DIR
from npsqueeze.prefixes import prefixes

VOCAB = WEIGHTS_DIR / "vocab.txt"

HARD = [
    "Café naïve résumé Ångström Crème brûlée São Paulo",  # accents
    "e\u0301 (combining acute) İstanbul straße ß ﬁne ＡＢＣ ｶﾀｶﾅ",  # decomposition, ligatures, full width
    "北京欢迎你 東京タワー 한국어 日本語のテキスト、句読点。",  # CJK: one token per ideograph
    "👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷 snowman ☃ 😀😀😀",  # emoji, ZWJ sequences
    "a\x00b\x07c\x1bd\x7fe\x9ff",  # control characters (dropped by clean_text)
    "zero\u200bwidth\u200cjoin\u200dx\u2060y\ufeffz soft\u00adhyphen",  # zero-width, BOM, soft hyphen
    "tab\there\nnew line\r\nCR\x0bVT\x0cFF\x1cFS\u2028LS\u2029PS\x85NEL\u3000ideographic",  # whitespace
    "",
    " ",
    "\t\n",
    "x" * 100 + " " + "y" * 101,  # WordPiece's 100-character word limit: the second is [UNK]
    "don't U.S.A. $3.50 e.g. 1,000.5 -- ... (a) [b] {c} <d> @e #f ~g ^h |i \\j",  # punctuation
    "[MASK] [mask] [CLS]x[SEP] [PAD][UNK] [MASK][MASK]",  # special tokens typed in the text
    "Ελληνικά Русский текст العربية עברית ไทย हिन्दी ქართული",  # other scripts
    "∑∫√ ≤≥ ½ ① Ⅻ ™ © ® ° µ Å K",  # symbols, compatibility characters
    "\ud7ff\ue000\U0010ffff\U0001f600\U000e0041",  # edge code points (private use, tags)
    "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious",  # many pieces
]
LONG = " ".join(["The quick brown fox jumps over the lazy dog; naïve café 北京 👍."] * 400)  # ~7000 tokens
# ~540 tokens. Truncating long texts to a few tokens is slow in the tokenizers library (and so in
# transformers): it builds every overflowing window, for a pair every combination of windows.
MEDIUM = LONG[:2100]


def pairs_for(max_length: int) -> tuple[list[str], list[str]]:
    """Sentence pairs of every length relation (one longer, both long, empty), sized to max_length."""
    m = MEDIUM if max_length >= 64 else MEDIUM[:300]
    return [HARD[0], HARD[2], m[:500], "", HARD[3], m, m[:101]], [HARD[12], m[:300], HARD[1], HARD[2], "", m, m[:100]]
KEYS = ("input_ids", "token_type_ids", "attention_mask")
ADDED_MASK = {"__type": "AddedToken", "content": "[MASK]", "lstrip": False, "normalized": False, "rstrip": False,
              "single_word": False, "special": True}  # a special token as transformers 4 saved tokenizer_config.json


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """A checkpoint folder holding only vocab.txt (no tokenizer.json, no tokenizer_config.json)."""
    d = tmp_path_factory.mktemp("vocab")
    shutil.copy(VOCAB, d / "vocab.txt")
    return d


def config_dir(tmp_path, **settings):
    """vocab.txt + a tokenizer_config.json with `settings`."""
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    return tmp_path


@pytest.fixture(scope="module")
def tok(vocab_dir):
    return Tokenizer.from_pretrained(vocab_dir)


@pytest.fixture(scope="module")
def fast(vocab_dir):
    tok = transformers.BertTokenizerFast.from_pretrained(vocab_dir, do_lower_case=True)
    assert tok.is_fast
    return tok


@pytest.fixture(scope="module")
def slow(vocab_dir):
    return transformers.BertTokenizerLegacy(vocab_file=str(vocab_dir / "vocab.txt"), do_lower_case=True)


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def ours(request, vocab_dir):
    """Ours built from vocab.txt, and ours loaded from the real checkpoint's tokenizer.json."""
    tok = Tokenizer.from_pretrained(vocab_dir if request.param == "vocab.txt" else minilm_path())
    assert (tok.model_max_length is None) == (request.param == "vocab.txt")
    return tok


def reference(tok, *args, **kwargs) -> dict[str, np.ndarray]:
    enc = tok(*args, return_tensors="np", return_token_type_ids=True, return_attention_mask=True, **kwargs)
    return {k: np.asarray(v) for k, v in enc.items()}


def assert_same(ours_enc, ref, keys=KEYS):
    for k in keys:
        assert ours_enc[k].dtype == np.int64, k
        assert ours_enc[k].shape == ref[k].shape, (k, ours_enc[k].shape, ref[k].shape)
        np.testing.assert_array_equal(ours_enc[k], ref[k], err_msg=k)


def test_vocabulary_is_bert_base_uncased(tok):
    assert len(tok) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 100, 101, 102, 103)


@pytest.mark.parametrize("which", ["fast", "slow"])
def test_hard_text_one_by_one(ours, which, request):
    ref_tok = request.getfixturevalue(which)
    for text in HARD + [LONG]:
        assert_same(ours(text, return_tensors="np"), reference(ref_tok, text))


@pytest.mark.parametrize("which", ["fast", "slow"])
def test_hard_text_batch_padded(ours, which, request):
    ref_tok = request.getfixturevalue(which)
    enc = ours(HARD, padding=True, return_tensors="np")
    assert enc["input_ids"].shape == (len(HARD), max(len(ref_tok(t)["input_ids"]) for t in HARD))
    assert_same(enc, reference(ref_tok, HARD, padding=True))


# transformers' fast and slow tokenizers split an odd number of free places between two long texts
# differently (the fast one gives the extra token to the second text): the slow one is checked where
# they agree, on even numbers of places (max_length minus the 3 special tokens).
@pytest.mark.parametrize("which, lengths", [("fast", (3, 4, 5, 8, 16, 33, 128, 512)),
                                            ("slow", (3, 5, 9, 17, 33, 129, 513))])
def test_pairs_truncated_longest_first(ours, which, lengths, request):
    ref_tok = request.getfixturevalue(which)
    for max_length in lengths:
        firsts, seconds = pairs_for(max_length)
        for truncation in (True, "longest_first"):
            enc = ours(firsts, seconds, max_length=max_length, truncation=truncation, padding=True, return_tensors="np")
            assert enc["input_ids"].shape[1] <= max_length
            assert_same(enc, reference(ref_tok, firsts, seconds, max_length=max_length, truncation=truncation,
                                       padding=True))


def test_pairs_truncated_only_first_or_second(ours, fast):
    longs, shorts = [MEDIUM, MEDIUM[:300], HARD[2]], [HARD[11][:20], "", "x"]
    for max_length in (24, 64, 200):
        for truncation, firsts, seconds in (("only_first", longs, shorts), ("only_second", shorts, longs)):
            args = dict(max_length=max_length, truncation=truncation, padding=True)
            assert_same(ours(firsts, seconds, **args, return_tensors="np"), reference(fast, firsts, seconds, **args))
    # transformers refuses when the sequence to cut is too short to make room: so do we, in one line
    with pytest.raises(Exception, match="too short"):
        fast("a b c d e f g h", "x", max_length=6, truncation="only_second")
    with pytest.raises(NpsqueezeError, match="cannot tokenize.*too short"):
        ours("a b c d e f g h", "x", max_length=6, truncation="only_second")


def test_single_texts_truncated_at_several_lengths(ours, fast, slow):
    texts = HARD + [MEDIUM]
    for max_length in (2, 3, 7, 64, 128, 512):
        enc = ours(texts, max_length=max_length, truncation=True, padding=True, return_tensors="np")
        assert enc["input_ids"].shape[1] == min(max_length, max(len(fast(t)["input_ids"]) for t in texts))
        for ref_tok in (fast, slow):
            assert_same(enc, reference(ref_tok, texts, max_length=max_length, truncation=True, padding=True))


def test_padding_to_max_length(ours, fast):
    texts, pairs = ["short", HARD[0], MEDIUM[:200]], ["a", None, "b"]
    args = dict(max_length=40, truncation=True, padding="max_length")
    enc = ours(texts, **args, return_tensors="np")
    assert enc["input_ids"].shape == (3, 40)
    assert_same(enc, reference(fast, texts, **args))
    # a None pair encodes its text alone (transformers has no such batch; compare row by row)
    enc = ours(texts, pairs, **args, return_tensors="np")
    for i, (t, p) in enumerate(zip(texts, pairs)):
        ref = reference(fast, t, p, **args)
        for k in KEYS:
            np.testing.assert_array_equal(enc[k][i], ref[k][0])


def test_truncation_true_uses_model_max_length(fast):
    tok = Tokenizer.from_pretrained(minilm_path())
    assert tok.model_max_length == 512
    hf = transformers.BertTokenizerFast.from_pretrained(minilm_path())
    enc = tok([LONG, "short"], truncation=True, padding=True, return_tensors="np")
    assert enc["input_ids"].shape == (2, 512)
    assert_same(enc, reference(hf, [LONG, "short"], truncation=True, padding=True))


def test_offsets_and_special_tokens_mask(ours, fast):
    texts, pairs = HARD[:6] + ["[MASK] x"], HARD[6:13]
    args = dict(padding=True, max_length=48, truncation=True, return_offsets_mapping=True,
                return_special_tokens_mask=True)
    assert_same(ours(texts, pairs, **args, return_tensors="np"), reference(fast, texts, pairs, **args),
                KEYS + ("offset_mapping", "special_tokens_mask"))


@pytest.mark.parametrize("settings", [
    dict(do_lower_case=False),
    dict(do_lower_case=False, strip_accents=True),
    dict(do_lower_case=True, strip_accents=False),
    dict(do_lower_case=True, tokenize_chinese_chars=False),
    dict(model_max_length=16, mask_token=ADDED_MASK),
])
def test_tokenizer_config_settings(tmp_path, settings):
    """Lower-casing, accent stripping and CJK splitting as tokenizer_config.json sets them."""
    folder = config_dir(tmp_path, **settings)
    tok = Tokenizer.from_pretrained(folder)
    fast = transformers.BertTokenizerFast.from_pretrained(folder)
    slow = transformers.BertTokenizerLegacy(vocab_file=str(folder / "vocab.txt"),
                                            **{k: v for k, v in settings.items() if k != "mask_token"})
    texts = HARD + ["ÀÉÎÕÜ Ångström", "中文字符和日本語"]
    for ref_tok in (fast, slow):
        assert_same(tok(texts, padding=True, return_tensors="np"), reference(ref_tok, texts, padding=True))
    if "model_max_length" in settings:
        enc = tok(texts, padding=True, truncation=True, return_tensors="np")
        assert_same(enc, reference(fast, texts, padding=True, truncation=True))
        assert enc["input_ids"].shape[1] == 16


def test_special_settings_change_ids(tmp_path, tok):
    """The settings above are not no-ops: cased and uncased tokenization differ on the same text."""
    cased = Tokenizer.from_pretrained(config_dir(tmp_path, do_lower_case=False))
    assert cased("Hello Café")["input_ids"] != tok("Hello Café")["input_ids"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60), pair=st.one_of(st.none(), st.text(max_size=40)))
def test_random_unicode_matches_fast(tok, fast, text, pair):
    args = dict(max_length=20, truncation=True)
    assert_same(tok(text, pair, **args, return_tensors="np"), reference(fast, text, pair, **args))
    assert_same(tok(text, pair, return_tensors="np"), reference(fast, text, pair))
    batch = [text], None if pair is None else [pair]
    assert_same(tok(*batch, **args, return_tensors="np"), reference(fast, *batch, **args))


def test_empty_pair_as_transformers(tok, fast):
    """transformers drops the empty pair of a single text (`if text_pair`): ("abc", "") is [CLS] abc
    [SEP]; in a batch, "" stays an empty second text: [CLS] abc [SEP] [SEP]."""
    assert tok("abc", "")["input_ids"] == fast("abc", "")["input_ids"] == [101, 5925, 102]
    assert tok.encode("abc", "") == fast.encode("abc", "") == [101, 5925, 102]
    assert tok("", "") == dict(fast("", "")) and tok("", "x") == dict(fast("", "x"))
    assert tok(["abc", "d"], ["", "e"]) == dict(fast(["abc", "d"], ["", "e"]))
    assert tok(["abc"], [""])["input_ids"] == [[101, 5925, 102, 102]]


def test_decode_matches_fast(ours, fast):
    for text in HARD:
        ids = fast(text)["input_ids"]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == fast.decode(ids, skip_special_tokens=skip)
            assert ours.decode(np.array(ids, np.int64), skip_special_tokens=skip) == fast.decode(
                ids, skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(ids) == fast.convert_ids_to_tokens(ids)
    assert ours.decode(2003) == fast.decode(2003) == "is"
    assert ours.decode([]) == ""
    assert ours.convert_tokens_to_string(["un", "##bel", "##ievable", "!"]) == fast.convert_tokens_to_string(
        ["un", "##bel", "##ievable", "!"])



@pytest.mark.parametrize("args, kwargs", [
    (("Hello world, naïve café 北京!",), {}),  # one text: flat lists
    (("Hello world, naïve café 北京!",), dict(max_length=6, truncation=True)),  # flat, truncated too
    (("Where is the cat?", "On the mat."), dict(max_length=10, truncation="only_second")),
    ((HARD,), {}),  # a batch of different lengths, unpadded: one list per text
    ((HARD,), dict(padding=True)),
    ((HARD[:5], HARD[5:10]), dict(max_length=24, truncation=True, padding="max_length")),
    (("Where is the cat?", "On the mat."), dict(return_offsets_mapping=True, return_special_tokens_mask=True)),
    ((HARD[:4],), dict(return_offsets_mapping=True, return_special_tokens_mask=True)),
    ((HARD[:4],), dict(padding=True, return_offsets_mapping=True, return_special_tokens_mask=True)),
])
def test_lists_by_default_as_transformers(ours, fast, args, kwargs):
    """No return_tensors: Python lists, exactly as BertTokenizerFast returns them (offsets as tuples)."""
    assert ours(*args, **kwargs) == dict(fast(*args, **kwargs))
    assert ours(*args, **kwargs, return_tensors=None) == dict(fast(*args, **kwargs, return_tensors=None))


def test_return_tensors_np_is_a_batch_of_one_for_one_text(ours, fast):
    enc = ours("Hello world", "again", return_tensors="np", return_special_tokens_mask=True)
    ref = fast("Hello world", "again", return_tensors="np", return_special_tokens_mask=True)
    assert enc.keys() == dict(ref).keys()
    assert_same(enc, reference(fast, "Hello world", "again"), KEYS)
    assert enc["input_ids"].shape == ref["input_ids"].shape == (1, 6)
    for name in ("pt", "tf", "jax", True):
        with pytest.raises(NpsqueezeError, match="return_tensors must be 'np' .* or None .*got") as e:
            ours("x", return_tensors=name)
        assert (name == "pt") == ("no torch" in str(e.value))


def test_batch_decode_matches_fast(ours, fast):
    batch = fast(HARD, padding=True)["input_ids"]
    for skip in (False, True):
        expected = fast.batch_decode(batch, skip_special_tokens=skip)
        assert ours.batch_decode(batch, skip_special_tokens=skip) == expected
        assert ours.batch_decode(np.array(batch), skip_special_tokens=skip) == expected
        assert ours.batch_decode(batch, skip) == expected
    assert ours.batch_decode([]) == fast.batch_decode([]) == []
    with pytest.raises(NpsqueezeError, match="token id 30522 is outside the vocabulary"):
        ours.batch_decode([[101], [30522]])

# --- bad input -----------------------------------------------------------------------------------

def test_missing_or_broken_files(tmp_path):
    with pytest.raises(NpsqueezeError, match="no checkpoint folder"):
        Tokenizer.from_pretrained(tmp_path / "absent")
    with pytest.raises(NpsqueezeError, match="no tokenizer in .*tokenizer.json or vocab.txt.*vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(NpsqueezeError, match="tokenizer.json: not a readable tokenizer file"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(NpsqueezeError, match="cannot read .*vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(NpsqueezeError, match="no unknown token '\\[UNK\\]'"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(NpsqueezeError, match="vocab.txt is empty"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "does not hold a JSON object"),
    ("{bad", "tokenizer_config.json: not valid JSON"),
    ('{"do_lower_case": "yes"}', "do_lower_case must be true or false"),
    ('{"strip_accents": 1}', "strip_accents must be true, false or null"),
    ('{"mask_token": 5}', "mask_token must be a non-empty string"),
    ('{"cls_token": "[NOPE]"}', "no '\\[NOPE\\]' token"),
])
def test_bad_tokenizer_config(tmp_path, content, match):
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(content)
    with pytest.raises(NpsqueezeError, match=match):
        Tokenizer.from_pretrained(tmp_path)


def test_bad_calls(tok):
    bad = [
        (lambda: tok(5), "text must be a string or a non-empty list of strings"),
        (lambda: tok([]), "text must be a string or a non-empty list of strings"),
        (lambda: tok(["a", None]), "text must be a string"),
        (lambda: tok(["a", "b"], ["x"]), "text_pair must match text"),
        (lambda: tok("a", ["x"]), "text_pair must match text"),
        (lambda: tok("a", truncation="sometimes"), "truncation must be one of"),
        (lambda: tok("a", truncation=[1]), "truncation must be one of"),
        (lambda: tok("a", padding="yes"), "padding must be one of"),
        (lambda: tok("a", truncation=True), "need max_length"),
        (lambda: tok("a", "b", max_length=2, truncation=True), r"at least 3 \(the special tokens"),
        (lambda: tok("a", max_length=1, truncation=True), "at least 2"),
        (lambda: tok("a", max_length=2.5, truncation=True), "must be an integer"),
        (lambda: tok(["a", "a b c"], return_tensors="np"), "pass padding=True"),
        (lambda: tok("bad \ud800 surrogate"), r"the text has a lone surrogate U\+D800, which is not Unicode "
                                               r"text, at character 4 \(counting from 0\)"),
        (lambda: tok(["ok", "ok"], ["ok", "x \udcff"]), r"input 2's pair has byte 0xff, which is not UTF-8, at "
                                                        r"character 2"),
        (lambda: tok([["a"], ["b", "c\udc80"]], is_split_into_words=True), r"input 2 has byte 0x80.* at "
                                                                             r"character 1 of word 1"),
        (lambda: tok.decode([0, 30522]), "token id 30522 is outside the vocabulary"),
        (lambda: tok.decode([-1]), "token id -1 is outside"),
        (lambda: tok.decode([[[1, 2]]]), "1-D sequence of integers"),
        (lambda: tok.decode(np.zeros((1, 1, 2), np.int64)), "1-D sequence of integers"),
        (lambda: tok.decode([1.5]), "1-D sequence of integers"),
    ]
    for call, match in bad:
        with pytest.raises(NpsqueezeError, match=match):
            call()


# --- long texts: read only as far as the limit needs, with the whole text's result ----------------

def assert_prefixes_exact(tok, texts, pairs, max_length, truncation=True):
    """Encoding the prefixes truncated gives what encoding the whole texts truncated gives, or its error."""
    try:
        whole = tok.encodings(texts, pairs, max_length, truncation)
    except NpsqueezeError as e:  # e.g. only_second with a short second text
        with pytest.raises(NpsqueezeError, match=re.escape(str(e))):
            tok.encodings(*prefixes(tok, texts, pairs, max_length), max_length, truncation)
        return
    cut = tok.encodings(*prefixes(tok, texts, pairs, max_length), max_length, truncation)
    for w, c in zip(whole, cut, strict=True):
        assert (c.ids, c.type_ids, c.offsets, bool(c.overflowing)) == (w.ids, w.type_ids, w.offsets,
                                                                        bool(w.overflowing))


WORD = "x" * 150_000  # one word of 150,000 characters: [UNK]
# Each longer than 16 x max_length characters, so cut, with a trap at or near the cut; and short in
# tokens, since the tokenizers library builds every overflowing window of a truncated text.
EDGES = [
    "word " * 30 + " " * 100_000 + "tail " * 30,  # a long run of spaces, the limit reached after it
    " " * 100_000 + "late " * 30,
    "a " * 60 + " " * 100_000,  # the limit reached before the run: cut before it
    WORD, WORD + " after" * 20, "before " * 2 + WORD + " after" * 20,
    "北京欢迎你" * 30,  # no spaces, one token a character
    "a.b," * 40, "[MASK]" * 40, "x" * 125 + "[MASK]" * 30,  # no spaces; a cut inside [MASK]
    "naïve é Σας İstanbul ﬁ " * 8, "👨‍👩‍👧" * 40,
    "unbelievably " * 20, "x" * 99 + " " + "y" * 101 + " z" * 40,  # WordPiece's 100-character limit
]


@pytest.mark.parametrize("max_length", [8, 13])
def test_prefixes_give_what_whole_texts_give(ours, max_length):
    assert_prefixes_exact(ours, EDGES, None, max_length)
    for first, second in [(EDGES[0], "short"), ("short", EDGES[3]), (EDGES[6], EDGES[7]), (EDGES[7], EDGES[6]),
                          ("北京" * 60, "long english text " * 10), ("long english text " * 10, "北京" * 60)]:
        assert_prefixes_exact(ours, [first, second], [second, first], max_length)  # odd room: 5 and 10 places
    for strategy in ("only_first", "only_second"):
        assert_prefixes_exact(ours, ["a b c " * 30], ["d"], max_length, strategy)


words = st.sampled_from(["hello", "naïve", "北京", "[MASK]", "a.b", "x" * 110, "é", "e\u0301", "Σ", "İ", ",", "👍"])
gaps = st.sampled_from(["", " ", "  ", "\n", "\t ", " " * 300])
texts = st.lists(st.tuples(words, gaps), max_size=120).map(lambda parts: "".join(w + g for w, g in parts))


@settings(max_examples=150, deadline=None)
@given(text=texts, pair=st.none() | texts, max_length=st.integers(4, 24))
def test_prefixes_property(tok, text, pair, max_length):
    assert_prefixes_exact(tok, [text], None if pair is None else [pair], max_length)


def test_what_prefixes_cut(tok):
    long = "The quick brown fox jumps over the lazy dog. " * 250_000  # 11 MB: read 32 KB of it
    text, = prefixes(tok, [long], None, 512)[0]
    assert len(text) == 8192 and long.startswith(text)
    assert prefixes(tok, ["short"], ["pair"], 512) == (["short"], ["pair"])
    with pytest.raises(NpsqueezeError, match=r"input 2: the first 1,048,576 of its 2,000,001 characters do not "
                                             r"settle its first 512 tokens \(a long run of spaces, or a huge word\?\)"):
        prefixes(tok, ["fine", "a" + " " * 2_000_000], None, 512)
    # a pair of two such texts: each read in part, and counted in pieces to tell which is longer (a tie)
    cut = tok.encodings(*prefixes(tok, [long], [long[:-1]], 512), 512, True)[0]
    whole = tok.encodings(long[:20_000], long[:20_001], 512, True)[0]  # tied too: the same first tokens
    assert (cut.ids, cut.offsets, bool(cut.overflowing)) == (whole.ids, whole.offsets, True)
    assert cut.type_ids.count(1) == 255 + 1  # of 509 places, 255 go to the second text on a tie (and its [SEP])


# --- vocabularies and tokenizer.json files that do not fit ----------------------------------------

def test_vocabulary_without_pad(tmp_path, tok):
    lines = VOCAB.read_text().splitlines()
    (tmp_path / "vocab.txt").write_text("\n".join(["[unused_pad]", *lines[1:]]) + "\n")  # ids unchanged
    no_pad = Tokenizer.from_pretrained(tmp_path)
    assert no_pad.pad_token_id is None
    assert no_pad("Hello there!") == tok("Hello there!")
    assert no_pad(["one two", "three four"], padding=True) == tok(["one two", "three four"], padding=True)
    with pytest.raises(NpsqueezeError, match=r"cannot pad: the vocabulary has no '\[PAD\]' token"):
        no_pad(["one", "two three"], padding=True)


def panicking(folder, part: dict):
    """The real tokenizer.json with one part replaced by `part` ("post_processor": ...)."""
    shutil.copytree(minilm_path(), folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**tokenizer, **part}))
    return folder


PANICS = {  # tokenizer.json parts the tokenizers library panics on: when encoding, and when loading
    "encode": {"post_processor": {"type": "TemplateProcessing", "special_tokens": {}, "pair": [],
                                  "single": [{"SpecialToken": {"id": "[X]", "type_id": 0}},
                                             {"Sequence": {"id": "A", "type_id": 0}}]}},
    "load": {"normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAA"}},
}


@pytest.mark.parametrize("when", list(PANICS))
def test_tokenizer_json_that_panics(tmp_path, when):
    folder = panicking(tmp_path / "ckpt", PANICS[when])
    with pytest.raises(BaseException) as e:  # the control: the library itself panics
        import tokenizers
        tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode("hello")
    assert type(e.value).__name__ == "PanicException" and not isinstance(e.value, Exception)
    message = {"encode": "cannot tokenize (the tokenizers library panicked: no entry found for key)",
               "load": f"{folder / 'tokenizer.json'}: not a readable tokenizer file (the tokenizers library "
                       "panicked: Precompiled"}[when]
    with pytest.raises(NpsqueezeError, match=re.escape(message)):
        Tokenizer.from_pretrained(folder)("hello")
    # on the command line: one line on stderr, no Python traceback, no Rust panic report or backtrace
    done = subprocess.run([sys.executable, "-m", "npsqueeze", "embed", str(folder), "hello"], capture_output=True,
                          text=True, env={**os.environ, "RUST_BACKTRACE": "1"}, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith(f"npsqueeze embed: error: {message}") and done.stderr.count("\n") == 1, done.stderr
