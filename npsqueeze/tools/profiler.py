"""Where the time of a forward pass goes: each module's measured time beside its FLOPs.

One mechanism counts and times. Inside `tally.tally(timed=True)` (tally.py) every matrix product records its
FLOPs and its wall time under its module (query, key, ..., head), and every elementwise step its
wall time under its own name (embeddings, layout, add, layer_norm, softmax, gelu, tanh). `profile`
runs such passes in turns with unprofiled passes of the same models: the modules' sum is then
checked against the forward pass as users run it, and the difference -- Python between the steps,
plus the profiler's own cost -- is reported, not hidden. `npsqueeze report --measure` and
`npsqueeze bench --profile` print what this module computes.
"""

from __future__ import annotations

import statistics
from itertools import cycle
from typing import Callable

import numpy as np

from . import flops
from .tally import Counts, tally
from .measure import WARMUP, timings

STEP_LABELS = {  # the elementwise steps of the tally -> what they are
    "embeddings": "embedding lookups", "layout": "layout copies [M, C] <-> [C, M]",
    "add": "bias and residual adds", "layer_norm": "LayerNorm", "softmax": "softmax (+ mask, 1/sqrt(d))",
    "gelu": "GELU (exact erf)", "relu": "ReLU", "tanh": "tanh (pooler)",
}
LABELS = flops.LABELS | STEP_LABELS  # "embeddings" in a profile: the lookups (their adds and LayerNorm time apart)
LINE_COLORS = ("#1f4e9c", "#d9480f", "#2b8a3e", "#7b3fa0", "#8d6e63", "#e64980")  # one per model


# --- measuring -----------------------------------------------------------------------------------

def timed_pass(model, ids: np.ndarray) -> dict[str, Counts]:
    """One forward pass of `model` on `ids` in a timed tally: {module: Counts} with its seconds."""
    with tally(timed=True) as counts:
        model(ids)
    return counts


def profile(models: dict, ids: np.ndarray, repeat: int) -> dict[str, dict]:
    """Per model: `repeat` profiled passes and `repeat` unprofiled ones on `ids` [N, W] (multiple
    choice: [N, 1, W]), all models and both kinds taking turns after warming up; summarized by `summary`."""
    passes = {name: [] for name in models}
    fns = {}
    for name, model in models.items():
        fns[name, "forward"] = lambda model=model: model(ids)
        fns[name, "profiled"] = lambda model=model, kept=passes[name]: kept.append(timed_pass(model, ids))
    times = timings(fns, repeat)
    return {name: summary(model, ids, passes[name][WARMUP:], times[name, "forward"], times[name, "profiled"])
            for name, model in models.items()}


def summary(model, ids: np.ndarray, passes: list[dict[str, Counts]], forward: list[float],
            profiled: list[float]) -> dict:
    """The profile of `model` from its timed tallies (`passes`) and the wall times in seconds of its
    unprofiled (`forward`) and profiled passes: what `report --measure` writes as "profile".

    Per module: median and min ms over the passes, FLOPs and elements as tallied, elementwise
    operations from flops.elementwise_steps, shares of the modules' time and of the FLOPs, and the
    rate: GFLOP/s for a product, ns per element for an elementwise step.
    """
    N, W = ids.shape[0], ids.shape[-1]
    steps = flops.elementwise_steps(model.config, W, N, model.head)
    first = passes[0]
    names = [m for m in flops.modules(model.head) if m != "embeddings"] + list(steps)
    names += [m for m in first if m not in names]  # a module added to the engine but not yet named here
    total_flops = sum(c.flops for c in first.values())
    modules = []
    for name in names:
        c, seconds = first[name], [p[name].seconds for p in passes]
        ms = 1e3 * statistics.median(seconds)
        product = name not in flops.STEPS
        modules.append({
            "name": name, "kind": "product" if product else "elementwise", "calls": c.calls,
            "ms": ms, "min_ms": 1e3 * min(seconds), "flops": c.flops,
            "elementwise_ops": steps.get(name, (0, 0))[1], "elements": c.elements,
            "flop_share": c.flops / total_flops,
            "gflop_per_s": c.flops / ms / 1e6 if product and ms else None,
            "ns_per_element": 1e6 * ms / c.elements if not product and c.elements else None,
        })
    modules_ms = sum(m["ms"] for m in modules)
    for m in modules:
        m["time_share"] = m["ms"] / modules_ms
    pairs = [{"forward_ms": 1e3 * f, "profiled_ms": 1e3 * t, "modules_ms": 1e3 * sum(c.seconds for c in p.values())}
             for f, t, p in zip(forward, profiled, passes)]  # each profiled pass ran right after its unprofiled one
    return {"repeat": len(passes), "forward_ms": 1e3 * statistics.median(forward),
            "forward_min_ms": 1e3 * min(forward), "profiled_ms": 1e3 * statistics.median(profiled),
            "modules_ms": modules_ms, "modules": modules, "pairs": pairs}


