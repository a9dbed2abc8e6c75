"""Opening data where it will be used: sized by the cluster, scattered to it.

``open_dataset`` is the public way to open data (the current cluster's
threads size the default chunks); ``open_for_fit`` opens the data of one fit
or prediction on ``client``: one read of a store's metadata, in-memory rows
scattered to the workers by :func:`dgmm.graph.scatter_rows` (the io layer
never talks to the cluster itself).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import dask.array as da
import scipy.sparse as sp
from distributed import Client

from dgmm import graph
from dgmm.errors import UnsupportedInputError
from dgmm.fit.cluster import total_threads
from dgmm.io.dataset import Dataset
from dgmm.io.sources import Scatter, default_chunks, open_data

__all__ = ["on_cluster", "open_dataset", "open_for_fit", "require_dense", "scatter_to"]


def _current_threads() -> int:
    """Threads of the current client's workers, else this process's Dask pool."""
    try:
        return total_threads(graph.current_client())
    except Exception:  # noqa: BLE001 - a client shutting down: chunking only
        return os.cpu_count() or 1


def scatter_to(client: Client | None) -> Scatter | None:
    """``scatter(rows, row_chunks)`` onto ``client``'s workers, for :func:`dgmm.io.sources.open_data`.

    None when the fit runs in this process (no client): in-memory rows stay here.
    """
    return None if client is None else partial(graph.scatter_rows, client)


def on_cluster(data: Dataset, client: Client) -> da.Array:
    """Stored ``data`` (opened before connecting) chunked by default for ``client``'s threads.

    Reads no metadata again. The array carries its dataset, as ``open_dataset``'s.
    """
    return default_chunks(data, total_threads(client)).opened()


def open_for_fit(X: Any, *, chunks: int | None, client: Client | None) -> Dataset:
    """``X`` as the Dataset of a fit or prediction on ``client`` (None: in this process).

    Default chunks are sized by the cluster's threads (or this process's
    pool); in-memory rows are scattered to the workers (``Dataset.in_memory``).
    """
    return open_data(X, chunks=chunks, n_threads=total_threads(client), scatter=scatter_to(client))


def open_dataset(
    source: Any,
    *,
    key: str | None = None,
    columns: list[str] | None = None,
    storage_options: dict | None = None,
    chunks: int | None = None,
) -> da.Array:
    """Open data as a validated, row-chunked, floating-point 2-D Dask array.

    Nothing is computed: stored data is only described (from its metadata),
    and each task of a later pass reads its own rows. ``GaussianMixture.fit``,
    ``predict`` and the other methods accept every ``source`` this accepts.

    Parameters
    ----------
    source : array-like, dask.array.Array, DataFrame, xarray.DataArray, str or os.PathLike
        The data, of shape (n_samples, n_features):

        - a NumPy array (or anything ``np.asarray`` reads), a Dask array, an
          xarray DataArray (its ``.data``), or an opened ``zarr.Array`` (read
          lazily, like a Zarr path);
        - a pandas or Dask DataFrame: its numeric (and boolean) columns, or
          those named by ``columns``; a Dask DataFrame's partition lengths are
          computed once here (one pass) because a Dask array needs them;
        - a local path or fsspec URL (``s3://``, ``gs://``, ``file://``,
          ``memory://`` ...) to a Zarr v2 or v3 array or group (``key`` picks the
          array in a group), a Parquet file or a directory of Parquet files
          (``columns`` picks the features; files in pyarrow's dataset order),
          or a C-ordered ``.npy`` file (memory-mapped when local);
        - sparse counts (for :class:`dgmm.MultinomialMixture`): a scipy.sparse
          matrix or array (CSR, CSC ...), a Dask array of ``csr_matrix`` chunks,
          a ``.npz`` file from ``scipy.sparse.save_npz`` (read by row ranges
          when saved with ``compressed=False``), or the sparse group of an
          AnnData Zarr store (``key="X"``, ``"layers/counts"``), read by row
          chunks through ``indptr``. Their chunks are ``csr_matrix`` and
          hold about 12.5 million non-zeros by default (along the stored
          ``data`` chunks for AnnData).
    key : str, optional
        Path of the array inside a Zarr group, e.g. ``"X"`` or ``"obsm/X_pca"``
        (or of AnnData's sparse matrix group).
    columns : list of str, optional
        Feature columns of a Parquet dataset or a DataFrame, in this order.
        By default all columns, which must then all be numeric; the index is
        never one: a DataFrame's index is not a column, and the columns in
        which pandas stored a DataFrame's index in Parquet (``id`` after
        ``df.set_index("id").to_parquet(...)``, or ``__index_level_0__``, as
        named by the file's pandas metadata) are left out (logged at INFO).
        Name them in ``columns`` to read them as features.
    storage_options : dict, optional
        Passed to fsspec (and so to s3fs, gcsfs ...): endpoint, credentials.
    chunks : int, optional
        Rows per chunk. For stored data it is rounded to whole storage chunks
        so that no stored chunk is read by two tasks: to the nearest multiple
        (at least one) of the Zarr chunk's (or shard's) rows, and to the first
        Parquet row-group boundary at or past ``chunks`` rows. By default
        chunks hold ~64 MiB, at least two per worker thread of the current
        client (else this machine's cores) when the data is small, never less
        than one storage chunk.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        float32 data stays float32; integer and boolean data become float64.
        All the columns are in one chunk. Stored data gets a deterministic
        ``.name`` (from the location, ``key``/``columns``, the stored metadata
        and the chunking), the same whenever the same data is opened alike.
        The array remembers its source (:class:`dgmm.io.dataset.OpenedArray`):
        ``GaussianMixture.fit`` takes its feature names, and a ``chunks=``
        given later is rounded to whole storage chunks too.

    Raises
    ------
    dgmm.errors.SourceNotFoundError
        The path, URL or bucket does not exist (a ``FileNotFoundError``).
    dgmm.errors.InvalidSourceError
        An unsupported file type, a Zarr group without ``key``, a ``key`` or
        ``columns`` that do not exist (a ``ValueError``).
    dgmm.errors.InvalidDataError, dgmm.errors.InvalidDtypeError
        Not 2-D, no rows or columns, or non-numeric values or columns.

    Examples
    --------
    >>> import numpy as np, dgmm
    >>> X = dgmm.open_dataset(np.arange(12).reshape(6, 2), chunks=3)
    >>> X.dtype, X.chunks
    (dtype('float64'), ((3, 3), (2,)))
    """
    data = open_data(
        source, key=key, columns=columns, storage_options=storage_options, chunks=chunks,
        n_threads=_current_threads(),
    )
    return data.opened()


def require_dense(x: da.Array) -> None:
    """Raise ``UnsupportedInputError`` when ``x`` has scipy.sparse chunks (a Gaussian
    mixture's fit or prediction needs dense rows)."""
    if sp.issparse(x._meta):
        raise UnsupportedInputError(
            f"X is a sparse matrix ({type(x._meta).__name__} chunks); a Gaussian mixture fits "
            "dense data only (dgmm.MultinomialMixture fits sparse counts). Densify it "
            "(X.toarray()) if it fits in memory, or store it as a dense Zarr array."
        )
