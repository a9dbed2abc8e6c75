"""``dgmm.GaussianMixture`` as a scikit-learn estimator.

scikit-learn's own estimator checks on a few configurations, the estimator in
scikit-learn's tools (Pipeline, clone, GridSearchCV), and its API against
scikit-learn's GaussianMixture given the same parameters.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from dgmm import GaussianMixture

from ._helpers import COVARIANCE_TYPES, dense_covariance, make_mixture

# -- scikit-learn's estimator checks -----------------------------------------

CHECKED_ESTIMATORS = [
    GaussianMixture(),
    GaussianMixture(n_components=2, covariance_type="diag", init_params="k-means++"),
    GaussianMixture(n_components=2, covariance_type="tied", init_params="split", n_init=2),
]

# Checks that scikit-learn skips in this environment, for every configuration.
ALWAYS_EXPECTED = {
    "check_array_api_input": (
        "scikit-learn skips it unless SCIPY_ARRAY_API=1 is set before scipy is "
        "imported; dgmm computes with NumPy/Dask, it does not dispatch on the "
        "array API"
    ),
}

# Per configuration (keyed by init_params): what cannot hold and why.
EXPECTED_BY_INIT = {
    "k-means++": {
        "check_sample_weight_equivalence_on_dense_data": (
            "k-means++ draws its centres at random: weighting a row and repeating "
            "it change what the same seed draws, so EM ends in a different local "
            "optimum or a different component order (scikit-learn lists the same "
            "check as expected to fail for KMeans)"
        ),
    },
}


def expected_failed_checks(estimator: GaussianMixture) -> dict[str, str]:
    return {**ALWAYS_EXPECTED, **EXPECTED_BY_INIT.get(estimator.init_params, {})}


@parametrize_with_checks(CHECKED_ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- shared data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return make_mixture(np.random.default_rng(7), n_samples=1500, n_features=3, n_components=3)


@pytest.fixture(scope="module")
def fitted(data) -> GaussianMixture:
    return GaussianMixture(n_components=3, random_state=0).fit(data.X)


# -- scikit-learn's tools ----------------------------------------------------------


def test_pipeline_with_scaler(data):
    pipe = make_pipeline(StandardScaler(), GaussianMixture(n_components=3, random_state=0))
    labels = pipe.fit(data.X).predict(data.X)
    assert isinstance(pipe, Pipeline)
    assert labels.shape == (data.X.shape[0],)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.isfinite(pipe.score(data.X))
    assert pipe.predict_proba(data.X).shape == (data.X.shape[0], 3)
    # The labels agree with the generating clusters up to a permutation.
    table = np.zeros((3, 3), dtype=int)
    np.add.at(table, (labels, data.labels), 1)
    assert table.max(axis=1).sum() >= 0.98 * data.X.shape[0]


def test_clone_gives_unfitted_copy_with_same_params(fitted):
    copy = clone(fitted)
    assert copy is not fitted
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "means_")
    assert not hasattr(copy, "n_features_in_")


def test_grid_search_over_components_and_covariance_type(data):
    search = GridSearchCV(
        GaussianMixture(random_state=0),
        {"n_components": [1, 3], "covariance_type": ["full", "diag"]},
        cv=3,
    )
    search.fit(data.X)
    # Three well-separated clusters: held-out log-likelihood prefers three components.
    assert search.best_params_["n_components"] == 3
    assert search.cv_results_["mean_test_score"].shape == (4,)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.means_.shape == (3, 3)


def test_get_params_set_params():
    gmm = GaussianMixture()
    params = gmm.get_params()
    assert params["n_components"] == 1
    assert params["covariance_type"] == "full"
    assert {"chunks", "split_every", "block_size", "on_degenerate"} <= set(params)
    assert gmm.set_params(n_components=4, covariance_type="diag") is gmm
    assert gmm.get_params()["n_components"] == 4
    assert gmm.covariance_type == "diag"
    with pytest.raises(ValueError, match="n_comp"):
        gmm.set_params(n_comp=3)


# -- fitted attributes and prediction ------------------------------------------------


def test_fitted_attributes(fitted, data):
    assert fitted.n_features_in_ == data.X.shape[1]
    assert not hasattr(fitted, "feature_names_in_")
    assert fitted.weights_.shape == (3,)
    assert fitted.means_.shape == (3, 3)
    assert fitted.covariances_.shape == (3, 3, 3)
    assert fitted.converged_
    assert fitted.n_iter_ == len(fitted.history_) == len(fitted.lower_bounds_)
    assert fitted.lower_bound_ == fitted.lower_bounds_[-1]


def test_fit_predict_equals_fit_then_predict(data):
    labels = GaussianMixture(n_components=3, random_state=1).fit_predict(data.X)
    again = GaussianMixture(n_components=3, random_state=1).fit(data.X).predict(data.X)
    np.testing.assert_array_equal(labels, again)


def test_fit_predict_dask_is_lazy_and_equal(data):
    x = da.from_array(data.X, chunks=500)
    labels = GaussianMixture(n_components=3, random_state=1).fit_predict(x)
    assert isinstance(labels, da.Array)
    again = GaussianMixture(n_components=3, random_state=1).fit(x).predict(data.X)
    np.testing.assert_array_equal(labels.compute(), again)


def test_feature_names_from_pandas(data):
    columns = ["a", "b", "c"]
    frame = pd.DataFrame(data.X, columns=columns)
    gmm = GaussianMixture(n_components=3, random_state=0).fit(frame)
    np.testing.assert_array_equal(gmm.feature_names_in_, columns)
    assert gmm.n_features_in_ == 3
    assert gmm.predict(frame).shape == (len(frame),)
    with pytest.raises(ValueError, match="feature names"):
        gmm.predict(frame[["c", "b", "a"]])
    with pytest.warns(UserWarning, match="feature names"):
        gmm.predict(data.X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_numpy_in_numpy_out_dask_in_lazy_out(fitted, data, method):
    eager = getattr(fitted, method)(data.X)
    assert isinstance(eager, np.ndarray)
    lazy = getattr(fitted, method)(da.from_array(data.X, chunks=400))
    assert isinstance(lazy, da.Array)
    assert lazy.shape == eager.shape
    assert lazy.dtype == eager.dtype
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12, atol=1e-300)


def test_predict_proba_rows_sum_to_one(fitted, data):
    proba = fitted.predict_proba(data.X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(proba.argmax(axis=1), fitted.predict(data.X))


def test_float32_input_keeps_float32(data):
    x32 = data.X.astype(np.float32)
    gmm = GaussianMixture(n_components=3, random_state=0).fit(x32)
    assert gmm.means_.dtype == np.float32  # scikit-learn's attributes have the data's dtype
    assert gmm.predict_proba(x32).dtype == np.float32
    assert gmm.score_samples(x32).dtype == np.float32
    lazy = gmm.predict_proba(da.from_array(x32, chunks=500))
    assert lazy.dtype == np.float32
    assert lazy.compute().dtype == np.float32


# -- agreement with scikit-learn on the same parameters -------------------------------


def sklearn_twin(gmm: GaussianMixture) -> SKGaussianMixture:
    """A scikit-learn GaussianMixture holding ``gmm``'s fitted parameters."""
    twin = SKGaussianMixture(n_components=gmm.n_components, covariance_type=gmm.covariance_type)
    twin.weights_ = gmm.weights_
    twin.means_ = gmm.means_
    twin.covariances_ = gmm.covariances_
    twin.precisions_cholesky_ = gmm.precisions_cholesky_
    twin.precisions_ = gmm.precisions_
    twin.n_features_in_ = gmm.n_features_in_
    twin.converged_ = True
    return twin


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def fitted_by_type(request, data) -> GaussianMixture:
    return GaussianMixture(n_components=3, covariance_type=request.param, random_state=0).fit(data.X)


