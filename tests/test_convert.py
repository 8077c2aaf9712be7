"""`npsqueeze convert` and loading converted folders: every head and both checkpoint formats round-trip
to identical arrays and outputs, memory-mapped; every bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import collections
import hashlib
import json
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import npsqueeze
from npsqueeze import NpsqueezeError
from npsqueeze.tools import cli
from npsqueeze.tools.convert import clean_stale, convert
from npsqueeze.weights import CONVERTED, safetensors_file, weight_map
from optional import torch
from checkpoints import EXPECTED, HEADS, assert_parity, build, inputs, minilm_path, reference
from test_weights_safetensors import root_base
from test_weights_torchbin import Call, Global, System, dumps, member_offset, write_legacy

LABELS = {"qa": 2, "sequence": 5, "token": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folder, transformers model) of a random checkpoint, built once per module for each key."""
    cache = {}

    def get(family="squeezebert", head=None, fmt="bin"):
        key = (family, head, fmt)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"{family}-{head}-{fmt}") / "src"
            model = build(path, family, head, seed=0, fmt=fmt, num_labels=LABELS.get(head, 2))
            cache[key] = path, model
        return cache[key]

    return get


def flat(params, prefix=""):
    """The engine's nested params as {dotted name: array}."""
    items = params.items() if isinstance(params, dict) else enumerate(params)
    out = {}
    for k, v in items:
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else {f"{prefix}{k}": v})
    return out


def model_inputs(model, head, seed=0):
    return inputs((2, 3, 20) if head == "choice" else (3, 20), model.config.vocab_size, seed)


def run_cli(*args, capsys):
    capsys.readouterr()  # drop what building the checkpoint printed
    code = cli.main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, out, err, fragments, parent: Path, dst: Path):
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("npsqueeze convert: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert not dst.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(".")]  # no half-written temporary folder
    assert not (parent / "marker").exists()


# --- round trips ---------------------------------------------------------------------------------

ROUND_TRIPS = ([("squeezebert", head, fmt) for fmt in ("bin", "safetensors") for head in HEADS]
               + [("bert", None, "bin"), ("bert", "mlm", "bin")])


@pytest.mark.parametrize("family, head, fmt", ROUND_TRIPS)
def test_convert_round_trips_exactly(built, tmp_path, family, head, fmt):
    src, ref = built(family, head, fmt)
    direct = npsqueeze.from_pretrained(src)
    assert convert(src, tmp_path / "out") == []
    converted = npsqueeze.from_pretrained(tmp_path / "out")
    assert type(converted) is type(direct)
    assert type(direct).__name__ == ("SqueezeBert" if family == "squeezebert" else "Bert") + HEADS[head]
    ours, theirs = flat(converted.params), flat(direct.params)
    assert ours.keys() == theirs.keys()
    for name, a in ours.items():
        assert a.dtype == np.float32 and a.shape == theirs[name].shape, name
        assert np.array_equal(a, theirs[name]), name
        assert not a.flags.writeable and isinstance(root_base(a), mmap.mmap), name  # no copy
    ids, mask, tt = model_inputs(ref, head)
    out_direct, out_converted = direct(ids, mask, tt), converted(ids, mask, tt)
    assert_parity(out_direct, reference(ref, ids, mask, tt), EXPECTED[head])
    for field in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits"):
        a, b = getattr(out_direct, field), getattr(out_converted, field)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), field


def test_converted_head_checkpoint_serves_the_base_model(built, tmp_path):
    src, ref = built("squeezebert", "mlm", "bin")
    convert(src, tmp_path / "out")
    base = npsqueeze.SqueezeBertModel.from_pretrained(tmp_path / "out")  # the pooler was kept
    ids, mask, tt = model_inputs(ref, None)
    assert_parity(base(ids, mask, tt), reference(ref.transformer, ids, mask, tt), EXPECTED[None])
    with pytest.raises(NpsqueezeError, match=rf"{CONVERTED}: squeezebert sequence model: missing 2 tensor\(s\): "
                                             r"classifier.weight, classifier.bias"):
        npsqueeze.SqueezeBertForSequenceClassification.from_pretrained(tmp_path / "out")


