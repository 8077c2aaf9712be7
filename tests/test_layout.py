"""The math apart from the machinery: model.py and ops.py are SqueezeBERT and nothing else.

Read from their syntax trees: they import no threads, pools, timers or contexts, nor the modules
that wrap them (calls go down from the machinery into the math, never back up); they keep no
module-level state a measurement or a thread could change; their functions take tensors, weights
and config values, never a thread, a pool, a clock or a hook.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import npsqueeze
from npsqueeze import modeling

PACKAGE = Path(npsqueeze.__file__).parent
GOLDEN = Path(__file__).parent / "golden"
MATH = ("model.py", "ops.py")
MACHINERY = {"threading", "concurrent", "multiprocessing", "time", "ctypes", "contextvars", "contextlib",
             "functools", "signal", "os", "unittest"}
WRAPPERS = {"parallel", "modeling", "pipelines", "workers", "tools"}  # the package's modules that run the math
MACHINE_WORDS = ("thread", "exchange", "pool", "executor", "worker", "timed", "clock", "tally", "profile", "hook",
                 "barrier", "lock")


def tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / name).read_text(), name)


def imported(module: ast.Module) -> set[str]:
    """Top-level names of every module imported (relative imports as ".name")."""
    names = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from . import y
                names |= {"." + (node.module or a.name).split(".")[0] for a in node.names}
            else:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", MATH)
def test_the_math_imports_no_machinery_and_nothing_that_wraps_it(name):
    names = imported(tree(name))
    assert not names & MACHINERY, f"{name} imports {names & MACHINERY}"
    assert not {n.lstrip(".") for n in names if n.startswith(".")} & WRAPPERS
    assert names - {"__future__", "math", "numpy", ".config", ".ops"} == set(), names


@pytest.mark.parametrize("name", MATH)
def test_the_math_keeps_no_state(name):
    module = tree(name)
    assert not [n for n in ast.walk(module) if isinstance(n, (ast.Global, ast.Nonlocal))]
    for node in module.body:  # module-level assignments are constants: UPPER_CASE names
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            assert all(isinstance(t, ast.Name) and t.id.isupper() for t in targets), ast.unparse(node)


@pytest.mark.parametrize("name", MATH)
def test_the_math_takes_no_thread_or_timing_parameters(name):
    for node in ast.walk(tree(name)):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p]
            bad = [p for p in params if any(w in p.lower() for w in MACHINE_WORDS)]
            assert not bad, f"{name}: {getattr(node, 'name', 'lambda')} takes {bad}"


def test_ops_opens_with_an_operation():
    first = next(n for n in tree("ops.py").body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    assert isinstance(first, ast.FunctionDef) and first.name == "matmul"


@pytest.mark.parametrize("head", ["Model", "ForMaskedLM", "ForSequenceClassification"])
def test_a_call_enters_the_threads_once(monkeypatch, head):
    """From model(...) down to the logits: the classes enter parallel.share_out once, and the math
    it runs calls nothing back up."""
    model = npsqueeze.ARCHITECTURES["SqueezeBert" + head].from_pretrained(GOLDEN / "squeezebert")
    calls = []
    share_out = modeling.share_out
    monkeypatch.setattr(modeling, "share_out", lambda *a: calls.append(a[0]) or share_out(*a))
    model(np.ones((2, 5), np.int64))
    assert len(calls) == 1
