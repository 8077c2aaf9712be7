"""`npsqueeze fill-mask | classify | embed`: run texts through a checkpoint from the command line.

Texts come from the arguments, from stdin (`-`, one text a line) or from `--file` (one text a line,
or JSON Lines `{"text": ..., "pair": ...}` when the name ends in .jsonl). Results print as a table,
or with `--json` as JSON Lines, one object per input, in input order. Each subcommand is a `Command`
(cli.py registers them as "infer:fill_mask", ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..config import NpsqueezeError, parse_json
from ..pipelines import FillMask, SentenceEmbedding, TextClassification, cosine_similarity

SIMILARITY_TABLE_MAX = 12  # more texts than this: no similarity table (it would not be readable)


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


# --- arguments and inputs -----------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint folder: config.json, weights, tokenizer.json or vocab.txt")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to run; '-' reads one text a line from stdin")
    parser.add_argument("--file", type=Path, help="read texts from a file: one a line, or JSON Lines "
                        '({"text": ..., "pair": ...}) if its name ends in .jsonl')
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--json", action="store_true", help="print JSON Lines, one object per input")


def read_stdin() -> str:
    """All of stdin, decoded as UTF-8 whatever the locale: under the C locale Python would let bytes
    that are not UTF-8 through as lone surrogates, and the tokenizer would fail on them."""
    raw = getattr(sys.stdin, "buffer", None)  # None when a test swaps in a StringIO
    try:
        return raw.read().decode("utf-8") if raw is not None else sys.stdin.read()
    except UnicodeDecodeError as e:
        raise NpsqueezeError(f"cannot read stdin: it is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_inputs(args, pairs_allowed: bool) -> list[tuple[str, str | None]]:
    """(text, pair) for every input, in order: the arguments ('-' = stdin lines), then --file."""
    inputs: list[tuple[str, str | None]] = []
    for text in args.texts:
        if text == "-":
            inputs += [(line, None) for line in lines(read_stdin())]
        elif not text.strip():
            raise NpsqueezeError(f"text {len(inputs) + 1} is empty")
        else:
            inputs.append((text, None))
    if args.file is not None:
        try:
            content = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise NpsqueezeError(f"cannot read {args.file}: {getattr(e, 'strerror', None) or e}") from None
        if args.file.suffix == ".jsonl":
            inputs += [json_line(line, f"{args.file}:{n}") for n, line in enumerate(content.split("\n"), 1)
                       if line.strip()]
        else:
            inputs += [(line, None) for line in lines(content)]
    if not inputs:
        raise NpsqueezeError("no input: give texts as arguments, '-' for stdin, or --file")
    pairs = getattr(args, "pair", None)
    if pairs:
        if any(p is not None for _, p in inputs):
            raise NpsqueezeError("--pair cannot be combined with pairs from a .jsonl file")
        if len(pairs) not in (1, len(inputs)):
            raise NpsqueezeError(f"give --pair once, or once per text ({len(inputs)}), not {len(pairs)} times")
        if len(pairs) == 1:
            pairs = pairs * len(inputs)
        inputs = [(t, p) for (t, _), p in zip(inputs, pairs)]
    if not pairs_allowed and any(p is not None for _, p in inputs):
        raise NpsqueezeError(f"{args.command} takes single texts, not pairs")
    return inputs


def lines(content: str) -> list[str]:
    """One text a line; blank lines are skipped. (Not str.splitlines: it also splits at \\x0c, \\u2028, ...)"""
    return [line for line in content.split("\n") if line.strip()]


def json_line(line: str, where: str) -> tuple[str, str | None]:
    d = parse_json(line, where)
    if not isinstance(d, dict) or not isinstance(d.get("text"), str) or not d["text"].strip():
        raise NpsqueezeError(f'{where}: expected an object with a non-empty "text" string')
    if d.get("pair") is not None and not isinstance(d["pair"], str):
        raise NpsqueezeError(f'{where}: "pair" must be a string')
    return d["text"], d.get("pair")


def load(task, args):
    """The task's pipeline on args.model; a progress bar only for a person watching stderr."""
    return task.from_pretrained(args.model, batch_size=args.batch_size, progress=sys.stderr.isatty())


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


