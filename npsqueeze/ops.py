"""The operations SqueezeBERT is built from, in NumPy.

Activations are channels-first, as in the paper: a sequence of W positions with C channels is a
[C, W] array, one row per channel. A batch is one long row of positions: the N sequences stand side
by side as [C, N*W] (written [C, M]), because a position-wise layer -- every 1x1 convolution,
LayerNorm, GELU, add -- cannot tell which sentence a position belongs to. Only attention needs to
know where each sequence starts and ends.

Every multiply-accumulate runs through `matmul`, whose comment at each call says, as an einsum,
what it computes, and whose `tag` names the module it belongs to. Nothing here measures: the tools
that count FLOPs and time (npsqueeze/tools/tally.py) wrap these functions from outside while they
measure.
"""

from __future__ import annotations

import math

import numpy as np


def matmul(a: np.ndarray, b: np.ndarray, tag: str, out: np.ndarray | None = None) -> np.ndarray:
    """`a @ b` (np.matmul: [..., M, K] @ [..., K, P] -> [..., M, P], leading axes broadcast), into
    `out` if given. `tag` names the module the product belongs to (query, key, ..., head): the
    measuring tools (npsqueeze/tools/tally.py) count FLOPs and time under it.

    np.matmul hands each matrix product to BLAS, reading transposed and strided views in place; the
    equivalent np.einsum copies operands into that order first.
    """
    return np.matmul(a, b, out=out)


# --- layers with weights -------------------------------------------------------------------------

