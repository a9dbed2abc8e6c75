"""Model selection: a sweep K = 1..16 x {full, diag} in shared passes against the same 32 fits one by one.

1. The out-of-core store of ``bench_ooc.py`` (a mixture of ``--n-components``
   Gaussians in ``--n-features`` dimensions, float32, Zarr), written once
   unless ``--store`` names one; ``--small`` makes it small (a quick check).
2. Each mode runs in its own Python process with its own LocalCluster of
   ``--threads`` single-threaded worker processes (dgmm's default shape),
   reading the store on every pass (nothing is persisted). Every chunk
   handed to a task is counted on the workers: "reads" is chunk reads /
   chunks, i.e. full passes. Peak RSS: the client process plus the largest
   worker's high-water mark.
   * ``sweep``: ``dgmm.select(store, range(1, K + 1), ["full", "diag"])``;
   * ``one-by-one``: ``GaussianMixture(k, covariance_type=t).fit(store)`` for
     the same 32 candidates, same options and ``random_state``.
   Both start every candidate with ``--init`` (default kmeans: the sweep's
   candidates share its 2 passes, the one-by-one fits make 2 each).
3. Kernel batching (issue 14, item 3): one chunk's statistics in this
   process on one thread (BLAS pinned to one): all 32 candidates in one call
   (each block of rows serves every candidate while it is in cache), the
   largest candidate alone (K=16 full), and the 32 candidates one call each;
   with SGEMM's rate on an EM shape measured in the same run.

Nothing asserts: this is a report. ``python benchmarks/bench_select.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_READS: Counter[int] = Counter()
_LOCK = threading.Lock()


def _count(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    with _LOCK:
        _READS[block_info[0]["chunk-location"][0]] += 1
    return block


def counted(path: str) -> Any:
    """The store as a Dask array whose every chunk handed out is counted (on the worker that reads it)."""
    import bench_select
    import dask.array as da

    from dgmm import open_dataset

    x = open_dataset(path)
    return da.map_blocks(bench_select._count, x, dtype=x.dtype, meta=x._meta)


def write_store(path: str, n_bytes: float, n_features: int, n_components: int, chunk_mib: float) -> None:
    """bench_ooc.py's store (its chunk generator), float32, uncompressed, written by the public writer."""
    import dask.array as da
    from bench_ooc import _mixture_chunk

    import dgmm

    rows = max(1, int(chunk_mib * 2**20 // (n_features * 4)))
    n_rows = max(rows, int(n_bytes // (n_features * 4)) // rows * rows)
    template = da.empty((n_rows, n_features), chunks=(rows, n_features), dtype="float32")
    x = template.map_blocks(_mixture_chunk, n_features, n_components, 0, "float32", dtype="float32",
                            meta=np.empty((0, 0), dtype="float32"))
    import dask

    with dask.config.set(scheduler="threads"):
        dgmm.write_array(x, path, compressors=None)


def _worker_reads(dask_worker: Any = None) -> dict[str, Any]:
    import bench_select

    return {"reads": sum(bench_select._READS.values()),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    """One mode in this process and its own LocalCluster: reads, seconds, EM iterations, peak RSS."""
    import bench_select
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning

    import dgmm
    from dgmm.fit import cluster as _cluster

    warnings.simplefilter("ignore", ConvergenceWarning)
    _cluster.PERSIST_FRACTION = 0.0  # stream the store every pass, as data larger than memory
    with LocalCluster(n_workers=args.threads, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        x = bench_select.counted(args.store)
        n_chunks = x.numblocks[0]
        grid = [(k, t) for t in ("full", "diag") for k in range(1, args.max_components + 1)]
        options = dict(random_state=0, init_params=args.init, max_iter=args.max_iter)
        start = time.perf_counter()
        if args.mode == "sweep":
            sel = dgmm.select(x, range(1, args.max_components + 1), ["full", "diag"], prune=args.prune, **options)
            n_iter = [c.n_iter for c in sel.candidates]
            em_passes = sel.sweep.iterations
            best = sel.best_params_
        else:
            n_iter = []
            for k, t in grid:
                n_iter.append(dgmm.GaussianMixture(k, covariance_type=t, **options).fit(x).n_iter_)
            em_passes = sum(n_iter)
            best = None
        seconds = time.perf_counter() - start
        workers = client.run(_worker_reads).values()
    reads = sum(w["reads"] for w in workers) / n_chunks
    return {
        "mode": args.mode + (" (prune)" if args.prune else ""),
        "seconds": seconds,
        "reads": reads,
        "em_passes": em_passes,
        "other_reads": reads - em_passes,
        "n_iter": n_iter,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + max(w["peak_mb"] for w in workers),
        "best": best,
    }


def batching(path: str, max_components: int, repeats: int) -> dict[str, float]:
    """Seconds of one chunk's statistics: all candidates in one call, the largest alone, one call each."""
    from threadpoolctl import threadpool_limits

    from dgmm import open_dataset
    from dgmm.core.family import family_of
    from dgmm.core.kernels import chunk_stats
    from dgmm.core.params import GMMParams

    x = open_dataset(path)
    block = np.asarray(x.blocks[0].compute(scheduler="sync"))
    rng = np.random.default_rng(0)
    d = block.shape[1]
    sample = block[: 20_000].astype(np.float64)
    params = []
    for t in ("full", "diag"):
        for k in range(1, max_components + 1):
            means = sample[rng.choice(len(sample), k, replace=False)]
            cov = np.tile(np.cov(sample.T), (k, 1, 1)) if t == "full" else np.tile(sample.var(axis=0), (k, 1))
            params.append(GMMParams.from_covariances(np.full(k, 1.0 / k), means, cov, t))
    sources = [family_of(p).e_step(p) for p in params]

    def timed(srcs: list[Any]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            chunk_stats(block, tuple(srcs))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with threadpool_limits(1, user_api="blas"):
        largest = timed([sources[max_components - 1]])  # K = max, full
        together = timed(sources)
        one_by_one = sum(timed([s]) for s in sources)
        a = rng.standard_normal((block.shape[0], d), dtype=np.float32)
        b = rng.standard_normal((d, 256), dtype=np.float32)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        sgemm = 5 * 2 * a.shape[0] * d * 256 / (time.perf_counter() - start) / 1e9
    return {"all_candidates_s": together, "largest_alone_s": largest, "sum_one_by_one_s": one_by_one,
            "ratio_all_to_largest": together / largest, "ratio_all_to_sum": together / one_by_one,
            "sgemm_gflops": sgemm, "rows": int(block.shape[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="an existing store of bench_ooc.py (default: write one)")
    parser.add_argument("--gb", type=float, default=1.0, help="store size, GB (default %(default)s)")
    parser.add_argument("--small", action="store_true", help="a 0.02 GB store in 2 MiB chunks: a quick check")
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-components", type=int, default=8, help="true components (default %(default)s)")
    parser.add_argument("--max-components", type=int, default=16, help="sweep K = 1..this (default %(default)s)")
    parser.add_argument("--init", default="kmeans")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="worker processes (1 thread each)")
    parser.add_argument("--repeats", type=int, default=3, help="kernel batching: median of this many passes")
    parser.add_argument("--mode", default=None, choices=["sweep", "one-by-one"], help=argparse.SUPPRESS)
    parser.add_argument("--prune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results there")
    args = parser.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(run_mode(args)))
        return
    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="dgmm-bench-select-")
        args.store = os.path.join(tmp, "data.zarr")
        gb, chunk_mib = (0.02, 2.0) if args.small else (args.gb, 64.0)
        write_store(args.store, gb * 1e9, args.n_features, args.n_components, chunk_mib)
    base = [sys.executable, __file__, "--store", args.store, "--max-components", str(args.max_components),
            "--init", args.init, "--max-iter", str(args.max_iter), "--threads", str(args.threads)]
    results = []
    for extra in (["--mode", "sweep"], ["--mode", "sweep", "--prune"], ["--mode", "one-by-one"]):
        # The workers import this file as bench_select (its read counter) and dgmm from here.
        path = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        out = subprocess.run(base + extra, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{' '.join(extra)} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    kernel = batching(args.store, args.max_components, args.repeats)
    print(f"store {args.store}: K = 1..{args.max_components} x {{full, diag}}, init {args.init}, "
          f"{args.threads} threads")
    print("| mode | reads of the data | EM passes | other reads (init, checks) | wall s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['reads']:.1f} | {r['em_passes']} | {r['other_reads']:.1f} | "
              f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    print(f"best of the sweep: {results[0]['best']}; with prune: {results[1]['best']}")
    print(f"kernel batching, one chunk of {kernel['rows']} rows, 1 thread: all 32 candidates in one call "
          f"{kernel['all_candidates_s']:.3f} s; the largest (K={args.max_components} full) alone "
          f"{kernel['largest_alone_s']:.3f} s (sweep / largest = {kernel['ratio_all_to_largest']:.1f}); "
          f"32 calls one by one {kernel['sum_one_by_one_s']:.3f} s (sweep / sum = {kernel['ratio_all_to_sum']:.2f}); "
          f"SGEMM (rows x {args.n_features})(x 256) {kernel['sgemm_gflops']:.1f} GFLOP/s, same run")
    if args.json:
        Path(args.json).write_text(json.dumps({"modes": results, "kernel": kernel}, indent=1))
    if tmp is not None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
