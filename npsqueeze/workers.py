"""Where a pipeline's batches run: in the calling process, in worker processes, or on any executor.

For large inputs a pipeline can run its batches in `workers` processes of one thread each, each
with its own share of the batches (a busy core then slows only the batches it holds; see
parallel.py for threads), or on any `concurrent.futures.Executor` it is given (a process pool, a
Dask cluster's from `npsqueeze.tools.cluster.executor(client)`, ...). A batch goes to a worker as
a pickled task: the pipeline's method and the packed batch. The pipeline itself pickles as the folder and
settings it was loaded from (`Workers.source`), and each worker process loads it from there once
(`shared`); its safetensors weights are memory-mapped, so the processes on one machine share them.
Workers started afresh import the caller's main module: guard its top level with
`if __name__ == "__main__":`.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import threading
import warnings
from concurrent.futures import BrokenExecutor, Executor
from typing import Callable, Iterable

from .config import NpsqueezeError, check_count
from .parallel import using_threads


class Workers:
    """Where one pipeline's batches run: its `executor` if given, else `n` > 1 worker processes
    started on first need and kept for later calls (`close` stops them), else the calling process.

    `source` is (pipeline class, folder, settings), set by `from_pretrained`: what a worker loads.
    """

    MIN_BATCHES_PER_WORKER = 4  # fewer: starting the workers would cost more than they save

    def __init__(self, n: int = 1, executor: Executor | None = None):
        check_count("workers", n)
        self.n, self.executor = n, executor
        self.source: tuple[type, str, dict] | None = None
        self.pool: Executor | None = None  # the worker processes started here
        self.lock = threading.Lock()  # callers in several threads start one pool

    def executor_for(self, n_batches: int) -> Executor | None:
        """Where to run `n_batches` batches: the given executor, the worker processes, or None (here)."""
        if self.executor is not None:
            return self.executor
        if self.n < 2 or n_batches < self.MIN_BATCHES_PER_WORKER * self.n:
            return None
        with self.lock:
            if self.pool is None:
                self.check_source()  # before any process starts
                self.pool = worker_pool(self.n)
            return self.pool

    def map(self, fn: Callable, batches: Iterable, n_batches: int, progress: str | None = None) -> list:
        """[fn(batch) for batch in batches], wherever `executor_for` says; with a progress bar named
        `progress` on stderr when there are several batches. Ctrl-C stops the worker processes; a
        worker that died is one NpsqueezeError line."""
        pool = self.executor_for(n_batches)
        outputs = map(fn, batches) if pool is None else pool.map(functools.partial(call, pickle.dumps(fn)), batches)
        try:
            return list(outputs if progress is None else progress_bar(outputs, n_batches, progress))
        except KeyboardInterrupt:
            if pool is not None and pool is self.pool:
                self.pool = None
                stop(pool)
            raise
        except BrokenExecutor as e:
            if pool is self.pool:
                self.pool = None
            raise NpsqueezeError(f"a worker process ended unexpectedly ({e})") from None

    def check_source(self) -> tuple[type, str, dict]:
        if self.source is None:
            raise NpsqueezeError("only a pipeline made by from_pretrained(folder) can run in worker processes")
        return self.source

    def recipe(self) -> tuple[Callable, tuple]:
        """What goes to a worker process in the pipeline's place (its `__reduce__`): `shared` and the
        folder and settings to load it from, rather than the model's arrays."""
        cls, path, settings = self.check_source()
        settings = {k: v for k, v in settings.items() if k not in ("progress", "workers", "executor", "threads")}
        return shared, (cls, path, settings)

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        with self.lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown()


_shared: dict[str, object] = {}
_loading = threading.Lock()


def shared(cls: type, path: str, settings: dict):
    """`cls.from_pretrained(path, **settings)`, loaded once per process: how a worker gets its pipeline."""
    key = repr((cls, path, sorted(settings.items())))
    with _loading:
        if key not in _shared:
            with warnings.catch_warnings():  # the caller warned when it loaded the same pipeline (e.g. layers left out)
                warnings.simplefilter("ignore")
                _shared[key] = cls.from_pretrained(path, **settings)
        return _shared[key]


def progress_bar(outputs: Iterable, total: int, name: str) -> Iterable:
    """The outputs, with a progress bar on stderr when there are several."""
    from tqdm import tqdm  # here: it takes longer to import than a command takes to start

    return tqdm(outputs, desc=name, total=total, unit="batch", leave=False, disable=total < 2)


def call(task: bytes, *args):
    """`pickle.loads(task)(*args)` on one thread: a task function sent pickled, so that whatever it
    needs (a worker's pipeline, loaded once per process) is loaded while the task runs, and a failure
    comes back as the task's own exception instead of breaking the pool. One thread, because the
    executor's workers are the parallelism."""
    with using_threads(1):
        return pickle.loads(task)(*args)


def worker_pool(workers: int) -> Executor:
    """A pool of `workers` fresh Python processes (spawned: no state or thread inherited from this one)
    that ignore Ctrl-C: the parent stops them (see `stop`)."""
    import multiprocessing  # here, as the pool: they take longer to import than a command takes to start
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))


def stop(executor: Executor) -> None:
    """Stop a pool now: cancel what waits, end the worker processes (Ctrl-C must leave nothing behind)."""
    manager = getattr(executor, "_executor_manager_thread", None)  # ProcessPoolExecutor's
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    if manager is not None:  # once it has ended, the interpreter's exit finds its pipe closed, not closing
        manager.join(10)  # (Python 3.11 then printed "Exception ignored ... Bad file descriptor")


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
