"""A pandas index stored in Parquet is not a feature.

``df.to_parquet`` stores a DataFrame's index that is not a RangeIndex as a
column (the index's name, or ``__index_level_0__``) and names it under
``"index_columns"`` in the schema's pandas metadata; Dask's ``to_parquet``
stores its default index as ``__null_dask_index__`` the same way. A RangeIndex
is metadata only. With ``columns=None`` these columns are left out of the
features (and of the feature names); ``columns=`` naming one still reads it.
A Dask DataFrame read from such data holds the index as its index, never as a
column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dgmm import GaussianMixture, open_dataset
from dgmm.errors import InvalidDtypeError
from dgmm.io.sources import feature_names

# dask's Parquet reader and writer call set_index/reset_index(inplace=True), which
# pandas 3.1 deprecates (also in the workers' threads): not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame")

NAMES = ["height", "weight", "age"]
N_ROWS = 400
ROW_GROUP = 100


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = np.array([[-5.0, 0.0, 2.0], [5.0, 3.0, -2.0]])
    return centres[np.arange(N_ROWS) % 2] + rng.normal(size=(N_ROWS, 3))


def frame(X: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
    return pd.DataFrame(X, columns=NAMES, index=index)


def shuffled_ids(n: int, start: int = 0) -> np.ndarray:
    """Integer ids that are no range (so pandas stores them as a column)."""
    return start + np.random.default_rng(start).permutation(n) * 3


def to_parquet(df: pd.DataFrame, path: Path) -> str:
    df.to_parquet(path, engine="pyarrow", row_group_size=ROW_GROUP)
    return str(path)


def to_parquet_dir(X: np.ndarray, path: Path, name: str | None) -> str:
    """Two files, each a frame with its own (named or unnamed) non-range index."""
    path.mkdir()
    for i, part in enumerate(np.array_split(X, 2)):
        index = pd.Index(shuffled_ids(len(part), start=1000 * i), name=name)
        to_parquet(frame(part, index), path / f"part-{i}.parquet")
    return str(path)


def dask_to_parquet(X: np.ndarray, path: Path) -> str:
    """Dask stores even its default index, as ``__null_dask_index__``."""
    dd.from_pandas(frame(X), npartitions=2).to_parquet(path)
    return str(path)


def indexed(X: np.ndarray, name: str | None = "id") -> pd.DataFrame:
    return frame(X, pd.Index(shuffled_ids(len(X)), name=name))


# (writer, the stored index column or None for a RangeIndex)
WRITERS: list[Any] = [
    pytest.param(lambda X, tmp: to_parquet(indexed(X), tmp / "x.parquet"), "id", id="named-index"),
    pytest.param(lambda X, tmp: to_parquet(indexed(X, None), tmp / "x.parquet"), "__index_level_0__",
                 id="unnamed-index"),
    pytest.param(lambda X, tmp: to_parquet(frame(X, pd.Index([f"r{i}" for i in range(len(X))], name="key")),
                                           tmp / "x.parquet"),
                 "key", id="text-index"),
    pytest.param(lambda X, tmp: to_parquet(frame(X, pd.RangeIndex(10, 10 + 2 * len(X), 2)), tmp / "x.parquet"),
                 None, id="range-index"),
    pytest.param(lambda X, tmp: to_parquet_dir(X, tmp / "pq", "id"), "id", id="dir-named-index"),
    pytest.param(lambda X, tmp: to_parquet_dir(X, tmp / "pq", None), "__index_level_0__", id="dir-unnamed-index"),
    pytest.param(lambda X, tmp: dask_to_parquet(X, tmp / "pq"), "__null_dask_index__", id="dask-to-parquet"),
]


def stored_index(path: str) -> list[str]:
    """The index columns as the files' pandas metadata names them (the test's own reading)."""
    p = Path(path)
    first = sorted(p.glob("*.parquet"))[0] if p.is_dir() else p
    schema = pq.read_schema(first)
    return [c for c in schema.pandas_metadata["index_columns"] if isinstance(c, str)]


@pytest.mark.parametrize(("write", "index"), WRITERS)
def test_columns_none_leaves_the_stored_index_out(
    write: Callable, index: str | None, X: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(X, tmp_path)
    assert stored_index(path) == ([] if index is None else [index])  # the writer stored what we think
    with caplog.at_level(logging.INFO, logger="dgmm"):
        x = open_dataset(path)
    assert x.shape == (N_ROWS, 3)
    np.testing.assert_array_equal(x.compute(), X)
    assert feature_names(path).tolist() == NAMES
    logged = [r.getMessage() for r in caplog.records if r.name == "dgmm"]
    if index is None:
        assert not any("index" in m for m in logged)
    else:
        assert any(index in m and "left out" in m for m in logged), logged


@pytest.mark.parametrize(("write", "index"), [w for w in WRITERS if w.values[1] is not None])
def test_explicit_columns_may_name_the_index(write: Callable, index: str, X: np.ndarray, tmp_path: Path) -> None:
    path = write(X, tmp_path)
    expected = pq.read_table(path).to_pandas(ignore_metadata=True)  # the index as the column stored
    numeric = pd.api.types.is_numeric_dtype(expected[index])
    columns = [index, "weight"] if numeric else ["weight"]
    if numeric:
        x = open_dataset(path, columns=columns)
        np.testing.assert_array_equal(x.compute(), expected[columns].to_numpy(dtype=np.float64))
        assert feature_names(path, columns=columns).tolist() == columns
    else:  # a text index is still text when asked for
        with pytest.raises(InvalidDtypeError, match=index):
            open_dataset(path, columns=[index, "weight"])


def test_the_non_numeric_message_suggests_no_index_column(X: np.ndarray, tmp_path: Path) -> None:
    df = indexed(X).assign(city="Oslo")
    path = to_parquet(df, tmp_path / "x.parquet")
    with pytest.raises(InvalidDtypeError, match="city") as info:
        open_dataset(path)
    assert f"columns={NAMES}" in str(info.value)


def test_other_metadata_is_no_index(X: np.ndarray, tmp_path: Path) -> None:
    """Metadata that is not pandas' JSON, or names no stored column, leaves every column a feature."""
    table = pa.table({n: X[:, j] for j, n in enumerate(NAMES)})
    for i, pandas in enumerate((b"not json", b'{"index_columns": ["gone", {"kind": "range"}]}', b"{}")):
        path = tmp_path / f"x{i}.parquet"
        pq.write_table(table.replace_schema_metadata({b"pandas": pandas}), path)
        assert open_dataset(path).shape == (N_ROWS, 3)
        assert feature_names(path).tolist() == NAMES


