"""The `npsqueeze` command. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args)`; errors users can fix exit with status 2 and one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..config import NpsqueezeError
from .measure import keep_freed_memory

# subcommand -> (module, one-line help); "module:name" when one module serves several subcommands
COMMANDS: dict[str, tuple[str, str]] = {
    "fill-mask": (".infer:fill_mask", "the most likely tokens for each [MASK] in a text"),
    "classify": (".infer:classify", "labels of texts or sentence pairs, with scores"),
    "embed": (".infer:embed", "sentence embeddings and their cosine similarities"),
    "report": (".report", "parameters and FLOPs of SqueezeBERT vs BERT-base, per module; plots; latency"),
    "convert": (".convert", "HF checkpoint (.bin or .safetensors, or hub id) -> folder npsqueeze memory-maps"),
    "bench": (".bench", "latency, throughput, effective GFLOP/s and peak memory of the NumPy engine"),
}


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
    except MemoryError:  # what the size checks did not foresee
        print(f"npsqueeze {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
