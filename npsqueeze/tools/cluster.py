"""`--cluster ADDRESS`: a command's chunks run on the workers of a Dask cluster (`pip install
"npsqueeze[dask]"`, on the workers too).

Each worker loads the checkpoint once, from the path the command was given (a folder every worker
can read at that path: a shared file system, or a copy at the same place on every machine), and
keeps it for every chunk it runs; the command first has every worker load it, and names the path
in one line if one cannot. Results come back to the command, which writes them in input order.
Dask runs a chunk again on another worker if its worker dies.

In Python, a pipeline runs its batches on a cluster the same way, given the cluster's client:

    import dask
    from distributed import Client
    dask.config.set({"distributed.admin.low-level-log-length": 0})  # see connect(): else memory grows
    client = Client("tcp://scheduler:8786")
    embed = npsqueeze.pipeline("sentence-embedding", "/shared/minilm", executor=client)
"""

from __future__ import annotations

import logging
import pickle
from contextlib import contextmanager
from typing import Callable

from ..config import NpsqueezeError
from ..workers import dask_executor

CONNECT_SECONDS = 5  # an address that does not answer: an error after this long


@contextmanager
def connect(address: str, task: Callable):
    """(executor, slots): a concurrent.futures executor of the Dask cluster whose scheduler is at
    `address` and the threads of its workers, every worker having loaded `task`'s pipeline."""
    try:
        import dask
        from distributed import Client
    except ImportError:
        raise NpsqueezeError('--cluster needs Dask, which is not installed: pip install "npsqueeze[dask]"') from None
    # A worker lost is retried, not told. Dask's configuration gives some of its loggers levels of their
    # own (distributed.client: "Couldn't gather 1 keys, rescheduling"), so each is set.
    for name in ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    check_scheduler(address)
    # The client keeps its last low-level-log-length (1,000) messages to the scheduler for debugging,
    # each task's pickled chunk among them: memory that grows with the job up to 1,000 chunks.
    with dask.config.set({"distributed.admin.low-level-log-length": 0}):
        client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    try:
        slots = sum(client.nthreads().values())
        if not slots:
            raise NpsqueezeError(f"the Dask cluster at {address} has no workers")
        check_workers(client, pickle.dumps(task))
        yield dask_executor(client), slots
    except (NpsqueezeError, OSError, KeyboardInterrupt):
        raise
    except Exception as e:  # the cluster's own: a chunk whose workers kept dying, a scheduler gone
        raise NpsqueezeError(f"the Dask cluster at {address} failed: {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    finally:
        client.close()


def check_scheduler(address: str) -> None:
    """A Dask scheduler must answer at `address` within CONNECT_SECONDS: asked who it is before a Client
    connects, which would otherwise take whatever answers (a web server, say) for one, and fail with
    errors of its own."""
    import asyncio

    from distributed.comm import connect

    async def identity() -> dict:
        comm = await connect(address, timeout=CONNECT_SECONDS)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), CONNECT_SECONDS)
        finally:
            comm.abort()

    try:
        reply = asyncio.run(identity())
    except (OSError, ValueError) as e:  # no answer in time (TimeoutError is an OSError), or not an address
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NpsqueezeError(f"no Dask scheduler answers at {address} ({why[:200]})") from None
    except Exception:  # what a stranger's bytes make of Dask's protocol
        reply = None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise NpsqueezeError(f"what answers at {address} is not a Dask scheduler")


def check_workers(client, task: bytes) -> None:
    """Have every worker load the task's pipeline now: an error names what a worker cannot load."""
    try:
        failed = {w: e for w, e in client.run(load, task).items() if e is not None}
    except Exception as e:  # what unpickling `load` raises where npsqueeze is not installed
        raise NpsqueezeError(f"the cluster's workers cannot run npsqueeze ({type(e).__name__}: {e}): install "
                             "it on them") from None
    if failed:
        worker, why = next(iter(failed.items()))
        others = f" and {len(failed) - 1} other{'s' * (len(failed) > 2)}" if len(failed) > 1 else ""
        raise NpsqueezeError(f"the cluster's worker {worker}{others} cannot load the model: {why}")


def load(task: bytes) -> str | None:
    """On a worker: load the pipeline of a pickled task (it stays loaded for the chunks to come);
    None, or why it cannot."""
    try:
        pickle.loads(task)
    except Exception as e:
        return str(e) if isinstance(e, NpsqueezeError) else f"{type(e).__name__}: {e}"
    return None
