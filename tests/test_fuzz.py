"""Property-based fuzzing of what npsqueeze reads: safetensors headers, pickle opcode streams
(pytorch_model.bin, zip and legacy layouts), config.json values, and weights' values and layers. Every example must succeed or
raise one NpsqueezeError line within 10 s, in a child whose address space may grow 400 MB past its
imports (the strategies and the property are in fuzz.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bounded import run_bounded
from optional import needs


@needs("hypothesis")
@pytest.mark.parametrize("case", ["safetensors", "pickle", "config", "weights"])
def test_fuzz_within_bounds(tmp_path, case):
    code = f"sys.path.insert(0, {str(Path(__file__).parent)!r})\nimport fuzz\nfuzz.run({case!r}, {str(tmp_path)!r})"
    done = run_bounded(code, seconds=600)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-5000:]
