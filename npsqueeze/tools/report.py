"""`npsqueeze report`: where SqueezeBERT saves work compared with BERT-base, and why.

Parameters and FLOPs per module from the configs alone (no weights, no network), the FLOPs counted
twice: from formulas (flops.analytic_flops) and by running the engine on zero-cost weights
(flops.instrumented_flops). The two must agree exactly. With `--measure`, the same configs run through
the engine with random weights: latency, where the time goes module by module (profiler.py), and
latency against groups and sequence length; with `--out DIR`, report.md, report.json and plots.
The command exits with status 1 if the two FLOP counts ever disagree.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from itertools import cycle
from pathlib import Path

import numpy as np

from ..config import BUNDLED, GROUP_ROLES, Config, NpsqueezeError
from ..parallel import using_blas_threads, using_threads
from . import flops, profiler
from .cli import atomic_write
from .flops import LABELS
from .measure import check_memory, check_workload, environment, random_weight
from .profiler import LINE_COLORS

BASELINE = "bert-base-uncased"
DEFAULT_MODELS = ["squeezebert-uncased"]
SEQ_SWEEP = (16, 32, 64, 128, 256, 512)
GROUPS_SWEEP = (1, 2, 4, 8, 16)
SWEPT_ROLES = ("q_groups", "k_groups", "v_groups", "intermediate_groups", "output_groups")  # grouped in the paper
COLORS = {
    "embeddings": "#9e9e9e", "query": "#1f4e9c", "key": "#4a7fd4", "value": "#9ab8ee",
    "attention_scores": "#d9480f", "attention_context": "#fd9a5a", "post_attention": "#7b3fa0",
    "intermediate": "#2b8a3e", "output": "#8fd19e", "pooler": "#8d6e63", "head": "#e64980",
}
MAX_INSTRUMENTED_FLOPS = 2 * 10**12  # the instrumented count's forward passes: tens of seconds at BLAS's rates
PAPER = {"params": 51.1e6, "speedup": 4.3, "bert_latency_s": 1.7, "device": "Pixel 3",
         "seq_len": 128}  # Iandola et al. 2020, abstract


# --- the numbers ---------------------------------------------------------------------------------

def encoder_mb(entry: dict) -> float:
    """Megabytes of float32 weights a forward pass reads in full: all but the embedding tables (looked up by row)."""
    return 4 * sum(m["params"] for m in entry["modules"] if m["name"] != "embeddings") / 1e6


def model_entry(name: str, cfg: Config, seq_len: int, batch_size: int, head: str | None,
                instrument: bool) -> dict:
    """One model's totals and per-module breakdown."""
    p = flops.params(cfg, head)
    f = flops.analytic_flops(cfg, seq_len, batch_size, head)
    e = flops.elementwise_ops(cfg, seq_len, batch_size, head)
    entry = {"name": name, "params": sum(p.values()), "flops": sum(f.values()),
             "elementwise_ops": sum(e.values())}
    if instrument:
        counted = flops.instrumented_flops(cfg, seq_len, batch_size, head)
        entry["instrumented_flops"] = sum(counted.values())
        entry["counts_agree"] = counted == f  # module by module, exactly
    return entry | {"model_type": cfg.model_type, "groups": {role: getattr(cfg, role) for role in GROUP_ROLES},
                    "modules": [{"name": m, "params": p[m], "flops": f[m], "elementwise_ops": e[m]} for m in f]}


def groups_sweep(cfg: Config, seq_len: int, batch_size: int, head: str | None) -> list[dict]:
    """Parameters and FLOPs with every layer of SWEPT_ROLES at G groups (G that divide the channels)."""
    rows = []
    for G in GROUPS_SWEEP:
        swept = dataclasses.replace(cfg, **{role: G for role in SWEPT_ROLES})
        try:
            swept.validate()
        except NpsqueezeError:
            continue
        rows.append({"groups": G, "params": sum(flops.params(swept, head).values()),
                     "flops": sum(flops.analytic_flops(swept, seq_len, batch_size, head).values())})
    return rows


