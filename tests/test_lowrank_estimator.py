"""``GaussianMixture(covariance_type="lowrank")`` end to end: the estimator, the
family behind the engine, initialisation, model files, checkpoints and errors.

The numerics alone are tests/test_lowrank.py's; here every check goes through
the estimator (or the family interface the engine uses), with oracles written
independently: dense scipy densities, the generating parameters of the data,
the ``diag`` type from the same start.
"""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

import dgmm
from dgmm import graph as _graph
from dgmm.core.family import get_family
from dgmm.core.lowrank import LowRankParams
from dgmm.errors import (
    DegenerateComponentError,
    DenseCovarianceTooLargeError,
    InvalidOptionError,
    ShapeMismatchError,
    UndefinedAttributeError,
    UnsupportedModelError,
)
from dgmm.fit import loop as em
from dgmm.fit.spec import FitResult
from dgmm.io.checkpoint import Checkpoint

from ._helpers import ReadCounter


def fit_quietly(gmm: dgmm.GaussianMixture, X, **kwargs) -> dgmm.GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm.fit(X, **kwargs)


def make_mfa(
    rng: np.random.Generator, n_samples: int = 4000, n_features: int = 8, n_components: int = 3,
    rank: int = 2, noise_type: str = "diag", separation: float = 6.0,
) -> tuple[np.ndarray, np.ndarray, LowRankParams]:
    """Rows drawn from a known mixture of factor analysers, their labels, the truth."""
    shape = (n_components, n_features) if noise_type == "diag" else (n_components,)
    truth = LowRankParams(
        rng.dirichlet(np.full(n_components, 5.0)),
        rng.normal(0.0, separation, (n_components, n_features)),
        rng.normal(0.0, 1.0, (n_components, n_features, rank)),
        rng.uniform(0.2, 1.0, shape),
    )
    X, labels = get_family("lowrank").sample(truth, n_samples, rng)
    order = rng.permutation(n_samples)
    return X[order], labels[order], truth


def dense_log_density(X: np.ndarray, params: LowRankParams) -> np.ndarray:
    """log p(x) with dense covariances A A^T + Psi and scipy (small D only)."""
    noise = params.noise_variances
    parts = []
    for k in range(params.n_components):
        psi = noise[k] if noise.ndim == 2 else np.full(params.n_features, noise[k])
        cov = params.factors[k] @ params.factors[k].T + np.diag(psi)
        parts.append(
            np.log(params.weights[k]) + scipy.stats.multivariate_normal(params.means[k], cov).logpdf(X)
        )
    return np.logaddexp.reduce(np.stack(parts, axis=1), axis=1)


def start_from(truth: LowRankParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """User-given initial arrays near the truth (no initialisation pass is made)."""
    return {
        "weights_init": np.full(truth.n_components, 1.0 / truth.n_components),
        "means_init": truth.means + rng.normal(0.0, 0.3, truth.means.shape),
        "factors_init": 0.5 * rng.normal(size=truth.factors.shape),
        "noise_variances_init": np.ones(truth.noise_variances.shape),
    }


@pytest.fixture(scope="module")
def mfa():
    return make_mfa(np.random.default_rng(3))


_FITS: dict[str, dgmm.GaussianMixture] = {}


@pytest.fixture(scope="module", params=["diag", "spherical"])
def fitted(request):
    """A fit from the default initialisation (k-means as diag, then PCA) per noise type."""
    noise_type = request.param
    X, labels, truth = make_mfa(np.random.default_rng(7), noise_type=noise_type)
    if noise_type not in _FITS:
        _FITS[noise_type] = fit_quietly(
            dgmm.GaussianMixture(
                3, covariance_type="lowrank", rank=2, noise_type=noise_type, tol=1e-6,
                max_iter=300, random_state=0, chunks=1000,
            ),
            X,
        )
    return _FITS[noise_type], X, labels, truth


# -- what the fit finds --------------------------------------------------------


def test_fit_reaches_the_truth_and_recovers_the_labels(fitted):
    gmm, X, labels, truth = fitted
    # EM's optimum is at least as likely as the generating parameters (up to the
    # tolerance of stopping early); labels are the generating components.
    true_mean = float(dense_log_density(X, truth).mean())
    assert gmm.score(X) >= true_mean - 1e-3
    assert adjusted_rand_score(labels, gmm.predict(X)) >= 0.95
    assert gmm.converged_


def test_fitted_attributes_have_the_documented_shapes(fitted):
    gmm, X, _, truth = fitted
    k, d = 3, X.shape[1]
    assert gmm.factors_.shape == (k, d, 2)
    assert gmm.noise_variances_.shape == truth.noise_variances.shape
    assert gmm.means_.shape == (k, d) and gmm.weights_.shape == (k,)
    assert np.all(gmm.noise_variances_ > 0)
    assert gmm.weights_.sum() == pytest.approx(1.0)
    assert isinstance(gmm.params_, LowRankParams)


def test_score_samples_equals_dense_scipy(fitted):
    gmm, X, _, _ = fitted
    np.testing.assert_allclose(gmm.score_samples(X[:500]), dense_log_density(X[:500], gmm.params_), rtol=1e-10)


def test_covariances_are_built_on_demand(fitted):
    gmm, X, _, _ = fitted
    cov = gmm.covariances_
    noise = gmm.noise_variances_
    for k in range(3):
        psi = noise[k] if noise.ndim == 2 else np.full(X.shape[1], noise[k])
        np.testing.assert_allclose(cov[k], gmm.factors_[k] @ gmm.factors_[k].T + np.diag(psi), rtol=1e-12)


def test_predict_proba_and_lazy_prediction_agree(fitted):
    gmm, X, _, _ = fitted
    proba = gmm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    x = da.from_array(X, chunks=(700, -1))
    lazy = gmm.predict_proba(x)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), proba, rtol=1e-10, atol=1e-12)
    assert np.array_equal(gmm.predict(x).compute(), proba.argmax(axis=1))
    np.testing.assert_allclose(gmm.score_samples(x).compute(), gmm.score_samples(X), rtol=1e-12)


