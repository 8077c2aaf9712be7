"""Batches as one row of positions, and more than one core: packed batches equal padded ones, BLAS
threads, worker processes (results in order, errors in one line, Ctrl-C leaves nothing behind).
Torch-free: the golden checkpoints transformers made, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from npsqueeze import NpsqueezeError, parallel
from npsqueeze.tools.tally import tally
from checkpoints import minilm_path

GOLDEN = Path(__file__).parent / "golden"
HEADS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
TEXTS = ["A man is playing a guitar.", "", "Share prices dropped sharply today, the third fall this week.",
         "Someone plays an instrument.", "The cat sat on the mat.", "Hi!", "A dog barked at the postman twice."]


def golden_batch(family: str, head: str, lengths: list[int], seed: int):
    """A golden checkpoint's model and a padded batch of sequences of `lengths`: ids, token types
    (0 then 1 from each sequence's middle) and attention mask, [N, W] each."""
    model = npsqueeze.ARCHITECTURES[("SqueezeBert" if family == "squeezebert" else "Bert") + head].from_pretrained(
        GOLDEN / family)
    lengths = np.array(lengths)
    W = lengths.max()
    ids = np.random.default_rng(seed).integers(1, model.config.vocab_size, (len(lengths), W))
    types = (np.arange(W) >= lengths[:, None] // 2).astype(np.int64)
    mask = (np.arange(W) < lengths[:, None]).astype(np.int64)
    return model, lengths, ids, types, mask


@pytest.mark.parametrize("family", ["squeezebert", "bert"])
@pytest.mark.parametrize("head", HEADS)
def test_packed_batch_equals_padded_batch_at_every_real_position(family, head):
    """forward() on sequences side by side with no padding == __call__ on the padded [N, W] batch."""
    model, lengths, ids, types, mask = golden_batch(family, head, [7, 3, 12, 12, 1], seed=0)
    padded = model(ids, mask, types)
    real = mask.astype(bool)
    packed = model.forward(ids[real], types[real], lengths)  # [N, W] -> [M]: the real positions, row by row
    for name in ("last_hidden_state", *model.per_position):
        got, want = getattr(packed, name), getattr(padded, name)
        if want is not None:
            np.testing.assert_allclose(got, want[real], atol=1e-5, rtol=0, err_msg=name)  # [N, W, ...] -> [M, ...]
    for name in ("pooler_output", "logits"):
        if name not in model.per_position and getattr(padded, name) is not None:
            np.testing.assert_allclose(getattr(packed, name), getattr(padded, name), atol=1e-5, rtol=0, err_msg=name)


def test_threads_are_set_at_run_time_and_scoped_per_thread():
    before = parallel.get_threads()
    seen = []
    with parallel.using_threads(1):
        assert parallel.get_threads() == 1
        other = threading.Thread(target=lambda: seen.append(parallel.get_threads()))  # not inside this block
        other.start()
        other.join()
    assert seen == [before] and parallel.get_threads() == before


@pytest.fixture
def small_parts(monkeypatch):
    """Share out inputs of any size (parallel.MIN_POSITIONS positions per thread, at least: 1)."""
    monkeypatch.setattr(parallel, "MIN_POSITIONS", 1)


def shares(lengths, fail=None):
    """What share_out hands each thread: (thread, lengths, ids, BLAS threads) per part, and what
    share_out returns."""
    seen = []

    def forward(ids, types, lengths, mask):
        if ids[0] == fail:
            raise NpsqueezeError("a part failed")
        seen.append((threading.get_ident(), lengths.tolist(), ids.tolist(), parallel.get_blas_threads()))
        time.sleep(0.05)  # the parts run at once, so each is on its own thread
        return {"per_position": ids * 10, "nested": (lengths.copy(), None)}

    lengths = np.array(lengths)
    ids = np.arange(lengths.sum())
    out = parallel.share_out(forward, ids, ids, lengths, None)
    return sorted(seen, key=lambda part: part[2][0]), out


@pytest.mark.parametrize("lengths, threads, parts", [
    ([7, 3, 12, 12, 1], 2, [[7, 3, 12], [12, 1]]),  # cut after the sequence that reaches half of the 35 positions
    ([5, 5, 5, 5], 2, [[5, 5], [5, 5]]),
    ([30, 1, 1], 2, [[30], [1, 1]]),  # no cut inside a sequence
    ([4, 4], 3, [[4], [4]]),  # no more parts than sequences
    ([2, 2, 2], 1, [[2, 2, 2]]),
    ([9], 2, [[9]]),  # a lone sequence: one thread
])
def test_a_batch_is_shared_out_among_threads_whole_sequences_each(small_parts, lengths, threads, parts):
    with parallel.using_threads(threads):
        seen, out = shares(lengths)
    assert [part[1] for part in seen] == parts
    assert len({part[0] for part in seen}) == len(parts)
    assert (threading.get_ident() in {part[0] for part in seen}) == (len(parts) == 1)
    cuts = np.cumsum([sum(p) for p in parts])[:-1]
    assert [part[2] for part in seen] == [a.tolist() for a in np.split(np.arange(sum(lengths)), cuts)]
    np.testing.assert_array_equal(out["per_position"], np.arange(sum(lengths)) * 10)  # side by side, in order
    np.testing.assert_array_equal(out["nested"][0], lengths)
    assert out["nested"][1] is None


@pytest.mark.parametrize("lengths, threads, blas", [([4, 4], 2, 1), ([8], 2, 2), ([4, 4], 1, 1)])
def test_blas_threads_per_pass_set_back_after(small_parts, lengths, threads, blas):
    """A shared-out pass runs each part's products on one BLAS thread (a BLAS thread that has just
    worked keeps spinning and would take a core from the parts); a pass on one thread gives its
    products all of `threads`. BLAS's count is set back after."""
    before = parallel.get_blas_threads()
    if before is None:
        pytest.skip("this BLAS does not say how many threads it uses")
    with parallel.using_threads(threads):
        seen, _ = shares(lengths)
    assert {part[3] for part in seen} == {blas}
    assert parallel.get_blas_threads() == before


def test_a_failing_part_raises_its_error(small_parts):
    with parallel.using_threads(2), pytest.raises(NpsqueezeError, match="a part failed"):
        shares([3, 3], fail=3)


@pytest.mark.parametrize("M, N, threads, want", [
    (127, 2, 2, 1), (128, 1, 2, 1), (128, 2, 2, 2), (600, 3, 4, 3), (1000, 1, 4, 1), (500, 8, 1, 1)])
def test_inputs_too_short_for_two_threads_run_on_one(M, N, threads, want):
    with parallel.using_threads(threads):
        assert parallel.threads_for(M, N) == want  # 64 positions per thread at least, a sequence each


def test_no_sharing_out_while_the_profile_counts(small_parts):
    with parallel.using_threads(2), tally():
        seen, _ = shares([3, 3])
    assert len(seen) == 1 and seen[0][0] == threading.get_ident()


def test_two_callers_at_once_each_get_their_own_answer(small_parts):
    """Each pass starts its own threads: passes at once, lone sequences among them, never wait for
    each other's parts."""
    model, lengths, ids, types, mask = golden_batch("squeezebert", "Model", [9, 12], seed=2)
    inputs = [(ids[:1], mask[:1], types[:1]), (ids, mask, types)]
    with parallel.using_threads(1):
        want = [model(*i).last_hidden_state for i in inputs * 3]
    with parallel.using_threads(2), ThreadPoolExecutor(6) as callers:
        got = list(callers.map(lambda i: model(*i).last_hidden_state, inputs * 3, timeout=60))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def share_out_a_batch(model):
    lengths = np.array([3, 3])
    model.forward(np.arange(6), np.zeros(6, np.int64), lengths)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_shares_out_batches_too(small_parts):
    """multiprocessing's default on Linux: a child forked after a pass that shared out a batch does too."""
    import multiprocessing

    model, *_ = golden_batch("squeezebert", "Model", [3, 3], seed=0)
    with parallel.using_threads(2):
        share_out_a_batch(model)
        child = multiprocessing.get_context("fork").Process(target=share_out_a_batch, args=(model,))
        child.start()
        child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the forked child hung or failed sharing out a batch"


@pytest.mark.parametrize("family", ["squeezebert", "bert"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("lengths", [[5, 9, 2, 9, 4], [9, 12]], ids=["batch", "lone"])
def test_two_threads_give_what_one_gives(small_parts, family, head, lengths):
    """Every output, padded and packed, hidden states included, with the batch on one thread or two: a
    batch's sequences shared out; a lone sequence, padded (the first of [9, 12]), on one thread."""
    model, lengths, ids, types, mask = golden_batch(family, head, lengths, seed=1)
    if len(lengths) == 2:
        lengths, ids, types, mask = lengths[:1], ids[:1], types[:1], mask[:1]  # 9 tokens, 3 padding
    real = mask.astype(bool)
    outputs = {}
    for threads in (1, 2):
        with parallel.using_threads(threads):
            outputs[threads] = (model(ids, mask, types, output_hidden_states=True),
                                model.forward(ids[real], types[real], lengths))
    for one, two in zip(outputs[1], outputs[2]):
        assert one.keys() == two.keys()
        for name in one.keys():
            for a, b in zip(*(o[name] if name == "hidden_states" else [o[name]] for o in (one, two)), strict=True):
                np.testing.assert_allclose(b, a, atol=1e-5, rtol=0, err_msg=name)


@pytest.fixture(scope="module")
def one_process():
    embed = npsqueeze.pipeline("sentence-embedding", minilm_path(), batch_size=2)
    return embed, embed(TEXTS)


def test_workers_give_the_same_embeddings_in_input_order(one_process):
    embed, want = one_process
    with_workers = npsqueeze.pipeline("sentence-embedding", minilm_path(), batch_size=2, workers=2)
    with_workers.workers.MIN_BATCHES_PER_WORKER = 1  # 4 batches: use the workers
    try:
        for _ in range(2):  # the second call reuses the processes
            np.testing.assert_array_equal(with_workers(TEXTS), want)
        assert with_workers.workers.pool is not None
    finally:
        with_workers.close()
    assert with_workers.workers.pool is None


@pytest.mark.parametrize("executor", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_any_executor(one_process, executor):
    _, want = one_process
    with executor(2) as pool:
        embed = npsqueeze.pipeline("sentence-embedding", minilm_path(), batch_size=2, executor=pool)
        np.testing.assert_array_equal(embed(TEXTS), want)
        features = npsqueeze.pipeline("feature-extraction", minilm_path(), batch_size=3, return_tensors=True)
        want = features(TEXTS)
        features.workers.executor = pool
        for got, w in zip(features(TEXTS), want, strict=True):  # [1, W_n, C] each
            np.testing.assert_array_equal(got, w)


def test_workers_need_a_folder(one_process):
    embed, _ = one_process
    built = npsqueeze.SentenceEmbedding(embed.model, embed.tokenizer, batch_size=1, workers=2)
    with pytest.raises(NpsqueezeError, match="only a pipeline made by from_pretrained"):
        built(TEXTS * 2)
    with pytest.raises(NpsqueezeError, match="workers must be a positive integer"):
        npsqueeze.SentenceEmbedding(embed.model, embed.tokenizer, workers=0)


def test_a_workers_error_is_one_line(tmp_path):
    """The checkpoint breaks after the pipeline loaded it: each worker, loading it, fails; the caller
    gets the worker's NpsqueezeError."""
    folder = tmp_path / "minilm"
    shutil.copytree(minilm_path(), folder)
    embed = npsqueeze.pipeline("sentence-embedding", folder, batch_size=1, workers=2)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(NpsqueezeError, match="config.json"):
        embed(TEXTS * 2)
    embed.close()


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment holds `mark`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_ctrl_c_stops_the_workers_and_leaves_nothing_behind(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS * 400) + "\n")
    mark = f"NPSQUEEZE_TEST_{uuid.uuid4().hex}"
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(minilm_path()), "--file", str(texts),
                                "--workers", "2", "--batch-size", "4", "--out", str(tmp_path / "out.npy")],
                               env=dict(os.environ, **{mark: "1"}), stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(marked_processes(mark)) < 3 and time.monotonic() < deadline:  # the command and its two workers
        time.sleep(0.1)
    assert len(marked_processes(mark)) >= 3, "the workers did not start"
    time.sleep(1)
    os.killpg(command.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 130
    assert b"Traceback" not in stderr, stderr.decode()
    deadline = time.monotonic() + 10
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(mark) == []
    # nothing half-written: the inputs done are kept in out.npy.partial/, for --resume
    assert not (tmp_path / "out.npy").exists() and set(tmp_path.iterdir()) <= {texts, tmp_path / "out.npy.partial"}
