"""One fit of a ``GaussianMixture``: the machinery behind ``GaussianMixture.fit``.

Connects to the cluster and redoes the fit when a lost worker took data only
the client had (bit-identical); checks the data and the user's initial
parameters; fingerprints data and settings so a checkpoint is resumed only by
the fit that wrote it; starts the restarts (or continues a warm start), runs
:func:`dgmm.fit.loop.run_em` with progress and checkpoints, and sets the fitted
attributes on the estimator.
"""

from __future__ import annotations

import itertools
import time
import warnings
from numbers import Integral
from typing import Any

import dask.array as da
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from dgmm.core.covariance import get_covariance_model
from dgmm.core.params import GMMParams
from dgmm.errors import InvalidDataError, ShapeMismatchError
from dgmm.fit.cluster import WorkerWatch, connect, maybe_persist, recoverable, total_threads
from dgmm.fit.init import InitConfig, initialize
from dgmm.fit.loop import LoopCheckpoint, RestartState, best_restart, run_em, stop_on_interrupt
from dgmm.fit.spec import EMConfig
from dgmm.io.checkpoint import Checkpoint, content_digest, data_fingerprint
from dgmm.io.sources import as_dask_array, as_float_array, as_sample_weight, feature_names, is_in_memory

__all__ = ["fit"]


def fit(estimator: Any, X: Any, sample_weight: Any) -> None:
    """Fit ``estimator`` (validated) on ``X``: the body of ``GaussianMixture.fit``."""
    names = feature_names(X)
    if names is not None:
        estimator.feature_names_in_ = names
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_  # fitted again on data without names, as scikit-learn
    with connect(
        client=estimator.client, scheduler_address=estimator.scheduler_address,
        scheduler=estimator.scheduler, data=X,
    ) as client:
        watch = WorkerWatch(client)
        for attempt in itertools.count():
            try:
                x = as_dask_array(
                    X, chunks=estimator.chunks, client=client, n_threads=total_threads(client)
                )
                _check_data(estimator, x)
                weight = as_sample_weight(sample_weight, x, client=client)
                if not is_in_memory(X):
                    x = maybe_persist(x, client)
                digests = _digests(X, sample_weight) if estimator.checkpoint is not None else (None, None)
                _fit(estimator, x, weight, digests, watch=watch)
                break
            except Exception as exc:
                # A lost worker took chunks only the client has (or the scattered
                # parameters): send them again and redo the fit (bit-identical).
                if not recoverable(client, exc, attempt, watch):
                    raise
        watch.attach(estimator.history_)


def _check_data(estimator: Any, x: da.Array) -> None:
    """Set ``n_features_in_`` from x of shape (n_samples, n_features); too few rows raise."""
    n_rows, n_features = x.shape
    estimator.n_features_in_ = n_features
    if n_rows < estimator.n_components:
        raise InvalidDataError(
            f"Expected n_samples >= n_components but got n_components = "
            f"{estimator.n_components}, n_samples = {n_rows}. Use fewer components "
            "or more data."
        )
    if n_rows < 2 and estimator.max_iter > 0:
        raise InvalidDataError(
            f"Found array with {n_rows} sample(s) (shape={x.shape}) while a minimum "
            "of 2 is required to fit a mixture. Pass more rows."
        )


def _init_arrays(estimator: Any, n_features: int) -> dict[str, np.ndarray | None]:
    """``weights_init``, ``means_init``, ``precisions_init`` as checked float64 arrays, or None."""
    k = estimator.n_components
    model = get_covariance_model(estimator.covariance_type)
    out: dict[str, np.ndarray | None] = {}
    for name, shape in (
        ("weights_init", (k,)),
        ("means_init", (k, n_features)),
        ("precisions_init", model.shape(k, n_features)),
    ):
        value = getattr(estimator, name)
        if value is None:
            out[name] = None
            continue
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidDataError(
                f"The parameter '{name}' must be a numeric array ({exc}). Pass an "
                f"array of shape {shape} or None."
            ) from None
        if array.shape != shape:
            raise ShapeMismatchError(
                f"The parameter '{name}' should have the shape of {shape} for "
                f"{k} '{estimator.covariance_type}' components and {n_features} features, "
                f"but got {array.shape}. Pass an array of shape {shape}, or None to "
                "let init_params choose it."
            )
        if not np.all(np.isfinite(array)):
            raise InvalidDataError(
                f"The parameter '{name}' contains NaN or Inf; expected finite "
                "values. Replace them, or pass None to let init_params choose it."
            )
        out[name] = array
    w = out["weights_init"]
    if w is not None:
        if np.any(w < 0) or np.any(w > 1):
            raise InvalidDataError(
                f"The parameter 'weights_init' should be in the range [0, 1], but got "
                f"min value {w.min():.5f}, max value {w.max():.5f}. Pass non-negative "
                "weights that sum to 1."
            )
        if not np.allclose(np.abs(1.0 - np.sum(w)), 0.0):
            raise InvalidDataError(
                "The parameter 'weights_init' should be normalized (sum to 1), but got "
                f"sum(weights) = {np.sum(w):.5f}. Divide it by its sum."
            )
    p = out["precisions_init"]
    if p is not None:
        bad = model.is_positive_definite(p)
        if bad.size:
            raise InvalidDataError(
                f"'{estimator.covariance_type}' precisions_init must be symmetric positive "
                f"definite; component(s) {bad.tolist()} are not. Pass the inverses "
                "of valid covariance matrices, or None to let init_params choose them."
            )
    return out


