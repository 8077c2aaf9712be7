"""The model's hyper-parameters, read from an HF `config.json`.

SqueezeBERT and BERT share every field but the group counts: BERT is the case where every group
count is 1 (its position-wise Linear layers are 1x1 convolutions with one group).
"""

from __future__ import annotations

import json
import os
import reprlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path


class NpsqueezeError(ValueError):
    """Bad input to npsqueeze: a missing or broken checkpoint, ids out of range, wrong shapes, ..."""


# The repo's weights/ folder (configs of the published models, the vocabulary): shipped inside the
# wheel as npsqueeze/weights_data, read in place from a source checkout or an editable install.
WEIGHTS_DIR = next(p for p in (Path(__file__).parent / "weights_data", Path(__file__).parent.parent / "weights")
                   if p.is_dir())
BUNDLED = ("squeezebert-uncased", "squeezebert-mnli", "bert-base-uncased")  # folders in WEIGHTS_DIR

GROUP_ROLES = ("q_groups", "k_groups", "v_groups", "post_attention_groups", "intermediate_groups",
               "output_groups")
COUNTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "max_position_embeddings", "type_vocab_size", *GROUP_ROLES)
MODEL_TYPES = ("squeezebert", "bert")
ACTIVATIONS = ("gelu", "relu")
# Upper bounds on a config's counts: far above any BERT-family model (BERT-large has 24 layers; the
# largest vocabularies hold 250,000 tokens), and low enough that what is built from a config before
# any weight is read (the weight map: 16 entries a layer; the label names) stays small.
MAX_COUNT = 2**31 - 1
MAX_LAYERS = 1024
MAX_LABELS = 100_000
FLOAT32_MAX = 3.4028234663852886e38
# The size bound of every JSON file npsqueeze reads (config, tokenizer and sentence-transformers
# settings, shard indexes, safetensors headers), checked before reading: such files are a few KB (the
# largest tokenizer_config.json ~1 MB), and parsing hostile JSON takes up to 20 times its size in memory.
MAX_JSON_BYTES = 8 << 20


