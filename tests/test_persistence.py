"""Model files: round trips, atomic writes, and every way a model can be bad."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import fsspec
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from dgmm.core.params import GMMParams
from dgmm.errors import (
    ModelFormatError,
    ModelNotFoundError,
    TargetExistsError,
    TargetNotWritableError,
)
from dgmm.io import codec, persistence
from dgmm.io import fs as fsio

from ._helpers import COVARIANCE_TYPES, dense_covariance


def make_params(covariance_type: str, rng: np.random.Generator, k: int = 3, d: int = 4) -> GMMParams:
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + np.eye(d)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([np.trace(c) / d for c in full]),
    }[covariance_type]
    return GMMParams.from_covariances(weights, means, covariances, covariance_type)


@pytest.fixture
def memfs():
    """A fresh in-memory object store (no rename), cleared afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"memory://dgmm-test-{os.urandom(4).hex()}"
    yield fs, root
    if fs.exists(root.removeprefix("memory://")):
        fs.rm(root.removeprefix("memory://"), recursive=True)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# -- round trips ------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_params_round_trip_bit_identical(tmp_path, rng, covariance_type):
    params = make_params(covariance_type, rng)
    meta = {"n_iter_": 7, "lower_bounds_": [-3.25, -2.5], "history_": [{"change": float("inf")}]}
    persistence.save_model(tmp_path / "m", params, meta)
    loaded, loaded_meta = persistence.load_model(tmp_path / "m")
    assert loaded.equals(params)
    assert loaded_meta["covariance_type"] == covariance_type
    assert loaded_meta["n_components"] == params.n_components
    assert loaded_meta["n_features"] == params.n_features
    assert loaded_meta["lower_bounds_"] == meta["lower_bounds_"]
    assert loaded_meta["history_"][0]["change"] == float("inf")
    for k in range(params.n_components):  # a valid covariance for every component
        np.linalg.cholesky(dense_covariance(loaded.covariances, covariance_type, k, 4))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_object_store_round_trip(memfs, rng, covariance_type):
    _, root = memfs
    params = make_params(covariance_type, rng)
    persistence.save_model(f"{root}/m", params, {"note": "x"})
    loaded, meta = persistence.load_model(f"{root}/m")
    assert loaded.equals(params) and meta["note"] == "x"


