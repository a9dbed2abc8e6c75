"""Stored datasets as row-chunked Dask arrays: Zarr, Parquet and ``.npy``.

A source is a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``,
``memory://`` ...). Only metadata is read here (Zarr array metadata, Parquet
footers, the ``.npy`` header): row counts never cost a pass over the data.
Every Dask chunk is a whole number of storage chunks (Zarr chunks or shards,
Parquet row groups), so each stored chunk is read by exactly one task per pass,
and every chunk holds all the columns. The workers read their own chunks.

Arrays get a deterministic ``.name`` from the store's URL, the key or
columns, the stored metadata and the chunking, so checkpoints can recognise
the same data by it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from dgmm.errors import InvalidDtypeError, InvalidSourceError, SourceNotFoundError
from dgmm.io.fs import is_local as _is_local
from dgmm.io.fs import resolve

__all__ = ["is_store_source", "is_zarr_array", "open_store", "store_columns", "zarr_array"]

logger = logging.getLogger("dgmm")

SUPPORTED = (
    "a Zarr v2/v3 array or group (a directory or URL holding zarr.json, .zarray or "
    ".zgroup), a Parquet file or directory of Parquet files (*.parquet, *.pq), or "
    "a NumPy .npy file"
)


def is_store_source(source: Any) -> bool:
    """Whether ``source`` names stored data (a path or URL) rather than holding it."""
    return isinstance(source, (str, os.PathLike))


def open_store(
    source: str | os.PathLike,
    *,
    key: str | None,
    columns: list[str] | None,
    storage_options: dict | None,
    chunks: int | None,
    target_rows: Any,
    check: Any,
    what: str = "X",
) -> tuple[da.Array, list[str] | None]:
    """The dataset at ``source`` as a (float) Dask array chunked along whole storage chunks.

    ``target_rows(n_rows, n_features, itemsize) -> int`` gives the default rows
    per chunk; ``check(shape, what)`` validates the 2-D shape; the returned
    array may still hold integers (cast by the caller). With it, the names of
    its columns: a Parquet dataset's selected columns, None for Zarr and ``.npy``.
    """
    url = os.fspath(source)
    fs, path = _filesystem(url, storage_options)
    kind = _detect(fs, path, url)
    if kind == "zarr":
        if columns is not None:
            raise InvalidSourceError(
                f"columns={list(columns)!r} was given for the Zarr store {url!r}; columns "
                "select Parquet columns or DataFrame columns only. Select Zarr features "
                "after opening, e.g. open_dataset(...)[:, [0, 2]]."
            )
        return _open_zarr(url, fs, path, key, storage_options, chunks, target_rows, check, what), None
    if key is not None:
        raise InvalidSourceError(
            f"key={key!r} was given for the {kind} source {url!r}; key picks an array "
            "inside a Zarr group only. Drop key=."
        )
    if kind == "parquet":
        return _open_parquet(url, fs, path, columns, storage_options, chunks, target_rows, check, what)
    if columns is not None:
        raise InvalidSourceError(
            f"columns={list(columns)!r} was given for the .npy file {url!r}; columns "
            "select Parquet columns or DataFrame columns only. Drop columns=."
        )
    return _open_npy(url, fs, path, storage_options, chunks, target_rows, check, what), None


def store_columns(
    source: str | os.PathLike, *, columns: list[str] | None, storage_options: dict | None
) -> list[str] | None:
    """The columns ``open_store`` would read from ``source``: a Parquet dataset's, else None.

    Reads metadata only (the listing and one Parquet footer), never data.
    ``columns`` are checked as ``open_store`` checks them.
    """
    url = os.fspath(source)
    fs, path = _filesystem(url, storage_options)
    if _detect(fs, path, url) != "parquet":
        return None
    return _parquet_columns(_parquet_dataset(url, fs, path).schema, columns, url)


# -- locating and recognising a store ------------------------------------------------


def _filesystem(url: str, storage_options: dict | None) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it for ``url`` (``dgmm.io.fs.resolve``)."""
    try:
        location = resolve(url, storage_options)
    except ImportError as exc:
        raise InvalidSourceError(
            f"Cannot open {url!r}: {exc}. Install the fsspec implementation of its "
            "protocol (for s3:// URLs: pip install 'dgmm[s3]')."
        ) from None
    except ValueError as exc:
        raise InvalidSourceError(
            f"Cannot open {url!r}: {exc}. Pass a local path or an fsspec URL such as "
            "s3://bucket/data.zarr."
        ) from None
    return location.fs, location.path


