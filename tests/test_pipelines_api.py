"""transformers' and sentence-transformers' everyday pipeline calls, computed live against the real
libraries: answer structures for a string, a one-element list and a longer list, fill-mask targets,
text-classification function_to_apply, token-classification aggregation first / average / max,
question-answering dicts, SentenceTransformer.encode's options, similarity and max_seq_length, and
warnings that point at the caller's line."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

import npsqueeze
from checkpoints import minilm_path
from npsqueeze import NpsqueezeError
from optional import transformers
from test_pipelines import (BIO, FILL, NER, NLI, PREMISES, HYPOTHESES, QUESTIONS, CONTEXTS, SENTENCES,  # noqa: F401
                            assert_close_answers, checkpoint, hf_tokenizer, minilm, sentence_transformers)


# --- answer structures --------------------------------------------------------------------------

@pytest.mark.parametrize("construction", [{}, {"top_k": 1}, {"top_k": 3}])
def test_fill_mask_structures(checkpoint, construction):
    """A one-element list is answered as its text alone, as transformers does; a text with two masks
    gives a list per mask."""
    folder, ref = checkpoint("bert", "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder), **construction)
    ours = npsqueeze.pipeline("fill-mask", folder, **construction)
    for inputs in (FILL[0], [FILL[0]], FILL[2], [FILL[2]], FILL[:2], FILL[1:3]):
        for call in ({}, {"top_k": 2}):
            assert_close_answers(ours(inputs, **call), theirs(inputs, **call))


@pytest.mark.parametrize("construction", [{}, {"top_k": None}, {"top_k": 1}, {"top_k": 2}])
def test_classification_structures_with_one_element_lists(checkpoint, construction):
    folder, ref = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    theirs = transformers.pipeline("text-classification", model=ref, tokenizer=hf_tokenizer(folder), **construction)
    ours = npsqueeze.pipeline("text-classification", folder, **construction)
    for inputs in ("one text", ["one text"], ["one", "two"], [{"text": "a", "text_pair": "b"}],
                   {"text": "abc", "text_pair": ""}, [{"text": "abc", "text_pair": ""}, {"text": "a", "text_pair": "b"}]):
        for call in ({}, {"top_k": None}, {"top_k": 2}):
            assert_close_answers(ours(inputs, **call), theirs(inputs, **call))


def test_token_classification_structures(checkpoint):
    folder, ref = checkpoint("bert", "token", seed=3, id2label=BIO, label2id={v: k for k, v in BIO.items()})
    theirs = transformers.pipeline("ner", model=ref, tokenizer=hf_tokenizer(folder), ignore_labels=[])
    ours = npsqueeze.pipeline("ner", folder, ignore_labels=())
    for inputs in (NER[0], NER[:1], NER[:2]):
        assert_close_answers(ours(inputs), theirs(inputs))


# --- fill-mask targets ----------------------------------------------------------------------------

def test_fill_mask_targets(checkpoint):
    """Only the targets compete; top_k beyond them gives them all; a word that is not a token stands
    for its first token, with a warning, as transformers does."""
    folder, ref = checkpoint("bert", "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder))
    ours = npsqueeze.pipeline("fill-mask", folder, top_k=2)
    for targets, top_k in ((["paris", "london", "the", "##s"], 2), ("paris", 5), (["paris", "london", "rome"], 10)):
        for inputs in (FILL[0], FILL[2], FILL[:3]):
            assert_close_answers(ours(inputs, targets=targets, top_k=top_k), theirs(inputs, targets=targets, top_k=top_k))
    with pytest.warns(UserWarning, match="target 'Paris' is not a token of the vocabulary: replaced by 'paris'"):
        got = ours(FILL[0], targets=["Paris", "lyon"])
    assert_close_answers(got, theirs(FILL[0], targets=["Paris", "lyon"], top_k=2))
    assert_close_answers(npsqueeze.pipeline("fill-mask", folder, targets=["paris", "rome"])(FILL[0]),
                         theirs(FILL[0], targets=["paris", "rome"]))
    for bad, match in ((5, "targets must be a string or a list of strings"), ([" "], "at least one target")):
        with pytest.raises(NpsqueezeError, match=match), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours(FILL[0], targets=bad)


# --- text-classification function_to_apply -------------------------------------------------------

@pytest.mark.parametrize("config", [dict(id2label=NLI, label2id={v: k for k, v in NLI.items()}),
                                    dict(num_labels=4, problem_type="multi_label_classification"),
                                    dict(num_labels=1, problem_type="regression"), dict(num_labels=1)])
def test_classification_function_to_apply(checkpoint, config):
    folder, ref = checkpoint("bert", "sequence", seed=2, **config)
    theirs = transformers.pipeline("text-classification", model=ref, tokenizer=hf_tokenizer(folder), top_k=None)
    ours = npsqueeze.pipeline("text-classification", folder, top_k=None)
    for function in (None, "none", "sigmoid", "softmax", "SOFTMAX"):
        call = {} if function is None else {"function_to_apply": function}
        pairs = [{"text": p, "text_pair": h} for p, h in zip(PREMISES[:2], HYPOTHESES[:2])]
        assert_close_answers(ours(PREMISES[:2], HYPOTHESES[:2], **call), theirs(pairs, **call))
        assert_close_answers(ours(PREMISES[0], **call), theirs(PREMISES[0], **call))
    made = npsqueeze.pipeline("text-classification", folder, function_to_apply="none")
    assert_close_answers(made(PREMISES[0]), theirs(PREMISES[0], function_to_apply="none", top_k=1))
    with pytest.raises(NpsqueezeError, match="function_to_apply must be one of softmax, sigmoid, none, got 'relu'"):
        ours("x", function_to_apply="relu")


# --- token-classification aggregation ------------------------------------------------------------

WORDS = ["Angela Merkel met Emmanuel Macron in Paris.", "Grouped convolutions accelerate transformers'"
         " inference on smartphones: SqueezeBERT, naïvely, at Zürich-Oerlikon.", "x" * 101 + " unbelievably"]


@pytest.mark.parametrize("aggregation", ["first", "average", "max"])
def test_token_classification_word_aggregations(checkpoint, aggregation):
    folder, ref = checkpoint("bert", "token", seed=3, id2label=BIO, label2id={v: k for k, v in BIO.items()})
    theirs = transformers.pipeline("token-classification", model=ref, tokenizer=hf_tokenizer(folder),
                                   aggregation_strategy=aggregation)
    ours = npsqueeze.pipeline("token-classification", folder, aggregation_strategy=aggregation)
    assert_close_answers(ours(WORDS), theirs(WORDS))
    everything = ours(WORDS, ignore_labels=())
    assert_close_answers(everything, theirs(WORDS, ignore_labels=[]))
    assert sum(map(len, everything)) >= 10  # words were grouped, tagged and compared
    with pytest.raises(NpsqueezeError, match="aggregation_strategy must be one of none, simple, first, average, max"):
        ours("x", aggregation_strategy="longest")


# --- question answering ----------------------------------------------------------------------------

def test_question_answering_takes_dicts(checkpoint):
    """{"question", "context"} dicts, one or a list, answer as the same questions given apart; one
    question in a list is answered alone (as transformers 4, whose last version had this pipeline)."""
    folder, _ = checkpoint("squeezebert", "qa", seed=4)
    qa = npsqueeze.pipeline("question-answering", folder)
    apart = qa(QUESTIONS, CONTEXTS, top_k=2)
    dicts = [{"question": q, "context": c} for q, c in zip(QUESTIONS, CONTEXTS)]
    assert qa(dicts, top_k=2) == apart
    assert qa(dicts[0], top_k=2) == qa([dicts[0]], top_k=2) == apart[0]
    assert qa(question=QUESTIONS[1], context=CONTEXTS[1]) == qa(dicts[1]) == apart[1][0]  # top_k 1: a dict
    assert isinstance(qa(dicts[1]), dict) and isinstance(qa(dicts[:2]), list)
    for bad in ({"question": "q"}, [{"question": "q", "context": 5}], [dicts[0], "x"]):
        with pytest.raises(NpsqueezeError, match='expected a dict {"question": str, "context": str}'):
            qa(bad)


# --- sentence-transformers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def theirs(sentence_transformers):
    return sentence_transformers(str(minilm_path()), device="cpu")


def test_encode_outputs_and_precisions(minilm, theirs):
    texts = SENTENCES[:5]
    for output_value in ("token_embeddings", None):
        ours, want = minilm.encode(texts, output_value=output_value), theirs.encode(texts, output_value=output_value)
        assert isinstance(ours, list) and len(ours) == len(want)
        for o, w in zip(ours, want):
            if output_value is None:
                assert list(o) == list(w)  # input_ids, token_type_ids, attention_mask, modality, ... in order
                n = int(w["attention_mask"].sum())  # theirs are padded to the batch
                for k in ("input_ids", "token_type_ids", "attention_mask"):
                    np.testing.assert_array_equal(o[k], w[k][:n].numpy())
                np.testing.assert_allclose(o["sentence_embedding"], w["sentence_embedding"].numpy(), atol=1e-5)
                o, w = o["token_embeddings"], w["token_embeddings"][:n]
            np.testing.assert_allclose(o, w.numpy(), atol=1e-4)
    one = minilm.encode(texts[0], output_value="token_embeddings")
    assert one.shape == tuple(theirs.encode(texts[0], output_value="token_embeddings").shape)
    for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
        for kw in ({}, {"normalize_embeddings": True, "truncate_dim": 100}):
            ours, want = minilm.encode(texts, precision=precision, **kw), theirs.encode(texts, precision=precision, **kw)
            assert ours.dtype == want.dtype and ours.shape == want.shape, precision
            if precision == "float32":
                np.testing.assert_allclose(ours, want, atol=1e-5)
            else:  # a value at a bucket's edge may fall either side: float32 sums differ in their last bits
                assert np.abs(ours.astype(np.int64) - want.astype(np.int64)).max() <= ("int8" in precision), precision
    assert minilm.encode(texts[0], precision="ubinary").shape == theirs.encode(texts[0], precision="ubinary").shape
    with pytest.raises(NpsqueezeError, match="int8 quantization needs the ranges of several embeddings"):
        minilm.encode(texts[0], precision="int8")


def test_encode_prompts(minilm, theirs):
    texts = SENTENCES[:3]
    for kw in ({"prompt": "query: "}, {"prompt_name": "query"}, {"prompt": "Represent this: ", "batch_size": 1}):
        np.testing.assert_allclose(minilm.encode(texts, **kw), theirs.encode(texts, **kw), atol=1e-5)
    assert minilm.prompts == theirs.prompts and minilm.default_prompt_name == theirs.default_prompt_name
    assert not np.allclose(minilm.encode(texts[0], prompt="query: "), minilm.encode(texts[0]), atol=1e-3)
    with pytest.raises(NpsqueezeError, match=r"prompt name 'passage' is not among this model's prompts \['query', 'document'\]"):
        minilm.encode(texts, prompt_name="passage")


def test_encode_refuses_what_it_cannot_do_in_one_line(minilm):
    for kw, match in (({"convert_to_tensor": True}, "encode: convert_to_tensor is not supported"),
                      ({"device": "cuda"}, "encode: device='cuda' is not supported"),
                      ({"pool": {}, "chunk_size": 2}, "encode: pool, chunk_size is not supported"),
                      ({"precision": "float16"}, "precision must be one of float32, int8, uint8, binary, ubinary"),
                      ({"precision": "int8", "output_value": "token_embeddings"}, "applies to sentence embeddings"),
                      ({"output_value": "pooler_output"}, "output_value must be one of"),
                      ({"truncate_dim": 0}, "truncate_dim must be a positive integer")):
        with pytest.raises(NpsqueezeError, match=match):
            minilm.encode(SENTENCES[:2], **kw)


def test_similarity_dimension_and_max_seq_length(minilm, theirs, checkpoint):
    a, b = minilm.encode(SENTENCES[:3]), minilm.encode(SENTENCES[3:7])
    for x, y in ((a, b), (a[0], b), (a, a), (list(a), b[1])):
        got, want = minilm.similarity(x, y), theirs.similarity(x, y).numpy()
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert minilm.get_sentence_embedding_dimension() == theirs.get_sentence_embedding_dimension() == 384
    assert minilm.max_seq_length == theirs.max_seq_length == 256
    long_text = "Grouped convolutions make BERT faster on phones. " * 40
    embed = npsqueeze.SentenceEmbedding.from_pretrained(minilm_path())
    try:
        embed.max_seq_length = theirs.max_seq_length = 16
        with pytest.warns(UserWarning, match="limit of 16 tokens"):
            got = embed.encode([long_text, SENTENCES[0]])
        np.testing.assert_allclose(got, theirs.encode([long_text, SENTENCES[0]]), atol=1e-5)
    finally:
        theirs.max_seq_length = 256
    embed.max_seq_length = 10_000  # no more than the model's 512 positions
    assert embed.max_seq_length == 512
    with pytest.raises(NpsqueezeError, match="max_length must be a positive integer"):
        embed.max_seq_length = 0
    folder, _ = checkpoint("bert", None, seed=5)
    cls_max = npsqueeze.SentenceEmbedding.from_pretrained(folder, pooling=("cls", "max"))
    assert cls_max.get_sentence_embedding_dimension() == 96 == cls_max.encode("x").shape[0]


def test_prompts_from_config_sentence_transformers(tmp_path, sentence_transformers):
    """config_sentence_transformers.json's prompts and default_prompt_name, as sentence-transformers reads them."""
    st = tmp_path / "st"
    shutil.copytree(minilm_path(), st)
    (st / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}))
    ours, theirs = npsqueeze.SentenceEmbedding.from_pretrained(st), sentence_transformers(str(st), device="cpu")
    assert ours.prompts == theirs.prompts and ours.default_prompt_name == theirs.default_prompt_name == "query"
    for kw in ({}, {"prompt_name": "passage"}, {"prompt": ""}):
        np.testing.assert_allclose(ours.encode(SENTENCES[:2], **kw), theirs.encode(SENTENCES[:2], **kw), atol=1e-5)
    (st / "config_sentence_transformers.json").write_text('{"prompts": ["query: "]}')
    with pytest.raises(NpsqueezeError, match="prompts must map names to texts"):
        npsqueeze.SentenceEmbedding.from_pretrained(st)


# --- warnings point at the caller ----------------------------------------------------------------

def test_warnings_point_at_the_callers_line(minilm, checkpoint):
    folder, _ = checkpoint("bert", "mlm", seed=1)
    fill = npsqueeze.pipeline("fill-mask", folder)
    long_text = "word " * 300
    calls = [lambda: minilm(long_text), lambda: minilm.encode([long_text, "x"]),
             lambda: minilm.encode(long_text, prompt="a: ", prompt_name="query"),
             lambda: fill("[MASK] " + long_text), lambda: fill(FILL[0], targets="Paris")]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert caught and all(w.filename == __file__ for w in caught), [(w.filename, w.lineno) for w in caught]