def test_bic_counts_the_issue_parameters(fitted):
    gmm, X, _, _ = fitted
    n, d, k, l = X.shape[0], X.shape[1], 3, 2
    noise = k * d if gmm.noise_type == "diag" else k
    p = (k - 1) + k * d + k * (d * l - l * (l - 1) // 2) + noise
    total = float(gmm.score_samples(X).sum())
    assert gmm.bic(X) == pytest.approx(-2 * total + p * math.log(n), rel=1e-12)
    assert gmm.aic(X) == pytest.approx(-2 * total + 2 * p, rel=1e-12)


def test_sample_has_the_model_moments(fitted):
    gmm, X, _, _ = fitted
    gmm.random_state = 0
    S, y = gmm.sample(20000)
    assert S.shape == (20000, X.shape[1]) and y.shape == (20000,)
    heaviest = int(np.argmax(gmm.weights_))
    np.testing.assert_allclose(S[y == heaviest].mean(axis=0), gmm.means_[heaviest], atol=0.15)


def test_rank_zero_is_the_diag_type_from_the_same_start(mfa):
    X, _, truth = mfa
    rng = np.random.default_rng(0)
    means = truth.means + rng.normal(0.0, 0.3, truth.means.shape)
    variances = np.ones((3, X.shape[1]))
    common = dict(tol=0.0, max_iter=8, reg_covar=1e-6, chunks=1000, weights_init=np.full(3, 1 / 3), means_init=means)
    low = fit_quietly(
        dgmm.GaussianMixture(3, covariance_type="lowrank", rank=0, factors_init=np.zeros((3, X.shape[1], 0)),
                             noise_variances_init=variances, **common),
        X,
    )
    diag = fit_quietly(dgmm.GaussianMixture(3, covariance_type="diag", precisions_init=1 / variances, **common), X)
    np.testing.assert_allclose(low.means_, diag.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(low.noise_variances_, diag.covariances_, rtol=1e-9)
    np.testing.assert_allclose(low.lower_bounds_, diag.lower_bounds_, rtol=1e-10)


# -- the engine: reads, chunking, lockstep ---------------------------------------


@pytest.mark.parametrize("n_init", [1, 3])
def test_one_read_per_iteration(mfa, streamed, n_init):
    X, _, truth = mfa
    source = ReadCounter(X, rows=600)
    gmm = dgmm.GaussianMixture(
        3, covariance_type="lowrank", rank=2, max_iter=5, tol=0.0, n_init=n_init,
        **start_from(truth, np.random.default_rng(1)),
    )
    fit_quietly(gmm, source.array)
    assert gmm.n_iter_ == 5
    assert dict(source.counts) == {i: 5 for i in range(source.n_chunks)}


def test_lockstep_restarts_read_like_one(mfa, streamed):
    X, _, _ = mfa
    reads = {}
    for n_init in (1, 3):
        source = ReadCounter(X, rows=600)
        fit_quietly(
            dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, n_init=n_init, max_iter=4, tol=0.0,
                                 init_params="random", random_state=2),
            source.array,
        )
        reads[n_init] = sum(source.counts.values())
    assert reads[3] == reads[1]


# -- init_params="split": grow from one component along the leading factor -------


@pytest.mark.parametrize("noise_type", ["diag", "spherical"])
def test_split_init_reaches_the_kmeans_likelihood_and_the_labels(noise_type):
    X, labels, truth = make_mfa(np.random.default_rng(11), n_components=4, noise_type=noise_type)
    kw = dict(covariance_type="lowrank", rank=2, noise_type=noise_type, tol=1e-6, max_iter=300,
              random_state=0, chunks=1000)
    split = fit_quietly(dgmm.GaussianMixture(4, init_params="split", **kw), X)
    kmeans = fit_quietly(dgmm.GaussianMixture(4, init_params="kmeans", **kw), X)
    # Both reach the generating parameters' likelihood (EM's optimum is at least
    # as likely), so the split start is as good as k-means' here.
    true_mean = float(dense_log_density(X, truth).mean())
    assert split.score(X) >= true_mean - 1e-3
    assert split.score(X) >= kmeans.score(X) - 1e-3
    assert adjusted_rand_score(labels, split.predict(X)) >= 0.95
    assert split.factors_.shape == (4, X.shape[1], 2) and np.all(split.noise_variances_ > 0)


def test_split_grow_doubles_along_the_leading_direction():
    from dgmm.fit.init_lowrank import grow

    axis = np.zeros(5)
    axis[2] = 1.0
    # One component, elongated along feature 2 (variance 9 + 0.1 there, 0.1 elsewhere).
    one = LowRankParams(np.ones(1), np.zeros((1, 5)), 3.0 * axis[None, :, None], np.full((1, 5), 0.1))
    two = grow(one, 3)
    assert two.n_components == 2 and two.weights == pytest.approx([0.5, 0.5])
    offset = two.means[0] - two.means[1]
    # The halves sit symmetrically along the leading direction, nowhere else.
    assert abs(offset[2]) > 1.0 and np.allclose(np.delete(offset, 2), 0.0, atol=1e-6)
    np.testing.assert_allclose(two.means[0], -two.means[1], atol=1e-12)
    three = grow(two, 3)
    assert three.n_components == 3 and three.weights.sum() == pytest.approx(1.0)
    assert grow(three, 3).n_components == 3


@pytest.mark.parametrize("n_init", [1, 3])
def test_split_init_reads_counted(mfa, streamed, n_init):
    X, _, _ = mfa
    reads = {}
    for max_iter in (1, 3):
        source = ReadCounter(X, rows=600)
        fit_quietly(
            dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, init_params="split", n_init=n_init,
                                 max_iter=max_iter, tol=0.0, random_state=4),
            source.array,
        )
        reads[max_iter] = dict(source.counts)
    # Initialisation: the sample pass, which holds every row of this small data:
    # the doubling rounds and their last EM iteration run on it in memory; then
    # one read per iteration. (A true sample: test_init_reads_every_chunk_twice...)
    n_chunks = source.n_chunks
    assert reads[1] == {i: 1 + 1 for i in range(n_chunks)}
    assert {i: reads[3][i] - reads[1][i] for i in range(n_chunks)} == {i: 2 for i in range(n_chunks)}


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_init_reads_once_when_the_sample_is_every_row(mfa, streamed, init_params):
    X, _, _ = mfa
    source = ReadCounter(X, rows=600)
    fit_quietly(
        dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, init_params=init_params,
                             max_iter=1, tol=0.0, random_state=4),
        source.array,
    )
    # The sample pass holds all 4000 rows: the "diag" start and the PCA come
    # from them in memory; then one read for the iteration.
    assert dict(source.counts) == {i: 2 for i in range(source.n_chunks)}


