"""User-given starting parameters checked as scikit-learn checks them (issue 10, item 5).

Every case gives the same ``weights_init`` / ``means_init`` /
``precisions_init`` to scikit-learn's ``GaussianMixture`` and to dgmm's. The
expected text is scikit-learn's sentence, copied from the ``raise`` in
``sklearn/mixture/_gaussian_mixture.py``, ``_base._check_shape`` and
``utils.validation.check_array`` (1.9) and written out here, not taken from
dgmm: scikit-learn must raise exactly it, and dgmm's message must start with
it (dgmm adds the parameter's name and the remedy after it) from a typed
``dgmm.errors`` class that is a ValueError.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from dgmm import GaussianMixture
from dgmm.errors import InvalidDtypeError, InvalidInitError, ShapeMismatchError

N_COMPONENTS, N_FEATURES = 3, 2
SPD = np.array([[2.0, 0.3], [0.3, 1.0]])
NOT_SYMMETRIC = np.array([[1.0, 0.5], [0.0, 1.0]])


def _X() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    return np.vstack([rng.normal(c, 1.0, (40, N_FEATURES)) for c in centres])


def _case(id: str, params: dict[str, Any], error: type, sentence: str) -> Any:
    return pytest.param(params, error, sentence, id=id)


BAD_CASES = [
    # _check_weights: check_array, then _check_shape, range, normalisation.
    _case(
        "weights-2d", {"weights_init": np.full((3, 1), 1 / 3)}, ShapeMismatchError,
        "The parameter 'weights' should have the shape of (3,), but got (3, 1)",
    ),
    _case(
        "weights-short", {"weights_init": np.full(2, 0.5)}, ShapeMismatchError,
        "The parameter 'weights' should have the shape of (3,), but got (2,)",
    ),
    _case(
        "weights-3d", {"weights_init": np.full((3, 1, 1), 1 / 3)}, ShapeMismatchError,
        "Found array with dim 3, while dim <= 2 is required.",
    ),
    _case(
        "weights-empty", {"weights_init": np.array([])}, ShapeMismatchError,
        "Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 is required.",
    ),
    # scikit-learn labels the minimum "max value" and the maximum "min value"
    # (its own test asserts that order); the sentence is kept as it is.
    _case(
        "weights-out-of-range", {"weights_init": np.array([1.2, -0.1, -0.1])}, InvalidInitError,
        "The parameter 'weights' should be in the range [0, 1], but got max value -0.10000, "
        "min value 1.20000",
    ),
    _case(
        "weights-not-normalised", {"weights_init": np.array([0.5, 0.5, 0.5])}, InvalidInitError,
        "The parameter 'weights' should be normalized, but got sum(weights) = 1.50000",
    ),
    _case(
        "weights-float32-off-by-1e-5",
        {"weights_init": np.array([0.1, 0.2, 0.70001], dtype=np.float32)}, InvalidInitError,
        "The parameter 'weights' should be normalized, but got sum(weights) = 1.00001",
    ),
    _case(
        "weights-float64-off-by-1e-7", {"weights_init": np.array([0.1, 0.2, 0.7 + 1e-7])},
        InvalidInitError,
        "The parameter 'weights' should be normalized, but got sum(weights) = 1.00000",
    ),
    _case(
        "weights-nan", {"weights_init": np.array([np.nan, 0.5, 0.5])}, InvalidInitError,
        "Input contains NaN.",
    ),
    _case(
        "weights-inf-float32", {"weights_init": np.array([np.inf, 0.5, 0.5], dtype=np.float32)},
        InvalidInitError, "Input contains infinity or a value too large for dtype('float32').",
    ),
    _case(
        "weights-strings", {"weights_init": ["a", "b", "c"]}, InvalidDtypeError,
        "could not convert string to float: 'a'",
    ),
    _case(
        "weights-complex", {"weights_init": np.full(3, 1 / 3) + 0j}, InvalidDtypeError,
        "Complex data not supported",
    ),
    # _check_means: check_array, then _check_shape.
    _case(
        "means-shape", {"means_init": np.zeros((3, 3))}, ShapeMismatchError,
        "The parameter 'means' should have the shape of (3, 2), but got (3, 3)",
    ),
    _case(
        "means-1d", {"means_init": np.zeros(6)}, ShapeMismatchError,
        "The parameter 'means' should have the shape of (3, 2), but got (6,)",
    ),
    _case(
        "means-3d", {"means_init": np.zeros((3, 2, 1))}, ShapeMismatchError,
        "Found array with dim 3, while dim <= 2 is required.",
    ),
    _case(
        "means-no-features", {"means_init": np.zeros((3, 0))}, ShapeMismatchError,
        "Found array with 0 feature(s) (shape=(3, 0)) while a minimum of 1 is required.",
    ),
    _case(
        "means-inf", {"means_init": np.full((3, 2), np.inf)}, InvalidInitError,
        "Input contains infinity or a value too large for dtype('float64').",
    ),
    # _check_precisions: check_array (n-d only for 'full'), _check_shape, then
    # positive definiteness by type.
    _case(
        "full-shape", {"precisions_init": np.stack([np.eye(2)] * 2)}, ShapeMismatchError,
        "The parameter 'full precision' should have the shape of (3, 2, 2), but got (2, 2, 2)",
    ),
    _case(
        "full-4d", {"precisions_init": np.ones((3, 2, 2, 1))}, ShapeMismatchError,
        "The parameter 'full precision' should have the shape of (3, 2, 2), but got (3, 2, 2, 1)",
    ),
    _case(
        "full-not-symmetric", {"precisions_init": np.stack([SPD, NOT_SYMMETRIC, SPD])},
        InvalidInitError, "'full precision' should be symmetric, positive-definite",
    ),
    _case(
        "full-not-positive-definite", {"precisions_init": np.stack([SPD, -SPD, SPD])},
        InvalidInitError, "'full precision' should be symmetric, positive-definite",
    ),
    _case(
        "full-nan", {"precisions_init": np.stack([SPD, SPD * np.nan, SPD])}, InvalidInitError,
        "Input contains NaN.",
    ),
    _case(
        "tied-shape", {"covariance_type": "tied", "precisions_init": np.eye(3)}, ShapeMismatchError,
        "The parameter 'tied precision' should have the shape of (2, 2), but got (3, 3)",
    ),
    _case(
        "tied-3d", {"covariance_type": "tied", "precisions_init": np.ones((2, 2, 1))},
        ShapeMismatchError, "Found array with dim 3, while dim <= 2 is required.",
    ),
    _case(
        "tied-not-positive-definite", {"covariance_type": "tied", "precisions_init": -SPD},
        InvalidInitError, "'tied precision' should be symmetric, positive-definite",
    ),
    _case(
        "diag-shape", {"covariance_type": "diag", "precisions_init": np.ones((3, 3))},
        ShapeMismatchError,
        "The parameter 'diag precision' should have the shape of (3, 2), but got (3, 3)",
    ),
    _case(
        "diag-zero",
        {"covariance_type": "diag", "precisions_init": np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])},
        InvalidInitError, "'diag precision' should be positive",
    ),
    _case(
        "spherical-2d", {"covariance_type": "spherical", "precisions_init": np.ones((3, 1))},
        ShapeMismatchError,
        "The parameter 'spherical precision' should have the shape of (3,), but got (3, 1)",
    ),
    _case(
        "spherical-negative",
        {"covariance_type": "spherical", "precisions_init": np.array([1.0, -1.0, 1.0])},
        InvalidInitError, "'spherical precision' should be positive",
    ),
    # scikit-learn's order: weights, then means, then precisions.
    _case(
        "order-weights-before-means",
        {"weights_init": np.array([0.5, 0.5, 0.5]), "means_init": np.zeros((3, 3))},
        InvalidInitError,
        "The parameter 'weights' should be normalized, but got sum(weights) = 1.50000",
    ),
    _case(
        "order-means-before-precisions",
        {"means_init": np.zeros((3, 3)), "precisions_init": -np.ones((3, 2, 2))},
        ShapeMismatchError,
        "The parameter 'means' should have the shape of (3, 2), but got (3, 3)",
    ),
    _case(
        "order-shape-before-values",
        {"covariance_type": "diag", "precisions_init": -np.ones((2, 2))}, ShapeMismatchError,
        "The parameter 'diag precision' should have the shape of (3, 2), but got (2, 2)",
    ),
]


def _sklearn_message(params: dict[str, Any], X: np.ndarray) -> str:
    with pytest.raises(ValueError) as info:
        SKGaussianMixture(n_components=N_COMPONENTS, random_state=0, **params).fit(X)
    return str(info.value)


@pytest.mark.parametrize("params, error, sentence", BAD_CASES)
def test_bad_initial_parameters_raise_scikit_learns_sentence(params, error, sentence):
    X = _X()
    # scikit-learn raises exactly this sentence (complex data: then the array).
    assert _sklearn_message(params, X).startswith(sentence)
    with pytest.raises(error) as info:
        GaussianMixture(n_components=N_COMPONENTS, random_state=0, **params).fit(X)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(sentence), message
    # dgmm's addition names the parameter it is about.
    assert any(name in message[len(sentence):] for name in ("weights_init", "means_init", "precisions_init"))


def _good_precisions(covariance_type: str) -> np.ndarray:
    return {
        "full": np.stack([SPD] * N_COMPONENTS),
        "tied": SPD,
        "diag": np.ones((N_COMPONENTS, N_FEATURES)),
        "spherical": np.ones(N_COMPONENTS),
    }[covariance_type]


GOOD_CASES = [
    # float32 weights that sum to 1 in float32 (0.1 + 0.2 + 0.7 is 1.0000000298 in float32
    # arithmetic): accepted within 1e-6, as scikit-learn; dgmm rejected them before.
    pytest.param({"weights_init": np.array([0.1, 0.2, 0.7], dtype=np.float32)}, id="weights-float32"),
    pytest.param({"weights_init": np.array([0.1, 0.2, 0.7 + 1e-9])}, id="weights-float64-within-1e-8"),
    pytest.param({"weights_init": np.array([0, 1, 0])}, id="weights-int"),
    pytest.param({"weights_init": [0.25, 0.25, 0.5]}, id="weights-list"),
    pytest.param({"means_init": np.zeros((3, 2), dtype=np.float32)}, id="means-float32"),
    pytest.param(
        {"precisions_init": np.stack([SPD, SPD + 1e-9 * NOT_SYMMETRIC, SPD])},
        id="full-symmetric-within-isclose",
    ),
    *[
        pytest.param(
            {"covariance_type": ct, "precisions_init": _good_precisions(ct).astype(np.float32)},
            id=f"{ct}-float32",
        )
        for ct in ("full", "tied", "diag", "spherical")
    ],
]


@pytest.mark.parametrize("params", GOOD_CASES)
def test_initial_parameters_scikit_learn_accepts_are_accepted(params):
    X = _X()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's log(0) for a zero weight
            SKGaussianMixture(n_components=N_COMPONENTS, random_state=0, max_iter=2, **params).fit(X)
        gmm = GaussianMixture(n_components=N_COMPONENTS, random_state=0, max_iter=2, **params).fit(X)
    assert gmm.n_iter_ == 2
    for name, value in params.items():
        if name.endswith("_init"):  # kept as given (scikit-learn's test_check_* assert it)
            assert getattr(gmm, name) is value


def test_float32_weights_init_is_the_starting_point():
    # Accepted float32 weights are used as given (in float64), not renormalised.
    weights = np.array([0.1, 0.2, 0.7], dtype=np.float32)
    means = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    gmm = GaussianMixture(
        n_components=N_COMPONENTS, weights_init=weights, means_init=means,
        precisions_init=np.ones(N_COMPONENTS), covariance_type="spherical", max_iter=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(_X())
    np.testing.assert_allclose(gmm.weights_, weights.astype(np.float64), rtol=0, atol=1e-7)
