"""What loading checks in the weights' values and layers: a tensor holding NaN or Inf is refused with its
name (API, CLI and convert alike); layers past the config's num_hidden_layers are left out with one
warning naming them, pointed at the caller's line, as transformers leaves them out (checked live);
a layer the config needs and the checkpoint lacks is refused (transformers would fill it at random)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save, save_file

import npsqueeze
from bounded import assert_one_line, cli_bounded, numpy_checkpoint
from checkpoints import assert_parity, build, inputs, reference
from npsqueeze import NpsqueezeError
from npsqueeze.tools.convert import convert
from npsqueeze.weights import CONVERTED, safetensors_file
from optional import transformers

CONFIG = {"model_type": "squeezebert", "vocab_size": 30, "hidden_size": 12, "embedding_size": 12,
          "num_hidden_layers": 3, "num_attention_heads": 3, "intermediate_size": 24, "max_position_embeddings": 16,
          "q_groups": 2, "k_groups": 3, "v_groups": 1, "post_attention_groups": 2, "intermediate_groups": 4,
          "output_groups": 3, "architectures": ["SqueezeBertModel"]}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
KEY = "encoder.layers.1.attention.key.weight"  # [12, 4, 1] in HF's layout, [3, 4, 4] in the engine's


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    folder = numpy_checkpoint(tmp_path_factory.mktemp("checks") / "clean", CONFIG, None)
    (folder / "vocab.txt").write_text("\n".join(VOCAB))
    return folder


def copy(clean: Path, to: Path, config: dict | None = None, edit=None) -> Path:
    """A copy of the clean checkpoint, with another config and `edit(tensors)` applied to its weights."""
    shutil.copytree(clean, to)
    if config is not None:
        (to / "config.json").write_text(json.dumps(config))
    if edit is not None:
        tensors = load_file(to / "model.safetensors")
        edit(tensors)
        save_file(tensors, to / "model.safetensors")
    return to


def poison(kind: str):
    """An edit putting NaN, Inf or -Inf at [1, 0, 0] and [5, 2, 0] of KEY; "float64" stores KEY in
    float64 with two values past float32's range (Inf once read as float32)."""
    def edit(tensors):
        t = tensors[KEY].astype(np.float64 if kind == "float64" else np.float32)
        t[1, 0, 0] = t[5, 2, 0] = {"NaN": np.nan, "Inf": np.inf, "-Inf": -np.inf, "float64": 1e39}[kind]
        tensors[KEY] = t
    return edit


NONFINITE = {"NaN": "NaN", "Inf": "Inf", "-Inf": "Inf", "float64": "Inf"}


@pytest.mark.parametrize("kind", NONFINITE)
def test_nonfinite_weights_are_refused_by_name(clean, tmp_path, kind):
    folder = copy(clean, tmp_path / "src", edit=poison(kind))
    message = (f"{folder / 'model.safetensors'}: squeezebert base model: tensor {KEY} holds {NONFINITE[kind]} "
               "(2 of 48 values, the first at index (1, 0, 0)): the checkpoint is broken")
    with pytest.raises(NpsqueezeError) as e:
        npsqueeze.from_pretrained(folder)
    assert str(e.value) == message
    assert_one_line(cli_bounded("embed", folder, "hello world"), message, prefix="npsqueeze embed: error: ")
    for dtype in ("float32", "float16"):  # convert stops before writing, whatever the storage
        done = cli_bounded("convert", folder, tmp_path / "out", "--dtype", dtype)
        assert_one_line(done, f"{folder / 'model.safetensors'}: tensor {KEY} holds {NONFINITE[kind]} (2 of 48 values",
                        prefix="npsqueeze convert: error: ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_converted_folder_is_trusted_as_convert_checked_it_and_nan_results_are_told(clean, tmp_path):
    """convert refuses NaN and Inf as it writes (above); loading its folder reads no value (a few ms,
    memory-mapped). A value changed afterwards shows in the results: the command writes null, valid
    JSON, and says on stderr what happened."""
    convert(clean, tmp_path / "out", dtype="float16")
    path = tmp_path / "out" / CONVERTED
    tensors, metadata = safetensors_file(path)
    tensors = {k: np.array(v) for k, v in tensors.items()}
    tensors["embeddings.word_embeddings.weight"][5, 0] = np.inf  # "hello"
    path.write_bytes(save(tensors, metadata=metadata))
    model = npsqueeze.from_pretrained(tmp_path / "out")
    assert not np.isfinite(model(np.array([[2, 5, 3]])).last_hidden_state).any()
    done = cli_bounded("embed", tmp_path / "out", "hello", "world", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) for line in done.stdout.splitlines()]
    assert rows[0]["embedding"] == [None] * 12 and all(np.isfinite(rows[1]["embedding"]))
    assert done.stderr.count("\n") == 1 and "hold NaN or infinity (null in JSON)" in done.stderr


