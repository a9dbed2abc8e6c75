"""``dgmm.open_dataset``: every kind of source, chunking along storage, names, errors.

Stored data is real: Zarr v2/v3 on local disk, Parquet written by pyarrow,
``.npy`` files, and ``s3://`` URLs against moto's S3 server (tests/s3.py).
The fit-equivalence tests are the proof the source layer is faithful: the
same rows, chunked alike, fit to the same bits from every source.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from fsspec.implementations.local import LocalFileSystem
from sklearn.exceptions import ConvergenceWarning

import dgmm
from dgmm import GaussianMixture, open_dataset
from dgmm.errors import (
    InvalidDataError,
    InvalidDtypeError,
    InvalidSourceError,
    ShapeMismatchError,
    SourceNotFoundError,
)
from dgmm.io.sources import is_in_memory, open_data
from tests.s3 import new_bucket, s3_filesystem

N_ROWS, N_FEATURES = 600, 3
STORED_ROWS = 100  # rows per Zarr chunk / Parquet row group


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = np.array([[-6.0, 0.0, 1.0], [0.0, 6.0, -1.0], [6.0, 0.0, 5.0]])
    return centres[np.arange(N_ROWS) % 3] + rng.normal(size=(N_ROWS, N_FEATURES))


def write_zarr(path: Any, X: np.ndarray, *, zarr_format: int = 3, chunks: tuple = (STORED_ROWS, N_FEATURES),
               key: str | None = None, **kw: Any) -> str:
    """X as a Zarr array at ``path`` (or at ``key`` inside a group there); returns the URL."""
    if key is None:
        z = zarr.create_array(str(path), shape=X.shape, chunks=chunks, dtype=X.dtype,
                              zarr_format=zarr_format, **kw)
    else:
        group = zarr.open_group(str(path), mode="a", zarr_format=zarr_format, **kw)
        z = group.create_array(key, shape=X.shape, chunks=chunks, dtype=X.dtype)
    z[:] = X
    return str(path)


def feature_table(X: np.ndarray, extra: dict | None = None) -> pa.Table:
    return pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])} | (extra or {}))


def write_parquet_dir(path: Path, X: np.ndarray, n_files: int = 3) -> str:
    path.mkdir()
    for i, part in enumerate(np.array_split(X, n_files)):
        pq.write_table(feature_table(part), path / f"part-{i}.parquet", row_group_size=STORED_ROWS)
    (path / "_SUCCESS").write_bytes(b"")  # as Spark and Hadoop leave them: not data
    (path / "README.txt").write_text("not data either")
    return str(path)


def boundaries(chunks: tuple[int, ...]) -> set[int]:
    return set(np.cumsum(chunks).tolist())


# -- every source reads back the same rows --------------------------------------------

SOURCES: list[Any] = [
    pytest.param(lambda X, tmp: X, {}, id="numpy"),
    pytest.param(lambda X, tmp: da.from_array(X, chunks=(150, 2)), {}, id="dask-array"),
    pytest.param(lambda X, tmp: write_zarr(tmp / "x.zarr", X), {}, id="zarr-v3-array"),
    pytest.param(lambda X, tmp: write_zarr(tmp / "x.zarr", X, zarr_format=2), {}, id="zarr-v2-array"),
    pytest.param(lambda X, tmp: write_zarr(tmp / "g.zarr", X, key="emb/X"), {"key": "emb/X"}, id="zarr-v3-group"),
    pytest.param(
        lambda X, tmp: write_zarr(tmp / "g.zarr", X, key="X", zarr_format=2), {"key": "X"}, id="zarr-v2-group"
    ),
    pytest.param(
        lambda X, tmp: write_zarr(tmp / "x.zarr", X, chunks=(50, 2), shards=(100, 4)), {}, id="zarr-v3-sharded"
    ),
    pytest.param(lambda X, tmp: Path(write_zarr(tmp / "x.zarr", X)), {}, id="zarr-pathlike"),
    pytest.param(lambda X, tmp: zarr.open_array(write_zarr(tmp / "x.zarr", X), mode="r"), {}, id="zarr-array-object"),
    pytest.param(lambda X, tmp: "file://" + write_zarr(tmp / "x.zarr", X), {}, id="zarr-file-url"),
    pytest.param(
        lambda X, tmp: write_zarr(f"memory://{tmp.name}/x.zarr", X), {}, id="zarr-memory-url"
    ),
    pytest.param(
        lambda X, tmp: (pq.write_table(feature_table(X), tmp / "x.parquet", row_group_size=STORED_ROWS),
                        str(tmp / "x.parquet"))[1],
        {}, id="parquet-file",
    ),
    pytest.param(lambda X, tmp: write_parquet_dir(tmp / "pq", X), {}, id="parquet-dir"),
    pytest.param(
        lambda X, tmp: (pq.write_table(feature_table(X, {"name": ["a"] * len(X)}), tmp / "x.pq"),
                        str(tmp / "x.pq"))[1],
        {"columns": ["f0", "f1", "f2"]}, id="parquet-columns-exclude-text",
    ),
    pytest.param(lambda X, tmp: (np.save(tmp / "x.npy", X), str(tmp / "x.npy"))[1], {}, id="npy"),
    pytest.param(
        lambda X, tmp: (np.save(tmp / "x.npy", np.asfortranarray(X)), str(tmp / "x.npy"))[1], {}, id="npy-fortran"
    ),
    pytest.param(
        lambda X, tmp: pd.DataFrame(X, columns=["a", "b", "c"]).assign(label="x"),
        {"columns": ["a", "b", "c"]}, id="pandas-columns",
    ),
    pytest.param(lambda X, tmp: pd.DataFrame(X), {}, id="pandas"),
    pytest.param(lambda X, tmp: dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=3), {},
                 id="dask-dataframe"),
]


@pytest.mark.parametrize(("make", "kwargs"), SOURCES)
def test_every_source_reads_the_same_rows(make: Callable, kwargs: dict, X: np.ndarray, tmp_path: Path) -> None:
    x = open_dataset(make(X, tmp_path), **kwargs)
    assert isinstance(x, da.Array)
    assert x.shape == X.shape and x.dtype == np.float64
    assert len(x.chunks[1]) == 1, "all columns in one chunk"
    np.testing.assert_array_equal(x.compute(), X)


def test_xarray_dataarray(X: np.ndarray) -> None:
    xr = pytest.importorskip("xarray")
    eager = xr.DataArray(X, dims=("cell", "feature"))
    lazy = xr.DataArray(da.from_array(X, chunks=(200, 3)), dims=("cell", "feature"))
    for source in (eager, lazy):
        np.testing.assert_array_equal(open_dataset(source).compute(), X)
    assert open_dataset(lazy).chunks[0] == (200, 200, 200)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param("int32", np.float64, id="int-cast"),
        pytest.param("bool", np.float64, id="bool-cast"),
        pytest.param("float32", np.float32, id="float32-kept"),
        pytest.param("float16", np.float64, id="float16-widened"),
    ],
)
def test_stored_dtypes(stored: str, expected: type, X: np.ndarray, tmp_path: Path) -> None:
    data = (X > 0) if stored == "bool" else (X * 10).astype(stored)
    write_zarr(tmp_path / "x.zarr", data)
    pq.write_table(feature_table(data), tmp_path / "x.parquet")
    for path in ("x.zarr", "x.parquet"):
        x = open_dataset(tmp_path / path)
        assert x.dtype == expected, path
        np.testing.assert_array_equal(x.compute(), data.astype(expected))


def test_parquet_nulls_become_nan_found_by_the_fit(X: np.ndarray, tmp_path: Path) -> None:
    column = pa.array([None if i == 321 else float(v) for i, v in enumerate(X[:, 1])], pa.float64())
    table = pa.table({"f0": X[:, 0], "f1": column, "f2": X[:, 2]})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=STORED_ROWS)
    x = open_dataset(tmp_path / "x.parquet")
    assert np.isnan(x.compute()[321, 1])
    with pytest.raises(InvalidDataError, match=r"\brow 321\b"):
        GaussianMixture(2, max_iter=2, random_state=0).fit(tmp_path / "x.parquet")


# -- chunking along storage chunks ------------------------------------------------------


@pytest.mark.parametrize("requested", [None, 1, 130, 170, 250, 10_000])
def test_zarr_chunks_are_whole_storage_chunks(requested: int | None, X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "x.zarr", X, chunks=(60, 2))
    x = open_dataset(tmp_path / "x.zarr", chunks=requested)
    stored = boundaries((60,) * 10)
    assert boundaries(x.chunks[0]) <= stored, f"a storage chunk is split: {x.chunks[0]}"
    assert len(x.chunks[1]) == 1
    if requested is not None:
        expected = min(max(1, round(requested / 60)) * 60, N_ROWS)
        assert x.chunks[0][0] == expected


def test_chunks_given_later_to_an_opened_store_stay_aligned(X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "x.zarr", X, chunks=(60, 2))
    pq.write_table(feature_table(X), tmp_path / "x.parquet", row_group_size=STORED_ROWS)
    for path, stored in (("x.zarr", (60,) * 10), ("x.parquet", (STORED_ROWS,) * 6)):
        opened = open_dataset(tmp_path / path)
        again = open_data(opened, chunks=130).array  # what GaussianMixture(chunks=130).fit(opened) does
        assert again.name == open_dataset(tmp_path / path, chunks=130).name
        assert boundaries(again.chunks[0]) <= boundaries(stored), (path, again.chunks[0])


def test_zarr_shards_are_never_split(X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "x.zarr", X, chunks=(25, 3), shards=(150, 3))
    for requested in (None, 25, 100, 160, 400):
        x = open_dataset(tmp_path / "x.zarr", chunks=requested)
        assert boundaries(x.chunks[0]) <= boundaries((150,) * 4), x.chunks[0]


def test_default_chunks_give_every_thread_work_without_splitting(X: np.ndarray, tmp_path: Path) -> None:
    big = np.tile(X, (70, 1))  # 42_000 rows, ~1 MB; the suite's cluster has 2 threads
    write_zarr(tmp_path / "x.zarr", big, chunks=(1000, 3))
    x = open_dataset(tmp_path / "x.zarr")
    assert len(x.chunks[0]) >= 4
    assert boundaries(x.chunks[0]) <= boundaries((1000,) * 42)


@pytest.mark.parametrize("requested", [None, 1, 100, 150, 250])
def test_parquet_chunks_are_whole_row_groups(requested: int | None, X: np.ndarray, tmp_path: Path) -> None:
    write_parquet_dir(tmp_path / "pq", X, n_files=4)  # 150 rows a file: groups of 100 and 50
    stored = boundaries((100, 50) * 4)
    x = open_dataset(tmp_path / "pq", chunks=requested)
    assert boundaries(x.chunks[0]) <= stored, f"a row group is split: {x.chunks[0]}"
    if requested is not None:
        assert all(c >= min(requested, 50) for c in x.chunks[0][:-1])
    np.testing.assert_array_equal(x.compute(), X)


CHUNK_READS: Counter = Counter()  # module-level: the filesystem is copied to the (in-process) workers


class CountingFileSystem(LocalFileSystem):
    """Local files under the ``dgmmcount://`` protocol, counting whole-file reads in ``CHUNK_READS``."""

    protocol = "dgmmcount"

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> bytes:
        CHUNK_READS[self._strip_protocol(path)] += 1
        return super().cat_file(path, start=start, end=end, **kw)


