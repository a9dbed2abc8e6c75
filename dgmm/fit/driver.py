"""One fit on one dataset: a ``FitSpec`` in, a ``FitResult`` out (the body of ``GaussianMixture.fit``).

Connects to the cluster and redoes the fit when a lost worker took data only
the client had (bit-identical: the seed is the spec's); checks the data and
the spec's initial parameters against it; fingerprints data and settings so a
checkpoint is resumed only by the fit that wrote it; starts the restarts (or
continues a warm start), runs :func:`dgmm.fit.loop.run_em` with progress
(:mod:`dgmm.fit.progress`: every pass labelled "opening data", "initialisation"
or "EM iteration i") and checkpoints, and returns the best restart as a ``FitResult``. It never sees
the estimator: ``GaussianMixture.fit`` builds the spec and sets its fitted
attributes (and issues the result's ``ConvergenceWarning``) from the result.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp

from dgmm.core.family import MixtureParams, family_of
from dgmm.core.lowrank import LowRankStats
from dgmm.errors import InvalidDataError, ShapeMismatchError
from dgmm.fit import init_lowrank, init_multinomial
from dgmm.fit.cluster import WorkerWatch, connect, maybe_persist, redo_while_recoverable, total_threads
from dgmm.fit.data import open_for_fit, require_dense, scatter_to
from dgmm.fit.init import InitConfig, initialize
from dgmm.fit.loop import (
    LoopCheckpoint,
    RestartState,
    best_restart,
    chain_iterations,
    run_em,
    stop_on_interrupt,
)
from dgmm.fit.progress import FitProgress, phase
from dgmm.fit.spec import FitResult, FitSpec, RestartSummary
from dgmm.io.checkpoint import Checkpoint, content_digest, data_fingerprint
from dgmm.io.dataset import Dataset
from dgmm.io.sources import as_float_array, as_sample_weight, default_row_chunk, is_in_memory
from dgmm.io.sparse import content_digest as sparse_content_digest

__all__ = ["fit"]


def fit(spec: FitSpec, X: Any, sample_weight: Any = None) -> FitResult:
    """Fit the mixture ``spec`` describes to ``X``.

    Parameters
    ----------
    spec : FitSpec
        The validated hyper-parameters, seed and warm start of the fit.
    X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
        Any source :func:`dgmm.open_dataset` accepts.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    result : FitResult
        The best restart's parameters, convergence and history, and the
        data's feature count and names.
    """
    progress = FitProgress(spec.verbose, spec.verbose_interval, spec.on_progress)
    with progress, connect(
        client=spec.client, scheduler_address=spec.scheduler_address, scheduler=spec.scheduler, data=X,
    ) as client:
        watch = WorkerWatch(client)

        def attempt() -> tuple[da.Array, np.ndarray | None, list[RestartState]]:
            with phase("opening data"):
                # One read of a store's metadata gives the array and the names;
                # default chunks are sized by this cluster's threads.
                data = open_for_fit(X, chunks=_chunks_in_memory(spec, X, client), client=client)
                data = _chunks_for_statistics(spec, X, data, client)
                x = data.array
                _check_data(spec, x)
                weight = as_sample_weight(sample_weight, x, scatter=scatter_to(client))
                if not data.in_memory:
                    x = maybe_persist(x, client)
            digests = _digests(X, sample_weight) if spec.checkpoint is not None else (None, None)
            return x, data.feature_names, _fit(spec, x, weight, digests, watch=watch, progress=progress)

        x, names, restarts = redo_while_recoverable(client, watch, attempt)
        best = best_restart(restarts)
        watch.attach(best.history)
    return FitResult(
        params=best.params,
        converged=bool(best.converged),
        n_iter=int(best.n_iter),
        lower_bound=float(best.lower_bound),
        lower_bounds=tuple(best.lower_bounds),
        history=tuple(best.history),
        n_features_in=int(x.shape[1]),
        feature_names_in=names,
        restarts=tuple(
            RestartSummary(r.index, float(r.lower_bound), bool(r.converged), int(r.n_iter))
            for r in restarts
        ),
        convergence_warning=_convergence_message(spec, best),
        dtype=str(x.dtype),
        passes=tuple(progress.passes),
    )


def statistics_rows(spec: FitSpec, n_rows: int, n_features: int, itemsize: int, n_threads: int) -> int | None:
    """Rows per chunk a low-rank fit needs so that a chunk's statistics are no larger than its data.

    A chunk's low-rank statistics (:meth:`LowRankStats.nbytes`) are ~8·K·d·(rank + 2) bytes whatever its
    rows: at K=1000, d=12288, rank 10 that is 1.2 GB, so the default ~64 MiB
    chunks (1365 rows of float32 there) would each send 18x their size to
    the reduction. Chunks grow until the data outweighs the statistics, but
    stay at least two per worker thread. None: the default chunks are enough
    (or the fit is not low-rank, or ``chunks`` was given).
    """
    if spec.covariance_type != "lowrank" or spec.chunks is not None or n_rows == 0:
        return None
    statistics = LowRankStats.nbytes(spec.n_components, n_features, spec.rank, spec.noise_type)
    needed = -(-statistics // max(1, n_features * itemsize))
    by_parallelism = -(-n_rows // (2 * max(1, n_threads)))
    rows = min(needed, by_parallelism, n_rows)
    return rows if rows > default_row_chunk(n_rows, n_features, itemsize, n_threads) else None


def _chunks_in_memory(spec: FitSpec, X: Any, client: Any) -> int | None:
    """``spec.chunks``, or for in-memory rows of a low-rank fit the rows its statistics need."""
    if spec.covariance_type != "lowrank" or spec.chunks is not None or not is_in_memory(X) or sp.issparse(X):
        return spec.chunks
    shape = getattr(X, "shape", None)  # array-likes without one are converted by open_for_fit
    if shape is None or len(shape) != 2:
        return None  # open_for_fit names the problem
    itemsize = 4 if getattr(X, "dtype", None) == np.float32 else 8
    return statistics_rows(spec, shape[0], shape[1], itemsize, total_threads(client))


def _chunks_for_statistics(spec: FitSpec, X: Any, data: Dataset, client: Any) -> Dataset:
    """Stored data of a low-rank fit re-chunked (along storage chunks) so statistics do not outweigh it.

    A Dask array given by the user keeps its own chunks (as ``chunks=None`` promises).
    """
    if data.in_memory or (isinstance(X, da.Array) and Dataset.of(X) is None):
        return data
    n_rows, n_features = data.array.shape
    rows = statistics_rows(spec, n_rows, n_features, data.array.dtype.itemsize, total_threads(client))
    if rows is None or rows <= max(data.array.chunks[0], default=0):
        return data
    return data.reopen(rows)


def _check_data(spec: FitSpec, x: da.Array) -> None:
    """Too few rows in x of shape (n_samples, n_features) for the spec raise; so do
    sparse chunks for a family that needs dense rows (Gaussian)."""
    if spec.family == "gaussian":
        require_dense(x)
    n_rows = x.shape[0]
    if n_rows < spec.n_components:
        raise InvalidDataError(
            f"Expected n_samples >= n_components but got n_components = "
            f"{spec.n_components}, n_samples = {n_rows}. Use fewer components "
            "or more data."
        )
    if n_rows < 2 and spec.max_iter > 0:
        raise InvalidDataError(
            f"Found array with {n_rows} sample(s) (shape={x.shape}) while a minimum "
            "of 2 is required to fit a mixture. Pass more rows."
        )


def _digests(X: Any, sample_weight: Any) -> tuple[str | None, str | None]:
    """Content digests of in-memory X and weights (their scattered names are random)."""
    if sp.issparse(X):
        x_digest = sparse_content_digest(X)
    else:
        x_digest = content_digest(as_float_array(X)) if is_in_memory(X) else None
    w_digest = None
    if sample_weight is not None and not isinstance(sample_weight, da.Array):
        w_digest = content_digest(np.asarray(sample_weight, dtype=np.float64))
    return x_digest, w_digest


def _fingerprint(
    spec: FitSpec, x: da.Array, weight: da.Array | None, digests: tuple[str | None, str | None]
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this fit: data and result-changing settings."""
    inits = _init_arrays(spec, x.shape[1])
    warm = spec.warm_start
    return {
        "data": {
            "X": data_fingerprint(x, digests[0]),
            "sample_weight": None if weight is None else data_fingerprint(weight, digests[1]),
        },
        "config": {
            "n_components": spec.n_components,
            "covariance_type": spec.covariance_type,
            "tol": spec.tol,
            "reg_covar": spec.reg_covar,
            "n_init": spec.n_init,
            "init_params": "warm_start" if warm is not None else spec.init_params,
            **{k: None if v is None else content_digest(v) for k, v in inits.items()},
            "warm_start_params": None if warm is None else _params_digest(warm.params),
            "random_state": spec.random_state,
            "on_degenerate": spec.on_degenerate,
            "split_every": spec.split_every,
            "block_size": spec.block_size,
            **({} if spec.family == "gaussian" else {"family": spec.family, "alpha": spec.alpha}),
            # Only for "lowrank", so the Gaussian types' fingerprints stay what they were.
            **({"rank": spec.rank, "noise_type": spec.noise_type} if spec.covariance_type == "lowrank" else {}),
        },
    }