def test_split_init_restarts_advance_in_lockstep(mfa, streamed):
    X, _, _ = mfa
    reads = {}
    for n_init in (1, 3):
        source = ReadCounter(X, rows=600)
        fit_quietly(
            dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, init_params="split", n_init=n_init,
                                 max_iter=2, tol=0.0, random_state=4),
            source.array,
        )
        reads[n_init] = dict(source.counts)
    assert reads[3] == reads[1]


def _init_lowrank(x, method: str, n_init: int = 1, **config):
    from dgmm.fit.init import InitConfig
    from dgmm.fit.init_lowrank import initialize
    from dgmm.fit.spec import EMConfig

    # sample_rows below the 4000 rows: the sample is a true subset.
    config = {"seed": 4, "rank": 2, "sample_rows": 1000, **config}
    return initialize(x, InitConfig(3, method, **config), EMConfig("lowrank"), n_init)


@pytest.mark.parametrize(
    "init_params,gathered",
    [
        ("kmeans", 0),  # sample pass + hard-assignment pass
        ("k-means++", 0),
        ("split", 0),  # sample pass + one EM pass on all rows
        ("random_from_data", 1),  # + the K rows of each restart
        ("random", 1),  # + the first rows, for a centre
    ],
)
@pytest.mark.parametrize("n_init", [1, 3])
def test_init_reads_every_chunk_twice_whatever_the_restarts(mfa, streamed, init_params, gathered, n_init):
    X, _, _ = mfa
    source = ReadCounter(X, rows=500)
    starts = _init_lowrank(source.array, init_params, n_init)
    assert len(starts) == n_init and all(p.factors.shape == (3, X.shape[1], 2) for p in starts)
    counts = [source.counts[i] for i in range(source.n_chunks)]
    # Two passes (the PCA uses the sample pass's rows: no gather of its own);
    # the restarts share both.
    assert min(counts) == 2
    assert max(counts) <= 2 + gathered


