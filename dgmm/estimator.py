"""``dgmm.GaussianMixture``: scikit-learn's API, fitted by exact EM on Dask."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import warnings
from numbers import Integral, Real
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _graph
from ._kernels import require_finite
from .cluster import WorkerWatch, connect, maybe_persist, recoverable, total_threads
from .covariance import COVARIANCE_TYPES, get_covariance_model
from .checkpoint import Checkpoint, content_digest, data_fingerprint
from .em import EMConfig, LoopCheckpoint, RestartState, best_restart, run_em, stop_on_interrupt
from .errors import InvalidDataError, ShapeMismatchError
from .init import INIT_METHODS, InitConfig, initialize
from .params import GMMParams
from .sources import (
    as_dask_array,
    as_float_array,
    as_sample_weight,
    check_feature_names,
    feature_names,
    is_in_memory,
)

__all__ = ["GaussianMixture"]

logger = logging.getLogger("dgmm")


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by exact EM over a Dask cluster.

    The parameters and fitted attributes are scikit-learn's
    (:class:`sklearn.mixture.GaussianMixture`); the data may be a NumPy array
    or a Dask array larger than memory. Each EM iteration reads every row
    once: chunks are mapped to sufficient statistics on the workers, reduced
    in a tree, and the M-step runs on the client. ``fit`` uses the current
    ``distributed.Client``, or starts a LocalCluster (one single-threaded
    worker per core) and closes it afterwards.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Form of the covariance of each component.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood per
        sample between iterations.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals.
    max_iter : int, default=100
        Number of EM iterations (passes over the data) at most.
    n_init : int, default=1
        Number of initialisations. They run in lockstep: every pass over the
        data updates every restart still running; the best lower bound wins.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data', 'split'}, default='kmeans'
        'kmeans' is k-means|| seeding over the whole data then Lloyd passes;
        'k-means++' and 'random_from_data' pick centres from a uniform sample
        of rows; 'random' draws random responsibilities; 'split' grows the
        mixture from one component by splitting along principal axes. See
        :mod:`dgmm.init` for the passes each costs.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        User-given initial parameters, as in scikit-learn.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and re-seeding. The same seed, data and
        chunking give bit-identical results on any number of workers.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution (``n_init`` is then 1).
    verbose : int, default=0
        0 silent; 1 a progress bar over iterations (tqdm, if installed);
        2 also prints a line every ``verbose_interval`` iterations, as
        scikit-learn. The ``dgmm`` logger has a line per iteration at INFO.
    verbose_interval : int, default=10
        Iterations between progress lines when ``verbose >= 2``.
    chunks : int, default=None
        Rows per chunk of in-memory input (and re-chunking of Dask input).
        Stored input (a path, or an array from :func:`dgmm.open_dataset`) is
        chunked by whole storage chunks: ``chunks`` is rounded to them.
        By default ~64 MiB, at least two chunks per worker thread.
    block_size : int, default=None
        Rows processed at a time inside a chunk; bounds a task's memory.
        By default chosen from n_components so temporaries stay near 4 MiB.
    split_every : int, default=8
        Fan-in of the tree that merges the chunks' statistics.
    on_degenerate : {'reseed', 'raise'}, default='reseed'
        What to do when a component collapses: re-seed it by splitting the
        heaviest component (recorded in ``history_``), or raise
        :class:`dgmm.errors.DegenerateComponentError` as scikit-learn does.
    client : distributed.Client, default=None
        Run on this client's cluster. Clones (``sklearn.base.clone``,
        ``GridSearchCV``) share it; pickling drops it (a connection cannot
        travel).
    scheduler_address : str, default=None
        Otherwise connect to this scheduler (``'tcp://host:8786'``, or
        ``'tls://host:8786'`` with the ``distributed.comm.tls.*`` Dask config)
        for each fit. Without either: the current default ``Client``, then
        Dask's ``scheduler-address`` config / ``DASK_SCHEDULER_ADDRESS``, then
        a LocalCluster started for the fit. See :func:`dgmm.cluster.connect`.
    checkpoint : str or os.PathLike, default=None
        Directory (local path or fsspec URL such as ``'s3://bucket/ckpt'``)
        where the fit writes the model and its whole loop state after
        initialisation and after every iteration, atomically. A fit given an
        existing checkpoint resumes it and ends bit-identical to an
        uninterrupted fit; a finished one returns its model without passes
        over the data. The checkpoint must come from the same data (shape,
        dtype, chunks, content or store) and the same result-changing
        parameters, else :class:`dgmm.errors.CheckpointMismatchError` names
        what differs; ``max_iter`` may grow (the fit continues), not shrink
        below the iterations done. With a checkpoint, Ctrl-C stops after the
        current iteration's checkpoint and raises
        :class:`dgmm.errors.FitInterrupted`. See :mod:`dgmm.checkpoint`.
    checkpoint_storage_options : dict, default=None
        fsspec options for ``checkpoint`` (credentials, ``endpoint_url``).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
        As in scikit-learn, float64.
    converged_ : bool
    n_iter_ : int
        EM iterations of the best restart.
    lower_bound_ : float
        Mean log-likelihood of the best restart's last E-step.
    lower_bounds_ : list of float
        The lower bound at every iteration of the best restart.
    history_ : list of dict
        Per iteration of the best restart: ``iteration``, ``lower_bound``,
        ``change``, ``seconds``, ``events`` (re-seeds, likelihood decreases).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, defined only when X has feature names that
        are all strings: the columns of a pandas or Dask DataFrame or of a
        Parquet file or directory, read from metadata (for an array from
        :func:`dgmm.open_dataset`, the columns it was opened with). Arrays,
        Zarr, ``.npy`` and xarray DataArrays have none. The names of X in
        ``predict`` and the other methods are checked against them as
        scikit-learn does (see :func:`dgmm.sources.feature_names`).

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client
    >>> from dgmm import GaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> with Client(processes=False, dashboard_address=":0"):
    ...     gmm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(np.sort(gmm.means_[:, 0]))
    array([-5.,  5.])
    >>> gmm.predict(np.array([[-5.0, -5.0], [5.0, 5.0]])).tolist() in ([0, 1], [1, 0])
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "chunks": [Interval(Integral, 1, None, closed="left"), None],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "split_every": [Interval(Integral, 2, None, closed="left")],
        "on_degenerate": [StrOptions({"reseed", "raise"})],
        "client": [HasMethods(["scatter", "submit"]), None],
        "scheduler_address": [str, None],
        "checkpoint": [str, os.PathLike, None],
        "checkpoint_storage_options": [dict, None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunks: int | None = None,
        block_size: int | None = None,
        split_every: int = 8,
        on_degenerate: str = "reseed",
        client: Any = None,
        scheduler_address: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_storage_options: dict | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunks = chunks
        self.block_size = block_size
        self.split_every = split_every
        self.on_degenerate = on_degenerate
        self.client = client
        self.scheduler_address = scheduler_address
        self.checkpoint = checkpoint
        self.checkpoint_storage_options = checkpoint_storage_options

    # -- fitting ------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> GaussianMixture:
        """Estimate the parameters with the EM algorithm.

        Parameters
        ----------
        X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
            The data, or where it is stored (a Zarr, Parquet or .npy path or
            fsspec URL): any source :func:`dgmm.open_dataset` accepts, with its
            defaults; float32 stays float32 in the kernels.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights: a row of weight 2 counts as that row twice.

        Returns
        -------
        self : GaussianMixture
            The fitted mixture.
        """
        self._validate_params()
        names = feature_names(X)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # fitted again on data without names, as scikit-learn
        with connect(client=self.client, scheduler_address=self.scheduler_address) as client:
            watch = WorkerWatch(client)
            for attempt in itertools.count():
                try:
                    x = as_dask_array(
                        X, chunks=self.chunks, client=client, n_threads=total_threads(client)
                    )
                    self._check_data(x)
                    weight = as_sample_weight(sample_weight, x, client=client)
                    if not is_in_memory(X):
                        x = maybe_persist(x, client)
                    digests = self._digests(X, sample_weight) if self.checkpoint is not None else (None, None)
                    self._fit(x, weight, digests, watch=watch)
                    break
                except Exception as exc:
                    # A lost worker took chunks only the client has (or the scattered
                    # parameters): send them again and redo the fit (bit-identical).
                    if not recoverable(client, exc, attempt, watch):
                        raise
            watch.attach(self.history_)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then predict the labels of ``X`` (lazily for Dask input).

        Labels always agree with ``fit(X).predict(X)``.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _check_data(self, x: da.Array) -> None:
        n_rows, n_features = x.shape
        self.n_features_in_ = n_features
        if n_rows < self.n_components:
            raise InvalidDataError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_rows}. Use fewer components "
                "or more data."
            )
        if n_rows < 2 and self.max_iter > 0:
            raise InvalidDataError(
                f"Found array with {n_rows} sample(s) (shape={x.shape}) while a minimum "
                "of 2 is required to fit a mixture. Pass more rows."
            )

    def _init_arrays(self, n_features: int) -> dict[str, np.ndarray | None]:
        k = self.n_components
        model = get_covariance_model(self.covariance_type)
        out: dict[str, np.ndarray | None] = {}
        for name, shape in (
            ("weights_init", (k,)),
            ("means_init", (k, n_features)),
            ("precisions_init", model.shape(k, n_features)),
        ):
            value = getattr(self, name)
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
                    f"{k} '{self.covariance_type}' components and {n_features} features, "
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
                    f"'{self.covariance_type}' precisions_init must be symmetric positive "
                    f"definite; component(s) {bad.tolist()} are not. Pass the inverses "
                    "of valid covariance matrices, or None to let init_params choose them."
                )
        return out

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _digests(self, X: Any, sample_weight: Any) -> tuple[str | None, str | None]:
        """Content digests of in-memory X and weights (their scattered names are random)."""
        x_digest = content_digest(as_float_array(X)) if is_in_memory(X) else None
        w_digest = None
        if sample_weight is not None and not isinstance(sample_weight, da.Array):
            w_digest = content_digest(np.asarray(sample_weight, dtype=np.float64))
        return x_digest, w_digest

    def _fingerprint(
        self, x: da.Array, weight: da.Array | None, digests: tuple[str | None, str | None]
    ) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this fit: data and result-changing settings."""
        inits = self._init_arrays(x.shape[1])
        warm = self.warm_start and hasattr(self, "converged_")
        random_state = self.random_state
        if not (random_state is None or isinstance(random_state, Integral)):
            # A RandomState instance: its draws are not reproducible; the stored seed is used.
            random_state = type(random_state).__name__
        return {
            "data": {
                "X": data_fingerprint(x, digests[0]),
                "sample_weight": None if weight is None else data_fingerprint(weight, digests[1]),
            },
            "config": {
                "n_components": int(self.n_components),
                "covariance_type": self.covariance_type,
                "tol": float(self.tol),
                "reg_covar": float(self.reg_covar),
                "n_init": 1 if warm else int(self.n_init),
                "init_params": "warm_start" if warm else self.init_params,
                **{k: None if v is None else content_digest(v) for k, v in inits.items()},
                "warm_start_params": _params_digest(self._params()) if warm else None,
                "random_state": None if random_state is None else (
                    int(random_state) if isinstance(random_state, Integral) else random_state
                ),
                "on_degenerate": self.on_degenerate,
                "split_every": int(self.split_every),
                "block_size": None if self.block_size is None else int(self.block_size),
            },
        }

    def _start(
        self, x: da.Array, weight: da.Array | None, em_config: EMConfig, seed: int
    ) -> list[RestartState]:
        """The restarts after initialisation (or from the previous fit with warm_start)."""
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if do_init:
            inits = self._init_arrays(x.shape[1])
            starts = initialize(
                x,
                InitConfig(self.n_components, self.init_params, seed),
                em_config,
                self.n_init,
                sample_weight=weight,
                **inits,
            )
            lower_bound = -np.inf
        else:
            if self.n_features_in_ != self.means_.shape[1]:
                raise ShapeMismatchError(
                    f"warm_start continues a fit with {self.means_.shape[1]} features; "
                    f"X has {self.n_features_in_}. Refit from scratch (warm_start=False)."
                )
            starts = [self._params()]
            lower_bound = self.lower_bound_
        return [
            RestartState(i, p, np.random.default_rng([seed, i, 1]), lower_bound=lower_bound)
            for i, p in enumerate(starts)
        ]

    def _fit(
        self,
        x: da.Array,
        weight: da.Array | None,
        digests: tuple[str | None, str | None] = (None, None),
        watch: WorkerWatch | None = None,
    ) -> None:
        em_config = EMConfig(
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            on_degenerate=self.on_degenerate,
            split_every=self.split_every,
            block_rows=self.block_size,
        )
        seed = self._seed()
        loop, resumed = None, None
        if self.checkpoint is not None:
            store = Checkpoint(self.checkpoint, storage_options=self.checkpoint_storage_options)
            loop = LoopCheckpoint(
                store, self._fingerprint(x, weight, digests), seed, {"max_iter": int(self.max_iter)}
            )
            resumed = loop.load(self.max_iter)
        try:
            with stop_on_interrupt(loop is not None) as interrupt:
                if resumed is not None:
                    start, restarts = resumed
                else:
                    start, restarts = 0, self._start(x, weight, em_config, seed)
                    if loop is not None:
                        loop.save(0, restarts)
                        interrupt.check(0, loop.url)
                with _progress(self.verbose, self.verbose_interval, self.max_iter) as progress:
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
        self._set_params(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = list(best.lower_bounds)
        self.history_ = best.history
        if not self.converged_ and self.max_iter > 0:
            message = (
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data."
            )
            reseeds = sum(e["event"] == "reseed" for h in self.history_ for e in h["events"])
            if reseeds:
                message += (
                    f" Components were re-seeded {reseeds} time(s) because they kept "
                    "collapsing (see history_): increase reg_covar or reduce n_components."
                )
            warnings.warn(message, ConvergenceWarning, stacklevel=3)

    # -- parameters -----------------------------------------------------------

    def _set_params(self, params: GMMParams) -> None:
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = params.precisions

    def _params(self) -> GMMParams:
        check_is_fitted(self, "means_")
        return GMMParams(
            np.asarray(self.weights_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64),
            self.covariance_type,
        )

    # -- prediction -------------------------------------------------------------

    def _predict(self, X: Any, what: str) -> Any:
        params = self._params()
        names = feature_names(X)
        if is_in_memory(X):
            array = as_float_array(X, "X")
            self._check_features(array.shape[1], names)
            require_finite(array)
            return _graph._predict_block(array, params, what)
        x = as_dask_array(X)
        self._check_features(x.shape[1], names)
        # Checked block by block inside the prediction tasks (fused, no extra pass).
        x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
        return _graph.lazy_predict(x, params, what)

    def _check_features(self, n_features: int, names: np.ndarray | None) -> None:
        """X's feature count and names against fit's, as scikit-learn.

        Other names than fit's raise first (they say more than a count);
        names on one side only warn after the count is checked.
        """
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names is not None:
            check_feature_names(fitted, names, type(self).__name__)
        if n_features != self.n_features_in_:
            raise ShapeMismatchError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input. Pass the same columns as in fit."
            )
        check_feature_names(fitted, names, type(self).__name__)

    def predict(self, X: Any) -> Any:
        """Most probable component of every row.

        Parameters
        ----------
        X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
            Any source :func:`dgmm.open_dataset` accepts.

        Returns
        -------
        labels : ndarray (in-memory input) or lazy dask.array.Array (Dask or stored input) of shape (n_samples,)
        """
        return self._predict(X, "labels")

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of every component for every row.

        Returns
        -------
        resp : ndarray or lazy dask.array.Array of shape (n_samples, n_components)
        """
        return self._predict(X, "proba")

    def score_samples(self, X: Any) -> Any:
        """Log-density ``log p(x)`` of every row.

        Returns
        -------
        log_prob : ndarray or lazy dask.array.Array of shape (n_samples,)
        """
        return self._predict(X, "score_samples")

    def predict_to(
        self,
        X: Any,
        target: str,
        *,
        output: str | list[str] = "labels",
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        format: str | None = None,
    ) -> Any:
        """Write predictions of every row of ``X`` to Zarr or Parquet, chunk by chunk.

        Each row chunk of ``X`` is read once on a worker, predicted there and
        written there (one E-step serves every requested output); nothing is
        gathered on the client. The write is atomic: a failure (NaN rows, a
        lost worker) leaves nothing under ``target`` and an existing target
        untouched; see :mod:`dgmm.sinks` for the exact guarantees.

        Parameters
        ----------
        X : array-like, dask.array.Array or any source of shape (n_samples, n_features)
            Anything ``fit`` accepts: arrays, paths or URLs of stored data.
        target : str
            Local path or fsspec URL; ``.zarr`` is a Zarr group, ``.parquet``
            (or a directory) a Parquet dataset with a file per chunk.
        output : {'labels', 'proba', 'log_density'} or list of them, default='labels'
            What to write, each under its own name: ``label`` (int64, as
            ``predict``), ``proba`` (n_samples, n_components) as
            ``predict_proba`` (Parquet columns ``proba_0`` ...), and
            ``log_density`` (as ``score_samples``).
        overwrite : bool, default=False
            Replace an existing target once the new one is complete; otherwise
            an existing target raises :class:`dgmm.errors.TargetExistsError`.
        storage_options : dict, default=None
            fsspec options of the target. Stored input that needs options is
            opened with ``dgmm.open_dataset(..., storage_options=...)`` first.
        format : {'zarr', 'parquet'}, default=None
            Overrides the choice by suffix.

        Returns
        -------
        result : dgmm.sinks.WriteResult
            Target, format, rows, chunks and names written.
        """
        from .sinks import write_array

        outputs = [output] if isinstance(output, str) else list(output)
        unknown = [o for o in outputs if o not in _PREDICT_OUTPUTS]
        if not outputs or unknown or len(set(outputs)) != len(outputs):
            raise ValueError(
                f"output must be one of {list(_PREDICT_OUTPUTS)} or a list of distinct ones; "
                f"got {output!r}. For example output=['labels', 'log_density']."
            )
        params = self._params()
        names = feature_names(X)
        with connect(client=self.client, scheduler_address=self.scheduler_address) as client:
            # In-memory X is scattered to the workers; stored X stays lazy.
            x = as_dask_array(X, client=client, n_threads=total_threads(client))
            self._check_features(x.shape[1], names)
            x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
            arrays = {
                _PREDICT_OUTPUTS[o]: a
                for o, a in _graph.lazy_predict_many(x, params, outputs).items()
            }
            return write_array(
                arrays, target, format=format, overwrite=overwrite, storage_options=storage_options
            )

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per row of ``X`` (computed, also for Dask input).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        total, n_rows = self._total_log_likelihood(X)
        return total / n_rows

    def _total_log_likelihood(self, X: Any) -> tuple[float, int]:
        """``(sum of log p(x) over the rows of X, number of rows)``."""
        log_prob = self.score_samples(X)
        n_rows = int(log_prob.shape[0])
        # Summed in float64 whatever the data's dtype, as every cross-row sum.
        if isinstance(log_prob, da.Array):
            total = float(log_prob.sum(dtype=np.float64).compute())
        else:
            total = float(log_prob.sum(dtype=np.float64))
        return total, n_rows

    def _n_parameters(self) -> int:
        """Number of free parameters of the model."""
        return get_covariance_model(self.covariance_type).n_parameters(
            self.n_components, self.means_.shape[1]
        )

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better).

        ``-2 log L + n_parameters log n_samples``, as scikit-learn.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        total, n_rows = self._total_log_likelihood(X)
        return -2.0 * total + self._n_parameters() * math.log(n_rows)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better).

        ``-2 log L + 2 n_parameters``, as scikit-learn.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        total, _ = self._total_log_likelihood(X)
        return -2.0 * total + 2.0 * self._n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture (in memory).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        params = self._params()
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                "least one sample."
            )
        rng = np.random.default_rng(self._seed())
        counts = rng.multinomial(n_samples, params.weights / params.weights.sum())
        model = params.model
        X = np.vstack(
            [
                model.sample_component(rng, params.means[k], params.covariances, k, int(c))
                for k, c in enumerate(counts)
            ]
        )
        y = np.repeat(np.arange(params.n_components), counts)
        return X, y

    # -- model files and scikit-learn ------------------------------------------

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """Save the fitted model as a directory of ``.npy`` arrays and ``model.json``.

        Never pickled: loading cannot execute code. Written atomically; the
        fitted arrays, hyper-parameters and fit summary (``history_``)
        round-trip exactly. Cluster settings (``client``,
        ``scheduler_address``, ``checkpoint`` and its storage options) are
        not saved. See :mod:`dgmm.persistence` for the format.

        Parameters
        ----------
        path : str or path-like
            Local directory or fsspec URL (``'s3://bucket/models/m1'``).
        overwrite : bool, default=False
            Replace an existing model there (only once the new one is
            complete); otherwise :class:`dgmm.errors.TargetExistsError`.
        storage_options : dict, default=None
            fsspec options for remote URLs (credentials, ``endpoint_url``).
        """
        from ._estimator_io import save

        save(self, path, overwrite=overwrite, storage_options=storage_options)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
    ) -> GaussianMixture:
        """Load a model written by :meth:`save` (same as :func:`dgmm.load`).

        Returns
        -------
        gmm : GaussianMixture
            Fitted, with the saved arrays, hyper-parameters and history.
        """
        from ._estimator_io import load

        return load(path, storage_options=storage_options)

    def to_sklearn(self) -> Any:
        """The fitted model as a fitted :class:`sklearn.mixture.GaussianMixture`.

        Its ``predict``, ``predict_proba`` and ``score_samples`` agree with
        this model's to rounding. ``init_params='split'`` (dgmm's own)
        becomes ``'kmeans'``, which matters only if it is refitted.
        """
        from ._estimator_io import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, estimator: Any) -> GaussianMixture:
        """A fitted dgmm model from a fitted :class:`sklearn.mixture.GaussianMixture`.

        Parameters
        ----------
        estimator : sklearn.mixture.GaussianMixture
            Fitted; its hyper-parameters, arrays and lower bounds are copied.

        Returns
        -------
        gmm : GaussianMixture
        """
        from ._estimator_io import from_sklearn

        return from_sklearn(estimator)

    def __sklearn_clone__(self) -> GaussianMixture:
        """A clone that shares ``client`` (a live connection cannot be deep-copied)."""
        client = self.client
        self.client = None
        try:
            new = super().__sklearn_clone__()
        finally:
            self.client = client
        new.client = client
        return new

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state without ``client``; the unpickled model finds a cluster when fitted."""
        state = super().__getstate__()
        if state.get("client") is not None:
            state = {**state, "client": None}
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _chain(*callbacks: Any) -> Any:
    """One ``on_iteration(iteration, restarts)`` calling every non-None callback in order."""
    live = [c for c in callbacks if c is not None]
    if not live:
        return None

    def call(iteration: int, restarts: list[RestartState]) -> None:
        for callback in live:
            callback(iteration, restarts)

    return call


# predict_to's outputs and their names in the written Zarr group / Parquet columns.
_PREDICT_OUTPUTS = {"labels": "label", "proba": "proba", "log_density": "log_density"}


def _params_digest(params: GMMParams) -> str:
    """One digest of all four parameter arrays."""
    arrays = (params.weights, params.means, params.covariances, params.precisions_cholesky)
    return content_digest(np.concatenate([np.ravel(a) for a in arrays]))


def _checked_finite(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """``x`` unchanged once ``require_finite`` passed, with its global row offset."""
    require_finite(x, row_offset=block_info[0]["array-location"][0][0] if block_info else 0)
    return x


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
