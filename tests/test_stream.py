"""The commands over files of any size: chunks run and written in input order, flat memory, resume
after a kill, Ctrl-C or a full disk, bad partials, closed pipes, bad text, NaN. Torch-free: small
random checkpoints over the real vocabulary, checked against the same pipeline run in one call."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import pty
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npsqueeze
from bounded import assert_one_line, cli_bounded, numpy_checkpoint
from npsqueeze.config import WEIGHTS_DIR
from npsqueeze.tools import stream
from npsqueeze.tools.cli import main
from npsqueeze.weights import HEADS

SQUEEZEBERT = json.loads((WEIGHTS_DIR / "squeezebert-uncased" / "config.json").read_text())
CONFIG = {**{k: v for k, v in SQUEEZEBERT.items() if k != "architectures"}, "hidden_size": 48, "embedding_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "max_position_embeddings": 64}
WORDS = "the quick brown fox jumps over a lazy dog while two men push carts through woods".split()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{head: checkpoint folder}: a small random SqueezeBERT, plain and with each head the commands use."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for head in (None, "sequence", "mlm"):
        architecture = {"architectures": ["SqueezeBert" + HEADS[head].suffix]} if head else {}
        folders[head] = numpy_checkpoint(root / f"squeezebert-{head}",
                                         {**CONFIG, **architecture, "id2label": {0: "no", 1: "yes"}}, head)
        shutil.copy(WEIGHTS_DIR / "vocab.txt", folders[head] / "vocab.txt")
    return folders


def lines(n: int, seed: int = 0) -> list[str]:
    """n texts of 0 to 20 words: some blank."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 20))) for _ in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Text files of 2,000 and 20,000 lines."""
    root = tmp_path_factory.mktemp("texts")
    made = {}
    for n in (2_000, 20_000):
        made[n] = root / f"{n}.txt"
        made[n].write_text("\n".join(lines(n)) + "\n")
    return made


def npsqueeze_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npsqueeze", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


# --- the pieces -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [0, 1, 7])
def test_npy_rows_are_the_bytes_of_np_save(rows):
    a = np.random.default_rng(0).standard_normal((rows, 5)).astype(np.float32)
    saved = io.BytesIO()
    np.save(saved, a)
    form = stream.NpyRows(5)
    assert len(form.header(0)) == len(form.header(10**12))  # rewritten in place at the end
    assert form.header(rows) + form.encode(a) == saved.getvalue()


