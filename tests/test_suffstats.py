"""Sufficient statistics: merging is '+', additive over row partitions,
independent of the block size, float64 across rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgmm.core.kernels import EStep, HardAssign, chunk_stats, frame_shifts
from dgmm.core.suffstats import m_step, merge

from ._helpers import assert_stats_close, random_params


@settings(max_examples=40, deadline=None)
@given(
    covariance_type=st.sampled_from(["full", "tied", "diag", "spherical"]),
    cuts=st.lists(st.integers(1, 199), min_size=1, max_size=5, unique=True),
    seed=st.integers(0, 2**16),
    weighted=st.booleans(),
)
def test_stats_of_union_equal_sum_of_parts(covariance_type, cuts, seed, weighted):
    rng = np.random.default_rng(seed)
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 3, (200, params.n_features))
    w = rng.uniform(0, 2, 200) if weighted else None
    source = (EStep(params),)
    (whole,) = chunk_stats(X, source, w)
    bounds = [0, *sorted(cuts), 200]
    parts = [
        chunk_stats(X[a:b], source, None if w is None else w[a:b])[0]
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    assert_stats_close(merge(parts), whole)
    # Associativity: any bracketing of the merge gives the same numbers.
    if len(parts) >= 3:
        assert_stats_close(parts[0] + merge(parts[1:]), merge(parts[:-1]) + parts[-1])


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
def test_block_size_does_not_change_stats(rng, covariance_type, block_rows):
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 3, (500, params.n_features))
    (expected,) = chunk_stats(X, (EStep(params),), block_rows=500)
    (got,) = chunk_stats(X, (EStep(params),), block_rows=block_rows)
    assert_stats_close(got, expected)


def test_sample_weight_equals_repetition(rng, covariance_type):
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 3, (300, params.n_features))
    counts = rng.integers(0, 4, 300)
    (weighted,) = chunk_stats(X, (EStep(params),), counts.astype(np.float64))
    (repeated,) = chunk_stats(np.repeat(X, counts, axis=0), (EStep(params),))
    for name in ("nk", "sum_x", "sum_xx"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)
    assert weighted.loglik == pytest.approx(repeated.loglik, rel=1e-10)
    assert weighted.weight == repeated.weight == counts.sum()


def test_lockstep_sources_equal_separate_calls(rng):
    a = random_params(rng, "full")
    b = random_params(rng, "full")
    X = rng.normal(0, 3, (400, a.n_features))
    both = chunk_stats(X, (EStep(a), EStep(b)))
    assert_stats_close(both[0], chunk_stats(X, (EStep(a),))[0], rtol=0)
    assert_stats_close(both[1], chunk_stats(X, (EStep(b),))[0], rtol=0)


def test_float32_far_from_origin_keeps_its_digits(rng, covariance_type):
    # Unit-variance clusters at 1e4: sum x x^T - N mu mu^T in float32 would
    # have no correct digit left; moments about the shift must be accurate.
    params = random_params(rng, covariance_type, offset=1e4)
    X64 = params.means[rng.integers(0, 3, 20_000)] + rng.normal(size=(20_000, params.n_features))
    X32 = X64.astype(np.float32)
    (s32,) = chunk_stats(X32, (EStep(params),), block_rows=4096)
    (s64,) = chunk_stats(X32.astype(np.float64), (EStep(params),), block_rows=4096)
    r32 = m_step(s32, frame_shifts(params, np.dtype(np.float32)), covariance_type, 1e-6, dtype=np.float32)
    r64 = m_step(s64, frame_shifts(params, np.dtype(np.float64)), covariance_type, 1e-6)
    np.testing.assert_allclose(r32.means, r64.means, atol=1e-3)
    np.testing.assert_allclose(r32.covariances, r64.covariances, rtol=1e-3, atol=1e-3)
    assert s32.sum_xx.dtype == np.float64


def test_hard_assignment_stats_are_cluster_moments(rng):
    centers = np.array([[0.0, 0.0], [10.0, 10.0]])
    X = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(10, 1, (50, 2))])
    (s,) = chunk_stats(X, (HardAssign(centers, "full"),))
    np.testing.assert_array_equal(s.nk, [100, 50])
    shifts = frame_shifts(centers, X.dtype)
    result = m_step(s, shifts, "full", 0.0)
    np.testing.assert_allclose(result.means[0], X[:100].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result.covariances[1], np.cov(X[100:].T, bias=True), rtol=1e-10)
    inertia = ((X[:100] - centers[0]) ** 2).sum() + ((X[100:] - centers[1]) ** 2).sum()
    assert s.loglik == pytest.approx(-inertia, rel=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_task_memory_is_bounded_by_the_block_not_the_chunk(covariance_type):
    # 40 000 rows x K=512: one (rows x K) float64 matrix would be 164 MB;
    # the kernel's temporaries must stay near the block budget instead.
    import tracemalloc

    rng = np.random.default_rng(0)
    params = random_params(rng, covariance_type, n_components=512, n_features=4)
    X = rng.normal(0, 3, (40_000, 4))
    rows_by_k = X.shape[0] * params.n_components * 8
    tracemalloc.start()
    try:
        chunk_stats(X, (EStep(params),))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < rows_by_k / 8, f"peak {peak / 1e6:.1f} MB for a {rows_by_k / 1e6:.0f} MB (rows x K) matrix"
