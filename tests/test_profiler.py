"""Where the time goes: the profile of `report --measure` and `bench --profile`, on small models.

Structure and consistency only -- every module present, its FLOPs and element counts equal to the
formulas, shares that sum to 1, the accounting against the unprofiled pass, the JSON, the figures.
No timing thresholds: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from checkpoints import SMALL, SMALL_BERT
from npsqueeze import parallel
from npsqueeze.config import Config
from npsqueeze.tools import flops, measure, profiler
from npsqueeze.tools.tally import tally
from npsqueeze.tools.cli import main

FAMILIES = {"squeezebert": SMALL, "bert": SMALL_BERT}
MODULE_FIELDS = {"name", "kind", "calls", "ms", "min_ms", "flops", "elementwise_ops", "elements", "time_share",
                 "flop_share", "gflop_per_s", "ns_per_element"}


def small(family: str) -> Config:
    return Config.from_dict({"model_type": family, **FAMILIES[family]})


def random_model(cfg: Config, head: str | None):
    rng = np.random.default_rng(0)
    return flops.engine_model(cfg, head, lambda shape: measure.random_weight(rng, shape))


# --- the tally: one pass counts and times ----------------------------------------------------------

@pytest.mark.parametrize("head", [None, *flops.HEADS])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_timed_pass_tallies_what_the_formulas_count(family, head):
    cfg, N, W = small(family), 3, 11
    counts = profiler.timed_pass(flops.engine_model(cfg, head, flops.free_weight), flops.dummy_ids(W, N, head))
    steps = flops.elementwise_steps(cfg, W, N, head)
    products = {m: n for m, n in flops.analytic_flops(cfg, W, N, head).items() if m != "embeddings"}
    assert set(counts) == set(products) | set(steps)
    assert {m: counts[m].flops for m in products} == products
    assert {m: counts[m].elements for m in steps} == {m: n for m, (n, _) in steps.items()}
    assert all(counts[m].flops == 0 for m in steps)
    # The same operations as elementwise_ops, less the mask that an unpadded batch does not add.
    mask = cfg.num_hidden_layers * N * cfg.num_attention_heads * W * W * flops.ELEMENTWISE_OPS["mask"][0]
    assert sum(ops for _, ops in steps.values()) == sum(flops.elementwise_ops(cfg, W, N, head).values()) - mask


def test_steps_do_not_nest():
    """Each module's time is an interval of its own: in one pass they add up to no more than the pass."""
    model, ids = random_model(small("squeezebert"), "mlm"), flops.dummy_ids(16, 2, "mlm")
    for _ in range(3):
        start = time.perf_counter()
        counts = profiler.timed_pass(model, ids)
        wall = time.perf_counter() - start
        assert 0 < sum(c.seconds for c in counts.values()) <= wall


def test_an_untimed_tally_records_only_products():
    with tally() as counts:
        random_model(small("bert"), None)(flops.dummy_ids(8, 1, None))
    assert set(counts) == {m for m, n in flops.analytic_flops(small("bert"), 8).items() if n}
    assert all(c.seconds == 0 for c in counts.values())


