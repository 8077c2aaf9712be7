"""Pipelines: text in, answers out, with no deep-learning framework. Modelled on transformers'.

    fill = npsqueeze.pipeline("fill-mask", "path/to/checkpoint")
    fill("The capital of France is [MASK].")   # [{"score", "token", "token_str", "sequence"}, ...]

Tasks: "fill-mask", "text-classification" (alias "sentiment-analysis"), "token-classification"
(alias "ner"), "question-answering", "feature-extraction" and "sentence-embedding". Options such as
`top_k`, `batch_size` and `max_length` go to `pipeline(...)` as defaults, or to a call, as in
transformers, and answers come in transformers' shapes. A pipeline tokenizes every input, sorts the
inputs by length, and runs them in batches packed without padding: the texts of a batch stand side
by side as one row of positions (see ops.py), so no position is computed that nobody reads. It
returns one result per input, in input order. Texts longer than the model's limit are truncated,
with a warning; question answering instead reads a long context in overlapping windows.

A pipeline keeps nothing of a call: one pipeline serves any number of threads at once, each call
with its own options. Where the batches run (this process, worker processes, an executor) is
workers.py's business.
"""

from __future__ import annotations

import functools
import inspect
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from tokenizers import Encoding

from .config import NpsqueezeError, check_count, checkpoint_folder, read_json, shown, warn
from .model import mlm_head, sequence_starts
from .modeling import ModelOutput, SqueezeBertModel, from_pretrained
from .ops import softmax
from .parallel import using_threads
from .prefixes import MAX_READ, prefixes
from .tokenizer import Tokenizer, as_batch
from .weights import HEADS
from .workers import Workers


class Call(NamedTuple):
    """The settings of one call, passed down rather than kept on the shared pipeline."""
    batch_size: int  # texts per forward pass
    max_length: int  # tokens per input, the model's limit applied
    progress: bool  # a progress bar on stderr