def test_init_on_the_sample_alone_reads_once(mfa, streamed):
    X, _, _ = mfa
    source = ReadCounter(X, rows=500)
    _init_lowrank(source.array, "kmeans", 2, assign_on_sample=True)
    assert dict(source.counts) == {i: 1 for i in range(source.n_chunks)}


@pytest.mark.parametrize("init_params", ["kmeans", "split", "random_from_data"])
@pytest.mark.parametrize("chunks", [(250, 2), (999, 3)])
def test_init_does_not_depend_on_chunking(mfa, init_params, chunks):
    X, _, _ = mfa
    rows, split_every = chunks
    ref = _init_lowrank(da.from_array(X, chunks=(4000, -1)), init_params, 2)
    got = _init_lowrank(da.from_array(X, chunks=(rows, -1)), init_params, 2)
    # The same sample rows on any chunking; the one pass on all rows sums in
    # another order: agreement to rounding.
    for a, b in zip(got, ref):
        for name in ("weights", "means", "factors", "noise_variances"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("init_params", ["kmeans", "split"])
def test_no_restart_is_refused_before_any_pass(mfa, init_params):
    X, _, _ = mfa
    source = ReadCounter(X, rows=500)
    with pytest.raises(InvalidOptionError, match="n_init"):
        _init_lowrank(source.array, init_params, 0)
    assert sum(source.counts.values()) == 0


def test_randomized_pca_of_many_members_finds_the_exact_directions(monkeypatch):
    from dgmm.core.params import GMMParams
    from dgmm.fit import init_lowrank

    X, _, truth = make_mfa(np.random.default_rng(6), n_samples=3000, n_features=40, n_components=1)
    diag = GMMParams.from_covariances(np.ones(1), X.mean(axis=0)[None], X.var(axis=0)[None], "diag")
    exact = init_lowrank.lowrank_from_diag(diag, X, 2, "diag", np.random.default_rng(0))
    monkeypatch.setattr(init_lowrank, "EXACT_SVD_MAX", 10)
    fast = init_lowrank.lowrank_from_diag(diag, X, 2, "diag", np.random.default_rng(0))
    # The same leading subspace and scales (factors up to rotation: compare A A^T).
    a, b = exact.factors[0] @ exact.factors[0].T, fast.factors[0] @ fast.factors[0].T
    assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a)


