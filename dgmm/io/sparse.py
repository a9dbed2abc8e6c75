"""Sparse count matrices as row-chunked Dask arrays of ``scipy.sparse.csr_matrix`` chunks.

Three sources, one result: a Dask array of shape (n_rows, n_features) whose
chunks are whole rows and all columns, each a ``csr_matrix`` (``meta`` is an
empty ``csr_matrix`` of the stored dtype), so the multinomial kernels
(:mod:`dgmm.core.multinomial`) get CSR blocks and nothing is densified.

* :func:`from_scipy`: a CSR/CSC matrix (or sparse array) in memory; CSC is
  converted to CSR once, here.
* :func:`open_npz`: a file written by ``scipy.sparse.save_npz``. Its members
  are ``.npy`` files inside a zip: an uncompressed file
  (``save_npz(path, X, compressed=False)``) is read by every task as the byte
  ranges of its rows (locally or through fsspec for a URL); a compressed one
  (the default of ``save_npz``) cannot be read by ranges, so it is loaded
  once, whole, by the caller and chunked as in memory; a URL is opened with
  fsspec either way (logged).
* :func:`open_sparse_zarr`: AnnData's on-disk sparse layout in a Zarr v2/v3
  group (``data``, ``indices``, ``indptr``; attributes
  ``encoding-type: csr_matrix`` and ``shape``). Each task reads its slice of
  ``indptr`` and then the matching range of ``data`` and ``indices``; no task
  reads the whole store. Chunk boundaries are placed where ``indptr`` crosses
  a multiple of the stored ``data`` chunk (so each stored chunk is read by
  one task, plus at most the partial chunk a row straddles), found from
  ``indptr`` read once by the caller (8 bytes a row). Given ``chunks=`` rows,
  no ``indptr`` is read on the caller at all.

A dense AnnData ``X`` or ``obsm/X_pca`` is a plain Zarr array (attribute
``encoding-type: array``): :func:`is_sparse_zarr_group` says no and the dense
readers of :mod:`dgmm.io.stores` read it.

Names are deterministic: the location (canonical URL and key) or the content
(in memory), the stored metadata and the chunking.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
from dask.base import tokenize

from dgmm.errors import InvalidSourceError, SourceNotFoundError
from dgmm.io.fs import is_local, resolve

__all__ = [
    "DEFAULT_CHUNK_NNZ",
    "as_csr",
    "content_digest",
    "estimated_nbytes",
    "from_scipy",
    "is_npz_source",
    "is_sparse_zarr_group",
    "open_npz",
    "open_sparse_zarr",
    "sparse_zarr_group_array",
]

logger = logging.getLogger("dgmm")

#: Non-zeros per Dask chunk by default: ~100 MB of float32 data and int32
#: indices (ten million words of documents), the size of a dense chunk.
DEFAULT_CHUNK_NNZ = 12_500_000


# -- shared -----------------------------------------------------------------------------


def _csr_meta(dtype: np.dtype) -> sp.csr_matrix:
    return sp.csr_matrix((0, 0), dtype=dtype)


def _row_chunks_by_nnz(indptr: np.ndarray, target_nnz: int, align: int | None = None) -> tuple[int, ...]:
    """Rows per chunk so each holds about ``target_nnz`` non-zeros; with ``align``, each
    boundary is the first row whose ``indptr`` reaches a multiple of ``align``."""
    n_rows = indptr.shape[0] - 1
    total = int(indptr[-1])
    if n_rows <= 0:
        return (0,) if n_rows == 0 else ()
    step = max(1, int(target_nnz))
    if align:
        step = max(1, round(step / align)) * align
    boundaries = [0]
    for target in range(step, total, step):
        row = int(np.searchsorted(indptr, target + int(indptr[0]), side="left"))
        if boundaries[-1] < row < n_rows:
            boundaries.append(row)
    boundaries.append(n_rows)
    return tuple(int(b - a) for a, b in zip(boundaries[:-1], boundaries[1:]))


def _rows_chunks(chunks: int | tuple[int, ...], n_rows: int) -> tuple[int, ...]:
    return da.core.normalize_chunks((chunks,), (n_rows,))[0] if n_rows else (0,)


def _array_from_reader(name: str, reader: Any, row_chunks: tuple[int, ...], n_features: int, dtype: np.dtype) -> da.Array:
    """A Dask array whose chunk i is ``reader.rows(start_i, stop_i)``; the reader is one graph key."""
    reader_key = f"{name}-reader"
    graph: dict[Any, Any] = {reader_key: reader}
    start = 0
    for i, rows in enumerate(row_chunks):
        graph[(name, i, 0)] = (_read_rows, reader_key, start, start + rows)
        start += rows
    return da.Array(graph, name, (row_chunks, (n_features,)), meta=_csr_meta(dtype))


def _read_rows(reader: Any, start: int, stop: int) -> sp.csr_matrix:
    return reader.rows(start, stop)


def _canonical(url: str, storage_options: dict | None) -> tuple[Any, str, str]:
    """``(fs, path, canonical URL)`` for a path or fsspec URL."""
    try:
        location = resolve(url, storage_options)
    except (ImportError, ValueError) as exc:
        raise InvalidSourceError(
            f"Cannot open {url!r}: {exc}. Pass a local path or an fsspec URL (for s3:// "
            "URLs install dgmm[s3])."
        ) from None
    fs, path = location.fs, location.path
    if not fs.exists(path):
        raise SourceNotFoundError(
            f"No such file or directory: {url!r}. Expected a sparse matrix store (a .npz "
            "file from scipy.sparse.save_npz, or an AnnData Zarr store); check the path."
        )
    return fs, path, fs.unstrip_protocol(path.rstrip("/"))


# -- in memory ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _InMemoryCSR:
    matrix: sp.csr_matrix

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        return self.matrix[start:stop]

    def sizes(self) -> tuple[int, int, int]:
        """``(n_rows, nnz, bytes of an index)`` (for :func:`estimated_nbytes`)."""
        return self.matrix.shape[0], self.matrix.nnz, self.matrix.indices.dtype.itemsize


def as_csr(x: Any) -> sp.csr_matrix:
    """A scipy.sparse matrix or array as a ``csr_matrix`` in canonical form (sorted, no
    duplicates); ``x`` itself when it is one already (no copy)."""
    if not sp.issparse(x):
        raise InvalidSourceError(f"Expected a scipy.sparse matrix; got {type(x).__name__}.")
    csr = sp.csr_matrix(x) if x.format != "csr" or not isinstance(x, sp.csr_matrix) else x
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def content_digest(x: Any) -> str:
    """SHA-256 (hex) of a sparse matrix's content as CSR: shape, dtypes and the three arrays.

    What checkpoints recognise in-memory sparse input by, as
    :func:`dgmm.io.checkpoint.content_digest` does dense rows (a scattered
    array's name is random).
    """
    import hashlib

    from dgmm.io.checkpoint import content_digest as array_digest

    csr = as_csr(x)
    h = hashlib.sha256(f"csr|{csr.shape}|".encode())
    for part in (csr.data, csr.indices, csr.indptr):
        h.update(array_digest(part).encode())
    return h.hexdigest()


def from_scipy(x: Any, *, chunks: int | tuple[int, ...] | None = None, target_nnz: int = DEFAULT_CHUNK_NNZ) -> da.Array:
    """A scipy.sparse matrix or array (CSR, CSC, COO ...) as a row-chunked Dask array of CSR chunks.

    Parameters
    ----------
    x : scipy.sparse matrix or array of shape (n_rows, n_features)
    chunks : int or tuple of int, optional
        Rows per chunk; by default about ``target_nnz`` non-zeros per chunk.

    Returns
    -------
    dask.array.Array
        Chunks are ``csr_matrix``; the name hashes the matrix's content.
    """
    if not sp.issparse(x):
        raise InvalidSourceError(f"from_scipy expects a scipy.sparse matrix; got {type(x).__name__}.")
    csr = as_csr(x)
    n_rows, n_features = csr.shape
    row_chunks = _rows_chunks(chunks, n_rows) if chunks is not None else _row_chunks_by_nnz(csr.indptr, target_nnz)
    name = "csr-" + tokenize(csr.data, csr.indices, csr.indptr, csr.shape, str(csr.dtype), row_chunks)
    return _array_from_reader(name, _InMemoryCSR(csr), row_chunks, n_features, csr.dtype)


# -- .npz --------------------------------------------------------------------------------


def is_npz_source(source: Any) -> bool:
    """Whether ``source`` is a path or URL ending in ``.npz``."""
    return isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".npz")


@dataclass(frozen=True, eq=False)
class _NpzMember:
    """Where an uncompressed ``.npy`` member's values start in the zip, and their dtype."""

    offset: int
    dtype: np.dtype
    size: int


@dataclass(frozen=True, eq=False)
class _NpzCSR:
    """Rows of an uncompressed ``save_npz`` file, read as byte ranges of its members."""

    url: str
    storage_options: dict | None
    indptr: _NpzMember
    indices: _NpzMember
    data: _NpzMember
    shape: tuple[int, int]

    def _read(self, f: Any, member: _NpzMember, start: int, stop: int) -> np.ndarray:
        f.seek(member.offset + start * member.dtype.itemsize)
        raw = f.read((stop - start) * member.dtype.itemsize)
        return np.frombuffer(raw, dtype=member.dtype).copy()

    def sizes(self) -> tuple[int, int, int]:
        return self.shape[0], self.data.size, self.indices.dtype.itemsize

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        import fsspec

        with fsspec.open(self.url, "rb", **(self.storage_options or {})) as f:
            indptr = self._read(f, self.indptr, start, stop + 1)
            lo, hi = int(indptr[0]), int(indptr[-1])
            indices = self._read(f, self.indices, lo, hi)
            data = self._read(f, self.data, lo, hi)
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, self.shape[1]))