def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Grouped 1x1 convolution (the paper's grouped convolution, `nn.Conv1d(kernel_size=1, groups=G)`).

    x: [C, M]; weight: [G, K/G, C/G], one dense [K/G, C/G] matrix per group; bias: [K]. Group g's
    outputs see only group g's inputs, so G groups cost 1/G of a dense layer's parameters and FLOPs.
    BERT's position-wise Linear is the case G = 1. Channels-first, each group is a contiguous band
    of C/G rows: the convolution is G matrix products over all M positions at once, with no copies.
    """
    G, Kg, Cg = weight.shape
    xg = x.reshape(G, Cg, -1)  # [C, M] -> [G, C/G, M]
    y = matmul(weight, xg, tag)  # einsum("gkc,gcm->gkm"): [G, K/G, C/G] @ [G, C/G, M] -> [G, K/G, M]
    y = y.reshape(G * Kg, -1)  # [G, K/G, M] -> [K, M]
    return add(y, bias[:, None])  # [K] -> [K, 1]: one bias per output channel, at every position


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tag: str) -> np.ndarray:
    """Fully connected layer on the last axis, torch's layout: x [..., C], weight [K, C], bias [K] -> [..., K]."""
    y = matmul(x, weight.T, tag)  # einsum("...c,kc->...k"): [..., C] @ [C, K] -> [..., K]
    return add(y, bias)


# --- elementwise -------------------------------------------------------------------------------
# Each of these writes into `out` when given one (`out=x`: in place): a forward pass allocates no
# array it does not need.

def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x + y, into x: a bias or a residual connection."""
    x += y
    return x


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, axis: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the channel axis: `axis=0` for [C, M], `axis=-1` for [..., C].

    Channels-first, a position's channels are M apart in memory, but the mean and variance still run
    as contiguous sums of C rows of M positions: the layout costs nothing here.
    """
    shape = [1] * x.ndim
    shape[axis] = -1  # broadcast the [C] gain and bias along the channel axis
    y = np.subtract(x, x.mean(axis, keepdims=True), out=out)
    # the variance, one value per position; einsum sums the squares with no temporary as big as x
    var = np.einsum("c...,c...->..." if axis == 0 else "...c,...c->...", y, y)  # [C, M] -> [M]; [..., C] -> [...]
    var = np.expand_dims(var, axis)  # [M] -> [1, M]; [...] -> [..., 1]
    var *= np.float32(1 / y.shape[axis])
    var += np.float32(eps)
    y *= 1 / np.sqrt(var)
    y *= weight.reshape(shape)  # the gain
    y += bias.reshape(shape)
    return y


# erf(x) = tanh(x P(x^2)). P(0) = 2/sqrt(pi), erf's slope at 0; the other six coefficients make the
# largest error on [-4, 4] as small as they can (1.7e-7, three float32 ulps of 1): tests/test_ops.py's
# `fit_erf` computes them again. Beyond 4, erf is 1 in float32 and x P(x^2) keeps rising: from 4.5 on
# tanh gives exactly 1. SciPy is not a dependency.
_ERF_P = np.array([1.48153475e-07, -5.77936544e-06, 8.83045141e-05, -6.21433370e-04, -1.90303443e-04,
                   1.02768809e-01, 1.12837923e+00], np.float32)  # highest power first


def erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The error function in float32, to float32 accuracy, as tanh(x P(x^2)).

    erf and tanh are both odd and level off at +-1, so atanh(erf(x)) / x is smooth and a polynomial
    P of x^2 fits it. With P = 2/sqrt(pi) + 0.10 x^2 this is the "tanh approximation" of GELU
    (GPT-2's); six more coefficients make it exact to float32. Horner's rule runs in place, one pass
    over the array per operation, and NumPy's tanh is one vectorized pass.
    """
    x = np.clip(x, -4.5, 4.5, out=out, dtype=np.float32)  # x^12 would overflow far out
    x2 = np.square(x)
    p = x2 * _ERF_P[0]
    p += _ERF_P[1]
    for c in _ERF_P[2:]:
        p *= x2
        p += c
    p *= x
    return np.tanh(p, out=x)


# elements: GELU's blocks of x, of Phi(x) and erf's two temporaries (1 MB) fit in a 2 MB L2 cache. As
# large as that allows: each block is ~20 NumPy calls, and each call takes the GIL, which threads
# running other sequences of the batch at the same time wait for (see parallel.py).
BLOCK = 65_536


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """GELU in its exact form, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as BERT and the paper use.

    Block by block over the flattened array, so that erf's ~16 passes stay in the CPU cache.
    """
    y = np.empty_like(x, dtype=np.float32) if out is None else out
    t = np.empty(min(BLOCK, x.size), np.float32)  # Phi(x), one block at a time
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)  # [...] -> [size]: views of contiguous arrays
    for i in range(0, x.size, BLOCK):
        xb, yb = flat_x[i:i + BLOCK], flat_y[i:i + BLOCK]
        tb = t[:xb.size]
        np.multiply(xb, np.float32(1 / math.sqrt(2)), out=tb)
        erf(tb, out=tb)
        tb += 1.0
        tb *= 0.5
        np.multiply(xb, tb, out=yb)
    return y


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(x, np.float32(0), out=out)


ACTIVATIONS = {"gelu": gelu, "relu": relu}


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.tanh(x, out=out)


def softmax(x: np.ndarray, mask: np.ndarray | None = None, axis: int = -1, out: np.ndarray | None = None
            ) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`, after adding the additive `mask` if given."""
    if mask is not None:
        x = np.add(x, mask, out=out)
        out = x
    x = np.subtract(x, x.max(axis, keepdims=True), out=out)  # exp of a non-positive number cannot overflow
    np.exp(x, out=x)
    x *= 1 / x.sum(axis, keepdims=True)
    return x


def scale(x: np.ndarray, factor: float) -> np.ndarray:
    """x * factor, in place: attention's 1/sqrt(d), counted with the softmax it belongs to."""
    x *= np.float32(factor)
    return x


def transpose(x: np.ndarray) -> np.ndarray:
    """x.T, copied into a contiguous array: [M, C] <-> [C, M]."""
    return np.ascontiguousarray(x.T)


def lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of an embedding table: [V, C], ids [M] -> [M, C]."""
    return table[ids]


# --- attention ----------------------------------------------------------------------------------

def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              mask: np.ndarray | None, n_head: int) -> np.ndarray:
    """Masked multi-head self-attention, each sequence on its own, channels-first.

    q, k, v: [C, M], the outputs of the Q, K, V convolutions, the batch's sequences side by side;
    starts, lengths: [N], where each sequence starts in the row and how many positions it has;
    mask: [M] additive, 0 at tokens and the most negative float32 at padding, or None when there is
    no padding. Returns the context [C, M].
    Channels-first, each head of a sequence is a [C/H, W] block of rows, read in place by both
    products, and its context is written in place into the output. q is scaled in place: pass a
    copy to keep it.
    """
    C = q.shape[0]
    d = C // n_head  # channels per head
    q = scale(q, 1 / math.sqrt(d))  # in place: scaling q costs C*M multiplies, scaling the scores H*W*M
    context = np.empty_like(q)
    for start, W, L in zip(starts.tolist(), lengths.tolist(), attended_keys(starts, lengths, mask).tolist()):
        s, keys = slice(start, start + W), slice(start, start + L)
        qs, out = (a[:, s].reshape(n_head, d, W) for a in (q, context))  # [C, W] -> [H, C/H, W]
        ks, vs = (a[:, keys].reshape(n_head, d, L) for a in (k, v))  # [C, L] -> [H, C/H, L]
        # einsum("hdi,hdj->hij"): query i against key j, [H, W, C/H] @ [H, C/H, L] -> [H, W, L]
        scores = matmul(qs.transpose(0, 2, 1), ks, "attention_scores")
        probs = softmax(scores, None if mask is None else mask[keys], out=scores)  # mask [L] broadcasts over heads and queries
        # einsum("hdj,hij->hdi"): [H, C/H, L] @ [H, L, W] (transposed) -> [H, C/H, W], into the context
        matmul(vs, probs.transpose(0, 2, 1), "attention_context", out=out)
    return context


def attended_keys(starts: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """How many keys each sequence's attention reads: up to its last unmasked one, [N].

    The mask adds the most negative float32 to a padded key's score, so its softmax weight is
    exp(-3.4e38) = 0 exactly: the padding after a sequence's last token can be left out of both
    products, with the same result. A sequence with no unmasked key keeps them all (softmax then
    weighs them equally, as transformers does).
    """
    if mask is None:
        return lengths
    # one past each sequence's last token, as a position in the row (0: it has none)
    ends = np.maximum.reduceat(np.where(mask == 0, np.arange(1, len(mask) + 1), 0), starts)  # [M] -> [N]
    return np.where(ends > 0, ends - starts, lengths)
