"""The 'diag' covariance type: a variance per component and feature."""

from __future__ import annotations

import numpy as np

from dgmm.core.covariance.base import HALF_VAR, ExpandedGEMM, Scratch

__all__ = ["Diag"]


class Diag(ExpandedGEMM):
    """Each component has its own diagonal covariance (a variance per feature)."""

    name = "diag"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

    def precisions_cholesky(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(covariances) & (covariances > 0.0)
        bad = np.flatnonzero(~ok.all(axis=1))
        safe = np.where(ok, covariances, 1.0)
        return 1.0 / np.sqrt(safe), bad

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky**2

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return 1.0 / precisions

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        return np.sum(np.log(precisions_cholesky), axis=1)

    def is_positive_definite(self, precisions: np.ndarray) -> np.ndarray:
        ok = np.isfinite(precisions) & (precisions > 0.0)
        return np.flatnonzero(~ok.all(axis=1))

    def n_extra(self, n_features: int) -> int:
        return n_features

    def fill_extra(self, a: np.ndarray, n_features: int) -> None:
        np.square(a[:, 1 : 1 + n_features], out=a[:, 1 + n_features :])

    def _expansion(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        const: np.ndarray | float,
        scale: float,
    ) -> np.ndarray:
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

    def block_sum_xx(
        self,
        a: np.ndarray,
        resp: np.ndarray,
        moments: np.ndarray,
        shifts_c: np.ndarray,
        out: np.ndarray,
        scratch: Scratch | None = None,
    ) -> None:
        # sum_i r_ik (x'-a_k)^2 = sum_i r_ik x'^2 - 2 a_k s_k + N_k a_k^2, per block
        # in float64; sum_i r_ik x'^2 is a column block of ``moments``.
        n_features = shifts_c.shape[1]
        nk, sum_rxc = moments[:, 0], moments[:, 1 : 1 + n_features]
        out += moments[:, 1 + n_features :]
        out -= 2.0 * shifts_c * sum_rxc
        out += nk[:, None] * shifts_c * shifts_c

    def m_step(
        self, nk: np.ndarray, delta: np.ndarray, sum_xx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        return sum_xx / nk[:, None] - delta * delta + reg_covar

    def precision_traces(
        self, precisions_cholesky: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        return np.sum(precisions_cholesky**2, axis=1)

    def variance_extremes(
        self, covariances: np.ndarray, precisions_cholesky: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return covariances.min(axis=1), covariances.max(axis=1)

    def take(self, covariances: np.ndarray, index: np.ndarray) -> np.ndarray:
        return covariances[index]

    def principal_axis(
        self, covariances: np.ndarray, k: int, n_features: int, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        j = int(np.argmax(covariances[k]))
        axis = np.zeros(covariances.shape[1])
        axis[j] = 1.0
        return float(covariances[k, j]), axis

    def halve_along(
        self, covariances: np.ndarray, k: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        return covariances[k] - (1.0 - HALF_VAR) * variance * axis * axis

    def weighted_covariance(self, weights: np.ndarray, covariances: np.ndarray, n_features: int) -> np.ndarray:
        return np.diag(weights @ covariances)

    def project(self, covariances: np.ndarray, axes: np.ndarray, n_components: int) -> np.ndarray:
        return np.einsum("ai,ki,bi->kab", axes, covariances, axes)

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