def measure(report: dict, configs: dict[str, Config], repeat: int, say=lambda message: None) -> None:
    """Time the models through the engine with random weights, into `report`: each model's profile
    (profiler.profile) and latency, then the sweeps, measured beside the counts: latency against
    sequence length for every model, and against the group count G for the first. `say` is told each
    of the three steps as it starts."""
    seq_len, batch_size, head = report["seq_len"], report["batch_size"], report["head"]
    rng = np.random.default_rng(0)

    def build(cfg: Config):
        return flops.engine_model(cfg, head, lambda shape: random_weight(rng, shape))

    models = {name: build(cfg) for name, cfg in configs.items()}
    say(f"1/3: profiling {len(models)} models, {repeat} passes each")
    profiles = profiler.profile(models, flops.dummy_ids(seq_len, batch_size, head), repeat)
    for entry in report["models"]:
        entry["profile"] = profiles[entry["name"]]
        entry["latency_ms"] = entry["profile"]["forward_ms"]
    longest = min(cfg.max_position_embeddings for cfg in configs.values())
    seqs = [W for W in SEQ_SWEEP if W <= longest]
    say(f"2/3: latency against sequence length ({', '.join(map(str, seqs))} tokens)")
    times = profiler.latencies({(name, W): (model, flops.dummy_ids(W, batch_size, head))
                                for W in seqs for name, model in models.items()}, repeat)
    seq_rows = [{"seq_len": W,
                 "flops": {name: sum(flops.analytic_flops(cfg, W, batch_size, head).values())
                           for name, cfg in configs.items()},
                 "ms": {name: times[name, W]["ms"] for name in configs},
                 "min_ms": {name: times[name, W]["min_ms"] for name in configs}} for W in seqs]
    del models  # the swept models take their memory
    sweep, first = report["groups_sweep"], next(iter(configs.values()))
    swept = {row["groups"]: (build(dataclasses.replace(first, **{role: row["groups"] for role in SWEPT_ROLES})),
                             flops.dummy_ids(seq_len, batch_size, head)) for row in sweep["rows"]}
    say(f"3/3: latency against groups (G = {', '.join(str(G) for G in swept)})")
    times = profiler.latencies(swept, repeat)
    report["sweeps"] = {"model": sweep["model"], "roles": sweep["roles"], "configured": sweep["configured"],
                        "groups": [row | times[row["groups"]] for row in sweep["rows"]], "seq_len": seq_rows}


def build_report(specs: list[str], seq_len: int = 128, batch_size: int = 1, head: str | None = None,
                 instrument: bool = True, repeat: int | None = None, baseline: str = BASELINE,
                 threads: int = 1, progress: bool = False) -> tuple[dict, list[Config]]:
    """The report as a dict (the JSON output) and the configs of its models; the baseline comes last.

    With `repeat`, also the machine, each model's latency and profile, and the measured sweeps
    (medians of `repeat` runs), BLAS running its products on `threads` threads. `progress`: a line on
    stderr before each long step (counting while the engine runs, timing).
    """
    named = check_workload([*specs, baseline], seq_len, seq_len=seq_len, batch_size=batch_size,
                           repeat=1 if repeat is None else repeat, threads=threads)
    base_name, base_cfg = named[-1]
    loaded = {name: cfg for name, cfg in named if name != base_name} | {base_name: base_cfg}  # baseline last
    if instrument or repeat is not None:  # sizes checked before anything runs
        check_memory(list(loaded.items()), seq_len, batch_size, head, "largest" if repeat is None else "all")
    work = sum(sum(flops.analytic_flops(cfg, seq_len, batch_size, head).values()) for cfg in loaded.values())
    if instrument and work > MAX_INSTRUMENTED_FLOPS:
        raise NpsqueezeError(f"the instrumented FLOP count would run {work / 1e9:,.0f} GFLOP through the engine "
                             f"(~{work / 1e11:,.0f} s): pass --analytic-only, or lower --batch-size or --seq-len")
    say = (lambda message: print(f"npsqueeze report: {message}", file=sys.stderr)) if progress else (lambda _: None)
    entries = []
    for name, cfg in loaded.items():
        if instrument:
            say(f"counting {name}'s FLOPs as the engine runs")
        entries.append(model_entry(name, cfg, seq_len, batch_size, head, instrument))
    report = {"seq_len": seq_len, "batch_size": batch_size, "head": head, "baseline": base_name, "models": entries,
              "elementwise_ops_per_element": {k: n for k, (n, _) in flops.ELEMENTWISE_OPS.items()}}
    first = next(iter(loaded.values()))
    configured = {getattr(first, role) for role in SWEPT_ROLES}
    report["groups_sweep"] = {"model": report["models"][0]["name"], "roles": list(SWEPT_ROLES),
                              "configured": configured.pop() if len(configured) == 1 else None,
                              "rows": groups_sweep(first, seq_len, batch_size, head)}
    if repeat is not None:
        say(f"timing {len(loaded)} models, their modules and the sweeps (repeat {repeat})")
        with using_threads(threads), using_blas_threads(threads):
            report["measured"], report["machine"] = {"repeat": repeat}, environment()
            measure(report, loaded, repeat, say)
    return report, list(loaded.values())