class Pipeline:
    """A model and its tokenizer, run over texts in length-sorted batches.

    `head` is the model head the task needs (None: any model). Inputs are truncated to the model's
    limit: the smallest of max_position_embeddings, the tokenizer's model_max_length and `max_length`.
    `progress` shows a progress bar (on stderr) when there is more than one batch. `options` are
    the task's own options (the keyword-only arguments of its `predict`, e.g. top_k), as defaults
    for every call; a call's own `batch_size`, `max_length`, `progress` and options hold for it alone.

    `threads`: the threads each call's forward passes use (see parallel.py: a batch's sequences
    shared out among them); None: the library's default (parallel.set_threads, else all cores).
    Pass threads=1 where many callers share the cores already, e.g. a web server's threads.
    `workers` > 1 runs large inputs in that many worker processes, or pass any `executor` of
    concurrent.futures or a Dask `distributed.Client` (see workers.py); results come back in input order.
    """

    task = ""
    head: str | None = None
    truncation = "longest_first"

    def __init__(self, model: SqueezeBertModel, tokenizer: Tokenizer, batch_size: int = 32,
                 max_length: int | None = None, progress: bool = False, threads: int | None = None,
                 workers: int = 1, executor: Executor | None = None, **options):
        if self.head is not None and model.head != self.head:
            name, suffix = HEADS[self.head].task, HEADS[self.head].suffix
            raise NpsqueezeError(f"{self.task} needs a model with a {name} head (a *{suffix} checkpoint), "
                                 f"but this one is a {type(model).__name__}")
        check_vocabulary(tokenizer, model.config)
        self.model, self.tokenizer = model, tokenizer
        check_count("batch_size", batch_size)
        self.batch_size, self.max_length, self.progress = batch_size, self.limit(max_length), progress
        self.options = self.check_options(options, construction=True)
        if threads is not None:
            check_count("threads", threads)
        self.threads = threads
        self.workers = Workers(workers, executor)

    def limit(self, max_length: int | None) -> int:
        """Tokens per input: `max_length`, or less where the model or tokenizer allows less."""
        if max_length is not None:
            check_count("max_length", max_length)
        limits = [self.model.config.max_position_embeddings, self.tokenizer.model_max_length, max_length]
        return min(n for n in limits if n is not None)

    def settings(self, batch_size: int | None = None, max_length: int | None = None,
                 progress: bool | None = None) -> Call:
        """A call's settings: those given (not None), else the pipeline's."""
        if batch_size is not None:
            check_count("batch_size", batch_size)
        return Call(self.batch_size if batch_size is None else batch_size,
                    self.max_length if max_length is None else self.limit(max_length),
                    self.progress if progress is None else bool(progress))

    def check_options(self, options: dict, construction: bool = False) -> dict:
        """`options` if `predict` takes them all: its keyword-only options, and in a call its inputs too."""
        params = dict(list(inspect.signature(self.predict).parameters.items())[1:])  # not the Call
        own = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
        for name in options:
            if name not in (own if construction else params):
                raise NpsqueezeError(f"{self.task} has no option {name!r}; it takes "
                                     + ", ".join(["batch_size", "max_length", *own]))
        return options

    def __call__(self, *args, batch_size: int | None = None, max_length: int | None = None,
                 progress: bool | None = None, **options):
        """The task's answers for `args` (see `predict`). `batch_size`, `max_length`, `progress` and
        the task's options given here hold for this call, over those given at construction."""
        call = self.settings(batch_size, max_length, progress)
        options = {**self.options, **self.check_options(options)}
        with using_threads(self.threads):
            return self.predict(call, *args, **options)

    def predict(self, call: Call, inputs):
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "Pipeline":
        """The model and tokenizer of a checkpoint folder; kwargs as for the constructor."""
        pipe = cls(from_pretrained(path), Tokenizer.from_pretrained(path), **kwargs)
        pipe.workers.source = cls, str(Path(path).resolve()), kwargs
        return pipe

    def __reduce__(self):
        return self.workers.recipe()  # a worker loads the folder, rather than receive the arrays

    def close(self) -> None:
        """Stop this pipeline's worker processes, if it started any."""
        self.workers.close()

    def run(self, call: Call, fn: Callable, texts: list[str], pairs: list[str | None] | None = None
            ) -> tuple[list[Encoding], list]:
        """Tokenize, then `fn(batch)` over length-sorted batches: (encodings, fn's rows), in input order.

        `batch` is a packed batch (see `pack`); `fn` returns one result per sequence. The Encodings
        give each input's tokens, offsets, length.
        """
        cut = prefixes(self.tokenizer, texts, pairs, call.max_length)  # a long text is read only as far as needed
        encodings = self.tokenizer.encodings(*cut, call.max_length, self.truncation)
        truncated = [i + 1 for i, e in enumerate(encodings) if e.overflowing]
        if truncated:
            listed = ", ".join(map(str, truncated[:10])) + (", ..." if len(truncated) > 10 else "")
            warn(f"{len(truncated)} of {len(texts)} inputs are longer than the model's limit of {call.max_length} "
                 f"tokens and were truncated (input{'s' * (len(truncated) > 1)} {listed})")
        return encodings, self.batches(call, fn, encodings)

    def batches(self, call: Call, fn: Callable, encodings: list[Encoding]) -> list:
        """`fn(batch)` over length-sorted packed batches of the encodings: fn's rows, in the encodings' order."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        groups = [order[i:i + call.batch_size] for i in range(0, len(order), call.batch_size)]
        packed = (pack([encodings[i] for i in rows]) for rows in groups)
        outputs = self.workers.map(fn, packed, len(groups), self.task if call.progress else None)
        results: list = [None] * len(encodings)
        for rows, rows_out in zip(groups, outputs):
            for i, result in zip(rows, rows_out):
                results[i] = result
        return results

    def hidden_states(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The base model's last hidden state, one row per position of the packed batch: [M, C]."""
        return self.model.encoder(batch["input_ids"], batch["token_type_ids"], batch["lengths"])[0]

    def token_states(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The last hidden state of each sequence: [W_n, C]."""
        return split(self.hidden_states(batch), batch)

    def forward(self, batch: dict[str, np.ndarray]) -> ModelOutput:
        """The model, head included, on a packed batch: outputs [M, ...] per position, [N, ...] per sequence."""
        return self.model.forward(batch["input_ids"], batch["token_type_ids"], batch["lengths"])

    def logits(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The head's logits for each sequence: [labels], or [W_n, labels] for a per-position head."""
        logits = self.forward(batch).logits
        return split(logits, batch) if "logits" in self.model.per_position else list(logits)

    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [id2label.get(i, f"LABEL_{i}") for i in range(self.model.config.num_labels)]


PADDING_ROWS = 1024  # embedding rows past the vocabulary: tables are padded to multiples of 8 to 1024


def check_vocabulary(tokenizer: Tokenizer, cfg) -> None:
    """The tokenizer's ids must index the model's embedding rows and fill them, but for padding rows:
    a tokenizer from another model gives wrong answers, or answers of empty tokens, silently."""
    ids = tokenizer.backend.get_vocab(with_added_tokens=True).values()
    top = max(ids, default=0)
    if top >= cfg.vocab_size or cfg.vocab_size - len(ids) >= PADDING_ROWS:
        raise NpsqueezeError(f"the tokenizer's vocabulary ({len(ids):,} tokens, ids up to {top:,}) does not fit the "
                             f"model's {cfg.vocab_size:,} embedding rows: are they from the same checkpoint?")


def as_texts(inputs) -> tuple[list[str], bool]:
    """A text or a list of texts -> (list of texts, whether one text came in)."""
    texts, _ = as_batch(inputs, None)
    return texts, isinstance(inputs, str)


def pack(encodings: list[Encoding]) -> dict[str, np.ndarray]:
    """Encodings as one row of positions, no padding: input_ids, token_type_ids [M] (the sequences
    side by side), lengths [N] and starts [N] (each sequence's first position)."""
    lengths = np.array([len(e.ids) for e in encodings])
    return {"input_ids": np.concatenate([e.ids for e in encodings]).astype(np.int64),  # N x [W_n] -> [M]
            "token_type_ids": np.concatenate([e.type_ids for e in encodings]).astype(np.int64),
            "lengths": lengths, "starts": sequence_starts(lengths)}


def split(rows: np.ndarray, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per-position outputs [M, ...] of a packed batch -> one [W_n, ...] array per sequence."""
    return np.split(rows, batch["starts"][1:])


# --- fill-mask ----------------------------------------------------------------------------------

class FillMask(Pipeline):
    """The most likely tokens for each [MASK] of a text, by the masked-LM head (BERT's pre-training task)."""

    task, head = "fill-mask", "mlm"

    def predict(self, call: Call, inputs: str | list[str], *, top_k: int = 5, targets: str | list[str] | None = None):
        """For each text, its `top_k` candidates {"score", "token", "token_str", "sequence"}, best first;
        a list of such lists, one per [MASK], for a text with several masks. `targets`: only these
        tokens are candidates (a word not in the vocabulary stands for its first token, with a
        warning). As in transformers, one text in a list is answered as that text alone."""
        texts, _ = as_texts(inputs)
        mask = self.tokenizer.mask_token
        if self.tokenizer.mask_token_id is None:
            raise NpsqueezeError(f"the tokenizer has no mask token {mask!r} in its vocabulary")
        check_count("top_k", top_k)
        for i, t in enumerate(texts):
            if mask not in t:
                raise NpsqueezeError(f"input {i + 1} has no {mask} token to fill: {t[:60]!r}")
        ids = None if targets is None else self.target_ids(targets)
        fill = functools.partial(self.fill, top_k=top_k if ids is None else min(top_k, len(ids)), targets=ids)
        _, results = self.run(call, fill, texts)
        for i, r in enumerate(results):
            if not r:
                raise NpsqueezeError(f"input {i + 1}: every {mask} lies beyond the model's limit of "
                                     f"{call.max_length} tokens")
        return results[0] if len(results) == 1 else results

    def target_ids(self, targets: str | list[str]) -> list[int]:
        """The token ids of `targets`: a token of the vocabulary, else a word's first token (as transformers)."""
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise NpsqueezeError(f"targets must be a string or a list of strings, got {shown(targets)}")
        ids = []
        for target in targets:
            i = self.tokenizer.backend.token_to_id(target)
            if i is None:
                first = self.tokenizer.encodings(target, add_special_tokens=False)[0].ids[:1]
                if not first:
                    warn(f"target {target!r} has no tokens: ignored")
                    continue
                i = first[0]
                warn(f"target {target!r} is not a token of the vocabulary: replaced by "
                     f"{self.tokenizer.backend.id_to_token(i)!r}")
            ids.append(i)
        if not ids:
            raise NpsqueezeError("targets: at least one target must have a token")
        return sorted(set(ids))

    def fill(self, batch, top_k: int, targets: list[int] | None = None) -> list:
        h = self.hidden_states(batch)  # [M, C]
        masked = np.flatnonzero(batch["input_ids"] == self.tokenizer.mask_token_id)  # [K]: the [MASK] positions
        # Only the masked positions go through the vocabulary projection, the costly part of the head.
        probs = softmax(mlm_head(h[masked], self.model.params["cls"], self.model.config))  # [K, C] -> [K, V]
        if targets is None:
            best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # [K, V] -> [K, top_k]
        else:  # the best among the targets: [K, T] -> [K, top_k] token ids
            best = np.asarray(targets)[np.argsort(-probs[:, targets], axis=-1, kind="stable")[:, :top_k]]
        # The tokenizers library's decode, not Tokenizer.decode, which refuses unknown ids: a model may
        # have more embedding rows than its vocabulary has tokens (padded to a multiple of 8), and
        # such a row decodes to "", as in transformers.
        decode = self.tokenizer.backend.decode
        results = []
        for ids, start in zip(split(batch["input_ids"], batch), batch["starts"].tolist()):
            masks = [m for m in range(len(masked)) if start <= masked[m] < start + len(ids)]
            per_mask = []
            for m in masks:
                candidates = []
                for token in best[m].tolist():
                    filled = ids.copy()
                    filled[masked[m] - start] = token
                    candidates.append({
                        "score": float(probs[m, token]), "token": token,
                        "token_str": decode([token]),
                        # with several masks the other [MASK]s stay visible, as in transformers
                        "sequence": decode(filled.tolist(), skip_special_tokens=len(masks) == 1)})
                per_mask.append(candidates)
            results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return results


# --- sequence classification ---------------------------------------------------------------------

class TextClassification(Pipeline):
    """Labels of a text or sentence pair (e.g. NLI: premise, hypothesis) from the config's id2label.

    Scores are softmax probabilities, or sigmoids for multi-label models and models with one label,
    or the raw logits for regression, as transformers' config `problem_type` asks.
    """

    task, head = "text-classification", "sequence"

    def __call__(self, inputs, *args, **options):
        results = super().__call__(inputs, *args, **options)
        # transformers puts a single text's answer in a list, unless the call itself gives top_k
        return [results] if isinstance(inputs, str) and "top_k" not in options else results

    def predict(self, call: Call, inputs: str | list[str] | dict | list[dict],
                text_pair: str | list[str | None] | None = None, *, top_k: int | None | str = "best",
                function_to_apply: str | None = None):
        """The labels {"label", "score"} of each input: by default ("best") its best label; with
        `top_k`, a list of the top_k best (None: every label), best first, as transformers returns them.
        An input is a text, or a text and its `text_pair`, or a dict {"text", "text_pair"}.
        `function_to_apply`: "softmax", "sigmoid" or "none" (the logits); by default as the config's
        problem_type says (see the class)."""
        if top_k not in ("best", None):
            check_count("top_k", top_k)
        if function_to_apply is not None and str(function_to_apply).lower() not in SCORES:
            raise NpsqueezeError(f"function_to_apply must be one of {', '.join(SCORES)}, got {function_to_apply!r}")
        single = isinstance(inputs, (str, dict))
        texts, pairs = text_pairs(inputs, text_pair)
        if pairs is not None:  # transformers tokenizes each input alone, and drops a lone empty pair
            pairs = [p or None for p in pairs]
        _, logits = self.run(call, self.logits, texts, pairs)
        scores = SCORES[(function_to_apply or self.default_function()).lower()](np.stack(logits))  # -> [N, labels]
        labels = self.labels()
        results = [sorted(({"label": labels[j], "score": float(s[j])} for j in range(len(s))),
                          key=lambda r: -r["score"]) for s in scores]
        results = [r[0] if top_k == "best" else r[:top_k] for r in results]
        return results[0] if single else results

    def default_function(self) -> str:
        """transformers' choice: the logits for regression, sigmoids for multi-label models and
        models with one label, else softmax."""
        problem = self.model.config.raw.get("problem_type")
        if problem == "regression":
            return "none"
        return "sigmoid" if problem == "multi_label_classification" or self.model.config.num_labels == 1 else "softmax"


SCORES = {"softmax": softmax, "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "none": lambda x: x}


def text_pairs(inputs, text_pair) -> tuple[list[str], list[str | None] | None]:
    """Texts and pairs, from a text or texts (and `text_pair`), or from dicts {"text", "text_pair"}."""
    dicts = [inputs] if isinstance(inputs, dict) else inputs
    if not (isinstance(dicts, list) and dicts and all(isinstance(d, dict) for d in dicts)):
        return as_batch(inputs, text_pair)
    if text_pair is not None:
        raise NpsqueezeError("give text_pair inside each input dict, or as an argument, not both")
    for i, d in enumerate(dicts, 1):
        if not isinstance(d.get("text"), str) or set(d) - {"text", "text_pair"}:
            raise NpsqueezeError(f'input {i}: expected a dict {{"text": str, "text_pair": str}}, got keys {list(d)}')
    return as_batch([d["text"] for d in dicts], [d.get("text_pair") for d in dicts])


# --- token classification -----------------------------------------------------------------------

class TokenClassification(Pipeline):
    """A label for each token (named entities, parts of speech), as transformers' pipeline returns them.

    aggregation_strategy "none": one entry per WordPiece token {"entity", "score", "index", "word", "start",
    "end"}; "simple": adjacent tokens of one entity (B-X then I-X ...) grouped into
    {"entity_group", "score" (mean), "word", "start", "end"}. "first", "average", "max" first give
    each word one label, then group as "simple": the label of its first token, of its tokens' mean
    scores, or of its token with the highest score. Labels in `ignore_labels` are dropped.
    """

    task, head = "token-classification", "token"

    def predict(self, call: Call, inputs: str | list[str], *, aggregation_strategy: str = "none",
                ignore_labels=("O",)):
        """The entities of each text (a list per text), as transformers' pipeline returns them."""
        if not isinstance(aggregation_strategy, str) or aggregation_strategy.lower() not in AGGREGATIONS:
            raise NpsqueezeError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}, "
                                 f"got {aggregation_strategy!r}")
        texts, single = as_texts(inputs)
        encodings, logits = self.run(call, self.logits, texts)
        results = [self.entities(t, e, x, aggregation_strategy.lower(), ignore_labels)
                   for t, e, x in zip(texts, encodings, logits)]
        return results[0] if single else results

    def entities(self, text: str, e: Encoding, logits: np.ndarray, aggregation: str, ignore_labels) -> list[dict]:
        probs = softmax(logits)  # [W, labels]
        labels = self.labels()
        tokens = []  # each token: its word as written, whether it continues a word, its scores
        for j, (token_id, (start, end)) in enumerate(zip(e.ids, e.offsets)):
            if e.special_tokens_mask[j]:
                continue
            unknown = token_id == self.tokenizer.unk_token_id
            word = text[start:end] if unknown else e.tokens[j]
            # transformers' test for WordPiece: "##ing" is longer than the "ing" it covers
            continues = not unknown and len(e.tokens[j]) != end - start
            tokens.append((j, word, start, end, continues, probs[j]))
        if aggregation in ("none", "simple"):
            found = [{"entity": labels[int(p.argmax())], "score": float(p.max()), "index": j,
                      "word": word, "start": start, "end": end} for j, word, start, end, _, p in tokens]
        else:
            words: list[list] = []
            for t in tokens:
                if words and t[4]:
                    words[-1].append(t)
                else:
                    words.append([t])
            found = [self.word(w, aggregation, labels) for w in words]
        if aggregation != "none":
            found = self.group(found)
        return [t for t in found if t.get("entity", t.get("entity_group")) not in ignore_labels]

    def word(self, tokens: list[tuple], aggregation: str, labels: list[str]) -> dict:
        """One label for the tokens of a word, as `aggregation` says."""
        scores = np.stack([p for *_, p in tokens])  # [tokens, labels]
        if aggregation == "first":
            p = scores[0]
        elif aggregation == "max":
            p = scores[int(scores.max(axis=1).argmax())]  # the token whose best score is highest
        else:  # average
            p = scores.mean(axis=0)
        return {"entity": labels[int(p.argmax())], "score": float(p.max()),
                "word": self.tokenizer.convert_tokens_to_string([t[1] for t in tokens]),
                "start": tokens[0][2], "end": tokens[-1][3]}

    def group(self, tokens: list[dict]) -> list[dict]:
        """Adjacent tokens with one tag, the first of them B- or I-, the rest I-: one entity."""
        groups: list[list[dict]] = []
        for t in tokens:
            bi, tag = bio(t["entity"])
            if groups and bi != "B" and tag == bio(groups[-1][-1]["entity"])[1]:
                groups[-1].append(t)
            else:
                groups.append([t])
        return [{"entity_group": g[0]["entity"].split("-", 1)[-1], "score": float(np.mean([t["score"] for t in g])),
                 "word": self.tokenizer.convert_tokens_to_string([t["word"] for t in g]),
                 "start": g[0]["start"], "end": g[-1]["end"]} for g in groups]


AGGREGATIONS = ("none", "simple", "first", "average", "max")


def bio(label: str) -> tuple[str, str]:
    """"B-PER" -> ("B", "PER"); a label without a B-/I- prefix continues an entity: ("I", label)."""
    return (label[0], label[2:]) if label[:2] in ("B-", "I-") else ("I", label)


# --- question answering -------------------------------------------------------------------------

class QuestionAnswering(Pipeline):
    """Extractive QA: the span of the context most likely to answer the question.

    The model scores each context token as the answer's start and end (start/end logits, softmaxed
    over the context); a span (s, e) scores p_start[s] * p_end[e], for s <= e < s + max_answer_len.
    The question comes first, the context second. A context too long for the model is read in
    windows, as transformers 4's question-answering pipeline did: each window holds the question
    and the next stretch of the context, overlapping the one before by `doc_stride` tokens; spans
    from every window compete on their scores, and a span two windows both hold counts once, with
    its better score.
    """

    task, head = "question-answering", "qa"
    truncation = "only_second"

    def predict(self, call: Call, question: str | list[str] | dict | list[dict], context: str | list[str] | None = None,
                *, top_k: int = 1, max_answer_len: int = 15, doc_stride: int | None = None):
        """{"score", "start", "end", "answer"} (character offsets into the context) for each question
        and its context, given as two strings or lists, or as dicts {"question", "context"}; a list of
        the `top_k` best when top_k > 1. `doc_stride`: the tokens that consecutive windows of a long
        context share (default: half the model's limit, at most 128). As in transformers 4, one
        question in a list is answered as that question alone."""
        if context is None and (isinstance(question, dict) or isinstance(question, list)
                                and any(isinstance(q, dict) for q in question)):
            question, context = question_contexts(question)
        questions, _ = as_texts(question)
        _, contexts = as_batch(question, context)
        if contexts is None or None in contexts:
            raise NpsqueezeError("question answering needs a context for every question")
        for i, c in enumerate(contexts):  # read whole, in windows: tokenizers holds ~130 bytes a character (README)
            if len(c) > MAX_READ:
                raise NpsqueezeError(f"context {i + 1} has {len(c):,} characters: npsqueeze reads contexts of "
                                     f"up to {MAX_READ:,}; split the document")
        check_count("top_k", top_k)
        check_count("max_answer_len", max_answer_len)
        stride = min(call.max_length // 2, 128) if doc_stride is None else doc_stride
        check_count("doc_stride", stride, least=0)
        self.check_room(questions, stride, call.max_length)
        encodings = self.tokenizer.encodings(questions, contexts, call.max_length, self.truncation, stride)
        windows = [(i, w) for i, e in enumerate(encodings) for w in (e, *e.overflowing)]
        logits = self.batches(call, self.start_end, [w for _, w in windows])
        best: list[dict] = [{} for _ in questions]  # per input: (start, end) -> its best span
        for (i, w), (start_logits, end_logits) in zip(windows, logits):
            for span in self.spans(w, start_logits, end_logits, top_k, max_answer_len):
                key = span["start"], span["end"]
                if key not in best[i] or span["score"] > best[i][key]["score"]:
                    best[i][key] = span
        results = []
        for spans, c in zip(best, contexts):
            spans = sorted(spans.values(), key=lambda span: -span["score"])[:top_k]
            spans = [dict(span, answer=c[span["start"]:span["end"]]) for span in spans]
            results.append(spans[0] if top_k == 1 else spans)
        return results[0] if len(results) == 1 else results

    def check_room(self, questions: list[str], stride: int, max_length: int) -> None:
        """Each window must hold the question, the special tokens and more than `stride` context tokens.
        Checked on the questions alone, before the pairs are encoded: there, tokenizers would abort
        with a Rust panic and a backtrace."""
        special = self.tokenizer.num_special_tokens[True]
        questions = prefixes(self.tokenizer, questions, None, max_length)[0]  # a long one is read only in part
        for i, e in enumerate(self.tokenizer.encodings(questions)):
            n = sum(s == 0 for s in e.sequence_ids)  # the question's tokens
            room = max_length - special - n
            if room <= stride:
                raise NpsqueezeError(
                    f"question {i + 1} takes {n} of the model's {max_length} tokens, leaving {max(room, 0)} "
                    f"for each window of the context: " + ("shorten the question" if room <= 0 else
                                                           f"doc_stride ({stride}) must be smaller than that"))

    def start_end(self, batch) -> list[tuple[np.ndarray, np.ndarray]]:
        out = self.forward(batch)
        return list(zip(split(out.start_logits, batch), split(out.end_logits, batch)))  # N x ([W_n], [W_n])

    @staticmethod
    def spans(e: Encoding, start_logits, end_logits, top_k: int, max_answer_len: int) -> list[dict]:
        context = np.array([s == 1 and not special for s, special in zip(e.sequence_ids, e.special_tokens_mask)])
        if not context.any():
            raise NpsqueezeError("a context has no tokens: there is nothing to answer from")
        p_start = softmax(np.where(context, start_logits, -np.inf))  # [W]: only context tokens can answer
        p_end = softmax(np.where(context, end_logits, -np.inf))
        scores = np.outer(p_start, p_end)  # [W] x [W] -> [W, W], span (start, end)
        scores = np.tril(np.triu(scores), max_answer_len - 1)  # keep start <= end < start + max_answer_len
        best = np.argsort(-scores, axis=None, kind="stable")[:top_k]
        spans = []
        for flat in best:
            s, t = np.unravel_index(flat, scores.shape)
            if scores[s, t] > 0:
                spans.append({"score": float(scores[s, t]), "start": e.offsets[s][0], "end": e.offsets[t][1]})
        return spans


def question_contexts(inputs: dict | list[dict]) -> tuple[list[str], list[str]]:
    """Questions and contexts from dicts {"question", "context"} (one, or a list)."""
    dicts = [inputs] if isinstance(inputs, dict) else inputs
    for i, d in enumerate(dicts, 1):
        if not (isinstance(d, dict) and isinstance(d.get("question"), str) and isinstance(d.get("context"), str)
                and len(d) == 2):
            raise NpsqueezeError(f'input {i}: expected a dict {{"question": str, "context": str}}, got {shown(d)}')
    return [d["question"] for d in dicts], [d["context"] for d in dicts]


# --- sentence embeddings ------------------------------------------------------------------------

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers' order when combined


class SentenceEmbedding(Pipeline):
    """One vector per text: the final hidden states pooled over the tokens, as sentence-transformers does.

    `pooling` lists the modes whose results are concatenated ("cls": the [CLS] state; "mean": the
    mean over real tokens; "max": the per-channel maximum; "mean_sqrt_len": the sum over sqrt(length));
    `normalize` scales each vector to unit length (so dot products are cosine similarities);
    `prompts` are texts put before the texts by name, `default_prompt_name` the one used unless a
    call names another. `from_pretrained` reads these from the checkpoint's sentence-transformers files.
    """

    task = "sentence-embedding"

    def __init__(self, model, tokenizer, pooling: tuple[str, ...] = ("mean",), normalize: bool = False,
                 lowercase: bool = False, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        bad = [m for m in pooling if m not in POOLING_MODES]
        if not pooling or bad:
            raise NpsqueezeError(f"pooling modes must be among {', '.join(POOLING_MODES)}, got {list(pooling)}")
        self.pooling, self.normalize, self.lowercase = tuple(pooling), normalize, lowercase
        self.prompts = {"query": "", "document": "", **(prompts or {})}  # sentence-transformers' defaults
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise NpsqueezeError(f"default_prompt_name {default_prompt_name!r} is not among the prompts "
                                 f"{list(self.prompts)}")
        self.default_prompt_name = default_prompt_name

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "SentenceEmbedding":
        """A checkpoint folder; with sentence-transformers' modules.json, the pooling, normalization,
        max_seq_length, lower-casing and prompts it declares; without, mean pooling as sentence-transformers."""
        return super().from_pretrained(path, **{**read_sentence_transformers(checkpoint_folder(path)), **kwargs})

    def predict(self, call: Call, inputs: str | list[str], *, output_value: str | None = "sentence_embedding",
                prompt: str | None = None):
        """Embeddings, float32: [N, D] for a list of texts, [D] for one text; `prompt` goes before
        each text. output_value "token_embeddings": each text's final hidden states [W, C] instead;
        None: a dict per text of its input_ids, token_type_ids, attention_mask, token_embeddings and
        sentence_embedding (as sentence-transformers' encode gives them, without padding)."""
        if output_value not in OUTPUT_VALUES:
            raise NpsqueezeError(f"output_value must be one of {', '.join(map(repr, OUTPUT_VALUES))}, "
                                 f"got {output_value!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise NpsqueezeError(f"prompt must be a string, got {shown(prompt)}")
        texts, single = as_texts(inputs)
        texts = [(prompt or "") + t for t in texts]
        if self.lowercase:
            texts = [t.lower() for t in texts]
        if output_value == "sentence_embedding":
            results = np.stack(self.run(call, self.pool, texts)[1])  # -> [N, D]
        elif output_value == "token_embeddings":
            results = self.run(call, self.token_states, texts)[1]
        else:
            encodings, outputs = self.run(call, self.pool_with_tokens, texts)
            results = [{"input_ids": np.array(e.ids), "token_type_ids": np.array(e.type_ids),
                        "attention_mask": np.array(e.attention_mask), "modality": "text",
                        "token_embeddings": h, "sentence_embedding": v} for e, (h, v) in zip(encodings, outputs)]
        return results[0] if single else results

    def encode(self, sentences: str | list[str], prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, show_progress_bar: bool | None = None,
               output_value: str | None = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, device: str | None = None,
               normalize_embeddings: bool = False, truncate_dim: int | None = None, **kwargs):
        """sentence-transformers' `SentenceTransformer.encode`: [D] for one sentence, [N, D] for a list
        (a list of N arrays [D] with convert_to_numpy=False); other outputs as `predict` says.
        `prompt` (or the prompt named `prompt_name`) goes before each sentence; `truncate_dim` keeps
        the first dimensions; `normalize_embeddings` scales each to length 1; `precision` "int8",
        "uint8", "binary" or "ubinary" quantizes them as sentence-transformers' quantize_embeddings
        does; `show_progress_bar` (None: as the pipeline was made) draws a bar over the batches."""
        unsupported = [*kwargs, *["convert_to_tensor"] * bool(convert_to_tensor),
                       *[f"device={device!r}"] * (device not in (None, "cpu"))]
        if unsupported:
            raise NpsqueezeError(f"encode: {', '.join(unsupported)} is not supported: npsqueeze gives NumPy arrays, "
                                 "computed on the CPU without torch")
        if precision not in PRECISIONS:
            raise NpsqueezeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "float32" and output_value != "sentence_embedding":
            raise NpsqueezeError(f"precision {precision!r} applies to sentence embeddings, not output_value "
                                 f"{output_value!r}")
        if truncate_dim is not None:
            check_count("truncate_dim", truncate_dim)
        if isinstance(sentences, list) and not sentences:
            return np.zeros(0, np.float32) if convert_to_numpy and output_value == "sentence_embedding" else []
        out = self(sentences, batch_size=batch_size, progress=show_progress_bar, output_value=output_value,
                   prompt=self.prompt(prompt, prompt_name))
        if output_value != "sentence_embedding":
            return out
        vectors = np.atleast_2d(out)[:, :truncate_dim]  # [N, D] -> [N, truncate_dim]
        if normalize_embeddings:
            vectors = unit(vectors)
        vectors = quantize(vectors, precision)
        if out.ndim == 1:
            return vectors[0]
        return vectors if convert_to_numpy else list(vectors)

    def prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt to put before each text, as sentence-transformers chooses it."""
        if prompt is not None:
            if prompt_name is not None:
                warn("give a prompt or a prompt_name, not both: prompt_name is ignored")
            return prompt
        name = self.default_prompt_name if prompt_name is None else prompt_name
        if name is not None and name not in self.prompts:
            raise NpsqueezeError(f"prompt name {name!r} is not among this model's prompts {list(self.prompts)}")
        return None if name is None else self.prompts[name]

    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """Cosine similarities of every embedding of the first with every one of the second, [N, M]
        (one embedding [D] counts as [1, D]), as sentence-transformers' default `similarity`."""
        a, b = (np.atleast_2d(np.asarray(e, np.float32)) for e in (embeddings1, embeddings2))
        return cosine_similarity(a, b)

    def get_embedding_dimension(self) -> int:
        """D, the length of an embedding: the hidden size once per pooling mode."""
        return len(self.pooling) * self.model.config.hidden_size

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers' name before 6.3

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, at most (longer texts are truncated): `max_length`, as sentence-transformers names it."""
        return self.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.max_length = self.limit(value)

    def pool(self, batch) -> np.ndarray:
        """Each sequence's embedding: [N, D]."""
        return self.pooled(self.hidden_states(batch), batch)

    def pool_with_tokens(self, batch) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each sequence's final hidden states [W_n, C] and embedding [D]."""
        h = self.hidden_states(batch)  # [M, C]
        return list(zip(split(h, batch), self.pooled(h, batch)))

    def pooled(self, h: np.ndarray, batch) -> np.ndarray:
        starts, n = batch["starts"], batch["lengths"][:, None]  # [N], [N, 1]
        pooled = {  # each over the positions of each sequence: [M, C] -> [N, C]
            "cls": lambda: h[starts],
            "max": lambda: np.maximum.reduceat(h, starts, axis=0),
            "mean": lambda: np.add.reduceat(h, starts, axis=0) / n,
            "mean_sqrt_len": lambda: np.add.reduceat(h, starts, axis=0) / np.sqrt(n),
        }
        v = np.concatenate([pooled[m]() for m in self.pooling], axis=-1)  # -> [N, D]
        if self.normalize:
            v = unit(v)
        return v.astype(np.float32, copy=False)


OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize(v: np.ndarray, precision: str) -> np.ndarray:
    """Embeddings [N, D] at a lower precision, as sentence-transformers' quantize_embeddings: int8 and
    uint8 cut each dimension's range over these embeddings into 256 buckets; binary and ubinary keep
    the sign bits, 8 to a byte ([N, D] -> [N, D/8]; binary as int8, offset by -128)."""
    if precision == "float32":
        return v.astype(np.float32)
    if precision.endswith("binary"):
        bits = np.packbits(v > 0, axis=-1)  # [N, D] -> [N, ceil(D/8)] uint8
        return bits if precision == "ubinary" else (bits - 128).astype(np.int8)
    if len(v) < 2:
        raise NpsqueezeError(f"{precision} quantization needs the ranges of several embeddings: encode more than one")
    low, high = v.min(axis=0), v.max(axis=0)  # [D] each
    steps = (high - low) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((v - low) / steps), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)


class FeatureExtraction(Pipeline):
    """The final hidden state of every token, as transformers' "feature-extraction" pipeline returns it:
    for each text nested lists [1, W, C] (W: its tokens, [CLS] and [SEP] included), or with
    `return_tensors=True` an array [1, W, C]. Any checkpoint: a head, if any, is not run."""

    task = "feature-extraction"

    def predict(self, call: Call, inputs: str | list[str], *, return_tensors: bool = False):
        texts, single = as_texts(inputs)
        _, states = self.run(call, self.token_states, texts)
        results = [h[None] for h in states]  # [W, C] -> [1, W, C]
        results = results if return_tensors else [h.tolist() for h in results]
        return results[0] if single else results


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities between the rows of a [N, D] and b [M, D] (default: a): [N, M]."""
    b = a if b is None else b
    return unit(a) @ unit(b).T  # [N, D] x [D, M] -> [N, M]


def unit(v: np.ndarray) -> np.ndarray:
    """Each row of v scaled to length 1 (a zero row stays zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def read_sentence_transformers(path: Path) -> dict:
    """SentenceEmbedding's settings from sentence-transformers' modules.json, 1_Pooling/config.json,
    sentence_bert_config.json; {} for a plain checkpoint."""
    modules = read_json(path / "modules.json", list)
    if modules is None:
        return {}
    settings: dict = {"pooling": ("mean",), "normalize": False}
    for module in modules:
        kind = module.get("type") if isinstance(module, dict) else None
        kind = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else None
        if kind == "Pooling":
            folder = module_folder(path, module.get("path", ""))
            settings["pooling"] = pooling_modes(read_json(folder / "config.json", dict) or {}, folder)
        elif kind == "Normalize":
            settings["normalize"] = True
        elif kind != "Transformer":
            raise NpsqueezeError(f"{path / 'modules.json'}: module {shown(module)} is not supported (npsqueeze "
                                 "runs Transformer, Pooling and Normalize)")
    config = read_json(path / "config_sentence_transformers.json", dict) or {}
    prompts = config.get("prompts") or {}
    if not (isinstance(prompts, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())):
        raise NpsqueezeError(f"{path / 'config_sentence_transformers.json'}: prompts must map names to texts, "
                             f"got {shown(prompts)}")
    settings["prompts"] = prompts
    settings["default_prompt_name"] = config.get("default_prompt_name")
    st = read_json(path / "sentence_bert_config.json", dict) or {}
    if st.get("max_seq_length") is not None:
        check_count(f"{path / 'sentence_bert_config.json'}: max_seq_length", st["max_seq_length"])
        settings["max_length"] = st["max_seq_length"]
    settings["lowercase"] = st.get("do_lower_case") is True
    return settings


def module_folder(path: Path, name) -> Path:
    """A module's folder, as modules.json names it: inside the checkpoint folder `path`, or an error."""
    folder = path / name if isinstance(name, str) and "\0" not in name else None
    if folder is None or not folder.resolve().is_relative_to(path.resolve()):
        raise NpsqueezeError(f"{path / 'modules.json'}: module path {shown(name)} is not a folder inside {path}")
    return folder


def pooling_modes(cfg: dict, folder: Path) -> tuple[str, ...]:
    """1_Pooling/config.json's pooling_mode_*_tokens flags -> our mode names, in sentence-transformers' order."""
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
            "mean": "pooling_mode_mean_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
    unsupported = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True
                   and k not in keys.values()]
    if unsupported:
        raise NpsqueezeError(f"{folder}: {', '.join(unsupported)} is not supported "
                             f"(npsqueeze pools with {', '.join(keys)})")
    if cfg.get("include_prompt") is False:  # (instructor models)
        raise NpsqueezeError(f"{folder / 'config.json'}: include_prompt false is not supported (npsqueeze pools "
                             "over every token)")
    modes = tuple(m for m, k in keys.items() if cfg.get(k) is True)
    if not modes:
        raise NpsqueezeError(f"{folder / 'config.json'}: no pooling mode is set")
    return modes


TASKS = {p.task: p for p in (FillMask, TextClassification, TokenClassification, QuestionAnswering,
                             FeatureExtraction, SentenceEmbedding)}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}  # as transformers'


def pipeline(task: str, model: str | Path, **kwargs) -> Pipeline:
    """The pipeline for `task` on the checkpoint folder `model`. kwargs: batch_size, max_length,
    progress, and the task's options (e.g. top_k), as defaults for every call."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise NpsqueezeError(f"unknown task {task!r}; npsqueeze has {', '.join([*TASKS, *ALIASES])}")
    return TASKS[name].from_pretrained(model, **kwargs)
