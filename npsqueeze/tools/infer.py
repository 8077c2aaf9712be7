"""`npsqueeze fill-mask | classify | embed`: run texts through a checkpoint from the command line.

Texts come from the arguments, from stdin (`-`) or from `--file`: one text a line, a blank line
being an empty text (an input like any other, as in sentence-transformers), or, when the file's
name ends in .jsonl, one JSON object a line ({"text": ..., "pair": ...} for classify). Results
print as a table, or with `--json` as JSON Lines: one object per input, in input order, with the
line number of inputs read from stdin or a file. `embed --out` writes the embeddings to a .npy or
.jsonl file instead. Each subcommand is a `Command` (cli.py registers them as "infer:fill_mask", ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np

from ..config import NpsqueezeError, parse_json
from ..pipelines import FillMask, SentenceEmbedding, TextClassification, cosine_similarity
from ..workers import Workers, default_workers
from .cli import atomic_write

SIMILARITY_TABLE_MAX = 12  # more texts than this: no similarity table (it would not be readable)
EMBEDDING_FILES = (".npy", ".jsonl")  # what `embed --out` writes


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


class Input(NamedTuple):
    text: str
    pair: str | None = None
    line: int | None = None  # its line in stdin or --file; None for an argument


# --- arguments and inputs -----------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, pairs: bool):
    """The model, the texts and the options every inference command takes. Returns the group of
    mutually exclusive output options (--json), for a command to add its own."""
    parser.add_argument("model", help="checkpoint folder: config.json, weights, tokenizer.json or vocab.txt")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to run; '-' reads one text a line from stdin")
    record = '{"text": ..., "pair": ...}' if pairs else '{"text": ...}'
    parser.add_argument("--file", type=Path, help="read texts from a file: one a line (a blank line is an empty "
                        f"text), or one JSON object {record} a line if its name ends in .jsonl")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="truncate each input to N tokens (default: the model's limit)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per process, a batch's positions shared out among them (default 1: "
                             "threads wait for each other, and stall whenever another program holds a core)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes, one thread each, for inputs of at least "
                             f"{Workers.MIN_BATCHES_PER_WORKER} batches per worker (default: one per core, "
                             f"{default_workers()} here)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON Lines, one object per input")
    return output


def read_stdin() -> str:
    """All of stdin, decoded as UTF-8 whatever the locale: under the C locale Python would let bytes
    that are not UTF-8 through as lone surrogates, and the tokenizer would fail on them."""
    raw = getattr(sys.stdin, "buffer", None)  # None when a test swaps in a StringIO
    try:
        return raw.read().decode("utf-8") if raw is not None else sys.stdin.read()
    except UnicodeDecodeError as e:
        raise NpsqueezeError(f"cannot read stdin: it is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_inputs(args, pairs_allowed: bool) -> list[Input]:
    """Every input, in order: the arguments ('-' = stdin's lines), then --file's lines."""
    inputs: list[Input] = []
    for text in args.texts:
        if text == "-":
            inputs += [Input(line, None, n) for n, line in numbered_lines(read_stdin())]
        else:
            inputs.append(Input(text))
    if args.file is not None:
        try:
            content = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise NpsqueezeError(f"cannot read {args.file}: {getattr(e, 'strerror', None) or e}") from None
        if args.file.suffix == ".jsonl":  # a blank line holds no object: skipped, the line numbers tell
            inputs += [json_line(line, f"{args.file}:{n}", n) for n, line in numbered_lines(content) if line.strip()]
        else:
            inputs += [Input(line, None, n) for n, line in numbered_lines(content)]
    if not inputs:
        raise NpsqueezeError("no input: give texts as arguments, '-' for stdin, or --file")
    pairs = getattr(args, "pair", None)
    if pairs:
        if any(i.pair is not None for i in inputs):
            raise NpsqueezeError("--pair cannot be combined with pairs from a .jsonl file")
        if len(pairs) not in (1, len(inputs)):
            raise NpsqueezeError(f"give --pair once, or once per text ({len(inputs)}), not {len(pairs)} times")
        inputs = [i._replace(pair=p) for i, p in zip(inputs, pairs * len(inputs) if len(pairs) == 1 else pairs)]
    if not pairs_allowed and any(i.pair is not None for i in inputs):
        raise NpsqueezeError(f"{args.command} takes single texts, not pairs")
    return inputs


def numbered_lines(content: str) -> list[tuple[int, str]]:
    """(line number, line) for every line, blank ones too; the newline ending the last line starts
    no further line. (Not str.splitlines: it also splits at \\x0c, \\u2028, ...)"""
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(n, line.removesuffix("\r")) for n, line in enumerate(lines, 1)]


def json_line(line: str, where: str, n: int) -> Input:
    d = parse_json(line, where)
    if not isinstance(d, dict) or not isinstance(d.get("text"), str):
        raise NpsqueezeError(f'{where}: expected an object with a "text" string')
    if d.get("pair") is not None and not isinstance(d["pair"], str):
        raise NpsqueezeError(f'{where}: "pair" must be a string')
    return Input(d["text"], d.get("pair"), n)


def record(i: Input, **result) -> dict:
    """An input's JSON object: its line (if it came from one), text, pair (if any), then the result."""
    return ({} if i.line is None else {"line": i.line}) | {"text": i.text} | (
        {} if i.pair is None else {"pair": i.pair}) | result


def load(task, args):
    """The task's pipeline on args.model; a progress bar only for a person watching stderr."""
    settings = {} if args.max_length is None else {"max_length": args.max_length}  # else the checkpoint's
    with warnings_to_stderr(args.command):  # e.g. layers the config leaves out
        return task.from_pretrained(args.model, batch_size=args.batch_size, progress=sys.stderr.isatty(),
                                    threads=args.threads, workers=args.workers, **settings)


@contextmanager
def warnings_to_stderr(command: str):
    """Warnings (texts truncated) as one stderr line each, like errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: print(f"npsqueeze {command}: warning: {message}",
                                                               file=sys.stderr)
        yield


def clip(text: str, n: int = 100) -> str:
    text = " ".join(text[:4 * n].split())  # one line, whatever the text holds; only its start is shown
    return text if len(text) <= n else text[:n - 1] + "…"


def json_lines(records: Iterable[dict]) -> Iterable[str]:
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def emit_json(records: Iterable[dict]) -> None:
    sys.stdout.writelines(json_lines(records))


# --- fill-mask ----------------------------------------------------------------------------------

def add_fill_mask_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, pairs=False)
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="candidates per [MASK] (default 5)")


def run_fill_mask(args) -> None:
    inputs = read_inputs(args, pairs_allowed=False)
    fill = load(FillMask, args)
    with warnings_to_stderr(args.command):
        results = fill([i.text for i in inputs], top_k=args.top_k)
    if len(inputs) == 1:  # as in transformers, one text in a list is answered as that text alone
        results = [results]
    if args.json:
        return emit_json(record(i, predictions=r) for i, r in zip(inputs, results))
    for i, r in zip(inputs, results):
        print(clip(i.text))
        per_mask = r if isinstance(r[0], list) else [r]  # a text with several masks has a list per mask
        for m, candidates in enumerate(per_mask, 1):
            if len(per_mask) > 1:
                print(f"  {fill.tokenizer.mask_token} {m} of {len(per_mask)}")
            for c in candidates:
                print(f"  {c['score']:8.4f}  {c['token_str']}")
        print()


# --- classify -------------------------------------------------------------------------------------

def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, pairs=True)
    parser.add_argument("--pair", action="append", metavar="TEXT",
                        help="second text of a sentence pair (e.g. the hypothesis for NLI): once for "
                             "every text, or once per text")
    parser.add_argument("--top-k", type=int, metavar="K", help="the best K labels of each input (default: every label)")


def run_classify(args) -> None:
    inputs = read_inputs(args, pairs_allowed=True)
    classify = load(TextClassification, args)
    pairs = [i.pair for i in inputs]
    with warnings_to_stderr(args.command):
        results = classify([i.text for i in inputs], pairs if any(p is not None for p in pairs) else None,
                           top_k=args.top_k)  # a list of labels per input, best first
    if args.json:
        return emit_json(record(i, labels=r) for i, r in zip(inputs, results))
    width = max(len(label) for label in classify.labels())
    for i, r in zip(inputs, results):
        print(clip(i.text) + (f"\n  pair: {clip(i.pair)}" if i.pair is not None else ""))
        for row in r:
            print(f"  {row['label']:<{width}}  {row['score']:.4f}")
        print()


# --- embed --------------------------------------------------------------------------------------

def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    output = add_common_arguments(parser, pairs=False)
    output.add_argument("--out", type=Path, metavar="FILE",
                        help="write the embeddings to FILE instead: .npy (an array [texts, dims], row i for "
                             "input i) or .jsonl (as --json prints them); written whole or not at all")


def run_embed(args) -> None:
    if args.out is not None:  # before the work, not after it
        if args.out.suffix not in EMBEDDING_FILES:
            raise NpsqueezeError(f"--out {args.out}: the name must end in {' or '.join(EMBEDDING_FILES)}")
        if not args.out.parent.is_dir() or args.out.is_dir():
            raise NpsqueezeError(f"--out {args.out}: " + ("is a folder" if args.out.is_dir() else
                                                          f"no folder {args.out.parent}"))
    inputs = read_inputs(args, pairs_allowed=False)
    texts = [i.text for i in inputs]
    embed = load(SentenceEmbedding, args)
    with warnings_to_stderr(args.command):
        vectors = embed(texts)  # [N, D]
    records = (record(i, embedding=v.tolist()) for i, v in zip(inputs, vectors))
    if args.out is not None:
        with atomic_write(args.out) as f:
            if args.out.suffix == ".npy":
                np.save(f, vectors)
            else:
                f.writelines(line.encode() for line in json_lines(records))
        return print(f"wrote {args.out}: {len(texts)} embeddings of {vectors.shape[1]} dims", file=sys.stderr)
    if args.json:
        return emit_json(records)
    how = "+".join(embed.pooling) + " pooling" + (", normalized" if embed.normalize else "")
    with np.printoptions(precision=4, suppress=True, threshold=8, edgeitems=3):
        for n, (t, v) in enumerate(zip(texts, vectors), 1):
            print(f"[{n}] {clip(t)}\n    {v.shape[0]} dims, {how}: {v}")
    if 2 <= len(texts) <= SIMILARITY_TABLE_MAX:
        sim = cosine_similarity(vectors)  # [N, N]
        print("\ncosine similarity")
        print("     " + "".join(f"{f'[{j}]':>8}" for j in range(1, len(texts) + 1)))
        for n, row in enumerate(sim, 1):
            print(f"{f'[{n}]':<5}" + "".join(f"{x:8.4f}" for x in row))
    elif len(texts) > SIMILARITY_TABLE_MAX:
        print(f"\n(no similarity table for more than {SIMILARITY_TABLE_MAX} texts; use --json or --out)")


fill_mask = Command(add_fill_mask_arguments, run_fill_mask)
classify = Command(add_classify_arguments, run_classify)
embed = Command(add_embed_arguments, run_embed)
