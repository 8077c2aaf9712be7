"""Pipelines and the `fill-mask | classify | embed` commands against transformers, computed live:
its own pipelines where it has them, its models' outputs otherwise, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import npsqueeze
from bounded import assert_one_line, cli_bounded
from optional import torch, transformers
from checkpoints import build, minilm_path
from npsqueeze import NpsqueezeError
from npsqueeze.tools.cli import main
from npsqueeze.config import WEIGHTS_DIR

# Small models over the real vocabulary, so that the real tokenizer's ids are valid.
TINY = dict(vocab_size=30522, hidden_size=48, intermediate_size=96)  # max_position_embeddings 64
TINY_SQUEEZEBERT = dict(TINY, embedding_size=48)  # group counts 2/3/1/2/4/3 from checkpoints.SMALL
NLI = {0: "contradiction", 1: "entailment", 2: "neutral"}
BIO = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
             "A monkey is playing drums.", "Une femme joue du violon à Paris, naïvement. 北京 👍"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(family, head, seed, **config) -> (folder with vocab.txt, the transformers model)."""
    cache = {}

    def make(family, head, seed=0, **config):
        key = (family, head, seed, json.dumps(config, sort_keys=True))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-{head}")
            model = build(folder, family, head, seed,
                          **{**(TINY_SQUEEZEBERT if family == "squeezebert" else TINY), **config})
            shutil.copy(WEIGHTS_DIR / "vocab.txt", folder / "vocab.txt")
            cache[key] = folder, model
        return cache[key]

    return make


def hf_tokenizer(folder):
    return transformers.BertTokenizerFast.from_pretrained(folder)


def assert_close_records(ours, theirs, exact_keys, rtol=1e-4, atol=1e-6):
    """Lists of result dicts: `exact_keys` equal, "score" close."""
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        assert {k: o[k] for k in exact_keys} == {k: t[k] for k in exact_keys}
        np.testing.assert_allclose(o["score"], float(t["score"]), rtol=rtol, atol=atol)


# --- fill-mask ----------------------------------------------------------------------------------

FILL = ["The capital of France is [MASK].", "[MASK]", "Two [MASK] masks, [MASK] here.",
        "a b c d e f g h i j k l m n o p [MASK] q r s", "Café [MASK] naïve 北京 👍 [PAD] x"]


@pytest.mark.parametrize("family", ["squeezebert", "bert"])
def test_fill_mask_matches_transformers_pipeline(checkpoint, family):
    folder, ref = checkpoint(family, "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder))
    fill = npsqueeze.pipeline("fill-mask", folder, batch_size=2)  # 3 length-sorted batches
    results = fill(FILL, top_k=7)
    assert len(results) == len(FILL)
    for text, ours in zip(FILL, results):
        expected = theirs(text, top_k=7)
        if text.count("[MASK]") > 1:
            assert len(ours) == len(expected) == 2
            for o, t in zip(ours, expected):
                assert_close_records(o, t, ("token", "token_str", "sequence"))
        else:
            assert_close_records(ours, expected, ("token", "token_str", "sequence"))
    assert_close_records(fill(FILL[0], top_k=3), results[0][:3], ("token", "sequence"))  # one text: one result


def test_fill_mask_with_embedding_rows_past_the_vocabulary(checkpoint):
    """Embedding matrices padded past the vocabulary (30528 rows for 30522 tokens): a padding row that
    wins decodes to "", as in transformers."""
    folder, ref = checkpoint("squeezebert", "mlm", seed=1, vocab_size=30528)
    with torch.no_grad():
        ref.cls.predictions.bias[30522:] += 20  # the padding rows win
    ref.save_pretrained(folder)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder))
    ours = npsqueeze.pipeline("fill-mask", folder)(FILL[0], top_k=8)
    assert {c["token"] for c in ours[:6]} == set(range(30522, 30528))
    assert_close_records(ours, theirs(FILL[0], top_k=8), ("token", "token_str", "sequence"))


def test_fill_mask_bad_input(checkpoint):
    folder, _ = checkpoint("squeezebert", "mlm", seed=1)
    fill = npsqueeze.FillMask.from_pretrained(folder)
    with pytest.raises(NpsqueezeError, match=r"input 2 has no \[MASK\] token to fill"):
        fill(["a [MASK]", "no mask here"])
    with pytest.raises(NpsqueezeError, match="top_k must be a positive integer"):
        fill("a [MASK]", top_k=0)
    with pytest.warns(UserWarning, match="truncated"), pytest.raises(
            NpsqueezeError, match=r"input 1: every \[MASK\] lies beyond the model's limit of 64 tokens"):
        fill("word " * 100 + "[MASK]")
    with pytest.raises(NpsqueezeError, match="batch_size must be a positive integer"):
        npsqueeze.FillMask.from_pretrained(folder, batch_size=0)


def test_a_command_needs_its_head(checkpoint):
    mlm, _ = checkpoint("squeezebert", "mlm", seed=1)
    with pytest.raises(NpsqueezeError, match="fill-mask needs a model with a masked-LM head .* BertModel"):
        npsqueeze.FillMask.from_pretrained(minilm_path())
    with pytest.raises(NpsqueezeError, match="text-classification needs .*sequence-classification head.*"
                                             "SqueezeBertForMaskedLM"):
        npsqueeze.pipeline("text-classification", mlm)
    for task in ("token-classification", "question-answering"):
        with pytest.raises(NpsqueezeError, match=f"{task} needs"):
            npsqueeze.pipeline(task, mlm)
    with pytest.raises(NpsqueezeError, match="unknown task 'summarize'"):
        npsqueeze.pipeline("summarize", mlm)


def test_missing_tokenizer_is_one_clear_error(checkpoint, tmp_path):
    folder, _ = checkpoint("squeezebert", "mlm", seed=1)
    for f in folder.iterdir():
        if f.name != "vocab.txt":
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(NpsqueezeError, match="no tokenizer in .*: expected tokenizer.json or vocab.txt"):
        npsqueeze.FillMask.from_pretrained(tmp_path)


# --- text classification ------------------------------------------------------------------------

PREMISES = ["A man inspects the uniform of a figure in some East Asian country.", "An older man is drinking "
            "orange juice at a restaurant.", "A soccer game with multiple males playing.", "x"]
