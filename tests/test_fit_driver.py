"""The fit driver (dgmm.fit.driver): a ``FitSpec`` and data in, a ``FitResult`` out.

The driver never sees the estimator; these tests call it on specs directly.
"""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from dgmm.errors import InvalidDataError, ShapeMismatchError
from dgmm.estimator import GaussianMixture
from dgmm.fit import driver
from dgmm.fit.spec import FitResult, FitSpec, WarmStart

from ._helpers import ReadCounter, make_mixture


@pytest.fixture(scope="module")
def data():
    return make_mixture(np.random.default_rng(5), n_samples=1500, n_features=3, n_components=3)


def spec(**params) -> FitSpec:
    return FitSpec.from_params({"n_components": 3, **params}, seed=0)


def assert_same_result(got: FitResult, want: FitResult) -> None:
    """Two fits that must agree bit for bit (same data, chunks, seed: the tree is fixed)."""
    assert got.params.equals(want.params)
    assert got.lower_bounds == want.lower_bounds and got.lower_bound == want.lower_bound
    assert (got.n_iter, got.converged) == (want.n_iter, want.converged)
    # The clock's entries differ between any two runs; everything else is the same.
    timings = ("seconds", "rows_per_second", "gb_per_second")
    strip = lambda history: [{k: v for k, v in h.items() if k not in timings} for h in history]
    assert strip(got.history) == strip(want.history)


