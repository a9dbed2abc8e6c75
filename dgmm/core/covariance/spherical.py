"""The 'spherical' covariance type: one variance per component."""

from __future__ import annotations

import numpy as np

from dgmm.core.covariance.base import ExpandedGEMM, Scratch

__all__ = ["Spherical"]


class Spherical(ExpandedGEMM):
    """Each component has a single variance shared by all features."""

    name = "spherical"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components,)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components

    def precisions_cholesky(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(covariances) & (covariances > 0.0)
        safe = np.where(ok, covariances, 1.0)
        return 1.0 / np.sqrt(safe), np.flatnonzero(~ok)

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return 1.0 / precisions

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        return n_features * np.log(precisions_cholesky)

    def is_positive_definite(self, precisions: np.ndarray) -> np.ndarray:
        return np.flatnonzero(~(np.isfinite(precisions) & (precisions > 0.0)))

    def n_extra(self, n_features: int) -> int:
        return 1

    def fill_extra(self, a: np.ndarray, n_features: int) -> None:
        sq = a[:, 1 + n_features]
        np.square(a[:, 1], out=sq)
        for j in range(2, 1 + n_features):
            sq += np.square(a[:, j])

    def _expansion(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        const: np.ndarray | float,
        scale: float,
    ) -> np.ndarray:
        # p |x - mu|^2 = p |x|^2 - 2 p x.mu + p |mu|^2 for the design [1, x, |x|^2].
        mu = means_c.astype(np.float64)
        prec = precisions_cholesky.astype(np.float64) ** 2  # (K,)
        w = np.empty((2 + mu.shape[1], mu.shape[0]))
        w[0] = const + scale * prec * np.einsum("kd,kd->k", mu, mu)
        w[1 : 1 + mu.shape[1]] = (-2.0 * scale * prec[:, None] * mu).T
        w[1 + mu.shape[1]] = scale * prec
        return w.astype(means_c.dtype)

    def block_sum_xx(
        self,
        a: np.ndarray,
        resp: np.ndarray,
        moments: np.ndarray,
        shifts_c: np.ndarray,
        out: np.ndarray,
        scratch: Scratch | None = None,
    ) -> None:
        n_features = shifts_c.shape[1]
        nk, sum_rxc = moments[:, 0], moments[:, 1 : 1 + n_features]
        out += moments[:, 1 + n_features]
        out -= 2.0 * np.einsum("kd,kd->k", shifts_c, sum_rxc)
        out += nk * np.einsum("kd,kd->k", shifts_c, shifts_c)

    def m_step(
        self, nk: np.ndarray, delta: np.ndarray, sum_xx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        n_features = delta.shape[1]
        return (sum_xx / nk - np.einsum("kd,kd->k", delta, delta)) / n_features + reg_covar

    def precision_traces(
        self, precisions_cholesky: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        return precisions_cholesky**2 * n_features

    def variance_extremes(
        self, covariances: np.ndarray, precisions_cholesky: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return covariances, covariances

    def take(self, covariances: np.ndarray, index: np.ndarray) -> np.ndarray:
        return covariances[index]

    def principal_axis(
        self, covariances: np.ndarray, k: int, n_features: int, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        # Every direction is principal; a random one keeps splits unbiased.
        axis = rng.standard_normal(n_features)
        return float(covariances[k]), axis / np.linalg.norm(axis)

    def halve_along(
        self, covariances: np.ndarray, k: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        return covariances[k]

    def weighted_covariance(self, weights: np.ndarray, covariances: np.ndarray, n_features: int) -> np.ndarray:
        return float(weights @ covariances) * np.eye(n_features)

    def project(self, covariances: np.ndarray, axes: np.ndarray, n_components: int) -> np.ndarray:
        return covariances[:, None, None] * (axes @ axes.T)[None]

    def sample_component(
        self,
        rng: np.random.Generator,
        mean: np.ndarray,
        covariances: np.ndarray,
        k: int,
        n_samples: int,
    ) -> np.ndarray:
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z * np.sqrt(covariances[k])
