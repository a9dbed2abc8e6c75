"""dtypes as scikit-learn's: fitted attributes and predictions follow the data (issue 10, item 4).

scikit-learn 1.9 fitted on float32 X has float32 ``weights_``, ``means_``,
``covariances_``, ``precisions_`` and ``precisions_cholesky_``; its
``predict_proba`` and ``score_samples`` return float32 only for float32 X on
a float32 model (NumPy's promotion otherwise). dgmm sums in float64 inside
and casts at the estimator's boundary; model files and the scikit-learn
conversions keep the dtype.
"""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from dgmm import GaussianMixture, load
from dgmm.errors import ModelFormatError

from ._helpers import COVARIANCE_TYPES, make_mixture

ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return make_mixture(np.random.default_rng(7), n_samples=600).X


def _fit(cls, X: np.ndarray, covariance_type: str, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(n_components=3, covariance_type=covariance_type, random_state=0, **params).fit(X)


@pytest.fixture(scope="module")
def fitted(X):
    """``{(covariance_type, dtype name): (dgmm model, scikit-learn model)}`` on the same data."""
    return {
        (ct, np.dtype(dt).name): (_fit(GaussianMixture, X.astype(dt), ct), _fit(SKGaussianMixture, X.astype(dt), ct))
        for ct in COVARIANCE_TYPES for dt in DTYPES
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("fit_dtype", DTYPES, ids=["float32", "float64"])
def test_fitted_attributes_have_the_data_dtype_as_scikit_learn(fitted, covariance_type, fit_dtype):
    ours, theirs = fitted[covariance_type, np.dtype(fit_dtype).name]
    for name in ATTRIBUTES:
        assert getattr(ours, name).dtype == fit_dtype, name
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype, name
    # The parameters behind them are float64, whatever the attributes' dtype.
    assert ours.params_.means.dtype == np.float64


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("fit_dtype", DTYPES, ids=["fit-float32", "fit-float64"])
@pytest.mark.parametrize("x_dtype", DTYPES, ids=["X-float32", "X-float64"])
def test_prediction_dtypes_as_scikit_learn(fitted, X, covariance_type, fit_dtype, x_dtype):
    ours, theirs = fitted[covariance_type, np.dtype(fit_dtype).name]
    x = X[:50].astype(x_dtype)
    # float32 only for float32 X on a float32 model: NumPy's promotion, as scikit-learn's.
    expected = np.float32 if fit_dtype == x_dtype == np.float32 else np.float64
    for method in ("predict_proba", "score_samples"):
        out = getattr(ours, method)(x)
        assert out.dtype == expected, method
        assert out.dtype == getattr(theirs, method)(x).dtype, method
    assert ours.predict(x).dtype == theirs.predict(x).dtype == np.int64
    assert isinstance(ours.score(x), float)


@pytest.mark.parametrize("fit_dtype", DTYPES, ids=["fit-float32", "fit-float64"])
@pytest.mark.parametrize("x_dtype", DTYPES, ids=["X-float32", "X-float64"])
def test_lazy_predictions_have_the_same_dtypes(fitted, X, fit_dtype, x_dtype):
    ours, _ = fitted["full", np.dtype(fit_dtype).name]
    x = X[:200].astype(x_dtype)
    expected = np.float32 if fit_dtype == x_dtype == np.float32 else np.float64
    for method in ("predict_proba", "score_samples"):
        lazy = getattr(ours, method)(da.from_array(x, chunks=64))
        assert lazy.dtype == expected, method
        computed = lazy.compute()
        assert computed.dtype == expected, method
        np.testing.assert_array_equal(computed, getattr(ours, method)(x))


def test_float32_attributes_are_the_float64_fit_rounded(fitted):
    # Same fit, cast at the boundary: the float32 model's params_ are its attributes.
    ours, theirs = fitted["full", "float32"]
    np.testing.assert_array_equal(ours.params_.means, ours.means_.astype(np.float64))
    np.testing.assert_allclose(ours.score_samples(ours.means_), theirs.score_samples(ours.means_), rtol=1e-3)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("fit_dtype", DTYPES, ids=["float32", "float64"])
def test_saved_model_loads_with_its_dtype(fitted, tmp_path, covariance_type, fit_dtype):
    ours, _ = fitted[covariance_type, np.dtype(fit_dtype).name]
    ours.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["attributes_dtype"] == np.dtype(fit_dtype).name
    loaded = load(tmp_path / "m")
    for name in ATTRIBUTES:
        value = getattr(loaded, name)
        assert value.dtype == fit_dtype, name
        np.testing.assert_array_equal(value, getattr(ours, name), err_msg=name)


def test_model_without_dtype_field_loads_as_float64(fitted, tmp_path):
    # Models written before the field existed: float64, as they were fitted then.
    ours, _ = fitted["diag", "float32"]
    ours.save(tmp_path / "m")
    manifest = tmp_path / "m" / "model.json"
    meta = json.loads(manifest.read_text())
    del meta["attributes_dtype"]
    manifest.write_text(json.dumps(meta))
    loaded = load(tmp_path / "m")
    for name in ATTRIBUTES:
        assert getattr(loaded, name).dtype == np.float64, name
    np.testing.assert_array_equal(loaded.means_, ours.means_.astype(np.float64))


def test_model_with_an_unknown_dtype_is_a_format_error(fitted, tmp_path):
    ours, _ = fitted["diag", "float64"]
    ours.save(tmp_path / "m")
    manifest = tmp_path / "m" / "model.json"
    meta = json.loads(manifest.read_text())
    meta["attributes_dtype"] = "float16"
    manifest.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=r"attributes_dtype 'float16'.*float32.*float64"):
        load(tmp_path / "m")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("fit_dtype", DTYPES, ids=["float32", "float64"])
def test_to_and_from_sklearn_keep_the_dtype(fitted, X, covariance_type, fit_dtype):
    ours, theirs = fitted[covariance_type, np.dtype(fit_dtype).name]
    converted = ours.to_sklearn()
    x = X[:100].astype(fit_dtype)
    for name in ATTRIBUTES:
        assert getattr(converted, name).dtype == fit_dtype, name
        np.testing.assert_array_equal(getattr(converted, name), getattr(ours, name), err_msg=name)
    assert converted.predict_proba(x).dtype == ours.predict_proba(x).dtype
    back = GaussianMixture.from_sklearn(theirs)
    for name in ATTRIBUTES:
        assert getattr(back, name).dtype == fit_dtype, name
        # precisions_ is recomputed from the Cholesky factors (in float64), the rest copied.
        rtol = 1e-5 if name == "precisions_" else 0.0
        np.testing.assert_allclose(getattr(back, name), getattr(theirs, name), rtol=rtol, err_msg=name)
    assert back.score_samples(x).dtype == theirs.score_samples(x).dtype
