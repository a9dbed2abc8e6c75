"""Starting parameters of ``covariance_type="lowrank"`` (mixtures of factor analysers).

One sample pass draws a uniform row sample (:func:`dgmm.fit.init.draw_samples`:
exact in size, the same on any chunking or number of workers, with the rows'
``sample_weight``; it checks the data), large enough for both the method's
in-memory steps and a PCA per component (up to ``sample_bytes`` of float64,
1 GiB, where the Gaussian methods keep ``init_sample_bytes``: wide images
need more rows than their cap allows). The method then runs as ``"diag"``
on that same sample (:func:`dgmm.fit.init.initialize_many` with
``samples=``), and each component gets the factors of a PCA of its sample
members (nearest mean) and the residual variance as noise
(:func:`lowrank_from_diag`). ``"split"`` grows the mixture in memory on the
sample and makes one EM pass on all rows. Restarts share every pass:

================== ============================================================
method             cost
================== ============================================================
"kmeans"           2 passes: the sample pass, k-means on the sample in memory,
                   1 hard-assignment pass (as ``"diag"``), PCA in memory
"k-means++"        2 passes: the same with k-means++ alone
"random_from_data" 2 passes and a gather of K rows per restart: the sample
                   pass, 1 hard-assignment pass, PCA in memory
"random"           2 passes and a gather of the first rows: the sample pass,
                   1 pass of random responsibilities, PCA in memory
"split"            2 passes: the sample pass, then in memory on the sample one
                   component (its mean, variances and PCA) and doubling rounds
                   that split the heaviest components along their leading
                   direction (:func:`dgmm.core.lowrank_family.split_component`),
                   each followed by ``split_em_iter`` (2) EM iterations on the
                   sample, then 1 EM pass on all rows
================== ============================================================

When the sample is every row (data no larger than it), the second pass of
"kmeans", "k-means++" and "split" runs on the sample in memory: 1 pass.
Otherwise it stays: the sample of ``init.assign_size`` counts the "diag"
parameters, far fewer than the factors' (``InitConfig(assign_on_sample=True)``
forces the sample's estimate anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import dask.array as da
import numpy as np
from sklearn.utils.extmath import randomized_svd

from dgmm import graph as _graph
from dgmm.core import seeding as _seeding
from dgmm.core.lowrank import LowRankParams
from dgmm.core.lowrank_family import LOWRANK, split_component
from dgmm.core.options import NoiseType
from dgmm.core.params import GMMParams
from dgmm.errors import InvalidOptionError
from dgmm.fit import init as _init
from dgmm.fit.init import InitConfig, InitRequest
from dgmm.fit.spec import EMConfig

__all__ = ["grow", "initialize", "initialize_many", "lowrank_from_diag", "sample_rows"]


def sample_rows(config: InitConfig, n_rows: int, n_features: int) -> int:
    """Rows of the low-rank sample: the sample pass's size, capped by ``sample_bytes`` of float64.

    >>> sample_rows(InitConfig(8), 10**7, 12288) == (1 << 30) // (8 * 12288)
    True
    """
    cap = max(config.init_sample_bytes, config.sample_bytes)
    return _init.sample_size(replace(config, init_sample_bytes=cap), n_rows, n_features)


def initialize(
    x: da.Array,
    config: InitConfig,
    em_config: EMConfig,
    n_init: int,
    *,
    sample_weight: da.Array | None = None,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    factors_init: np.ndarray | None = None,
    noise_variances_init: np.ndarray | None = None,
) -> list[LowRankParams]:
    """Low-rank starting parameters for ``n_init`` restarts, in at most 2 passes.

    The method runs as ``"diag"`` on the shared row sample, then a PCA per
    component on that sample; ``"split"`` grows from one component on the
    sample. Given arrays replace what the method found (as scikit-learn);
    when all four are given, no pass is made. One request of
    :func:`initialize_many`.
    """
    arrays = {
        "weights_init": weights_init, "means_init": means_init, "factors_init": factors_init,
        "noise_variances_init": noise_variances_init,
    }
    request = InitRequest(config, em_config, n_init, arrays)
    return initialize_many(x, [request], sample_weight=sample_weight)[0]  # type: ignore[return-value]


_LOWRANK_ARRAYS = ("weights_init", "means_init", "factors_init", "noise_variances_init")


def initialize_many(
    x: da.Array,
    requests: Sequence[InitRequest],
    *,
    sample_weight: da.Array | None = None,
) -> list[list[GMMParams | LowRankParams]]:
    """Starting parameters of Gaussian and low-rank requests, all sharing the same passes.

    One sample pass serves every request: the Gaussian ones' and the
    low-rank ones' ``"diag"`` starts (:func:`dgmm.fit.init.initialize_many`,
    at most one statistics pass for all of them) and each low-rank
    request's PCA; the low-rank ``"split"`` requests grow on the sample in
    memory and share one EM pass on all rows (none when the sample is
    every row). A selection sweep over ranks, K and covariance types thus
    reads the data at most 3 times to start (plus a gather for "random").

    Returns
    -------
    starts : list of list of GMMParams or LowRankParams
        Per request, one starting point per restart.
    """
    if not any(r.em_config.covariance_type == "lowrank" for r in requests):
        return _init.initialize_many(x, requests, sample_weight=sample_weight)  # type: ignore[return-value]
    n_rows, n_features = x.shape
    out: list[list[GMMParams | LowRankParams]] = [[] for _ in requests]
    gaussian: list[InitRequest] = []  # the Gaussian requests and the low-rank ones' "diag" starts
    owners: list[int] = []
    splits: list[int] = []
    sizes: dict[int, int] = {}
    for i, request in enumerate(requests):
        if request.em_config.covariance_type != "lowrank":
            gaussian.append(request)
            owners.append(i)
            continue
        given = tuple(request.arrays.get(name) for name in _LOWRANK_ARRAYS)
        if all(a is not None for a in given):
            out[i] = [LowRankParams(*given)] * int(request.n_init)  # type: ignore[arg-type]
            continue
        if int(request.n_init) < 1:
            raise InvalidOptionError(
                f"n_init must be an integer of at least 1, got {request.n_init!r}. Pass n_init=1, the default."
            )
        config = request.config
        size = sample_rows(config, n_rows, n_features)
        sizes[config.seed] = max(size, sizes.get(config.seed, 0))
        if config.init_params == "split":
            splits.append(i)
            continue
        # The "diag" start may come from the sample in memory (no second pass) only
        # when the sample is every row: the rule of init.assign_size counts the
        # "diag" parameters, far fewer than the factors' (unless forced).
        if config.assign_on_sample is None and size < n_rows:
            config = replace(config, assign_on_sample=False)
        arrays = {"weights_init": request.arrays.get("weights_init"), "means_init": request.arrays.get("means_init")}
        gaussian.append(InitRequest(config, replace(request.em_config, covariance_type="diag"), request.n_init, arrays))
        owners.append(i)
    for seed, size in _init.sample_sizes(gaussian, n_rows, n_features).items():
        sizes[seed] = max(size, sizes.get(seed, 0))
    samples: dict[int, _seeding.RowSample] = {}
    # Numbered steps when only "split" requests start here (1: the sample pass, 2: the
    # rounds in memory, 3: the EM pass on all rows); else init.initialize_many numbers its own.
    every_row = all(sample_rows(requests[i].config, n_rows, n_features) >= n_rows for i in splits)
    steps = None if gaussian else 2 if every_row else 3
    if sizes:
        # The one sample pass: every request's in-memory steps and the PCAs share it.
        with _graph.phase("initialisation", steps and 1, steps):
            samples = _init.draw_samples(x, sizes, sample_weight, split_every=requests[0].em_config.split_every)
    if gaussian:
        starts = _init.initialize_many(x, gaussian, sample_weight=sample_weight, samples=samples)
        for i, request, params in zip(owners, gaussian, starts):
            if requests[i].em_config.covariance_type != "lowrank":
                out[i] = list(params)
                continue
            config = requests[i].config
            sample = _seeding.smallest_keys(samples[config.seed], sample_rows(config, n_rows, n_features))
            points = np.asarray(sample.points, dtype=np.float64)
            factors = requests[i].arrays.get("factors_init")
            out[i] = [
                lowrank_from_diag(
                    g, points, config.rank, config.noise_type, np.random.default_rng([config.seed, r, 7]),
                    factors=factors, sample_weight=sample.weights,
                )
                for r, g in enumerate(params)
            ]
    if splits:
        grown = _split_many(x, [requests[i] for i in splits], samples, sample_weight, steps)
        for i, params in zip(splits, grown):
            out[i] = params
    for i, request in enumerate(requests):
        if request.em_config.covariance_type == "lowrank":
            given = [request.arrays.get(name) for name in _LOWRANK_ARRAYS]
            out[i] = [_override(p, *given) for p in out[i]]  # type: ignore[arg-type]
    return out


def _one_component(points: np.ndarray, weights: np.ndarray | None, reg_covar: float) -> GMMParams:
    """The ``"diag"`` mixture of one component: the sample's (weighted) mean and variances."""
    if weights is not None and not weights.sum() > 0.0:
        weights = None  # no weighted row in the sample: its rows alone
    mean = np.average(points, axis=0, weights=weights)
    var = np.average((points - mean) ** 2, axis=0, weights=weights) + reg_covar
    return GMMParams.from_covariances(np.ones(1), mean[None, :], var[None, :], "diag")


