"""Small data, in process: dgmm's fit wall time against scikit-learn's, same run.

Rows (each measured side by side in this run; medians of ``--repeat`` runs):

* a 420-row fit (4 features, K=3): in a fresh interpreter (imports included)
  and warm (in this process, after a first fit);
* ``GridSearchCV`` over ``n_components`` 1-4, cv=3, on iris;
* a 1e5 x 8, K=8, full fit;
* the in-process / LocalCluster threshold: a fixed 10 iterations (tol=0) on
  n x d x K data, in this process on Dask's threads vs a LocalCluster started
  for the fit (start-up included), both from the same seed.

dgmm runs as a user's script does with no client: in this process
(``scheduler=None``); "LocalCluster per fit" (``scheduler="processes"``) is
what every no-client fit did before in-memory fits ran in process. Set
``OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2`` in the environment to measure
the pinned BLAS under an oversubscribing environment.

    python benchmarks/bench_small.py [--repeat 3] [--skip-threshold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np

FRESH = """
import time, sys
t = time.perf_counter()
import numpy as np
X = np.random.default_rng(0).normal(size=(420, 4))
X[:140] += 4; X[140:280] -= 4
if {lib!r} == "sklearn":
    from sklearn.mixture import GaussianMixture
    GaussianMixture(3, random_state=0).fit(X)
else:
    import dgmm
    if __name__ == "__main__":
        dgmm.GaussianMixture(3, random_state=0, scheduler={scheduler!r}).fit(X)
if __name__ == "__main__":
    print(time.perf_counter() - t)
"""


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh(lib: str, scheduler: str | None, repeat: int) -> float:
    """Median wall time of a script that imports, makes 420 rows and fits (interpreter start excluded)."""
    script = FRESH.format(lib=lib, scheduler=scheduler)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fresh_fit.py")
    with open(path, "w") as f:
        f.write(script)
    try:
        return statistics.median(
            float(subprocess.run([sys.executable, path], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)
        )
    finally:
        os.remove(path)


def rows(repeat: int, threshold: bool) -> list[tuple[str, str, float]]:
    import dgmm
    from sklearn.datasets import load_iris
    from sklearn.mixture import GaussianMixture as SK
    from sklearn.model_selection import GridSearchCV

    out = []
    for label, lib, scheduler in [
        ("scikit-learn", "sklearn", None),
        ("dgmm, in process (default)", "dgmm", None),
        ("dgmm, LocalCluster per fit (before)", "dgmm", "processes"),
    ]:
        out.append(("420 x 4, K=3, fresh process", label, fresh(lib, scheduler, repeat)))
    X = np.random.default_rng(0).normal(size=(420, 4))
    X[:140] += 4
    X[140:280] -= 4
    for label, make in [
        ("scikit-learn", lambda: SK(3, random_state=0)),
        ("dgmm, in process (default)", lambda: dgmm.GaussianMixture(3, random_state=0)),
        ("dgmm, LocalCluster per fit (before)", lambda: dgmm.GaussianMixture(3, random_state=0, scheduler="processes")),
    ]:
        make().fit(X)
        out.append(("420 x 4, K=3, warm", label, median_time(lambda: make().fit(X), repeat)))
    iris = load_iris().data
    grid = {"n_components": [1, 2, 3, 4]}
    for label, est in [
        ("scikit-learn", SK(random_state=0)),
        ("dgmm, in process (default)", dgmm.GaussianMixture(random_state=0)),
        ("dgmm, LocalCluster per fit (before)", dgmm.GaussianMixture(random_state=0, scheduler="processes")),
    ]:
        out.append(("GridSearchCV n_components 1-4, cv=3, iris", label,
                    median_time(lambda: GridSearchCV(est, grid, cv=3).fit(iris), repeat)))
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, (8, 8))
    big = (centres[rng.integers(0, 8, 100_000)] + rng.normal(size=(100_000, 8)))
    for label, make in [
        ("scikit-learn", lambda: SK(8, covariance_type="full", random_state=0)),
        ("dgmm, in process (default)", lambda: dgmm.GaussianMixture(8, random_state=0)),
        ("dgmm, LocalCluster per fit (before)", lambda: dgmm.GaussianMixture(8, random_state=0, scheduler="processes")),
    ]:
        out.append(("1e5 x 8, K=8, full", label, median_time(lambda: make().fit(big), repeat)))
    if threshold:
        for n, d, k in [(100_000, 8, 8), (400_000, 16, 16), (1_000_000, 16, 16)]:
            data = rng.normal(size=(n, d))
            for label, scheduler in [("dgmm, threads in process", "threads"), ("dgmm, LocalCluster (start included)", "processes")]:
                fit = lambda: dgmm.GaussianMixture(k, random_state=0, max_iter=10, tol=0, scheduler=scheduler).fit(data)
                out.append((f"threshold: {n:.0e} x {d}, K={k}, 10 iterations", label, median_time(fit, max(1, repeat // 2))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-threshold", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ConvergenceWarning of the tol=0 threshold fits
    results = rows(args.repeat, not args.skip_threshold)
    env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"cores: {os.cpu_count()}, environment: {env}")
    print("| case | who | seconds (median) | / scikit-learn |")
    print("|---|---|---|---|")
    reference = {case: s for case, who, s in results if who == "scikit-learn"}
    for case, who, seconds in results:
        ratio = f"{seconds / reference[case]:.1f}x" if case in reference else ""
        print(f"| {case} | {who} | {seconds:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
