"""`npsqueeze bench`: how fast the engine runs -- latency, throughput, effective GFLOP/s, peak memory.

A model is a bundled name, a config.json (random weights: the benchmark needs no download) or a
checkpoint folder (its weights are loaded). Each model and workload runs in a fresh child process,
for two reasons: BLAS reads its thread count (OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, OMP_NUM_THREADS)
once, when NumPy loads it, so `--threads` has to be in the environment before the child starts; and
the child's peak resident memory is then that model's alone.

Effective GFLOP/s is the model's FLOPs (flops.analytic_flops: 2 x the multiply-adds of its matmuls,
elementwise work excluded, as in the paper) divided by the median latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np

from . import flops, ops
from .cli import keep_freed_memory
from .config import Config, NpsqueezeError, load_config
from .model import from_pretrained
from .weights import CONVERTED, WEIGHT_FILES

DEFAULT_MODELS = ["squeezebert-uncased", "bert-base-uncased"]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")  # as BLAS reads them, first wins
WARMUP = 2  # forward passes before timing: the first pays for first-touch page faults


def timings(fns: dict[str, Callable[[], object]], repeat: int, pause: float = 0.0, settle: int = 0
            ) -> dict[str, list[float]]:
    """Wall times in seconds of `repeat` calls of each function, after WARMUP calls each.

    The functions take turns (A, B, A, B, ...), so that load from elsewhere on a shared machine
    slows them alike and their ratios hold. Engines with thread pools need two more things to be
    timed fairly: a `pause` (seconds) before each turn, since OpenBLAS's and OpenMP's workers spin for
    up to ~0.1 s after their last task and take a core from whoever runs next (torch ran 1.4x slower
    right after NumPy); then `settle` untimed calls, since waking one's own pool from idle costs too.
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
    The operands stay referenced, so keep it away from peak-memory measurements.
    """
    calls, matmul = [], ops.matmul

    def record(a, b, tag):
        calls.append((a, b, tag))
        return matmul(a, b, tag)

    with mock.patch.object(ops, "matmul", record):  # ops' layers look matmul up in ops at each call
        forward()

    def replay() -> None:
        for a, b, tag in calls:
            ops.matmul(a, b, tag)
    return replay


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


# --- one measurement, in the child process ---------------------------------------------------

def measure(spec: str, batch_size: int, seq_len: int, repeat: int) -> dict:
    """Load (or randomly initialise) one model and time it on one workload; the result as a dict."""
    name, cfg = load_config(spec)
    folder = Path(spec)
    checkpoint = folder.is_dir() and any((folder / f).is_file() for f in (CONVERTED, *WEIGHT_FILES))
    t = time.perf_counter()
    if checkpoint:
        model = from_pretrained(folder)
    else:
        rng = np.random.default_rng(0)
        model = flops.engine_model(cfg, None, lambda shape: random_weight(rng, shape))
    load_seconds = time.perf_counter() - t
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (batch_size, seq_len))
    times = np.array(timings({name: lambda: model(ids)}, repeat)[name])
    median = float(np.median(times))
    gflops = sum(flops.analytic_flops(cfg, seq_len, batch_size, model.head).values()) / 1e9
    weights = 4 * sum(flops.params(cfg, model.head).values())  # bytes, float32
    rss = peak_rss()
    return {
        "model": name, "weights": "checkpoint" if checkpoint else "random", "head": model.head,
        "batch_size": batch_size, "seq_len": seq_len, "threads": blas_threads(),
        "median_ms": 1e3 * median, "min_ms": 1e3 * float(times.min()),
        "sequences_per_s": batch_size / median, "gflops": gflops, "effective_gflop_per_s": gflops / median,
        "load_s": load_seconds if checkpoint else None, "weights_mb": weights / 1e6,
        "peak_rss_mb": rss / 1e6 if rss else None, "rss_over_weights": rss / weights if rss else None,
    }


def random_weight(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    w = rng.standard_normal(shape, np.float32)
    w *= 0.02  # in place: a temporary copy of the word embeddings would show in the peak memory
    return w


# --- the command -----------------------------------------------------------------------------

def run_child(spec: str, batch_size: int, seq_len: int, repeat: int, threads: int | None) -> dict:
    """`measure` in a fresh Python process, with the BLAS thread variables set to `threads`."""
    env = dict(os.environ)
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    job = json.dumps({"spec": spec, "batch_size": batch_size, "seq_len": seq_len, "repeat": repeat})
    done = subprocess.run([sys.executable, "-m", "npsqueeze.bench"], input=job, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise NpsqueezeError(f"measuring {spec} at batch {batch_size}, seq {seq_len} failed: {why}")
    return json.loads(done.stdout)


def environment() -> dict:
    """What the numbers depend on: NumPy, its BLAS, the CPUs."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"numpy": np.__version__, "blas": f"{blas.get('name')} {blas.get('version')}", "cpus": os.cpu_count()}


