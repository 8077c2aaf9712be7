"""npsqueeze against transformers' eager PyTorch, and ONNX Runtime when installed: one run, interleaved.

    python bench/compare.py [--threads 2] [--repeat 20] [--out bench/results]

SqueezeBERT (squeezebert-uncased's config) and BERT-base, random weights that every engine shares:
transformers builds each base model and saves it, npsqueeze loads that checkpoint, torch.onnx.export
exports it for ONNX Runtime. Each workload (batch 1 and 8, sequence 128) times the engines in turns
-- npsqueeze, torch, onnxruntime, npsqueeze, ... -- so load from elsewhere on the machine slows them
alike and the ratios hold. Before each timed call a pause lets the previous engine's worker threads
go idle, and an untimed call wakes the engine's own (see npsqueeze.tools.measure.timings). Every engine gets
the same thread count, and glibc's malloc keeps freed memory for all of them, as npsqueeze's
commands set it (npsqueeze.tools.measure.keep_freed_memory). Then `npsqueeze convert` and `npsqueeze bench`
(a fresh process) give the load time of converted weights and the peak memory. "torch" is
transformers' PyTorch model run eagerly (BERT with its default SDPA attention). "npsqueeze matmuls
only" replays just the np.matmul calls of npsqueeze's forward pass (npsqueeze.tools.measure.matrix_products):
the time no NumPy forward pass that multiplies its matrices with np.matmul can go below here.

Writes results.md (the table and issue 8's targets, met or not), results.json and latency.png to --out.
Bench-only dependencies: torch and transformers (the `test` extra), onnxruntime and onnx (optional).
"""

from __future__ import annotations

