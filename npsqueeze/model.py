"""SqueezeBERT (and BERT, its special case) from token ids to logits, in NumPy.

Bottom-up: embeddings, self-attention, the block, the encoder, the pooler, then the heads and the
classes users call. Params are nested dicts of arrays named as in HF's `SqueezeBertModel`
(see weights.py). Inside the encoder activations are channels-first, as in the paper, and a batch
is one long row of positions: [C, M], the N sequences' positions side by side (M = N*W when they
are padded to one length W, the sum of their lengths when they are packed without padding).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import Config, NpsqueezeError, checkpoint_folder
from .ops import ACTIVATIONS, add, attention, conv1x1, layer_norm, linear, lookup, tanh, transpose
from .parallel import forward_pass, share_out
from .weights import HEADS, load_params, nest


def embeddings(input_ids, token_type_ids, positions, word_embeddings, position_embeddings,
               token_type_embeddings, LayerNorm, eps: float) -> np.ndarray:
    """Word + position + token-type embeddings, then LayerNorm: ids [M] -> [C, M]."""
    x = lookup(word_embeddings["weight"], input_ids)  # [M] -> [M, C]
    x = add(x, lookup(position_embeddings["weight"], positions))  # [M] -> [M, C]
    x = add(x, lookup(token_type_embeddings["weight"], token_type_ids))  # [M] -> [M, C]
    x = layer_norm(x, **LayerNorm, eps=eps, axis=-1, out=x)
    return transpose(x)  # [M, C] -> [C, M]: copied once, read by Q, K and V


def self_attention(x, lengths, mask, query, key, value, n_head: int, exchange=None) -> np.ndarray:
    """Q, K, V as grouped 1x1 convolutions (q_groups, k_groups, v_groups), then attention within each
    sequence: [C, M] -> [C, M]. A thread that holds some of a lone sequence's positions gets every
    thread's keys and values from `exchange` (see parallel.share_out)."""
    q = conv1x1(x, **query, tag="query")
    k = conv1x1(x, **key, tag="key")
    v = conv1x1(x, **value, tag="value")
    if exchange is not None:
        k, v = exchange(k, v)  # [C, M] -> [C, W]: the whole sequence's
    return attention(q, k, v, lengths, mask, n_head)


def block(x, lengths, mask, attention, post_attention, intermediate, output, cfg: Config, exchange=None) -> np.ndarray:
    """One SqueezeBERT module (the paper's Figure 1 block): [C, M] -> [C, M].

    Self-attention, then the post-attention convolution, added to the block's input and normalized;
    then the feed-forward network: expand to I channels, GELU, squeeze back to C, added and
    normalized. Each convolution has its own group count from the config. The residual adds,
    GELU and the LayerNorms overwrite the array they read (`out=`): no new array per step.
    """
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    context = self_attention(x, lengths, mask, **attention, n_head=cfg.num_attention_heads, exchange=exchange)
    h = conv1x1(context, **post_attention["conv1d"], tag="post_attention")
    h = layer_norm(add(h, x), **post_attention["layernorm"], eps=eps, axis=0, out=h)  # LayerNorm(h + x)
    f = conv1x1(h, **intermediate["conv1d"], tag="intermediate")  # [C, M] -> [I, M]
    f = act(f, out=f)
    y = conv1x1(f, **output["conv1d"], tag="output")  # [I, M] -> [C, M]
    return layer_norm(add(y, h), **output["layernorm"], eps=eps, axis=0, out=y)  # LayerNorm(y + h)


def transformer(p, cfg: Config, input_ids, token_type_ids, positions, lengths, mask=None, exchange=None,
                output_hidden_states=False):
    """The base model without the pooler: ids [M] -> last hidden state [M, C] (+ every layer's).

    input_ids, token_type_ids, positions (each one's place in its sequence): [M], N sequences of
    `lengths` [N] positions side by side; mask: [M] additive (0 at tokens, the most negative float32
    at padding) or None when nothing is padded. With `exchange`, the ids are some of a lone sequence's
    positions and lengths and mask describe all of them (see parallel.share_out).
    """
    x = embeddings(input_ids, token_type_ids, positions, **p["embeddings"], eps=cfg.layer_norm_eps)
    hidden_states = [x]
    for layer in p["encoder"]["layers"]:
        x = block(x, lengths, mask, **layer, cfg=cfg, exchange=exchange)  # [C, M] -> [C, M]
        hidden_states.append(x)
    h = transpose(x)  # [C, M] -> [M, C], as transformers returns it
    return h, tuple(s.T for s in hidden_states) if output_hidden_states else None  # each [M, C]


