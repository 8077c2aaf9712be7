"""More than one core: threads that share out a batch's positions, and worker processes.

NumPy runs the elementwise work of a forward pass (GELU, softmax, LayerNorm, adds: about half of its
time) on one core, whatever BLAS does; only the matrix products use BLAS's threads. So with
`set_threads(n)` a forward pass shares out a batch's positions among n threads, each running the
whole model on its share with one BLAS thread (`share_out`): NumPy lets go of the GIL inside its
loops and BLAS, so every core does every kind of work. A batch is cut between its sequences; a lone
sequence between its positions, and then its threads hand each other their keys and values at every
layer. Threads still wait for each other: for the GIL between NumPy calls (which is why short inputs
are not shared out), at the end of each batch, and at every layer of a lone sequence; on a machine
whose other cores are busy, one descheduled thread stalls the rest. Worker processes do not: for
large inputs, pipelines can use `workers` processes, each with one thread and its own share of the
batches, so a busy core only slows the batches it holds. Workers load the checkpoint themselves; its
safetensors weights are memory-mapped, so the processes share them.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import pickle
import signal
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import ops

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


_threads: int | None = None  # set_threads' n (None: as many as BLAS used when first asked)


def set_threads(n: int) -> bool:
    """Have forward passes of this process use `n` threads from now on: a batch's positions shared
    out among them (see `share_out`), and short inputs' matrix products on `n` BLAS threads.
    Returns False where the BLAS library offers no way to set its threads (then only
    OPENBLAS_NUM_THREADS / MKL_NUM_THREADS / OMP_NUM_THREADS, set before NumPy is imported, decide)."""
    global _threads
    _threads = n
    return set_blas_threads(n)


def get_threads() -> int:
    """The threads forward passes use: as set_threads said, else as many as BLAS used when first asked
    (OPENBLAS_NUM_THREADS, ..., or the cores): a forward pass sets BLAS's threads for its own time."""
    return _threads or blas_threads_at_start()


@functools.cache  # read once: forward passes set BLAS's threads for their own time
def blas_threads_at_start() -> int:
    return get_blas_threads() or 1


@contextmanager
def using_threads(n: int):
    """Forward passes use `n` threads inside the block, then as many as before."""
    global _threads
    before, _threads = _threads, n
    try:
        with using_blas_threads(n):
            yield
    finally:
        _threads = before


@contextmanager
def using_blas_threads(n: int):
    """BLAS runs the matrix products on `n` threads inside the block, then on as many as before."""
    before = get_blas_threads()
    set_blas_threads(n)
    try:
        yield
    finally:
        if before:
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
# than the second core gives. Two threads took 1.6x the time of one on 2 x 8 positions, as long on
# 2 x 64, 0.8x on 8 x 32; on a lone sequence of 128, 0.9x the time of one thread with two BLAS threads
# (1.25x on 64).
MIN_POSITIONS = 64


def threads_for(M: int, N: int) -> int:
    """Among how many threads `share_out` shares out a batch of M positions in N sequences: as many as
    `set_threads` asked for, with MIN_POSITIONS positions each at least and no more than N sequences
    (a lone sequence: its positions). One while `ops.tally` is counting: the profile times one step at
    a time."""
    return 1 if ops.tallying() else max(1, min(get_threads(), M // MIN_POSITIONS, N if N > 1 else M))


def forward_pass(M: int, N: int):
    """BLAS's threads for a forward pass of M positions in N sequences, set back when it ends: one
    where the pass is shared out, as each of its threads wants, and for the pooler after them (a BLAS
    thread that has just worked keeps spinning for a while, and takes a core from the threads of the
    next pass: 1.5x the time of a lone sequence of 128); else as many as get_threads says."""
    return using_blas_threads(1 if threads_for(M, N) > 1 else get_threads())


def share_out(forward, input_ids, token_type_ids, positions, lengths, mask):
    """`forward(input_ids, token_type_ids, positions, lengths, mask, exchange)` on a batch laid out as
    one row of positions (see model.forward), shared out among `threads_for` threads, in a `forward_pass`.

    Every layer but attention is position-wise and attention stays within a sequence, so the batch
    cut between two sequences is two batches: each thread runs the whole model on one run of whole
    sequences (about M/n positions), with one BLAS thread (exchange None). A lone sequence is cut
    between its positions: each thread gets a run of them, the whole sequence's `lengths` and `mask`
    (they describe the keys), and an `exchange(k, v)` that gives its attention every thread's keys
    and values (see `KeyExchange`). The parts' outputs, [M, ...] per position or [N, ...] per
    sequence, are put back side by side.
    """
    M, N = len(input_ids), len(lengths)
    n = threads_for(M, N)
    if n < 2:
        return forward(input_ids, token_type_ids, positions, lengths, mask, None)
    if N == 1:  # cut anywhere: n runs of about M/n positions, the keys exchanged
        exchange = KeyExchange(n)
        cuts = [M * i // n for i in range(n + 1)]
        parts = [(slice(a, b), lengths, mask, functools.partial(exchange, i))
                 for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    else:  # each part ends with the first sequence to reach the next n-th of the positions (none empty)
        exchange, ends = None, np.cumsum(lengths)  # ends [N]: where each sequence ends
        cuts = np.searchsorted(ends, M * np.arange(1, n) / n) + 1  # [n-1]: sequences before each cut
        cuts = [0, *np.unique(np.clip(cuts, 1, N - 1)).tolist(), N]  # [parts + 1]
        runs = [slice(ends[a] - lengths[a], ends[b - 1]) for a, b in zip(cuts, cuts[1:])]  # each part's positions
        parts = [(p, lengths[a:b], None if mask is None else mask[p], None)
                 for p, a, b in zip(runs, cuts, cuts[1:])]

    def run(p, lengths, mask, exchange_keys):
        try:
            return forward(input_ids[p], token_type_ids[p], positions[p], lengths, mask, exchange_keys)
        except BaseException:
            if exchange is not None:
                exchange.barrier.abort()  # the other threads stop waiting for this one's keys
            raise

    # threads of its own for each pass: parts of two passes at once never wait in one pool's queue
    with ThreadPoolExecutor(len(parts), thread_name_prefix="npsqueeze") as pool:
        futures = [pool.submit(run, *part) for part in parts]
    failed = [f.exception() for f in futures if f.exception() is not None]  # all have ended
    if failed:  # the part that failed, not those it left waiting at the exchange
        raise next((e for e in failed if not isinstance(e, threading.BrokenBarrierError)), failed[0])
    return side_by_side([f.result() for f in futures])


class KeyExchange:
    """How the threads sharing out a lone sequence's positions hand each other their keys and values.

    At every layer each thread hands in its columns of k and v, [C, its positions], waits until every
    thread has (a barrier), and gets all of them side by side, [C, W]: its queries attend to every
    key. Successive layers use two slots in turn: a thread hands in layer l + 2's keys only after every
    thread reached layer l + 1's barrier, so after each has read layer l's.
    """

    def __init__(self, n: int):
        self.barrier = threading.Barrier(n)
        self.slots = [[None] * n, [None] * n]
        self.calls = [itertools.count() for _ in range(n)]  # each thread's layer

    def __call__(self, part: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slot = self.slots[next(self.calls[part]) % 2]
        slot[part] = k, v
        self.barrier.wait()
        return np.concatenate([kv[0] for kv in slot], 1), np.concatenate([kv[1] for kv in slot], 1)  # -> [C, W]


def side_by_side(parts: list):
    """The parts' outputs joined along the first axis, however they nest in tuples (None stays None)."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(side_by_side(list(p)) for p in zip(*parts))
    return np.concatenate(parts)

