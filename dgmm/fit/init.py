"""Initialisation at scale: starting parameters for every restart of ``n_init``.

All restarts advance in lockstep, so ``n_init=4`` costs the same passes over
the data as ``n_init=1``. Passes per method (a pass reads every chunk once;
a gather reads only the chunks holding the sampled rows):

============== ================================================================
method         cost
============== ================================================================
"kmeans"       k-means|| (Bahmani et al. 2012): 1 gather, 5 sampling rounds
               (one pass each, 2K candidates a round), 1 pass to weight the
               candidates, weighted k-means on the candidates in memory, then
               Lloyd passes (at most 10, stopping at scikit-learn's KMeans tol)
"k-means++"    1 gather of a uniform sample (max(10000, 20K) rows), k-means++
               on it, 1 hard-assignment pass
"random_from_  1 gather of K rows per restart, 1 hard-assignment pass
data"
"random"       1 gather (the first rows, for a centre), 1 pass of random
               responsibilities
"split"        1 pass for one component, then doubling rounds: split the
               heaviest components along their principal axes, 2 EM passes
============== ================================================================

``covariance_type="lowrank"`` starts in :mod:`dgmm.fit.init_lowrank` (the
method run as ``"diag"``, then a PCA per component).

The hard-assignment pass gives each component the weight, mean and
covariance of the rows nearest its centre (scikit-learn's "kmeans" does the
same with its labels; for "k-means++" and "random_from_data" scikit-learn
instead gives each component one point and a covariance of ``reg_covar``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from dgmm import graph as _graph
from dgmm.core import seeding as _seeding
from dgmm.core.gaussian import GAUSSIAN
from dgmm.core.kernels import HardAssign, RandomResp, frame_shifts
from dgmm.core.mstep import params_from_stats
from dgmm.core.options import INIT_METHODS, InitMethod, NoiseType
from dgmm.core.params import GMMParams, split_component
from dgmm.errors import InvalidOptionError
from dgmm.fit.spec import DEFAULTS, EMConfig, FitSpec

__all__ = ["INIT_METHODS", "InitConfig", "initialize"]


@dataclass(frozen=True)
class InitConfig:
    """How to initialise; the defaults are the documented pass counts."""

    n_components: int
    init_params: InitMethod = DEFAULTS["init_params"]
    seed: int = 0
    kmeans_rounds: int = 5
    oversampling: float = 2.0
    lloyd_max_iter: int = 10
    lloyd_tol: float = 1e-4
    split_em_iter: int = 2
    sample_size: int = 10_000
    rank: int = DEFAULTS["rank"]
    noise_type: NoiseType = DEFAULTS["noise_type"]
    # Bytes of the low-rank initialisation's row sample (float64) at most.
    sample_bytes: int = 1 << 30

    @classmethod
    def from_spec(cls, spec: FitSpec) -> InitConfig:
        """The initialisation of the fit ``spec`` describes (documented pass counts)."""
        return cls(spec.n_components, spec.init_params, spec.seed, rank=spec.rank, noise_type=spec.noise_type)


def _no_op(x: np.ndarray, shared: None, w: np.ndarray | None, *, chunk_index: int, row_offset: int) -> None:
    """A kernel that does nothing: a pass made only for its data check."""
    return None


def _no_op_combine(parts: list[None]) -> None:
    return None


def _restart_rngs(seed: int, n_init: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, r]) for r in range(n_init)]


def gather_rows(x: da.Array, index_sets: list[np.ndarray]) -> list[np.ndarray]:
    """Rows of ``x`` (float64) at each set of global indices, in one gather.

    Gathered rows feed centres before any pass has checked the data: if they
    hold NaN/Inf, a checking pass names the first bad row of the data.
    """
    union = np.unique(np.concatenate(index_sets))
    rows = np.asarray(x[union].compute(), dtype=np.float64)
    if not np.all(np.isfinite(rows)):
        _graph.map_chunks(x, _no_op, _no_op_combine, check_finite=True)
    return [rows[np.searchsorted(union, idx)] for idx in index_sets]


def sample_indices(n_rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_rows, size=min(size, n_rows), replace=False))


def _hard_assign_params(
    x: da.Array,
    centers: list[np.ndarray],
    sample_weight: da.Array | None,
    em_config: EMConfig,
    rngs: list[np.random.Generator],
) -> list[GMMParams]:
    """Initial parameters from one pass assigning every row to its nearest centre."""
    sources = tuple(HardAssign(c, em_config.covariance_type) for c in centers)
    stats = _graph.stats_pass(
        x, sources, sample_weight, split_every=em_config.split_every, check_finite=True
    )
    return [
        params_from_stats(s, frame_shifts(c, x.dtype), em_config, x.dtype, rng)[0]
        for s, c, rng in zip(stats, centers, rngs)
    ]


def _kmeans_parallel(
    x: da.Array,
    sample_weight: da.Array | None,
    config: InitConfig,
    em_config: EMConfig,
    rngs: list[np.random.Generator],
) -> list[GMMParams]:
    n_rows = x.shape[0]
    k = config.n_components
    first = gather_rows(x, [np.asarray([rng.integers(n_rows)]) for rng in rngs])
    candidates = list(first)
    oversampling = max(1, int(round(config.oversampling * k)))
    split_every = em_config.split_every
    for round_index in range(config.kmeans_rounds):
        merged = _graph.map_chunks(
            x,
            _seeding.sample_candidates,
            partial(_seeding.merge_candidates, oversampling=oversampling),
            (candidates, oversampling, config.seed, round_index),
            sample_weight=sample_weight,
            split_every=split_every,
            check_finite=round_index == 0,
        )
        candidates = [np.vstack([c, m.points]) for c, m in zip(candidates, merged)]
    weights = _graph.map_chunks(
        x, _seeding.candidate_weights, _seeding.sum_lists, candidates,
        sample_weight=sample_weight, split_every=split_every,
    )
    centers, data_variance = [], []
    for cand, w, rng in zip(candidates, weights, rngs):
        keep = w > 0
        cand, w = cand[keep], w[keep]
        # scikit-learn's KMeans tol is relative to the mean feature variance.
        mean = np.average(cand, axis=0, weights=w)
        data_variance.append(float(np.average((cand - mean) ** 2, axis=0, weights=w).mean()))
        if cand.shape[0] <= k:
            # Fewer distinct candidates than components: repeat them; EM
            # re-seeds the duplicates that collapse.
            centers.append(cand[np.arange(k) % cand.shape[0]])
            continue
        km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2**31)))
        centers.append(km.fit(cand, sample_weight=w).cluster_centers_)
    return _lloyd(x, centers, sample_weight, config, em_config, rngs, data_variance)


def _lloyd(
    x: da.Array,
    centers: list[np.ndarray],
    sample_weight: da.Array | None,
    config: InitConfig,
    em_config: EMConfig,
    rngs: list[np.random.Generator],
    data_variance: list[float],
) -> list[GMMParams]:
    """Lloyd passes in lockstep; the last pass's statistics give the parameters."""
    active = list(range(len(centers)))
    last_stats: list[Any] = [None] * len(centers)
    last_centers: list[Any] = [None] * len(centers)
    for _ in range(max(1, config.lloyd_max_iter)):
        sources = tuple(HardAssign(centers[r], em_config.covariance_type) for r in active)
        stats = _graph.stats_pass(
            x, sources, sample_weight, split_every=em_config.split_every
        )
        still = []
        for r, s in zip(active, stats):
            shifts = frame_shifts(centers[r], x.dtype)
            safe = np.maximum(s.nk, np.finfo(np.float64).tiny)[:, None]
            new = np.where(s.nk[:, None] > 0, shifts + s.sum_x / safe, centers[r])
            shift = float(((new - centers[r]) ** 2).sum())
            last_stats[r], last_centers[r] = s, centers[r]
            centers[r] = new
            if shift > config.lloyd_tol * data_variance[r]:
                still.append(r)
        active = still
        if not active:
            break
    return [
        params_from_stats(s, frame_shifts(c, x.dtype), em_config, x.dtype, rng)[0]
        for s, c, rng in zip(last_stats, last_centers, rngs)
    ]


