"""``dgmm.io.stores``: one read of a store's metadata describes it; rechunking reads nothing.

Real Zarr v2/v3 stores, Parquet files written by pyarrow and ``.npy`` files,
behind a ``dgmmmeta://`` filesystem that records every request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from dgmm.io.stores import StoredArray, open_store, stored_zarr

from ._helpers import FS_CALLS, counting_url, metadata_requests

N_ROWS, N_FEATURES = 500, 3


@pytest.fixture
def X(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(N_ROWS, N_FEATURES))


def write_parquet(path: Path, X: np.ndarray, row_group_size: int = 100) -> Path:
    pq.write_table(pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])}), path, row_group_size=row_group_size)
    return path


def opened(url: str, **kw: object) -> tuple[StoredArray, list[tuple[str, str]]]:
    FS_CALLS.clear()
    store = open_store(url, **kw)
    return store, metadata_requests()


def test_zarr_v3_array_is_one_read_of_zarr_json(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(60, 3))
    store, requests = opened(counting_url(tmp_path / "x.zarr"))
    assert requests == [("cat_file", f"{tmp_path}/x.zarr/zarr.json")]
    assert (store.kind, store.shape, store.dtype, store.columns) == ("zarr", X.shape, np.float64, None)
    assert store.storage_rows == (60,)


def test_zarr_array_in_a_group_is_one_read_of_its_own_metadata(X: np.ndarray, tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("obsm/pca", shape=X.shape, chunks=(100, 3), dtype="float32")[:] = X
    store, requests = opened(counting_url(tmp_path / "g.zarr"), key="obsm/pca")
    assert requests == [("cat_file", f"{tmp_path}/g.zarr/obsm/pca/zarr.json")]
    assert store.dtype == np.float32 and store.shape == X.shape


def test_zarr_v2_array_costs_the_missing_zarr_json_then_its_own_two(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(50, 3), zarr_format=2)
    store, requests = opened(counting_url(tmp_path / "x.zarr"))
    # zarr looks for zarr.json as an array, then as a group, before .zarray and .zattrs.
    assert len(requests) <= 4, requests
    assert sum(p.endswith(".zarray") for _, p in requests) == 1, requests
    assert store.kind == "zarr" and store.storage_rows == (50,)


def test_shards_are_the_storage_unit(X: np.ndarray, tmp_path: Path) -> None:
    node = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(25, 3), shards=(100, 3), dtype="f8")
    store = stored_zarr(node)
    assert store.storage_rows == (100,)
    assert store.row_chunks(130) == (100,) * 5
    assert store.row_chunks(160) == (200, 200, 100)


def test_parquet_directory_reads_each_footer_once(X: np.ndarray, tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    for i, part in enumerate(np.array_split(X, 2)):
        write_parquet(tmp_path / "pq" / f"part-{i}.parquet", part)
    (tmp_path / "pq" / "_SUCCESS").write_bytes(b"")
    store, requests = opened(counting_url(tmp_path / "pq"), columns=["f2", "f0"])
    footers = [p for name, p in requests if name == "open"]
    assert sorted(footers) == [f"{tmp_path}/pq/part-{i}.parquet" for i in range(2)]
    assert sum(name in ("find", "ls") for name, _ in requests) == 1, requests
    assert store.columns == ("f2", "f0") and store.shape == (N_ROWS, 2)
    assert store.storage_rows == (100, 100, 50, 100, 100, 50)


def test_a_parquet_file_is_one_info_and_one_footer(X: np.ndarray, tmp_path: Path) -> None:
    write_parquet(tmp_path / "x.parquet", X)
    store, requests = opened(counting_url(tmp_path / "x.parquet"))
    assert sorted(name for name, _ in requests) == ["info", "open"], requests
    assert store.kind == "parquet" and store.columns == ("f0", "f1", "f2")


def test_npy_is_its_header(X: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    store, requests = opened(counting_url(tmp_path / "x.npy"))
    assert requests == [("open", f"{tmp_path}/x.npy")]
    assert (store.kind, store.shape, store.dtype, store.storage_rows) == ("npy", X.shape, np.float32, ())


@pytest.mark.parametrize(
    ("storage", "rows", "expected"),
    [
        pytest.param((100, 100, 50, 100, 100, 50), 130, (200, 150, 150), id="parquet-first-boundary-past"),
        pytest.param((100, 100, 50, 100, 100, 50), 1, (100, 100, 50, 100, 100, 50), id="parquet-one-group"),
        pytest.param((100, 100, 50, 100, 100, 50), 10_000, (500,), id="parquet-all"),
    ],
)
def test_parquet_row_chunks_close_on_row_group_boundaries(
    storage: tuple[int, ...], rows: int, expected: tuple[int, ...], X: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "pq").mkdir()
    for i, part in enumerate(np.array_split(X, 2)):
        write_parquet(tmp_path / "pq" / f"part-{i}.parquet", part)
    store = open_store(tmp_path / "pq")
    assert store.storage_rows == storage
    assert store.row_chunks(rows) == expected


def test_rechunking_reads_nothing_and_names_follow_the_chunking(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(60, 3))
    store = open_store(counting_url(tmp_path / "x.zarr"))
    FS_CALLS.clear()
    a, b = store.to_dask(store.row_chunks(120)), store.to_dask(store.row_chunks(240))
    assert FS_CALLS == [], "building the arrays read nothing"
    assert a.chunks[0] == (120,) * 4 + (20,) and b.chunks[0] == (240, 240, 20)
    assert a.name != b.name
    np.testing.assert_array_equal(b.compute(), X)


def test_names_do_not_depend_on_how_the_store_was_reached(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(60, 3))
    via_path, via_url = open_store(tmp_path / "x.zarr"), open_store(f"file://{tmp_path}/x.zarr")
    rows = via_path.row_chunks(120)
    assert via_path.to_dask(rows).name == via_url.to_dask(rows).name