def latencies(runs: dict[object, tuple[Callable, np.ndarray]], repeat: int) -> dict[object, dict]:
    """{key: (model, ids)} -> {key: {"ms": median, "min_ms": min}} of unprofiled forward passes, in turns."""
    times = timings({key: (lambda model=model, ids=ids: model(ids)) for key, (model, ids) in runs.items()}, repeat)
    return {key: {"ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)} for key, t in times.items()}


# --- tables --------------------------------------------------------------------------------------

def share(x: float) -> str:
    return f"{x:.1%}"


def profile_table(p: dict) -> list[str]:
    """One model's profile as markdown: products, then elementwise steps, each with a subtotal; then
    the modules' sum against the forward pass."""
    lines = ["| module | calls | ms | min ms | share of time | share of FLOPs | GFLOP/s | ns / element |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for kind, title in (("product", "matrix products"), ("elementwise", "elementwise steps")):
        rows = [m for m in p["modules"] if m["kind"] == kind]
        for m in rows:
            gflops = "" if m["gflop_per_s"] is None else f"{m['gflop_per_s']:.1f}"
            ns = "" if m["ns_per_element"] is None else f"{m['ns_per_element']:.2f}"
            lines.append(f"| {LABELS.get(m['name'], m['name'])} | {m['calls']} | {m['ms']:.2f} | {m['min_ms']:.2f} | "
                         f"{share(m['time_share'])} | {share(m['flop_share'])} | {gflops} | {ns} |")
        ms, fl = sum(m["ms"] for m in rows), sum(m["flops"] for m in rows)
        gflops = f"{fl / ms / 1e6:.1f}" if kind == "product" and ms else ""
        lines.append(f"| **all {title}** | | **{ms:.2f}** | | **{share(ms / p['modules_ms'])}** | "
                     f"**{share(sum(m['flop_share'] for m in rows))}** | {gflops} | |")
    return lines + ["", accounting(p)]


def accounting(p: dict) -> str:
    """The modules' sum against the profiled pass they ran in and the unprofiled pass before it, in words."""
    def median_ratio(a: str, b: str) -> float:
        return statistics.median(pair[a] / pair[b] for pair in p["pairs"])

    return (f"Accounting: the modules' medians sum to {p['modules_ms']:.2f} ms; the unprofiled forward pass took "
            f"{p['forward_ms']:.2f} ms (median of {p['repeat']}, min {p['forward_min_ms']:.2f}). Pass by pass (the "
            f"median of {len(p['pairs'])} pairs, each profiled pass right after an unprofiled one), the modules "
            f"cover {median_ratio('modules_ms', 'profiled_ms'):.1%} of the profiled pass they ran in (the rest is "
            f"Python between the steps) and sum to {median_ratio('modules_ms', 'forward_ms'):.1%} of the unprofiled "
            f"pass; the profiled pass took {median_ratio('profiled_ms', 'forward_ms') - 1:+.1%} longer than the "
            "unprofiled one: the profiler's own cost, plus the machine's noise.")


def ms_of(p: dict, names) -> float:
    return sum(m["ms"] for m in p["modules"] if m["name"] in names)


def flops_of(p: dict, names) -> int:
    return sum(m["flops"] for m in p["modules"] if m["name"] in names)


def rate(p: dict, names) -> float:
    """GFLOP/s of the products `names` together."""
    return flops_of(p, names) / ms_of(p, names) / 1e6


def compare_table(entry: dict, base: dict) -> list[str]:
    """Module by module: the baseline's time over the model's, beside its FLOPs over the model's."""
    p, q = entry["profile"], base["profile"]
    mine = {m["name"]: m for m in p["modules"]}
    lines = [f"| module | {entry['name']} ms | {base['name']} ms | time ratio | FLOP ratio |", "|---|--:|--:|--:|--:|"]
    for m in q["modules"]:
        if m["name"] in mine:
            s = mine[m["name"]]
            flop_ratio = f"{m['flops'] / s['flops']:.2f}x" if s["flops"] else "-"
            lines.append(f"| {LABELS.get(m['name'], m['name'])} | {s['ms']:.2f} | {m['ms']:.2f} | "
                         f"{m['ms'] / s['ms']:.2f}x | {flop_ratio} |")
    lines.append(f"| **forward pass** | **{p['forward_ms']:.1f}** | **{q['forward_ms']:.1f}** | "
                 f"**{q['forward_ms'] / p['forward_ms']:.2f}x** | **{base['flops'] / entry['flops']:.2f}x** |")
    return lines


def why_section(entry: dict, base: dict) -> list[str]:
    """Why `entry`'s FLOP ratio to `base` is not its speedup, computed from their profiles."""
    p, q, a, b = entry["profile"], base["profile"], entry["name"], base["name"]
    flop_ratio, speedup = base["flops"] / entry["flops"], q["forward_ms"] / p["forward_ms"]
    steps = [m["name"] for m in p["modules"] if m["kind"] == "elementwise"]
    attention = flops.ATTENTION
    fixed = (ms_of(p, steps) + ms_of(p, attention)) / p["modules_ms"]
    mine = {m["name"]: m for m in p["modules"]}
    # Amdahl: the baseline's own times, each product's cut by its FLOP cut, everything else kept
    bound_ms = sum(m["ms"] * (mine[m["name"]]["flops"] / m["flops"] if m["flops"] and m["name"] in mine else 1)
                   for m in q["modules"])
    out = [f"### Why a FLOP ratio of {flop_ratio:.2f}x is a {speedup:.2f}x speedup here ({a} against {b})", "",
           f"- **Work the groups do not shrink.** The elementwise steps took {ms_of(p, steps):.1f} ms in {a} "
           f"and {ms_of(q, steps):.1f} ms in {b}: the same work, and no FLOPs. The attention products, which "
           f"have no weights and no groups, took {ms_of(p, attention):.1f} and {ms_of(q, attention):.1f} ms. "
           f"Together they are {fixed:.0%} of {a}'s time, for {flops_of(p, attention) / entry['flops']:.0%} of "
           "its FLOPs.",
           f"- **Amdahl's law.** Had every product of {b} kept its measured FLOP rate doing {a}'s FLOPs, "
           f"and every other step its time, {b}'s {q['modules_ms']:.1f} ms would have become {bound_ms:.1f}: "
           f"a speedup of {q['modules_ms'] / bound_ms:.2f}x by this count, not {flop_ratio:.2f}x."]
    grouped = [flops.ROLE_MODULE[role] for role, G in entry["groups"].items() if G > 1]
    dense = [m for role, m in flops.ROLE_MODULE.items() if entry["groups"][role] == base["groups"][role] == 1]
    if grouped:
        text = (f"- **A FLOP is not a fixed time.** {a}'s grouped layers ({', '.join(grouped)}) ran at "
                f"{rate(p, grouped):.0f} GFLOP/s, the same layers dense in {b} at {rate(q, grouped):.0f}: "
                f"their time fell {ms_of(q, grouped) / ms_of(p, grouped):.2f}x for a "
                f"{flops_of(q, grouped) / flops_of(p, grouped):.2f}x cut in FLOPs.")
        if dense:
            text += (f" The layers dense in both ({', '.join(dense)}) ran at {rate(p, dense):.0f} and "
                     f"{rate(q, dense):.0f} GFLOP/s.")
        out.append(text)
    out.append(f"- **Measured:** {speedup:.2f}x for the forward pass (unprofiled, in turns); "
               f"{q['modules_ms'] / p['modules_ms']:.2f}x for the modules' sum.")
    return out


def sweep_tables(r: dict) -> list[str]:
    """The measured sweeps as markdown: latency against groups, and against sequence length."""
    sweeps, names = r["sweeps"], [m["name"] for m in r["models"]]
    base = names[-1]
    g1 = sweeps["groups"][0]
    out = [f"### Latency against groups ({sweeps['model']}, batch {r['batch_size']} x {r['seq_len']} tokens)", "",
           f"Every layer of {', '.join(sweeps['roles'])} at G groups; the other layers as configured.", "",
           f"| G | parameters | GFLOPs | ms | min ms | FLOPs, G = {g1['groups']} / G | time, G = {g1['groups']} / G |",
           "|--:|--:|--:|--:|--:|--:|--:|",
           *(f"| {row['groups']} | {row['params']:,} | {row['flops'] / 1e9:.3f} | {row['ms']:.1f} | "
             f"{row['min_ms']:.1f} | {g1['flops'] / row['flops']:.2f}x | {g1['ms'] / row['ms']:.2f}x |"
             for row in sweeps["groups"]),
           "", f"### Latency against sequence length (batch {r['batch_size']})", "",
           "| tokens | " + " | ".join(f"{n} GFLOPs | {n} ms" for n in names)
           + "".join(f" | {base} / {n}: time | FLOPs" for n in names[:-1]) + " |",
           "|--:|" + "--:|" * (2 * len(names) + 2 * (len(names) - 1))]
    for row in sweeps["seq_len"]:
        fl, ms = row["flops"], row["ms"]
        out.append(f"| {row['seq_len']} | " + " | ".join(f"{fl[n] / 1e9:.3f} | {ms[n]:.1f}" for n in names)
                   + "".join(f" | {ms[base] / ms[n]:.2f}x | {fl[base] / fl[n]:.2f}x" for n in names[:-1]) + " |")
    return out


# --- figures -------------------------------------------------------------------------------------

def plot_time_vs_flops(plt, r: dict):
    """Each module's share of the time beside its share of the FLOPs, one panel per model."""
    models = r["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 6), sharex=True, sharey=True, squeeze=False)
    names = [m["name"] for m in models[-1]["profile"]["modules"]]
    for ax, entry in zip(axes[0], models):
        by_name = {m["name"]: m for m in entry["profile"]["modules"]}
        y = np.arange(len(names))
        time = [100 * by_name[n]["time_share"] if n in by_name else 0 for n in names]
        work = [100 * by_name[n]["flop_share"] if n in by_name else 0 for n in names]
        ax.barh(y - 0.2, time, 0.4, color=LINE_COLORS[0], label="share of measured time")
        ax.barh(y + 0.2, work, 0.4, color="#bbbbbb", label="share of FLOPs")
        for yi, t in zip(y, time):
            ax.annotate(f"{t:.1f}%", (t, yi - 0.2), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7)
        ax.set_yticks(y, [LABELS.get(n, n) for n in names])
        ax.set_xlabel("% of the modules' time, or of the FLOPs")
        ax.set_title(f"{entry['name']}: {entry['profile']['forward_ms']:.0f} ms, {entry['flops'] / 1e9:.2f} GFLOPs",
                     fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0, 0].invert_yaxis()  # the first module on top (once: the panels share the axis)
    fig.suptitle(f"Where the time goes, batch {r['batch_size']} x {r['seq_len']} tokens: products on top, "
                 "elementwise steps (0 FLOPs) below")
    return fig


def plot_latency_vs_groups(plt, r: dict):
    """Measured latency against the group count G, with the FLOPs on a second axis."""
    sweeps = r["sweeps"]
    Gs = [row["groups"] for row in sweeps["groups"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    ms = [row["ms"] for row in sweeps["groups"]]
    ax.plot(Gs, ms, "o-", color=LINE_COLORS[0], label="measured latency (median)")
    for G, v in zip(Gs, ms):
        ax.annotate(f"{v:.0f} ms", (G, v), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_ylim(0, max(ms) * 1.15)
    ax.set_ylabel("ms per forward pass", color=LINE_COLORS[0])
    ax2 = ax.twinx()
    gflops = [row["flops"] / 1e9 for row in sweeps["groups"]]
    ax2.plot(Gs, gflops, "s--", color=LINE_COLORS[1], label="GFLOPs (counted)")
    ax2.set_ylim(0, max(gflops) * 1.15)
    ax2.set_ylabel("GFLOPs", color=LINE_COLORS[1])
    if sweeps["configured"] in Gs:
        ax.axvline(sweeps["configured"], color="#999999", ls=":", label=f"{sweeps['model']} as configured")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Gs, [str(G) for G in Gs])
    ax.set_xlabel("groups G in " + ", ".join(sweeps["roles"]))
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="lower left")
    ax.set_xlim(Gs[0] / 1.3, Gs[-1] * 1.5)  # room for the value labels
    ax.set_title(f"{sweeps['model']}: measured latency and FLOPs against groups, "
                 f"batch {r['batch_size']} x {r['seq_len']} tokens")
    return fig


def seq_len_axis(ax, seqs: list[int]) -> None:
    """Sequence lengths on a log2 x axis, each one a tick; a grid and a legend."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(seqs, [str(w) for w in seqs])
    ax.set_xlabel("sequence length (tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_latency_vs_seq_len(plt, r: dict):
    """Measured latency against sequence length per model; the baseline's time ratio beside its FLOP ratio."""
    rows, names = r["sweeps"]["seq_len"], [m["name"] for m in r["models"]]
    seqs = [row["seq_len"] for row in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, color in zip(names, cycle(LINE_COLORS)):
        ax.plot(seqs, [row["ms"][name] for row in rows], "o-", color=color, label=name)
    for name, color in zip(names[:-1], cycle(LINE_COLORS)):
        ax2.plot(seqs, [row["ms"][names[-1]] / row["ms"][name] for row in rows], "o-", color=color,
                 label=f"{names[-1]} / {name}: measured time")
        ax2.plot(seqs, [row["flops"][names[-1]] / row["flops"][name] for row in rows], "s--", color=color,
                 alpha=0.6, label=f"{names[-1]} / {name}: FLOPs")
    for a in (ax, ax2):
        seq_len_axis(a, seqs)
    ax.set_yscale("log")
    ax.set_ylabel("ms per forward pass (median)")
    ax.set_title(f"Latency against sequence length (batch {r['batch_size']})")
    ax2.set_ylim(0, None)
    ax2.set_ylabel("ratio")
    ax2.set_title("Speedup measured beside the FLOP ratio")
    return fig


FIGURES = {"time_vs_flops_by_module": plot_time_vs_flops, "latency_vs_groups": plot_latency_vs_groups,
           "latency_vs_seq_len": plot_latency_vs_seq_len}  # drawn when the report was measured