HYPOTHESES = ["The man is sleeping.", "Two women are drinking wine.", "Some men are playing a sport.",
              "Ünïcödé 北京 " * 30]


@pytest.mark.parametrize("family, config", [
    ("squeezebert", dict(id2label=NLI, label2id={v: k for k, v in NLI.items()})),  # softmax
    ("bert", dict(num_labels=4, problem_type="multi_label_classification")),  # sigmoid, LABEL_i names
    ("bert", dict(num_labels=1, problem_type="regression")),  # raw score
])
def test_classify_matches_transformers_pipeline(checkpoint, family, config):
    folder, ref = checkpoint(family, "sequence", seed=2, **config)
    theirs = transformers.pipeline("text-classification", model=ref, tokenizer=hf_tokenizer(folder), top_k=None)
    classify = npsqueeze.pipeline("text-classification", folder, batch_size=3, top_k=None)
    with pytest.warns(UserWarning, match=r"1 of 4 inputs are longer than the model's limit of 64 tokens and "
                                         r"were truncated \(input 4\)"):
        results = classify(PREMISES, HYPOTHESES)
    with pytest.warns(UserWarning, match=r"2 of 3 inputs .* \(inputs 1, 3\)"):
        classify([HYPOTHESES[3], "x", HYPOTHESES[3]])
    for p, h, ours in zip(PREMISES, HYPOTHESES, results):
        expected = theirs({"text": p, "text_pair": h}, truncation=True, max_length=64)
        assert_close_records(ours, expected, ("label",))
    assert_close_records(classify(PREMISES[0], HYPOTHESES[0])[0], results[0], ("label",))
    singles = classify(PREMISES)
    for p, ours in zip(PREMISES, singles):
        assert_close_records(ours, theirs([p])[0], ("label",))
    assert singles != results  # the pair changes the answer: it reached the model


