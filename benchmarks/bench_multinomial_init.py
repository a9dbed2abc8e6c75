"""MultinomialMixture's "kmeans" initialisation of two source trees, in the same run.

For each dataset and each of ``--seeds`` random states, each tree (``--tree
DIR``, given twice: e.g. an export of main and a working tree) runs in its own
process with ``PYTHONPATH=DIR``, alternating, on the same data:

1. ``dgmm.fit.init_multinomial.initialize`` alone (``n_init=1``) on the data
   as a row-chunked Dask array that counts every chunk it hands out: its wall
   seconds, and the reads of the chunks (a pass reads every chunk once; a
   gather a few);
2. a default fit (``init_params="kmeans"``, default ``tol``, ``max_iter=300``):
   the final mean log-likelihood per document (``score``), the EM
   iterations, whether it converged, the agreement of ``predict`` with the
   true labels (adjusted Rand index), and its wall seconds.

Datasets: ``corpus``, generated as ``bench_multinomial.py`` does (Zipf
frequencies times a log-normal factor per topic; log-normal document
lengths), held in memory as CSR; ``digits``, scikit-learn's bundled digits
(pixel intensities 0..16 as counts, 64 words, 10 classes). Nothing asserts:
this is a report. ``python benchmarks/bench_multinomial_init.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

_READS: Counter[int] = Counter()


def _counted(block: object, block_info: dict | None = None) -> object:
    if block_info is not None and None in block_info:
        _READS[block_info[None]["chunk-location"][0]] += 1
    return block


def corpus(n_docs: int, n_features: int, n_components: int, doc_length: float, seed: int,
           zipf: float, spread: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """Documents as float32 CSR counts, and their topics."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_multinomial import topics

    rng = np.random.default_rng(seed)
    cdf = np.cumsum(topics(n_features, n_components, zipf, spread, seed), axis=1)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    sigma = 0.5
    lengths = np.maximum(1, np.rint(rng.lognormal(np.log(doc_length) - sigma**2 / 2, sigma, n_docs))).astype(np.int64)
    labels = rng.choice(n_components, size=n_docs, p=weights)
    rows, cols = [], []
    for k in range(n_components):
        docs = np.flatnonzero(labels == k)
        words = np.searchsorted(cdf[k], rng.uniform(0.0, cdf[k, -1], int(lengths[docs].sum())), side="right")
        rows.append(np.repeat(docs, lengths[docs]))
        cols.append(np.minimum(words, n_features - 1))
    x = sp.coo_matrix(
        (np.ones(sum(r.size for r in rows), dtype=np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_docs, n_features),
    ).tocsr()
    x.sum_duplicates()
    return x, labels


def run_one(data_path: str, seed: int, chunks: int) -> dict:
    """One tree, one seed: the initialisation alone, then a default fit."""
    import dask
    import dask.array as da
    from sklearn.metrics import adjusted_rand_score

    import dgmm
    from dgmm.fit import init_multinomial
    from dgmm.io.sparse import from_scipy

    loaded = np.load(data_path)
    x = sp.csr_matrix((loaded["data"], loaded["indices"], loaded["indptr"]), shape=tuple(loaded["shape"]))
    labels, k = loaded["labels"], int(loaded["k"])
    base = from_scipy(x, chunks=chunks)
    counted = da.map_blocks(_counted, base, dtype=base.dtype, meta=base._meta)
    spec = dgmm.MultinomialMixture(k, random_state=seed).fit_spec()
    _READS.clear()
    with dask.config.set(scheduler="threads"):
        t0 = time.perf_counter()
        init_multinomial.initialize(counted, spec, 1)
        init_s = time.perf_counter() - t0
    n_chunks = len(base.chunks[0])
    reads = [_READS[i] for i in range(n_chunks)]
    t0 = time.perf_counter()
    mm = dgmm.MultinomialMixture(k, random_state=seed, max_iter=300, chunks=chunks, scheduler="threads").fit(x)
    fit_s = time.perf_counter() - t0
    return {
        "init_seconds": init_s,
        "init_reads_per_chunk_max": max(reads),
        "init_reads_total_over_chunks": sum(reads) / n_chunks,
        "fit_seconds": fit_s,
        "n_iter": int(mm.n_iter_),
        "converged": bool(mm.converged_),
        "mean_loglik": float(mm.score(x)),
        "ari": float(adjusted_rand_score(labels, mm.predict(x))),
    }


def _save(path: Path, x: sp.csr_matrix, labels: np.ndarray, k: int) -> None:
    np.savez(path, data=x.data, indices=x.indices, indptr=x.indptr, shape=np.asarray(x.shape),
             labels=labels, k=k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="a source tree (twice: old, new)")
    parser.add_argument("--datasets", default="corpus,digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-docs", type=float, default=3e5)
    parser.add_argument("--n-features", type=float, default=2e4)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--doc-length", type=float, default=60.0)
    parser.add_argument("--zipf", type=float, default=1.07)
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--chunks", type=int, default=25_000, help="rows per chunk")
    parser.add_argument("--output", type=Path, default=None, help="write every measurement as JSON")
    parser.add_argument("--one", nargs=3, metavar=("DATA", "SEED", "CHUNKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            path = Path(tmp) / f"{name}.npz"
            if name == "corpus":
                x, labels = corpus(int(args.n_docs), int(args.n_features), args.n_components, args.doc_length,
                                   0, args.zipf, args.spread)
                _save(path, x, labels, args.n_components)
                chunks = args.chunks
            else:
                from sklearn.datasets import load_digits

                digits = load_digits()
                x = sp.csr_matrix(digits.data.astype(np.float64))
                _save(path, x, digits.target, 10)
                chunks = 400
            print(f"{name}: {x.shape[0]} documents, {x.shape[1]} words, {x.nnz} non-zeros, "
                  f"{-(-x.shape[0] // chunks)} chunks", flush=True)
            for seed in range(args.seeds):
                for tree in args.tree:
                    env = {**os.environ, "PYTHONPATH": tree}
                    out = subprocess.run(
                        [sys.executable, __file__, "--tree", tree, "--one", str(path), str(seed), str(chunks)],
                        env=env, capture_output=True, text=True, check=True,
                    )
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault(name, {}).setdefault(tree, []).append(row)
                    print(f"  seed {seed} {tree}: {row}", flush=True)
    print()
    print("| dataset | tree | init reads per chunk (max / mean) | init s (median) | EM iterations (median) "
          "| final mean log-lik (mean; worst) | ARI with truth (mean; worst) | fit s (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, by_tree in results.items():
        for tree, rows in by_tree.items():
            ll = [r["mean_loglik"] for r in rows]
            ari = [r["ari"] for r in rows]
            print(
                f"| {name} | {tree} | {max(r['init_reads_per_chunk_max'] for r in rows)} / "
                f"{statistics.mean(r['init_reads_total_over_chunks'] for r in rows):.2f} "
                f"| {statistics.median(r['init_seconds'] for r in rows):.2f} "
                f"| {statistics.median(r['n_iter'] for r in rows)} "
                f"| {statistics.mean(ll):.4f}; {min(ll):.4f} | {statistics.mean(ari):.3f}; {min(ari):.3f} "
                f"| {statistics.median(r['fit_seconds'] for r in rows):.1f} |"
            )
        trees = list(by_tree)
        if len(trees) == 2:
            diff = [b["mean_loglik"] - a["mean_loglik"] for a, b in zip(by_tree[trees[0]], by_tree[trees[1]])]
            print(f"| {name} | new - old per seed | | | | mean {statistics.mean(diff):+.4f}; "
                  f"min {min(diff):+.4f} | | |")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
