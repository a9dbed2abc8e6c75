"""Seconds per EM iteration and peak memory: dgmm against scikit-learn, same run.

For every configuration (n_samples, n_features, n_components, covariance_type)
and dtype, both libraries fit the same data from the same initial parameters
(``weights_init``, ``means_init``, ``precisions_init``) with ``tol=0`` and a
fixed number of iterations, so they do the same EM iterations:

* scikit-learn runs in a subprocess (its peak RSS is then its own), on both
  cores through its BLAS. Its seconds per iteration are the median of the
  per-iteration "time lapse" that ``verbose=2`` prints, over iterations 2..
  (the first includes the initialisation); ``(t(max_iter=1 + k) -
  t(max_iter=1)) / k``, where validation, initialisation and the final E-step
  cancel, is reported beside it as a check.
* dgmm runs on one LocalCluster (2 worker processes x 1 thread by default)
  started here and reused by every configuration; ``fit(X)`` scatters the
  array to the workers, so the data is in worker memory. Its seconds per
  iteration are the median of ``history_[i]["seconds"]`` over iterations 2..,
  iteration 1 also checking finiteness.

Peak memory is the high-water mark of the resident set size, reset before
each measured fit (``/proc/self/clear_refs``; ``ru_maxrss`` where that is not
available). Nothing here asserts anything: it is a report.

Run ``python benchmarks/bench_em.py --help`` for the options; see README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Targets of the issue: dgmm / scikit-learn seconds per iteration at most this.
TARGET_RATIO = {"float64": 1 / 2, "float32": 1 / 3}
MIB = 1 << 20


@dataclass(frozen=True)
class Config:
    """One benchmark configuration."""

    n_samples: int
    n_features: int
    n_components: int
    covariance_type: str

    @property
    def name(self) -> str:
        return (
            f"n={self.n_samples:.0e} d={self.n_features} K={self.n_components} "
            f"{self.covariance_type}".replace("e+0", "e")
        )

    @classmethod
    def parse(cls, text: str) -> Config:
        """``"1e6:16:16:full"`` (n:d:K:type) into a Config."""
        try:
            n, d, k, ct = text.split(":")
            return cls(int(float(n)), int(d), int(k), ct)
        except ValueError:
            raise SystemExit(
                f"--configs: expected n:d:K:covariance_type items such as 1e6:16:16:full, got {text!r}"
            ) from None


DEFAULT_CONFIGS = "1e6:16:16:full,1e6:32:64:diag,2e5:64:32:full"


# -- data and initial parameters (deterministic, shared by both libraries) -----

def make_data(config: Config, dtype: str, seed: int = 0) -> np.ndarray:
    """A mixture of ``n_components`` correlated Gaussian clusters, C-contiguous."""
    rng = np.random.default_rng(seed)
    n, d, k = config.n_samples, config.n_features, config.n_components
    centers = rng.normal(0.0, 2.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=k)
    mixing = np.eye(d) + rng.normal(0.0, 0.3 / np.sqrt(d), size=(d, d))
    labels = rng.integers(0, k, size=n)
    X = np.empty((n, d), dtype=dtype)
    step = 1 << 16  # generate in pieces: no (n x d) float64 temporary for float32
    for start in range(0, n, step):
        lab = labels[start : start + step]
        z = rng.standard_normal((lab.size, d)) * scales[lab, None] + centers[lab]
        X[start : start + step] = z @ mixing
    return X


def initial_params(X: np.ndarray, config: Config, seed: int = 1) -> dict[str, np.ndarray]:
    """Uniform weights, means drawn from the rows, the data's covariance: float64."""
    rng = np.random.default_rng(seed)
    k, ct = config.n_components, config.covariance_type
    means = X[np.sort(rng.choice(X.shape[0], size=k, replace=False))].astype(np.float64)
    sample = X[rng.choice(X.shape[0], size=min(X.shape[0], 100_000), replace=False)]
    cov = np.cov(sample.astype(np.float64), rowvar=False) + 1e-6 * np.eye(X.shape[1])
    if ct == "full":
        precisions = np.repeat(np.linalg.inv(cov)[None], k, axis=0)
    elif ct == "tied":
        precisions = np.linalg.inv(cov)
    elif ct == "diag":
        precisions = np.repeat(1.0 / np.diag(cov)[None], k, axis=0)
    elif ct == "spherical":
        precisions = np.full(k, 1.0 / np.mean(np.diag(cov)))
    else:
        raise SystemExit(f"unknown covariance_type {ct!r}")
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": precisions}


# -- memory ------------------------------------------------------------------

def reset_peak_rss() -> int:
    """Reset this process's RSS high-water mark; return the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak then also covers what ran before
    return current_rss()


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """Peak RSS in bytes since the last reset (ru_maxrss is KiB on Linux)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