import argparse
import os
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")  # npsqueeze.tools.measure's: it imports NumPy
PAUSE, SETTLE = 0.15, 1  # before each timed call: seconds of rest, untimed calls (see timings)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine (default: all CPUs)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per engine and workload (default 20)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--models", nargs="+", default=["squeezebert-uncased", "bert-base-uncased"])
    p.add_argument("--out", type=str, default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return p.parse_args()


args = parse_args()
for var in THREAD_VARS:  # before NumPy and torch start their thread pools
    os.environ[var] = str(args.threads)

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import npsqueeze  # noqa: E402
from npsqueeze.tools import flops  # noqa: E402
from npsqueeze.tools.measure import environment, keep_freed_memory, matrix_products, timings  # noqa: E402
from npsqueeze.config import WEIGHTS_DIR, Config  # noqa: E402

try:
    import onnxruntime
except ImportError:
    onnxruntime = None

# issue 8's targets: (what, key in measured(), comparison, bound)
TARGETS = [
    ("SqueezeBERT b1: npsqueeze / torch latency", "np_over_torch", "<=", 0.45),
    ("SqueezeBERT b1: npsqueeze / onnxruntime latency", "np_over_ort", "<=", 1.2),
    ("BERT-base / SqueezeBERT latency in npsqueeze, b1", "bert_over_squeezebert", ">=", 2.5),
    ("SqueezeBERT b1: npsqueeze effective GFLOP/s", "gflop_per_s", ">=", 100),
    ("SqueezeBERT b8: npsqueeze / torch throughput", "b8_np_over_torch", ">=", 1.5),
    ("load converted SqueezeBERT weights, s", "load_s", "<=", 0.1),
    ("peak RSS / weights, SqueezeBERT b1", "rss_over_weights", "<=", 1.3),
]
FLOOR = "npsqueeze matmuls only"  # the np.matmul calls of npsqueeze's forward pass, replayed: nothing else


class LastHiddenState(torch.nn.Module):
    """model(input_ids, attention_mask).last_hidden_state, with exactly those two inputs, for the export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def engines(name: str, folder: Path) -> dict:
    """{engine: {batch size: forward()}} for one model, every engine with the same weights."""
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(WEIGHTS_DIR / name))
    model = LastHiddenState(model).eval()  # eval: the export would put a training-mode wrapper back in training
    model.model.save_pretrained(folder)
    ours = npsqueeze.from_pretrained(folder)
    vocab = ours.config.vocab_size
    inputs = {N: np.random.default_rng(N).integers(0, vocab, (N, args.seq_len)) for N in args.batch_size}
    masks = {N: np.ones_like(ids) for N, ids in inputs.items()}

    def torch_forward(N):
        with torch.inference_mode():
            return model(torch.from_numpy(inputs[N]), torch.from_numpy(masks[N])).numpy()

    fns = {"npsqueeze": {N: lambda N=N: ours(inputs[N], masks[N]).last_hidden_state for N in inputs},
           FLOOR: {N: matrix_products(lambda N=N: ours(inputs[N], masks[N])) for N in inputs},
           "torch": {N: lambda N=N: torch_forward(N) for N in inputs}}
    if onnxruntime is not None:
        path = str(folder / "model.onnx")
        N = min(inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(model, (torch.from_numpy(inputs[N]), torch.from_numpy(masks[N])), path,
                              input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")},
                              dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        fns["onnxruntime"] = {N: lambda N=N: session.run(None, {"input_ids": inputs[N], "attention_mask": masks[N]})[0]
                              for N in inputs}
    return fns


def npsqueeze_cli(*argv: str) -> str:
    return subprocess.run([sys.executable, "-m", "npsqueeze", *argv], capture_output=True, text=True,
                          check=True).stdout


def measure() -> dict:
    torch.set_num_threads(args.threads)
    rows, diffs, memory = [], {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            fns = engines(name, folder)
            reference = {N: fns["torch"][N]() for N in args.batch_size}
            diffs[name] = {engine: max(float(np.abs(f[N]() - reference[N]).max()) for N in args.batch_size)
                           for engine, f in fns.items() if engine != FLOOR}
            cfg = Config.from_file(folder)
            for N in args.batch_size:
                times = timings({engine: f[N] for engine, f in fns.items()}, args.repeat, PAUSE, SETTLE)
                gflops = sum(flops.analytic_flops(cfg, args.seq_len, N).values()) / 1e9
                for engine, ts in times.items():
                    median = statistics.median(ts)
                    rows.append({"model": name, "engine": engine, "batch_size": N, "seq_len": args.seq_len,
                                 "median_ms": 1e3 * median, "min_ms": 1e3 * min(ts), "sequences_per_s": N / median,
                                 "effective_gflop_per_s": gflops / median})
                print(f"{name} b{N}: " + ", ".join(f"{r['engine']} {r['median_ms']:.1f} ms" for r in rows[-len(fns):]),
                      file=sys.stderr)
            del fns
            if name.startswith("squeezebert"):  # load time and memory of converted weights, in a fresh process
                npsqueeze_cli("convert", str(folder), str(folder) + "-converted")
                memory = json.loads(npsqueeze_cli("bench", str(folder) + "-converted", "--batch-size", "1",
                                                  "--seq-len", str(args.seq_len), "--repeat", "5",
                                                  "--threads", str(args.threads), "--json"))["results"][0]
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "onnxruntime": onnxruntime.__version__ if onnxruntime else None}
    return {"environment": environment() | {"threads": args.threads} | versions, "repeat": args.repeat,
            "pause_s": PAUSE, "settle": SETTLE, "results": rows, "max_abs_diff_from_torch": diffs, "npsqueeze_bench": memory}


def measured(r: dict, ours: str = "npsqueeze") -> dict:
    """The quantities the targets bound, from whichever rows were measured, for the engine `ours`."""
    rows = {(x["model"].split("-")[0], x["engine"], x["batch_size"]): x for x in r["results"]}

    def ratio(a, b, key="median_ms"):
        return a[key] / b[key] if a and b else None

    sq1 = rows.get(("squeezebert", ours, 1))
    memory = r["npsqueeze_bench"] if ours == "npsqueeze" else None  # measured for the engine itself only
    return {"np_over_torch": ratio(sq1, rows.get(("squeezebert", "torch", 1))),
            "np_over_ort": ratio(sq1, rows.get(("squeezebert", "onnxruntime", 1))),
            "bert_over_squeezebert": ratio(rows.get(("bert", ours, 1)), sq1),
            "gflop_per_s": sq1 and sq1["effective_gflop_per_s"],
            "b8_np_over_torch": ratio(rows.get(("squeezebert", ours, 8)), rows.get(("squeezebert", "torch", 8)),
                                      "sequences_per_s"),
            "load_s": memory and memory["load_s"],
            "rss_over_weights": memory and memory["rss_over_weights"]}


def targets(r: dict) -> list[dict]:
    """Each target, met or not; `floor` is the same quantity for the matrix products alone: where
    even that misses the bound, no NumPy forward pass built on np.matmul can meet it on this machine."""
    values, floor = measured(r), measured(r, FLOOR)
    out = []
    for what, key, op, bound in TARGETS:
        v = values[key]
        met = None if v is None else v <= bound if op == "<=" else v >= bound
        out.append({"target": what, "value": v, "floor": floor[key], "bound": f"{op} {bound}", "met": met})
    return out


def to_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"npsqueeze {npsqueeze.__version__}, NumPy {env['numpy']} ({env['blas']}), torch {env['torch']}, "
             f"transformers {env['transformers']}, onnxruntime {env['onnxruntime'] or 'not installed'}; "
             f"{env['threads']} threads for every engine, {env['cpus']} CPUs; median and min of "
             f"{r['repeat']} interleaved runs, each after a {r['pause_s']} s pause and {r['settle']} untimed run; "
             "glibc's malloc keeps freed memory (npsqueeze.tools.measure.keep_freed_memory) for every engine.", "",
             "| model | batch | seq | engine | median ms | min ms | seq/s | effective GFLOP/s |",
             "|---|--:|--:|---|--:|--:|--:|--:|"]
    for x in r["results"]:
        lines.append(f"| {x['model']} | {x['batch_size']} | {x['seq_len']} | {x['engine']} | {x['median_ms']:.1f} | "
                     f"{x['min_ms']:.1f} | {x['sequences_per_s']:.1f} | {x['effective_gflop_per_s']:.1f} |")
    lines += ["", f"| target (issue 8) | measured | {FLOOR} | bound | met |", "|---|--:|--:|---|---|"]
    for t in r["targets"]:
        value, floor = (none if v is None else f"{v:.3g}" for v, none in ((t["value"], "not measured"), (t["floor"], "-")))
        lines.append(f"| {t['target']} | {value} | {floor} | {t['bound']} | "
                     f"{({True: 'yes', False: '**no**'}).get(t['met'], '-')} |")
    diffs = "; ".join(f"{model}: " + ", ".join(f"{e} {d:.1e}" for e, d in ds.items())
                      for model, ds in r["max_abs_diff_from_torch"].items())
    return "\n".join(lines + ["", f"Max |difference| from torch's last hidden state, same weights: {diffs}."]) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(x["engine"] for x in r["results"]))
    width = 0.8 / len(names)
    fig, axes = plt.subplots(1, len(args.batch_size), figsize=(5.5 * len(args.batch_size), 4.2), squeeze=False)
    for ax, N in zip(axes[0], args.batch_size):
        for i, engine in enumerate(names):
            xs = [x for x in r["results"] if x["engine"] == engine and x["batch_size"] == N]
            bars = ax.bar(np.arange(len(xs)) + (i - (len(names) - 1) / 2) * width, [x["median_ms"] for x in xs],
                          width, label=engine)
            ax.bar_label(bars, [f"{x['median_ms']:.0f}" for x in xs], fontsize=8)
        ax.set_xticks(np.arange(len(args.models)), args.models)
        ax.set_ylabel("median latency, ms (lower is better)")
        ax.set_title(f"batch {N}, sequence {args.seq_len}, {args.threads} threads")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    keep_freed_memory()  # as npsqueeze's commands do; for the whole process, so every engine alike
    r = measure()
    r["targets"] = targets(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "results.md").write_text(to_markdown(r))
    plot(r, out / "latency.png")
    print(to_markdown(r))


if __name__ == "__main__":
    main()
