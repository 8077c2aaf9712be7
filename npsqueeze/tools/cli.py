"""The `npsqueeze` command. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args)`; errors users can fix exit with status 2 and one line.

Options may come anywhere among a subcommand's positional arguments; a mistyped option gets the
subcommand's usage and the option it most likely meant.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..config import NpsqueezeError
from .measure import keep_freed_memory
from .stream import why

# subcommand -> (module, one-line help); "module:name" when one module serves several subcommands
COMMANDS: dict[str, tuple[str, str]] = {
    "fill-mask": (".infer:fill_mask", "the most likely tokens for each [MASK] in a text"),
    "classify": (".infer:classify", "labels of texts or sentence pairs, with scores"),
    "embed": (".infer:embed", "sentence embeddings and their cosine similarities"),
    "report": (".report", "parameters and FLOPs of SqueezeBERT vs BERT-base, per module; plots; latency"),
    "convert": (".convert", "HF checkpoint (.bin or .safetensors, or hub id) -> folder npsqueeze memory-maps"),
    "bench": (".bench", "latency, throughput, effective GFLOP/s and peak memory of the NumPy engine"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose error for an unknown option, command or choice names the one it most
    likely meant."""

    def error(self, message: str):
        guess = []
        if message.startswith("unrecognized arguments: "):
            known = [o for a in self._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
            words = [w.split("=")[0] for w in message.split(": ", 1)[1].split() if w.startswith("-")]
            guess = next((g for w in words if (g := difflib.get_close_matches(w, known, n=1))), [])
        elif "invalid choice: " in message:  # "... invalid choice: 'flie-mask' (choose from 'fill-mask', ...)"
            word, *choices = re.findall(r"'([^']*)'", message)
            guess = difflib.get_close_matches(word, choices, n=1)
        if guess:
            message += f" (did you mean {guess[0]}?)"
        super().error(message)


def build_parser(commands=tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser of every subcommand; those in `commands` with their arguments (which imports their
    modules: a command imports only its own, to start fast)."""
    parser = ArgumentParser(
        prog="npsqueeze",
        description="SqueezeBERT in pure NumPy: inference, efficiency reports and benchmarks.")
    parser.add_argument("--version", action="version", version=f"npsqueeze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in commands:
            module, _, attr = module.partition(":")
            mod = importlib.import_module(module, __package__)
            mod = getattr(mod, attr) if attr else mod
            mod.add_arguments(p)
            p.set_defaults(run=mod.run, command=name)
    parser.commands = sub.choices  # name -> its parser
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The subcommand's own parser reads its arguments, options and positionals in any order, and
    its errors print its own usage."""
    if argv and argv[0] in COMMANDS:
        return build_parser([argv[0]]).commands[argv[0]].parse_intermixed_args(argv[1:])
    return build_parser().parse_args(argv)  # --help, --version, an unknown command


@contextmanager
def atomic_write(path: Path):
    """A binary file that becomes `path` only once fully written (a temporary file in the same folder,
    then a rename): never a half-written file, and an old one stays whole until then."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        raise NpsqueezeError(f"cannot write {path}: {why(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    args = parse(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "run", None):
        build_parser().print_help()
        return 0
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # now rather than at exit, where a failure would be a traceback
        return code
    except BrokenPipeError:  # the reader of stdout is gone (`| head`): stop quietly, as Unix tools do
        quiet_stdout()
        return 0
    except (NpsqueezeError, OSError) as e:
        message = e if isinstance(e, NpsqueezeError) else f"{e.filename}: {why(e)}" if e.filename else why(e)
        print(f"npsqueeze {args.command}: error: {message}", file=sys.stderr)
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # the error was stdout's (a full disk)
            quiet_stdout()
        return 2
    except MemoryError:  # what the size checks did not foresee
        print(f"npsqueeze {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def quiet_stdout() -> None:
    """Point stdout at /dev/null: Python flushes it at exit, and would print an error for the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's StringIO)
        pass


if __name__ == "__main__":
    sys.exit(main())