def assert_close_answers(ours, theirs, rtol=1e-4, atol=1e-6):
    """Answers of the same shape (nested lists and dicts), equal but for "score"s, which are close."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(ours, list):
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            assert_close_answers(o, t, rtol, atol)
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for k in ours:
            if k == "score":
                np.testing.assert_allclose(ours[k], float(theirs[k]), rtol=rtol, atol=atol)
            else:
                assert_close_answers(ours[k], theirs[k], rtol, atol)
    else:
        assert ours == theirs


CLASSIFY_INPUTS = [PREMISES[0], PREMISES[:3], {"text": PREMISES[1], "text_pair": HYPOTHESES[1]},
                   [{"text": PREMISES[2], "text_pair": HYPOTHESES[2]}, {"text": "x"}]]


@pytest.mark.parametrize("construction", [{}, {"top_k": None}, {"top_k": 1}, {"top_k": 2}])
def test_classify_answers_in_transformers_shapes(checkpoint, construction):
    """Top label by default, top_k at construction or call (None: every label), dict inputs with
    text_pair: the same answers, nested as transformers nests them."""
    folder, ref = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    theirs = transformers.pipeline("sentiment-analysis", model=ref, tokenizer=hf_tokenizer(folder), **construction)
    ours = npsqueeze.pipeline("sentiment-analysis", folder, **construction)
    assert isinstance(ours, npsqueeze.TextClassification)
    for inputs in CLASSIFY_INPUTS:
        for call in ({}, {"top_k": None}, {"top_k": 1}, {"top_k": 3}):
            assert_close_answers(ours(inputs, **call), theirs(inputs, **call))
    assert_close_answers(ours(PREMISES[0], text_pair=HYPOTHESES[0]), theirs(PREMISES[0], text_pair=HYPOTHESES[0]))
    # batch_size and max_length for one call (max_length truncates, as the tokenizer's arguments in transformers)
    with pytest.warns(UserWarning, match="limit of 8 tokens"):
        short = ours(PREMISES[:3], batch_size=1, max_length=8)
    assert_close_answers(short, theirs(PREMISES[:3], truncation=True, max_length=8))
    assert (ours.batch_size, ours.max_length) == (32, 64)  # the pipeline's own settings are unchanged
    assert_close_answers(ours(PREMISES[:3]), theirs(PREMISES[:3]))


def test_pipeline_options_bad_names_and_values(checkpoint):
    folder, _ = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    classify = npsqueeze.pipeline("text-classification", folder)
    cases = [
        (lambda: npsqueeze.pipeline("text-classification", folder, topk=2),
         "text-classification has no option 'topk'; it takes batch_size, max_length, top_k"),
        (lambda: npsqueeze.pipeline("text-classification", folder, text_pair="x"), "has no option 'text_pair'"),
        (lambda: classify("a", topk=2), "has no option 'topk'; it takes batch_size, max_length, top_k, function_to_apply$"),
        (lambda: classify("a", top_k=0), "top_k must be a positive integer, got 0"),
        (lambda: classify("a", batch_size=0), "batch_size must be a positive integer"),
        (lambda: classify("a", max_length=-3), "max_length must be a positive integer"),
        (lambda: classify({"text": "a", "pair": "b"}), r"input 1: expected a dict \{"),
        (lambda: classify([{"text": "a"}, {"text": 5}]), "input 2: expected a dict"),
        (lambda: classify({"text": "a"}, "b"), "not both"),
        (lambda: npsqueeze.pipeline("summarize", folder), "unknown task 'summarize'; .*sentiment-analysis, ner"),
    ]
    for call, match in cases:
        with pytest.raises(NpsqueezeError, match=match):
            call()


def test_fill_mask_top_k_at_construction_or_call(checkpoint):
    folder, ref = checkpoint("bert", "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder), top_k=2)
    fill = npsqueeze.pipeline("fill-mask", folder, top_k=2)
    for call in ({}, {"top_k": 4}):
        assert_close_answers(fill(FILL[:2], **call), theirs(FILL[:2], **call))
        assert_close_answers(fill(FILL[2], **call), theirs(FILL[2], **call))


# --- token classification -----------------------------------------------------------------------

NER = ["Angela Merkel met Emmanuel Macron in Paris.", "x" * 101 + " (an unknown word) in Zürich",
       "北京 and Tōkyō, 👍 [MASK]", "short"]


@pytest.mark.parametrize("aggregation", ["none", "simple"])
def test_token_classification_matches_transformers_pipeline(checkpoint, aggregation):
    folder, ref = checkpoint("bert", "token", seed=3, id2label=BIO, label2id={v: k for k, v in BIO.items()})
    theirs = transformers.pipeline("token-classification", model=ref, tokenizer=hf_tokenizer(folder),
                                   aggregation_strategy=aggregation)
    tag = npsqueeze.pipeline("token-classification", folder, batch_size=2)
    results = tag(NER, aggregation_strategy=aggregation)
    keys = ("entity", "index", "word", "start", "end") if aggregation == "none" else (
        "entity_group", "word", "start", "end")
    n_entities = 0
    for text, ours in zip(NER, results):
        expected = theirs(text)
        assert_close_records(ours, expected, keys)
        n_entities += len(ours)
    assert n_entities >= 5  # the random model tags something, so the comparison compared something
    if aggregation == "none":  # every token, "O" too; the [UNK] word as written
        everything = tag(NER[1], ignore_labels=())
        assert_close_records(everything, theirs(NER[1], ignore_labels=[]), keys)
        assert (everything[0]["index"], everything[0]["word"]) == (1, "x" * 101)
        assert [e["index"] for e in everything] == list(range(1, len(hf_tokenizer(folder)(NER[1])["input_ids"]) - 1))


def test_ner_alias_with_aggregation_at_construction(checkpoint):
    folder, ref = checkpoint("bert", "token", seed=3, id2label=BIO, label2id={v: k for k, v in BIO.items()})
    theirs = transformers.pipeline("ner", model=ref, tokenizer=hf_tokenizer(folder), aggregation_strategy="simple")
    ours = npsqueeze.pipeline("ner", folder, aggregation_strategy="simple")
    assert isinstance(ours, npsqueeze.TokenClassification)
    assert_close_answers(ours(NER), theirs(NER))
    assert_close_answers(ours(NER[0], ignore_labels=()), theirs(NER[0], ignore_labels=[]))


# --- question answering -------------------------------------------------------------------------

def best_spans_brute_force(start_logits, end_logits, context_mask, k, max_answer_len):
    """Every (start, end) span of context tokens, scored p_start * p_end: the k best."""
    def softmax_over_context(x):
        x = np.where(context_mask, x.astype(np.float64), -np.inf)
        e = np.exp(x - x.max())
        return e / e.sum()

    ps, pe = softmax_over_context(start_logits), softmax_over_context(end_logits)
    idx = np.flatnonzero(context_mask)
    spans = [(ps[s] * pe[e], s, e) for s in idx for e in idx if s <= e < s + max_answer_len]
    return sorted(spans, key=lambda t: -t[0])[:k]


QUESTIONS = ["Where does the man live?", "Who wrote SqueezeBERT?", "What is 北京?"]
CONTEXTS = ["The man lives in a small house in Zürich, near the lake, with three cats and a dog.",
            "SqueezeBERT was written by Iandola, Shaw, Krishna and Keutzer in 2020. " * 8,  # truncated
            "北京 is the capital of China. 👍"]


def expected_spans(ref, hf, question, context, k, max_answer_len, stride):
    """transformers' tokenizer cuts the context into windows; transformers' model scores each; the
    k best spans over all windows, each (start, end) in characters once, with its best score."""
    enc = hf(question, context, truncation="only_second", max_length=64, stride=stride,
             return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping").tolist()
    enc.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        out = ref(**enc)
    best = {}
    for w in range(len(offsets)):
        context_mask = np.array([s == 1 for s in enc.sequence_ids(w)])
        for score, s, e in best_spans_brute_force(out.start_logits[w].numpy(), out.end_logits[w].numpy(),
                                                  context_mask, k, max_answer_len):
            key = offsets[w][s][0], offsets[w][e][1]
            best[key] = max(best.get(key, 0), score)
    return len(offsets), sorted(best.items(), key=lambda item: -item[1])[:k]


@pytest.mark.parametrize("max_answer_len, doc_stride", [(1, None), (2, 8), (6, None), (6, 0)])
def test_question_answering_matches_spans_from_transformers_logits(checkpoint, max_answer_len, doc_stride):
    folder, ref = checkpoint("squeezebert", "qa", seed=4)
    qa = npsqueeze.pipeline("question-answering", folder, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a long context is read in windows, not truncated
        results = qa(QUESTIONS, CONTEXTS, top_k=3, max_answer_len=max_answer_len, doc_stride=doc_stride)
    hf = hf_tokenizer(folder)
    stride = 32 if doc_stride is None else doc_stride  # default: half the model's 64 tokens
    n_windows = []
    for q, c, ours in zip(QUESTIONS, CONTEXTS, results):
        n, expected = expected_spans(ref, hf, q, c, 3, max_answer_len, stride)
        n_windows.append(n)
        assert [(o["start"], o["end"]) for o in ours] == [key for key, _ in expected]
        np.testing.assert_allclose([o["score"] for o in ours], [score for _, score in expected], rtol=1e-4)
        assert all(o["answer"] == c[o["start"]:o["end"]] and o["answer"] for o in ours)
    assert n_windows[0] == n_windows[2] == 1 and n_windows[1] > 2  # the long context took several windows
    assert_close_records([qa(QUESTIONS[0], CONTEXTS[0], max_answer_len=max_answer_len)], results[0][:1],
                         ("start", "end", "answer"))


@pytest.mark.parametrize("args, doc_stride, message", [
    ((QUESTIONS, [CONTEXTS[0], None, CONTEXTS[2]]), None, "needs a context for every question"),
    (("why " * 100, CONTEXTS[0]), None, r"question 1 takes 100 of the model's 64 tokens, leaving 0 .*shorten the question"),
    (("why " * 2_500_000, CONTEXTS[0]), None, r"question 1 takes \d+ of the model's 64 tokens, leaving 0"),  # 10 MB: read in part
    ((QUESTIONS[0], "x " * 600_000), None, "context 1 has 1,200,000 characters: npsqueeze reads contexts of up to "
                                          "1,048,576; split the document"),
    ((QUESTIONS, CONTEXTS), 55, r"question 1 takes 6 of the model's 64 tokens, leaving 55 .*doc_stride \(55\) must be smaller"),
    ((QUESTIONS[0], " "), None, "a context has no tokens"),
    ((QUESTIONS[0], CONTEXTS[0]), -1, "doc_stride must be a non-negative integer, got -1"),
    ((QUESTIONS[0], CONTEXTS[0]), 2.5, "doc_stride must be a non-negative integer, got 2.5"),
    ((QUESTIONS[0], CONTEXTS[0]), True, "doc_stride must be a non-negative integer, got True"),
])
def test_question_answering_bad_input_is_one_line(checkpoint, args, doc_stride, message):
    folder, _ = checkpoint("squeezebert", "qa", seed=4)
    qa = npsqueeze.pipeline("question-answering", folder)
    with pytest.raises(NpsqueezeError, match=message):
        qa(*args, doc_stride=doc_stride)


# --- feature extraction -------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["minilm", "squeezebert-mlm"])
def test_feature_extraction_matches_transformers_pipeline(checkpoint, which):
    """Every token's final hidden state, nested [1, W, C] per text; a head, if any, is not run."""
    folder = minilm_path() if which == "minilm" else checkpoint("squeezebert", "mlm", seed=1)[0]
    theirs = transformers.pipeline("feature-extraction", model=str(folder))
    ours = npsqueeze.pipeline("feature-extraction", folder, batch_size=3)
    texts = SENTENCES[:5] + [""]
    results = ours(texts)
    assert isinstance(results, list) and len(results) == len(texts)
    for text, r in zip(texts, results):
        expected = theirs(text)
        assert isinstance(r, list) and isinstance(r[0][0], list) and isinstance(r[0][0][0], float)
        assert np.shape(r) == np.shape(expected) == (1, len(theirs.tokenizer(text)["input_ids"]), len(r[0][0]))
        np.testing.assert_allclose(r, expected, atol=1e-4, rtol=0)
    one = ours(texts[0], return_tensors=True)
    assert isinstance(one, np.ndarray) and one.shape == theirs(texts[0], return_tensors=True).shape
    np.testing.assert_allclose(one, results[0], atol=1e-6)