def _split_init(
    x: da.Array,
    sample_weight: da.Array | None,
    config: InitConfig,
    em_config: EMConfig,
    rngs: list[np.random.Generator],
) -> list[GMMParams]:
    center = gather_rows(x, [np.arange(min(x.shape[0], 1000))])[0].mean(axis=0)
    params = _hard_assign_params(x, [center[None, :]] * len(rngs), sample_weight, em_config, rngs)
    while params[0].n_components < config.n_components:
        params = [grow(p, config.n_components, rng) for p, rng in zip(params, rngs)]
        for _ in range(config.split_em_iter):
            stats = _graph.stats_pass(
                x, tuple(GAUSSIAN.e_step(p) for p in params), sample_weight,
                split_every=em_config.split_every, block_rows=em_config.block_rows,
            )
            params = [
                GAUSSIAN.m_step(s, p, em_config, x.dtype, rng)[0] for p, s, rng in zip(params, stats, rngs)
            ]
    return params


def grow(params: GMMParams, n_components: int, rng: np.random.Generator) -> GMMParams:
    """Double the number of components (up to ``n_components``) by splitting
    the heaviest ones along their principal axes."""
    k = params.n_components
    n_new = min(k, n_components - k)
    order = np.argsort(-params.weights, kind="stable")[:n_new]
    index = np.concatenate([np.arange(k), order])
    model = params.model
    weights = params.weights[index].copy()
    weights[k:] = 0.0
    grown = GMMParams(
        weights,
        params.means[index],
        model.take(params.covariances, index),
        model.take(params.precisions_cholesky, index),
        params.covariance_type,
    )
    for j, source in enumerate(order):
        grown = split_component(grown, int(source), k + j, rng)
    return grown


