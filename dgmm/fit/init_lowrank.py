"""Starting parameters of ``covariance_type="lowrank"`` (mixtures of factor analysers).

The method runs as ``"diag"`` (weights, means and per-feature variances of
each component's rows, :func:`dgmm.fit.init.initialize`), then one row sample
shared by all restarts is gathered (1 gather) and each component gets the
factors of a PCA of its sample members (nearest mean) and the residual
variance as noise (:func:`lowrank_from_diag`). ``"split"`` is not available
for it yet.
"""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np

from dgmm.core import seeding as _seeding
from dgmm.core.lowrank import LowRankParams
from dgmm.core.options import NoiseType
from dgmm.core.params import GMMParams
from dgmm.errors import InvalidOptionError
from dgmm.fit import init as _init
from dgmm.fit.init import InitConfig
from dgmm.fit.spec import EMConfig

__all__ = ["initialize", "lowrank_from_diag"]



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
    if config.init_params == "split":
        raise InvalidOptionError(
            "init_params='split' is not available for covariance_type='lowrank' yet (it would "
            "grow the mixture by splitting along the leading factor); got init_params='split'. "
            "Pass init_params='kmeans' (the default), 'k-means++', 'random' or 'random_from_data'."
        )
    diag = _init.initialize(
        x, config, replace(em_config, covariance_type="diag"), n_init,
        sample_weight=sample_weight, weights_init=weights_init, means_init=means_init,
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
        p = lowrank_from_diag(g, sample, config.rank, config.noise_type, rng, factors=factors_init)
        if noise_variances_init is not None:
            p = LowRankParams(p.weights, p.means, p.factors, noise_variances_init)
        out.append(p)
    return out


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
