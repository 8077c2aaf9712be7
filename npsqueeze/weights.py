"""From an HF checkpoint folder to the engine's dict of NumPy arrays.

The engine names every tensor as SqueezeBERT's `SqueezeBertModel` does (no `transformer.` prefix),
and keeps each 1x1 convolution's weight per group, [G, K/G, C/G], so that `ops.conv1x1` is one einsum.
`WEIGHT_MAP` below is the only place that knows how HF's names and layouts map onto the engine's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .config import Config, NpsqueezeError

# HF prefixes of the base model inside head models: SqueezeBERT's `transformer.`, BERT's `bert.`.
PREFIXES = ("transformer.", "bert.")

# --- the weight map ---------------------------------------------------------------------------

def conv_weight(w: np.ndarray, G: int) -> np.ndarray:
    """HF `Conv1d` weight [K, C/G, 1] -> the engine's [G, K/G, C/G]: group g's rows are g*K/G...(g+1)*K/G."""
    K, Cg, _ = w.shape
    return w.reshape(G, K // G, Cg)  # [K, C/G, 1] -> [G, K/G, C/G]


def linear_weight(w: np.ndarray, G: int) -> np.ndarray:
    """HF `Linear` weight [K, C] (BERT) -> [1, K, C]: a 1x1 convolution with a single group."""
    return w[None]  # [K, C] -> [1, K, C]


def keep(w: np.ndarray, G: int) -> np.ndarray:
    return w


# One row per tensor of a block: (engine name, SqueezeBERT name, BERT name, group role, kind), where
# kind is "conv" (weight [K, C/G, 1] in SqueezeBERT, [K, C] in BERT), "bias" or "norm".
BLOCK_MAP = [
    ("attention.query", "attention.query", "attention.self.query", "q_groups", "conv"),
    ("attention.key", "attention.key", "attention.self.key", "k_groups", "conv"),
    ("attention.value", "attention.value", "attention.self.value", "v_groups", "conv"),
    ("post_attention.conv1d", "post_attention.conv1d", "attention.output.dense", "post_attention_groups", "conv"),
    ("post_attention.layernorm", "post_attention.layernorm", "attention.output.LayerNorm", None, "norm"),
    ("intermediate.conv1d", "intermediate.conv1d", "intermediate.dense", "intermediate_groups", "conv"),
    ("output.conv1d", "output.conv1d", "output.dense", "output_groups", "conv"),
    ("output.layernorm", "output.layernorm", "output.LayerNorm", None, "norm"),
]
LAYER_PREFIX = {"squeezebert": "encoder.layers.{i}.", "bert": "encoder.layer.{i}."}

HEADS_ON_POOLER = ("sequence", "choice")  # heads that classify the pooled [CLS] vector


class Entry:
    """One engine tensor: where it comes from in an HF checkpoint and the shape it must have."""

    def __init__(self, name: str, source: str, hf_shape: tuple, shape: tuple,
                 to_engine: Callable = keep, groups: int = 1):
        self.name, self.source, self.hf_shape, self.shape = name, source, hf_shape, shape
        self.to_engine, self.groups = to_engine, groups


def weight_map(cfg: Config, head: str | None) -> list[Entry]:
    """Every tensor the engine needs for `cfg` with `head`, with its HF name and both shapes."""
    C, V, I = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    entries = [
        Entry("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", (V, C), (V, C)),
        Entry("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight",
              (cfg.max_position_embeddings, C), (cfg.max_position_embeddings, C)),
        Entry("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight",
              (cfg.type_vocab_size, C), (cfg.type_vocab_size, C)),
        *norm_entries("embeddings.LayerNorm", "embeddings.LayerNorm", C),
    ]
    channels = {role: (cin, cout) for role, cin, cout in cfg.conv_shapes()}
    bert = cfg.model_type == "bert"
    for i in range(cfg.num_hidden_layers):
        for name, sq_name, bert_name, role, kind in BLOCK_MAP:
            engine = f"encoder.layers.{i}.{name}"
            source = LAYER_PREFIX[cfg.model_type].format(i=i) + (bert_name if bert else sq_name)
            if kind == "norm":
                entries += norm_entries(engine, source, C)
                continue
            G = getattr(cfg, role)
            cin, cout = channels[role]
            hf_shape = (cout, cin) if bert else (cout, cin // G, 1)
            entries.append(Entry(engine + ".weight", source + ".weight", hf_shape, (G, cout // G, cin // G),
                                 linear_weight if bert else conv_weight, G))
            entries.append(Entry(engine + ".bias", source + ".bias", (cout,), (cout,)))
    if head is None or head in HEADS_ON_POOLER:
        entries += linear_entries("pooler.dense", C, C)
    if head == "mlm":
        entries += linear_entries("cls.predictions.transform.dense", C, C)
        entries += norm_entries("cls.predictions.transform.LayerNorm", "cls.predictions.transform.LayerNorm", C)
        entries.append(Entry("cls.predictions.bias", "cls.predictions.bias", (V,), (V,)))
        if not cfg.tie_word_embeddings:
            entries.append(Entry("cls.predictions.decoder.weight", "cls.predictions.decoder.weight", (V, C), (V, C)))
    elif head == "qa":
        entries += linear_entries("qa_outputs", 2, C)
    elif head == "choice":
        entries += linear_entries("classifier", 1, C)
    elif head in ("sequence", "token"):
        entries += linear_entries("classifier", cfg.num_labels, C)
    return entries


def norm_entries(name: str, source: str, C: int) -> list[Entry]:
    return [Entry(f"{name}.{p}", f"{source}.{p}", (C,), (C,)) for p in ("weight", "bias")]


def linear_entries(name: str, K: int, C: int) -> list[Entry]:
    """A Linear layer outside the encoder (pooler, heads): kept in torch's [K, C] layout."""
    return [Entry(name + ".weight", name + ".weight", (K, C), (K, C)),
            Entry(name + ".bias", name + ".bias", (K,), (K,))]