# --- the profile ---------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [None, "mlm"])
def test_profile_holds_every_module_and_adds_up(head):
    configs = {family: small(family) for family in FAMILIES}
    models = {family: random_model(cfg, head) for family, cfg in configs.items()}
    N, W = 2, 16
    profiles = profiler.profile(models, flops.dummy_ids(W, N, head), repeat=3)
    for family, p in profiles.items():
        cfg = configs[family]
        analytic, steps = flops.analytic_flops(cfg, W, N, head), flops.elementwise_steps(cfg, W, N, head)
        assert p["repeat"] == 3 and p["forward_min_ms"] <= p["forward_ms"] and p["profiled_ms"] > 0
        names = [m["name"] for m in p["modules"]]
        assert names == [m for m in flops.modules(head) if m != "embeddings"] + list(steps)
        for m in p["modules"]:
            assert set(m) == MODULE_FIELDS
            assert 0 <= m["min_ms"] <= m["ms"]
            if m["kind"] == "product":
                assert (m["flops"], m["elementwise_ops"], m["ns_per_element"]) == (analytic[m["name"]], 0, None)
                assert m["gflop_per_s"] == pytest.approx(m["flops"] / m["ms"] / 1e6)
            else:
                assert m["kind"] == "elementwise" and m["name"] in flops.STEPS
                assert (m["flops"], m["gflop_per_s"]) == (analytic.get(m["name"], 0), None)  # embeddings: 0
                assert (m["elements"], m["elementwise_ops"]) == steps[m["name"]]
                assert m["ns_per_element"] == pytest.approx(1e6 * m["ms"] / m["elements"])
        assert p["modules_ms"] == pytest.approx(sum(m["ms"] for m in p["modules"]))
        assert len(p["pairs"]) == 3  # a profiled pass's modules are disjoint intervals inside it:
        assert all(0 < pair["modules_ms"] <= pair["profiled_ms"] for pair in p["pairs"])
        assert sum(m["time_share"] for m in p["modules"]) == pytest.approx(1)
        assert sum(m["flop_share"] for m in p["modules"]) == pytest.approx(1)
        calls = {m["name"]: m["calls"] for m in p["modules"]}
        assert calls["query"] == calls["attention_scores"] / N == cfg.num_hidden_layers  # attention: per sequence
    table = "\n".join(profiler.profile_table(profiles["bert"]))
    for label in ("FFN intermediate", "GELU (exact erf)", "**all matrix products**", "**all elementwise steps**",
                  f"the unprofiled forward pass took {profiles['bert']['forward_ms']:.2f} ms"):
        assert label in table


def module(name: str, kind: str, ms: float, flops_: int) -> dict:
    return {"name": name, "kind": kind, "ms": ms, "flops": flops_}


def test_why_section_is_computed_from_the_profiles():
    """Amdahl's law, the shares and the rates, from made-up profiles whose answers are known."""
    def entry(name, q_ms, q_flops, gelu_ms, scores_ms, forward_ms, G):
        mods = [module("query", "product", q_ms, q_flops), module("attention_scores", "product", scores_ms, 10**8),
                module("gelu", "elementwise", gelu_ms, 0)]
        return {"name": name, "flops": q_flops + 10**8, "groups": {role: G for role in flops.ROLE_MODULE},
                "profile": {"forward_ms": forward_ms, "modules_ms": q_ms + gelu_ms + scores_ms, "modules": mods}}

    base = entry("dense", q_ms=40, q_flops=4 * 10**9, gelu_ms=8, scores_ms=2, forward_ms=52, G=1)
    grouped = entry("grouped", q_ms=20, q_flops=10**9, gelu_ms=8, scores_ms=2, forward_ms=31.2, G=4)
    text = "\n".join(profiler.why_section(grouped, base))
    # base's 50 ms with query's 40 ms cut 4-fold: 10 + 8 + 2 = 20 ms, 2.50x; FLOPs 4.1 / 1.1 G
    assert "Why a FLOP ratio of 3.73x is a 1.67x speedup here (grouped against dense)" in text
    assert "50.0 ms would have become 20.0: a speedup of 2.50x by this count, not 3.73x" in text
    assert "Together they are 33% of grouped's time, for 9% of its FLOPs" in text  # (8 + 2) / 30, 0.1 / 1.1
    assert "ran at 50 GFLOP/s, the same layers dense in dense at 100" in text  # 1 GFLOP / 20 ms, 4 / 40 ms
    assert "their time fell 2.00x for a 4.00x cut in FLOPs" in text


# --- the commands --------------------------------------------------------------------------------

@pytest.fixture
def small_configs(tmp_path):
    paths = {}
    for family, name in (("squeezebert", "tiny"), ("bert", "tiny-bert")):
        paths[family] = tmp_path / f"{name}.json"
        paths[family].write_text(json.dumps({"model_type": family, **FAMILIES[family]}))
    return paths


