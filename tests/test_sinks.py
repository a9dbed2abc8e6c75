"""Results out: write_array and GaussianMixture.predict_to (Zarr, Parquet, object storage)."""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid

import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from dgmm import GaussianMixture, graph, open_dataset
from dgmm.errors import (
    InvalidDataError,
    ShapeMismatchError,
    TargetExistsError,
    TargetFormatError,
    TargetNotWritableError,
)
from dgmm.fit.predict import write_array
from dgmm.io import sinks

# Per-chunk call counts of the functions below. Test-module functions are
# pickled by reference, so the in-process workers update this very object.
CALLS: collections.Counter = collections.Counter()
_LOCK = threading.Lock()


def _counted(block: np.ndarray, tag: str) -> np.ndarray:
    with _LOCK:
        CALLS[tag] += 1
    return block


def _fail_chunk(block: np.ndarray, bad: int, slow: int, block_info: dict | None = None) -> np.ndarray:
    """Chunk ``bad`` raises at once; chunk ``slow`` is still running when it does."""
    index = block_info[0]["chunk-location"][0] if block_info else -1
    if index == bad:
        raise RuntimeError(f"chunk {bad} failed on purpose")
    if index == slow:
        time.sleep(0.5)
    return block


_ORIGINAL_WRITE_TASK = sinks._write_task


def _slow_then_failing_write_task(writer, names, bounds, *blocks):
    """Chunk 1's write fails at once while chunk 0's is still writing (slowly)."""
    index = int(bounds[0, 0])
    if index == 1:
        raise RuntimeError("chunk 1 failed on purpose")
    if index == 0:
        time.sleep(0.5)
    return _ORIGINAL_WRITE_TASK(writer, names, bounds, *blocks)


def _listing(path) -> list[str]:
    return sorted(os.listdir(path))


def _data(rng: np.random.Generator, n: int = 1000, d: int = 3, chunks=(300, 300, 250, 150)) -> tuple[np.ndarray, da.Array]:
    x = rng.normal(size=(n, d))
    return x, da.from_array(x, chunks=(chunks, d))


def _read_zarr_tree(path) -> dict[str, bytes]:
    """Every file under ``path`` by relative name (to check a target is untouched)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


@pytest.fixture(params=["distributed", "threads"])
def scheduler(request, monkeypatch) -> str:
    """Both ways of running the write tasks: the session's cluster, or local threads."""
    if request.param == "threads":
        monkeypatch.setattr(graph, "current_client", lambda: None)
    return request.param


# -- Zarr and Parquet round trips -------------------------------------------------

def test_zarr_group_round_trip(rng, tmp_path, scheduler):
    x, xd = _data(rng, chunks=(300, 300, 300, 100))
    labels = (xd[:, 0] > 0).astype(np.int64)
    result = write_array({"label": labels, "values": xd}, tmp_path / "out.zarr")
    assert (result.format, result.n_rows, result.n_chunks) == ("zarr", 1000, 4)
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    assert group.metadata.zarr_format == 3
    np.testing.assert_array_equal(group["values"][:], x)
    np.testing.assert_array_equal(group["label"][:], (x[:, 0] > 0).astype(np.int64))
    assert group["label"].dtype == np.int64
    # Output chunks are the input's row chunks.
    assert group["values"].chunks == (300, 3)
    assert group["label"].chunks == (300,)
    assert _listing(tmp_path) == ["out.zarr"]


def test_zarr_single_array_v2(rng, tmp_path):
    x, xd = _data(rng, chunks=(250, 250, 250, 250))
    result = write_array(xd.astype(np.float32), str(tmp_path / "x.zarr"), zarr_format=2)
    assert result.columns == ()
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")
    assert z.metadata.zarr_format == 2
    assert z.dtype == np.float32 and z.chunks == (250, 3)
    np.testing.assert_array_equal(z[:], x.astype(np.float32))


def test_zarr_irregular_chunks_are_made_regular(rng, tmp_path):
    x, xd = _data(rng, chunks=(100, 400, 300, 200))
    write_array({"x": xd}, tmp_path / "x.zarr")
    z = zarr.open_group(tmp_path / "x.zarr", mode="r")["x"]
    np.testing.assert_array_equal(z[:], x)


