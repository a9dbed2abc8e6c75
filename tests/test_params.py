"""Parameters of a Gaussian mixture (dgmm.core.params) and their stored form."""

from __future__ import annotations

import numpy as np
import pytest

from dgmm.core.family import family_of
from dgmm.core.gaussian import GAUSSIAN
from dgmm.core.params import GMMParams, split_component
from dgmm.errors import DegenerateComponentError, InvalidOptionError, ModelFormatError, ShapeMismatchError

from ._helpers import dense_covariance, random_params


def test_parameters_know_their_family(rng, covariance_type):
    params = random_params(rng, covariance_type)
    assert params.family == "gaussian"
    assert family_of(params) is GAUSSIAN


@pytest.mark.parametrize(
    "field,shape",
    [("weights", (4,)), ("covariances", (2, 2)), ("precisions_cholesky", (5,))],
    ids=["weights", "covariances", "precisions"],
)
def test_shapes_are_checked(rng, field, shape):
    params = random_params(rng, "diag", n_components=3, n_features=4)
    arrays = {**params.to_dict(), field: np.ones(shape)}
    with pytest.raises(ShapeMismatchError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        GMMParams.from_dict(arrays)


def test_unknown_covariance_type_is_a_typed_error(rng):
    params = random_params(rng, "diag")
    with pytest.raises(InvalidOptionError, match="'banded'") as info:
        GMMParams.from_dict({**params.to_dict(), "covariance_type": "banded"})
    assert all(repr(name) in str(info.value) for name in ("full", "tied", "diag", "spherical"))


def test_covariances_that_are_not_positive_definite_are_named():
    cov = np.array([[1.0, 2.0], [3.0, -1.0]])
    with pytest.raises(DegenerateComponentError, match=r"\[1\]"):
        GMMParams.from_covariances(np.array([0.5, 0.5]), np.zeros((2, 2)), cov, "diag")


def test_dict_round_trip_and_equality(rng, covariance_type):
    params = random_params(rng, covariance_type)
    back = GMMParams.from_dict(params.to_dict())
    assert back.equals(params) and not back.equals(random_params(rng, covariance_type))
    assert not params.equals("not params")


def test_precisions_invert_covariances(rng, covariance_type):
    params = random_params(rng, covariance_type)
    for k in range(params.n_components):
        cov = dense_covariance(params.covariances, covariance_type, k, params.n_features)
        prec = dense_covariance(params.precisions, covariance_type, k, params.n_features)
        np.testing.assert_allclose(cov @ prec, np.eye(params.n_features), atol=1e-10)


def test_split_halves_a_component_along_its_principal_axis(rng, covariance_type):
    params = random_params(rng, covariance_type, n_components=3, n_features=4)
    split = split_component(params, 1, 2, np.random.default_rng(0))
    # Half of the parent's weight (and the old target's) each; total 1.
    assert split.weights.sum() == pytest.approx(1.0)
    assert split.weights[1] == pytest.approx(split.weights[2])
    # The children's means are symmetric about the parent's.
    np.testing.assert_allclose(0.5 * (split.means[1] + split.means[2]), params.means[1], atol=1e-12)
    assert not np.allclose(split.means[1], split.means[2])
    d = params.n_features
    parent = dense_covariance(params.covariances, covariance_type, 1, d)
    child = dense_covariance(split.covariances, covariance_type, 1, d)
    if covariance_type == "tied":
        np.testing.assert_array_equal(split.covariances, params.covariances)
    elif covariance_type == "spherical":
        # One variance cannot shrink along one axis: the children keep the parent's.
        np.testing.assert_array_equal(split.covariances[[1, 2]], params.covariances[[1, 1]])
    else:
        # The mixture of the two halves has the parent's covariance:
        # child + offset offset^T = parent, where offset = (mean_1 - mean_2) / 2.
        offset = 0.5 * (split.means[1] - split.means[2])
        np.testing.assert_allclose(child + np.outer(offset, offset), parent, atol=1e-10)
        np.testing.assert_array_equal(split.covariances[1], split.covariances[2])
    np.testing.assert_array_equal(split.means[0], params.means[0])


def test_family_arrays_round_trip(rng, covariance_type):
    params = random_params(rng, covariance_type)
    meta, arrays = GAUSSIAN.to_arrays(params)
    assert meta["covariance_type"] == covariance_type
    assert GAUSSIAN.from_arrays(meta, arrays.__getitem__, "here").equals(params)


def test_family_rejects_arrays_that_do_not_belong_together(rng):
    params = random_params(rng, "full")
    meta, arrays = GAUSSIAN.to_arrays(params)
    with pytest.raises(ModelFormatError, match="shape.*'diag'"):
        GAUSSIAN.from_arrays({**meta, "covariance_type": "diag"}, arrays.__getitem__, "here")
    with pytest.raises(ModelFormatError, match="sum to 1"):
        GAUSSIAN.from_arrays(meta, {**arrays, "weights": arrays["weights"] * 2}.__getitem__, "here")


def test_sample_draws_from_the_components(rng):
    params = random_params(rng, "diag", n_components=2, n_features=3)
    X, labels = GAUSSIAN.sample(params, 40_000, np.random.default_rng(1))
    assert X.shape == (40_000, 3)
    np.testing.assert_allclose(np.bincount(labels) / 40_000, params.weights, atol=0.02)
    for k in range(2):
        rows = X[labels == k]
        # Five standard errors of the sample mean and variance.
        se_mean = np.sqrt(params.covariances[k] / len(rows))
        assert np.all(np.abs(rows.mean(axis=0) - params.means[k]) < 5 * se_mean)
        np.testing.assert_allclose(rows.var(axis=0), params.covariances[k], rtol=5 * np.sqrt(2 / len(rows)))