@pytest.mark.parametrize("plot_format", ["png", "svg", "pdf"])
def test_report_measure_writes_the_profile_sweeps_and_figures(small_configs, tmp_path, capsys, plot_format):
    out = tmp_path / "out"
    code = main(["report", "--config", str(small_configs["squeezebert"]), "--baseline", str(small_configs["bert"]),
                 "--measure", "--repeat", "2", "--seq-len", "8", "--batch-size", "2", "--format", "json",
                 "--out", str(out), "--plot-format", plot_format])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(stdout)
    assert r["measured"] == {"repeat": 2}
    assert set(r["machine"]) == {"cpus", "cpu", "numpy", "blas", "blas_threads"}
    assert r["machine"]["blas_threads"] in (1, None)  # --threads 1, the default, while measuring
    for entry, family in zip(r["models"], ("squeezebert", "bert")):
        p = entry["profile"]
        assert {"forward_ms", "forward_min_ms", "profiled_ms", "modules_ms", "repeat", "modules", "pairs"} <= set(p)
        assert entry["latency_ms"] == p["forward_ms"] > 0
        steps = flops.elementwise_steps(small(family), 8, 2)
        assert [m["name"] for m in p["modules"]] == [m for m in flops.modules(None) if m != "embeddings"] + list(steps)
        assert sum(m["flops"] for m in p["modules"]) == entry["flops"]
    sweeps = r["sweeps"]
    assert [row["groups"] for row in sweeps["groups"]] == [1, 2, 4, 8, 16]
    for row, counted in zip(sweeps["groups"], r["groups_sweep"]["rows"]):
        assert set(row) == {"groups", "params", "flops", "ms", "min_ms"} and row["ms"] > 0
        assert (row["params"], row["flops"]) == (counted["params"], counted["flops"])
    assert [row["seq_len"] for row in sweeps["seq_len"]] == [16, 32, 64]  # up to max_position_embeddings 64
    for row in sweeps["seq_len"]:
        assert set(row["ms"]) == set(row["flops"]) == {"tiny", "tiny-bert"}
        assert row["flops"]["tiny"] == sum(flops.analytic_flops(small("squeezebert"), row["seq_len"], 2).values())
    md = (out / "report.md").read_text()
    for section in ("## Where the time goes", "### tiny-bert against tiny, module by module",
                    "### Why a FLOP ratio of", "Amdahl's law", "### Latency against groups",
                    "### Latency against sequence length"):
        assert section in md
    figures = {f"{name}.{plot_format}" for name in ("flops_by_module", "flops_vs_seq_len", "params_by_module",
                                                    "groups_sweep", *profiler.FIGURES)}
    assert {p.name for p in out.iterdir()} == figures | {"report.md", "report.json"}
    for name in figures:
        data = (out / name).read_bytes()
        if plot_format == "png":
            from PIL import Image

            with Image.open(out / name) as image:
                assert image.info["dpi"] == pytest.approx((150, 150), abs=0.1), name
                assert np.asarray(image.convert("L")).std() > 10, name  # not blank
        else:
            assert data.startswith(b"%PDF" if plot_format == "pdf" else b"<?xml"), name


def test_bench_profile(small_configs, capsys):
    assert main(["bench", str(small_configs["bert"]), "--seq-len", "12", "--repeat", "2", "--profile",
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["results"][0]
    names = [x["name"] for x in m["profile"]["modules"]]
    steps = flops.elementwise_steps(small("bert"), 12)
    assert names == [x for x in flops.modules(None) if x != "embeddings"] + list(steps)
    assert sum(x["flops"] for x in m["profile"]["modules"]) * 1e-9 == pytest.approx(m["gflops"])
    assert main(["bench", str(small_configs["bert"]), "--seq-len", "12", "--repeat", "2", "--profile"]) == 0
    table = capsys.readouterr().out
    assert "## Where the time goes: tiny-bert, batch 1 x 12" in table and "| LayerNorm | 5 |" in table


def test_using_threads_restores_the_count():
    before = parallel.get_threads()
    with parallel.using_threads(1):
        assert parallel.get_threads() == 1
        with parallel.using_threads(None):  # None: as outside
            assert parallel.get_threads() == 1
    assert parallel.get_threads() == before


@pytest.mark.parametrize("argv, message", [
    (["report", "--measure", "--threads", "0"], "--threads must be a positive integer"),
    (["report", "--plot-format", "gif"], None),  # argparse's own message, exit status 2
])
def test_bad_measure_arguments(argv, message, capsys):
    if message is None:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and "invalid choice: 'gif'" in capsys.readouterr().err
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("npsqueeze report: error: ") and message in err and err.count("\n") == 1

