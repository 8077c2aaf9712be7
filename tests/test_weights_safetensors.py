"""The memory-mapped safetensors reader: same arrays as the safetensors library, no copy, and a strict
header check -- broken or random headers raise NpsqueezeError and nothing else (fuzzed)."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save, save_file

from npsqueeze import NpsqueezeError
from npsqueeze.weights import SAFETENSORS_DTYPES, safetensors_file
from bounded import api_bounded
from checkpoints import minilm_path
from optional import HealthCheck, given, settings, st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def root_base(a: np.ndarray):
    while isinstance(a, np.ndarray):
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"f32": rng.standard_normal((3, 5)).astype(np.float32), "f16": rng.standard_normal(7).astype(np.float16),
            "f64": rng.standard_normal((2, 1, 2)), "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
            "i8": np.arange(-3, 3, dtype=np.int8), "u8": np.arange(5, dtype=np.uint8),
            "bool": np.array([True, False, True]), "scalar": np.array(1.5, np.float32),
            "empty": np.zeros((0, 3), np.float32), "i32": np.arange(3, dtype=np.int32)}


def test_same_arrays_as_the_library_without_copying(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt", "note": "hi"})
    got, metadata = safetensors_file(tmp_path / "x.safetensors")
    want = load_file(tmp_path / "x.safetensors")
    assert metadata == {"format": "pt", "note": "hi"}
    assert sorted(got) == sorted(want) == sorted(tensors)
    for name, a in want.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape, name
        np.testing.assert_array_equal(got[name], a)
        assert not got[name].flags.writeable
        assert isinstance(root_base(got[name]), mmap.mmap), name  # a view of the mapped file


def test_real_checkpoint_reads_like_the_library():
    got, _ = safetensors_file(minilm_path() / "model.safetensors")
    want = load_file(minilm_path() / "model.safetensors")
    assert sorted(got) == sorted(want) and len(got) > 100
    for name, a in want.items():
        np.testing.assert_array_equal(got[name], a, err_msg=name)


def header_file(tmp_path, header, data: bytes = b"", n: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes((len(raw) if n is None else n).to_bytes(8, "little") + raw + data)
    return path


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data, message", [
    (b"", b"", "header: not valid JSON"),
    ({"a": F32}, b"\0" * 4, r"tensor a: bytes 0..8 of 4 cannot hold float32 \[2\]"),
    ({"a": F32}, b"\0" * 12, "4 bytes after the last tensor"),
    (b"{not json", b"", "header: not valid JSON"),
    (b"\xff\xfe{}", b"", "header: not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, b"", "header: not valid JSON"),
    ([1, 2], b"", "header is not a JSON object"),
    ({"__metadata__": {"a": 1}}, b"", "string __metadata__"),
    ({"__metadata__": "x"}, b"", "string __metadata__"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "extra": 1}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": "F32"}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "shape": [-2]}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "shape": [True, 2]}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "shape": [2.0]}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "data_offsets": [0, 4, 8]}}, b"\0" * 8, "tensor a: entry is not"),
    ({"a": {**F32, "data_offsets": [8, 0]}}, b"\0" * 8, "tensor a: bytes 8..0"),
    ({"a": {**F32, "dtype": "BF16"}}, b"\0" * 8, "tensor a has dtype BF16, which npsqueeze does not read"),
    ({"a": {**F32, "dtype": "F8_E4M3"}}, b"\0" * 8, "tensor a has dtype F8_E4M3"),
    ({"a": {**F32, "dtype": ["F32"]}}, b"\0" * 8, r"tensor a has dtype \['F32'\]"),
    ({"a": F32, "b": F32}, b"\0" * 16, "tensor [ab]: data overlaps another tensor or leaves a gap"),
    ({"a": {**F32, "data_offsets": [4, 12]}}, b"\0" * 12, "tensor a: data overlaps another tensor or leaves a gap"),
    ({"a": {**F32, "shape": [10 ** 30]}}, b"\0" * 8, "tensor a: entry is not"),
    # shapes NumPy cannot make, though their byte counts (0, 4) match
    ({"a": {**F32, "shape": [2**63 - 1, 0], "data_offsets": [0, 0]}}, b"",
     r"tensor a: shape \[9223372036854775807, 0\] is too large for NumPy"),
    ({"a": {**F32, "shape": [2**62, 0], "data_offsets": [0, 0]}}, b"", "is too large for NumPy"),
    ({"a": {**F32, "shape": [2**31, 2**31, 0], "data_offsets": [0, 0]}}, b"", "is too large for NumPy"),
    ({"a": {**F32, "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4, "tensor a: 65 dimensions, more than NumPy's 64"),
])
def test_bad_headers(tmp_path, header, data, message):
    path = header_file(tmp_path, header, data)
    with pytest.raises(NpsqueezeError, match=message) as e:
        safetensors_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("size", [0, 3, 7])
def test_shorter_than_the_length_field(tmp_path, size):
    (tmp_path / "x.safetensors").write_bytes(b"\x10" * size)
    with pytest.raises(NpsqueezeError, match="truncated"):
        safetensors_file(tmp_path / "x.safetensors")


def test_header_length_past_the_end(tmp_path):
    with pytest.raises(NpsqueezeError, match=r"truncated \(10 bytes, header says 1000000"):
        safetensors_file(header_file(tmp_path, b"{}", n=10 ** 6))


def test_unreadable(tmp_path):
    with pytest.raises(NpsqueezeError, match="nope.safetensors: cannot read"):
        safetensors_file(tmp_path / "nope.safetensors")
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(NpsqueezeError, match="d.safetensors: cannot read"):
        safetensors_file(tmp_path / "d.safetensors")


def test_every_truncation_is_refused(tmp_path):
    data = save(sample_tensors(), metadata={"k": "v"})
    path = tmp_path / "x.safetensors"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(NpsqueezeError):
            safetensors_file(path)


# --- fuzzing: NpsqueezeError or a correct read, never anything else ------------------------------

def read_or_refuse(path: Path) -> None:
    try:
        tensors, _ = safetensors_file(path)
    except NpsqueezeError as e:
        assert "\n" not in str(e)
        return
    for a in tensors.values():  # what was accepted is readable in full
        a.tobytes()


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path, data):
    (tmp_path / "x.safetensors").write_bytes(data)
    read_or_refuse(tmp_path / "x.safetensors")


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_random_header(tmp_path, data):
    read_or_refuse(header_file(tmp_path, data, b"\0" * 64))


VALID = save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16),
              "c": np.arange(2, dtype=np.int64)}, metadata={"format": "npsqueeze"})


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.none() | st.integers(0, len(VALID)))
def test_fuzz_mutated_valid_file(tmp_path, edits, cut):
    data = bytearray(VALID)
    for i, b in edits:
        data[i] = b
    (tmp_path / "x.safetensors").write_bytes(bytes(data[:cut]))
    read_or_refuse(tmp_path / "x.safetensors")


json_scalars = st.none() | st.booleans() | st.integers(-5, 40) | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10)
entries = st.fixed_dictionaries({
    "dtype": st.sampled_from([*SAFETENSORS_DTYPES, "BF16", "X"]) | json_values,
    "shape": st.lists(st.integers(-1, 4), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-2, 70), min_size=2, max_size=2) | json_values,
})


@FUZZ
@given(header=st.dictionaries(st.text(max_size=4), entries | json_values, max_size=4),
       metadata=st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2),
       data_len=st.integers(0, 64))
def test_fuzz_structured_header(tmp_path, header, metadata, data_len):
    if metadata is not None:
        header["__metadata__"] = metadata
    path = header_file(tmp_path, header, b"\1" * data_len)
    try:
        tensors, _ = safetensors_file(path)
    except NpsqueezeError:
        return
    for name, a in tensors.items():  # accepted: exactly what the header declares
        info = header[name]
        assert list(a.shape) == info["shape"] and a.dtype == SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        assert a.tobytes() == b"\1" * (end - begin)


def test_a_header_claiming_hundreds_of_megabytes_is_refused_within_bounds(tmp_path):
    """Checked before a byte of it is read: exit within 10 s and 400 MB (sparse files: no disk used)."""
    paths = []
    for size in (9 << 20, 300 << 20):  # just over the bound, and far over
        path = tmp_path / f"{size}.safetensors"
        with open(path, "wb") as f:
            f.write((size - 8).to_bytes(8, "little") + b'{"a": ' + b" " * 100)
            f.truncate(size)
        paths.append(path)
    got = api_bounded("lambda path: npsqueeze.weights.safetensors_file(__import__('pathlib').Path(path))", *paths)
    assert got == [f"{path}: not a valid safetensors file: a header of {path.stat().st_size - 8:,} bytes"
                   for path in paths]
