"""`npsqueeze convert SRC DST`: an HF checkpoint -> a folder npsqueeze memory-maps in no time.

SRC is an HF checkpoint folder (pytorch_model.bin or model.safetensors, sharded or not) or a hub id.
DST gets the files besides weights that loading reads (`SIDE_FILES`: config, tokenizer,
sentence-transformers settings; links followed only inside the checkpoint or its HF cache) and
`weights.CONVERTED`: one safetensors file holding every tensor the config defines that SRC has (the
base model and any head, so every class loads it), under the engine's names and in its layout (1x1
convolutions per group, [G, K/G, C/G]), with the sha256 of the inputs in its metadata. DST appears
complete or not at all, and `--force` swaps the new folder in atomically (Linux; elsewhere the old
folder stays recoverable, and the next run restores it); what a killed run left is cleaned up later.
Of two runs writing one new DST at once, one writes it and the other fails (with --force, the last
to finish wins). A DST that is a symbolic link is refused.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import save
from tqdm import tqdm

from .. import __version__
from ..config import Config, NpsqueezeError, read_json
from ..modeling import ARCHITECTURES, model_class
from ..pipelines import module_folder
from ..weights import (CONVERTED, FORMAT, Entry, all_finite, check_layers, engine_tensors, load_params,
                      read_checkpoint, safetensors_file, strip_prefix, weight_files, weight_map)
from .infer import warnings_to_stderr

# What HF checkpoints carry besides weights: buffers, and the MLM decoder's copies of weights tied
# to others (its weight is the word embeddings unless the config unties it, its bias cls.predictions.bias).
HARMLESS = {"embeddings.position_ids", "embeddings.token_type_ids", "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias"}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def add_arguments(p) -> None:
    p.add_argument("src", help="HF checkpoint folder (pytorch_model.bin or model.safetensors, sharded or "
                               "not), or a hub id such as squeezebert/squeezebert-uncased")
    p.add_argument("dst", help="folder to write")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type (float16 halves the file; it is computed in float32)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")


def run(args) -> None:
    with warnings_to_stderr(args.command):  # a checkpoint's layers the config leaves out: one line
        ignored = convert(args.src, args.dst, args.dtype, args.force)
    if ignored:
        print(f"npsqueeze convert: left out {len(ignored)} tensor(s) npsqueeze does not use: "
              + ", ".join(ignored), file=sys.stderr)
    print(f"wrote {args.dst}")


def convert(src: str | Path, dst: str | Path, dtype: str = "float32", force: bool = False) -> list[str]:
    """Convert the checkpoint `src` (a folder or a hub id) into the folder `dst`.

    Returns the names of the tensors left out because npsqueeze has no use for them. Raises
    NpsqueezeError (naming the file and the tensor) on a broken, hostile or mismatched checkpoint,
    with nothing written.
    """
    folder = resolve(str(src))
    dst = Path(dst).absolute()
    check_destination(folder, dst, force)
    sides = side_files(folder)
    cfg = Config.from_file(folder)
    head = model_class(cfg, folder).head
    files = [folder / "config.json", *weight_files(folder)]
    where = str(files[1])
    with tqdm(total=3, unit="step", desc=f"converting {folder.name}", disable=not sys.stderr.isatty()) as bar:
        tensors = strip_prefix(read_checkpoint(folder))
        metadata = {"format": FORMAT, "npsqueeze_version": __version__, "source": str(src),
                    "sha256": json.dumps({p.name: sha256(p) for p in files})}
        bar.update()
        check_layers(tensors, cfg, where)
        entries = stored_entries(cfg, head, tensors)
        params = engine_tensors(tensors, entries, where)
        stored = {e.name: storage(params[e.name], dtype, f"{where}: tensor {e.source}") for e in entries}
        bar.update()
        write(folder, sides, dst, stored, metadata, cfg, head, force)
        bar.update()
    return sorted(set(tensors) - {e.source for e in entries} - HARMLESS)


def resolve(src: str) -> Path:
    """The checkpoint folder `src` names: a local folder, or a hub id's download."""
    path = Path(src)
    if path.exists():
        if not path.is_dir():
            raise NpsqueezeError(f"{src} is not a checkpoint folder (config.json + weights)")
        return path
    if not HUB_ID.fullmatch(src):
        raise NpsqueezeError(f"no checkpoint folder at {src}")
    how = (f"on a machine with network, run `hf download {src} --local-dir DIR` (pip install "
           "huggingface_hub) and convert DIR")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise NpsqueezeError(f"no folder {src}, and huggingface_hub is not installed to download it: "
                             f"{how}") from None
    try:
        return Path(snapshot_download(src, allow_patterns=["*.json", "*.bin", "*.safetensors", "*.txt"]))
    except Exception as e:  # offline, unknown or gated repo...: huggingface_hub raises many types
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise NpsqueezeError(f"no folder {src}, and downloading it from the Hugging Face hub failed "
                             f"({type(e).__name__}: {reason}): {how}") from None


