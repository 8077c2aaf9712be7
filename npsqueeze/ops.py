"""The operations SqueezeBERT is built from, in NumPy.

Activations use the paper's channels-first layout [N, C, W]: N sequences in the batch, C channels
(the hidden size), W positions (the sequence length). Every multiply-accumulate of the model runs
through `matmul` below -- so FLOPs can be tallied as they happen -- and each call says, as an einsum,
what it computes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

# --- multiply-accumulate work, tallied while it runs ------------------------------------------

_flops: dict[str, int] | None = None  # tag -> FLOPs, while a `count_flops()` block is open


@contextmanager
def count_flops():
    """Tally the FLOPs of every `matmul` run inside the block, by tag.

    FLOPs follow torch's FlopCounterMode and the paper: 2 x multiply-adds, elementwise work excluded.
    """
    global _flops
    outer, _flops = _flops, {}
    try:
        yield _flops
    finally:
        _flops = outer


def matmul(a: np.ndarray, b: np.ndarray, tag: str) -> np.ndarray:
    """`a @ b` (np.matmul: [..., M, K] @ [..., K, P] -> [..., M, P], leading axes broadcast), recording
    2 x multiply-adds under `tag` when counting.

    np.matmul hands each matrix product to BLAS, reading transposed views in place. The einsum in the
    comment at each call says the same thing; np.einsum(optimize=path) runs it through matmul too,
    but copies an operand whenever its axes are not already in (batch, rows, columns) order -- e.g.
    to drop a batch axis of size 1 -- and re-parses the spec on every call (~40 us): on this model's
    shapes it was 1.1-1.6x slower than np.matmul (2 threads, median of 30).
    """
    y = np.matmul(a, b)
    if _flops is not None:  # each output element took a.shape[-1] multiply-adds
        _flops[tag] = _flops.get(tag, 0) + 2 * y.size * a.shape[-1]
    return y


# --- layers with weights -------------------------------------------------------------------------

def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Grouped 1x1 convolution (the paper's grouped convolution, `nn.Conv1d(kernel_size=1, groups=G)`).

    x: [N, C, W]; weight: [G, K/G, C/G], one dense [K/G, C/G] matrix per group; bias: [K]. Group g's outputs
    only see group g's inputs, so G groups cost 1/G of the parameters and FLOPs of a dense layer.
    A position-wise fully connected layer (BERT's Linear) is the case G = 1. Channels-first makes each
    group a contiguous [C/G, W] block, so the convolution is N x G matrix products with no copies.
    """
    G, Kg, Cg = weight.shape
    N, C, W = x.shape
    xg = x.reshape(N, G, Cg, W)  # [N, C, W] -> [N, G, C/G, W]
    y = matmul(weight, xg, tag)  # einsum("gkc,ngcw->ngkw"): [G, K/G, C/G] @ [N, G, C/G, W] -> [N, G, K/G, W]
    y = y.reshape(N, G * Kg, W)  # [N, G, K/G, W] -> [N, K, W]
    y += bias[:, None]  # [K] -> [K, 1]: one bias per output channel, at every position
    return y


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Fully connected layer on the last axis, torch's layout: x [..., C], weight [K, C], bias [K] -> [..., K]."""
    y = matmul(x, weight.T, tag)  # einsum("...c,kc->...k"): [..., C] @ [C, K] -> [..., K]
    y += bias
    return y


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, axis: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the channel axis: `axis=1` for [N, C, W], `axis=-1` for [..., C].
    `out=x` computes it in place.

    In [N, C, W] a position's channels are W apart in memory, but the mean and variance still run as
    contiguous row-by-row sums of C rows of W positions: the channels-first layout costs nothing here.
    """
    shape = [1] * x.ndim
    shape[axis] = -1  # broadcast the [C] gain and bias along the channel axis
    y = np.subtract(x, x.mean(axis, keepdims=True), out=out)
    # the variance, one value per position; einsum sums the squares with no temporary as big as x
    var = np.einsum("nc...,nc...->n..." if axis == 1 else "...c,...c->...", y, y)  # [N, C, W] -> [N, W]; [..., C] -> [...]
    var = np.expand_dims(var, axis)  # [N, W] -> [N, 1, W]; [...] -> [..., 1]
    var *= np.float32(1 / y.shape[axis])
    var += np.float32(eps)
    y *= 1 / np.sqrt(var)  # the rest works in place on y: each extra array would be one more pass
    y *= weight.reshape(shape)  # the gain
    y += bias.reshape(shape)
    return y


# --- elementwise -------------------------------------------------------------------------------

# erf(x) = x p(x^2) / q(x^2) on [-4, 4]; outside, erf is +-1 in float32. Rational minimax
# coefficients from Eigen's / XLA's float32 erf (max error a few ulp): SciPy is not a dependency.
_ERF_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                   -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                   -1.60960333262415e-02], np.float32)
_ERF_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02], np.float32)


def erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The error function in float32, to float32 accuracy, with no SciPy. `out=x` computes it in place.

    Each NumPy operation is one pass over the array: the polynomials run in place (Horner's rule)
    and the only temporaries are x^2 and the numerator.
    """
    x = np.clip(x, -4.0, 4.0, out=out, dtype=np.float32)
    x2 = np.square(x)
    p = x2 * _ERF_P[0]
    p += _ERF_P[1]
    for c in _ERF_P[2:]:  # Horner's rule
        p *= x2
        p += c
    p *= x  # the numerator: x is free now, so the denominator goes in its place
    q = np.multiply(x2, _ERF_Q[0], out=x)
    q += _ERF_Q[1]
    for c in _ERF_Q[2:]:
        q *= x2
        q += c
    return np.divide(p, q, out=q)