def test_each_stored_chunk_is_read_once_per_pass(X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "x.zarr", X, chunks=(60, 2))  # 10 x 2 stored chunks
    fsspec.register_implementation("dgmmcount", CountingFileSystem, clobber=True)
    x = open_dataset(f"dgmmcount://{tmp_path}/x.zarr", chunks=130)
    assert x.chunks[0] == (120,) * 5
    CHUNK_READS.clear()
    np.testing.assert_array_equal(x.compute(), X)
    chunk_reads = {k: v for k, v in CHUNK_READS.items() if "/c/" in k}
    assert len(chunk_reads) == 10 * 2, sorted(CHUNK_READS)
    assert set(chunk_reads.values()) == {1}, chunk_reads


# -- deterministic names ---------------------------------------------------------------


def test_names_are_deterministic_and_change_with_what_matters(X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "a.zarr", X)
    write_zarr(tmp_path / "b.zarr", X)
    write_zarr(tmp_path / "g.zarr", X, key="X")
    write_zarr(tmp_path / "g.zarr", X, key="Y")
    pq.write_table(feature_table(X), tmp_path / "x.parquet", row_group_size=STORED_ROWS)
    np.save(tmp_path / "x.npy", X)

    def name(source: Any, **kw: Any) -> str:
        return open_dataset(source, **kw).name

    a = name(tmp_path / "a.zarr", chunks=200)
    assert a == name(str(tmp_path / "a.zarr"), chunks=200) == name(f"file://{tmp_path}/a.zarr", chunks=200)
    assert name(tmp_path / "x.parquet", chunks=200) == name(tmp_path / "x.parquet", chunks=200)
    assert name(tmp_path / "x.npy", chunks=200) == name(tmp_path / "x.npy", chunks=200)
    different = {
        a,
        name(tmp_path / "a.zarr", chunks=300),
        name(tmp_path / "b.zarr", chunks=200),
        name(tmp_path / "g.zarr", key="X", chunks=200),
        name(tmp_path / "g.zarr", key="Y", chunks=200),
        name(tmp_path / "x.parquet", chunks=200),
        name(tmp_path / "x.parquet", columns=["f0", "f1"], chunks=200),
        name(tmp_path / "x.npy", chunks=200),
        name(tmp_path / "x.npy", chunks=300),
    }
    assert len(different) == 9
    opened = zarr.open_array(tmp_path / "a.zarr", mode="r")
    assert name(opened, chunks=200) == name(zarr.open_array(tmp_path / "a.zarr", mode="r"), chunks=200)
    assert not is_in_memory(opened), "an opened zarr.Array is read lazily, not loaded"
    before = name(tmp_path / "a.zarr", chunks=200)
    write_zarr(tmp_path / "a.zarr", X[:500], overwrite=True)
    assert name(tmp_path / "a.zarr", chunks=200) != before, "new metadata, new name"


