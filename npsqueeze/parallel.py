"""More than one core: BLAS threads for the matrix products, worker processes for everything else.

NumPy runs the elementwise work of a forward pass (GELU, softmax, LayerNorm, adds: about half of its
time) on one core, whatever BLAS does; only the matrix products use BLAS's threads. And BLAS threads
wait for each other at every product: on a machine whose other cores are busy, one descheduled
thread stalls them all. So npsqueeze's pipelines use one BLAS thread by default and, for large
inputs, `workers` processes, each with its own thread and its own share of the batches: every core
does all of the work, and a busy core only slows the batches it holds. Workers load the checkpoint
themselves; its safetensors weights are memory-mapped, so the processes share them.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from concurrent.futures import Executor
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


def blas_function(names: tuple[str, ...]) -> list:
    """Each loaded BLAS library's function of the first of `names` it exports."""
    found = []
    for lib in blas_libraries():
        fn = next((getattr(lib, name) for name in names if hasattr(lib, name)), None)
        if fn is not None:
            found.append(fn)
    return found


def set_threads(n: int) -> bool:
    """Have BLAS use `n` threads for the matrix products of this process, from now on. Returns False
    where the BLAS library offers no way to do so (then only OPENBLAS_NUM_THREADS / MKL_NUM_THREADS /
    OMP_NUM_THREADS, set before NumPy is imported, decide)."""
    setters = blas_function(SET_THREADS)
    for fn in setters:
        fn(ctypes.c_int(n))
    return bool(setters)


def get_threads() -> int | None:
    """The threads BLAS uses for matrix products (None where it does not say)."""
    getters = blas_function(GET_THREADS)
    return int(getters[0]()) if getters else None


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