def _split_many(
    x: da.Array,
    requests: Sequence[InitRequest],
    samples: Mapping[int, _seeding.RowSample],
    sample_weight: da.Array | None,
    steps: int | None,
) -> list[list[LowRankParams]]:
    """``"split"``: per request, the doubling rounds in memory on its sample; then the last EM
    iteration in memory when the sample is every row, else in one lockstep EM pass on all
    rows shared by every such request."""
    dtype = x.dtype
    n_rows, n_features = x.shape
    grown: list[tuple[list[LowRankParams], list[np.random.Generator], EMConfig]] = []
    stats: list[tuple] = []
    with _graph.phase("initialisation", steps and 2, steps):
        for request in requests:
            config, em_config, n_init = request.config, request.em_config, int(request.n_init)
            sample = _seeding.smallest_keys(samples[config.seed], sample_rows(config, n_rows, n_features))
            points, w = sample.points, sample.weights
            points64 = np.asarray(points, dtype=np.float64)
            one = _one_component(points64, w, em_config.reg_covar)
            params = [
                lowrank_from_diag(
                    one, points64, config.rank, config.noise_type, np.random.default_rng([config.seed, r, 7]),
                    sample_weight=w,
                )
                for r in range(n_init)
            ]
            del points64
            rngs = [np.random.default_rng([config.seed, r, 11]) for r in range(n_init)]
            while params[0].n_components < config.n_components:
                params = [grow(p, config.n_components) for p in params]
                for _ in range(config.split_em_iter):
                    # Every restart reads the sample in the one call, as a pass would the chunks.
                    s = LOWRANK.chunk_stats(
                        points, tuple(LOWRANK.e_step(p) for p in params), w, block_rows=em_config.block_rows
                    )
                    params = [LOWRANK.m_step(t, p, em_config, dtype, rng)[0] for t, p, rng in zip(s, params, rngs)]
            grown.append((params, rngs, em_config))
            # The sample is every row: the last EM iteration on it, in memory.
            every_row = sample.rows.shape[0] >= n_rows
            stats.append(
                LOWRANK.chunk_stats(points, tuple(LOWRANK.e_step(p) for p in params), w, block_rows=em_config.block_rows)
                if every_row else None
            )
    pending = [j for j, s in enumerate(stats) if s is None]
    if pending:
        em_config = requests[pending[0]].em_config
        with _graph.phase("initialisation", steps and 3, steps):
            # The sample pass checked the data.
            flat = iter(_graph.stats_pass(
                x, tuple(LOWRANK.e_step(p) for j in pending for p in grown[j][0]), sample_weight,
                split_every=em_config.split_every, block_rows=em_config.block_rows,
            ))
        for j in pending:
            stats[j] = tuple(next(flat) for _ in grown[j][0])
    return [
        [LOWRANK.m_step(t, p, em_config, dtype, rng)[0] for t, p, rng in zip(s, params, rngs)]
        for s, (params, rngs, em_config) in zip(stats, grown)
    ]


