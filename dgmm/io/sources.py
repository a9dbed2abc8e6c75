"""Opening input data as a :class:`~dgmm.io.dataset.Dataset`: validated, row-chunked, float.

:func:`open_data` accepts in-memory arrays and DataFrames, Dask arrays and
DataFrames, xarray DataArrays, opened ``zarr.Array`` objects, arrays from
``dgmm.open_dataset``, and paths or fsspec URLs to Zarr, Parquet and ``.npy``
data (described by :func:`dgmm.io.stores.open_store` from one read of their
metadata). In-memory rows are handed to a ``scatter`` callable when the fit
layer gives one (the data never sits in the task graph); Dask arrays keep
their row chunks and get all their columns in one chunk; stored data is
chunked along whole storage chunks. Values are not scanned here: NaN/Inf are
found by the first pass over the data, which names the chunk and the row.

``feature_names`` gives the names of a source's feature columns from its
metadata alone, as scikit-learn's ``feature_names_in_`` wants them, and
``check_feature_names`` compares them with the names seen at fit.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp

from dgmm.core.kernels import require_valid_weights
from dgmm.errors import (
    InvalidDataError,
    InvalidDtypeError,
    InvalidSourceError,
    ShapeMismatchError,
    UnsupportedInputError,
)
from dgmm.io.dataset import Dataset, Origin, memory_array, string_names
from dgmm.io.sparse import as_csr, from_scipy, is_npz_source, open_npz
from dgmm.io.stores import StoredArray, is_store_source, is_zarr_array, open_store, stored_zarr

__all__ = [
    "Scatter",
    "as_float_array",
    "as_sample_weight",
    "check_feature_names",
    "default_chunks",
    "default_row_chunk",
    "feature_names",
    "is_in_memory",
    "open_data",
]

# scatter(rows, row_chunks) -> a Dask array of those row chunks held by the workers.
Scatter = Callable[[np.ndarray, tuple[int, ...]], da.Array]

# Target bytes of one row chunk of in-memory input.
TARGET_CHUNK_BYTES = 64 << 20
MIN_CHUNK_ROWS = 4096


def _float_dtype(dtype: np.dtype, what: str) -> np.dtype:
    """The floating dtype the kernels run in for data of ``dtype``."""
    if dtype in (np.float32, np.float64):
        return np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_) or dtype == np.float16:
        return np.dtype(np.float64)
    if np.issubdtype(dtype, np.complexfloating):
        raise InvalidDtypeError(
            f"Complex data not supported: {what} has dtype {dtype}, expected real "
            "numbers. Pass the real part, the modulus, or the real and imaginary "
            "parts as separate features."
        )
    raise InvalidDtypeError(
        f"{what} must hold real numbers; got dtype {dtype}. Convert it to float32 or "
        "float64 (and drop non-numeric columns) before fitting."
    )


def _check_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2:
        hint = (
            "Reshape your data with X.reshape(-1, 1) if it has a single feature, "
            "or X.reshape(1, -1) if it is a single sample."
            if len(shape) == 1
            else "Reshape your data: flatten all but the sample axis, e.g. "
            "X.reshape(X.shape[0], -1)."
        )
        raise InvalidDataError(
            f"Expected {what} to be a 2-D array of shape (n_samples, n_features); got "
            f"{len(shape)}-D of shape {tuple(shape)}. {hint}"
        )
    if shape[0] == 0:
        raise InvalidDataError(
            f"{what} has 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is "
            "required. Pass a non-empty array."
        )
    if shape[1] == 0:
        raise InvalidDataError(
            f"{what} has 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            "required. Pass at least one numeric column."
        )


def default_row_chunk(n_rows: int, n_features: int, itemsize: int, n_threads: int) -> int:
    """Rows per chunk: ~64 MiB, but at least two chunks per worker thread."""
    by_bytes = max(1, TARGET_CHUNK_BYTES // max(1, n_features * itemsize))
    by_parallelism = math.ceil(n_rows / (2 * max(1, n_threads)))
    return int(max(1, min(n_rows, max(MIN_CHUNK_ROWS, min(by_bytes, by_parallelism)))))


def _is_pandas_frame(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "pandas" and hasattr(X, "columns") and hasattr(X, "dtypes")


def _is_dask_frame(X: Any) -> bool:
    return (
        type(X).__module__.split(".")[0] in ("dask", "dask_expr")
        and hasattr(X, "columns")
        and hasattr(X, "to_dask_array")
    )


def _is_xarray(X: Any) -> bool:
    # Duck-typed so xarray stays optional: a DataArray has dims, a variable and data.
    return hasattr(X, "dims") and hasattr(X, "variable") and hasattr(X, "data")


def is_in_memory(X: Any) -> bool:
    """Whether ``X`` holds its values in this process (not a Dask collection or a stored source)."""
    if _is_xarray(X):
        return not isinstance(X.data, da.Array)
    return not (isinstance(X, da.Array) or is_store_source(X) or _is_dask_frame(X) or is_zarr_array(X))


def _frame_columns(frame: Any, columns: Any, what: str) -> list[Any] | None:
    """``columns`` as a list after checking they are ``frame``'s; None (all of them) stays None."""
    if columns is None:
        return None
    columns = [columns] if isinstance(columns, str) else list(columns)
    available = list(frame.columns)
    missing = [c for c in columns if c not in available]
    if missing:
        raise InvalidSourceError(
            f"Column(s) {missing} not found in {what}; available columns: {available}. "
            "Pass columns= from these."
        )
    return columns