def test_result_fields(data):
    result = driver.fit(spec(random_state=0), data.X)
    assert isinstance(result, FitResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.n_iter = 0
    assert result.params.n_components == 3 and result.params.n_features == 3
    assert result.n_features_in == 3 and result.feature_names_in is None
    assert result.converged and result.convergence_warning is None
    assert 1 <= result.n_iter == len(result.lower_bounds) == len(result.history)
    assert result.lower_bound == result.lower_bounds[-1]
    assert [h["iteration"] for h in result.history] == list(range(1, result.n_iter + 1))
    assert [h["lower_bound"] for h in result.history] == list(result.lower_bounds)
    # EM never decreases the likelihood beyond rounding.
    assert np.all(np.diff(result.lower_bounds) > -1e-9 * np.abs(result.lower_bounds[1:]))
    assert len(result.restarts) == 1 and result.restarts[0].lower_bound == result.lower_bound
    # The true mixture is recovered (means matched to the nearest true mean).
    order = np.argmin(
        np.linalg.norm(result.params.means[:, None] - data.means[None], axis=2), axis=0
    )
    np.testing.assert_allclose(result.params.means[order], data.means, atol=0.3)


def test_the_driver_leaves_the_estimator_alone(data):
    gmm = GaussianMixture(3, random_state=0)
    result = driver.fit(gmm.fit_spec(), data.X)
    assert not hasattr(gmm, "means_") and not hasattr(gmm, "n_features_in_")
    assert result.converged


def test_feature_names_of_a_dataframe(data):
    frame = pd.DataFrame(data.X, columns=["a", "b", "c"])
    result = driver.fit(spec(random_state=0, max_iter=2, tol=0.0), frame)
    assert result.feature_names_in.tolist() == ["a", "b", "c"]


def test_not_converged_carries_the_warning_message(data):
    result = driver.fit(spec(random_state=0, max_iter=1), data.X)
    assert not result.converged and result.n_iter == 1
    assert "max_iter" in result.convergence_warning
    assert driver.fit(spec(random_state=0, max_iter=0), data.X).convergence_warning is None


def test_the_estimator_warns_at_the_callers_fit_line(data):
    gmm = GaussianMixture(3, random_state=0, max_iter=1)
    with pytest.warns(ConvergenceWarning, match="max_iter") as record:
        gmm.fit(data.X)
    assert [w.filename for w in record] == [__file__]


def test_warm_start_continues_the_given_parameters(data):
    first = driver.fit(spec(random_state=0, tol=0.0, max_iter=2), data.X)
    warm_spec = FitSpec.from_params(
        {"n_components": 3, "random_state": 0, "tol": 0.0, "max_iter": 2, "n_init": 4},
        seed=0,
        warm_start=WarmStart(first.params, first.lower_bound),
    )
    second = driver.fit(warm_spec, data.X)
    cold = driver.fit(spec(random_state=0, tol=0.0, max_iter=4), data.X)
    assert len(second.restarts) == 1 and second.n_iter == 2
    np.testing.assert_allclose(first.lower_bounds + second.lower_bounds, cold.lower_bounds, rtol=1e-12)
    np.testing.assert_allclose(second.params.means, cold.params.means, rtol=1e-10)


def test_warm_start_on_other_features_is_refused(data):
    first = driver.fit(spec(random_state=0, max_iter=1), data.X)
    warm = FitSpec.from_params(
        {"n_components": 3}, seed=0, warm_start=WarmStart(first.params, first.lower_bound)
    )
    with pytest.raises(ShapeMismatchError, match="3 features; X has 2.*warm_start=False"):
        driver.fit(warm, data.X[:, :2])


def _reads(data, n_init: int, max_iter: int):
    counter = ReadCounter(data.X, 300)
    result = driver.fit(spec(n_init=n_init, random_state=0, tol=0.0, max_iter=max_iter), counter.array)
    return result, counter


def test_n_init_restarts_run_in_lockstep(data, streamed):
    three, counter_three = _reads(data, 3, 3)
    _, counter_three_short = _reads(data, 3, 1)
    assert [r.index for r in three.restarts] == [0, 1, 2]
    assert all(r.n_iter == 3 for r in three.restarts)
    best = max(three.restarts, key=lambda r: r.lower_bound)
    assert three.lower_bound == best.lower_bound == max(r.lower_bound for r in three.restarts)
    # Two more iterations of three restarts read every chunk twice more: one
    # read per iteration serves all restarts.
    extra = counter_three.counts - counter_three_short.counts
    assert extra == {chunk: 2 for chunk in range(counter_three.n_chunks)}


@pytest.mark.parametrize(
    "n_rows, n_components, max_iter, fragment",
    [
        pytest.param(4, 5, 100, "n_samples >= n_components", id="fewer-rows-than-components"),
        pytest.param(1, 1, 100, "minimum of 2", id="one-row"),
    ],
)
def test_too_few_rows(data, n_rows, n_components, max_iter, fragment):
    with pytest.raises(InvalidDataError, match=fragment):
        driver.fit(spec(n_components=n_components, max_iter=max_iter), data.X[:n_rows])


def test_a_checkpointed_fit_equals_the_uninterrupted_one(data, tmp_path):
    path = str(tmp_path / "ckpt")
    settings = {"random_state": 0, "tol": 0.0, "chunks": 500}
    uninterrupted = driver.fit(spec(max_iter=5, **settings), data.X)
    # Two iterations written to the checkpoint, then the same fit with a larger
    # max_iter resumes from it: three more passes, the same result.
    stopped = driver.fit(spec(max_iter=2, checkpoint=path, **settings), data.X)
    assert stopped.n_iter == 2
    resumed = driver.fit(spec(max_iter=5, checkpoint=path, **settings), data.X)
    assert_same_result(resumed, uninterrupted)
    # A finished checkpoint gives the same result again (without passes).
    assert_same_result(driver.fit(spec(max_iter=5, checkpoint=path, **settings), data.X), uninterrupted)


def test_dask_input_and_sample_weight(data):
    x = da.from_array(data.X, chunks=(400, 3))
    weights = np.ones(len(data.X))
    weighted = driver.fit(spec(random_state=0, max_iter=3, tol=0.0), x, weights)
    plain = driver.fit(spec(random_state=0, max_iter=3, tol=0.0), x)
    np.testing.assert_allclose(weighted.lower_bounds, plain.lower_bounds, rtol=1e-12)
