"""The EM loop over Dask: invariance to chunking, one read of the data per
iteration, lockstep restarts, recovery of generated truth, re-seeding."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning

import dgmm
from dgmm.core.mstep import DEGENERATE_COVARIANCE, decrease_tolerance
from dgmm.core.params import GMMParams
from dgmm.core.suffstats import SuffStats
from dgmm.fit.spec import EMConfig

from ._helpers import ReadCounter, blobs_and_duplicates, fit_quietly, initial_params, make_mixture


@pytest.mark.parametrize("n_init", [1, 3])
def test_one_read_per_iteration(rng, streamed, n_init):
    data = make_mixture(rng, n_samples=5000, n_components=3)
    source = ReadCounter(data.X, rows=600)
    init = initial_params(data.X, 3, "full")
    gmm = dgmm.GaussianMixture(3, max_iter=6, tol=0.0, n_init=n_init, **init)
    fit_quietly(gmm, source.array)
    assert gmm.n_iter_ == 6
    # Every chunk read exactly once per iteration, whatever n_init.
    assert dict(source.counts) == {i: 6 for i in range(source.n_chunks)}


def test_lockstep_restarts_read_like_one(rng, streamed):
    data = make_mixture(rng, n_samples=4000, n_components=3)
    reads = {}
    for n_init in (1, 4):
        source = ReadCounter(data.X, rows=500)
        fit_quietly(
            dgmm.GaussianMixture(3, init_params="random", n_init=n_init, max_iter=5, tol=0.0, random_state=1),
            source.array,
        )
        reads[n_init] = sum(source.counts.values())
    assert reads[4] == reads[1]


def test_persisted_input_is_read_once(rng):
    data = make_mixture(rng, n_samples=3000, n_components=3)
    source = ReadCounter(data.X, rows=500)
    init = initial_params(data.X, 3, "diag")
    fit_quietly(dgmm.GaussianMixture(3, covariance_type="diag", max_iter=5, tol=0.0, **init), source.array)
    assert dict(source.counts) == {i: 1 for i in range(source.n_chunks)}


@pytest.mark.parametrize("chunks,split_every", [(250, 2), (999, 3), (6000, 8)])
def test_result_does_not_depend_on_chunking(rng, covariance_type, chunks, split_every):
    data = make_mixture(rng, n_samples=6000, n_features=4, n_components=3)
    init = initial_params(data.X, 3, covariance_type)
    kw = dict(covariance_type=covariance_type, max_iter=8, tol=0.0, **init)
    ref = fit_quietly(dgmm.GaussianMixture(3, chunks=6000, **kw), data.X)
    got = fit_quietly(dgmm.GaussianMixture(3, chunks=chunks, split_every=split_every, **kw), data.X)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(got.covariances_, ref.covariances_, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-12)


def test_same_chunking_and_seed_give_identical_bits(rng):
    data = make_mixture(rng, n_samples=5000, n_components=4)
    fits = [
        dgmm.GaussianMixture(4, random_state=7, chunks=700, split_every=2).fit(data.X)
        for _ in range(2)
    ]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.array_equal(getattr(fits[0], name), getattr(fits[1], name))
    assert fits[0].lower_bounds_ == fits[1].lower_bounds_


def match_components(means, true_means):
    cost = ((means[:, None, :] - true_means[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data", "split"])
def test_recovers_generated_truth(init_params):
    rng = np.random.default_rng(5)
    data = make_mixture(rng, n_samples=20_000, n_features=3, n_components=4, separation=8.0)
    gmm = dgmm.GaussianMixture(4, init_params=init_params, random_state=0, n_init=5, tol=1e-5, max_iter=300, chunks=3000)
    gmm.fit(data.X)
    assert gmm.converged_
    order = match_components(gmm.means_, data.means)
    np.testing.assert_allclose(gmm.means_, data.means[order], atol=0.1)
    np.testing.assert_allclose(gmm.weights_, data.weights[order], atol=0.02)
    np.testing.assert_allclose(gmm.covariances_, data.covariances[order], atol=0.15)
    # EM never lowers the likelihood beyond the loop's own tolerance (rounding
    # plus reg_covar's effect; a larger decrease would also have warned).
    params = GMMParams.from_covariances(gmm.weights_, gmm.means_, gmm.covariances_, "full")
    bounds = np.asarray(gmm.lower_bounds_)
    allowed = [decrease_tolerance(params, gmm.reg_covar, np.dtype(np.float64), lb) for lb in bounds[1:]]
    assert np.all(np.diff(bounds) >= -np.asarray(allowed))


def test_float32_far_from_origin_fits_like_float64():
    rng = np.random.default_rng(3)
    data = make_mixture(rng, n_samples=20_000, n_features=3, n_components=3, separation=5.0, offset=1e4)
    init = initial_params(data.X - 1e4, 3, "full")
    init["means_init"] = init["means_init"] + 1e4
    kw = dict(max_iter=30, tol=0.0, chunks=4000, **init)
    f32 = fit_quietly(dgmm.GaussianMixture(3, **kw), data.X.astype(np.float32))
    f64 = fit_quietly(dgmm.GaussianMixture(3, **kw), data.X.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(f32.means_, f64.means_, atol=2e-3)
    np.testing.assert_allclose(f32.covariances_, f64.covariances_, rtol=2e-3, atol=2e-3)
    order = match_components(f32.means_, data.means)
    np.testing.assert_allclose(f32.means_, data.means[order], atol=0.1)


def test_max_iter_zero_keeps_the_initialisation(rng):
    data = make_mixture(rng)
    init = initial_params(data.X, 3, "full")
    gmm = dgmm.GaussianMixture(3, max_iter=0, **init).fit(data.X)
    assert gmm.n_iter_ == 0 and not gmm.converged_
    np.testing.assert_allclose(gmm.means_, init["means_init"])


def test_history_records_every_iteration(rng):
    data = make_mixture(rng)
    gmm = dgmm.GaussianMixture(3, random_state=0, tol=1e-8, max_iter=200).fit(data.X)
    assert [h["iteration"] for h in gmm.history_] == list(range(1, gmm.n_iter_ + 1))
    assert [h["lower_bound"] for h in gmm.history_] == gmm.lower_bounds_
    assert all(h["seconds"] > 0 and h["events"] == [] for h in gmm.history_)


def collapsed_stats(n_features=2):
    """Statistics where component 2 received no responsibility at all."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (100, n_features)), rng.normal(8, 1, (100, n_features))])
    nk = np.array([100.0, 100.0, 0.0])
    shifts = np.array([[0.0] * n_features, [8.0] * n_features, [4.0] * n_features])
    sum_x = np.stack([(X[:100] - shifts[0]).sum(0), (X[100:] - shifts[1]).sum(0), np.zeros(n_features)])
    sum_xx = np.stack(
        [(X[:100] - shifts[0]).T @ (X[:100] - shifts[0]), (X[100:] - shifts[1]).T @ (X[100:] - shifts[1]), np.zeros((n_features, n_features))]
    )
    return SuffStats(nk, sum_x, sum_xx, -700.0, 200.0, 200), shifts


