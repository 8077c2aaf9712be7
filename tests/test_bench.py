"""`npsqueeze bench` on tiny models: what it reports, and that its numbers hang together. No timing
assertions: speed is for the benchmark itself (bench/compare.py), never for a unit test."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from npsqueeze import ops, parallel
from npsqueeze.tools import flops, measure
from npsqueeze.tools.tally import count_flops
from npsqueeze.tools.cli import main
from npsqueeze.config import Config
from checkpoints import SMALL, build

FIELDS = {"model", "weights", "head", "batch_size", "seq_len", "threads", "median_ms", "min_ms", "sequences_per_s",
          "gflops", "effective_gflop_per_s", "load_s", "weights_mb", "peak_rss_mb", "rss_over_weights", "ratio"}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"model_type": "squeezebert", **SMALL}))
    return path


def bench_json(capsys, *argv):
    assert main(["bench", *argv, "--json"]) == 0
    out, err = capsys.readouterr()
    r = json.loads(out)
    # a line on stderr as each workload finishes
    assert err.splitlines() == [f"npsqueeze bench: [{i}/{len(r['results'])}] {m['model']}, batch {m['batch_size']}, "
                                f"seq {m['seq_len']}: median {m['median_ms']:.1f} ms, ratio {m['ratio']:.2f}"
                                for i, m in enumerate(r["results"], 1)]
    return r


def test_bench_on_a_config_with_random_weights(tiny_config, capsys):
    r = bench_json(capsys, str(tiny_config), "--batch-size", "1", "3", "--seq-len", "8", "--repeat", "3",
                   "--threads", "1")
    assert r["repeat"] == 3 and r["environment"]["cpus"] >= 1 and r["environment"]["numpy"]
    cfg = Config.from_file(tiny_config)
    assert [(m["batch_size"], m["seq_len"]) for m in r["results"]] == [(1, 8), (3, 8)]
    for m in r["results"]:
        assert set(m) == FIELDS
        assert (m["model"], m["weights"], m["head"], m["load_s"]) == ("tiny", "random", None, None)
        assert m["threads"] == 1  # --threads reached the child process's environment
        assert m["gflops"] * 1e9 == pytest.approx(sum(flops.analytic_flops(cfg, 8, m["batch_size"]).values()))
        assert 0 < m["min_ms"] <= m["median_ms"]
        assert m["sequences_per_s"] == pytest.approx(m["batch_size"] / m["median_ms"] * 1e3)
        assert m["effective_gflop_per_s"] == pytest.approx(m["gflops"] / m["median_ms"] * 1e3)
        assert m["weights_mb"] * 1e6 == 4 * sum(flops.params(cfg).values())
        assert m["peak_rss_mb"] > m["weights_mb"]  # the process holds the weights, and Python besides
        assert m["rss_over_weights"] == pytest.approx(m["peak_rss_mb"] / m["weights_mb"])


def test_ratio_is_over_the_first_model_of_the_same_workload(tiny_config, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model_type": "bert", **SMALL, "num_hidden_layers": 1}))
    r = bench_json(capsys, str(tiny_config), str(other), "--seq-len", "8", "16", "--repeat", "2")
    assert [(m["model"], m["seq_len"]) for m in r["results"]] == [("tiny", 8), ("tiny", 16), ("other", 8), ("other", 16)]
    first = {m["seq_len"]: m["median_ms"] for m in r["results"][:2]}
    for m in r["results"]:
        assert m["ratio"] == pytest.approx(m["median_ms"] / first[m["seq_len"]])
    assert [m["ratio"] for m in r["results"][:2]] == [1.0, 1.0]


def test_bench_loads_a_checkpoint_and_prints_a_table(tmp_path, capsys):
    build(tmp_path / "ckpt", "squeezebert", "mlm")
    assert main(["bench", str(tmp_path / "ckpt"), "--seq-len", "16", "--repeat", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| model | weights | batch | seq | threads | median ms | min ms | ratio |")
    cells = [c.strip() for c in table[4].strip("|").split("|")]
    assert cells[:4] == ["ckpt", "checkpoint", "1", "16"] and cells[7] == "1.00"
    r = bench_json(capsys, str(tmp_path / "ckpt"), "--seq-len", "16", "--repeat", "2")
    m = r["results"][0]
    assert m["head"] == "mlm" and m["load_s"] > 0
    cfg = Config.from_file(tmp_path / "ckpt")
    assert m["gflops"] * 1e9 == pytest.approx(sum(flops.analytic_flops(cfg, 16, 1, "mlm").values()))


def test_matrix_products_replay_exactly_the_forward_passes_products():
    """The floor bench/compare.py reports: every matmul of the forward pass, the same operands, nothing else."""
    cfg = Config.from_dict({"model_type": "squeezebert", **SMALL})
    rng = np.random.default_rng(0)
    model = flops.engine_model(cfg, "mlm", lambda shape: rng.standard_normal(shape, np.float32))
    ids = rng.integers(0, cfg.vocab_size, (3, 16))
    with count_flops() as forward:
        replay = measure.matrix_products(lambda: model(ids))
    with count_flops() as replayed:
        replay()
    assert replayed == forward == {t: n for t, n in flops.analytic_flops(cfg, 16, 3, "mlm").items() if n}
    products = {"forward": [], "replay": []}  # the same products, so no operand changed after its matmul
    for run, fn in (("forward", lambda: model(ids)), ("replay", replay)):
        def keep(a, b, tag, out=None, run=run):
            products[run].append(np.matmul(a, b))
            if out is None:
                return products[run][-1].copy()  # the forward adds biases in place to what matmul returns
            out[...] = products[run][-1]
            return out
        with pytest.MonkeyPatch.context() as m, parallel.using_threads(1):  # the batch on one thread, as recorded
            m.setattr(ops, "matmul", keep)
            fn()
    assert len(products["replay"]) == len(products["forward"]) > 0
    assert all(np.array_equal(x, y) for x, y in zip(products["forward"], products["replay"]))


@pytest.mark.parametrize("argv, message", [
    (["no-such-model"], "no such config file"),
    (["squeezebert-uncased", "--seq-len", "513"], "exceeds squeezebert-uncased's max_position_embeddings 512"),
    (["squeezebert-uncased", "--repeat", "0"], "--repeat must be a positive integer"),
    (["squeezebert-uncased", "--batch-size", "1", "-2"], "--batch-size must be a positive integer"),
    (["squeezebert-uncased", "--threads", "0"], "--threads must be a positive integer"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npsqueeze bench: error: ") and message in err and err.count("\n") == 1


def test_timings_take_turns_after_warming_up():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = measure.timings(fns, repeat=3)
    assert calls == ["a"] * measure.WARMUP + ["b"] * measure.WARMUP + ["a", "b"] * 3
    assert [len(t) for t in times.values()] == [3, 3] and all(s >= 0 for t in times.values() for s in t)
    calls.clear()
    times = measure.timings(fns, repeat=2, pause=0.01, settle=2)  # two untimed calls before each timed one
    assert calls == ["a"] * measure.WARMUP + ["b"] * measure.WARMUP + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(t) for t in times.values()] == [2, 2]


CHURN = """
import resource, sys, numpy as np
from npsqueeze.tools.measure import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def churn():  # like a block of the model: a few arrays of a few MB, freed together
    arrays = [np.ones(2**19, np.float32) for _ in range(4)]  # 4 x 2 MB
for _ in range(3):
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the limits are glibc malloc's")
@pytest.mark.parametrize("call, user_env, faults", [
    ("default", {}, True),  # glibc gives the memory back: ~2,000 page faults per 8 MB round
    ("keep", {}, False),
    ("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"}, True),  # the user's own setting wins
])
def test_keep_freed_memory_stops_page_faults(call, user_env, faults):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | user_env
    out = subprocess.run([sys.executable, "-c", CHURN, call], env=env, capture_output=True, text=True, check=True)
    n = int(out.stdout)
    assert n > 10_000 if faults else n < 100, n
