"""What checkpointing costs per EM iteration, relative to the iteration itself.

For every configuration (n_samples, n_features, n_components, covariance_type)
the same fit runs twice on one LocalCluster set up like dgmm's default (one
single-threaded worker process per core): without a checkpoint and with
``checkpoint=`` a fresh directory, from the same initial parameters, with
``tol=0`` and a fixed number of iterations. Reported:

* seconds per iteration: the median of ``history_[i]["seconds"]`` (the pass
  over the data and its reduction) over iterations 2.., for both fits;
* seconds per checkpoint write: the median wall time of writing the state
  after iterations 1.. (``LoopCheckpoint.save``: every restart's arrays, the
  loop state, fsyncs, the pointer swap; the old version is deleted in a
  background thread that overlaps the next pass and is waited for here);
* their ratio, and the whole fit's wall time with / without the checkpoint
  (which also holds the post-initialisation write and the cost of the
  background deletions), as an end-to-end check;
* the size of one checkpoint version.

Each pair of fits runs ``--repeat`` times, alternating which goes first; the
medians are reported. It is a report: nothing asserts. ``--target`` puts the
checkpoints under another directory or fsspec URL (e.g. an s3:// bucket).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_em import Config, initial_params, make_data  # noqa: E402

DEFAULT_CONFIGS = "1e5:16:8:full,1e6:16:16:full,1e6:32:64:diag,2e5:64:64:full"


class SaveTimer:
    """Wraps ``LoopCheckpoint.save`` to record (iteration, seconds) of every write."""

    def __init__(self) -> None:
        self.records: list[tuple[int, float]] = []

    def __enter__(self) -> SaveTimer:
        from dgmm.fit import loop as em

        self._original = em.LoopCheckpoint.save
        original, records = self._original, self.records

        def timed(loop: Any, iteration: int, restarts: list) -> None:
            start = time.perf_counter()
            original(loop, iteration, restarts)
            records.append((iteration, time.perf_counter() - start))

        em.LoopCheckpoint.save = timed
        return self

    def __exit__(self, *exc: object) -> None:
        from dgmm.fit import loop as em

        em.LoopCheckpoint.save = self._original


def _size(url: str) -> int:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return int(sum(fs.du(path, total=False).values()))


def fit_once(X: np.ndarray, init: dict, config: Config, iters: int, checkpoint: str | None) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    gmm = dgmm.GaussianMixture(
        config.n_components, covariance_type=config.covariance_type, tol=0.0,
        max_iter=1 + iters, checkpoint=checkpoint, **init,
    )
    with SaveTimer() as timer, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        gmm.fit(X)
        total = time.perf_counter() - start
    seconds = [h["seconds"] for h in gmm.history_]
    writes = [s for i, s in timer.records if i >= 1]
    return {
        "seconds_per_iter": float(np.median(seconds[1:])),
        "iteration_seconds": seconds,
        "fit_seconds": total,
        "write_seconds": writes,
        "first_write_seconds": next((s for i, s in timer.records if i == 0), None),
    }


def run_config(X: np.ndarray, config: Config, iters: int, repeat: int, target: str) -> dict[str, Any]:
    import fsspec

    init = initial_params(X, config)
    plain, ckpt, sizes = [], [], []
    for r in range(repeat):
        url = f"{target.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}"
        order = ("plain", "ckpt") if r % 2 == 0 else ("ckpt", "plain")
        for which in order:
            if which == "plain":
                plain.append(fit_once(X, init, config, iters, None))
            else:
                ckpt.append(fit_once(X, init, config, iters, url))
                sizes.append(_size(url))
                fs, path = fsspec.core.url_to_fs(url)
                fs.rm(path, recursive=True)
    per_iter = float(np.median([p["seconds_per_iter"] for p in plain]))
    per_iter_ckpt = float(np.median([c["seconds_per_iter"] for c in ckpt]))
    write = float(np.median([s for c in ckpt for s in c["write_seconds"]]))
    fit_plain = float(np.median([p["fit_seconds"] for p in plain]))
    fit_ckpt = float(np.median([c["fit_seconds"] for c in ckpt]))
    return {
        "config": config.name,
        "n_samples": config.n_samples,
        "n_features": config.n_features,
        "n_components": config.n_components,
        "covariance_type": config.covariance_type,
        "iters": iters,
        "seconds_per_iter": per_iter,
        "seconds_per_iter_with_checkpoint": per_iter_ckpt,
        "seconds_per_write": write,
        "write_over_iter": write / per_iter,
        "fit_seconds": fit_plain,
        "fit_seconds_with_checkpoint": fit_ckpt,
        "fit_overhead": fit_ckpt / fit_plain - 1.0,
        "checkpoint_bytes": int(np.median(sizes)),
        "runs": {"plain": plain, "checkpoint": ckpt},
        "loadavg_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | s / iteration | s / checkpoint write | write / iteration "
        "| s / iteration with checkpoint | fit s without / with | checkpoint size |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['seconds_per_iter']:.3f} | {r['seconds_per_write']:.4f} "
            f"| {100 * r['write_over_iter']:.1f} % | {r['seconds_per_iter_with_checkpoint']:.3f} "
            f"| {r['fit_seconds']:.2f} / {r['fit_seconds_with_checkpoint']:.2f} "
            f"({100 * r['fit_overhead']:+.1f} %) | {r['checkpoint_bytes'] / 1024:.0f} KiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default=DEFAULT_CONFIGS,
        help="comma-separated n:d:K:covariance_type items (default: %(default)s)",
    )
    parser.add_argument("--iters", type=int, default=None, help="timed EM iterations (default 10; 3 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="pairs of fits per configuration (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="n_samples / 10, 3 iterations, 1 pair: a fast check")
    parser.add_argument(
        "--n-workers", type=int, default=None,
        help="LocalCluster workers, 1 thread each (default: one per core, as dgmm's own)",
    )
    parser.add_argument("--target", default=None, help="directory or fsspec URL for the checkpoints (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=None, help="write all results as JSON here")
    args = parser.parse_args(argv)

    configs = [Config.parse(c) for c in args.configs.split(",") if c]
    if args.quick:
        configs = [
            Config(max(c.n_samples // 10, 10 * c.n_components), c.n_features, c.n_components, c.covariance_type)
            for c in configs
        ]
    iters = args.iters or (3 if args.quick else 10)
    repeat = args.repeat or (1 if args.quick else 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_workers = args.n_workers or cores

    from distributed import Client, LocalCluster

    import dgmm

    results = []
    with tempfile.TemporaryDirectory(prefix="dgmm-bench-ckpt-") as tmp, LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster):
        target = args.target or tmp
        # Warm-up: imports on the workers and a first checkpoint write.
        warm = make_data(Config(4000, 4, 2, "full"), "float64")
        fit_once(warm, initial_params(warm, Config(4000, 4, 2, "full")), Config(4000, 4, 2, "full"), 2, f"{tmp}/warm")
        for config in configs:
            X = make_data(config, "float64")
            print(f"# {config.name} ...", file=sys.stderr, flush=True)
            result = run_config(X, config, iters, repeat, target)
            results.append(result)
            print(
                f"# {config.name}: {result['seconds_per_iter']:.3f} s/iter, "
                f"{result['seconds_per_write']:.4f} s/write ({100 * result['write_over_iter']:.1f} %)",
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
            "n_workers": n_workers,
            "iters": iters,
            "repeat": repeat,
            "quick": args.quick,
            "target": args.target or "local temporary directory",
            "dgmm": dgmm.__version__,
            "numpy": np.__version__,
        }
        args.output.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=2))


if __name__ == "__main__":
    main()
