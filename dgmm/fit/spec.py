"""A fit as data: the one table of hyper-parameters, the frozen spec in, the result out.

``PARAMETERS`` is the single source of every hyper-parameter's default,
range or choices and one-line help: ``GaussianMixture.__init__``'s defaults
and its ``_parameter_constraints``, and the CLI's options, are built from it
(``tests/test_spec.py`` checks the three agree).

A fit is ``FitSpec`` in (built once by ``GaussianMixture.fit_spec`` from the
validated parameters: seed drawn, initial arrays converted, warm start
captured), :func:`dgmm.fit.driver.fit` in the middle, ``FitResult`` out; the
estimator sets its fitted attributes from the result. The driver never sees
the estimator. No scikit-learn and no click here: both front ends read this.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from dgmm import graph as _graph
from dgmm.core.covariance import get_covariance_model
from dgmm.core.family import MixtureParams
from dgmm.core.options import (
    COVARIANCE_TYPE_NAMES,
    DEGENERATE_POLICIES,
    INIT_METHODS,
    LOCAL_SCHEDULERS,
    NOISE_TYPES,
    CovarianceType,
    DegeneratePolicy,
    InitMethod,
    LocalScheduler,
    NoiseType,
)
from dgmm.core.progress import PassProgress
from dgmm.errors import (
    InvalidDtypeError,
    InvalidInitError,
    InvalidOptionError,
    ShapeMismatchError,
)

__all__ = [
    "DEFAULTS",
    "PARAMETERS",
    "EMConfig",
    "FitResult",
    "FitSpec",
    "Param",
    "ParamKind",
    "RestartSummary",
    "WarmStart",
]

#: How a parameter is checked: a number in [low, high], one of ``choices``, or
#: one of scikit-learn's named constraints ("boolean", "random_state", "verbose").
ParamKind = Literal[
    "int", "float", "choice", "boolean", "array", "random_state", "verbose",
    "client", "str", "path", "dict", "callable",
]


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its name, default, accepted values and one-line help.

    ``low`` and ``high`` bound an "int", "float" or "random_state" kind
    (inclusive; None is unbounded); ``choices`` are a "choice" kind's values;
    ``optional`` says None is accepted besides.
    """

    name: str
    default: Any
    kind: ParamKind
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False


