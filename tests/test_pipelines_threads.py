"""One pipeline shared by many threads, each call with its own options, answers each call exactly as
it answers that call made alone; and every entry point runs with the threads the pipeline was given."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from npsqueeze import parallel
from test_pipelines import SENTENCES

FOLDER = Path(__file__).parent / "golden" / "pipelines"
LONG = "Grouped convolutions make BERT faster on phones, and attention stays as it was. " * 400  # ~6,000 tokens
TEXTS = [*SENTENCES, LONG, "", "x " * 70, LONG[:300]]
MASKED = [f"The [MASK] is here. {t}" for t in SENTENCES[:4]] + ["[MASK] " + LONG, "a [MASK] b [MASK] c"]


@pytest.fixture(scope="module")
def pipelines():
    """One pipeline per task on the golden tiny BERT (32 positions; its weight file holds every head
    these tasks need), which the torch-free tier has too."""
    tokenizer = npsqueeze.Tokenizer.from_pretrained(FOLDER)
    return {task: npsqueeze.pipelines.TASKS[task](cls.from_pretrained(FOLDER), tokenizer, threads=1)
            for task, cls in [("fill-mask", npsqueeze.BertForMaskedLM),
                              ("text-classification", npsqueeze.BertForSequenceClassification),
                              ("feature-extraction", npsqueeze.BertModel), ("sentence-embedding", npsqueeze.BertModel)]}


def random_calls(n: int, seed: int = 0) -> list[tuple[str, tuple, dict]]:
    """(task, args, options) of n calls with mixed inputs and options, long texts among them."""
    rng = random.Random(seed)
    calls = []
    for _ in range(n):
        task = rng.choice(["fill-mask", "text-classification", "feature-extraction", "sentence-embedding"])
        options = {k: rng.choice(v) for k, v in {"max_length": [None, None, 5, 8, 16, 31, 32, 64],
                                                 "batch_size": [None, 1, 2, 3, 32]}.items()}
        options = {k: v for k, v in options.items() if v is not None}
        pool = MASKED if task == "fill-mask" else TEXTS
        texts = rng.sample(pool, rng.randint(1, 5))
        args: tuple = (texts if len(texts) > 1 or rng.random() < 0.5 else texts[0],)
        if task == "fill-mask":
            options["top_k"] = rng.choice([1, 3, 7])
            options["max_length"] = max(options.get("max_length", 32), 16)  # keep a [MASK] within reach
        elif task == "text-classification":
            options["top_k"] = rng.choice([None, 1, 2, "best"])
            if rng.random() < 0.5:  # sentence pairs, long ones too
                args = (texts, [rng.choice(TEXTS) for _ in texts])
        elif task == "feature-extraction":
            options["return_tensors"] = True
        calls.append((task, args, options))
    return calls


def same(a, b) -> bool:
    """Exactly equal answers: arrays bit for bit, lists and dicts item by item."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.filterwarnings("ignore:.*were truncated")
def test_sixteen_threads_get_what_each_call_gets_alone(pipelines):
    calls = random_calls(960)
    alone = [pipelines[task](*args, **options) for task, args, options in calls]
    order = list(range(len(calls)))
    random.Random(1).shuffle(order)  # neighbours in time are different tasks and options

    def run(i):
        task, args, options = calls[i]
        return i, pipelines[task](*args, **options)

    with ThreadPoolExecutor(16) as callers:
        together = dict(callers.map(run, order, timeout=600))
    wrong = [calls[i][0] + f" {calls[i][2]}" for i in range(len(calls)) if not same(together[i], alone[i])]
    assert len(together) == len(calls) == 960
    assert not wrong, f"{len(wrong)} of {len(calls)} threaded calls differ from the same call alone: {wrong[:5]}"


def recorded_threads(pipe) -> list[int]:
    """The thread count each forward pass of `pipe` saw, recorded by a wrapper round its model's encoder."""
    seen = []
    encoder = pipe.model.encoder

    def recording(*args, **kwargs):
        seen.append(parallel.get_threads())
        return encoder(*args, **kwargs)

    pipe.model.encoder = recording
    return seen


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_encode_and_call_run_with_the_pipelines_threads(threads):
    """Every entry point honours `threads=` (None: the library's default), and never changes the
    threads of the rest of the program."""
    embed = npsqueeze.SentenceEmbedding(npsqueeze.BertModel.from_pretrained(FOLDER),
                                        npsqueeze.Tokenizer.from_pretrained(FOLDER), threads=threads)
    outside = parallel.get_threads()
    seen = recorded_threads(embed)
    embed(SENTENCES[:3])
    embed.encode(SENTENCES[:3], batch_size=2)
    embed(SENTENCES[0], output_value="token_embeddings")
    assert len(seen) == 4
    assert set(seen) == {outside if threads is None else threads}
    assert parallel.get_threads() == outside
    with ThreadPoolExecutor(2) as other:  # a thread of its own: the same settings
        other.submit(embed.encode, SENTENCES[:2]).result()
    assert seen[-1] == seen[0]