def pooler(h_cls, dense) -> np.ndarray:
    """The final state of each sequence's first token ([CLS]) through a dense layer and tanh: [N, C] -> [N, C]."""
    return tanh(linear(h_cls, **dense, tag="pooler"))


def mlm_head(h, p, cfg: Config) -> np.ndarray:
    """Masked-LM head: dense + activation + LayerNorm, then the (tied) decoder: [..., C] -> [..., V]."""
    t = p["predictions"]["transform"]
    x = linear(h, **t["dense"], tag="head")
    x = ACTIVATIONS[cfg.hidden_act](x, out=x)
    x = layer_norm(x, **t["LayerNorm"], eps=cfg.layer_norm_eps, axis=-1, out=x)
    return linear(x, p["predictions"]["decoder"]["weight"], p["predictions"]["bias"], tag="head")  # [..., C] -> [..., V]


# --- the classes users call ---------------------------------------------------------------------

@dataclass
class ModelOutput:
    """What a model returns, with transformers' field names. Arrays are float32.

    As transformers' ModelOutput, it is also an ordered mapping of the fields that are set (not None):
    `keys()`, `values()`, `items()`, `out["logits"]`, `"logits" in out`, iteration over the keys,
    and `to_tuple()`, whose order `out[0]` indexes: a head model's output starts with its logits.
    """

    last_hidden_state: np.ndarray | None = None  # [batch, seq, hidden]: the base model
    pooler_output: np.ndarray | None = None  # [batch, hidden]: the base model
    logits: np.ndarray | None = None
    start_logits: np.ndarray | None = None  # question answering: [batch, seq]
    end_logits: np.ndarray | None = None
    hidden_states: tuple | None = None  # with output_hidden_states=True: embeddings + each layer

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, object]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice):
        if not isinstance(key, str):
            return self.to_tuple()[key]
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())


class SqueezeBertModel:
    """SqueezeBERT's base model (embeddings, encoder, pooler); `head` names what sits on top."""

    head: str | None = None
    per_position: tuple[str, ...] = ()  # the head's outputs with one row per position

    def __init__(self, config: Config, params: dict[str, np.ndarray]):
        self.config = config
        self.params = nest(params)

    @classmethod
    def from_pretrained(cls, path: str | Path):
        """Load a checkpoint folder: config.json + HF weights (either format, or sharded), or a
        folder `npsqueeze convert` wrote."""
        path = checkpoint_folder(path)
        cfg = Config.from_file(path)
        return cls(cfg, load_params(path, cfg, cls.head))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        """The model on a padded batch, as transformers takes it: ids [N, W] (attention_mask 0 at
        padding) -> outputs [N, W, ...] per position, [N, ...] per sequence."""
        ids, attention_mask, token_type_ids = check_inputs(input_ids, attention_mask, token_type_ids)
        N, W = ids.shape
        mask = None if attention_mask.all() else np.where(  # [N, W] -> [M]: additive, 0 at tokens
            attention_mask.reshape(-1) == 1, np.float32(0), np.finfo(np.float32).min)
        out = self.forward(ids.reshape(-1), token_type_ids.reshape(-1), np.full(N, W), mask,  # [N, W] -> [M]
                           output_hidden_states)
        for name in ("last_hidden_state", *self.per_position):
            rows = getattr(out, name)
            if rows is not None:
                setattr(out, name, rows.reshape(N, W, *rows.shape[1:]))  # [M, ...] -> [N, W, ...]
        if output_hidden_states:
            out.hidden_states = tuple(s.reshape(N, W, -1) for s in out.hidden_states)  # [M, C] -> [N, W, C]
        return out

    def forward(self, input_ids, token_type_ids, lengths, mask=None, output_hidden_states=False) -> ModelOutput:
        """The model on a batch as one row of positions: input_ids, token_type_ids [M] hold N sequences
        of `lengths` [N] positions side by side (packed: no padding; or padded, with `mask` [M]
        additive). Outputs keep that layout: [M, ...] per position, [N, ...] per sequence."""
        with forward_pass(len(input_ids), len(lengths)):  # BLAS's threads, the pooler's too
            h, states = self.encoder(input_ids, token_type_ids, lengths, mask, output_hidden_states)
            out = ModelOutput(last_hidden_state=h, hidden_states=states)
            if HEADS[self.head].pooler:
                out.pooler_output = pooler(h[np.cumsum(lengths) - lengths], **self.params["pooler"])  # [M, C] -> [N, C]
        self.head_forward(out)  # on every BLAS thread: the masked-LM decoder, [M, C] @ [C, V], gains from them
        if self.head is not None:  # as in transformers, a head model returns its head's outputs (+ hidden_states)
            out.last_hidden_state = out.pooler_output = None
        return out

    def encoder(self, input_ids, token_type_ids, lengths, mask=None, output_hidden_states=False):
        """`transformer` (embeddings and encoder) on a batch as one row of positions, its positions
        shared out among the threads `parallel.set_threads` asked for: last hidden state [M, C]
        (+ every layer's)."""
        check_ids(self.config, input_ids, token_type_ids, lengths)
        starts = np.cumsum(lengths) - lengths  # [N]: each sequence's first position
        positions = np.arange(len(input_ids)) - np.repeat(starts, lengths)  # [M]: 0, 1, ..., W-1 per sequence
        with forward_pass(len(input_ids), len(lengths)):
            return share_out(lambda *part: transformer(self.params, self.config, *part, output_hidden_states),
                             input_ids, token_type_ids, positions, lengths, mask)

    def head_forward(self, out: ModelOutput) -> None:
        """Fill in the head's outputs (the base model has none)."""


