"""dgmm.io.sparse: sparse sources as row-chunked Dask arrays of CSR chunks, read
from stores written by scipy and by the anndata package itself."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from dgmm.core import multinomial as mn
from dgmm.errors import InvalidSourceError, SourceNotFoundError
from dgmm.io import sparse as sio
from dgmm.io.sources import open_data

anndata = pytest.importorskip("anndata")

N_ROWS, N_FEATURES, STORED_CHUNK = 3000, 400, 5000


@pytest.fixture(autouse=True)
def _anndata_quiet():
    # anndata's own notices about its settings API and its default Zarr format
    # (the v2 stores are written on purpose) are not dgmm's to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        yield


@pytest.fixture
def counts(rng) -> sp.csr_matrix:
    x = sp.random(N_ROWS, N_FEATURES, density=0.05, format="csr", dtype=np.float32, random_state=np.random.RandomState(0))
    x.data = np.ceil(x.data * 5).astype(np.float32)
    empty = np.zeros(N_ROWS)
    empty[::97] = 1  # some empty documents
    x = sp.diags(1 - empty) @ x
    x.eliminate_zeros()
    return sp.csr_matrix(x, dtype=np.float32)


def write_anndata(path, x, zarr_format: int, *, small_chunks: bool) -> str:
    """A store written by anndata: a whole AnnData (write_zarr), or anndata's element
    writer with small stored chunks so a matrix spans many of them."""
    path = str(path)
    if small_chunks:
        group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
        anndata.io.write_elem(group, "X", x, dataset_kwargs={"chunks": (STORED_CHUNK,)})
    else:
        previous = anndata.settings.zarr_write_format
        anndata.settings.zarr_write_format = zarr_format
        try:
            adata = anndata.AnnData(X=x)
            adata.obsm["X_pca"] = np.arange(N_ROWS * 4, dtype=np.float64).reshape(N_ROWS, 4)
            with warnings.catch_warnings():
                # anndata consolidates the metadata of the stores it writes.
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                adata.write_zarr(path)
        finally:
            anndata.settings.zarr_write_format = previous
    return path


@pytest.fixture(params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def zarr_format(request) -> int:
    return request.param


def assert_csr_chunks(x, expected: sp.csr_matrix) -> None:
    assert isinstance(x._meta, sp.csr_matrix)
    assert x.shape == expected.shape and x.chunks[1] == (expected.shape[1],)
    start = 0
    for i, rows in enumerate(x.chunks[0]):
        block = x.blocks[i].compute()
        assert isinstance(block, sp.csr_matrix) and block.shape == (rows, expected.shape[1])
        assert (block != expected[start : start + rows]).nnz == 0
        start += rows
    assert start == expected.shape[0]


@pytest.mark.parametrize("small_chunks", [False, True], ids=["write_zarr", "write_elem-small-chunks"])
def test_anndata_csr_group_reads_as_csr_chunks(tmp_path, counts, zarr_format, small_chunks):
    path = write_anndata(tmp_path / "cells.zarr", counts, zarr_format, small_chunks=small_chunks)
    x = sio.open_sparse_zarr(path, key="X", target_nnz=12_000)
    # write_zarr stores this small matrix's data as one chunk: one Dask chunk.
    assert x.dtype == np.float32 and (len(x.chunks[0]) > 1) == small_chunks
    assert_csr_chunks(x, counts)
    assert_csr_chunks(sio.open_sparse_zarr(path, key="X", chunks=700), counts)
    # The same store opened again has the same name; other chunking, another.
    assert sio.open_sparse_zarr(path, key="X", target_nnz=12_000).name == x.name
    assert sio.open_sparse_zarr(path, key="X", chunks=500).name != x.name


def test_chunk_boundaries_follow_the_stored_data_chunks(tmp_path, counts, zarr_format):
    path = write_anndata(tmp_path / "cells.zarr", counts, zarr_format, small_chunks=True)
    x = sio.open_sparse_zarr(path, key="X", target_nnz=12_000)
    boundaries = np.cumsum(x.chunks[0])[:-1]
    first_nnz = counts.indptr[boundaries]
    # Each chunk starts at the first row reaching a multiple of the stored chunk
    # (10,000 non-zeros = two stored chunks, the multiple nearest to 12,000).
    assert np.all(first_nnz % (2 * STORED_CHUNK) < np.diff(counts.indptr).max())
    assert np.all(counts.indptr[boundaries - 1] < (first_nnz // (2 * STORED_CHUNK)) * 2 * STORED_CHUNK + 1)


def test_a_chunk_reads_only_its_own_stored_chunks(tmp_path, counts, zarr_format):
    path = write_anndata(tmp_path / "cells.zarr", counts, zarr_format, small_chunks=True)
    x = sio.open_sparse_zarr(path, key="X", chunks=200)
    end = int(counts.indptr[200])
    # Delete every stored data/indices chunk past the ones holding rows 0-199:
    # reading chunk 0 must still work, reading the last one must not.
    for array in ("data", "indices"):
        folder = os.path.join(path, "X", array, *(["c"] if zarr_format == 3 else []))
        for name in os.listdir(folder):
            if name.isdigit() and int(name) > end // STORED_CHUNK:
                os.remove(os.path.join(folder, name))
    assert (x.blocks[0].compute() != counts[:200]).nnz == 0
    last = x.blocks[len(x.chunks[0]) - 1].compute()
    assert last.nnz == 0 or (last != counts[-last.shape[0] :]).nnz > 0  # missing chunks read as fill


def test_dense_anndata_arrays_are_for_the_dense_reader(tmp_path, counts, zarr_format):
    path = write_anndata(tmp_path / "cells.zarr", counts, zarr_format, small_chunks=False)
    dense_path = str(tmp_path / "dense.zarr")
    previous = anndata.settings.zarr_write_format
    anndata.settings.zarr_write_format = zarr_format
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            anndata.AnnData(X=counts.toarray()).write_zarr(dense_path)
    finally:
        anndata.settings.zarr_write_format = previous
    root, dense_root = zarr.open_group(path, mode="r"), zarr.open_group(dense_path, mode="r")
    assert sio.is_sparse_zarr_group(root["X"])
    for node, expected in ((root["obsm/X_pca"], np.arange(N_ROWS * 4).reshape(N_ROWS, 4)), (dense_root["X"], counts.toarray())):
        assert not sio.is_sparse_zarr_group(node)
        x = open_data(node, chunks=1000).array
        np.testing.assert_array_equal(x.compute(), expected.astype(x.dtype))
    with pytest.raises(InvalidSourceError, match="not a sparse matrix"):
        sio.open_sparse_zarr(dense_path, key="X")


def _statistics(x, prepared) -> mn.MultinomialStats:
    """Statistics over the Dask chunks, merged by + (the engine's pass, without the engine)."""
    total = None
    offset = 0
    for i, rows in enumerate(x.chunks[0]):
        s = mn.chunk_stats(x.blocks[i].compute(), prepared, row_offset=offset)
        total = s if total is None else total + s
        offset += rows
    return total.to_dense()


def test_every_input_kind_gives_the_same_statistics(tmp_path, counts, rng):
    params = mn.MultinomialParams.from_probabilities(np.array([0.6, 0.4]), rng.dirichlet(np.ones(N_FEATURES), size=2))
    prepared = mn.prepare(params, np.float32)
    expected = mn.chunk_stats(counts, prepared, kind="dense")
    sp.save_npz(tmp_path / "c.npz", counts)
    sp.save_npz(tmp_path / "u.npz", counts, compressed=False)
    sp.save_npz(tmp_path / "csc.npz", counts.tocsc(), compressed=False)
    sources = {
        "csr": sio.from_scipy(counts, chunks=700),
        "csc": sio.from_scipy(counts.tocsc(), chunks=700),
        "npz-compressed": sio.open_npz(tmp_path / "c.npz", chunks=700),
        "npz-uncompressed": sio.open_npz(tmp_path / "u.npz", target_nnz=10_000),
        "npz-csc": sio.open_npz(tmp_path / "csc.npz", chunks=700),
        "anndata-v2": sio.open_sparse_zarr(write_anndata(tmp_path / "v2.zarr", counts, 2, small_chunks=True), target_nnz=10_000),
        "anndata-v3": sio.open_sparse_zarr(write_anndata(tmp_path / "v3.zarr", counts, 3, small_chunks=False), chunks=900),
    }
    for kind, x in sources.items():
        assert isinstance(x._meta, sp.csr_matrix), kind
        got = _statistics(x, prepared)
        np.testing.assert_allclose(got.feature_counts, expected.feature_counts, rtol=1e-5, atol=1e-5, err_msg=kind)
        np.testing.assert_allclose(got.nk, expected.nk, rtol=1e-5, err_msg=kind)
        assert got.loglik == pytest.approx(expected.loglik, rel=1e-5), kind
    dense = mn.chunk_stats(counts.toarray(), prepared).to_dense()
    np.testing.assert_allclose(dense.feature_counts, expected.feature_counts, rtol=1e-5, atol=1e-5)


def test_npz_reads_uncompressed_files_by_ranges_and_urls(tmp_path, counts):
    sp.save_npz(tmp_path / "u.npz", counts, compressed=False)
    x = sio.open_npz(tmp_path / "u.npz", target_nnz=10_000)
    assert x.name.startswith("npz-") and len(x.chunks[0]) > 1
    assert_csr_chunks(x, counts)
    assert sio.open_npz(tmp_path / "u.npz", target_nnz=10_000).name == x.name
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/sparse-io-test/u.npz", "wb") as f:
        f.write((tmp_path / "u.npz").read_bytes())
    try:
        assert_csr_chunks(sio.open_npz("memory://sparse-io-test/u.npz", chunks=1000), counts)
    finally:
        fs.rm("/sparse-io-test", recursive=True)


def test_in_memory_names_follow_the_content(counts):
    a, b = sio.from_scipy(counts, chunks=500), sio.from_scipy(counts.copy(), chunks=500)
    assert a.name == b.name
    changed = counts.copy()
    changed.data[0] += 1
    assert sio.from_scipy(changed, chunks=500).name != a.name
    assert_csr_chunks(sio.from_scipy(counts.tocoo()), counts)


def test_csc_anndata_group_is_refused_with_a_remedy(tmp_path, counts):
    group = zarr.open_group(str(tmp_path / "csc.zarr"), mode="w")
    anndata.io.write_elem(group, "X", counts.tocsc())
    with pytest.raises(InvalidSourceError, match="tocsr"):
        sio.open_sparse_zarr(tmp_path / "csc.zarr", key="X")


@pytest.mark.parametrize(
    "make, error, match",
    [
        pytest.param(lambda p: sio.open_npz(p / "missing.npz"), SourceNotFoundError, "No such file", id="missing-npz"),
        pytest.param(lambda p: sio.open_sparse_zarr(p / "missing.zarr"), SourceNotFoundError, "No such file", id="missing-zarr"),
        pytest.param(lambda p: sio.open_npz(_write(p / "bad.npz", b"not a zip")), InvalidSourceError, "save_npz", id="not-npz"),
        pytest.param(lambda p: sio.open_sparse_zarr(_group(p), key="nope"), InvalidSourceError, "key=", id="missing-key"),
        pytest.param(lambda p: sio.from_scipy(np.ones((2, 2))), InvalidSourceError, "scipy.sparse", id="dense-to-from_scipy"),
    ],
)
def test_bad_sources_are_typed_errors(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        make(tmp_path)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _group(path):
    zarr.open_group(str(path / "g.zarr"), mode="w")
    return path / "g.zarr"


def test_store_copy_is_independent(tmp_path, counts):
    # Names come from the location: a copy elsewhere is another dataset.
    path = write_anndata(tmp_path / "a.zarr", counts, 3, small_chunks=True)
    shutil.copytree(path, tmp_path / "b.zarr")
    assert sio.open_sparse_zarr(path).name != sio.open_sparse_zarr(tmp_path / "b.zarr").name


# -- sizes and clusters --------------------------------------------------------------


def _csr_bytes(x: sp.csr_matrix, value_bytes: int = 4) -> int:
    return x.nnz * (value_bytes + x.indices.dtype.itemsize) + 8 * (x.shape[0] + 1)


def test_sparse_arrays_are_sized_by_their_non_zeros(tmp_path, counts):
    sp.save_npz(tmp_path / "u.npz", counts, compressed=False)
    path = write_anndata(tmp_path / "a.zarr", counts, 3, small_chunks=True)
    stored_indices = zarr.open_group(path, mode="r")["X"]["indices"].dtype.itemsize
    expected = {
        "memory": _csr_bytes(counts),
        "npz": _csr_bytes(counts),
        "anndata": counts.nnz * (4 + stored_indices) + 8 * (N_ROWS + 1),
    }
    arrays = {
        "memory": sio.from_scipy(counts, chunks=700),
        "npz": sio.open_npz(tmp_path / "u.npz", chunks=700),
        "anndata": sio.open_sparse_zarr(path, chunks=700),
    }
    for kind, x in arrays.items():
        assert sio.estimated_nbytes(x) == expected[kind], kind
        assert sio.estimated_nbytes(x) < x.nbytes / 5, kind  # the dense size is rows x features
        # float64 values, and a selection of rows at its share of them.
        assert sio.estimated_nbytes(x.astype(np.float64)) == expected[kind] + 4 * counts.nnz, kind
        assert sio.estimated_nbytes(x[: N_ROWS // 2]) == pytest.approx(expected[kind] / 2, rel=1e-6), kind
    import dask
    import dask.array as da

    assert sio.estimated_nbytes(da.ones((10, 3), chunks=5)) is None
    user = da.from_delayed(dask.delayed(lambda: counts)(), shape=counts.shape, dtype=counts.dtype, meta=counts[:0])
    assert sio.estimated_nbytes(user) is None  # not from dgmm's readers: unknown


def test_in_memory_sparse_input_is_scattered_as_csr_chunks(client, counts):
    from distributed import Future

    from dgmm.fit.data import open_for_fit

    data = open_for_fit(counts, chunks=700, client=client)
    x = data.array
    assert data.in_memory and x.chunks[0] == (700, 700, 700, 700, 200)
    # The graph holds the workers' chunks, not the matrix (which every pass would ship).
    values = list(dict(x.dask).values())
    assert values and all(isinstance(v, Future) for v in values)
    assert_csr_chunks(x, counts)
    assert open_for_fit(counts, chunks=700, client=None).in_memory is False  # in this process: lazy slices


def test_a_sparse_store_that_fits_by_non_zeros_is_persisted(client):
    import dask
    import dask.array as da
    from distributed import futures_of

    from dgmm.fit.cluster import maybe_persist

    # Dense, 3000 x 10^8 float32 is 1.2 TB; its 6,000 non-zeros are 72 kB.
    gen = np.random.default_rng(1)
    rows, cols = gen.integers(0, 3000, 6000), gen.integers(0, 10**8, 6000)
    wide = sp.csr_matrix((np.ones(6000, dtype=np.float32), (rows, cols)), shape=(3000, 10**8))
    x = sio.from_scipy(wide, chunks=1000)
    assert x.nbytes > 10**12
    persisted = maybe_persist(x, client)
    assert futures_of(persisted) and persisted.chunks == x.chunks
    assert_csr_chunks(persisted, wide)
    # A user's Dask array of CSR chunks has no known size: streamed, as before.
    user = da.from_delayed(dask.delayed(lambda: wide)(), shape=wide.shape, dtype=wide.dtype, meta=wide[:0])
    assert not futures_of(maybe_persist(user, client))
