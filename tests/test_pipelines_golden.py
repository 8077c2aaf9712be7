"""The torch-free tier of test_pipelines_api.py: npsqueeze's pipelines against the answers
transformers' pipelines and sentence-transformers' encode gave, which make_golden.py recorded
(tests/golden/pipelines.json, pipelines/, encode.npz)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from checkpoints import minilm_path
from npsqueeze import Tokenizer
from test_pipelines import assert_close_answers

GOLDEN = Path(__file__).parent / "golden"
RECORDED = json.loads((GOLDEN / "pipelines.json").read_text())
MODELS = {"fill-mask": npsqueeze.BertForMaskedLM, "text-classification": npsqueeze.BertForSequenceClassification,
          "token-classification": npsqueeze.BertForTokenClassification}


@pytest.fixture(scope="module")
def loaded():
    """Each task's model from the one weight file of pipelines/, and its tokenizer."""
    folder = GOLDEN / RECORDED["folder"]
    tokenizer = Tokenizer.from_pretrained(folder)
    return {task: (cls.from_pretrained(folder), tokenizer) for task, cls in MODELS.items()}


@pytest.mark.parametrize("task", list(MODELS))
def test_pipelines_give_transformers_recorded_answers(loaded, task):
    calls = [c for c in RECORDED["calls"] if c["task"] == task]
    assert len(calls) >= 15
    for c in calls:
        pipe = npsqueeze.pipelines.TASKS[task](*loaded[task], **c["construction"])
        inputs = c["inputs"] if isinstance(c["inputs"], (str, list)) else dict(c["inputs"])
        assert_close_answers(pipe(inputs, **c["options"]), c["expected"])


@pytest.fixture(scope="module")
def encoded():
    with np.load(GOLDEN / "encode.npz", allow_pickle=False) as z:
        return dict(z)


def test_encode_gives_sentence_transformers_recorded_embeddings(encoded):
    embed = npsqueeze.SentenceEmbedding.from_pretrained(minilm_path())
    texts = str(encoded["texts"]).split("\n")
    for precision in ("int8", "uint8", "binary", "ubinary"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = embed.encode(texts, precision=precision)
        want = encoded[precision]
        assert got.dtype == want.dtype and got.shape == want.shape, precision
        # a value at a bucket's edge may fall either side: float32 sums differ in their last bits
        assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= ("int8" in precision), precision
    prompted = embed.encode(texts, prompt="query: ")
    np.testing.assert_allclose(prompted, encoded["prompt_query"], atol=1e-5)
    np.testing.assert_allclose(embed.encode(texts, truncate_dim=100, normalize_embeddings=True),
                               encoded["truncate_normalize"], atol=1e-5)
    for i, states in enumerate(embed.encode(texts[:2], output_value="token_embeddings")):
        np.testing.assert_allclose(states, encoded[f"token_embeddings.{i}"], atol=1e-4)
    np.testing.assert_allclose(embed.similarity(prompted, embed.encode(texts[:2])), encoded["similarity"], atol=1e-5)