class SqueezeBertForMaskedLM(SqueezeBertModel):
    head, per_position = "mlm", ("logits",)

    def head_forward(self, out):
        out.logits = mlm_head(out.last_hidden_state, self.params["cls"], self.config)  # [M, C] -> [M, V]


class SqueezeBertForSequenceClassification(SqueezeBertModel):
    head = "sequence"

    def head_forward(self, out):
        out.logits = linear(out.pooler_output, **self.params["classifier"], tag="head")  # [N, C] -> [N, labels]


class SqueezeBertForTokenClassification(SqueezeBertModel):
    head, per_position = "token", ("logits",)

    def head_forward(self, out):
        out.logits = linear(out.last_hidden_state, **self.params["classifier"], tag="head")  # [M, C] -> [M, labels]


class SqueezeBertForQuestionAnswering(SqueezeBertModel):
    head, per_position = "qa", ("start_logits", "end_logits")

    def head_forward(self, out):
        logits = linear(out.last_hidden_state, **self.params["qa_outputs"], tag="head")  # [M, C] -> [M, 2]
        out.start_logits = np.ascontiguousarray(logits[:, 0])  # [M]
        out.end_logits = np.ascontiguousarray(logits[:, 1])


class SqueezeBertForMultipleChoice(SqueezeBertModel):
    """Scores each of `choices` sequences: input_ids [batch, choices, seq] -> logits [batch, choices]."""

    head = "choice"

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        input_ids = as_ids(input_ids, "input_ids", ndim=3)
        B, K, W = input_ids.shape
        flat = []
        for a, name in ((attention_mask, "attention_mask"), (token_type_ids, "token_type_ids")):
            if a is not None:
                a = as_ids(a, name, ndim=3)
                if a.shape != input_ids.shape:
                    raise NpsqueezeError(f"{name} has shape {a.shape}, input_ids has {input_ids.shape}")
                a = a.reshape(B * K, W)  # [B, K, W] -> [B*K, W]
            flat.append(a)
        out = super().__call__(input_ids.reshape(B * K, W), *flat,  # [B, K, W] -> [B*K, W]
                               output_hidden_states=output_hidden_states)
        out.logits = out.logits.reshape(B, K)  # [B*K, 1] -> [B, K]
        return out

    def head_forward(self, out):
        out.logits = linear(out.pooler_output, **self.params["classifier"], tag="head")  # [B*K, 1]


# BERT runs on the same engine: the same blocks with every group count 1 (see Config.from_dict).
class BertModel(SqueezeBertModel):
    pass


