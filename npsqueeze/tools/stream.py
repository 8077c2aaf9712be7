"""Jobs over inputs of any size in flat memory, resumable: read a chunk at a time, each chunk run here,
in worker processes or on a cluster, its results written as soon as it and the chunks before it are
done. Memory holds a few chunks, however long the input.

An output file OUT is built in the folder OUT.partial/ beside it: `data` holds OUT's bytes so far
and `progress.json` which run they belong to (its input and options) and how far it got: the inputs
done, the bytes of `data` that hold their results, and a hash of the input read up to there.
progress.json is replaced at most once a second, after `data` is on disk (fsync): after Ctrl-C, a
kill or a power cut, a run resumes from its last record (the bytes past it are cut off) and writes
the very bytes an uninterrupted run writes. Once the last chunk is written, `data` becomes OUT by a
rename: OUT appears only whole, and an old OUT stays as it was until then.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import io
import itertools
import json
import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from ..config import NpsqueezeError

MAX_LINE = 64 << 20  # bytes in a line of input, at most: checked before the line is decoded or parsed
COMMIT_SECONDS = 1.0  # progress.json is rewritten at most this often: each rewrite waits for the disk
MAX_PROGRESS_BYTES = 1 << 20  # progress.json holds a few hundred bytes


# --- reading --------------------------------------------------------------------------------------

def read_lines(f: BinaryIO, name: str) -> Iterator[bytes]:
    """Each line of a binary stream as read, its newline included, blank lines too."""
    for n in itertools.count(1):
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            raise NpsqueezeError(f"{name}: line {n} is longer than {MAX_LINE >> 20} MiB, the most npsqueeze reads "
                                 "as one input: split it")
        yield line


def count_lines(path: Path) -> int:
    """The lines of a file, as read_lines reads them, in one pass of a block at a time."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n, last = n + block.count(b"\n"), block[-1:]
    return n + (last != b"\n")


class Chunk(NamedTuple):
    start: int  # the inputs before it
    items: list  # its inputs
    digest: str  # the hash of every input's bytes up to its end


def chunked(records: Iterable[tuple[object, bytes]], size: int, start: int, hasher) -> Iterator[Chunk]:
    """(input, the bytes it was read from) records as chunks of `size` inputs, the first after `start`
    inputs; `hasher` (a hashlib object) takes in every record's bytes."""
    records = iter(records)
    while batch := list(itertools.islice(records, size)):
        for _, raw in batch:
            hasher.update(raw)
        yield Chunk(start, [item for item, _ in batch], hasher.hexdigest())
        start += len(batch)


def skip(records: Iterable[tuple[object, bytes]], n: int, digest: str, hasher, partial: Path) -> Iterator:
    """The records after the first `n`, which a resumed run did before: their bytes must hash to `digest`."""
    records = iter(records)
    read = 0
    for _, raw in itertools.islice(records, n):
        hasher.update(raw)
        read += 1
    if read < n or hasher.hexdigest() != digest:
        what = f"has {read:,} inputs" if read < n else f"differs in its first {n:,} inputs"
        raise NpsqueezeError(f"the input {what}, not those of the run in {partial}: remove {partial} to start over")
    return records


def ordered(fn: Callable, chunks: Iterable[Chunk], executor: Executor | None = None,
            window: int = 1) -> Iterator[tuple[Chunk, object]]:
    """(chunk, fn(chunk)) for each chunk, in order: on `executor`, `window` chunks at most submitted and
    not yet given back (memory holds that many), or else one at a time in this process."""
    if executor is None:
        yield from ((c, fn(c)) for c in chunks)
        return
    pending: collections.deque = collections.deque()
    for c in chunks:
        pending.append((c, executor.submit(fn, c)))
        if len(pending) >= window:
            c, future = pending.popleft()
            yield c, future.result()
    while pending:
        c, future = pending.popleft()
        yield c, future.result()


# --- output files -------------------------------------------------------------------------------

