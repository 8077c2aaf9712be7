"""FLOPs and parameters counted two ways (formulas, and the engine's tally while it runs), both
against torch's FlopCounterMode and transformers' parameters computed live; the `report` command."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from collections import Counter

import pytest

from bounded import assert_one_line, cli_bounded
from optional import optional, torch, transformers
from checkpoints import HEADS, SMALL, SMALL_BERT
from npsqueeze import ops
from npsqueeze.tools import flops
from npsqueeze import model as engine
from npsqueeze.tools.cli import main
from npsqueeze.config import WEIGHTS_DIR, Config
from npsqueeze.tools.report import build_report
from npsqueeze.weights import weight_map

FlopCounterMode = optional("torch.utils.flop_counter", "FlopCounterMode")

PUBLISHED = {"squeezebert": "squeezebert-uncased", "bert": "bert-base-uncased"}
FAMILY_PREFIX = {"squeezebert": "SqueezeBert", "bert": "Bert"}
BASE_PREFIX = {"squeezebert": "transformer.", "bert": "bert."}  # the base model's name in head models


def hf_model(family: str, head: str | None = None, **config):
    """A transformers model, random init, eager attention (with SDPA, FlopCounterMode undercounts)."""
    cfg = getattr(transformers, FAMILY_PREFIX[family] + "Config")(**config)
    cfg._attn_implementation = "eager"
    return getattr(transformers, FAMILY_PREFIX[family] + HEADS[head])(cfg).eval()


def ours(hf) -> Config:
    return Config.from_dict(hf.config.to_dict())


def torch_flops(hf, shape: tuple) -> tuple[int, dict]:
    """FlopCounterMode's total and its per-module counts on input ids of `shape`."""
    counter = FlopCounterMode(display=False)
    ids = torch.ones(shape, dtype=torch.long)
    with counter, torch.no_grad():
        hf(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops(), counter.get_flop_counts()


def module_names(cfg: Config, head: str | None) -> dict[str, str]:
    """HF module name (weights.weight_map's source, without the parameter) -> our module."""
    return {e.source.rsplit(".", 1)[0]: flops.module_of(e.name) for e in weight_map(cfg, head)}


# --- the published models at full size, against transformers ----------------------------------

@pytest.fixture(scope="module", params=["squeezebert", "bert"])
def published(request):
    family = request.param
    hf = hf_model(family)
    cfg = Config.from_file(WEIGHTS_DIR / PUBLISHED[family])
    # The bundled config is transformers' default one (labels and architectures aside).
    assert dataclasses.replace(ours(hf), architectures=cfg.architectures, id2label=cfg.id2label) == cfg
    return family, hf, cfg


def test_params_match_transformers(published):
    family, hf, cfg = published
    counts = flops.params(cfg)
    assert sum(counts.values()) == sum(p.numel() for p in hf.parameters())
    assert sum(counts.values()) == {"squeezebert": 51_089_664, "bert": 109_482_240}[family]  # REFERENCE.md
    where = module_names(cfg, None)
    theirs = Counter()
    for name, p in hf.named_parameters():
        theirs[where[name.rsplit(".", 1)[0]]] += p.numel()  # KeyError: a tensor we do not count
    assert theirs == Counter({m: n for m, n in counts.items() if n})


@pytest.mark.parametrize("seq_len", [128, 512])
def test_flops_match_flop_counter_mode(published, seq_len):
    family, hf, cfg = published
    analytic = flops.analytic_flops(cfg, seq_len)
    assert flops.instrumented_flops(cfg, seq_len) == analytic  # module by module, exactly
    total, per_module = torch_flops(hf, (1, seq_len))
    assert sum(analytic.values()) == total
    assert total == {("squeezebert", 128): 7_399_931_904, ("squeezebert", 512): 36_843_945_984,
                     ("bert", 128): 22_348_431_360, ("bert", 512): 96_637_943_808}[family, seq_len]
    # Each weight layer's share, from the counts FlopCounterMode files under each torch module.
    theirs = Counter()
    for hf_name, module in module_names(cfg, None).items():
        theirs[module] += sum(per_module.get(f"{type(hf).__name__}.{hf_name}", {}).values())
    for module, n in analytic.items():
        if module not in flops.ATTENTION:
            assert theirs[module] == n, module
    attention = per_module["Global"][torch.ops.aten.bmm]  # the only batched matmuls: scores and context
    assert analytic["attention_scores"] + analytic["attention_context"] == attention


# --- small configs with every head, and group counts that differ per role -------------------------

@pytest.mark.parametrize("head", [None, *flops.HEADS])
@pytest.mark.parametrize("family", ["squeezebert", "bert"])
def test_every_head_small_config(family, head):
    hf = hf_model(family, head, **(SMALL if family == "squeezebert" else SMALL_BERT))
    cfg = ours(hf)
    N, W = 3, 17
    analytic = flops.analytic_flops(cfg, W, N, head)
    assert flops.instrumented_flops(cfg, W, N, head) == analytic
    total, _ = torch_flops(hf, (N, 1, W) if head == "choice" else (N, W))
    unused_pooler = 0
    if family == "squeezebert" and not flops.HEAD_TABLE[head].pooler:
        unused_pooler = 2 * N * cfg.hidden_size ** 2  # HF's SqueezeBERT heads run a pooler nobody reads
    assert sum(analytic.values()) + unused_pooler == total
    params = sum(flops.params(cfg, head).values())
    theirs = sum(p.numel() for name, p in hf.named_parameters()
                 if not (unused_pooler and name.startswith(BASE_PREFIX[family] + "pooler.")))
    assert params == theirs


def test_groups_divide_each_role_s_work():
    cfg = ours(hf_model("squeezebert", **SMALL))
    dense = Config.from_dict({**cfg.raw, "model_type": "bert"})  # the same shapes, every group count 1
    grouped, ungrouped = flops.analytic_flops(cfg, 9), flops.analytic_flops(dense, 9)
    for role, module in flops.ROLE_MODULE.items():
        assert grouped[module] * getattr(cfg, role) == ungrouped[module], role
    grouped, ungrouped = flops.params(cfg), flops.params(dense)
    for role, cin, cout in cfg.conv_shapes():  # the weights shrink G-fold, the biases and LayerNorms do not
        module = flops.ROLE_MODULE[role]
        saved = cfg.num_hidden_layers * (cin * cout - cin * cout // getattr(cfg, role))
        assert ungrouped[module] - grouped[module] == saved, role


def test_groups_sweep_ends_at_bert_base():
    report, _ = build_report(["squeezebert-uncased"], instrument=False)
    sq, bert = report["models"]
    rows = {row["groups"]: row for row in report["groups_sweep"]["rows"]}
    assert sorted(rows) == [1, 2, 4, 8, 16]
    assert (rows[1]["params"], rows[1]["flops"]) == (bert["params"], bert["flops"])  # G = 1 is BERT-base
    assert (rows[4]["params"], rows[4]["flops"]) == (sq["params"], sq["flops"])
    assert report["groups_sweep"]["configured"] == 4
    assert all(rows[a]["flops"] > rows[b]["flops"] for a, b in [(1, 2), (2, 4), (4, 8), (8, 16)])


# --- elementwise work: element counts tallied while the engine runs ---------------------------------

@pytest.mark.parametrize("head", [None, "mlm", "token"])
def test_elementwise_counts_match_the_engine(monkeypatch, head):
    """With every per-element cost 0 but one, elementwise_ops counts the elements that op sees."""
    cfg = ours(hf_model("squeezebert", **SMALL))
    seen = Counter()

    def tally(name, fn):
        def wrapped(x, *args, **kwargs):
            seen[name] += x.size
            return fn(x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(engine, "layer_norm", tally("layer_norm", ops.layer_norm))
    monkeypatch.setattr(ops, "softmax", tally("softmax", ops.softmax))
    monkeypatch.setitem(ops.ACTIVATIONS, "gelu", tally("gelu", ops.gelu))
    N, W = 2, 11
    flops.engine_model(cfg, head, flops.free_weight)(flops.dummy_ids(W, N, head))
    assert set(seen) == {"layer_norm", "softmax", "gelu"}
    for op, n in seen.items():
        only = {k: (int(k == op), what) for k, (_, what) in flops.ELEMENTWISE_OPS.items()}
        monkeypatch.setattr(flops, "ELEMENTWISE_OPS", only)
        assert sum(flops.elementwise_ops(cfg, W, N, head).values()) == n, op


def test_elementwise_work_does_not_shrink_with_groups():
    report, _ = build_report(["squeezebert-uncased"], seq_len=64, instrument=False)
    sq, bert = report["models"]
    assert sq["elementwise_ops"] == bert["elementwise_ops"] > 0
    assert sq["flops"] < bert["flops"]


# --- the command -------------------------------------------------------------------------------------

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_table(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0, err
    assert "| squeezebert-uncased | 4, 4, 4, 1, 4, 4 | 51,089,664 | 7,399,931,904 | 7,399,931,904 (agree) |" in out
    assert "| bert-base-uncased | 1, 1, 1, 1, 1, 1 | 109,482,240 | 22,348,431,360 | 22,348,431,360 (agree) |" in out
    assert "FLOPs 0.331 (3.02x fewer)" in out
    for claim in ("51.1M", "4.3x on a Pixel 3", "1.7 s on a Pixel 3", "Why a FLOP ratio of 3.0x"):
        assert claim in out
    for op, (n, _) in flops.ELEMENTWISE_OPS.items():
        assert f"- {op}: {n} (" in out


def test_json_shape(capsys):
    code, out, _ = run_cli(capsys, "--format", "json", "--seq-len", "512", "--batch-size", "2", "--analytic-only")
    assert code == 0
    r = json.loads(out)
    assert (r["seq_len"], r["batch_size"]) == (512, 2)
    assert [m["name"] for m in r["models"]] == ["squeezebert-uncased", "bert-base-uncased"]
    for m, cfg in zip(r["models"], ("squeezebert-uncased", "bert-base-uncased")):
        assert {"name", "params", "flops", "modules"} <= set(m)
        assert [x["name"] for x in m["modules"]] == flops.modules(None)
        assert all({"name", "params", "flops"} <= set(x) for x in m["modules"])
        assert sum(x["params"] for x in m["modules"]) == m["params"]
        assert sum(x["flops"] for x in m["modules"]) == m["flops"]
        assert "instrumented_flops" not in m
    # Batch 2 doubles every FLOP of the batch-1 counts in REFERENCE.md.
    assert [m["flops"] for m in r["models"]] == [2 * 36_843_945_984, 2 * 96_637_943_808]


def test_csv(capsys):
    code, out, _ = run_cli(capsys, "--format", "csv", "--head", "sequence", "--analytic-only")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    totals = {row["model"]: row for row in rows if row["module"] == "total"}
    for name, total in totals.items():
        modules = [row for row in rows if row["model"] == name and row["module"] != "total"]
        assert [row["module"] for row in modules] == flops.modules("sequence")
        assert sum(int(row["flops"]) for row in modules) == int(total["flops"])
        assert sum(int(row["params"]) for row in modules) == int(total["params"])
    head = next(row for row in rows if row["model"] == "bert-base-uncased" and row["module"] == "head")
    assert int(head["params"]) == 768 * 2 + 2  # the classifier: 2 labels


def test_out_writes_report_and_plots(tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "a" / "b"
    code, stdout, err = run_cli(capsys, "--out", str(out), "--format", "json", "--analytic-only")
    assert code == 0, err
    names = {"report.md", "report.json", "flops_by_module.png", "flops_vs_seq_len.png",
             "params_by_module.png", "groups_sweep.png"}
    assert {p.name for p in out.iterdir()} == names  # no temporary files left behind
    assert json.loads((out / "report.json").read_text()) == json.loads(stdout)
    assert (out / "report.md").read_text().startswith("# squeezebert-uncased and bert-base-uncased")
    for png in names - {"report.md", "report.json"}:
        image = imread(out / png)
        assert image.shape[0] > 400 and image.shape[1] > 800, png
        assert image[..., :3].std() > 0.05, png  # not blank


def test_measure_against_another_baseline(tmp_path, capsys):
    hf_model("squeezebert", **SMALL).config.save_pretrained(tmp_path / "tiny")
    hf_model("bert", **SMALL_BERT).config.save_pretrained(tmp_path / "tiny-bert")
    for repeat, output in (("--repeat", "--json"), ("--repeats", "--format=json")):  # --repeats: the old name
        code, out, err = run_cli(capsys, "--config", str(tmp_path / "tiny"), "--baseline", str(tmp_path / "tiny-bert"),
                                 "--measure", repeat, "2", "--seq-len", "8", output)
        assert code == 0 and err == ""  # no progress lines when stderr is not a terminal
        r = json.loads(out)
        assert [m["name"] for m in r["models"]] == ["tiny", "tiny-bert"] and r["baseline"] == "tiny-bert"
        assert all(m["latency_ms"] > 0 for m in r["models"])
        assert r["measured"]["repeat"] == 2
    code, out, err = run_cli(capsys, "--config", str(tmp_path / "tiny"), "--baseline", str(tmp_path / "tiny-bert"),
                             "--seq-len", "8")
    assert "| tiny | 2, 3, 1, 2, 4, 3 |" in out and "agree" in out
    assert "Pixel 3" not in out  # the paper's claims are about BERT-base, not this baseline


@pytest.mark.parametrize("argv, message", [
    (["--config", "no/such/config.json"], "no such config file"),
    (["--seq-len", "513"], "exceeds squeezebert-uncased's max_position_embeddings 512"),
    (["--seq-len", "0"], "--seq-len must be a positive integer"),
    (["--measure", "--repeat", "0"], "--repeat must be a positive integer"),
    (["--measure", "--repeats", "0"], "--repeat must be a positive integer"),
])
def test_bad_arguments(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("npsqueeze report: error: ") and message in err and err.count("\n") == 1


def test_help_shows_repeat_not_its_old_name(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "--repeat REPEAT" in out and "--repeats" not in out and "--json" in out


def test_progress_lines_on_request(capsys):
    build_report(["squeezebert-uncased"], seq_len=8, repeat=1, progress=True)
    assert capsys.readouterr().err.splitlines() == [
        "npsqueeze report: counting squeezebert-uncased's FLOPs as the engine runs",
        "npsqueeze report: counting bert-base-uncased's FLOPs as the engine runs",
        "npsqueeze report: timing 2 models, their modules and the sweeps (repeat 1)",
        "npsqueeze report: 1/3: profiling 2 models, 1 passes each",  # each step told as it starts
        "npsqueeze report: 2/3: latency against sequence length (16, 32, 64, 128, 256, 512 tokens)",
        "npsqueeze report: 3/3: latency against groups (G = 1, 2, 4, 8, 16)"]


def test_out_must_not_be_a_file(tmp_path, capsys):
    target = tmp_path / "report"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "--out", str(target), "--analytic-only")
    assert code == 2 and "exists and is not a directory" in err
    assert target.read_text() == "keep me"


def test_bad_config_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "model_type": "squeezebert", "q_groups": 5}))
    code, _, err = run_cli(capsys, "--config", str(tmp_path))
    assert code == 2 and "q_groups=5 does not divide" in err


def test_report_needs_no_matplotlib_without_out():
    code = ("import sys; from npsqueeze.tools.cli import main; main(['report', '--analytic-only']); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "7,399,931,904" in run.stdout


def test_zero_cost_weights_take_no_memory():
    def leaves(node):
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        return [node] if children is None else [leaf for child in children for leaf in leaves(child)]

    cfg = Config.from_file(WEIGHTS_DIR / "bert-base-uncased")
    weights = leaves(flops.engine_model(cfg, "mlm", flops.free_weight).params)
    assert sum(w.size for w in weights) > 100_000_000  # the shapes are the full model's (+ tied decoder)
    assert all(w.strides == (0,) * w.ndim for w in weights)


# --- workloads too large for the machine: refused before anything runs ------------------------------

HUGE = {"model_type": "squeezebert", "hidden_size": 65536, "embedding_size": 65536, "num_attention_heads": 16}


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "1000000"], "--batch-size 1000000 x --seq-len 128 takes ~3,145.7 GB of activations in "
                                  "squeezebert-uncased, more than the 2.0 GB of memory available: lower them"),
    (["--config", "{huge}"], "huge (hidden_size 65536, vocab_size 30522) needs ~17.2 GB for its largest weight and "
                             "activations, more than the 2.0 GB of memory available"),  # np.matmul copies it
    (["--measure"], "--measure holds every model's random weights at once, ~0.6 GB, more than the 0.5 GB of memory "
                    "available: measure fewer models (--config)"),
    (["--seq-len", "512", "--batch-size", "100"], "the instrumented FLOP count would run 13,348 GFLOP through the "
                                                  "engine (~133 s): pass --analytic-only, or lower --batch-size or --seq-len"),
])
def test_workloads_that_would_not_fit(tmp_path, capsys, monkeypatch, argv, message):
    (tmp_path / "huge.json").write_text(json.dumps(HUGE))
    available = {"--measure": 0.5e9, "--seq-len": 1e12}.get(argv[0], 2e9)  # bytes, whatever the machine has
    monkeypatch.setattr("npsqueeze.tools.measure.available_memory", lambda: int(available))
    code, out, err = run_cli(capsys, *[a.format(huge=tmp_path / "huge.json") for a in argv])
    assert (code, out, err) == (2, "", f"npsqueeze report: error: {message}\n")


def test_workloads_that_would_not_fit_within_bounds(tmp_path):
    """Used to end in an out-of-memory traceback; here the memory limit is the real one."""
    (tmp_path / "huge.json").write_text(json.dumps(HUGE))
    for argv, fragment in [(["report", "--batch-size", "1000000"], "--batch-size 1000000 x --seq-len 128"),
                           (["report", "--config", tmp_path / "huge.json"], "huge (hidden_size 65536"),
                           (["bench", "--batch-size", "1000000"], "--batch-size 1000000 x --seq-len 128")]:
        assert_one_line(cli_bounded(*argv), fragment, prefix=f"npsqueeze {argv[0]}: error: ")