def check_destination(folder: Path, dst: Path, force: bool) -> None:
    if dst.is_symlink():  # replacing it would replace the link, not what it points to
        raise NpsqueezeError(f"{dst} is a symbolic link: convert into the folder it points to, or remove the link")
    if dst.exists() and not force:
        raise NpsqueezeError(f"{dst} exists: pass --force to replace it")
    if dst.exists() and not dst.is_dir():
        raise NpsqueezeError(f"{dst} exists and is not a folder")
    if dst.resolve() == folder.resolve() or dst.resolve() in folder.resolve().parents:
        raise NpsqueezeError(f"{dst} holds the source checkpoint {folder}: write the conversion elsewhere")
    if not dst.parent.is_dir():
        raise NpsqueezeError(f"no folder {dst.parent} to write {dst.name} into")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stored_entries(cfg: Config, head: str | None, tensors: dict[str, np.ndarray]) -> list[Entry]:
    """Every tensor `head` needs (missing ones are an error), then those of other heads `tensors` has."""
    entries = {e.name: e for e in weight_map(cfg, head)}
    for other in dict.fromkeys(c.head for c in ARCHITECTURES.values()):
        for e in weight_map(cfg, other):
            if e.name not in entries and e.source in tensors:
                entries[e.name] = e
    return list(entries.values())


def storage(t: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """A float32 engine tensor as stored: itself, or rounded to float16 if it fits."""
    if dtype == "float32":
        return t
    with np.errstate(over="ignore"):  # reported below, by name
        h = t.astype(np.float16)
    if not all_finite(h):  # `t` is finite (engine_tensors refuses NaN and Inf)
        raise NpsqueezeError(f"{what} overflows float16 (|x| up to {np.abs(t).max():.3g}): "
                             "convert with --dtype float32")
    return h


def write(folder: Path, sides: list[str], dst: Path, stored: dict[str, np.ndarray], metadata: dict[str, str],
          cfg: Config, head: str | None, force: bool) -> None:
    """Write DST (`stored` and the side files of `folder`) under a hidden name next to it, read it
    back, then move it into place.

    The hidden name carries this process's id, so that a later run can tell the folders of runs
    that died (`clean_stale`) from those of runs still going. See `move_into_place` for the last step.
    """
    clean_stale(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        for name in sides:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, tmp / name)
        with open(tmp / CONVERTED, "wb") as f:  # not save_file: it ignores the umask
            f.write(save(stored, metadata=metadata))
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        crash_point("written")
        load_params(tmp, cfg, head)  # loads as the class config.json names
        written, meta = safetensors_file(tmp / CONVERTED)
        if meta != metadata or written.keys() != stored.keys() or not all(
                same_bits(written[k], a) for k, a in stored.items()):
            raise NpsqueezeError(f"{dst / CONVERTED}: the file written did not read back identical")
        move_into_place(tmp, dst, force)
    except BaseException:
        remove(tmp)
        raise


def move_into_place(tmp: Path, dst: Path, force: bool) -> None:
    """Rename the complete folder `tmp` to `dst`, checking again at that moment what `dst` is.

    A new `dst` is never put over one that appeared while this run converted (another run's): without
    --force that is an error, with it the swap below. With --force, the new folder and the old swap
    places in one step, so DST is always the old folder or the new one; where the system cannot swap,
    the old folder is renamed aside first, and restored by the next run if this one dies before the
    new folder is in place.
    """
    while True:
        try:
            if not os.path.lexists(dst):
                return rename_new(tmp, dst)
        except FileExistsError:
            pass
        if not force:
            raise NpsqueezeError(f"{dst} exists (written while this run converted): pass --force to replace it")
        if exchange(tmp, dst):  # tmp now holds the old folder
            crash_point("swapped")
            return remove(tmp)
        old = tmp.with_suffix(".old")
        try:
            dst.rename(old)
        except FileNotFoundError:  # removed in the meantime by another run: start again
            continue
        crash_point("moved aside")
        try:
            tmp.rename(dst)
        except BaseException:
            old.rename(dst)
            raise
        crash_point("swapped")
        return remove(old)


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2's flags (linux/fs.h)


def renameat2(a: Path, b: Path, flag: int) -> bool:
    """Linux's renameat2(a, b, flag); False where the system or the file system does not offer it."""
    call = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if call is None:
        return False
    at_fdcwd = -100
    if call(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))  # FileExistsError for EEXIST...


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders' names in one step; False where the system cannot."""
    try:
        return renameat2(a, b, RENAME_EXCHANGE)
    except FileNotFoundError:  # b was removed meanwhile
        return False


