"""dgmm.demo: mixtures drawn chunk by chunk, and the agreement of labels with the truth."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from dgmm.core.params import GMMParams
from dgmm.demo import demo_separation, generate, label_agreement, sample_mixture, select_demo, true_params
from tests._helpers import dense_covariance


def _params(covariance_type: str, rng: np.random.Generator) -> GMMParams:
    k, d = 3, 2
    means = np.array([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]])
    covariances = {
        "full": np.array(
            [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]], [[1.5, -0.5], [-0.5, 1.0]]]
        ),
        "tied": np.array([[1.0, 0.4], [0.4, 0.8]]),
        "diag": rng.uniform(0.3, 2.0, size=(k, d)),
        "spherical": rng.uniform(0.3, 2.0, size=k),
    }[covariance_type]
    weights = np.array([0.5, 0.3, 0.2])
    return GMMParams.from_covariances(weights, means, covariances, covariance_type)


def test_sample_mixture_draws_each_component_from_its_gaussian(covariance_type, rng):
    params = _params(covariance_type, rng)
    X, labels = sample_mixture(params, 30_000, seed=4, chunk_rows=7000)
    assert X.chunks[0] == (7000, 7000, 7000, 7000, 2000)
    x, y = np.asarray(X.compute()), np.asarray(labels.compute())
    counts = np.bincount(y, minlength=3) / len(y)
    np.testing.assert_allclose(counts, params.weights, atol=0.02)
    for k in range(3):
        rows = x[y == k]
        cov = dense_covariance(params.covariances, covariance_type, k, 2)
        spread = np.sqrt(cov.max() / len(rows))
        np.testing.assert_allclose(rows.mean(axis=0), params.means[k], atol=5 * spread)
        np.testing.assert_allclose(np.cov(rows.T), cov, atol=0.15)


def test_chunks_are_reproducible_and_independent():
    params = true_params(3, 4, seed=1)
    a, la = sample_mixture(params, 5000, seed=9, chunk_rows=1000)
    b, lb = sample_mixture(params, 5000, seed=9, chunk_rows=1000)
    c, _ = sample_mixture(params, 5000, seed=10, chunk_rows=1000)
    np.testing.assert_array_equal(a.compute(), b.compute())
    np.testing.assert_array_equal(la.compute(), lb.compute())
    assert not np.allclose(a.compute(), c.compute())
    # Any chunk alone gives the same rows as in the whole array.
    np.testing.assert_array_equal(a.blocks[3].compute(), a.compute()[3000:4000])
    # Chunks are not copies of each other.
    assert not np.allclose(a.blocks[0].compute(), a.blocks[1].compute())


def test_generate_dtype_and_truth():
    X, labels, truth = generate(2000, 5, 3, seed=2, chunk_rows=500, dtype=np.float32)
    assert X.dtype == np.float32 and X.shape == (2000, 5) and labels.dtype == np.int64
    assert truth["means"].shape == (3, 5) and truth["covariances"].shape == (3, 5, 5)
    assert np.isclose(truth["weights"].sum(), 1.0)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_label_agreement_ignores_label_names(rng, lazy):
    true = rng.integers(0, 4, size=1000)
    renamed = np.array([2, 0, 3, 1])[true]
    wrong = renamed.copy()
    wrong[:100] = (wrong[:100] + 1) % 4  # 100 rows moved to another component
    wrap = (lambda a: da.from_array(a, chunks=300)) if lazy else (lambda a: a)
    assert label_agreement(wrap(true), wrap(renamed), 4) == 1.0
    assert label_agreement(wrap(true), wrap(wrong), 4) == pytest.approx(0.9)


def test_demo_clusters_overlap_in_any_dimension():
    # The demo's means sit a few standard deviations apart whatever n_features,
    # much closer than generate's well-separated ones.
    for d in (2, 8, 32):
        near = true_params(d, 6, seed=0, separation=demo_separation(d))
        far = true_params(d, 6, seed=0)
        gaps = [np.linalg.norm(p.means[:, None] - p.means[None], axis=-1)[np.triu_indices(6, 1)] for p in (near, far)]
        # Pairwise distances of the means: ~6 (sqrt(2) * DEMO_SPREAD) in every dimension.
        assert 3.0 < np.median(gaps[0]) < 9.0 and np.median(gaps[1]) > np.median(gaps[0])


def test_select_demo_sweeps_and_finds_the_truth():
    params = true_params(2, 3, seed=0, separation=demo_separation(2))
    X, labels = sample_mixture(params, 4000, seed=0, chunk_rows=1000)
    selection, agreement, seconds = select_demo(
        X, labels, 3, max_components=5, covariance_types=("full", "diag"), seed=0, init_params="k-means++"
    )
    assert len(selection.candidates) == 10 and seconds > 0
    assert selection.best_params_["n_components"] == 3
    # Overlapping clusters: EM works for its result (more than the two passes of separated blobs).
    assert max(c.n_iter for c in selection.candidates) > 5
    assert agreement > 0.85
