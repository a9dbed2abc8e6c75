"""The 'spherical' covariance type: one variance per component."""

from __future__ import annotations

import numpy as np

from dgmm.core.covariance.base import ExpandedGEMM

__all__ = ["Spherical"]


class Spherical(ExpandedGEMM):
    """Each component has a single variance shared by all features."""

    name = "spherical"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components,)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components

    def precisions_cholesky(self, covariances):
        ok = np.isfinite(covariances) & (covariances > 0.0)
        safe = np.where(ok, covariances, 1.0)
        return 1.0 / np.sqrt(safe), np.flatnonzero(~ok)

    def precisions_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions):
        return 1.0 / precisions

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return n_features * np.log(precisions_cholesky)

    def is_positive_definite(self, precisions):
        return np.flatnonzero(~(np.isfinite(precisions) & (precisions > 0.0)))

    def n_extra(self, n_features):
        return 1

    def fill_extra(self, a, n_features):
        sq = a[:, 1 + n_features]
        np.square(a[:, 1], out=sq)
        for j in range(2, 1 + n_features):
            sq += np.square(a[:, j])

    def _expansion(self, means_c, precisions_cholesky, const, scale):
        # p |x - mu|^2 = p |x|^2 - 2 p x.mu + p |mu|^2 for the design [1, x, |x|^2].
        mu = means_c.astype(np.float64)
        prec = precisions_cholesky.astype(np.float64) ** 2  # (K,)
        w = np.empty((2 + mu.shape[1], mu.shape[0]))
        w[0] = const + scale * prec * np.einsum("kd,kd->k", mu, mu)
        w[1 : 1 + mu.shape[1]] = (-2.0 * scale * prec[:, None] * mu).T
        w[1 + mu.shape[1]] = scale * prec
        return w.astype(means_c.dtype)

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        w = self._expansion(means_c, precisions_cholesky, 0.0, 1.0)
        out = self.design(xc) @ w
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(self, a, resp, moments, shifts_c, out, scratch=None):
        n_features = shifts_c.shape[1]
        nk, sum_rxc = moments[:, 0], moments[:, 1 : 1 + n_features]
        out += moments[:, 1 + n_features]
        out -= 2.0 * np.einsum("kd,kd->k", shifts_c, sum_rxc)
        out += nk * np.einsum("kd,kd->k", shifts_c, shifts_c)

    def m_step(self, nk, delta, sum_xx, reg_covar):
        n_features = delta.shape[1]
        return (sum_xx / nk - np.einsum("kd,kd->k", delta, delta)) / n_features + reg_covar

    def precision_traces(self, precisions_cholesky, n_components, n_features):
        return precisions_cholesky**2 * n_features

    def variance_extremes(self, covariances, precisions_cholesky):
        return covariances, covariances

    def take(self, covariances, index):
        return covariances[index]

    def principal_axis(self, covariances, k, n_features, rng):
        # Every direction is principal; a random one keeps splits unbiased.
        axis = rng.standard_normal(n_features)
        return float(covariances[k]), axis / np.linalg.norm(axis)

    def halve_along(self, covariances, k, variance, axis):
        return covariances[k]

    def sample_component(self, rng, mean, covariances, k, n_samples):
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z * np.sqrt(covariances[k])
