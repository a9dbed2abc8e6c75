"""The 'diag' covariance type: a variance per component and feature."""

from __future__ import annotations

import numpy as np

from dgmm.core.covariance.base import HALF_VAR, ExpandedGEMM

__all__ = ["Diag"]


class Diag(ExpandedGEMM):
    """Each component has its own diagonal covariance (a variance per feature)."""

    name = "diag"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

    def precisions_cholesky(self, covariances):
        ok = np.isfinite(covariances) & (covariances > 0.0)
        bad = np.flatnonzero(~ok.all(axis=1))
        safe = np.where(ok, covariances, 1.0)
        return 1.0 / np.sqrt(safe), bad

    def precisions_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions):
        return 1.0 / precisions

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return np.sum(np.log(precisions_cholesky), axis=1)

    def is_positive_definite(self, precisions):
        ok = np.isfinite(precisions) & (precisions > 0.0)
        return np.flatnonzero(~ok.all(axis=1))

    def n_extra(self, n_features):
        return n_features

    def fill_extra(self, a, n_features):
        np.square(a[:, 1 : 1 + n_features], out=a[:, 1 + n_features :])

    def _expansion(self, means_c, precisions_cholesky, const, scale):
        # (x - mu)^2 p = x^2 p - 2 x mu p + mu^2 p, as the rows of one GEMM
        # operand for the design [1, x, x^2]; about c0 the cancellation only
        # costs eps * (distance from c0 in standard deviations)^2.
        mu = means_c.astype(np.float64)
        prec = precisions_cholesky.astype(np.float64) ** 2  # (K, D)
        w = np.empty((1 + 2 * mu.shape[1], mu.shape[0]))
        w[0] = const + scale * np.sum(mu * mu * prec, axis=1)
        w[1 : 1 + mu.shape[1]] = (-2.0 * scale * mu * prec).T
        w[1 + mu.shape[1] :] = scale * prec.T
        return w.astype(means_c.dtype)

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        w = self._expansion(means_c, precisions_cholesky, 0.0, 1.0)
        out = self.design(xc) @ w
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(self, a, resp, moments, shifts_c, out, scratch=None):
        # sum_i r_ik (x'-a_k)^2 = sum_i r_ik x'^2 - 2 a_k s_k + N_k a_k^2, per block
        # in float64; sum_i r_ik x'^2 is a column block of ``moments``.
        n_features = shifts_c.shape[1]
        nk, sum_rxc = moments[:, 0], moments[:, 1 : 1 + n_features]
        out += moments[:, 1 + n_features :]
        out -= 2.0 * shifts_c * sum_rxc
        out += nk[:, None] * shifts_c * shifts_c

    def m_step(self, nk, delta, sum_xx, reg_covar):
        return sum_xx / nk[:, None] - delta * delta + reg_covar

    def precision_traces(self, precisions_cholesky, n_components, n_features):
        return np.sum(precisions_cholesky**2, axis=1)

    def variance_extremes(self, covariances, precisions_cholesky):
        return covariances.min(axis=1), covariances.max(axis=1)

    def take(self, covariances, index):
        return covariances[index]

    def principal_axis(self, covariances, k, n_features, rng):
        j = int(np.argmax(covariances[k]))
        axis = np.zeros(covariances.shape[1])
        axis[j] = 1.0
        return float(covariances[k, j]), axis

    def halve_along(self, covariances, k, variance, axis):
        return covariances[k] - (1.0 - HALF_VAR) * variance * axis * axis

    def sample_component(self, rng, mean, covariances, k, n_samples):
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z * np.sqrt(covariances[k])
