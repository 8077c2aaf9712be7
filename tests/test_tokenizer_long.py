"""Valid but unusual inputs (megabytes of text, a long pair, long runs of whitespace) give exactly
what the tokenizers library gives on the whole text; hostile tokenizer files end in one line."""

from __future__ import annotations

import pytest

from bounded import api_bounded, assert_one_line, cli_bounded
from checkpoints import minilm_path
from optional import given, settings, st, transformers
from npsqueeze import NpsqueezeError, Tokenizer, prefixes as prefixes_module
from npsqueeze.config import WEIGHTS_DIR
from npsqueeze.prefixes import prefixes


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def tok(request):
    return Tokenizer.from_pretrained(WEIGHTS_DIR if request.param == "vocab.txt" else minilm_path())


def view(e) -> tuple:
    return e.ids, e.type_ids, e.offsets, bool(e.overflowing)


def assert_cut_exact(tok, texts, pairs, max_length, truncation=True):
    """The cut texts, encoded truncated, give what the whole texts give: ids, types, offsets, truncation."""
    whole = tok.encodings(texts, pairs, max_length, truncation)
    cut = tok.encodings(*prefixes(tok, texts, pairs, max_length), max_length, truncation)
    assert [view(c) for c in cut] == [view(w) for w in whole]


WORDS = ["hello", "naïve", "北京", "[MASK]", "a.b", "x" * 110, "é", "Σ", ",", "👍", "unbelievable"]
GAPS = ["", " ", "  ", "\n", "\t ", " " * 30]  # runs much shorter than MAX_READ (2000 here)
long_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(GAPS)), min_size=0, max_size=600).map(
    lambda parts: " " * 500 * (len(parts) % 3) + "".join(w + g for w, g in parts))


@settings(max_examples=60, deadline=None)
@given(text=long_texts, pair=long_texts, max_length=st.integers(4, 40))
def test_pairs_cut_and_counted_in_pieces(tok, text, pair, max_length):
    """With MAX_READ small, long pairs are counted in pieces cut at whitespace: both cut, one cut,
    odd and even room, ties; leading whitespace skipped."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(prefixes_module, "MAX_READ", 2000)
        assert_cut_exact(tok, [text, pair], [pair, text], max_length)


def test_pair_of_5_mb_texts(tok):
    """Each text of a 5 MB pair is read only in part; the longer (in tokens) gets the odd place, as
    tokenizers gives it on the whole pair (shown on a shorter pair of the same kind)."""
    longer, shorter = "Hello world, naïve café! " * 210_000, "北京 is far. " * 200_000  # 1.47M and 1M tokens
    small = {id(longer): longer[:50_000], id(shorter): shorter[:22_000]}  # 14,000 and 10,000 tokens
    for t, p in ((longer, shorter), (shorter, longer), (shorter, shorter)):  # the second gets it on a tie
        enc = tok(t, p, max_length=512, truncation=True, return_offsets_mapping=True)
        e = tok.encodings(small[id(t)], small[id(p)], 512, True)[0]
        assert (enc["input_ids"], enc["offset_mapping"]) == (e.ids, e.offsets)
    assert tok(longer, shorter, max_length=512, truncation=True)["token_type_ids"].count(0) == 1 + 255 + 1


def test_pair_of_5_mb_texts_as_transformers(tok):
    fast = transformers.BertTokenizerFast.from_pretrained(minilm_path())
    t, p = "Hello world, naïve café! " * 210_000, "北京 is far. " * 200_000
    ours = tok(t, p, max_length=512, truncation=True, return_offsets_mapping=True)
    assert ours == dict(fast(t[:50_000], p[:22_000], max_length=512, truncation=True, return_offsets_mapping=True))


@pytest.mark.parametrize("spaces", [" ", "\n", " \t\r\n"])
def test_megabytes_of_whitespace_before_text(tok, spaces):
    """5 MB of whitespace, then real text: the same ids and offsets as the whole text gives."""
    text = spaces * (5_000_000 // len(spaces)) + "hello world " * 400
    whole = tok.encodings(text)[0]
    for max_length in (8, 512):
        enc = tok(text, max_length=max_length, truncation=True, return_offsets_mapping=True)
        assert (enc["input_ids"], enc["offset_mapping"]) == (whole.ids[:max_length - 1] + [102],
                                                             whole.offsets[:max_length - 1] + [(0, 0)])
    assert tok(text)["input_ids"] == whole.ids


def test_megabytes_of_whitespace_as_transformers(tok):
    fast = transformers.BertTokenizerFast.from_pretrained(minilm_path())
    text = " " * 5_000_000 + "hello world"
    assert tok(text, max_length=8, truncation=True, return_offsets_mapping=True) == dict(
        fast(text, max_length=8, truncation=True, return_offsets_mapping=True))


def test_too_much_leading_whitespace_is_refused_in_one_line(tok):
    with pytest.raises(NpsqueezeError, match=r"input 1 starts with 8,388,609 characters of whitespace: npsqueeze "
                                             r"skips at most 8,388,608; strip the text first"):
        tok([" " * (8 << 20) + " hello"], max_length=8, truncation=True)


# --- tokenizer files: sizes checked before reading ------------------------------------------------------

@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.txt"])
def test_1_gib_tokenizer_file_ends_in_one_line(tmp_path, name):
    """A 1 GiB file (sparse: no disk used) is refused from its size, in a child held to 10 s and 400 MB,
    from the API and from the command line (the real checkpoint's config and weights linked beside it)."""
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).symlink_to(minilm_path() / f)
    with open(tmp_path / name, "wb") as f:
        f.truncate(1 << 30)
    limit = {"tokenizer.json": 64, "vocab.txt": 16}[name]
    message = f"{tmp_path / name}: over {limit} MB, too large for a {name}"
    assert api_bounded("npsqueeze.Tokenizer.from_pretrained", tmp_path) == [message]
    assert_one_line(cli_bounded("embed", tmp_path, "hello"), message)


def test_vocab_with_too_many_lines(tmp_path):
    (tmp_path / "vocab.txt").write_text("[UNK]\n" + "".join(f"t{i}\n" for i in range((1 << 20) + 1)))
    with pytest.raises(NpsqueezeError, match=r"vocab.txt: over 1,048,576 lines, too many tokens for a vocabulary"):
        Tokenizer.from_pretrained(tmp_path)


def test_tokenizer_json_not_utf8(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(b'{"version": "\xff"}')
    with pytest.raises(NpsqueezeError, match=r"cannot read .*tokenizer.json: not UTF-8 text \(invalid start byte at "
                                             r"byte 13\)"):
        Tokenizer.from_pretrained(tmp_path)