def test_lines_as_read_and_counted(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_bytes(b"one\r\n\ntwo\nlast")
    with open(tmp_path / "a.txt", "rb") as f:
        assert list(stream.read_lines(f, "a.txt")) == [b"one\r\n", b"\n", b"two\n", b"last"]
    assert stream.count_lines(tmp_path / "a.txt") == 4
    (tmp_path / "b.txt").write_bytes(b"")
    assert stream.count_lines(tmp_path / "b.txt") == 0
    monkeypatch.setattr(stream, "MAX_LINE", 8)
    (tmp_path / "c.txt").write_bytes(b"12345678\n123456789\n")  # 8 bytes and a newline: fine; 9: too long
    with open(tmp_path / "c.txt", "rb") as f, pytest.raises(npsqueeze.NpsqueezeError, match="c.txt: line 2 is longer"):
        list(stream.read_lines(f, "c.txt"))


def test_ordered_keeps_input_order_and_a_bounded_window():
    from concurrent.futures import ThreadPoolExecutor

    submitted = []

    def chunks():
        for i in range(20):
            submitted.append(i)
            yield stream.Chunk(i, [i], "")

    def slow_first(c):
        time.sleep(0.02 * (c.start % 3 == 0))
        return c.start * 10

    with ThreadPoolExecutor(4) as pool:
        got = []
        for c, r in stream.ordered(slow_first, chunks(), pool, window=3):
            assert len(submitted) <= c.start + 3  # never more than `window` chunks ahead
            got.append((c.start, r))
    assert got == [(i, 10 * i) for i in range(20)]


# --- results, in order, in flat memory -----------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_embed_file_in_chunks_matches_one_call_in_input_order(models, tmp_path, workers):
    texts = lines(300, seed=1)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    common = [models[None], "--file", tmp_path / "in.txt", "--batch-size", 8, "--workers", workers]  # chunks of 32
    done = npsqueeze_cli("embed", *common, "--out", tmp_path / "e.npy")
    assert done.returncode == 0 and done.stderr == f"wrote {tmp_path / 'e.npy'}: 300 embeddings of 48 dims\n"
    want = npsqueeze.pipeline("sentence-embedding", models[None])(texts)  # [300, 48]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), want, atol=1e-6)
    printed = npsqueeze_cli("embed", *common, "--json")
    records = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [(r["line"], r["text"]) for r in records] == list(enumerate(texts, 1))
    np.testing.assert_allclose([r["embedding"] for r in records], want, atol=1e-6)
    assert (tmp_path / "e.npy").read_bytes() == npsqueeze_cli_bytes(common, tmp_path / "again.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.npy", "e.npy", "in.txt"]


def npsqueeze_cli_bytes(common, out: Path) -> bytes:
    assert npsqueeze_cli("embed", *common, "--out", out).returncode == 0
    return out.read_bytes()


def test_classify_and_fill_mask_stream_jsonl(models, tmp_path):
    texts = [t + " [MASK]" for t in lines(40, seed=2)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    done = npsqueeze_cli("fill-mask", models["mlm"], "--file", tmp_path / "in.txt", "--batch-size", 4,
                         "--top-k", 2, "--out", tmp_path / "f.jsonl")
    assert done.returncode == 0 and done.stderr == f"wrote {tmp_path / 'f.jsonl'}: 40 results\n"
    want = npsqueeze.pipeline("fill-mask", models["mlm"], top_k=2)(texts)
    got = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["line"] for r in got] == list(range(1, 41))
    for r, w in zip(got, want):
        assert [c["token"] for c in r["predictions"]] == [c["token"] for c in w]
        np.testing.assert_allclose([c["score"] for c in r["predictions"]], [c["score"] for c in w], rtol=1e-5)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"text": t, "pair": "yes"}) + "\n" for t in texts))
    done = npsqueeze_cli("classify", models["sequence"], "--file", tmp_path / "pairs.jsonl", "--batch-size", 4, "--json")
    want = npsqueeze.pipeline("text-classification", models["sequence"])(texts, ["yes"] * 40, top_k=None)
    got = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and [r["pair"] for r in got] == ["yes"] * 40
    for r, w in zip(got, want):
        assert [x["label"] for x in r["labels"]] == [x["label"] for x in w]


def test_json_lines_come_out_as_each_chunk_is_done(models):
    """With stdin still open, the first chunk's lines are already printed."""
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "-", "--json",
                                "--batch-size", "1", "--workers", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        command.stdin.write(b"one\ntwo\nthree\nfour\n")  # a chunk: 4 batches of 1
        command.stdin.flush()
        printed = b""
        while printed.count(b"\n") < 4 and select.select([command.stdout], [], [], 60)[0]:
            printed += os.read(command.stdout.fileno(), 1 << 16)
        assert [json.loads(line)["text"] for line in printed.splitlines()] == ["one", "two", "three", "four"]
        command.stdin.close()
        assert command.wait(60) == 0 and command.stdout.read() == b""
    finally:
        command.kill()


PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
assert done.returncode == 0, done.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KB: the largest process, workers included
"""


def test_peak_memory_does_not_grow_with_the_lines(models, files, tmp_path):
    """The whole file used to be held: 170 MB at 20,000 lines, 1,303 MB at 200,000."""
    peaks = {}
    for n, path in files.items():
        for out in ("e.npy", "e.jsonl"):
            run = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "npsqueeze", "embed", models[None],
                                  "--file", path, "--out", tmp_path / out], capture_output=True, text=True, check=True)
            peaks[n, out] = int(run.stdout) / 1024  # MB
    for out in ("e.npy", "e.jsonl"):
        assert peaks[20_000, out] <= 1.15 * peaks[2_000, out] and peaks[20_000, out] < 300, peaks


# --- resuming -------------------------------------------------------------------------------------

def kill_at(command: list, data: Path, at: int, sig=signal.SIGKILL) -> subprocess.CompletedProcess:
    """Run `command` in a process group of its own, and send it `sig` once `data` holds `at` bytes."""
    child = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if data.exists() and data.stat().st_size >= at:
            os.killpg(child.pid, sig)
            break
        time.sleep(0.005)
    _, err = child.communicate(timeout=300)
    assert child.returncode in (-sig, 128 + sig, 130), (child.returncode, err)  # killed, not finished
    return subprocess.CompletedProcess(command, child.returncode, "", err.decode())


def test_resume_after_kills_at_several_points_is_byte_identical(models, files, tmp_path):
    command = [sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file", str(files[20_000])]
    whole = npsqueeze_cli(*command[3:], "--out", tmp_path / "whole.npy")
    assert whole.returncode == 0
    out = tmp_path / "e.npy"
    size = (tmp_path / "whole.npy").stat().st_size
    kill_at(command + ["--out", str(out)], out.with_name("e.npy.partial") / "data", 0)  # while starting
    for fraction in (0.3, 0.6, 0.9):
        kill_at(command + ["--out", str(out), "--resume"], out.with_name("e.npy.partial") / "data", int(fraction * size))
        assert not out.exists()
    record = json.loads((tmp_path / "e.npy.partial" / "progress.json").read_text())
    assert 0 < record["done"] < 20_000
    done = npsqueeze_cli(*command[3:], "--out", out, "--resume")
    assert done.returncode == 0 and done.stderr == f"wrote {out}: 20,000 embeddings of 48 dims\n"
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "whole.npy"]


def test_ctrl_c_says_how_to_resume_and_jsonl_resumes_byte_identical(models, files, tmp_path):
    command = [sys.executable, "-m", "npsqueeze", "classify", str(models["sequence"]), "--file", str(files[20_000]),
               "--top-k", "1"]
    assert npsqueeze_cli(*command[3:], "--out", tmp_path / "whole.jsonl").returncode == 0
    out = tmp_path / "c.jsonl"
    stopped = kill_at(command + ["--out", str(out)], tmp_path / "c.jsonl.partial" / "data",
                      (tmp_path / "whole.jsonl").stat().st_size // 2, signal.SIGINT)
    done = json.loads((tmp_path / "c.jsonl.partial" / "progress.json").read_text())["done"]
    assert stopped.returncode == 130 and stopped.stderr == (
        f"npsqueeze classify: stopped with {done:,} inputs done, kept in {out}.partial: run the same command with "
        "--resume to go on\n")
    resumed = npsqueeze_cli(*command[3:], "--out", out, "--resume")
    assert resumed.returncode == 0 and out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_partial_from_another_run_or_damaged_is_one_line_and_kept(models, files, tmp_path):
    source = tmp_path / "in.txt"
    shutil.copy(files[20_000], source)
    out, partial = tmp_path / "e.npy", tmp_path / "e.npy.partial"
    command = [sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file", str(source), "--out", str(out)]
    kill_at(command, partial / "data", 400_000)
    kept = snapshot(partial)
    prefix = "npsqueeze embed: error: "
    assert_one_line(npsqueeze_cli(*command[3:]), f"{partial} holds an unfinished run (", "inputs done): add --resume",
                    prefix=prefix)
    recorded = json.loads(kept["progress.json"])["bytes"]
    (partial / "data").write_bytes(kept["data"][:recorded - 1])
    assert_one_line(npsqueeze_cli(*command[3:], "--resume"), f"{partial} is damaged: its data holds {recorded - 1:,} "
                    f"bytes, fewer than the {recorded:,} its progress records; remove it to start over", prefix=prefix)
    (partial / "data").write_bytes(kept["data"])
    (partial / "progress.json").write_text('{"run": ')
    assert_one_line(npsqueeze_cli(*command[3:], "--resume"), f"{partial} is damaged (progress.json: ", prefix=prefix)
    (partial / "progress.json").write_bytes(kept["progress.json"])
    assert_one_line(npsqueeze_cli(*command[3:], "--resume", "--max-length", 16), "is from another run (its max_length "
                    "differ from this one's)", prefix=prefix)
    os.utime(source)  # the input touched: maybe changed
    assert_one_line(npsqueeze_cli(*command[3:], "--resume"), "is from another run (its input modified differ",
                    prefix=prefix)
    assert snapshot(partial) == kept  # nothing reused, removed or changed


def test_resume_checks_the_input_read_again(models, tmp_path):
    """stdin has no size or time: the inputs done must hash as they did."""
    texts = ("\n".join(lines(600)) + "\n").encode()
    out, partial = tmp_path / "e.jsonl", tmp_path / "e.jsonl.partial"
    common = ["embed", str(models[None]), "-", "--batch-size", "4", "--workers", "1", "--out", str(out)]  # chunks of 16
    whole = npsqueeze_cli(*common[:-1], tmp_path / "whole.jsonl", input=texts.decode())
    assert whole.returncode == 0
    stopped = subprocess.Popen([sys.executable, "-m", "npsqueeze", *common], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    half = texts.index(b"\n", len(texts) // 2) + 1
    stopped.stdin.write(texts[:half])
    stopped.stdin.flush()
    time.sleep(stream.COMMIT_SECONDS + 0.5)
    stopped.stdin.write(texts[half:half + 2000])  # more chunks, a second later: recorded
    stopped.stdin.flush()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and done_in(partial) == 0:
        time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGKILL)
    stopped.communicate()
    assert done_in(partial) > 0
    assert_one_line(npsqueeze_cli(*common, "--resume", input=texts.decode().replace("the", "a")),
                    "the input differs in its first", prefix="npsqueeze embed: error: ")
    resumed = npsqueeze_cli(*common, "--resume", input=texts.decode())
    assert resumed.returncode == 0 and out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def done_in(partial: Path) -> int:
    try:
        return json.loads((partial / "progress.json").read_text())["done"]
    except (OSError, ValueError):
        return 0


def test_without_out_resume_is_refused(models):
    assert_one_line(npsqueeze_cli("embed", models[None], "x", "--resume"), "--resume continues a run writing --out")


# --- a full disk ----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB tmpfs (root only: skipped elsewhere; the simulated test below runs everywhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); test_a_full_disk_simulated covers the same")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_resumes(models, files, tmp_path, small_disk):
    out = small_disk / "e.npy"
    command = ["embed", models[None], "--file", files[2_000], "--out", out]  # 384 KB of rows
    done = npsqueeze_cli(*command)
    err = assert_one_line(done, f"cannot write {out}: no space left on device; ", f"kept in {out}.partial: make room, "
                          "then run the same command with --resume", prefix="npsqueeze embed: error: ")
    assert not out.exists() and "Traceback" not in err
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)
    assert npsqueeze_cli(*command, "--resume").returncode == 0
    assert npsqueeze_cli(*command[:-1], tmp_path / "whole.npy").returncode == 0
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes()


def test_a_full_disk_simulated(models, files, tmp_path, monkeypatch, capsys):
    """The third chunk's write finds the disk full: the two before it stay recorded; an old file stays whole."""
    out = tmp_path / "e.npy"
    out.write_bytes(b"old")
    writes = []

    def write_all(f, data):
        writes.append(len(data))
        if len(writes) == 4:  # the header, two chunks, then no room
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, data)

    real = stream.write_all
    monkeypatch.setattr(stream, "write_all", write_all)
    monkeypatch.setattr(stream, "COMMIT_SECONDS", 0)  # a record after every chunk
    argv = ["embed", str(models[None]), "--file", str(files[2_000]), "--out", str(out), "--workers", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"npsqueeze embed: error: cannot write {out}: no space left on device; 256 inputs are done and kept "
                   f"in {out}.partial: make room, then run the same command with --resume\n")
    assert out.read_bytes() == b"old"
    monkeypatch.setattr(stream, "write_all", real)
    assert main(argv + ["--resume"]) == 0
    assert npsqueeze_cli(*argv[:4], "--out", tmp_path / "whole.npy", "--workers", 1).returncode == 0
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes()


