"""`npsqueeze fill-mask | classify | embed`: run texts through a checkpoint from the command line.

Texts come from the arguments, from stdin (`-`) or from `--file`: one of the three. stdin and --file
hold an input a line: a text, or in a file whose name ends in .jsonl a JSON object ({"text": ...,
"pair": ...} for classify); a blank line is an empty text in both. Input n (the n-th argument, or
line n) gives the n-th result: "line": n in JSON, row n-1 of embed's .npy. Inputs are read and run
a chunk at a time, in this process, in worker processes or on a Dask cluster, and results are
printed or written as each chunk is done, in input order, so memory stays flat however long the
input. Results print as a table, or with `--json` as JSON Lines; `--out FILE` writes them to FILE
through FILE.partial/, which `--resume` continues after a stop (see stream.py). Each subcommand is a
`Command` (cli.py registers them as "infer:fill_mask", ...).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import os
import pickle
import re
import sys
import warnings
from concurrent.futures import BrokenExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from ..config import NpsqueezeError, check_count, parse_json
from ..pipelines import FillMask, Pipeline, SentenceEmbedding, TextClassification, cosine_similarity
from ..workers import Workers, call, default_workers, stop, worker_pool
from . import stream

SIMILARITY_TABLE_MAX = 12  # more texts than this: no similarity table (it would not be readable)
CHUNK_BATCHES = Workers.MIN_BATCHES_PER_WORKER  # a chunk: the least work worth a worker process
CLUSTER_VARIABLE = "NPSQUEEZE_CLUSTER"
INPUT_RULE = ("Texts come from the TEXT arguments, '-' (stdin) or --file: one of them. Input n (the n-th TEXT, or "
              "line n of stdin or --file) gives the n-th result: \"line\": n in JSON, row n-1 of a .npy. A blank line "
              "is an empty text, in .txt and .jsonl files alike.")


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


class Input(NamedTuple):
    text: str
    pair: str | None = None
    line: int | None = None  # its line in stdin or --file; None for an argument


# --- arguments ----------------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, pairs: bool, out: str) -> None:
    """The model, the texts and the options every inference command takes; `out` says what --out writes."""
    parser.epilog = INPUT_RULE
    parser.add_argument("model", help="checkpoint folder: config.json, weights, tokenizer.json or vocab.txt")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to run; '-' reads stdin as --file reads a file")
    record = '{"text": ..., "pair": ...}' if pairs else '{"text": ...}'
    parser.add_argument("--file", type=Path, help=f"read texts from a file, one a line, or one JSON object {record} a "
                        "line if its name ends in .jsonl; read a chunk at a time, so of any length")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="truncate each input to N tokens (default: the model's limit)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per process, a batch's sequences shared out among them (default 1: "
                             "threads wait for each other, and stall whenever another program holds a core)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes, one thread each, for inputs of at least "
                             f"{CHUNK_BATCHES} batches per worker (default: one per core, {default_workers()} here)")
    parser.add_argument("--cluster", metavar="ADDRESS", default=os.environ.get(CLUSTER_VARIABLE) or None,
                        help="run on the workers of the Dask cluster whose scheduler is at ADDRESS (e.g. "
                             f"tcp://host:8786; default: ${CLUSTER_VARIABLE}); each loads the model from the same "
                             'path. Needs pip install "npsqueeze[dask]"')
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON Lines, one object per input")
    output.add_argument("--out", type=Path, metavar="FILE", help=f"write the results to FILE: {out}; whole or not "
                        "at all, the part done kept in FILE.partial/ if the run stops")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run that FILE.partial/ holds (the same input and options), if any")


def check_out(args, suffixes: tuple[str, ...]) -> None:
    """--out's name and folder, before any work."""
    if args.out is None:
        if args.resume:
            raise NpsqueezeError("--resume continues a run writing --out FILE: give the same --out")
        return
    if args.out.suffix not in suffixes:
        raise NpsqueezeError(f"--out {args.out}: the name must end in {' or '.join(suffixes)}")
    if not args.out.parent.is_dir() or args.out.is_dir():
        raise NpsqueezeError(f"--out {args.out}: " + ("is a folder" if args.out.is_dir() else
                                                      f"no folder {args.out.parent}"))


