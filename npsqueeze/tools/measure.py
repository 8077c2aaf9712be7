"""What the measuring tools share: timing in turns, the matrix-product floor, peak memory, the
machine (CPU, BLAS and its threads), glibc's kept memory, random weights and the workload checks of
`bench` and `report` (options, sequence lengths, and whether the arrays would fit in memory)."""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import time
from typing import Callable

import numpy as np

from .. import ops
from ..config import Config, NpsqueezeError, load_config
from ..parallel import get_blas_threads, using_threads
from ..weights import weight_map

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")  # as BLAS reads them, first wins
WARMUP = 2  # forward passes before timing: the first pays for first-touch page faults


def timings(fns: dict[str, Callable[[], object]], repeat: int, pause: float = 0.0, settle: int = 0
            ) -> dict[str, list[float]]:
    """Wall times in seconds of `repeat` calls of each function, after WARMUP calls each.

    The functions take turns (A, B, A, B, ...), so that load from elsewhere on a shared machine
    slows them alike and their ratios hold. Engines with thread pools need two more things to be
    timed fairly: a `pause` (seconds) before each turn, since OpenBLAS's and OpenMP's workers spin for
    a while after their last task and take a core from whoever runs next (README: Performance); then
    `settle` untimed calls, since waking one's own pool from idle costs too.
    """
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(pause)
            for _ in range(settle):
                fn()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def matrix_products(forward: Callable[[], object]) -> Callable[[], None]:
    """A function that runs the matrix products of one `forward()` and nothing else: the same
    `ops.matmul` calls on the same operands, in the same order.

    Its time is a floor for this engine, and for any NumPy forward pass that computes the same
    products with np.matmul: elementwise work, Python and copies are gone, only BLAS's work is left.
    The pass is recorded on one thread (one set of products for the whole batch) and replayed on
    BLAS's threads. The operands stay referenced, so keep it away from peak-memory
    measurements.
    """
    calls, matmul = [], ops.matmul

    def record(a, b, tag, out=None):
        calls.append((a, b, tag, out))
        return matmul(a, b, tag, out)

    from unittest import mock  # here: it takes longer to import than a command takes to start

    with mock.patch.object(ops, "matmul", record), using_threads(1):  # ops' layers look matmul up in ops at each call
        forward()

    def replay() -> None:
        for a, b, tag, out in calls:
            ops.matmul(a, b, tag, out)
    return replay


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def environment() -> dict:
    """What the numbers depend on: NumPy, its BLAS and the threads BLAS runs, the CPUs."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"numpy": np.__version__, "blas": f"{blas.get('name')} {blas.get('version')}",
            "blas_threads": get_blas_threads(), "cpus": os.cpu_count(), "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's name as the OS reports it (Linux: /proc/cpuinfo's "model name")."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def blas_threads() -> int | None:
    """The BLAS thread count this process's environment asks for (None: BLAS's default, every core)."""
    return next((int(os.environ[v]) for v in THREAD_VARS if os.environ.get(v, "").isdigit()), None)


MALLOC_LIMITS = (  # (glibc's mallopt parameter, the environment variable that sets the same, bytes)
    (-1, "MALLOC_TRIM_THRESHOLD_", 1 << 30),  # M_TRIM_THRESHOLD: free memory kept at the top of the heap
    (-3, "MALLOC_MMAP_THRESHOLD_", 32 << 20),  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap
)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for the next arrays instead of giving it back to the OS.

    By default glibc maps blocks over 128 KB on their own and trims freed memory from the top of the
    heap, both back to the OS, so the next array of that size faults its pages in again, each page
    a trip into the kernel (README's performance section says what that costs). The commands call
    this at start; in your own programs set `MALLOC_TRIM_THRESHOLD_=1073741824
    MALLOC_MMAP_THRESHOLD_=33554432` before Python starts, or call this. It does nothing where
    malloc is not glibc's, or when either variable is set.
    """
    if platform.libc_ver()[0] != "glibc" or any(var in os.environ for _, var, _ in MALLOC_LIMITS):
        return
    libc = ctypes.CDLL(None)
    for param, _, value in MALLOC_LIMITS:
        libc.mallopt(param, value)


def random_weight(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    w = rng.standard_normal(shape, np.float32)
    w *= 0.02  # in place: a temporary copy of the word embeddings would show in the peak memory
    return w


def check_workload(specs: list[str], longest: int, **options: int) -> list[tuple[str, Config]]:
    """`load_config` of each spec, after checking that every option (seq_len=...) is positive and
    then that `longest` tokens fit each model's max_position_embeddings: else a one-line error."""
    for option, n in options.items():
        if n < 1:
            raise NpsqueezeError(f"--{option.replace('_', '-')} must be a positive integer, got {n}")
    named = [load_config(spec) for spec in specs]
    for name, cfg in named:
        if longest > cfg.max_position_embeddings:
            raise NpsqueezeError(f"--seq-len {longest} exceeds {name}'s max_position_embeddings "
                                 f"{cfg.max_position_embeddings}")
    return named


def activation_bytes(cfg: Config, seq_len: int, batch_size: int, head: str | None) -> int:
    """An estimate of the float32 activations a forward pass holds at once, in bytes: the hidden
    states before and after a block, a feed-forward intermediate, the attention scores and the
    head's output, for the whole batch."""
    per_position = 2 * cfg.hidden_size + cfg.intermediate_size + cfg.num_attention_heads * seq_len
    return 4 * batch_size * seq_len * (per_position + (cfg.vocab_size if head == "mlm" else 0))


def check_memory(named: list[tuple[str, Config]], seq_len: int, batch_size: int, head: str | None,
                 weights: str) -> None:
    """Refuse, before anything runs, a workload whose arrays would not fit in the memory left, with
    one line naming the option to change. Besides each model's activations, `weights` says which
    weights are held at once: "largest" (report's instrumented count: the weights are free zero-stride
    views, but np.matmul copies each one it multiplies), "each" (one model's: bench), or "all" (every
    model's random weights: report --measure)."""
    available = available_memory()
    if available is None:
        return
    acts = {name: activation_bytes(cfg, seq_len, batch_size, head) for name, cfg in named}
    name, most = max(acts.items(), key=lambda kv: kv[1])
    if most > available:
        raise NpsqueezeError(f"--batch-size {batch_size} x --seq-len {seq_len} takes ~{gb(most)} of activations in "
                             f"{name}, more than the {gb(available)} of memory available: lower them")
    sizes = {name: [4 * math.prod(e.shape) for e in weight_map(cfg, head)] for name, cfg in named}
    total = sum(map(sum, sizes.values()))
    if weights == "all" and most + total > available:
        raise NpsqueezeError(f"--measure holds every model's random weights at once, ~{gb(total)}, more than the "
                             f"{gb(available)} of memory available: measure fewer models (--config)")
    for name, cfg in named:
        held = max(sizes[name]) if weights == "largest" else sum(sizes[name])
        if acts[name] + held > available:
            raise NpsqueezeError(f"{name} (hidden_size {cfg.hidden_size}, vocab_size {cfg.vocab_size}) needs ~"
                                 f"{gb(acts[name] + held)} for its {'largest weight' if weights == 'largest' else 'weights'} "
                                 f"and activations, more than the {gb(available)} of memory available")


def gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def available_memory() -> int | None:
    """Bytes this process can still allocate: the memory the OS has available (Linux's MemAvailable),
    or less under an address-space limit (ulimit -v); None where the OS does not say."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * resource.getpagesize()
            available = min(available or limit, limit - used)
    except (ImportError, OSError, ValueError):
        pass
    return available
