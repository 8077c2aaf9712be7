"""Reading pytorch_model.bin without torch: real `torch.save` files in both layouts, and hostile or
broken ones, which must be refused with one line naming the problem and without running anything."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from npsqueeze import NpsqueezeError
from bounded import api_bounded, run_bounded
from optional import needs, torch
from npsqueeze.torchbin import LEGACY_MAGIC, LEGACY_PROTOCOL, read_torch_bin

# --- writing pickles by hand -----------------------------------------------------------------------


class Global:
    """Pickles as the name `module.name` (pickle's GLOBAL opcode) without importing it."""

    def __init__(self, dotted: str):
        self.module, _, self.name = dotted.rpartition(".")

    def __call__(self):  # pickle only reduces to callables
        raise AssertionError("never called")


class Call:
    """Pickles as `func(*args)` (REDUCE): what unpickling runs."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Pid(tuple):
    """A persistent id (BINPERSID): how torch refers to a storage."""


class Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = lambda self, g: self.write(pickle.GLOBAL + f"{g.module}\n{g.name}\n".encode())

    def persistent_id(self, obj):
        return tuple(obj) if type(obj) is Pid else None


def dumps(obj, protocol: int = 2) -> bytes:
    f = io.BytesIO()
    Pickler(f, protocol).dump(obj)
    return f.getvalue()


def storage(key: str, numel: int, kind: str = "FloatStorage", legacy: bool = False) -> Pid:
    return Pid(("storage", Global(f"torch.{kind}"), key, "cpu", numel, *((None,) if legacy else ())))


def tensor(st: Pid, offset, shape, stride) -> Call:
    return Call(Global("torch._utils._rebuild_tensor_v2"), st, offset, shape, stride, False,
                Call(Global("collections.OrderedDict")))


def state_dict(**tensors) -> Call:
    return Call(Global("collections.OrderedDict"), list(tensors.items()))


def write_zip(path, pkl: bytes, storages: dict[str, bytes], byteorder: bytes = b"little",
              compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", byteorder)
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path


def write_legacy(path, pkl: bytes, storages: dict[str, bytes], itemsize: int = 4, first: bytes | None = None):
    parts = [first or pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(LEGACY_PROTOCOL, 2),
             pickle.dumps({"protocol_version": LEGACY_PROTOCOL, "little_endian": True}, 2), pkl,
             pickle.dumps(sorted(storages), 2)]
    for key in sorted(storages):
        parts += [(len(storages[key]) // itemsize).to_bytes(8, "little"), storages[key]]
    path.write_bytes(b"".join(parts))
    return path


FLOATS = np.arange(12, dtype="<f4").tobytes()  # a 12-element float storage


# --- real torch.save files -------------------------------------------------------------------------

def torch_state():
    base = torch.randn(4, 6)
    sd = collections.OrderedDict(
        weight=torch.randn(5, 3), transposed=torch.randn(3, 5).t(), row=base[2], column=base[:, 1],
        block=base[1:3, 2:5], half=torch.randn(7).half(), double=torch.randn(2, 2).double(),
        ids=torch.arange(9), int32=torch.arange(4, dtype=torch.int32), flags=torch.tensor([True, False]),
        scalar=torch.tensor(2.5), empty=torch.zeros(0, 4), param=torch.nn.Parameter(torch.randn(3)),
        complex=torch.randn(2, dtype=torch.complex64))
    sd["base"] = base  # shares its storage with row, column and block
    return sd


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_torch_save_exactly(tmp_path, legacy):
    sd = torch_state()
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    got = read_torch_bin(path)
    assert list(got) == list(sd)
    for name, t in sd.items():
        want = t.detach().numpy()
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert not got[name].flags.writeable


def test_reads_a_module_state_dict_with_metadata(tmp_path):
    # state_dict() carries `_metadata`, restored by a BUILD opcode on the OrderedDict
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    torch.save(model.state_dict(), tmp_path / "m.bin")
    got = read_torch_bin(tmp_path / "m.bin")
    assert sorted(got) == sorted(model.state_dict())
    for name, t in model.state_dict().items():
        np.testing.assert_array_equal(got[name], t.numpy())


def test_hand_written_zip_is_read(tmp_path):
    # the test pickles below are only meaningful if the same writer produces readable files
    pkl = dumps(state_dict(a=tensor(storage("0", 12), 2, (2, 3), (1, 2))))
    got = read_torch_bin(write_zip(tmp_path / "ok.bin", pkl, {"0": FLOATS}))
    np.testing.assert_array_equal(got["a"], [[2, 4, 6], [3, 5, 7]])  # element [i, j] at 2 + i + 2j
    legacy = dumps(state_dict(a=tensor(storage("0", 12, legacy=True), 0, (12,), (1,))))
    np.testing.assert_array_equal(read_torch_bin(write_legacy(tmp_path / "l.bin", legacy, {"0": FLOATS}))["a"],
                                  np.arange(12))


# --- hostile pickles: refused by name, nothing runs ------------------------------------------------

class System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def payloads(marker):
    """(name, pickle bytes that create `marker` when unpickled, the global that must be refused)."""
    touch = f"touch {marker}"
    create = f"open({str(marker)!r}, 'w').close()"
    good = tensor(storage("0", 12), 0, (12,), (1,))
    return [
        ("os.system", pickle.dumps(System(touch), protocol=2), "posix.system"),
        ("stack_global", pickle.dumps(System(touch), protocol=4), "posix.system"),
        ("exec", dumps(Call(Global("builtins.exec"), create)), "builtins.exec"),
        ("eval", dumps(Call(Global("builtins.eval"), f"__import__('os').system({touch!r})")), "builtins.eval"),
        ("inst", b"(V" + touch.encode() + b"\nios\nsystem\n.", "os.system"),
        ("after_a_tensor", dumps(state_dict(a=good, b=Call(Global("posix.system"), touch))), "posix.system"),
        ("in_storage_id", dumps(state_dict(a=tensor(Pid(("storage", Call(Global("posix.system"), touch),
                                                         "0", "cpu", 12)), 0, (12,), (1,)))),
         "posix.system"),
        ("torch_gadget", dumps(Call(Global("torch.storage._load_from_bytes"), b"x")),
         "torch.storage._load_from_bytes"),
        ("subprocess", dumps(Call(Global("subprocess.call"), ["touch", str(marker)])), "subprocess.call"),
    ]


@needs("torch")  # the in_storage_id payload runs once pickle has imported torch._utils
def test_payloads_really_run_under_plain_pickle(tmp_path):
    # the control experiment: each payload creates its marker when loaded the unsafe way
    for name, data, _ in payloads(tmp_path / "marker"):
        if name in ("after_a_tensor", "torch_gadget"):  # stop at the tensor's storage; need a real file
            continue
        (tmp_path / "marker").unlink(missing_ok=True)
        try:
            pickle.loads(data)
        except Exception:
            pass  # in_storage_id fails at the persistent id, after its payload ran
        assert (tmp_path / "marker").exists(), name


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", range(9))
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, case, legacy):
    marker = tmp_path / "marker"
    name, data, refused = payloads(marker)[case]
    path = tmp_path / "pytorch_model.bin"
    if legacy:
        write_legacy(path, data, {"0": FLOATS})
    else:
        write_zip(path, data, {"0": FLOATS})
    with pytest.raises(NpsqueezeError, match=f"refused to unpickle {refused}") as e:
        read_torch_bin(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_hostile_legacy_magic_number_is_refused(tmp_path):
    # the very first pickle of a legacy file: a reader that pickle.load()s the magic number runs it
    marker = tmp_path / "marker"
    path = write_legacy(tmp_path / "x.bin", dumps(state_dict()), {},
                        first=pickle.dumps(System(f"touch {marker}"), protocol=2))
    with pytest.raises(NpsqueezeError, match="refused to unpickle posix.system"):
        read_torch_bin(path)
    assert not marker.exists()


# --- broken files: one line each -------------------------------------------------------------------

def zip_with(tmp_path, t, storages=None, **kw):
    return write_zip(tmp_path / "x.bin", dumps(state_dict(t=t)), {"0": FLOATS} if storages is None else storages,
                     **kw)


@pytest.mark.parametrize("t, message", [
    (tensor(storage("0", 12), 10, (3,), (1,)), r"tensor t: shape \(3,\) .* reads past the end of its storage \(12"),
    (tensor(storage("0", 12), 0, (4, 4), (4, 1)), r"tensor t: shape \(4, 4\) has more elements than its storage"),
    (tensor(storage("0", 12), 0, (2, 3), (6, 3)), "reads past the end"),
    (tensor(storage("0", 12), 0, (10 ** 12,), (0,)), "more elements than its storage"),
    (tensor(storage("0", 12), -1, (2,), (1,)), "tensor t: invalid offset, shape or stride"),
    (tensor(storage("0", 12), 0, (2, 2), (1,)), "invalid offset, shape or stride"),
    (tensor(storage("0", 12), 0, [2], [1]), "invalid offset, shape or stride"),
    (tensor(storage("0", 12), 0, (2,), (-1,)), "invalid offset, shape or stride"),
    (tensor(storage("0", 12), 0.5, (2,), (1,)), "invalid offset, shape or stride"),
    (tensor(storage("0", 13), 0, (2,), (1,)), r"tensor t: storage 0 holds 48 bytes, expected 13 x 4"),
    (tensor(storage("7", 12), 0, (2,), (1,)), r"tensor t: cannot read storage 7"),
    (tensor(storage("0", 3, "BFloat16Storage"), 0, (3,), (1,)), "tensor t has type torch.BFloat16Storage"),
    (tensor(storage("0", 3, "QInt8Storage"), 0, (3,), (1,)), "tensor t has type torch.QInt8Storage"),
    (tensor(Pid(("storage", Global("torch.FloatStorage"), 0, "cpu", 12)), 0, (2,), (1,)),
     "unexpected storage reference"),
    (tensor(Pid(("module", "os")), 0, (2,), (1,)), "unexpected storage reference"),
    (tensor("not a storage", 0, (2,), (1,)), "entry t of the state dict is not a tensor"),
    ([1, 2, 3], "entry t of the state dict is not a tensor"),
])
def test_bad_tensor_descriptions(tmp_path, t, message):
    with pytest.raises(NpsqueezeError, match=message) as e:
        read_torch_bin(zip_with(tmp_path, t))
    assert str(tmp_path / "x.bin") in str(e.value) and "\n" not in str(e.value)


def test_same_storage_declared_twice_differently(tmp_path):
    pkl = dumps(state_dict(a=tensor(storage("0", 12), 0, (2,), (1,)), b=tensor(storage("0", 6, "DoubleStorage"),
                                                                                  0, (2,), (1,))))
    with pytest.raises(NpsqueezeError, match="storage 0 is declared twice"):
        read_torch_bin(write_zip(tmp_path / "x.bin", pkl, {"0": FLOATS}))


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "holds a list, not a state dict"),
    (Call(Global("collections.OrderedDict"), [("model", {"w": 1})]), "entry model of the state dict is not a tensor"),
    (Call(Global("collections.OrderedDict"), [(3, tensor(storage("0", 12), 0, (2,), (1,)))]),
     "refused to unpickle a dict whose keys are not all strings"),
])
def test_not_a_flat_state_dict(tmp_path, obj, message):
    with pytest.raises(NpsqueezeError, match=message):
        read_torch_bin(write_zip(tmp_path / "x.bin", dumps(obj), {"0": FLOATS}))


@pytest.fixture
def real_zip(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(collections.OrderedDict(w=torch.arange(64.0).reshape(8, 8)), path)
    return path


def test_truncated_zip(real_zip):
    data = real_zip.read_bytes()
    for n in (4, 100, len(data) // 2, len(data) - 10):
        real_zip.write_bytes(data[:n])
        with pytest.raises(NpsqueezeError, match="truncated or corrupted zip archive"):
            read_torch_bin(real_zip)


def member_offset(path, suffix):
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    header = path.read_bytes()[info.header_offset:]
    return info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")


@pytest.mark.parametrize("member, message", [
    ("data.pkl", r"truncated or corrupted zip archive \(Bad CRC-32 for file '.*data.pkl'\)"),
    ("data/0", r"tensor w: cannot read storage 0 \(Bad CRC-32"),
])
def test_corrupted_zip_member(real_zip, member, message):
    data = bytearray(real_zip.read_bytes())
    data[member_offset(real_zip, member) + 5] ^= 0xFF
    real_zip.write_bytes(bytes(data))
    with pytest.raises(NpsqueezeError, match=message):
        read_torch_bin(real_zip)


def test_zip_structure_is_checked(tmp_path):
    pkl = dumps(state_dict(t=tensor(storage("0", 12), 0, (2,), (1,))))
    with pytest.raises(NpsqueezeError, match="is compressed: not written by torch.save"):
        read_torch_bin(write_zip(tmp_path / "a.bin", pkl, {"0": FLOATS}, compression=zipfile.ZIP_DEFLATED))
    with pytest.raises(NpsqueezeError, match="big-endian checkpoints are not supported"):
        read_torch_bin(write_zip(tmp_path / "b.bin", pkl, {"0": FLOATS}, byteorder=b"big"))
    with zipfile.ZipFile(tmp_path / "c.bin", "w") as z:
        z.writestr("archive/data/0", FLOATS)
    with pytest.raises(NpsqueezeError, match="holds one <name>/data.pkl, this one 0"):
        read_torch_bin(tmp_path / "c.bin")


def test_corrupt_pickle_bytes(tmp_path):
    good = dumps(state_dict(t=tensor(storage("0", 12), 0, (2,), (1,))))
    for bad in (good[:-1], good[:20], b"\x80\x02garbage", good.replace(b"R", b"\xff", 1)):
        with pytest.raises(NpsqueezeError, match="corrupt pickle|refused to unpickle"):
            read_torch_bin(write_zip(tmp_path / "x.bin", bad, {"0": FLOATS}))


@pytest.mark.parametrize("data, message", [
    (b"", "not a PyTorch checkpoint"),
    (b"hello world, no pickle here", "not a PyTorch checkpoint"),
    (pickle.dumps(12345, 2), "not a PyTorch checkpoint \\(no magic number\\)"),
    (pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(7, 2), "unknown legacy PyTorch protocol"),
    (pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(LEGACY_PROTOCOL, 2) + pickle.dumps({"little_endian": False}, 2),
     "big-endian"),
])
def test_not_a_checkpoint(tmp_path, data, message):
    (tmp_path / "x.bin").write_bytes(data)
    with pytest.raises(NpsqueezeError, match=message):
        read_torch_bin(tmp_path / "x.bin")


def test_truncated_legacy(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(collections.OrderedDict(w=torch.arange(64.0), b=torch.ones(3)), path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for n in range(1, len(data), 7):
        path.write_bytes(data[:n])
        with pytest.raises(NpsqueezeError, match="corrupt pickle|truncated or corrupt|storage key list"):
            read_torch_bin(path)


def test_unreadable_file(tmp_path):
    (tmp_path / "dir.bin").mkdir()
    with pytest.raises(NpsqueezeError, match="dir.bin: cannot read"):
        read_torch_bin(tmp_path / "dir.bin")
    with pytest.raises(NpsqueezeError, match="missing.bin: cannot read"):
        read_torch_bin(tmp_path / "missing.bin")


# --- pickle bombs: tiny files that would take gigabytes or hours, refused within bounds ------------

NONE_DAG = b"N" + b"2\x86" * 34  # DUP, TUPLE2 34 times: (x, x) nested, 2**34 leaves in 69 bytes
NESTED = b"N" + b"\x85" * 300_000  # TUPLE1 300,000 times: hashing it overflows the C stack (segfault)


def pkl(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


def in_dict(key: bytes) -> list[bytes]:
    """Every way a pickle puts `key` in a dict: SETITEM, SETITEMS, DICT, OrderedDict(pairs), BUILD."""
    od = b"ccollections\nOrderedDict\n"
    return [pkl(b"}", key, b"Ns"), pkl(b"}(", key, b"Nu"), pkl(b"(", key, b"Nd"),
            pkl(od, b"((", key, b"Ntl\x85R"),
            pkl(od, b")R}", key, b"Nsb")]


BOMBS = [  # (name, data.pkl, what the message says)
    ("memo index 2**27", pkl(b"]r\x00\x00\x00\x08"), "holds a list, not a state dict"),
    ("memo index 2**32-1", pkl(b"]r\xff\xff\xff\xff"), "holds a list, not a state dict"),
    ("memo index 2**32-1, text PUT", pkl(b"]p4294967295\n"), "holds a list, not a state dict"),
    ("DAG storage id", pkl(NONE_DAG, b"Q"), "unexpected storage reference"),
    ("nested storage id", pkl(NESTED, b"Q"), "unexpected storage reference"),
    *((f"DAG dict key {i}", p, "keys are not all strings") for i, p in enumerate(in_dict(NONE_DAG))),
    ("nested dict key", in_dict(NESTED)[0], "keys are not all strings"),
    ("a frozenset of a DAG", pkl(b"(", NONE_DAG, b"\x91"), "refused to unpickle opcode FROZENSET"),
    ("a million empty lists", pkl(b"]" * 1_200_000), "over 1,048,576 operations"),
]


READ = "lambda path: npsqueeze.torchbin.read_torch_bin(__import__('pathlib').Path(path))"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickle_bombs_are_refused_within_bounds(tmp_path, legacy):
    paths = [(write_legacy if legacy else write_zip)(tmp_path / f"{i}.bin", data, {})  # legacy: no storage keys
             for i, (_, data, _) in enumerate(BOMBS)]
    for (name, _, message), path, got in zip(BOMBS, paths, api_bounded(READ, *paths)):
        assert got and got.startswith(f"{path}: ") and message in got and "\n" not in got, (name, got)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_dag_as_a_tensor_shape(tmp_path, legacy):
    data = dumps(state_dict(t=tensor(storage("0", 12, legacy=legacy), 0, (1,), (1,))))
    data = data.replace(b"K\x01\x85", NONE_DAG, 1)  # shape (1,), and the stride, memoized with it
    path = (write_legacy if legacy else write_zip)(tmp_path / "x.bin", data, {"0": FLOATS})
    assert api_bounded(READ, path) == [f"{path}: tensor t: invalid offset, shape or stride"]


def test_bombs_are_what_they_claim():
    # the control: the DAG really has 2**34 leaves, and the C unpickler really allocates for the memo index
    dag = pickle.loads(pkl(NONE_DAG))
    for _ in range(34):
        assert dag[0] is dag[1]
        dag = dag[0]
    assert dag is None
    done = run_bounded("import pickle; pickle.loads(bytes.fromhex(sys.argv[1]))", pkl(b"]r\xff\xff\xff\xff").hex())
    assert done.returncode == 1 and "MemoryError" in done.stderr


def test_zip_member_claiming_more_bytes_than_the_file(tmp_path):
    path = write_zip(tmp_path / "x.bin", dumps(state_dict(t=tensor(storage("0", 12), 0, (2,), (1,)))),
                     {"0": FLOATS})
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # data.pkl's entry in the central directory: its two sizes
    data[entry + 20:entry + 28] = (2**31 - 1).to_bytes(4, "little") * 2
    path.write_bytes(bytes(data))
    assert api_bounded(READ, path) == [f"{path}: archive/data.pkl claims more bytes than the file has"]


# --- shapes NumPy cannot represent ------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("shape, stride, message", [
    ((2**62, 0), (1, 1), r"shape \(4611686018427387904, 0\) is too large for NumPy"),
    ((2**63 - 1, 0), (1, 1), "is too large for NumPy"),
    ((2**40, 2**30, 0), (0, 0, 0), "is too large for NumPy"),
    ((1,) * 65, (1,) * 65, "65 dimensions, more than NumPy's 64"),
    ((1,), (2**62,), "stride 4611686018427387904 is too large for NumPy"),
    ((1, 2), (2**61, 1), "stride 2305843009213693952 is too large"),
    ((2**63,), (1,), "invalid offset, shape or stride"),
])
def test_shapes_numpy_cannot_make(tmp_path, shape, stride, message, legacy):
    data = dumps(state_dict(t=tensor(storage("0", 12, legacy=legacy), 0, shape, stride)))
    path = (write_legacy if legacy else write_zip)(tmp_path / "x.bin", data, {"0": FLOATS})
    with pytest.raises(NpsqueezeError, match=message) as e:
        read_torch_bin(path)
    assert str(e.value).startswith(f"{path}: tensor t: ") and "\n" not in str(e.value)


# --- metadata claiming gigabytes: refused before it is read ------------------------------------------

def sparse(path, head: bytes, size: int):
    """`head`, then zeros up to `size` bytes, which take no disk."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def legacy_head() -> bytes:
    return b"".join([pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(LEGACY_PROTOCOL, 2),
                     pickle.dumps({"protocol_version": LEGACY_PROTOCOL, "little_endian": True}, 2)])


def many_members(path, n: int):
    """A zip64 archive whose directory lists `n` members (all the same one-byte file): ZipFile builds
    an entry for each when it opens the archive."""
    local = b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    entry = b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    end64 = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, n, n, len(entry) * n, len(local))
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(local) + len(entry) * n, 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(local + entry * n + end64 + locator + end)
    return path


