"""``dgmm.GaussianMixture``: scikit-learn's API, fitted by exact EM on Dask."""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from dgmm.core.covariance import COVARIANCE_TYPES, get_covariance_model
from dgmm.core.params import GMMParams
from dgmm.fit import driver as _fit_driver
from dgmm.fit import predict as _prediction
from dgmm.fit.init import INIT_METHODS

__all__ = ["GaussianMixture"]


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
        :mod:`dgmm.fit.init` for the passes each costs.
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
        this process for in-memory input (see ``scheduler``), then a
        LocalCluster started for the fit. See :func:`dgmm.fit.cluster.connect`.
    scheduler : {'threads', 'synchronous', 'processes'}, default=None
        Where a fit (and ``predict_to``) runs without ``client`` or
        ``scheduler_address``, named as in ``dask.compute(scheduler=...)``:
        ``'threads'``, Dask's threaded scheduler in this process;
        ``'synchronous'``, one thread in this process; ``'processes'``, a
        LocalCluster of worker processes started for the fit. Given, it
        wins over a current client and a configured address. By default
        Dask's ``scheduler`` config when it names one of these; else input
        already in memory (NumPy, pandas, xarray, Dask arrays of NumPy data)
        runs in this process (synchronously up to 4096 rows, on threads
        beyond) and stored sources (Zarr, Parquet, ``.npy``, URLs) on a
        LocalCluster. BLAS runs one thread per Dask thread inside every
        task, and the reduction tree is the same everywhere, so the result
        does not depend on this choice (same chunks, same bits).
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
        :class:`dgmm.errors.FitInterrupted`. See :mod:`dgmm.io.checkpoint`.
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
        scikit-learn does (see :func:`dgmm.io.sources.feature_names`).

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
        "scheduler": [StrOptions({"threads", "synchronous", "processes"}), None],
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
        scheduler: str | None = None,
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
        self.scheduler = scheduler
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
        _fit_driver.fit(self, X, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then predict the labels of ``X`` (lazily for Dask input).

        Labels always agree with ``fit(X).predict(X)``.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

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
        return _prediction.predict(self, X, "labels")

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of every component for every row.

        Returns
        -------
        resp : ndarray or lazy dask.array.Array of shape (n_samples, n_components)
        """
        return _prediction.predict(self, X, "proba")

    def score_samples(self, X: Any) -> Any:
        """Log-density ``log p(x)`` of every row.

        Returns
        -------
        log_prob : ndarray or lazy dask.array.Array of shape (n_samples,)
        """
        return _prediction.predict(self, X, "score_samples")

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
        untouched; see :mod:`dgmm.io.sinks` for the exact guarantees.

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
        result : dgmm.io.sinks.WriteResult
            Target, format, rows, chunks and names written.
        """
        return _prediction.predict_to(
            self, X, target, output=output, overwrite=overwrite,
            storage_options=storage_options, format=format,
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
        not saved. See :mod:`dgmm.io.persistence` for the format.

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
        from dgmm._estimator_io import save

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
        from dgmm._estimator_io import load

        return load(path, storage_options=storage_options)

    def to_sklearn(self) -> Any:
        """The fitted model as a fitted :class:`sklearn.mixture.GaussianMixture`.

        Its ``predict``, ``predict_proba`` and ``score_samples`` agree with
        this model's to rounding. ``init_params='split'`` (dgmm's own)
        becomes ``'kmeans'``, which matters only if it is refitted.
        """
        from dgmm._estimator_io import to_sklearn

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
        from dgmm._estimator_io import from_sklearn

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