def _init_arrays(spec: FitSpec, n_features: int) -> dict[str, np.ndarray | None]:
    """The spec's initial arrays, checked by its family's rules."""
    if spec.family == "multinomial":
        return init_multinomial.init_arrays(spec, n_features)
    return spec.init_arrays(n_features)


def _start(spec: FitSpec, x: da.Array, weight: da.Array | None) -> list[RestartState]:
    """The restarts after initialisation (or from the previous fit with warm_start)."""
    warm = spec.warm_start
    if warm is None and spec.family == "multinomial":
        starts = init_multinomial.initialize(
            x, spec, spec.n_init, sample_weight=weight, **_init_arrays(spec, x.shape[1])
        )
        lower_bound = -np.inf
    elif warm is None:
        start = init_lowrank.initialize if spec.covariance_type == "lowrank" else initialize
        starts = start(
            x,
            InitConfig.from_spec(spec),
            spec.em_config,
            spec.n_init,
            sample_weight=weight,
            **spec.init_arrays(x.shape[1]),
        )
        lower_bound = -np.inf
    else:
        if warm.params.n_features != x.shape[1]:
            raise ShapeMismatchError(
                f"warm_start continues a fit with {warm.params.n_features} features; "
                f"X has {x.shape[1]}. Refit from scratch (warm_start=False)."
            )
        starts = [warm.params]
        lower_bound = warm.lower_bound
    return [
        RestartState(i, p, np.random.default_rng([spec.seed, i, 1]), lower_bound=lower_bound)
        for i, p in enumerate(starts)
    ]