def test_score_bic_aic_agree_with_sklearn(fitted_by_type, data):
    gmm = fitted_by_type
    twin = sklearn_twin(gmm)
    held_out = make_mixture(np.random.default_rng(8), n_samples=500).X
    for X in (data.X, held_out):
        np.testing.assert_allclose(gmm.score_samples(X), twin.score_samples(X), rtol=1e-10)
        np.testing.assert_allclose(gmm.predict_proba(X), twin.predict_proba(X), rtol=1e-8, atol=1e-12)
        assert gmm.score(X) == pytest.approx(twin.score(X), rel=1e-10)
        assert gmm.bic(X) == pytest.approx(twin.bic(X), rel=1e-10)
        assert gmm.aic(X) == pytest.approx(twin.aic(X), rel=1e-10)
    np.testing.assert_allclose(gmm.precisions_, twin.precisions_)
    assert gmm._n_parameters() == twin._n_parameters()


def test_score_bic_aic_accept_dask_and_lists(fitted, data):
    x = da.from_array(data.X, chunks=400)
    assert fitted.score(x) == pytest.approx(fitted.score(data.X), rel=1e-12)
    assert fitted.bic(x) == pytest.approx(fitted.bic(data.X), rel=1e-12)
    rows = data.X[:50].tolist()
    assert fitted.aic(rows) == pytest.approx(fitted.aic(data.X[:50]), rel=1e-12)