def blas_threads() -> int | None:
    """The BLAS thread count this process's environment asks for (None: BLAS's default, every core)."""
    return next((int(os.environ[v]) for v in THREAD_VARS if os.environ.get(v, "").isdigit()), None)


def to_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"NumPy {env['numpy']} ({env['blas']}), {env['cpus']} CPUs; median and min of {r['repeat']} runs "
             f"after {WARMUP} warm-ups. threads: BLAS threads as the environment set them (-: unset, every core).",
             "",
             "| model | weights | batch | seq | threads | median ms | min ms | seq/s | GFLOP | GFLOP/s | "
             "peak RSS MB | RSS / weights |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for m in r["results"]:
        rss = f"{m['peak_rss_mb']:.0f} | {m['rss_over_weights']:.2f}" if m["peak_rss_mb"] else "- | -"
        lines.append(f"| {m['model']} | {m['weights']} | {m['batch_size']} | {m['seq_len']} | {m['threads'] or '-'} | "
                     f"{m['median_ms']:.1f} | {m['min_ms']:.1f} | {m['sequences_per_s']:.1f} | "
                     f"{m['gflops']:.2f} | {m['effective_gflop_per_s']:.1f} | {rss} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL_OR_CONFIG",
                   help="a bundled model (squeezebert-uncased, squeezebert-mnli, bert-base-uncased), a "
                        "config.json (random weights) or a checkpoint folder "
                        f"(default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], metavar="N",
                   help="sequences per batch; several values make several workloads (default 1)")
    p.add_argument("--seq-len", type=int, nargs="+", default=[128], metavar="W",
                   help="tokens per sequence; several values make several workloads (default 128)")
    p.add_argument("--repeat", type=int, default=20, help="timed forward passes per workload (default 20)")
    p.add_argument("--threads", type=int,
                   help="BLAS threads: sets " + ", ".join(THREAD_VARS) + " for the measurement "
                        "(default: as the environment says, else BLAS uses every core)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")


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


def run(args: argparse.Namespace) -> int:
    specs = args.models or DEFAULT_MODELS
    check_workload(specs, max(args.seq_len), batch_size=min(args.batch_size), seq_len=min(args.seq_len),
                   repeat=args.repeat, threads=1 if args.threads is None else args.threads)  # here, not in a child
    results = [run_child(spec, N, W, args.repeat, args.threads)
               for spec in specs for N in args.batch_size for W in args.seq_len]
    r = {"environment": environment(), "repeat": args.repeat, "results": results}
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(to_markdown(r), end="")
    return 0


if __name__ == "__main__":  # the child process of run_child: a job as JSON on stdin, the result on stdout
    keep_freed_memory()  # as the commands do
    try:
        print(json.dumps(measure(**json.load(sys.stdin))))
    except (NpsqueezeError, OSError) as e:
        sys.exit(str(e))  # run_child shows this last line of stderr