# --- sentence embeddings: the real all-MiniLM-L6-v2 ---------------------------------------------

def reference_embeddings(folder, texts, modes=("mean",), normalize=True, max_length=256):
    """sentence-transformers' pooling computed on transformers' BertModel outputs."""
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state.double()  # [N, W, C]
    m = enc["attention_mask"].unsqueeze(-1).double()  # [N, W, 1]
    pooled = {"cls": h[:, 0], "mean": (h * m).sum(1) / m.sum(1), "max": h.masked_fill(m == 0, -1e9).max(1).values,
              "mean_sqrt_len": (h * m).sum(1) / m.sum(1).sqrt()}
    v = torch.cat([pooled[k] for k in modes], dim=-1)
    if normalize:
        v = torch.nn.functional.normalize(v, dim=-1)
    return v.numpy()


@pytest.fixture(scope="module")
def minilm():
    return npsqueeze.SentenceEmbedding.from_pretrained(minilm_path(), batch_size=3)


@pytest.fixture(scope="module")
def minilm_reference():
    return reference_embeddings(minilm_path(), SENTENCES)


def test_real_minilm_embeddings_match_transformers(minilm, minilm_reference):
    assert (minilm.pooling, minilm.normalize, minilm.max_length) == (("mean",), True, 256)
    ours = minilm(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, minilm_reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(minilm(SENTENCES[3]), minilm_reference[3], atol=1e-5, rtol=0)
    sim = npsqueeze.cosine_similarity(ours)
    np.testing.assert_allclose(sim, minilm_reference @ minilm_reference.T, atol=1e-5)
    # the paraphrase pair (eating food / eating bread) is closer than unrelated sentences
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.5 and sim[0, 1] > sim[4, 6]
    assert sim[4, 6] > sim[4, 5]  # playing violin ~ playing drums, more than pushing carts


def test_real_minilm_long_text_truncated_to_max_seq_length(minilm):
    long_text = "Grouped convolutions make BERT faster on phones. " * 40  # ~360 tokens > 256
    with pytest.warns(UserWarning, match="1 of 2 inputs are longer than the model's limit of 256 tokens"):
        ours = minilm([long_text, SENTENCES[0]])
    np.testing.assert_allclose(ours, reference_embeddings(minilm_path(), [long_text, SENTENCES[0]]), atol=1e-5)


def test_batching_does_not_change_embeddings(minilm, minilm_reference):
    """Length-sorted batches, padding and reordering give each text the embedding it has alone."""
    one_by_one = npsqueeze.SentenceEmbedding(minilm.model, minilm.tokenizer, pooling=("mean",), normalize=True,
                                             batch_size=1)
    np.testing.assert_allclose(one_by_one(SENTENCES), minilm_reference, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def sentence_transformers():
    st = pytest.importorskip("sentence_transformers", reason="the test extra installs sentence-transformers")
    return st.SentenceTransformer


def test_encode_matches_sentence_transformers(minilm, sentence_transformers):
    """encode() as SentenceTransformer.encode on the real all-MiniLM-L6-v2: shapes and values."""
    theirs = sentence_transformers(str(minilm_path()), device="cpu")
    texts = SENTENCES + ["", "word " * 300]  # an empty text is an input too; the last is truncated to 256
    with pytest.warns(UserWarning, match="truncated"):
        ours = minilm.encode(texts)
    expected = theirs.encode(texts)
    assert ours.shape == expected.shape == (len(texts), 384) and ours.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    one = minilm.encode(SENTENCES[0])
    assert one.shape == theirs.encode(SENTENCES[0]).shape == (384,)
    np.testing.assert_allclose(one, expected[0], atol=1e-5, rtol=0)
    as_list = minilm.encode(SENTENCES[:3], batch_size=2, normalize_embeddings=True, convert_to_numpy=False)
    theirs_list = theirs.encode(SENTENCES[:3], batch_size=2, normalize_embeddings=True, convert_to_numpy=False)
    assert isinstance(as_list, list) and [v.shape for v in as_list] == [tuple(t.shape) for t in theirs_list]
    np.testing.assert_allclose(as_list, [t.numpy() for t in theirs_list], atol=1e-5, rtol=0)
    assert minilm.encode([]).shape == theirs.encode([]).shape == (0,)
    assert minilm.encode([], convert_to_numpy=False) == []
    with pytest.raises(NpsqueezeError, match="encode: convert_to_tensor is not supported: npsqueeze gives NumPy arrays"):
        minilm.encode(SENTENCES, convert_to_tensor=True)


def test_encode_normalizes_on_request(checkpoint, sentence_transformers, capsys):
    """A plain checkpoint (mean pooling, not normalized), as sentence-transformers loads one."""
    folder, _ = checkpoint("bert", None, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no sentence-transformers model found ... mean pooling"
        theirs = sentence_transformers(str(folder), device="cpu")
    ours = npsqueeze.SentenceEmbedding.from_pretrained(folder)
    for normalize in (False, True):
        np.testing.assert_allclose(ours.encode(SENTENCES, normalize_embeddings=normalize),
                                   theirs.encode(SENTENCES, normalize_embeddings=normalize), atol=2e-5, rtol=1e-5)
    assert abs(np.linalg.norm(ours.encode(SENTENCES[0])) - 1) > 0.1  # so normalizing did something
    capsys.readouterr()
    ours.encode(SENTENCES, batch_size=2, show_progress_bar=True)
    assert "sentence-embedding" in capsys.readouterr().err
    ours.encode(SENTENCES, batch_size=2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("modes, normalize", [(("cls",), False), (("max",), True),
                                              (("cls", "max", "mean", "mean_sqrt_len"), False)])
def test_declared_pooling_modes(checkpoint, tmp_path, modes, normalize):
    folder, _ = checkpoint("bert", None, seed=5)
    st = tmp_path / "st"
    shutil.copytree(folder, st)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "1_Pooling").mkdir()
    flags = {f"pooling_mode_{m}_{'token' if m == 'cls' else 'tokens'}": m in modes
             for m in ("cls", "max", "mean", "mean_sqrt_len")}
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 48, **flags}))
    embed = npsqueeze.pipeline("sentence-embedding", st, batch_size=3)
    assert embed.pooling == modes and embed.normalize == normalize and embed.max_length == 64
    texts = SENTENCES[:5]
    np.testing.assert_allclose(embed(texts), reference_embeddings(st, texts, modes, normalize, 64),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("files, match", [
    ({"modules.json": '{"a": 1}'}, "does not hold a JSON array"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Dense", "path": "2_Dense"}]'},
     "module .*Dense.* is not supported"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]',
      "1_Pooling/config.json": '{"pooling_mode_weightedmean_tokens": true}'},
     "pooling_mode_weightedmean_tokens is not supported"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]',
      "1_Pooling/config.json": '{"pooling_mode_mean_tokens": false}'}, "no pooling mode is set"),
    ({"modules.json": "[oops"}, "modules.json: not valid JSON"),
    ({"modules.json": "[" * 100_000}, "modules.json: not valid JSON .*recursion"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "../.."}]'},
     r"modules.json: module path '\.\./\.\.' is not a folder inside"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "/etc"}]'},
     "module path '/etc' is not a folder inside"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": ["1_Pooling"]}]'},
     r"module path \['1_Pooling'\] is not a folder inside"),
    ({"modules.json": '[{"type": [[["Pooling"]]]}]'}, "module .* is not supported"),
    ({"modules.json": "[]", "sentence_bert_config.json": '{"max_seq_length": -3}'},
     "sentence_bert_config.json: max_seq_length must be a positive integer, got -3"),
])
def test_bad_sentence_transformers_files(checkpoint, tmp_path, files, match):
    folder, _ = checkpoint("bert", None, seed=5)
    st = tmp_path / "st"
    shutil.copytree(folder, st)
    for name, content in files.items():
        (st / name).parent.mkdir(exist_ok=True)
        (st / name).write_text(content)
    with pytest.raises(NpsqueezeError, match=match):
        npsqueeze.SentenceEmbedding.from_pretrained(st)