# --- text formats --------------------------------------------------------------------------------

def ratio(x: float, base: float) -> str:
    return f"{x / base:.3f}" if base else "–"


def fewer(x: float, base: float) -> str:
    """'3.02x fewer' for x = base / 3.02."""
    return f"{base / x:.2f}x fewer" if x else "–"


def module_values(m: dict, key: str, names: list[str], scale: float = 1) -> np.ndarray:
    """Model `m`'s `key` ("params", "flops", ...) for the modules `names`, divided by `scale`."""
    by_name = {mod["name"]: mod[key] for mod in m["modules"]}
    return np.array([by_name[n] for n in names]) / scale


def attention_share(entry: dict) -> float:
    return sum(m["flops"] for m in entry["modules"] if m["name"] in flops.ATTENTION) / entry["flops"]


def to_markdown(r: dict) -> str:
    models, base = r["models"], r["models"][-1]
    workload = (f"batch {r['batch_size']} x {r['seq_len']} tokens, "
                + (f"with the {r['head']} head" if r["head"] else "base model (embeddings, encoder, pooler)"))
    out = [f"# {' and '.join(m['name'] for m in models)}: parameters and FLOPs", "",
           f"Workload: {workload}. FLOPs are 2 x the multiply-adds of every matmul and 1x1 convolution "
           "(the convention of the paper and of torch's FlopCounterMode); elementwise work is counted "
           "separately, below.", "", *summary(r)]
    if "measured" in r:
        out += ["", *measured_section(r)]
    squeeze = next((m for m in models[:-1] if m["model_type"] == "squeezebert"), None)
    if squeeze and base["name"] == BASELINE:  # the paper's claims are against BERT-base
        out += ["", *paper_section(r, squeeze, base)]
    out += ["", *module_tables(r), "", *sweep_section(r)]
    return "\n".join(out) + "\n"


def summary(r: dict) -> list[str]:
    """Totals per model, both FLOP counts, and the ratios to the baseline."""
    models, base = r["models"], r["models"][-1]
    out = ["| model | groups (Q, K, V, post-attention, FFN in, FFN out) | parameters | FLOPs | "
           "FLOPs, instrumented | elementwise ops |", "|---|---|--:|--:|--:|--:|"]
    for m in models:
        counted = (f"{m['instrumented_flops']:,} ({'agree' if m['counts_agree'] else 'DISAGREE'})"
                   if "instrumented_flops" in m else "not run")
        out.append(f"| {m['name']} | {', '.join(str(g) for g in m['groups'].values())} | {m['params']:,} | "
                   f"{m['flops']:,} | {counted} | {m['elementwise_ops']:,} |")
    out.append("")
    for m in models[:-1]:
        out.append(f"{m['name']} / {base['name']}: parameters {ratio(m['params'], base['params'])} "
                   f"({fewer(m['params'], base['params'])}), FLOPs {ratio(m['flops'], base['flops'])} "
                   f"({fewer(m['flops'], base['flops'])}), elementwise ops "
                   f"{ratio(m['elementwise_ops'], base['elementwise_ops'])}.")
    if "instrumented_flops" in base:
        out += ["", "FLOPs, instrumented: counted at every `ops.matmul` (tools/tally.py) while the NumPy forward pass ran on "
                "zero-stride (free) weights; \"agree\" means equal to the formulas, module by module."]
    return out