# --- inputs -------------------------------------------------------------------------------------

class Source(NamedTuple):
    records: Iterator[tuple[Input, bytes]]  # each input and the bytes it was read from
    count: Callable[[], int | None]  # the inputs, counted when asked (None: stdin, not known ahead)
    identity: dict  # what a resumed run must find unchanged


def read_inputs(args, pairs_allowed: bool) -> Source:
    """The inputs: the arguments, stdin's lines ('-') or --file's, read as they are taken."""
    texts = [t for t in args.texts if t != "-"]
    stdin = "-" in args.texts
    if len(args.texts) > 1 and stdin or bool(texts) + stdin + (args.file is not None) > 1:
        raise NpsqueezeError("give texts as arguments, '-' for stdin, or --file: one of them")
    pairs = getattr(args, "pair", None) or []
    for n, p in enumerate(pairs, 1):
        check_text(p, f"--pair {n}")
    if len(pairs) > 1 and len(pairs) != len(texts):
        raise NpsqueezeError(f"give --pair once, or once per text ({len(texts)}), not {len(pairs)} times")
    if pairs and args.file is not None and args.file.suffix == ".jsonl":
        raise NpsqueezeError("--pair cannot be combined with a .jsonl file: give each pair in it")
    if texts:
        for n, t in enumerate(texts, 1):
            check_text(t, f"text {n}")
        pairs = pairs or [None]
        inputs = [Input(t, p) for t, p in zip(texts, pairs * len(texts) if len(pairs) == 1 else pairs)]
        digest = hashlib.sha256(json.dumps(inputs).encode("utf-8", "surrogatepass")).hexdigest()
        return Source(iter((i, b"") for i in inputs), lambda: len(inputs), {"input": "arguments", "texts": digest})
    pair = pairs[0] if pairs else None
    if stdin:
        raw = getattr(sys.stdin, "buffer", None)  # None when a test swaps in a StringIO
        lines = stream.read_lines(raw, "stdin") if raw is not None else (s.encode() for s in sys.stdin)
        records = parsed(lines, "stdin", False, pair, pairs_allowed, args.command)
        return Source(records, lambda: None, {"input": "stdin", "pair": pair})
    if args.file is None:
        raise NpsqueezeError("no input: give texts as arguments, '-' for stdin, or --file")
    try:
        f = open(args.file, "rb")
        stat = os.fstat(f.fileno())
    except OSError as e:
        raise NpsqueezeError(f"cannot read {args.file}: {stream.why(e)}") from None
    records = parsed(file_lines(f, str(args.file)), str(args.file), args.file.suffix == ".jsonl", pair,
                     pairs_allowed, args.command)
    return Source(records, lambda: stream.count_lines(args.file),
                  {"input": str(args.file.resolve()), "input size": stat.st_size,
                   "input modified": stat.st_mtime_ns, "pair": pair})


def file_lines(f, name: str) -> Iterator[bytes]:
    with f:
        yield from stream.read_lines(f, name)


def parsed(lines: Iterable[bytes], name: str, jsonl: bool, pair: str | None, pairs_allowed: bool,
           command: str) -> Iterator[tuple[Input, bytes]]:
    """(input, its line's bytes) for each line: a text, or a JSON object if `jsonl`; a blank line is an
    empty text either way."""
    for n, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as e:
            raise NpsqueezeError(f"cannot read {name}: line {n} is not UTF-8 text ({e.reason} at byte {e.start} "
                                 "of the line)") from None
        if jsonl and text.strip():
            yield json_input(text, f"{name}:{n}", n, pairs_allowed, command), raw
        else:
            yield Input("" if jsonl else text, pair, n), raw