def test_float16_storage(built, tmp_path):
    src, ref = built("squeezebert", "mlm", "bin")
    convert(src, tmp_path / "f32")
    convert(src, tmp_path / "f16", dtype="float16")
    stored, _ = safetensors_file(tmp_path / "f16" / CONVERTED)
    assert {a.dtype for a in stored.values()} == {np.dtype(np.float16)}
    size = lambda name: (tmp_path / name / CONVERTED).stat().st_size  # noqa: E731
    assert 0.49 < size("f16") / size("f32") < 0.52
    m16, m32 = npsqueeze.from_pretrained(tmp_path / "f16"), npsqueeze.from_pretrained(tmp_path / "f32")
    assert all(a.dtype == np.float32 for a in flat(m16.params).values())  # upcast on load
    ids, mask, tt = model_inputs(ref, "mlm")
    l16, l32 = m16(ids, mask, tt).logits, m32(ids, mask, tt).logits
    theirs = reference(ref, ids, mask, tt).logits.numpy()
    assert 0 < np.abs(l16 - l32).max() < 2e-2 * np.abs(l32).max()
    np.testing.assert_allclose(l16, theirs, atol=2e-2 * np.abs(theirs).max(), rtol=0)


def shard_bin(folder: Path) -> None:
    """Split `folder`'s pytorch_model.bin in two shards with an index, as transformers 4 wrote them."""
    state = torch.load(folder / "pytorch_model.bin")
    (folder / "pytorch_model.bin").unlink()
    names = list(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save(collections.OrderedDict((n, state[n]) for n in part), folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_sharded_checkpoints(built, tmp_path, fmt):
    src, ref = built("squeezebert", "sequence", "bin")
    if fmt == "bin":
        shutil.copytree(src, tmp_path / "sharded")
        shard_bin(tmp_path / "sharded")
    else:
        ref.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    index = tmp_path / "sharded" / f"{'pytorch_model.bin' if fmt == 'bin' else 'model.safetensors'}.index.json"
    assert index.is_file() and len(set(json.loads(index.read_text())["weight_map"].values())) >= 2
    ids, mask, tt = model_inputs(ref, "sequence")
    direct = npsqueeze.from_pretrained(tmp_path / "sharded")(ids, mask, tt)
    assert_parity(direct, reference(ref, ids, mask, tt), ["logits"])
    convert(tmp_path / "sharded", tmp_path / "out")
    assert np.array_equal(npsqueeze.from_pretrained(tmp_path / "out")(ids, mask, tt).logits, direct.logits)
    sha = json.loads(safetensors_file(tmp_path / "out" / CONVERTED)[1]["sha256"])
    assert index.name in sha and len(sha) == 2 + len(set(json.loads(index.read_text())["weight_map"].values()))


def test_legacy_bin_converts(built, tmp_path):
    src, ref = built("squeezebert", "qa", "bin")
    shutil.copytree(src, tmp_path / "legacy")
    torch.save(ref.state_dict(), tmp_path / "legacy" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "legacy" / "pytorch_model.bin")
    convert(tmp_path / "legacy", tmp_path / "out")
    ids, mask, tt = model_inputs(ref, "qa")
    assert_parity(npsqueeze.from_pretrained(tmp_path / "out")(ids, mask, tt), reference(ref, ids, mask, tt),
                  EXPECTED["qa"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_metadata_and_side_files(built, tmp_path):
    src, _ = built("squeezebert", "token", "bin")
    shutil.copytree(src, tmp_path / "src")
    side = ["1_Pooling/config.json", "config.json", "modules.json", "vocab.txt"]
    modules = json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                          {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    # only the files loading reads are copied: not other JSON or text files, nor unlisted module folders
    for name in ["1_Pooling/config.json", "vocab.txt", ".cache/huggingface/x.json", "notes.md", "other.json",
                 "data.txt", "3_Dense/config.json"]:
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(json.dumps(name))
    (tmp_path / "src" / "modules.json").write_text(modules)
    convert(tmp_path / "src", tmp_path / "out")
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == sorted([*side, CONVERTED])
    for name in side:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    _, metadata = safetensors_file(tmp_path / "out" / CONVERTED)
    assert metadata == {
        "format": "npsqueeze", "npsqueeze_version": npsqueeze.__version__, "source": str(tmp_path / "src"),
        "sha256": json.dumps({n: sha256(tmp_path / "src" / n) for n in ("config.json", "pytorch_model.bin")})}


def test_real_sentence_transformers_checkpoint(tmp_path):
    # all-MiniLM-L6-v2: real BERT weights, with a tokenizer and sentence-transformers' pooling settings
    src = minilm_path()
    assert convert(src, tmp_path / "out") == []
    texts = ["SqueezeBERT runs on a phone.", "Grouped convolutions cut the FLOPs of BERT."]
    want = npsqueeze.pipeline("sentence-embedding", src)(texts)
    got = npsqueeze.pipeline("sentence-embedding", tmp_path / "out")(texts)
    assert got.shape == (2, 384) and np.array_equal(got, want)


def test_cli_success_reports_left_out_tensors(built, tmp_path, capsys):
    src, ref = built("squeezebert", "mlm", "bin")
    shutil.copytree(src, tmp_path / "src")
    state = ref.state_dict()
    state["cls.seq_relationship.weight"] = torch.ones(2, 96)  # BERT's NSP head: npsqueeze does not run it
    state["transformer.embeddings.position_ids"] = torch.arange(64)[None]  # a known buffer: not reported
    state["something.else"] = torch.ones(1)
    torch.save(state, tmp_path / "src" / "pytorch_model.bin")
    code, out, err = run_cli(tmp_path / "src", tmp_path / "out", capsys=capsys)
    assert code == 0
    assert out == f"wrote {tmp_path / 'out'}\n"
    assert err == ("npsqueeze convert: left out 2 tensor(s) npsqueeze does not use: cls.seq_relationship.weight, "
                   "something.else\n")  # and no progress bar: stderr is not a terminal
    cfg = npsqueeze.Config.from_file(src)
    assert set(safetensors_file(tmp_path / "out" / CONVERTED)[0]) == {  # the MLM head and the pooler
        e.name for head in ("mlm", None) for e in weight_map(cfg, head)}


def test_progress_bar_on_a_terminal(built, tmp_path, capsys, monkeypatch):
    src, _ = built("squeezebert", None, "bin")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run_cli(src, tmp_path / "out", capsys=capsys)
    assert code == 0 and "converting src" in err and "3/3" in err


def test_force_replaces_and_refuses_the_source(built, tmp_path):
    src, _ = built("squeezebert", None, "bin")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    convert(src, tmp_path / "out", force=True)
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / CONVERTED).is_file()
    with pytest.raises(NpsqueezeError, match="holds the source checkpoint"):
        convert(src, src, force=True)
    with pytest.raises(NpsqueezeError, match="holds the source checkpoint"):
        convert(src, src.parent, force=True)
    assert (src / "pytorch_model.bin").is_file()


def test_destination_inside_the_source(built, tmp_path):
    src, _ = built("squeezebert", None, "bin")
    shutil.copytree(src, tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "src" / "np")
    convert(tmp_path / "src", tmp_path / "src" / "np", force=True)  # does not copy the old np/ into itself
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted([
        "src/config.json", f"src/np/{CONVERTED}", "src/np/config.json", "src/pytorch_model.bin"])


# --- loading converted folders ---------------------------------------------------------------------

def test_converted_folder_is_checked_on_load(built, tmp_path):
    src, _ = built("squeezebert", "sequence", "bin")
    convert(src, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    (tmp_path / "out" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 144}))
    with pytest.raises(NpsqueezeError, match=rf"{CONVERTED}: squeezebert sequence model: tensor "
                                             r"encoder.layers.0.intermediate.conv1d.weight has shape \(4, 48, 24\), "
                                             r"the config says \(4, 36, 24\)"):
        npsqueeze.from_pretrained(tmp_path / "out")
    (tmp_path / "out" / "config.json").write_text(json.dumps(cfg))
    tensors, _ = safetensors_file(tmp_path / "out" / CONVERTED)
    save_file({k: np.array(v) for k, v in tensors.items()}, tmp_path / "out" / CONVERTED)  # no metadata
    with pytest.raises(NpsqueezeError, match="no format=npsqueeze metadata: not written by npsqueeze convert"):
        npsqueeze.from_pretrained(tmp_path / "out")
    (tmp_path / "out" / CONVERTED).write_bytes(b"\x10\0\0\0")
    with pytest.raises(NpsqueezeError, match=rf"{CONVERTED}: not a valid safetensors file: truncated"):
        npsqueeze.from_pretrained(tmp_path / "out")


# --- bad input: exit 2, one line naming the file and the tensor, nothing written --------------------

def edit_state(folder: Path, ref, edit) -> None:
    state = ref.state_dict()
    edit(state)
    torch.save(state, folder / "pytorch_model.bin")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def evil_zip(folder: Path, ref) -> None:
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as z:
        z.writestr("pytorch_model/data.pkl", pickle.dumps(System(f"touch {folder.parent / 'marker'}"), protocol=2))


def evil_legacy(folder: Path, ref) -> None:
    create = f"open({str(folder.parent / 'marker')!r}, 'w').close()"
    write_legacy(folder / "pytorch_model.bin", dumps(Call(Global("builtins.exec"), create)), {})


def memo_bomb(folder: Path, ref) -> None:  # the C unpickler allocates 32 GB for this memo index
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as z:
        z.writestr("pytorch_model/data.pkl", b"\x80\x02]r\xff\xff\xff\xff.")


def weights_a_folder(folder: Path, ref) -> None:
    (folder / "pytorch_model.bin").unlink()
    (folder / "pytorch_model.bin").mkdir()


def unreadable_weights(folder: Path, ref) -> None:
    (folder / "pytorch_model.bin").unlink()
    (folder / "pytorch_model.bin").symlink_to("/proc/self/mem")  # a file whose reads fail, even for root


def missing_shard(folder: Path, ref) -> None:
    shard_bin(folder)
    (folder / "pytorch_model-00002-of-00002.bin").unlink()


def edit_config(**changes):
    def edit(folder: Path, ref) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **changes}))
    return edit