_TABLE = (
    Param("n_components", 1, "int", "Number of mixture components.", low=1),
    Param(
        "covariance_type", "full", "choice", "Form of each component's covariance.",
        choices=COVARIANCE_TYPE_NAMES,
    ),
    Param(
        "rank", 10, "int",
        "Factors per component of covariance_type='lowrank' (C_k = A_k A_k^T + Psi_k); below n_features.",
        low=0,
    ),
    Param(
        "noise_type", "diag", "choice",
        "Noise Psi_k of covariance_type='lowrank': per feature (factor analysers) or one variance (PPCA).",
        choices=NOISE_TYPES,
    ),
    Param(
        "tol", 1e-3, "float",
        "Convergence threshold on the change of the mean log-likelihood per row.", low=0.0,
    ),
    Param("reg_covar", 1e-6, "float", "Added to the covariance diagonals.", low=0.0),
    Param("max_iter", 100, "int", "EM iterations (passes over the data) at most.", low=0),
    Param(
        "n_init", 1, "int",
        "Initialisations, run in lockstep (one read of the data serves all); the best wins.",
        low=1,
    ),
    Param("init_params", "kmeans", "choice", "Initialisation method.", choices=INIT_METHODS),
    Param("weights_init", None, "array", "Initial weights, shape (n_components,).", optional=True),
    Param(
        "means_init", None, "array", "Initial means, shape (n_components, n_features).",
        optional=True,
    ),
    Param(
        "precisions_init", None, "array",
        "Initial precisions, shaped as covariance_type's covariances.", optional=True,
    ),
    Param(
        "factors_init", None, "array",
        "Initial factors of covariance_type='lowrank', shape (n_components, n_features, rank).",
        optional=True,
    ),
    Param(
        "noise_variances_init", None, "array",
        "Initial noise of covariance_type='lowrank', shape (n_components, n_features) or (n_components,).",
        optional=True,
    ),
    # NumPy's RandomState (scikit-learn's check_random_state) takes seeds in [0, 2**32 - 1].
    Param(
        "random_state", None, "random_state",
        "Random seed: the same seed, data and chunking give the same model (default: random).",
        low=0, high=2**32 - 1, optional=True,
    ),
    Param("warm_start", False, "boolean", "Start fit from the previous solution (n_init is then 1)."),
    Param("verbose", 0, "verbose", "0 silent; 1 a progress bar; 2 also a line every verbose_interval."),
    Param("verbose_interval", 10, "int", "Iterations between progress lines when verbose >= 2.", low=1),
    Param(
        "on_progress", None, "callable",
        "Called with a dgmm.core.progress.PassProgress as each phase begins and each pass advances and ends.",
        optional=True,
    ),
    Param(
        "chunks", None, "int", "Rows per chunk (default: ~64 MiB, two chunks per worker thread).",
        low=1, optional=True,
    ),
    Param(
        "block_size", None, "int", "Rows processed at a time inside a chunk (bounds task memory).",
        low=1, optional=True,
    ),
    Param(
        "split_every", _graph.DEFAULT_SPLIT_EVERY, "int",
        "Fan-in of the tree that merges the chunks' statistics.", low=2,
    ),
    Param(
        "on_degenerate", "reseed", "choice",
        "When a component collapses: re-seed it, or raise as scikit-learn.",
        choices=DEGENERATE_POLICIES,
    ),
    Param("client", None, "client", "Run on this distributed.Client's cluster.", optional=True),
    Param(
        "scheduler_address", None, "str", "Otherwise connect to this Dask scheduler.",
        optional=True,
    ),
    Param(
        "scheduler", None, "choice",
        "Without a cluster: Dask's threads or synchronous scheduler in this process, or "
        "processes (a LocalCluster); default: this process for in-memory input.",
        choices=LOCAL_SCHEDULERS, optional=True,
    ),
    Param(
        "checkpoint", None, "path",
        "Checkpoint directory or URL, written every iteration; when it exists the fit "
        "resumes from it.",
        optional=True,
    ),
    Param(
        "checkpoint_storage_options", None, "dict", "fsspec options of checkpoint.",
        optional=True,
    ),
)

#: Every hyper-parameter of ``GaussianMixture``, in its signature's order.
PARAMETERS: Mapping[str, Param] = MappingProxyType({p.name: p for p in _TABLE})
#: ``{name: default}`` of ``PARAMETERS``.
DEFAULTS: Mapping[str, Any] = MappingProxyType({p.name: p.default for p in _TABLE})


@dataclass(frozen=True)
class EMConfig:
    """What the loop needs to know besides data and starting parameters.

    ``covariance_type`` and ``reg_covar`` are the Gaussian family's, ``alpha``
    (additive smoothing of the word distributions) the multinomial family's.
    """

    covariance_type: CovarianceType | None
    tol: float = DEFAULTS["tol"]
    reg_covar: float = DEFAULTS["reg_covar"]
    max_iter: int = DEFAULTS["max_iter"]
    on_degenerate: DegeneratePolicy = DEFAULTS["on_degenerate"]
    split_every: int = _graph.DEFAULT_SPLIT_EVERY
    block_rows: int | None = None
    alpha: float = 1.0


@dataclass(frozen=True)
class WarmStart:
    """Where a ``warm_start`` fit continues from: the previous fit's parameters and bound."""

    params: MixtureParams
    lower_bound: float


# The initial arrays and their shapes in words (the numbers need the data's n_features).
_INIT_SHAPES = {
    "weights_init": "(n_components,)",
    "means_init": "(n_components, n_features)",
    "precisions_init": "(that of covariance_type's precisions)",
    "factors_init": "(n_components, n_features, rank)",
    "noise_variances_init": "(n_components, n_features) for noise_type='diag', (n_components,) for 'spherical'",
}
# The initial arrays of covariance_type="lowrank" alone.
_LOWRANK_INITS = ("factors_init", "noise_variances_init")