def test_parquet_round_trip(rng, tmp_path, scheduler):
    n_chunks = 12  # more than 10, so file names must sort numerically
    x, xd = _data(rng, n=1200, chunks=(100,) * n_chunks)
    labels = (xd[:, 1] > 0).astype(np.int64)
    result = write_array({"label": labels, "p": xd}, tmp_path / "out.parquet")
    assert result.columns == ("label", "p_0", "p_1", "p_2")
    assert (result.n_rows, result.n_chunks) == (1200, n_chunks)
    files = _listing(tmp_path / "out.parquet")
    assert len(files) == n_chunks and all(f.endswith(".parquet") for f in files)
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert list(frame.columns) == ["label", "p_0", "p_1", "p_2"]
    np.testing.assert_array_equal(frame[["p_0", "p_1", "p_2"]].to_numpy(), x)
    np.testing.assert_array_equal(frame["label"].to_numpy(), (x[:, 1] > 0).astype(np.int64))
    # One file per input chunk, in row order.
    sizes = [pq.ParquetFile(tmp_path / "out.parquet" / f).metadata.num_rows for f in files]
    assert sizes == [100] * n_chunks


def test_parquet_by_format_and_single_array_name(rng, tmp_path):
    x, xd = _data(rng)
    write_array(xd[:, 0], tmp_path / "scores", format="parquet", name="score")
    frame = pd.read_parquet(tmp_path / "scores")
    assert list(frame.columns) == ["score"]
    np.testing.assert_array_equal(frame["score"].to_numpy(), x[:, 0])


