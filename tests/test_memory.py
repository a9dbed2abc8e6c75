"""Bounded memory: fitting a Zarr store 4x larger than the workers' memory limit.

Two worker processes with an explicit ``memory_limit`` fit a store four times
their total limit, streaming it from disk every pass. The workers' own state
says whether they were restarted (pid), paused (status, sampled in the
worker, and the memory monitor's log), or spilled (the spill buffer's
counters and log); the kernel's high-water mark of each worker's resident
set (``VmHWM``, reset before each fit) gives its peak memory. Fitting the
first half and then the whole store shows the peak does not grow with n.

Linux only (``/proc``). The store is written once per module (~3.6 GB of
float32, page cache permitting, a few seconds).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from dgmm import GaussianMixture, open_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

N_WORKERS = 2
MEMORY_LIMIT = 450 * 2**20  # per worker; a bare worker with dgmm imported is ~240 MiB
DATA_BYTES = 4 * N_WORKERS * MEMORY_LIMIT
N_FEATURES = 16
CHUNK_ROWS = 2**17  # 8 MiB chunks of float32
CHUNK_BYTES = CHUNK_ROWS * N_FEATURES * 4
N_COMPONENTS = 4
# Peak RSS of the fit of the whole store may exceed the fit of its first half
# by at most this: were memory to grow with n, the extra half would add
# ~900 MiB per worker.
N_MARGIN = 48 * 2**20


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _start_monitor(dask_worker=None) -> int:
    """Reset the worker's peak RSS and sample its status and managed memory."""
    from distributed.core import Status

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    stop = threading.Event()
    stats = {"paused": False, "managed_max": 0, "rss_start": _rss_bytes()}

    def sample() -> None:
        while not stop.is_set():
            stats["paused"] |= dask_worker.status == Status.paused
            stats["managed_max"] = max(stats["managed_max"], dask_worker.state.nbytes)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    dask_worker._dgmm_test_monitor = (stop, thread, stats)
    return os.getpid()


def _stop_monitor(dask_worker=None) -> dict:
    stop, thread, stats = dask_worker._dgmm_test_monitor
    stop.set()
    thread.join()
    data = dask_worker.data
    spilled = getattr(data, "spilled_total", (0, 0))
    metrics = getattr(data, "cumulative_metrics", {})
    return {
        **stats,
        "pid": os.getpid(),
        "peak_rss": _hwm_bytes(),
        "spilled_bytes": int(spilled[0]) if isinstance(spilled, tuple) else int(spilled),
        "disk_writes": sum(v for (label, unit), v in metrics.items() if label == "disk-write" and unit == "count"),
        "status": str(dask_worker.status),
        "memory_limit": dask_worker.memory_manager.memory_limit,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[str]:
    """A Zarr v3 store of ~DATA_BYTES float32 rows, written chunk by chunk."""
    path = str(tmp_path_factory.mktemp("memory") / "big.zarr")
    n_rows = DATA_BYTES // (4 * N_FEATURES) // CHUNK_ROWS * CHUNK_ROWS
    z = zarr.create_array(
        path, shape=(n_rows, N_FEATURES), chunks=(CHUNK_ROWS, N_FEATURES),
        dtype=np.float32, compressors=None,
    )
    rng = np.random.default_rng(3)
    block = rng.standard_normal((CHUNK_ROWS, N_FEATURES), dtype=np.float32)
    centres = rng.normal(0, 4, size=(N_COMPONENTS, N_FEATURES)).astype(np.float32)
    # One random block, shifted to a different centre per chunk: a mixture
    # without generating 3.6 GB of random numbers.
    for i, start in enumerate(range(0, n_rows, CHUNK_ROWS)):
        z[start : start + CHUNK_ROWS] = block + centres[i % N_COMPONENTS]
    yield path
    shutil.rmtree(path, ignore_errors=True)  # pytest keeps recent temporary directories


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=N_WORKERS, threads_per_worker=1, processes=True,
        memory_limit=MEMORY_LIMIT, dashboard_address=":0",
    ) as lc, Client(lc) as client:
        yield client


def _fit(client, X: da.Array, max_iter: int) -> tuple[GaussianMixture, dict]:
    rng = np.random.default_rng(0)
    means = rng.normal(0, 4, size=(N_COMPONENTS, N_FEATURES))
    gmm = GaussianMixture(
        N_COMPONENTS, covariance_type="diag", max_iter=max_iter, tol=0.0,
        weights_init=np.full(N_COMPONENTS, 1 / N_COMPONENTS), means_init=means,
        precisions_init=np.full((N_COMPONENTS, N_FEATURES), 0.1),
    )
    pids = client.run(_start_monitor)
    with client.as_current():
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # few iterations, tol=0
            gmm.fit(X)
    stats = client.run(_stop_monitor)
    assert {w: s["pid"] for w, s in stats.items()} == pids, "a worker was restarted"
    return gmm, stats


def _memory_complaints(client) -> list[str]:
    """Lines of the workers' logs where the memory monitor paused, spilled or restarted."""
    words = ("Pausing", "Resuming", "Memory use is high", "spill", "Restarting", "exceeded")
    return [
        f"{worker}: {message}"
        for worker, logs in client.get_worker_logs().items()
        for _, message in logs
        if any(w in message for w in words)
    ]


def test_fit_streams_a_store_four_times_the_memory_limit(cluster, store):
    # The cluster starts before the 3.6 GB store is written, not while the disk flushes it.
    client = cluster
    X = open_dataset(store, chunks=CHUNK_ROWS)
    assert X.chunks[0][0] == CHUNK_ROWS
    total_limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    assert total_limit == N_WORKERS * MEMORY_LIMIT
    assert X.nbytes >= 3.9 * total_limit
    spill_fraction = dask.config.get("distributed.worker.memory.spill")

    # One EM pass over half the rows, then one over all of them (the store is
    # streamed, never persisted: see managed_max below).
    half, stats_half = _fit(client, X[: X.shape[0] // 2], max_iter=1)
    full, stats_full = _fit(client, X, max_iter=1)
    assert full.n_iter_ == 1 and np.isfinite(full.lower_bound_)

    print(
        "\nworker RSS MiB (before fit, peak n/2, peak n):",
        [(s["rss_start"] >> 20, stats_half[w]["peak_rss"] >> 20, s["peak_rss"] >> 20) for w, s in stats_full.items()],
    )
    assert _memory_complaints(client) == []
    for worker, stats in stats_full.items():
        assert stats["status"] == "Status.running", worker
        assert not stats["paused"], worker
        assert stats["spilled_bytes"] == 0 and stats["disk_writes"] == 0, worker
        # Nothing was persisted: a worker never held more than a few chunks.
        assert stats["managed_max"] <= 8 * CHUNK_BYTES, worker
        # Below the level where distributed starts spilling, and no more above
        # the worker's idle size than a few chunks.
        assert stats["peak_rss"] < spill_fraction * MEMORY_LIMIT, (worker, stats)
        assert stats["peak_rss"] - stats["rss_start"] < 16 * CHUNK_BYTES, (worker, stats)
        # Bounded by block and K, not n: twice the rows, the same peak.
        assert stats["peak_rss"] - stats_half[worker]["peak_rss"] < N_MARGIN, (
            worker, stats["peak_rss"], stats_half[worker]["peak_rss"],
        )