def test_names_are_the_same_in_another_process(X: np.ndarray, tmp_path: Path) -> None:
    write_zarr(tmp_path / "g.zarr", X, key="X")
    pq.write_table(feature_table(X), tmp_path / "x.parquet", row_group_size=STORED_ROWS)
    np.save(tmp_path / "x.npy", X)
    calls = [f"open_dataset({str(tmp_path / 'g.zarr')!r}, key='X', chunks=200).name",
             f"open_dataset({str(tmp_path / 'x.parquet')!r}, chunks=200).name",
             f"open_dataset({str(tmp_path / 'x.npy')!r}, chunks=200).name"]
    code = "from dgmm import open_dataset\n" + "\n".join(f"print({c})" for c in calls)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == [eval(c, {"open_dataset": open_dataset}) for c in calls]


# -- fit equivalence ---------------------------------------------------------------------


def fitted_params(source: Any) -> list[np.ndarray]:
    # k-means++ draws its sample of rows chunk by chunk: the same draws need
    # the same chunks holding the same rows.
    gmm = GaussianMixture(
        3, covariance_type="full", init_params="k-means++", max_iter=5, tol=0.0, random_state=0, chunks=200
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: always all 5 iterations
        gmm.fit(source)
    return [gmm.weights_, gmm.means_, gmm.covariances_, np.array(gmm.lower_bounds_)]


@pytest.fixture(scope="module")
def numpy_fit(X: np.ndarray) -> list[np.ndarray]:
    return fitted_params(X)


def test_same_data_from_every_store_fits_to_the_same_bits(
    X: np.ndarray, numpy_fit: list[np.ndarray], tmp_path: Path
) -> None:
    pq.write_table(feature_table(X), tmp_path / "x.parquet", row_group_size=200)
    np.save(tmp_path / "x.npy", X)
    sources = {
        "zarr-v3": write_zarr(tmp_path / "v3.zarr", X),
        "zarr-v2": write_zarr(tmp_path / "v2.zarr", X, zarr_format=2),
        "zarr-v3-opened": open_dataset(write_zarr(tmp_path / "o.zarr", X), chunks=200),
        "parquet": str(tmp_path / "x.parquet"),
        "npy": tmp_path / "x.npy",
    }
    for label, source in sources.items():
        for got, want in zip(fitted_params(source), numpy_fit):
            np.testing.assert_array_equal(got, want, err_msg=label)


def test_predict_on_a_stored_source_is_lazy_and_matches_numpy(X: np.ndarray, tmp_path: Path) -> None:
    path = write_zarr(tmp_path / "x.zarr", X)
    gmm = GaussianMixture(3, random_state=0, max_iter=5).fit(path)
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gmm, method)(path)
        assert isinstance(lazy, da.Array), method
        np.testing.assert_allclose(lazy.compute(), getattr(gmm, method)(X), rtol=1e-12, err_msg=method)
    assert gmm.score(path) == pytest.approx(gmm.score(X), rel=1e-12)
    assert gmm.bic(path) == pytest.approx(gmm.bic(X), rel=1e-12)