# -- scikit-learn, in a subprocess -------------------------------------------

def _sklearn_child(workdir: str, spec: str) -> None:
    """Entry point of the subprocess: time and measure scikit-learn's fits."""
    import contextlib
    import io
    import re

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    args = json.loads(spec)
    X = np.load(Path(workdir) / "X.npy")
    init = dict(np.load(Path(workdir) / "init.npz"))
    iters = args["iters"]

    def fit(max_iter: int, verbose: int = 0) -> tuple[float, str]:
        gmm = GaussianMixture(
            args["n_components"], covariance_type=args["covariance_type"], tol=0.0,
            max_iter=max_iter, verbose=verbose, verbose_interval=1, **init,
        )
        out = io.StringIO()
        start = time.perf_counter()
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(X)
        return time.perf_counter() - start, out.getvalue()

    # A warm-up fit first (lazy imports, first-touch allocations), then the
    # peak is measured over the fits that are timed.
    warm = fit(1)[0]
    baseline = reset_peak_rss()
    short = min(warm, fit(1)[0])
    # verbose=2 prints each iteration's "time lapse" (E-step + M-step); the
    # first also holds the initialisation and is left out, as for dgmm.
    long, log = fit(1 + iters, verbose=2)
    lapses = [float(t) for t in re.findall(r"Iteration \d+\s+time lapse ([0-9.eE+-]+)s", log)]
    print(
        json.dumps(
            {
                "seconds_per_iter": float(np.median(lapses[1:])) if len(lapses) > 1 else (long - short) / iters,
                "seconds_per_iter_diff": (long - short) / iters,
                "iteration_seconds": lapses,
                "t_short": short,
                "t_long": long,
                "peak_rss": peak_rss(),
                "baseline_rss": baseline,
            }
        )
    )


def run_sklearn(X: np.ndarray, init: dict[str, np.ndarray], config: Config, iters: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dgmm-bench-") as workdir:
        np.save(Path(workdir) / "X.npy", X)
        np.savez(Path(workdir) / "init.npz", **init)
        spec = json.dumps({**asdict(config), "iters": iters})
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--_sklearn-child", workdir, spec],
            capture_output=True, text=True, check=False,
        )
    if proc.returncode != 0:
        # A peer that fails (scikit-learn's float32 full fit raises "ill-defined
        # empirical covariance" on some shapes and CPUs) is a row with its error,
        # not the end of the run.
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}", **_NO_TIMING}
    return json.loads(proc.stdout.strip().splitlines()[-1])


_NO_TIMING: dict[str, Any] = {"seconds_per_iter": float("nan"), "peak_rss": 0, "baseline_rss": 0}


# -- dgmm, on the shared cluster ----------------------------------------------

def _worker_reset(dask_worker: Any = None) -> int:
    return reset_peak_rss()


def _worker_peak(dask_worker: Any = None) -> int:
    return peak_rss()


def _warm_up(client: Any, covariance_types: set[str], dtypes: list[str]) -> None:
    """Import dgmm on the workers and run each kernel once, so the first
    measured fit does not carry imports and first-time allocations."""
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    X = np.random.default_rng(0).normal(size=(4000, 4))
    for ct in sorted(covariance_types):
        for dtype in dtypes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                dgmm.GaussianMixture(2, covariance_type=ct, max_iter=2, random_state=0).fit(X.astype(dtype))


def run_dgmm(client: Any, X: np.ndarray, init: dict[str, np.ndarray], config: Config, iters: int) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    gmm = dgmm.GaussianMixture(
        config.n_components, covariance_type=config.covariance_type, tol=0.0,
        max_iter=1 + iters, **init,
    )
    worker_base = client.run(_worker_reset)
    client_base = reset_peak_rss()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(X)
    total = time.perf_counter() - start
    client_peak = peak_rss()
    worker_peak = client.run(_worker_peak)
    seconds = [h["seconds"] for h in gmm.history_]
    n_workers = len(worker_peak)
    per_worker = [
        {"peak_rss": worker_peak[w], "baseline_rss": worker_base[w]} for w in sorted(worker_peak)
    ]
    return {
        "seconds_per_iter": float(np.median(seconds[1:])) if len(seconds) > 1 else float(seconds[0]),
        "iteration_seconds": seconds,
        "fit_seconds": total,
        "workers": per_worker,
        # Largest rise of a worker's RSS during the fit, less its share of the data.
        "worker_extra_peak": max(w["peak_rss"] - w["baseline_rss"] for w in per_worker)
        - X.nbytes / n_workers,
        "worker_peak_rss": max(w["peak_rss"] for w in per_worker),
        "client_extra_peak": client_peak - client_base,
    }


