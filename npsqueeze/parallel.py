"""More than one core: threads that share out a batch's sequences, and worker processes.

NumPy runs the elementwise work of a forward pass (GELU, softmax, LayerNorm, adds: about half of its
time) on one core, whatever BLAS does; only the matrix products use BLAS's threads. So with
`set_threads(n)` a forward pass shares out a batch's sequences among n threads, each running the
whole model on its share with one BLAS thread (`by_sequences`): NumPy lets go of the GIL inside its
loops and BLAS, so every core does every kind of work. A lone sequence runs its matrix products on
n BLAS threads. Threads still wait for each other: for the GIL between NumPy calls, at the end of
each batch, and BLAS's threads at every product; on a machine whose other cores are busy, one
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
from concurrent.futures import Executor, ThreadPoolExecutor, wait
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


_threads: int | None = None  # set_threads' n (None: as many as BLAS uses)


def set_threads(n: int) -> bool:
    """Have forward passes of this process use `n` threads from now on: a batch's sequences shared
    out among them (see `by_sequences`), a lone sequence's matrix products on `n` BLAS threads.
    Returns False where the BLAS library offers no way to set its threads (then only
    OPENBLAS_NUM_THREADS / MKL_NUM_THREADS / OMP_NUM_THREADS, set before NumPy is imported, decide)."""
    global _threads
    _threads = n
    return set_blas_threads(n)


def get_threads() -> int:
    """The threads forward passes use: as set_threads said, else as many as BLAS uses."""
    return _threads or get_blas_threads() or 1


@contextmanager
def using_threads(n: int):
    """Forward passes use `n` threads inside the block, then as many as before."""
    global _threads
    before = _threads, get_blas_threads()
    set_threads(n)
    try:
        yield
    finally:
        _threads = before[0]
        if before[1]:
            set_blas_threads(before[1])


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


def by_sequences(forward, input_ids, token_type_ids, lengths, mask):
    """`forward(input_ids, token_type_ids, lengths, mask)` on a batch laid out as one row of positions
    (see model.forward), its sequences shared out among the threads `set_threads` asked for.

    Every layer but attention is position-wise and attention stays within a sequence, so the batch
    cut between two sequences is two batches: each thread runs the whole model on one run of whole
    sequences (about M/n positions), with one BLAS thread, and the parts' outputs, [M, ...] per
    position or [N, ...] per sequence, are put back side by side. Not while `ops.tally` is counting:
    the profile times one step at a time.
    """
    threads = get_threads()
    n = min(threads, len(lengths))
    if n < 2 or ops.tallying():
        return forward(input_ids, token_type_ids, lengths, mask)
    N, ends = len(lengths), np.cumsum(lengths)  # ends [N]: where each sequence ends
    # each part ends with the first sequence to reach the next n-th of the positions (none empty)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n) / n) + 1  # [n-1]: sequences before each cut
    cuts = [0, *np.unique(np.clip(cuts, 1, N - 1)).tolist(), N]  # [parts + 1]
    parts = [(slice(ends[a] - lengths[a], ends[b - 1]), slice(a, b)) for a, b in zip(cuts, cuts[1:])]
    set_blas_threads(1)
    try:
        pool = thread_pool(len(parts))
        futures = [pool.submit(forward, input_ids[p], token_type_ids[p], lengths[s], None if mask is None else mask[p])
                   for p, s in parts]  # p: the part's positions, s: its sequences
        wait(futures)  # all of them, even when one fails: BLAS's threads are set back once no part runs
        outputs = [f.result() for f in futures]
    finally:
        set_blas_threads(threads)
    return side_by_side(outputs)


@functools.cache
def thread_pool(n: int) -> ThreadPoolExecutor:
    """`n` threads, started by the first pass that shares out a batch and kept for the next ones."""
    return ThreadPoolExecutor(n, thread_name_prefix="npsqueeze")


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads: it starts its own
    os.register_at_fork(after_in_child=thread_pool.cache_clear)


def side_by_side(parts: list):
    """The parts' outputs joined along the first axis, however they nest in tuples (None stays None)."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(side_by_side(list(p)) for p in zip(*parts))
    return np.concatenate(parts)


def worker_pool(workers: int) -> Executor:
    """A pool of `workers` fresh Python processes (spawned: no state or thread inherited from this one)
    that ignore Ctrl-C: the parent stops them (see `stop`)."""
    import multiprocessing  # here, as the pool: they take longer to import than a command takes to start
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))


def stop(executor: Executor) -> None:
    """Stop a pool now: cancel what waits, end the worker processes (Ctrl-C must leave nothing behind)."""
    executor.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(executor, "_processes", None) or {}).values()):  # ProcessPoolExecutor's
        process.terminate()


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def call(task: bytes, *args):
    """`pickle.loads(task)(*args)`: a task function sent pickled, so that whatever it needs (a worker's
    pipeline, loaded once per process) is loaded while the task runs, and a failure comes back as the
    task's own exception instead of breaking the pool."""
    return pickle.loads(task)(*args)
