"""The model classes users call, with transformers' names: SqueezeBertModel, its task heads, and
BERT's, on one engine.

A class checks its inputs, lays a padded batch out as one row of positions, and runs the math of
model.py on it, the batch's sequences shared out among threads (parallel.share_out): the math
itself knows nothing of threads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import model
from .config import Config, NpsqueezeError, checkpoint_folder
from .parallel import share_out
from .weights import load_params, nest


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
    def from_pretrained(cls, path: str | Path) -> "SqueezeBertModel":
        """Load a checkpoint folder as this class (a head the checkpoint has and the class has not is
        left out, as in transformers)."""
        return from_pretrained(path, cls)

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
        check_ids(self.config, input_ids, token_type_ids, lengths)
        forward = functools.partial(model.forward, self.params, self.config, self.head,
                                    output_hidden_states=output_hidden_states)
        return ModelOutput(**share_out(forward, input_ids, token_type_ids, lengths, mask))

    def encoder(self, input_ids, token_type_ids, lengths, mask=None, output_hidden_states=False):
        """The embeddings and encoder alone (no pooler, no head) on a batch as one row of positions:
        (last hidden state [M, C], every layer's or None)."""
        check_ids(self.config, input_ids, token_type_ids, lengths)

        def encoder(input_ids, token_type_ids, lengths, mask):
            return model.encoder(self.params, self.config, input_ids, token_type_ids, model.sequence_starts(lengths),
                                 lengths, mask, output_hidden_states)
        return share_out(encoder, input_ids, token_type_ids, lengths, mask)


class SqueezeBertForMaskedLM(SqueezeBertModel):
    head, per_position = "mlm", ("logits",)


class SqueezeBertForSequenceClassification(SqueezeBertModel):
    head = "sequence"


class SqueezeBertForTokenClassification(SqueezeBertModel):
    head, per_position = "token", ("logits",)


class SqueezeBertForQuestionAnswering(SqueezeBertModel):
    head, per_position = "qa", ("start_logits", "end_logits")


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


def from_pretrained(path: str | Path, cls: type[SqueezeBertModel] | None = None) -> SqueezeBertModel:
    """Load a checkpoint folder (config.json + HF weights in either format, or sharded, or a folder
    `npsqueeze convert` wrote) as `cls`, by default the class its config.json names in "architectures"."""
    path = checkpoint_folder(path)
    cfg = Config.from_file(path)
    cls = cls or model_class(cfg, path)
    return cls(cfg, load_params(path, cfg, cls.head))


def model_class(cfg: Config, path: str | Path) -> type[SqueezeBertModel]:
    """The class the config of the checkpoint at `path` names in "architectures" (none: the base model)."""
    arch = cfg.architectures[0] if cfg.architectures else None
    if arch is None:
        return BertModel if cfg.model_type == "bert" else SqueezeBertModel
    if arch not in ARCHITECTURES:
        raise NpsqueezeError(f"unknown architecture {arch!r} in {path}/config.json; npsqueeze knows "
                             + ", ".join(ARCHITECTURES))
    return ARCHITECTURES[arch]


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