def test_collapsed_component_is_reseeded_by_splitting_the_heaviest():
    from dgmm.core.mstep import params_from_stats

    stats, shifts = collapsed_stats()
    params, events = params_from_stats(
        stats, shifts, EMConfig("full", reg_covar=0.0), np.dtype(np.float64), np.random.default_rng(0)
    )
    assert [e["event"] for e in events] == ["reseed"]
    assert events[0]["component"] == 2 and events[0]["split_from"] in (0, 1)
    donor = events[0]["split_from"]
    # The donor's mass is shared between the donor and the re-seeded component.
    assert params.weights[2] == pytest.approx(params.weights[donor])
    assert params.weights.sum() == pytest.approx(1.0)
    assert np.all(np.linalg.eigvalsh(params.covariances) > 0)


def test_collapsed_component_raises_when_asked():
    from dgmm.core.mstep import params_from_stats

    stats, shifts = collapsed_stats()
    with pytest.raises(dgmm.errors.DegenerateComponentError, match=r"component\(s\) \[2\].*reg_covar"):
        params_from_stats(
            stats, shifts, EMConfig("full", reg_covar=0.0, on_degenerate="raise"),
            np.dtype(np.float64), np.random.default_rng(0),
        )


def test_reseed_during_fit_is_recorded(rng):
    # Two tight, distant clusters fitted with 3 components from a start that
    # puts one component far from all data: its weight collapses at once.
    X = np.vstack([rng.normal(0, 0.1, (500, 2)), rng.normal(5, 0.1, (500, 2))])
    init = dict(
        weights_init=np.array([0.45, 0.45, 0.1]),
        means_init=np.array([[0.0, 0.0], [5.0, 5.0], [1e3, 1e3]]),
        precisions_init=np.stack([np.eye(2) * 100, np.eye(2) * 100, np.eye(2) * 100]),
    )
    gmm = dgmm.GaussianMixture(3, max_iter=50, **init).fit(X)
    events = [e for h in gmm.history_ for e in h["events"]]
    assert events and events[0]["event"] == "reseed" and events[0]["component"] == 2
    assert np.all(gmm.weights_ > 0.05)


