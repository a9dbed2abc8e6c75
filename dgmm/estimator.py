"""``dgmm.GaussianMixture``: scikit-learn's API, fitted by exact EM on Dask."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from dgmm._live_params import LiveParamsMixin
from dgmm.core.family import family_of, information_criteria
from dgmm.core.lowrank import DEFAULT_DENSE_BYTES, LowRankParams, dense_covariances
from dgmm.core.options import (
    CovarianceType,
    DegeneratePolicy,
    InitMethod,
    LocalScheduler,
    NoiseType,
    PredictOutput,
)
from dgmm.core.params import GMMParams
from dgmm.core.progress import PassProgress
from dgmm.errors import InvalidOptionError, UndefinedAttributeError
from dgmm.fit import driver as _fit_driver
from dgmm.fit import predict as _prediction
from dgmm.fit.spec import DEFAULTS, PARAMETERS, FitResult, FitSpec, Param, WarmStart

__all__ = ["GaussianMixture"]

# Fitted attributes of each kind of parameters (the rest are the fit record's).
_GAUSSIAN_ARRAYS = ("covariances_", "precisions_cholesky_", "precisions_")
_LOWRANK_ARRAYS = ("factors_", "noise_variances_")

# The signature's defaults are the table's (``dgmm.fit.spec.PARAMETERS``).
_D = DEFAULTS
# scikit-learn's named constraints for the table's kinds that are not numbers or choices.
_NAMED: dict[str, list[Any]] = {
    "array": ["array-like"],
    "boolean": ["boolean"],
    "random_state": ["random_state"],  # ints in [0, 2**32 - 1], a RandomState, None
    "verbose": ["verbose"],
    "client": [HasMethods(["scatter", "submit"])],
    "str": [str],
    "path": [str, os.PathLike],
    "dict": [dict],
    "callable": [callable],
}


def _constraints(param: Param) -> list[Any]:
    """scikit-learn's ``_parameter_constraints`` entry for a row of the parameter table."""
    if param.kind in ("int", "float"):
        closed = {(True, True): "both", (True, False): "left", (False, True): "right"}.get(
            (param.low is not None, param.high is not None), "neither"
        )
        number = Integral if param.kind == "int" else Real
        constraints: list[Any] = [Interval(number, param.low, param.high, closed=closed)]
    elif param.kind == "choice":
        constraints = [StrOptions(set(param.choices))]
    else:
        constraints = list(_NAMED[param.kind])
    return constraints + [None] if param.optional else constraints