class BertForMaskedLM(SqueezeBertForMaskedLM):
    pass


class BertForSequenceClassification(SqueezeBertForSequenceClassification):
    pass


class BertForTokenClassification(SqueezeBertForTokenClassification):
    pass


class BertForQuestionAnswering(SqueezeBertForQuestionAnswering):
    pass


class BertForMultipleChoice(SqueezeBertForMultipleChoice):
    pass


ARCHITECTURES = {c.__name__: c for c in (
    SqueezeBertModel, SqueezeBertForMaskedLM, SqueezeBertForSequenceClassification,
    SqueezeBertForTokenClassification, SqueezeBertForQuestionAnswering, SqueezeBertForMultipleChoice,
    BertModel, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
    BertForQuestionAnswering, BertForMultipleChoice)}
ARCHITECTURES["BertForPreTraining"] = BertForMaskedLM  # bert-base-uncased's MLM head (NSP ignored)


def from_pretrained(path: str | Path) -> SqueezeBertModel:
    """Load a checkpoint folder as the class its config.json names in "architectures"."""
    path = checkpoint_folder(path)
    cfg = Config.from_file(path)
    cls = model_class(cfg, path)
    return cls(cfg, load_params(path, cfg, cls.head))


def model_class(cfg: Config, path: str | Path) -> type[SqueezeBertModel]:
    """The class the config of the checkpoint at `path` names in "architectures" (none: the base model)."""
    arch = cfg.architectures[0] if cfg.architectures else None
    if arch is None:
        cls = BertModel if cfg.model_type == "bert" else SqueezeBertModel
    elif arch in ARCHITECTURES:
        cls = ARCHITECTURES[arch]
    else:
        raise NpsqueezeError(f"unknown architecture {arch!r} in {path}/config.json; npsqueeze knows "
                             + ", ".join(ARCHITECTURES))
    return cls


# --- input checks ----------------------------------------------------------------------------

def as_ids(a, name: str, ndim: int) -> np.ndarray:
    """An integer array of `ndim` dims, or a one-line NpsqueezeError saying what is wrong."""
    try:
        a = np.asarray(a)
    except ValueError as e:  # ragged lists
        raise NpsqueezeError(f"{name} must be a rectangular array: {e}") from None
    if a.dtype == bool and name == "attention_mask":
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise NpsqueezeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise NpsqueezeError(f"{name} must have {ndim} dims, got shape {a.shape}")
    if a.size == 0:
        raise NpsqueezeError(f"{name} is empty (shape {a.shape})")
    return a


def check_inputs(input_ids, attention_mask, token_type_ids):
    """Validate the shapes of a padded batch [N, W] and fill in defaults (attend everywhere, token type 0)."""
    ids = as_ids(input_ids, "input_ids", ndim=2)
    checked = []
    for a, name in ((attention_mask, "attention_mask"), (token_type_ids, "token_type_ids")):
        if a is None:
            a = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
        a = as_ids(a, name, ndim=2)
        if a.shape != ids.shape:
            raise NpsqueezeError(f"{name} has shape {a.shape}, input_ids has {ids.shape}")
        checked.append(a)
    if checked[0].min() < 0 or checked[0].max() > 1:
        raise NpsqueezeError(f"attention_mask values must be 0 or 1, got {checked[0].min()}..{checked[0].max()}")
    return ids, *checked


def check_ids(cfg: Config, input_ids, token_type_ids, lengths) -> None:
    """Token ids, token types and sequence lengths within what the model has embeddings for."""
    if lengths.max() > cfg.max_position_embeddings:
        raise NpsqueezeError(f"sequence length {lengths.max()} exceeds max_position_embeddings "
                             f"{cfg.max_position_embeddings}")
    if input_ids.min() < 0 or input_ids.max() >= cfg.vocab_size:
        bad = input_ids[(input_ids < 0) | (input_ids >= cfg.vocab_size)][0]
        raise NpsqueezeError(f"input_ids holds token id {bad}, outside the vocabulary [0, {cfg.vocab_size})")
    if token_type_ids.min() < 0 or token_type_ids.max() >= cfg.type_vocab_size:
        raise NpsqueezeError(f"token_type_ids values must lie in [0, {cfg.type_vocab_size}), got "
                             f"{token_type_ids.min()}..{token_type_ids.max()}")
