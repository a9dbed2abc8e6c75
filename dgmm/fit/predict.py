"""Prediction behind ``GaussianMixture``'s predict methods, ``score_samples`` and ``predict_to``.

Functions of fitted parameters, not of the estimator: X is checked against
them and the fit's feature names (count and names, as scikit-learn; NaN or
Inf found inside the prediction's own pass), then predicted in memory or
lazily by :mod:`dgmm.graph`; ``predict_to`` selects its outputs and writes
them chunk by chunk with :mod:`dgmm.io.sinks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from dgmm import graph as _graph
from dgmm.core.kernels import require_finite
from dgmm.core.options import PREDICT_OUTPUTS, LocalScheduler, PredictOutput
from dgmm.core.params import GMMParams
from dgmm.errors import InvalidOptionError, ShapeMismatchError
from dgmm.fit.cluster import connect
from dgmm.fit.data import open_for_fit, require_dense
from dgmm.io import sinks
from dgmm.io.sinks import WriteResult
from dgmm.io.sources import as_float_array, check_feature_names, feature_names, is_in_memory, open_data

__all__ = ["Prediction", "predict", "predict_to", "write_array"]

#: What ``predict`` computes per row: the label, the component probabilities, log p(x).
Prediction = Literal["labels", "proba", "score_samples"]

# predict_to's outputs and their names in the written Zarr group / Parquet columns.
_OUTPUT_NAMES: dict[PredictOutput, str] = {"labels": "label", "proba": "proba", "log_density": "log_density"}


def predict(
    params: GMMParams,
    X: Any,
    what: Prediction,
    *,
    feature_names_in: np.ndarray | None = None,
    estimator_name: str = "GaussianMixture",
    dtype: np.dtype | type | None = None,
) -> Any:
    """``what`` of every row of X under ``params``.

    Parameters
    ----------
    params : GMMParams
        The fitted mixture.
    X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
        Checked against ``params.n_features`` and ``feature_names_in`` (the
        fit's column names, or None) as scikit-learn does.
    what : {'labels', 'proba', 'score_samples'}
    feature_names_in : ndarray of str, default=None
    estimator_name : str, default='GaussianMixture'
        Named in the messages of a mismatch.
    dtype : {float32, float64}, default=None
        The model's dtype (its fitted attributes'). As in scikit-learn, X is
        computed in the wider of its own dtype and this one, so float32
        outputs come only from float32 X on a float32 model. None: X's dtype.

    Returns
    -------
    out : ndarray for in-memory X, a lazy dask.array.Array for Dask or stored X
        Of shape (n_samples,) or (n_samples, n_components) for 'proba'.
    """
    if is_in_memory(X):
        array = as_float_array(X, "X")
        _check_features(params, feature_names_in, estimator_name, array.shape[1], feature_names(X))
        require_finite(array)
        return _graph.predict_block(array.astype(_work_dtype(array.dtype, dtype), copy=False), params, what)
    data = open_data(X)  # one read of a store's metadata: the array and its names
    x = data.array
    require_dense(x)
    _check_features(params, feature_names_in, estimator_name, x.shape[1], data.feature_names)
    x = x.astype(_work_dtype(x.dtype, dtype), copy=False)
    # Checked block by block inside the prediction tasks (fused, no extra pass).
    x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
    return _graph.lazy_predict(x, params, what)


def _work_dtype(x_dtype: np.dtype, model_dtype: np.dtype | type | None) -> np.dtype:
    """The dtype predictions of X are computed in: X's, widened to the model's."""
    return np.dtype(x_dtype) if model_dtype is None else np.result_type(x_dtype, model_dtype)


def _check_features(
    params: GMMParams,
    fitted: np.ndarray | None,
    estimator_name: str,
    n_features: int,
    names: np.ndarray | None,
) -> None:
    """X's feature count and names against fit's, as scikit-learn.

    Other names than fit's raise first (they say more than a count);
    names on one side only warn after the count is checked.
    """
    both = fitted is not None and names is not None
    if both:
        check_feature_names(fitted, names, estimator_name)
    if n_features != params.n_features:
        raise ShapeMismatchError(
            f"X has {n_features} features, but {estimator_name} is expecting "
            f"{params.n_features} features as input. Pass the same columns as in fit."
        )
    if not both:
        check_feature_names(fitted, names, estimator_name)


def predict_to(
    params: GMMParams,
    X: Any,
    target: str,
    *,
    output: PredictOutput | list[PredictOutput],
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    format: str | None = None,
    feature_names_in: np.ndarray | None = None,
    estimator_name: str = "GaussianMixture",
    client: Any = None,
    scheduler_address: str | None = None,
    scheduler: LocalScheduler | None = None,
) -> Any:
    """Write the predictions of X under ``params`` to ``target`` (see ``GaussianMixture.predict_to``).

    One E-step per chunk serves every output in ``output``; ``client``,
    ``scheduler_address`` and ``scheduler`` say where it runs (:func:`dgmm.fit.cluster.connect`).

    Returns
    -------
    result : dgmm.io.sinks.WriteResult
    """
    outputs = [output] if isinstance(output, str) else list(output)
    unknown = [o for o in outputs if o not in PREDICT_OUTPUTS]
    if not outputs or unknown or len(set(outputs)) != len(outputs):
        raise InvalidOptionError(
            f"output must be one of {list(PREDICT_OUTPUTS)} or a list of distinct ones; "
            f"got {output!r}. For example output=['labels', 'log_density']."
        )
    with connect(
        client=client, scheduler_address=scheduler_address, scheduler=scheduler, data=X,
    ) as client:
        # In-memory X is scattered to the workers (or stays here, client None); stored X stays lazy.
        data = open_for_fit(X, chunks=None, client=client)
        x = data.array
        require_dense(x)
        _check_features(params, feature_names_in, estimator_name, x.shape[1], data.feature_names)
        x = x.map_blocks(_checked_finite, dtype=x.dtype, meta=x._meta)
        arrays = {
            _OUTPUT_NAMES[o]: a
            for o, a in _graph.lazy_predict_many(x, params, outputs).items()
        }
        return write_array(
            arrays, target, format=format, overwrite=overwrite, storage_options=storage_options
        )


def write_array(x: Any, target: str, **kwargs: Any) -> WriteResult:
    """Write a Dask array, or several named ones with the same rows, to Zarr or Parquet.

    :func:`dgmm.io.sinks.write_array` (its parameters and guarantees), with
    the write tasks run on the current Dask client, else on threads here
    (:func:`dgmm.graph.run_tasks`). Each input chunk is computed and written
    by one task; nothing is gathered on the client; nothing appears under
    ``target`` unless every chunk was written.
    """
    return sinks.write_array(x, target, run=_graph.run_tasks, **kwargs)


def _checked_finite(x: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """``x`` unchanged once ``require_finite`` passed, with its global row offset."""
    require_finite(x, row_offset=block_info[0]["array-location"][0][0] if block_info else 0)
    return x