def _select_frame(frame: Any, columns: Any, what: str) -> tuple[Any, np.dtype]:
    """``frame[columns]`` after checking the columns exist and are numeric, and their float dtype."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    columns = _frame_columns(frame, columns, what)
    if columns is not None:
        frame = frame[columns]
    bad = {
        str(c): str(dt) for c, dt in frame.dtypes.items() if not (is_numeric_dtype(dt) or is_bool_dtype(dt))
    }
    if bad:
        numeric = [c for c, dt in frame.dtypes.items() if str(c) not in bad]
        raise InvalidDtypeError(
            f"{what} has non-numeric column(s) {bad}; expected numeric features only. "
            f"Pass columns= with the numeric ones (e.g. columns={numeric}), or encode the "
            "categories as numbers first."
        )
    if frame.shape[1] == 0:
        return frame, np.dtype(np.float64)
    dtypes = [np.dtype(getattr(dt, "numpy_dtype", dt)) for dt in frame.dtypes]
    return frame, _float_dtype(np.result_type(*dtypes), what)


def _to_numpy(X: Any, what: str, columns: Any = None) -> np.ndarray:
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise UnsupportedInputError(
            f"{what} is a sparse matrix ({type(X).__name__}); a Gaussian mixture fits dense data only "
            "(dgmm.MultinomialMixture fits sparse counts). "
            "Densify it (X.toarray()) if it fits in memory, or store it as a dense "
            "Zarr array."
        )
    if _is_pandas_frame(X):
        frame, dtype = _select_frame(X, columns, what)
        # Missing values (pd.NA, None) become NaN, reported by the first pass.
        return frame.to_numpy(dtype=dtype, na_value=np.nan)
    if columns is not None:
        raise InvalidSourceError(
            f"columns={columns!r} was given but {what} is a {type(X).__name__}, which has "
            "no named columns; columns= selects DataFrame or Parquet columns. Index the "
            "array instead, e.g. X[:, [0, 2]]."
        )
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(
            f"{what} could not be read as a 2-D numeric array ({exc}). Pass a NumPy "
            "array, a DataFrame of numeric columns, or a list of equal-length rows."
        ) from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidDtypeError(
                f"{what} holds non-numeric values (dtype object): {exc}. Expected real "
                "numbers; pass numeric features only, e.g. df.select_dtypes('number'), "
                "and encode categories or drop missing values before fitting."
            ) from None
    return array


def as_float_array(X: Any, what: str = "X") -> np.ndarray:
    """In-memory ``X`` as a 2-D float32/float64 NumPy array (for prediction).

    Values are not scanned for NaN/Inf here.
    """
    array = _to_numpy(X, what)
    _check_shape(array.shape, what)
    return np.asarray(array, dtype=_float_dtype(array.dtype, what))


def feature_names(
    source: Any,
    *,
    columns: list[str] | None = None,
    storage_options: dict | None = None,
) -> np.ndarray | None:
    """Names of the feature columns of ``source``, from its metadata alone.

    These are the names ``GaussianMixture.fit`` records as
    ``feature_names_in_``, for the columns :func:`open_dataset` reads with the
    same ``columns``: a pandas or Dask DataFrame's (or those of ``columns``),
    a Parquet file's or directory's (the schema of its first file, less a
    stored pandas index, as :func:`open_dataset` reads it), and an
    array :func:`open_dataset` opened from either. Arrays, Zarr and ``.npy``
    data have none, nor have xarray DataArrays, whatever their coordinates
    (as for scikit-learn, which takes names from DataFrames only). Names are
    kept only when all are strings, scikit-learn's rule.

    Parameters
    ----------
    source : any source :func:`open_dataset` accepts
    columns : list of str, optional
        Feature columns of a DataFrame or Parquet dataset, checked to exist.
    storage_options : dict, optional
        fsspec options of a path or URL.

    Returns
    -------
    names : ndarray of str objects, shape (n_features,), or None

    Raises
    ------
    TypeError
        Column names that mix strings and other types, as scikit-learn.

    Examples
    --------
    >>> import pandas as pd
    >>> feature_names(pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]}), columns=["c", "a"])
    array(['c', 'a'], dtype=object)
    >>> feature_names(pd.DataFrame([[1.0, 2.0]])) is None
    True
    """
    if _is_xarray(source):
        return None
    if _is_pandas_frame(source) or _is_dask_frame(source):
        selected = _frame_columns(source, columns, "X")
        labels = list(source.columns) if selected is None else selected
    elif is_store_source(source):
        labels = open_store(source, columns=columns, storage_options=storage_options).columns
    elif isinstance(source, da.Array):
        opened = Dataset.of(source)
        labels = None if opened is None else opened.origin.labels
    else:
        labels = None
    return None if labels is None else string_names(labels)


def check_feature_names(fitted: np.ndarray | None, names: np.ndarray | None, estimator: str) -> None:
    """scikit-learn's check of the feature names of X against those seen at fit.

    Different names (or order): ValueError naming them. Names on one side
    only: a UserWarning. Messages as scikit-learn's ``_check_feature_names``.
    """
    if fitted is None and names is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {estimator} was fitted without feature names", stacklevel=2)
        return
    if names is None:
        warnings.warn(
            f"X does not have valid feature names, but {estimator} was fitted with feature names",
            stacklevel=2,
        )
        return
    if len(fitted) == len(names) and np.all(np.asarray(fitted) == np.asarray(names)):
        return
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))

    def listed(values: list[str]) -> str:
        lines = [f"- {v}\n" for v in values[:5]]
        return "".join(lines) + ("- ...\n" if len(values) > 5 else "")

    message = "The feature names should match those that were passed during fit.\n"
    if unexpected:
        message += "Feature names unseen at fit time:\n" + listed(unexpected)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + listed(missing)
    if not unexpected and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ShapeMismatchError(message)


def open_data(
    source: Any,
    *,
    key: str | None = None,
    columns: list[str] | None = None,
    storage_options: dict | None = None,
    chunks: int | None = None,
    n_threads: int = 1,
    scatter: Scatter | None = None,
    what: str = "X",
) -> Dataset:
    """``source`` as a :class:`~dgmm.io.dataset.Dataset`, its metadata read once.

    Parameters
    ----------
    source : array-like, dask.array.Array, DataFrame, DataArray, zarr.Array, path or URL
        Of shape (n_samples, n_features); see ``dgmm.open_dataset``.
    key, columns, storage_options
        As in ``dgmm.open_dataset``.
    chunks : int, optional
        Rows per chunk (rounded to whole storage chunks for stored data). Dask
        input keeps its own row chunks unless given.
    n_threads : int
        Worker threads, for the default chunking.
    scatter : callable, optional
        ``scatter(rows, row_chunks) -> dask.array.Array``: where in-memory rows
        go (the fit layer sends them to the workers); without it they are
        wrapped with ``da.from_array``.
    what : str
        The name of ``source`` in messages.

    Returns
    -------
    data : Dataset
    """
    if is_npz_source(source) and key is None and columns is None:
        x = open_npz(source, chunks=chunks, storage_options=storage_options)
        return Dataset(x, Origin(os.fspath(source)))
    if is_store_source(source):
        store = open_store(source, key=key, columns=columns, storage_options=storage_options)
        return _stored(store, chunks, n_threads, what)
    for name, value in (("key", key), ("storage_options", storage_options)):
        if value is not None:
            raise InvalidSourceError(
                f"{name}= was given but {what} is a {type(source).__name__}, not a path or URL; "
                f"{name}= applies to stored data only. Drop {name}=."
            )
    if is_zarr_array(source) and columns is None:
        return _stored(stored_zarr(source), chunks, n_threads, what)
    X = source
    if _is_xarray(X):
        if columns is not None:
            raise InvalidSourceError(
                f"columns= was given but {what} is an xarray DataArray; select features "
                "with .sel or .isel first and drop columns=."
            )
        X = X.data
    labels = None
    if _is_dask_frame(X):
        frame, dtype = _select_frame(X, columns, what)
        labels = tuple(frame.columns)
        X = frame.to_dask_array(lengths=True)
        X = X if X.dtype == dtype else X.astype(dtype)
        columns = None
    if isinstance(X, da.Array):
        opened = Dataset.of(X)
        if opened is not None and columns is None:
            return opened if chunks is None else opened.reopen(chunks)
        return _dask(X, labels, columns, chunks, what)

    if sp.issparse(X) and columns is None:
        # Named by its content (deterministic); the matrix is one key of the
        # graph, chunks are CSR row ranges of it (placed by non-zeros).
        _check_shape(X.shape, what)
        csr = as_csr(X)
        x = from_scipy(csr, chunks=chunks)
        dtype = _float_dtype(x.dtype, what)
        origin = Origin(f"{what} ({type(X).__name__})")
        if scatter is not None:
            # For a cluster, the CSR row chunks go to the workers once, as dense
            # rows do: the graph would otherwise carry the whole matrix every pass.
            rows = csr if csr.dtype == dtype else csr.astype(dtype)
            return Dataset(scatter(rows, tuple(x.chunks[0])), origin, in_memory=True)
        return Dataset(x if x.dtype == dtype else x.astype(dtype), origin)
    if _is_pandas_frame(X):
        selected = _frame_columns(X, columns, what)
        labels = tuple(X.columns if selected is None else selected)
    array = _to_numpy(X, what, columns)
    _check_shape(array.shape, what)
    dtype = _float_dtype(array.dtype, what)
    array = np.ascontiguousarray(array, dtype=dtype)
    n_rows, n_features = array.shape
    rows = chunks or default_row_chunk(n_rows, n_features, dtype.itemsize, n_threads)
    row_chunks = tuple(da.core.normalize_chunks((rows,), (n_rows,))[0])
    origin = Origin(f"{what} ({type(source).__name__})", labels=labels, values=array)
    x = memory_array(array, row_chunks, labels) if scatter is None else scatter(array, row_chunks)
    return Dataset(x, origin, in_memory=True)


def default_chunks(data: Dataset, n_threads: int) -> Dataset:
    """Stored ``data`` chunked as :func:`open_data` chunks it by default for ``n_threads`` threads.

    Reads nothing (the store was opened once); other data is returned as it is.
    """
    store = data.origin.store
    if store is None or store.kind == "csr":  # sparse chunks are placed by non-zeros
        return data
    n_rows, n_features = data.array.shape
    return data.reopen(default_row_chunk(n_rows, n_features, store.dtype.itemsize, n_threads))


def _stored(store: StoredArray, chunks: int | None, n_threads: int, what: str) -> Dataset:
    """A store's Dataset: float data, chunked along whole storage chunks."""
    _check_shape(store.shape, what)
    n_rows, n_features = store.shape
    dtype = _float_dtype(store.dtype, what)
    if store.kind == "csr":
        x = store.to_dask(None if chunks is None else store.row_chunks(chunks))
    else:
        rows = chunks if chunks is not None else default_row_chunk(n_rows, n_features, store.dtype.itemsize, n_threads)
        x = store.to_dask(store.row_chunks(rows))
    return Dataset(x if x.dtype == dtype else x.astype(dtype), Origin(store.url, labels=store.columns, store=store))


