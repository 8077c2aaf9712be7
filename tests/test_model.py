"""The engine against transformers, computed live: every head, both families, masks, group counts,
the full default config, checkpoint layouts, the real all-MiniLM-L6-v2, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npsqueeze
from npsqueeze import NpsqueezeError, parallel
from optional import torch, transformers
from checkpoints import EXPECTED, HEADS, SMALL, TOL, assert_parity, build, inputs, minilm_path, randomize, reference

@pytest.mark.parametrize("family", ["squeezebert", "bert"])
@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_matches_transformers(tmp_path, monkeypatch, family, head):
    ref = build(tmp_path, family, head, seed=1, num_labels=2 if head == "qa" else 5)
    model = npsqueeze.from_pretrained(tmp_path)
    expected_class = ("SqueezeBert" if family == "squeezebert" else "Bert") + HEADS[head]
    assert type(model).__name__ == expected_class
    shape = (2, 3, 24) if head == "choice" else (3, 24)
    ids, mask, tt = inputs(shape, ref.config.vocab_size)
    monkeypatch.setattr(parallel, "MIN_POSITIONS", 1)  # these short inputs shared out too
    for rows in (slice(None), slice(1)):  # the batch, and its first item alone
        theirs = reference(ref, ids[rows], mask[rows], tt[rows])
        for threads in (1, 2):  # two: a batch's sequences shared out, a lone one on BLAS's threads
            with parallel.using_threads(threads):
                assert_parity(model(ids[rows], mask[rows], tt[rows]), theirs, EXPECTED[head])



@pytest.mark.parametrize("head", [None, "sequence", "qa"])
@pytest.mark.parametrize("output_hidden_states", [False, True])
def test_model_output_behaves_as_transformers(tmp_path, head, output_hidden_states):
    """keys, values, items, to_tuple, index and key access, `in`, iteration: as transformers' ModelOutput."""
    ref = build(tmp_path, "squeezebert", head, seed=5)
    ids, mask, tt = inputs((2, 12), ref.config.vocab_size)
    ours = npsqueeze.from_pretrained(tmp_path)(ids, mask, tt, output_hidden_states=output_hidden_states)
    theirs = reference(ref, ids, mask, tt, output_hidden_states=output_hidden_states)
    theirs_keys = [k for k in theirs.keys() if k != "attentions"]
    assert ours.keys() == list(ours) == theirs_keys and len(ours) == len(theirs)
    assert [k for k, _ in ours.items()] == theirs_keys
    assert len(ours.to_tuple()) == len(ours.values()) == len(theirs.to_tuple())
    for i, (k, v) in enumerate(ours.items()):
        assert ours[i] is ours[k] is ours.to_tuple()[i] is ours.values()[i] is v is getattr(ours, k)
        if k == "hidden_states":
            assert len(v) == len(theirs[i]) == 3
            for a, b in zip(v, theirs[i]):
                np.testing.assert_allclose(a, b.numpy(), atol=TOL, rtol=0)
        else:
            np.testing.assert_allclose(v, theirs[i].numpy(), atol=TOL, rtol=0)
        assert k in ours and k in theirs
    assert len(ours[1:]) == len(theirs[1:]) and all(a is b for a, b in zip(ours[1:], ours.to_tuple()[1:]))
    missing = "logits" if head is None else "pooler_output"
    assert missing not in ours and missing not in theirs
    for out in (ours, theirs):
        with pytest.raises(KeyError):
            out[missing]
    assert dict(ours).keys() == set(theirs_keys)

