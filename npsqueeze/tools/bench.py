"""`npsqueeze bench`: how fast the engine runs -- latency, throughput, effective GFLOP/s, peak memory.

A model is a bundled name, a config.json (random weights: the benchmark needs no download) or a
checkpoint folder (its weights are loaded). Each model and workload runs in a fresh child process,
for two reasons: BLAS reads its thread count (OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, OMP_NUM_THREADS)
once, when NumPy loads it, so `--threads` has to be in the environment before the child starts; and
the child's peak resident memory is then that model's alone.

Effective GFLOP/s is the model's FLOPs (flops.analytic_flops: 2 x the multiply-adds of its matmuls,
elementwise work excluded, as in the paper) divided by the median latency. The ratio is a model's
median latency over the first model's on the same workload. Each workload's result shows on stderr
as it finishes. `--profile` adds where the time goes: every module's time beside its FLOPs
(profiler.py), as `npsqueeze report --measure` shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..config import NpsqueezeError, load_config
from ..modeling import from_pretrained
from ..weights import CONVERTED, WEIGHT_FILES
from . import flops, profiler
from .measure import (THREAD_VARS, WARMUP, blas_threads, check_memory, check_workload, environment,
                      keep_freed_memory, peak_rss, random_weight, timings)

DEFAULT_MODELS = ["squeezebert-uncased", "bert-base-uncased"]


# --- one measurement, in the child process ---------------------------------------------------

def measure(spec: str, batch_size: int, seq_len: int, repeat: int, profile: bool = False) -> dict:
    """Load (or randomly initialise) one model and time it on one workload; the result as a dict.
    With `profile`, also the time of each module beside its FLOPs (profiler.profile)."""
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
    result = {
        "model": name, "weights": "checkpoint" if checkpoint else "random", "head": model.head,
        "batch_size": batch_size, "seq_len": seq_len, "threads": blas_threads(),
        "median_ms": 1e3 * median, "min_ms": 1e3 * float(times.min()),
        "sequences_per_s": batch_size / median, "gflops": gflops, "effective_gflop_per_s": gflops / median,
        "load_s": load_seconds if checkpoint else None, "weights_mb": weights / 1e6,
        "peak_rss_mb": rss / 1e6 if rss else None, "rss_over_weights": rss / weights if rss else None,
    }
    if profile:  # after the peak memory: the profile's tallies are not the model's
        result["profile"] = profiler.profile({name: model}, ids, repeat)[name]
    return result


# --- the command -----------------------------------------------------------------------------

def run_child(spec: str, batch_size: int, seq_len: int, repeat: int, threads: int | None,
              profile: bool = False) -> dict:
    """`measure` in a fresh Python process, with the BLAS thread variables set to `threads`."""
    env = dict(os.environ)
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    job = json.dumps({"spec": spec, "batch_size": batch_size, "seq_len": seq_len, "repeat": repeat,
                      "profile": profile})
    done = subprocess.run([sys.executable, "-m", "npsqueeze.tools.bench"], input=job, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise NpsqueezeError(f"measuring {spec} at batch {batch_size}, seq {seq_len} failed: {why}")
    return json.loads(done.stdout)


def to_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"NumPy {env['numpy']} ({env['blas']}), {env['cpus']} CPUs; median and min of {r['repeat']} runs "
             f"after {WARMUP} warm-ups. threads: as the environment set BLAS's (-: unset, every core); "
             "a batch's sequences are shared out among them (a lone sequence: its products on every one). "
             f"ratio: the median over {r['results'][0]['model']}'s on the same workload.",
             "",
             "| model | weights | batch | seq | threads | median ms | min ms | ratio | seq/s | GFLOP | GFLOP/s | "
             "peak RSS MB | RSS / weights |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for m in r["results"]:
        rss = f"{m['peak_rss_mb']:.0f} | {m['rss_over_weights']:.2f}" if m["peak_rss_mb"] else "- | -"
        lines.append(f"| {m['model']} | {m['weights']} | {m['batch_size']} | {m['seq_len']} | {m['threads'] or '-'} | "
                     f"{m['median_ms']:.1f} | {m['min_ms']:.1f} | {m['ratio']:.2f} | {m['sequences_per_s']:.1f} | "
                     f"{m['gflops']:.2f} | {m['effective_gflop_per_s']:.1f} | {rss} |")
    for m in r["results"]:
        if "profile" in m:
            lines += ["", f"## Where the time goes: {m['model']}, batch {m['batch_size']} x {m['seq_len']}", "",
                      *profiler.profile_table(m["profile"])]
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
                   help="threads of the forward pass (a batch's sequences shared out among them, a lone "
                        "sequence's products on all): sets " + ", ".join(THREAD_VARS) +
                        " for the measurement (default: as the environment says, else every core)")
    p.add_argument("--profile", action="store_true",
                   help="also time every matrix product and elementwise step of the forward pass beside "
                        "its FLOPs (as `npsqueeze report --measure` does)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")


def run(args: argparse.Namespace) -> int:
    specs = args.models or DEFAULT_MODELS
    named = check_workload(specs, max(args.seq_len), batch_size=min(args.batch_size), seq_len=min(args.seq_len),
                           repeat=args.repeat, threads=1 if args.threads is None else args.threads)  # here, not in a child
    check_memory(named, max(args.seq_len), max(args.batch_size), None, "each")
    workloads = [(spec, N, W) for spec in specs for N in args.batch_size for W in args.seq_len]
    results = []
    for i, (spec, N, W) in enumerate(workloads, 1):
        m = run_child(spec, N, W, args.repeat, args.threads, args.profile)
        first = next((f for f in results if (f["batch_size"], f["seq_len"]) == (N, W)), m)
        m["ratio"] = m["median_ms"] / first["median_ms"]
        results.append(m)
        print(f"npsqueeze bench: [{i}/{len(workloads)}] {m['model']}, batch {N}, seq {W}: median "
              f"{m['median_ms']:.1f} ms, ratio {m['ratio']:.2f}", file=sys.stderr, flush=True)
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