# --- pipes, empty files, the input rule, bad text, NaN ----------------------------------------------

@pytest.mark.parametrize("output", [["--json"], []])
def test_a_closed_pipe_ends_quietly(models, files, output):
    command = f"{sys.executable} -m npsqueeze classify {models['sequence']} --file {files[2_000]} {' '.join(output)}"
    done = subprocess.run(["bash", "-c", f"{command} | head -2; exit ${{PIPESTATUS[0]}}"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and len(done.stdout.splitlines()) == 2


def test_an_empty_file_is_an_empty_result(models, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    done = npsqueeze_cli("embed", models[None], "--file", tmp_path / "empty.txt", "--out", tmp_path / "e.npy")
    assert done.returncode == 0 and done.stderr == f"wrote {tmp_path / 'e.npy'}: 0 embeddings of 48 dims\n"
    saved = np.load(tmp_path / "e.npy")
    assert saved.shape == (0, 48) and saved.dtype == np.float32
    for command in ("embed", "classify"):
        done = npsqueeze_cli(command, models[None if command == "embed" else "sequence"], "--file",
                             tmp_path / "empty.txt", "--json")
        assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_txt_and_jsonl_lines_alike_rows_follow_lines(models, tmp_path):
    texts = ["first", "", "third", "   ", "fifth"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}) if t.strip() else t for t in texts) + "\n")
    rows = {}
    for name in ("in.txt", "in.jsonl"):
        assert npsqueeze_cli("embed", models[None], "--file", tmp_path / name, "--out", tmp_path / f"{name}.npy",
                             "--workers", 1).returncode == 0
        rows[name] = np.load(tmp_path / f"{name}.npy")
    embed = npsqueeze.pipeline("sentence-embedding", models[None])
    np.testing.assert_allclose(rows["in.txt"], embed(texts), atol=1e-6)  # row n-1: line n
    np.testing.assert_allclose(rows["in.jsonl"], embed([t.strip() and t for t in texts]), atol=1e-6)
    done = npsqueeze_cli("embed", "--help")
    assert "Input n (the n-th TEXT, or line n of stdin or --file) gives the n-th result" in " ".join(done.stdout.split())


