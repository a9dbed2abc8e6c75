"""``Dataset``: one per fit, from one metadata read; opened arrays carry theirs without a registry.

A fit of a Zarr store reads its metadata once, a fit of a Parquet directory
each footer once (counted with a ``dgmmmeta://`` filesystem that records
every request); arrays from ``open_dataset`` keep their feature names and
their reopening through ``persist()``; in-memory rows are scattered by the
graph layer; the CLI opens its data on the cluster it connected to.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from dask.graph_manipulation import clone
from distributed import LocalCluster
from sklearn.exceptions import ConvergenceWarning

from dgmm import GaussianMixture, open_dataset
from dgmm.fit import cluster as fit_cluster
from dgmm.fit.data import open_for_fit
from dgmm.io import sources
from dgmm.io.checkpoint import content_digest, data_fingerprint
from dgmm.io.dataset import Dataset, OpenedArray
from dgmm.io.sources import feature_names, open_data

from ._helpers import FS_CALLS, counting_url, invoke, metadata_requests

NAMES = ["height", "weight", "age"]


@pytest.fixture
def X(rng: np.random.Generator) -> np.ndarray:
    centres = np.array([[-5.0, 0.0, 2.0], [5.0, 3.0, -2.0]])
    return centres[np.arange(1200) % 2] + rng.normal(size=(1200, 3))


def write_parquet_dir(path: Path, X: np.ndarray, n_files: int = 3) -> Path:
    path.mkdir()
    for i, part in enumerate(np.array_split(X, n_files)):
        table = pa.table({n: part[:, j] for j, n in enumerate(NAMES)})
        pq.write_table(table, path / f"part-{i}.parquet", row_group_size=100)
    return path


def quick_fit(source: object) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1
        return GaussianMixture(2, max_iter=1, init_params="random_from_data", random_state=0).fit(source)


# -- one metadata read per fit ------------------------------------------------------------


def test_a_fit_of_a_zarr_store_reads_its_metadata_at_most_twice(X: np.ndarray, tmp_path: Path) -> None:
    # Before the Dataset: 9 metadata requests (exists/isdir/exists(zarr.json) twice, then
    # zarr.json, .zarray and .zattrs).
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(200, 3))
    FS_CALLS.clear()
    gmm = quick_fit(counting_url(tmp_path / "x.zarr"))
    requests = metadata_requests()
    assert len(requests) <= 2, requests
    assert any(p.endswith("zarr.json") for _, p in requests)
    chunk_reads = [p for name, p, _ in FS_CALLS if "/c/" in p]
    assert chunk_reads, "the data itself was read through the same filesystem"
    assert gmm.n_features_in_ == 3 and not hasattr(gmm, "feature_names_in_")


def test_a_fit_of_a_parquet_directory_reads_each_footer_once(X: np.ndarray, tmp_path: Path) -> None:
    # Before: the first file's footer three times, the others once, 21 more listings and probes.
    write_parquet_dir(tmp_path / "pq", X)
    FS_CALLS.clear()
    gmm = quick_fit(counting_url(tmp_path / "pq"))
    footers = sorted(p for name, p, main in FS_CALLS if main and name == "open")
    assert footers == [f"{tmp_path}/pq/part-{i}.parquet" for i in range(3)]
    listings = [p for name, p, main in FS_CALLS if main and name in ("find", "ls", "glob")]
    assert len(listings) == 1, listings
    assert gmm.feature_names_in_.tolist() == NAMES


def test_reopening_reads_no_metadata(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(100, 3))
    data = open_data(counting_url(tmp_path / "x.zarr"), chunks=100)
    FS_CALLS.clear()
    again = data.reopen(290)
    assert FS_CALLS == []
    assert again.array.chunks[0] == (300,) * 4, "the nearest whole number of storage chunks"
    assert again.fingerprint != data.fingerprint, "the chunking is part of the fingerprint"
    np.testing.assert_array_equal(again.array.compute(), X)


# -- what a Dataset holds ---------------------------------------------------------------------


def test_a_stored_dataset(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet_dir(tmp_path / "pq", X)
    data = open_data(path, columns=["age", "height"], chunks=200)
    assert isinstance(data, Dataset) and not data.in_memory
    assert data.feature_names.tolist() == ["age", "height"]
    assert data.array.chunks == ((200, 200, 200, 200, 200, 200), (2,))
    assert data.fingerprint == data.array.name == open_data(path, columns=["age", "height"], chunks=200).fingerprint
    assert str(path) in data.source
    with pytest.raises(dataclasses_frozen_error()):
        data.array = None  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_in_memory_rows_have_no_storage_fingerprint(X: np.ndarray) -> None:
    data = open_data(pd.DataFrame(X, columns=NAMES), chunks=500)
    assert data.in_memory and data.fingerprint is None
    assert data.feature_names.tolist() == NAMES
    fingerprint = data_fingerprint(data, content_digest(X))
    assert fingerprint["content_sha256"] == content_digest(X) and "name" not in fingerprint
    assert fingerprint["row_chunks"] == data_fingerprint(data.array, content_digest(X))["row_chunks"]


def test_data_fingerprint_of_stored_data_is_its_fingerprint(X: np.ndarray, tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(100, 3))
    data = open_data(tmp_path / "x.zarr", chunks=300)
    assert data_fingerprint(data)["name"] == data.fingerprint == data_fingerprint(data.array)["name"]


# -- opened arrays carry their dataset, without a registry -----------------------------------


def test_an_opened_array_keeps_its_names_and_reopening_through_persist(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet_dir(tmp_path / "pq", X)
    x = open_dataset(path, columns=["weight", "age"], chunks=100)
    assert isinstance(x, OpenedArray)
    for persisted in (x.persist(), dask.persist(x)[0], x.persist(scheduler="threads")):
        assert persisted.name == x.name
        assert feature_names(persisted).tolist() == ["weight", "age"]
        again = open_data(persisted, chunks=250).array
        assert again.chunks[0] == (300, 300, 300, 300), "reopened along row groups"
    assert feature_names(x[:, ::-1]) is None and feature_names(x.astype(np.float32)) is None
    assert feature_names(clone(x)) is None, "a renamed copy is not the opened array"


def test_names_travel_with_the_array_object_not_its_name(X: np.ndarray) -> None:
    x = open_dataset(pd.DataFrame(X, columns=NAMES), chunks=300)
    same_name = da.Array(x.dask, x.name, x.chunks, meta=x._meta)  # a plain array of the same name
    assert feature_names(x).tolist() == NAMES
    assert feature_names(same_name) is None
    assert not [n for n in vars(sources) if n in ("_REOPEN", "_COLUMNS")]


def test_fit_takes_names_from_an_opened_array_after_persist(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet_dir(tmp_path / "pq", X)
    gmm = quick_fit(open_dataset(path, columns=["age", "weight"]).persist())
    assert gmm.feature_names_in_.tolist() == ["age", "weight"]


# -- in-memory rows are scattered by the graph layer -----------------------------------------


def test_in_memory_input_is_scattered_not_embedded(client) -> None:
    X = np.random.default_rng(0).normal(size=(10_000, 3))
    data = open_for_fit(X, chunks=2500, client=client)
    x = data.array
    assert data.in_memory and x.chunks[0] == (2500,) * 4
    assert not any(isinstance(v, np.ndarray) and v.size > 100 for v in dict(x.__dask_graph__()).values())
    np.testing.assert_array_equal(x.compute(), X)


def test_open_for_fit_sizes_default_chunks_by_the_cluster(client) -> None:
    X = np.zeros((100_000, 2))
    rows = open_for_fit(X, chunks=None, client=client).array.chunks[0]
    assert len(rows) == 4, "two chunks per thread of the suite's two-thread cluster"


# -- the CLI connects, then opens ---------------------------------------------------------------


def test_cli_sizes_chunks_by_the_cluster_it_connected_to(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60_000 rows: two chunks per thread are 10_000 rows on 3 threads, 15_000 on the
    # suite's own 2-thread cluster (current outside the command's block), 30_000 on 1.
    X = rng.normal(size=(60_000, 3)) + np.where(np.arange(60_000) % 2, 5.0, -5.0)[:, None]
    zarr.create_array(str(tmp_path / "x.zarr"), data=X, chunks=(1000, 3))
    fitted: list[tuple[int, ...]] = []
    real = GaussianMixture.fit

    def spy(self: GaussianMixture, X: da.Array, *args: object, **kwargs: object) -> GaussianMixture:
        fitted.append(X.chunks[0])
        return real(self, X, *args, **kwargs)

    monkeypatch.setattr(GaussianMixture, "fit", spy)
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=3, dashboard_address=":0") as other:
        result = invoke("fit", "x.zarr", "-k", 2, "-o", "model", "--scheduler", other.scheduler_address,
                        cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert fitted == [(10_000,) * 6]


def test_cli_refuses_a_missing_source_before_starting_a_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started for a source that does not exist")

    monkeypatch.setattr(fit_cluster, "connect", no_cluster)
    result = invoke("fit", "missing.zarr", "-k", 2, "-o", "model", cwd=tmp_path)
    assert result.exit_code == 1 and "missing.zarr" in result.stderr