def grow(params: LowRankParams, n_components: int) -> LowRankParams:
    """Double the number of components (up to ``n_components``) by splitting the
    heaviest ones along their leading direction (the top eigenvector of
    ``A_k A_k^T + Psi_k``).

    >>> rng = np.random.default_rng(0)
    >>> one = LowRankParams(np.ones(1), np.zeros((1, 3)), rng.standard_normal((1, 3, 1)), np.ones((1, 3)))
    >>> two = grow(one, 5)
    >>> two.n_components, grow(grow(two, 5), 5).n_components
    (2, 5)
    """
    k = params.n_components
    order = np.argsort(-params.weights, kind="stable")[: min(k, n_components - k)]
    index = np.concatenate([np.arange(k), order])
    weights = params.weights[index].copy()
    weights[k:] = 0.0
    grown = LowRankParams(
        weights, params.means[index], params.factors[index], params.noise_variances[index]
    )
    for j, source in enumerate(order):
        grown = split_component(grown, int(source), k + j)
    return grown


def _override(
    params: LowRankParams,
    weights: np.ndarray | None,
    means: np.ndarray | None,
    factors: np.ndarray | None,
    noise_variances: np.ndarray | None,
) -> LowRankParams:
    """The method's parameters with the user's initial arrays in their place (as scikit-learn)."""
    if all(a is None for a in (weights, means, factors, noise_variances)):
        return params
    return LowRankParams(
        params.weights if weights is None else weights,
        params.means if means is None else means,
        params.factors if factors is None else factors,
        params.noise_variances if noise_variances is None else noise_variances,
    )


