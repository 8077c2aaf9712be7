"""One Tokenizer shared by many threads, each call with its own options: every result is exactly
what the same call gives alone (the shared backend is never reconfigured per call)."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import pytest

from checkpoints import minilm_path
from npsqueeze import NpsqueezeError, Tokenizer
from npsqueeze.config import WEIGHTS_DIR

THREADS, CALLS = 16, 125  # 2,000 calls per tokenizer, each compared with the same call alone
WORDS = "the quick brown fox jumps over a lazy dog naïve café 北京 👍 unbelievable , . ! [MASK]".split()


def texts(rng: random.Random, long: int = 3000) -> list[str]:
    """Short texts, and a long one of `long` words: one whose start the prefix scan reads."""
    lengths = [rng.choice([0, 1, 3, 8, 20, 60]) for _ in range(rng.randint(1, 4))]
    lengths[0] = rng.choice([lengths[0], long])
    return [" ".join(rng.choice(WORDS) for _ in range(n)) for n in lengths]


def random_call(rng: random.Random) -> tuple[str, tuple, dict]:
    """(method, args, kwargs): a call of the tokenizer or of `encodings`, with mixed options."""
    batch = texts(rng)
    pairs = rng.choice([None, texts(rng)[:1] * len(batch), [rng.choice(["", "x y", None]) for _ in batch]])
    max_length = rng.choice([None, 8, 13, 32, 64, 512])
    strategy = rng.choice([True, True, "longest_first", "only_first", "only_second", False])
    if rng.random() < 0.3:  # windows of a long second text, as question answering asks for them
        stride = rng.choice([0, 1, 3])
        questions = texts(rng, long=8)
        return "encodings", (questions, [texts(rng, long=200)[0] for _ in questions]), dict(
            max_length=rng.choice([16, 24]), truncation="only_second", stride=stride)
    kwargs = dict(max_length=max_length, truncation=strategy if max_length else False,
                  padding=rng.choice([False, True, "max_length"] if max_length else [False, True]),
                  return_tensors=rng.choice([None, "np"]), add_special_tokens=rng.random() < 0.8,
                  return_offsets_mapping=rng.random() < 0.3, pad_to_multiple_of=rng.choice([None, None, 8]))
    if kwargs["padding"] == "max_length" and kwargs["pad_to_multiple_of"] and max_length % 8:
        kwargs["pad_to_multiple_of"] = None
    if rng.random() < 0.3:  # a single text
        return "__call__", (batch[0], rng.choice([None, "", "a second text"])), kwargs
    return "__call__", (batch, pairs), kwargs


def outcome(tok: Tokenizer, method: str, args: tuple, kwargs: dict):
    """A call's result as plain values, or its error message."""
    try:
        result = getattr(tok, method)(*args, **kwargs)
    except NpsqueezeError as e:
        return "error", str(e)
    if method == "encodings":
        return [(e.ids, e.type_ids, e.offsets, [(o.ids, o.offsets) for o in e.overflowing]) for e in result]
    return [(k, v.tolist() if isinstance(v, np.ndarray) else v, type(v).__name__) for k, v in result.items()]


@pytest.mark.parametrize("folder", ["vocab.txt", "tokenizer.json"])
def test_shared_tokenizer_from_16_threads(folder):
    tok = Tokenizer.from_pretrained(WEIGHTS_DIR if folder == "vocab.txt" else minilm_path())
    rng = random.Random(24)
    calls = [random_call(rng) for _ in range(THREADS * CALLS)]
    alone = [outcome(tok, *c) for c in calls]  # each call made alone, one after another
    assert sum(a[0] == "error" for a in alone) < len(calls) // 3  # mostly real results, some errors
    fd2 = os.fstat(2)
    together: list = [None] * len(calls)
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        start.wait()
        for i in range(t, len(calls), THREADS):
            together[i] = outcome(tok, *calls[i])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    mismatches = [i for i, (a, b) in enumerate(zip(alone, together)) if a != b]
    assert len(together) == THREADS * CALLS and not mismatches, (len(mismatches), calls[mismatches[0]])
    after = os.fstat(2)  # library_errors put file descriptor 2 back where it was
    assert (after.st_dev, after.st_ino) == (fd2.st_dev, fd2.st_ino)
    assert len(tok.copies) <= 16  # the truncating backends kept stay bounded


def test_library_output_reaches_stderr_from_threads(capfd):
    """While threads tokenize (each holding stderr in a file), what is written to stderr still arrives."""
    tok = Tokenizer.from_pretrained(WEIGHTS_DIR)
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        for i in range(50):
            tok(["some text"] * 4, max_length=8 + t, truncation=True, padding=True)
            os.write(2, f"<{t}:{i}>".encode())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    err = capfd.readouterr().err
    assert sorted(err[1:-1].split("><")) == sorted(f"{t}:{i}" for t in range(8) for i in range(50))
