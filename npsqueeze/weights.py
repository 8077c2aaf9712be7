"""From an HF checkpoint folder to the engine's dict of NumPy arrays.

The engine names every tensor as SqueezeBERT's `SqueezeBertModel` does (no `transformer.` prefix),
and keeps each 1x1 convolution's weight per group, [G, K/G, C/G], so that `ops.conv1x1` is one batched matrix product over the groups.
`weight_map` below is the only place that knows how HF's names and layouts map onto the engine's.
safetensors files are memory-mapped (nothing is copied), pytorch_model.bin is read by torchbin.py
with no torch, and a folder `npsqueeze convert` wrote (`CONVERTED`) is already in the engine's layout.
"""

from __future__ import annotations

import math
import mmap
import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .config import MAX_JSON_BYTES, Config, NpsqueezeError, named, parse_json, read_json, shown, warn
from .torchbin import check_shape, read_torch_bin

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
LAYER = re.compile(r"encoder\.layers?\.([0-9]{1,9})\.")  # a tensor of layer i, in either family or the engine

class Entry:
    """One engine tensor: where it comes from in an HF checkpoint and the shape it must have."""

    def __init__(self, name: str, source: str, hf_shape: tuple, shape: tuple,
                 to_engine: Callable = keep, groups: int = 1):
        self.name, self.source, self.hf_shape, self.shape = name, source, hf_shape, shape
        self.to_engine, self.groups = to_engine, groups


def weight_map(cfg: Config, head: str | None) -> list[Entry]:
    """Every tensor the engine needs for `cfg` with `head`, with its HF name and both shapes."""
    C, V = cfg.hidden_size, cfg.vocab_size
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
    return entries + head_entries(cfg, HEADS[head])


# --- the heads: what sits on the encoder ----------------------------------------------------------

class Head(NamedTuple):
    tag: str | None  # the engine's name for it; None: the base model
    suffix: str  # transformers' classes: SqueezeBert<suffix>, Bert<suffix>
    task: str
    pooler: bool  # the model keeps the pooler: the head classifies the pooled [CLS] vector (else each position)
    layer: str | None  # the head's weights: "cls" is the masked-LM head, else one Linear layer of this name
    width: Callable[[Config], int]  # output features of its last layer


HEADS = {h.tag: h for h in (  # the one table of heads: weights, flops, pipelines and the tests read it
    Head(None, "Model", "base model", True, None, lambda cfg: cfg.hidden_size),
    Head("mlm", "ForMaskedLM", "masked-LM", False, "cls", lambda cfg: cfg.vocab_size),
    Head("sequence", "ForSequenceClassification", "sequence-classification", True, "classifier", lambda cfg: cfg.num_labels),
    Head("token", "ForTokenClassification", "token-classification", False, "classifier", lambda cfg: cfg.num_labels),
    Head("qa", "ForQuestionAnswering", "question-answering", False, "qa_outputs", lambda cfg: 2),
    Head("choice", "ForMultipleChoice", "multiple-choice", True, "classifier", lambda cfg: 1),
)}


def head_entries(cfg: Config, head: Head) -> list[Entry]:
    """The pooler if the model keeps it, then the head's own tensors."""
    C, V = cfg.hidden_size, cfg.vocab_size
    entries = linear_entries("pooler.dense", C, C) if head.pooler else []
    if head.layer == "cls":  # dense + LayerNorm, then the decoder to the vocabulary (tied: no tensor of its own)
        entries += linear_entries("cls.predictions.transform.dense", C, C)
        entries += norm_entries("cls.predictions.transform.LayerNorm", "cls.predictions.transform.LayerNorm", C)
        entries.append(Entry("cls.predictions.bias", "cls.predictions.bias", (V,), (V,)))
        if not cfg.tie_word_embeddings:
            entries.append(Entry("cls.predictions.decoder.weight", "cls.predictions.decoder.weight", (V, C), (V, C)))
    elif head.layer:
        entries += linear_entries(head.layer, head.width(cfg), C)
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
CONVERTED = "npsqueeze.safetensors"  # what `npsqueeze convert` writes: engine names and layout
FORMAT = "npsqueeze"  # the "format" metadata of a converted file's header

SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def safetensors_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Memory-map a safetensors file: ({name: read-only array viewing the file}, header metadata).

    The layout: an 8-byte little-endian header length N, N bytes of JSON -- {name: {"dtype", "shape",
    "data_offsets": [begin, end]}, "__metadata__": {str: str}} -- then the tensors' bytes back to
    back, offsets counted from the end of the header. Every field is checked before a byte is viewed:
    a broken or hostile file raises NpsqueezeError and nothing else. Nothing is copied.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise NpsqueezeError(f"{path}: cannot read ({e.strerror or e})") from None

    def bad(why: str) -> NpsqueezeError:
        return NpsqueezeError(f"{path}: not a valid safetensors file: {why}")

    n = int.from_bytes(buf[:8], "little")
    if size < 8 or n > size - 8:
        raise bad(f"truncated ({size} bytes, header says {n} + 8)")
    if n > MAX_JSON_BYTES:  # a header of 80,000 tensors; hostile JSON takes 20 times its size in memory
        raise bad(f"a header of {n:,} bytes")
    header = parse_json(bytes(buf[8:8 + n]), f"{path}: not a valid safetensors file: header")
    metadata = header.pop("__metadata__", {}) if isinstance(header, dict) else None
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise bad("header is not a JSON object with string __metadata__")
    start, data_len = 8 + n, size - 8 - n
    spans = []  # (begin, end, name), to check that the tensors tile the data exactly
    tensors = {}
    for name, info in header.items():
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}
                and is_sizes(info["shape"]) and is_sizes(info["data_offsets"]) and len(info["data_offsets"]) == 2):
            raise bad(f"tensor {named(name)}: entry is not {{dtype, shape, data_offsets: [begin, end]}}")
        dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise NpsqueezeError(f"{path}: tensor {named(name)} has dtype {named(info['dtype'])}, which npsqueeze "
                                 f"does not read ({', '.join(SAFETENSORS_DTYPES)})")
        (begin, end), shape = info["data_offsets"], info["shape"]
        check_shape(shape, dtype.itemsize, f"{path}: tensor {named(name)}")
        if not begin <= end <= data_len or end - begin != math.prod(shape) * dtype.itemsize:
            raise bad(f"tensor {named(name)}: bytes {begin}..{end} of {data_len} cannot hold {dtype} {shape}")
        spans.append((begin, end, name))
        tensors[name] = np.frombuffer(buf, dtype, math.prod(shape), start + begin).reshape(shape)
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise bad(f"tensor {named(name)}: data overlaps another tensor or leaves a gap")
        pos = end
    if pos != data_len:
        raise bad(f"{data_len - pos} bytes after the last tensor")
    return tensors, metadata


def is_sizes(x) -> bool:
    """A JSON list of non-negative int64 integers (a shape, or offsets)."""
    return isinstance(x, list) and all(type(i) is int and 0 <= i < 2**63 for i in x)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    return safetensors_file(path)[0]


READERS = {".safetensors": read_safetensors, ".bin": read_torch_bin}


def read_weight_file(path: Path) -> dict[str, np.ndarray]:
    reader = READERS.get(path.suffix)
    if reader is None:
        raise NpsqueezeError(f"{path}: unknown weight file type {path.suffix!r}")
    return reader(path)


def weight_files(folder: str | Path) -> list[Path]:
    """An HF checkpoint folder's weights: [one file], or [the shard index, then each shard]."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        index = read_json(path).get("weight_map")  # tensor name -> shard file
        if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
            raise NpsqueezeError(f"{path}: not a valid shard index (no weight_map of file names)")
        shards = sorted(set(index.values()))
        for shard in shards:
            if Path(shard).name != shard or not (folder / shard).is_file():
                raise NpsqueezeError(f"{path}: shard {shown(shard)} is missing")
        return [path, *(folder / shard for shard in shards)]
    raise NpsqueezeError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


def read_checkpoint(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of an HF checkpoint folder (single file or sharded with an `*.index.json`)."""
    tensors = {}
    for path in weight_files(folder):
        if not path.name.endswith(".index.json"):
            tensors.update(read_weight_file(path))
    return tensors


def load_params(folder: str | Path, cfg: Config, head: str | None) -> dict[str, np.ndarray]:
    """The engine's params for `cfg` with `head`, from an HF checkpoint folder or a converted one.

    A folder `npsqueeze convert` wrote is memory-mapped and only checked (float16 storage is upcast);
    an HF folder goes through `to_engine`.
    """
    path = Path(folder) / CONVERTED
    if path.is_file():
        tensors, metadata = safetensors_file(path)
        if metadata.get("format") != FORMAT:
            raise NpsqueezeError(f"{path}: no format={FORMAT} metadata: not written by npsqueeze convert")
        return to_engine(tensors, cfg, head, where=str(path), converted=True)
    return to_engine(read_checkpoint(folder), cfg, head, where=str(weight_files(folder)[0]))


# --- HF tensors -> engine params ---------------------------------------------------------------

