"""A fitted ``GaussianMixture`` to and from model files and scikit-learn.

Front-end helpers behind ``GaussianMixture.save / load / to_sklearn /
from_sklearn`` and ``dgmm.load``; the files themselves are
:mod:`dgmm.io.persistence`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from dgmm.core.family import MixtureParams
from dgmm.core.lowrank import LowRankParams
from dgmm.core.params import GMMParams
from dgmm.errors import UnsupportedInputError, UnsupportedModelError
from dgmm.fit.spec import FitResult
from dgmm.io import persistence
from dgmm.io.codec import to_jsonable

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    from dgmm.estimator import GaussianMixture

__all__ = ["estimator_from_model", "from_sklearn", "load", "save", "to_sklearn"]

# Fitted attributes other than the parameter arrays, as model.json's "fit".
_FIT_FIELDS = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "history_", "n_features_in_")
# scikit-learn's hyper-parameters, which dgmm shares (same names, same meaning).
_SKLEARN_PARAMS = (
    "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
    "init_params", "weights_init", "means_init", "precisions_init", "random_state",
    "warm_start", "verbose", "verbose_interval",
)
_SKLEARN_INITS = {"kmeans", "k-means++", "random", "random_from_data"}
# Where and how a fit ran, not what the model is: an address or a checkpoint of
# a past run would be wrong to reuse, and storage options may hold credentials.
_NOT_SAVED = {"client", "scheduler_address", "scheduler", "checkpoint", "checkpoint_storage_options"}


def _json_params(estimator: GaussianMixture) -> tuple[dict[str, Any], list[str]]:
    """``(hyper-parameters that are JSON, names of those that are not)``."""
    saved, dropped = {}, []
    for name, value in estimator.get_params(deep=False).items():
        if name in _NOT_SAVED or "storage_options" in name:
            dropped.append(name)
            continue
        try:
            saved[name] = to_jsonable(value)
        except TypeError:  # a RandomState instance, a callable: not data
            dropped.append(name)
    return saved, dropped


def save(
    estimator: GaussianMixture,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write a fitted estimator as a model directory (see ``GaussianMixture.save``)."""
    params = estimator.params_  # NotFittedError before anything is written
    hyper, dropped = _json_params(estimator)
    fit = {name: getattr(estimator, name) for name in _FIT_FIELDS if hasattr(estimator, name)}
    if hasattr(estimator, "feature_names_in_"):
        fit["feature_names_in_"] = [str(n) for n in estimator.feature_names_in_]
    meta = {"estimator": f"dgmm.{type(estimator).__name__}", "params": hyper, "fit": fit}
    if dropped:
        meta["params_not_saved"] = dropped
    persistence.save_model(
        path, params, meta, overwrite=overwrite, storage_options=storage_options,
        dtype=str(np.asarray(estimator.weights_).dtype),
    )


def estimator_from_model(params: MixtureParams, meta: Mapping[str, Any]) -> Any:
    """A fitted estimator of the parameters' family (``GaussianMixture``,
    ``MultinomialMixture``) from loaded parameters and ``model.json``."""
    if params.family == "multinomial":
        from dgmm.multinomial_mixture import MultinomialMixture as estimator_class
    else:
        from dgmm.estimator import GaussianMixture as estimator_class

    accepted = estimator_class().get_params(deep=False)
    hyper = {k: v for k, v in dict(meta.get("params") or {}).items() if k in accepted}
    # The arrays are authoritative (a model saved by save_model alone has no "params"):
    # from_result takes n_components and covariance_type from them.
    fit = dict(meta.get("fit") or {})
    names = fit.get("feature_names_in_")
    result = FitResult(
        params=params,
        converged=bool(fit.get("converged_", False)),
        n_iter=int(fit.get("n_iter_", 0)),
        lower_bound=float(fit.get("lower_bound_", -math.inf)),
        lower_bounds=tuple(float(v) for v in fit.get("lower_bounds_", [])),
        history=tuple(fit.get("history_", [])),
        n_features_in=int(fit.get("n_features_in_", params.n_features)),
        feature_names_in=None if names is None else np.asarray(names, dtype=object),
        dtype=persistence.attributes_dtype(meta),
    )
    return estimator_class.from_result(result, **hyper)


