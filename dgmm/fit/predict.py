"""Prediction behind ``GaussianMixture``'s predict methods, ``score_samples`` and ``predict_to``.

X is checked against the fit (feature count and names, as scikit-learn; NaN
or Inf found inside the prediction's own pass), then predicted in memory or
lazily by :mod:`dgmm.graph`; ``predict_to`` selects its outputs and writes
them chunk by chunk with :mod:`dgmm.io.sinks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dgmm import graph as _graph
from dgmm.core.kernels import require_finite
from dgmm.errors import ShapeMismatchError
from dgmm.fit.cluster import connect, total_threads
from dgmm.io.sources import as_dask_array, as_float_array, check_feature_names, feature_names, is_in_memory

__all__ = ["predict", "predict_to"]

# predict_to's outputs and their names in the written Zarr group / Parquet columns.
_PREDICT_OUTPUTS = {"labels": "label", "proba": "proba", "log_density": "log_density"}


def predict(estimator: Any, X: Any, what: str) -> Any:
    """``what`` ('labels', 'proba', 'score_samples') of X's rows: ndarray, or lazy for Dask or stored X."""
    params = estimator._params()
    names = feature_names(X)
    if is_in_memory(X):
        array = as_float_array(X, "X")
        _check_features(estimator, array.shape[1], names)
        require_finite(array)
        return _graph._predict_block(array, params, what)
    x = as_dask_array(X)
    _check_features(estimator, x.shape[1], names)
    # Checked block by block inside the prediction tasks (fused, no extra pass).
    x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
    return _graph.lazy_predict(x, params, what)


def _check_features(estimator: Any, n_features: int, names: np.ndarray | None) -> None:
    """X's feature count and names against fit's, as scikit-learn.

    Other names than fit's raise first (they say more than a count);
    names on one side only warn after the count is checked.
    """
    fitted = getattr(estimator, "feature_names_in_", None)
    both = fitted is not None and names is not None
    if both:
        check_feature_names(fitted, names, type(estimator).__name__)
    if n_features != estimator.n_features_in_:
        raise ShapeMismatchError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input. Pass the same columns as in fit."
        )
    if not both:
        check_feature_names(fitted, names, type(estimator).__name__)


def predict_to(
    estimator: Any,
    X: Any,
    target: str,
    *,
    output: str | list[str],
    overwrite: bool,
    storage_options: dict[str, Any] | None,
    format: str | None,
) -> Any:
    """Write the predictions of X to ``target`` (see ``GaussianMixture.predict_to``)."""
    from dgmm.io.sinks import write_array

    outputs = [output] if isinstance(output, str) else list(output)
    unknown = [o for o in outputs if o not in _PREDICT_OUTPUTS]
    if not outputs or unknown or len(set(outputs)) != len(outputs):
        raise ValueError(
            f"output must be one of {list(_PREDICT_OUTPUTS)} or a list of distinct ones; "
            f"got {output!r}. For example output=['labels', 'log_density']."
        )
    params = estimator._params()
    names = feature_names(X)
    with connect(
        client=estimator.client, scheduler_address=estimator.scheduler_address,
        scheduler=estimator.scheduler, data=X,
    ) as client:
        # In-memory X is scattered to the workers (or stays here, client None); stored X stays lazy.
        x = as_dask_array(X, client=client, n_threads=total_threads(client))
        _check_features(estimator, x.shape[1], names)
        x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
        arrays = {
            _PREDICT_OUTPUTS[o]: a
            for o, a in _graph.lazy_predict_many(x, params, outputs).items()
        }
        return write_array(
            arrays, target, format=format, overwrite=overwrite, storage_options=storage_options
        )


def _checked_finite(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """``x`` unchanged once ``require_finite`` passed, with its global row offset."""
    require_finite(x, row_offset=block_info[0]["array-location"][0][0] if block_info else 0)
    return x
