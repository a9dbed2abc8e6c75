"""Stored datasets described by one read of their metadata: Zarr, Parquet and ``.npy``.

A source is a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``,
``memory://`` ...). :func:`open_store` reads metadata only, once: the Zarr
array metadata (the same ``zarr.json`` read tells the format, the shape, the
dtype and the chunks), each Parquet footer once, the ``.npy`` header. The
result, a :class:`StoredArray`, keeps that opened reader, so rechunking it
(:meth:`StoredArray.to_dask`) reads nothing again. Row counts never cost a
pass over the data.

Every Dask chunk is a whole number of storage chunks (Zarr chunks or shards,
Parquet row groups), so each stored chunk is read by exactly one task per pass,
and every chunk holds all the columns. The workers read their own chunks.
Arrays get a deterministic ``.name`` from the store's URL, the key or columns,
the stored metadata and the chunking, so checkpoints can recognise the same
data by it.

Cost of recognising a source, in metadata requests: a Zarr v3 array, one
(its ``zarr.json``, read by zarr itself; an array inside a group, one:
``key/zarr.json``); a Zarr v2 array, four (zarr looks for the ``zarr.json`` it
lacks as an array, then as a group, before ``.zarray`` and ``.zattrs``); a ``.parquet`` / ``.pq`` path, one ``info``,
one listing when it is a directory, and one footer per file; a ``.npy``
file, its header. Other paths are tried as Zarr first, then looked at.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask.base import tokenize

from dgmm.errors import InvalidDtypeError, InvalidSourceError, SourceNotFoundError
from dgmm.io.fs import is_local as _is_local
from dgmm.io.fs import resolve

__all__ = ["StoredArray", "is_store_source", "is_zarr_array", "open_store", "stored_zarr"]

logger = logging.getLogger("dgmm")

SUPPORTED = (
    "a Zarr v2/v3 array or group (a directory or URL holding zarr.json, .zarray or "
    ".zgroup), a Parquet file or directory of Parquet files (*.parquet, *.pq), or "
    "a NumPy .npy file"
)

#: "csr": a sparse matrix in AnnData's Zarr layout (:mod:`dgmm.io.sparse`).
StoreKind = Literal["zarr", "parquet", "npy", "csr"]


def is_store_source(source: Any) -> bool:
    """Whether ``source`` names stored data (a path or URL) rather than holding it."""
    return isinstance(source, (str, os.PathLike))


@dataclass(frozen=True)
class StoredArray:
    """A stored 2-D dataset as read from its metadata, with the reader its chunks are read by.

    Attributes
    ----------
    url : str
        The source as given (for messages).
    kind : {"zarr", "parquet", "npy"}
    shape : tuple of int
        As stored; not yet checked to be 2-D (:func:`open_store` callers check it).
    dtype : numpy.dtype
        What ``reader`` returns: the stored dtype (Parquet: float32 when every
        selected column is, else float64).
    columns : tuple of str or None
        A Parquet dataset's selected columns (the feature names); None otherwise.
    storage_rows : tuple of int
        Rows of the storage units a task must never split, in order: one Zarr
        chunk's (or shard's) rows, the Parquet row groups', nothing for ``.npy``.
    reader : zarr.Array, or a lazy row reader
        Sliced by ``da.from_array`` / ``da.from_zarr`` in the tasks.
    identity : tuple
        Location, endpoint, key or columns and the stored metadata: with the
        chunking, the array's deterministic name.
    """

    url: str
    kind: StoreKind
    shape: tuple[int, ...]
    dtype: np.dtype
    columns: tuple[str, ...] | None
    storage_rows: tuple[int, ...]
    reader: Any
    identity: tuple[Any, ...]

    def row_chunks(self, rows: int) -> tuple[int, ...]:
        """Row chunks of about ``rows`` rows that split no storage unit (shape must be 2-D)."""
        n_rows = int(self.shape[0])
        if self.kind == "parquet":
            # A chunk closes at the first row-group boundary at or past ``rows``.
            chunks: list[int] = []
            current = 0
            for size in self.storage_rows:
                current += size
                if current >= rows:
                    chunks.append(current)
                    current = 0
            if current:
                chunks.append(current)
            return tuple(chunks)
        if self.kind == "zarr":
            stored = self.storage_rows[0]
            rows = min(max(1, round(rows / stored)) * stored, max(n_rows, 1))
        return tuple(da.core.normalize_chunks((min(rows, n_rows),), (n_rows,))[0])

    def to_dask(self, row_chunks: tuple[int, ...] | None) -> da.Array:
        """The data as a Dask array of ``row_chunks`` rows (from :meth:`row_chunks`), all columns.

        Reads nothing: the tasks read their own rows through ``reader``. A
        "csr" store has ``csr_matrix`` chunks; ``row_chunks=None`` places them
        by non-zeros along the stored chunks (reading ``indptr`` once).
        """
        if self.kind == "csr":
            from dgmm.io.sparse import sparse_zarr_group_array

            return sparse_zarr_group_array(self.reader, chunks=row_chunks, location=self.identity)
        name = f"{self.kind}-" + tokenize(*self.identity, tuple(row_chunks))
        chunks = (tuple(row_chunks), (int(self.shape[1]),))
        if self.kind == "zarr":
            return da.from_zarr(self.reader, chunks=chunks, name=name)
        return da.from_array(
            self.reader, chunks=chunks, name=name, meta=np.empty((0, 0), dtype=self.dtype), asarray=False,
        )


def open_store(
    source: str | os.PathLike,
    *,
    key: str | None = None,
    columns: list[str] | None = None,
    storage_options: dict | None = None,
) -> StoredArray:
    """The dataset at ``source`` from one read of its metadata; its data is not read.

    The format is recognised by the same read that describes the data (see
    the module's docstring for the requests each format costs).

    Parameters
    ----------
    source : str or os.PathLike
        Local path or fsspec URL of a Zarr array or group, a Parquet file or
        directory, or a ``.npy`` file.
    key : str, optional
        The array inside a Zarr group.
    columns : list of str, optional
        Parquet columns to read (checked to exist and be numeric).
    storage_options : dict, optional
        fsspec options.

    Raises
    ------
    dgmm.errors.SourceNotFoundError
        Nothing at ``source``.
    dgmm.errors.InvalidSourceError, dgmm.errors.InvalidDtypeError
        An unsupported or unreadable source, a wrong ``key`` or ``columns``.
    """
    url = os.fspath(source)
    fs, path = _filesystem(url, storage_options)
    lower = path.rstrip("/").lower()
    files: list[str] | None = None
    kind: str
    if lower.endswith(".npy"):
        kind = "npy"
    elif lower.endswith((".parquet", ".pq")):
        kind = "parquet"
    else:
        node = _try_zarr(url, fs, path, key, storage_options)
        if node is not None:
            _no_selection(url, "zarr", None, columns)
            return _zarr_node(url, fs, path, node, key, storage_options)
        info = _info(fs, path, url)
        # One listing of a directory serves recognising and reading it.
        listed = _parquet_files(fs, path) if info.get("type") == "directory" else None
        kind = _recognise(fs, path, url, listed)
        files = [path] if listed is None else listed
    if kind == "parquet" and files is None:
        info = _info(fs, path, url)
        files = _parquet_files(fs, path) if info.get("type") == "directory" else [path]
    _no_selection(url, kind, key, columns)
    if kind == "parquet":
        return _open_parquet(url, fs, path, files, columns, storage_options)
    return _open_npy(url, fs, path, storage_options)


def _no_selection(url: str, kind: str, key: str | None, columns: list[str] | None) -> None:
    """Refuse ``key`` outside Zarr and ``columns`` outside Parquet."""
    if columns is not None and kind != "parquet":
        where = "Zarr store" if kind == "zarr" else ".npy file"
        remedy = (
            "Select Zarr features after opening, e.g. open_dataset(...)[:, [0, 2]]."
            if kind == "zarr" else "Drop columns=."
        )
        raise InvalidSourceError(
            f"columns={list(columns)!r} was given for the {where} {url!r}; columns "
            f"select Parquet columns or DataFrame columns only. {remedy}"
        )
    if key is not None and kind != "zarr":
        raise InvalidSourceError(
            f"key={key!r} was given for the {kind} source {url!r}; key picks an array "
            "inside a Zarr group only. Drop key=."
        )


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


def _info(fs: Any, path: str, url: str) -> dict[str, Any]:
    """``fs.info(path)``: one request telling whether ``path`` is a file or a directory."""
    try:
        return fs.info(path)
    except FileNotFoundError:
        raise SourceNotFoundError(_missing_message(fs, path, url)) from None


def _recognise(fs: Any, path: str, url: str, files: list[str] | None) -> str:
    """``"parquet"`` or ``"npy"`` for a source that is not Zarr; typed errors otherwise.

    ``files``: the Parquet files of a directory, None for a file.
    """
    if files is not None:
        if files:
            return "parquet"
        raise InvalidSourceError(
            f"{url!r} is a directory that is neither a Zarr store (no zarr.json, .zarray "
            "or .zgroup) nor a directory of Parquet files (no *.parquet or *.pq file). "
            f"Supported sources: {SUPPORTED}."
        )
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


# -- Zarr ------------------------------------------------------------------------------


def _zarr_open(url: str, path: str, at: str | None, storage_options: dict | None) -> Any:
    """The Zarr node at ``at`` (None: the root) of the store, or None when there is none.

    Zarr v3 first: its ``zarr.json`` is one read that names the node type, the
    shape, the dtype and the chunks; v2 (``.zarray`` + ``.zattrs``) only when
    that read found nothing.
    """
    import zarr
    from zarr.errors import NodeNotFoundError

    is_url = "://" in url
    for zarr_format in (3, 2):
        try:
            return zarr.open(
                url if is_url else path, mode="r", path=at or "", zarr_format=zarr_format,
                storage_options=storage_options if is_url else None,
            )
        except (NodeNotFoundError, FileNotFoundError, NotADirectoryError):
            continue
    return None


def _array_names(group: Any) -> list[str] | str:
    """Every array in a Zarr group, for messages (reads the group's listing)."""
    import zarr

    names = sorted(name for name, member in group.members(max_depth=None) if isinstance(member, zarr.Array))
    return names or "none"


def _try_zarr(url: str, fs: Any, path: str, key: str | None, storage_options: dict | None) -> Any:
    """The Zarr array at ``url`` (``key`` inside a group), None when ``url`` holds no Zarr node.

    The array is opened directly (one metadata read); the root is read only
    to explain why there is no array at ``key``.
    """
    import zarr

    node = _zarr_open(url, path, key, storage_options)
    if isinstance(node, zarr.Array) or _is_sparse_group(node):
        return node
    if node is None and key is None:
        return None
    root = node if key is None else _zarr_open(url, path, None, storage_options)
    if root is None:
        return None  # not Zarr at all: the caller says what it is
    if isinstance(root, zarr.Array):
        raise InvalidSourceError(
            f"{url!r} is a single Zarr array, so key={key!r} has nothing to pick. "
            "Drop key= (it picks an array inside a Zarr group)."
        )
    if key is None:
        raise InvalidSourceError(
            f"{url!r} is a Zarr group; pass key= to pick the array to fit. Arrays in "
            f"it: {_array_names(root)}."
        )
    if node is None:
        raise InvalidSourceError(
            f"Zarr group {url!r} has no array {key!r}; arrays in it: "
            f"{_array_names(root)}. Pass one of them as key=."
        )
    raise InvalidSourceError(
        f"key={key!r} names a group inside {url!r}, expected an array; arrays "
        f"in the store: {_array_names(root)}."
    )


def _zarr_node(
    url: str, fs: Any, path: str, node: Any, key: str | None, storage_options: dict | None
) -> StoredArray:
    location = (_canonical_url(fs, path), _endpoint(storage_options), key)
    if _is_sparse_group(node):
        return _stored_sparse(node, url, location)
    return stored_zarr(node, url=url, location=location)


def _is_sparse_group(node: Any) -> bool:
    """A Zarr group holding a sparse matrix in AnnData's layout (``encoding-type`` csr/csc)."""
    from dgmm.io.sparse import is_sparse_zarr_group

    return node is not None and is_sparse_zarr_group(node)


def _stored_sparse(group: Any, url: str, location: tuple[Any, ...]) -> StoredArray:
    """An AnnData sparse group as a "csr" :class:`StoredArray` (its attributes are already read)."""
    attrs = group.attrs
    shape = tuple(int(n) for n in attrs.get("shape", ()))
    data = group["data"] if "data" in group else None
    dtype = np.dtype(data.dtype) if data is not None else np.dtype(np.float64)
    return StoredArray(
        url=url, kind="csr", shape=shape, dtype=dtype, columns=None, storage_rows=(1,),
        reader=group, identity=location,
    )


def is_zarr_array(X: Any) -> bool:
    """Whether ``X`` is an opened ``zarr.Array`` (read lazily, never loaded whole)."""
    return type(X).__module__.split(".")[0] == "zarr" and hasattr(X, "chunks") and hasattr(X, "store")


def stored_zarr(node: Any, *, url: str | None = None, location: tuple[Any, ...] | None = None) -> StoredArray:
    """An opened ``zarr.Array`` as a :class:`StoredArray` (its metadata is already in ``node``).

    Dask chunks are whole stored chunks (or shards) of rows, all columns.
    """
    dtype = np.dtype(node.dtype)
    stored = node.shards or node.chunks
    if location is None:
        location = (str(node.store), node.path)
    return StoredArray(
        url=url if url is not None else f"{node.store}/{node.path}".rstrip("/"),
        kind="zarr",
        shape=tuple(int(n) for n in node.shape),
        dtype=dtype,
        columns=None,
        storage_rows=(int(stored[0]),) if stored else (1,),
        reader=node,
        identity=(*location, node.metadata.zarr_format, node.shape, node.chunks, node.shards, str(dtype)),
    )


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


def _parquet_footers(url: str, fs: Any, files: list[str]) -> list[Any]:
    """The ``FileMetaData`` of every file: each footer read once, no data page."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidSourceError(
            f"Reading the Parquet data {url!r} needs pyarrow, which is not installed. "
            "Install it: pip install 'dgmm[parquet]'."
        ) from None

    local = _is_local(fs)
    footers = []
    for file in files:
        try:
            if local:
                footers.append(pq.read_metadata(file))
            else:
                with fs.open(file, "rb") as f:
                    footers.append(pq.read_metadata(f))
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise _unreadable_parquet(url, exc) from None
    return footers


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
    url: str, fs: Any, path: str, files: list[str], columns: list[str] | None,
    storage_options: dict | None,
) -> StoredArray:
    """``files``: the data files (a directory's other files are not data), sorted, as pyarrow orders them."""
    if not files:
        raise InvalidSourceError(
            f"{url!r} is a directory without Parquet files (no *.parquet or *.pq file). "
            f"Supported sources: {SUPPORTED}."
        )
    footers = _parquet_footers(url, fs, files)
    groups: list[tuple[str, int, int, int]] = []
    n_rows = 0
    for file, footer in zip(files, footers):
        for i in range(footer.num_row_groups):
            rows = footer.row_group(i).num_rows
            if rows:
                groups.append((file, i, n_rows, rows))
                n_rows += rows
    # A dataset's schema is its first file's, pandas metadata included.
    schema = footers[0].schema.to_arrow_schema()
    selected = _parquet_columns(schema, columns, url)
    if columns is None and (index := _pandas_index_columns(schema)):
        logger.info(
            "Parquet data %r: left out column(s) %s, a pandas DataFrame's stored index; "
            "pass columns= to read them as features.", url, index,
        )
    dtypes = [np.dtype(schema.field(c).type.to_pandas_dtype()) for c in selected]
    dtype = np.dtype(np.float32) if dtypes and all(d == np.float32 for d in dtypes) else np.dtype(np.float64)
    shape = (n_rows, len(selected))
    return StoredArray(
        url=url,
        kind="parquet",
        shape=shape,
        dtype=dtype,
        columns=tuple(selected),
        storage_rows=tuple(g[3] for g in groups),
        reader=_ParquetRows(fs, _is_local(fs), tuple(groups), tuple(selected), dtype, shape),
        identity=(
            _canonical_url(fs, path), _endpoint(storage_options), selected,
            [(os.path.basename(g[0]), g[1], g[3]) for g in groups], str(schema),
        ),
    )


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


def _open_npy(url: str, fs: Any, path: str, storage_options: dict | None) -> StoredArray:
    from numpy.lib import format as npy_format

    try:
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise SourceNotFoundError(_missing_message(fs, path, url)) from None
    with f:
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
    local = _is_local(fs)
    if fortran_order and not local and len(shape) == 2:
        raise InvalidSourceError(
            f"{url!r} is a Fortran-ordered .npy file, whose rows are not contiguous, so it "
            "cannot be read by row ranges from remote storage. Save it C-ordered "
            "(np.save(path, np.ascontiguousarray(X))) or store it as Zarr."
        )
    shape = tuple(int(n) for n in shape)
    return StoredArray(
        url=url,
        kind="npy",
        shape=shape,
        dtype=np.dtype(dtype),
        columns=None,
        storage_rows=(),
        reader=_NpyRows(fs, local, path, offset, dtype, fortran_order, shape),
        identity=(
            _canonical_url(fs, path), _endpoint(storage_options), shape, str(dtype), fortran_order, offset,
        ),
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