def measured_section(r: dict) -> list[str]:
    """Latency, where the time goes per module, why the speedup is not the FLOP ratio, and the sweeps."""
    models, base, machine = r["models"], r["models"][-1], r["machine"]
    out = ["## Measured on this machine", "",
           f"The NumPy engine with random weights, median of {r['measured']['repeat']} runs after a warm-up, "
           f"the models taking turns. {machine['cpu']}, {machine['cpus']} CPU(s); NumPy {machine['numpy']} on "
           f"{machine['blas']}, {machine['blas_threads'] or 'unknown'} BLAS thread(s). On a shared machine "
           "compare the ratios, not the times.", "",
           f"| model | latency (ms) | speedup over {base['name']} | FLOP ratio |", "|---|--:|--:|--:|",
           *(f"| {m['name']} | {m['latency_ms']:.1f} | {base['latency_ms'] / m['latency_ms']:.2f}x | "
             f"{base['flops'] / m['flops']:.2f}x |" for m in models),
           "", "## Where the time goes", "",
           "Every matrix product and every elementwise step of the forward pass timed on its own, in the "
           "pass that counts the FLOPs (`tally.py`). Shares of time are of the modules' sum. The "
           "elementwise steps do no FLOPs: their rate is in ns per element written."]
    for m in models:
        out += ["", f"### {m['name']}", "", *profiler.profile_table(m["profile"])]
    for m in models[:-1]:
        out += ["", f"### {base['name']} against {m['name']}, module by module", "",
                *profiler.compare_table(m, base), "", *profiler.why_section(m, base)]
    return out + ["", "## Measured sweeps", "", *profiler.sweep_tables(r)]


def paper_section(r: dict, sq: dict, base: dict) -> list[str]:
    """The paper's published claims beside ours, and why a FLOP ratio is not a speedup."""
    flop_ratio = base["flops"] / sq["flops"]
    speedup = (f"{base['latency_ms'] / sq['latency_ms']:.2f}x measured here (NumPy engine); "
               if "latency_ms" in sq else "")
    latency = (f"{base['latency_ms']:.0f} ms here (NumPy engine)" if "latency_ms" in base
               else "run `npsqueeze report --measure`")
    same = r["seq_len"] == PAPER["seq_len"] and r["batch_size"] == 1 and r["head"] in (None, "sequence")
    shares = (f"{attention_share(sq):.0%} of {sq['name']}'s FLOPs against {attention_share(base):.0%} "
              f"of {base['name']}'s")
    measured = ("\"Where the time goes\" above measures each module and computes where the gap comes from"
                if "profile" in sq else "`npsqueeze report --measure` times each module and computes where "
                "the gap comes from on this machine")
    return [
        "## The paper's claims beside ours", "",
        f"| | paper (Iandola et al. 2020, {PAPER['device']}) | npsqueeze, {sq['name']} vs {base['name']} |",
        "|---|---|---|",
        f"| SqueezeBERT parameters | {PAPER['params'] / 1e6:.1f}M | {sq['params']:,} ({sq['params'] / 1e6:.1f}M) |",
        f"| speedup over BERT-base | {PAPER['speedup']}x on a {PAPER['device']} | {speedup}FLOP ratio "
        f"{flop_ratio:.2f}x |",
        f"| BERT-base latency | {PAPER['bert_latency_s']} s on a {PAPER['device']} | {latency} |", "",
        *([] if same else [f"The paper's figures are for one {PAPER['seq_len']}-token sequence; this "
                           "report's workload differs.", ""]),
        f"Why a FLOP ratio of {flop_ratio:.1f}x is not a {flop_ratio:.1f}x speedup: FLOPs count "
        "multiply-adds, not time. The attention matmuls have no weights and no groups, so they do not "
        f"shrink ({shares} at this length, more at longer ones). The elementwise work (softmax, LayerNorm, "
        f"GELU, adds: {sq['elementwise_ops'] / 1e9:.2f} G operations against {base['elementwise_ops'] / 1e9:.2f} G) "
        "counts no FLOPs and does not shrink either. The encoder's weights, read once per forward pass, "
        f"are {encoder_mb(sq):.0f} MB against {encoder_mb(base):.0f} MB in float32. {measured}. "
        f"The paper's {PAPER['speedup']}x came from PyTorch mobile at {PAPER['seq_len']} tokens on a phone "
        "CPU: another runtime and processor, whose kernels favour each model differently, so neither "
        "the FLOP ratio nor a speedup measured on this machine reproduces it.",
    ]