def _float_array(name: str, value: Any) -> np.ndarray | None:
    """``value`` as an array of float32 (if it is float32) or float64, or None.

    scikit-learn's ``check_array(dtype=[float64, float32])`` rule: the dtype
    decides the tolerance of the weights' normalisation check. Complex or
    non-numeric values raise ``InvalidDtypeError`` with scikit-learn's (NumPy's)
    sentence first.
    """
    if value is None:
        return None
    remedy = (
        f" The parameter '{name}' must be a real numeric array: pass an array of shape "
        f"{_INIT_SHAPES[name]}, or None to let init_params choose it."
    )
    dtype = np.float32 if getattr(value, "dtype", None) == np.float32 else np.float64
    try:
        if not np.iscomplexobj(value):
            return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        sentence = str(exc)
        raise InvalidDtypeError(sentence + ("" if sentence.endswith(".") else ".") + remedy) from None
    raise InvalidDtypeError(f"Complex data not supported\n{np.asarray(value)}\n{remedy.strip()}")


# -- user-given starting parameters, checked as scikit-learn's _gaussian_mixture does --------
# Each message starts with scikit-learn's sentence for the same mistake (copied from
# its ``raise``, including the swapped max/min labels of the weights' range check);
# dgmm's own words, naming the parameter and the remedy, follow it.


def _check_array(array: np.ndarray, name: str, *, allow_nd: bool = False) -> np.ndarray:
    """The part of ``check_array(ensure_2d=False)`` a converted array still needs."""
    remedy = f" Pass '{name}' of shape {_INIT_SHAPES[name]}, or None to let init_params choose it."
    if array.ndim == 0:
        raise ShapeMismatchError(
            "Input should have at least 1 dimension i.e. satisfy `len(x.shape) > 0`, got "
            f"scalar `{array!r}` instead.{remedy}"
        )
    if array.ndim > 2 and not allow_nd:
        raise ShapeMismatchError(
            f"Found array with dim {array.ndim}, while dim <= 2 is required.{remedy}"
        )
    if array.shape[0] < 1:
        raise ShapeMismatchError(
            f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is "
            f"required.{remedy}"
        )
    if array.ndim == 2 and array.shape[1] < 1:
        raise ShapeMismatchError(
            f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is "
            f"required.{remedy}"
        )
    nan, inf = bool(np.isnan(array).any()), bool(np.isinf(array).any())
    if nan or inf:
        what = "NaN" if nan else f"infinity or a value too large for {array.dtype!r}"
        raise InvalidInitError(
            f"Input contains {what}. The parameter '{name}' must be finite: replace the "
            "NaN or Inf values, or pass None to let init_params choose it."
        )
    return array


def _check_shape(array: np.ndarray, shape: tuple[int, ...], name: str, sk_name: str, why: str) -> None:
    """scikit-learn's ``_check_shape`` sentence, then which shape dgmm needs and why."""
    if array.shape != shape:
        raise ShapeMismatchError(
            f"The parameter '{sk_name}' should have the shape of {shape}, but got "
            f"{array.shape}. '{name}' needs shape {shape} ({why}), got {array.shape}: "
            "pass that shape, or None to let init_params choose it."
        )


def _check_weights(weights: np.ndarray, n_components: int) -> None:
    """``weights_init``: shape (n_components,), in [0, 1], summing to 1 (atol by dtype)."""
    _check_array(weights, "weights_init")
    _check_shape(weights, (n_components,), "weights_init", "weights", f"{n_components} components")
    low, high = weights.min(), weights.max()
    if low < 0.0 or high > 1.0:
        raise InvalidInitError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{low:.5f}, min value {high:.5f}. weights_init ranges from {low:.5g} to "
            f"{high:.5g}: pass non-negative weights that sum to 1."
        )
    # The sum in the weights' own dtype, compared at its resolution, as scikit-learn.
    total = np.sum(weights)
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(float(np.abs(1.0 - total)), 0.0, atol=atol):
        raise InvalidInitError(
            f"The parameter 'weights' should be normalized, but got sum(weights) = {total:.5f}. "
            f"weights_init must sum to 1 (within {atol:g} for {weights.dtype}): divide it by "
            "its sum."
        )


