"""How much work SqueezeBERT and BERT do: parameters and FLOPs per module, counted two ways.

FLOPs follow torch's FlopCounterMode and the paper: 2 x the multiply-adds of every matmul, 1x1
convolution and einsum. `analytic_flops` derives them from the config alone; `instrumented_flops` runs the
engine and reads what `ops.matmul` tallied. The module names are the tags `ops.matmul` records under,
so the two counts compare entry by entry. Elementwise work (softmax, LayerNorm, GELU, adds) is not a
FLOP under that convention; `elementwise_ops` estimates it separately.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..config import Config
from ..modeling import ARCHITECTURES
from ..weights import HEADS as HEAD_TABLE
from ..weights import weight_map
from .tally import STEP_OF, count_flops

# Every module of the breakdown, in the order data flows through the model.
MODULES = ("embeddings", "query", "key", "value", "attention_scores", "attention_context",
           "post_attention", "intermediate", "output", "pooler", "head")
LABELS = {  # module -> what the paper / BERT calls it
    "embeddings": "embeddings", "query": "Q projection", "key": "K projection", "value": "V projection",
    "attention_scores": "attention scores Q^T K", "attention_context": "attention context (probs, V)",
    "post_attention": "post-attention", "intermediate": "FFN intermediate", "output": "FFN output",
    "pooler": "pooler", "head": "head",
}
ATTENTION = ("attention_scores", "attention_context")  # the matmuls between activations: no weights, no groups
ROLE_MODULE = {"q_groups": "query", "k_groups": "key", "v_groups": "value",
               "post_attention_groups": "post_attention", "intermediate_groups": "intermediate",
               "output_groups": "output"}
HEAD_CLASSES = {cls.head: cls for cls in ARCHITECTURES.values()}  # SqueezeBERT's and BERT's run alike
HEADS = tuple(h for h in HEAD_TABLE if h)

# Elementwise operations per element, as ops.py computes them (exp, tanh and a compare count as one):
# name -> (operations per element, what they are).
ELEMENTWISE_OPS = {
    "add": (1, "a bias, a residual, or one embedding added to another"),
    "layer_norm": (7, "mean's add, subtract, square, variance's add, normalize, gain, bias; per-row sqrt ignored"),
    "gelu": (21, "x/sqrt2; erf: clip 2, square 1, polynomial 12, times x 1, tanh 1; +1, *0.5, *x"),
    "relu": (1, "a max"),
    "softmax": (5, "max, subtract, exp, sum, divide"),
    "scale": (1, "each query channel times 1/sqrt(d), before the scores (cheaper than scaling the W x W scores)"),
    "mask": (1, "each attention score plus the padding mask"),
    "tanh": (1, "the pooler's tanh"),
}


def modules(head: str | None) -> list[str]:
    """The modules a base model (head None) or a model with `head` has."""
    return [m for m in MODULES if (m != "pooler" or HEAD_TABLE[head].pooler) and (m != "head" or head)]


def module_of(name: str) -> str:
    """Engine tensor name -> module: "encoder.layers.3.attention.query.weight" -> "query"."""
    parts = name.split(".")
    if parts[0] in ("embeddings", "pooler"):
        return parts[0]
    if parts[0] == "encoder":
        return parts[4] if parts[3] == "attention" else parts[3]  # query/key/value, or the block's layer
    return "head"  # cls.*, classifier.*, qa_outputs.*


def params(cfg: Config, head: str | None = None) -> dict[str, int]:
    """Parameters per module, from the tensors the engine loads (a tied decoder counts once)."""
    counts = dict.fromkeys(modules(head), 0)
    for e in weight_map(cfg, head):
        counts[module_of(e.name)] += math.prod(e.shape)
    return counts


def head_rows(head: str, N: int, M: int) -> int:
    """The rows a head's last layer runs on: the N pooled vectors, or all M positions."""
    return N if HEAD_TABLE[head].pooler else M


def analytic_flops(cfg: Config, seq_len: int, batch_size: int = 1, head: str | None = None) -> dict[str, int]:
    """FLOPs per module from the config: 2 x multiply-adds of each matmul the forward pass runs."""
    N, W, C, L = batch_size, seq_len, cfg.hidden_size, cfg.num_hidden_layers
    M = N * W  # positions in the batch: a 1x1 convolution is one matmul over all of them
    f = dict.fromkeys(modules(head), 0)  # the embeddings are lookups and adds: no FLOPs
    for role, cin, cout in cfg.conv_shapes():
        f[ROLE_MODULE[role]] = L * 2 * M * cin * cout // getattr(cfg, role)  # G blocks of [K/G, C/G]
    # Per head h: scores = Q_h^T K_h ([W, d] x [d, W]) and context = V_h probs^T; H heads of d = C/H channels.
    f["attention_scores"] = f["attention_context"] = L * 2 * N * W * W * C
    if HEAD_TABLE[head].pooler:
        f["pooler"] = 2 * N * C * C  # the [CLS] position only
    if head:
        f["head"] = 2 * head_rows(head, N, M) * C * HEAD_TABLE[head].width(cfg)
        if head == "mlm":
            f["head"] += 2 * M * C * C  # the transform's dense layer, before the decoder
    return f