def test_text_that_is_not_text_names_the_line_and_what(models, tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"fine\ncaf\xe9\n")
    (tmp_path / "surrogate.jsonl").write_text('{"text": "ok"}\n{"text": "ab\\ud800c"}\n')
    (tmp_path / "pair.jsonl").write_text('{"text": "ok", "pair": "\\udfff"}\n')
    prefix = "npsqueeze classify: error: "
    folder = models["sequence"]
    assert_one_line(npsqueeze_cli("classify", folder, "--file", tmp_path / "latin1.txt"),
                    f"cannot read {tmp_path / 'latin1.txt'}: line 2 is not UTF-8 text (invalid continuation byte at "
                    "byte 3 of the line)", prefix=prefix)
    assert_one_line(npsqueeze_cli("classify", folder, "--file", tmp_path / "surrogate.jsonl"),
                    f'{tmp_path / "surrogate.jsonl"}:2: "text" holds a lone surrogate (\\ud800) at character 2: it is '
                    "not text", prefix=prefix)
    assert_one_line(npsqueeze_cli("classify", folder, "--file", tmp_path / "pair.jsonl"),
                    '"pair" holds a lone surrogate (\\udfff) at character 0', prefix=prefix)
    done = subprocess.run([sys.executable, "-m", "npsqueeze", "classify", str(folder), "ok", b"caf\xe9"],
                          capture_output=True, text=True, timeout=300)
    assert_one_line(done, "text 2 holds the byte 0xe9, which is not UTF-8, at character 3: it is not text", prefix=prefix)


def test_a_jsonl_line_is_bounded_before_it_is_parsed(models, tmp_path):
    (tmp_path / "big.jsonl").write_bytes(b'{"text": "' + b"a" * (100 << 20) + b'"}\n')
    assert_one_line(cli_bounded("embed", models[None], "--file", tmp_path / "big.jsonl"),
                    "big.jsonl: line 1 is longer than 64 MiB, the most npsqueeze reads as one input: split it")


