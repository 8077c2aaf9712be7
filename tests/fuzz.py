"""Hypothesis strategies for hostile files, and the property each must satisfy, run by test_fuzz.py in
a child process bounded in memory (tests/bounded.py): reading a safetensors header, a pickle opcode
stream (pytorch_model.bin, zip and legacy layouts), a config.json, or weights holding NaN, Inf or
values past float16 with more or fewer layers than the config says, either succeeds or raises one
NpsqueezeError line, each example within 10 s. No torch here: it would take the child's memory."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import npsqueeze
from npsqueeze import NpsqueezeError
from npsqueeze.torchbin import LEGACY_MAGIC, LEGACY_PROTOCOL, read_torch_bin
from npsqueeze.tools.convert import convert
from npsqueeze.tools.report import build_report
from npsqueeze.weights import SAFETENSORS_DTYPES, safetensors_file, weight_map
from safetensors.numpy import load_file, save_file

from bounded import numpy_checkpoint

EXAMPLES = settings(max_examples=150, deadline=None, database=None)


def bounded(read) -> None:
    """`read()` succeeds or raises one NpsqueezeError line, within 10 s (SIGALRM ends the process)."""
    signal.alarm(10)
    try:
        read()
    except NpsqueezeError as e:
        assert "\n" not in str(e) and len(str(e)) < 2000, str(e)
    finally:
        signal.alarm(0)


# --- values: small, edge and hostile numbers, strings, nested JSON ----------------------------------

numbers = st.sampled_from([0, 1, -1, 2, 3, 64, 511, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]) | st.integers(-3, 100)
floats = st.sampled_from([1e-12, 0.0, -1.0, 1e39, float("nan"), float("inf")]) | st.floats(allow_nan=False)
scalars = st.none() | st.booleans() | numbers | floats | st.text(max_size=8)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=12)


class Raw(str):
    """JSON text written as it is (nesting too deep for Python to build as a value)."""


deep = st.integers(1, 3000).map(lambda n: json.loads("[" * n + "]" * n) if n < 900 else Raw("[" * n))


def dumps(value) -> str:
    return value if isinstance(value, Raw) else json.dumps(value)


# --- safetensors headers ----------------------------------------------------------------------------

shapes = st.lists(numbers, max_size=4) | st.lists(st.just(1), min_size=60, max_size=70) | json_values
entries = st.fixed_dictionaries({
    "dtype": st.sampled_from([*SAFETENSORS_DTYPES, "BF16"]) | json_values,
    "shape": shapes,
    "data_offsets": st.lists(numbers, min_size=2, max_size=2) | json_values,
})
names = st.sampled_from(["a", "b"]) | st.text(max_size=4)
tables = st.dictionaries(names, entries, min_size=1, max_size=4) | st.dictionaries(names, entries | json_values, max_size=4)
headers = st.integers(0, 9).flatmap(lambda k: tables if k < 8 else json_values | deep)  # mostly tables


@EXAMPLES
@given(header=headers, data_len=st.integers(0, 64))
def safetensors_headers(tmp: Path, header, data_len: int) -> None:
    raw = dumps(header).encode()
    (tmp / "x.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\1" * data_len)

    def read():
        for a in safetensors_file(tmp / "x.safetensors")[0].values():
            a.tobytes()  # what was accepted reads in full
    bounded(read)


# --- pickle opcode streams --------------------------------------------------------------------------

def arg(fmt: str, values) -> st.SearchStrategy[bytes]:
    return values.map(lambda v: struct.pack(fmt, v))


def text(s: str) -> bytes:
    data = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def globals_(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


u8, u32 = st.integers(0, 255), st.sampled_from([0, 1, 2, 2**27, 2**31, 2**32 - 1]) | st.integers(0, 50)
opcodes = st.one_of(
    st.sampled_from([b"N", b")", b"]", b"}", b"(", b"2", b"0", b"1", b"t", b"\x85", b"\x86", b"\x87", b"l", b"d",
                     b"a", b"e", b"s", b"u", b"R", b"b", b"Q", b"\x88", b"\x89", b"\x8f", b"\x90", b"\x91", b"\x94",
                     b"\x93", b"\x81", b"o", b"N" + b"2\x86" * 40, b"N" + b"\x85" * 50_000]),
    arg("<B", u8).map(lambda b: b"K" + b), arg("<i", numbers.filter(lambda n: -2**31 <= n < 2**31)).map(lambda b: b"J" + b),
    arg("<B", u8).map(lambda b: b"q" + b), arg("<I", u32).map(lambda b: b"r" + b),
    arg("<B", u8).map(lambda b: b"h" + b), arg("<I", u32).map(lambda b: b"j" + b),
    u32.map(lambda n: b"p" + str(n).encode() + b"\n"),
    st.text(max_size=12).map(text), st.sampled_from(["storage", "0", "cpu", "FloatStorage"]).map(text),
    st.binary(max_size=20).map(lambda b: b"\x8a" + bytes([len(b)]) + b),  # LONG1: an int of up to 160 bits
    st.sampled_from([("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                     ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "HalfStorage"),
                     ("builtins", "eval"), ("os", "system"), ("copyreg", "_reconstructor")]).map(lambda mn: globals_(*mn)),
    arg("<Q", u32).map(lambda b: b"\x95" + b),  # FRAME
    arg("<Q", st.sampled_from([0, 8, 2**40, 2**63])).map(lambda b: b"\x96" + b),  # BYTEARRAY8
    arg("<d", floats).map(lambda b: b"G" + b),
)
streams = st.lists(opcodes, max_size=40).map(lambda ops: b"\x80\x02" + b"".join(ops) + b".")


def storage(key: str, numel: int, legacy: bool) -> bytes:
    """A BINPERSID of a FloatStorage, as torch.save writes it."""
    return (b"(" + text("storage") + globals_("torch", "FloatStorage") + text(key) + text("cpu")
            + integer(numel) + (b"N" if legacy else b"") + b"tQ")


def integer(v: int) -> bytes:
    return b"\x8a\x09" + v.to_bytes(9, "little", signed=True)  # LONG1, 9 bytes: any int64 and beyond


@st.composite
def tensors(draw, legacy: bool) -> bytes:
    """A state dict of one tensor with a drawn offset, shape and stride over a 12-element storage."""
    ints = st.one_of(st.integers(0, 13), st.integers(0, 13), st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63, -1]))
    ndim = draw(st.integers(0, 3) | st.just(65))
    offset, shape = draw(ints), draw(st.lists(ints, min_size=ndim, max_size=ndim))
    stride = draw(st.lists(ints, min_size=ndim, max_size=ndim) | st.lists(ints, max_size=3))
    ordered_dict = globals_("collections", "OrderedDict") + b")R"
    args = (b"(" + storage("0", 12, legacy) + integer(offset) + b"(" + b"".join(map(integer, shape)) + b"t"
            + b"(" + b"".join(map(integer, stride)) + b"t" + b"\x89" + ordered_dict + b"t")
    return (b"\x80\x02" + ordered_dict + b"(" + text("t") + globals_("torch._utils", "_rebuild_tensor_v2") + args
            + b"Ru.")


FLOATS = np.arange(12, dtype="<f4").tobytes()


def write_bin(path: Path, pkl: bytes, legacy: bool) -> Path:
    if legacy:
        parts = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(LEGACY_PROTOCOL, 2),
                 pickle.dumps({"protocol_version": LEGACY_PROTOCOL, "little_endian": True}, 2), pkl,
                 pickle.dumps(["0"], 2), (12).to_bytes(8, "little"), FLOATS]
        path.write_bytes(b"".join(parts))
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/byteorder", b"little")
            z.writestr("archive/data/0", FLOATS)
    return path


@EXAMPLES
@given(legacy=st.booleans(), data=st.data())
def pickle_streams(tmp: Path, legacy: bool, data) -> None:
    pkl = data.draw(streams | tensors(legacy))
    path = write_bin(tmp / "pytorch_model.bin", pkl, legacy)

    def read():
        for a in read_torch_bin(path).values():
            a.tobytes()
    bounded(read)


# --- config.json values -----------------------------------------------------------------------------

SMALL = {"model_type": "squeezebert", "vocab_size": 30, "hidden_size": 12, "embedding_size": 12,
         "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 24, "max_position_embeddings": 16,
         "q_groups": 2, "k_groups": 3, "v_groups": 1, "post_attention_groups": 2, "intermediate_groups": 4,
         "output_groups": 3, "architectures": ["SqueezeBertForSequenceClassification"], "num_labels": 3}
FIELDS = [*SMALL, "layer_norm_eps", "hidden_act", "type_vocab_size", "pad_token_id", "tie_word_embeddings",
          "id2label"]


@EXAMPLES
@given(changes=st.dictionaries(st.sampled_from(FIELDS), json_values | numbers | deep, min_size=1, max_size=3))
def config_values(tmp: Path, changes: dict) -> None:
    folder = tmp / "ckpt" if (tmp / "ckpt").is_dir() else numpy_checkpoint(tmp / "ckpt", SMALL, "sequence")
    fields = [f'"{k}": {dumps(v)}' for k, v in {**SMALL, **changes}.items()]
    (folder / "config.json").write_text("{" + ", ".join(fields) + "}")

    def load_and_run():
        model = npsqueeze.from_pretrained(folder)
        assert np.isfinite(model(np.ones((1, 4), np.int64))[0]).all()  # the logits, or the base model's last hidden state
    bounded(load_and_run)
    config = str(folder / "config.json")
    bounded(lambda: build_report([config], seq_len=8, baseline=config))


# --- weight values and layer counts ------------------------------------------------------------------

poisons = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                             st.sampled_from([np.nan, np.inf, -np.inf, 1e39, 7e4, 65504.0, -1e-45])), max_size=3)


@EXAMPLES
@given(held=st.integers(1, 4), layers=st.integers(1, 4), poisoned=poisons, dtype=st.sampled_from(["float32", "float16"]))
def weight_values(tmp: Path, held: int, layers: int, poisoned: list, dtype: str) -> None:
    """A checkpoint of `held` layers, `poisoned` (tensor number, position, value: 1e39 stored in
    float64, past float32), under a config of `layers` layers: loading and converting succeed, with
    one warning line at most, or name the tensor or the layers in one line."""
    folder = numpy_checkpoint(tmp / "ckpt", {**SMALL, "num_hidden_layers": held}, "sequence")
    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    broken = set()  # the tensors holding NaN or Inf once read as float32
    for which, where, value in poisoned:
        name = names[which % len(names)]
        t = tensors[name].astype(np.float64 if value == 1e39 else np.float32)
        t.flat[where % t.size] = value
        tensors[name] = t
        if not np.isfinite(np.float32(value)):
            broken.add(name)
    save_file(tensors, folder / "model.safetensors")
    config = {**SMALL, "num_hidden_layers": layers}
    (folder / "config.json").write_text(json.dumps(config))
    used = {e.source for e in weight_map(npsqueeze.Config.from_dict(config), "sequence")}

    def load_and_run(path: Path) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = npsqueeze.from_pretrained(path)
            except NpsqueezeError as e:
                assert layers > held or "holds" in str(e) and any(f"tensor {n} holds" in str(e) for n in broken & used), e
                raise
        assert (layers > held or not broken & used) and [str(w.message).count("\n") for w in caught] in ([], [0])
        assert len(caught) == (held > layers and path == folder)  # a converted folder holds only the layers it runs
        assert np.isfinite(model(np.ones((1, 4), np.int64)).logits).all()
    bounded(lambda: load_and_run(folder))
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)  # the last example's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bounded(lambda: convert(folder, out, dtype, force=True))
    if out.is_dir():
        bounded(lambda: load_and_run(out))


CASES = {"safetensors": safetensors_headers, "pickle": pickle_streams, "config": config_values,
         "weights": weight_values}


def run(case: str, tmp: str) -> None:
    CASES[case](Path(tmp))
    print("ok")
