"""Initialisation: today's (a checkout of an older dgmm) against this tree's, in the same run.

Three reports; nothing asserts.

``kernels`` -- CPU seconds of one chunk through every kernel of an
initialisation pass, beside the EM statistics kernel (``chunk_stats`` of an
E-step), BLAS pinned to one thread as in a dgmm task. The old kernels are
loaded from ``--old``'s ``dgmm/core/seeding.py`` (numpy only).

``quality`` -- for each dataset and seed, a default fit (``init_params``
``"kmeans"``, default ``tol``) to convergence, with the old and the new
initialisation (each in its own subprocess, ``PYTHONPATH`` at its tree):
final mean log-likelihood per sample (``lower_bound_``), EM iterations
(``n_iter_``), passes over the data (calls of ``dgmm.graph._map_reduce``: every
pass of both versions goes through it) and gathers.

``e2e`` -- a default fit end to end, before and after: time to the first EM
iteration (the driver's ``_start`` returning), EM seconds per iteration
(``history_``), total wall, passes; on an out-of-core Zarr store (a
LocalCluster whose workers' memory is smaller than the store) and on
in-memory configurations of ``bench_em.py``, with scikit-learn's own
end-to-end ``fit`` on the latter in the same run.

``python benchmarks/bench_init.py {kernels,quality,e2e} --help``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
NEW = HERE.parent


# -- kernels --------------------------------------------------------------------------------

def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _cpu(fn: Any, repeats: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def kernels(args: argparse.Namespace) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    from dgmm.core import seeding
    from dgmm.core.kernels import EStep, HardAssign, chunk_stats, require_finite_rows
    from dgmm.core.params import GMMParams

    old = _load(Path(args.old) / "dgmm/core/seeding.py", "old_seeding")
    rows = []
    for shape in args.shapes.split(","):
        n, d, k = (int(float(v)) for v in shape.split(":"))
        rng = np.random.default_rng(0)
        centers = rng.normal(0, 5, (k, d))
        x = (rng.standard_normal((n, d)) + centers[rng.integers(k, size=n)]).astype(args.dtype)
        params = GMMParams.from_covariances(np.full(k, 1 / k), centers, np.ones((k, d)), "diag")
        m = max(100 * k, 100_000)
        shared = ((seeding.seed_key(0), seeding.key_threshold(n * args.chunks_in_store, m)),)
        cands = [centers[:1] + 0.1 * rng.standard_normal((1 + 2 * k * r, d)) for r in range(6)]
        with threadpool_limits(1, user_api="blas"):
            times = {
                "EM statistics (chunk_stats, diag)": _cpu(lambda: chunk_stats(x, (EStep(params),)), args.repeats),
                "new: sample pass (data check + row keys + take)": _cpu(
                    lambda: (require_finite_rows(x, row_offset=0, chunk_index=0),
                             seeding.sample_chunk(x, shared, None, chunk_index=0, row_offset=0)),
                    args.repeats),
                "new: hard-assignment pass (HardAssign stats)": _cpu(
                    lambda: chunk_stats(x, (HardAssign(centers, "diag"),)), args.repeats),
                "old: k-means|| round 1 (1+2K candidates)": _cpu(
                    lambda: old.sample_candidates(x, ([cands[0]], 2 * k, 0, 0), None, chunk_index=0,
                                                  row_offset=0), args.repeats),
                "old: k-means|| round 5 (1+8K candidates)": _cpu(
                    lambda: old.sample_candidates(x, ([cands[4]], 2 * k, 0, 4), None, chunk_index=0,
                                                  row_offset=0), args.repeats),
                "old: candidate weights (1+10K candidates)": _cpu(
                    lambda: old.candidate_weights(x, [cands[5]], None, chunk_index=0, row_offset=0), args.repeats),
            }
        for what, seconds in times.items():
            rows.append({"shape": f"n={n:.0e} d={d} K={k} {args.dtype}", "kernel": what, "cpu_s": seconds})
    print("| shape | kernel | CPU s per chunk | x EM statistics |\n|---|---|---|---|")
    for r in rows:
        ref = next(q["cpu_s"] for q in rows if q["shape"] == r["shape"] and q["kernel"].startswith("EM"))
        print(f"| {r['shape']} | {r['kernel']} | {r['cpu_s']:.3f} | {r['cpu_s'] / ref:.2f} |")
    return rows


# -- data ---------------------------------------------------------------------------------------

def generated(n: int, d: int, k: int, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """The mixture ``bench_ooc.py`` writes: K unit-variance clusters, centres N(0, 5^2)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 5.0, size=(k, d))
    x = rng.standard_normal((n, d)).astype(dtype)
    x += centres[rng.integers(k, size=n)].astype(dtype)
    return x


