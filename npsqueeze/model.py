"""SqueezeBERT (and BERT, its special case) from token ids to logits, in NumPy.

Bottom-up: embeddings, self-attention, the block, the encoder, the pooler, the heads, then the
whole forward pass. Params are nested dicts of arrays named as in HF's `SqueezeBertModel` (see
weights.py). Inside the encoder activations are channels-first, as in the paper, and a batch is one
long row of positions: [C, M], the N sequences' positions side by side (M = N*W when they are
padded to one length W, the sum of their lengths when they are packed without padding); `starts`
and `lengths` [N] say where each sequence lies in the row.

These functions are the math and nothing else. The classes users call (modeling.py) check the
inputs and run `forward` on a batch's sequences shared out among threads (parallel.py).
"""

from __future__ import annotations

import numpy as np

from .config import Config
from .ops import ACTIVATIONS, add, attention, conv1x1, layer_norm, linear, lookup, tanh, transpose


def sequence_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each of N sequences of `lengths` [N] positions starts in the row: [N]."""
    return np.cumsum(lengths) - lengths


def embeddings(input_ids, token_type_ids, positions, word_embeddings, position_embeddings,
               token_type_embeddings, LayerNorm, eps: float) -> np.ndarray:
    """Word + position + token-type embeddings, then LayerNorm: ids [M] -> [C, M]."""
    x = lookup(word_embeddings["weight"], input_ids)  # [M] -> [M, C]
    x = add(x, lookup(position_embeddings["weight"], positions))  # [M] -> [M, C]
    x = add(x, lookup(token_type_embeddings["weight"], token_type_ids))  # [M] -> [M, C]
    x = layer_norm(x, **LayerNorm, eps=eps, axis=-1, out=x)
    return transpose(x)  # [M, C] -> [C, M]: copied once, read by Q, K and V


def self_attention(x, starts, lengths, mask, query, key, value, n_head: int) -> np.ndarray:
    """Q, K, V as grouped 1x1 convolutions (q_groups, k_groups, v_groups), then attention within each
    sequence: [C, M] -> [C, M]."""
    q = conv1x1(x, **query, tag="query")
    k = conv1x1(x, **key, tag="key")
    v = conv1x1(x, **value, tag="value")
    return attention(q, k, v, starts, lengths, mask, n_head)


def block(x, starts, lengths, mask, attention, post_attention, intermediate, output, cfg: Config) -> np.ndarray:
    """One SqueezeBERT module (the paper's Figure 1 block): [C, M] -> [C, M].

    Self-attention, then the post-attention convolution, added to the block's input and normalized;
    then the feed-forward network: expand to I channels, GELU, squeeze back to C, added and
    normalized. Each convolution has its own group count from the config. The residual adds,
    GELU and the LayerNorms overwrite the array they read (`out=`): no new array per step.
    """
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    context = self_attention(x, starts, lengths, mask, **attention, n_head=cfg.num_attention_heads)
    h = conv1x1(context, **post_attention["conv1d"], tag="post_attention")
    h = layer_norm(add(h, x), **post_attention["layernorm"], eps=eps, axis=0, out=h)  # LayerNorm(h + x)
    f = conv1x1(h, **intermediate["conv1d"], tag="intermediate")  # [C, M] -> [I, M]
    f = act(f, out=f)
    y = conv1x1(f, **output["conv1d"], tag="output")  # [I, M] -> [C, M]
    return layer_norm(add(y, h), **output["layernorm"], eps=eps, axis=0, out=y)  # LayerNorm(y + h)


def encoder(p, cfg: Config, input_ids, token_type_ids, starts, lengths, mask=None, output_hidden_states=False):
    """Embeddings and the encoder's blocks: ids [M] -> last hidden state [M, C] (+ every layer's).

    input_ids, token_type_ids: [M], N sequences side by side, starting at `starts` [N] with
    `lengths` [N] positions; mask: [M] additive (0 at tokens, the most negative float32 at padding)
    or None when nothing is padded. Returns (last hidden state [M, C], the embeddings' and every
    layer's [M, C], or None).
    """
    positions = np.arange(len(input_ids)) - np.repeat(starts, lengths)  # [M]: 0, 1, ..., W-1 per sequence
    x = embeddings(input_ids, token_type_ids, positions, **p["embeddings"], eps=cfg.layer_norm_eps)
    hidden_states = [x]
    for layer in p["encoder"]["layers"]:
        x = block(x, starts, lengths, mask, **layer, cfg=cfg)  # [C, M] -> [C, M]
        hidden_states.append(x)
    h = transpose(x)  # [C, M] -> [M, C], as transformers returns it
    return h, tuple(s.T for s in hidden_states) if output_hidden_states else None  # each [M, C]


def pooler(h_first, dense) -> np.ndarray:
    """The final state of each sequence's first token ([CLS]) through a dense layer and tanh: [N, C] -> [N, C]."""
    return tanh(linear(h_first, **dense, tag="pooler"))


# --- the heads: what a fine-tuned model puts on top of the encoder --------------------------------

def mlm_head(h, p, cfg: Config) -> np.ndarray:
    """Masked-LM head: dense + activation + LayerNorm, then the (tied) decoder: [..., C] -> [..., V]."""
    t = p["predictions"]["transform"]
    x = linear(h, **t["dense"], tag="head")
    x = ACTIVATIONS[cfg.hidden_act](x, out=x)
    x = layer_norm(x, **t["LayerNorm"], eps=cfg.layer_norm_eps, axis=-1, out=x)
    return linear(x, p["predictions"]["decoder"]["weight"], p["predictions"]["bias"], tag="head")  # [..., C] -> [..., V]


def classifier_head(x, p) -> np.ndarray:
    """A dense layer on each sequence's pooled state [N, C] -> [N, labels] (sequence classification,
    multiple choice: labels 1), or on each position [M, C] -> [M, labels] (token classification)."""
    return linear(x, **p["classifier"], tag="head")


def qa_head(h, p) -> dict[str, np.ndarray]:
    """Question answering: each position's score as the answer's start and as its end, [M, C] -> 2 x [M]."""
    logits = linear(h, **p["qa_outputs"], tag="head")  # [M, C] -> [M, 2]
    return {"start_logits": np.ascontiguousarray(logits[:, 0]), "end_logits": np.ascontiguousarray(logits[:, 1])}


def forward(p, cfg: Config, head: str | None, input_ids, token_type_ids, lengths, mask=None,
            output_hidden_states=False) -> dict[str, np.ndarray | tuple | None]:
    """The whole model on a batch as one row of positions (see `encoder`), named as transformers
    names its outputs: the base model (head None) returns last_hidden_state [M, C] and pooler_output
    [N, C]; a head model its head's outputs ("mlm", "token": logits [M, V or labels]; "sequence",
    "choice": logits [N, labels]; "qa": start_logits, end_logits [M]); and hidden_states if asked.
    """
    starts = sequence_starts(lengths)  # [N]
    h, states = encoder(p, cfg, input_ids, token_type_ids, starts, lengths, mask, output_hidden_states)
    out = {"hidden_states": states}
    if "pooler" in p:  # the base model, and heads that classify the pooled [CLS] state
        pooled = pooler(h[starts], **p["pooler"])  # [M, C] -> [N, C]
    if head is None:
        out |= {"last_hidden_state": h, "pooler_output": pooled}
    elif head == "mlm":
        out["logits"] = mlm_head(h, p["cls"], cfg)  # [M, C] -> [M, V]
    elif head == "token":
        out["logits"] = classifier_head(h, p)  # [M, C] -> [M, labels]
    elif head == "qa":
        out |= qa_head(h, p)  # [M, C] -> 2 x [M]
    else:
        out["logits"] = classifier_head(pooled, p)  # [N, C] -> [N, labels]
    return out