def module_tables(r: dict) -> list[str]:
    """Parameters, FLOPs and elementwise operations per module, per model, with the ratios."""
    models, base = r["models"], r["models"][-1]
    names = [mod["name"] for mod in base["modules"]]

    def table(key: str, unit: str, scale: float, digits: int) -> list[str]:
        head = (["module"] + [f"{m['name']} {unit}".rstrip() for m in models]
                + [f"{m['name']} / {base['name']}" for m in models[:-1]])
        rows = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
        per_module = np.array([module_values(m, key, names) for m in models]).T  # [modules, models]
        for label, vals in [*zip((LABELS[n] for n in names), per_module),
                            ("**total**", [m[key] for m in models])]:
            cells = [f"{v / scale:,.{digits}f}" for v in vals] + [ratio(v, vals[-1]) for v in vals[:-1]]
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
        return rows

    return ["## Per module", "", "Parameters:", "", *table("params", "", 1, 0), "",
            "FLOPs:", "", *table("flops", "GFLOPs", 1e9, 4), "",
            "Elementwise operations (not FLOPs under the convention above; an estimate). Each bias add "
            "goes with its layer; the query's scale and the scores' mask and softmax with the attention scores; "
            "the GELU with the FFN intermediate; each residual add and LayerNorm with the layer before it.", "",
            *table("elementwise_ops", "G ops", 1e9, 4), "",
            "Operations per element assumed, as ops.py computes them (exp, tanh and a compare count as one):", "",
            *(f"- {k}: {n} ({what})" for k, (n, what) in flops.ELEMENTWISE_OPS.items())]


def sweep_section(r: dict) -> list[str]:
    sweep, base = r["groups_sweep"], r["models"][-1]
    return [f"## Groups sweep ({sweep['model']})", "",
            f"Every layer of {', '.join(sweep['roles'])} at G groups; the other layers as configured.", "",
            f"| G | parameters | GFLOPs | FLOPs / {base['name']} |", "|--:|--:|--:|--:|",
            *(f"| {row['groups']}{' (as configured)' if row['groups'] == sweep['configured'] else ''} | "
              f"{row['params']:,} | {row['flops'] / 1e9:.4f} | {ratio(row['flops'], base['flops'])} |"
              for row in sweep["rows"])]


def to_csv(r: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "module", "params", "flops", "elementwise_ops"])
    for m in r["models"]:
        for mod in m["modules"]:
            w.writerow([m["name"], mod["name"], mod["params"], mod["flops"], mod["elementwise_ops"]])
        w.writerow([m["name"], "total", m["params"], m["flops"], m["elementwise_ops"]])
    return buf.getvalue()


def to_json(r: dict) -> str:
    return json.dumps(r, indent=2) + "\n"


FORMATS = {"md": to_markdown, "json": to_json, "csv": to_csv}


# --- plots -------------------------------------------------------------------------------------------


def plot_flops_by_module(plt, r: dict):
    """FLOPs per module, stacked: one bar per model."""
    models = r["models"]
    names = [mod["name"] for mod in models[-1]["modules"]]
    per_model = np.array([module_values(m, "flops", names, 1e9) for m in models])  # [models, modules]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    bottoms = np.zeros(len(models))
    for name, vals in zip(names, per_model.T):
        if vals.any():
            ax.bar([m["name"] for m in models], vals, bottom=bottoms, color=COLORS[name], label=LABELS[name],
                   width=0.5)
            bottoms += vals
    for i, m in enumerate(models):
        ax.annotate(f"{m['flops'] / 1e9:.2f} GFLOPs\n+ {m['elementwise_ops'] / 1e9:.2f} G elementwise ops",
                    (i, bottoms[i]), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                    fontsize=9)
    ax.set_xlim(-0.7, len(models) - 0.3)
    ax.set_ylim(0, bottoms.max() * 1.18)
    ax.set_ylabel("GFLOPs (2 x multiply-adds)")
    ax.set_title(f"FLOPs per module, batch {r['batch_size']} x {r['seq_len']} tokens")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
              title="module (top to bottom)", title_fontsize=8)
    return fig


