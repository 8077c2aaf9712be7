"""`npsqueeze convert SRC DST`: an HF checkpoint -> a folder npsqueeze memory-maps in no time.

SRC is an HF checkpoint folder (pytorch_model.bin or model.safetensors, sharded or not) or a hub id.
DST gets SRC's JSON and text files (config, tokenizer, sentence-transformers settings) and
`weights.CONVERTED`: one safetensors file holding every tensor the config defines that SRC has (the
base model and any head, so every class loads it), under the engine's names and in its layout (1x1
convolutions per group, [G, K/G, C/G]), with the sha256 of the inputs in its metadata. DST appears
complete or not at all, and `--force` swaps the new folder in atomically (Linux; elsewhere the old
folder stays recoverable, and the next run restores it); what a killed run left is cleaned up later.
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
from ..config import Config, NpsqueezeError
from ..modeling import ARCHITECTURES, model_class
from ..weights import (CONVERTED, FORMAT, Entry, check_layers, engine_tensors, load_params, read_checkpoint,
                      safetensors_file, strip_prefix, weight_files, weight_map)

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
        write(folder, dst, stored, metadata, cfg, head)
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
    if np.isfinite(t).all() and not np.isfinite(h).all():
        raise NpsqueezeError(f"{what} overflows float16 (|x| up to {np.abs(t).max():.3g}): "
                             "convert with --dtype float32")
    return h


def write(folder: Path, dst: Path, stored: dict[str, np.ndarray], metadata: dict[str, str], cfg: Config,
          head: str | None) -> None:
    """Write DST under a hidden name next to it, read it back, then move it into place.

    The hidden name carries this process's id, so that a later run can tell the folders of runs
    that died (`clean_stale`) from those of runs still going. With --force the new folder and the
    old swap places in one step, so DST is always the old folder or the new one; where the system
    cannot swap, the old folder is renamed aside first, and restored by the next run if this one dies
    before the new folder is in place.
    """
    clean_stale(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        for path in side_files(folder, dst):
            (tmp / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / path.relative_to(folder))
        with open(tmp / CONVERTED, "wb") as f:  # not save_file: it ignores the umask
            f.write(save(stored, metadata=metadata))
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        crash_point("written")
        load_params(tmp, cfg, head)  # loads as the class config.json names
        written, meta = safetensors_file(tmp / CONVERTED)
        if meta != metadata or written.keys() != stored.keys() or not all(
                same_bits(written[k], a) for k, a in stored.items()):
            raise NpsqueezeError(f"{dst / CONVERTED}: the file written did not read back identical")
        if not dst.exists():
            tmp.rename(dst)
        elif exchange(tmp, dst):  # --force: tmp now holds the old folder
            crash_point("swapped")
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = tmp.with_suffix(".old")
            dst.rename(old)
            crash_point("moved aside")
            try:
                tmp.rename(dst)
            except BaseException:
                old.rename(dst)
                raise
            crash_point("swapped")
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders' names in one step (Linux's renameat2 with RENAME_EXCHANGE); False where the
    system or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


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
        if not m or path.is_symlink() or not path.is_dir() or alive(int(m.group(1))):
            continue
        if m.group(2) == "old" and not dst.exists():
            try:
                path.rename(dst)
                continue
            except OSError:  # another run restored it first
                pass
        shutil.rmtree(path, ignore_errors=True)


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


def side_files(folder: Path, dst: Path) -> list[Path]:
    """SRC's JSON and text files but the shard index: config, tokenizer, sentence-transformers settings."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".txt") and p.is_file()
                  and not p.name.endswith(".index.json") and dst not in p.absolute().parents
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # e.g. hf's .cache


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality (NaNs and -0.0 included), compared as unsigned integers of the same width."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(f"u{a.itemsize}"),
                                                                        b.view(f"u{b.itemsize}"))