def _check_precisions(
    precisions: np.ndarray, covariance_type: str, n_components: int, n_features: int
) -> None:
    """``precisions_init``: the covariance type's shape, then symmetric positive definite."""
    model = get_covariance_model(covariance_type)
    shape = model.shape(n_components, n_features)
    _check_array(precisions, "precisions_init", allow_nd=len(shape) > 2)
    sk_name = f"{covariance_type} precision"
    _check_shape(
        precisions, shape, "precisions_init", sk_name,
        f"{n_components} '{covariance_type}' components of {n_features} features",
    )
    remedy = (
        "Pass the inverses of valid covariance matrices, or None to let init_params "
        "choose them."
    )
    if covariance_type in ("diag", "spherical"):
        bad = np.flatnonzero((precisions <= 0.0).reshape(n_components, -1).any(axis=1))
        if bad.size:
            raise InvalidInitError(
                f"'{sk_name}' should be positive. Component(s) {bad.tolist()} of precisions_init "
                f"are not positive definite (an entry <= 0). {remedy}"
            )
        return
    if covariance_type in ("full", "tied"):
        matrices = precisions.reshape(-1, n_features, n_features)
        bad = np.array([
            i for i, m in enumerate(matrices)
            if not (np.all(np.isclose(m, m.T)) and np.all(np.linalg.eigvalsh(m) > 0.0))
        ], dtype=int)
        if bad.size:
            which = "precisions_init" if covariance_type == "tied" else (
                f"Component(s) {bad.tolist()} of precisions_init"
            )
            raise InvalidInitError(
                f"'{sk_name}' should be symmetric, positive-definite. {which} "
                f"{'is' if covariance_type == 'tied' else 'are'} not symmetric positive "
                f"definite. {remedy}"
            )
        return
    bad = model.is_positive_definite(precisions)  # a covariance type scikit-learn lacks
    if bad.size:
        raise InvalidInitError(
            f"'{covariance_type}' precisions_init must be symmetric positive definite; "
            f"component(s) {bad.tolist()} are not. {remedy}"
        )