# TF-era uploads (bert-base-uncased's pytorch_model.bin) call LayerNorm's gain and bias gamma and beta.
LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF names as the weight map knows them: no `transformer.`/`bert.` prefix, no gamma/beta."""
    out = {}
    for key, t in tensors.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        for old, new in LEGACY_NAMES.items():
            if key.endswith(old):
                key = key[:-len(old)] + new
        out[key] = t
    return out


def to_engine(tensors: dict[str, np.ndarray], cfg: Config, head: str | None, where: str = "checkpoint",
              converted: bool = False) -> dict[str, np.ndarray]:
    """Rename, reshape and check HF tensors: returns the engine's flat {name: float32 array}.

    `converted`: the tensors already have the engine's names and layout (a `CONVERTED` file), and
    are only checked. Tensors the model does not need (other heads, buffers) are ignored, as
    transformers does.
    """
    tensors = tensors if converted else strip_prefix(tensors)
    check_layers(tensors, cfg, where)
    params = engine_tensors(tensors, weight_map(cfg, head), f"{where}: {cfg.model_type} {head or 'base'} model",
                            converted)
    if head == "mlm" and cfg.tie_word_embeddings:  # the decoder shares the input embedding matrix
        params["cls.predictions.decoder.weight"] = params["embeddings.word_embeddings.weight"]
    return params


def check_layers(tensors: dict[str, np.ndarray], cfg: Config, where: str) -> None:
    """The config's layer count against the layers the checkpoint holds, before a weight map of that many.

    A layer the config needs and the checkpoint lacks is an error (transformers would fill it with
    random weights); layers past num_hidden_layers are left out with a warning, as transformers does.
    """
    held = {int(m.group(1)) for m in map(LAYER.match, tensors) if m}
    n = cfg.num_hidden_layers
    missing = sorted(set(range(n)) - held)
    if missing:
        raise NpsqueezeError(f"{where}: config.json says num_hidden_layers={n}, but the checkpoint holds "
                             f"{len(held)} layer(s): {spans(missing)} missing")
    unused = sorted(i for i in held if i >= n)
    if unused:
        warn(f"{where}: the checkpoint's {spans(unused)} left out: config.json says num_hidden_layers={n}")


def spans(layers: list[int]) -> str:
    """Sorted layer indices for a message: [1] -> "layer 1", [2, 3, 4, 7] -> "layers 2-4, 7"."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:10]) + (", ..." if len(runs) > 10 else "")
    return f"layer{'s' * (len(layers) > 1)} {text}"


def all_finite(t: np.ndarray) -> bool:
    """No NaN nor +-Inf in `t`: its sum in float64 (which no float32 or float16 values overflow) is
    finite exactly then, and takes one pass with no temporary array the size of `t`."""
    with np.errstate(invalid="ignore"):  # Inf - Inf: NaN, which is the answer
        return bool(np.isfinite(t.sum(dtype=np.float64)))


def check_finite(t: np.ndarray, what: str) -> None:
    """Refuse a tensor holding NaN or Inf (a training run that diverged, a corrupted file): every
    output of the model would be NaN. Transformers loads it silently."""
    if all_finite(t):
        return
    bad = ~np.isfinite(t)
    count, nan = int(bad.sum()), int(np.isnan(t).sum())
    kinds = " and ".join(k for k, c in (("NaN", nan), ("Inf", count - nan)) if c)
    first = tuple(int(i) for i in np.unravel_index(np.argmax(bad), t.shape))
    raise NpsqueezeError(f"{what} holds {kinds} ({count:,} of {t.size:,} values, the first at index {first}): "
                         "the checkpoint is broken")


def engine_tensors(tensors: dict[str, np.ndarray], entries: list[Entry], where: str,
                   converted: bool = False) -> dict[str, np.ndarray]:
    """`entries`' tensors, checked, as float32 in the engine's layout: {engine name: array}.

    `tensors` are named as in HF (prefix stripped), or as in the engine if `converted`. Raises
    NpsqueezeError naming every missing tensor, or the first one of the wrong shape or dtype, or
    holding NaN or Inf (float64 values past float32's range included). A converted folder's values
    are not read here: convert checked them as it wrote them, and reading them all would cost a
    memory-mapped load its few milliseconds.
    """
    rows = [(e, e.name, e.shape, keep) if converted else (e, e.source, e.hf_shape, e.to_engine) for e in entries]
    missing = [source for _, source, _, _ in rows if source not in tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NpsqueezeError(f"{where}: missing {len(missing)} tensor(s): {shown}")
    params = {}
    for e, source, shape, layout in rows:
        t = tensors[source]
        if not isinstance(t, np.ndarray) or t.dtype.kind != "f":
            raise NpsqueezeError(f"{where}: tensor {source} has dtype {getattr(t, 'dtype', type(t))}, "
                                 "expected floating point")
        if tuple(t.shape) != shape:
            raise NpsqueezeError(f"{where}: tensor {source} has shape {tuple(t.shape)}, the config "
                                 f"says {shape}")
        with np.errstate(over="ignore"):  # float64 past float32's range: reported as Inf below
            t = t.astype(np.float32, copy=False)
        if not converted:
            check_finite(t, f"{where}: tensor {source}")
        params[e.name] = np.ascontiguousarray(layout(t, e.groups))
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
