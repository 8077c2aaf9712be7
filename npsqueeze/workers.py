"""Where a pipeline's batches run: in the calling process, in worker processes, or on any executor.

For large inputs a pipeline can run its batches in `workers` processes of one thread each, each
with its own share of the batches (a busy core then slows only the batches it holds; see
parallel.py for threads), or on any `concurrent.futures.Executor` it is given (a process pool, a
Dask cluster's, or a `distributed.Client` itself, ...). A batch goes to a worker as
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
import time
import warnings
from concurrent.futures import BrokenExecutor, Executor
from typing import Callable, Iterable

from .config import NpsqueezeError, check_count
from .parallel import using_threads

ORPHAN_CHECK_SECONDS = 1  # how often a worker process checks that its parent is still there


class Workers:
    """Where one pipeline's batches run: its `executor` if given, else `n` > 1 worker processes
    started on first need and kept for later calls (`close` stops them), else the calling process.

    `source` is (pipeline class, folder, settings), set by `from_pretrained`: what a worker loads.
    """

    MIN_BATCHES_PER_WORKER = 4  # fewer: starting the workers would cost more than they save

    def __init__(self, n: int = 1, executor: Executor | None = None):
        check_count("workers", n)
        if type(executor).__module__.startswith("distributed.") and hasattr(executor, "get_executor"):
            executor = dask_executor(executor)  # a distributed.Client
        elif executor is not None and not callable(getattr(executor, "submit", None)):
            raise NpsqueezeError(f"executor= takes a concurrent.futures.Executor or a distributed.Client, not "
                                 f"{type(executor).__name__}")
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
        outputs = map(fn, batches) if pool is None else submitted(pool, functools.partial(call, pickle.dumps(fn)), batches)
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


def submitted(executor: Executor, fn: Callable, batches: Iterable) -> Iterable:
    """fn(batch) for each batch, in order, every batch submitted to `executor` first (Executor.map's
    way, by `submit` alone, which Dask's executors take too); what is not done when one fails or the
    caller stops is cancelled."""
    futures = [executor.submit(fn, batch) for batch in batches]
    try:
        for future in futures:
            yield future.result()
    finally:
        for future in futures:
            future.cancel()


def dask_executor(client) -> Executor:
    """A concurrent.futures executor that runs tasks on the workers of a `distributed.Client` (what a
    pipeline given `executor=client` runs its batches on): Dask's `client.get_executor()` but for two
    things. A task is not `pure` (Dask would hash every batch to name it), and its Dask future is
    released as soon as its result is back here, so the worker drops the result then, rather than
    when the caller drops the future (a pipeline call keeps all of its futures until it returns).
    """
    import concurrent.futures as cf

    class Tasks(Executor):
        def submit(self, fn, *args, **kwargs) -> cf.Future:
            done = cf.Future()
            task = client.submit(fn, *args, pure=False, **kwargs)

            def finish(task) -> None:  # on Dask's callback thread, once the task is done or failed
                try:
                    if not done.cancelled():
                        done.set_result(task.result())
                except BaseException as e:
                    done.set_exception(e)
                finally:
                    task.release()

            task.add_done_callback(finish)
            done.add_done_callback(lambda done: task.cancel() if done.cancelled() else None)
            return done

    return Tasks()


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
    that ignore Ctrl-C, the parent stopping them (see `stop`), and end when the parent is gone."""
    import multiprocessing  # here, as the pool: they take longer to import than a command takes to start
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_worker, initargs=(os.getpid(),))


def start_worker(parent: int) -> None:
    """In a new worker process: ignore Ctrl-C, and end once `parent` has ended. A parent killed outright
    (SIGKILL, the out-of-memory killer) cannot stop its workers, and they would wait for tasks forever:
    each worker holds its own end of the pool's task queue, so it never reads an end of file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:  # an orphan is adopted by another process
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="npsqueeze-parent-watch", daemon=True).start()


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
