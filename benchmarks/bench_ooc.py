"""Out-of-core EM: seconds and GB/s per iteration against the raw read of the same store.

1. A Zarr store of ``--gb`` gigabytes (a mixture of ``--n-components``
   Gaussians in ``--n-features`` dimensions) is written chunk by chunk by the
   workers (``dgmm.write_array``), unless ``--store`` names one that
   exists already.
2. A LocalCluster of ``--n-workers`` single-threaded workers (dgmm's default
   shape) starts with an explicit ``--memory-limit`` per worker, so that the
   store is larger than the workers' total memory: dgmm does not persist it
   and every EM iteration streams it from storage again.
3. "Raw read": one Dask pass over the same array (same chunks, same graph
   shape: a task per chunk, a tree reduction of tiny results) that reads and
   discards every chunk. Measured before and after the fits; the faster is
   the reference.
4. EM with ``covariance_type="diag"`` and ``"full"`` from fixed initial
   parameters (no initialisation passes), ``tol=0``, ``--iters`` iterations.
   Seconds per iteration: the median of ``history_[i]["seconds"]`` over
   iterations 2.. (iteration 1 also checks the data for NaN/Inf).
   GB/s per iteration: store bytes (uncompressed) / seconds per iteration.

The ratio EM GB/s / raw-read GB/s is the figure of merit (target >= 0.7 for
diag: EM must not be the bottleneck when I/O is). The page cache matters: a
store smaller than the machine's free RAM is read from memory after its
first pass, so "raw read" then measures decompression and Dask overheads,
not the disk. The script says which (``--drop-caches`` tries to empty the
page cache before each measurement, which needs root and a writable
``/proc/sys/vm/drop_caches``).

Object storage is I/O-bound where a local disk or the page cache is not:
``--remote-mb-per-s B`` reads the same store through ``RemoteLikeStore``
(``_remote_emulation.py``): every GET still reads the local bytes, then waits
``--remote-latency-ms`` + bytes / B on Zarr's event loop, holding no CPU, as
a socket read does. Both the raw read and EM go through it.

Per-worker peak RSS (kernel high-water mark, reset before each measurement)
and whether any worker paused, spilled or restarted are reported too. Nothing
asserts: this is a report. ``python benchmarks/bench_ooc.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 0.7


# -- data ---------------------------------------------------------------------

def _mixture_chunk(block: np.ndarray, n_features: int, n_components: int, seed: int, dtype: str,
                   block_info: dict | None = None) -> np.ndarray:
    """Rows of one chunk of the mixture, seeded by the chunk's index."""
    index = block_info[None]["chunk-location"][0] if block_info else 0
    n_rows = block.shape[0]
    centres = np.random.default_rng(seed).normal(0.0, 5.0, size=(n_components, n_features))
    rng = np.random.default_rng([seed, index])
    labels = rng.integers(n_components, size=n_rows)
    x = rng.standard_normal((n_rows, n_features), dtype=np.float32 if dtype == "float32" else np.float64)
    centres = centres.astype(x.dtype)
    # In slices: a chunk-sized temporary would double the task's memory.
    for start in range(0, n_rows, 65536):
        x[start : start + 65536] += centres[labels[start : start + 65536]]
    return x


