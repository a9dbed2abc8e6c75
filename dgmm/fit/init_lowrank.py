"""Starting parameters of ``covariance_type="lowrank"`` (mixtures of factor analysers).

The method runs as ``"diag"`` (weights, means and per-feature variances of
each component's rows, :func:`dgmm.fit.init.initialize`), then one row sample
shared by all restarts is gathered (1 gather) and each component gets the
factors of a PCA of its sample members (nearest mean) and the residual
variance as noise (:func:`lowrank_from_diag`).

``"split"`` grows the mixture as for the other covariance types: one
component (1 gather of one row, 1 hard-assignment pass) with the PCA of the
row sample (1 gather), then doubling rounds that split the heaviest
components along their leading direction
(:func:`dgmm.core.lowrank_family.split_component`), each followed by
``split_em_iter`` (2) EM passes; the restarts share every pass.
"""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np

from dgmm import graph as _graph
from dgmm.core import seeding as _seeding
from dgmm.core.lowrank import LowRankParams
from dgmm.core.lowrank_family import LOWRANK, split_component
from dgmm.core.options import NoiseType
from dgmm.core.params import GMMParams
from dgmm.fit import init as _init
from dgmm.fit.init import InitConfig
from dgmm.fit.spec import EMConfig

__all__ = ["grow", "initialize", "lowrank_from_diag"]


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
    """Low-rank starting parameters: the method run as ``"diag"``, then a PCA per component."""
    given = (weights_init, means_init, factors_init, noise_variances_init)
    if all(a is not None for a in given):
        return [LowRankParams(*given)] * n_init  # type: ignore[arg-type]
    split = config.init_params == "split"
    diag = _init.initialize(
        x, replace(config, n_components=1, init_params="random_from_data") if split else config,
        replace(em_config, covariance_type="diag"), n_init,
        sample_weight=sample_weight, weights_init=None if split else weights_init,
        means_init=None if split else means_init,
    )
    n_rows, n_features = x.shape
    size = min(
        n_rows,
        max(config.sample_size, 20 * config.n_components),
        max(2 * config.n_components, config.sample_bytes // (8 * n_features)),
    )
    # One sample serves every restart: one gather, the same rows whatever n_init.
    rng = np.random.default_rng([config.seed, 0, 0, 7])
    (sample,) = _init.gather_rows(x, [_init.sample_indices(n_rows, size, rng)])
    out = []
    for r, g in enumerate(diag):
        rng = np.random.default_rng([config.seed, r, 7])
        given = None if split else factors_init
        out.append(lowrank_from_diag(g, sample, config.rank, config.noise_type, rng, factors=given))
    if split:
        out = _grow_by_splits(x, out, sample_weight, config, em_config)
    return [_override(p, weights_init, means_init, factors_init, noise_variances_init) for p in out]


def _grow_by_splits(
    x: da.Array,
    params: list[LowRankParams],
    sample_weight: da.Array | None,
    config: InitConfig,
    em_config: EMConfig,
) -> list[LowRankParams]:
    """Doubling rounds from one component, each followed by ``split_em_iter`` lockstep EM passes."""
    rngs = [np.random.default_rng([config.seed, r, 11]) for r in range(len(params))]
    while params[0].n_components < config.n_components:
        params = [grow(p, config.n_components) for p in params]
        for _ in range(config.split_em_iter):
            stats = _graph.stats_pass(
                x, tuple(LOWRANK.e_step(p) for p in params), sample_weight,
                split_every=em_config.split_every, block_rows=em_config.block_rows,
            )
            params = [LOWRANK.m_step(s, p, em_config, x.dtype, rng)[0] for s, p, rng in zip(stats, params, rngs)]
    return params


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


def lowrank_from_diag(
    params: GMMParams,
    sample: np.ndarray,
    rank: int,
    noise_type: NoiseType,
    rng: np.random.Generator,
    *,
    factors: np.ndarray | None = None,
) -> LowRankParams:
    """Low-rank parameters from a ``"diag"`` mixture and a row sample.

    Each component keeps its weight and mean; its factors are the top
    ``rank`` principal directions of its sample members (rows nearest its
    mean) scaled as probabilistic PCA's maximum (``sqrt(lambda - sigma^2)``,
    sigma^2 the mean variance left over); its noise is the variance the
    factors leave of its per-feature variances (``"diag"``), or their mean
    (``"spherical"``). Directions a component's few members cannot give are
    random and small (zero factors are a fixed point of EM). ``factors``, if
    given (n_components, n_features, rank), replace the PCA's.

    Parameters
    ----------
    params : GMMParams
        A ``"diag"`` mixture of shape (n_components, n_features).
    sample : ndarray of shape (n_rows, n_features)
    rank : int
    noise_type : {'diag', 'spherical'}
    rng : numpy.random.Generator

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
        members = sample[labels == k] - params.means[k]
        n_k = members.shape[0]
        top = min(rank, max(n_k - 1, 0))
        lam = np.zeros(rank)
        directions = np.zeros((n_features, rank))
        if top:
            _, s, vt = np.linalg.svd(members / np.sqrt(n_k), full_matrices=False)
            lam[:top] = s[:top] ** 2
            directions[:, :top] = vt[:top].T
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