def _fit(
    spec: FitSpec,
    x: da.Array,
    weight: da.Array | None,
    digests: tuple[str | None, str | None] = (None, None),
    watch: WorkerWatch | None = None,
    progress: FitProgress | None = None,
) -> list[RestartState]:
    """One attempt on prepared data: start or resume, run EM; the restarts as they ended."""
    em_config = spec.em_config
    loop, resumed = None, None
    if spec.checkpoint is not None:
        store = Checkpoint(spec.checkpoint, storage_options=spec.checkpoint_storage_options)
        loop = LoopCheckpoint(
            store, _fingerprint(spec, x, weight, digests), spec.seed, {"max_iter": spec.max_iter}
        )
    try:
        if loop is not None:
            # The writer's lease first: a second fit on this checkpoint (a scheduled
            # job overlapping its previous run) is refused before any pass over the data.
            loop.store.acquire()
            resumed = loop.load(spec.max_iter)
        with stop_on_interrupt(loop is not None) as interrupt:
            if resumed is not None:
                start, restarts = resumed
            else:
                with phase("initialisation"):
                    start, restarts = 0, _start(spec, x, weight)
                if loop is not None:
                    loop.save(0, restarts)
                    interrupt.check(0, loop.url)
            run_em(
                x, restarts, em_config, sample_weight=weight,
                on_iteration=chain_iterations(None if progress is None else progress.on_iteration, watch),
                start_iteration=start,
                on_checkpoint=None if loop is None else loop.save,
                interrupt=interrupt,
                checkpoint_url="" if loop is None else loop.url,
            )
    finally:
        if loop is not None:
            loop.store.close()
    return restarts


def _convergence_message(spec: FitSpec, best: RestartState) -> str | None:
    """The ``ConvergenceWarning`` message when the best restart did not converge, else None."""
    if best.converged or spec.max_iter == 0:
        return None
    message = (
        "Best performing initialization did not converge. Try different init "
        "parameters, or increase max_iter, tol, or check for degenerate data."
    )
    reseeds = sum(e["event"] == "reseed" for h in best.history for e in h["events"])
    if reseeds:
        message += (
            f" Components were re-seeded {reseeds} time(s) because they kept "
            "collapsing (see history_): increase reg_covar or reduce n_components."
        )
    return message


def _params_digest(params: MixtureParams) -> str:
    """One digest of all the parameter arrays (those of the params' family)."""
    arrays = family_of(params).to_arrays(params)[1].values()
    return content_digest(np.concatenate([np.ravel(a) for a in arrays]))
