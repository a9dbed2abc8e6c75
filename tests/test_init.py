"""Initialisation: passes over the data per method, determinism, the k-means||
kernels, growing by splits, user-given parameters."""

from __future__ import annotations

import numpy as np
import pytest

import dgmm
from dgmm.core import seeding as _seeding
from dgmm.fit.init import INIT_METHODS, grow

from ._helpers import ReadCounter, make_mixture, random_params


def fit_init_only(X, init_params, n_components=4, **kwargs):
    return dgmm.GaussianMixture(n_components, init_params=init_params, max_iter=0, random_state=0, **kwargs).fit(X)


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_same_seed_same_bits(rng, init_params):
    data = make_mixture(rng, n_samples=4000, n_components=4)
    a = fit_init_only(data.X, init_params, n_init=2, chunks=700)
    b = fit_init_only(data.X, init_params, n_init=2, chunks=700)
    assert np.array_equal(a.means_, b.means_) and np.array_equal(a.covariances_, b.covariances_)


@pytest.mark.parametrize(
    "init_params,passes,gather_reads_all",
    [
        ("random", 1, False),  # + the first rows, for a centre
        ("random_from_data", 1, False),  # + the K sampled rows
        ("k-means++", 1, True),  # + a 10000-row sample: here every chunk
        ("split", 1 + 2 * 2, False),  # 1 -> 2 -> 4 components, 2 EM passes each
    ],
)
def test_passes_over_the_data(rng, streamed, init_params, passes, gather_reads_all):
    data = make_mixture(rng, n_samples=8000, n_components=4)
    source = ReadCounter(data.X, rows=1000)
    fit_init_only(source.array, init_params, n_components=4)
    counts = [source.counts[i] for i in range(source.n_chunks)]
    assert min(counts) == passes + gather_reads_all
    assert max(counts) == passes + 1


def test_kmeans_parallel_passes_are_bounded(rng, streamed):
    data = make_mixture(rng, n_samples=8000, n_components=4)
    source = ReadCounter(data.X, rows=1000)
    fit_init_only(source.array, "kmeans", n_components=4, n_init=3)
    counts = [source.counts[i] for i in range(source.n_chunks)]
    # 5 sampling rounds + 1 weighting pass + 1..10 Lloyd passes (+1 gather).
    assert 7 <= min(counts) and max(counts) <= 17


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_every_method_gives_a_valid_start(rng, init_params, covariance_type):
    data = make_mixture(rng, n_samples=3000, n_components=3)
    gmm = fit_init_only(data.X, init_params, n_components=3, covariance_type=covariance_type)
    assert gmm.weights_.sum() == pytest.approx(1.0)
    assert np.all(np.isfinite(gmm.means_)) and np.all(np.isfinite(gmm.precisions_cholesky_))


def test_user_means_replace_the_methods(rng):
    data = make_mixture(rng, n_components=3)
    gmm = fit_init_only(data.X, "kmeans", n_components=3, means_init=data.means)
    np.testing.assert_array_equal(gmm.means_, data.means)


def test_candidates_are_drawn_by_squared_distance():
    # Points at the current centre (cost 0) are never drawn; far points are.
    x = np.vstack([np.zeros((50, 2)), np.full((5, 2), 10.0)])
    (cand,) = _seeding.sample_candidates(
        x, ([np.zeros((1, 2))], 3, 0, 0), None, chunk_index=0, row_offset=100
    )
    assert len(cand.rows) == 3 and np.all(cand.rows >= 150)
    assert cand.phi == pytest.approx(5 * 200.0)


def test_candidate_merge_is_independent_of_partition(rng):
    x = rng.normal(size=(300, 3))
    centers = [x[:2]]
    shared = (centers, 10, 1, 0)
    whole = _seeding.sample_candidates(x, shared, None, chunk_index=0, row_offset=0)
    # The keys are drawn per chunk, so compare partitions of the same draws:
    # merging the chunk-level top-l lists keeps the global top-l.
    parts = [
        _seeding.sample_candidates(x[a:b], shared, None, chunk_index=i, row_offset=a)
        for i, (a, b) in enumerate([(0, 100), (100, 250), (250, 300)])
    ]
    left = _seeding.merge_candidates([_seeding.merge_candidates(parts[:2], 10), parts[2]], 10)
    right = _seeding.merge_candidates([parts[0], _seeding.merge_candidates(parts[1:], 10)], 10)
    np.testing.assert_array_equal(left[0].rows, right[0].rows)
    assert whole[0].phi == pytest.approx(left[0].phi)


@pytest.mark.parametrize("target", [2, 5, 8])
def test_grow_doubles_by_splitting_the_heaviest(rng, covariance_type, target):
    params = random_params(rng, covariance_type, n_components=1, n_features=3)
    while params.n_components < target:
        before = params.n_components
        params = grow(params, target, rng)
        assert params.n_components == min(2 * before, target)
    assert params.weights.sum() == pytest.approx(1.0)
    assert len({tuple(m) for m in np.round(params.means, 9)}) == target