@dataclass(frozen=True, eq=False)
class FitSpec:
    """Everything one fit needs besides the data, validated once.

    Built by :meth:`dgmm.GaussianMixture.fit_spec` (or :meth:`from_params`);
    read by :func:`dgmm.fit.driver.fit`. ``seed`` is drawn once from
    ``random_state``, so a fit redone after a lost worker uses the same one;
    ``random_state`` keeps what the seed came from (an int, None, or the type
    name of a generator, whose draws are not reproducible) for checkpoints.
    With ``warm_start`` set, ``n_init`` is 1 and ``init_params`` unused.
    The initial arrays are float32 when given as float32, float64 otherwise
    (scikit-learn's rule); they are checked against the data, and returned
    in float64, by :meth:`init_arrays`. ``family`` names the model family
    (:mod:`dgmm.core.family`); a ``"multinomial"`` spec has no
    ``covariance_type`` and reads ``alpha`` and ``feature_prob_init``.
    """

    n_components: int
    covariance_type: CovarianceType | None
    seed: int
    rank: int = DEFAULTS["rank"]
    noise_type: NoiseType = DEFAULTS["noise_type"]
    tol: float = DEFAULTS["tol"]
    reg_covar: float = DEFAULTS["reg_covar"]
    max_iter: int = DEFAULTS["max_iter"]
    n_init: int = DEFAULTS["n_init"]
    init_params: InitMethod = DEFAULTS["init_params"]
    random_state: int | str | None = None
    weights_init: np.ndarray | None = None
    means_init: np.ndarray | None = None
    precisions_init: np.ndarray | None = None
    factors_init: np.ndarray | None = None
    noise_variances_init: np.ndarray | None = None
    warm_start: WarmStart | None = None
    chunks: int | None = None
    block_size: int | None = None
    split_every: int = DEFAULTS["split_every"]
    on_degenerate: DegeneratePolicy = DEFAULTS["on_degenerate"]
    checkpoint: str | os.PathLike[str] | None = None
    checkpoint_storage_options: Mapping[str, Any] | None = None
    verbose: int = DEFAULTS["verbose"]
    verbose_interval: int = DEFAULTS["verbose_interval"]
    on_progress: Callable[[PassProgress], None] | None = None
    client: Any = None
    scheduler_address: str | None = None
    scheduler: LocalScheduler | None = None
    family: str = "gaussian"
    alpha: float = 1.0
    feature_prob_init: np.ndarray | None = None

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], *, seed: int, warm_start: WarmStart | None = None
    ) -> FitSpec:
        """The spec of a fit with ``params`` (``get_params()``, already validated).

        Parameters
        ----------
        params : mapping
            Hyper-parameters by name; missing ones take their ``DEFAULTS``.
        seed : int
            The seed drawn from ``params['random_state']``.
        warm_start : WarmStart, default=None
            The previous solution, when ``warm_start`` continues one.
        """
        p = {**DEFAULTS, **params}
        random_state = p["random_state"]
        if not (random_state is None or isinstance(random_state, (int, np.integer))):
            # A RandomState instance: its draws are not reproducible; the seed is stored.
            random_state = type(random_state).__name__
        elif random_state is not None:
            random_state = int(random_state)
        inits = {name: _float_array(name, p[name]) for name in _INIT_SHAPES}
        return cls(
            n_components=int(p["n_components"]),
            covariance_type=p["covariance_type"],
            seed=int(seed),
            rank=int(p["rank"]),
            noise_type=p["noise_type"],
            tol=float(p["tol"]),
            reg_covar=float(p["reg_covar"]),
            max_iter=int(p["max_iter"]),
            n_init=1 if warm_start is not None else int(p["n_init"]),
            init_params=p["init_params"],
            random_state=random_state,
            warm_start=warm_start,
            chunks=None if p["chunks"] is None else int(p["chunks"]),
            block_size=None if p["block_size"] is None else int(p["block_size"]),
            split_every=int(p["split_every"]),
            on_degenerate=p["on_degenerate"],
            checkpoint=p["checkpoint"],
            checkpoint_storage_options=p["checkpoint_storage_options"],
            verbose=int(p["verbose"]),
            verbose_interval=int(p["verbose_interval"]),
            on_progress=p["on_progress"],
            client=p["client"],
            scheduler_address=p["scheduler_address"],
            scheduler=p["scheduler"],
            **inits,
        )

    @property
    def em_config(self) -> EMConfig:
        """The loop's part of the spec."""
        return EMConfig(
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            on_degenerate=self.on_degenerate,
            split_every=self.split_every,
            block_rows=self.block_size,
            alpha=self.alpha,
        )

    def init_arrays(self, n_features: int) -> dict[str, np.ndarray | None]:
        """``weights_init``, ``means_init``, ``precisions_init`` checked for data of ``n_features``.

        scikit-learn's checks in its order (``_check_weights``, ``_check_means``,
        ``_check_precisions``): dimensions and finiteness, shape, then values
        (weights in [0, 1] summing to 1 within 1e-6 for float32 weights, 1e-8
        otherwise; precisions symmetric positive definite, or positive for
        'diag' and 'spherical'). Each failure's message starts with
        scikit-learn's sentence, then names the parameter and the remedy:
        :class:`~dgmm.errors.ShapeMismatchError` for dimensions and shapes,
        :class:`~dgmm.errors.InvalidInitError` for values (both ValueErrors).
        With ``covariance_type="lowrank"`` also ``factors_init`` and
        ``noise_variances_init`` (positive), and ``rank < n_features``.

        Returns
        -------
        arrays : dict of str to ndarray or None
            The three arrays in float64 (None where not given).
        """
        k = self.n_components
        lowrank = self.covariance_type == "lowrank"
        if lowrank:
            shapes = self._lowrank_shapes(n_features)  # rank in range, no precisions_init
        else:
            given = [name for name in _LOWRANK_INITS if getattr(self, name) is not None]
            if given:
                raise InvalidOptionError(
                    f"{' and '.join(given)} apply to covariance_type='lowrank' only; this fit "
                    f"has covariance_type={self.covariance_type!r}. Pass covariance_type='lowrank', "
                    "or leave them None."
                )
        if self.weights_init is not None:
            _check_weights(self.weights_init, k)
        if self.means_init is not None:
            _check_array(self.means_init, "means_init")
            _check_shape(
                self.means_init, (k, n_features), "means_init", "means",
                f"{k} components of {n_features} features",
            )
        if self.precisions_init is not None:
            _check_precisions(self.precisions_init, self.covariance_type, k, n_features)
        if lowrank:
            for name in _LOWRANK_INITS:
                array = getattr(self, name)
                if array is not None:
                    _check_array(array, name, allow_nd=True)
                    _check_shape(array, shapes[name], name, name, f"{k} components, rank {self.rank}")
            noise = self.noise_variances_init
            if noise is not None and np.any(noise <= 0):
                raise InvalidInitError(
                    f"The parameter 'noise_variances_init' must be positive; got min value "
                    f"{noise.min():.5g}. Pass positive noise variances, or None to let "
                    "init_params choose them."
                )
        names = [*shapes] if lowrank else ["weights_init", "means_init", "precisions_init"]
        return {
            name: None if getattr(self, name) is None else np.asarray(getattr(self, name), np.float64)
            for name in names
        }

    def _lowrank_shapes(self, n_features: int) -> dict[str, tuple[int, ...]]:
        """The initial arrays of a low-rank fit and their shapes; checks rank and precisions_init."""
        k = self.n_components
        if not 0 <= self.rank < n_features:
            raise InvalidOptionError(
                f"rank must be in [0, n_features - 1] = [0, {n_features - 1}] for data with "
                f"{n_features} features; got rank={self.rank}. A rank of n_features or more "
                "is a full covariance with unidentifiable factors: pass a smaller rank, or "
                "covariance_type='full'."
            )
        if self.precisions_init is not None:
            raise InvalidOptionError(
                "precisions_init has no meaning for covariance_type='lowrank' (its covariances "
                "are A_k A_k^T + Psi_k); got an array. Pass factors_init and "
                "noise_variances_init instead, or None."
            )
        noise = (k, n_features) if self.noise_type == "diag" else (k,)
        return {
            "weights_init": (k,),
            "means_init": (k, n_features),
            "factors_init": (k, n_features, self.rank),
            "noise_variances_init": noise,
        }