def test_nan_results_stay_strict_json_and_are_told(models, tmp_path):
    """Weights so large that the logits overflow: the scores are NaN, which JSON has no word for."""
    folder = tmp_path / "overflow"
    shutil.copytree(models["sequence"], folder)
    weights = load_file(folder / "model.safetensors")
    weights["classifier.weight"] = np.full_like(weights["classifier.weight"], 3e38)
    save_file(weights, folder / "model.safetensors")
    done = npsqueeze_cli("classify", folder, "one", "two", "--json")

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    records = [json.loads(line, parse_constant=refuse) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and len(records) == 2
    assert all(label["score"] is None for r in records for label in r["labels"])
    assert done.stderr == ("npsqueeze classify: warning: the results of 2 inputs hold NaN or infinity (null in JSON): "
                           "does the checkpoint hold NaN weights?\n")


# --- exits and progress -----------------------------------------------------------------------------

def test_worker_processes_end_before_the_interpreter_without_a_word(models, files, tmp_path):
    """The pool's shutdown at interpreter exit printed "Exception ignored in: <module 'threading'>" in 9
    of 20 runs of `embed --file ... --out` with 2 workers."""
    for _ in range(5):
        done = npsqueeze_cli("embed", models[None], "--file", files[2_000], "--out", tmp_path / "e.npy", "--workers", 2)
        assert done.returncode == 0 and done.stderr == f"wrote {tmp_path / 'e.npy'}: 2,000 embeddings of 48 dims\n"


def test_progress_on_a_terminal_only(models, files, tmp_path):
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows of 100 columns
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file",
                                str(files[20_000]), "--out", str(tmp_path / "e.npy")], stderr=child)
    os.close(child)
    shown = b""
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:  # the terminal's other end closed
            break
        if not data:
            break
        shown += data
    assert command.wait(300) == 0
    os.close(parent)
    text = shown.decode()
    assert "/20.0k [" in text and "line/s]" in text, text[-500:]  # lines done / total, time left, rate
    assert text.rstrip().endswith(f"wrote {tmp_path / 'e.npy'}: 20,000 embeddings of 48 dims"), text[-300:]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
@pytest.mark.parametrize("output", [["--json"], []])
def test_stdout_on_a_full_disk_is_one_line(models, output):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "a", "b", *output],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert_one_line(done, "npsqueeze embed: error: cannot write stdout: no space left on device")


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    from npsqueeze.tools.cli import atomic_write

    (tmp_path / "report.md").write_text("old")
    with pytest.raises(npsqueeze.NpsqueezeError, match=f"^cannot write {tmp_path / 'report.md'}: no space left on device$"):
        with atomic_write(tmp_path / "report.md") as f:
            f.write(b"new, half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"] and (tmp_path / "report.md").read_text() == "old"


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc to find the worker processes")
def test_a_worker_process_that_dies_is_one_line_and_the_work_done_kept(models, files, tmp_path):
    out = tmp_path / "e.npy"
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file",
                                str(files[20_000]), "--out", str(out), "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    data = tmp_path / "e.npy.partial" / "data"
    deadline = time.monotonic() + 300
    while not (data.exists() and data.stat().st_size > 500_000):
        assert command.poll() is None and time.monotonic() < deadline, command.communicate()
        time.sleep(0.01)
    workers = [c for c in children(command.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    _, err = command.communicate(timeout=300)
    assert_one_line(subprocess.CompletedProcess([], command.returncode, "", err),
                    "npsqueeze embed: error: a worker process ended unexpectedly")
    assert not out.exists()
    assert npsqueeze_cli("embed", models[None], "--file", files[20_000], "--out", out, "--resume").returncode == 0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc to find the worker processes")
def test_the_worker_processes_of_a_killed_command_end_too(models, files, tmp_path):
    out = tmp_path / "e.npy"
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file",
                                str(files[20_000]), "--out", str(out), "--workers", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = tmp_path / "e.npy.partial" / "data"
    deadline = time.monotonic() + 300
    while not (data.exists() and data.stat().st_size > 500_000):
        assert command.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    workers = [c for c in children(command.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(workers) == 2
    command.kill()  # the command alone, as `kill -9` or the out-of-memory killer would: it cannot stop them
    command.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if Path(f"/proc/{w}").exists() and "spawn_main" in Path(f"/proc/{w}/cmdline").read_text()]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "worker processes outlived their command"
    assert npsqueeze_cli("embed", models[None], "--file", files[20_000], "--out", out, "--resume").returncode == 0