def test_pca_weights_count_like_repeated_rows():
    from dgmm.core.params import GMMParams
    from dgmm.fit.init_lowrank import lowrank_from_diag

    rng = np.random.default_rng(5)
    X, _, _ = make_mfa(rng, n_samples=600, n_components=2)
    weights = rng.integers(1, 4, X.shape[0]).astype(np.float64)
    means = np.stack([X[:300].mean(axis=0), X[300:].mean(axis=0)])
    diag = GMMParams.from_covariances(np.full(2, 0.5), means, np.ones((2, X.shape[1])), "diag")
    weighted = lowrank_from_diag(diag, X, 2, "diag", np.random.default_rng(0), sample_weight=weights)
    repeated = lowrank_from_diag(diag, np.repeat(X, weights.astype(int), axis=0), 2, "diag",
                                 np.random.default_rng(0))
    # A weight of w counts as w copies of the row (factors up to sign: compare A A^T).
    for a, b in zip(weighted.factors, repeated.factors):
        np.testing.assert_allclose(a @ a.T, b @ b.T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(weighted.noise_variances, repeated.noise_variances, rtol=1e-9)


@pytest.mark.parametrize("chunks, split_every", [(250, 2), (999, 3), (4000, 8)])
def test_result_does_not_depend_on_chunking(mfa, chunks, split_every):
    X, _, truth = mfa
    kw = dict(covariance_type="lowrank", rank=2, max_iter=8, tol=0.0, **start_from(truth, np.random.default_rng(4)))
    ref = fit_quietly(dgmm.GaussianMixture(3, chunks=4000, **kw), X)
    got = fit_quietly(dgmm.GaussianMixture(3, chunks=chunks, split_every=split_every, **kw), X)
    # Sums in another order: agreement to rounding, stated as rtol 1e-9.
    for name in ("weights_", "means_", "factors_", "noise_variances_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-12)


def test_float32_data_far_from_the_origin(mfa):
    X, labels, truth = mfa
    far = (X + 1e4).astype(np.float32)
    gmm = fit_quietly(dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, random_state=0, max_iter=100), far)
    assert adjusted_rand_score(labels, gmm.predict(far)) >= 0.95
    assert gmm.score(far) >= float(dense_log_density(X, truth).mean()) - 0.05


# -- re-seeding ------------------------------------------------------------------


def _far_component_start(truth: LowRankParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    start = start_from(truth, rng)
    start["means_init"] = start["means_init"].copy()
    start["means_init"][2] = 1e3  # no row anywhere near it: its weight collapses
    return start


def test_collapsed_component_is_reseeded_with_a_typed_event(mfa):
    X, _, truth = mfa
    gmm = fit_quietly(
        dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, max_iter=30, tol=1e-6, random_state=0,
                             **_far_component_start(truth, np.random.default_rng(5))),
        X,
    )
    events = [e for h in gmm.history_ for e in h["events"] if e["event"] == "reseed"]
    assert events and events[0]["component"] == 2 and events[0]["reason"] == "weight_collapsed"
    assert np.all(gmm.weights_ > 0.05)


def test_collapsed_component_raises_with_on_degenerate_raise(mfa):
    X, _, truth = mfa
    gmm = dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, max_iter=5, on_degenerate="raise",
                               **_far_component_start(truth, np.random.default_rng(5)))
    with pytest.raises(DegenerateComponentError, match=r"\[2\]"):
        fit_quietly(gmm, X)


# -- model files, checkpoints, resume ---------------------------------------------


def test_save_load_round_trip(fitted, tmp_path):
    gmm, X, _, _ = fitted
    gmm.save(tmp_path / "m")
    back = dgmm.GaussianMixture.load(tmp_path / "m")
    assert (back.covariance_type, back.rank, back.noise_type) == ("lowrank", 2, gmm.noise_type)
    for name in ("weights_", "means_", "factors_", "noise_variances_"):
        assert np.array_equal(getattr(back, name), getattr(gmm, name)), name
    assert np.array_equal(back.predict(X), gmm.predict(X))
    assert back.history_ == gmm.history_


class Crash(Exception):
    """Stands for the process dying in the middle of an EM pass."""