def truncate(folder: Path, ref) -> None:
    (folder / "pytorch_model.bin").write_bytes((folder / "pytorch_model.bin").read_bytes()[:5000])


def corrupt_storage_3(folder: Path, ref) -> None:
    flip_byte(folder / "pytorch_model.bin", member_offset(folder / "pytorch_model.bin", "data/3"))


def drop_key_bias(folder: Path, ref) -> None:
    edit_state(folder, ref, lambda s: s.pop("transformer.encoder.layers.1.attention.key.bias"))


def int_query(folder: Path, ref) -> None:
    edit_state(folder, ref, lambda s: s.update(
        {"transformer.encoder.layers.0.attention.query.weight": torch.ones(96, 48, 1, dtype=torch.int32)}))


def bfloat16_bias(folder: Path, ref) -> None:
    edit_state(folder, ref, lambda s: s.update({"transformer.pooler.dense.bias": torch.ones(96).bfloat16()}))


def huge_bias(folder: Path, ref) -> None:
    edit_state(folder, ref, lambda s: s.update({"transformer.pooler.dense.bias": torch.full((96,), 1e6)}))


def nan_query(folder: Path, ref) -> None:
    def edit(state):
        state["transformer.encoder.layers.0.attention.query.weight"][0, 5, 0] = float("nan")
    edit_state(folder, ref, edit)


