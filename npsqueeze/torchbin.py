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
import mmap
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

import numpy as np

from .config import NpsqueezeError, named, shown

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


MAX_OPS = 1 << 20  # pickle operations in one pickle: torch.save writes about 40 a tensor
# Bounds on the metadata, checked before it is read: a pickle's bytes (torch.save writes about 300 a
# tensor: BERT-large's is 100 KB), a zip's members (one per storage, and 4 more), a pickle's text line
# (a GLOBAL's module or name). Hostile files claim strings or directories of gigabytes.
MAX_PICKLE_BYTES = 16 << 20
MAX_ZIP_MEMBERS = 100_000
MAX_LINE = 1000
MAX_NDIM = 64  # NumPy's limit on an array's dimensions
# Opcodes torch.save never writes, refused by name: sets (their items are hashed, see Unpickler),
# the extension registry (it hands out cached objects without find_class), out-of-band buffers.
REFUSED = {"EMPTY_SET", "ADDITEMS", "FROZENSET", "EXT1", "EXT2", "EXT4", "BYTEARRAY8", "NEXT_BUFFER",
           "READONLY_BUFFER"}


class Unpickler(pickle._Unpickler):
    """Unpickles a state dict and nothing else, in bounded time and memory.

    `find_class` is the only way a pickle reaches a Python object by name; it hands out storage
    names as plain strings and this unpickler's bound methods, none of which can run code or be
    tampered with. Everything else is refused, by name.

    It is Python's pure-Python unpickler, not the C one: the C unpickler allocates its memo for the
    largest index a file names (LONG_BINPUT 2**32-1 in a 12-byte file: 32 GB), this one keeps a dict.
    Every operation is counted (MAX_OPS), and the other way a small pickle makes work -- a key
    built as a DAG of shared tuples, which hashing walks leaf by leaf (2**34 leaves in 69 bytes), or
    300,000 nested ones, which overflow the C stack -- is closed by allowing only strings as dict keys.
    """

    def __init__(self, file: BinaryIO, storages: dict[str, Storage], where: str):
        super().__init__(file)
        self.storages, self.where, self.ops, self.left = storages, where, 0, MAX_PICKLE_BYTES
        self._file_read, self._file_readline = self.read_counted, self.readline_counted
        self.file = file

    def read_counted(self, n: int) -> bytes:
        """The file's next `n` bytes, counted against MAX_PICKLE_BYTES before they are read (a hostile
        pickle claims a string of 4 GB)."""
        self.left -= n
        if self.left < 0:
            raise NpsqueezeError(f"{self.where}: a pickle of over {MAX_PICKLE_BYTES >> 20} MB: too large for a "
                                 "state dict, broken or malicious")
        return self.file.read(n)

    def readline_counted(self) -> bytes:
        """A text line (GLOBAL's module and name), read byte by byte: mmap's readline has no limit."""
        line = b""
        while not line.endswith(b"\n"):
            byte = self.read_counted(1)
            if not byte:  # the file ends inside the line
                raise EOFError("pickle data was truncated")
            if len(line) >= MAX_LINE:
                raise NpsqueezeError(f"{self.where}: a pickle text line of over {MAX_LINE} bytes: broken or malicious")
            line += byte
        return line

    def refuse(self, what: str) -> NpsqueezeError:
        return NpsqueezeError(f"{self.where}: refused to unpickle {what}: a checkpoint holds tensors only, "
                              "so this file is broken or malicious")

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            return name  # the storage's type, checked against STORAGES once its tensor's name is known
        allowed = {("collections", "OrderedDict"): self.ordered_dict,
                   ("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): self.rebuild_parameter}
        if (module, name) not in allowed:
            raise self.refuse(f"{named(module)}.{named(name)}")
        return allowed[module, name]

    def persistent_load(self, pid):
        # ("storage", kind, key, location, numel), plus a view (always None since torch 1.0) in legacy
        # files. Only types and lengths are looked at: the file's objects are never printed or hashed.
        if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str and pid[0] == "storage"
                and type(pid[1]) is str and type(pid[2]) is str and pid[2].isprintable() and len(pid[2]) <= 100
                and type(pid[4]) is int and 0 <= pid[4] < 2**63 and (len(pid) == 5 or pid[5] is None)):
            raise NpsqueezeError(f"{self.where}: unexpected storage reference: torch writes "
                                 "('storage', type, key, location, size)")
        storage = Storage(pid[2], pid[1], pid[4])
        if self.storages.setdefault(storage.key, storage) != storage:
            raise NpsqueezeError(f"{self.where}: storage {storage.key} is declared twice, differently")
        return storage

    def ordered_dict(self, items=None):
        items = [] if items is None else items
        if type(items) is not list or not all(type(p) is tuple and len(p) == 2 for p in items):
            raise self.refuse("an OrderedDict from anything but a list of pairs")
        self.check_keys([k for k, _ in items])
        return collections.OrderedDict(items)

    def rebuild_tensor(self, storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None):
        return Tensor(storage, offset, shape, stride)

    def rebuild_parameter(self, data, requires_grad, hooks):
        return data

    # --- the opcodes that hash dict keys: strings only -----------------------------------------------

    def check_keys(self, keys) -> None:
        if not all(type(k) is str for k in keys):
            raise self.refuse("a dict whose keys are not all strings")

    def set_items(self, target, items: list) -> None:
        self.check_keys(items[::2])
        if type(target) not in (dict, collections.OrderedDict):
            raise self.refuse(f"items set on a {type(target).__name__}")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self.set_items(self.stack[-1], [key, value])

    def load_setitems(self):
        items = self.pop_mark()
        self.set_items(self.stack[-1], items)

    def load_dict(self):
        items = self.pop_mark()
        self.append({})
        self.set_items(self.stack[-1], items)

    def load_build(self):  # torch's OrderedDict carries its `_metadata` attribute this way
        if type(self.stack[-1]) is not dict or type(self.stack[-2]) is not collections.OrderedDict:
            raise self.refuse(f"state set on a {type(self.stack[-2]).__name__}")
        super().load_build()


def counted(load: Callable) -> Callable:
    """An opcode's load method, counted against MAX_OPS."""
    def op(self: Unpickler):
        self.ops += 1
        if self.ops > MAX_OPS:
            raise NpsqueezeError(f"{self.where}: a pickle of over {MAX_OPS:,} operations: too large for a "
                                 "state dict, broken or malicious")
        load(self)
    return op


def refused(name: str) -> Callable:
    def op(self: Unpickler):
        raise self.refuse(f"opcode {name}")
    return op


OPCODE_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}
Unpickler.dispatch = {code: refused(OPCODE_NAMES[code]) if OPCODE_NAMES[code] in REFUSED
                      else counted(getattr(Unpickler, load.__name__))
                      for code, load in pickle._Unpickler.dispatch.items()}