def write_store(path: str, n_bytes: float, n_features: int, n_components: int, dtype: str,
                chunk_mib: float, compressors: str, seed: int = 0) -> None:
    import dask.array as da

    from dgmm import write_array

    itemsize = np.dtype(dtype).itemsize
    rows = max(1, int(chunk_mib * 2**20 // (n_features * itemsize)))
    n_rows = max(rows, int(n_bytes // (n_features * itemsize)) // rows * rows)
    template = da.empty((n_rows, n_features), chunks=(rows, n_features), dtype=dtype)
    x = template.map_blocks(
        _mixture_chunk, n_features, n_components, seed, dtype, dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
    )
    kwargs: dict[str, Any] = {} if compressors == "default" else {"compressors": None}
    write_array(x, path, **kwargs)


def open_store(path: str, remote: dict[str, float] | None = None) -> Any:
    """The store as dgmm opens it; with ``remote``, behind ``RemoteLikeStore``."""
    from dgmm import open_dataset

    if remote is None:
        return open_dataset(path)
    import zarr
    from _remote_emulation import RemoteLikeStore
    from zarr.storage import LocalStore

    store = RemoteLikeStore(LocalStore(path, read_only=True), remote["latency_s"], remote["bytes_per_s"])
    return open_dataset(zarr.open_array(store=store, mode="r"))


# -- measurements ---------------------------------------------------------------

def _rows(block: np.ndarray) -> np.ndarray:
    return np.array([block.shape[0]], dtype=np.int64)


def raw_read_seconds(X: Any) -> float:
    """One pass that reads every chunk and keeps only its row count."""
    import dask.array as da

    counts = X.map_blocks(_rows, drop_axis=1, chunks=((1,) * X.numblocks[0],), dtype=np.int64,
                          meta=np.empty((0,), dtype=np.int64))
    start = time.perf_counter()
    total = int(da.sum(counts, split_every=8).compute())
    seconds = time.perf_counter() - start
    assert total == X.shape[0], (total, X.shape)
    return seconds


def chunk_cpu_seconds(X: Any, n_components: int, covariance_types: list[str], repeats: int = 3) -> dict[str, float]:
    """CPU seconds of one chunk's read and of its E-step + statistics, in this process.

    CPU time, not wall time, so the split is meaningful on a busy machine too.
    """
    from dgmm.core.kernels import EStep, chunk_stats
    from dgmm.core.params import GMMParams

    index = min(1, X.numblocks[0] - 1)
    out: dict[str, float] = {"chunk_bytes": float(X.blocks[index].nbytes)}
    start = time.process_time()
    for _ in range(repeats):
        block = X.blocks[index].compute(scheduler="sync")
    out["read"] = (time.process_time() - start) / repeats
    for ct in covariance_types:
        init = initial_params(X.shape[1], n_components, ct)
        params = GMMParams.from_precisions(init["weights_init"], init["means_init"], init["precisions_init"], ct)
        source = EStep(params)
        chunk_stats(block, (source,))
        start = time.process_time()
        for _ in range(repeats):
            chunk_stats(block, (source,))
        out[ct] = (time.process_time() - start) / repeats
    return out


def initial_params(n_features: int, n_components: int, covariance_type: str, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 5.0, size=(n_components, n_features))
    precisions = {
        "diag": np.full((n_components, n_features), 1 / 25.0),
        "full": np.repeat(np.eye(n_features)[None] / 25.0, n_components, axis=0),
    }[covariance_type]
    return {"weights_init": np.full(n_components, 1 / n_components), "means_init": means,
            "precisions_init": precisions}


def fit_seconds(X: Any, covariance_type: str, n_components: int, iters: int) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    gmm = dgmm.GaussianMixture(
        n_components, covariance_type=covariance_type, max_iter=iters, tol=0.0,
        **initial_params(X.shape[1], n_components, covariance_type),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(X)
    wall = time.perf_counter() - start
    seconds = [h["seconds"] for h in gmm.history_]
    timed = seconds[1:] if len(seconds) > 1 else seconds  # the first also checks NaN/Inf
    return {"seconds": seconds, "seconds_per_iter": statistics.median(timed), "wall": wall,
            "n_iter": gmm.n_iter_, "lower_bound": gmm.lower_bound_}


def _reset_peak(dask_worker: Any = None) -> int:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return os.getpid()


def _worker_report(dask_worker: Any = None) -> dict[str, Any]:
    import psutil

    peak = 0
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = int(psutil.Process().memory_info().rss)
    spilled = getattr(dask_worker.data, "spilled_total", (0, 0))
    return {"pid": os.getpid(), "peak_rss": peak,
            "spilled_bytes": int(spilled[0]) if isinstance(spilled, tuple) else int(spilled),
            "status": str(dask_worker.status)}


def _memory_log_lines(client: Any) -> list[str]:
    words = ("Pausing", "Memory use is high", "spill", "Restarting", "exceeded")
    return [m for logs in client.get_worker_logs().values() for _, m in logs if any(w in m for w in words)]


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def measure(label: str, client: Any, run: Any, drop: bool) -> dict[str, Any]:
    dropped = drop and drop_caches()
    log_before = len(_memory_log_lines(client))
    pids = client.run(_reset_peak)
    load_before = os.getloadavg()[0]
    out = run()
    workers = client.run(_worker_report)
    out = out if isinstance(out, dict) else {"seconds": out}
    out.update({
        "label": label,
        "caches_dropped": dropped,
        "peak_rss_per_worker": [w["peak_rss"] for w in workers.values()],
        "spilled_bytes": sum(w["spilled_bytes"] for w in workers.values()),
        "restarted": {w["pid"] for w in workers.values()} != set(pids.values()),
        # Worker log lines about pausing / spilling / restarting during this pass.
        "memory_events": len(_memory_log_lines(client)) - log_before,
        "loadavg": [load_before, os.getloadavg()[0]],
    })
    print(f"# {label}: {json.dumps({k: v for k, v in out.items() if k != 'seconds'}, default=str)}",
          file=sys.stderr, flush=True)
    return out


# -- report -------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    nbytes = result["store"]["nbytes"]
    lines = [
        f"store: {nbytes / 1e9:.2f} GB uncompressed ({result['store']['stored_bytes'] / 1e9:.2f} GB on disk, "
        f"compressors={result['args']['compressors']}), {result['store']['n_chunks']} chunks of "
        f"{result['store']['chunk_rows']} rows x {result['store']['n_features']} {result['args']['dtype']}; "
        f"{result['args']['n_workers']} workers x {result['args']['threads_per_worker']} thread(s), memory_limit {result['args']['memory_limit']} each "
        f"({result['total_memory_limit'] / 1e9:.2f} GB total); K={result['args']['n_components']}; "
        f"{result['page_cache_note']}",
        "",
        "| pass | page cache | s/iter | GB/s | vs raw read | target | met | worker peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|:-:|---:|",
    ]
    for cache in ("warm", "cold"):
        raws = [r for r in result["raw_read"] if r["label"].startswith(cache)]
        if not raws:
            continue
        raw = min(r["seconds"] for r in raws)
        for r in raws:
            lines.append(
                f"| raw read ({r['label']}) | {cache} | {r['seconds']:.3f} | {nbytes / r['seconds'] / 1e9:.2f} | "
                f"{raw / r['seconds']:.2f} | | | {max(r['peak_rss_per_worker']) / 2**20:.0f} |"
            )
        for r in [f for f in result["fits"] if f["label"].endswith(cache)]:
            ratio = raw / r["seconds_per_iter"]
            diag = r["label"].startswith("diag")
            lines.append(
                f"| EM {r['label'].split(',')[0]} | {cache} | {r['seconds_per_iter']:.3f} | "
                f"{nbytes / r['seconds_per_iter'] / 1e9:.2f} | {ratio:.2f} | {f'{TARGET:.2f}' if diag else ''} | "
                f"{('yes' if ratio >= TARGET else 'no') if diag else ''} | {max(r['peak_rss_per_worker']) / 2**20:.0f} |"
            )
    cpu = result.get("chunk_cpu")
    if cpu:
        mib = cpu["chunk_bytes"] / 2**20
        parts = ", ".join(f"E-step + statistics {ct} {cpu[ct]:.3f} s" for ct in cpu if ct not in ("read", "chunk_bytes"))
        lines += ["", f"CPU seconds per {mib:.0f} MiB chunk (one thread): read {cpu['read']:.3f} s, {parts}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=6.0, help="store size, uncompressed GB (default %(default)s)")
    parser.add_argument("--n-features", type=int, default=16, help="default %(default)s")
    parser.add_argument("--n-components", type=int, default=16, help="default %(default)s")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--chunk-mib", type=float, default=64.0, help="MiB per chunk (default %(default)s)")
    parser.add_argument("--compressors", default="none", choices=["none", "default"],
                        help="'none' (raw floats) or 'default' (zarr's default, zstd); default %(default)s")
    parser.add_argument("--iters", type=int, default=None, help="EM iterations per warm fit (default 3; cold fits run 1)")
    parser.add_argument("--n-workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="default %(default)s")
    parser.add_argument("--memory-limit", default=None,
                        help="per worker (default: the store / 3 / n_workers, at least 1 GiB: "
                             "the store is ~3x the workers' total)")
    parser.add_argument("--covariance-types", default="diag,full")
    parser.add_argument("--remote-mb-per-s", type=float, default=None,
                        help="read through an emulated object store: every GET waits latency + bytes / "
                             "this bandwidth (MB/s per request), holding no CPU (benchmarks/_remote_emulation.py)")
    parser.add_argument("--remote-latency-ms", type=float, default=20.0,
                        help="first-byte latency per GET with --remote-mb-per-s (default %(default)s)")
    parser.add_argument("--store", default=None, help="Zarr store path (kept); default a temporary one, removed")
    parser.add_argument("--drop-caches", action="store_true", help="try to empty the page cache before each pass")
    parser.add_argument("--quick", action="store_true", help="a 1.5 GB store, 8 MiB stored chunks: a smoke check")
    parser.add_argument("--output", type=Path, default=None, help="write all measurements as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.gb = min(args.gb, 1.5)
        args.chunk_mib = min(args.chunk_mib, 8.0)
    iters = args.iters or 3
    n_workers = args.n_workers or len(os.sched_getaffinity(0))
    if args.memory_limit is None:
        # The store must exceed the workers' total memory (so nothing is
        # persisted); a worker needs ~250 MiB for itself.
        # With 64 MiB chunks a worker peaks at ~4 chunks above its idle size.
        per_worker = max(2**30, int(args.gb * 1e9 / 3 / n_workers))
        args.memory_limit = f"{per_worker / 2**20:.0f}MiB"
    args.n_workers = n_workers

    remote = None
    if args.remote_mb_per_s is not None:
        remote = {"latency_s": args.remote_latency_ms / 1e3, "bytes_per_s": args.remote_mb_per_s * 1e6}
        # The workers unpickle RemoteLikeStore: they import it from here.
        here = str(Path(__file__).resolve().parent)
        sys.path.insert(0, here)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))

    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    workdir = None
    store = args.store
    if store is None:
        workdir = tempfile.mkdtemp(prefix="dgmm-bench-ooc-")
        store = os.path.join(workdir, "data.zarr")
    result: dict[str, Any] = {"args": vars(args) | {"iters": iters, "output": str(args.output)}}
    try:
        with LocalCluster(
            n_workers=n_workers, threads_per_worker=args.threads_per_worker, processes=True,
            memory_limit=args.memory_limit, dashboard_address=":0",
        ) as cluster, Client(cluster) as client:
            client.wait_for_workers(n_workers)
            if not os.path.exists(store):
                print(f"# writing {args.gb} GB to {store} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                write_store(store, args.gb * 1e9, args.n_features, args.n_components, args.dtype,
                            args.chunk_mib, args.compressors)
                result["write_seconds"] = time.perf_counter() - start
            X = open_store(store, remote)
            stored = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
            total_limit = n_workers * parse_bytes(args.memory_limit)
            result["total_memory_limit"] = total_limit
            result["store"] = {"path": store, "nbytes": int(X.nbytes), "stored_bytes": stored,
                               "n_chunks": X.numblocks[0], "chunk_rows": X.chunks[0][0],
                               "n_features": X.shape[1], "n_rows": X.shape[0]}
            free_ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            result["page_cache_note"] = (
                f"store {stored / 1e9:.1f} GB on disk vs {free_ram / 1e9:.1f} GB free RAM: "
                + ("it fits in the page cache, so reads after the first come from memory"
                   if stored < free_ram else "it does not fit in the page cache: reads hit the disk")
            )
            if remote is not None:
                result["page_cache_note"] += (
                    f"; read through an emulated object store: {args.remote_latency_ms:g} ms + "
                    f"bytes / {args.remote_mb_per_s:g} MB/s per GET"
                )
            print(f"# {result['page_cache_note']}", file=sys.stderr)
            if X.nbytes <= total_limit:
                print("# WARNING: the store fits in the workers' memory limit", file=sys.stderr)
            # Warm-up: imports and the kernels on the workers, and a first read of the store.
            fit_seconds(X[: X.chunks[0][0] * n_workers], "diag", 2, 2)
            raw_read_seconds(X)
            cts = [c for c in args.covariance_types.split(",") if c]
            # Page cache warm: every pass reads memory (when the store fits in RAM).
            # One BLAS thread, as in the workers (the nanny sets it there).
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                result["chunk_cpu"] = chunk_cpu_seconds(X, args.n_components, cts)
            print(f"# CPU seconds per chunk: {result['chunk_cpu']}", file=sys.stderr, flush=True)
            result["raw_read"] = [measure("warm, before", client, lambda: raw_read_seconds(X), False)]
            result["fits"] = [
                measure(f"{ct}, warm", client, lambda ct=ct: fit_seconds(X, ct, args.n_components, iters), False)
                for ct in cts
            ]
            result["raw_read"].append(measure("warm, after", client, lambda: raw_read_seconds(X), False))
            if args.drop_caches:
                # Page cache emptied before each pass: the pass reads the disk.
                # One EM iteration per fit (its pass also checks for NaN/Inf).
                result["raw_read"].append(measure("cold", client, lambda: raw_read_seconds(X), True))
                result["fits"] += [
                    measure(f"{ct}, cold", client, lambda ct=ct: fit_seconds(X, ct, args.n_components, 1), True)
                    for ct in cts
                ]
            result["memory_log"] = _memory_log_lines(client)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["meta"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                      "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    table = markdown(result)
    print(table)
    if result["memory_log"]:
        print("\nworker memory log lines:\n" + "\n".join(result["memory_log"]))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