def plot_flops_vs_seq_len(plt, r: dict, configs: list[Config]):
    """FLOPs against sequence length, and attention's share of them growing with it."""
    longest = min(c.max_position_embeddings for c in configs)
    seqs = [w for w in SEQ_SWEEP if w <= longest] or [r["seq_len"]]
    per = [[flops.analytic_flops(cfg, w, r["batch_size"], r["head"]) for w in seqs] for cfg in configs]
    totals = [np.array([sum(f.values()) for f in p]) / 1e9 for p in per]
    attns = [np.array([sum(f[a] for a in flops.ATTENTION) for f in p]) / 1e9 for p in per]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for m, total, attn, color in zip(r["models"], totals, attns, cycle(LINE_COLORS)):
        ax.plot(seqs, total, "o-", color=color, label=f"{m['name']}: all matmuls")
        ax2.plot(seqs, 100 * attn / total, "o-", color=color, label=m["name"])
    if all(np.array_equal(a, attns[0]) for a in attns):  # the same in every model: draw it once
        ax.plot(seqs, attns[0], "s--", color="#555555", label="attention matmuls (the same in every model)")
    else:
        for m, attn, color in zip(r["models"], attns, cycle(LINE_COLORS)):
            ax.plot(seqs, attn, "s--", color=color, label=f"{m['name']}: attention matmuls")
    for a in (ax, ax2):
        profiler.seq_len_axis(a, seqs)
    ax.set_yscale("log")
    ax.set_ylabel("GFLOPs")
    ax.set_title(f"FLOPs against sequence length (batch {r['batch_size']})")
    ax2.set_ylim(0, None)
    ax2.set_ylabel("attention matmuls (% of FLOPs)")
    ax2.set_title("Attention's share (Q^T K and V probs: no weights, no groups)")
    return fig


def plot_params_by_module(plt, r: dict):
    """Parameters per module, the models side by side."""
    models = r["models"]
    names = [mod["name"] for mod in models[-1]["modules"]]
    per_model = np.array([module_values(m, "params", names, 1e6) for m in models])  # [models, modules]
    keep = per_model.any(axis=0)  # the attention matmuls have no weights
    names, per_model = [n for n, k in zip(names, keep) if k], per_model[:, keep]
    fig, ax = plt.subplots(figsize=(10, 5))
    x, width = np.arange(len(names)), 0.8 / len(models)
    for i, (m, vals, color) in enumerate(zip(models, per_model, cycle(LINE_COLORS))):
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, color=color,
                      label=f"{m['name']} ({m['params'] / 1e6:.1f}M in all)")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x, [LABELS[n] for n in names], rotation=20, ha="right")
    ax.set_ylabel("parameters (millions)")
    ax.set_title("Parameters per module (summed over the encoder layers)")
    ax.legend()
    ax.margins(y=0.12)
    return fig