def test_nan_in_stored_data_is_named_by_its_row(X: np.ndarray, tmp_path: Path) -> None:
    bad = X.copy()
    bad[437, 2] = np.nan
    path = write_zarr(tmp_path / "x.zarr", bad)
    with pytest.raises(InvalidDataError, match=r"\brow 437\b"):
        GaussianMixture(3, random_state=0).fit(path)


# -- errors --------------------------------------------------------------------------------


def setup_group(tmp: Path, X: np.ndarray) -> Path:
    write_zarr(tmp / "g.zarr", X, key="counts")
    write_zarr(tmp / "g.zarr", X, key="obsm/pca")
    return tmp / "g.zarr"


def setup_parquet(tmp: Path, X: np.ndarray) -> Path:
    pq.write_table(feature_table(X, {"city": ["Oslo"] * len(X)}), tmp / "x.parquet")
    return tmp / "x.parquet"


def setup_file(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


ERRORS: list[Any] = [
    pytest.param(lambda tmp, X: (tmp / "nowhere.zarr", {}), SourceNotFoundError,
                 (r"nowhere\.zarr", "exist|no such"), id="missing-path"),
    pytest.param(lambda tmp, X: (setup_group(tmp, X), {}), InvalidSourceError,
                 ("group", "key", "counts", "obsm/pca"), id="group-without-key"),
    pytest.param(lambda tmp, X: (setup_group(tmp, X), {"key": "pca"}), InvalidSourceError,
                 ("'pca'", "counts", "obsm/pca"), id="key-not-in-group"),
    pytest.param(lambda tmp, X: (setup_group(tmp, X), {"key": "obsm"}), InvalidSourceError,
                 ("obsm", "group", "obsm/pca"), id="key-names-a-group"),
    pytest.param(lambda tmp, X: (write_zarr(tmp / "x.zarr", X), {"key": "X"}), InvalidSourceError,
                 ("key", "array"), id="key-on-an-array"),
    pytest.param(lambda tmp, X: (setup_parquet(tmp, X), {"columns": ["f0", "height", "f2", "age"]}),
                 InvalidSourceError, ("height", "age", "f1", "city"), id="parquet-columns-missing"),
    pytest.param(lambda tmp, X: (setup_parquet(tmp, X), {}), InvalidDtypeError,
                 ("city", "numeric", "columns="), id="parquet-text-column"),
    pytest.param(lambda tmp, X: (setup_parquet(tmp, X), {"columns": ["f0", "city"]}), InvalidDtypeError,
                 ("city", "numeric"), id="parquet-text-column-selected"),
    pytest.param(lambda tmp, X: (pd.DataFrame({"a": X[:, 0], "kind": "x"}), {}), InvalidDtypeError,
                 ("kind", "numeric", "columns="), id="pandas-text-column"),
    pytest.param(lambda tmp, X: (pd.DataFrame({"a": X[:, 0]}), {"columns": ["b"]}), InvalidSourceError,
                 ("'b'", "'a'"), id="pandas-column-missing"),
    pytest.param(lambda tmp, X: (dd.from_pandas(pd.DataFrame({"a": X[:, 0], "kind": "x"}), npartitions=2), {}),
                 InvalidDtypeError, ("kind", "numeric", "columns="), id="dask-dataframe-text-column"),
    pytest.param(lambda tmp, X: (setup_file(tmp, "x.csv", b"a,b\n1,2\n"), {}), InvalidSourceError,
                 ("x.csv", "zarr", "parquet", "npy"), id="unsupported-file"),
    pytest.param(lambda tmp, X: (setup_file(tmp, "notes.txt", b"x").parent, {}), InvalidSourceError,
                 ("zarr", "parquet"), id="directory-of-other-files"),
    pytest.param(lambda tmp, X: (setup_file(tmp, "x.npy", b"not numpy"), {}), InvalidSourceError,
                 ("x.npy", "npy"), id="corrupt-npy"),
    pytest.param(lambda tmp, X: (setup_file(tmp, "x.parquet", b"PAR1 and then nothing useful"), {}),
                 InvalidSourceError, ("x.parquet", "parquet"), id="corrupt-parquet"),
    pytest.param(lambda tmp, X: ((np.save(tmp / "x.npy", X), tmp / "x.npy")[1], {"key": "X"}),
                 InvalidSourceError, ("key", "zarr"), id="key-on-npy"),
    pytest.param(lambda tmp, X: (write_zarr(tmp / "x.zarr", X), {"columns": ["a"]}), InvalidSourceError,
                 ("columns", "zarr"), id="columns-on-zarr"),
    pytest.param(lambda tmp, X: (X, {"storage_options": {"anon": True}}), InvalidSourceError,
                 ("storage_options",), id="storage-options-on-numpy"),
    pytest.param(lambda tmp, X: (write_zarr(tmp / "x.zarr", X[:, 0], chunks=(100,)), {}), InvalidDataError,
                 ("2-D", "1-D", "reshape"), id="zarr-1d"),
    pytest.param(lambda tmp, X: (write_zarr(tmp / "x.zarr", X.reshape(6, 100, 3), chunks=(2, 100, 3)), {}),
                 InvalidDataError, ("2-D", "3-D"), id="zarr-3d"),
    pytest.param(lambda tmp, X: (write_zarr(tmp / "x.zarr", X[:0], chunks=(100, 3)), {}), InvalidDataError,
                 ("0 sample",), id="zarr-zero-rows"),
    pytest.param(lambda tmp, X: ((np.save(tmp / "x.npy", X.reshape(-1)), tmp / "x.npy")[1], {}),
                 InvalidDataError, ("2-D", "1-D"), id="npy-1d"),
    pytest.param(lambda tmp, X: ((np.save(tmp / "x.npy", X.astype(str)), tmp / "x.npy")[1], {}),
                 InvalidDtypeError, ("real number|numeric", "<U|dtype"), id="npy-strings"),
]


@pytest.mark.parametrize(("setup", "error", "fragments"), ERRORS)
def test_bad_sources_raise_clear_errors(
    setup: Callable, error: type, fragments: tuple[str, ...], X: np.ndarray, tmp_path: Path
) -> None:
    source, kwargs = setup(tmp_path, X)
    with pytest.raises(error) as info:
        open_dataset(source, **kwargs).compute()
    message = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, message, flags=re.IGNORECASE), f"lacks /{fragment}/: {message}"


