"""Read PyTorch's `pytorch_model.bin` with no torch, and without letting the file run any code.

A `.bin` checkpoint is a pickle, and unpickling calls whatever functions the file names (`os.system`
included). `Unpickler` below resolves only the few names `torch.save(state_dict)` writes, and turns
them into inert descriptions (`Storage`, `Tensor`); arrays are then cut out of the raw storages with
every offset, shape and stride checked against the storage's size. Two layouts, both little-endian:

- zip (torch >= 1.6): `<name>/data.pkl` holds the pickle, `<name>/data/<key>` each storage's bytes;
- legacy (older torch): consecutive pickles -- magic number, protocol version, system info, the
  state dict, the sorted storage keys -- then each storage as an int64 element count and its bytes.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

import numpy as np

from .config import NpsqueezeError

# torch's typed storages -> the dtype of their elements (torch writes little-endian)
STORAGES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"), "ComplexDoubleStorage": np.dtype("<c16"),
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file
LEGACY_PROTOCOL = 1001


class Storage(NamedTuple):
    """A persistent id: the file's raw buffer `key`, `numel` elements of torch type `kind`."""

    key: str
    kind: str  # e.g. "FloatStorage"
    numel: int


class Tensor(NamedTuple):
    """What `torch._utils._rebuild_tensor_v2` would build: a strided view into a storage."""

    storage: Storage
    offset: object  # in elements; like shape and stride, checked only when the array is cut out
    shape: object
    stride: object  # in elements


class Unpickler(pickle.Unpickler):
    """Unpickles a state dict and nothing else.

    `find_class` is the only way a pickle reaches a Python object by name; it hands out the immutable
    `OrderedDict` type, storage names as plain strings and this unpickler's bound methods, none of
    which can run code or be tampered with. Everything else is refused, by name.
    """

    def __init__(self, file: BinaryIO, storages: dict[str, Storage], where: str):
        super().__init__(file)
        self.storages, self.where = storages, where

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            return name  # the storage's type, checked against STORAGES once its tensor's name is known
        allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                   ("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): self.rebuild_parameter}
        if (module, name) not in allowed:
            raise NpsqueezeError(f"{self.where}: refused to unpickle {module}.{name}: a checkpoint "
                                 "holds tensors only, so this file is broken or malicious")
        return allowed[module, name]

    def persistent_load(self, pid):
        # ("storage", kind, key, location, numel), plus a view (always None since torch 1.0) in legacy files
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], str) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0 and pid[5:] in ((), (None,))):
            raise NpsqueezeError(f"{self.where}: unexpected storage reference {str(pid)[:80]}")
        storage = Storage(pid[2], pid[1], pid[4])
        if self.storages.setdefault(storage.key, storage) != storage:
            raise NpsqueezeError(f"{self.where}: storage {storage.key} is declared twice, differently")
        return storage

    def rebuild_tensor(self, storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None):
        return Tensor(storage, offset, shape, stride)

    def rebuild_parameter(self, data, requires_grad, hooks):
        return data