@dataclass(frozen=True)
class RestartSummary:
    """How one restart of ``n_init`` ended."""

    index: int
    lower_bound: float
    converged: bool
    n_iter: int


@dataclass(frozen=True, eq=False)
class FitResult:
    """What a fit found: the best restart's parameters and record, and the data's shape.

    ``lower_bounds`` and ``history`` are the best restart's, one entry per
    iteration (``history`` entries: ``iteration``, ``lower_bound``,
    ``change``, ``seconds``, ``rows``, ``bytes``, ``rows_per_second``,
    ``gb_per_second``, ``events``). ``passes`` records every pass over the
    data the fit made, in order, the initialisation's included
    (:meth:`dgmm.core.progress.PassProgress.record`: ``phase``, ``step``,
    ``steps``, ``pass``, ``kind``, ``chunks``, ``rows``, ``bytes``,
    ``seconds``, ``rows_per_second``, ``gb_per_second``); empty for a model
    not fitted here. ``feature_names_in`` is None for
    data without string column names. ``restarts`` summarises every restart
    (empty for a model that was not fitted here: loaded or converted).
    ``convergence_warning`` is the message of the ``ConvergenceWarning`` the
    caller should issue, or None. ``dtype`` is the data's ("float32" or
    "float64"): scikit-learn's fitted attributes have it, while ``params``
    stay float64 (the estimator casts at its boundary).
    """

    params: MixtureParams
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: tuple[float, ...]
    history: tuple[dict[str, Any], ...]
    n_features_in: int
    feature_names_in: np.ndarray | None = None
    restarts: tuple[RestartSummary, ...] = ()
    convergence_warning: str | None = None
    dtype: str = "float64"
    passes: tuple[dict[str, Any], ...] = ()
