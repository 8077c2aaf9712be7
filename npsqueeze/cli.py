"""The `npsqueeze` command. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args)`; errors users can fix exit with status 2 and one line."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import platform
import sys

from . import __version__
from .config import NpsqueezeError

# subcommand -> (module, one-line help); "module:name" when one module serves several subcommands
COMMANDS: dict[str, tuple[str, str]] = {
    "fill-mask": (".infer:fill_mask", "the most likely tokens for each [MASK] in a text"),
    "classify": (".infer:classify", "labels of texts or sentence pairs, with scores"),
    "embed": (".infer:embed", "sentence embeddings and their cosine similarities"),
    "report": (".report", "parameters and FLOPs of SqueezeBERT vs BERT-base, per module; plots; latency"),
    "convert": (".convert", "HF checkpoint (.bin or .safetensors, or hub id) -> folder npsqueeze memory-maps"),
    "bench": (".bench", "latency, throughput, effective GFLOP/s and peak memory of the NumPy engine"),
}


MALLOC_LIMITS = (  # (glibc's mallopt parameter, the environment variable that sets the same, bytes)
    (-1, "MALLOC_TRIM_THRESHOLD_", 1 << 30),  # M_TRIM_THRESHOLD: free memory kept at the top of the heap
    (-3, "MALLOC_MMAP_THRESHOLD_", 32 << 20),  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap
)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for the next arrays instead of giving it back to the OS.

    By default glibc maps blocks over 128 KB on their own (a limit that rises to the largest block
    freed) and trims more than twice that limit from the top of the heap, both back to the OS, so
    the next array of that size faults its pages in again: ~3,000 page faults in a SqueezeBERT
    forward pass at batch 1, sequence 128, ~10,000 at batch 8, each a trip into the kernel. With
    these limits a pass takes none and ran 6-8% faster (five alternating pairs), with the same peak
    memory. The commands call this at start; in your own programs set the environment variables
    before Python starts, `MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432`, or
    call this. It does nothing where malloc is not glibc's, or when either variable is set.
    """
    if platform.libc_ver()[0] != "glibc" or any(var in os.environ for _, var, _ in MALLOC_LIMITS):
        return
    libc = ctypes.CDLL(None)
    for param, _, value in MALLOC_LIMITS:
        libc.mallopt(param, value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npsqueeze",
        description="SqueezeBERT in pure NumPy: inference, efficiency reports and benchmarks.")
    parser.add_argument("--version", action="version", version=f"npsqueeze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module, _, attr = module.partition(":")
        mod = importlib.import_module(module, __package__)
        mod = getattr(mod, attr) if attr else mod
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except (NpsqueezeError, OSError) as e:
        print(f"npsqueeze {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
