"""Results out: Dask arrays written to Zarr or Parquet chunk by chunk, atomically.

``write_array`` writes one Dask array, or several named arrays with the same
rows (labels, log-densities, probabilities), with one task per input row
chunk: each task computes its chunk on the worker that holds it and writes it
to storage itself, so the data never passes through the client and every
input chunk is computed (read) once. Output chunks are the input's row
chunks: a Zarr chunk (or a Parquet file) per input chunk.

What "atomic" means here
------------------------
Everything is first written under a temporary sibling of the target
(``.<name>.tmp-<id>`` in the same directory or prefix). If any chunk fails
(an exception in a task, e.g. NaN rows found while predicting, or a lost
worker), the tasks still running are waited for, the temporary sibling is
removed and the exception is raised: nothing appears under the target's name,
and an existing target is untouched. Once every chunk is written, the
temporary sibling is moved into place by :func:`dgmm.io.fs.commit_dir`:

* **local filesystem**: the temporary directory is renamed to the target
  (one ``rename``, atomic). With ``overwrite=True`` an existing target is
  swapped for the new one in one ``renameat2`` exchange where Linux offers
  it; elsewhere it is first renamed aside, the new one renamed into place,
  then the old one removed (if the second rename fails the old target is
  renamed back; between the two renames the name is briefly absent, never
  partial).
* **object storage** (``s3://``, ``gs://``, ``memory://``..., no atomic
  rename): the objects are copied from the temporary prefix to the target,
  the root metadata last (Zarr's root ``zarr.json``, or ``.zgroup`` /
  ``.zarray`` / ``.zattrs`` for Zarr v2), then the temporary prefix is
  removed. A Zarr reader therefore sees no array or group until it is
  complete. A Parquet dataset has no root metadata: a reader listing the
  prefix during the copy can see only some of its files. With
  ``overwrite=True`` the old target is deleted only after the new data is
  complete under the temporary prefix, just before the copy. If the copy
  itself fails, what was copied is removed and the complete result is left
  under the temporary prefix, named in the error.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from dgmm.errors import ShapeMismatchError, TargetFormatError, UnsupportedInputError
from dgmm.io import fs as fsio

__all__ = ["FORMATS", "WriteResult", "write_array"]

FORMATS = ("zarr", "parquet")

# Objects a Zarr reader opens first: copied last on object storage.
_ZARR_ROOT_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")

@dataclass(frozen=True)
class WriteResult:
    """What ``write_array`` wrote.

    Attributes
    ----------
    target : str
        The target as given (path or URL).
    format : {'zarr', 'parquet'}
    n_rows : int
        Rows written (the length of every array).
    n_chunks : int
        Output chunks (Zarr chunks along rows, or Parquet files), one per
        input row chunk.
    columns : tuple of str
        Zarr: the array names (``()`` for a single array at the root).
        Parquet: the column names.
    """

    target: str
    format: str
    n_rows: int
    n_chunks: int
    columns: tuple[str, ...]


#: ``run(out, name) -> rows``: computes the write tasks (layer ``name``) of ``out``,
#: one int64 row count per chunk, and raises only once none is running any more
#: (the graph layer's :func:`dgmm.graph.run_tasks`).
TaskRunner = Callable[[da.Array, str], int]


def write_array(
    x: Any,
    target: str,
    *,
    run: TaskRunner,
    format: str | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    name: str | None = None,
    zarr_format: int = 3,
    **kwargs: Any,
) -> WriteResult:
    """Write a Dask array, or several named ones, to Zarr or Parquet.

    Parameters
    ----------
    x : dask.array.Array of shape (n_samples,) or (n_samples, n_columns), or a mapping
        One array, or ``{name: array}`` of 1-D / 2-D arrays with the same
        number of rows (written as a Zarr group of named arrays, or as
        Parquet columns). NumPy arrays are accepted and chunked by Dask.
        Later arrays are re-chunked to the first one's row chunks.
    target : str
        Local path or fsspec URL (``s3://bucket/out.zarr``).
    run : callable
        Runs the write tasks (:data:`TaskRunner`); the public
        :func:`dgmm.write_array` passes the graph layer's, which runs them on
        the current client or on threads here.
    format : {'zarr', 'parquet'}, default=None
        By default from the suffix: ``.zarr`` is Zarr; ``.parquet``, ``.pq``,
        a trailing ``/`` or no suffix is a Parquet dataset (a directory with
        one file per chunk).
    overwrite : bool, default=False
        Replace an existing target, only once the new one is complete.
        Otherwise an existing target raises :class:`~dgmm.errors.TargetExistsError`.
    storage_options : dict, default=None
        Passed to fsspec (credentials, ``endpoint_url``, ...).
    name : str, default=None
        Parquet column name (prefix, for a 2-D array) of a single array;
        ``"x"`` by default. A single array is written at the root of a Zarr
        target; give a mapping to get a group.
    zarr_format : {2, 3}, default=3
    **kwargs
        Passed on to ``zarr.create_array`` (e.g. ``compressors``) or to
        ``pyarrow.parquet.write_table`` (e.g. ``compression``).

    Returns
    -------
    WriteResult
        Target, format, rows, chunks and names written.

    Notes
    -----
    Parquet columns: a 1-D array ``name`` is the column ``name``; a 2-D
    array ``name`` of width K is the columns ``name_0`` ... ``name_{K-1}``.
    Files are ``part-00000.parquet``, ... in row order, so every reader that
    sorts file names (pyarrow, pandas, Dask) reads the rows in order.

    Zarr chunks must be regular: irregular input row chunks are re-chunked
    to the first chunk's size first (each input chunk is still read once).

    See the module docstring for what is guaranteed when a write fails.
    """
    fmt = _choose_format(target, format)
    arrays = _as_named_arrays(x, name, single_at_root=fmt == "zarr")
    if fmt == "zarr":
        arrays = _regular_rows(arrays)
    if zarr_format not in (2, 3):
        raise TargetFormatError(
            f"zarr_format must be 2 or 3; got {zarr_format!r}. Pass zarr_format=3 "
            "(the default) or 2 for readers that only know Zarr v2."
        )

    location = fsio.resolve(target, storage_options)
    fs, local = location.fs, location.local
    if not fsio.split(local, location.path)[1]:
        raise TargetFormatError(
            f"Cannot write to {target!r}: expected a path or URL naming a directory to "
            "create (e.g. 's3://bucket/labels.zarr'), got the root of a filesystem or "
            "bucket."
        )
    fsio.check_target(location, overwrite=overwrite)
    tmp = location.sibling("tmp")
    token = tmp.rsplit("-", 1)[-1]
    first = next(iter(arrays.values()))
    row_chunks = first.chunks[0]
    if fmt == "zarr":
        writer: _Writer = _ZarrWriter(fs, tmp, local, storage_options, zarr_format, kwargs)
    else:
        writer = _ParquetWriter(fs, tmp, len(row_chunks), kwargs)
    try:
        columns = writer.prepare(arrays)
        n_rows = _run_chunks(arrays, writer, f"dgmm-write-{token}", run)
    except BaseException:
        fsio.remove_quietly(fs, tmp, local)
        raise
    fsio.commit_dir(location, tmp, overwrite=overwrite, last=_ZARR_ROOT_METADATA)
    return WriteResult(target, fmt, n_rows, len(row_chunks), columns)


# -- inputs ---------------------------------------------------------------------

def _choose_format(target: str, format: str | None) -> str:
    """'zarr' or 'parquet', from ``format`` or the target's suffix."""
    if format is not None:
        if format not in FORMATS:
            raise TargetFormatError(
                f"Unknown output format {format!r}; expected one of {list(FORMATS)}."
            )
        return format
    if not isinstance(target, (str, os.PathLike)):
        raise UnsupportedInputError(
            f"target must be a path or URL string; got {type(target).__name__}. "
            "Pass e.g. 'labels.zarr' or 's3://bucket/labels.parquet'."
        )
    target = os.fspath(target)
    stripped = target.rstrip("/")
    suffix = posixpath.splitext(posixpath.basename(stripped.split("://")[-1]))[1].lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in (".parquet", ".pq", "") or target.endswith("/"):
        return "parquet"
    raise TargetFormatError(
        f"Cannot tell the output format of {target!r} from its suffix {suffix!r}; "
        "expected '.zarr', '.parquet' or a directory. Pass format='zarr' or "
        "format='parquet'."
    )


def _as_named_arrays(x: Any, name: str | None, *, single_at_root: bool) -> dict[str, da.Array]:
    """``{name: array}``, 1-D/2-D, all columns in one chunk, rows aligned to the first."""
    if isinstance(x, Mapping):
        if not x:
            raise ShapeMismatchError("Nothing to write: the mapping of arrays is empty.")
        items = list(x.items())
        if name is not None:
            raise UnsupportedInputError("name= applies to a single array; a mapping already names its arrays.")
    else:
        # "" marks the single array written at the root of a Zarr target.
        items = [("" if single_at_root else (name or "x"), x)]
    arrays: dict[str, da.Array] = {}
    for key, value in items:
        if not isinstance(key, str) or (not key and len(items) > 1) or "/" in key:
            raise ShapeMismatchError(
                f"Array names must be non-empty strings without '/'; got {key!r}."
            )
        a = value if isinstance(value, da.Array) else da.asarray(np.asarray(value))
        if a.ndim not in (1, 2):
            raise ShapeMismatchError(
                f"Array {key or 'x'!r} to write is {a.ndim}-D of shape {a.shape}; expected "
                "1-D (n_samples,) or 2-D (n_samples, n_columns). Reshape it first."
            )
        if any(math.isnan(c) for c in a.shape):
            raise ShapeMismatchError(
                f"Array {key or 'x'!r} has unknown chunk sizes {a.chunks}; call "
                "compute_chunk_sizes() first."
            )
        if a.ndim == 2 and len(a.chunks[1]) != 1:
            a = a.rechunk({1: -1})
        if arrays:
            first_key, first = next(iter(arrays.items()))
            if a.shape[0] != first.shape[0]:
                raise ShapeMismatchError(
                    f"Arrays written together must have the same rows: {first_key!r} has "
                    f"{first.shape[0]}, {key!r} has {a.shape[0]}."
                )
            if a.chunks[0] != first.chunks[0]:
                a = a.rechunk({0: first.chunks[0]})
        arrays[key] = a
    return arrays


def _regular_rows(arrays: dict[str, da.Array]) -> dict[str, da.Array]:
    """Zarr needs equal row chunks (the last may be shorter)."""
    chunks = next(iter(arrays.values())).chunks[0]
    if len(chunks) < 2 or (len(set(chunks[:-1])) == 1 and chunks[-1] <= chunks[0]):
        return arrays
    rows = chunks[0]
    return {k: a.rechunk({0: rows}) for k, a in arrays.items()}


# -- writers (run on the workers) -----------------------------------------------

class _Writer:
    """Creates the output's metadata on the client; writes one chunk in a task."""

    def prepare(self, arrays: dict[str, da.Array]) -> tuple[str, ...]:
        raise NotImplementedError

    def write(self, index: int, start: int, blocks: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class _ZarrWriter(_Writer):
    def __init__(
        self, fs: Any, tmp: str, local: bool, storage_options: dict | None,
        zarr_format: int, kwargs: dict[str, Any],
    ) -> None:
        self.store = tmp if local else fs.unstrip_protocol(tmp)
        self.storage_options = None if local else (storage_options or {})
        self.zarr_format = zarr_format
        self.kwargs = kwargs

    def prepare(self, arrays: dict[str, da.Array]) -> tuple[str, ...]:
        import zarr

        so = {} if self.storage_options is None else {"storage_options": self.storage_options}
        rows = next(iter(arrays.values())).chunks[0][0]
        if "" not in arrays:
            zarr.create_group(store=self.store, zarr_format=self.zarr_format, **so)
        for key, a in arrays.items():
            zarr.create_array(
                store=self.store, name=key or None, shape=a.shape, dtype=a.dtype,
                chunks=(rows, *a.shape[1:]), zarr_format=self.zarr_format,
                **so, **self.kwargs,
            )
        return tuple(k for k in arrays if k)

    def write(self, index: int, start: int, blocks: dict[str, np.ndarray]) -> None:
        import zarr

        so = {} if self.storage_options is None else {"storage_options": self.storage_options}
        for key, block in blocks.items():
            z = zarr.open_array(store=self.store, path=key, mode="r+", **so)
            z[start : start + block.shape[0]] = block


class _ParquetWriter(_Writer):
    def __init__(self, fs: Any, tmp: str, n_chunks: int, kwargs: dict[str, Any]) -> None:
        self.fs = fs
        self.tmp = tmp
        self.width = max(5, len(str(n_chunks - 1)))
        self.kwargs = kwargs

    def prepare(self, arrays: dict[str, da.Array]) -> tuple[str, ...]:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                "Writing Parquet needs pyarrow, which is not installed. Install it "
                "(pip install 'dgmm[parquet]' or pip install pyarrow), or write Zarr "
                "(a target ending in '.zarr')."
            ) from None
        self.fs.makedirs(self.tmp, exist_ok=True)
        columns: list[str] = []
        for key, a in arrays.items():
            columns += [key] if a.ndim == 1 else [f"{key}_{j}" for j in range(a.shape[1])]
        return tuple(columns)

    def write(self, index: int, start: int, blocks: dict[str, np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data: dict[str, np.ndarray] = {}
        for key, block in blocks.items():
            if block.ndim == 1:
                data[key] = block
            else:
                data.update({f"{key}_{j}": block[:, j] for j in range(block.shape[1])})
        path = f"{self.tmp}/part-{index:0{self.width}d}.parquet"
        with self.fs.open(path, "wb") as f:
            pq.write_table(pa.table(data), f, **self.kwargs)


def _write_task(writer: _Writer, names: tuple[str, ...], bounds: np.ndarray, *blocks: np.ndarray) -> np.ndarray:
    """Write one row chunk of every array; returns ``[rows written]``."""
    index, start = int(bounds[0, 0]), int(bounds[0, 1])
    writer.write(index, start, dict(zip(names, blocks)))
    return np.array([blocks[0].shape[0]], dtype=np.int64)


# -- running the chunks -----------------------------------------------------------

def _run_chunks(arrays: dict[str, da.Array], writer: _Writer, name: str, run: TaskRunner) -> int:
    """One write task per row chunk; returns the rows written.

    If a chunk fails, returns (by raising) only once no task is writing any
    more, so the caller can remove the temporary output for good.
    """
    row_chunks = next(iter(arrays.values())).chunks[0]
    starts = np.cumsum((0, *row_chunks[:-1]))
    bounds = da.from_array(
        np.column_stack([np.arange(len(row_chunks)), starts]).astype(np.int64), chunks=(1, 2)
    )
    args: list[Any] = [bounds, "iz"]
    for j, a in enumerate(arrays.values()):
        args += [a, "i" if a.ndim == 1 else f"i{chr(ord('a') + j % 25)}"]
    names = tuple(arrays)
    out = da.blockwise(
        _write_task, "i", writer, None, names, None, *args,
        align_arrays=False, concatenate=True, adjust_chunks={"i": 1},
        dtype=np.int64, meta=np.empty((0,), dtype=np.int64), name=name,
    )
    return run(out, name)
