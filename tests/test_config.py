"""config.json and the other JSON files npsqueeze reads: every field of the wrong type or out of
range, and every file nested too deep or too large, refused with one line naming it."""

from __future__ import annotations

import json
import shutil

import pytest

import npsqueeze
from bounded import assert_one_line, cli_bounded, numpy_checkpoint
from npsqueeze import Config, NpsqueezeError
from npsqueeze.config import WEIGHTS_DIR
from npsqueeze.tools.cli import main

SQUEEZEBERT = json.loads((WEIGHTS_DIR / "squeezebert-uncased" / "config.json").read_text())


@pytest.mark.parametrize("change, message", [
    # counts: what is built from them before a weight is read stays small
    ({"num_hidden_layers": 10**9}, "config: num_hidden_layers is 1,000,000,000: more than the 1,024 npsqueeze accepts"),
    ({"num_labels": 10**9}, "config: num_labels is 1,000,000,000: more than the 100,000 npsqueeze accepts"),
    ({"vocab_size": 2**40}, "config: vocab_size is 1,099,511,627,776: more than the 2,147,483,647"),
    ({"hidden_size": -768}, "config: hidden_size must be a positive integer, got -768"),  # not embedding_size's fault
    ({"hidden_size": "768"}, "config: hidden_size must be a positive integer, got '768'"),
    ({"max_position_embeddings": True}, "config: max_position_embeddings must be a positive integer, got True"),
    ({"q_groups": 2.0}, "config: q_groups must be a positive integer, got 2.0"),
    ({"pad_token_id": -1}, "config: pad_token_id must be a non-negative integer, got -1"),
    # types
    ({"architectures": 5}, "config: architectures must be a list of class names, got 5"),
    ({"architectures": [["x"]]}, "config: architectures must be a list of class names, got [['x']]"),
    ({"architectures": "SqueezeBertModel"}, "architectures must be a list of class names, got 'SqueezeBertModel'"),
    ({"layer_norm_eps": "tiny"}, "config: layer_norm_eps must be a positive number, got 'tiny'"),
    ({"layer_norm_eps": None}, "config: layer_norm_eps must be a positive number, got None"),
    ({"layer_norm_eps": -1}, "config: layer_norm_eps must be a positive number, got -1"),
    ({"layer_norm_eps": 0}, "layer_norm_eps must be a positive number, got 0"),
    ({"layer_norm_eps": float("nan")}, "layer_norm_eps must be a positive number, got nan"),
    ({"layer_norm_eps": 1e39}, "layer_norm_eps must be a positive number, got 1e+39"),  # inf in float32
    ({"layer_norm_eps": True}, "layer_norm_eps must be a positive number, got True"),
    ({"hidden_act": ["gelu"]}, "config: hidden_act ['gelu'] is not supported (gelu, relu)"),
    ({"tie_word_embeddings": "yes"}, "config: tie_word_embeddings must be true or false, got 'yes'"),
    ({"model_type": [[["squeezebert"]]]}, "unsupported model_type [[['squeezebert']]] in config"),
    ({"model_type": json.loads("[" * 900 + "]" * 900)}, "unsupported model_type [[[[[[[...]]]]]]] in config"),
    ({"id2label": {"0": 5}}, "config: id2label must map label ids to names (strings)"),
    ({"id2label": {"9" * 5000: "x"}}, "config: id2label must map label ids (integers) to names"),
    ({"embedding_size": 512}, "embedding_size != hidden_size is not supported"),
    # shapes the weights cannot have (transformers refuses them too: test_weights_checks.py)
    ({"num_attention_heads": 5}, "config: hidden_size 768 is not a multiple of num_attention_heads 5"),
    ({"intermediate_groups": 5}, "config: intermediate_groups=5 does not divide the 768 input and 3072 output channels"),
    ({"output_groups": 7}, "config: output_groups=7 does not divide the 3072 input and 768 output channels"),
])
def test_bad_config_values(change, message):
    with pytest.raises(NpsqueezeError) as e:
        Config.from_dict({**SQUEEZEBERT, **change})
    assert str(e.value).startswith(message) or message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_sound_configs_still_load():
    assert Config.from_dict({**SQUEEZEBERT, "layer_norm_eps": 1, "pad_token_id": None, "num_labels": 100_000})
    assert Config.from_dict({**SQUEEZEBERT, "architectures": None}).architectures == ()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small SqueezeBERT with a masked-LM head and the real vocabulary (random weights, no torch)."""
    config = {**SQUEEZEBERT, "hidden_size": 48, "embedding_size": 48, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4}
    path = numpy_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", config, "mlm")
    shutil.copy(WEIGHTS_DIR / "vocab.txt", path / "vocab.txt")
    return path


def edited(folder, tmp_path, name: str, content: str | bytes):
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    (copy / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return copy


DEEP = "[" * 100_000  # the safetensors header reader always handled it; the others raised RecursionError


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "model.safetensors.index.json",
                                  "modules.json"])
def test_json_nested_too_deep_or_too_large(folder, tmp_path, capsys, name):
    for content, message in [(DEEP, f"{name}: not valid JSON (maximum recursion depth exceeded"),
                             (b" " * (9 << 20), f"{name}: over 8 MB, too large for a settings file")]:
        copy = edited(folder, tmp_path / str(len(content)), name, content)
        if name == "model.safetensors.index.json":
            (copy / "model.safetensors").unlink()
        capsys.readouterr()
        assert main(["embed", str(copy), "hello"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err, err


def test_json_lines_and_report_configs_nested_too_deep(folder, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n' + DEEP + "\n")
    (tmp_path / "deep.json").write_text(DEEP)
    for args, message in [(["embed", str(folder), "--file", str(tmp_path / "in.jsonl")], "in.jsonl:2: not valid JSON"),
                          (["report", "--config", str(tmp_path / "deep.json")], "deep.json: not valid JSON")]:
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and message in err and "recursion" in err, err


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": 10**9}, "num_hidden_layers is 1,000,000,000"),
    ({"num_labels": 10**9, "architectures": ["SqueezeBertForSequenceClassification"]}, "num_labels is 1,000,000,000"),
    ({"num_hidden_layers": 1000}, "config.json says num_hidden_layers=1000, but the checkpoint holds 2 layer(s)"),
    ({"layer_norm_eps": None}, "layer_norm_eps must be a positive number, got None"),
])
def test_absurd_configs_are_refused_within_bounds(folder, tmp_path, change, message):
    """Each used to be a MemoryError after 25 s, or NaN outputs with exit status 0."""
    cfg = json.loads((folder / "config.json").read_text())
    copy = edited(folder, tmp_path, "config.json", json.dumps({**cfg, **change}))
    assert_one_line(cli_bounded("fill-mask", copy, "Paris is the [MASK] of France."), message,
                    prefix="npsqueeze fill-mask: error: ")
    if "layer(s)" not in message:  # report reads the config alone
        assert_one_line(cli_bounded("report", "--config", copy / "config.json"), message,
                        prefix="npsqueeze report: error: ")


@pytest.mark.parametrize("bad", [None, 5, b"folder", ["a"]])
def test_non_path_arguments(bad):
    for load in (npsqueeze.from_pretrained, npsqueeze.SqueezeBertModel.from_pretrained,
                 npsqueeze.Tokenizer.from_pretrained, npsqueeze.SentenceEmbedding.from_pretrained,
                 lambda p: npsqueeze.pipeline("fill-mask", p)):
        with pytest.raises(NpsqueezeError, match=f"a checkpoint folder is a path .*, got {type(bad).__name__}$"):
            load(bad)


SETTINGS = ["config.json", "tokenizer_config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
            "model.safetensors.index.json", "special_tokens_map.json"]


@pytest.mark.parametrize("name", SETTINGS)
def test_a_settings_file_of_1_gib_is_refused_within_bounds(folder, tmp_path, name):
    """Checked before reading: exit 2 and one line, within 10 s and 400 MB (a sparse file: no disk used)."""
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    (copy / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (copy / "1_Pooling").mkdir()
    (copy / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    if name == "model.safetensors.index.json":
        (copy / "model.safetensors").unlink()
    with open(copy / name, "wb") as f:
        f.truncate(1 << 30)
    message = f"{copy / name}: over 8 MB, too large for a settings file"
    if name != "special_tokens_map.json":  # which loading does not read
        assert_one_line(cli_bounded("embed", copy, "hello world"), message, prefix="npsqueeze embed: error: ")
    assert_one_line(cli_bounded("convert", copy, tmp_path / "out"), message, prefix="npsqueeze convert: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # convert wrote nothing