class PassHook:
    """``dgmm.fit.loop``'s view of ``_graph`` that crashes at the start of EM pass ``at``."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __getattr__(self, name: str):
        return getattr(_graph, name)

    def stats_pass(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise Crash
        return _graph.stats_pass(*args, **kwargs)


@pytest.mark.parametrize("noise_type, k", [("diag", 0), ("diag", 3), ("spherical", 2)])
def test_resume_after_k_iterations_is_bit_identical(mfa, tmp_path, monkeypatch, noise_type, k):
    X, _, _ = mfa
    kw = dict(n_components=3, covariance_type="lowrank", rank=2, noise_type=noise_type, n_init=2,
              init_params="random_from_data", tol=0.0, max_iter=6, random_state=5, chunks=500)
    want = fit_quietly(dgmm.GaussianMixture(**kw), X)
    path = str(tmp_path / "ck")
    with monkeypatch.context() as m:
        m.setattr(em, "_graph", PassHook(k + 1))
        with pytest.raises(Crash):
            fit_quietly(dgmm.GaussianMixture(**kw, checkpoint=path), X)
    assert Checkpoint(path).read().iteration == k
    got = fit_quietly(dgmm.GaussianMixture(**kw, checkpoint=path), X)
    for name in ("weights_", "means_", "factors_", "noise_variances_"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.lower_bounds_, want.lower_bounds_)
    assert (got.n_iter_, got.converged_) == (want.n_iter_, want.converged_)


def test_a_checkpoint_of_another_rank_is_not_resumed(mfa, tmp_path):
    X, _, truth = mfa
    path = str(tmp_path / "ck")
    kw = dict(covariance_type="lowrank", max_iter=2, tol=0.0, random_state=0, init_params="random_from_data")
    fit_quietly(dgmm.GaussianMixture(3, rank=2, checkpoint=path, **kw), X)
    with pytest.raises(dgmm.errors.CheckpointMismatchError, match="rank"):
        fit_quietly(dgmm.GaussianMixture(3, rank=1, checkpoint=path, **kw), X)


# -- errors ------------------------------------------------------------------------


def _tiny_model(n_features: int = 4, rank: int = 1) -> dgmm.GaussianMixture:
    params = LowRankParams(np.array([1.0]), np.zeros((1, n_features)), np.ones((1, n_features, rank)),
                           np.ones((1, n_features)))
    result = FitResult(params, True, 1, 0.0, (0.0,), (), n_features)
    return dgmm.GaussianMixture.from_result(result)


@pytest.mark.parametrize("name", ["precisions_cholesky_", "precisions_"])
def test_precisions_are_undefined(name):
    gmm = _tiny_model()
    with pytest.raises(UndefinedAttributeError, match="lowrank"):
        getattr(gmm, name)
    assert not hasattr(gmm, name)  # an AttributeError: hasattr says no


def test_to_sklearn_is_refused():
    with pytest.raises(UnsupportedModelError, match="lowrank"):
        _tiny_model().to_sklearn()


def test_dense_covariances_too_large_raise_a_memory_error():
    gmm = _tiny_model(n_features=12_000)
    with pytest.raises(DenseCovarianceTooLargeError, match="factors_") as info:
        gmm.covariances_
    assert isinstance(info.value, MemoryError)


def test_refit_as_another_type_drops_the_low_rank_arrays(mfa):
    X, _, _ = mfa
    gmm = fit_quietly(dgmm.GaussianMixture(3, covariance_type="lowrank", rank=1, max_iter=3, random_state=0), X)
    gmm.set_params(covariance_type="diag")
    fit_quietly(gmm, X)
    assert not hasattr(gmm, "factors_") and gmm.precisions_cholesky_.shape == (3, X.shape[1])


@pytest.mark.parametrize(
    "params, error, match",
    [
        pytest.param(dict(rank=8), InvalidOptionError, "rank", id="rank-equals-n_features"),
        pytest.param(dict(rank=20), InvalidOptionError, "rank", id="rank-above-n_features"),
        pytest.param(dict(rank=-1), ValueError, "rank", id="rank-negative"),
        pytest.param(dict(rank=1.5), ValueError, "rank", id="rank-not-an-integer"),
        pytest.param(dict(noise_type="full"), ValueError, "noise_type", id="noise_type-unknown"),
        pytest.param(dict(precisions_init=np.ones((3, 8))), InvalidOptionError, "precisions_init",
                     id="precisions_init"),
        pytest.param(dict(factors_init=np.ones((3, 8, 1))), ShapeMismatchError, "factors_init",
                     id="factors_init-wrong-rank"),
        pytest.param(dict(noise_variances_init=-np.ones((3, 8))), ValueError, "positive",
                     id="noise_variances_init-negative"),
    ],
)
def test_bad_low_rank_settings_raise_typed_errors(mfa, params, error, match):
    X, _, _ = mfa
    gmm = dgmm.GaussianMixture(3, **{"covariance_type": "lowrank", "rank": 2, "max_iter": 2, **params})
    with pytest.raises(error, match=match):
        fit_quietly(gmm, X)


def test_factors_init_for_another_type_is_refused(mfa):
    X, _, _ = mfa
    gmm = dgmm.GaussianMixture(3, covariance_type="full", factors_init=np.ones((3, 8, 2)))
    with pytest.raises(InvalidOptionError, match="lowrank"):
        fit_quietly(gmm, X)


# -- the CLI -------------------------------------------------------------------------


def test_cli_fits_and_describes_a_low_rank_model(mfa, tmp_path):
    import json

    from ._helpers import invoke

    X, labels, _ = mfa
    np.save(tmp_path / "x.npy", X)
    fit = invoke("fit", "x.npy", "-k", 3, "--covariance-type", "lowrank", "--rank", 2, "--noise-type",
                 "spherical", "--seed", 0, "-o", "model", "--json", cwd=tmp_path)
    assert fit.exit_code == 0, fit.output
    summary = json.loads(fit.stdout.strip().splitlines()[-1])
    assert (summary["covariance_type"], summary["rank"], summary["noise_type"]) == ("lowrank", 2, "spherical")
    model = dgmm.load(tmp_path / "model")
    assert model.factors_.shape == (3, X.shape[1], 2) and model.noise_variances_.shape == (3,)
    assert adjusted_rand_score(labels, model.predict(X)) >= 0.95
    info = invoke("info", "model", "--json", cwd=tmp_path)
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout.strip().splitlines()[-1])
    assert (described["rank"], described["noise_type"]) == (2, "spherical")
    assert described["n_parameters"] == model.params_.n_parameters()


def test_cli_rank_at_least_n_features_fails_in_one_line(mfa, tmp_path):
    # Refused once the data's n_features is known: a data error (exit 1), one line, no traceback.
    X, _, _ = mfa
    np.save(tmp_path / "x.npy", X)
    from ._helpers import invoke

    out = invoke("fit", "x.npy", "-k", 3, "--covariance-type", "lowrank", "--rank", 8, "-o", "model", cwd=tmp_path)
    assert out.exit_code == 1 and "rank must be in [0, n_features - 1]" in out.output
    assert "Traceback" not in out.output


def test_plot_draws_components_as_images(mfa, tmp_path):
    pytest.importorskip("matplotlib")
    import json

    from ._helpers import invoke

    X, _, _ = mfa
    gmm = fit_quietly(dgmm.GaussianMixture(3, covariance_type="lowrank", rank=2, max_iter=5, random_state=0), X)
    gmm.save(tmp_path / "model")
    out = invoke("plot", "model", "--image-shape", "2,4", "-o", "components.png", "--json", cwd=tmp_path)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["image_shape"] == "2,4"
    assert (tmp_path / "components.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = invoke("plot", "model", "--image-shape", "3,3", "-o", "bad.png", cwd=tmp_path)
    assert bad.exit_code != 0 and "8 features" in bad.output and not (tmp_path / "bad.png").exists()


def test_principal_axes_view_of_a_low_rank_model(fitted):
    pytest.importorskip("matplotlib")
    from dgmm.plot import plot_fit

    gmm, X, _, _ = fitted
    figure = plot_fit(gmm, X[:500])
    assert len(figure.axes) == 2


def test_out_of_core_draws_of_a_low_rank_mixture_have_its_moments():
    # dgmm sample / demo.sample_mixture draw chunk by chunk on the workers; for a
    # low-rank model each row is mu_k + A_k z + sqrt(Psi_k) eps of its component.
    from dgmm.core.lowrank import dense_covariances
    from dgmm.demo import sample_mixture

    rng = np.random.default_rng(11)
    k, d, rank = 2, 5, 2
    params = LowRankParams(
        np.array([0.3, 0.7]), rng.normal(0, 5, (k, d)), rng.normal(0, 1, (k, d, rank)),
        rng.uniform(0.2, 0.5, (k, d)),
    )
    x, labels = sample_mixture(params, 40_000, seed=3, chunk_rows=10_000)
    x, labels = np.asarray(x.compute()), np.asarray(labels.compute())
    covariances = dense_covariances(params)
    for j in range(k):
        rows = x[labels == j]
        assert abs(len(rows) / len(x) - params.weights[j]) < 0.02
        np.testing.assert_allclose(rows.mean(axis=0), params.means[j], atol=0.1)
        np.testing.assert_allclose(np.cov(rows.T), covariances[j], atol=0.15)


@pytest.mark.parametrize("init_params", ["kmeans", "split"])
def test_given_initial_arrays_replace_what_the_method_found(mfa, init_params):
    from dgmm.fit.init import InitConfig
    from dgmm.fit.init_lowrank import initialize
    from dgmm.fit.spec import EMConfig

    X, _, truth = mfa
    means = truth.means + 0.25
    noise = np.full((3, X.shape[1]), 0.5)
    starts = initialize(da.from_array(X, chunks=(1000, -1)), InitConfig(3, init_params, seed=0, rank=2),
                        EMConfig("lowrank"), 2, means_init=means, noise_variances_init=noise)
    for start in starts:
        np.testing.assert_array_equal(start.means, means)
        np.testing.assert_array_equal(start.noise_variances, noise)
        assert start.factors.shape == (3, X.shape[1], 2) and np.any(start.factors != 0)


def test_faces_mfa_beats_diag_with_as_many_parameters():
    # The real-image check of issue 12: faces of scikit-image's lfw_subset (25 x 25,
    # the first 100 images), held-out mean log-likelihood. A mixture of factor
    # analysers against a diagonal mixture with about as many free parameters.
    data = pytest.importorskip("skimage.data")
    from dgmm.core.lowrank import n_parameters

    faces = data.lfw_subset()[:100].reshape(100, -1)
    order = np.random.default_rng(0).permutation(faces.shape[0])
    train, test = faces[order[:75]], faces[order[75:]]
    k_diag = round((n_parameters(2, faces.shape[1], 4, "diag") + 1) / (2 * faces.shape[1] + 1))
    assert k_diag == 6
    kw = dict(reg_covar=1e-4, random_state=0, max_iter=100)
    mfa = fit_quietly(dgmm.GaussianMixture(2, covariance_type="lowrank", rank=4, **kw), train)
    diag = fit_quietly(dgmm.GaussianMixture(k_diag, covariance_type="diag", **kw), train)
    assert mfa.score(test) > diag.score(test)


def test_chunks_grow_until_the_data_outweighs_its_statistics(tmp_path, monkeypatch):
    # A chunk's low-rank statistics are ~8*K*d*(rank+2) bytes whatever its rows (1.2 GB at
    # K=1000, d=12288, rank 10, where default chunks hold 1365 rows): default chunks grow to
    # the rows that outweigh them, for stored and in-memory data; chunks= and a user's Dask
    # array keep their own. Scaled down: 160-byte rows, 2592 bytes of statistics (17 rows).
    from dgmm.core.lowrank import LowRankStats
    from dgmm.io import sources

    stats = LowRankStats.zeros(4, 20, 2, "diag")
    nbytes = sum(a.nbytes for a in (stats.nk, stats.sum_x, stats.sum_xxb, stats.sum_xx))
    assert LowRankStats.nbytes(4, 20, 2, "diag") == nbytes == 2592

    monkeypatch.setattr(sources, "TARGET_CHUNK_BYTES", 1600)  # 10 rows by default
    monkeypatch.setattr(sources, "MIN_CHUNK_ROWS", 1)
    X = np.random.default_rng(0).standard_normal((2000, 20))
    store = str(tmp_path / "x.zarr")
    dgmm.write_array(da.from_array(X, chunks=(8, 20)), store)
    kw = dict(covariance_type="lowrank", rank=2, max_iter=2, random_state=0, scheduler="synchronous")

    def chunk_rows(X, **extra):
        gmm = fit_quietly(dgmm.GaussianMixture(4, **kw, **extra), X)
        return {p["chunks"] for p in gmm.passes_ if p["phase"] == "EM iteration"}

    assert chunk_rows(X) == {118}  # 17 rows a chunk
    assert chunk_rows(store) == {125}  # 17 rows rounded to whole 8-row storage chunks: 16
    assert chunk_rows(X, chunks=10) == {200}
    assert chunk_rows(da.from_array(X, chunks=(10, 20))) == {200}
    diag = fit_quietly(dgmm.GaussianMixture(4, covariance_type="diag", max_iter=2, scheduler="synchronous"), X)
    assert {p["chunks"] for p in diag.passes_} == {200}


def test_a_sweep_of_gaussian_and_low_rank_requests_shares_the_passes(mfa, streamed):
    # One sample pass, one statistics pass (the Gaussian request and the low-rank
    # ones' "diag" starts), one EM pass (the "split" ones): 3 reads whatever the
    # number of candidates; each request gets what it gets alone.
    from dgmm.fit.init import InitConfig, InitRequest
    from dgmm.fit.init_lowrank import initialize_many
    from dgmm.fit.spec import EMConfig

    X, _, _ = mfa

    def request(k, ct, method, rank=2):
        return InitRequest(InitConfig(k, method, 4, rank=rank, sample_rows=1000), EMConfig(ct), 2)

    requests = [
        request(2, "diag", "kmeans"),
        request(2, "lowrank", "kmeans"),
        request(3, "lowrank", "k-means++", rank=1),
        request(3, "lowrank", "split"),
        request(2, "lowrank", "split", rank=1),
    ]
    source = ReadCounter(X, rows=500)
    together = initialize_many(source.array, requests)
    assert dict(source.counts) == {i: 3 for i in range(source.n_chunks)}
    x = da.from_array(X, chunks=(500, -1))
    for r, starts in zip(requests, together):
        (alone,) = initialize_many(x, [r])
        assert len(starts) == 2
        for a, b in zip(alone, starts):
            np.testing.assert_array_equal(a.means, b.means)
            np.testing.assert_array_equal(a.weights, b.weights)
