"""The building blocks in ops.py against math.erf, torch, and straightforward NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npsqueeze import ops
from npsqueeze.ops import matmul
from optional import torch
from npsqueeze.weights import conv_weight
from npsqueeze.tools.tally import count_flops

rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- erf and the activations -------------------------------------------------------------------

ERF_MAX_ERROR = 2.5e-7  # measured 1.7e-7 (at x = -0.84): under 3 float32 ulps of 1 (6e-8 each just below 1)


def fit_erf(degree: int = 6, iterations: int = 500) -> np.ndarray:
    """The coefficients of ops.erf's P, from scratch: erf(x) = tanh(x P(x^2)) with P(0) = 2/sqrt(pi), the
    rest chosen so that erf's largest error on [0, 4] is as small as it can be. Lawson's algorithm:
    least squares, weighted again and again by where the error is large, tends to the minimax fit."""
    x = 2 * (np.cos(np.pi * (np.arange(500) + 0.5) / 500) + 1)  # [500] Chebyshev nodes on (0, 4)
    erfc = np.array([math.erfc(v) for v in x])
    target = 0.5 * np.log((2 - erfc) / erfc) / x  # atanh(erf(x)) / x, which P(x^2) is to fit
    p0 = 2 / math.sqrt(math.pi)
    slope = (1 - (1 - erfc) ** 2) * x  # erf's change per unit change of P: d tanh(x P) / dP
    u = (x / 4) ** 2  # in [0, 1]: the least squares stay well conditioned
    A = slope[:, None] * u[:, None] * np.vander(u, degree)  # [500, degree]: P = p0 + u * (a polynomial)
    b = slope * (target - p0)  # [500]
    w = np.full(len(x), 1 / len(x))
    for _ in range(iterations):
        r = np.linalg.lstsq(A * np.sqrt(w)[:, None], b * np.sqrt(w), rcond=None)[0]
        w *= np.abs(A @ r - b)
        w /= w.sum()
    return np.append(r / 16.0 ** np.arange(degree, 0, -1), p0)  # powers of (x/4)^2 -> of x^2, highest first


def test_erf_coefficients_are_the_fit():
    np.testing.assert_allclose(fit_erf(), ops._ERF_P, rtol=1e-6, atol=0)


def erf_grid():
    """Every 1e-5 on [-6, 6], then the tails out to the largest float32, and the special values."""
    dense = np.linspace(-6, 6, 1_200_001)
    tails = np.geomspace(6, float(np.finfo(np.float32).max), 2_000)
    return np.concatenate([dense, tails, -tails, [0.0, -0.0, np.inf, -np.inf]]).astype(np.float32)


def test_erf_matches_math_erf_to_float32_accuracy():
    x = erf_grid()
    got = ops.erf(x)
    assert got.dtype == np.float32
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(got - want).max() < ERF_MAX_ERROR
    assert got[x == 0].tolist() == [0.0, 0.0] and got[x == np.inf] == 1 and got[x == -np.inf] == -1
    np.testing.assert_array_equal(ops.erf(-x), -got)  # odd, exactly


def test_erf_out_and_nan():
    x = randn(3, 50, scale=3)
    want = ops.erf(x)
    kept = x.copy()
    np.testing.assert_array_equal(x, kept)  # without out=, the input is left alone
    y = ops.erf(x, out=x)
    assert y is x
    np.testing.assert_array_equal(y, want)
    assert np.isnan(ops.erf(np.array([np.nan], np.float32)))[0]


def gelu_error(got, x, want=None):
    """|GELU(x) - want| (default: the exact GELU, in float64), where erf's absolute error becomes x/2
    times as large: relative to max(1, |x|)."""
    if want is None:
        want = np.array([v * math.erfc(-v / math.sqrt(2)) / 2 for v in x.astype(np.float64).ravel()]).reshape(x.shape)
    return np.abs(got.astype(np.float64) - want) / np.maximum(1, np.abs(x))


def test_gelu_matches_the_exact_gelu_and_torch():
    x = np.concatenate([np.linspace(-12, 12, 240_001, dtype=np.float32), randn(10_000, scale=4)])
    got = ops.gelu(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert gelu_error(got, x).max() < 2.5e-7  # measured 1.4e-7
    torch_gelu = torch.nn.functional.gelu(torch.from_numpy(x), approximate="none").numpy()
    assert gelu_error(got, x, torch_gelu).max() < 6e-7  # measured 4.0e-7: torch is 3.5e-7 from the exact GELU


@pytest.mark.parametrize("shape", [(2, 12, 7), (1, 3072, 128), (3, 40_000)])  # one block, and several
def test_activations_leave_their_input_alone(shape):
    x = randn(*shape, scale=3)
    kept = x.copy()
    for name, fn in ops.ACTIVATIONS.items():
        got = fn(x)
        np.testing.assert_array_equal(x, kept)
        assert got.shape == x.shape and got.dtype == np.float32
        if name == "gelu":
            assert gelu_error(got, x).max() < 2.5e-7
        else:
            np.testing.assert_array_equal(got, np.maximum(x, 0))
        inplace = x.copy()
        assert fn(inplace, out=inplace) is inplace  # the model runs them in place
        np.testing.assert_array_equal(inplace, got)


# --- LayerNorm and softmax -----------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, -1])
def test_layer_norm_matches_torch_on_either_layout(axis):
    C = 48
    x = randn(C, 60, scale=5) + 3 if axis == 0 else randn(3, 20, C, scale=5) + 3  # [C, M] or [..., C]
    weight, bias = randn(C) + 1, randn(C)
    channels_last = torch.from_numpy(np.moveaxis(x, axis, -1).copy())
    want = torch.nn.functional.layer_norm(channels_last, (C,), torch.from_numpy(weight), torch.from_numpy(bias),
                                          eps=1e-12).numpy()
    kept = x.copy()
    got = ops.layer_norm(x, weight, bias, eps=1e-12, axis=axis)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_allclose(np.moveaxis(got, axis, -1), want, atol=2e-5, rtol=0)
    assert ops.layer_norm(x, weight, bias, eps=1e-12, axis=axis, out=x) is x  # the model runs it in place
    np.testing.assert_array_equal(x, got)


def test_layer_norm_of_a_constant_row_is_its_bias():
    x = np.full((8, 3), 7.0, np.float32)
    bias = randn(8)
    np.testing.assert_allclose(ops.layer_norm(x, randn(8), bias, eps=1e-12, axis=0), np.repeat(bias[:, None], 3, 1))


def test_softmax_with_masks():
    scores = randn(3, 5, 6, scale=4)  # [H, W, W] of one sequence
    mask = np.zeros(6, np.float32)
    mask[4:] = np.finfo(np.float32).min  # as SqueezeBertModel.__call__ builds it: additive, per key
    want = torch.softmax(torch.from_numpy(scores + mask), dim=-1).numpy()
    kept = scores.copy()
    got = ops.softmax(scores, mask)
    np.testing.assert_array_equal(scores, kept)  # without out=, the input is left alone
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert np.all(got[..., 4:] == 0)
    np.testing.assert_allclose(got.sum(-1), 1, atol=1e-6)
    assert ops.softmax(scores, mask, out=scores) is scores
    np.testing.assert_array_equal(scores, got)
    np.testing.assert_allclose(ops.softmax(scores, axis=1), torch.softmax(torch.from_numpy(scores), 1).numpy(), atol=1e-6)


# --- the grouped 1x1 convolution and the fully connected layer ------------------------------------

@pytest.mark.parametrize("N, C, K, G, W", [(1, 768, 3072, 4, 16), (3, 12, 18, 3, 5), (2, 16, 16, 1, 7), (2, 16, 8, 8, 4)])
def test_conv1x1_is_grouped_einsum_block_diagonal_matmul_and_torch_conv1d(N, C, K, G, W):
    x, bias = randn(N, C, W), randn(K)
    hf = randn(K, C // G, 1, scale=0.1)  # nn.Conv1d(C, K, 1, groups=G).weight
    weight = conv_weight(hf, G)  # [G, K/G, C/G]
    row = np.ascontiguousarray(x.transpose(1, 0, 2).reshape(C, N * W))  # [N, C, W] -> [C, N*W]: one row of positions
    got = ops.conv1x1(row, weight, bias, tag="t").reshape(K, N, W).transpose(1, 0, 2)  # [K, N*W] -> [N, K, W]

    want_torch = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(hf), torch.from_numpy(bias),
                                            groups=G).numpy()
    np.testing.assert_allclose(got, want_torch, atol=1e-5, rtol=1e-5)

    dense = np.zeros((K, C), np.float64)  # the same layer as one dense matrix: block g maps group g to group g
    for g in range(G):
        dense[g * K // G:(g + 1) * K // G, g * C // G:(g + 1) * C // G] = weight[g]
    np.testing.assert_allclose(got, np.einsum("kc,ncw->nkw", dense, x) + bias[:, None], atol=1e-5, rtol=1e-5)

    xg = x.reshape(N, G, C // G, W)
    readable = np.einsum("gkc,ngcw->ngkw", weight, xg).reshape(N, K, W) + bias[:, None]
    np.testing.assert_allclose(got, readable, atol=1e-5, rtol=1e-5)


def test_linear_matches_torch_on_any_leading_shape():
    weight, bias = randn(7, 12), randn(7)
    for shape in [(12,), (4, 12), (2, 5, 12)]:
        x = randn(*shape)
        want = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias)).numpy()
        np.testing.assert_allclose(ops.linear(x, weight, bias, tag="t"), want, atol=1e-5, rtol=1e-5)


# --- attention ------------------------------------------------------------------------------------

def reference_attention(q, k, v, mask, n_head):
    """Head by head, sequence by sequence, in float64 and the [W, C] layout of the Transformer paper."""
    N, C, W = q.shape
    d = C // n_head
    out = np.zeros((N, W, C))
    for n in range(N):
        for h in range(n_head):
            heads = slice(h * d, (h + 1) * d)
            Q, K, V = (a[n, heads].T.astype(np.float64) for a in (q, k, v))  # [W, d]
            s = Q @ K.T / math.sqrt(d) + mask[n]
            p = np.exp(s - s.max(1, keepdims=True))
            out[n, :, heads] = (p / p.sum(1, keepdims=True)) @ V
    return out.transpose(0, 2, 1)  # [N, W, C] -> [N, C, W]


def as_row(a):
    """[N, C, W] -> [C, N*W]: the sequences side by side, one row of positions."""
    N, C, W = a.shape
    return np.ascontiguousarray(a.transpose(1, 0, 2).reshape(C, N * W))


def test_attention_padded_matches_a_head_by_head_reference():
    N, C, W, H = 3, 24, 10, 4
    q, k, v = randn(N, C, W), randn(N, C, W), randn(N, C, W)
    lengths = [10, 6, 1]
    mask = np.where(np.arange(W) < np.array(lengths)[:, None], 0, np.finfo(np.float32).min).astype(np.float32)
    want = reference_attention(q, k, v, mask, H)
    rows = as_row(q), as_row(k), as_row(v)
    kept = [a.copy() for a in rows[1:]]
    got = ops.attention(*rows, W * np.arange(N), np.full(N, W), mask.reshape(-1), H)  # [N, W] -> [M]
    for a, b in zip(rows[1:], kept):  # k and v are left alone (q is scaled in place)
        np.testing.assert_array_equal(a, b)
    assert got.shape == (C, N * W) and got.dtype == np.float32
    got = got.reshape(C, N, W).transpose(1, 0, 2)  # [C, N*W] -> [N, C, W]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[2], np.repeat(v[2, :, :1], W, 1), atol=1e-6)  # one token to attend to: its value


MIN = np.finfo(np.float32).min
MASKS = {  # [N, W] attention masks, 1 at tokens: what each sequence's attention must read
    "left padding": ([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8], [8, 8]),  # no trailing padding to leave out
    "holes": ([[1, 0, 1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], [6, 2]),  # up to the last token
    "nothing to attend to": ([[0] * 8, [1] * 3 + [0] * 5], [8, 3]),  # every key masked: all kept
}


@pytest.mark.parametrize("kind", MASKS)
def test_attention_reads_keys_up_to_the_last_token_and_gives_what_all_keys_give(kind):
    mask01, keys = MASKS[kind]
    mask01 = np.array(mask01)
    N, W = mask01.shape
    C, H = 16, 2
    mask = np.where(mask01 == 1, 0, MIN).astype(np.float32)  # [N, W] additive
    np.testing.assert_array_equal(ops.attended_keys(W * np.arange(N), np.full(N, W), mask.reshape(-1)), keys)
    q, k, v = randn(N, C, W), randn(N, C, W), randn(N, C, W)
    got = ops.attention(as_row(q), as_row(k), as_row(v), W * np.arange(N), np.full(N, W), mask.reshape(-1), H)
    got = got.reshape(C, N, W).transpose(1, 0, 2)  # [C, N*W] -> [N, C, W]
    for n in range(N):
        if mask01[n].any():
            want = reference_attention(q[n:n + 1], k[n:n + 1], v[n:n + 1], mask[n:n + 1], H)[0]
        else:  # in float32 every score + MIN rounds to MIN: softmax weighs every key alike, as transformers does
            want = np.repeat(v[n].mean(1, keepdims=True), W, 1)
        np.testing.assert_allclose(got[n], want, atol=1e-5, rtol=0, err_msg=f"sequence {n}")


def test_attention_packed_equals_padded_at_the_real_positions():
    """Sequences of different lengths side by side with no padding: each attends only to itself."""
    C, H, lengths = 24, 4, [7, 3, 5, 5]
    seqs = [(randn(C, W), randn(C, W), randn(C, W)) for W in lengths]
    packed = ops.attention(*(np.concatenate(a, axis=1) for a in zip(*seqs)), np.cumsum(lengths) - lengths, np.array(lengths), None, H)  # [C, M]
    start = 0
    for (q, k, v), W in zip(seqs, lengths):
        want = reference_attention(q[None], k[None], v[None], np.zeros((1, W)), H)[0]
        np.testing.assert_allclose(packed[:, start:start + W], want, atol=1e-5, rtol=0)
        start += W


# --- the FLOP tally (npsqueeze/tools/tally.py) -------------------------------------------------------------------------------

def test_flops_are_tallied_by_tag_as_they_run():
    N, C, K, G, W, H = 2, 24, 36, 3, 5, 4
    x = randn(C, N * W)
    attention = {"attention_scores": 2 * N * W * W * C, "attention_context": 2 * N * W * W * C}
    with count_flops() as outer:
        ops.conv1x1(x, randn(G, K // G, C // G), randn(K), tag="intermediate")
        with count_flops() as inner:  # counted in both blocks
            ops.attention(randn(C, N * W), x, x, W * np.arange(N), np.full(N, W), None, H)
        ops.linear(randn(N, W, C), randn(K, C), randn(K), tag="head")
        ops.linear(randn(N, W, C), randn(K, C), randn(K), tag="head")
    assert outer == {"intermediate": 2 * N * W * K * C // G, "head": 2 * 2 * N * W * C * K} | attention
    assert inner == attention
    assert ops.matmul is matmul  # the tally's wrapper is gone with its block
    ops.conv1x1(x, randn(G, K // G, C // G), randn(K), tag="intermediate")  # not counting: nothing breaks
    assert outer["intermediate"] == 2 * N * W * K * C // G


def test_matmul_reads_zero_stride_weights():
    """flops.instrumented_flops runs the engine on weights that are broadcast views of one zero."""
    weight = np.broadcast_to(np.float32(0), (2, 3, 4))
    with count_flops() as tally:
        y = ops.conv1x1(randn(8, 5), weight, np.broadcast_to(np.float32(1), (6,)), tag="query")
    np.testing.assert_array_equal(y, np.ones((6, 5), np.float32))
    assert tally == {"query": 2 * 5 * 6 * 8 // 2}
