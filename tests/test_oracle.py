"""The oracle: from identical initial parameters, k dgmm iterations equal k
scikit-learn iterations (rtol 1e-10 in float64) for every covariance type,
through the whole Dask path (several chunks, tree reduction)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import dgmm

from ._helpers import initial_params, make_mixture

RTOL = 1e-10


def run_both(X, n_components, covariance_type, n_iter, **dgmm_kwargs):
    init = initial_params(X, n_components, covariance_type)
    common = dict(covariance_type=covariance_type, max_iter=n_iter, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SKGaussianMixture(n_components, **common).fit(X)
        dg = dgmm.GaussianMixture(n_components, **common, **dgmm_kwargs).fit(X)
    return sk, dg


def assert_same_fit(dg, sk, rtol=RTOL):
    scale = np.abs(sk.covariances_).max()
    np.testing.assert_allclose(dg.weights_, sk.weights_, rtol=rtol, err_msg="weights")
    np.testing.assert_allclose(dg.means_, sk.means_, rtol=rtol, atol=rtol * np.abs(sk.means_).max(), err_msg="means")
    np.testing.assert_allclose(dg.covariances_, sk.covariances_, rtol=rtol, atol=rtol * scale, err_msg="covariances")
    np.testing.assert_allclose(dg.lower_bounds_, sk.lower_bounds_, rtol=rtol, err_msg="lower bounds")
    assert dg.lower_bound_ == pytest.approx(sk.lower_bound_, rel=rtol)
    assert dg.n_iter_ == sk.n_iter_  # tol=0: both run max_iter, whatever the rounding


def assert_same_stop(dg, sk, tol, rtol):
    """Both stop at the same iteration, unless the change that decided it was
    within rounding (rtol of the bound) of ``tol``: then one iteration apart."""
    if dg.n_iter_ == sk.n_iter_:
        return
    assert abs(dg.n_iter_ - sk.n_iter_) == 1
    first = min(dg.n_iter_, sk.n_iter_)
    change = abs(sk.lower_bounds_[first - 1] - sk.lower_bounds_[first - 2])
    assert abs(change - tol) <= rtol * (1.0 + abs(sk.lower_bounds_[first - 1]))


def assert_same_labels(dg, sk, X, rtol):
    """Equal argmax labels, except rows whose two best log-responsibilities
    tie within rounding (rtol), where either label is right."""
    labels_dg, labels_sk = dg.predict(X), sk.predict(X)
    differ = np.flatnonzero(labels_dg != labels_sk)
    if differ.size:
        log_resp = np.log(sk.predict_proba(X[differ]))
        rows = np.arange(differ.size)
        gap = np.abs(log_resp[rows, labels_dg[differ]] - log_resp[rows, labels_sk[differ]])
        assert np.all(gap <= rtol * (1.0 + np.abs(log_resp[rows, labels_sk[differ]])))


@pytest.mark.parametrize("n_iter", [1, 5])
def test_generated_mixture_matches_sklearn(rng, covariance_type, n_iter):
    data = make_mixture(rng, n_samples=4000, n_features=5, n_components=4)
    sk, dg = run_both(data.X, 4, covariance_type, n_iter, chunks=700, split_every=3)
    assert_same_fit(dg, sk)


BUNDLED = {
    "iris": (datasets.load_iris, 3),
    "wine": (datasets.load_wine, 3),
    "breast_cancer": (datasets.load_breast_cancer, 2),
    "digits": (datasets.load_digits, 10),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_datasets_match_sklearn(name, covariance_type):
    loader, k = BUNDLED[name]
    X = loader().data.astype(np.float64)
    # Standardised as anyone would before a mixture fit; digits keeps its
    # constant pixels, which only reg_covar keeps non-singular.
    scale = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    sk, dg = run_both(X, k, covariance_type, 10, chunks=max(50, X.shape[0] // 5))
    assert_same_fit(dg, sk)


def test_converged_fit_matches_sklearn(rng, covariance_type):
    # With the default tol both stop at the same iteration with the same answer.
    data = make_mixture(rng, n_samples=3000, n_features=3, n_components=3)
    init = initial_params(data.X, 3, covariance_type)
    sk = SKGaussianMixture(3, covariance_type=covariance_type, tol=1e-6, max_iter=500, **init).fit(data.X)
    dg = dgmm.GaussianMixture(3, covariance_type=covariance_type, tol=1e-6, max_iter=500, chunks=500, **init).fit(data.X)
    assert dg.converged_ and sk.converged_
    assert_same_stop(dg, sk, tol=1e-6, rtol=1e-8)
    if dg.n_iter_ != sk.n_iter_:
        # A tie at the stopping rule: the fits agree up to the shorter one.
        n = min(dg.n_iter_, sk.n_iter_)
        np.testing.assert_allclose(dg.lower_bounds_[:n], sk.lower_bounds_[:n], rtol=1e-8)
        return
    np.testing.assert_allclose(dg.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    scale = np.abs(sk.covariances_).max()
    np.testing.assert_allclose(dg.weights_, sk.weights_, rtol=1e-8)
    np.testing.assert_allclose(dg.means_, sk.means_, rtol=1e-8, atol=1e-8 * np.abs(sk.means_).max())
    np.testing.assert_allclose(dg.covariances_, sk.covariances_, rtol=1e-8, atol=1e-8 * scale)
    assert_same_labels(dg, sk, data.X, rtol=1e-8)
    np.testing.assert_allclose(dg.predict_proba(data.X), sk.predict_proba(data.X), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dg.score_samples(data.X), sk.score_samples(data.X), rtol=1e-10)


def test_sample_weight_equals_row_repetition(rng, covariance_type):
    data = make_mixture(rng, n_samples=1500, n_features=3, n_components=3)
    counts = rng.integers(0, 4, data.X.shape[0])
    init = initial_params(data.X, 3, covariance_type)
    common = dict(covariance_type=covariance_type, max_iter=6, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = dgmm.GaussianMixture(3, chunks=400, **common).fit(data.X, sample_weight=counts)
        repeated = SKGaussianMixture(3, **common).fit(np.repeat(data.X, counts, axis=0))
    assert_same_fit(weighted, repeated, rtol=1e-9)
