"""More than one core: threads that share out a batch's sequences, and worker processes.

NumPy runs the elementwise work of a forward pass (GELU, softmax, LayerNorm, adds: about half of its
time) on one core, whatever BLAS does; only the matrix products use BLAS's threads. So a forward
pass of several sequences shares them out among `get_threads()` threads (`share_out`), each running
the whole model on its run of sequences with one BLAS thread: NumPy lets go of the GIL inside its
loops and BLAS, so every core does every kind of work. Every layer but attention is position-wise,
and attention stays within a sequence, so a batch cut between two sequences is two batches: the
math (model.py) needs to know nothing of it. A lone sequence, or a batch too short to be worth
it, runs on one thread, its matrix products on all of BLAS's threads.

Threads still wait for each other: for the GIL between NumPy calls (which is why short inputs are
not shared out), and at the end of each batch; on a machine whose other cores are busy, one
descheduled thread stalls the rest. Worker processes do not: for large inputs, pipelines can use
`workers` processes, each with one thread and its own share of the batches, so a busy core only
slows the batches it holds. Workers load the checkpoint themselves; its safetensors weights are
memory-mapped, so the processes share them.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import signal
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

# OpenBLAS as NumPy's wheels bundle it (scipy_openblas, 64-bit ints), as Linux distributions ship it,
# and MKL: the functions that set and get the thread count, under each name they are exported as.
SET_THREADS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
               "openblas_set_num_threads", "MKL_Set_Num_Threads")
GET_THREADS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
               "openblas_get_num_threads", "MKL_Get_Max_Threads")


def blas_libraries() -> list[ctypes.CDLL]:
    """The BLAS libraries loaded into this process: those beside NumPy (its wheels bundle OpenBLAS), and
    on Linux every loaded library whose name says OpenBLAS or MKL."""
    here = Path(np.__file__).parent
    paths = [p for d in (here.parent / "numpy.libs", here / ".dylibs")
             if d.is_dir() for p in d.iterdir() if "blas" in p.name]
    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as maps:
            paths += [Path(line.split()[-1]) for line in maps
                      if "/" in line and any(k in line.rsplit("/", 1)[-1] for k in ("openblas", "mkl_rt"))]
    libraries = []
    for path in dict.fromkeys(paths):
        try:
            libraries.append(ctypes.CDLL(str(path)))
        except OSError:
            pass
    return libraries


@functools.cache  # NumPy's BLAS is loaded with NumPy: found once, set cheaply before every split pass
def blas_function(names: tuple[str, ...]) -> list:
    """Each loaded BLAS library's function of the first of `names` it exports."""
    found = []
    for lib in blas_libraries():
        fn = next((getattr(lib, name) for name in names if hasattr(lib, name)), None)
        if fn is not None:
            found.append(fn)
    return found


_threads: int | None = None  # set_threads' n: the process's default (None: the cores BLAS uses)
_scoped: ContextVar[int | None] = ContextVar("npsqueeze_threads", default=None)  # using_threads' n, per thread


def set_threads(n: int) -> bool:
    """Have forward passes of this process use `n` threads from now on: a batch's sequences shared
    out among them (see `share_out`), and a lone sequence's matrix products on `n` BLAS threads.
    Returns False where the BLAS library offers no way to set its threads (then only
    OPENBLAS_NUM_THREADS / MKL_NUM_THREADS / OMP_NUM_THREADS, set before NumPy is imported, decide)."""
    global _threads
    _threads = n
    return set_blas_threads(n)


def get_threads() -> int:
    """The threads forward passes use here: as `using_threads` says in this thread's block, else as
    set_threads said, else as many as BLAS used when first asked (OPENBLAS_NUM_THREADS, ..., or the
    cores): a forward pass sets BLAS's threads for its own time."""
    return _scoped.get() or _threads or blas_threads_at_start()


@functools.cache  # read once: forward passes set BLAS's threads for their own time
def blas_threads_at_start() -> int:
    return get_blas_threads() or 1


@contextmanager
def using_threads(n: int | None):
    """Forward passes started in this thread (or task) inside the block use `n` threads (None: as
    outside); other threads' passes are not affected."""
    token = _scoped.set(n or _scoped.get())
    try:
        yield
    finally:
        _scoped.reset(token)


@contextmanager
def using_blas_threads(n: int):
    """BLAS runs the matrix products on `n` threads inside the block, then on as many as before.
    BLAS's count is the process's: passes at once in several threads may leave it at another's."""
    before = get_blas_threads()
    if before != n:
        set_blas_threads(n)
    try:
        yield
    finally:
        if before and before != n:
            set_blas_threads(before)


def set_blas_threads(n: int) -> bool:
    """Have BLAS use `n` threads for the matrix products of this process, from now on."""
    setters = blas_function(SET_THREADS)
    for fn in setters:
        fn(ctypes.c_int(n))
    return bool(setters)


def get_blas_threads() -> int | None:
    """The threads BLAS uses for matrix products (None where it does not say)."""
    getters = blas_function(GET_THREADS)
    return int(getters[0]()) if getters else None


# positions per thread, at least: below, the threads' handoffs of the GIL between NumPy calls cost more
# than the second core gives (bench/results and README say by how much).
MIN_POSITIONS = 64


def threads_for(M: int, N: int) -> int:
    """Among how many threads `share_out` shares out a batch of M positions in N sequences: as many as
    `get_threads` says, with MIN_POSITIONS positions each at least and no more than N sequences."""
    return max(1, min(get_threads(), M // MIN_POSITIONS, N))


def share_out(forward, input_ids, token_type_ids, lengths, mask):
    """`forward(input_ids, token_type_ids, lengths, mask)` on a batch laid out as one row of positions
    (see model.py), its sequences shared out among `threads_for` threads.

    Each thread runs `forward` on one run of whole sequences (about M/n positions) with one BLAS
    thread; their outputs -- arrays [M, ...] per position or [N, ...] per sequence, however they nest
    in tuples and dicts -- are put back side by side. One thread: `forward` on the whole batch, its
    matrix products on get_threads() BLAS threads. BLAS's thread count is set back after.
    """
    M, N = len(input_ids), len(lengths)
    n = threads_for(M, N)
    if n < 2:
        with using_blas_threads(get_threads()):
            return forward(input_ids, token_type_ids, lengths, mask)
    # each part ends with the first sequence to reach the next n-th of the positions (none empty)
    ends = np.cumsum(lengths)  # [N]: where each sequence ends
    cuts = np.searchsorted(ends, M * np.arange(1, n) / n) + 1  # [n-1]: sequences before each cut
    cuts = [0, *np.unique(np.clip(cuts, 1, N - 1)).tolist(), N]  # [parts + 1]
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        p = slice(ends[a] - lengths[a], ends[b - 1])  # the part's positions
        parts.append((input_ids[p], token_type_ids[p], lengths[a:b], None if mask is None else mask[p]))
    # one BLAS thread for each part's products: a BLAS thread that has just worked keeps spinning for
    # a while and would take a core from the parts. Threads of its own for each pass: parts of two
    # passes at once never wait in one pool's queue.
    with using_blas_threads(1), ThreadPoolExecutor(len(parts), thread_name_prefix="npsqueeze") as pool:
        outputs = list(pool.map(lambda part: forward(*part), parts))
    return side_by_side(outputs)


def side_by_side(parts: list):
    """The parts' outputs joined along the first axis, however they nest in tuples and dicts (None stays None)."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(side_by_side(list(p)) for p in zip(*parts))
    if isinstance(first, dict):
        return {k: side_by_side([p[k] for p in parts]) for k in first}
    return np.concatenate(parts)