def datasets(spec: str) -> dict[str, tuple[np.ndarray, int, str]]:
    from sklearn import datasets as skd

    out: dict[str, tuple[np.ndarray, int, str]] = {}
    for name in spec.split(","):
        if name.startswith("gen"):  # gen:n:d:K:covariance_type
            _, n, d, k, ct = name.split(":")
            out[name] = (generated(int(float(n)), int(d), int(k)), int(k), ct)
        else:
            loader, k, ct = {"iris": (skd.load_iris, 3, "full"), "wine": (skd.load_wine, 3, "full"),
                             "digits": (skd.load_digits, 10, "diag"),
                             "breast_cancer": (skd.load_breast_cancer, 2, "full")}[name]
            out[name] = (loader().data.astype(np.float64), k, ct)
    return out


class PassCounter:
    """Counts passes (``graph._map_reduce`` calls) and gathers (``init.gather_rows``) of dgmm."""

    def __init__(self) -> None:
        from dgmm import graph
        from dgmm.fit import driver
        from dgmm.fit import init as init_module

        self.passes = self.gathers = 0
        self.started: float | None = None
        real_pass, real_gather, real_start = graph._map_reduce, init_module.gather_rows, driver._start

        def counted_pass(*a: Any, **k: Any) -> Any:
            self.passes += 1
            return real_pass(*a, **k)

        def counted_gather(*a: Any, **k: Any) -> Any:
            self.gathers += 1
            return real_gather(*a, **k)

        def timed_start(*a: Any, **k: Any) -> Any:
            out = real_start(*a, **k)
            self.started = time.perf_counter()
            return out

        graph._map_reduce, init_module.gather_rows, driver._start = counted_pass, counted_gather, timed_start

    def reset(self) -> None:
        self.passes = self.gathers = 0
        self.started = None


