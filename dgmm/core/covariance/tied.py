"""The 'tied' covariance type: all components share one D x D covariance."""

from __future__ import annotations

import numpy as np

from dgmm.core.covariance.base import (
    CovarianceModel,
    Scratch,
    chol_inverse_transpose,
    is_pd,
    log_constants,
    precision_chol_from_precision,
)

__all__ = ["Tied"]


class Tied(CovarianceModel):
    """All components share one full covariance matrix (n_features x n_features)."""

    name = "tied"
    shared = True

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_features, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            if not np.all(np.isfinite(covariances)):
                raise np.linalg.LinAlgError
            return chol_inverse_transpose(covariances), np.zeros(0, dtype=np.intp)
        except (np.linalg.LinAlgError, ValueError):
            return np.eye(covariances.shape[0], dtype=covariances.dtype), np.asarray([-1])

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return precision_chol_from_precision(precisions)

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky @ precisions_cholesky.T

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        return np.asarray(np.sum(np.log(np.diagonal(precisions_cholesky))))

    def is_positive_definite(self, precisions: np.ndarray) -> np.ndarray:
        return np.zeros(0, dtype=np.intp) if is_pd(precisions) else np.asarray([-1])

    def prepare(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        log_weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dtype = means_c.dtype
        chol = precisions_cholesky.astype(dtype, copy=False)
        m = means_c @ chol
        log_det = self.log_det_cholesky(chol.astype(np.float64), means_c.shape[1])
        const = log_constants(log_det, means_c.shape[1], log_weights)
        const -= 0.5 * np.einsum("kd,kd->k", m, m, dtype=np.float64)
        return chol, m.T.copy(), const.astype(dtype)

    def weighted_log_prob(
        self, a: np.ndarray, prepared: tuple[np.ndarray, np.ndarray, np.ndarray], scratch: Scratch | None = None
    ) -> np.ndarray:
        # -|L^T(x - mu_k)|^2 / 2 = y.m_k - |y|^2 / 2 - |m_k|^2 / 2 with y = x L,
        # m_k = mu_k L: one GEMM against K means instead of K passes.
        scratch = scratch or Scratch()
        chol, m_t, const = prepared
        n_rows, n_features = a.shape[0], chol.shape[0]
        y = scratch.get_columns("y", (n_rows, n_features), a.dtype)
        np.matmul(chol.T, a[:, 1 : 1 + n_features].T, out=y.T)
        out = scratch.get_columns("wlp", (n_rows, m_t.shape[1]), a.dtype)
        np.matmul(m_t.T, y.T, out=out.T)
        half_sq = np.square(y[:, 0])
        for j in range(1, n_features):
            half_sq += np.square(y[:, j])
        half_sq *= 0.5
        out -= half_sq[:, None]
        out += const
        return out

    def mahalanobis(
        self, xc: np.ndarray, means_c: np.ndarray, precisions_cholesky: np.ndarray
    ) -> np.ndarray:
        y = xc @ precisions_cholesky
        m = means_c @ precisions_cholesky
        out = y @ (-2.0 * m.T)
        out += np.einsum("ij,ij->i", y, y)[:, None]
        out += np.einsum("ij,ij->i", m, m)[None, :]
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(
        self,
        a: np.ndarray,
        resp: np.ndarray,
        moments: np.ndarray,
        shifts_c: np.ndarray,
        out: np.ndarray,
        scratch: Scratch | None = None,
    ) -> None:
        # sum_k sum_i r_ik (x'-a_k)(x'-a_k)^T = sum_i w_i x'x'^T
        #   - sum_k (a_k s_k^T + s_k a_k^T) + sum_k N_k a_k a_k^T,
        # with x' = x - c0, a_k = c_k - c0, s_k = sum_i r_ik x'_i, w_i = sum_k r_ik.
        # float64 throughout: the subtraction is the cancelling step.
        scratch = scratch or Scratch()
        n_features = shifts_c.shape[1]
        x64 = scratch.get("x64", (a.shape[0], n_features), np.dtype(np.float64))
        x64[...] = a[:, 1 : 1 + n_features]
        x64 *= np.sqrt(resp.sum(axis=1, dtype=np.float64))[:, None]
        out += x64.T @ x64
        nk, sum_rxc = moments[:, 0], moments[:, 1 : 1 + n_features]
        cross = shifts_c.T @ sum_rxc
        out -= cross + cross.T
        out += (shifts_c * nk[:, None]).T @ shifts_c

    def m_step(
        self, nk: np.ndarray, delta: np.ndarray, sum_xx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        between = (delta * nk[:, None]).T @ delta
        cov = (sum_xx - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] += reg_covar
        return cov

    def precision_traces(
        self, precisions_cholesky: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        return np.full(n_components, np.sum(precisions_cholesky**2))

    def variance_extremes(
        self, covariances: np.ndarray, precisions_cholesky: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def take(self, covariances: np.ndarray, index: np.ndarray) -> np.ndarray:
        return covariances

    def principal_axis(
        self, covariances: np.ndarray, k: int, n_features: int, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        # Every component shares the axes: splitting all along the leading one
        # would put the children of neighbouring components on top of each
        # other. A direction drawn from N(0, Sigma) follows the spread without
        # such collisions.
        axis = np.linalg.cholesky(covariances) @ rng.standard_normal(n_features)
        axis /= np.linalg.norm(axis)
        return float(axis @ covariances @ axis), axis

    def halve_along(
        self, covariances: np.ndarray, k: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        return covariances

    def split_covariances(
        self, covariances: np.ndarray, source: int, target: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        # The shared covariance stays: only the means and weights split.
        return covariances.copy()

    def weighted_covariance(self, weights: np.ndarray, covariances: np.ndarray, n_features: int) -> np.ndarray:
        return covariances

    def project(self, covariances: np.ndarray, axes: np.ndarray, n_components: int) -> np.ndarray:
        n_axes = len(axes)
        return np.array(np.broadcast_to(axes @ covariances @ axes.T, (n_components, n_axes, n_axes)))

    def sample_component(
        self,
        rng: np.random.Generator,
        mean: np.ndarray,
        covariances: np.ndarray,
        k: int,
        n_samples: int,
    ) -> np.ndarray:
        chol = np.linalg.cholesky(covariances)
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z @ chol.T
