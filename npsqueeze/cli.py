"""The `npsqueeze` command. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args)`; errors users can fix exit with status 2 and one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .config import NpsqueezeError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npsqueeze",
        description="SqueezeBERT in pure NumPy: inference, efficiency reports and benchmarks.")
    parser.add_argument("--version", action="version", version=f"npsqueeze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module, __package__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
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