def big_pickle(path, size: int):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02X" + (size).to_bytes(4, "little") + b"a" * size + b".")
    return path


METADATA_BOMBS = {  # name -> (write(path), what the message says)
    "legacy string of 150 MB": (lambda p: sparse(p, legacy_head() + b"\x80\x02X" + (150 << 20).to_bytes(4, "little"),
                                                 160 << 20), "a pickle of over 16 MB: too large for a state dict"),
    "legacy line of 150 MB": (lambda p: sparse(p, legacy_head() + b"\x80\x02c", 150 << 20),
                              "a pickle text line of over 1000 bytes"),
    "zip of a million members": (lambda p: many_members(p, 1_000_000),
                                 "a zip archive of 1,000,000 members: more than the 100,000 of a checkpoint"),
    "data.pkl of 17 MB": (lambda p: big_pickle(p, 17 << 20), "archive/data.pkl is over 16 MB"),
}


def test_metadata_claiming_gigabytes_is_refused_within_bounds(tmp_path):
    """Each used to be read whole (a string of 150 MB, a directory of a million entries, 6 s)."""
    paths = [write(tmp_path / f"{i}.bin") for i, (write, _) in enumerate(METADATA_BOMBS.values())]
    for (name, (_, message)), path, got in zip(METADATA_BOMBS.items(), paths, api_bounded(READ, *paths, seconds=3)):
        assert got and got.startswith(f"{path}: ") and message in got and "\n" not in got, (name, got)


def test_a_pickle_just_under_the_bounds_still_reads(tmp_path):
    # before the state dict: a string of 15 MB and a text line of 1000 bytes (PUT of a 999-digit index), popped
    filler = b"X" + (15 << 20).to_bytes(4, "little") + b"a" * (15 << 20) + b"0" + b"]p" + b"1" * 999 + b"\n0"
    good = dumps(state_dict(t=tensor(storage("0", 12), 0, (3,), (1,))))
    path = write_zip(tmp_path / "x.bin", good[:2] + filler + good[2:], {"0": FLOATS})
    assert read_torch_bin(path)["t"].tolist() == [0.0, 1.0, 2.0]
