"""walkthrough/squeezebert.py, SqueezeBERT on one screen: what it promises (plain NumPy, at most 60
lines of code, shown whole in a chapter) and that it computes transformers' last hidden state: live
on random checkpoints (unusual group counts, random LayerNorm gains, padding, and BERT, whose group
counts are all 1), and against the golden outputs of the torch-free tier."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from checkpoints import TOL, build, inputs, minilm_path, reference

WALKTHROUGH = Path(__file__).parent.parent / "walkthrough"
LISTING = WALKTHROUGH / "squeezebert.py"
GOLDEN = Path(__file__).parent / "golden"


def listing():
    spec = importlib.util.spec_from_file_location("squeezebert_listing", LISTING)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_lines(source: str) -> list[str]:
    """The lines that are code: not blank, not a comment, not part of a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            docstrings.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return [line for number, line in enumerate(source.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#") and number not in docstrings]


def test_the_listing_is_one_screen_of_plain_numpy():
    source = LISTING.read_text()
    assert len(code_lines(source)) <= 60
    imported = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"math", "numpy"}
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(ast.parse(source)))
    code = "\n".join(code_lines(source))
    assert "einsum" in code and "matmul" not in code and "@" not in code  # the definition, not the engine's form


def test_a_chapter_shows_the_listing_whole():
    """The chapter's block is the file after its docstring, character for character: the two cannot drift."""
    source = LISTING.read_text()
    body = source[source.index("import math"):]
    assert any(f"```python\n{body}```" in chapter.read_text() for chapter in WALKTHROUGH.glob("[0-9][0-9]-*.md"))


def golden_case(family: str, class_name: str):
    with np.load(GOLDEN / f"{family}.npz", allow_pickle=False) as z:
        batch = [z[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
        return getattr(npsqueeze, class_name).from_pretrained(GOLDEN / family), batch, z["base.last_hidden_state"]


@pytest.mark.parametrize("family, class_name", [("squeezebert", "SqueezeBertModel"), ("bert", "BertModel")])
def test_listing_matches_transformers_golden_outputs(family, class_name):
    """Golden: transformers' outputs on a padded batch, group counts 2/3/1/2/4/3 (BERT: all 1), random gains."""
    model, (ids, mask, token_types), want = golden_case(family, class_name)
    assert mask.min() == 0 and token_types.max() == 1
    got = listing().forward(model.params, model.config, ids, mask, token_types)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_listing_gives_minilm_sentence_embeddings():
    """The real all-MiniLM-L6-v2 (a BERT): mean over the tokens of the listing's output, at unit length,
    is transformers' sentence embedding (golden, computed in float64 by make_golden.py)."""
    with np.load(GOLDEN / "minilm.npz", allow_pickle=False) as z:
        texts, want = str(z["texts"]).split("\n"), z["embeddings"]
    model = npsqueeze.from_pretrained(minilm_path())
    tokenizer = npsqueeze.Tokenizer.from_pretrained(minilm_path())
    batch = tokenizer(texts[:6], padding=True, return_tensors="np")  # short texts: within 256 tokens
    h = listing().forward(model.params, model.config, batch["input_ids"], batch["attention_mask"],
                          batch["token_type_ids"])  # [N, W, C]
    m = batch["attention_mask"][..., None]  # [N, W] -> [N, W, 1]
    mean = (h * m).sum(1) / m.sum(1)  # [N, W, C] -> [N, C]
    np.testing.assert_allclose(mean / np.linalg.norm(mean, axis=1, keepdims=True), want[:6], atol=1e-5)


LIVE = {  # family, config overrides: group counts no published model has, one each of BERT
    "squeezebert-2-3-1-2-4-3": ("squeezebert", {}),
    "squeezebert-3-6-2-1-6-2": ("squeezebert", dict(q_groups=3, k_groups=6, v_groups=2, post_attention_groups=1,
                                                    intermediate_groups=6, output_groups=2)),
    "squeezebert-base-groups": ("squeezebert", dict(q_groups=4, k_groups=4, v_groups=4, post_attention_groups=1,
                                                    intermediate_groups=4, output_groups=4)),
    "bert": ("bert", {}),
}


@pytest.mark.parametrize("case", list(LIVE))
def test_listing_matches_transformers_live(tmp_path, case):
    family, overrides = LIVE[case]
    theirs = build(tmp_path, family, None, seed=3, **overrides)  # every parameter random, LayerNorm gains too
    model = npsqueeze.from_pretrained(tmp_path)
    ids, mask, token_types = inputs((3, 20), theirs.config.vocab_size, seed=4)  # padded rows of different lengths
    assert mask.min() == 0
    got = listing().forward(model.params, model.config, ids, mask, token_types)
    np.testing.assert_allclose(got, reference(theirs, ids, mask, token_types).last_hidden_state.numpy(),
                               atol=TOL, rtol=0)
