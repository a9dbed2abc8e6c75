"""MultinomialMixture on a corpus shaped like a real one, against scipy's sparse product rate.

1. A corpus is generated and stored as an AnnData-layout Zarr group (``X``:
   ``data``, ``indices``, ``indptr`` with ``encoding-type: csr_matrix``;
   ``obs`` and ``var`` written by ``anndata.io.write_elem``), chunk by chunk so
   the generator's memory stays at one batch of documents: ``--n-features``
   words (200,000) with Zipf frequencies (rank r has probability ~ r^-s), and
   ``--n-docs`` documents (10^6) of ~``--doc-length`` words (200; log-normal
   lengths), each drawn from one of ``--n-components`` topics, a topic being
   the Zipf distribution times a log-normal factor per word. The store is
   then read back by ``anndata`` (``read_elem`` of ``obs`` / ``var``, rows of
   ``X`` through ``sparse_dataset``, and the whole ``read_zarr`` for small
   corpora) and checked against what was written.
2. The reference, in the same run, on one chunk as dgmm chunks the store:
   scipy's ``X_chunk @ B`` (CSR x a (V, K) dense matrix: the E-step's shape)
   and ``X_chunk.T @ R`` (the statistics' shape), one core; their rate in
   non-zeros per second. dgmm's whole ``chunk_stats`` on the same chunk is
   timed in this process too, and the size of its statistics in the sparse
   form (only the words the chunk holds) and the dense V x K one.
3. dgmm's default LocalCluster shape (one single-threaded worker process per
   core, memory limit "auto"), started by the benchmark so it can read the
   workers' peak memory and the task stream. ``MultinomialMixture`` fits the
   store from fixed starting parameters (no initialisation pass), ``tol=0``,
   ``--iters`` iterations, once per statistics form in ``--stats``:
   ``auto`` (the library's choice: only the words seen while a partial holds
   at most half the vocabulary) and ``dense`` (every partial V x K float64,
   forced by setting ``dgmm.core.multinomial.SPARSE_FRACTION = 0`` on the
   client and the workers). Both must give bit-identical parameters.

Reported per form: seconds per iteration (median of ``history_`` over
iterations 2.., the first also checks the data), throughput in non-zeros per
second and its ratio to scipy's rate times the number of workers, peak worker
RSS (kernel high-water mark, reset before the fit), and the reduction's share
of an iteration from the task stream: the tail from the last chunk task's end
to the root merge's end, over the iteration's span, and the merge tasks'
compute and transfer seconds. Nothing asserts: this is a report.
``python benchmarks/bench_multinomial.py --help``.
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
import scipy.sparse as sp

# -- the corpus ---------------------------------------------------------------------


def topics(n_features: int, n_components: int, zipf: float, spread: float, seed: int) -> np.ndarray:
    """(K, V) word distributions: Zipf(``zipf``) frequencies times a log-normal factor per word."""
    rng = np.random.default_rng(seed)
    base = np.arange(1, n_features + 1, dtype=np.float64) ** -zipf
    # A random rank order per corpus, so word index and frequency are unrelated (as in a vocabulary).
    base = base[rng.permutation(n_features)]
    prob = base[None, :] * np.exp(spread * rng.standard_normal((n_components, n_features)))
    return prob / prob.sum(axis=1, keepdims=True)


def _documents(cdf: np.ndarray, weights: np.ndarray, n_docs: int, doc_length: float,
               rng: np.random.Generator) -> sp.csr_matrix:
    """``n_docs`` documents as float32 CSR counts with int32 indices (tokens drawn per topic)."""
    n_components, n_features = cdf.shape
    sigma = 0.5
    lengths = np.maximum(1, np.rint(rng.lognormal(np.log(doc_length) - sigma**2 / 2, sigma, n_docs))).astype(np.int64)
    labels = rng.choice(n_components, size=n_docs, p=weights)
    rows, cols = [], []
    for k in np.unique(labels):
        docs = np.flatnonzero(labels == k)
        n_tokens = int(lengths[docs].sum())
        words = np.searchsorted(cdf[k], rng.uniform(0.0, cdf[k, -1], n_tokens), side="right")
        rows.append(np.repeat(docs, lengths[docs]).astype(np.int32))
        cols.append(np.minimum(words, n_features - 1).astype(np.int32))
    coo = sp.coo_matrix(
        (np.ones(sum(r.size for r in rows), dtype=np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_docs, n_features),
    )
    x = coo.tocsr()
    x.sum_duplicates()
    x.indices = x.indices.astype(np.int32, copy=False)
    return x


class _Appender:
    """Appends to a 1-D Zarr array in whole stored chunks (a partial chunk is written once, at the end)."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.size = 0
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def add(self, values: np.ndarray, final: bool = False) -> None:
        self.pending.append(values)
        self.n_pending += values.size
        chunk = self.array.chunks[0]
        n = self.n_pending if final else (self.n_pending // chunk) * chunk
        if n == 0:
            return
        joined = np.concatenate(self.pending)
        self.array.resize((self.size + n,))
        self.array[self.size : self.size + n] = joined[:n]
        self.size += n
        self.pending = [joined[n:]]
        self.n_pending = joined.size - n


def write_corpus(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The AnnData-layout store at ``path``, written batch by batch; returns what was written."""
    import anndata
    import pandas as pd
    import zarr

    prob = topics(args.n_features, args.n_components, args.zipf, args.spread, args.seed)
    cdf = np.cumsum(prob, axis=1)
    weights = np.random.default_rng(args.seed + 1).dirichlet(np.full(args.n_components, 5.0))
    compressors = None if args.compressors == "none" else "auto"
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's notices about its settings
        anndata.io.write_elem(root, "obs", pd.DataFrame(index=pd.RangeIndex(args.n_docs).astype(str)))
        anndata.io.write_elem(root, "var", pd.DataFrame(index=[f"w{i}" for i in range(args.n_features)]))
    group = root.create_group("X")
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                        "shape": [args.n_docs, args.n_features]})
    chunk = int(args.chunk_nnz)
    data = _Appender(group.create_array("data", shape=(0,), chunks=(chunk,), dtype="float32", compressors=compressors))
    indices = _Appender(group.create_array("indices", shape=(0,), chunks=(chunk,), dtype="int32", compressors=compressors))
    indptr = np.zeros(args.n_docs + 1, dtype=np.int64)
    rng = np.random.default_rng(args.seed + 2)
    batch = max(1, int(args.batch_docs))
    first = None
    for start in range(0, args.n_docs, batch):
        stop = min(args.n_docs, start + batch)
        x = _documents(cdf, weights, stop - start, args.doc_length, rng)
        if first is None:
            first = x[: min(100, x.shape[0])].copy()
        indptr[start + 1 : stop + 1] = indptr[start] + x.indptr[1:]
        final = stop == args.n_docs
        data.add(x.data, final)
        indices.add(x.indices, final)
    group.create_array("indptr", shape=indptr.shape, chunks=(min(indptr.size, 1 << 20),), dtype="int64",
                       compressors=compressors)[:] = indptr
    return {"nnz": int(indptr[-1]), "first_rows": first}


def check_with_anndata(path: str, written: dict[str, Any], full_read_max_nnz: float) -> dict[str, Any]:
    """Read the store back with anndata: obs/var, the first rows of X, and all of it when small."""
    import anndata
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(path, mode="r")
        obs = anndata.io.read_elem(root["obs"])
        var = anndata.io.read_elem(root["var"])
        backed = anndata.io.sparse_dataset(root["X"])
        first = written["first_rows"]
        rows = backed[: first.shape[0]]
        out = {"obs_rows": len(obs), "var_rows": len(var), "X_shape": list(backed.shape),
               "first_rows_equal": bool((rows != first).nnz == 0)}
        if written["nnz"] <= full_read_max_nnz:
            adata = anndata.read_zarr(path)
            out["read_zarr_nnz"] = int(adata.X.nnz)
            out["read_zarr_nnz_equal"] = int(adata.X.nnz) == written["nnz"]
    return out


# -- the reference: scipy's products on one chunk --------------------------------------------


def _best(f: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def chunk_reference(x: sp.csr_matrix, start: Any, repeats: int) -> dict[str, Any]:
    """scipy's two products and dgmm's ``chunk_stats`` on chunk ``x``, one core, same process."""
    from threadpoolctl import threadpool_limits

    from dgmm.core import multinomial as mn

    n_components = start.n_components
    prepared = mn.prepare(start, x.dtype)
    rng = np.random.default_rng(0)
    resp = rng.dirichlet(np.ones(n_components), size=x.shape[0]).astype(x.dtype)
    with threadpool_limits(1):
        e_step = _best(lambda: x @ prepared.log_prob_t, repeats)
        statistics_ = _best(lambda: x.T @ resp, repeats)
        kernel = _best(lambda: mn.chunk_stats(x, prepared), repeats)
        # Blocks of 4 MB of (rows x K), the default before sparse_block_rows.
        small_rows = mn.block_rows_for(n_components, x.dtype.itemsize)
        small_blocks = _best(lambda: mn.chunk_stats(x, prepared, block_rows=small_rows), repeats)
    sparse_stats = mn.chunk_stats(x, prepared, kind="sparse")
    dense_stats = mn.chunk_stats(x, prepared, kind="dense")
    return {
        "rows": int(x.shape[0]), "nnz": int(x.nnz),
        "words_seen": int(sparse_stats.features.size),
        "words_seen_fraction": float(sparse_stats.features.size / x.shape[1]),
        "scipy_x_at_B_s": e_step, "scipy_xT_at_R_s": statistics_,
        "scipy_nnz_per_s": x.nnz / (e_step + statistics_),
        "dgmm_chunk_stats_s": kernel, "dgmm_chunk_nnz_per_s": x.nnz / kernel,
        "dgmm_chunk_stats_4MB_blocks_s": small_blocks, "rows_per_block_4MB": small_rows,
        "stats_bytes_sparse": sparse_stats.nbytes, "stats_bytes_dense": dense_stats.nbytes,
    }


# -- the fits ------------------------------------------------------------------------------


def _reset_peak(dask_worker: Any = None) -> int:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return os.getpid()


def _peak_rss(dask_worker: Any = None) -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import psutil

        return int(psutil.Process().memory_info().rss)


def _set_sparse_fraction(value: float, dask_worker: Any = None) -> float:
    from dgmm.core import multinomial as mn

    mn.SPARSE_FRACTION = value
    return value


def _reduction_share(stream: list[dict[str, Any]], n_chunks: int, iters: int) -> dict[str, Any]:
    """The reduction's share of each pass, from the task stream (passes do not overlap)."""
    def span(task: dict[str, Any], action: str) -> list[tuple[float, float]]:
        return [(s["start"], s["stop"]) for s in task["startstops"] if s["action"] == action]

    chunk_tasks, merges = [], []
    for task in stream:
        compute = span(task, "compute")
        if not compute:
            continue
        name = str(task["key"][0] if isinstance(task["key"], tuple) else task["key"])
        record = {"start": compute[0][0], "stop": compute[-1][1],
                  "compute": sum(b - a for a, b in compute),
                  "transfer": sum(b - a for a, b in span(task, "transfer"))}
        if name.startswith("_pinned"):
            chunk_tasks.append(record)
        elif name.startswith("_merge_restarts"):
            merges.append(record)
    chunk_tasks.sort(key=lambda r: r["start"])
    merges.sort(key=lambda r: r["start"])
    n_passes = len(chunk_tasks) // n_chunks if n_chunks else 0
    per_merge = len(merges) // n_passes if n_passes else 0
    tails, spans = [], []
    for p in range(n_passes):
        chunks = chunk_tasks[p * n_chunks : (p + 1) * n_chunks]
        tree = merges[p * per_merge : (p + 1) * per_merge]
        first = min(r["start"] for r in chunks)
        last_chunk = max(r["stop"] for r in chunks)
        end = max([r["stop"] for r in tree] + [last_chunk])
        tails.append(end - last_chunk)
        spans.append(end - first)
    timed = slice(1, None) if n_passes > 1 else slice(None)
    return {
        "passes": n_passes, "merges_per_pass": per_merge,
        "tail_s": statistics.median(tails[timed]) if tails else None,
        "span_s": statistics.median(spans[timed]) if spans else None,
        "tail_share": (statistics.median([t / s for t, s in zip(tails[timed], spans[timed])]) if tails else None),
        "merge_compute_s_per_pass": sum(r["compute"] for r in merges) / max(n_passes, 1),
        "merge_transfer_s_per_pass": sum(r["transfer"] for r in merges) / max(n_passes, 1),
        "chunk_compute_s_per_pass": sum(r["compute"] for r in chunk_tasks) / max(n_passes, 1),
        "chunk_transfer_s_per_pass": sum(r["transfer"] for r in chunk_tasks) / max(n_passes, 1),
    }


def fit(client: Any, X: Any, start: Any, args: argparse.Namespace, form: str) -> dict[str, Any]:
    """One timed fit with the statistics form ``form`` ("auto" or "dense")."""
    from distributed import get_task_stream
    from sklearn.exceptions import ConvergenceWarning

    import dgmm
    from dgmm.core import multinomial as mn

    fraction = 0.0 if form == "dense" else float(args.sparse_fraction)
    previous = mn.SPARSE_FRACTION
    mn.SPARSE_FRACTION = fraction
    client.run(_set_sparse_fraction, fraction)
    pids = client.run(_reset_peak)
    mm = dgmm.MultinomialMixture(
        start.n_components, alpha=args.alpha, max_iter=args.iters, tol=0.0, client=client, random_state=0,
        weights_init=start.weights, feature_prob_init=np.exp(start.feature_log_prob),
    )
    try:
        wall = time.perf_counter()
        with warnings.catch_warnings(), get_task_stream(client) as ts:
            warnings.simplefilter("ignore", ConvergenceWarning)
            mm.fit(X)
        wall = time.perf_counter() - wall
    finally:
        mn.SPARSE_FRACTION = previous
        client.run(_set_sparse_fraction, previous)
    peaks = client.run(_peak_rss)
    seconds = [h["seconds"] for h in mm.history_ if "seconds" in h]
    timed = seconds[1:] if len(seconds) > 1 else seconds
    per_iter = statistics.median(timed)
    nnz = int(args.nnz)
    return {
        "form": form, "sparse_fraction": fraction, "wall_s": wall, "seconds": seconds,
        "seconds_per_iter": per_iter, "nnz_per_s": nnz / per_iter,
        "peak_worker_rss": [int(peaks[a]) for a in sorted(peaks)],
        "restarted": set(peaks) != set(pids),
        "reduction": _reduction_share(ts.data, X.numblocks[0], args.iters),
        "lower_bound": float(mm.lower_bound_), "params": mm.params_,
    }


# -- report ------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    ref = result["reference"]
    n_workers = result["n_workers"]
    lines = [
        f"corpus: {result['n_docs']:,} documents x {result['n_features']:,} words, "
        f"{result['nnz']:,} non-zeros, K={result['n_components']}, {result['n_chunks']} chunks "
        f"(~{result['nnz'] // result['n_chunks']:,} nnz each); {n_workers} workers x 1 thread",
        f"one chunk: {ref['rows']:,} rows, {ref['nnz']:,} nnz, {ref['words_seen']:,} words seen "
        f"({ref['words_seen_fraction']:.1%} of V); statistics {ref['stats_bytes_sparse'] / 1e6:.1f} MB "
        f"sparse vs {ref['stats_bytes_dense'] / 1e6:.1f} MB dense",
        f"scipy, one core: X@B {ref['scipy_x_at_B_s']:.3f} s + X.T@R {ref['scipy_xT_at_R_s']:.3f} s = "
        f"{ref['scipy_nnz_per_s'] / 1e6:.1f} M nnz/s; dgmm chunk_stats {ref['dgmm_chunk_stats_s']:.3f} s "
        f"= {ref['dgmm_chunk_nnz_per_s'] / 1e6:.1f} M nnz/s ({ref['dgmm_chunk_nnz_per_s'] / ref['scipy_nnz_per_s']:.2f} x scipy); "
        f"with blocks of {ref['rows_per_block_4MB']} rows (4 MB of rows x K) {ref['dgmm_chunk_stats_4MB_blocks_s']:.3f} s",
        "",
        "| statistics | s / iteration | M nnz/s | vs scipy x workers | peak worker RSS (GB) "
        "| reduction tail (s) | tail share | merge compute + transfer (s / pass) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["fits"]:
        red = r["reduction"]
        lines.append(
            f"| {r['form']} | {r['seconds_per_iter']:.2f} | {r['nnz_per_s'] / 1e6:.1f} | "
            f"{r['nnz_per_s'] / (ref['scipy_nnz_per_s'] * n_workers):.2f} | "
            f"{max(r['peak_worker_rss']) / 1e9:.2f} | {red['tail_s']:.2f} | {red['tail_share']:.1%} | "
            f"{red['merge_compute_s_per_pass']:.2f} + {red['merge_transfer_s_per_pass']:.2f} |"
        )
    if "identical" in result:
        lines.append(f"\nparameters bit-identical across statistics forms: {result['identical']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-docs", type=float, default=1e6, help="documents (default 1e6)")
    parser.add_argument("--n-features", type=float, default=2e5, help="vocabulary size V (default 2e5)")
    parser.add_argument("--n-components", type=int, default=100, help="K, topics of the corpus and of the fit")
    parser.add_argument("--doc-length", type=float, default=200.0, help="mean words per document")
    parser.add_argument("--zipf", type=float, default=1.07, help="Zipf exponent of the word frequencies")
    parser.add_argument("--spread", type=float, default=1.0, help="log-normal spread of a topic around Zipf")
    parser.add_argument("--chunk-nnz", type=float, default=None,
                        help="non-zeros per stored data chunk (and so per Dask chunk); default dgmm's DEFAULT_CHUNK_NNZ")
    parser.add_argument("--batch-docs", type=float, default=2e4, help="documents generated at a time")
    parser.add_argument("--compressors", choices=("auto", "none"), default="auto",
                        help="Zarr's default compression (zstd) or none")
    parser.add_argument("--iters", type=int, default=4, help="EM iterations per fit (the first is not timed)")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--stats", default="auto,dense", help="statistics forms to fit with: auto, dense")
    parser.add_argument("--sparse-fraction", type=float, default=None,
                        help="SPARSE_FRACTION for the 'auto' form (default the library's)")
    parser.add_argument("--n-workers", type=int, default=None, help="workers (default one per core, as dgmm)")
    parser.add_argument("--store", default=None, help="an existing store to reuse, or where to write one")
    parser.add_argument("--keep", action="store_true", help="keep the generated store")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the one-chunk reference (best of)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write every measurement as JSON")
    args = parser.parse_args(argv)
    args.n_docs, args.n_features = int(args.n_docs), int(args.n_features)

    import dask
    import scipy
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.core import multinomial as mn
    from dgmm.io.sparse import DEFAULT_CHUNK_NNZ, open_sparse_zarr

    args.chunk_nnz = int(args.chunk_nnz or DEFAULT_CHUNK_NNZ)
    if args.sparse_fraction is None:
        args.sparse_fraction = mn.SPARSE_FRACTION
    workdir = None
    store = args.store
    if store is None:
        workdir = tempfile.mkdtemp(prefix="dgmm-bench-mnm-")
        store = os.path.join(workdir, "corpus.zarr")
    result: dict[str, Any] = {
        "n_docs": args.n_docs, "n_features": args.n_features, "n_components": args.n_components,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                     "dask": dask.__version__, "dgmm": dgmm.__version__},
        "loadavg_start": os.getloadavg(),
    }
    try:
        if not os.path.exists(store):
            print(f"# writing {args.n_docs:,} documents to {store} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            written = write_corpus(store, args)
            result["write_s"] = time.perf_counter() - t
            result["anndata_check"] = check_with_anndata(store, written, 2e7)
            print(f"# written in {result['write_s']:.0f} s; anndata reads it: {result['anndata_check']}",
                  file=sys.stderr, flush=True)
        result["stored_bytes"] = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
        # As dgmm.open_dataset(store, key="X") opens it, with --chunk-nnz non-zeros per chunk.
        X = open_sparse_zarr(store, key="X", target_nnz=args.chunk_nnz)
        args.nnz = result["nnz"] = _stored_nnz(store)
        result["n_chunks"] = X.numblocks[0]
        start = mn.MultinomialParams.from_probabilities(
            np.full(args.n_components, 1.0 / args.n_components),
            topics(args.n_features, args.n_components, args.zipf, args.spread, args.seed + 100),
        )
        chunk = X.blocks[min(1, X.numblocks[0] - 1)].compute(scheduler="sync")
        result["reference"] = chunk_reference(chunk, start, args.repeats)
        print(f"# reference: {json.dumps(result['reference'])}", file=sys.stderr, flush=True)
        del chunk
        n_workers = args.n_workers or os.cpu_count() or 1
        result["n_workers"] = n_workers
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit="auto",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.wait_for_workers(n_workers)
            # Warm-up: imports and kernels on the workers, on the first chunk only.
            head = X[: X.chunks[0][0]]
            warm = mn.MultinomialParams(start.weights, start.feature_log_prob)
            fit(client, head, warm, argparse.Namespace(**{**vars(args), "iters": 1}), "auto")
            result["fits"] = []
            for form in args.stats.split(","):
                out = fit(client, X, start, args, form.strip())
                print(f"# {form}: {out['seconds_per_iter']:.2f} s/iteration, reduction {out['reduction']}",
                      file=sys.stderr, flush=True)
                result["fits"].append(out)
        params = [r.pop("params") for r in result["fits"]]
        if len(params) > 1:
            result["identical"] = all(p.equals(params[0]) for p in params[1:])
        result["loadavg_end"] = os.getloadavg()
    finally:
        if workdir is not None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = markdown(result)
    print(report)
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1, default=str))


def _stored_nnz(store: str) -> int:
    import zarr

    return int(zarr.open_group(store, mode="r")["X"]["data"].shape[0])


if __name__ == "__main__":
    main()