def json_input(line: str, where: str, n: int, pairs_allowed: bool, command: str) -> Input:
    d = parse_json(line, where)
    if not isinstance(d, dict) or not isinstance(d.get("text"), str):
        raise NpsqueezeError(f'{where}: expected an object with a "text" string')
    pair = d.get("pair")
    if pair is not None and not isinstance(pair, str):
        raise NpsqueezeError(f'{where}: "pair" must be a string')
    if pair is not None and not pairs_allowed:
        raise NpsqueezeError(f"{where}: {command} takes single texts, not pairs")
    for key in ("text", "pair"):
        check_text(d.get(key) or "", f'{where}: "{key}"', argument=False)
    return Input(d["text"], pair, n)


def check_text(text: str, what: str, argument: bool = True) -> None:
    """A text must be text: no lone surrogates, which the tokenizer cannot read. JSON's \\ud800 escapes
    give them, and Python makes them of an argument's bytes that are not UTF-8 (U+DC80-U+DCFF)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        c = ord(text[e.start])
        kind = (f"the byte 0x{c - 0xdc00:02x}, which is not UTF-8," if argument and 0xdc80 <= c <= 0xdcff
                else f"a lone surrogate (\\u{c:04x})")
        raise NpsqueezeError(f"{what} holds {kind} at character {e.start}: it is not text") from None


# --- running a job ------------------------------------------------------------------------------

def load(task, args) -> Pipeline:
    """The task's pipeline on args.model, run in this process (workers are the job's, see `running`)."""
    check_count("workers", args.workers)
    settings = {} if args.max_length is None else {"max_length": args.max_length}  # else the checkpoint's
    with warnings_to_stderr(args.command):  # e.g. layers the config leaves out
        return task.from_pretrained(args.model, batch_size=args.batch_size, threads=args.threads, **settings)


@contextmanager
def warnings_to_stderr(command: str):
    """Warnings given inside the block as one stderr line each, like errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # Python's own, about files the collector closes
        warnings.showwarning = lambda message, *_, **__: warn(command, message)
        yield


def warn(command: str, message) -> None:
    """A warning as the commands tell it: one stderr line, like an error."""
    print(f"npsqueeze {command}: warning: {message}", file=sys.stderr)