def emit_json(records) -> None:
    for r in records:
        print(json.dumps(r, ensure_ascii=False))


# --- fill-mask ----------------------------------------------------------------------------------

def add_fill_mask_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5, help="candidates per [MASK] (default 5)")


def run_fill_mask(args) -> None:
    texts = [t for t, _ in read_inputs(args, pairs_allowed=False)]
    fill = load(FillMask, args)
    with warnings_to_stderr(args.command):
        results = fill(texts, top_k=args.top_k)
    if args.json:
        return emit_json({"text": t, "predictions": r} for t, r in zip(texts, results))
    for t, r in zip(texts, results):
        print(clip(t))
        per_mask = r if isinstance(r[0], list) else [r]  # a text with several masks has a list per mask
        for m, candidates in enumerate(per_mask, 1):
            if len(per_mask) > 1:
                print(f"  {fill.tokenizer.mask_token} {m} of {len(per_mask)}")
            for c in candidates:
                print(f"  {c['score']:8.4f}  {c['token_str']}")
        print()


# --- classify -------------------------------------------------------------------------------------

def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--pair", action="append", metavar="TEXT",
                        help="second text of a sentence pair (e.g. the hypothesis for NLI): once for "
                             "every text, or once per text")


def run_classify(args) -> None:
    inputs = read_inputs(args, pairs_allowed=True)
    classify = load(TextClassification, args)
    texts, pairs = [t for t, _ in inputs], [p for _, p in inputs]
    with warnings_to_stderr(args.command):
        results = classify(texts, pairs if any(p is not None for p in pairs) else None)
    if args.json:
        return emit_json({"text": t, **({"pair": p} if p is not None else {}), "labels": r}
                         for t, p, r in zip(texts, pairs, results))
    width = max(len(label) for label in classify.labels())
    for t, p, r in zip(texts, pairs, results):
        print(clip(t) + (f"\n  pair: {clip(p)}" if p is not None else ""))
        for row in r:
            print(f"  {row['label']:<{width}}  {row['score']:.4f}")
        print()


# --- embed --------------------------------------------------------------------------------------

def run_embed(args) -> None:
    texts = [t for t, _ in read_inputs(args, pairs_allowed=False)]
    embed = load(SentenceEmbedding, args)
    with warnings_to_stderr(args.command):
        vectors = embed(texts)  # [N, D]
    if args.json:
        return emit_json({"text": t, "embedding": v.tolist()} for t, v in zip(texts, vectors))
    how = "+".join(embed.pooling) + " pooling" + (", normalized" if embed.normalize else "")
    with np.printoptions(precision=4, suppress=True, threshold=8, edgeitems=3):
        for i, (t, v) in enumerate(zip(texts, vectors), 1):
            print(f"[{i}] {clip(t)}\n    {v.shape[0]} dims, {how}: {v}")
    if 2 <= len(texts) <= SIMILARITY_TABLE_MAX:
        sim = cosine_similarity(vectors)  # [N, N]
        print("\ncosine similarity")
        print("     " + "".join(f"{f'[{j}]':>8}" for j in range(1, len(texts) + 1)))
        for i, row in enumerate(sim, 1):
            print(f"{f'[{i}]':<5}" + "".join(f"{x:8.4f}" for x in row))
    elif len(texts) > SIMILARITY_TABLE_MAX:
        print(f"\n(no similarity table for more than {SIMILARITY_TABLE_MAX} texts; use --json)")


fill_mask = Command(add_fill_mask_arguments, run_fill_mask)
classify = Command(add_classify_arguments, run_classify)
embed = Command(add_common_arguments, run_embed)