@pytest.mark.parametrize("groups", [
    dict(q_groups=1, k_groups=1, v_groups=1, post_attention_groups=1, intermediate_groups=1, output_groups=1),
    dict(q_groups=4, k_groups=2, v_groups=3, post_attention_groups=6, intermediate_groups=12, output_groups=2),
    dict(q_groups=2, k_groups=3, v_groups=1, post_attention_groups=2, intermediate_groups=4, output_groups=3),
])
def test_group_counts_per_role(tmp_path, groups):
    ref = build(tmp_path, "squeezebert", "sequence", seed=2, **groups)
    model = npsqueeze.SqueezeBertForSequenceClassification.from_pretrained(tmp_path)
    assert [getattr(model.config, r) for r in groups] == list(groups.values())
    q = model.params["encoder"]["layers"][0]["attention"]["query"]["weight"]
    assert q.shape == (groups["q_groups"], 96 // groups["q_groups"], 96 // groups["q_groups"])
    ids, mask, tt = inputs((2, 30), ref.config.vocab_size, seed=3)
    out, theirs = model(ids, mask, tt, output_hidden_states=True), reference(ref, ids, mask, tt,
                                                                          output_hidden_states=True)
    assert_parity(out, theirs, ["logits"])
    assert len(out.hidden_states) == len(theirs.hidden_states) == 3
    for ours, hf in zip(out.hidden_states, theirs.hidden_states):
        np.testing.assert_allclose(ours, hf.numpy(), atol=TOL, rtol=0)


def test_full_default_squeezebert_at_seq_128(tmp_path):
    ref = transformers.SqueezeBertModel(transformers.SqueezeBertConfig())
    randomize(ref, seed=4)
    ref.eval()
    ref.save_pretrained(tmp_path)
    model = npsqueeze.from_pretrained(tmp_path)
    assert sum(a.size for a in model_arrays(model)) == 51_089_664
    ids, mask, tt = inputs((2, 128), 30522, seed=5)
    assert_parity(model(ids, mask, tt), reference(ref, ids, mask, tt), EXPECTED[None])


def model_arrays(model):
    """Every distinct weight array of a loaded model."""
    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
        else:
            yield node
    return list({id(a): a for a in walk(model.params)}.values())


# --- real weights -----------------------------------------------------------------------------

SENTENCES = ["SqueezeBERT runs on a phone.", "The cat sat on the mat, didn't it?",
             "Grouped convolutions cut the FLOPs of BERT by about three times.", "Hello world"]


def test_real_all_minilm_l6_v2_matches_transformers():
    path = minilm_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    ids, mask, tt = (enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids"))
    ref = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    model = npsqueeze.from_pretrained(path)
    assert type(model) is npsqueeze.BertModel and model.config.hidden_size == 384
    assert_parity(model(ids, mask, tt), reference(ref, ids, mask, tt), EXPECTED[None])


# --- checkpoint layouts ------------------------------------------------------------------------

def rewrite_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = dict(load_file(path))
    edit(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize("family", ["squeezebert", "bert"])
def test_tied_decoder_present_or_absent_and_extra_buffers(tmp_path, family):
    ref = build(tmp_path, family, "mlm", seed=6)
    prefix = "transformer." if family == "squeezebert" else "bert."
    ids, mask, tt = inputs((2, 16), ref.config.vocab_size, seed=7)
    theirs = reference(ref, ids, mask, tt)
    word = ref.state_dict()[prefix + "embeddings.word_embeddings.weight"].numpy()

    def add_decoder_and_buffer(t):
        t["cls.predictions.decoder.weight"] = word.copy()
        t[prefix + "embeddings.position_ids"] = np.arange(64)[None]

    def drop_decoder(t):
        t.pop("cls.predictions.decoder.weight", None)

    for edit in (add_decoder_and_buffer, drop_decoder):
        rewrite_weights(tmp_path, edit)
        assert_parity(npsqueeze.from_pretrained(tmp_path)(ids, mask, tt), theirs, ["logits"])


def test_base_model_loads_from_head_checkpoint_and_unprefixed_keys(tmp_path):
    ref = build(tmp_path / "cls", "squeezebert", "sequence", seed=8)
    ids, mask, tt = inputs((2, 20), ref.config.vocab_size, seed=9)
    theirs = reference(ref.transformer, ids, mask, tt)
    base = npsqueeze.SqueezeBertModel.from_pretrained(tmp_path / "cls")  # keys carry `transformer.`
    assert_parity(base(ids, mask, tt), theirs, EXPECTED[None])
    shutil.copytree(tmp_path / "cls", tmp_path / "plain")  # the same weights with no prefix
    rewrite_weights(tmp_path / "plain", lambda t: t.update(
        {k.removeprefix("transformer."): t.pop(k) for k in list(t) if k.startswith("transformer.")}))
    assert_parity(npsqueeze.SqueezeBertModel.from_pretrained(tmp_path / "plain")(ids, mask, tt), theirs,
                  EXPECTED[None])


def test_legacy_layernorm_gamma_beta_names(tmp_path):
    ref = build(tmp_path, "bert", "mlm", seed=14)
    rewrite_weights(tmp_path, lambda t: t.update(
        {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t.pop(k)
         for k in list(t) if "LayerNorm." in k}))
    ids, mask, tt = inputs((2, 10), ref.config.vocab_size, seed=15)
    assert_parity(npsqueeze.from_pretrained(tmp_path)(ids, mask, tt), reference(ref, ids, mask, tt), ["logits"])


def test_sharded_checkpoint(tmp_path):
    ref = build(tmp_path / "one", "bert", "sequence", seed=10)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids, mask, tt = inputs((2, 12), ref.config.vocab_size, seed=11)
    assert_parity(npsqueeze.from_pretrained(tmp_path / "sharded")(ids, mask, tt),
                  reference(ref, ids, mask, tt), ["logits"])


def test_list_inputs_and_defaults(tmp_path):
    ref = build(tmp_path, "squeezebert", None, seed=12)
    model = npsqueeze.from_pretrained(tmp_path)
    ids = [[2, 5, 7, 9], [3, 4, 5, 6]]
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids))
    out = model(ids)
    np.testing.assert_allclose(out.last_hidden_state, theirs.last_hidden_state.numpy(), atol=TOL, rtol=0)
    assert out["pooler_output"] is out.pooler_output


# --- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small")
    build(path, "squeezebert", "choice", seed=13)
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_ids=[[1, 2, 211]]), "outside the vocabulary"),
    (dict(input_ids=[[1, -2, 3]]), "outside the vocabulary"),
    (dict(input_ids=np.ones((1, 65), int)), "exceeds max_position_embeddings 64"),
    (dict(input_ids=[[1.0, 2.0]]), "must hold integers"),
    (dict(input_ids=[[1, 2], [3]]), "rectangular"),
    (dict(input_ids=[1, 2, 3]), "must have 2 dims"),
    (dict(input_ids=np.zeros((1, 0), int)), "empty"),
    (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 1]]), "attention_mask has shape"),
    (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 2, 1]]), "attention_mask values"),
    (dict(input_ids=[[1, 2, 3]], token_type_ids=[[0, 0, 0], [1, 1, 1]]), "token_type_ids has shape"),
    (dict(input_ids=[[1, 2, 3]], token_type_ids=[[0, 2, 0]]), "token_type_ids values"),
])
def test_bad_inputs_raise_clear_errors(small, kwargs, message):
    model = npsqueeze.SqueezeBertModel.from_pretrained(small)
    with pytest.raises(NpsqueezeError, match=message):
        model(**kwargs)