def test_vocabulary_that_does_not_fit_the_model_is_one_clear_error(checkpoint, tmp_path):
    folder, _ = checkpoint("bert", None, seed=6, vocab_size=211)  # with the 30522-token vocab.txt
    with pytest.raises(NpsqueezeError, match=r"the tokenizer's vocabulary \(30,522 tokens, ids up to 30,521\) does "
                                             r"not fit the model's 211 embedding rows"):
        npsqueeze.SentenceEmbedding.from_pretrained(folder)
    folder, _ = checkpoint("bert", "mlm", seed=1)  # 30522 rows
    small = tmp_path / "small"
    shutil.copytree(folder, small)
    (small / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(NpsqueezeError, match=r"vocabulary \(5 tokens, ids up to 4\) does not fit the model's 30,522"):
        npsqueeze.pipeline("fill-mask", small)
    assert_one_line(cli_bounded("fill-mask", small, "Paris is the [MASK] of France."),  # used to print empty tokens
                    "vocabulary (5 tokens, ids up to 4) does not fit", prefix="npsqueeze fill-mask: error: ")
    vocab = (WEIGHTS_DIR / "vocab.txt").read_text().splitlines()
    (small / "vocab.txt").write_text("\n".join(vocab[:30522 - 6]) + "\n")  # 6 padding rows: fine
    assert npsqueeze.pipeline("fill-mask", small)("Paris is the [MASK] of France.", top_k=3)


def test_vocabulary_without_pad_runs_texts_of_any_length(checkpoint, tmp_path):
    folder, _ = checkpoint("bert", "mlm", seed=1)
    shutil.copytree(folder, tmp_path / "ckpt")
    vocab = (WEIGHTS_DIR / "vocab.txt").read_text().splitlines()
    (tmp_path / "ckpt" / "vocab.txt").write_text("\n".join(["[unused_pad]", *vocab[1:]]) + "\n")  # ids unchanged
    fill = npsqueeze.pipeline("fill-mask", tmp_path / "ckpt")
    assert fill("Paris is the [MASK] of France.") == npsqueeze.pipeline("fill-mask", folder)(
        "Paris is the [MASK] of France.")
    texts = ["[MASK]", "a longer [MASK] text"]  # packed side by side: no padding needed either
    assert fill(texts) == npsqueeze.pipeline("fill-mask", folder)(texts)


def test_long_lines_are_read_within_bounds(tmp_path):
    """A 10 MB line used to take 1.4 GB and 27 s (50 MB: the process aborted); now it is read only as
    far as the model's limit needs, with the result and warning of the whole line."""
    prose = "The quick brown fox jumps over the lazy dog. " * 230_000  # 10 MB
    (tmp_path / "in.txt").write_text(f"{prose}\nshort\n")
    done = cli_bounded("embed", minilm_path(), "--file", tmp_path / "in.txt", "--json")
    assert done.returncode == 0 and done.stderr == (
        "npsqueeze embed: warning: 1 of 2 inputs are longer than the model's limit of 256 tokens and were "
        "truncated (input 1)\n"), done.stderr[-2000:]
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()])
    embed = npsqueeze.SentenceEmbedding.from_pretrained(minilm_path())
    with warnings.catch_warnings(record=True):
        np.testing.assert_allclose(got, embed([prose[:20_000], "short"]), atol=1e-6)  # 20,000: ~4,000 tokens
    for text, what in [("a" * 10_000_000, "one word"), ("a" + " " * 10_000_000 + "b", "a run of spaces")]:
        (tmp_path / "in.txt").write_text(text)
        assert_one_line(cli_bounded("embed", minilm_path(), "--file", tmp_path / "in.txt"),
                        "input 1: the first 1,048,576 of its", "characters do not settle its first 256 tokens",
                        prefix="npsqueeze embed: error: ")