def elementwise_ops(cfg: Config, seq_len: int, batch_size: int = 1, head: str | None = None) -> dict[str, int]:
    """Elementwise operations per module, with the per-element costs of ELEMENTWISE_OPS.

    Bias adds go with their layer, the query's scale and the scores' mask and softmax with "attention_scores",
    each residual add and LayerNorm with the layer whose output it normalizes.
    """
    op = {name: n for name, (n, _) in ELEMENTWISE_OPS.items()}
    N, W, C, L, H = batch_size, seq_len, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    M, act = N * W, op[cfg.hidden_act]
    e = dict.fromkeys(modules(head), 0)
    e["embeddings"] = M * C * (2 * op["add"] + op["layer_norm"])  # word + position + token type
    for role, _, cout in cfg.conv_shapes():
        e[ROLE_MODULE[role]] = L * M * cout * op["add"]  # the bias
    e["attention_scores"] = L * (M * C * op["scale"] + N * H * W * W * (op["mask"] + op["softmax"]))
    e["post_attention"] += L * M * C * (op["add"] + op["layer_norm"])  # residual + LayerNorm
    e["intermediate"] += L * M * cfg.intermediate_size * act
    e["output"] += L * M * C * (op["add"] + op["layer_norm"])  # residual + LayerNorm
    if HEAD_TABLE[head].pooler:
        e["pooler"] = N * C * (op["add"] + op["tanh"])
    if head:
        e["head"] = head_rows(head, N, M) * HEAD_TABLE[head].width(cfg) * op["add"]
        if head == "mlm":
            e["head"] += M * C * (op["add"] + act + op["layer_norm"])  # the transform
    return e


# The elementwise steps `tally.tally(timed=True)` times, each under its own name.
STEPS = tuple(dict.fromkeys(STEP_OF.values()))


def elementwise_steps(cfg: Config, seq_len: int, batch_size: int = 1, head: str | None = None
                      ) -> dict[str, tuple[int, int]]:
    """Per elementwise step of the engine (STEPS, as `tally.tally` names them): the elements its calls
    write and the operations they take (ELEMENTWISE_OPS), for `batch_size` unpadded sequences of
    `seq_len` tokens. Nothing is padded, so the engine adds no mask: unlike `elementwise_ops`, none
    is counted. Table lookups and layout copies move memory and do no arithmetic: 0 operations.
    """
    op = {name: n for name, (n, _) in ELEMENTWISE_OPS.items()}
    N, W, C, L, H = batch_size, seq_len, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    M, act = N * W, cfg.hidden_act
    parts = [("embeddings", 3 * M * C, 0), ("add", 2 * M * C, op["add"]),  # word, position, token type
             ("layer_norm", M * C, op["layer_norm"]), ("layout", 2 * M * C, 0)]  # [M, C] <-> [C, M], in and out
    parts += [("add", L * M * cout, op["add"]) for _, _, cout in cfg.conv_shapes()]  # the biases
    parts += [("softmax", L * M * C, op["scale"]),  # the queries' 1/sqrt(d), counted with the softmax
              ("softmax", L * N * H * W * W, op["softmax"]),
              ("add", 2 * L * M * C, op["add"]), ("layer_norm", 2 * L * M * C, op["layer_norm"]),  # residuals
              (act, L * M * cfg.intermediate_size, op[act])]
    if HEAD_TABLE[head].pooler:
        parts += [("add", N * C, op["add"]), ("tanh", N * C, op["tanh"])]
    if head == "mlm":
        parts += [("add", M * C, op["add"]), (act, M * C, op[act]), ("layer_norm", M * C, op["layer_norm"])]
    if head:
        parts.append(("add", head_rows(head, N, M) * HEAD_TABLE[head].width(cfg), op["add"]))
    steps = {}
    for step, elements, per_element in parts:
        n, ops = steps.get(step, (0, 0))
        steps[step] = (n + elements, ops + elements * per_element)
    return {step: steps[step] for step in STEPS if step in steps}


def engine_model(cfg: Config, head: str | None, make: Callable[[tuple], np.ndarray]):
    """The engine's model for `cfg` with `head`, each weight tensor `make(shape)`: no checkpoint needed."""
    p = {e.name: make(e.shape) for e in weight_map(cfg, head)}
    if head == "mlm" and cfg.tie_word_embeddings:  # as weights.to_engine: the decoder is the embedding matrix
        p["cls.predictions.decoder.weight"] = p["embeddings.word_embeddings.weight"]
    return HEAD_CLASSES[head](cfg, p)


def free_weight(shape: tuple) -> np.ndarray:
    """A float32 zero seen as `shape` through zero strides: any size, no memory."""
    return np.broadcast_to(np.float32(0), shape)


def dummy_ids(seq_len: int, batch_size: int, head: str | None) -> np.ndarray:
    """[batch_size, seq_len] token ids ([PAD]); multiple choice: batch_size questions of one choice each."""
    return np.zeros((batch_size, 1, seq_len) if head == "choice" else (batch_size, seq_len), np.int64)


def instrumented_flops(cfg: Config, seq_len: int, batch_size: int = 1, head: str | None = None
                       ) -> dict[str, int]:
    """FLOPs per module as `tally.count_flops` counts them while the engine runs a forward pass.

    The weights are zero-stride views of one zero, so this needs no checkpoint and no weight memory;
    the matmuls still run on [batch_size, seq_len] activations (about 1 s per 100 GFLOP here).
    """
    model = engine_model(cfg, head, free_weight)
    with count_flops() as tally:
        model(dummy_ids(seq_len, batch_size, head))
    return {m: tally.get(m, 0) for m in modules(head)} | tally  # a tag outside MODULES would show
