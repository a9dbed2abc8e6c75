"""Initialisation: today's (a checkout of an older dgmm) against this tree's, in the same run.

Three reports; nothing asserts.

``kernels`` -- CPU seconds of one chunk through every kernel of an
initialisation pass, beside the EM statistics kernel (``chunk_stats`` of an
E-step), BLAS pinned to one thread as in a dgmm task. The old kernels are
loaded from ``--old``'s ``dgmm/core/seeding.py`` (numpy only).

``quality`` -- for each dataset and seed (``--seeds N``), a default fit
(``init_params`` ``"kmeans"``, default ``tol``) to convergence, with the old
and the new initialisation (each in its own subprocess, ``PYTHONPATH`` at its
tree), and scikit-learn's ``GaussianMixture(K, covariance_type,
random_state=seed).fit`` in the same run: final mean log-likelihood per
sample (``lower_bound_``), EM iterations (``n_iter_``), passes over the data
(calls of ``dgmm.graph._map_reduce``: every pass of both versions goes
through it) and gathers; per dataset the paired statistics over seeds (mean
and standard error of new - old and new - scikit-learn, the worst seed, the
share of seeds with new >= old - 1e-3). ``--sample-fraction F`` also fits
the small real datasets on the out-of-core path (:func:`force_sample`:
KMeans on a sample of F of the rows, then the hard-assignment pass).

``e2e`` -- a default fit end to end, before and after: time to the first EM
iteration (the driver's ``_start`` returning), EM seconds per iteration
(``history_``), total wall, passes; on an out-of-core Zarr store (a
LocalCluster whose workers' memory is smaller than the store) and on
in-memory configurations of ``bench_em.py``, with scikit-learn's own
end-to-end ``fit`` on the latter in the same run. ``--split``: where this
tree's store fit spends the time to its first EM iteration (:class:`Timeline`,
the workers' task stream, ``passes_``).

``python benchmarks/bench_init.py {kernels,quality,e2e} --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
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


class Timeline:
    """Wall-clock intervals of named library calls during a fit (module attributes wrapped in place).

    Each ``"module:attribute"`` present in the tree under test is replaced by a
    wrapper that records ``(label, depth, start, end)``, relative to
    :meth:`reset`; attributes the tree lacks (the older checkout) are skipped.
    Call sites must look the attribute up at call time (``module.f(...)``, or a
    name imported into the module wrapped here), as dgmm's do.
    """

    TARGETS = (
        ("dgmm.fit.driver:_fit", "fit after opening (_fit)"),
        ("dgmm.fit.driver:open_for_fit", "open the store (open_for_fit)"),
        ("dgmm.fit.driver:maybe_persist", "persist or not (maybe_persist)"),
        ("dgmm.fit.driver:_start", "initialisation (driver._start)"),
        ("dgmm.fit.init:gather_rows", "gather (init.gather_rows)"),
        ("dgmm.fit.init:draw_samples", "sample pass (init.draw_samples)"),
        ("dgmm.core.seeding:smallest_keys", "keep the smallest keys (seeding.smallest_keys)"),
        ("dgmm.fit.init:_kmeans_centers", "KMeans in memory (init._kmeans_centers)"),
        ("dgmm.fit.init:params_from_stats", "parameters from statistics (params_from_stats)"),
        ("dgmm.fit.driver:run_em", "EM loop (run_em)"),
        ("dgmm.graph:stats_pass", "statistics pass (graph.stats_pass)"),
        ("dgmm.graph:map_chunks", "map pass (graph.map_chunks)"),
        ("dgmm.graph:broadcast", "scatter the pass's parameters (graph.broadcast)"),
        ("dgmm.graph:_row_blocks", "graph: row blocks (x.to_delayed(optimize_graph=True))"),
        ("dgmm.graph:tree_reduce", "graph: reduction tree (graph.tree_reduce)"),
        ("dask:compute", "compute (dask.compute)"),
    )

    def __init__(self) -> None:
        import importlib

        self.events: list[tuple[str, int, float, float]] = []
        self.depth = 0
        self.t0 = time.perf_counter()
        for target, label in self.TARGETS:
            module_name, attr = target.split(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(module, attr):
                setattr(module, attr, self._wrap(getattr(module, attr), label))

    def _wrap(self, real: Any, label: str) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            start = time.perf_counter() - self.t0
            self.depth += 1
            try:
                return real(*a, **k)
            finally:
                self.depth -= 1
                self.events.append((label, self.depth, start, time.perf_counter() - self.t0))

        return timed

    def reset(self) -> None:
        self.events, self.depth, self.t0 = [], 0, time.perf_counter()
        self.wall0 = time.time()  # the workers' task stream is in wall-clock seconds

    def tasks(self, stream: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
        """``distributed``'s task stream as (key prefix, action, start, stop), relative to :meth:`reset`."""
        from dask.utils import key_split

        return [(key_split(t["key"]), s["action"], s["start"] - self.wall0, s["stop"] - self.wall0)
                for t in stream for s in t.get("startstops", ())]