def test_plain_checkpoint_embeds_with_mean_pooling(checkpoint):
    folder, _ = checkpoint("squeezebert", "mlm", seed=1)
    embed = npsqueeze.SentenceEmbedding.from_pretrained(folder)
    assert (embed.pooling, embed.normalize) == (("mean",), False)
    h = npsqueeze.SqueezeBertModel.from_pretrained(folder)  # the base model of the MLM checkpoint
    enc = embed.tokenizer(SENTENCES[:2], padding=True, return_tensors="np")
    out = h(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
    m = enc["attention_mask"][..., None]
    np.testing.assert_allclose(embed(SENTENCES[:2]), (out * m).sum(1) / m.sum(1), atol=1e-6)


def test_progress_bar_only_when_asked_and_for_several_batches(checkpoint, capsys):
    folder, _ = checkpoint("bert", None, seed=5)
    for progress, batch_size, shown in ((True, 1, True), (True, 8, False), (False, 1, False)):
        npsqueeze.SentenceEmbedding.from_pretrained(folder, batch_size=batch_size, progress=progress)(SENTENCES[:3])
        assert ("sentence-embedding" in capsys.readouterr().err) == shown


def test_no_warning_at_exactly_the_limit(checkpoint):
    folder, _ = checkpoint("bert", None, seed=5)
    embed = npsqueeze.SentenceEmbedding.from_pretrained(folder)
    at_limit, over = "a " * 62, "a " * 63  # + [CLS] and [SEP]: 64 and 65 tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed(at_limit)
    with pytest.warns(UserWarning, match=r"1 of 1 inputs are longer than the model's limit of 64 tokens and were "
                                         r"truncated \(input 1\)"):
        embed(over)


# --- the commands ---------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    capsys.readouterr()  # drop what came before (transformers' progress bars while building checkpoints)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_cli_fill_mask(checkpoint, capsys):
    folder, ref = checkpoint("bert", "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder))
    code, out, err = run_cli(capsys, "fill-mask", folder, FILL[0], FILL[2], "--top-k", 3, "--json")
    assert code == 0 and err == ""
    records = json_lines(out)
    assert [r["text"] for r in records] == [FILL[0], FILL[2]]
    assert_close_records(records[0]["predictions"], theirs(FILL[0], top_k=3), ("token", "token_str", "sequence"))
    for o, t in zip(records[1]["predictions"], theirs(FILL[2], top_k=3)):
        assert_close_records(o, t, ("token", "token_str", "sequence"))
    code, out, err = run_cli(capsys, "fill-mask", folder, FILL[0], "--top-k", 2)
    lines = out.splitlines()
    assert code == 0 and lines[0] == FILL[0]
    assert lines[1:3] == [f"  {r['score']:8.4f}  {r['token_str']}" for r in theirs(FILL[0], top_k=2)]


def test_cli_classify_pairs_and_jsonl(checkpoint, capsys, tmp_path):
    folder, ref = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    theirs = transformers.pipeline("text-classification", model=ref, tokenizer=hf_tokenizer(folder), top_k=None)

    def expected(p, h=None):
        return theirs({"text": p, "text_pair": h}) if h else theirs([p])[0]

    code, out, err = run_cli(capsys, "classify", folder, PREMISES[0], PREMISES[1], "--pair", HYPOTHESES[0], "--json")
    assert code == 0 and err == ""
    for r, p in zip(json_lines(out), PREMISES[:2]):
        assert r["text"] == p and r["pair"] == HYPOTHESES[0]
        assert_close_records(r["labels"], expected(p, HYPOTHESES[0]), ("label",))
    code, out, _ = run_cli(capsys, "classify", folder, *PREMISES[:2], "--pair", HYPOTHESES[0], "--pair", HYPOTHESES[1])
    blocks = out.strip().split("\n\n")
    assert code == 0 and len(blocks) == 2
    for block, p, h in zip(blocks, PREMISES, HYPOTHESES):
        assert block.splitlines()[:2] == [p, f"  pair: {h}"]
        assert [line.split() for line in block.splitlines()[2:]] == [
            [r["label"], f"{r['score']:.4f}"] for r in expected(p, h)]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"text": PREMISES[2], "pair": HYPOTHESES[2]}) + "\n\n"
                     + json.dumps({"text": PREMISES[0]}) + "\n")
    code, out, _ = run_cli(capsys, "classify", folder, "--file", jsonl, "--json", "--batch-size", 1)
    records = json_lines(out)  # the blank line is an empty text, as in a .txt file
    assert code == 0 and [(r["line"], r["text"], r.get("pair")) for r in records] == [
        (1, PREMISES[2], HYPOTHESES[2]), (2, "", None), (3, PREMISES[0], None)]
    assert_close_records(records[0]["labels"], expected(PREMISES[2], HYPOTHESES[2]), ("label",))
    assert_close_records(records[1]["labels"], expected(""), ("label",))
    assert_close_records(records[2]["labels"], expected(PREMISES[0]), ("label",))