def test_multiple_choice_shape_errors(small):
    model = npsqueeze.from_pretrained(small)
    with pytest.raises(NpsqueezeError, match="must have 3 dims"):
        model([[1, 2, 3]])
    with pytest.raises(NpsqueezeError, match="attention_mask has shape"):
        model([[[1, 2, 3], [4, 5, 6]]], attention_mask=[[[1, 1, 1]]])


def test_bad_checkpoints_raise_clear_errors(tmp_path, small):
    with pytest.raises(NpsqueezeError, match="no checkpoint folder"):
        npsqueeze.SqueezeBertModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(NpsqueezeError, match="no config.json"):
        npsqueeze.from_pretrained(tmp_path)

    def variant(name, config_edit=None, weights_edit=None, drop_weights=False):
        folder = tmp_path / name
        shutil.copytree(small, folder)
        cfg = json.loads((folder / "config.json").read_text())
        if config_edit:
            config_edit(cfg)
            (folder / "config.json").write_text(json.dumps(cfg))
        if weights_edit:
            rewrite_weights(folder, weights_edit)
        if drop_weights:
            (folder / "model.safetensors").unlink()
        return folder

    cases = [
        (variant("arch", lambda c: c.update(architectures=["GPT2LMHeadModel"])), "unknown architecture 'GPT2LMHeadModel'"),
        (variant("type", lambda c: c.update(model_type="roberta")), "unsupported model_type 'roberta'"),
        (variant("noweights", drop_weights=True), "no weights in"),
        (variant("missing", weights_edit=lambda t: t.pop("transformer.encoder.layers.1.output.conv1d.bias")),
         r"missing 1 tensor\(s\).*encoder.layers.1.output.conv1d.bias"),
        (variant("shape", lambda c: c.update(intermediate_size=96)), "intermediate.conv1d.weight has shape"),
        (variant("groups", lambda c: c.update(q_groups=5)), "q_groups=5 does not divide"),
        (variant("dtype", weights_edit=lambda t: t.update({"transformer.pooler.dense.bias": np.zeros(96, np.int32)})),
         "pooler.dense.bias has dtype int32"),
    ]
    for folder, message in cases:
        with pytest.raises(NpsqueezeError, match=message):
            npsqueeze.from_pretrained(folder)
    garbage = variant("garbage")
    (garbage / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(NpsqueezeError, match="model.safetensors"):
        npsqueeze.from_pretrained(garbage)


def test_num_labels_without_id2label(tmp_path):
    """A hand-written config may give only num_labels; transformers then names the labels LABEL_i."""
    build(tmp_path, "squeezebert", "sequence", num_labels=3)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("id2label", "label2id"):
        cfg.pop(key)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_labels": 3}))
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ours = npsqueeze.from_pretrained(tmp_path)
    assert ours.config.id2label == theirs.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    ids, mask, types = inputs((2, 12), SMALL["vocab_size"])
    assert_parity(ours(ids, mask, types), reference(theirs, ids, mask, types), ("logits",))
    for bad, message in [({"num_labels": 0}, "num_labels must be a positive integer, got 0"),
                         ({"id2label": {"first": "a"}}, "id2label must map label ids"),
                         ({"id2label": ["a", "b"]}, "id2label must map label ids")]:
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **bad}))
        with pytest.raises(NpsqueezeError, match=message):
            npsqueeze.from_pretrained(tmp_path)


def test_command_line_help():
    for cmd in ([sys.executable, "-m", "npsqueeze", "--help"],
                [str(Path(sys.executable).parent / "npsqueeze"), "--help"]):
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("usage: npsqueeze")


def test_bundled_vocabulary_is_bert_base_uncased():
    import hashlib

    vocab = npsqueeze.config.WEIGHTS_DIR / "vocab.txt"
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == \
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    lines = vocab.read_text().splitlines()
    assert len(lines) == 30522
    assert [lines[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for name in npsqueeze.config.BUNDLED:
        assert npsqueeze.Config.from_file(npsqueeze.config.WEIGHTS_DIR / name).vocab_size == len(lines)


def test_runtime_never_imports_a_framework(small):
    code = ("import sys, numpy as np, npsqueeze; m = npsqueeze.from_pretrained(sys.argv[1]); "
            "m(np.ones((1, 2, 4), np.int64)); import npsqueeze.tools.cli; npsqueeze.tools.cli.build_parser(); "
            "bad = {'torch', 'transformers', 'scipy'} & set(sys.modules); assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