def _npz_member(f: Any, zf: zipfile.ZipFile, name: str) -> _NpzMember:
    """The data offset of an uncompressed member ``name`` (zip local header + .npy header)."""
    from numpy.lib import format as npy_format

    info = zf.getinfo(name)
    f.seek(info.header_offset)
    local = f.read(30)
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    f.seek(start)
    version = npy_format.read_magic(f)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(f)
    return _NpzMember(f.tell(), np.dtype(dtype), int(np.prod(shape)))


def open_npz(
    source: str | os.PathLike,
    *,
    chunks: int | tuple[int, ...] | None = None,
    storage_options: dict | None = None,
    target_nnz: int = DEFAULT_CHUNK_NNZ,
) -> da.Array:
    """A ``scipy.sparse.save_npz`` file as a row-chunked Dask array of CSR chunks.

    Uncompressed CSR files are read by row ranges in every task; compressed
    files (``save_npz``'s default) and CSC/COO files cannot be, and are loaded
    once, whole, here (logged), then chunked as :func:`from_scipy`. Save with
    ``compressed=False`` to read large files lazily.
    """
    url = os.fspath(source)
    fs, path, canonical = _canonical(url, storage_options)
    with fs.open(path, "rb") as f:
        try:
            zf = zipfile.ZipFile(f)
            names = set(zf.namelist())
            fmt = np.load(io.BytesIO(zf.read("format.npy")), allow_pickle=False).item()
            shape = tuple(int(s) for s in np.load(io.BytesIO(zf.read("shape.npy")), allow_pickle=False))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise InvalidSourceError(
                f"{url!r} is not a sparse matrix written by scipy.sparse.save_npz ({exc}). "
                "Write it with scipy.sparse.save_npz(path, X)."
            ) from None
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        lazy = (
            fmt == "csr"
            and {"data.npy", "indices.npy", "indptr.npy"} <= names
            and all(zf.getinfo(m).compress_type == zipfile.ZIP_STORED for m in ("data.npy", "indices.npy", "indptr.npy"))
        )
        if lazy:
            members = {m: _npz_member(f, zf, f"{m}.npy") for m in ("indptr", "indices", "data")}
            indptr = None
            if chunks is None:
                f.seek(members["indptr"].offset)
                indptr = np.frombuffer(f.read(members["indptr"].size * members["indptr"].dtype.itemsize), dtype=members["indptr"].dtype)
    if not lazy:
        logger.info(
            "%s: a %s .npz file %s cannot be read by row ranges; loading it whole once "
            "(save it with scipy.sparse.save_npz(path, X.tocsr(), compressed=False) to read it lazily).",
            url, fmt, "with compressed members" if fmt == "csr" else "(not CSR)",
        )
        with fs.open(path, "rb") as f:
            return from_scipy(sp.load_npz(f), chunks=chunks, target_nnz=target_nnz)
    n_rows, n_features = shape
    row_chunks = _rows_chunks(chunks, n_rows) if chunks is not None else _row_chunks_by_nnz(indptr, target_nnz)
    reader = _NpzCSR(canonical if is_local(fs) else url, storage_options, members["indptr"], members["indices"], members["data"], shape)
    name = "npz-" + tokenize(
        canonical, shape, [(m.offset, str(m.dtype), m.size) for m in members.values()], row_chunks,
    )
    return _array_from_reader(name, reader, row_chunks, n_features, members["data"].dtype)