def test_predict_on_a_source_with_other_features_is_refused(X: np.ndarray, tmp_path: Path) -> None:
    gmm = GaussianMixture(2, random_state=0, max_iter=3).fit(write_zarr(tmp_path / "x.zarr", X))
    pq.write_table(feature_table(X[:, :2]), tmp_path / "two.parquet")
    with pytest.raises(ShapeMismatchError, match=r"\b2 features.*expecting 3|expect.*3.*got 2"):
        gmm.predict(tmp_path / "two.parquet")


def test_fit_reports_source_errors_too(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="missing.zarr"):
        GaussianMixture(2).fit(tmp_path / "missing.zarr")
    assert issubclass(SourceNotFoundError, FileNotFoundError)
    assert issubclass(InvalidSourceError, ValueError)


# -- S3 (moto's server on 127.0.0.1) -----------------------------------------------------


def test_s3_zarr_fits_like_numpy(s3_server: dict, X: np.ndarray, numpy_fit: list[np.ndarray]) -> None:
    options = s3_server["storage_options"]
    bucket = new_bucket(s3_server)
    url = f"s3://{bucket}/cells.zarr"
    group = zarr.open_group(url, mode="w", storage_options=options)
    group.create_array("X_pca", shape=X.shape, chunks=(STORED_ROWS, N_FEATURES), dtype=X.dtype)[:] = X
    x = open_dataset(url, key="X_pca", storage_options=options, chunks=200)
    assert x.chunks[0] == (200, 200, 200)
    assert x.name == open_dataset(url, key="X_pca", storage_options=options, chunks=200).name
    for got, want in zip(fitted_params(x), numpy_fit):
        np.testing.assert_array_equal(got, want)