_GENERATION: dict[str, int] = {}
_LOCK = threading.Lock()


def _changing_read(block: np.ndarray, name: str, n_chunks: int, block_info=None) -> np.ndarray:
    # The first pass sees the data; later passes see it spread out fivefold.
    with _LOCK:
        _GENERATION[name] += 1
        generation = _GENERATION[name]
    return block if generation <= n_chunks else 5.0 * block


def test_likelihood_decrease_is_reported(rng, streamed):
    data = make_mixture(rng, n_samples=2000, n_components=3)
    name = f"changing-{id(data)}"
    _GENERATION[name] = 0
    x = da.from_array(data.X, chunks=(500, -1))
    source = da.map_blocks(_changing_read, x, name, len(x.chunks[0]), dtype=x.dtype, meta=data.X[:0])
    init = initial_params(data.X, 3, "full")
    gmm = dgmm.GaussianMixture(3, max_iter=3, tol=0.0, **init)
    with pytest.warns(dgmm.errors.LikelihoodDecreaseWarning, match="iteration 2"):
        fit_quietly(gmm, source)
    assert gmm.history_[1]["events"][0]["event"] == "likelihood_decrease"


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_component_on_identical_rows_is_degenerate_not_a_likelihood_drop(covariance_type):
    # With reg_covar=0 a component on the 20 identical rows has a computed
    # variance of pure rounding noise (~1e-13); its log-likelihood then jumps
    # at random. It must be re-seeded as degenerate, never show up as EM
    # lowering the likelihood (that warning is an error in this suite).
    X = blobs_and_duplicates()
    gmm = dgmm.GaussianMixture(
        3, covariance_type=covariance_type, init_params="k-means++", reg_covar=0.0, random_state=3
    )
    fit_quietly(gmm, X)
    reasons = [e["reason"] for h in gmm.history_ for e in h["events"] if e["event"] == "reseed"]
    # Its computed variance is rounding noise: on some CPUs a tiny positive
    # number (within rounding of zero), on others exactly 0 (not positive
    # definite). Either is the degenerate-covariance re-seed; which one is
    # the last bit of the BLAS, not a property of the code.
    assert any(r in DEGENERATE_COVARIANCE for r in reasons)
    assert np.all(np.isfinite(gmm.covariances_))


def test_m_step_flags_a_variance_within_rounding_of_zero():
    from dgmm.core.suffstats import m_step

    # Component 1 sits on 20 identical rows at 30, far from the others; its
    # second moment holds only rounding noise of the conversion about c_k.
    nk = np.array([200.0, 20.0])
    shifts = np.array([[0.0, 0.0], [30.0, 30.0]])
    sum_x = np.zeros((2, 2))
    noise = 20 * 1e-13
    sum_xx = np.array([[200.0, 200.0], [noise, noise]])
    stats = SuffStats(nk, sum_x, sum_xx, 0.0, 220.0, 220)
    assert m_step(stats, shifts, "diag", 0.0).unresolved.tolist() == [1]
    # reg_covar lifts it far above the noise: a well-defined (if tight) component.
    assert m_step(stats, shifts, "diag", 1e-6).unresolved.tolist() == []
    # A genuinely small but resolved variance is not flagged.
    stats_small = SuffStats(nk, sum_x, np.array([[200.0, 200.0], [20 * 1e-8, 20 * 1e-8]]), 0.0, 220.0, 220)
    assert m_step(stats_small, shifts, "diag", 0.0).unresolved.tolist() == []


def test_convergence_warning_names_the_remedy_when_components_keep_collapsing():
    X = blobs_and_duplicates()
    gmm = dgmm.GaussianMixture(
        3, covariance_type="diag", init_params="k-means++", reg_covar=0.0, random_state=0, max_iter=20
    )
    with pytest.warns(ConvergenceWarning, match="re-seeded .* increase reg_covar"):
        gmm.fit(X)