def test_files_are_npy_and_json_without_pickle(tmp_path, rng):
    params = make_params("full", rng)
    persistence.save_model(tmp_path / "m", params)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == sorted(
        ["model.json", "weights.npy", "means.npy", "covariances.npy", "precisions_cholesky.npy"]
    )
    means = np.load(tmp_path / "m" / "means.npy", allow_pickle=False)
    assert means.dtype == np.float64 and np.array_equal(means, params.means)
    # Any standard JSON parser reads model.json (no bare NaN/Infinity literals).
    text = (tmp_path / "m" / "model.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert meta["format"] == persistence.FORMAT_NAME
    entry = {e["name"]: e for e in meta["files"]}["means.npy"]
    data = (tmp_path / "m" / "means.npy").read_bytes()
    assert entry["size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["shape"] == [3, 4] and entry["dtype"] == "float64"


def test_non_finite_floats_and_numpy_scalars_in_meta(tmp_path, rng):
    meta = {
        "a": np.float64(-np.inf),
        "b": [np.nan, 1.5],
        "c": np.int64(3),
        "d": np.array([1.0, 2.0]),
        "e": np.bool_(True),
    }
    persistence.save_model(tmp_path / "m", make_params("diag", rng), meta)
    _, got = persistence.load_model(tmp_path / "m")
    assert got["a"] == -np.inf and np.isnan(got["b"][0]) and got["b"][1] == 1.5
    assert got["c"] == 3 and got["d"] == [1.0, 2.0] and got["e"] is True


def test_write_dir_read_dir_extra_files(tmp_path, memfs):
    _, root = memfs
    files = {"state.json": b'{"iteration": 3}', "rng.npy": persistence._array_to_bytes(np.arange(3.0))}
    for url in (tmp_path / "d", f"{root}/d"):
        persistence.write_dir(url, files)
        got = persistence.read_dir(url)
        assert {k: v for k, v in got.items() if k != "model.json"} == files
        meta = json.loads(got["model.json"])
        assert {e["name"] for e in meta["files"]} == set(files)


def test_params_to_files_and_back_without_a_directory(rng):
    params = make_params("tied", rng)
    files = persistence.params_to_files(params)
    assert set(files) == {f"{n}.npy" for n in persistence.ARRAY_NAMES}
    assert persistence.params_from_files(files, persistence.params_meta(params)).equals(params)


# -- atomic writes and overwriting --------------------------------------------


def test_existing_target_is_kept_without_overwrite(tmp_path, rng):
    first, second = make_params("full", rng), make_params("full", rng)
    persistence.save_model(tmp_path / "m", first)
    with pytest.raises(TargetExistsError, match="overwrite"):
        persistence.save_model(tmp_path / "m", second)
    assert persistence.load_model(tmp_path / "m")[0].equals(first)
    persistence.save_model(tmp_path / "m", second, overwrite=True)
    assert persistence.load_model(tmp_path / "m")[0].equals(second)
    assert _siblings(tmp_path / "m") == ["m"]  # no temporary or old directories left


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_failed_overwrite_leaves_old_model(tmp_path, rng, monkeypatch, exchange):
    first = make_params("diag", rng)
    persistence.save_model(tmp_path / "m", first)
    if not exchange:
        monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
        persistence.save_model(tmp_path / "m", make_params("diag", rng), overwrite=True)
        assert _siblings(tmp_path / "m") == ["m"]
        first = persistence.load_model(tmp_path / "m")[0]
    calls = []
    real = fsio.write_file

    def failing(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(fsio, "write_file", failing)
    with pytest.raises(TargetNotWritableError, match="No space left"):
        persistence.save_model(tmp_path / "m", make_params("diag", rng), overwrite=True)
    assert persistence.load_model(tmp_path / "m")[0].equals(first)
    assert _siblings(tmp_path / "m") == ["m"]


def test_interrupted_write_leaves_nothing(tmp_path, rng, monkeypatch):
    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsio, "write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        persistence.save_model(tmp_path / "m", make_params("full", rng))
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path, rng):
    data = tmp_path / "precious"
    data.mkdir()
    (data / "results.csv").write_text("1,2,3\n")
    with pytest.raises(TargetExistsError, match="not a dgmm model"):
        persistence.save_model(data, make_params("full", rng), overwrite=True)
    assert (data / "results.csv").read_text() == "1,2,3\n"
    # An empty directory holds nothing to lose.
    (tmp_path / "empty").mkdir()
    persistence.save_model(tmp_path / "empty", make_params("full", rng), overwrite=True)
    assert persistence.load_model(tmp_path / "empty")[0].n_components == 3


def test_object_store_writes_manifest_last_and_swaps(memfs, rng, monkeypatch):
    fs, root = memfs
    url = f"{root}/m"
    first, second = make_params("full", rng), make_params("full", rng)
    persistence.save_model(url, first)
    order = []
    real = type(fs).pipe_file

    def recording(self, path, value, *args, **kwargs):
        order.append(path.rsplit("/", 1)[-1])
        if len(order) == 3:
            raise OSError(5, "connection reset")
        return real(self, path, value, *args, **kwargs)

    monkeypatch.setattr(type(fs), "pipe_file", recording)
    with pytest.raises(TargetNotWritableError, match="connection reset"):
        persistence.save_model(url, second, overwrite=True)
    # The failed write did not touch what readers see.
    monkeypatch.setattr(type(fs), "pipe_file", real)
    assert persistence.load_model(url)[0].equals(first)
    order.clear()
    monkeypatch.setattr(type(fs), "pipe_file", lambda *a, **k: (order.append(a[1].rsplit("/", 1)[-1]), real(*a, **k))[1])
    persistence.save_model(url, second, overwrite=True)
    assert order[-1] == "model.json" and len(order) == 5
    assert persistence.load_model(url)[0].equals(second)
    # The old model's arrays are gone, the partial write's leftovers are not listed.
    listed = {e["path"] for e in persistence.load_model(url)[1]["files"]}
    stored = {p.rsplit("/", 1)[-1] for p in fs.ls(url.removeprefix("memory://"), detail=False)}
    assert listed | {"model.json"} <= stored
    assert not any(
        p.startswith(("weights.", "means.")) and p not in listed for p in stored
    ), stored


# -- bad models: every case a user can meet -------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _good(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "model"
    persistence.save_model(path, make_params("full", rng))
    return path


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def _rewrite(tmp_path: Path, rng, change) -> Path:
    """A model whose files are internally consistent (manifest matches) but wrong."""
    params = make_params("full", rng)
    files = persistence.params_to_files(params)
    meta = {**persistence.params_meta(params), "format": "dgmm-model", "format_version": 1}
    change(files, meta)
    files["model.json"] = codec.dumps(meta)
    persistence.write_dir(tmp_path / "model", files)
    return tmp_path / "model"


def case_missing(tmp_path, rng):
    return tmp_path / "no-such-model"


def case_plain_directory(tmp_path, rng):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "data.csv").write_text("1\n")
    return tmp_path / "model"


def case_a_file(tmp_path, rng):
    (tmp_path / "model").write_text("hello")
    return tmp_path / "model"


def case_other_format(tmp_path, rng):
    path = _good(tmp_path, rng)
    _edit_meta(path, format="sklearn-pickle")
    return path


def case_model_json_not_json(tmp_path, rng):
    path = _good(tmp_path, rng)
    (path / "model.json").write_text('{"format": "dgmm-model", "form')
    return path


def case_truncated_array(tmp_path, rng):
    path = _good(tmp_path, rng)
    data = (path / "means.npy").read_bytes()
    (path / "means.npy").write_bytes(data[: len(data) // 2])
    return path


def case_corrupt_array(tmp_path, rng):
    path = _good(tmp_path, rng)
    data = bytearray((path / "covariances.npy").read_bytes())
    data[-3] ^= 0xFF
    (path / "covariances.npy").write_bytes(bytes(data))
    return path


def case_missing_array(tmp_path, rng):
    path = _good(tmp_path, rng)
    (path / "weights.npy").unlink()
    return path


def case_future_version(tmp_path, rng):
    path = _good(tmp_path, rng)
    _edit_meta(path, format_version=99, dgmm_version="9.0")
    return path


def case_not_npy(tmp_path, rng):
    return _rewrite(tmp_path, rng, lambda f, m: f.update({"means.npy": b"not an array"}))


def case_pickled_array(tmp_path, rng):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return _rewrite(tmp_path, rng, lambda f, m: f.update({"weights.npy": buffer.getvalue()}))


def case_wrong_components(tmp_path, rng):
    return _rewrite(tmp_path, rng, lambda f, m: m.update(n_components=5))


def case_wrong_covariance_type(tmp_path, rng):
    return _rewrite(tmp_path, rng, lambda f, m: m.update(covariance_type="diag"))


def case_unknown_covariance_type(tmp_path, rng):
    return _rewrite(tmp_path, rng, lambda f, m: m.update(covariance_type="banded"))


def case_float32_array(tmp_path, rng):
    return _rewrite(
        tmp_path, rng, lambda f, m: f.update({"means.npy": _npy(np.zeros((3, 4), np.float32))})
    )


def case_not_positive_definite(tmp_path, rng):
    def change(files, meta):
        files["precisions_cholesky.npy"] = _npy(np.zeros((3, 4, 4)))

    return _rewrite(tmp_path, rng, change)


def case_nan_mean(tmp_path, rng):
    return _rewrite(
        tmp_path, rng, lambda f, m: f.update({"means.npy": _npy(np.full((3, 4), np.nan))})
    )


@pytest.mark.parametrize(
    "make, error, fragments",
    [
        pytest.param(case_missing, ModelNotFoundError, ["no-such-model", "does not exist"], id="missing-path"),
        pytest.param(case_plain_directory, ModelFormatError, ["not a dgmm model", "model.json"], id="no-model-json"),
        pytest.param(case_a_file, ModelFormatError, ["not a dgmm model"], id="path-is-a-file"),
        pytest.param(case_other_format, ModelFormatError, ["not a dgmm model", "sklearn-pickle"], id="wrong-format-name"),
        pytest.param(case_model_json_not_json, ModelFormatError, ["model.json", "corrupt"], id="model-json-corrupt"),
        pytest.param(case_truncated_array, ModelFormatError, ["means.npy", "truncated"], id="truncated-array"),
        pytest.param(case_corrupt_array, ModelFormatError, ["covariances.npy", "sha256"], id="corrupt-array"),
        pytest.param(case_missing_array, ModelFormatError, ["weights.npy", "missing"], id="missing-array"),
        pytest.param(case_future_version, ModelFormatError, ["99", "Upgrade dgmm", "1"], id="future-version"),
        pytest.param(case_not_npy, ModelFormatError, ["means.npy", ".npy"], id="bad-npy"),
        pytest.param(case_pickled_array, ModelFormatError, ["weights.npy"], id="pickled-array"),
        pytest.param(case_wrong_components, ModelFormatError, ["shape", "5 components"], id="shape-vs-n-components"),
        pytest.param(case_wrong_covariance_type, ModelFormatError, ["shape", "'diag'"], id="shape-vs-covariance-type"),
        pytest.param(case_unknown_covariance_type, ModelFormatError, ["banded", "full"], id="unknown-covariance-type"),
        pytest.param(case_float32_array, ModelFormatError, ["means.npy", "float64"], id="float32-array"),
        pytest.param(case_not_positive_definite, ModelFormatError, ["positive definite"], id="not-positive-definite"),
        pytest.param(case_nan_mean, ModelFormatError, ["means.npy", "NaN"], id="nan-mean"),
    ],
)
def test_bad_models(tmp_path, rng, make, error, fragments):
    path = make(tmp_path, rng)
    with pytest.raises(error) as info:
        persistence.load_model(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_bad_models_on_object_store(memfs, rng):
    fs, root = memfs
    url = f"{root}/m"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        persistence.load_model(url)
    persistence.save_model(url, make_params("full", rng))
    meta = json.loads(fs.cat_file(f"{url.removeprefix('memory://')}/model.json"))
    means = [e["path"] for e in meta["files"] if e["name"] == "means.npy"][0]
    fs.pipe_file(f"{url.removeprefix('memory://')}/{means}", b"\x93NUMPY")
    with pytest.raises(ModelFormatError, match="truncated"):
        persistence.load_model(url)


@pytest.mark.parametrize(
    "make_target, error, fragments",
    [
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file" / "model",
            TargetNotWritableError,
            ["file/model", "Cannot write"],
            id="parent-is-a-file",
        ),
        pytest.param(
            lambda p: (p / "taken").write_text("x") and p / "taken",
            TargetExistsError,
            ["taken", "already exists", "overwrite"],
            id="existing-file",
        ),
        pytest.param(
            lambda p: (p / "m").mkdir() or (p / "m" / "model.json").write_text("{}") and p / "m",
            TargetExistsError,
            ["already exists", "overwrite"],
            id="existing-model",
        ),
    ],
)
def test_bad_destinations(tmp_path, rng, make_target, error, fragments):
    target = make_target(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(error) as info:
        persistence.save_model(target, make_params("full", rng))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written or lost


def test_file_names_must_be_plain(tmp_path):
    with pytest.raises(ValueError, match="plain names"):
        persistence.write_dir(tmp_path / "d", {"../escape.npy": b""})


# -- the estimator: save / load, scikit-learn round trip ----------------------------


@pytest.fixture(scope="module")
def fitted():
    """One small fitted dgmm model per covariance type (fitted once per module)."""
    from dgmm import GaussianMixture

    from ._helpers import make_mixture

    data = make_mixture(np.random.default_rng(5), n_samples=600, n_features=3, n_components=3)
    models = {
        ct: GaussianMixture(3, covariance_type=ct, random_state=0, max_iter=30).fit(data.X)
        for ct in COVARIANCE_TYPES
    }
    return data.X, models


ESTIMATOR_ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
FIT_ATTRS = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "history_", "n_features_in_")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_estimator_save_load_round_trip(tmp_path, fitted, covariance_type):
    import dgmm

    X, models = fitted
    gmm = models[covariance_type]
    gmm.save(tmp_path / "model")
    loaded = dgmm.load(tmp_path / "model")
    assert type(loaded) is type(gmm)
    for name in ESTIMATOR_ATTRS:
        assert np.array_equal(getattr(loaded, name), getattr(gmm, name)), name
    for name in FIT_ATTRS:
        assert getattr(loaded, name) == getattr(gmm, name), name
    assert loaded.get_params() == gmm.get_params()
    assert np.array_equal(loaded.predict(X), gmm.predict(X))
    assert loaded.score(X) == gmm.score(X)
    assert np.array_equal(loaded.sample(50)[0], gmm.sample(50)[0])
    # And once more through the classmethod and a second save.
    loaded.save(tmp_path / "again")
    again = type(gmm).load(tmp_path / "again")
    assert np.array_equal(again.means_, gmm.means_) and again.history_ == gmm.history_


def test_save_keeps_feature_names(tmp_path, rng):
    import pandas as pd

    import dgmm

    frame = pd.DataFrame(rng.normal(size=(200, 2)), columns=["height", "weight"])
    gmm = dgmm.GaussianMixture(2, random_state=0).fit(frame)
    gmm.save(tmp_path / "model")
    loaded = dgmm.load(tmp_path / "model")
    assert list(loaded.feature_names_in_) == ["height", "weight"]
    assert np.array_equal(loaded.predict(frame), gmm.predict(frame))
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(frame.rename(columns={"weight": "mass"}))


def test_save_drops_cluster_settings(tmp_path, rng, client):
    """Where a fit ran is not part of the model: a saved address would be stale."""
    import dgmm

    X = rng.normal(size=(200, 2))
    gmm = dgmm.GaussianMixture(2, random_state=0, scheduler_address=client.scheduler.address).fit(X)
    gmm.save(tmp_path / "model")
    assert client.scheduler.address not in (tmp_path / "model" / "model.json").read_text()
    loaded = dgmm.load(tmp_path / "model")
    assert loaded.scheduler_address is None and loaded.client is None
    assert np.array_equal(loaded.predict(X), gmm.predict(X))


def test_save_drops_checkpoint_settings(tmp_path, rng):
    """A checkpoint belongs to one run, and its storage options may hold secrets."""
    import dgmm

    X = rng.normal(size=(200, 2))
    gmm = dgmm.GaussianMixture(
        2,
        random_state=0,
        checkpoint=str(tmp_path / "ckpt"),
        checkpoint_storage_options={"secret": "hunter2"},
    ).fit(X)
    gmm.save(tmp_path / "model")
    text = (tmp_path / "model" / "model.json").read_text()
    assert "hunter2" not in text and "ckpt" not in text
    loaded = dgmm.load(tmp_path / "model")
    assert loaded.checkpoint is None and loaded.checkpoint_storage_options is None
    assert loaded.history_ == gmm.history_


def test_unfitted_model_is_not_saved(tmp_path):
    import dgmm

    with pytest.raises(NotFittedError):
        dgmm.GaussianMixture(2).save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_model_without_fit_summary_loads(tmp_path, rng):
    """A model written by save_model alone (true parameters from `dgmm generate`)."""
    import dgmm

    params = make_params("spherical", rng)
    persistence.save_model(tmp_path / "truth", params, {"generated": {"seed": 1}})
    gmm = dgmm.load(tmp_path / "truth")
    assert gmm.n_components == 3 and gmm.covariance_type == "spherical"
    assert gmm.predict(rng.normal(size=(5, 4))).shape == (5,)
    assert gmm.history_ == [] and gmm.n_features_in_ == 4


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_to_sklearn_predicts_the_same(fitted, covariance_type):
    X, models = fitted
    gmm = models[covariance_type]
    sk = gmm.to_sklearn()
    assert isinstance(sk, SklearnGaussianMixture)
    assert np.array_equal(sk.predict(X), gmm.predict(X))
    _close(sk.predict_proba(X), gmm.predict_proba(X))
    _close(sk.score_samples(X), gmm.score_samples(X))
    assert sk.n_iter_ == gmm.n_iter_ and sk.lower_bound_ == gmm.lower_bound_
    assert sk.get_params()["covariance_type"] == covariance_type
    assert np.array_equal(sk.sample(10)[1].shape, (10,))  # fitted enough to sample


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_from_sklearn_predicts_the_same_and_saves(tmp_path, fitted, covariance_type):
    import dgmm

    X, _ = fitted
    sk = SklearnGaussianMixture(3, covariance_type=covariance_type, random_state=1).fit(X)
    gmm = dgmm.GaussianMixture.from_sklearn(sk)
    assert isinstance(gmm, dgmm.GaussianMixture)
    assert np.array_equal(gmm.predict(X), sk.predict(X))
    _close(gmm.predict_proba(X), sk.predict_proba(X))
    _close(gmm.score_samples(X), sk.score_samples(X))
    assert gmm.lower_bounds_ == list(sk.lower_bounds_)
    assert [h["lower_bound"] for h in gmm.history_] == list(sk.lower_bounds_)
    assert gmm.n_iter_ == sk.n_iter_ and gmm.converged_ == sk.converged_
    gmm.save(tmp_path / "m")
    back = dgmm.load(tmp_path / "m").to_sklearn()
    for name in ESTIMATOR_ATTRS:
        assert np.array_equal(getattr(back, name), getattr(sk, name)), name


@pytest.mark.parametrize(
    "make, error, fragment",
    [
        pytest.param(
            lambda: BayesianGaussianMixture(n_components=2),
            TypeError,
            "sklearn.mixture.GaussianMixture",
            id="bayesian-mixture",
        ),
        pytest.param(
            lambda: KMeans(2),
            TypeError,
            "KMeans",
            id="not-a-mixture",
        ),
        pytest.param(
            lambda: SklearnGaussianMixture(2),
            NotFittedError,
            "not fitted",
            id="unfitted",
        ),
    ],
)
def test_from_sklearn_bad_inputs(make, error, fragment):
    import dgmm

    with pytest.raises(error, match=fragment):
        dgmm.GaussianMixture.from_sklearn(make())


def test_s3_round_trip(s3_server, fitted):
    """Save to and load from an s3:// URL on moto's server; overwrite swaps the model."""
    import dgmm

    from .s3 import new_bucket

    X, models = fitted
    options = s3_server["storage_options"]
    url = f"s3://{new_bucket(s3_server)}/models/m1"
    models["full"].save(url, storage_options=options)
    with pytest.raises(TargetExistsError):
        models["diag"].save(url, storage_options=options)
    loaded = dgmm.load(url, storage_options=options)
    assert np.array_equal(loaded.means_, models["full"].means_)
    assert loaded.history_ == models["full"].history_
    models["diag"].save(url, storage_options=options, overwrite=True)
    loaded = dgmm.load(url, storage_options=options)
    assert loaded.covariance_type == "diag"
    assert np.array_equal(loaded.predict(X), models["diag"].predict(X))
    with pytest.raises(ModelNotFoundError):
        dgmm.load(url + "-missing", storage_options=options)