# -- AnnData's sparse layout in Zarr -------------------------------------------------------


def is_sparse_zarr_group(node: Any) -> bool:
    """Whether an opened Zarr node is a sparse matrix group in AnnData's layout (CSR or CSC)."""
    import zarr

    return isinstance(node, zarr.Group) and node.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix")


@dataclass(frozen=True, eq=False)
class _ZarrCSR:
    """Rows of an AnnData CSR group: the three arrays, opened (they pickle as store + path)."""

    indptr: Any
    indices: Any
    data: Any
    n_features: int

    def sizes(self) -> tuple[int, int, int]:
        return self.indptr.shape[0] - 1, self.data.shape[0], np.dtype(self.indices.dtype).itemsize

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        indptr = np.asarray(self.indptr[start : stop + 1])
        lo, hi = int(indptr[0]), int(indptr[-1])
        data = np.asarray(self.data[lo:hi])
        indices = np.asarray(self.indices[lo:hi])
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, self.n_features))


def sparse_zarr_group_array(
    group: Any,
    *,
    chunks: int | tuple[int, ...] | None = None,
    target_nnz: int = DEFAULT_CHUNK_NNZ,
    location: Any = None,
) -> da.Array:
    """An opened AnnData CSR group as a row-chunked Dask array of CSR chunks.

    ``location`` (canonical URL, endpoint, key) names the data; by default the
    group's store and path.
    """
    attrs = dict(group.attrs)
    where = location[0] if location else str(group.store)
    if attrs.get("encoding-type") == "csc_matrix":
        raise InvalidSourceError(
            f"The sparse matrix at {where!r} (key {group.path!r}) is stored by columns (CSC), "
            "which cannot be read by rows without reading all of it. Rewrite it by rows, e.g. "
            "adata.X = adata.X.tocsr(); adata.write_zarr(path)."
        )
    missing = [m for m in ("data", "indices", "indptr") if m not in group]
    if attrs.get("encoding-type") != "csr_matrix" or "shape" not in attrs or missing:
        raise InvalidSourceError(
            f"The Zarr group {group.path!r} of {where!r} is not a sparse matrix in AnnData's layout: "
            f"expected arrays data, indices, indptr and attributes encoding-type='csr_matrix' "
            f"and shape; got attributes {sorted(attrs)} and missing arrays {missing}. Pass the "
            "key of the matrix (e.g. key='X' or key='layers/counts')."
        )
    n_rows, n_features = (int(s) for s in attrs["shape"])
    indptr, indices, data = group["indptr"], group["indices"], group["data"]
    if indptr.shape[0] != n_rows + 1 or indices.shape != data.shape:
        raise InvalidSourceError(
            f"The sparse matrix {group.path!r} of {where!r} is inconsistent: shape {attrs['shape']}, "
            f"indptr of length {indptr.shape[0]} (expected {n_rows + 1}), data {data.shape} and "
            f"indices {indices.shape} (expected equal). Rewrite the store."
        )
    stored = data.shards or data.chunks
    if chunks is not None:
        row_chunks = _rows_chunks(chunks, n_rows)
    else:
        # indptr once on the caller (8 bytes a row) places the boundaries on
        # multiples of the stored data chunk, so no stored chunk is read by two
        # tasks except the one a row straddles.
        row_chunks = _row_chunks_by_nnz(np.asarray(indptr[:]), target_nnz, align=stored[0])
    if location is None:
        location = (str(group.store), group.path)
    name = "zarr-csr-" + tokenize(
        *location, group.metadata.zarr_format, attrs["shape"],
        [(a.shape, a.chunks, a.shards, str(a.dtype)) for a in (indptr, indices, data)], row_chunks,
    )
    return _array_from_reader(name, _ZarrCSR(indptr, indices, data, n_features), row_chunks, n_features, np.dtype(data.dtype))