def unpickle(f: BinaryIO, storages: dict[str, Storage], where: str):
    """One pickle from `f`, through the allow-list; any failure is a one-line NpsqueezeError."""
    try:
        return Unpickler(f, storages, where).load()
    except NpsqueezeError:
        raise
    except Exception as e:  # a corrupt pickle fails in a dozen ways (EOF, bad opcode, memo, type...)
        raise NpsqueezeError(f"{where}: corrupt pickle ({type(e).__name__}: {named(str(e))})") from None


def check_shape(shape: tuple, itemsize: int, what: str) -> None:
    """Refuse a shape NumPy cannot make into an array: over 64 dimensions, or more bytes than int64
    counts. NumPy multiplies the non-zero dimensions, so [2**62, 0] is refused though it holds no bytes."""
    if len(shape) > MAX_NDIM:
        raise NpsqueezeError(f"{what}: {len(shape)} dimensions, more than NumPy's {MAX_NDIM}")
    if math.prod(n for n in shape if n) * itemsize >= 2**63:
        raise NpsqueezeError(f"{what}: shape {shown(shape)} is too large for NumPy")


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
                # memory-mapped: reads of any claimed length return what is there, and the storages are views
                return read_legacy(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), where)
    except OSError as e:
        raise NpsqueezeError(f"{path}: cannot read ({e.strerror or e})") from None
    raise NpsqueezeError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def read_zip(f: BinaryIO, where: str) -> dict[str, np.ndarray]:
    size = os.fstat(f.fileno()).st_size
    try:
        end = zipfile._EndRecData(f)  # the directory's end record: what ZipFile reads first (private, stable)
        if end and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_MEMBERS:  # ZipFile would build all their entries
            raise NpsqueezeError(f"{where}: a zip archive of {end[zipfile._ECD_ENTRIES_TOTAL]:,} members: more than "
                                 f"the {MAX_ZIP_MEMBERS:,} of a checkpoint, broken or malicious")
        with zipfile.ZipFile(f) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise NpsqueezeError(f"{where}: a PyTorch zip checkpoint holds one <name>/data.pkl, "
                                     f"this one {len(pkl)}")
            root = pkl[0][: -len("data.pkl")]
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses
                    raise NpsqueezeError(f"{where}: {named(info.filename)} is compressed: not written by torch.save")
                if info.header_offset + info.file_size > size:  # zipfile would allocate what it claims
                    raise NpsqueezeError(f"{where}: {named(info.filename)} claims more bytes than the file has")
            if zf.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
                raise NpsqueezeError(f"{where}: {named(pkl[0])} is over {MAX_PICKLE_BYTES >> 20} MB: too large for "
                                     "a state dict, broken or malicious")
            byteorder = root + "byteorder"
            if byteorder in zf.namelist() and (zf.getinfo(byteorder).file_size != len(b"little")
                                               or zf.read(byteorder) != b"little"):
                raise NpsqueezeError(f"{where}: big-endian checkpoints are not supported")
            state = unpickle(io.BytesIO(zf.read(pkl[0])), {}, where)
            return arrays(state, lambda s: zf.read(f"{root}data/{s.key}"), where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        # the zip directory is read at open, each member (with its CRC) when read
        raise NpsqueezeError(f"{where}: truncated or corrupted zip archive ({e})") from None


def read_legacy(f: mmap.mmap, where: str) -> dict[str, np.ndarray]:
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
    if not (isinstance(keys, list) and all(type(k) is str for k in keys) and sorted(keys) == sorted(storages)):
        raise NpsqueezeError(f"{where}: storage key list does not match the tensors' storages")
    raw = {}
    for key in keys:  # in file order: int64 element count, then the elements
        s = storages[key]
        if s.kind not in STORAGES:  # its size is unknown, so are the places of the storages after it
            break  # arrays() names the tensor
        numel = int.from_bytes(f.read(8), "little")
        start, nbytes = f.tell(), numel * STORAGES[s.kind].itemsize
        if numel != s.numel or start + nbytes > len(f):
            raise NpsqueezeError(f"{where}: storage {key} is truncated or corrupt")
        raw[key] = memoryview(f)[start:start + nbytes]
        f.seek(start + nbytes)
    return arrays(state, lambda s: raw[s.key], where)


def arrays(state, read: Callable[[Storage], bytes], where: str) -> dict[str, np.ndarray]:
    """The unpickled state dict's tensors as arrays viewing their storages' bytes (`read` gets them)."""
    if not isinstance(state, dict):
        raise NpsqueezeError(f"{where}: holds a {type(state).__name__}, not a state dict of tensors")
    for name, t in state.items():  # all checked before any storage is read
        if not isinstance(t, Tensor) or not isinstance(t.storage, Storage):
            raise NpsqueezeError(f"{where}: entry {named(name)} of the state dict is not a tensor")
        if t.storage.kind not in STORAGES:
            raise NpsqueezeError(f"{where}: tensor {named(name)} has type torch.{named(t.storage.kind)}, which "
                                 "npsqueeze does not read")
    buffers: dict[str, np.ndarray] = {}  # storage key -> its elements, [numel]
    out = {}
    for name, t in state.items():
        s, what = t.storage, f"{where}: tensor {named(name)}"
        dtype = STORAGES[s.kind]
        if s.key not in buffers:
            try:
                data = read(s)
            except (KeyError, zipfile.BadZipFile, EOFError) as e:  # a missing or corrupt zip member
                raise NpsqueezeError(f"{what}: cannot read storage {s.key} ({e})") from None
            if len(data) != s.numel * dtype.itemsize:
                raise NpsqueezeError(f"{what}: storage {s.key} holds {len(data)} bytes, "
                                     f"expected {s.numel} x {dtype.itemsize}")
            buffers[s.key] = np.frombuffer(data, dtype)
        if buffers[s.key].dtype != dtype:
            raise NpsqueezeError(f"{what}: storage {s.key} is used with two dtypes")
        out[name] = strided(buffers[s.key], t, what)
    return out


def strided(data: np.ndarray, t: Tensor, what: str) -> np.ndarray:
    """`t` as a view of its storage's elements `data` [numel], after checking it stays inside them."""
    shape, stride, offset = t.shape, t.stride, t.offset
    ints = [offset, *shape, *stride] if type(shape) is tuple and type(stride) is tuple else [None]
    if not all(type(i) is int and 0 <= i < 2**63 for i in ints) or len(shape) != len(stride):
        raise NpsqueezeError(f"{what}: invalid offset, shape or stride")
    check_shape(shape, data.itemsize, what)
    if math.prod(shape) > len(data):  # more elements than the storage: an expand(), or an attack
        raise NpsqueezeError(f"{what}: shape {shape} has more elements than its storage ({len(data)})")
    last = offset + sum((n - 1) * st for n, st in zip(shape, stride))  # index of the last element
    if math.prod(shape) and last >= len(data):
        raise NpsqueezeError(f"{what}: shape {shape} with strides {stride} at offset {offset} reads past "
                             f"the end of its storage ({len(data)} elements)")
    if any(st * data.itemsize >= 2**63 for st in stride):  # on an axis of length 1 or 0 any stride stays inside
        raise NpsqueezeError(f"{what}: stride {max(stride)} is too large for NumPy")
    return np.lib.stride_tricks.as_strided(data[offset:], shape, [st * data.itemsize for st in stride],
                                           writeable=False)