def predict(pipe: Pipeline, options: dict, chunk: stream.Chunk) -> tuple[list, list[str]]:
    """A chunk's results, and the warnings the pipeline gave (the command tells them, numbering inputs
    in the whole job). A lone input goes alone: transformers' pipelines give one text in a list its
    answer unlisted."""
    texts = [i.text for i in chunk.items]
    pairs = [i.pair for i in chunk.items]
    inputs = (texts, pairs) if any(p is not None for p in pairs) else (texts,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow: the NaN it makes is told
        try:
            results = pipe(*inputs, **options) if len(texts) > 1 else [pipe(*(i[0] for i in inputs), **options)]
        except NpsqueezeError as e:
            raise NpsqueezeError(renumbered(str(e), chunk.start)) from None
    return results, [str(w.message) for w in caught]


@contextmanager
def running(args, task: Callable, chunks: Iterator[stream.Chunk]):
    """(fn, chunks, executor, window) for stream.ordered: where the chunks run. On the Dask cluster
    --cluster names; in --workers worker processes if there is a whole chunk for each; else here."""
    remote = functools.partial(call, pickle.dumps(task))  # workers load the pipeline themselves, once
    if args.cluster:
        from .cluster import connect

        with connect(args.cluster, task) as (executor, slots):
            yield remote, chunks, executor, 2 * slots
        return
    head = list(itertools.islice(chunks, args.workers))
    chunks = itertools.chain(head, chunks)
    if args.workers < 2 or len(head) < args.workers or len(head[-1].items) < CHUNK_BATCHES * args.batch_size:
        yield task, chunks, None, 1
        return
    pool = worker_pool(args.workers)
    try:
        yield remote, chunks, pool, 2 * args.workers
    except BaseException as e:
        stop(pool)
        if isinstance(e, BrokenExecutor):  # a worker process died (killed, out of memory)
            raise NpsqueezeError(f"a worker process ended unexpectedly ({e})") from None
        raise
    pool.shutdown()  # before the interpreter's exit, which would print errors of its own


def run_job(args, pipe: Pipeline, options: dict, inputs: Source, output: "Output") -> None:
    """Run every input through `pipe(texts, **options)` a chunk at a time, giving each chunk's inputs
    and results to `output` in input order; with --out through a stream.Partial."""
    partial = stream.Partial(args.out, output.form, identity(args, options, inputs), args.resume) if args.out else None
    with partial or nullcontext():
        done = partial.done if partial else 0
        hasher, records = hashlib.sha256(), inputs.records
        if done:
            records = stream.skip(records, done, partial.digest, hasher, partial.folder)
        chunks = stream.chunked(records, CHUNK_BATCHES * args.batch_size, done, hasher)
        notes = Notes(args.command)
        try:
            with running(args, functools.partial(predict, pipe, options), chunks) as (fn, chunks, executor, window), \
                    progress_bar(args.command, inputs.count() if sys.stderr.isatty() else None, done) as bar:
                for chunk, (results, warned) in stream.ordered(fn, chunks, executor, window):
                    data = output.write(chunk.items, results, notes)
                    if partial:
                        partial.write(output.form.encode(data), chunk.start + len(chunk.items), chunk.digest)
                    notes.add(chunk, warned)
                    bar.update(len(chunk.items))
        except KeyboardInterrupt:
            if partial and partial.save():
                print(f"npsqueeze {args.command}: stopped with {partial.committed[0]:,} inputs done, kept in "
                      f"{partial.folder}: run the same command with --resume to go on", file=sys.stderr)
            raise
        if partial:
            partial.finish()
    notes.tell()
    output.close(partial.done if partial else None)


def identity(args, options: dict, inputs: Source) -> dict:
    """What makes a run's results: the command, the model's files, the input, the options."""
    folder = Path(args.model).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()) \
        if folder.is_dir() else []
    return {"command": args.command, "model": str(folder),
            "model files": hashlib.sha256(json.dumps(files).encode()).hexdigest(), **inputs.identity,
            "batch_size": args.batch_size, "max_length": args.max_length, **options,
            "output": args.out.suffix if args.out else None}


@contextmanager
def progress_bar(command: str, total: int | None, done: int):
    """A progress bar of lines on stderr (done / total, rate, time left) for a person watching it, shown
    after a second of work; nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield NoBar()
        return
    from tqdm import tqdm  # here: it takes longer to import than a command takes to start

    with tqdm(total=total, initial=done, desc=command, unit="line", unit_scale=True, leave=False, delay=1) as bar:
        yield bar


class NoBar:
    def update(self, n: int) -> None:
        pass


TRUNCATED = re.compile(r"(\d+) of \d+ inputs (are longer than .*) \(inputs? ([\d, .]+)\)$")


def renumbered(message: str, before: int) -> str:
    """A pipeline's message about the inputs of a chunk that comes after `before` inputs, numbering
    them in the whole job: "input 3" -> "input {3 + before}"."""
    return re.sub(r"\b(inputs? )(\d+(?:, \d+)*)",
                  lambda m: m[1] + re.sub(r"\d+", lambda d: str(int(d[0]) + before), m[2]), message)


class Notes:
    """What a job's chunks said, told once at its end on stderr: inputs truncated, results that hold NaN
    or infinity, other warnings."""

    def __init__(self, command: str):
        self.command, self.inputs, self.truncated, self.shown, self.nan = command, 0, 0, [], 0
        self.limit = ""

    def add(self, chunk: stream.Chunk, warned: list[str]) -> None:
        self.inputs += len(chunk.items)
        for message in warned:
            m = TRUNCATED.match(message)
            if m is None:
                self.warn(renumbered(message, chunk.start))
                continue
            self.truncated += int(m[1])
            self.limit = m[2]
            self.shown += [chunk.start + int(n) for n in re.findall(r"\d+", m[3])][:10 - len(self.shown)]

    def warn(self, message: str) -> None:
        warn(self.command, message)

    def tell(self) -> None:
        if self.truncated:
            shown = ", ".join(map(str, self.shown)) + (", ..." if self.truncated > len(self.shown) else "")
            self.warn(f"{self.truncated} of {self.inputs} inputs {self.limit} (input{'s' * (self.truncated > 1)} "
                      f"{shown})")
        if self.nan:
            self.warn(f"the results of {self.nan:,} input{'s' * (self.nan > 1)} hold NaN or infinity (null in JSON): "
                      "does the checkpoint hold NaN weights?")


# --- outputs ------------------------------------------------------------------------------------

def record(i: Input, **result) -> dict:
    """An input's JSON object: its line (if it came from one), text, pair (if any), then the result."""
    return ({} if i.line is None else {"line": i.line}) | {"text": i.text} | (
        {} if i.pair is None else {"pair": i.pair}) | result