def _nearest(sample: np.ndarray, means: np.ndarray, block_rows: int = 4096) -> np.ndarray:
    """Index of the nearest mean of every sample row, in blocks (bounded (rows, K) temporaries)."""
    c0 = means.mean(axis=0)
    centers = means - c0
    sq_norms = np.einsum("kd,kd->k", centers, centers)
    labels = np.empty(sample.shape[0], dtype=np.intp)
    for start in range(0, sample.shape[0], block_rows):
        block = sample[start : start + block_rows] - c0
        labels[start : start + block_rows] = _seeding.nearest_center(block, centers, sq_norms)[1]
    return labels


# Members (rows or features) above which the PCA takes the top singular
# vectors by scikit-learn's randomized SVD instead of LAPACK's full one, which
# computes all min(rows, features) of them: 84 s against 1.6 s for 6,000 rows of
# 3,072 features, under load (rank 10, top eigenvalues within 2e-4, subspace
# cosines 0.9998).
EXACT_SVD_MAX = 200


def _top_singular(m: np.ndarray, top: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` singular values (top,) and right vectors (top, n_features) of ``m``."""
    if min(m.shape) <= EXACT_SVD_MAX:
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        return s[:top], vt[:top]
    _, s, vt = randomized_svd(m, top, random_state=int(rng.integers(2**31)))
    return s, vt


def lowrank_from_diag(
    params: GMMParams,
    sample: np.ndarray,
    rank: int,
    noise_type: NoiseType,
    rng: np.random.Generator,
    *,
    factors: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> LowRankParams:
    """Low-rank parameters from a ``"diag"`` mixture and a row sample.

    Each component keeps its weight and mean; its factors are the top
    ``rank`` principal directions of its sample members (rows nearest its
    mean) scaled as probabilistic PCA's maximum (``sqrt(lambda - sigma^2)``,
    sigma^2 the mean variance left over); its noise is the variance the
    factors leave of its per-feature variances (``"diag"``), or their mean
    (``"spherical"``). Directions a component's few members cannot give are
    random and small (zero factors are a fixed point of EM). Above
    ``EXACT_SVD_MAX`` members and features, the top directions come from a
    randomized SVD (the full one costs up to ~50 times more on images).
    ``factors``, if given (n_components, n_features, rank), replace the
    PCA's. With ``sample_weight``, each member counts by its weight (a
    component whose members all weigh 0 counts them alike).

    Parameters
    ----------
    params : GMMParams
        A ``"diag"`` mixture of shape (n_components, n_features).
    sample : ndarray of shape (n_rows, n_features)
    rank : int
    noise_type : {'diag', 'spherical'}
    rng : numpy.random.Generator
    factors : ndarray of shape (n_components, n_features, rank), default=None
    sample_weight : ndarray of shape (n_rows,), default=None

    Returns
    -------
    params : LowRankParams
    """
    n_components, n_features = params.means.shape
    variances = np.asarray(params.covariances, dtype=np.float64)  # (K, D) diag variances
    labels = _nearest(sample, params.means)
    out_factors = np.zeros((n_components, n_features, rank))
    for k in range(n_components):
        var = variances[k]
        total = float(var.sum())
        mine = labels == k
        members = sample[mine] - params.means[k]
        n_k = members.shape[0]
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[mine]
        # Rows scaled by sqrt(w / sum w): the SVD then gives the weighted covariance's eigenpairs.
        scale_rows = (
            np.sqrt(w / w.sum())[:, None] if w is not None and w.sum() > 0.0 else 1.0 / np.sqrt(max(n_k, 1))
        )
        top = min(rank, max(n_k - 1, 0))
        lam = np.zeros(rank)
        directions = np.zeros((n_features, rank))
        if top:
            s, vt = _top_singular(members * scale_rows, top, rng)
            lam[:top] = s**2
            directions[:, :top] = vt.T
        sigma2 = max((total - lam[:top].sum()) / max(n_features - rank, 1), 1e-6 * total / n_features)
        scale = np.sqrt(np.maximum(lam - sigma2, 0.0))
        weak = scale <= 0.1 * np.sqrt(sigma2)
        if weak.any():
            # Directions the members cannot give: random, small, not zero.
            noise = rng.standard_normal((n_features, int(weak.sum())))
            directions[:, weak] = noise / np.linalg.norm(noise, axis=0)
            scale[weak] = 0.1 * np.sqrt(sigma2)
        out_factors[k] = directions * scale
    if factors is not None:
        out_factors = np.asarray(factors, dtype=np.float64)
    explained = np.sum(out_factors**2, axis=2)
    floor = 1e-3 * variances.mean(axis=1, keepdims=True) + np.finfo(np.float64).tiny
    noise_diag = np.maximum(variances - explained, np.maximum(0.05 * variances, floor))
    noise = noise_diag if noise_type == "diag" else noise_diag.mean(axis=1)
    return LowRankParams(params.weights, params.means, out_factors, noise)
