"""npsqueeze against transformers' eager PyTorch, and ONNX Runtime when installed: one run, interleaved.

    python bench/compare.py [--threads 2] [--repeat 30] [--out bench/results]

SqueezeBERT (squeezebert-uncased's config) and BERT-base, random weights that every engine shares:
transformers builds each model and saves it, npsqueeze loads that checkpoint, torch.onnx.export
exports it for ONNX Runtime. Each workload (batch 1 and 8, sequence 128) times the engines in turns
-- npsqueeze, torch, onnxruntime, npsqueeze, ... -- so load from elsewhere on the machine slows them
alike and the ratios hold. Every engine gets the same thread count. Then `npsqueeze convert` and
`npsqueeze bench` (a fresh process) give the load time of converted weights and the peak memory.

Writes results.md (the table and issue 8's targets, met or not), results.json and latency.png to --out.
Bench-only dependencies: torch and transformers (the `test` extra), onnxruntime and onnx (optional).
"""

from __future__ import annotations

import argparse
import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # as npsqueeze.bench


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine (default: all CPUs)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per engine and workload (default 30)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1, 8], help="workloads' batch sizes (default 1 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--models", nargs="+", default=["squeezebert-uncased", "bert-base-uncased"])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return p.parse_args()


args = parse_args()
for var in THREAD_VARS:  # before NumPy and torch load their thread pools
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
from npsqueeze import flops  # noqa: E402
from npsqueeze.bench import environment, timings  # noqa: E402
from npsqueeze.config import WEIGHTS_DIR, Config  # noqa: E402

try:
    import onnxruntime
except ImportError:
    onnxruntime = None

TARGETS = [  # (what, how to compute it from the results, comparison, bound) -- issue 8
    ("SqueezeBERT b1: npsqueeze / torch latency", "sq_np_over_torch", "<=", 0.45),
    ("SqueezeBERT b1: npsqueeze / onnxruntime latency", "sq_np_over_ort", "<=", 1.2),
    ("BERT-base / SqueezeBERT latency in npsqueeze, b1", "bert_over_sq_np", ">=", 2.5),
    ("SqueezeBERT b1: npsqueeze effective GFLOP/s", "sq_gflops", ">=", 100),
    ("SqueezeBERT b8: npsqueeze / torch throughput", "sq_b8_np_over_torch", ">=", 1.5),
    ("load converted SqueezeBERT weights, s", "load_s", "<=", 0.1),
    ("peak RSS / weights, SqueezeBERT b1", "rss_over_weights", "<=", 1.3),
]


def engines(name: str, folder: Path, batch_sizes: list[int], seq_len: int) -> tuple[dict, dict]:
    """{engine: {batch: forward()}} for one model saved to `folder`, and each engine's max |diff| from torch."""
    hf_cfg = transformers.AutoConfig.from_pretrained(WEIGHTS_DIR / name)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(hf_cfg).eval()  # the base model, random weights
    model.save_pretrained(folder)
    ours = npsqueeze.from_pretrained(folder)
    inputs = {N: np.random.default_rng(N).integers(0, hf_cfg.vocab_size, (N, seq_len)) for N in batch_sizes}
    masks = {N: np.ones_like(ids) for N, ids in inputs.items()}
    fns = {"npsqueeze": {N: (lambda N=N: ours(inputs[N], masks[N]).last_hidden_state) for N in batch_sizes}}

    def torch_forward(N):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(inputs[N]), attention_mask=torch.from_numpy(masks[N])
                         ).last_hidden_state.numpy()
    fns["torch"] = {N: (lambda N=N: torch_forward(N)) for N in batch_sizes}
    if onnxruntime is not None:
        fns["onnxruntime"] = ort_forwards(model, folder / "model.onnx", inputs, masks)
    reference = {N: torch_forward(N) for N in batch_sizes}
    diffs = {engine: max(float(np.abs(f[N]() - reference[N]).max()) for N in batch_sizes) for engine, f in fns.items()}
    return fns, diffs