def load(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Any:
    """Load a model directory as a fitted :class:`dgmm.GaussianMixture` (or
    :class:`dgmm.MultinomialMixture` for a mixture of multinomials: the
    estimator of the family ``model.json`` names).

    Parameters
    ----------
    path : str or path-like
        Local path or fsspec URL (``s3://bucket/models/m1``) written by
        :meth:`GaussianMixture.save`.
    storage_options : mapping, default=None
        Passed to fsspec (credentials, endpoint_url, ...).

    Returns
    -------
    gmm : GaussianMixture
        Fitted: the same parameter arrays (bit for bit), hyper-parameters,
        ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_`` and
        ``history_`` as the saved estimator.

    Raises
    ------
    dgmm.errors.ModelNotFoundError
        If nothing exists at ``path``.
    dgmm.errors.ModelFormatError
        If it is not a dgmm model, is corrupt or truncated, has wrong
        shapes, or was written by a newer dgmm.
    """
    params, meta = persistence.load_model(path, storage_options=storage_options)
    return estimator_from_model(params, meta)


def to_sklearn(estimator: GaussianMixture) -> SklearnGaussianMixture:
    """A fitted ``sklearn.mixture.GaussianMixture`` with the same parameters."""
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    params = estimator.params_
    if isinstance(params, LowRankParams):
        raise UnsupportedModelError(
            f"to_sklearn cannot convert a covariance_type='lowrank' mixture (rank "
            f"{params.rank}, {params.noise_type} noise): scikit-learn's GaussianMixture has "
            "no low-rank covariance type, and its 'full' type would need K*D^2 numbers. Keep "
            "the dgmm model (save/load), or fit covariance_type='full' or 'diag' to convert."
        )
    kwargs = {name: getattr(estimator, name) for name in _SKLEARN_PARAMS}
    if estimator.init_params not in _SKLEARN_INITS:
        kwargs["init_params"] = "kmeans"  # 'split' is dgmm's; it only matters for a refit
    out = SklearnGaussianMixture(**kwargs)
    # scikit-learn's attributes have the training data's dtype, as dgmm's.
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(out, name, np.array(getattr(estimator, name)))
    out.converged_ = bool(getattr(estimator, "converged_", False))
    out.n_iter_ = int(getattr(estimator, "n_iter_", 0))
    out.lower_bound_ = float(getattr(estimator, "lower_bound_", -math.inf))
    out.lower_bounds_ = list(getattr(estimator, "lower_bounds_", []))
    out.n_features_in_ = int(getattr(estimator, "n_features_in_", params.n_features))
    if hasattr(estimator, "feature_names_in_"):
        out.feature_names_in_ = np.asarray(estimator.feature_names_in_, dtype=object)
    return out


def from_sklearn(estimator: SklearnGaussianMixture) -> GaussianMixture:
    """A fitted ``dgmm.GaussianMixture`` from a fitted scikit-learn one."""
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    from dgmm.estimator import GaussianMixture

    if not isinstance(estimator, SklearnGaussianMixture):
        raise UnsupportedInputError(
            f"from_sklearn expects a fitted sklearn.mixture.GaussianMixture, got "
            f"{type(estimator).__module__}.{type(estimator).__qualname__}. "
            "(BayesianGaussianMixture predicts with other formulas and cannot be converted.) "
            "Pass a fitted sklearn.mixture.GaussianMixture."
        )
    check_is_fitted(estimator, "means_")
    params = GMMParams(
        np.array(estimator.weights_, dtype=np.float64),
        np.array(estimator.means_, dtype=np.float64),
        np.array(estimator.covariances_, dtype=np.float64),
        np.array(estimator.precisions_cholesky_, dtype=np.float64),
        estimator.covariance_type,
    )
    bounds = tuple(float(v) for v in getattr(estimator, "lower_bounds_", []))
    # scikit-learn keeps no per-iteration record beyond the bounds; time and events are unknown.
    history = tuple(
        {
            "iteration": i + 1,
            "lower_bound": b,
            "change": b - (bounds[i - 1] if i else -math.inf),
            "seconds": math.nan,
            "events": [],
        }
        for i, b in enumerate(bounds)
    )
    names = getattr(estimator, "feature_names_in_", None)
    result = FitResult(
        params=params,
        converged=bool(estimator.converged_),
        n_iter=int(estimator.n_iter_),
        lower_bound=float(estimator.lower_bound_),
        lower_bounds=bounds,
        history=history,
        n_features_in=int(getattr(estimator, "n_features_in_", params.n_features)),
        feature_names_in=None if names is None else np.asarray(names, dtype=object),
        dtype="float32" if np.asarray(estimator.means_).dtype == np.float32 else "float64",
    )
    return GaussianMixture.from_result(
        result, **{name: getattr(estimator, name) for name in _SKLEARN_PARAMS}
    )