def json_line(r: dict, notes: Notes) -> str:
    """A record as one line of strict JSON: NaN and infinity, which JSON has no words for, become null."""
    try:
        return json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        notes.nan += 1
        return json.dumps(finite(r), ensure_ascii=False) + "\n"


def finite(x):
    """x with every NaN or infinite float (in dicts and lists) replaced by None."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


class Output:
    """Where a job's results go, a chunk at a time: a table (`show(input, result)` each), JSON Lines on
    stdout, or (with --out) the bytes `form` writes. `write` returns what `form.encode` takes."""

    def __init__(self, args, field: str, show: Callable, form=stream.JsonLines()):
        self.args, self.field, self.show, self.form = args, field, show, form

    def write(self, inputs: list[Input], results, notes: Notes):
        if self.args.json or self.args.out:
            lines = [json_line(record(i, **{self.field: r}), notes) for i, r in zip(inputs, results)]
            if self.args.out:
                return lines
            with printing():
                sys.stdout.writelines(lines)
        else:
            with printing():
                for i, r in zip(inputs, results):
                    notes.nan += not finite_result(r)
                    self.show(i, r)

    def close(self, written: int | None) -> None:
        if written is not None:
            print(f"wrote {self.args.out}: {written:,} results", file=sys.stderr)


@contextmanager
def printing():
    """Print to stdout inside the block, then flush: each chunk's results as soon as it is done. An
    error names stdout (a closed pipe passes on: cli.main ends quietly)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise NpsqueezeError(f"cannot write stdout: {stream.why(e)}") from None


def finite_result(r) -> bool:
    if isinstance(r, np.ndarray):
        return bool(np.isfinite(r).all())
    try:
        json.dumps(r, allow_nan=False)
        return True
    except ValueError:
        return False


# --- fill-mask ----------------------------------------------------------------------------------

def add_fill_mask_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, pairs=False, out="JSON Lines, as --json prints them (name it .jsonl)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="candidates per [MASK] (default 5)")


def run_fill_mask(args) -> None:
    check_out(args, (".jsonl",))
    inputs = read_inputs(args, pairs_allowed=False)
    fill = load(FillMask, args)

    def show(i: Input, r: list) -> None:
        print(clip(i.text))
        per_mask = r if isinstance(r[0], list) else [r]  # a text with several masks has a list per mask
        for m, candidates in enumerate(per_mask, 1):
            if len(per_mask) > 1:
                print(f"  {fill.tokenizer.mask_token} {m} of {len(per_mask)}")
            for c in candidates:
                print(f"  {c['score']:8.4f}  {c['token_str']}")
        print()

    run_job(args, fill, {"top_k": args.top_k}, inputs, Output(args, "predictions", show))


def clip(text: str, n: int = 100) -> str:
    text = " ".join(text[:4 * n].split())  # one line, whatever the text holds; only its start is shown
    return text if len(text) <= n else text[:n - 1] + "…"


# --- classify -------------------------------------------------------------------------------------