def _canonical_url(fs: Any, path: str) -> str:
    """One spelling per location (``file:///abs/x.zarr``, ``s3://bucket/x.zarr``)."""
    return fs.unstrip_protocol(path.rstrip("/"))


def _endpoint(storage_options: dict | None) -> Any:
    """The endpoint part of the storage options (never the credentials), for names."""
    options = storage_options or {}
    client_kwargs = options.get("client_kwargs") or {}
    return options.get("endpoint_url") or client_kwargs.get("endpoint_url")


def _detect(fs: Any, path: str, url: str) -> str:
    """``"zarr"``, ``"parquet"`` or ``"npy"``; typed errors for missing or unknown sources."""
    if not fs.exists(path):
        raise SourceNotFoundError(_missing_message(fs, path, url))
    if fs.isdir(path):
        for marker in ("zarr.json", ".zarray", ".zgroup"):
            if fs.exists(f"{path.rstrip('/')}/{marker}"):
                return "zarr"
        if _parquet_files(fs, path):
            return "parquet"
        raise InvalidSourceError(
            f"{url!r} is a directory that is neither a Zarr store (no zarr.json, .zarray "
            "or .zgroup) nor a directory of Parquet files (no *.parquet or *.pq file). "
            f"Supported sources: {SUPPORTED}."
        )
    lower = path.lower()
    if lower.endswith(".npy"):
        return "npy"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    with fs.open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PAR1":
        return "parquet"
    if magic == b"\x93NUMPY":
        return "npy"
    raise InvalidSourceError(
        f"{url!r} is a file of a format dgmm cannot read (first bytes {magic!r}). "
        f"Supported sources: {SUPPORTED}. Convert the data to one of them, or load it "
        "yourself and pass an array."
    )


def _missing_message(fs: Any, path: str, url: str) -> str:
    if not _is_local(fs):
        bucket = path.strip("/").split("/", 1)[0]
        try:
            bucket_exists = fs.exists(bucket)
        except Exception:  # noqa: BLE001 - only refines the message
            bucket_exists = True
        if not bucket_exists:
            return (
                f"Bucket {bucket!r} of {url!r} does not exist (or is not visible with the "
                "given credentials and endpoint). Check the URL, and pass the endpoint "
                "and credentials in storage_options."
            )
    return (
        f"No such file or directory: {url!r}. Expected a path or URL to {SUPPORTED}; "
        "check the path (relative paths are resolved from the current directory, "
        f"{os.getcwd()!r})."
        if _is_local(fs)
        else f"No such file or directory: {url!r}. Expected a URL to {SUPPORTED}; check "
        "the URL and the storage_options."
    )


def _parquet_files(fs: Any, path: str) -> list[str]:
    return sorted(
        p for p in fs.find(path) if p.lower().endswith((".parquet", ".pq"))
        and not os.path.basename(p).startswith(("_", "."))
    )


def _rows_per_chunk(
    chunks: int | None, storage_rows: int, n_rows: int, n_features: int, itemsize: int, target_rows: Any
) -> int:
    """Rows per Dask chunk as a whole multiple of the storage chunk's rows."""
    target = chunks if chunks is not None else target_rows(n_rows, n_features, itemsize)
    multiple = max(1, round(target / storage_rows))
    return int(min(multiple * storage_rows, max(n_rows, 1)))


# -- Zarr ------------------------------------------------------------------------------


