"""Run a case in a child Python whose memory and time are bounded: hostile inputs must end in one
line within 10 s and 400 MB, and only a separate process can show that (a limit set on the test
process would stay with it, and a runaway case would take the test run down with it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import npsqueeze
from npsqueeze.weights import weight_map

PRELUDE = """
import resource, signal, sys
import numpy, safetensors, tokenizers
import npsqueeze, npsqueeze.tools.cli
from npsqueeze import NpsqueezeError
baseline = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()  # address space now
resource.setrlimit(resource.RLIMIT_AS, (baseline + ({mb} << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
signal.alarm({seconds})  # SIGALRM ends the process: a case that takes longer fails
"""


def run_bounded(code: str, *args, seconds: int = 10, mb: int = 400) -> subprocess.CompletedProcess:
    """`code` (sys.argv[1:] = args) in a child that may grow `mb` MB past the imports and run `seconds`.

    A case over its memory ends in MemoryError (or an abort in native code), one over its time is
    killed by SIGALRM: either way not the exit status 2 the tests expect.
    """
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # glibc reserves 64 MB of address space per arena
    return subprocess.run([sys.executable, "-c", PRELUDE.format(mb=mb, seconds=seconds) + code, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=seconds + 120)


def cli_bounded(*args, **limits) -> subprocess.CompletedProcess:
    """`npsqueeze ARGS...` in a bounded child."""
    return run_bounded("sys.exit(npsqueeze.tools.cli.main(sys.argv[1:]))", *args, **limits)


def api_bounded(call: str, *args, **limits) -> list[str | None]:
    """`call`, a Python function of one string, on each arg in turn in a bounded child (the time
    limit per call): per arg, the NpsqueezeError message it raised, or None if it returned."""
    code = f"""
import json
call = {call}
for arg in sys.argv[1:]:
    signal.alarm({limits.get("seconds", 10)})
    try:
        call(arg)
        print("null")
    except NpsqueezeError as e:
        print(json.dumps(str(e)))
"""
    done = run_bounded(code, *args, **limits)
    assert done.returncode == 0 and not done.stderr, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str, prefix: str = "") -> str:
    """Exit status 2, and stderr one line (starting with `prefix`) holding every fragment; no traceback."""
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err[-3000:])
    assert err.count("\n") == 1 and err.startswith(prefix) and "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in err, err
    return err


def numpy_checkpoint(folder: Path, config: dict, head: str | None, seed: int = 0) -> Path:
    """A checkpoint folder in the hub layout, config.json and random model.safetensors, without torch."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    cfg = npsqueeze.Config.from_dict(config)
    save_file({e.source: (0.1 * rng.standard_normal(e.hf_shape)).astype(np.float32) for e in weight_map(cfg, head)},
              folder / "model.safetensors")
    return folder
