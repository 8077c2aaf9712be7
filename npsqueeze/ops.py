"""The operations SqueezeBERT is built from, in NumPy.

Activations use the paper's channels-first layout [N, C, W]: N sequences in the batch, C channels
(the hidden size), W positions (the sequence length). Every multiply-accumulate of the model runs
through `einsum` below, so that one function is both the readable definition and, with NumPy >= 2's
BLAS dispatch (`optimize=True`), the fast path -- and so that FLOPs can be tallied as they happen.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

# --- multiply-accumulate work, tallied while it runs ------------------------------------------

_flops: dict[str, int] | None = None  # tag -> FLOPs, while a `count_flops()` block is open


@contextmanager
def count_flops():
    """Tally the FLOPs of every `einsum` run inside the block, by tag.

    FLOPs follow torch's FlopCounterMode and the paper: 2 x multiply-adds, elementwise work excluded.
    """
    global _flops
    outer, _flops = _flops, {}
    try:
        yield _flops
    finally:
        _flops = outer


@lru_cache(maxsize=None)
def _contraction_path(spec: str, *shapes: tuple[int, ...]) -> list:
    # optimize=True searches for a path on every call; the path only depends on the shapes.
    return np.einsum_path(spec, *(np.empty(s, np.float32) for s in shapes), optimize=True)[0]


def einsum(spec: str, a: np.ndarray, b: np.ndarray, tag: str) -> np.ndarray:
    """`np.einsum(spec, a, b)` through BLAS, recording 2 x multiply-adds under `tag` when counting."""
    if _flops is not None:
        inputs = spec.split("->")[0].split(",")
        sizes = {i: n for term, x in zip(inputs, (a, b)) for i, n in zip(term, x.shape)}
        _flops[tag] = _flops.get(tag, 0) + 2 * math.prod(sizes.values())
    return np.einsum(spec, a, b, optimize=_contraction_path(spec, a.shape, b.shape))


# --- layers with weights -------------------------------------------------------------------------

def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Grouped 1x1 convolution (the paper's grouped convolution, `nn.Conv1d(kernel_size=1, groups=G)`).

    x: [N, C, W]; weight: [G, K/G, C/G], one dense [K/G, C/G] matrix per group; bias: [K]. Group g's outputs
    only see group g's inputs, so G groups cost 1/G of the parameters and FLOPs of a dense layer.
    A position-wise fully connected layer (BERT's Linear) is the case G = 1.
    """
    G, Kg, Cg = weight.shape
    N, C, W = x.shape
    xg = x.reshape(N, G, Cg, W)  # [N, C, W] -> [N, G, C/G, W]
    y = einsum("gkc,ngcw->ngkw", weight, xg, tag)  # [N, G, C/G, W] -> [N, G, K/G, W]
    y = y.reshape(N, G * Kg, W)  # [N, G, K/G, W] -> [N, K, W]
    y += bias[:, None]  # [K] -> [K, 1]: one bias per output channel, at every position
    return y


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Fully connected layer on the last axis, torch's layout: x [..., C], weight [K, C], bias [K] -> [..., K]."""
    y = einsum("mc,kc->mk", x.reshape(-1, x.shape[-1]), weight, tag)  # [..., C] -> [M, K]
    y = y.reshape(*x.shape[:-1], weight.shape[0])  # [M, K] -> [..., K]
    y += bias
    return y


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, axis: int) -> np.ndarray:
    """LayerNorm over the channel axis: `axis=1` for [N, C, W], `axis=-1` for [N, W, C]."""
    shape = [1] * x.ndim
    shape[axis] = -1  # broadcast the [C] gain and bias along the channel axis
    mean = x.mean(axis, keepdims=True)
    x = x - mean
    var = np.mean(x * x, axis, keepdims=True)
    x *= 1.0 / np.sqrt(var + np.float32(eps))
    x *= weight.reshape(shape)  # the gain
    x += bias.reshape(shape)
    return x


# --- elementwise -------------------------------------------------------------------------------

# erf(x) = x p(x^2) / q(x^2) on [-4, 4]; outside, erf is +-1 in float32. Rational minimax
# coefficients from Eigen's / XLA's float32 erf (max error a few ulp): SciPy is not a dependency.
_ERF_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                   -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                   -1.60960333262415e-02], np.float32)
_ERF_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02], np.float32)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float32, to float32 accuracy, with no SciPy."""
    x = np.clip(x, -4.0, 4.0, dtype=np.float32)
    x2 = x * x
    p = np.full_like(x2, _ERF_P[0])
    for c in _ERF_P[1:]:  # Horner's rule
        p *= x2
        p += c
    q = np.full_like(x2, _ERF_Q[0])
    for c in _ERF_Q[1:]:
        q *= x2
        q += c
    p *= x
    p /= q
    return p


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its exact form, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as BERT and the paper use."""
    y = erf(x * np.float32(1 / math.sqrt(2)))
    y += 1.0
    y *= 0.5
    y *= x
    return y


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


ACTIVATIONS = {"gelu": gelu, "relu": relu}


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis, keepdims=True)  # exp of a non-positive number cannot overflow
    np.exp(x, out=x)
    x /= x.sum(axis, keepdims=True)
    return x


# --- attention ----------------------------------------------------------------------------------

def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, n_head: int) -> np.ndarray:
    """Masked multi-head self-attention in the channels-first layout.

    q, k, v: [N, C, W] (the outputs of the Q, K, V convolutions); mask: [N, W] additive, 0 for tokens
    to attend to and a huge negative number for padding. Returns the context: [N, C, W].
    """
    N, C, W = q.shape
    d = C // n_head  # channels per head
    q = q.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    k = k.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    v = v.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    scores = einsum("nhdi,nhdj->nhij", q, k, "attention_scores")  # -> [N, H, W, W], query i, key j
    scores *= np.float32(1 / math.sqrt(d))
    scores += mask[:, None, None, :]  # [N, W] -> [N, 1, 1, W]: mask keys, for every head and query
    probs = softmax(scores, axis=-1)  # each query's weights over the keys sum to 1
    context = einsum("nhij,nhdj->nhdi", probs, v, "attention_context")  # -> [N, H, C/H, W]
    return context.reshape(N, C, W)  # [N, H, C/H, W] -> [N, C, W]