def _default_fit(X: Any, k: int, ct: str, seed: int, counter: PassCounter, **kwargs: Any) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    counter.reset()
    gmm = dgmm.GaussianMixture(k, covariance_type=ct, random_state=seed, **kwargs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(X)
    wall = time.perf_counter() - start
    em = [h["seconds"] for h in gmm.history_]
    return {"loglik": float(gmm.lower_bound_), "n_iter": int(gmm.n_iter_), "passes": counter.passes,
            "gathers": counter.gathers, "wall": wall, "to_first_iter": (counter.started or start) - start,
            "em_s_per_iter": statistics.median(em[1:] or em) if em else float("nan"),
            "converged": bool(gmm.converged_)}


def quality_worker(args: argparse.Namespace) -> None:
    counter = PassCounter()
    out = []
    for name, (X, k, ct) in datasets(args.datasets).items():
        for seed in range(args.seeds):
            out.append({"dataset": name, "seed": seed, **_default_fit(X, k, ct, seed, counter)})
    print("RESULT " + json.dumps(out))


def _run_worker(tree: str, argv: list[str]) -> Any:
    env = {**os.environ, "PYTHONPATH": tree}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, capture_output=True,
                          text=True, cwd=tree)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def quality(args: argparse.Namespace) -> dict[str, Any]:
    argv = ["quality-worker", "--datasets", args.datasets, "--seeds", str(args.seeds)]
    old, new = _run_worker(args.old, argv), _run_worker(str(NEW), argv)
    print("| dataset | mean log-lik old / new (mean over seeds) | new - old: mean / worst |"
          " EM iterations old / new | passes old / new (+ gathers) |\n|---|---|---|---|---|")
    diffs = []
    names = list(dict.fromkeys(r["dataset"] for r in new))
    for name in names:
        o = [r for r in old if r["dataset"] == name]
        n = [r for r in new if r["dataset"] == name]
        d = [b["loglik"] - a["loglik"] for a, b in zip(o, n)]
        diffs += d
        mean = statistics.mean
        print(f"| {name} | {mean(r['loglik'] for r in o):.4f} / {mean(r['loglik'] for r in n):.4f} | "
              f"{mean(d):+.2e} / {min(d):+.2e} | {mean(r['n_iter'] for r in o):.1f} / "
              f"{mean(r['n_iter'] for r in n):.1f} | {mean(r['passes'] for r in o):.1f} "
              f"(+{mean(r['gathers'] for r in o):.0f}) / {mean(r['passes'] for r in n):.1f} "
              f"(+{mean(r['gathers'] for r in n):.0f}) |")
    print(f"\nall: new - old mean log-likelihood per sample: mean {statistics.mean(diffs):+.2e}, "
          f"worst {min(diffs):+.2e}, best {max(diffs):+.2e} over {len(diffs)} fits")
    return {"old": old, "new": new}


# -- end to end ------------------------------------------------------------------------------