@pytest.mark.parametrize(("write", "index"), [WRITERS[0], WRITERS[5], WRITERS[6]])
def test_fit_is_the_fit_without_the_index(write: Callable, index: str, X: np.ndarray, tmp_path: Path) -> None:
    indexed = write(X, tmp_path)
    plain = to_parquet(frame(X), tmp_path / "plain.parquet")  # same rows and row groups, RangeIndex
    assert stored_index(plain) == []
    chunks = 2 * ROW_GROUP
    assert open_dataset(indexed, chunks=chunks).chunks == open_dataset(plain, chunks=chunks).chunks
    a = GaussianMixture(2, random_state=0, max_iter=50, chunks=chunks).fit(indexed)
    b = GaussianMixture(2, random_state=0, max_iter=50, chunks=chunks).fit(plain)
    c = GaussianMixture(2, random_state=0, max_iter=50).fit(frame(X))
    for model in (a, b, c):
        assert model.n_features_in_ == 3
        assert model.feature_names_in_.tolist() == NAMES
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
        np.testing.assert_allclose(getattr(a, attr), getattr(c, attr), rtol=1e-9, atol=1e-12)
    assert a.lower_bound_ == b.lower_bound_


# -- Dask DataFrames: the index is never a column -------------------------------------


DASK_FRAMES: list[Any] = [
    pytest.param(lambda X, tmp: dd.read_parquet(to_parquet(indexed(X), tmp / "x.parquet")),
                 id="read-parquet-named-index"),
    pytest.param(lambda X, tmp: dd.read_parquet(dask_to_parquet(X, tmp / "pq")), id="read-parquet-dask-index"),
    pytest.param(lambda X, tmp: dd.from_pandas(indexed(X), npartitions=2, sort=False),
                 id="from-pandas-named-index"),
]


@pytest.mark.parametrize("make", DASK_FRAMES)
def test_a_dask_dataframe_index_is_not_a_feature(make: Callable, X: np.ndarray, tmp_path: Path) -> None:
    ddf = make(X, tmp_path)
    assert list(ddf.columns) == NAMES  # the index is the frame's index
    x = open_dataset(ddf)
    assert x.shape == (N_ROWS, 3)
    np.testing.assert_array_equal(np.sort(x.compute(), axis=0), np.sort(X, axis=0))
    assert feature_names(ddf).tolist() == NAMES
    assert GaussianMixture(2, random_state=0, max_iter=5).fit(ddf).feature_names_in_.tolist() == NAMES