def _open_zarr(
    url: str, fs: Any, path: str, key: str | None, storage_options: dict | None,
    chunks: int | None, target_rows: Any, check: Any, what: str,
) -> da.Array:
    import zarr

    is_url = "://" in url
    node = zarr.open(url if is_url else path, mode="r", storage_options=storage_options if is_url else None)
    if isinstance(node, zarr.Group):
        arrays = sorted(name for name, member in node.members(max_depth=None) if isinstance(member, zarr.Array))
        if key is None:
            raise InvalidSourceError(
                f"{url!r} is a Zarr group; pass key= to pick the array to fit. Arrays in "
                f"it: {arrays or 'none'}."
            )
        try:
            node = node[key]
        except KeyError:
            raise InvalidSourceError(
                f"Zarr group {url!r} has no array {key!r}; arrays in it: "
                f"{arrays or 'none'}. Pass one of them as key=."
            ) from None
        if not isinstance(node, zarr.Array):
            raise InvalidSourceError(
                f"key={key!r} names a group inside {url!r}, expected an array; arrays "
                f"in the store: {arrays or 'none'}."
            )
    elif key is not None:
        raise InvalidSourceError(
            f"{url!r} is a single Zarr array, so key={key!r} has nothing to pick. "
            "Drop key= (it picks an array inside a Zarr group)."
        )
    return zarr_array(
        node, chunks=chunks, target_rows=target_rows, check=check, what=what,
        location=(_canonical_url(fs, path), _endpoint(storage_options), key),
    )


def is_zarr_array(X: Any) -> bool:
    """Whether ``X`` is an opened ``zarr.Array`` (read lazily, never loaded whole)."""
    return type(X).__module__.split(".")[0] == "zarr" and hasattr(X, "chunks") and hasattr(X, "store")


def zarr_array(
    node: Any, *, chunks: int | None, target_rows: Any, check: Any, what: str, location: Any = None
) -> da.Array:
    """An opened Zarr array as a Dask array of whole stored chunks (or shards) of rows, all columns."""
    check(node.shape, what)
    n_rows, n_features = node.shape
    dtype = np.dtype(node.dtype)
    stored = node.shards or node.chunks
    rows = _rows_per_chunk(chunks, stored[0], n_rows, n_features, dtype.itemsize, target_rows)
    row_chunks = da.core.normalize_chunks((rows,), (n_rows,))[0]
    if location is None:
        location = (str(node.store), node.path)
    name = "zarr-" + tokenize(
        *location, node.metadata.zarr_format, node.shape, node.chunks, node.shards, str(dtype), row_chunks,
    )
    return da.from_zarr(node, chunks=(row_chunks, (n_features,)), name=name)


# -- Parquet ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ParquetRows:
    """Rows of a Parquet dataset, read a whole row group at a time (a lazy array for ``da.from_array``).

    ``groups`` are ``(file, row_group, first_row, n_rows)`` in dataset order.
    """

    fs: Any
    local: bool
    groups: tuple[tuple[str, int, int, int], ...]
    columns: tuple[str, ...]
    dtype: np.dtype
    shape: tuple[int, int]

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, key: Any) -> np.ndarray:
        return _index_rows(self._read, self.shape[0], key)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``, shape (stop - start, n_features)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = np.empty((stop - start, len(self.columns)), dtype=self.dtype)
        target = pa.float32() if self.dtype == np.float32 else pa.float64()
        wanted = [g for g in self.groups if g[2] < stop and g[2] + g[3] > start]
        by_file: dict[str, list[tuple[str, int, int, int]]] = {}
        for g in wanted:
            by_file.setdefault(g[0], []).append(g)
        for file, groups in by_file.items():
            source = file if self.local else self.fs.open(file, "rb")
            try:
                table = pq.ParquetFile(source).read_row_groups(
                    [g[1] for g in groups], columns=list(self.columns)
                )
            finally:
                if not self.local:
                    source.close()
            first = groups[0][2]
            lo, hi = max(start, first), min(stop, first + table.num_rows)
            for j, name in enumerate(self.columns):
                # Nulls become NaN, found by the first pass like any NaN.
                column = table.column(name).slice(lo - first, hi - lo).cast(target, safe=False)
                out[lo - start : hi - start, j] = column.to_numpy(zero_copy_only=False)
        return out


def _is_numeric(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)
    )


def _unreadable_parquet(url: str, exc: Exception) -> InvalidSourceError:
    return InvalidSourceError(
        f"{url!r} is not readable as Parquet ({exc}). Pass a valid Parquet file or a "
        "directory of them; rewrite damaged files."
    )