def plot_groups_sweep(plt, r: dict):
    """Parameters and FLOPs against the group count G of the grouped layers."""
    sweep, base = r["groups_sweep"], r["models"][-1]
    Gs = [row["groups"] for row in sweep["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = ((axes[0], "params", 1e6, "parameters (millions)", "{:.1f}"),
              (axes[1], "flops", 1e9, f"GFLOPs (batch {r['batch_size']} x {r['seq_len']} tokens)", "{:.2f}"))
    for a, key, scale, unit, fmt in panels:
        vals = [row[key] / scale for row in sweep["rows"]]
        a.plot(Gs, vals, "o-", color=LINE_COLORS[0], label=f"{sweep['model']} with G groups")
        for G, v in zip(Gs, vals):
            a.annotate(fmt.format(v), (G, v), xytext=(5, 5), textcoords="offset points", fontsize=8)
        if sweep["configured"] in Gs:
            G = sweep["configured"]
            a.plot([G], [vals[Gs.index(G)]], "*", ms=16, color=LINE_COLORS[0], mfc="gold",
                   label=f"{sweep['model']} as configured (G = {G})")
        a.axhline(base[key] / scale, color=LINE_COLORS[1], ls="--", label=base["name"])
        a.set_xscale("log", base=2)
        a.set_xticks(Gs, [str(G) for G in Gs])
        a.set_xlim(Gs[0] / 1.3, Gs[-1] * 1.5)  # room for the value labels
        a.set_xlabel("groups G in Q, K, V, FFN intermediate and output")
        a.set_ylabel(unit)
        a.set_ylim(0, max(*vals, base[key] / scale) * 1.15)
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower left")
    axes[0].set_title("Parameters against groups (post-attention as configured)")
    axes[1].set_title("FLOPs against groups")
    return fig


PLOT_FORMATS = ("png", "svg", "pdf")
DPI = 150  # PNG: sharp on a slide


def plots(r: dict, configs: list[Config], fmt: str = "png") -> dict[str, bytes]:
    """The report's figures as `fmt` bytes, by file name; with the measured ones if the report was
    measured. matplotlib is imported here, only when asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {"flops_by_module": plot_flops_by_module(plt, r),
            "flops_vs_seq_len": plot_flops_vs_seq_len(plt, r, configs),
            "params_by_module": plot_params_by_module(plt, r),
            "groups_sweep": plot_groups_sweep(plt, r)}
    if "sweeps" in r:
        figs |= {name: draw(plt, r) for name, draw in profiler.FIGURES.items()}
    files = {}
    for name, fig in figs.items():
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI)
        plt.close(fig)
        files[f"{name}.{fmt}"] = buf.getvalue()
    return files


def write_out(out: Path, r: dict, configs: list[Config], plot_format: str = "png") -> list[Path]:
    """report.md, report.json and the plots (`plot_format` files) into `out` (created if need be)."""
    if out.exists() and not out.is_dir():
        raise NpsqueezeError(f"--out {out} exists and is not a directory")
    files = {"report.md": to_markdown(r).encode(), "report.json": to_json(r).encode(),
             **plots(r, configs, plot_format)}
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with atomic_write(out / name) as f:
            f.write(data)
    return [out / name for name in files]


# --- the command ---------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="NAME_OR_PATH",
                   help=f"a model to report: one of {', '.join(BUNDLED)}, or a SqueezeBERT/BERT "
                        f"config.json (or its folder); repeatable (default: {DEFAULT_MODELS[0]})")
    p.add_argument("--baseline", default=BASELINE, metavar="NAME_OR_PATH",
                   help=f"the model the others are compared with (default: {BASELINE})")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per batch (default 1)")
    p.add_argument("--head", choices=flops.HEADS, help="count a head too (default: the base model)")
    p.add_argument("--format", choices=FORMATS, default="md", help="what to print (default md)")
    p.add_argument("--json", action="store_const", const="json", dest="format", default=argparse.SUPPRESS,
                   help="the same as --format json")
    p.add_argument("--out", type=Path, metavar="DIR", help="also write report.md, report.json and plots here")
    p.add_argument("--plot-format", choices=PLOT_FORMATS, default="png",
                   help=f"the plots' file format with --out (default png, {DPI} dpi)")
    p.add_argument("--analytic-only", action="store_true",
                   help="skip the instrumented count (a forward pass per model, ~1 s per 100 GFLOP)")
    p.add_argument("--measure", action="store_true",
                   help="also time each model through the engine with random weights: latency, the time of "
                        "each module beside its FLOPs, and latency against groups and sequence length")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each pass with --measure (default 5)")
    p.add_argument("--repeats", type=int, dest="repeat", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # its old name
    p.add_argument("--threads", type=int, default=1,
                   help="threads with --measure (default 1, as npsqueeze's commands; the profile times one "
                        "step at a time, its products on this many BLAS threads, and on a busy machine "
                        "threads wait for each other)")


def run(args: argparse.Namespace) -> int:
    r, configs = build_report(args.config or DEFAULT_MODELS, args.seq_len, args.batch_size, args.head,
                              instrument=not args.analytic_only, repeat=args.repeat if args.measure else None,
                              baseline=args.baseline, threads=args.threads, progress=sys.stderr.isatty())
    if args.out:
        for path in write_out(args.out, r, configs, args.plot_format):
            print(f"wrote {path}", file=sys.stderr)
    print(FORMATS[args.format](r), end="")
    return 0 if all(m.get("counts_agree", True) for m in r["models"]) else 1