def test_s3_parquet_and_npy_read_back(s3_server: dict, X: np.ndarray) -> None:
    options = s3_server["storage_options"]
    bucket = new_bucket(s3_server)
    fs = s3_filesystem(s3_server)
    for i, part in enumerate(np.array_split(X, 2)):
        with fs.open(f"{bucket}/emb/part-{i}.parquet", "wb") as f:
            pq.write_table(feature_table(part), f, row_group_size=STORED_ROWS)
    with fs.open(f"{bucket}/x.npy", "wb") as f:
        np.save(f, X)
    x = open_dataset(f"s3://{bucket}/emb", storage_options=options, columns=["f2", "f0"])
    np.testing.assert_array_equal(x.compute(), X[:, [2, 0]])
    x = open_dataset(f"s3://{bucket}/x.npy", storage_options=options, chunks=128)
    assert x.chunks[0] == (128, 128, 128, 128, 88)
    np.testing.assert_array_equal(x.compute(), X)


@pytest.mark.parametrize(
    ("path", "fragments"),
    [
        pytest.param("no-such-bucket-{u}/x.zarr", ("bucket", "no-such-bucket", "exist"), id="missing-bucket"),
        pytest.param("{bucket}/missing.zarr", ("missing.zarr", "exist|no such"), id="missing-key"),
    ],
)
def test_s3_missing(path: str, fragments: tuple[str, ...], s3_server: dict) -> None:
    bucket = new_bucket(s3_server)
    url = "s3://" + path.format(bucket=bucket, u=bucket[-8:])
    with pytest.raises(SourceNotFoundError) as info:
        open_dataset(url, storage_options=s3_server["storage_options"])
    for fragment in fragments:
        assert re.search(fragment, str(info.value), flags=re.IGNORECASE), str(info.value)


def test_open_dataset_is_exported() -> None:
    assert dgmm.open_dataset is open_dataset
    assert "open_dataset" in dgmm.__all__