def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, pairs=True, out="JSON Lines, as --json prints them (name it .jsonl)")
    parser.add_argument("--pair", action="append", metavar="TEXT",
                        help="second text of a sentence pair (e.g. the hypothesis for NLI): once for "
                             "every text, or once per TEXT")
    parser.add_argument("--top-k", type=int, metavar="K", help="the best K labels of each input (default: every label)")


def run_classify(args) -> None:
    check_out(args, (".jsonl",))
    inputs = read_inputs(args, pairs_allowed=True)
    classify = load(TextClassification, args)
    width = max(len(label) for label in classify.labels())

    def show(i: Input, r: list) -> None:
        print(clip(i.text) + (f"\n  pair: {clip(i.pair)}" if i.pair is not None else ""))
        for row in r:
            print(f"  {row['label']:<{width}}  {row['score']:.4f}")
        print()

    # top_k None: every label, best first (a list per input, whatever K)
    run_job(args, classify, {"top_k": args.top_k}, inputs, Output(args, "labels", show))


# --- embed --------------------------------------------------------------------------------------

EMBEDDING_FILES = (".npy", ".jsonl")  # what `embed --out` writes


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, pairs=False, out=".npy (float32 [inputs, dims], row n-1 for input n) or .jsonl "
                                                  "(as --json prints them)")


class Embeddings(Output):
    """embed's outputs: vectors as a table (with a similarity table for a few), JSON Lines, or .npy rows."""

    def __init__(self, args, embed: SentenceEmbedding):
        self.dims = embed.model.config.hidden_size * len(embed.pooling)  # each pooling mode gives [C]
        npy = args.out is not None and args.out.suffix == ".npy"
        super().__init__(args, "embedding", self.show_vector, stream.NpyRows(self.dims) if npy else stream.JsonLines())
        self.npy, self.shown, self.first = npy, 0, []
        self.how = "+".join(embed.pooling) + " pooling" + (", normalized" if embed.normalize else "")

    def write(self, inputs: list[Input], results, notes: Notes):
        vectors = np.asarray(results, np.float32).reshape(len(inputs), self.dims)  # [n, D]
        if self.npy:
            notes.nan += int((~np.isfinite(vectors).all(axis=1)).sum())
            return vectors
        return super().write(inputs, [v.tolist() if self.args.json or self.args.out else v for v in vectors], notes)

    def show_vector(self, i: Input, v: np.ndarray) -> None:
        self.shown += 1
        if len(self.first) <= SIMILARITY_TABLE_MAX:
            self.first.append(v)
        with np.printoptions(precision=4, suppress=True, threshold=8, edgeitems=3):
            print(f"[{self.shown}] {clip(i.text)}\n    {v.shape[0]} dims, {self.how}: {v}")

    def close(self, written: int | None) -> None:
        if written is not None:
            return print(f"wrote {self.args.out}: {written:,} embeddings of {self.dims} dims", file=sys.stderr)
        if not self.args.json:
            with printing():
                self.similarities()

    def similarities(self) -> None:
        if 2 <= self.shown <= SIMILARITY_TABLE_MAX:
            sim = cosine_similarity(np.stack(self.first))  # [N, N]
            print("\ncosine similarity")
            print("     " + "".join(f"{f'[{j}]':>8}" for j in range(1, self.shown + 1)))
            for n, row in enumerate(sim, 1):
                print(f"{f'[{n}]':<5}" + "".join(f"{x:8.4f}" for x in row))
        elif self.shown > SIMILARITY_TABLE_MAX:
            print(f"\n(no similarity table for more than {SIMILARITY_TABLE_MAX} texts; use --json or --out)")


def run_embed(args) -> None:
    check_out(args, EMBEDDING_FILES)
    inputs = read_inputs(args, pairs_allowed=False)
    embed = load(SentenceEmbedding, args)
    run_job(args, embed, {}, inputs, Embeddings(args, embed))


fill_mask = Command(add_fill_mask_arguments, run_fill_mask)
classify = Command(add_classify_arguments, run_classify)
embed = Command(add_embed_arguments, run_embed)