class GaussianMixture(LiveParamsMixin, DensityMixin, BaseEstimator):
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
    covariance_type : {'full', 'tied', 'diag', 'spherical', 'lowrank'}, default='full'
        Form of the covariance of each component. ``'lowrank'`` is
        ``C_k = A_k A_k^T + Psi_k`` with ``rank`` factors ``A_k`` and noise
        ``Psi_k`` (a mixture of factor analysers, or of probabilistic PCA):
        no D x D matrix is ever formed, so D may run to tens of thousands.
    rank : int, default=10
        Number of factors per component of ``covariance_type='lowrank'``;
        below n_features (0 is a diagonal mixture). Ignored otherwise.
    noise_type : {'diag', 'spherical'}, default='diag'
        Noise of ``covariance_type='lowrank'``: a variance per feature
        (mixture of factor analysers) or one per component (mixture of
        probabilistic PCA). Ignored otherwise.
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
        'kmeans' is scikit-learn's KMeans on a uniform row sample (all rows
        when they fit), then one hard-assignment pass; 'k-means++' picks
        centres from that sample, 'random_from_data' from K random rows;
        'random' draws random responsibilities; 'split' grows the mixture
        from one component by splitting along principal axes. See
        :mod:`dgmm.fit.init` for the passes each costs.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        User-given initial parameters, as in scikit-learn (not for
        ``covariance_type='lowrank'``).
    factors_init : array-like of shape (n_components, n_features, rank), default=None
    noise_variances_init : array-like of shape (n_components, n_features) or (n_components,), default=None
        User-given initial factors and noise of ``covariance_type='lowrank'``;
        with ``weights_init`` and ``means_init`` too, no initialisation pass
        is made.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and re-seeding. The same seed, data and
        chunking give bit-identical results on any number of workers.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution (``n_init`` is then 1).
    verbose : int, default=0
        0 silent; 1 a progress bar per pass over the data on a terminal
        (tqdm, if installed): the phase ("opening data", "initialisation",
        "EM iteration i of max_iter"), chunks done / total, rows/s and GB/s;
        off a terminal one line per pass instead. 2 also prints a line every
        ``verbose_interval`` iterations, as scikit-learn. The ``dgmm`` logger
        has a line per pass at INFO (and one every 10 s of a long pass).
    verbose_interval : int, default=10
        Iterations between progress lines when ``verbose >= 2``.
    on_progress : callable, default=None
        Called with a :class:`dgmm.core.progress.PassProgress` (phase,
        chunks, rows and bytes done, seconds, rows/s, GB/s) as each phase
        begins, as each pass advances (at most every 0.2 s) and as it ends,
        in order. Clones share it; pickling drops it.
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
        As in scikit-learn, of the training data's dtype: float32 after a fit
        on float32 data (the sums behind them are float64), else float64.
        ``predict_proba`` and ``score_samples`` return float32 for float32 X
        on a float32 model, float64 otherwise, as scikit-learn. For
        ``covariance_type='lowrank'``, ``covariances_`` (n_components,
        n_features, n_features) is built on demand from the factors and raises
        :class:`dgmm.errors.DenseCovarianceTooLargeError` past 1 GiB; the
        precisions are not defined (:class:`dgmm.errors.UndefinedAttributeError`,
        an ``AttributeError``).
    factors_ : ndarray of shape (n_components, n_features, rank)
        ``A_k`` of ``covariance_type='lowrank'`` (only then).
    noise_variances_ : ndarray of shape (n_components, n_features) or (n_components,)
        ``Psi_k`` of ``covariance_type='lowrank'``: per feature for
        ``noise_type='diag'``, one per component for ``'spherical'``.
    params_ : dgmm.core.params.GMMParams or dgmm.core.lowrank.LowRankParams
        The fitted parameters as one float64 object (read-only), what
        :mod:`dgmm.fit.predict`, the model files and :mod:`dgmm.demo` take.
    converged_ : bool
    n_iter_ : int
        EM iterations of the best restart.
    lower_bound_ : float
        Mean log-likelihood of the best restart's last E-step.
    lower_bounds_ : list of float
        The lower bound at every iteration of the best restart.
    history_ : list of dict
        Per iteration of the best restart: ``iteration``, ``lower_bound``,
        ``change``, ``seconds``, what the pass read (``rows``, ``bytes``)
        and how fast (``rows_per_second``, ``gb_per_second``), ``events``
        (re-seeds, likelihood decreases).
    passes_ : list of dict
        Every pass over the data the fit made, in order, the initialisation's
        included: ``phase`` ("opening data", "initialisation", "EM
        iteration"), ``step`` and ``steps`` (the iteration and ``max_iter``),
        ``pass`` (its number within the phase), ``kind``, ``chunks``,
        ``rows``, ``bytes``, ``seconds``, ``rows_per_second``,
        ``gb_per_second``. Empty for a loaded or converted model.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, defined only when X has feature names that
        are all strings: the columns of a pandas or Dask DataFrame or of a
        Parquet file or directory, read from metadata (for an array from
        :func:`dgmm.open_dataset`, the columns it was opened with). Arrays,
        Zarr, ``.npy`` and xarray DataArrays have none. The names of X in
        ``predict`` and the other methods are checked against them as
        scikit-learn does (see :func:`dgmm.io.sources.feature_names`).

    Notes
    -----
    ``fit`` is a spec in and a result out: :meth:`fit_spec` validates the
    parameters once into a frozen :class:`dgmm.fit.spec.FitSpec`,
    :func:`dgmm.fit.driver.fit` returns a :class:`dgmm.fit.spec.FitResult`,
    and the fitted attributes are set from it (:meth:`from_result` builds a
    fitted mixture from a result directly). Defaults, ranges and choices of
    the parameters are :data:`dgmm.fit.spec.PARAMETERS`'s, which the CLI
    shares.

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

    # scikit-learn's declarative validation, built from dgmm's one parameter table.
    _parameter_constraints: dict = {name: _constraints(p) for name, p in PARAMETERS.items()}

    def __init__(
        self,
        n_components: int = _D["n_components"],
        *,
        covariance_type: CovarianceType = _D["covariance_type"],
        rank: int = _D["rank"],
        noise_type: NoiseType = _D["noise_type"],
        tol: float = _D["tol"],
        reg_covar: float = _D["reg_covar"],
        max_iter: int = _D["max_iter"],
        n_init: int = _D["n_init"],
        init_params: InitMethod = _D["init_params"],
        weights_init: Any = _D["weights_init"],
        means_init: Any = _D["means_init"],
        precisions_init: Any = _D["precisions_init"],
        factors_init: Any = _D["factors_init"],
        noise_variances_init: Any = _D["noise_variances_init"],
        random_state: int | np.random.RandomState | None = _D["random_state"],
        warm_start: bool = _D["warm_start"],
        verbose: int = _D["verbose"],
        verbose_interval: int = _D["verbose_interval"],
        on_progress: Callable[[PassProgress], None] | None = _D["on_progress"],
        chunks: int | None = _D["chunks"],
        block_size: int | None = _D["block_size"],
        split_every: int = _D["split_every"],
        on_degenerate: DegeneratePolicy = _D["on_degenerate"],
        client: Any = _D["client"],
        scheduler_address: str | None = _D["scheduler_address"],
        scheduler: LocalScheduler | None = _D["scheduler"],
        checkpoint: str | os.PathLike[str] | None = _D["checkpoint"],
        checkpoint_storage_options: dict[str, Any] | None = _D["checkpoint_storage_options"],
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.rank = rank
        self.noise_type = noise_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.factors_init = factors_init
        self.noise_variances_init = noise_variances_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.on_progress = on_progress
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
        result = _fit_driver.fit(self.fit_spec(), X, sample_weight)
        self._apply_result(result)
        if result.convergence_warning is not None:
            # stacklevel 2: the warning points at the caller's fit line.
            warnings.warn(result.convergence_warning, ConvergenceWarning, stacklevel=2)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then predict the labels of ``X`` (lazily for Dask input).

        Labels always agree with ``fit(X).predict(X)``.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def fit_spec(self) -> FitSpec:
        """The frozen spec of the fit ``fit`` would run now, validated once.

        Checks the hyper-parameters (scikit-learn's ``_parameter_constraints``),
        draws the seed from ``random_state`` (a ``RandomState`` instance
        advances), converts the initial arrays and, with ``warm_start`` on a
        fitted model, captures its parameters. Their shapes are checked
        against the data by the fit.

        Returns
        -------
        spec : dgmm.fit.spec.FitSpec
        """
        self._validate_params()
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            warm = WarmStart(self.params_, float(self.lower_bound_))
        return FitSpec.from_params(self.get_params(deep=False), seed=self._seed(), warm_start=warm)

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # -- parameters -----------------------------------------------------------

    @property
    def params_(self) -> GMMParams | LowRankParams:
        """The fitted parameters as one :class:`dgmm.core.params.GMMParams` (float64),
        or :class:`dgmm.core.lowrank.LowRankParams` for ``covariance_type='lowrank'``.

        Built from the fitted attributes (the float32 values of a float32 model).

        Raises :class:`sklearn.exceptions.NotFittedError` before ``fit``.
        """
        check_is_fitted(self, "means_")
        if "factors_" in self.__dict__:
            return LowRankParams(
                np.asarray(self.weights_, dtype=np.float64),
                np.asarray(self.means_, dtype=np.float64),
                np.asarray(self.factors_, dtype=np.float64),
                np.asarray(self.noise_variances_, dtype=np.float64),
            )
        return GMMParams(
            np.asarray(self.weights_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64),
            self.covariance_type,
        )

    @classmethod
    def from_result(cls, result: FitResult, **params: Any) -> GaussianMixture:
        """A fitted mixture holding ``result``: a loaded or converted model, known parameters.

        Parameters
        ----------
        result : dgmm.fit.spec.FitResult
            Parameters and fit record; ``n_components`` and
            ``covariance_type`` are taken from its parameters.
        **params
            The other hyper-parameters.

        Returns
        -------
        gmm : GaussianMixture
        """
        p = result.params
        kind = {"n_components": p.n_components, "covariance_type": p.covariance_type}
        if isinstance(p, LowRankParams):
            kind.update(rank=p.rank, noise_type=p.noise_type)
        estimator = cls(**{**params, **kind})
        estimator._apply_result(result)
        return estimator

    def _apply_result(self, result: FitResult) -> None:
        """Set the fitted attributes from ``result``."""
        p = result.params
        # A refit may change the kind of parameters: drop the other kind's arrays.
        for name in _GAUSSIAN_ARRAYS + _LOWRANK_ARRAYS:
            self.__dict__.pop(name, None)
        # scikit-learn's attributes have the data's dtype; the fit itself summed in
        # float64, and the cast is here, at the boundary.
        dtype = np.float32 if result.dtype == "float32" else np.float64
        self.weights_ = p.weights.astype(dtype, copy=False)
        self.means_ = p.means.astype(dtype, copy=False)
        if isinstance(p, LowRankParams):
            self.factors_ = p.factors.astype(dtype, copy=False)
            self.noise_variances_ = p.noise_variances.astype(dtype, copy=False)
        else:
            self.covariances_ = p.covariances.astype(dtype, copy=False)
            self.precisions_cholesky_ = p.precisions_cholesky.astype(dtype, copy=False)
            # From the attributes' own Cholesky factors (params_), so a saved and
            # loaded model has the same precisions_ bit for bit.
            self.precisions_ = (p if dtype == np.float64 else self.params_).precisions.astype(dtype, copy=False)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.lower_bounds)
        self.history_ = list(result.history)
        self.passes_ = list(result.passes)
        self.n_features_in_ = result.n_features_in
        if result.feature_names_in is not None:
            self.feature_names_in_ = result.feature_names_in
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # fitted again on data without names, as scikit-learn

    def __getattr__(self, name: str) -> Any:
        # Called only for attributes not found otherwise: the Gaussian arrays of a
        # low-rank model, which are built on demand or have no meaning.
        if name in _GAUSSIAN_ARRAYS and "factors_" in self.__dict__:
            if name == "covariances_":
                return dense_covariances(self.params_, DEFAULT_DENSE_BYTES)
            raise UndefinedAttributeError(
                f"{name} has no meaning for covariance_type='lowrank': its covariances "
                "A_k A_k^T + Psi_k are never inverted as D x D matrices (the densities use "
                "the Woodbury identity). Use factors_ and noise_variances_, score_samples "
                "for densities, or covariances_ (dense, for small n_features)."
            )
        # Anything else: the normal lookup's own error (a property's NotFittedError,
        # itself an AttributeError, must not turn into a plain "no attribute").
        return object.__getattribute__(self, name)

    # -- prediction -------------------------------------------------------------

    def _predict(self, X: Any, what: _prediction.Prediction) -> Any:
        return _prediction.predict(
            self.params_, X, what,
            feature_names_in=getattr(self, "feature_names_in_", None),
            estimator_name=type(self).__name__,
            dtype=self.means_.dtype,
        )

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
        output: PredictOutput | list[PredictOutput] = "labels",
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
            self.params_, X, target, output=output, overwrite=overwrite,
            storage_options=storage_options, format=format,
            feature_names_in=getattr(self, "feature_names_in_", None),
            estimator_name=type(self).__name__,
            client=self.client, scheduler_address=self.scheduler_address, scheduler=self.scheduler,
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
            For in-memory ``X`` the mean of :meth:`score_samples` as
            scikit-learn takes it (``score_samples(X).mean()``, NumPy's
            pairwise sum in the data's dtype), so the two agree to the last
            bit; for Dask input a float64 sum over the chunks.
        """
        log_prob = self.score_samples(X)
        if isinstance(log_prob, da.Array):
            return float(log_prob.sum(dtype=np.float64).compute()) / int(log_prob.shape[0])
        return float(log_prob.mean())

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
        params = self.params_
        return family_of(params).n_parameters(params)

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
        return information_criteria(total, self._n_parameters(), n_rows)[0]

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
        total, n_rows = self._total_log_likelihood(X)
        return information_criteria(total, self._n_parameters(), n_rows)[1]

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture (in memory).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        params = self.params_
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise InvalidOptionError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                "least one sample."
            )
        return family_of(params).sample(params, int(n_samples), np.random.default_rng(self._seed()))

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
        becomes ``'kmeans'``, which matters only if it is refitted. A
        ``covariance_type='lowrank'`` model raises
        :class:`dgmm.errors.UnsupportedModelError` (scikit-learn has no such type).
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