def _dask(X: da.Array, labels: tuple[Any, ...] | None, columns: Any, chunks: int | None, what: str) -> Dataset:
    """A Dask array's Dataset: float, all columns in one chunk, its own row chunks unless ``chunks``."""
    if columns is not None:
        raise InvalidSourceError(
            f"columns= was given but {what} is a Dask array, which has no named "
            "columns. Index it instead (X[:, [0, 2]]) and drop columns=."
        )
    _check_shape(X.shape, what)
    if any(math.isnan(c) for c in X.shape):
        raise InvalidDataError(
            f"{what} has unknown chunk sizes {X.chunks}; call X.compute_chunk_sizes() first."
        )
    dtype = _float_dtype(X.dtype, what)
    x = X if X.dtype == dtype else X.astype(dtype)
    if len(x.chunks[1]) != 1 or chunks is not None:
        x = x.rechunk({0: chunks if chunks is not None else x.chunks[0], 1: -1})
    kind = "Dask DataFrame" if labels is not None else "Dask array"
    return Dataset(x, Origin(f"{what} ({kind})", labels=labels))


def as_sample_weight(
    sample_weight: Any, x: da.Array, *, scatter: Scatter | None = None
) -> da.Array | None:
    """Per-row weights aligned with ``x``'s row chunks, float64, or None.

    In-memory weights are checked here (finite, non-negative, not all zero)
    and handed to ``scatter`` when given (see :func:`open_data`); Dask
    weights are checked by the first pass.
    """
    if sample_weight is None:
        return None
    n_rows = x.shape[0]
    if isinstance(sample_weight, da.Array):
        if sample_weight.ndim != 1 or sample_weight.shape[0] != n_rows:
            raise ShapeMismatchError(
                f"sample_weight must have shape ({n_rows},), one weight per row of X; "
                f"got shape {sample_weight.shape}. Pass a 1-D array aligned with X's rows."
            )
        return sample_weight.astype(np.float64).rechunk((x.chunks[0],))
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidDtypeError(
            f"sample_weight must hold real numbers ({exc}). Pass a 1-D numeric array."
        ) from None
    if w.ndim == 0:
        w = np.full(n_rows, float(w))
    if w.shape != (n_rows,):
        raise ShapeMismatchError(
            f"sample_weight must have shape ({n_rows},), one weight per row of X; "
            f"got shape {w.shape}. Pass a 1-D array aligned with X's rows."
        )
    require_valid_weights(w)
    if not np.any(w > 0):
        raise InvalidDataError(
            f"sample_weight is zero for all {n_rows} rows; expected at least one "
            "positive weight. Pass positive weights for the rows to fit."
        )
    if scatter is None:
        return da.from_array(w, chunks=(x.chunks[0],))
    return scatter(w, tuple(x.chunks[0]))
