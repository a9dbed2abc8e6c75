"""Input data as a validated, row-chunked, floating-point 2-D Dask array.

In-memory arrays are scattered to the workers chunk by chunk (the data never
sits in the task graph); Dask arrays keep their row chunks and get all their
columns in one chunk. Values are not scanned here: NaN/Inf are found by the
first pass over the data, which names the chunk and the row.
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
from distributed import wait

from ._kernels import require_valid_weights
from .errors import InvalidDataError, InvalidDtypeError, ShapeMismatchError, UnsupportedInputError

__all__ = ["as_dask_array", "as_float_array", "as_sample_weight", "default_row_chunk"]

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


def _to_numpy(X: Any, what: str) -> np.ndarray:
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise UnsupportedInputError(
            f"{what} is a sparse matrix ({type(X).__name__}); dgmm fits dense data only. "
            "Densify it (X.toarray()) if it fits in memory, or store it as a dense "
            "Zarr array."
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


def _scatter_rows(client: Any, array: np.ndarray, row_chunks: tuple[int, ...]) -> da.Array:
    """An in-memory array as a Dask array whose row chunks live on the workers."""
    bounds = np.cumsum((0, *row_chunks))
    pieces = [array[bounds[i] : bounds[i + 1]] for i in range(len(row_chunks))]
    # hash=False: fresh keys every time. With content-hashed keys, scattering
    # the same data again (a refit, GridSearchCV) can race the release of the
    # previous fit's identical keys and fail with "lost dependencies".
    futures = client.scatter(pieces, hash=False)
    blocks = [
        da.from_delayed(f, shape=p.shape, dtype=array.dtype, meta=array[:0])
        for f, p in zip(futures, pieces)
    ]
    # Persisting makes the array's graph hold futures of its own chunks; the
    # scattered futures alone would be released once this function returns.
    x = client.persist(da.concatenate(blocks, axis=0))
    wait(x)
    return x


def as_dask_array(
    X: Any,
    *,
    chunks: int | None = None,
    client: Any = None,
    n_threads: int = 1,
    what: str = "X",
) -> da.Array:
    """``X`` as a float32/float64 Dask array with all columns in one chunk.

    Parameters
    ----------
    X : array-like or dask.array.Array of shape (n_samples, n_features)
    chunks : int, optional
        Rows per chunk. Dask input keeps its own row chunks unless given.
    client : distributed.Client, optional
        In-memory input is scattered to its workers; without one it is
        wrapped with ``da.from_array``.
    n_threads : int
        Worker threads, for the default chunking of in-memory input.
    """
    if isinstance(X, da.Array):
        _check_shape(X.shape, what)
        if any(math.isnan(c) for c in X.shape):
            raise InvalidDataError(
                f"{what} has unknown chunk sizes {X.chunks}; call X.compute_chunk_sizes() first."
            )
        dtype = _float_dtype(X.dtype, what)
        x = X if X.dtype == dtype else X.astype(dtype)
        if len(x.chunks[1]) != 1 or chunks is not None:
            x = x.rechunk({0: chunks if chunks is not None else x.chunks[0], 1: -1})
        return x

    array = _to_numpy(X, what)
    _check_shape(array.shape, what)
    dtype = _float_dtype(array.dtype, what)
    array = np.ascontiguousarray(array, dtype=dtype)
    n_rows, n_features = array.shape
    rows = chunks or default_row_chunk(n_rows, n_features, dtype.itemsize, n_threads)
    row_chunks = da.core.normalize_chunks((rows,), (n_rows,))[0]
    if client is None:
        return da.from_array(array, chunks=(row_chunks, (n_features,)))
    return _scatter_rows(client, array, row_chunks)


def as_sample_weight(
    sample_weight: Any, x: da.Array, *, client: Any = None
) -> da.Array | None:
    """Per-row weights aligned with ``x``'s row chunks, float64, or None.

    In-memory weights are checked here (finite, non-negative, not all zero);
    Dask weights are checked by the first pass.
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
    if client is None:
        return da.from_array(w, chunks=(x.chunks[0],))
    return _scatter_rows(client, w, x.chunks[0])