def inf_word_embedding(folder: Path, ref) -> None:  # one row +Inf: every score NaN, before
    edit_state(folder, ref, lambda s: s["transformer.embeddings.word_embeddings.weight"][7].fill_(float("inf")))


def no_weights(folder: Path, ref) -> None:
    (folder / "pytorch_model.bin").unlink()


def no_config(folder: Path, ref) -> None:
    (folder / "config.json").unlink()


BAD = {  # name -> (edit(folder, torch model), what the error says; {bin} is the weight file, {src} the folder)
    "hostile zip": (evil_zip, "{bin}: refused to unpickle posix.system"),
    "hostile legacy": (evil_legacy, "{bin}: refused to unpickle builtins.exec"),
    "truncated zip": (truncate, "{bin}: truncated or corrupted zip archive"),
    "corrupted storage": (corrupt_storage_3, "{bin}: tensor {storage3}: cannot read storage 3 (Bad CRC-32"),
    "missing tensor": (drop_key_bias, "{bin}: missing 1 tensor(s): encoder.layers.1.attention.key.bias"),
    "config disagrees": (edit_config(intermediate_size=144), "{bin}: tensor encoder.layers.0.intermediate.conv1d"
                         ".weight has shape (192, 24, 1), the config says (144, 24, 1)"),
    "integer dtype": (int_query, "{bin}: tensor encoder.layers.0.attention.query.weight has dtype int32, expected "
                      "floating point"),
    "bfloat16": (bfloat16_bias, "{bin}: tensor transformer.pooler.dense.bias has type torch.BFloat16Storage, which "
                 "npsqueeze does not read"),
    "float16 overflow": (huge_bias, "{bin}: tensor pooler.dense.bias overflows float16"),
    "NaN weight": (nan_query, "{bin}: tensor encoder.layers.0.attention.query.weight holds NaN (1 of 4,608 values, "
                   "the first at index (0, 5, 0)): the checkpoint is broken"),
    "Inf embedding": (inf_word_embedding, "{bin}: tensor embeddings.word_embeddings.weight holds Inf (96 of 20,256 "
                      "values, the first at index (7, 0)): the checkpoint is broken"),
    "memo bomb": (memo_bomb, "{bin}: holds a list, not a state dict of tensors"),
    "more layers than held": (edit_config(num_hidden_layers=1000), "{bin}: config.json says num_hidden_layers=1000, "
                              "but the checkpoint holds 2 layer(s)"),
    "absurd layer count": (edit_config(num_hidden_layers=10**9), "config: num_hidden_layers is 1,000,000,000: more "
                           "than the 1,024 npsqueeze accepts"),
    "no weights": (no_weights, "no weights in {src}"),
    "weights a folder": (weights_a_folder, "no weights in {src}"),
    "unreadable weights": (unreadable_weights, "{bin}: cannot read (Input/output error)"),
    "no config": (no_config, "no config.json at {src}"),
    "unknown architecture": (edit_config(architectures=["GPT2LMHeadModel"]), "unknown architecture 'GPT2LMHeadModel'"),
    "missing shard": (missing_shard, "pytorch_model.bin.index.json: shard 'pytorch_model-00002-of-00002.bin' is "
                      "missing"),
}
def with_tensor(path: Path, **info) -> None:
    """Rewrite the safetensors file at `path` with one more tensor entry, of no bytes, at the end."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    end = len(data) - 8 - n
    raw = json.dumps({**header, "extra": {"dtype": "F32", "data_offsets": [end, end], **info}}).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


ST_BAD = {
    "shape past int64": (lambda p: with_tensor(p, shape=[2**63 - 1, 0]),
                         "tensor extra: shape [9223372036854775807, 0] is too large for NumPy"),
    "65 dimensions": (lambda p: with_tensor(p, shape=[1] * 64 + [0]), "tensor extra: 65 dimensions"),
    "truncated safetensors": (lambda p: p.write_bytes(p.read_bytes()[:-100]), "not a valid safetensors file: tensor "),
    "garbage header": (lambda p: p.write_bytes(p.read_bytes()[:8] + b"#" * 20 + p.read_bytes()[28:]),
                       "not a valid safetensors file: header: not valid JSON"),
    "short file": (lambda p: p.write_bytes(b"\x05\0"), "not a valid safetensors file: truncated (2 bytes"),
}


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.skipif(
    case == "unreadable weights" and sys.platform != "linux", reason="/proc/self/mem is Linux's")) for case in BAD])
def test_bad_bin_checkpoints_are_refused(built, tmp_path, capsys, case):
    src, ref = built("squeezebert", "mlm", "bin")
    folder = tmp_path / "src"
    shutil.copytree(src, folder)
    edit, message = BAD[case]
    edit(folder, ref)
    storage3 = list(ref.state_dict())[3]  # torch numbers the storages in the order it meets them
    message = message.format(bin=folder / "pytorch_model.bin", src=folder, storage3=storage3)
    code, out, err = run_cli(folder, tmp_path / "out", "--dtype", "float16", capsys=capsys)
    assert_refused(code, out, err, [message], tmp_path, tmp_path / "out")


@pytest.mark.parametrize("case", list(ST_BAD))
def test_bad_safetensors_checkpoints_are_refused(built, tmp_path, capsys, case):
    src, _ = built("squeezebert", "mlm", "safetensors")
    shutil.copytree(src, tmp_path / "src")
    edit, message = ST_BAD[case]
    edit(tmp_path / "src" / "model.safetensors")
    code, out, err = run_cli(tmp_path / "src", tmp_path / "out", capsys=capsys)
    assert_refused(code, out, err, [f"{tmp_path / 'src' / 'model.safetensors'}: {message}"], tmp_path,
                   tmp_path / "out")


def test_bad_paths_are_refused(built, tmp_path, capsys):
    src, _ = built("squeezebert", None, "bin")
    (tmp_path / "file").write_text("x")
    (tmp_path / "taken").mkdir()
    for args, fragment, dst in [
        ((tmp_path / "nowhere", tmp_path / "out"), f"no checkpoint folder at {tmp_path / 'nowhere'}", tmp_path / "out"),
        ((tmp_path / "file", tmp_path / "out"), "is not a checkpoint folder", tmp_path / "out"),
        ((src, tmp_path / "no" / "out"), f"no folder {tmp_path / 'no'} to write out into", tmp_path / "no"),
        ((src, tmp_path / "taken"), f"{tmp_path / 'taken'} exists: pass --force to replace it", None),
        ((src, tmp_path / "file", "--force"), "exists and is not a folder", None),
    ]:
        code, out, err = run_cli(*args, capsys=capsys)
        assert_refused(code, out, err, [fragment], tmp_path, dst or tmp_path / "never")
    assert list((tmp_path / "taken").iterdir()) == [] and (tmp_path / "file").read_text() == "x"


def test_failure_while_writing_leaves_nothing(built, tmp_path, monkeypatch):
    src, _ = built("squeezebert", None, "bin")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")

    def broken(*args):
        raise NpsqueezeError("simulated read-back failure")

    monkeypatch.setattr("npsqueeze.tools.convert.load_params", broken)
    for dst, force in ((tmp_path / "new", False), (tmp_path / "out", True)):
        with pytest.raises(NpsqueezeError, match="simulated"):
            convert(src, dst, force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]


def test_hub_id_without_huggingface_hub(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    code, out, err = run_cli("squeezebert/squeezebert-uncased", "out", capsys=capsys)
    assert_refused(code, out, err, ["huggingface_hub is not installed",
                                    "`hf download squeezebert/squeezebert-uncased --local-dir DIR`"],
                   tmp_path, tmp_path / "out")


def test_hub_id_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "npsqueeze", "convert", "squeezebert/squeezebert-mnli", "out"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("npsqueeze convert: error: no folder squeezebert/squeezebert-mnli, and downloading "
                                 "it from the Hugging Face hub failed")
    assert "`hf download squeezebert/squeezebert-mnli --local-dir DIR`" in run.stderr
    assert not (tmp_path / "out").exists()


# --- kill -9 at every step: DST is the old folder or the new one, and what is left is cleaned up ------

def convert_killed(src: Path, dst: Path, step: str, swap: bool = True) -> None:
    """`npsqueeze convert SRC DST --force` in a child killed (SIGKILL) at `step`; without `swap`, as on
    a system that cannot swap two folders in one step."""
    code = ("import sys; import npsqueeze.tools.convert as c; from npsqueeze.tools.cli import main\n"
            + ("" if swap else "c.exchange = lambda a, b: False\n")
            + "sys.exit(main(['convert', sys.argv[1], sys.argv[2], '--force']))")
    done = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True,
                          env={**os.environ, "NPSQUEEZE_KILL_AT": step}, timeout=120)
    assert done.returncode == -9, done.stderr


def hidden(parent: Path) -> list[str]:
    return sorted(p.suffix for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("step, swap", [("written", True), ("swapped", True),  # renameat2 swaps in one step
                                        ("written", False), ("moved aside", False), ("swapped", False)])
def test_force_killed_at_every_step(built, tmp_path, step, swap):
    src, _ = built("squeezebert", "mlm", "bin")
    dst = tmp_path / "out"
    convert(src, dst)
    (dst / "old.txt").write_text("the old folder")
    convert_killed(src, dst, step, swap)
    # the old folder until the new one is in place; between two renames, the old one set aside
    if step == "moved aside":
        assert not dst.exists() and hidden(tmp_path) == [".old", ".tmp"]
    else:
        assert (dst / "old.txt").exists() == (step == "written")
        assert npsqueeze.from_pretrained(dst).config.num_hidden_layers == 2  # complete, either one
        # the new folder not yet moved, or the old one not yet removed
        assert hidden(tmp_path) == [".old" if step == "swapped" and not swap else ".tmp"]
    clean_stale(dst)  # what any later run does first
    assert hidden(tmp_path) == [] and npsqueeze.from_pretrained(dst)
    assert (dst / "old.txt").exists() == (step in ("written", "moved aside"))  # restored after "moved aside"


def test_killed_first_conversion_leaves_nothing_after_the_next_run(built, tmp_path, capsys):
    src, _ = built("squeezebert", None, "bin")
    dst = tmp_path / "out"
    convert_killed(src, dst, "written")
    assert not dst.exists() and hidden(tmp_path) == [".tmp"]  # hidden, complete, never seen as DST
    code, out, err = run_cli(src, dst, capsys=capsys)
    assert code == 0 and hidden(tmp_path) == [] and npsqueeze.from_pretrained(dst)


def test_clean_stale_leaves_live_runs_and_other_folders(tmp_path):
    dst = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that is gone: its id is free
    folders = {f".out.{child.pid}-0123abcd.tmp": False,  # a dead run's: removed
               f".out.{os.getpid()}-0123abcd.tmp": True,  # a live run's (this one): kept
               f".out.{child.pid}-0123abcd.cache": True, f".other.{child.pid}-0123abcd.tmp": True,  # not ours
               f".out.{child.pid}-nothex00.tmp": True, ".out.tmp": True}
    for name in folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    clean_stale(dst)
    assert {name: (tmp_path / name).exists() for name in folders} == folders
    assert not dst.exists()  # nothing to restore