def _parquet_dataset(url: str, fs: Any, path: str) -> Any:
    """The ``pyarrow.dataset.Dataset`` of the Parquet file or directory at ``path``."""
    try:
        import pyarrow.dataset as pads
    except ImportError:
        raise InvalidSourceError(
            f"Reading the Parquet data {url!r} needs pyarrow, which is not installed. "
            "Install it: pip install 'dgmm[parquet]'."
        ) from None

    local = _is_local(fs)
    # The files the format was recognised by (other files in the directory are
    # not data), in pyarrow's own (lexicographic) order.
    files = _parquet_files(fs, path) if fs.isdir(path) else [path]
    try:
        return pads.dataset(files, filesystem=None if local else fs, format="parquet")
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise _unreadable_parquet(url, exc) from None


def _pandas_index_columns(schema: Any) -> list[str]:
    """The columns in which pandas stored a DataFrame's index, from the schema's b"pandas" metadata.

    ``df.to_parquet`` stores a non-range index as columns (``__index_level_0__``
    or the index's name) listed under ``"index_columns"``; a RangeIndex is a
    dict there (start, stop, step) with no column. A dataset's schema is its
    first file's, metadata included.
    """
    try:
        metadata = schema.pandas_metadata  # None without b"pandas" metadata
    except ValueError:  # not JSON: not pandas' metadata
        return []
    if not isinstance(metadata, dict):
        return []
    names = set(schema.names)
    return [c for c in metadata.get("index_columns") or () if isinstance(c, str) and c in names]


def _parquet_columns(schema: Any, columns: list[str] | None, url: str) -> list[str]:
    """The feature columns: ``columns`` (checked to exist and be numeric), else all but a pandas index.

    ``open_store`` and ``store_columns`` both select through here, so the
    feature names always match the columns read.
    """
    available = list(schema.names)
    index = _pandas_index_columns(schema)
    if columns is None:
        selected = [c for c in available if c not in index]
    else:
        if isinstance(columns, str):
            columns = [columns]
        selected = list(columns)
        missing = [c for c in selected if c not in available]
        if missing:
            raise InvalidSourceError(
                f"Column(s) {missing} not found in the Parquet data {url!r}; available "
                f"columns: {available}. Pass columns= from these."
            )
    bad = {c: str(schema.field(c).type) for c in selected if not _is_numeric(schema.field(c).type)}
    if bad:
        numeric = [c for c in available if c not in index and _is_numeric(schema.field(c).type)]
        raise InvalidDtypeError(
            f"Parquet column(s) {bad} of {url!r} are not numeric; expected integer, "
            f"floating or boolean columns. Pass columns= with the numeric features, e.g. "
            f"columns={numeric}."
        )
    return selected


def _open_parquet(
    url: str, fs: Any, path: str, columns: list[str] | None, storage_options: dict | None,
    chunks: int | None, target_rows: Any, check: Any, what: str,
) -> tuple[da.Array, list[str]]:
    local = _is_local(fs)
    dataset = _parquet_dataset(url, fs, path)
    groups: list[tuple[str, int, int, int]] = []
    n_rows = 0
    try:
        for fragment in dataset.get_fragments():
            for rg in fragment.row_groups:  # from the footers: no pass over the data
                if rg.num_rows:
                    groups.append((fragment.path, rg.id, n_rows, rg.num_rows))
                    n_rows += rg.num_rows
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise _unreadable_parquet(url, exc) from None
    schema = dataset.schema
    selected = _parquet_columns(schema, columns, url)
    if columns is None and (index := _pandas_index_columns(schema)):
        logger.info(
            "Parquet data %r: left out column(s) %s, a pandas DataFrame's stored index; "
            "pass columns= to read them as features.", url, index,
        )
    check((n_rows, len(selected)), what)
    dtypes = [np.dtype(schema.field(c).type.to_pandas_dtype()) for c in selected]
    dtype = np.dtype(np.float32) if all(d == np.float32 for d in dtypes) else np.dtype(np.float64)
    target = chunks if chunks is not None else target_rows(n_rows, len(selected), dtype.itemsize)
    # A chunk closes at the first row-group boundary at or past the target.
    row_chunks: list[int] = []
    current = 0
    for g in groups:
        current += g[3]
        if current >= target:
            row_chunks.append(current)
            current = 0
    if current:
        row_chunks.append(current)
    reader = _ParquetRows(fs, local, tuple(groups), tuple(selected), dtype, (n_rows, len(selected)))
    name = "parquet-" + tokenize(
        _canonical_url(fs, path), _endpoint(storage_options), selected,
        [(os.path.basename(g[0]), g[1], g[3]) for g in groups], str(schema), tuple(row_chunks),
    )
    x = da.from_array(
        reader, chunks=(tuple(row_chunks), (len(selected),)), name=name,
        meta=np.empty((0, 0), dtype=dtype), asarray=False,
    )
    return x, selected


