"""`--cluster`: the commands' chunks on a Dask LocalCluster of two worker processes give the bytes a
local run gives, a killed worker's chunks are done again, and what cannot work is one line. Skipped
where dask is not installed (the torch-free tier), but for the line that says how to install it."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import npsqueeze
from bounded import assert_one_line
from npsqueeze import NpsqueezeError
from npsqueeze.tools import infer
from test_stream import files, lines, models, npsqueeze_cli  # noqa: F401 (fixtures)

NEEDS_DASK = 'needs dask[distributed], which is not installed (pip install "npsqueeze[dask]")'


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed", reason=NEEDS_DASK)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        yield c.scheduler_address, client


def test_a_cluster_run_gives_the_bytes_of_a_local_run(cluster, models, files, tmp_path):
    address, _ = cluster
    common = [models[None], "--file", files[2_000]]
    local = npsqueeze_cli("embed", *common, "--out", tmp_path / "local.npy")
    remote = npsqueeze_cli("embed", *common, "--out", tmp_path / "remote.npy", "--cluster", address)
    assert local.returncode == 0 and remote.returncode == 0
    assert remote.stderr == f"wrote {tmp_path / 'remote.npy'}: 2,000 embeddings of 48 dims\n"
    assert (tmp_path / "remote.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"text": t, "pair": t[:9]}) + "\n" for t in lines(500)))
    common = ["classify", models["sequence"], "--file", tmp_path / "pairs.jsonl", "--batch-size", 8]
    local = npsqueeze_cli(*common, "--json")
    remote = npsqueeze_cli(*common, "--json", env={**os.environ, "NPSQUEEZE_CLUSTER": address})  # the variable
    assert remote.returncode == 0 and remote.stderr == "" and remote.stdout == local.stdout


def test_a_killed_worker_has_its_chunks_done_again(cluster, models, files, tmp_path):
    address, client = cluster
    local = npsqueeze_cli("embed", models[None], "--file", files[20_000], "--out", tmp_path / "local.npy")
    assert local.returncode == 0
    out = tmp_path / "remote.npy"
    command = subprocess.Popen([sys.executable, "-m", "npsqueeze", "embed", str(models[None]), "--file",
                                str(files[20_000]), "--out", str(out), "--cluster", address],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data = tmp_path / "remote.npy.partial" / "data"
    deadline = time.monotonic() + 300
    while not (data.exists() and data.stat().st_size > 0.2 * (tmp_path / "local.npy").stat().st_size):
        assert command.poll() is None and time.monotonic() < deadline, command.communicate()
        time.sleep(0.01)
    victim, pid = next(iter(client.run(os.getpid).items()))
    os.kill(pid, signal.SIGKILL)  # mid-job: its chunks in flight are lost
    _, err = command.communicate(timeout=300)
    err = err.decode()  # a loaded machine may add a line of dask's own (a heartbeat missed); never a traceback
    assert command.returncode == 0 and err.endswith(f"wrote {out}: 20,000 embeddings of 48 dims\n"), err
    assert "Traceback" not in err and err.count("\n") <= 2, err
    assert out.read_bytes() == (tmp_path / "local.npy").read_bytes()
    client.wait_for_workers(2, timeout=120)  # its nanny starts it again, for the tests after this one


def test_the_python_api_takes_a_client_or_its_executor(cluster, models):
    _, client = cluster
    texts = lines(100, seed=3)
    here = npsqueeze.pipeline("sentence-embedding", models[None])(texts)
    for executor in (client, client.get_executor()):
        embed = npsqueeze.pipeline("sentence-embedding", models[None], batch_size=4, executor=executor)
        np.testing.assert_allclose(embed(texts), here, atol=1e-6)
    with pytest.raises(NpsqueezeError, match="^executor= takes a concurrent.futures.Executor or a distributed.Client, "
                                             "not str$"):
        npsqueeze.pipeline("sentence-embedding", models[None], executor="tcp://127.0.0.1:8786")


def test_the_commands_client_keeps_no_copy_of_the_chunks_it_sends(cluster, models, monkeypatch):
    # Dask's client keeps its last 1,000 messages to the scheduler, each with a chunk's lines: the
    # command's memory grew with the job until connect() turned that log off.
    import distributed

    from npsqueeze.tools.cluster import connect

    address, _ = cluster
    clients = []

    class Client(distributed.Client):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clients.append(self)

    monkeypatch.setattr(distributed, "Client", Client)
    with connect(address, functools.partial(infer.predict, npsqueeze.pipeline("sentence-embedding", models[None]), {})) \
            as (executor, _):
        assert [f.result() for f in [executor.submit(len, "x" * n) for n in range(50)]] == list(range(50))
        log = clients[0].scheduler_comm.recent_message_log
    assert log.maxlen == 0 and not log
    assert logging.getLogger("distributed.client").getEffectiveLevel() == logging.CRITICAL  # it told of retries


def test_workers_that_cannot_load_the_model_are_one_line(cluster, models, tmp_path):
    address, _ = cluster
    from npsqueeze.tools.cluster import connect

    folder = tmp_path / "model"  # the workers have never loaded this path
    shutil.copytree(models[None], folder)
    task = functools.partial(infer.predict, npsqueeze.SentenceEmbedding.from_pretrained(folder), {})
    shutil.rmtree(folder)  # loaded here; not there for the workers
    with pytest.raises(NpsqueezeError) as e:
        with connect(address, task):
            pass
    assert str(e.value).startswith("the cluster's worker tcp://") and str(e.value).endswith(
        f" and 1 other cannot load the model: no checkpoint folder at {folder}")


def test_an_address_that_does_not_answer_is_one_line_within_10_s(cluster, models):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert_one_line(npsqueeze_cli("embed", models[None], "x", "--cluster", f"tcp://127.0.0.1:{port}"),
                    f"no Dask scheduler answers at tcp://127.0.0.1:{port}", prefix="npsqueeze embed: error: ")
    assert time.monotonic() - start < 10
    with socket.socket() as server:  # something else answers: a web server, say
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer():
            connection, _ = server.accept()
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 100)
            time.sleep(1)
            connection.close()

        threading.Thread(target=answer, daemon=True).start()
        address = "tcp://127.0.0.1:%d" % server.getsockname()[1]
        assert_one_line(npsqueeze_cli("embed", models[None], "x", "--cluster", address),
                        f"what answers at {address} is not a Dask scheduler", prefix="npsqueeze embed: error: ")


def test_without_dask_the_line_names_the_extra(models):
    blocked = ("import sys; sys.modules['distributed'] = None; from npsqueeze.tools.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", blocked, "embed", str(models[None]), "x", "--cluster",
                           "tcp://127.0.0.1:8786"], capture_output=True, text=True, timeout=120)
    assert_one_line(done, 'npsqueeze embed: error: --cluster needs Dask, which is not installed: '
                          'pip install "npsqueeze[dask]"')