def e2e_worker(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    counter = PassCounter()
    out = []
    if args.store:
        with LocalCluster(n_workers=args.n_workers, threads_per_worker=1, memory_limit=args.memory_limit,
                          dashboard_address=":0") as cluster, Client(cluster):
            from dgmm import open_dataset

            X = open_dataset(args.store)
            out.append({"config": f"store {args.store_desc}", **_default_fit(X, args.store_k, "diag", 0, counter)})
    for config in filter(None, args.configs.split(",")):
        n, d, k, ct = config.split(":")
        X = generated(int(float(n)), int(d), int(k), dtype="float64")
        out.append({"config": config, **_default_fit(X, int(k), ct, 0, counter)})
    print("RESULT " + json.dumps(out))


def sklearn_fit(configs: str) -> list[dict[str, Any]]:
    from sklearn.mixture import GaussianMixture

    out = []
    for config in filter(None, configs.split(",")):
        n, d, k, ct = config.split(":")
        X = generated(int(float(n)), int(d), int(k), dtype="float64")
        gmm = GaussianMixture(int(k), covariance_type=ct, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmm.fit(X)
        out.append({"config": config, "wall": time.perf_counter() - start, "n_iter": int(gmm.n_iter_),
                    "loglik": float(gmm.lower_bound_)})
    return out


def write_store(path: str, n_bytes: float, n_features: int, n_components: int, chunk_mib: int = 64) -> None:
    """``bench_ooc.py``'s float32 mixture store (its chunk generator), written by the workers."""
    import dask.array as da

    import dgmm

    sys.path.insert(0, str(HERE))
    from bench_ooc import _mixture_chunk

    rows = chunk_mib * 2**20 // (n_features * 4)
    n_rows = max(rows, int(n_bytes // (n_features * 4)) // rows * rows)
    template = da.empty((n_rows, n_features), chunks=(rows, n_features), dtype="float32")
    x = template.map_blocks(_mixture_chunk, n_features, n_components, 0, "float32", dtype="float32",
                            meta=np.empty((0, 0), dtype="float32"))
    dgmm.write_array(x, path)


def e2e(args: argparse.Namespace) -> dict[str, Any]:
    store = args.store
    if store is None and args.store_gb > 0:
        store = str(Path(tempfile.mkdtemp(prefix="bench-init-")) / "store.zarr")
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c, Client(c):
            write_store(store, args.store_gb * 1e9, 16, args.store_k)
        print(f"wrote {store} ({args.store_gb} GB) in {time.perf_counter() - start:.0f} s", flush=True)
    argv = ["e2e-worker", "--configs", args.configs, "--n-workers", str(args.n_workers),
            "--memory-limit", args.memory_limit, "--store-k", str(args.store_k)]
    if store:
        argv += ["--store", store, "--store-desc", f"{args.store_gb} GB float32 d=16 K={args.store_k} diag"]
    results = {"new": _run_worker(str(NEW), argv), "old": _run_worker(args.old, argv),
               "sklearn": sklearn_fit(args.configs)}
    print("| config | version | to 1st EM iter (s) | EM s/iter | EM iters | total wall (s) | passes (+gathers) |"
          " mean log-lik |\n|---|---|---|---|---|---|---|---|")
    for row_new, row_old in zip(results["new"], results["old"]):
        for version, r in (("before", row_old), ("after", row_new)):
            print(f"| {r['config']} | dgmm {version} | {r['to_first_iter']:.1f} | {r['em_s_per_iter']:.2f} | "
                  f"{r['n_iter']} | {r['wall']:.1f} | {r['passes']} (+{r['gathers']}) | {r['loglik']:.4f} |")
        sk = next((s for s in results["sklearn"] if s["config"] == row_new["config"]), None)
        if sk:
            print(f"| {sk['config']} | scikit-learn | | | {sk['n_iter']} | {sk['wall']:.1f} | | {sk['loglik']:.4f} |")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    old_default = os.environ.get("DGMM_OLD_TREE", "/work/wt-init-old")
    k = sub.add_parser("kernels", help="CPU seconds per chunk of every initialisation kernel")
    k.add_argument("--shapes", default="1e6:16:8,1e6:32:64", help="n:d:K of one chunk, comma-separated")
    k.add_argument("--dtype", default="float32")
    k.add_argument("--repeats", type=int, default=2)
    k.add_argument("--chunks-in-store", type=int, default=420, help="chunks of the store the sample is drawn from")
    q = sub.add_parser("quality", help="old vs new initialisation: final log-likelihood, iterations, passes")
    q.add_argument("--datasets", default="iris,wine,digits,breast_cancer,gen:4e5:16:8:diag,gen:2e5:8:16:full")
    q.add_argument("--seeds", type=int, default=5)
    qw = sub.add_parser("quality-worker")
    qw.add_argument("--datasets", required=True)
    qw.add_argument("--seeds", type=int, required=True)
    e = sub.add_parser("e2e", help="a default fit end to end, before/after, with scikit-learn")
    e.add_argument("--configs", default="1e5:16:16:full,1e5:32:64:diag,2e4:64:32:full",
                   help="in-memory n:d:K:covariance_type (bench_em.py's, n / 10)")
    e.add_argument("--store", default=None, help="an existing float32 d=16 Zarr store (else one is written)")
    e.add_argument("--store-gb", type=float, default=3.0, help="size of the store to write (0: none)")
    e.add_argument("--store-k", type=int, default=8)
    e.add_argument("--n-workers", type=int, default=2)
    e.add_argument("--memory-limit", default="1GiB", help="per worker: below the store's size")
    ew = sub.add_parser("e2e-worker")
    for p in (k, q, e):
        p.add_argument("--old", default=old_default, help="the older dgmm tree (git worktree of 5ac9ed5)")
        p.add_argument("--output", default=None, help="write the measurements as JSON")
    ew.add_argument("--configs", default="")
    ew.add_argument("--store", default=None)
    ew.add_argument("--store-desc", default="")
    ew.add_argument("--store-k", type=int, default=8)
    ew.add_argument("--n-workers", type=int, default=2)
    ew.add_argument("--memory-limit", default="1GiB")
    args = parser.parse_args(argv)
    if args.command == "quality-worker":
        return quality_worker(args)
    if args.command == "e2e-worker":
        return e2e_worker(args)
    result = {"kernels": kernels, "quality": quality, "e2e": e2e}[args.command](args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
