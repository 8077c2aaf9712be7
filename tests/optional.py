"""The test-only dependencies, which the torch-free tier runs without.

`from optional import torch, transformers` gives the modules where they are installed. Where one is
not, it gives a stand-in that skips, naming the missing package, the test (or fixture) that first
uses it: so each test runs wherever it can, and none is skipped where torch is installed. Without
hypothesis, `@given` marks its test skipped; `@needs("torch")` marks a test that needs a package
without touching it (e.g. a pickle that imports torch when loaded).
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest


def reason(name: str) -> str:
    return f'needs {name}, which is not installed (the live tier: pip install -e ".[test]")'


class Missing:
    """A module that is not installed: using any of its public names, or calling it, skips the test."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # pytest and inspect probe private names: answer as a plain object
            raise AttributeError(attr)
        self()

    def __call__(self, *args, **kwargs):
        pytest.skip(reason(self.name))


def optional(name: str, attr: str | None = None):
    """The module `name` (or its attribute `attr`), or a stand-in that skips the test that uses it."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return Missing(name.split(".")[0])
    return module if attr is None else getattr(module, attr)


def needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=reason(name))


torch = optional("torch")
transformers = optional("transformers")


class Inert:
    """hypothesis' strategies and settings without hypothesis: anything done with them is a no-op."""

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return self

    def __call__(self, *args, **kwargs):
        return self

    __or__ = __ror__ = __call__


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:
    HealthCheck = st = Inert()

    def given(*args, **kwargs):
        return pytest.mark.skip(reason=reason("hypothesis"))

    def settings(*args, **kwargs):
        return lambda test: test