def rename_new(a: Path, b: Path) -> None:
    """Rename folder `a` to `b`, or raise FileExistsError if `b` exists, even if it appeared a moment
    ago: in one step with RENAME_NOREPLACE; elsewhere `b` is first created empty, which fails if it
    exists, then replaced by `a` (a POSIX rename replaces an empty folder; Windows' never replaces)."""
    if renameat2(a, b, RENAME_NOREPLACE):
        return
    if os.name != "nt":
        os.mkdir(b)
    try:
        os.rename(a, b)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):  # filled by a run with --force meanwhile
            raise FileExistsError(e.errno, e.strerror, str(b)) from None
        if os.name != "nt":
            os.rmdir(b)
        raise


def remove(path: Path) -> None:
    """Delete a folder of ours, or the link or file that took its name (never what a link points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


STALE = r"\.{name}\.(\d+)-[0-9a-f]{{8}}\.(tmp|old)"  # the hidden folders of `write`: .DST.<pid>-<hex>.tmp


def clean_stale(dst: Path) -> None:
    """Remove what runs that died (kill -9, power cut) left next to DST: hidden folders named as
    `write` names them whose process is gone. An old folder set aside by --force is put back if DST
    is missing (the run died between its two renames). Runs still going are left alone."""
    if os.name != "posix" or not dst.parent.is_dir():  # os.kill(pid, 0) only asks on POSIX
        return
    pattern = re.compile(STALE.format(name=re.escape(dst.name)))
    for path in sorted(dst.parent.iterdir(), key=lambda p: p.suffix != ".old"):  # restore before removing
        m = pattern.fullmatch(path.name)
        if not m or not (path.is_symlink() or path.is_dir()) or alive(int(m.group(1))):
            continue
        if m.group(2) == "old" and not path.is_symlink() and not os.path.lexists(dst):
            try:
                rename_new(path, dst)
                continue
            except OSError:  # another run restored it first
                pass
        remove(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all
        return True
    return True


def crash_point(step: str) -> None:
    """Tests kill the process here (NPSQUEEZE_KILL_AT=step), as kill -9 would, to check what DST holds."""
    if os.environ.get("NPSQUEEZE_KILL_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


# The files besides weights that loading reads, copied to DST: the config, the tokenizer's, and
# sentence-transformers' settings (plus the config.json in each folder modules.json names, e.g. 1_Pooling).
SIDE_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def side_files(folder: Path) -> list[str]:
    """The SIDE_FILES `folder` holds, as paths relative to it; the settings among them checked to be
    JSON within the size loading accepts (config.MAX_JSON_BYTES).

    One that is a symbolic link is copied only if it points inside the checkpoint: into the folder, or,
    in a Hugging Face cache snapshot (.../models--ORG--NAME/snapshots/REVISION/, where every file is
    a link), into that cache's blobs/. A link to anywhere else is refused: it would copy a file from
    outside the checkpoint into DST.
    """
    modules = read_json(folder / "modules.json", list) or []
    names = [*SIDE_FILES, *(str(module_folder(folder, m["path"]).relative_to(folder) / "config.json")
                            for m in modules if isinstance(m, dict) and isinstance(m.get("path"), str) and m["path"])]
    inside = [folder.resolve()]
    if folder.parent.name == "snapshots":
        inside.append((folder.parent.parent / "blobs").resolve())
    files = [name for name in dict.fromkeys(names) if (folder / name).is_file()]
    for name in files:
        target = (folder / name).resolve()
        if not any(target.is_relative_to(root) for root in inside):
            raise NpsqueezeError(f"{folder / name} is a link to {target}, outside the checkpoint: convert does "
                                 "not copy it (copy the file into the folder if it belongs to the model)")
        if name.endswith(".json") and name != "tokenizer.json":  # settings: read as loading reads them, bounded
            read_json(folder / name, object)
    return files


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality (NaNs and -0.0 included), compared as unsigned integers of the same width."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(f"u{a.itemsize}"),
                                                                        b.view(f"u{b.itemsize}"))
