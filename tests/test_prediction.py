"""Prediction on parameters (dgmm.fit.predict): no estimator, no fit.

scikit-learn's GaussianMixture holding the same parameters is the oracle.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from dgmm.core.params import GMMParams
from dgmm.errors import InvalidOptionError, InvalidDataError, ShapeMismatchError
from dgmm.fit.predict import predict, predict_to

from ._helpers import ReadCounter, random_params

NAMES = np.array(["a", "b", "c", "d"], dtype=object)
SKLEARN = {"labels": "predict", "proba": "predict_proba", "score_samples": "score_samples"}


def sklearn_twin(params: GMMParams) -> SKGaussianMixture:
    sk = SKGaussianMixture(params.n_components, covariance_type=params.covariance_type)
    sk.weights_, sk.means_ = params.weights, params.means
    sk.covariances_, sk.precisions_cholesky_ = params.covariances, params.precisions_cholesky
    return sk


@pytest.fixture
def params(rng, covariance_type) -> GMMParams:
    return random_params(rng, covariance_type, n_components=3, n_features=4)


@pytest.fixture
def X(rng) -> np.ndarray:
    return rng.normal(0.0, 3.0, size=(1000, 4))


@pytest.mark.parametrize("what", ["labels", "proba", "score_samples"])
def test_numpy_in_numpy_out_agrees_with_sklearn(params, X, what):
    got = predict(params, X, what)
    assert isinstance(got, np.ndarray)
    want = getattr(sklearn_twin(params), SKLEARN[what])(X)
    assert got.shape == want.shape
    if what == "labels":
        # Ties aside, the same component; compare through the probabilities' argmax.
        np.testing.assert_array_equal(got, np.argmax(predict(params, X, "proba"), axis=1))
        assert np.mean(got == want) > 0.99
    else:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("what", ["labels", "proba", "score_samples"])
def test_dask_in_lazy_dask_out(params, X, what):
    x = da.from_array(X, chunks=(300, 4))
    got = predict(params, x, what)
    assert isinstance(got, da.Array)
    assert got.chunks[0] == x.chunks[0]
    np.testing.assert_allclose(got.compute(), predict(params, X, what), rtol=1e-12, atol=1e-12)


def test_float32_stays_float32(rng):
    params = random_params(rng, "full", n_components=2, n_features=4)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    assert predict(params, X, "score_samples").dtype == np.float32
    assert predict(params, da.from_array(X, chunks=20), "score_samples").dtype == np.float32


def test_proba_rows_sum_to_one(params, X):
    np.testing.assert_allclose(predict(params, X, "proba").sum(axis=1), 1.0, rtol=1e-12)


def test_feature_count_mismatch_names_the_estimator(params, X):
    with pytest.raises(ShapeMismatchError, match="X has 3 features, but MyMixture is expecting 4"):
        predict(params, X[:, :3], "labels", estimator_name="MyMixture")
    with pytest.raises(ShapeMismatchError, match="X has 3 features"):
        predict(params, da.from_array(X[:, :3]), "labels")


def test_feature_names_are_checked_against_the_fit(params, X):
    frame = pd.DataFrame(X, columns=list(NAMES))
    np.testing.assert_array_equal(
        predict(params, frame, "labels", feature_names_in=NAMES), predict(params, X, "labels")
    )
    renamed = pd.DataFrame(X, columns=["a", "b", "x", "d"])
    with pytest.raises(ValueError, match="(?s)unseen at fit time:\n- x\n.*now missing:\n- c\n"):
        predict(params, renamed, "labels", feature_names_in=NAMES)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        predict(params, X, "labels", feature_names_in=NAMES)
    with pytest.warns(UserWarning, match="X has feature names, but MyMixture was fitted without"):
        predict(params, frame, "labels", estimator_name="MyMixture")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(params, X, "labels")  # no names on either side: nothing to say


def test_non_finite_rows_are_named(params, X):
    X = X.copy()
    X[777, 2] = np.inf
    with pytest.raises(InvalidDataError, match="777"):
        predict(params, X, "labels")
    lazy = predict(params, da.from_array(X, chunks=(250, 4)), "proba")  # found inside the pass
    with pytest.raises(InvalidDataError, match="777"):
        lazy.compute()


def test_predict_to_writes_several_outputs_from_one_read(tmp_path, streamed):
    rng = np.random.default_rng(3)
    params = random_params(rng, "diag", n_components=3, n_features=4)
    X = rng.normal(0.0, 3.0, size=(1200, 4))
    counter = ReadCounter(X, 300)
    result = predict_to(
        params, counter.array, str(tmp_path / "p.zarr"),
        output=["labels", "proba", "log_density"], feature_names_in=None,
    )
    assert (result.format, result.n_rows, result.n_chunks) == ("zarr", 1200, 4)
    assert set(result.columns) == {"label", "proba", "log_density"}
    # One E-step per chunk serves the three outputs: every chunk read once.
    assert counter.counts == {chunk: 1 for chunk in range(4)}
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    np.testing.assert_array_equal(group["label"][:], predict(params, X, "labels"))
    np.testing.assert_allclose(group["proba"][:], predict(params, X, "proba"), rtol=1e-12)
    np.testing.assert_allclose(group["log_density"][:], predict(params, X, "score_samples"), rtol=1e-12)


@pytest.mark.parametrize(
    "output",
    [
        pytest.param("probability", id="unknown"),
        pytest.param(["labels", "labels"], id="duplicate"),
        pytest.param([], id="none"),
    ],
)
def test_predict_to_bad_output_writes_nothing(rng, tmp_path, output):
    params = random_params(rng, "spherical", n_components=2, n_features=4)
    with pytest.raises(InvalidOptionError, match="labels.*proba.*log_density"):
        predict_to(params, rng.normal(size=(10, 4)), str(tmp_path / "p.zarr"), output=output)
    assert list(tmp_path.iterdir()) == []


def test_predict_to_checks_feature_names(rng, tmp_path):
    params = random_params(rng, "tied", n_components=2, n_features=4)
    frame = pd.DataFrame(rng.normal(size=(10, 4)), columns=["a", "b", "c", "z"])
    with pytest.raises(ValueError, match="(?s)unseen at fit time:\n- z\n"):
        predict_to(params, frame, str(tmp_path / "p.parquet"), output="labels", feature_names_in=NAMES)
    assert list(tmp_path.iterdir()) == []


def test_sparse_chunks_are_refused_with_a_typed_error(rng, tmp_path):
    # A Gaussian mixture predicts dense rows: sparse input (in memory, Dask of CSR,
    # or an .npz store) is refused before any task runs, naming the remedy.
    import scipy.sparse as sp

    from dgmm.errors import UnsupportedInputError
    from dgmm.io.sparse import from_scipy

    params = random_params(rng, "diag", n_components=2, n_features=5)
    counts = sp.csr_matrix(rng.poisson(1.0, (60, 5)).astype(float))
    sp.save_npz(tmp_path / "counts.npz", counts, compressed=False)
    for X in (counts, from_scipy(counts, chunks=20), str(tmp_path / "counts.npz")):
        with pytest.raises(UnsupportedInputError, match="MultinomialMixture fits sparse counts"):
            predict(params, X, "labels")
    with pytest.raises(UnsupportedInputError, match="Densify it"):
        predict_to(params, from_scipy(counts, chunks=20), str(tmp_path / "out.zarr"), output="labels")
    assert not (tmp_path / "out.zarr").exists()
