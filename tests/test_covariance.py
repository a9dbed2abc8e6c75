"""The covariance classes against independent oracles: scipy's densities,
scikit-learn's parameter counts, sample moments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from dgmm.core.covariance import COVARIANCE_TYPES, get_covariance_model
from dgmm.core.params import GMMParams, split_component

from ._helpers import COVARIANCE_TYPES as TYPES
from ._helpers import dense_covariance, random_params


def full_covariance(params: GMMParams, k: int) -> np.ndarray:
    return dense_covariance(params.covariances, params.covariance_type, k, params.n_features)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_prob_matches_scipy(rng, covariance_type, dtype):
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 4, (200, params.n_features))
    c0 = params.center()
    xc = (X - c0).astype(dtype)
    got = params.model.log_prob(
        xc, (params.means - c0).astype(dtype), params.precisions_cholesky.astype(dtype)
    )
    assert got.dtype == dtype
    expected = np.column_stack(
        [
            multivariate_normal(params.means[k], full_covariance(params, k)).logpdf(X)
            for k in range(params.n_components)
        ]
    )
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("with_scratch", [False, True])
def test_weighted_log_prob_takes_either_memory_order(rng, covariance_type, order, with_scratch):
    # The hot paths keep designs and (rows, K) results by columns (Scratch.get_columns);
    # any order must give the same densities, reusing one scratch across blocks.
    from dgmm.core.covariance import Scratch

    params = random_params(rng, covariance_type, n_components=5, n_features=6)
    model, c0 = params.model, params.center()
    prepared = model.prepare(params.means - c0, params.precisions_cholesky, np.log(params.weights))
    scratch = Scratch() if with_scratch else None
    for n_rows in (300, 17):  # a smaller last block reuses the scratch arrays
        X = rng.normal(0, 4, (n_rows, params.n_features))
        a = np.asarray(model.design(X - c0), order=order)
        assert a.flags[f"{order}_CONTIGUOUS"]
        got = np.array(model.weighted_log_prob(a, prepared, scratch))
        expected = np.column_stack(
            [
                np.log(params.weights[k])
                + multivariate_normal(params.means[k], full_covariance(params, k)).logpdf(X)
                for k in range(params.n_components)
            ]
        )
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_log_prob_far_from_origin_float32(rng, covariance_type):
    # Centred at 1e4, float32: about c0 the kernel keeps the digits that
    # x^2 - 2 x mu + mu^2 about the origin would lose.
    params = random_params(rng, covariance_type, offset=1e4)
    X = params.means[0] + rng.normal(size=(100, params.n_features))
    c0 = params.center().astype(np.float32).astype(np.float64)
    got = params.model.log_prob(
        (X - c0).astype(np.float32),
        (params.means - c0).astype(np.float32),
        params.precisions_cholesky.astype(np.float32),
    )
    expected = multivariate_normal(params.means[0], full_covariance(params, 0)).logpdf(X)
    np.testing.assert_allclose(got[:, 0], expected, atol=1e-2)


@pytest.mark.parametrize("n_components,n_features", [(1, 1), (3, 4), (7, 2)])
def test_n_parameters_matches_sklearn(covariance_type, n_components, n_features):
    sk = SKGaussianMixture(n_components, covariance_type=covariance_type)
    sk.means_ = np.zeros((n_components, n_features))
    assert get_covariance_model(covariance_type).n_parameters(n_components, n_features) == sk._n_parameters()


def test_precisions_round_trip(rng, covariance_type):
    params = random_params(rng, covariance_type)
    again = GMMParams.from_precisions(params.weights, params.means, params.precisions, covariance_type)
    np.testing.assert_allclose(again.covariances, params.covariances, rtol=1e-10)
    np.testing.assert_allclose(again.precisions_cholesky, params.precisions_cholesky, rtol=1e-10, atol=1e-12)


def test_non_positive_definite_components_are_named(covariance_type):
    model = get_covariance_model(covariance_type)
    good = {
        "full": np.stack([np.eye(2), -np.eye(2), np.eye(2)]),
        "tied": -np.eye(2),
        "diag": np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        "spherical": np.array([1.0, -1.0, 1.0]),
    }[covariance_type]
    _, bad = model.precisions_cholesky(good)
    assert bad.tolist() == ([-1] if covariance_type == "tied" else [1])


def test_sample_component_moments(rng, covariance_type):
    params = random_params(rng, covariance_type, n_components=2, n_features=3)
    draws = params.model.sample_component(rng, params.means[1], params.covariances, 1, 200_000)
    np.testing.assert_allclose(draws.mean(axis=0), params.means[1], atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), full_covariance(params, 1), atol=0.05)


def test_split_halves_a_gaussian_along_its_axis(rng, covariance_type):
    # Splitting then re-merging the two halves gives back the parent's
    # weight, mean and (for full/diag) covariance: the mixture of the two
    # halves has the parent's first two moments.
    params = random_params(rng, covariance_type, n_components=3, n_features=3)
    split = split_component(params, 0, 2, rng)
    w = split.weights[[0, 2]]
    np.testing.assert_allclose(w[0], w[1])
    merged_mean = (w[0] * split.means[0] + w[1] * split.means[2]) / w.sum()
    np.testing.assert_allclose(merged_mean, params.means[0], atol=1e-12)
    if covariance_type in ("full", "diag"):
        c0, c2 = full_covariance(split, 0), full_covariance(split, 2)
        d = split.means[0] - merged_mean
        merged_cov = 0.5 * (c0 + c2) + np.outer(d, d)
        np.testing.assert_allclose(merged_cov, full_covariance(params, 0), atol=1e-12)


def test_unknown_covariance_type():
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        get_covariance_model("bogus")
    assert sorted(COVARIANCE_TYPES) == sorted(TYPES)


def test_precision_traces_are_traces_of_the_precisions(rng, covariance_type):
    params = random_params(rng, covariance_type)
    dense = np.stack(
        [np.linalg.inv(full_covariance(params, k)) for k in range(params.n_components)]
    )
    np.testing.assert_allclose(
        params.model.precision_traces(params.precisions_cholesky, params.n_components, params.n_features),
        np.trace(dense, axis1=1, axis2=2),
        rtol=1e-10,
    )


def test_smallest_pivot_flags_a_covariance_collapsed_along_one_axis():
    # Rank-deficient up to rounding: a line in 3-D. The smallest Cholesky
    # pivot is as tiny as the smallest eigenvalue, and never below it.
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    cov = np.stack([np.outer(axis, axis) * 4.0 + 1e-14 * np.eye(3), np.eye(3)])
    model = get_covariance_model("full")
    prec_chol, bad = model.precisions_cholesky(cov)
    smallest, largest = model.variance_extremes(cov, prec_chol)
    eig_min = np.linalg.eigvalsh(cov)[:, 0]
    assert smallest[0] < 1e-12 and smallest[1] == pytest.approx(1.0)
    # eigvalsh's own error is eps * ||cov|| (~1e-15), a tenth of a 1e-14
    # eigenvalue: compare within it, not at a relative tolerance of 1e-6.
    resolution = 16 * np.finfo(np.float64).eps * np.abs(cov).max(axis=(1, 2))
    assert np.all(smallest >= eig_min - resolution)
    np.testing.assert_allclose(largest, [4 * (2 / 3) ** 2 + 1e-14, 1.0])