def _default_fit(X: Any, k: int, ct: str, seed: int, counter: PassCounter, timeline: Timeline | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    counter.reset()
    gmm = dgmm.GaussianMixture(k, covariance_type=ct, random_state=seed, **kwargs)
    if timeline is not None:
        timeline.reset()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(X)
    wall = time.perf_counter() - start
    em = [h["seconds"] for h in gmm.history_]
    out = {"loglik": float(gmm.lower_bound_), "n_iter": int(gmm.n_iter_), "passes": counter.passes,
           "gathers": counter.gathers, "wall": wall, "to_first_iter": (counter.started or start) - start,
           "em_s_per_iter": statistics.median(em[1:] or em) if em else float("nan"),
           "em_seconds": em, "converged": bool(gmm.converged_)}
    if timeline is not None:
        # The progress record of every pass (this tree's passes_), and the wrapped calls.
        out["passes_record"] = getattr(gmm, "passes_", None)
        out["timeline"] = timeline.events
    return out


def force_sample(fraction: float, n_init: int | None = None) -> dict[str, Any]:
    """Make every fit of this process take the out-of-core initialisation path on in-memory data.

    ``InitConfig.from_spec`` (the driver's one way to an ``InitConfig``) is
    wrapped so that the sample pass keeps ``ceil(fraction * n_rows)`` rows
    (``sample_rows``, with ``rows_per_component=1``) instead of all rows of a
    small dataset: ``KMeans`` then runs on a true sample (best of
    ``sample_kmeans_n_init`` starts) and the hard-assignment pass over all
    rows follows, as on a store larger than the sample. The library is not
    changed, only this process's class attribute. ``n_init``, when given,
    replaces ``sample_kmeans_n_init`` (the starts KMeans keeps the best of).
    Set ``state["n_rows"]``
    before each fit; ``state["kmeans"]`` records the rows and ``n_init`` of
    each in-memory ``KMeans`` (``init._kmeans_centers``), to show the path
    was taken.
    """
    from dataclasses import replace

    from dgmm.fit import init as init_module

    state: dict[str, Any] = {"n_rows": 0, "kmeans": []}
    real_from_spec, real_centers = init_module.InitConfig.from_spec, init_module._kmeans_centers

    def from_spec(cls: type, spec: Any) -> Any:
        rows = max(1, math.ceil(fraction * state["n_rows"]))
        config = replace(real_from_spec(spec), sample_rows=rows, rows_per_component=1)
        return config if n_init is None else replace(config, sample_kmeans_n_init=n_init)

    def centers(sample: Any, k: int, seed: int, plusplus_only: bool, n_init: int = 1, *args: Any) -> Any:
        state["kmeans"].append((int(sample.points.shape[0]), int(n_init)))
        return real_centers(sample, k, seed, plusplus_only, n_init, *args)

    init_module.InitConfig.from_spec = classmethod(from_spec)  # type: ignore[method-assign, assignment]
    init_module._kmeans_centers = centers
    return state


def quality_worker(args: argparse.Namespace) -> None:
    counter = PassCounter()
    forced = force_sample(args.sample_fraction, args.sample_n_init) if args.sample_fraction else None
    out = []
    for name, (X, k, ct) in datasets(args.datasets).items():
        for seed in range(args.seeds):
            if forced is not None:
                forced["n_rows"], forced["kmeans"] = X.shape[0], []
            row = {"dataset": name, "seed": seed, **_default_fit(X, k, ct, seed, counter)}
            if forced is not None:
                row["kmeans"] = forced["kmeans"]
            out.append(row)
    print("RESULT " + json.dumps(out))


def sklearn_quality(spec: str, seeds: int) -> list[dict[str, Any]]:
    """scikit-learn's ``GaussianMixture(K, covariance_type, random_state=seed).fit`` (default ``tol``)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    out = []
    for name, (X, k, ct) in datasets(spec).items():
        for seed in range(seeds):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gmm = GaussianMixture(k, covariance_type=ct, random_state=seed).fit(X)
            out.append({"dataset": name, "seed": seed, "loglik": float(gmm.lower_bound_),
                        "n_iter": int(gmm.n_iter_), "wall": time.perf_counter() - start})
    return out


def _run_worker(tree: str, argv: list[str]) -> Any:
    env = {**os.environ, "PYTHONPATH": tree}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, capture_output=True,
                          text=True, cwd=tree)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of ``b - a`` over paired seeds, and its standard error."""
    d = [y - x for x, y in zip(a, b)]
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return statistics.mean(d), se


def quality_table(title: str, old: list[dict[str, Any]], new: list[dict[str, Any]], sk: list[dict[str, Any]],
                  tolerance: float = 1e-3) -> list[float]:
    """Print ``new`` against ``old`` and scikit-learn, paired by seed; return every seed's new - old."""
    mean = statistics.mean
    print(f"\n{title}\n")
    print("| dataset | seeds | mean log-lik old / new / sklearn | new - old: mean ± SE | worst seed of new - old |"
          f" new ≥ old - {tolerance:g} | new - sklearn: mean ± SE | EM iters old / new / sklearn |"
          " passes old (+gathers) / new |\n|---|---|---|---|---|---|---|---|---|")
    every = []
    for name in dict.fromkeys(r["dataset"] for r in new):
        n = [r for r in new if r["dataset"] == name]
        seeds = [r["seed"] for r in n]
        o, s = ([next(r for r in rows if r["dataset"] == name and r["seed"] == seed) for seed in seeds]
                for rows in (old, sk))
        lo, ln, ls = ([r["loglik"] for r in rows] for rows in (o, n, s))
        (d_old, se_old), (d_sk, se_sk) = _paired(lo, ln), _paired(ls, ln)
        diffs = [y - x for x, y in zip(lo, ln)]
        worst = min(range(len(diffs)), key=diffs.__getitem__)
        every += diffs
        share = sum(d >= -tolerance for d in diffs) / len(diffs)
        print(f"| {name} | {len(n)} | {mean(lo):.4f} / {mean(ln):.4f} / {mean(ls):.4f} | "
              f"{d_old:+.2e} ± {se_old:.1e} | {diffs[worst]:+.2e} (seed {seeds[worst]}) | {share:.0%} | "
              f"{d_sk:+.2e} ± {se_sk:.1e} | {mean(r['n_iter'] for r in o):.1f} / "
              f"{mean(r['n_iter'] for r in n):.1f} / {mean(r['n_iter'] for r in s):.1f} | "
              f"{mean(r['passes'] for r in o):.1f} (+{mean(r['gathers'] for r in o):.0f}) / "
              f"{mean(r['passes'] for r in n):.1f} |")
    print(f"\nall: new - old mean log-likelihood per sample: mean {mean(every):+.2e}, worst {min(every):+.2e}, "
          f"best {max(every):+.2e}; new ≥ old - {tolerance:g} on {sum(d >= -tolerance for d in every)}"
          f"/{len(every)} fits")
    return every


def quality(args: argparse.Namespace) -> dict[str, Any]:
    argv = ["quality-worker", "--datasets", args.datasets, "--seeds", str(args.seeds)]
    start = time.perf_counter()
    results: dict[str, Any] = {"old": _run_worker(args.old, argv), "new": _run_worker(str(NEW), argv)}
    print(f"old and new: {time.perf_counter() - start:.0f} s", flush=True)
    # The generated data have more rows than the 1e5-row sample: they take the sampled path already.
    small = ",".join(name for name in args.datasets.split(",") if not name.startswith("gen"))
    if args.sample_fraction and small:
        forced = ["quality-worker", "--datasets", small, "--seeds", str(args.seeds),
                  "--sample-fraction", str(args.sample_fraction)]
        forced += ["--sample-n-init", str(args.sample_n_init)] if args.sample_n_init else []
        results["new_sampled"] = _run_worker(str(NEW), forced)
        print(f"+ new, sampled: {time.perf_counter() - start:.0f} s", flush=True)
    results["sklearn"] = sklearn_quality(args.datasets, args.seeds)
    print(f"+ scikit-learn: {time.perf_counter() - start:.0f} s for all fits", flush=True)
    quality_table("Default path (data of at most 1e5 rows is its own sample)", results["old"], results["new"],
                  results["sklearn"])
    if "new_sampled" in results:
        fits = results["new_sampled"]
        used = {r["dataset"]: r["kmeans"][0] for r in fits if r["kmeans"]}
        quality_table(
            f"Out-of-core path forced: a {args.sample_fraction:g} row sample (KMeans rows and starts: "
            + ", ".join(f"{name} {rows}, best of {n_init}" for name, (rows, n_init) in used.items()) + ")",
            results["old"], fits, results["sklearn"],
        )
    return results


# -- end to end ------------------------------------------------------------------------------

def e2e_worker(args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    counter = PassCounter()
    timeline = Timeline() if args.split else None
    out = []
    if args.store:
        with LocalCluster(n_workers=args.n_workers, threads_per_worker=1, memory_limit=args.memory_limit,
                          dashboard_address=":0") as cluster, Client(cluster):
            from dgmm import open_dataset

            X = open_dataset(args.store)
            stream = get_task_stream() if timeline is not None else contextlib.nullcontext()
            with stream as tasks:
                fit = _default_fit(X, args.store_k, "diag", 0, counter, timeline)
            if timeline is not None:
                fit["tasks"], fit["n_workers"] = timeline.tasks(tasks.data), args.n_workers
            out.append({"config": f"store {args.store_desc}", **fit})
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


def print_split(row: dict[str, Any]) -> None:
    """Where the time to the first EM iteration of one store fit went (``e2e --split``)."""
    events = sorted(row["timeline"], key=lambda e: (e[2], e[1]))
    em_start = next((e[2] for e in events if e[0].startswith("EM loop")), float("inf"))
    first_em = next((e for e in events if e[0].startswith("statistics pass") and e[2] >= em_start), None)
    horizon = first_em[3] if first_em else row["to_first_iter"]
    print(f"\n{row['config']}: {row['to_first_iter']:.1f} s to the first EM iteration. Time line until "
          "the first EM iteration ends (seconds from fit() called):\n"
          "\n| call | start | end | seconds |\n|---|---|---|---|")
    for label, depth, start, end in events:
        if start <= horizon:
            print(f"| {'· ' * depth}{label} | {start:.2f} | {end:.2f} | {end - start:.2f} |")

    init = next((e for e in events if e[0].startswith("initialisation")), None)
    if init is None:
        return
    lo, hi, inside = init[2], init[3], init[1] + 1

    def total(prefix: str) -> float:
        """Seconds of the calls named ``prefix`` made directly by the initialisation."""
        return sum(e[3] - e[2] for e in events if e[0].startswith(prefix) and lo <= e[2] <= hi and e[1] == inside)

    sample, kmeans, hard = total("sample pass"), total("KMeans"), total("statistics pass")
    split = [("before the initialisation (opening, persist decision, spec)", lo),
             ("sample pass", sample), ("KMeans in memory", kmeans), ("hard-assignment pass", hard),
             ("rest of the initialisation", (hi - lo) - sample - kmeans - hard),
             ("between the initialisation and EM iteration 1", row["to_first_iter"] - hi),
             ("to the first EM iteration", row["to_first_iter"]),
             ("EM iteration 1 (history_)", row["em_seconds"][0] if row["em_seconds"] else float("nan")),
             ("EM iterations, median", row["em_s_per_iter"])]
    print("\n| part | seconds |\n|---|---|")
    for what, seconds in split:
        print(f"| {what} | {seconds:.1f} |")
    if row.get("tasks"):
        n_workers = row.get("n_workers", 2)
        print(f"\nWorkers' task seconds per pass (distributed's task stream; {n_workers} single-threaded "
              "workers, so a pass has n_workers x wall worker-seconds):\n\n| pass | wall s | worker-seconds "
              "busy | by task prefix (action: seconds) |\n|---|---|---|---|")
        passes = [e for e in events if e[0].startswith(("statistics pass", "map pass")) and e[2] <= horizon]
        for label, _, start, end in passes:
            busy: dict[str, float] = {}
            for prefix, action, t0, t1 in row["tasks"]:
                if start <= t0 <= end:
                    busy[f"{prefix} ({action})"] = busy.get(f"{prefix} ({action})", 0.0) + t1 - t0
            parts = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.05)
            print(f"| {label} at {start:.1f} s | {end - start:.1f} | {sum(busy.values()):.1f} | {parts} |")
    if row.get("passes_record"):
        print("\nPasses as the fit recorded them (passes_):\n\n| phase | step | pass | kind | seconds | GB/s |"
              "\n|---|---|---|---|---|---|")
        for p in row["passes_record"]:
            print(f"| {p['phase']} | {p['step']} of {p['steps']} | {p['pass']} | {p['kind']} | "
                  f"{p['seconds']:.1f} | {p['gb_per_second']:.3f} |")


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
    results = {"new": _run_worker(str(NEW), argv + ["--split"] * args.split)}
    for row in results["new"]:
        if "timeline" in row:  # printed now: the old tree's fit takes much longer
            print_split(row)
    results["old"] = [] if args.no_old else _run_worker(args.old, argv)
    results["sklearn"] = sklearn_fit(args.configs)
    print("| config | version | to 1st EM iter (s) | EM s/iter | EM iters | total wall (s) | passes (+gathers) |"
          " mean log-lik |\n|---|---|---|---|---|---|---|---|")
    for row_new, row_old in itertools.zip_longest(results["new"], results["old"]):
        for version, r in (("before", row_old), ("after", row_new)):
            if r is None:
                continue
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
    q.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per dataset, paired across versions")
    q.add_argument("--sample-fraction", type=float, default=0.4,
                   help="also fit the small real datasets on the out-of-core path, KMeans on this share of "
                        "the rows (0: not)")
    q.add_argument("--sample-n-init", type=int, default=None,
                   help="KMeans starts on the forced sample (default: the library's sample_kmeans_n_init)")
    qw = sub.add_parser("quality-worker")
    qw.add_argument("--datasets", required=True)
    qw.add_argument("--seeds", type=int, required=True)
    qw.add_argument("--sample-fraction", type=float, default=0.0)
    qw.add_argument("--sample-n-init", type=int, default=None)
    e = sub.add_parser("e2e", help="a default fit end to end, before/after, with scikit-learn")
    e.add_argument("--configs", default="1e5:16:16:full,1e5:32:64:diag,2e4:64:32:full",
                   help="in-memory n:d:K:covariance_type (bench_em.py's, n / 10)")
    e.add_argument("--store", default=None, help="an existing float32 d=16 Zarr store (else one is written)")
    e.add_argument("--store-gb", type=float, default=3.0, help="size of the store to write (0: none)")
    e.add_argument("--store-k", type=int, default=8)
    e.add_argument("--n-workers", type=int, default=2)
    e.add_argument("--memory-limit", default="1GiB", help="per worker: below the store's size")
    e.add_argument("--split", action="store_true",
                   help="time line of this tree's store fit until its first EM iteration")
    e.add_argument("--no-old", action="store_true", help="this tree only")
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
    ew.add_argument("--split", action="store_true")
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