def test_cli_embed_stdin_file_and_table(capsys, monkeypatch, tmp_path, minilm_reference):
    """One answer per line, blank lines included (an empty text), in order, with the line numbers;
    texts come from the arguments, stdin or --file, one of them."""
    model = minilm_path()
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(SENTENCES[:2]) + "\n\n" + SENTENCES[2] + "\n"))
    (tmp_path / "more.txt").write_text("\n".join(SENTENCES[3:5]) + "\r\n\n")  # CRLF, and a blank last line
    code, out, err = run_cli(capsys, "embed", model, "--json", "-")
    _, more, _ = run_cli(capsys, "embed", model, "--json", "--file", tmp_path / "more.txt")
    assert code == 0 and err == ""
    records = json_lines(out + more)
    assert [(r.get("line"), r["text"]) for r in records] == [
        (1, SENTENCES[0]), (2, SENTENCES[1]), (3, ""), (4, SENTENCES[2]), (1, SENTENCES[3]), (2, SENTENCES[4]), (3, "")]
    expected = reference_embeddings(minilm_path(), [r["text"] for r in records])
    np.testing.assert_allclose([r["embedding"] for r in records], expected, atol=1e-5)
    np.testing.assert_allclose(expected[[0, 1, 3]], minilm_reference[:3], atol=1e-6)
    for mixed in ([SENTENCES[5], "-"], [SENTENCES[5], "--file", tmp_path / "more.txt"], ["-", "--file", "x.txt"]):
        check_one_line_error(*run_cli(capsys, "embed", model, *mixed), ["embed"],
                             "give texts as arguments, '-' for stdin, or --file: one of them")
    code, out, _ = run_cli(capsys, "embed", model, *SENTENCES[:3])
    assert code == 0
    assert "384 dims, mean pooling, normalized" in out
    table = out.split("cosine similarity\n")[1].splitlines()
    sim = minilm_reference[:3] @ minilm_reference[:3].T
    assert [row.split()[1:] for row in table[1:]] == [[f"{s:.4f}" for s in row] for row in sim]


def test_cli_truncation_warning(capsys):
    code, out, err = run_cli(capsys, "embed", minilm_path(), "word " * 300, "--json")
    assert code == 0 and len(json_lines(out)) == 1
    assert err == ("npsqueeze embed: warning: 1 of 1 inputs are longer than the model's limit of 256 tokens "
                   "and were truncated (input 1)\n")


def test_cli_bad_input_one_line_exit_2(checkpoint, capsys, tmp_path, monkeypatch):
    mlm, _ = checkpoint("bert", "mlm", seed=1)
    nli, _ = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"\n')
    (tmp_path / "pairs.jsonl").write_text('{"text": "ok", "pair": "p"}\n')
    (tmp_path / "folder.npy").mkdir()
    no_vocab = tmp_path / "no_vocab"
    shutil.copytree(mlm, no_vocab)
    (no_vocab / "vocab.txt").unlink()
    cases = [
        (["embed", minilm_path()], "no input"),
        (["embed", minilm_path(), "x", "--max-length", "0"], "max_length must be a positive integer"),
        (["embed", minilm_path(), "x", "--out", tmp_path / "e.txt"], r"e.txt: the name must end in .npy or .jsonl"),
        (["embed", minilm_path(), "x", "--out", tmp_path / "no" / "e.npy"], "e.npy: no folder .*no"),
        (["embed", minilm_path(), "x", "--out", tmp_path / "folder.npy"], "folder.npy: is a folder"),
        (["classify", "squeezebert-mnli", "x"], r"squeezebert-mnli is a bundled config without weights: .*"
                                                r"see .*weights.*README.md for how to get it"),
        (["fill-mask", "squeezebert-uncased", "a [MASK]"], "bundled config without weights"),
        (["embed", "bert-base-uncased", "x"], "bundled config without weights"),
        (["classify", nli, "x", "--top-k", "0"], "top_k must be a positive integer"),
        (["embed", minilm_path(), "--file", tmp_path / "absent.txt"], "cannot read .*absent.txt"),
        (["embed", minilm_path(), "--file", tmp_path / "latin1.txt"], "cannot read .*latin1.txt"),
        (["embed", minilm_path(), "--file", tmp_path / "bad.jsonl"], 'bad.jsonl:2: expected an object .*"text"'),
        (["embed", minilm_path(), "--file", tmp_path / "broken.jsonl"], "broken.jsonl:1: not valid JSON"),
        (["embed", minilm_path(), "--file", tmp_path / "pairs.jsonl"], "embed takes single texts, not pairs"),
        (["embed", tmp_path / "absent", "x"], "no checkpoint folder at .*absent"),
        (["embed", minilm_path(), "x", "--batch-size", "0"], "batch_size must be a positive integer"),
        (["fill-mask", mlm, "no mask"], r"input 1 has no \[MASK\] token"),
        (["fill-mask", minilm_path(), "a [MASK]"], "fill-mask needs a model with a masked-LM head"),
        (["fill-mask", no_vocab, "a [MASK]"], "no tokenizer in"),
        (["classify", minilm_path(), "x"], "text-classification needs a model with a sequence-classification head"),
        (["classify", nli, "a", "b", "c", "--pair", "x", "--pair", "y"], "give --pair once, or once per text"),
        (["classify", nli, "--file", tmp_path / "pairs.jsonl", "--pair", "y"], "--pair cannot be combined"),
    ]
    monkeypatch.chdir(tmp_path)  # no folder named as a bundled model here
    for argv, match in cases:
        code, out, err = run_cli(capsys, *argv)
        check_one_line_error(code, out, err, argv, match)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8"))
    check_one_line_error(*run_cli(capsys, "embed", minilm_path(), "-"), ["embed"], "cannot read stdin")


