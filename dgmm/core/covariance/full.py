"""The 'full' covariance type: each component has its own D x D covariance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dgmm.core.covariance.base import (
    HALF_VAR,
    CovarianceModel,
    Scratch,
    chol_inverse_transpose,
    feature_blocks,
    is_pd,
    log_constants,
    precision_chol_from_precision,
)

__all__ = ["Full"]


@dataclass(frozen=True, eq=False)
class _FullConstants:
    """E-step constants of a full mixture for one chunk (see ``Full.prepare``)."""

    blocks: list[tuple[int, int]]
    # weights[J] (1 + hi_J, K * h_J): row 0 is -(mu_k L_k)[lo:hi], then L_k[:hi, lo:hi]
    # for every k side by side; ``a[:, :1 + hi] @ weights[J]`` is
    # ``(x - mu_k) L_k`` restricted to the columns of block J.
    weights: list[np.ndarray]
    const: np.ndarray


class Full(CovarianceModel):
    """Each component has its own full covariance matrix (n_features x n_features)."""

    name = "full"
    # Bytes of the E-step product (rows x components x feature block) per
    # group of components: it is written by the GEMM and read back once by
    # the row-wise dot products, so it should stay in cache (measured flat
    # from 1 to 4 MiB; 256 KiB makes the GEMMs too thin).
    group_bytes: ClassVar[int] = 4 << 20
    # Width of the column blocks of L_k by itemsize (see ``feature_blocks``).
    feature_block_width: ClassVar[dict[int, int]] = {8: 16, 4: 32}
    # Below this many features ``block_sum_xx`` works on rows x^T (features, rows).
    transposed_below: ClassVar[int] = 32

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_components, n_features, _ = covariances.shape
        out = np.empty_like(covariances)
        bad = []
        for k in range(n_components):
            try:
                if not np.all(np.isfinite(covariances[k])):
                    raise np.linalg.LinAlgError
                out[k] = chol_inverse_transpose(covariances[k])
            except (np.linalg.LinAlgError, ValueError):
                bad.append(k)
                out[k] = np.eye(n_features, dtype=covariances.dtype)
        return out, np.asarray(bad, dtype=np.intp)

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.stack([precision_chol_from_precision(p) for p in precisions])

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return np.matmul(precisions_cholesky, np.swapaxes(precisions_cholesky, 1, 2))

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.stack([np.linalg.inv(p) for p in precisions])

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        diag = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return np.sum(np.log(diag), axis=1)

    def is_positive_definite(self, precisions: np.ndarray) -> np.ndarray:
        return np.asarray(
            [k for k in range(precisions.shape[0]) if not is_pd(precisions[k])],
            dtype=np.intp,
        )

    def prepare(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        log_weights: np.ndarray | None = None,
    ) -> _FullConstants:
        dtype = means_c.dtype
        n_components, n_features = means_c.shape
        chol = precisions_cholesky.astype(dtype, copy=False)
        mu_l = np.einsum("kd,kde->ke", means_c, chol)
        width = self.feature_block_width[dtype.itemsize]
        blocks = feature_blocks(chol, width)
        weights = []
        for lo, hi in blocks:
            w = np.empty((1 + hi, n_components, hi - lo), dtype=dtype)
            w[0] = -mu_l[:, lo:hi]
            w[1:] = chol[:, :hi, lo:hi].transpose(1, 0, 2)
            weights.append(w.reshape(1 + hi, -1))
        log_det = self.log_det_cholesky(chol.astype(np.float64), n_features)
        const = log_constants(log_det, n_features, log_weights).astype(dtype)
        return _FullConstants(blocks, weights, const)

    def _mahalanobis(self, a: np.ndarray, c: _FullConstants, scratch: Scratch) -> np.ndarray:
        n_rows = a.shape[0]
        n_components = c.const.shape[0]
        dtype = a.dtype
        out = scratch.get_columns("wlp", (n_rows, n_components), dtype)
        width = max(hi - lo for lo, hi in c.blocks)
        # Components per group so the (rows, g * h) product stays cache-sized.
        group = max(1, min(n_components, self.group_bytes // max(1, n_rows * width * dtype.itemsize)))
        product = scratch.get("product", (n_rows * group * width,), dtype)
        partial = scratch.get("partial", (n_rows * group,), dtype)
        total = scratch.get("total", (n_rows * group,), dtype)
        for start in range(0, n_components, group):
            stop = min(n_components, start + group)
            size = n_rows * (stop - start)
            for j, (lo, hi) in enumerate(c.blocks):
                h = hi - lo
                y = product[: size * h].reshape(n_rows, -1)
                np.matmul(a[:, : 1 + hi], c.weights[j][:, start * h : stop * h], out=y)
                y = y.reshape(size, h)
                # Row-wise dot products: one pass, no squared temporary.
                if j == 0:
                    np.einsum("ij,ij->i", y, y, out=total[:size])
                else:
                    np.einsum("ij,ij->i", y, y, out=partial[:size])
                    total[:size] += partial[:size]
            out[:, start:stop] = total[:size].reshape(n_rows, -1)
        return out

    def weighted_log_prob(
        self, a: np.ndarray, prepared: _FullConstants, scratch: Scratch | None = None
    ) -> np.ndarray:
        out = self._mahalanobis(a, prepared, scratch or Scratch())
        out *= -0.5
        out += prepared.const
        return out

    def mahalanobis(
        self, xc: np.ndarray, means_c: np.ndarray, precisions_cholesky: np.ndarray
    ) -> np.ndarray:
        return self._mahalanobis(self.design(xc), self.prepare(means_c, precisions_cholesky), Scratch())

    def block_sum_xx(
        self,
        a: np.ndarray,
        resp: np.ndarray,
        moments: np.ndarray,
        shifts_c: np.ndarray,
        out: np.ndarray,
        scratch: Scratch | None = None,
    ) -> None:
        scratch = scratch or Scratch()
        n_components, n_features = shifts_c.shape
        n_rows, dtype = a.shape[0], a.dtype
        shifts = shifts_c.astype(dtype)
        sqrt_resp = scratch.get("sqrt_resp", (n_components, n_rows), dtype)
        np.sqrt(resp.T, out=sqrt_resp)
        # y = sqrt(r) (x - c_k), about the shift itself: no cancellation. numpy
        # runs y.T @ y as a symmetric rank-k update (syrk, half a GEMM). With
        # few features, rows along the fast axis keep the two elementwise
        # passes in long vector loops instead of one short loop per row.
        if n_features < self.transposed_below:
            xt = scratch.get("x", (n_features, n_rows), dtype)
            xt[...] = a[:, 1 : 1 + n_features].T
            y = scratch.get("y", (n_features, n_rows), dtype)
            for k in range(n_components):
                np.subtract(xt, shifts[k][:, None], out=y)
                y *= sqrt_resp[k]
                out[k] += y @ y.T
        else:
            xc = scratch.get("x", (n_rows, n_features), dtype)
            xc[...] = a[:, 1 : 1 + n_features]
            y = scratch.get("y", (n_rows, n_features), dtype)
            for k in range(n_components):
                np.subtract(xc, shifts[k], out=y)
                y *= sqrt_resp[k, :, None]
                out[k] += y.T @ y

    def m_step(
        self, nk: np.ndarray, delta: np.ndarray, sum_xx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        n_features = delta.shape[1]
        cov = sum_xx / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[:, np.arange(n_features), np.arange(n_features)] += reg_covar
        return cov

    def precision_traces(
        self, precisions_cholesky: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        return np.sum(precisions_cholesky**2, axis=(1, 2))

    def variance_extremes(
        self, covariances: np.ndarray, precisions_cholesky: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        # Pivots of chol(Sigma) are 1 / diag(L): free, where eigvalsh would
        # cost as much again as the factorisation itself.
        pivots = 1.0 / np.diagonal(precisions_cholesky, axis1=1, axis2=2) ** 2
        return pivots.min(axis=1), np.diagonal(covariances, axis1=1, axis2=2).max(axis=1)

    def take(self, covariances: np.ndarray, index: np.ndarray) -> np.ndarray:
        return covariances[index]

    def principal_axis(
        self, covariances: np.ndarray, k: int, n_features: int, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        values, vectors = np.linalg.eigh(covariances[k])
        return float(max(values[-1], 0.0)), vectors[:, -1]

    def halve_along(
        self, covariances: np.ndarray, k: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        cov = covariances[k] - (1.0 - HALF_VAR) * variance * np.outer(axis, axis)
        return 0.5 * (cov + cov.T)

    def weighted_covariance(self, weights: np.ndarray, covariances: np.ndarray, n_features: int) -> np.ndarray:
        return np.einsum("k,kij->ij", weights, covariances)

    def project(self, covariances: np.ndarray, axes: np.ndarray, n_components: int) -> np.ndarray:
        return np.einsum("ai,kij,bj->kab", axes, covariances, axes)

    def sample_component(
        self,
        rng: np.random.Generator,
        mean: np.ndarray,
        covariances: np.ndarray,
        k: int,
        n_samples: int,
    ) -> np.ndarray:
        chol = np.linalg.cholesky(covariances[k])
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z @ chol.T