def test_numpy_input_is_accepted(rng, tmp_path):
    x = rng.normal(size=(50, 2))
    write_array(x, tmp_path / "x.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "x.zarr", mode="r")[:], x)


def test_every_input_chunk_is_computed_once(rng, tmp_path):
    x, xd = _data(rng)
    tag = f"read-{uuid.uuid4().hex}"
    source = xd.map_blocks(_counted, tag, dtype=xd.dtype, meta=np.empty((0, 0)))
    write_array({"first": source[:, 0], "all": source, "sum": source.sum(axis=1)}, tmp_path / "o.zarr")
    assert CALLS[tag] == len(xd.chunks[0])


# -- atomicity ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_failed_chunk_leaves_nothing(rng, tmp_path, suffix, scheduler):
    x = rng.normal(size=(200, 2))
    xd = da.from_array(x, chunks=(100, 2)).map_blocks(_fail_chunk, 1, 0, dtype=x.dtype)
    (tmp_path / "keep.txt").write_text("unrelated")
    with pytest.raises(RuntimeError, match="chunk 1 failed"):
        write_array({"x": xd}, tmp_path / f"out{suffix}")
    assert _listing(tmp_path) == ["keep.txt"]
    # The slow chunk was still running when chunk 1 failed; it must not
    # re-create anything after the clean-up.
    time.sleep(0.7)
    assert _listing(tmp_path) == ["keep.txt"]


@pytest.mark.parametrize(
    "where, suffix", [("local", ".zarr"), ("memory", ".zarr"), ("memory", ".parquet")]
)
def test_failed_write_waits_for_writes_in_flight(rng, tmp_path, suffix, where, scheduler, monkeypatch):
    monkeypatch.setattr(sinks, "_write_task", _slow_then_failing_write_task)
    x = rng.normal(size=(200, 2))
    target = str(tmp_path / f"out{suffix}") if where == "local" else _memory_url(f"out{suffix}")
    fs, path = fsspec.core.url_to_fs(target)
    parent = path.rsplit("/", 1)[0]
    with pytest.raises(RuntimeError, match="chunk 1 failed"):
        write_array({"x": da.from_array(x, chunks=(100, 2))}, target)
    # Chunk 0 was still writing when chunk 1 failed: the clean-up must come
    # after it, or its file would appear under the temporary name afterwards
    # (object stores need no parent directory to create an object).
    time.sleep(0.7)
    assert fs.find(parent) == []


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_existing_target_is_not_touched(rng, tmp_path, suffix):
    x, xd = _data(rng)
    target = tmp_path / f"out{suffix}"
    write_array({"x": xd}, target)
    before = _read_zarr_tree(target)
    with pytest.raises(TargetExistsError) as info:
        write_array({"x": xd + 1}, target)
    message = str(info.value)
    assert str(target) in message and "overwrite=True" in message
    assert isinstance(info.value, FileExistsError)
    assert _read_zarr_tree(target) == before
    assert _listing(tmp_path) == [f"out{suffix}"]


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_overwrite_replaces_only_after_success(rng, tmp_path, suffix, scheduler):
    x, xd = _data(rng)
    target = tmp_path / f"out{suffix}"
    write_array({"x": xd}, target)
    before = _read_zarr_tree(target)
    failing = da.from_array(x, chunks=(500, 3)).map_blocks(_fail_chunk, 1, -1, dtype=x.dtype)
    with pytest.raises(RuntimeError, match="chunk 1 failed"):
        write_array({"x": failing}, target, overwrite=True)
    assert _read_zarr_tree(target) == before
    assert _listing(tmp_path) == [f"out{suffix}"]

    write_array({"x": xd * 2}, target, overwrite=True)
    assert _listing(tmp_path) == [f"out{suffix}"]
    if suffix == ".zarr":
        np.testing.assert_array_equal(zarr.open_group(target, mode="r")["x"][:], x * 2)
    else:
        np.testing.assert_array_equal(pd.read_parquet(target).to_numpy(), x * 2)


# -- object storage (no atomic rename): fsspec's in-memory filesystem --------------

def _memory_url(name: str) -> str:
    return f"memory://dgmm-{uuid.uuid4().hex[:8]}/{name}"


def test_object_storage_root_metadata_is_copied_last(rng, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    copied: list[str] = []
    original = MemoryFileSystem.copy

    def recording_copy(self, path1, path2, *args, **kwargs):
        copied.extend(path2 if isinstance(path2, list) else [path2])
        return original(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "copy", recording_copy)
    x, xd = _data(rng)
    url = _memory_url("out.zarr")
    write_array({"label": xd[:, 0] > 0, "x": xd}, url)
    assert copied[-1].endswith("out.zarr/zarr.json")
    assert sum(c.endswith("zarr.json") for c in copied) == 3  # root + two arrays
    np.testing.assert_array_equal(zarr.open_group(url, mode="r")["x"][:], x)
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0]
    assert [p.rsplit("/", 1)[1] for p in fs.ls(parent, detail=False)] == ["out.zarr"]


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_object_storage_failure_leaves_nothing(rng, suffix):
    x = rng.normal(size=(200, 2))
    xd = da.from_array(x, chunks=(100, 2)).map_blocks(_fail_chunk, 1, 0, dtype=x.dtype)
    url = _memory_url(f"out{suffix}")
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.pipe(f"{parent}/keep.txt", b"unrelated")
    with pytest.raises(RuntimeError, match="chunk 1 failed"):
        write_array({"x": xd}, url)
    assert fs.find(parent) == [f"{parent}/keep.txt"]


def test_object_storage_failed_move_names_the_complete_copy(rng, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    def failing_copy(self, path1, path2, *args, **kwargs):
        raise OSError("connection reset")

    x, xd = _data(rng)
    url = _memory_url("out.zarr")
    monkeypatch.setattr(MemoryFileSystem, "copy", failing_copy)
    with pytest.raises(TargetNotWritableError, match="connection reset") as info:
        write_array({"x": xd}, url)
    monkeypatch.undo()
    fs, path = fsspec.core.url_to_fs(url)
    assert not fs.exists(path)
    # The complete output is where the message says it is.
    leftover = [u for u in fs.ls(path.rsplit("/", 1)[0], detail=False)]
    assert len(leftover) == 1 and leftover[0].rsplit("/", 1)[1] in str(info.value)
    np.testing.assert_array_equal(zarr.open_group(f"memory://{leftover[0]}", mode="r")["x"][:], x)


def test_object_storage_overwrite(rng):
    x, xd = _data(rng)
    url = _memory_url("out.parquet")
    write_array({"x": xd}, url)
    with pytest.raises(TargetExistsError):
        write_array({"x": xd}, url)
    write_array({"x": xd[:500] * 3}, url, overwrite=True)
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path + "/part-00000.parquet", "rb") as f:
        first = pq.read_table(f).to_pandas()
    files = fs.find(path)
    assert len(files) == len(xd[:500].chunks[0])
    np.testing.assert_array_equal(first.to_numpy(), x[:300] * 3)


# -- bad inputs --------------------------------------------------------------------

_X = da.zeros((10, 2), chunks=5)


@pytest.mark.parametrize(
    "x, target, kwargs, error, fragments",
    [
        pytest.param(_X, "out.csv", {}, TargetFormatError, ["out.csv", "format="], id="unknown-suffix"),
        pytest.param(_X, "out.zarr", {"format": "hdf5"}, TargetFormatError, ["hdf5", "zarr", "parquet"], id="unknown-format"),
        pytest.param(_X, "out.zarr", {"zarr_format": 4}, TargetFormatError, ["4", "2", "3"], id="zarr-format"),
        pytest.param(da.zeros((2, 2, 2)), "out.zarr", {}, ShapeMismatchError, ["3-D", "(2, 2, 2)"], id="3-d-array"),
        pytest.param({"a": _X, "b": da.zeros(7)}, "out.zarr", {}, ShapeMismatchError, ["10", "7"], id="row-mismatch"),
        pytest.param({}, "out.zarr", {}, ShapeMismatchError, ["empty"], id="nothing-to-write"),
        pytest.param({"a/b": _X}, "out.zarr", {}, ShapeMismatchError, ["a/b"], id="bad-name"),
        pytest.param(_X, "memory://", {"format": "zarr"}, TargetFormatError, ["memory://"], id="filesystem-root"),
    ],
)
def test_bad_inputs(tmp_path, monkeypatch, x, target, kwargs, error, fragments):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as info:
        write_array(x, target, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert _listing(tmp_path) == []


# -- GaussianMixture.predict_to -----------------------------------------------------

@pytest.fixture(scope="module")
def fitted() -> tuple[GaussianMixture, np.ndarray]:
    rng = np.random.default_rng(7)
    X = np.vstack([rng.normal(-4, 1, (1500, 3)), rng.normal(4, 1.5, (1500, 3)), rng.normal((0, 8, 0), 1, (1000, 3))])
    rng.shuffle(X)
    return GaussianMixture(3, covariance_type="full", random_state=0).fit(X), X


def _read_outputs(target, fmt: str, n_components: int) -> dict[str, np.ndarray]:
    if fmt == "zarr":
        group = zarr.open_group(target, mode="r")
        return {name: group[name][:] for name in group.array_keys()}
    frame = pd.read_parquet(target)
    out = {c: frame[c].to_numpy() for c in ("label", "log_density") if c in frame}
    if "proba_0" in frame:
        out["proba"] = frame[[f"proba_{k}" for k in range(n_components)]].to_numpy()
    return out


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_to_matches_in_memory_predictions(fitted, tmp_path, suffix, dtype):
    gmm, X = fitted
    X = X.astype(dtype)
    xd = da.from_array(X, chunks=(700, 3))  # 6 chunks, the last shorter
    target = tmp_path / f"pred{suffix}"
    result = gmm.predict_to(xd, str(target), output=["labels", "proba", "log_density"])
    assert (result.n_rows, result.n_chunks) == (len(X), 6)
    got = _read_outputs(target, suffix[1:], gmm.n_components)
    np.testing.assert_array_equal(got["label"], gmm.predict(X))
    np.testing.assert_allclose(got["proba"], gmm.predict_proba(X), rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(got["log_density"], gmm.score_samples(X), rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert got["label"].dtype == np.int64
    assert got["log_density"].dtype == dtype


@pytest.mark.parametrize("output", ["labels", "proba", "log_density"])
def test_predict_to_single_output_from_numpy(fitted, tmp_path, output):
    gmm, X = fitted
    gmm.predict_to(X, str(tmp_path / "p.zarr"), output=output)
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    name = {"labels": "label", "proba": "proba", "log_density": "log_density"}[output]
    assert list(group.array_keys()) == [name]
    expected = {"labels": gmm.predict, "proba": gmm.predict_proba, "log_density": gmm.score_samples}[output](X)
    np.testing.assert_allclose(group[name][:], expected, rtol=1e-12)


def test_predict_to_a_stored_source(fitted, tmp_path):
    gmm, X = fitted
    zarr.create_array(str(tmp_path / "X.zarr"), data=X, chunks=(1000, 3))
    result = gmm.predict_to(str(tmp_path / "X.zarr"), str(tmp_path / "labels.parquet"))
    assert result.n_chunks == open_dataset(str(tmp_path / "X.zarr")).numblocks[0]
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "labels.parquet")["label"].to_numpy(), gmm.predict(X))


def test_predict_to_reads_each_chunk_once(fitted, tmp_path):
    gmm, X = fitted
    tag = f"predict-{uuid.uuid4().hex}"
    xd = da.from_array(X, chunks=(500, 3)).map_blocks(_counted, tag, dtype=X.dtype, meta=np.empty((0, 0)))
    gmm.predict_to(xd, str(tmp_path / "p.zarr"), output=["labels", "proba", "log_density"])
    assert CALLS[tag] == 8


def test_predict_to_nan_rows_leave_no_target(fitted, tmp_path):
    gmm, X = fitted
    X = X.copy()
    X[2345, 1] = np.nan
    with pytest.raises(InvalidDataError, match="2345"):
        gmm.predict_to(da.from_array(X, chunks=(500, 3)), str(tmp_path / "p.zarr"), output=["labels", "proba"])
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    "X_cols, output, error, fragments",
    [
        pytest.param(2, "labels", ShapeMismatchError, ["2 features", "3"], id="feature-count"),
        pytest.param(3, "probability", ValueError, ["probability", "labels", "proba", "log_density"], id="unknown-output"),
        pytest.param(3, ["labels", "labels"], ValueError, ["labels"], id="duplicate-output"),
        pytest.param(3, [], ValueError, ["labels"], id="no-output"),
    ],
)
def test_predict_to_bad_arguments_write_nothing(fitted, tmp_path, X_cols, output, error, fragments):
    gmm, X = fitted
    with pytest.raises(error) as info:
        gmm.predict_to(da.from_array(X[:, :X_cols], chunks=500), str(tmp_path / "p.zarr"), output=output)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert _listing(tmp_path) == []


def test_predict_to_existing_target(fitted, tmp_path):
    gmm, X = fitted
    target = str(tmp_path / "p.parquet")
    gmm.predict_to(X, target)
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        gmm.predict_to(X, target, output="log_density")
    assert list(pd.read_parquet(target).columns) == ["label"]
    gmm.predict_to(X, target, output="log_density", overwrite=True)
    assert list(pd.read_parquet(target).columns) == ["log_density"]


# -- S3 (moto's server on 127.0.0.1) -------------------------------------------------

def test_s3_round_trip(fitted, s3_server):
    from tests.s3 import new_bucket, s3_filesystem

    gmm, X = fitted
    options = s3_server["storage_options"]
    bucket = new_bucket(s3_server)
    source = f"s3://{bucket}/X.zarr"
    zarr.create_array(source, data=X, chunks=(1000, 3), storage_options=options)
    xd = open_dataset(source, storage_options=options)
    gmm.predict_to(xd, f"s3://{bucket}/pred.zarr", output=["labels", "log_density"], storage_options=options)
    gmm.predict_to(xd, f"s3://{bucket}/pred.parquet", output="proba", storage_options=options)
    group = zarr.open_group(f"s3://{bucket}/pred.zarr", mode="r", storage_options=options)
    np.testing.assert_array_equal(group["label"][:], gmm.predict(X))
    np.testing.assert_allclose(group["log_density"][:], gmm.score_samples(X), rtol=1e-12)
    frame = pd.read_parquet(f"s3://{bucket}/pred.parquet", storage_options=options)
    np.testing.assert_allclose(frame.to_numpy(), gmm.predict_proba(X), rtol=1e-12, atol=1e-15)
    fs = s3_filesystem(s3_server)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(bucket)) == ["X.zarr", "pred.parquet", "pred.zarr"]
    with pytest.raises(TargetExistsError):
        gmm.predict_to(xd, f"s3://{bucket}/pred.zarr", storage_options=options)
