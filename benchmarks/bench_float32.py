"""float32 vs float64 fits on real single-cell data, and the kernels' speed.

Accuracy: scanpy's ``pbmc68k_reduced`` ``obsm["X_pca"]`` (700 x 50 float32),
K=8 full, the same seeds in float64 and float32, dgmm and scikit-learn; the
mean log-likelihood per cell of each fit scored on the float64 values.
scanpy is optional (``pip install scanpy``): without it, that table is
skipped. Speed: ``chunk_stats`` seconds per 1e6 x 16 rows, K=16, float32,
one BLAS thread, E-step and hard-assignment sources, median of ``--repeat``.

    python benchmarks/bench_float32.py [--seeds 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def real_data() -> np.ndarray | None:
    try:
        import scanpy
    except ImportError:
        return None
    return np.asarray(scanpy.datasets.pbmc68k_reduced().obsm["X_pca"])


def accuracy(X: np.ndarray, n_components: int, seeds: int) -> None:
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    import dgmm

    x64 = X.astype(np.float64)
    print(f"pbmc68k_reduced X_pca {X.shape} {X.dtype}, K={n_components}, full; nats per cell")
    print("| seed | dgmm float64 | dgmm float32 | gap | re-seeds f32 | scikit-learn float64 | scikit-learn float32 |")
    print("|---|---|---|---|---|---|---|")
    for seed in range(seeds):
        scores, reseeds = [], 0
        for dtype in (np.float64, np.float32):
            gmm = dgmm.GaussianMixture(n_components, random_state=seed).fit(X.astype(dtype))
            scores.append(gmm.score(x64))
            reseeds = sum(1 for h in gmm.history_ for e in h["events"] if e["event"] == "reseed")
        sk = []
        for data in (x64, X):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sk.append(f"{SKGaussianMixture(n_components, random_state=seed).fit(data).score(x64):.3f}")
            except ValueError as exc:
                sk.append(f"raises ({str(exc)[:40]}...)")
        print(
            f"| {seed} | {scores[0]:.3f} | {scores[1]:.3f} | {abs(scores[1] - scores[0]):.2e} | {reseeds} "
            f"| {sk[0]} | {sk[1]} |"
        )


def speed(repeat: int) -> None:
    from threadpoolctl import threadpool_limits

    from dgmm.core.kernels import EStep, HardAssign, chunk_stats
    from dgmm.core.params import GMMParams

    rng = np.random.default_rng(0)
    n, d, k = 1_000_000, 16, 16
    centers = rng.normal(scale=5.0, size=(k, d))
    X = (centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    print("chunk_stats, 1e6 x 16 float32, K=16, one thread: seconds (median)")
    print("| type | source | seconds |")
    print("|---|---|---|")
    for ct in ("full", "diag"):
        cov = np.stack([np.eye(d)] * k) if ct == "full" else np.ones((k, d))
        params = GMMParams.from_covariances(np.full(k, 1.0 / k), centers, cov, ct)
        for name, source in (("E-step", EStep(params)), ("hard assignment", HardAssign(centers, ct))):
            times = []
            with threadpool_limits(1):
                for _ in range(repeat):
                    start = time.perf_counter()
                    chunk_stats(X, (source,))
                    times.append(time.perf_counter() - start)
            print(f"| {ct} | {name} | {np.median(times):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    X = real_data()
    if X is None:
        print("scanpy is not installed: the real-data table is skipped (pip install scanpy).")
    else:
        accuracy(X, args.n_components, args.seeds)
    speed(args.repeat)


if __name__ == "__main__":
    main()