BLOCK = 32_768  # elements: 128 KB, so GELU's blocks of x, of Phi(x) and erf's two temporaries fill a 512 KB L2 cache


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """GELU in its exact form, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as BERT and the paper use.
    `out=x` computes it in place.

    It runs block by block over the flattened array, so that erf's ~25 passes stay in the CPU cache
    and its temporaries are small enough for malloc to recycle. On whole [N, I, W] activations
    every call took fresh pages from the OS (15,000 page faults a forward pass) and GELU cost 2.7x
    as much: 4.7 instead of 1.7 ms a layer at batch 1, sequence 128. Smaller blocks pay NumPy's
    per-call overhead more often (16K elements: 2.8 ms).
    """
    y = np.empty_like(x, dtype=np.float32) if out is None else out
    t = np.empty(min(BLOCK, x.size), np.float32)  # Phi(x), one block at a time
    for xb, yb in zip(blocks(x), blocks(y)):
        tb = t[:xb.size]
        np.multiply(xb, np.float32(1 / math.sqrt(2)), out=tb)
        erf(tb, out=tb)
        tb += 1.0
        tb *= 0.5
        np.multiply(xb, tb, out=yb)
    return y


def blocks(x: np.ndarray) -> list[np.ndarray]:
    """x flattened, cut into consecutive views of BLOCK elements."""
    flat = x.reshape(-1)  # [...] -> [M]: a view for a contiguous x
    return [flat[i:i + BLOCK] for i in range(0, flat.size, BLOCK)]


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(x, np.float32(0), out=out)


ACTIVATIONS = {"gelu": gelu, "relu": relu}


def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`; `out=x` computes it in place."""
    x = np.subtract(x, x.max(axis, keepdims=True), out=out)  # exp of a non-positive number cannot overflow
    np.exp(x, out=x)
    x *= 1 / x.sum(axis, keepdims=True)
    return x


# --- attention ----------------------------------------------------------------------------------

def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, n_head: int) -> np.ndarray:
    """Masked multi-head self-attention in the channels-first layout.

    q, k, v: [N, C, W] (the outputs of the Q, K, V convolutions); mask: [N, W] additive, 0 for tokens
    to attend to and a huge negative number for padding. Returns the context: [N, C, W].
    Channels-first, each head's q, k and v are contiguous [C/H, W] blocks; both products read them
    (or their transposes) in place, and the context comes out channels-first with no transpose.
    """
    N, C, W = q.shape
    d = C // n_head  # channels per head
    q = q * np.float32(1 / math.sqrt(d))  # scaling q costs C*W multiplies, scaling the scores H*W*W
    q = q.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    k = k.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    v = v.reshape(N, n_head, d, W)  # [N, C, W] -> [N, H, C/H, W]
    # einsum("nhdi,nhdj->nhij"): query i against key j, [N, H, W, C/H] @ [N, H, C/H, W] -> [N, H, W, W]
    scores = matmul(q.transpose(0, 1, 3, 2), k, "attention_scores")
    scores += mask[:, None, None, :]  # [N, W] -> [N, 1, 1, W]: mask keys, for every head and query
    probs = softmax(scores, axis=-1, out=scores)  # each query's weights over the keys sum to 1
    # einsum("nhdj,nhij->nhdi"): [N, H, C/H, W] @ [N, H, W, W] (transposed) -> [N, H, C/H, W]
    context = matmul(v, probs.transpose(0, 1, 3, 2), "attention_context")
    return context.reshape(N, C, W)  # [N, H, C/H, W] -> [N, C, W]