class NpyRows:
    """A .npy file of float32 rows [N, dims], written a chunk at a time. NumPy's header leaves room for
    the row count to grow, so it has one size whatever N: written with 0 rows first, with N at the
    end. The file's bytes are np.save's."""

    def __init__(self, dims: int):
        self.dims = dims

    def header(self, rows: int) -> bytes:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dims)})
        return header.getvalue()

    def encode(self, rows: np.ndarray) -> bytes:
        return np.ascontiguousarray(rows, "<f4").tobytes()  # [n, dims]


class JsonLines:
    """A JSON Lines file, written a chunk of lines at a time."""

    def header(self, rows: int) -> bytes:
        return b""

    def encode(self, lines: list[str]) -> bytes:
        return "".join(lines).encode()


# --- the partial output ---------------------------------------------------------------------------

class Partial:
    """OUT.partial/ (see the module's docstring): `data` holds the chunks written so far; `written` and
    `committed` are (inputs done, bytes of data that hold them, digest of the input up to there): the
    last whole chunk written, and the last one progress.json records. `form` is NpyRows or JsonLines;
    `run` says which run this is (the input and options), compared when resuming.

    Without `resume`, a folder left by another run is reported, never reused or removed; but one
    without a progress record, from a run stopped as it started, holds nothing and starts afresh.
    """

    def __init__(self, out: Path, form, run: dict, resume: bool):
        self.out, self.form, self.run = out, form, run
        self.folder = out.with_name(out.name + ".partial")
        self.lock = self.data = None
        try:
            os.mkdir(self.folder)
            fresh = True
        except FileExistsError:
            fresh = False
        except OSError as e:
            raise NpsqueezeError(f"cannot create {self.folder}: {why(e)}") from None
        try:
            self.lock = locked(self.folder)
            if not fresh and not (self.folder / "progress.json").exists():
                fresh = True  # a run stopped as it started, before its first record: no input done
            if not fresh and not resume:
                raise NpsqueezeError(f"{self.folder} holds an unfinished run ({self.described()}): add --resume to "
                                     f"continue it, or remove {self.folder} to start over")
            self.start() if fresh else self.reopen()
        except BaseException:
            self.close()
            raise

    def described(self) -> str:
        try:
            return f"{self.record()['done']:,} inputs done"
        except NpsqueezeError:
            return "its progress record is damaged"

    def start(self) -> None:
        self.data = open(self.folder / "data", "w+b", buffering=0)
        head = self.form.header(0)
        write_all(self.data, head)
        self.written = self.committed = (0, len(head), hashlib.sha256().hexdigest())
        self.commit()  # a progress.json from the first moment: the folder is this run's

    def reopen(self) -> None:
        record = self.record()
        if record["run"] != self.run:
            differ = [k for k in sorted(record["run"].keys() | self.run.keys())
                      if record["run"].get(k) != self.run.get(k)]
            raise NpsqueezeError(f"{self.folder} is from another run (its {', '.join(differ)} differ from this "
                                 f"one's): run it as it was, or remove {self.folder} to start over")
        try:
            self.data = open(self.folder / "data", "r+b", buffering=0)
            size = os.fstat(self.data.fileno()).st_size
        except OSError as e:
            raise NpsqueezeError(f"{self.folder} is damaged ({why(e)}): remove it to start over") from None
        if size < record["bytes"]:
            raise NpsqueezeError(f"{self.folder} is damaged: its data holds {size:,} bytes, fewer than the "
                                 f"{record['bytes']:,} its progress records; remove it to start over")
        self.data.truncate(record["bytes"])  # what a chunk left unrecorded: done again
        self.data.seek(record["bytes"])
        self.written = self.committed = (record["done"], record["bytes"], record["digest"])
        self.last = time.monotonic()

    def record(self) -> dict:
        """progress.json, checked; a damaged one is an error."""
        path = self.folder / "progress.json"
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read(MAX_PROGRESS_BYTES))
            keys = {"run": dict, "done": int, "bytes": int, "digest": str}
            if not isinstance(record, dict) or not all(isinstance(record.get(k), t) for k, t in keys.items()):
                raise ValueError("not a progress record")
        except (OSError, ValueError, RecursionError) as e:
            raise NpsqueezeError(f"{self.folder} is damaged ({path.name}: {why(e) if isinstance(e, OSError) else e}): "
                                 "remove it to start over") from None
        return record

    @property
    def done(self) -> int:
        return self.written[0]

    @property
    def digest(self) -> str:
        return self.written[2]

    def write(self, data: bytes, done: int, digest: str) -> None:
        """Append a chunk's bytes: with it `done` inputs are done, and the input read so far hashes to `digest`."""
        try:
            write_all(self.data, data)
        except OSError as e:
            try:
                self.data.truncate(self.written[1])  # room for the progress record, if the disk is full
            except OSError:
                pass
            self.save()
            raise self.failed(e) from None
        self.written = (done, self.written[1] + len(data), digest)
        if time.monotonic() - self.last >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Record `written` in progress.json once data is on disk: the point a resumed run starts from."""
        try:
            os.fsync(self.data.fileno())
            done, size, digest = self.written
            tmp = self.folder / "progress.json.tmp"
            with open(tmp, "w") as f:
                json.dump({"run": self.run, "done": done, "bytes": size, "digest": digest}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / "progress.json")
            fsync_folder(self.folder)
        except OSError as e:
            raise self.failed(e) from None
        self.committed, self.last = self.written, time.monotonic()

    def save(self) -> bool:
        """On the way out of a run that stopped: commit what is written, if it can. A partial that holds
        no input done goes (nothing is lost). Whether it stays."""
        if self.data is None:
            return False
        if self.written != self.committed:
            try:
                self.commit()
            except NpsqueezeError:
                pass
        if self.committed[0] == 0:
            self.close()
            for name in ("data", "progress.json", "progress.json.tmp"):
                (self.folder / name).unlink(missing_ok=True)
            self.folder.rmdir()
            return False
        return True

    def failed(self, e: OSError) -> NpsqueezeError:
        done = self.committed[0]
        kept = (f"; {done:,} inputs are done and kept in {self.folder}: make room, then run the same command with "
                "--resume") if done else ""
        return NpsqueezeError(f"cannot write {self.out}: {why(e)}{kept}")

    def finish(self) -> None:
        """Complete the file and rename it to OUT; the folder goes."""
        try:
            self.data.seek(0)
            write_all(self.data, self.form.header(self.done))
            os.fsync(self.data.fileno())
            self.data.close()
            os.replace(self.folder / "data", self.out)
            fsync_folder(self.out.parent)
        except OSError as e:
            raise self.failed(e) from None
        (self.folder / "progress.json").unlink()
        self.close()
        self.folder.rmdir()

    def close(self) -> None:
        for f in (self.data, self.lock):
            if f is not None:
                os.close(f) if isinstance(f, int) else f.close()
        self.data = self.lock = None

    def __enter__(self) -> "Partial":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:  # Ctrl-C, an error: keep what is done
            self.save()
        self.close()


def write_all(f, data: bytes) -> None:
    """Write every byte to an unbuffered file (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


def locked(folder: Path) -> int:
    """A descriptor of `folder`, locked: two runs never write one partial at once."""
    if not folder.is_dir():
        raise NpsqueezeError(f"{folder} is in the way: it is not a folder (of an unfinished run); remove it")
    fd = os.open(folder, os.O_RDONLY)
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NpsqueezeError(f"another npsqueeze run is writing {folder}") from None
    return fd


def fsync_folder(folder: Path) -> None:
    """Put a folder's entries (a rename) on disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EFBIG: "file too large for this file system or limit"}


def why(e: OSError) -> str:
    """An OSError in a few words: "no space left on device"."""
    return REASONS.get(e.errno) or (e.strerror or str(e)).lower()
