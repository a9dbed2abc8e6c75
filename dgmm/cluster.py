"""Where a fit runs: the current distributed client, or a LocalCluster of our own.

A LocalCluster that dgmm starts has one worker process per core, one thread
each; distributed's nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in the workers
(``distributed.nanny.pre-spawn-environ``), so BLAS never oversubscribes the
cores. Data-parallelism comes from Dask splitting rows across workers, which
is where the speed-up is on BLAS-3 shapes this small.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import dask.array as da
from distributed import Client, LocalCluster, default_client, wait

__all__ = ["fit_client", "maybe_persist", "total_threads"]

logger = logging.getLogger("dgmm")

# Persist the input when it takes at most this fraction of the workers' memory.
PERSIST_FRACTION = 0.5


def _current_client() -> Client | None:
    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def fit_client() -> Iterator[Client]:
    """The current client, or a LocalCluster started here and closed on exit."""
    client = _current_client()
    if client is not None:
        yield client
        return
    n_workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        logger.info(
            "dgmm started a LocalCluster: %d workers x 1 thread; dashboard %s",
            n_workers, client.dashboard_link,
        )
        yield client


def _workers(client: Client) -> dict[str, Any]:
    import inspect

    # Some distributed releases list only the first few workers unless asked.
    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1).get("workers", {})
    return client.scheduler_info().get("workers", {})


def total_threads(client: Client) -> int:
    """Threads across the cluster's workers (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in _workers(client).values()))


def total_memory(client: Client) -> float:
    """Sum of the workers' memory limits in bytes (0 when unlimited or unknown)."""
    return float(sum(w.get("memory_limit", 0) or 0 for w in _workers(client).values()))


def maybe_persist(x: da.Array, client: Client) -> da.Array:
    """Persist ``x`` once when it fits comfortably in the workers' memory.

    Either way the EM passes run the same graph code; a persisted array just
    has no storage reads in it.
    """
    memory = total_memory(client)
    if memory and x.nbytes <= PERSIST_FRACTION * memory:
        x = client.persist(x)
        wait(x)
        logger.info("input of %.3g GB persisted in cluster memory", x.nbytes / 1e9)
    else:
        logger.info(
            "input of %.3g GB streamed from storage every pass (workers hold %.3g GB)",
            x.nbytes / 1e9, memory / 1e9,
        )
    return x
