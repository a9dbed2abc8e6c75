"""The per-chunk kernels of the Gaussian family (dgmm.core.kernels).

Each kernel against an independent computation: the log-sum-exp of the
E-step and of prediction against scipy, the nearest-centre kernel against
brute force, the data check by its global row.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from dgmm.core.covariance import COVARIANCE_TYPES as GAUSSIAN_MODELS
from dgmm.core.covariance import Scratch
from dgmm.core.gaussian import GAUSSIAN
from dgmm.core.kernels import (
    EStep,
    HardAssign,
    chunk_stats,
    estimate_log_prob_resp,
    frame_shifts,
    log_sum_exp_resp,
    require_finite_rows,
)
from dgmm.core.seeding import RUNNING_MIN_MAX_K, _min_sq_dist, nearest_center, nearest_labels
from dgmm.errors import InvalidDataError

from ._helpers import dense_covariance, random_params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_sum_exp_gives_softmax_and_logsumexp(rng, dtype):
    wlp = rng.normal(0, 30, (200, 7)).astype(dtype)
    wlp[3, 2] = -np.inf  # a component with zero weight
    expected_resp, expected_norm = softmax(wlp.astype(np.float64), axis=1), logsumexp(wlp.astype(np.float64), axis=1)
    resp, log_norm = log_sum_exp_resp(np.asfortranarray(wlp.copy()))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(log_norm, expected_norm, rtol=rtol)
    np.testing.assert_allclose(resp, expected_resp, rtol=rtol, atol=1e-30 if dtype == np.float64 else 1e-12)
    # Clamped at the exp floor (a documented speed trade), not exactly 0.
    assert 0.0 <= resp[3, 2] < (1e-200 if dtype == np.float64 else 1e-30)


def test_a_row_with_no_finite_component_stays_dead(rng):
    wlp = rng.normal(size=(4, 3))
    wlp[1] = -np.inf
    resp, log_norm = log_sum_exp_resp(wlp)
    assert np.isnan(resp[1]).all() and log_norm[1] == -np.inf
    assert np.isfinite(resp[[0, 2, 3]]).all()


def test_prediction_matches_scipy_densities(rng, covariance_type):
    params = random_params(rng, covariance_type, n_components=3, n_features=4, offset=50.0)
    X = rng.normal(50.0, 3.0, (300, 4))
    log_norm, log_resp = estimate_log_prob_resp(X, params, block_rows=64)
    joint = np.stack(
        [
            np.log(params.weights[k])
            + multivariate_normal(params.means[k], dense_covariance(params.covariances, covariance_type, k, 4)).logpdf(X)
            for k in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(log_norm, logsumexp(joint, axis=1), rtol=1e-10)
    np.testing.assert_allclose(log_resp, joint - logsumexp(joint, axis=1)[:, None], rtol=1e-8, atol=1e-8)
    # The family's prediction is this kernel.
    got_norm, got_resp = GAUSSIAN.log_prob_resp(X, params)
    np.testing.assert_allclose(got_norm, log_norm, rtol=1e-12)
    np.testing.assert_allclose(got_resp, log_resp, rtol=1e-12, atol=1e-12)


def test_prediction_and_e_step_agree(rng, covariance_type):
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 3, (500, 4))
    log_norm, log_resp = estimate_log_prob_resp(X, params)
    (stats,) = chunk_stats(X, (EStep(params),), block_rows=77)
    assert stats.loglik == pytest.approx(float(log_norm.sum()), rel=1e-12)
    np.testing.assert_allclose(stats.nk, np.exp(log_resp).sum(axis=0), rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nearest_center_is_the_brute_force_nearest(rng, dtype):
    x = rng.normal(0, 2, (400, 5)).astype(dtype)
    centers = rng.normal(0, 2, (9, 5)).astype(dtype)
    dist, label = nearest_center(x, centers, np.einsum("kd,kd->k", centers, centers))
    brute = ((x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(axis=2)
    gap = np.sort(brute, axis=1)
    clear = gap[:, 1] - gap[:, 0] > 1e-3  # rows whose nearest centre is not a rounding tie
    np.testing.assert_array_equal(label[clear], brute.argmin(axis=1)[clear])
    np.testing.assert_allclose(dist, brute.min(axis=1), rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    assert (dist >= 0).all()


def test_hard_assignment_and_seeding_share_the_nearest_centre(rng):
    x = rng.normal(0, 2, (300, 3))
    centers = rng.normal(0, 2, (4, 3))
    _, seeding_label = _min_sq_dist(x, centers)
    (stats,) = chunk_stats(x, (HardAssign(centers, "diag"),))
    np.testing.assert_array_equal(stats.nk, np.bincount(seeding_label, minlength=4))


@pytest.mark.parametrize("n_components", [3, RUNNING_MIN_MAX_K + 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nearest_labels_are_nearest_centres_labels(rng, dtype, n_components):
    x = rng.normal(0, 2, (500, 6)).astype(dtype)
    centers = rng.normal(0, 2, (n_components, 6)).astype(dtype)
    centers[-1] = centers[0]  # a duplicate centre: the tie goes to the first
    sq_norms = np.einsum("kd,kd->k", centers, centers)
    label = nearest_labels(x, -2.0 * centers, sq_norms)
    _, expected = nearest_center(x, centers, sq_norms)
    brute = ((x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(axis=2)
    gap = np.sort(brute[:, :-1], axis=1)
    clear = gap[:, 1] - gap[:, 0] > 1e-3
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(label[clear], expected[clear])
    np.testing.assert_array_equal(label[clear], brute[:, :-1].argmin(axis=1)[clear])
    assert label.max() < n_components - 1


def _brute_hard_stats(x, centers, w, covariance_type):
    """Per-centre statistics of its nearest rows about the centre, in float64 from scratch."""
    x = x.astype(np.float64)
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(axis=2)
    label = d2.argmin(axis=1)
    k, d = centers.shape
    nk, sum_x, full = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
    for j in range(k):
        y = x[label == j] - centers[j]
        wj = w[label == j]
        nk[j] = wj.sum()
        sum_x[j] = wj @ y
        full[j] = (y * wj[:, None]).T @ y
    sum_xx = {
        "full": full,
        "tied": full.sum(axis=0),
        "diag": np.diagonal(full, axis1=1, axis2=2),
        "spherical": np.trace(full, axis1=1, axis2=2),
    }[covariance_type]
    return nk, sum_x, sum_xx, -float(w @ d2.min(axis=1))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hard_assignment_statistics_are_each_centres_nearest_rows(rng, covariance_type, dtype, weighted):
    # Far from the origin (the frame keeps the digits), a centre nobody is
    # nearest to (its statistics are zero), a cluster of fewer rows than
    # features, and blocks that split clusters (the last one short).
    n_features = 7
    centers = 300.0 + rng.normal(0, 10, (5, n_features))
    centers[3] += 1e3
    sizes = [150, 90, 4, 0, 120]
    x = np.vstack([c + rng.normal(0, 1, (m, n_features)) for c, m in zip(centers, sizes)])
    x = x[rng.permutation(x.shape[0])].astype(dtype)
    w = rng.uniform(0, 2, x.shape[0]) if weighted else np.ones(x.shape[0])
    if weighted:
        w[:10] = 0.0
    (stats,) = chunk_stats(x, (HardAssign(centers, covariance_type),), w if weighted else None, block_rows=37)
    shifts = frame_shifts(centers, np.dtype(dtype))  # the statistics are about these (centres in x's dtype)
    nk, sum_x, sum_xx, loglik = _brute_hard_stats(x, shifts, w, covariance_type)
    # float32: the deviations from the centre carry eps32 * |x - c0| each.
    rtol, atol = (1e-12, 1e-9) if dtype == np.float64 else (1e-5, 1e-5 * 300 * nk.max())
    np.testing.assert_allclose(stats.nk, nk, rtol=1e-12 if dtype == np.float64 else 1e-6)
    assert stats.nk[3] == 0.0 and not stats.sum_x[3].any()
    np.testing.assert_allclose(stats.sum_x, sum_x, rtol=rtol, atol=atol)
    np.testing.assert_allclose(stats.sum_xx, sum_xx, rtol=rtol if dtype == np.float64 else 1e-4, atol=atol)
    assert stats.loglik == pytest.approx(loglik, rel=1e-12 if dtype == np.float64 else 1e-4)
    assert stats.weight == pytest.approx(w.sum()) and stats.n_rows == x.shape[0]
    assert stats.sum_xx.dtype == np.float64


def test_hard_assignment_shares_a_chunk_with_e_steps(rng):
    """Lockstep sources of both kinds in one call equal each alone."""
    x = rng.normal(0, 3, (400, 4))
    params = random_params(rng, "full")
    centers = rng.normal(0, 3, (6, 4))
    sources = (HardAssign(centers, "full"), EStep(params), HardAssign(centers[:3], "diag"))
    together = chunk_stats(x, sources, block_rows=50)
    for source, stats in zip(sources, together):
        (alone,) = chunk_stats(x, (source,), block_rows=50)
        for field in ("nk", "sum_x", "sum_xx"):
            np.testing.assert_allclose(getattr(stats, field), getattr(alone, field), rtol=1e-12, atol=1e-12)
        assert stats.loglik == pytest.approx(alone.loglik, rel=1e-12)


def test_design_matrix_is_by_columns_with_a_ones_column(covariance_type):
    model = GAUSSIAN_MODELS[covariance_type]
    xc = np.arange(12.0).reshape(4, 3)
    a = model.design(xc)
    assert a.flags.f_contiguous
    np.testing.assert_array_equal(a[:, 0], 1.0)
    np.testing.assert_array_equal(a[:, 1:4], xc)
    assert a.shape == (4, 4 + model.n_extra(3))


@pytest.mark.parametrize("check", ["family", "rows"])
def test_non_finite_rows_are_named_with_their_global_row(rng, check):
    X = rng.normal(size=(50, 4))
    X[37, 2] = np.inf
    with pytest.raises(InvalidDataError, match=r"row 1037 \(chunk 4, column 2\)"):
        if check == "family":
            GAUSSIAN.check_block(X, row_offset=1000, chunk_index=4)
        else:
            require_finite_rows(X, row_offset=1000, chunk_index=4, block_rows=16)


def test_scratch_reuses_its_buffers():
    scratch = Scratch()
    a = scratch.get("a", (10, 3), np.dtype(np.float64))
    b = scratch.get("a", (5, 3), np.dtype(np.float64))
    assert np.shares_memory(a, b)
    c = scratch.get_columns("c", (6, 2), np.dtype(np.float32))
    assert c.shape == (6, 2) and c.flags.f_contiguous