@dataclass(frozen=True)
class Config:
    model_type: str = "squeezebert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # SqueezeBERT's groups, one count per role (paper, section 4.1); BERT has 1 everywhere.
    q_groups: int = 4
    k_groups: int = 4
    v_groups: int = 4
    post_attention_groups: int = 1
    intermediate_groups: int = 4
    output_groups: int = 4
    tie_word_embeddings: bool = True
    architectures: tuple[str, ...] = ()
    id2label: dict[int, str] = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False, compare=False)  # config.json as read

    @property
    def num_labels(self) -> int:
        return len(self.id2label) or 2

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise NpsqueezeError(f"unsupported model_type {shown(model_type)} in config (npsqueeze runs "
                                 f"{' and '.join(MODEL_TYPES)})")
        kw = {f: d[f] for f in cls.__dataclass_fields__ if f in d and f not in ("raw", "id2label", "architectures")}
        if model_type == "bert":
            kw.update({role: 1 for role in GROUP_ROLES})  # a BERT config has no groups: all dense
        architectures = d.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            raise NpsqueezeError(f"config: architectures must be a list of class names, got {shown(architectures)}")
        kw["architectures"] = tuple(architectures)
        kw["id2label"] = labels(d)
        if kw.get("pad_token_id") is None:
            kw.pop("pad_token_id", None)
        cfg = cls(**kw, raw=dict(d))
        cfg.validate()
        if model_type == "squeezebert" and d.get("embedding_size", cfg.hidden_size) != cfg.hidden_size:
            raise NpsqueezeError("embedding_size != hidden_size is not supported (nor by transformers)")
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        d = read_json(path, dict)
        if d is None:
            raise NpsqueezeError(f"no config.json at {path}")
        return cls.from_dict(d)

    def validate(self) -> None:
        """Raise NpsqueezeError naming the first field of the wrong type or out of range."""
        for f in COUNTS:
            check_count(f"config: {f}", getattr(self, f), most=MAX_LAYERS if f == "num_hidden_layers" else MAX_COUNT)
        eps = self.layer_norm_eps
        if type(eps) not in (int, float) or not 0 < eps <= FLOAT32_MAX:  # NaN fails too
            raise NpsqueezeError(f"config: layer_norm_eps must be a positive number, got {shown(eps)}")
        if self.pad_token_id is not None:
            check_count("config: pad_token_id", self.pad_token_id, least=0, most=MAX_COUNT)
        if not isinstance(self.tie_word_embeddings, bool):
            raise NpsqueezeError(f"config: tie_word_embeddings must be true or false, got {shown(self.tie_word_embeddings)}")
        if self.hidden_size % self.num_attention_heads:
            raise NpsqueezeError(f"config: hidden_size {self.hidden_size} is not a multiple of "
                                 f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise NpsqueezeError(f"config: hidden_act {shown(self.hidden_act)} is not supported ({', '.join(ACTIVATIONS)})")
        for role, cin, cout in self.conv_shapes():
            g = getattr(self, role)
            if cin % g or cout % g:
                raise NpsqueezeError(f"config: {role}={g} does not divide the {cin} input and {cout} "
                                     "output channels")

    def conv_shapes(self) -> list[tuple[str, int, int]]:
        """(group role, input channels, output channels) of each 1x1 convolution in a block."""
        C, I = self.hidden_size, self.intermediate_size
        return [("q_groups", C, C), ("k_groups", C, C), ("v_groups", C, C),
                ("post_attention_groups", C, C), ("intermediate_groups", C, I), ("output_groups", I, C)]


def labels(d: dict) -> dict[int, str]:
    """A config's id2label, read as transformers reads it: a `num_labels` without an id2label of that
    length (hand-written configs have it) names the labels LABEL_0, LABEL_1, ..."""
    id2label = d.get("id2label") or {}
    try:
        id2label = {int(k): v for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError):
        raise NpsqueezeError("config: id2label must map label ids (integers) to names") from None
    if not all(isinstance(v, str) for v in id2label.values()) or len(id2label) > MAX_LABELS:
        raise NpsqueezeError(f"config: id2label must map label ids to names (strings), at most {MAX_LABELS:,}")
    n = d.get("num_labels")
    if n is not None:
        check_count("config: num_labels", n, most=MAX_LABELS)
        if len(id2label) != n:
            id2label = {i: f"LABEL_{i}" for i in range(n)}
    return id2label


def check_count(name: str, v, least: int = 1, most: int | None = None) -> None:
    """Raise NpsqueezeError unless `v` is an int from `least` (1 or 0) to `most` (a bool is not a count)."""
    if not isinstance(v, int) or isinstance(v, bool) or v < least:
        kind = "positive" if least == 1 else "non-negative"
        raise NpsqueezeError(f"{name} must be a {kind} integer, got {shown(v)}")
    if most is not None and v > most:
        raise NpsqueezeError(f"{name} is {v:,}: more than the {most:,} npsqueeze accepts")


SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = 100


def shown(value) -> str:
    """`value` for an error message: its repr cut short, however long or deeply nested it is."""
    return SHORT.repr(value)


def named(name) -> str:
    """A name read from a file (a tensor's, a storage's) for an error message: itself if it is a short
    printable string, else `shown(name)`, so that the message stays one short line."""
    return name if isinstance(name, str) and name.isprintable() and len(name) <= 200 else shown(name)


def load_config(spec: str) -> tuple[str, Config]:
    """A bundled model's name, or a path to a config.json (or its folder) -> (name, config)."""
    if spec in BUNDLED:
        return spec, Config.from_file(WEIGHTS_DIR / spec)
    path = Path(spec)
    if not path.exists():
        raise NpsqueezeError(f"{spec}: no such config file, nor a bundled model ({', '.join(BUNDLED)})")
    resolved = path.resolve()
    name = resolved.name if path.is_dir() else resolved.parent.name if path.name == "config.json" else path.stem
    return name, Config.from_file(path)


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """`path` as a Path, if it is a folder; else a one-line error."""
    if not isinstance(path, (str, os.PathLike)):
        raise NpsqueezeError(f"a checkpoint folder is a path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir() and str(path) in BUNDLED:
        raise NpsqueezeError(f"{path} is a bundled config without weights: running it needs the checkpoint, "
                             f"see {WEIGHTS_DIR / 'README.md'} for how to get it")
    if not path.is_dir():
        raise NpsqueezeError(f"no checkpoint folder at {path}")
    return path


def read_json(path: Path, kind: type = dict):
    """A JSON file holding a `kind` (list or dict), or None when the file does not exist.

    Every JSON file npsqueeze reads comes through here or `parse_json`: a size bound, and deep
    nesting (which makes Python's parser recurse) reported as one line."""
    if not path.is_file():
        return None
    too_large = NpsqueezeError(f"{path}: over {MAX_JSON_BYTES >> 20} MB, too large for a settings file")
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:
                raise too_large
            data = f.read(MAX_JSON_BYTES + 1)  # the file may have grown since
    except OSError as e:
        raise NpsqueezeError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_JSON_BYTES:
        raise too_large
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NpsqueezeError(f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    d = parse_json(text, str(path))
    if not isinstance(d, kind):
        raise NpsqueezeError(f"{path} does not hold a JSON {'array' if kind is list else 'object'}")
    return d


def parse_json(text: str | bytes, where: str):
    """json.loads, with every failure (bad syntax, nesting too deep, a number too long) as one line."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise NpsqueezeError(f"{where}: not valid JSON ({e})") from None


PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # npsqueeze/, for `warn`


def warn(message: str) -> None:
    """`warnings.warn(message)`, attributed to the first caller outside npsqueeze (the user's own
    line, as transformers' warnings are), however deep in the package it is raised."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: warn's caller
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)