def test_cli_options_anywhere_and_mistyped_options(checkpoint, capsys):
    """Options before, between and after the texts; a typo gets the subcommand's usage and a guess."""
    folder, ref = checkpoint("bert", "mlm", seed=1)
    theirs = transformers.pipeline("fill-mask", model=ref, tokenizer=hf_tokenizer(folder))
    code, out, err = run_cli(capsys, "fill-mask", "--top-k", 2, folder, "--json", FILL[0], "--batch-size", 1, FILL[1])
    assert code == 0 and err == ""
    for r, text in zip(json_lines(out), FILL[:2]):
        assert r["text"] == text and "line" not in r
        assert_close_answers(r["predictions"], theirs(text, top_k=2))
    for argv, guess in ((["embed", minilm_path(), "--flie", "x.txt"], "--file"),
                        (["embed", minilm_path(), "x", "--josn"], "--json"),
                        (["classify", folder, "x", "--top_k=2"], "--top-k"),
                        (["bench", "--repat", "3"], "--repeat"),
                        (["report", "--seqlen", "64"], "--seq-len")):
        with pytest.raises(SystemExit) as e:
            run_cli(capsys, *argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"usage: npsqueeze {argv[0]} "), err
        assert err.splitlines()[-1].startswith(f"npsqueeze {argv[0]}: error: unrecognized arguments: ")
        assert err.endswith(f"(did you mean {guess}?)\n"), err
    with pytest.raises(SystemExit):
        run_cli(capsys, "embed", minilm_path(), "x", "--zzzzzz")
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess
    for argv, guess in ((["flie-mask", "x"], "fill-mask"), (["report", "--head", "sequnce"], "sequence")):
        with pytest.raises(SystemExit) as e:  # a mistyped command or choice
            run_cli(capsys, *argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "invalid choice" in err and err.endswith(f"(did you mean {guess}?)\n"), err


def test_cli_help_names_what_each_command_takes(capsys):
    helps = {}
    for command in ("fill-mask", "classify", "embed"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = capsys.readouterr().out
        assert "--max-length N" in helps[command] and "--file FILE" in helps[command]
    assert "pair" not in helps["embed"].lower() and "pair" not in helps["fill-mask"].lower()
    assert '"pair"' in helps["classify"] and "--pair TEXT" in helps["classify"]
    assert "--out FILE" in helps["embed"] and "--top-k K" in helps["classify"]


def test_cli_embed_out_npy_and_jsonl(capsys, tmp_path, minilm_reference):
    """--out writes the embeddings whole, through a temporary file, or leaves the old file as it was."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES[:3]) + "\n")
    code, out, err = run_cli(capsys, "embed", minilm_path(), "--file", texts, "--out", tmp_path / "e.npy")
    assert code == 0 and out == "" and err == f"wrote {tmp_path / 'e.npy'}: 3 embeddings of 384 dims\n"
    saved = np.load(tmp_path / "e.npy")
    assert saved.shape == (3, 384) and saved.dtype == np.float32
    np.testing.assert_allclose(saved, minilm_reference[:3], atol=1e-5)
    code, out, _ = run_cli(capsys, "embed", minilm_path(), "--file", texts, "--out", tmp_path / "e.jsonl")
    _, printed, _ = run_cli(capsys, "embed", minilm_path(), "--file", texts, "--json")
    assert code == 0 and out == "" and (tmp_path / "e.jsonl").read_text() == printed
    assert [r["line"] for r in json_lines(printed)] == [1, 2, 3]
    code, _, err = run_cli(capsys, "embed", minilm_path(), "--file", tmp_path / "absent.txt", "--out", tmp_path / "e.npy")
    assert code == 2 and np.array_equal(np.load(tmp_path / "e.npy"), saved)  # a failed run leaves it whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl", "e.npy", "texts.txt"]  # no temporary file left
    with pytest.raises(SystemExit):
        run_cli(capsys, "embed", minilm_path(), "x", "--json", "--out", tmp_path / "e.npy")
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_max_length_and_top_k(checkpoint, capsys):
    long_text = "Grouped convolutions make BERT faster on phones. " * 4
    code, out, err = run_cli(capsys, "embed", minilm_path(), long_text, "--max-length", 8, "--json")
    assert code == 0 and "limit of 8 tokens" in err
    np.testing.assert_allclose(json_lines(out)[0]["embedding"],
                               reference_embeddings(minilm_path(), [long_text], max_length=8)[0], atol=1e-5)
    folder, ref = checkpoint("squeezebert", "sequence", seed=2, id2label=NLI, label2id={v: k for k, v in NLI.items()})
    theirs = transformers.pipeline("text-classification", model=ref, tokenizer=hf_tokenizer(folder))
    code, out, _ = run_cli(capsys, "classify", folder, PREMISES[0], PREMISES[1], "--top-k", 2, "--json")
    for r, p in zip(json_lines(out), PREMISES):
        assert_close_answers(r["labels"], theirs(p, top_k=2))


def check_one_line_error(code, out, err, argv, match):
    assert code == 2 and out == "", argv
    assert err.count("\n") == 1 and err.startswith(f"npsqueeze {argv[0]}: error: "), err
    assert re.search(match, err), (match, err)


def test_cli_end_to_end_in_a_subprocess(minilm_reference):
    """The real entry point: `python -m npsqueeze`, texts on stdin, and a bad input's exit status."""
    cmd = [sys.executable, "-m", "npsqueeze"]
    ok = subprocess.run(cmd + ["embed", str(minilm_path()), "-", "--json"], input="\n".join(SENTENCES) + "\n",
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stderr == ""
    np.testing.assert_allclose([json.loads(line)["embedding"] for line in ok.stdout.splitlines()],
                               minilm_reference, atol=1e-5)
    bad = subprocess.run(cmd + ["fill-mask", str(minilm_path()), "The capital of France is [MASK]."],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == ["npsqueeze fill-mask: error: fill-mask needs a model with a masked-LM head "
                                       "(a *ForMaskedLM checkpoint), but this one is a BertModel"]
    for env in ({}, {"LC_ALL": "C", "PYTHONUTF8": "1"}):  # UTF-8 mode would pass b"\xe9" on as a surrogate
        latin1 = subprocess.run(cmd + ["embed", str(minilm_path()), "-"], input=b"caf\xe9\n", capture_output=True,
                                timeout=120, env={**os.environ, **env})
        assert latin1.returncode == 2 and latin1.stdout == b""
        assert latin1.stderr.decode().splitlines() == [
            "npsqueeze embed: error: cannot read stdin: line 1 is not UTF-8 text (invalid continuation byte at byte 3 "
            "of the line)"]