def open_sparse_zarr(
    source: str | os.PathLike,
    *,
    key: str | None = "X",
    chunks: int | tuple[int, ...] | None = None,
    storage_options: dict | None = None,
    target_nnz: int = DEFAULT_CHUNK_NNZ,
) -> da.Array:
    """The sparse matrix ``key`` of a Zarr store in AnnData's layout (``anndata.write_zarr``).

    Parameters
    ----------
    source : str or path
        A local path or fsspec URL of a Zarr v2/v3 store.
    key : str, default "X"
        The group holding the matrix (``"X"``, ``"layers/counts"``, ``"raw/X"``);
        None when ``source`` is the group itself.
    chunks : int, optional
        Rows per chunk; by default about ``target_nnz`` non-zeros per chunk,
        aligned to the stored ``data`` chunks.

    Returns
    -------
    dask.array.Array of shape (n_rows, n_features), chunks ``csr_matrix``.
    """
    import zarr

    url = os.fspath(source)
    fs, path, canonical = _canonical(url, storage_options)
    local = is_local(fs)
    root = zarr.open(path if local else url, mode="r", storage_options=None if local else storage_options)
    node = root
    if key is not None:
        if not isinstance(root, zarr.Group) or key not in root:
            raise InvalidSourceError(
                f"{url!r} has no {key!r}; expected an AnnData store (written by "
                "AnnData.write_zarr) or a group with data, indices, indptr. Pass the key of "
                "the sparse matrix (key='X', 'layers/<name>', 'raw/X')."
            )
        node = root[key]
    if not is_sparse_zarr_group(node):
        encoding = dict(node.attrs).get("encoding-type")
        raise InvalidSourceError(
            f"{key!r} of {url!r} is not a sparse matrix (encoding-type {encoding!r}, a Zarr "
            f"{'group' if isinstance(node, zarr.Group) else 'array'}); a dense array is read by "
            "dgmm's dense Zarr reader (open_dataset(source, key=...))."
        )
    endpoint = (storage_options or {}).get("endpoint_url") or ((storage_options or {}).get("client_kwargs") or {}).get("endpoint_url")
    return sparse_zarr_group_array(node, chunks=chunks, target_nnz=target_nnz, location=(canonical, endpoint, key))


# -- sizes -------------------------------------------------------------------------------


def estimated_nbytes(x: da.Array) -> int | None:
    """Bytes of a sparse Dask array from this module once read into memory (values in
    ``x.dtype``, indices, ``indptr``), from the source's non-zeros; None for another array.

    ``x.nbytes`` is the dense size (rows x features); this is what persisting
    the CSR chunks costs. The count comes from metadata already read (the
    stored ``data`` array's length, the ``.npz`` member's) and reads nothing;
    a selection of rows is counted at its share of the rows.
    """
    if not isinstance(getattr(x, "_meta", None), sp.spmatrix):
        return None
    readers = [v for v in dict(x.dask).values() if isinstance(v, (_InMemoryCSR, _NpzCSR, _ZarrCSR))]
    if len(readers) != 1:
        return None
    n_rows, nnz, index_bytes = readers[0].sizes()
    share = x.shape[0] / n_rows if n_rows else 0.0
    return int(share * (nnz * (np.dtype(x.dtype).itemsize + index_bytes) + 8 * (n_rows + 1)))
