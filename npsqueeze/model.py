"""SqueezeBERT (and BERT, its special case) from token ids to logits, in NumPy.

Bottom-up: embeddings, self-attention, the block, the encoder, the pooler, then the heads and the
classes users call. Params are nested dicts of arrays named as in HF's `SqueezeBertModel`
(see weights.py). Inside the encoder activations are channels-first, [N, C, W], as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import Config, NpsqueezeError, checkpoint_folder
from .ops import ACTIVATIONS, attention, conv1x1, layer_norm, linear
from .weights import load_params, nest


def embeddings(input_ids, token_type_ids, p, cfg: Config) -> np.ndarray:
    """Word + position + token-type embeddings, then LayerNorm: [N, W] ids -> [N, C, W]."""
    W = input_ids.shape[1]
    x = p["word_embeddings"]["weight"][input_ids]  # [N, W] -> [N, W, C]
    x += p["position_embeddings"]["weight"][:W]  # [W, C] broadcast over the batch
    x += p["token_type_embeddings"]["weight"][token_type_ids]  # [N, W] -> [N, W, C]
    x = layer_norm(x, **p["LayerNorm"], eps=cfg.layer_norm_eps, axis=-1, out=x)
    return np.ascontiguousarray(x.transpose(0, 2, 1))  # [N, W, C] -> [N, C, W]: copied once, read by Q, K, V


def self_attention(x, mask, p, cfg: Config) -> np.ndarray:
    """Q, K, V as grouped 1x1 convolutions (q_groups, k_groups, v_groups), then attention: [N, C, W]."""
    q = conv1x1(x, **p["query"], tag="query")
    k = conv1x1(x, **p["key"], tag="key")
    v = conv1x1(x, **p["value"], tag="value")
    return attention(q, k, v, mask, cfg.num_attention_heads)


def block(x, mask, p, cfg: Config) -> np.ndarray:
    """One SqueezeBERT module (the paper's Figure 1 block): [N, C, W] -> [N, C, W].

    attention -> post-attention conv + residual + LayerNorm -> intermediate conv + GELU
    -> output conv + residual + LayerNorm. Each conv has its own group count from the config.
    GELU and the LayerNorms overwrite the arrays they read: on Linux every fresh array of more than
    128 KB may come as new pages from the OS, and in place a forward pass took 2,000-3,000 page
    faults instead of 10,000-13,000 and ran ~20% faster (batch 1, sequence 128).
    """
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    context = self_attention(x, mask, p["attention"], cfg)
    h = conv1x1(context, **p["post_attention"]["conv1d"], tag="post_attention")
    h += x
    h = layer_norm(h, **p["post_attention"]["layernorm"], eps=eps, axis=1, out=h)
    f = conv1x1(h, **p["intermediate"]["conv1d"], tag="intermediate")  # [N, C, W] -> [N, I, W]
    f = act(f, out=f)
    y = conv1x1(f, **p["output"]["conv1d"], tag="output")  # [N, I, W] -> [N, C, W]
    y += h
    return layer_norm(y, **p["output"]["layernorm"], eps=eps, axis=1, out=y)


def transformer(p, cfg: Config, input_ids, attention_mask, token_type_ids, output_hidden_states=False):
    """The base model: ids [N, W] -> last hidden state [N, W, C] (+ pooled [N, C], + every layer's).

    Each block runs on one sequence at a time. Its matrix products are per sequence anyway, and one
    sequence's activations (a few MB) stay in cache and in memory malloc recycles, where a batch's
    came fresh from the OS on every call: at batch 8 that was 48,000 page faults and 13% more time.
    """
    mask = (1.0 - attention_mask.astype(np.float32)) * np.finfo(np.float32).min  # [N, W], additive
    x = embeddings(input_ids, token_type_ids, p["embeddings"], cfg)
    hidden_states = [x]
    for layer in p["encoder"]["layers"]:
        x = np.concatenate([block(x[n:n + 1], mask[n:n + 1], layer, cfg)  # N x [1, C, W] -> [N, C, W]
                            for n in range(len(x))])
        hidden_states.append(x)
    h = np.ascontiguousarray(x.transpose(0, 2, 1))  # [N, C, W] -> [N, W, C], as transformers returns it
    pooled = pooler(h, p["pooler"]) if "pooler" in p else None
    if output_hidden_states:
        return h, pooled, tuple(s.transpose(0, 2, 1) for s in hidden_states)  # each [N, W, C]
    return h, pooled, None


def pooler(h, p) -> np.ndarray:
    """The first token's ([CLS]) final state through a dense layer and tanh: [N, W, C] -> [N, C]."""
    return np.tanh(linear(h[:, 0], **p["dense"], tag="pooler"))


def mlm_head(h, p, cfg: Config) -> np.ndarray:
    """Masked-LM head: dense + activation + LayerNorm, then the (tied) decoder: [N, W, C] -> [N, W, V]."""
    t = p["predictions"]["transform"]
    x = linear(h, **t["dense"], tag="head")
    x = ACTIVATIONS[cfg.hidden_act](x, out=x)
    x = layer_norm(x, **t["LayerNorm"], eps=cfg.layer_norm_eps, axis=-1, out=x)
    return linear(x, p["predictions"]["decoder"]["weight"], p["predictions"]["bias"], tag="head")  # [N, W, C] -> [N, W, V]


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
        input_ids, attention_mask, token_type_ids = check_inputs(
            self.config, input_ids, attention_mask, token_type_ids)
        h, pooled, states = transformer(self.params, self.config, input_ids, attention_mask,
                                        token_type_ids, output_hidden_states)
        out = ModelOutput(last_hidden_state=h, pooler_output=pooled, hidden_states=states)
        self.head_forward(out)
        if self.head is not None:  # as in transformers, a head model returns its head's outputs (+ hidden_states)
            out.last_hidden_state = out.pooler_output = None
        return out

    def head_forward(self, out: ModelOutput) -> None:
        """Fill in the head's outputs (the base model has none)."""


class SqueezeBertForMaskedLM(SqueezeBertModel):
    head = "mlm"

    def head_forward(self, out):
        out.logits = mlm_head(out.last_hidden_state, self.params["cls"], self.config)  # [N, W, V]


class SqueezeBertForSequenceClassification(SqueezeBertModel):
    head = "sequence"

    def head_forward(self, out):
        out.logits = linear(out.pooler_output, **self.params["classifier"], tag="head")  # [N, labels]


class SqueezeBertForTokenClassification(SqueezeBertModel):
    head = "token"

    def head_forward(self, out):
        out.logits = linear(out.last_hidden_state, **self.params["classifier"], tag="head")  # [N, W, labels]


class SqueezeBertForQuestionAnswering(SqueezeBertModel):
    head = "qa"

    def head_forward(self, out):
        logits = linear(out.last_hidden_state, **self.params["qa_outputs"], tag="head")  # [N, W, 2]
        out.start_logits = np.ascontiguousarray(logits[..., 0])  # [N, W]
        out.end_logits = np.ascontiguousarray(logits[..., 1])


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


def check_inputs(cfg: Config, input_ids, attention_mask, token_type_ids):
    """Validate the model's inputs [N, W] and fill in defaults (attend everywhere, token type 0)."""
    ids = as_ids(input_ids, "input_ids", ndim=2)
    if ids.shape[-1] > cfg.max_position_embeddings:
        raise NpsqueezeError(f"sequence length {ids.shape[-1]} exceeds max_position_embeddings "
                             f"{cfg.max_position_embeddings}")
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
        bad = ids[(ids < 0) | (ids >= cfg.vocab_size)].flat[0]
        raise NpsqueezeError(f"input_ids holds token id {bad}, outside the vocabulary [0, {cfg.vocab_size})")
    checked = []
    for a, name, limit in ((attention_mask, "attention_mask", 2), (token_type_ids, "token_type_ids",
                                                                    cfg.type_vocab_size)):
        if a is None:
            a = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
        a = as_ids(a, name, ndim=2)
        if a.shape != ids.shape:
            raise NpsqueezeError(f"{name} has shape {a.shape}, input_ids has {ids.shape}")
        if a.min() < 0 or a.max() >= limit:
            raise NpsqueezeError(f"{name} values must lie in [0, {limit}), got {a.min()}..{a.max()}")
        checked.append(a)
    return ids, *checked
