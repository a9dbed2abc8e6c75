"""Initialisation: passes over the data per method (and per sweep), the row
sample (exact, uniform, the same on any chunking or scheduler), the data check
in the first pass, agreement with scikit-learn, growing by splits, user-given
parameters."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import dgmm
from dgmm.core import seeding as _seeding
from dgmm.errors import InvalidDataError, InvalidOptionError
from dgmm.fit import init as _init
from dgmm.fit.init import INIT_METHODS, InitConfig, InitRequest, grow, initialize, initialize_many
from dgmm.fit.spec import EMConfig

from ._helpers import ReadCounter, make_mixture, random_params


def fit_init_only(X, init_params, n_components=4, **kwargs):
    return dgmm.GaussianMixture(n_components, init_params=init_params, max_iter=0, random_state=0, **kwargs).fit(X)


def reads(source: ReadCounter) -> list[int]:
    return [source.counts[i] for i in range(source.n_chunks)]


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_same_seed_same_bits(rng, init_params):
    data = make_mixture(rng, n_samples=4000, n_components=4)
    a = fit_init_only(data.X, init_params, n_init=2, chunks=700)
    b = fit_init_only(data.X, init_params, n_init=2, chunks=700)
    assert np.array_equal(a.means_, b.means_) and np.array_equal(a.covariances_, b.covariances_)


@pytest.mark.parametrize(
    "init_params,passes,gathered",
    [
        # 8000 rows fit in the in-memory sample: the sample pass takes them
        # all, and the starting parameters come from them in memory.
        ("kmeans", 1, 0),
        ("k-means++", 1, 0),
        ("split", 1, 0),
        ("random", 1, 1),  # + the first rows, for a centre
        ("random_from_data", 1, 1),  # + the K sampled rows
    ],
)
@pytest.mark.parametrize("n_init", [1, 3])
def test_passes_over_the_data(rng, streamed, init_params, passes, gathered, n_init):
    data = make_mixture(rng, n_samples=8000, n_components=4)
    source = ReadCounter(data.X, rows=1000)
    fit_init_only(source.array, init_params, n_components=4, n_init=n_init)
    counts = reads(source)
    assert min(counts) == passes
    assert max(counts) <= passes + gathered


def _true_subset(method: str, **kwargs) -> InitConfig:
    """A sample of 2000 of the 9000 rows, and room for no more (8 bytes x 3 features x 2000)."""
    return InitConfig(3, method, 4, **{"sample_rows": 2000, "init_sample_bytes": 8 * 3 * 2000, **kwargs})


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "split"])
@pytest.mark.parametrize(
    "kwargs,tol,passes",
    [
        ({}, 1e-3, 2),  # p / tol = 29,000 rows do not fit: the statistics pass follows
        ({}, 0.1, 1),  # p / tol = 290 rows: the 2000-row sample stands for all rows
        ({"init_sample_bytes": 8 * 3 * 40_000}, 1e-3, 1),  # all 9000 rows fit
        ({"assign_on_sample": False}, 0.1, 2),
    ],
)
def test_the_statistics_pass_is_saved_when_the_sample_stands_for_all_rows(
    rng, init_params, kwargs, tol, passes
):
    data = make_mixture(rng, n_samples=9000, n_components=3)
    source = ReadCounter(data.X, rows=1000)
    config = _true_subset(init_params, **kwargs)
    em_config = EMConfig("full", tol=tol)
    (start,) = initialize(source.array, config, em_config, 1)
    assert reads(source) == [passes] * 9
    size = _init.assign_size(config, em_config, 9000, 3)
    assert (size is None) == (passes == 2)
    if passes == 1:
        assert size == (9000 if "init_sample_bytes" in kwargs else 2000)
    # Either way the same clusters, to sampling error.
    (reference,) = initialize(
        da.from_array(data.X, chunks=(1000, -1)), _true_subset(init_params, assign_on_sample=False),
        EMConfig("full"), 1,
    )
    order = np.argsort(start.means[:, 0])
    ref_order = np.argsort(reference.means[:, 0])
    np.testing.assert_allclose(start.means[order], reference.means[ref_order], atol=0.25)
    np.testing.assert_allclose(start.weights[order], reference.weights[ref_order], atol=0.05)


def test_the_sample_stands_for_all_rows_with_p_over_tol_rows():
    config = InitConfig(8, sample_rows=1000)
    # diag, K=8, d=16: p = 8*16 + 8*16 + 7 = 263 free parameters.
    assert _init.assign_size(config, EMConfig("diag", tol=1e-3), 10**7, 16) == 263_000
    assert _init.assign_size(config, EMConfig("diag", tol=1e-3), 100_000, 16) == 100_000
    # full: 8*136 + 8*16 + 7 = 1223 -> 1,223,000 rows of 16 float64 = 149 MiB fit in 256 MiB.
    assert _init.assign_size(config, EMConfig("full", tol=1e-3), 10**7, 16) == 1_223_000
    # tol=0 (run max_iter): no sample stands for all of 10^7 rows.
    assert _init.assign_size(config, EMConfig("diag", tol=0.0), 10**7, 16) is None
    # Forced: the largest sample that fits.
    forced = InitConfig(8, sample_rows=1000, init_sample_bytes=8 * 16 * 5000, assign_on_sample=True)
    assert _init.assign_size(forced, EMConfig("full", tol=1e-3), 10**7, 16) == 5000
    assert _init.assign_size(InitConfig(8, "random"), EMConfig("full"), 10**7, 16) is None


def _requests(seed: int = 3) -> list[InitRequest]:
    def one(k, ct, method, n_init=1, **arrays):
        # A true 2000-row sample of 9000 rows, too small to stand for all of them.
        config = InitConfig(k, method, seed, sample_rows=2000, init_sample_bytes=8 * 3 * 2000)
        return InitRequest(config, EMConfig(ct), n_init, arrays)

    return [
        one(2, "full", "kmeans", n_init=2),
        one(5, "diag", "kmeans"),
        one(3, "spherical", "k-means++"),
        one(4, "tied", "split", n_init=2),
    ]


def test_a_sweep_costs_the_passes_of_one_request(rng):
    data = make_mixture(rng, n_samples=9000, n_components=4)
    alone = ReadCounter(data.X, rows=1000)
    first = _requests()[0]
    initialize(alone.array, first.config, first.em_config, first.n_init)
    sweep = ReadCounter(data.X, rows=1000)
    starts = initialize_many(sweep.array, _requests())
    assert reads(sweep) == reads(alone) == [2] * 9
    assert [len(s) for s in starts] == [2, 1, 1, 2]
    assert [s[0].n_components for s in starts] == [2, 5, 3, 4]
    assert [s[0].covariance_type for s in starts] == ["full", "diag", "spherical", "tied"]


def test_each_request_of_a_sweep_gets_what_it_gets_alone(rng):
    data = make_mixture(rng, n_samples=9000, n_components=4)
    x = da.from_array(data.X, chunks=(1000, -1))
    together = initialize_many(x, _requests())
    for request, starts in zip(_requests(), together):
        alone = initialize_many(x, [request])[0]
        for a, b in zip(alone, starts):
            np.testing.assert_array_equal(a.means, b.means)
            np.testing.assert_array_equal(a.covariances, b.covariances)


def test_a_sweep_with_random_methods_adds_one_gather(rng):
    data = make_mixture(rng, n_samples=9000, n_components=4)
    source = ReadCounter(data.X, rows=1000)
    extra = [
        InitRequest(InitConfig(3, "random", 1), EMConfig("diag")),
        InitRequest(InitConfig(3, "random_from_data", 1), EMConfig("full"), 2),
    ]
    initialize_many(source.array, _requests() + extra)
    counts = reads(source)
    assert min(counts) == 2 and max(counts) <= 3


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_assignment_on_the_sample_costs_one_pass(rng, init_params):
    data = make_mixture(rng, n_samples=9000, n_components=3, separation=10.0)
    source = ReadCounter(data.X, rows=1000)
    on_data = InitConfig(3, init_params, 4, sample_rows=3000, assign_on_sample=False)
    on_sample = InitConfig(3, init_params, 4, sample_rows=3000, assign_on_sample=True)
    (a,) = initialize(source.array, on_sample, EMConfig("full"), 1)
    assert reads(source) == [1] * 9
    (b,) = initialize(da.from_array(data.X, chunks=(1000, -1)), on_data, EMConfig("full"), 1)
    # The same centres; the sample's rows give the same clusters' means to sampling error.
    np.testing.assert_allclose(a.means, b.means, atol=0.2)
    np.testing.assert_allclose(a.weights, b.weights, atol=0.05)


def test_given_arrays_cost_no_pass(rng):
    data = make_mixture(rng, n_samples=2000, n_components=2)
    source = ReadCounter(data.X, rows=500)
    params = random_params(rng, "diag", n_components=2, n_features=3)
    arrays = {"weights_init": params.weights, "means_init": params.means, "precisions_init": params.precisions}
    (starts,) = initialize_many(source.array, [InitRequest(InitConfig(2), EMConfig("diag"), 2, arrays)])
    assert sum(reads(source)) == 0 and len(starts) == 2
    np.testing.assert_allclose(starts[0].means, params.means)


@pytest.mark.parametrize(
    "request_, error",
    [
        (InitRequest(InitConfig(2, "nope"), EMConfig("diag")), "init_params must be one of"),
        (InitRequest(InitConfig(2), EMConfig("lowrank")), "init_lowrank"),
        (InitRequest(InitConfig(2), EMConfig("diag"), 1, {"mean_init": None}), r"arrays takes.*mean_init"),
        (InitRequest(InitConfig(2), EMConfig("diag"), 0), "n_init must be"),
    ],
    ids=["method", "lowrank", "array-name", "n_init"],
)
def test_bad_requests_are_refused_before_any_pass(rng, request_, error):
    source = ReadCounter(rng.normal(size=(100, 3)), rows=50)
    with pytest.raises(InvalidOptionError, match=error):
        initialize_many(source.array, [request_])
    assert sum(reads(source)) == 0


# -- the row sample -------------------------------------------------------------------------


def _sample(x, size, seed=5, **kwargs):
    return _init.draw_samples(x, {seed: size}, **kwargs)[seed]


def test_the_sample_is_exact_uniform_and_in_row_order(rng):
    X = rng.normal(size=(20000, 2))
    sample = _sample(da.from_array(X, chunks=(3000, -1)), 1500)
    assert sample.rows.shape == (1500,) and np.all(np.diff(sample.rows) > 0)
    np.testing.assert_array_equal(sample.points, X[sample.rows])
    # Uniform: each quarter of the rows holds about a quarter of the sample (5 sigma).
    per_quarter = np.bincount(sample.rows // 5000, minlength=4)
    assert np.all(np.abs(per_quarter - 375) < 5 * np.sqrt(1500 * 0.25 * 0.75))


@pytest.mark.parametrize("chunks", [(20000,), (3000,), (777,)])
def test_the_sample_does_not_depend_on_chunking_or_scheduler(rng, chunks):
    X = rng.normal(size=(20000, 2))
    reference = _sample(da.from_array(X, chunks=(5000, -1)), 1500)  # the session's two workers
    x = da.from_array(X, chunks=(chunks[0], -1))
    with dask.config.set(scheduler="sync"):  # in this process, without a graph
        here = _sample(x, 1500)
    on_cluster = _sample(x, 1500)
    for other in (here, on_cluster):
        np.testing.assert_array_equal(other.rows, reference.rows)
        np.testing.assert_array_equal(other.points, reference.points)


def test_samples_of_one_seed_are_nested(rng):
    x = da.from_array(rng.normal(size=(20000, 2)), chunks=(4000, -1))
    small, large = _sample(x, 300), _sample(x, 3000)
    assert set(small.rows) < set(large.rows)
    assert not np.array_equal(_sample(x, 300, seed=6).rows, small.rows)


def test_a_short_draw_is_drawn_again(rng, monkeypatch):
    X = rng.normal(size=(20000, 2))
    source = ReadCounter(X, rows=4000)
    expected = _sample(da.from_array(X, chunks=(4000, -1)), 1500)
    # A threshold far too low: fewer rows than wanted pass it, so the pass runs again.
    monkeypatch.setattr(_seeding, "SLACK_SIGMAS", -30.0)
    again = _sample(source.array, 1500)
    np.testing.assert_array_equal(again.rows, expected.rows)
    assert min(reads(source)) >= 2


def test_the_sample_keeps_the_rows_weights(rng):
    X = rng.normal(size=(6000, 2))
    w = rng.uniform(0.5, 2.0, size=6000)
    sample = _sample(da.from_array(X, chunks=(1000, -1)), 700, sample_weight=da.from_array(w, chunks=1000))
    np.testing.assert_array_equal(sample.weights, w[sample.rows])


def test_the_sample_is_all_rows_when_they_fit(rng):
    X = rng.normal(size=(900, 2)).astype(np.float32)
    sample = _sample(da.from_array(X, chunks=(200, -1)), 5000)
    assert sample.points.dtype == np.float32
    np.testing.assert_array_equal(sample.points, X)


def test_the_sample_pass_checks_the_data(rng, streamed):
    X = rng.normal(size=(8000, 3))
    X[5432, 1] = np.nan
    source = ReadCounter(X, rows=1000)
    with pytest.raises(InvalidDataError, match=r"row 5432 \(chunk 5"):
        fit_init_only(source.array, "kmeans")
    assert max(reads(source)) == 1  # found in the first pass


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "split"])
def test_weighted_starts_use_the_samples_weights(rng, init_params):
    # A far cluster with weight 0 holds no component once weighted.
    near = rng.normal(size=(3000, 2))
    far = rng.normal(size=(3000, 2)) + 50.0
    X = np.vstack([near, far])
    w = np.r_[np.ones(3000), np.zeros(3000)]
    gmm = dgmm.GaussianMixture(2, init_params=init_params, max_iter=0, random_state=0)
    gmm.fit(X, sample_weight=w)
    assert np.all(gmm.means_ < 10.0)


def test_a_sample_without_weighted_rows_still_starts(rng):
    X = rng.normal(size=(20000, 2))
    w = np.zeros(20000)
    w[:3] = 1.0  # almost surely outside a 500-row sample
    x, weights = da.from_array(X, chunks=(5000, -1)), da.from_array(w, chunks=5000)
    config = InitConfig(2, "kmeans", 0, sample_rows=500)
    (start,) = initialize(x, config, EMConfig("diag"), 1, sample_weight=weights)
    assert np.all(np.isfinite(start.means)) and start.weights.sum() == pytest.approx(1.0)


# -- agreement with scikit-learn --------------------------------------------------------------


@pytest.mark.parametrize("random_state", [0, 1, 7])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_start_is_scikit_learns_on_small_data(rng, covariance_type, random_state, dtype):
    data = make_mixture(rng, n_samples=1200, n_features=3, n_components=5, separation=2.0, dtype=dtype)
    kwargs = dict(covariance_type=covariance_type, max_iter=0, random_state=random_state)
    ours = dgmm.GaussianMixture(5, **kwargs).fit(data.X)
    theirs = SKGaussianMixture(5, **kwargs).fit(data.X)
    # Same clusters in the same order (the component order scikit-learn's tests assume).
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(ours.weights_, theirs.weights_, rtol=rtol)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ours.predict(data.X), theirs.predict(data.X))


# -- every method, user arrays, growth ---------------------------------------------------


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_every_method_gives_a_valid_start(rng, init_params, covariance_type):
    data = make_mixture(rng, n_samples=3000, n_components=3)
    gmm = fit_init_only(data.X, init_params, n_components=3, covariance_type=covariance_type)
    assert gmm.weights_.sum() == pytest.approx(1.0)
    assert np.all(np.isfinite(gmm.means_)) and np.all(np.isfinite(gmm.precisions_cholesky_))


def test_kmeans_on_a_sample_finds_separated_clusters(rng):
    data = make_mixture(rng, n_samples=30000, n_components=4, separation=10.0)
    x = da.from_array(data.X, chunks=(5000, -1))
    config = InitConfig(4, "kmeans", seed=2, sample_rows=2000)
    (start,) = initialize(x, config, EMConfig("full"), 1)
    # Every true mean has a start within a few standard deviations.
    gap = np.linalg.norm(data.means[:, None, :] - start.means[None, :, :], axis=2).min(axis=1)
    assert np.all(gap < 1.5)


def test_user_means_replace_the_methods(rng):
    data = make_mixture(rng, n_components=3)
    gmm = fit_init_only(data.X, "kmeans", n_components=3, means_init=data.means)
    np.testing.assert_array_equal(gmm.means_, data.means)


def test_duplicate_rows_fewer_than_components(rng):
    X = np.repeat(rng.normal(size=(3, 2)), 50, axis=0)
    gmm = fit_init_only(X, "kmeans", n_components=5)
    assert np.all(np.isfinite(gmm.means_)) and gmm.weights_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("target", [2, 5, 8])
def test_grow_doubles_by_splitting_the_heaviest(rng, covariance_type, target):
    params = random_params(rng, covariance_type, n_components=1, n_features=3)
    while params.n_components < target:
        before = params.n_components
        params = grow(params, target, rng)
        assert params.n_components == min(2 * before, target)
    assert params.weights.sum() == pytest.approx(1.0)
    assert len({tuple(m) for m in np.round(params.means, 9)}) == target


def test_of_several_kmeans_starts_the_likeliest_mixture_wins(rng):
    # A feature of 100x the others' spread decides KMeans's inertia; the mixture's
    # likelihood weighs every feature by its own spread.
    data = make_mixture(rng, n_samples=3000, n_features=4, n_components=5, separation=3.0)
    X = data.X * np.array([100.0, 1.0, 1.0, 1.0])
    sample = _seeding.RowSample(np.arange(3000), np.arange(3000, dtype=np.uint64), X, None)
    em_config = EMConfig("full")
    chosen = _init._kmeans_centers(sample, 5, 7, False, 5, em_config)
    scores = {}
    for s in np.random.default_rng(7).integers(2**31, size=5):
        centers = _init._kmeans_centers(sample, 5, int(s), False, 1)
        params = _init._assign_in_memory(sample, centers, em_config, np.random.default_rng(0))
        scores[float(_scipy_mean_loglik(X, params))] = centers
    assert len(scores) > 1  # the starts differ, so the choice matters
    np.testing.assert_array_equal(chosen, scores[max(scores)])


def _scipy_mean_loglik(X, params):
    """The mixture's mean log-likelihood on X by scipy's densities (the oracle)."""
    from scipy.stats import multivariate_normal

    parts = zip(params.weights, params.means, params.covariances)
    return np.mean(np.log(sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in parts)))


def test_samples_drawn_by_the_caller_replace_the_sample_pass(rng):
    # The hook the low-rank initialisation uses: one sample pass serving its own
    # steps and the requests'. A larger sample of the same seed gives the same starts.
    data = make_mixture(rng, n_samples=9000, n_components=4)
    requests = _requests()
    alone = initialize_many(da.from_array(data.X, chunks=(1000, -1)), requests)
    source = ReadCounter(data.X, rows=1000)
    sizes = {seed: 2 * size for seed, size in _init.sample_sizes(requests, *data.X.shape).items()}
    samples = _init.draw_samples(source.array, sizes)
    assert reads(source) == [1] * 9
    given = initialize_many(source.array, requests, samples=samples)
    assert reads(source) == [2] * 9
    for a_starts, g_starts in zip(alone, given):
        for a, g in zip(a_starts, g_starts):
            np.testing.assert_array_equal(a.means, g.means)
            np.testing.assert_array_equal(a.covariances, g.covariances)


def test_a_given_sample_too_small_is_refused(rng):
    data = make_mixture(rng, n_samples=9000, n_components=4)
    x = da.from_array(data.X, chunks=(1000, -1))
    requests = _requests()
    (seed,) = _init.sample_sizes(requests, *data.X.shape)
    small = _init.draw_samples(x, {seed: 10})
    with pytest.raises(InvalidOptionError, match="at least"):
        initialize_many(x, requests, samples=small)
    with pytest.raises(InvalidOptionError, match="seed"):
        initialize_many(x, requests, samples={})