def test_float16_overflow_is_refused_by_name(clean, tmp_path):
    folder = copy(clean, tmp_path / "src", edit=lambda t: t[KEY].__setitem__((3, 1, 0), 7e4))  # float16 max 65504
    with pytest.raises(NpsqueezeError, match=rf"tensor {KEY} overflows float16 \(\|x\| up to 7e\+04\): convert with "
                                             "--dtype float32"):
        convert(folder, tmp_path / "out", dtype="float16")
    assert not (tmp_path / "out").exists()
    convert(folder, tmp_path / "out")  # float32 holds it
    assert npsqueeze.from_pretrained(tmp_path / "out").params["encoder"]["layers"][1]["attention"]["key"][
        "weight"].max() == np.float32(7e4)


# --- layers: past num_hidden_layers, or missing --------------------------------------------------

def load_warnings(load) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load()
    return caught


@pytest.mark.parametrize("layers, unused", [(1, "layers 1-2"), (2, "layer 2")])
def test_layers_past_the_config_are_left_out_with_one_warning(clean, tmp_path, layers, unused):
    folder = copy(clean, tmp_path / "src", {**CONFIG, "num_hidden_layers": layers})
    message = (f"{folder / 'model.safetensors'}: the checkpoint's {unused} left out: config.json says "
               f"num_hidden_layers={layers}")
    for load in (lambda: npsqueeze.from_pretrained(folder), lambda: npsqueeze.SqueezeBertModel.from_pretrained(folder),
                 lambda: npsqueeze.pipeline("feature-extraction", folder)):
        caught = load_warnings(load)
        assert [str(w.message) for w in caught] == [message]
        assert caught[0].category is UserWarning and caught[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(npsqueeze.from_pretrained(folder).params["encoder"]["layers"]) == layers
    # the CLI: one warning line, then the result
    done = cli_bounded("embed", folder, "hello world", "--json")
    assert done.returncode == 0 and done.stderr == f"npsqueeze embed: warning: {message}\n", done.stderr
    done = cli_bounded("convert", folder, tmp_path / "out")
    assert done.returncode == 0 and done.stdout == f"wrote {tmp_path / 'out'}\n"
    assert done.stderr.splitlines()[0] == f"npsqueeze convert: warning: {message}"
    assert load_warnings(lambda: npsqueeze.from_pretrained(tmp_path / "out")) == []  # only the layers it runs


@pytest.mark.parametrize("drop, layers, missing", [([2], 3, "layer 2"), ([1], 3, "layer 1"),
                                                    ([1, 2], 3, "layers 1-2"), ([], 5, "layers 3-4")])
def test_missing_layers_are_refused_by_name(clean, tmp_path, drop, layers, missing):
    def edit(tensors):
        for name in [n for n in tensors if any(n.startswith(f"encoder.layers.{i}.") for i in drop)]:
            del tensors[name]
    folder = copy(clean, tmp_path / "src", {**CONFIG, "num_hidden_layers": layers}, edit)
    message = (f"{folder / 'model.safetensors'}: config.json says num_hidden_layers={layers}, but the checkpoint "
               f"holds {3 - len(drop)} layer(s): {missing} missing")
    with pytest.raises(NpsqueezeError) as e:
        npsqueeze.from_pretrained(folder)
    assert str(e.value) == message
    assert_one_line(cli_bounded("convert", folder, tmp_path / "out"), message, prefix="npsqueeze convert: error: ")


@pytest.mark.parametrize("family", ["squeezebert", "bert"])
def test_layers_left_out_as_transformers_leaves_them_out(tmp_path, family):
    ref3 = build(tmp_path / "src", family, None, seed=1, num_hidden_layers=3)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    cls = getattr(transformers, ("SqueezeBert" if family == "squeezebert" else "Bert") + "Model")
    theirs, info = cls.from_pretrained(tmp_path / "src", output_loading_info=True, attn_implementation="eager")
    theirs.eval()
    assert info["missing_keys"] == [] or set(info["missing_keys"]) <= {"embeddings.position_ids"}
    assert {k.split(".")[2] for k in info["unexpected_keys"]} == {"2"}  # transformers leaves layer 2 out
    model = []
    caught = load_warnings(lambda: model.append(npsqueeze.from_pretrained(tmp_path / "src")))
    assert [str(w.message) for w in caught] == [f"{tmp_path / 'src' / 'model.safetensors'}: the checkpoint's layer 2 "
                                                "left out: config.json says num_hidden_layers=2"]
    ids, mask, tt = inputs((3, 12), cfg["vocab_size"], seed=2)
    ours = model[0](ids, mask, tt)
    assert_parity(ours, reference(theirs, ids, mask, tt), ("last_hidden_state", "pooler_output"))
    assert not np.allclose(ours.last_hidden_state, reference(ref3, ids, mask, tt).last_hidden_state.numpy(), atol=1e-3)


def test_missing_layer_transformers_would_fill_at_random(tmp_path):
    build(tmp_path / "src", "squeezebert", None, seed=1, num_hidden_layers=2)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    _, info = transformers.SqueezeBertModel.from_pretrained(tmp_path / "src", output_loading_info=True)
    assert {k.split(".")[2] for k in info["missing_keys"]} == {"2"}  # transformers: initialized at random
    with pytest.raises(NpsqueezeError, match=r"num_hidden_layers=3, but the checkpoint holds 2 layer\(s\): layer 2 "
                                             "missing$"):
        npsqueeze.from_pretrained(tmp_path / "src")


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 5}, "config: hidden_size 96 is not a multiple of num_attention_heads 5"),
    ({"v_groups": 5}, "config: v_groups=5 does not divide the 96 input and 96 output channels"),
    ({"intermediate_groups": 5}, "config: intermediate_groups=5 does not divide the 96 input and 192 output channels"),
])
def test_heads_and_groups_that_do_not_divide_are_refused_as_transformers_refuses_them(tmp_path, change, message):
    build(tmp_path / "src", "squeezebert", None)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ValueError):  # transformers' message differs by version; that it refuses does not
        transformers.SqueezeBertModel.from_pretrained(tmp_path / "src")
    with pytest.raises(NpsqueezeError) as e:
        npsqueeze.from_pretrained(tmp_path / "src")
    assert str(e.value) == message
    assert_one_line(cli_bounded("convert", tmp_path / "src", tmp_path / "out"), message,
                    prefix="npsqueeze convert: error: ")


def test_workers_do_not_repeat_the_warning(clean, tmp_path):
    folder = copy(clean, tmp_path / "src", {**CONFIG, "num_hidden_layers": 1})
    (tmp_path / "in.txt").write_text("\n".join(["hello world " * 5] * 400))
    done = cli_bounded("embed", folder, "--file", tmp_path / "in.txt", "--out", tmp_path / "out.npy",
                       "--workers", "2", "--batch-size", "8", seconds=60, mb=1000)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == (
        f"npsqueeze embed: warning: {folder / 'model.safetensors'}: the checkpoint's layers 1-2 left out: config.json "
        f"says num_hidden_layers=1\nwrote {tmp_path / 'out.npy'}: 400 embeddings of 12 dims\n"), done.stderr