def unpickle(f: BinaryIO, storages: dict[str, Storage], where: str):
    """One pickle from `f`, through the allow-list; any failure is a one-line NpsqueezeError."""
    try:
        return Unpickler(f, storages, where).load()
    except NpsqueezeError:
        raise
    except Exception as e:  # a corrupt pickle fails in a dozen ways (EOF, bad opcode, memo, type...)
        raise NpsqueezeError(f"{where}: corrupt pickle ({type(e).__name__}: {e})") from None


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a `torch.save`d state dict, as read-only arrays: {name: array}."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head.startswith(b"PK"):
                return read_zip(f, where)
            if head.startswith(b"\x80"):  # a pickle's PROTO opcode
                return read_legacy(f, where)
    except OSError as e:
        raise NpsqueezeError(f"{path}: cannot read ({e.strerror or e})") from None
    raise NpsqueezeError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def read_zip(f: BinaryIO, where: str) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(f) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise NpsqueezeError(f"{where}: a PyTorch zip checkpoint holds one <name>/data.pkl, "
                                     f"this one {len(pkl)}")
            root = pkl[0][: -len("data.pkl")]
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses
                    raise NpsqueezeError(f"{where}: {info.filename} is compressed: not written by torch.save")
            if root + "byteorder" in zf.namelist() and zf.read(root + "byteorder") != b"little":
                raise NpsqueezeError(f"{where}: big-endian checkpoints are not supported")
            state = unpickle(io.BytesIO(zf.read(pkl[0])), {}, where)
            return arrays(state, lambda s: zf.read(f"{root}data/{s.key}"), where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        # the zip directory is read at open, each member (with its CRC) when read
        raise NpsqueezeError(f"{where}: truncated or corrupted zip archive ({e})") from None


def read_legacy(f: BinaryIO, where: str) -> dict[str, np.ndarray]:
    storages: dict[str, Storage] = {}
    if unpickle(f, storages, where) != LEGACY_MAGIC:
        raise NpsqueezeError(f"{where}: a pickle, but not a PyTorch checkpoint (no magic number)")
    if unpickle(f, storages, where) != LEGACY_PROTOCOL:
        raise NpsqueezeError(f"{where}: unknown legacy PyTorch protocol version")
    info = unpickle(f, storages, where)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise NpsqueezeError(f"{where}: big-endian or unknown system info: not supported")
    state = unpickle(f, storages, where)
    keys = unpickle(f, storages, where)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)
            and sorted(keys) == sorted(storages)):
        raise NpsqueezeError(f"{where}: storage key list does not match the tensors' storages")
    size = os.fstat(f.fileno()).st_size
    raw = {}
    for key in keys:  # in file order: int64 element count, then the elements
        s = storages[key]
        if s.kind not in STORAGES:  # its size is unknown, so are the places of the storages after it
            break  # arrays() names the tensor
        numel = int.from_bytes(f.read(8), "little")
        nbytes = numel * STORAGES[s.kind].itemsize
        if numel != s.numel or f.tell() + nbytes > size:
            raise NpsqueezeError(f"{where}: storage {key} is truncated or corrupt")
        raw[key] = f.read(nbytes)
    return arrays(state, lambda s: raw[s.key], where)


def arrays(state, read: Callable[[Storage], bytes], where: str) -> dict[str, np.ndarray]:
    """The unpickled state dict's tensors as arrays viewing their storages' bytes (`read` gets them)."""
    if not isinstance(state, dict):
        raise NpsqueezeError(f"{where}: holds a {type(state).__name__}, not a state dict of tensors")
    for name, t in state.items():  # all checked before any storage is read
        if not isinstance(name, str) or not isinstance(t, Tensor) or not isinstance(t.storage, Storage):
            raise NpsqueezeError(f"{where}: entry {str(name)[:80]} of the state dict is not a tensor")
        if t.storage.kind not in STORAGES:
            raise NpsqueezeError(f"{where}: tensor {name} has type torch.{t.storage.kind}, which npsqueeze "
                                 "does not read")
    buffers: dict[str, np.ndarray] = {}  # storage key -> its elements, [numel]
    out = {}
    for name, t in state.items():
        s = t.storage
        dtype = STORAGES[s.kind]
        if s.key not in buffers:
            try:
                data = read(s)
            except (KeyError, zipfile.BadZipFile, EOFError) as e:  # a missing or corrupt zip member
                raise NpsqueezeError(f"{where}: tensor {name}: cannot read storage {s.key} ({e})") from None
            if len(data) != s.numel * dtype.itemsize:
                raise NpsqueezeError(f"{where}: tensor {name}: storage {s.key} holds {len(data)} bytes, "
                                     f"expected {s.numel} x {dtype.itemsize}")
            buffers[s.key] = np.frombuffer(data, dtype)
        if buffers[s.key].dtype != dtype:
            raise NpsqueezeError(f"{where}: tensor {name}: storage {s.key} is used with two dtypes")
        out[name] = strided(buffers[s.key], t, f"{where}: tensor {name}")
    return out


def strided(data: np.ndarray, t: Tensor, what: str) -> np.ndarray:
    """`t` as a view of its storage's elements `data` [numel], after checking it stays inside them."""
    shape, stride, offset = t.shape, t.stride, t.offset
    ints = [offset, *shape, *stride] if isinstance(shape, tuple) and isinstance(stride, tuple) else [None]
    if not all(type(i) is int and i >= 0 for i in ints) or len(shape) != len(stride):
        raise NpsqueezeError(f"{what}: invalid offset, shape or stride")
    if math.prod(shape) > len(data):  # more elements than the storage: an expand(), or an attack
        raise NpsqueezeError(f"{what}: shape {shape} has more elements than its storage ({len(data)})")
    last = offset + sum((n - 1) * st for n, st in zip(shape, stride))  # index of the last element
    if math.prod(shape) and last >= len(data):
        raise NpsqueezeError(f"{what}: shape {shape} with strides {stride} at offset {offset} reads past "
                             f"the end of its storage ({len(data)} elements)")
    return np.lib.stride_tricks.as_strided(data[offset:], shape, [st * data.itemsize for st in stride],
                                           writeable=False)