# -- sampling ---------------------------------------------------------------------------


def test_sample_shapes_and_labels(fitted):
    X, y = fitted.sample(10)
    assert X.shape == (10, 3)
    assert y.shape == (10,)
    assert set(y.tolist()) <= {0, 1, 2}
    X1, y1 = fitted.sample()
    assert X1.shape == (1, 3) and y1.shape == (1,)
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_sample_moments_match_model(fitted_by_type):
    gmm = fitted_by_type
    n = 200_000
    X, y = gmm.sample(n)
    assert X.shape == (n, 3)
    counts = np.bincount(y, minlength=3)
    # Multinomial counts: within 5 standard deviations of n * w.
    np.testing.assert_array_less(np.abs(counts - n * gmm.weights_), 5 * np.sqrt(n * gmm.weights_) + 1)
    for k in range(3):
        cov_k = _full_covariance(gmm, k)
        Xk = X[y == k]
        std_err = np.sqrt(np.diag(cov_k) / len(Xk))
        np.testing.assert_array_less(np.abs(Xk.mean(axis=0) - gmm.means_[k]), 6 * std_err)
        np.testing.assert_allclose(np.cov(Xk, rowvar=False), cov_k, atol=0.05 * np.abs(cov_k).max())


def _full_covariance(gmm: GaussianMixture, k: int) -> np.ndarray:
    return dense_covariance(gmm.covariances_, gmm.covariance_type, k, gmm.means_.shape[1])


# -- warm start, convergence, verbosity -------------------------------------------------


def test_warm_start_continues_previous_solution(data):
    """2 iterations, then 2 more warm-started, are the 4 iterations of one fit."""
    kwargs = dict(n_components=3, random_state=0, tol=0.0, max_iter=2)
    warm = GaussianMixture(warm_start=True, **kwargs)
    with pytest.warns(ConvergenceWarning):
        warm.fit(data.X)
    first_bounds = list(warm.lower_bounds_)
    with pytest.warns(ConvergenceWarning):
        warm.fit(data.X)
    cold = GaussianMixture(**{**kwargs, "max_iter": 4})
    with pytest.warns(ConvergenceWarning):
        cold.fit(data.X)
    np.testing.assert_allclose(first_bounds + warm.lower_bounds_, cold.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(warm.means_, cold.means_, rtol=1e-10)
    np.testing.assert_allclose(warm.covariances_, cold.covariances_, rtol=1e-10)
    assert warm.n_iter_ == 2


def test_warm_start_false_restarts(data):
    kwargs = dict(n_components=3, random_state=0, tol=0.0, max_iter=2)
    gmm = GaussianMixture(**kwargs)
    with pytest.warns(ConvergenceWarning):
        gmm.fit(data.X)
    first = gmm.means_.copy()
    with pytest.warns(ConvergenceWarning):
        gmm.fit(data.X)
    np.testing.assert_array_equal(gmm.means_, first)


def test_convergence_warning_when_not_converged(data):
    gmm = GaussianMixture(n_components=3, max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        gmm.fit(data.X)
    assert not gmm.converged_
    assert gmm.n_iter_ == 1


def test_no_warning_when_converged(fitted):
    # pytest turns warnings into errors: the module's fit raised none.
    assert fitted.converged_


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_runs(data, verbose, capsys):
    gmm = GaussianMixture(n_components=3, random_state=0, verbose=verbose, verbose_interval=1)
    gmm.fit(data.X)
    assert gmm.converged_
    out = capsys.readouterr()
    if verbose == 2:
        assert "lower bound" in out.out + out.err
