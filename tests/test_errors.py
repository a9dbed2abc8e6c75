"""Bad inputs: each raises a typed ``dgmm.errors`` exception that says what to do.

The cases are a table. Each names the exception type and a few fragments
that any good message has (what was wrong, where, and a remedy), written
from the user's side rather than copied from the implementation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from dgmm import GaussianMixture
from dgmm.errors import (
    DegenerateComponentError,
    DgmmError,
    InvalidDataError,
    InvalidDtypeError,
    ShapeMismatchError,
    UnsupportedInputError,
)

from ._helpers import blobs_and_duplicates

N_ROWS = 400
BAD_ROW = 250  # in the third chunk of 100 rows


def blobs(dtype: type = np.float64) -> np.ndarray:
    """(400, 3) rows around three well-separated centres."""
    rng = np.random.default_rng(3)
    centres = np.array([[-6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [6.0, 0.0, 6.0]])
    return (centres[np.arange(N_ROWS) % 3] + rng.normal(size=(N_ROWS, 3))).astype(dtype)


def with_value(value: float, row: int = BAD_ROW, dtype: type = np.float64) -> np.ndarray:
    X = blobs(dtype)
    X[row, 1] = value
    return X


def assert_message(error: BaseException, patterns: tuple[str, ...]) -> None:
    message = str(error)
    for pattern in patterns:
        assert re.search(pattern, message, flags=re.IGNORECASE), (
            f"message lacks /{pattern}/: {message}"
        )


# Fragments: a remedy verb in the message.
REMEDY = r"\b(drop|impute|remove|pass|use|convert|reshape|densify|try|give|divide|replace)\b"
GLOBAL_ROW = rf"\brow {BAD_ROW}\b"


# -- bad data given to fit --------------------------------------------------------

FIT_DATA_CASES = [
    pytest.param(lambda: with_value(np.nan), InvalidDataError, ("nan", GLOBAL_ROW, REMEDY), id="nan"),
    pytest.param(lambda: with_value(np.inf), InvalidDataError, ("inf", GLOBAL_ROW, REMEDY), id="inf"),
    pytest.param(lambda: with_value(-np.inf), InvalidDataError, ("inf", GLOBAL_ROW, REMEDY), id="minus-inf"),
    pytest.param(
        lambda: with_value(np.nan, dtype=np.float32), InvalidDataError, ("nan", GLOBAL_ROW), id="nan-float32"
    ),
    pytest.param(
        lambda: da.from_array(with_value(np.nan), chunks=(100, 3)),
        InvalidDataError,
        ("nan", GLOBAL_ROW, REMEDY),
        id="nan-dask",
    ),
    pytest.param(
        lambda: da.from_array(with_value(np.inf), chunks=(100, 1)),
        InvalidDataError,
        ("inf", GLOBAL_ROW, REMEDY),
        id="inf-dask-column-chunks",
    ),
    pytest.param(
        lambda: blobs()[:, 0], InvalidDataError, (r"2-?d", r"1-?d", "reshape"), id="1d"
    ),
    pytest.param(
        lambda: blobs().reshape(N_ROWS, 3, 1), InvalidDataError, (r"2-?d", r"3-?d", "reshape"), id="3d"
    ),
    pytest.param(lambda: np.empty((0, 3)), InvalidDataError, ("0 sample", REMEDY), id="zero-rows"),
    pytest.param(lambda: np.empty((5, 0)), InvalidDataError, ("0 feature", REMEDY), id="zero-features"),
    pytest.param(
        lambda: da.zeros((0, 3), chunks=(10, 3)), InvalidDataError, ("0 sample",), id="zero-rows-dask"
    ),
    pytest.param(
        lambda: np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object),
        InvalidDtypeError,
        ("non-numeric|real number|numeric", REMEDY),
        id="object-strings",
    ),
    pytest.param(
        lambda: np.array([["1.5", "x"], ["2", "3"], ["4", "5"]]),
        InvalidDtypeError,
        ("real number|numeric", "<U|dtype", REMEDY),
        id="string-dtype",
    ),
    pytest.param(
        lambda: pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "c", "d"]}),
        InvalidDtypeError,
        ("numeric", REMEDY),
        id="dataframe-with-text-column",
    ),
    pytest.param(
        lambda: np.array([[{"a": 1}, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=object),
        InvalidDtypeError,
        ("non-numeric|numeric", REMEDY),
        id="object-dicts",
    ),
    pytest.param(
        lambda: blobs() + 1j, InvalidDtypeError, ("complex", REMEDY), id="complex"
    ),
    pytest.param(
        lambda: scipy.sparse.random(50, 3, density=0.5, format="csr", random_state=0),
        UnsupportedInputError,
        ("sparse", "dense|toarray"),
        id="sparse-matrix",
    ),
    pytest.param(
        lambda: scipy.sparse.csr_array(blobs()),
        UnsupportedInputError,
        ("sparse", "dense|toarray"),
        id="sparse-array",
    ),
]


@pytest.mark.parametrize("make_X, error, patterns", FIT_DATA_CASES)
def test_fit_rejects_bad_data(make_X: Callable[[], Any], error: type, patterns: tuple[str, ...]):
    with pytest.raises(error) as info:
        GaussianMixture(n_components=3, chunks=100, random_state=0).fit(make_X())
    assert_message(info.value, patterns)


def init_cases(value: float) -> list:
    return [
        pytest.param(
            method,
            id=method,
        )
        for method in ("kmeans", "k-means++", "random", "random_from_data", "split")
    ]


@pytest.mark.parametrize(
    "value, init_params",
    [pytest.param(np.nan, p.values[0], marks=p.marks, id=f"nan-{p.id}") for p in init_cases(np.nan)]
    + [pytest.param(np.inf, p.values[0], marks=p.marks, id=f"inf-{p.id}") for p in init_cases(np.inf)],
)
@pytest.mark.parametrize("container", ["numpy", "dask"])
def test_non_finite_found_with_global_row_by_every_init(init_params, value, container):
    """The first pass of every initialisation names the global row, chunk after chunk."""
    X = with_value(value)
    if container == "dask":
        X = da.from_array(X, chunks=(100, 3))
    gmm = GaussianMixture(n_components=3, init_params=init_params, chunks=100, random_state=0)
    with pytest.raises(InvalidDataError) as info:
        gmm.fit(X)
    assert_message(info.value, ("nan" if np.isnan(value) else "inf", GLOBAL_ROW, REMEDY))


def test_error_classes_are_rooted_in_builtins():
    assert issubclass(InvalidDataError, ValueError)
    assert issubclass(ShapeMismatchError, ValueError)
    assert issubclass(DegenerateComponentError, ValueError)
    assert issubclass(UnsupportedInputError, TypeError)
    # Non-numeric data: NumPy raises ValueError for strings, TypeError for objects.
    assert issubclass(InvalidDtypeError, ValueError)
    assert issubclass(InvalidDtypeError, TypeError)
    assert all(issubclass(c, DgmmError) for c in (InvalidDataError, UnsupportedInputError))


def test_too_few_rows_for_components():
    with pytest.raises(InvalidDataError) as info:
        GaussianMixture(n_components=5).fit(blobs()[:3])
    assert_message(info.value, ("n_components", r"\b5\b", r"\b3\b", "fewer|more"))


# -- hyper-parameters ------------------------------------------------------------------

PARAM_CASES = [
    pytest.param({"n_components": 0}, "n_components", id="n_components-0"),
    pytest.param({"n_components": 2.5}, "n_components", id="n_components-float"),
    pytest.param({"covariance_type": "bogus"}, "covariance_type", id="covariance_type-bogus"),
    pytest.param({"tol": -1}, "tol", id="tol-negative"),
    pytest.param({"reg_covar": -1}, "reg_covar", id="reg_covar-negative"),
    pytest.param({"max_iter": -1}, "max_iter", id="max_iter-negative"),
    pytest.param({"n_init": 0}, "n_init", id="n_init-0"),
    pytest.param({"init_params": "bogus"}, "init_params", id="init_params-bogus"),
    pytest.param({"split_every": 1}, "split_every", id="split_every-1"),
    pytest.param({"on_degenerate": "x"}, "on_degenerate", id="on_degenerate-x"),
    pytest.param({"chunks": 0}, "chunks", id="chunks-0"),
    pytest.param({"block_size": 0}, "block_size", id="block_size-0"),
    pytest.param({"verbose_interval": 0}, "verbose_interval", id="verbose_interval-0"),
]


@pytest.mark.parametrize("params, name", PARAM_CASES)
def test_invalid_hyper_parameter(params: dict, name: str):
    gmm = GaussianMixture(**params)  # __init__ only stores
    with pytest.raises(InvalidParameterError) as info:
        gmm.fit(blobs())
    assert isinstance(info.value, ValueError)
    assert_message(info.value, (re.escape(repr(name)), "must be"))


# -- user-given initial parameters -------------------------------------------------------

SPD = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]])

INIT_CASES = [
    pytest.param(
        {"weights_init": np.full(2, 0.5)}, ShapeMismatchError, ("weights_init", r"\(3,\)", r"\(2,\)"),
        id="weights_init-shape",
    ),
    pytest.param(
        {"means_init": np.zeros((3, 2))}, ShapeMismatchError, ("means_init", r"\(3, 3\)", r"\(3, 2\)"),
        id="means_init-shape",
    ),
    pytest.param(
        {"precisions_init": np.stack([np.eye(3)] * 2)}, ShapeMismatchError,
        ("precisions_init", r"\(3, 3, 3\)", r"\(2, 3, 3\)"),
        id="precisions_init-shape",
    ),
    pytest.param(
        {"weights_init": np.array([0.5, 0.5, 0.5])}, InvalidDataError, ("weights_init", "sum", r"1\.5", REMEDY),
        id="weights_init-not-normalised",
    ),
    pytest.param(
        {"weights_init": np.array([1.2, -0.1, -0.1])}, InvalidDataError, ("weights_init", r"\[0, 1\]|range"),
        id="weights_init-out-of-range",
    ),
    pytest.param(
        {"means_init": np.full((3, 3), np.nan)}, InvalidDataError, ("means_init", "nan"),
        id="means_init-nan",
    ),
    pytest.param(
        {"precisions_init": np.stack([SPD, -SPD, SPD])}, InvalidDataError,
        ("precisions_init", "positive definite", r"\[1\]", REMEDY),
        id="precisions_init-not-pd",
    ),
    pytest.param(
        {"covariance_type": "diag", "precisions_init": np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])},
        InvalidDataError, ("precisions_init", "positive definite", r"\[1\]"),
        id="precisions_init-diag-zero",
    ),
]


@pytest.mark.parametrize("params, error, patterns", INIT_CASES)
def test_invalid_initial_parameters(params: dict, error: type, patterns: tuple[str, ...]):
    with pytest.raises(error) as info:
        GaussianMixture(n_components=3, random_state=0, **params).fit(blobs())
    assert_message(info.value, patterns)


# -- sample weights ----------------------------------------------------------------------

WEIGHT_CASES = [
    pytest.param(lambda: np.ones(N_ROWS - 1), ShapeMismatchError, (rf"\({N_ROWS},\)", rf"\({N_ROWS - 1},\)"), id="short"),
    pytest.param(lambda: np.ones((N_ROWS, 2)), ShapeMismatchError, (rf"\({N_ROWS},\)", rf"\({N_ROWS}, 2\)"), id="2d"),
    pytest.param(
        lambda: np.where(np.arange(N_ROWS) == 7, -1.0, 1.0), InvalidDataError,
        ("negative", r"\brow 7\b", REMEDY), id="negative",
    ),
    pytest.param(
        lambda: np.where(np.arange(N_ROWS) == 9, np.nan, 1.0), InvalidDataError,
        ("finite", r"\brow 9\b"), id="nan",
    ),
    pytest.param(lambda: np.zeros(N_ROWS), InvalidDataError, ("zero", "positive"), id="all-zero"),
    pytest.param(
        lambda: da.from_array(np.ones(N_ROWS + 5), chunks=100), ShapeMismatchError,
        (rf"\({N_ROWS},\)",), id="dask-wrong-length",
    ),
    pytest.param(
        lambda: da.from_array(np.where(np.arange(N_ROWS) == BAD_ROW, -2.0, 1.0), chunks=100),
        InvalidDataError, ("negative", GLOBAL_ROW), id="dask-negative",
    ),
]


@pytest.mark.parametrize("make_weight, error, patterns", WEIGHT_CASES)
def test_invalid_sample_weight(make_weight: Callable[[], Any], error: type, patterns: tuple[str, ...]):
    with pytest.raises(error) as info:
        GaussianMixture(n_components=3, chunks=100, random_state=0).fit(
            blobs(), sample_weight=make_weight()
        )
    assert_message(info.value, patterns)


# -- prediction ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> GaussianMixture:
    return GaussianMixture(n_components=3, random_state=0).fit(blobs())


PREDICT_CASES = [
    pytest.param(lambda: blobs()[:, :2], ShapeMismatchError, (r"\b2 features", r"\b3 features"), id="too-few-features"),
    pytest.param(lambda: np.hstack([blobs()] * 2), ShapeMismatchError, (r"\b6\b", r"\b3\b"), id="too-many-features"),
    pytest.param(
        lambda: da.from_array(blobs()[:, :2], chunks=100), ShapeMismatchError, (r"\b2\b", r"\b3\b"),
        id="dask-wrong-features",
    ),
    pytest.param(lambda: blobs()[0], InvalidDataError, ("reshape",), id="1d"),
    pytest.param(lambda: with_value(np.nan, row=17), InvalidDataError, ("nan", r"\brow 17\b", REMEDY), id="nan"),
    pytest.param(lambda: blobs().astype(str), InvalidDtypeError, ("real number|numeric",), id="strings"),
]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
@pytest.mark.parametrize("make_X, error, patterns", PREDICT_CASES)
def test_predict_rejects_bad_data(fitted, method, make_X, error, patterns):
    with pytest.raises(error) as info:
        getattr(fitted, method)(make_X())
    assert_message(info.value, patterns)


def test_lazy_predict_on_dask_with_nan_names_global_row(fitted):
    labels = fitted.predict(da.from_array(with_value(np.nan), chunks=(100, 3)))
    assert isinstance(labels, da.Array)  # the check runs inside the lazy tasks
    with pytest.raises(InvalidDataError) as info:
        labels.compute()
    assert_message(info.value, ("nan", GLOBAL_ROW, REMEDY))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic", "aic", "sample"])
def test_not_fitted(method):
    args = () if method == "sample" else (blobs(),)
    with pytest.raises(NotFittedError, match="fit"):
        getattr(GaussianMixture(), method)(*args)


def test_warm_start_with_other_features(fitted):
    gmm = GaussianMixture(n_components=3, warm_start=True, random_state=0).fit(blobs())
    with pytest.raises(ShapeMismatchError) as info:
        gmm.fit(blobs()[:, :2])
    assert_message(info.value, (r"\b3 features", r"\b2\b", "warm_start=False"))


# -- degenerate components -------------------------------------------------------------------


def two_points() -> np.ndarray:
    """Two distinct points, each repeated 50 times: three components cannot all be Gaussians."""
    return np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 50, axis=0)


@pytest.mark.parametrize("make_X", [two_points, blobs_and_duplicates])
def test_on_degenerate_raise(make_X):
    gmm = GaussianMixture(n_components=3, reg_covar=0.0, on_degenerate="raise", random_state=0)
    with pytest.raises(DegenerateComponentError) as info:
        gmm.fit(make_X())
    assert isinstance(info.value, ValueError)
    assert_message(info.value, ("component", "reg_covar", "n_components", "reseed"))


def test_on_degenerate_reseed_records_event():
    gmm = GaussianMixture(n_components=3, reg_covar=0.0, random_state=0)
    assert gmm.on_degenerate == "reseed"
    gmm.fit(blobs_and_duplicates())
    events = [e for h in gmm.history_ for e in h["events"] if e["event"] == "reseed"]
    assert events
    assert {"component", "split_from", "reason"} <= set(events[0])
    assert gmm.converged_
    assert np.all(np.isfinite(gmm.covariances_))


def test_on_degenerate_reseed_without_a_healthy_donor_says_what_to_do():
    # Three components on two distinct points with reg_covar=0: no component
    # can have a positive definite covariance, so there is nothing to split
    # from; re-seeding gives way to an error that names the remedy.
    gmm = GaussianMixture(n_components=3, reg_covar=0.0, random_state=0)
    with pytest.raises(DegenerateComponentError, match="reg_covar"):
        gmm.fit(two_points())