def _digests(X: Any, sample_weight: Any) -> tuple[str | None, str | None]:
    """Content digests of in-memory X and weights (their scattered names are random)."""
    x_digest = content_digest(as_float_array(X)) if is_in_memory(X) else None
    w_digest = None
    if sample_weight is not None and not isinstance(sample_weight, da.Array):
        w_digest = content_digest(np.asarray(sample_weight, dtype=np.float64))
    return x_digest, w_digest


def _fingerprint(
    estimator: Any, x: da.Array, weight: da.Array | None, digests: tuple[str | None, str | None]
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this fit: data and result-changing settings."""
    inits = _init_arrays(estimator, x.shape[1])
    warm = estimator.warm_start and hasattr(estimator, "converged_")
    random_state = estimator.random_state
    if not (random_state is None or isinstance(random_state, Integral)):
        # A RandomState instance: its draws are not reproducible; the stored seed is used.
        random_state = type(random_state).__name__
    return {
        "data": {
            "X": data_fingerprint(x, digests[0]),
            "sample_weight": None if weight is None else data_fingerprint(weight, digests[1]),
        },
        "config": {
            "n_components": int(estimator.n_components),
            "covariance_type": estimator.covariance_type,
            "tol": float(estimator.tol),
            "reg_covar": float(estimator.reg_covar),
            "n_init": 1 if warm else int(estimator.n_init),
            "init_params": "warm_start" if warm else estimator.init_params,
            **{k: None if v is None else content_digest(v) for k, v in inits.items()},
            "warm_start_params": _params_digest(estimator._params()) if warm else None,
            "random_state": None if random_state is None else (
                int(random_state) if isinstance(random_state, Integral) else random_state
            ),
            "on_degenerate": estimator.on_degenerate,
            "split_every": int(estimator.split_every),
            "block_size": None if estimator.block_size is None else int(estimator.block_size),
        },
    }


def _start(
    estimator: Any, x: da.Array, weight: da.Array | None, em_config: EMConfig, seed: int
) -> list[RestartState]:
    """The restarts after initialisation (or from the previous fit with warm_start)."""
    do_init = not (estimator.warm_start and hasattr(estimator, "converged_"))
    if do_init:
        inits = _init_arrays(estimator, x.shape[1])
        starts = initialize(
            x,
            InitConfig(estimator.n_components, estimator.init_params, seed),
            em_config,
            estimator.n_init,
            sample_weight=weight,
            **inits,
        )
        lower_bound = -np.inf
    else:
        if estimator.n_features_in_ != estimator.means_.shape[1]:
            raise ShapeMismatchError(
                f"warm_start continues a fit with {estimator.means_.shape[1]} features; "
                f"X has {estimator.n_features_in_}. Refit from scratch (warm_start=False)."
            )
        starts = [estimator._params()]
        lower_bound = estimator.lower_bound_
    return [
        RestartState(i, p, np.random.default_rng([seed, i, 1]), lower_bound=lower_bound)
        for i, p in enumerate(starts)
    ]


def _fit(
    estimator: Any,
    x: da.Array,
    weight: da.Array | None,
    digests: tuple[str | None, str | None] = (None, None),
    watch: WorkerWatch | None = None,
) -> None:
    """One attempt on prepared data: start or resume, run EM, set the fitted attributes."""
    em_config = EMConfig(
        covariance_type=estimator.covariance_type,
        tol=estimator.tol,
        reg_covar=estimator.reg_covar,
        max_iter=estimator.max_iter,
        on_degenerate=estimator.on_degenerate,
        split_every=estimator.split_every,
        block_rows=estimator.block_size,
    )
    seed = estimator._seed()
    loop, resumed = None, None
    if estimator.checkpoint is not None:
        store = Checkpoint(estimator.checkpoint, storage_options=estimator.checkpoint_storage_options)
        loop = LoopCheckpoint(
            store, _fingerprint(estimator, x, weight, digests), seed, {"max_iter": int(estimator.max_iter)}
        )
        resumed = loop.load(estimator.max_iter)
    try:
        with stop_on_interrupt(loop is not None) as interrupt:
            if resumed is not None:
                start, restarts = resumed
            else:
                start, restarts = 0, _start(estimator, x, weight, em_config, seed)
                if loop is not None:
                    loop.save(0, restarts)
                    interrupt.check(0, loop.url)
            with _progress(estimator.verbose, estimator.verbose_interval, estimator.max_iter) as progress:
                run_em(
                    x, restarts, em_config, sample_weight=weight,
                    on_iteration=_chain(progress, watch),
                    start_iteration=start,
                    on_checkpoint=None if loop is None else loop.save,
                    interrupt=interrupt,
                    checkpoint_url="" if loop is None else loop.url,
                )
    finally:
        if loop is not None:
            loop.store.close()
    best = best_restart(restarts)
    estimator._set_params(best.params)
    estimator.converged_ = best.converged
    estimator.n_iter_ = best.n_iter
    estimator.lower_bound_ = best.lower_bound
    estimator.lower_bounds_ = list(best.lower_bounds)
    estimator.history_ = best.history
    if not estimator.converged_ and estimator.max_iter > 0:
        message = (
            "Best performing initialization did not converge. Try different init "
            "parameters, or increase max_iter, tol, or check for degenerate data."
        )
        reseeds = sum(e["event"] == "reseed" for h in estimator.history_ for e in h["events"])
        if reseeds:
            message += (
                f" Components were re-seeded {reseeds} time(s) because they kept "
                "collapsing (see history_): increase reg_covar or reduce n_components."
            )
        # stacklevel: the caller of GaussianMixture.fit (through fit and _fit here).
        warnings.warn(message, ConvergenceWarning, stacklevel=4)


def _chain(*callbacks: Any) -> Any:
    """One ``on_iteration(iteration, restarts)`` calling every non-None callback in order."""
    live = [c for c in callbacks if c is not None]
    if not live:
        return None

    def call(iteration: int, restarts: list[RestartState]) -> None:
        for callback in live:
            callback(iteration, restarts)

    return call


def _params_digest(params: GMMParams) -> str:
    """One digest of all four parameter arrays."""
    arrays = (params.weights, params.means, params.covariances, params.precisions_cholesky)
    return content_digest(np.concatenate([np.ravel(a) for a in arrays]))


class _progress:
    """Progress over EM iterations (context manager yielding the callback).

    verbose >= 1: a tqdm bar (or, without tqdm, a line at the end);
    verbose >= 2: also a line every ``interval`` iterations, like scikit-learn.
    """

    def __init__(self, verbose: int, interval: int, total: int) -> None:
        self.verbose = int(verbose)
        self.interval = interval
        self.total = total
        self.bar = None
        self.start = 0.0
        self.last: tuple[int, float] | None = None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def __enter__(self):
        if self.verbose < 1:
            return None
        self.start = time.perf_counter()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional: fall back to plain lines
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=self.total, desc="EM", unit="iter", leave=False)

        def update(iteration: int, restarts: list[RestartState]) -> None:
            best = max((r.lower_bound for r in restarts), default=-np.inf)
            self.last = (iteration, best)
            if self.bar is not None:
                self.bar.set_postfix(lower_bound=f"{best:.6g}")
                self.bar.update(iteration - self.bar.n)
            if self.verbose >= 2 and iteration % self.interval == 0:
                self._write(
                    f"  Iteration {iteration}\t time lapse {time.perf_counter() - self.start:.5f}s"
                    f"\t lower bound {best:.10g}"
                )

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.verbose >= 1 and self.last is not None:
            iteration, best = self.last
            self._write(f"EM: {iteration} iterations, lower bound {best:.10g}")