# -- .npy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpyRows:
    """Rows of a C-ordered ``.npy`` file: memory-mapped locally, byte ranges remotely."""

    fs: Any
    local: bool
    path: str
    offset: int
    stored_dtype: np.dtype
    fortran_order: bool
    shape: tuple[int, int]

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return self.stored_dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return _index_rows(self._read, self.shape[0], key)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a fresh array, shape (stop - start, n_features)."""
        if self.local:
            mapped = np.load(self.path, mmap_mode="r")
            return np.array(mapped[start:stop])
        row_bytes = self.shape[1] * self.stored_dtype.itemsize
        with self.fs.open(self.path, "rb") as f:
            f.seek(self.offset + start * row_bytes)
            data = f.read((stop - start) * row_bytes)
        return np.frombuffer(data, dtype=self.stored_dtype).reshape(stop - start, self.shape[1]).copy()


def _open_npy(
    url: str, fs: Any, path: str, storage_options: dict | None,
    chunks: int | None, target_rows: Any, check: Any, what: str,
) -> da.Array:
    from numpy.lib import format as npy_format

    with fs.open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            read_header = (
                npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
        except ValueError as exc:
            raise InvalidSourceError(f"{url!r} is not a readable .npy file: {exc}.") from None
        offset = f.tell()
    if dtype.hasobject:
        raise InvalidDtypeError(
            f"{url!r} holds Python objects (dtype {dtype}); expected real numbers. "
            "Save a numeric array."
        )
    check(shape, what)
    local = _is_local(fs)
    if fortran_order and not local:
        raise InvalidSourceError(
            f"{url!r} is a Fortran-ordered .npy file, whose rows are not contiguous, so it "
            "cannot be read by row ranges from remote storage. Save it C-ordered "
            "(np.save(path, np.ascontiguousarray(X))) or store it as Zarr."
        )
    n_rows, n_features = shape
    rows = chunks if chunks is not None else target_rows(n_rows, n_features, dtype.itemsize)
    row_chunks = da.core.normalize_chunks((min(rows, n_rows),), (n_rows,))[0]
    reader = _NpyRows(fs, local, path, offset, dtype, fortran_order, shape)
    name = "npy-" + tokenize(
        _canonical_url(fs, path), _endpoint(storage_options), shape, str(dtype),
        fortran_order, offset, row_chunks,
    )
    return da.from_array(
        reader, chunks=(row_chunks, (n_features,)), name=name,
        meta=np.empty((0, 0), dtype=dtype), asarray=False,
    )


def _index_rows(read: Any, n_rows: int, key: Any) -> np.ndarray:
    """``array[key]`` for a reader of row ranges (Dask hands it row/column slices)."""
    key = key if isinstance(key, tuple) else (key,)
    rows, rest = key[0], key[1:]
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n_rows)
        if step > 0:
            block = read(start, max(start, stop))[::step]
        else:
            block = read(0, n_rows)[rows]
    else:
        index = np.asarray(rows)
        if index.size == 0:
            block = read(0, 0)[index]
        else:
            index = np.where(index < 0, index + n_rows, index)
            lo, hi = int(index.min()), int(index.max()) + 1
            block = read(lo, hi)[index - lo]
    return block[(slice(None), *rest)] if rest else block