def initialize(
    x: da.Array,
    config: InitConfig,
    em_config: EMConfig,
    n_init: int,
    *,
    sample_weight: da.Array | None = None,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> list[GMMParams]:
    """Starting parameters for ``n_init`` restarts.

    When all of ``weights_init``, ``means_init`` and ``precisions_init`` are
    given, no pass is made; otherwise the method runs and the given arrays
    replace what it found (as scikit-learn).
    """
    ct = em_config.covariance_type
    if ct == "lowrank":
        raise InvalidOptionError(
            "covariance_type='lowrank' starts from dgmm.fit.init_lowrank.initialize, not this function."
        )
    rngs = _restart_rngs(config.seed, n_init)
    given = (weights_init, means_init, precisions_init)
    if all(a is not None for a in given):
        return [GMMParams.from_precisions(weights_init, means_init, precisions_init, ct)] * n_init

    method = config.init_params
    n_rows = x.shape[0]
    k = config.n_components
    if method == "kmeans":
        params = _kmeans_parallel(x, sample_weight, config, em_config, rngs)
    elif method == "k-means++":
        sample_size = max(config.sample_size, 20 * k)
        # One sample shared by all restarts; each runs its own k-means++ on it.
        idx = sample_indices(n_rows, sample_size, np.random.default_rng([config.seed, n_init]))
        (sample,) = gather_rows(x, [idx])
        sample_w = None if sample_weight is None else np.asarray(sample_weight[idx].compute(), dtype=np.float64)
        centers = [
            kmeans_plusplus(sample, k, sample_weight=sample_w, random_state=int(rng.integers(2**31)))[0]
            for rng in rngs
        ]
        params = _hard_assign_params(x, centers, sample_weight, em_config, rngs)
    elif method == "random_from_data":
        centers = gather_rows(x, [sample_indices(n_rows, k, rng) for rng in rngs])
        params = _hard_assign_params(x, centers, sample_weight, em_config, rngs)
    elif method == "random":
        center = gather_rows(x, [np.arange(min(n_rows, 1000))])[0].mean(axis=0)
        sources = tuple(
            RandomResp(k, ct, int(rng.integers(2**63)), center) for rng in rngs
        )
        stats = _graph.stats_pass(
            x, sources, sample_weight, split_every=em_config.split_every, check_finite=True
        )
        params = []
        for s, source, rng in zip(stats, sources, rngs):
            c0, shifts_c = source.frame(x.dtype)
            params.append(params_from_stats(s, c0 + shifts_c, em_config, x.dtype, rng)[0])
    elif method == "split":
        params = _split_init(x, sample_weight, config, em_config, rngs)
    else:
        raise InvalidOptionError(
            f"init_params must be one of {list(INIT_METHODS)}, got {method!r}. Pass one of those."
        )

    if any(a is not None for a in given):
        params = [_override(p, weights_init, means_init, precisions_init) for p in params]
    return params


def _override(
    params: GMMParams,
    weights: np.ndarray | None,
    means: np.ndarray | None,
    precisions: np.ndarray | None,
) -> GMMParams:
    weights = params.weights if weights is None else np.asarray(weights, dtype=np.float64)
    means = params.means if means is None else np.asarray(means, dtype=np.float64)
    if precisions is None:
        return GMMParams(weights, means, params.covariances, params.precisions_cholesky, params.covariance_type)
    return GMMParams.from_precisions(weights, means, precisions, params.covariance_type)