# --- reading checkpoint files -------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise NpsqueezeError(f"{path}: not a readable safetensors file ({e})") from None


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    raise NpsqueezeError(f"{path}: reading pytorch_model.bin is not supported yet; convert it to "
                         "model.safetensors with transformers' save_pretrained")


READERS = {".safetensors": read_safetensors, ".bin": read_torch_bin}


def read_weight_file(path: Path) -> dict[str, np.ndarray]:
    reader = READERS.get(path.suffix)
    if reader is None:
        raise NpsqueezeError(f"{path}: unknown weight file type {path.suffix!r}")
    return reader(path)


def read_checkpoint(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of an HF checkpoint folder (single file or sharded with an `*.index.json`)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return read_weight_file(path)
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise NpsqueezeError(f"{path}: not a valid shard index ({e})") from None
        tensors = {}
        for shard in shards:
            shard_path = folder / shard
            if Path(shard).name != shard or not shard_path.is_file():
                raise NpsqueezeError(f"{path}: shard {shard!r} is missing")
            tensors.update(read_weight_file(shard_path))
        return tensors
    raise NpsqueezeError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


# --- HF tensors -> engine params ---------------------------------------------------------------

def strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, t in tensors.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = t
    return out


def to_engine(tensors: dict[str, np.ndarray], cfg: Config, head: str | None, where: str = "checkpoint"
              ) -> dict[str, np.ndarray]:
    """Rename, reshape and check HF tensors: returns the engine's flat {name: float32 array}.

    Raises NpsqueezeError naming every missing tensor, or the first one of the wrong shape or dtype.
    Tensors the model does not need (other heads, buffers) are ignored, as transformers does.
    """
    tensors = strip_prefix(tensors)
    entries = weight_map(cfg, head)
    missing = [e.source for e in entries if e.source not in tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NpsqueezeError(f"{where}: missing {len(missing)} tensor(s) for {cfg.model_type} "
                             f"{head or 'base'} model: {shown}")
    params = {}
    for e in entries:
        t = tensors[e.source]
        if not isinstance(t, np.ndarray) or t.dtype.kind != "f":
            raise NpsqueezeError(f"{where}: tensor {e.source} has dtype {getattr(t, 'dtype', type(t))}, "
                                 "expected floating point")
        if tuple(t.shape) != e.hf_shape:
            raise NpsqueezeError(f"{where}: tensor {e.source} has shape {tuple(t.shape)}, the config "
                                 f"says {e.hf_shape}")
        params[e.name] = np.ascontiguousarray(e.to_engine(t.astype(np.float32, copy=False), e.groups))
    if head == "mlm" and cfg.tie_word_embeddings:  # the decoder shares the input embedding matrix
        params["cls.predictions.decoder.weight"] = params["embeddings.word_embeddings.weight"]
    return params


def nest(flat: dict[str, np.ndarray]) -> dict:
    """{"a.b.0.c": x} -> {"a": {"b": [{"c": x}]}}: the engine's params as nested dicts and lists."""
    root: dict = {}
    for key, value in flat.items():
        node = root
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):  # numbered children: layers 0..L-1
        return [_lists(node[str(i)]) for i in range(len(node))]
    return {k: _lists(v) for k, v in node.items()}