class LastHiddenState(torch.nn.Module):
    """model(input_ids, attention_mask).last_hidden_state, with exactly those two inputs, for export."""

    def __init__(self, model):
        super().__init__()
        self.model = model  # the export puts it back in the wrapper's mode afterwards: eval, please

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def ort_forwards(model, path: Path, inputs: dict, masks: dict) -> dict:
    N = min(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(LastHiddenState(model).eval(), (torch.from_numpy(inputs[N]), torch.from_numpy(masks[N])), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")},
                          dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {N: (lambda N=N: session.run(None, {"input_ids": inputs[N], "attention_mask": masks[N]})[0])
            for N in inputs}


def npsqueeze_cli(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "npsqueeze", *argv], capture_output=True, text=True, check=True)
    return done.stdout


def measure() -> dict:
    torch.set_num_threads(args.threads)
    rows, diffs, memory = [], {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            fns, diffs[name] = engines(name, folder, args.batch_size, args.seq_len)
            cfg = Config.from_file(folder)
            for N in args.batch_size:
                times = timings({engine: f[N] for engine, f in fns.items()}, args.repeat)
                gflops = sum(flops.analytic_flops(cfg, args.seq_len, N).values()) / 1e9
                for engine, ts in times.items():
                    median = statistics.median(ts)
                    rows.append({"model": name, "engine": engine, "batch_size": N, "seq_len": args.seq_len,
                                 "median_ms": 1e3 * median, "min_ms": 1e3 * min(ts), "sequences_per_s": N / median,
                                 "effective_gflop_per_s": gflops / median})
                print(f"{name} b{N}: " + ", ".join(f"{r['engine']} {r['median_ms']:.1f} ms" for r in rows[-len(times):]),
                      file=sys.stderr)
            if name.startswith("squeezebert"):
                converted = Path(tmp) / (name + "-converted")
                npsqueeze_cli("convert", str(folder), str(converted))
                memory = json.loads(npsqueeze_cli("bench", str(converted), "--batch-size", "1", "--seq-len",
                                                  str(args.seq_len), "--repeat", "5", "--threads",
                                                  str(args.threads), "--json"))["results"][0]
            del fns
    return {"environment": environment() | {"threads": args.threads, "torch": torch.__version__,
                                                        "transformers": transformers.__version__,
                                                        "onnxruntime": onnxruntime and onnxruntime.__version__},
            "repeat": args.repeat, "results": rows, "max_abs_diff_from_torch": diffs, "npsqueeze_bench": memory}


def targets(r: dict) -> list[dict]:
    def row(model, engine, N):
        return next((x for x in r["results"] if x["model"].startswith(model) and x["engine"] == engine
                     and x["batch_size"] == N), None)
    sq, bert = (lambda engine, N=1: row("squeezebert", engine, N)), (lambda engine, N=1: row("bert", engine, N))
    values = {}
    if sq("npsqueeze") and sq("torch"):
        values["sq_np_over_torch"] = sq("npsqueeze")["median_ms"] / sq("torch")["median_ms"]
        values["sq_gflops"] = sq("npsqueeze")["effective_gflop_per_s"]
    if sq("npsqueeze") and sq("onnxruntime"):
        values["sq_np_over_ort"] = sq("npsqueeze")["median_ms"] / sq("onnxruntime")["median_ms"]
    if sq("npsqueeze") and bert("npsqueeze"):
        values["bert_over_sq_np"] = bert("npsqueeze")["median_ms"] / sq("npsqueeze")["median_ms"]
    if sq("npsqueeze", 8) and sq("torch", 8):
        values["sq_b8_np_over_torch"] = sq("npsqueeze", 8)["sequences_per_s"] / sq("torch", 8)["sequences_per_s"]
    if r["npsqueeze_bench"]:
        values["load_s"] = r["npsqueeze_bench"]["load_s"]
        values["rss_over_weights"] = r["npsqueeze_bench"]["rss_over_weights"]
    return [{"target": what, "value": values.get(key), "bound": f"{op} {bound}",
             "met": None if key not in values else (values[key] <= bound if op == "<=" else values[key] >= bound)}
            for what, key, op, bound in TARGETS]


def to_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"npsqueeze {npsqueeze.__version__}, NumPy {env['numpy']} ({env['blas']}), torch {env['torch']}, "
             f"transformers {env['transformers']}, onnxruntime {env['onnxruntime'] or 'not installed'}; "
             f"{env['threads']} threads for every engine, {env['cpus']} CPUs; median and min of "
             f"{r['repeat']} interleaved runs.", "",
             "| model | batch | seq | engine | median ms | min ms | seq/s | effective GFLOP/s |",
             "|---|--:|--:|---|--:|--:|--:|--:|"]
    for x in r["results"]:
        lines.append(f"| {x['model']} | {x['batch_size']} | {x['seq_len']} | {x['engine']} | {x['median_ms']:.1f} | "
                     f"{x['min_ms']:.1f} | {x['sequences_per_s']:.1f} | {x['effective_gflop_per_s']:.1f} |")
    lines += ["", "| target (issue 8) | measured | bound | met |", "|---|--:|---|---|"]
    for t in r["targets"]:
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {value} | {t['bound']} | {met} |")
    diffs = "; ".join(f"{m}: " + ", ".join(f"{e} {d:.1e}" for e, d in ds.items())
                      for m, ds in r["max_abs_diff_from_torch"].items())
    lines += ["", f"Max |difference| from torch's last hidden state (same weights, every workload): {diffs}."]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine_names = list(dict.fromkeys(x["engine"] for x in r["results"]))
    fig, axes = plt.subplots(1, len(args.batch_size), figsize=(5.5 * len(args.batch_size), 4.2), squeeze=False)
    for ax, N in zip(axes[0], args.batch_size):
        for i, engine in enumerate(engine_names):
            xs = [x for x in r["results"] if x["engine"] == engine and x["batch_size"] == N]
            pos = np.arange(len(xs)) + (i - (len(engine_names) - 1) / 2) * 0.8 / len(engine_names)
            bars = ax.bar(pos, [x["median_ms"] for x in xs], 0.8 / len(engine_names), label=engine)
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
