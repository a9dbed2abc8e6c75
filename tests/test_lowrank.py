"""Oracles for the low-rank-plus-diagonal covariance (dgmm.core.lowrank).

Every reference here is written independently of the module: dense D x D
covariances, scipy's multivariate normal, the textbook factor-analysis EM
with ``beta = A^T C^-1`` by a dense inverse, two passes over the data
(responsibilities and means first, moments about the new means second),
the closed-form PPCA maximum, scikit-learn's FactorAnalysis and the
existing ``diag`` covariance type.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.stats

from dgmm.core import lowrank as lr
from dgmm.core.covariance import get_covariance_model
from dgmm.core.kernels import EStep, chunk_stats as gmm_chunk_stats
from dgmm.core.params import GMMParams
from dgmm.core.suffstats import m_step as gmm_m_step
from dgmm.errors import DgmmError, InvalidDataError, ShapeMismatchError

NOISE_TYPES = ["diag", "spherical"]


def make_params(
    rng: np.random.Generator, n_components: int, n_features: int, rank: int, noise_type: str,
    *, spread: float = 4.0, offset: float = 0.0,
) -> lr.LowRankParams:
    weights = rng.uniform(0.5, 1.5, n_components)
    noise = (rng.uniform(0.3, 1.0, (n_components, n_features)) if noise_type == "diag"
             else rng.uniform(0.3, 1.0, n_components))
    return lr.LowRankParams(
        weights / weights.sum(),
        offset + spread * rng.standard_normal((n_components, n_features)),
        rng.standard_normal((n_components, n_features, rank)),
        noise,
    )


def perturb(params: lr.LowRankParams, rng: np.random.Generator, scale: float = 0.3) -> lr.LowRankParams:
    """A start near the truth that is not the truth."""
    return lr.LowRankParams(
        params.weights,
        params.means + scale * rng.standard_normal(params.means.shape),
        params.factors + scale * rng.standard_normal(params.factors.shape),
        params.noise_variances * rng.uniform(0.7, 1.4, params.noise_variances.shape),
    )


def dense_cov(params: lr.LowRankParams, k: int) -> np.ndarray:
    a = params.factors[k]
    psi = params.noise_variances[k]
    return a @ a.T + (np.diag(psi) if np.ndim(psi) else psi * np.eye(a.shape[0]))


def dense_weighted_log_prob(x: np.ndarray, params: lr.LowRankParams) -> np.ndarray:
    return np.stack(
        [np.log(params.weights[k])
         + scipy.stats.multivariate_normal(params.means[k], dense_cov(params, k)).logpdf(x)
         for k in range(params.n_components)], axis=1,
    ).reshape(x.shape[0], params.n_components)


def dense_resp(x: np.ndarray, params: lr.LowRankParams) -> tuple[np.ndarray, np.ndarray]:
    wlp = dense_weighted_log_prob(x, params)
    norm = scipy.special.logsumexp(wlp, axis=1)
    return np.exp(wlp - norm[:, None]), norm


def fit_em(x: np.ndarray, params: lr.LowRankParams, n_iter: int, *, reg_covar: float = 0.0,
           chunk: int | None = None) -> tuple[lr.LowRankParams, list[float]]:
    """EM written here, over row chunks merged by +: the loop an engine would run."""
    history = []
    chunk = chunk or x.shape[0]
    for _ in range(n_iter):
        prepared = lr.prepare(params, x.dtype)
        stats = None
        for start in range(0, x.shape[0], chunk):
            part = lr.chunk_stats(x[start : start + chunk], prepared, block_rows=97)
            stats = part if stats is None else stats + part
        history.append(stats.loglik)
        result = lr.m_step(stats, params, reg_covar=reg_covar, dtype=x.dtype)
        assert result.bad.size == 0
        params = result.params
    return params, history


@pytest.fixture(autouse=True)
def one_blas_thread():
    # As the engine pins BLAS inside every task: on a shared 2-core machine,
    # OpenBLAS's spinning threads made the tiny l x l solves 100x slower.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240612)


# -- log-density ------------------------------------------------------------


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_log_density_equals_scipy_float64(rng, noise_type, rank):
    params = make_params(rng, 4, 7, rank, noise_type)
    x = lr.sample(params, 300, rng)[0]
    prepared = lr.prepare(params, np.float64)
    wlp, _ = lr.weighted_log_prob(lr.design(x, prepared), prepared)
    np.testing.assert_allclose(wlp, dense_weighted_log_prob(x, params), rtol=1e-10)
    np.testing.assert_allclose(
        lr.score_samples(x, params, block_rows=64),
        scipy.special.logsumexp(dense_weighted_log_prob(x, params), axis=1), rtol=1e-10,
    )


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_log_density_float32(rng, noise_type):
    # float32 kernels: the Woodbury difference (diagonal part minus the
    # explained part) and the expansion about c0 each lose ~eps32 times the
    # size of their terms; stated bound: 3e-5 relative + 5e-4 absolute
    # (measured 5e-6 and 1.5e-4).
    params = make_params(rng, 4, 16, 3, noise_type)
    x = lr.sample(params, 500, rng)[0].astype(np.float32)
    prepared = lr.prepare(params, np.float32)
    wlp, _ = lr.weighted_log_prob(lr.design(x, prepared), prepared)
    assert wlp.dtype == np.float32
    np.testing.assert_allclose(wlp, dense_weighted_log_prob(x.astype(np.float64), params),
                               rtol=3e-5, atol=5e-4)


# -- statistics and the M-step against independent references ----------------


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_statistics_equal_dense_moments(rng, noise_type):
    params = make_params(rng, 3, 6, 2, noise_type)
    x = lr.sample(params, 400, rng)[0]
    w = rng.uniform(0.0, 2.0, x.shape[0])
    stats = lr.chunk_stats(x, lr.prepare(params, np.float64), w, block_rows=50)
    resp, norm = dense_resp(x, params)
    resp = resp * w[:, None]
    shifts = params.means
    psi = params.noise_diag()
    for k in range(3):
        xc = x - shifts[k]
        s = (resp[:, k, None] * xc).T @ xc  # dense D x D, small D only
        np.testing.assert_allclose(stats.nk[k], resp[:, k].sum(), rtol=1e-10)
        np.testing.assert_allclose(stats.sum_x[k], resp[:, k] @ xc, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats.sum_xxb[k], s @ (params.factors[k] / psi[k][:, None]),
                                   rtol=1e-10)
        expected = np.diag(s) if noise_type == "diag" else np.trace(s)
        np.testing.assert_allclose(stats.sum_xx[k], expected, rtol=1e-10)
    np.testing.assert_allclose(stats.loglik, w @ norm, rtol=1e-10)
    assert stats.weight == pytest.approx(w.sum(), rel=1e-12) and stats.n_rows == 400


def two_pass_reference(x, params, reg_covar):
    """torch-mfa's order, dense: responsibilities and means (pass 1), then
    moments about the new means (pass 2), then the textbook FA EM step."""
    resp, _ = dense_resp(x, params)  # pass 1
    nk = resp.sum(axis=0)
    means = (resp.T @ x) / nk[:, None]
    factors, noise = [], []
    for k in range(params.n_components):
        xc = x - means[k]  # pass 2, about the new mean
        s = (resp[:, k, None] * xc).T @ xc / nk[k]
        a = params.factors[k]
        beta = a.T @ np.linalg.inv(dense_cov(params, k))
        ezz = np.eye(a.shape[1]) - beta @ a + beta @ s @ beta.T
        a_new = s @ beta.T @ np.linalg.inv(ezz)
        resid = s - a_new @ beta @ s
        factors.append(a_new)
        noise.append(np.diag(resid) + reg_covar if params.noise_type == "diag"
                     else np.trace(resid) / x.shape[1] + reg_covar)
    return nk / nk.sum(), means, np.array(factors), np.array(noise)


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
@pytest.mark.parametrize("rank", [1, 3])
def test_one_pass_m_step_equals_two_pass_reference(rng, noise_type, rank):
    truth = make_params(rng, 3, 8, rank, noise_type)
    x = lr.sample(truth, 600, rng)[0]
    start = perturb(truth, rng, 0.8)  # means far from the new ones: the shift matters
    stats = lr.chunk_stats(x, lr.prepare(start, np.float64), block_rows=128)
    new = lr.m_step(stats, start, reg_covar=1e-4).params
    weights, means, factors, noise = two_pass_reference(x, start, 1e-4)
    np.testing.assert_allclose(new.weights, weights, rtol=1e-10)
    np.testing.assert_allclose(new.means, means, rtol=1e-10)
    np.testing.assert_allclose(new.factors, factors, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(new.noise_variances, noise, rtol=1e-10)


def test_m_step_equals_dense_covariance_computation(rng):
    """The new C_k = A A^T + Psi against the maximiser's defining property:
    FA EM in the dense form of Rubin & Thayer (1982), C^-1 by LAPACK."""
    truth = make_params(rng, 2, 5, 2, "diag")
    x = lr.sample(truth, 500, rng)[0]
    start = perturb(truth, rng)
    new = lr.m_step(lr.chunk_stats(x, lr.prepare(start, np.float64)), start, reg_covar=0.0).params
    resp, _ = dense_resp(x, start)
    for k in range(2):
        mean = resp[:, k] @ x / resp[:, k].sum()
        s = (resp[:, k, None] * (x - mean)).T @ (x - mean) / resp[:, k].sum()
        c_inv = np.linalg.inv(dense_cov(start, k))
        a = start.factors[k]
        # Rubin & Thayer: A' = S C^-1 A (I - A^T C^-1 A + A^T C^-1 S C^-1 A)^-1
        inner = np.eye(2) - a.T @ c_inv @ a + a.T @ c_inv @ s @ c_inv @ a
        a_new = s @ c_inv @ a @ np.linalg.inv(inner)
        psi_new = np.diag(s - a_new @ a.T @ c_inv @ s)
        cov_new = a_new @ a_new.T + np.diag(psi_new)
        np.testing.assert_allclose(lr.dense_covariances(new)[k], cov_new, rtol=1e-10, atol=1e-12)


# -- EM behaviour and closed-form maxima ------------------------------------


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_em_never_decreases_log_likelihood(rng, noise_type):
    truth = make_params(rng, 3, 10, 2, noise_type, spread=1.5)
    x = lr.sample(truth, 1500, rng)[0]
    start = lr.LowRankParams(np.full(3, 1 / 3), x[rng.choice(1500, 3, replace=False)],
                             0.1 * rng.standard_normal((3, 10, 2)), truth.noise_variances * 0 + 1.0)
    _, history = fit_em(x, start, 40, reg_covar=1e-6, chunk=400)
    steps = np.diff(history)
    assert np.all(steps >= -1e-9 * abs(history[-1])), steps.min()
    assert history[-1] > history[0]


def test_k1_spherical_reaches_closed_form_ppca(rng):
    n, d, rank = 3000, 8, 2
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scales = np.array([5.0, 3.5, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7])
    x = 3.0 + (rng.standard_normal((n, d)) * scales) @ basis.T
    start = lr.LowRankParams(np.ones(1), x[:1], rng.standard_normal((1, d, rank)), np.ones(1))
    params, history = fit_em(x, start, 400)
    # Tipping & Bishop: W = U_l (Lambda_l - sigma^2)^1/2, sigma^2 the mean of the rest.
    s = np.cov(x.T, bias=True)
    evals, evecs = np.linalg.eigh(s)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    sigma2 = evals[rank:].mean()
    c = evecs[:, :rank] @ np.diag(evals[:rank] - sigma2) @ evecs[:, :rank].T + sigma2 * np.eye(d)
    best = scipy.stats.multivariate_normal(x.mean(axis=0), c).logpdf(x).sum()
    final = lr.chunk_stats(x, lr.prepare(params, np.float64)).loglik
    assert final == pytest.approx(best, rel=1e-9)
    assert final <= best + 1e-8 * abs(best)
    assert params.noise_variances[0] == pytest.approx(sigma2, rel=1e-6)
    # Same subspace: the cosines of the principal angles are all 1.
    q = np.linalg.qr(params.factors[0])[0]
    cosines = np.linalg.svd(evecs[:, :rank].T @ q, compute_uv=False)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-6)


def test_k1_diag_reaches_sklearn_factor_analysis(rng):
    from sklearn.decomposition import FactorAnalysis

    truth = make_params(rng, 1, 8, 2, "diag", spread=1.0)
    x = lr.sample(truth, 2000, rng)[0]
    fa = FactorAnalysis(n_components=2, tol=1e-12, max_iter=20000).fit(x)
    reference = fa.score(x) * x.shape[0]
    start = lr.LowRankParams(np.ones(1), x[:1], rng.standard_normal((1, 8, 2)), np.ones((1, 8)))
    params, history = fit_em(x, start, 600)
    final = lr.chunk_stats(x, lr.prepare(params, np.float64)).loglik
    # Both reach the same maximum; EM and scikit-learn's SVD iterations stop
    # at their own tolerances.
    assert final == pytest.approx(reference, rel=1e-7)
    np.testing.assert_allclose(lr.dense_covariances(params)[0], fa.get_covariance(),
                               rtol=1e-3, atol=1e-3)


def test_rank0_diag_equals_diag_covariance_type(rng):
    truth = make_params(rng, 3, 6, 0, "diag", spread=1.5)
    x = lr.sample(truth, 800, rng)[0]
    start = perturb(truth, rng)
    model = get_covariance_model("diag")
    gmm = GMMParams(start.weights, start.means, start.noise_variances,
                    model.precisions_cholesky(start.noise_variances)[0], "diag")
    # log-densities, against the existing type's kernel
    xc = x - start.means.mean(axis=0)
    expected = model.weighted_log_prob(
        model.design(xc), model.prepare(start.means - start.means.mean(axis=0),
                                        gmm.precisions_cholesky, np.log(start.weights)))
    prepared = lr.prepare(start, np.float64)
    got, _ = lr.weighted_log_prob(lr.design(x, prepared), prepared)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # statistics and M-step, from the same start
    (ref,) = gmm_chunk_stats(x, (EStep(gmm),), block_rows=100)
    ours = lr.chunk_stats(x, prepared, block_rows=100)
    for name in ("nk", "sum_x", "sum_xx"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-10, atol=1e-10)
    assert ours.loglik == pytest.approx(ref.loglik, rel=1e-12)
    shifts = lr.frame_shifts(start, np.float64)
    ref_m = gmm_m_step(ref, shifts, "diag", 1e-6)
    new = lr.m_step(ours, start, reg_covar=1e-6).params
    np.testing.assert_allclose(new.weights, ref_m.weights, rtol=1e-12)
    np.testing.assert_allclose(new.means, ref_m.means, rtol=1e-10)
    np.testing.assert_allclose(new.noise_variances, ref_m.covariances, rtol=1e-10)
    assert new.factors.shape == (3, 6, 0)


# -- invariances and numerics -----------------------------------------------


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_chunking_invariance(rng, noise_type):
    params = make_params(rng, 4, 9, 3, noise_type)
    x = lr.sample(params, 1000, rng)[0]
    prepared = lr.prepare(params, np.float64)
    whole = lr.chunk_stats(x, prepared)
    parts = [lr.chunk_stats(x[a:b], prepared, block_rows=br)
             for a, b, br in ((0, 1, 7), (1, 333, 64), (333, 1000, 1000))]
    merged = parts[0] + (parts[1] + parts[2])
    for name in ("nk", "sum_x", "sum_xxb", "sum_xx"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name),
                                   rtol=1e-12, atol=1e-9)
    assert merged.loglik == pytest.approx(whole.loglik, rel=1e-13)
    assert merged.n_rows == 1000 and merged.weight == 1000.0


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_float32_far_from_origin_matches_float64(rng, noise_type):
    # Offset 1e4: the float32 values carry ~1e-3 absolute resolution; both runs
    # see the same float32 values, so only the kernels' arithmetic differs.
    truth = make_params(rng, 3, 12, 2, noise_type, spread=3.0, offset=1e4)
    x32 = lr.sample(truth, 2000, rng)[0].astype(np.float32)
    x64 = x32.astype(np.float64)
    start = perturb(truth, rng)
    s32 = lr.chunk_stats(x32, lr.prepare(start, np.float32), block_rows=256)
    s64 = lr.chunk_stats(x64, lr.prepare(start, np.float64), block_rows=256)
    # Stated tolerances (measured in brackets): mean log-likelihood 1e-6
    # relative (3e-8); new means 1e-6 absolute on an offset of 1e4, i.e. 1e-10
    # of the offset: the shift keeps the digits (1.5e-9); noise 1e-4 relative
    # (5e-6); factors 1e-5 absolute, entries of order 1 (4e-7).
    assert s32.mean_loglik == pytest.approx(s64.mean_loglik, rel=1e-6)
    m32 = lr.m_step(s32, start, reg_covar=1e-6, dtype=np.float32).params
    m64 = lr.m_step(s64, start, reg_covar=1e-6).params
    np.testing.assert_allclose(m32.means, m64.means, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m32.noise_variances, m64.noise_variances, rtol=1e-4)
    np.testing.assert_allclose(m32.factors, m64.factors, rtol=0, atol=1e-5)


def test_block_never_allocates_d_squared(rng):
    n_features, rank, n_components = 4000, 5, 3
    params = make_params(rng, n_components, n_features, rank, "diag")
    x = lr.sample(params, 600, rng)[0]
    prepared = lr.prepare(params, np.float64)
    tracemalloc.start()
    try:
        stats = lr.chunk_stats(x, prepared, block_rows=256)
        lr.m_step(stats, params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    d2 = 8 * n_features**2  # 128 MB
    # The block's design [1, x - c0, (x - c0)^2] is 256 x 8001 float64 (16 MB).
    assert peak < d2 / 4, peak


# -- parameters, counting, sampling, dense covariances ------------------------


BAD_PARAMS = {
    "means-1d": (dict(means=np.zeros(3)), ShapeMismatchError),
    "weights-length": (dict(weights=np.ones(3) / 3), ShapeMismatchError),
    "factors-features": (dict(factors=np.zeros((2, 5, 1))), ShapeMismatchError),
    "noise-3d": (dict(noise_variances=np.ones((2, 4, 1))), ShapeMismatchError),
    "noise-components": (dict(noise_variances=np.ones(3)), ShapeMismatchError),
    "noise-zero": (dict(noise_variances=np.array([[1.0, 1, 1, 0], [1, 1, 1, 1]])), InvalidDataError),
    "noise-negative-spherical": (dict(noise_variances=np.array([1.0, -1.0])), InvalidDataError),
    "means-nan": (dict(means=np.array([[0.0, np.nan, 0, 0], [0, 0, 0, 0]])), InvalidDataError),
    "weights-negative": (dict(weights=np.array([1.5, -0.5])), InvalidDataError),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS), ids=list(BAD_PARAMS))
def test_params_validation(case):
    good = dict(weights=np.ones(2) / 2, means=np.zeros((2, 4)), factors=np.zeros((2, 4, 1)),
                noise_variances=np.ones((2, 4)))
    change, error = BAD_PARAMS[case]
    with pytest.raises(error):
        lr.LowRankParams(**{**good, **change})


@pytest.mark.parametrize("noise_type,expected", [("diag", 1 + 20 + 54 + 20), ("spherical", 1 + 20 + 54 + 2)])
def test_n_parameters(noise_type, expected):
    # K=2, D=10, l=3: (K-1) + K D + K (D l - l(l-1)/2) + noise (K D or K)
    assert lr.n_parameters(2, 10, 3, noise_type) == expected


def test_sample_moments_match_the_model(rng):
    params = make_params(rng, 2, 4, 2, "diag")
    x, labels = lr.sample(params, 40000, rng)
    assert x.shape == (40000, 4) and set(np.unique(labels)) <= {0, 1}
    for k in range(2):
        xk = x[labels == k]
        np.testing.assert_allclose(xk.mean(axis=0), params.means[k], atol=0.1)
        np.testing.assert_allclose(np.cov(xk.T), dense_cov(params, k), atol=0.25)


def test_dense_covariances_and_memory_limit(rng):
    params = make_params(rng, 3, 5, 2, "spherical")
    cov = lr.dense_covariances(params)
    for k in range(3):
        np.testing.assert_allclose(cov[k], dense_cov(params, k), rtol=1e-14)
    with pytest.raises(lr.DenseCovarianceTooLargeError, match="GiB") as info:
        lr.dense_covariances(params, max_bytes=3 * 5 * 5 * 8 - 1)
    assert isinstance(info.value, DgmmError)


def test_m_step_marks_collapsed_components(rng):
    truth = make_params(rng, 2, 5, 1, "diag", spread=50.0)
    x = truth.means[0] + 0.1 * rng.standard_normal((300, 5))  # no row near component 1
    stats = lr.chunk_stats(x, lr.prepare(truth, np.float64))
    result = lr.m_step(stats, truth, reg_covar=1e-6)
    assert result.bad.tolist() == [1]
    np.testing.assert_array_equal(result.params.factors[1], truth.factors[1])
