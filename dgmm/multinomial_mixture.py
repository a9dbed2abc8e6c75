"""``dgmm.MultinomialMixture``: mixtures of multinomials (documents, sparse counts), scikit-learn's API.

The same engine as :class:`dgmm.GaussianMixture` (one read of the data per
EM iteration, lockstep ``n_init``, checkpoints, a fixed reduction tree): a
:class:`dgmm.fit.spec.FitSpec` of family ``"multinomial"`` goes through
:func:`dgmm.fit.driver.fit`. The model is :mod:`dgmm.core.multinomial`'s.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from dgmm import graph as _graph
from dgmm._live_params import LiveParamsMixin
from dgmm.core import multinomial as mn
from dgmm.core.multinomial_family import MULTINOMIAL, MultinomialMixtureParams
from dgmm.core.options import (
    DEGENERATE_POLICIES,
    LOCAL_SCHEDULERS,
    PREDICT_OUTPUTS,
    DegeneratePolicy,
    LocalScheduler,
    PredictOutput,
)
from dgmm.core.progress import PassProgress
from dgmm.errors import InvalidOptionError, ShapeMismatchError
from dgmm.fit import driver as _fit_driver
from dgmm.fit.cluster import connect
from dgmm.fit.data import open_for_fit
from dgmm.fit.init_multinomial import MULTINOMIAL_INIT_METHODS, MultinomialInit
from dgmm.fit.spec import DEFAULTS, FitResult, FitSpec, WarmStart
from dgmm.io.sources import as_float_array, check_feature_names, feature_names, is_in_memory, open_data

__all__ = ["MultinomialMixture"]

_D = DEFAULTS
_PREDICT_NAMES: dict[str, str] = {"labels": "label", "proba": "proba", "log_density": "log_density"}


class MultinomialMixture(LiveParamsMixin, DensityMixin, BaseEstimator):
    """Mixture of multinomials (documents as bags of words) fitted by exact EM over Dask.

    Component k has a weight ``pi_k`` and a word distribution ``b_k``; a
    document with counts ``c_w`` has ``log p(x) = log sum_k pi_k prod_w
    b_kw^c_w``. X is a count matrix (documents x words): scipy.sparse
    (CSR/CSC), dense, a Dask array of either, a ``.npz`` file from
    ``scipy.sparse.save_npz``, or an AnnData Zarr store's sparse group
    (``dgmm.open_dataset("cells.zarr", key="X")``). Counts may be
    non-negative reals (tf weights). Sparse chunks are never densified.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components (topics, cell types ...).
    alpha : float, default=1.0
        Additive smoothing of the word distributions, exactly as
        scikit-learn's ``MultinomialNB`` smooths ``feature_log_prob_``.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood per document.
    max_iter : int, default=100
        EM iterations (passes over the data) at most.
    n_init : int, default=1
        Initialisations, run in lockstep (one read of the data serves all);
        the best lower bound wins.
    init_params : {'kmeans', 'random_from_data', 'random'}, default='kmeans'
        'kmeans' is one pass drawing a uniform sample of the documents,
        scikit-learn's KMeans on it in memory (L1-normalised, in the
        Hellinger embedding), then one hard assignment pass (in memory when
        the sample is every document); 'random_from_data'
        starts each component from a random document's word frequencies
        (mixed with the uniform distribution); 'random' from one pass of
        random responsibilities. See :mod:`dgmm.fit.init_multinomial` for
        the passes each costs.
    weights_init : array-like of shape (n_components,), default=None
    feature_prob_init : array-like of shape (n_components, n_features), default=None
        Initial word probabilities, each row summing to 1; with it no
        initialisation pass is made.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and re-seeding; the same seed, data and chunking
        give bit-identical results on any number of workers.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution (``n_init`` is then 1).
    verbose : int, default=0
    verbose_interval : int, default=10
    on_progress : callable, default=None
        As :class:`dgmm.GaussianMixture`'s (progress of every pass).
    chunks : int, default=None
        Rows per chunk; sparse input is chunked by non-zeros by default.
    block_size : int, default=None
        Rows processed at a time inside a chunk (bounds a task's memory).
    split_every : int, default=8
        Fan-in of the tree that merges the chunks' statistics.
    on_degenerate : {'reseed', 'raise'}, default='reseed'
        A component whose weight collapses is re-seeded from a split of the
        heaviest component (recorded in ``history_``), or raises
        :class:`dgmm.errors.DegenerateComponentError`.
    client, scheduler_address, scheduler, checkpoint, checkpoint_storage_options
        As :class:`dgmm.GaussianMixture`'s.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    feature_log_prob_ : ndarray of shape (n_components, n_features)
        log b_kw, float64 whatever the data's dtype.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per document of the best restart's last E-step.
    lower_bounds_ : list of float
    history_ : list of dict
        Per iteration: ``iteration``, ``lower_bound``, ``change``,
        ``seconds``, ``rows``, ``bytes``, ``rows_per_second``,
        ``gb_per_second``, ``events`` (re-seeds, likelihood decreases).
    passes_ : list of dict
        Every pass over the data, in order (as :class:`dgmm.GaussianMixture`'s).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X had string column names (a DataFrame).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from distributed import Client
    >>> from dgmm import MultinomialMixture
    >>> X = sp.csr_matrix(np.array([[5, 0, 0], [4, 1, 0], [0, 0, 6], [0, 1, 5]]))
    >>> with Client(processes=False, dashboard_address=":0"):
    ...     mm = MultinomialMixture(2, alpha=0.1, n_init=3, random_state=0).fit(X)
    ...     labels = mm.predict(X)
    >>> labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(MULTINOMIAL_INIT_METHODS))],
        "weights_init": ["array-like", None],
        "feature_prob_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "on_progress": [callable, None],
        "chunks": [Interval(Integral, 1, None, closed="left"), None],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "split_every": [Interval(Integral, 2, None, closed="left")],
        "on_degenerate": [StrOptions(set(DEGENERATE_POLICIES))],
        "client": [HasMethods(["scatter", "submit"]), None],
        "scheduler_address": [str, None],
        "scheduler": [StrOptions(set(LOCAL_SCHEDULERS)), None],
        "checkpoint": [str, os.PathLike, None],
        "checkpoint_storage_options": [dict, None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        alpha: float = 1.0,
        tol: float = _D["tol"],
        max_iter: int = _D["max_iter"],
        n_init: int = _D["n_init"],
        init_params: MultinomialInit = "kmeans",
        weights_init: Any = None,
        feature_prob_init: Any = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = _D["verbose_interval"],
        on_progress: Callable[[PassProgress], None] | None = None,
        chunks: int | None = None,
        block_size: int | None = None,
        split_every: int = _D["split_every"],
        on_degenerate: DegeneratePolicy = _D["on_degenerate"],
        client: Any = None,
        scheduler_address: str | None = None,
        scheduler: LocalScheduler | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.feature_prob_init = feature_prob_init
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

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MultinomialMixture:
        """Estimate the weights and word distributions by EM.

        Parameters
        ----------
        X : sparse matrix, array-like, dask.array.Array, path or URL of shape (n_samples, n_features)
            Counts; any source :func:`dgmm.open_dataset` accepts.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            A row of weight 2 counts as that row twice.

        Returns
        -------
        self : MultinomialMixture
        """
        result = _fit_driver.fit(self.fit_spec(), X, sample_weight)
        self._apply_result(result)
        if result.convergence_warning is not None:
            warnings.warn(result.convergence_warning, ConvergenceWarning, stacklevel=2)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then the labels of ``X`` (as ``fit(X).predict(X)``)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def fit_spec(self) -> FitSpec:
        """The frozen spec of the fit ``fit`` would run now, validated once."""
        self._validate_params()
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            warm = WarmStart(self.params_, float(self.lower_bound_))
        random_state = self.random_state
        if random_state is not None and not isinstance(random_state, (int, np.integer)):
            random_state = type(random_state).__name__  # a RandomState's draws are not reproducible
        inits = {
            name: None if getattr(self, name) is None else np.asarray(getattr(self, name), dtype=np.float64)
            for name in ("weights_init", "feature_prob_init")
        }
        return FitSpec(
            n_components=int(self.n_components),
            covariance_type=None,
            seed=self._seed(),
            tol=float(self.tol),
            reg_covar=0.0,
            max_iter=int(self.max_iter),
            n_init=1 if warm is not None else int(self.n_init),
            init_params=self.init_params,  # type: ignore[arg-type]  # the family's own methods
            random_state=None if random_state is None else (random_state if isinstance(random_state, str) else int(random_state)),
            warm_start=warm,
            chunks=None if self.chunks is None else int(self.chunks),
            block_size=None if self.block_size is None else int(self.block_size),
            split_every=int(self.split_every),
            on_degenerate=self.on_degenerate,
            checkpoint=self.checkpoint,
            checkpoint_storage_options=self.checkpoint_storage_options,
            verbose=int(self.verbose),
            verbose_interval=int(self.verbose_interval),
            on_progress=self.on_progress,
            client=self.client,
            scheduler_address=self.scheduler_address,
            scheduler=self.scheduler,
            family="multinomial",
            alpha=float(self.alpha),
            **inits,
        )

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    @property
    def params_(self) -> MultinomialMixtureParams:
        """The fitted parameters as one object (float64); NotFittedError before ``fit``."""
        check_is_fitted(self, "feature_log_prob_")
        return MultinomialMixtureParams(
            np.asarray(self.weights_, dtype=np.float64),
            np.asarray(self.feature_log_prob_, dtype=np.float64),
            float(getattr(self, "_prior_gain", 0.0)),
        )

    @classmethod
    def from_result(cls, result: FitResult, **params: Any) -> MultinomialMixture:
        """A fitted mixture holding ``result`` (a loaded model); ``n_components`` from its parameters."""
        estimator = cls(**{**params, "n_components": result.params.n_components})
        estimator._apply_result(result)
        return estimator

    def _apply_result(self, result: FitResult) -> None:
        p = result.params
        self.weights_ = np.asarray(p.weights, dtype=np.float64)
        self.feature_log_prob_ = np.asarray(p.feature_log_prob, dtype=np.float64)
        self._prior_gain = float(getattr(p, "prior_gain", 0.0))
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
            del self.feature_names_in_

    # -- prediction -------------------------------------------------------------

    def _check_vocabulary(self, n_features: int, names: np.ndarray | None) -> None:
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names is not None:
            check_feature_names(fitted, names, type(self).__name__)
        if n_features != self.params_.n_features:
            raise ShapeMismatchError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.params_.n_features} features as input (the words of the fit's vocabulary). "
                "Build X with the vocabulary of the fit (the same CountVectorizer, the same gene "
                "list, in the same order)."
            )

    def _predict(self, X: Any, what: str) -> Any:
        params = self.params_
        if is_in_memory(X):
            block = X if sp.issparse(X) else as_float_array(X, "X")
            self._check_vocabulary(block.shape[1], None if sp.issparse(X) else feature_names(X))
            MULTINOMIAL.check_block(block)
            log_norm, log_resp = MULTINOMIAL.log_prob_resp(block, params)
            return {
                "labels": lambda: log_resp.argmax(axis=1),
                "proba": lambda: np.exp(log_resp),
                "score_samples": lambda: log_norm,
            }[what]()
        data = open_data(X)
        self._check_vocabulary(data.array.shape[1], data.feature_names)
        x = data.array.map_blocks(_checked_counts, dtype=data.array.dtype, meta=data.array._meta)
        return _graph.lazy_predict(x, params, what)  # type: ignore[arg-type]

    def predict(self, X: Any) -> Any:
        """Most probable component of every document.

        Parameters
        ----------
        X : sparse matrix, array-like, dask.array.Array, path or URL of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray (in-memory X) or lazy dask.array.Array of shape (n_samples,)
        """
        return self._predict(X, "labels")

    def predict_proba(self, X: Any) -> Any:
        """Responsibilities, shape (n_samples, n_components); an empty document gets the weights."""
        return self._predict(X, "proba")

    def score_samples(self, X: Any) -> Any:
        """``log sum_k pi_k prod_w b_kw^c_w`` of every document, shape (n_samples,).

        The log-probability of the document's word *sequence*: there is no
        multinomial coefficient ``log(L! / prod_w c_w!)``, which does not
        depend on the parameters (and is undefined for real-valued counts).
        Add ``scipy.special.gammaln`` terms yourself for the probability of the counts.
        """
        return self._predict(X, "score_samples")

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per document of ``X`` (as :meth:`score_samples`)."""
        total, n_rows = self._total_log_likelihood(X)
        return total / n_rows

    def _total_log_likelihood(self, X: Any) -> tuple[float, int]:
        log_prob = self.score_samples(X)
        if isinstance(log_prob, da.Array):
            return float(log_prob.sum(dtype=np.float64).compute()), int(log_prob.shape[0])
        return float(log_prob.sum(dtype=np.float64)), int(log_prob.shape[0])

    def bic(self, X: Any) -> float:
        """``-2 log L + n_parameters log n_samples`` on ``X`` (lower is better)."""
        total, n_rows = self._total_log_likelihood(X)
        return -2.0 * total + MULTINOMIAL.n_parameters(self.params_) * math.log(n_rows)

    def aic(self, X: Any) -> float:
        """``-2 log L + 2 n_parameters`` on ``X`` (lower is better)."""
        total, _ = self._total_log_likelihood(X)
        return -2.0 * total + 2.0 * MULTINOMIAL.n_parameters(self.params_)

    def sample(self, n_samples: int = 1, *, doc_length: int | np.ndarray = 100) -> tuple[sp.csr_matrix, np.ndarray]:
        """Draw documents of ``doc_length`` words: ``(X CSR (n_samples, n_features), labels)``."""
        params = self.params_
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise InvalidOptionError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        return mn.sample(params, int(n_samples), doc_length, np.random.default_rng(self._seed()))

    def top_features(self, n: int = 10, feature_names: Any = None) -> list[list[tuple[Any, float]]]:
        """The ``n`` most probable features (words) of every component.

        Parameters
        ----------
        n : int, default=10
        feature_names : array-like of shape (n_features,), default=None
            Names of the features (``vectorizer.get_feature_names_out()``);
            by default ``feature_names_in_`` if the fit saw names, else indices.

        Returns
        -------
        top : list of n_components lists of (feature, probability)
            Most probable first.
        """
        params = self.params_
        names = feature_names if feature_names is not None else getattr(self, "feature_names_in_", None)
        if names is not None and len(names) != params.n_features:
            raise ShapeMismatchError(
                f"feature_names has {len(names)} names, but the model has {params.n_features} "
                "features. Pass the vocabulary the model was fitted with."
            )
        n = int(min(max(n, 0), params.n_features))
        out = []
        for log_prob in params.feature_log_prob:
            order = np.argsort(-log_prob, kind="stable")[:n]
            out.append([(int(i) if names is None else names[i], float(np.exp(log_prob[i]))) for i in order])
        return out

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
        """Write predictions of every document of ``X`` to Zarr or Parquet, chunk by chunk
        (as :meth:`dgmm.GaussianMixture.predict_to`)."""
        from dgmm.fit.predict import write_array

        params = self.params_
        outputs = [output] if isinstance(output, str) else list(output)
        if not outputs or any(o not in PREDICT_OUTPUTS for o in outputs) or len(set(outputs)) != len(outputs):
            raise InvalidOptionError(
                f"output must be one of {list(PREDICT_OUTPUTS)} or a list of distinct ones; "
                f"got {output!r}. For example output=['labels', 'log_density']."
            )
        with connect(
            client=self.client, scheduler_address=self.scheduler_address, scheduler=self.scheduler, data=X
        ) as client:
            data = open_for_fit(X, chunks=None, client=client)
            self._check_vocabulary(data.array.shape[1], data.feature_names)
            x = data.array.map_blocks(_checked_counts, dtype=data.array.dtype, meta=data.array._meta)
            arrays = {_PREDICT_NAMES[o]: a for o, a in _graph.lazy_predict_many(x, params, outputs).items()}
            return write_array(arrays, target, format=format, overwrite=overwrite, storage_options=storage_options)

    # -- model files ------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], *, overwrite: bool = False, storage_options: dict[str, Any] | None = None
    ) -> None:
        """Save the fitted model as a directory of ``.npy`` arrays and ``model.json`` (never pickled)."""
        from dgmm._estimator_io import save

        save(self, path, overwrite=overwrite, storage_options=storage_options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> Any:
        """Load a model written by :meth:`save` (as :func:`dgmm.load`)."""
        from dgmm._estimator_io import load

        return load(path, storage_options=storage_options)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        return tags


def _checked_counts(x: Any, block_info: dict[Any, Any] | None = None) -> Any:
    """``x`` unchanged once its counts are checked (finite, >= 0), named by global row."""
    offset = block_info[0]["array-location"][0][0] if block_info else 0
    chunk = block_info[0]["chunk-location"][0] if block_info else None
    MULTINOMIAL.check_block(x, row_offset=offset, chunk_index=chunk)
    return x