# -- driver --------------------------------------------------------------------

def _fmt_mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:.0f}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    head = (
        "| config | dtype | data MiB | sklearn s/iter | (sklearn by difference) | dgmm s/iter | dgmm/sklearn | target | met "
        "| sklearn peak-data MiB | dgmm worker peak-share MiB | dgmm worker peak RSS MiB | dgmm client peak-base MiB |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|"
    )
    rows = []
    for r in results:
        sk, dg = r["sklearn"], r["dgmm"]
        sk_time = f"failed: {sk['error']}" if "error" in sk else f"{sk['seconds_per_iter']:.3f}"
        rows.append(
            f"| {r['config']} | {r['dtype']} | {_fmt_mib(r['data_bytes'])} "
            f"| {sk_time} | {sk.get('seconds_per_iter_diff', float('nan')):.3f} "
            f"| {dg['seconds_per_iter']:.3f} | {r['ratio']:.3f} "
            f"| {r['target']:.3f} | {'yes' if r['met'] else 'no'} "
            f"| {_fmt_mib(sk['peak_rss'] - sk['baseline_rss'])} "
            f"| {_fmt_mib(dg['worker_extra_peak'])} | {_fmt_mib(dg['worker_peak_rss'])} "
            f"| {_fmt_mib(dg['client_extra_peak'])} |"
        )
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default=DEFAULT_CONFIGS,
        help="comma-separated n:d:K:covariance_type items (default: %(default)s)",
    )
    parser.add_argument(
        "--dtypes", default="float64,float32", help="comma-separated dtypes (default: %(default)s)"
    )
    parser.add_argument("--iters", type=int, default=None, help="timed EM iterations (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="n_samples / 10 and 3 iterations: a fast check")
    parser.add_argument("--n-workers", type=int, default=2, help="dgmm LocalCluster workers (default 2, 1 thread each)")
    parser.add_argument("--skip-sklearn", action="store_true", help="time dgmm only (no ratio)")
    parser.add_argument("--output", type=Path, default=None, help="write all results as JSON here")
    parser.add_argument("--_sklearn-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._sklearn_child:
        _sklearn_child(*args._sklearn_child)
        return

    configs = [Config.parse(c) for c in args.configs.split(",") if c]
    if args.quick:
        configs = [
            Config(max(c.n_samples // 10, 10 * c.n_components), c.n_features, c.n_components, c.covariance_type)
            for c in configs
        ]
    iters = args.iters or (3 if args.quick else 10)
    dtypes = [d for d in args.dtypes.split(",") if d]

    from distributed import Client, LocalCluster

    results = []
    with LocalCluster(
        n_workers=args.n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.n_workers)
        _warm_up(client, {c.covariance_type for c in configs}, dtypes)
        for config in configs:
            for dtype in dtypes:
                X = make_data(config, dtype)
                init = initial_params(X, config)
                load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                print(f"# {config.name} {dtype}: dgmm ...", file=sys.stderr, flush=True)
                dg = run_dgmm(client, X, init, config, iters)
                if args.skip_sklearn:
                    sk = dict(_NO_TIMING)
                else:
                    print(f"# {config.name} {dtype}: scikit-learn ...", file=sys.stderr, flush=True)
                    sk = run_sklearn(X, init, config, iters)
                ratio = dg["seconds_per_iter"] / sk["seconds_per_iter"]
                result = {
                    "config": config.name,
                    **asdict(config),
                    "dtype": dtype,
                    "iters": iters,
                    "data_bytes": X.nbytes,
                    "sklearn": sk,
                    "dgmm": dg,
                    "ratio": ratio,
                    "target": TARGET_RATIO.get(dtype, float("nan")),
                    "met": bool(ratio <= TARGET_RATIO.get(dtype, float("nan"))),
                    # 1-minute load average before and after: > n_cores means
                    # other jobs competed for the cores during the measurement.
                    "loadavg": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")],
                }
                results.append(result)
                print(
                    f"# {config.name} {dtype}: sklearn {sk['seconds_per_iter']:.3f} s/iter, "
                    f"dgmm {dg['seconds_per_iter']:.3f} s/iter, ratio {ratio:.3f}"
                    + (f" (scikit-learn failed: {sk['error']})" if "error" in sk else ""),
                    file=sys.stderr, flush=True,
                )
                del X

    table = markdown_table(results)
    print(table)
    if args.output is not None:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "n_workers": args.n_workers,
            "iters": iters,
            "quick": args.quick,
        }
        try:
            import sklearn

            import dgmm

            meta.update(numpy=np.__version__, sklearn=sklearn.__version__, dgmm=dgmm.__version__)
        except (ImportError, AttributeError):
            pass
        args.output.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=2))


if __name__ == "__main__":
    main()
