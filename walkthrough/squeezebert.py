"""SqueezeBERT on one screen: the whole forward pass in plain NumPy, from token ids to the last
hidden state, for reading beside the paper (Iandola et al. 2020, Figure 1).

`params` is the nested dict of a loaded npsqueeze model (`model.params`), named as in the
checkpoint; `config` is its `model.config`. Activations are channels-first as in the paper: a padded
batch of N sequences of W positions with C channels is [N, C, W]. Every grouped 1x1 convolution is
written as its definition, an einsum over channel groups. The engine (npsqueeze/model.py) computes
the same numbers faster: the batch as one row of positions, np.matmul, work in place.
BERT is the case where every group count is 1, so this runs BERT checkpoints too.
"""

import math

import numpy as np


def conv1x1(x, weight, bias):
    """Grouped 1x1 convolution: [N, C, W] -> [N, K, W]. weight [G, K/G, C/G]: group g's output channels
    see only group g's input channels. G = 1 is a dense (position-wise fully connected) layer."""
    G, Kg, Cg = weight.shape
    xg = x.reshape(len(x), G, Cg, -1)  # [N, C, W] -> [N, G, C/G, W]
    y = np.einsum("gkc,ngcw->ngkw", weight, xg)  # [G, K/G, C/G] x [N, G, C/G, W] -> [N, G, K/G, W]
    return y.reshape(len(x), G * Kg, -1) + bias[:, None]  # [N, G, K/G, W] -> [N, K, W]; bias [K] -> [K, 1]


def layer_norm(x, weight, bias, eps):
    """Normalize the C channels of each position of [N, C, W], then a gain and a bias per channel."""
    mean = x.mean(1, keepdims=True)  # [N, C, W] -> [N, 1, W]
    var = x.var(1, keepdims=True)  # [N, C, W] -> [N, 1, W]
    return (x - mean) / np.sqrt(var + eps) * weight[:, None] + bias[:, None]  # [C] -> [C, 1]


erf = np.vectorize(math.erf, otypes=[np.float32])  # the error function, one element at a time


def gelu(x):
    """x * Phi(x), Phi being the standard normal distribution function: the exact GELU of BERT."""
    return x * 0.5 * (1 + erf(x / math.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))  # minus the largest: exp cannot overflow
    return e / e.sum(-1, keepdims=True)


def embeddings(input_ids, token_type_ids, word_embeddings, position_embeddings, token_type_embeddings,
               LayerNorm, eps):
    """Three table lookups added, then LayerNorm: ids [N, W] -> [N, C, W]."""
    positions = np.arange(input_ids.shape[1])  # [W]: 0, 1, ..., W-1
    x = (word_embeddings["weight"][input_ids]  # [N, W] -> [N, W, C]
         + position_embeddings["weight"][positions]  # [W] -> [W, C]
         + token_type_embeddings["weight"][token_type_ids])  # [N, W] -> [N, W, C]
    return layer_norm(x.transpose(0, 2, 1), **LayerNorm, eps=eps)  # [N, W, C] -> [N, C, W]


def self_attention(x, mask, query, key, value, n_head):
    """Q, K, V as grouped convolutions, then each head attends within each sequence: [N, C, W] -> [N, C, W].
    mask [N, W]: 0 at tokens, the most negative float32 at padding."""
    N, C, W = x.shape
    q, k, v = (conv1x1(x, **p).reshape(N, n_head, C // n_head, W) for p in (query, key, value))  # [N, C, W] -> [N, H, C/H, W]
    scores = np.einsum("nhdi,nhdj->nhij", q, k) / math.sqrt(C // n_head)  # -> [N, H, W, W]: query i, key j
    probs = softmax(scores + mask[:, None, None, :])  # mask [N, W] -> [N, 1, 1, W]: no weight on padding
    context = np.einsum("nhij,nhdj->nhdi", probs, v)  # [N, H, W, W] x [N, H, C/H, W] -> [N, H, C/H, W]
    return context.reshape(N, C, W)  # [N, H, C/H, W] -> [N, C, W]


def block(x, mask, attention, post_attention, intermediate, output, n_head, eps):
    """One SqueezeBERT module (the paper's Figure 1): [N, C, W] -> [N, C, W]."""
    h = conv1x1(self_attention(x, mask, **attention, n_head=n_head), **post_attention["conv1d"])
    h = layer_norm(h + x, **post_attention["layernorm"], eps=eps)  # residual, then LayerNorm
    f = gelu(conv1x1(h, **intermediate["conv1d"]))  # [N, C, W] -> [N, I, W]: expand
    y = conv1x1(f, **output["conv1d"])  # [N, I, W] -> [N, C, W]: squeeze back
    return layer_norm(y + h, **output["layernorm"], eps=eps)


def forward(params, config, input_ids, attention_mask, token_type_ids=None):
    """A padded batch: ids, attention_mask (1 = token, 0 = padding) [N, W] -> last hidden state [N, W, C]."""
    input_ids = np.asarray(input_ids)
    if token_type_ids is None:
        token_type_ids = np.zeros_like(input_ids)
    mask = np.where(np.asarray(attention_mask) == 1, 0, np.finfo(np.float32).min).astype(np.float32)  # [N, W]
    eps = config.layer_norm_eps
    x = embeddings(input_ids, token_type_ids, **params["embeddings"], eps=eps)  # [N, W] -> [N, C, W]
    for layer in params["encoder"]["layers"]:
        x = block(x, mask, **layer, n_head=config.num_attention_heads, eps=eps)  # [N, C, W] -> [N, C, W]
    return x.transpose(0, 2, 1)  # [N, C, W] -> [N, W, C], as transformers returns it
