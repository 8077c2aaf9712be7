"""Counting and timing the engine as it runs: FLOPs and seconds per module, from outside the math.

Inside `tally()` the engine's operations are wrapped: every `ops.matmul` records its FLOPs (2 x
multiply-adds, as torch's FlopCounterMode and the paper count) under its `tag` (query, key, ...,
head), and with `timed=True` its wall time too, and every elementwise step its wall time under its
own name (STEP_OF: embeddings, layout, add, layer_norm, softmax, gelu, relu, tanh). The wrappers are
installed in ops.py and model.py for the block's duration and removed after: the forward pass
runs the same code as ever, one step at a time on one thread (`using_threads(1)`), so that the
steps' times add up to the pass.
"""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np

from .. import model, ops
from ..parallel import using_threads

# The elementwise functions of ops.py -> the step their time counts under, in the order reports list them.
STEP_OF = {"lookup": "embeddings", "transpose": "layout", "add": "add", "layer_norm": "layer_norm",
           "scale": "softmax", "softmax": "softmax",  # the queries' 1/sqrt(d) is counted with the softmax
           "gelu": "gelu", "relu": "relu", "tanh": "tanh"}


@dataclass
class Counts:
    """What one module did inside a `tally` block."""

    calls: int = 0
    flops: int = 0  # 2 x multiply-adds of its matrix products
    seconds: float = 0.0  # measured only in a timed tally
    elements: int = 0  # of the arrays its calls wrote (products always, elementwise steps when timed)


@contextmanager
def tally(timed: bool = False):
    """Record, per module, the FLOPs of every `ops.matmul` run inside the block and, if `timed`, the
    wall time of every product and every elementwise step. Yields {module: Counts}."""
    counts: dict[str, Counts] = {}

    def record(module: str, y: np.ndarray, flops: int, start: float | None) -> None:
        c = counts.setdefault(module, Counts())
        c.calls += 1
        c.flops += flops
        c.elements += y.size
        if start is not None:
            c.seconds += time.perf_counter() - start

    matmul = ops.matmul

    def counted_matmul(a, b, tag, out=None):
        start = time.perf_counter() if timed else None
        y = matmul(a, b, tag, out)
        record(tag, y, 2 * y.size * a.shape[-1], start)  # each output element took a.shape[-1] multiply-adds
        return y

    def timed_step(step: str, op):
        @functools.wraps(op)
        def run(*args, **kwargs):
            start = time.perf_counter()
            y = op(*args, **kwargs)
            record(step, y, 0, start)
            return y
        return run

    from unittest import mock  # here: it takes longer to import than a command takes to start

    with ExitStack() as stack:
        stack.enter_context(using_threads(1))
        stack.enter_context(mock.patch.object(ops, "matmul", counted_matmul))  # ops' layers look it up at each call
        if timed:
            wrapped = {name: timed_step(step, getattr(ops, name)) for name, step in STEP_OF.items()}
            for module in (ops, model):  # model.py imported the steps by name
                for name, fn in wrapped.items():
                    if hasattr(module, name):
                        stack.enter_context(mock.patch.object(module, name, fn))
            stack.enter_context(mock.patch.dict(ops.ACTIVATIONS, {k: wrapped[k] for k in ops.ACTIVATIONS}))
        yield counts


@contextmanager
def count_flops():
    """Tally the FLOPs of every `ops.matmul` run inside the block: yields {tag: FLOPs}, filled at the end.

    FLOPs follow torch's FlopCounterMode and the paper: 2 x multiply-adds, elementwise work excluded.
    """
    flops: dict[str, int] = {}
    with tally() as counts:
        yield flops
    flops.update({module: c.flops for module, c in counts.items()})
