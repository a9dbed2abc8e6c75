"""One class per covariance type: everything that depends on the type lives here.

Each class is stateless and knows, for its type,

* the shapes of its covariance / precision arrays,
* the log-density ``log N(x | mu_k, Sigma_k)`` through the Cholesky factor of
  the precision (as scikit-learn computes it),
* the block statistic ``sum_xx`` (second moment about the shift ``c_k``),
* the M-step that turns statistics into covariances,
* the number of free parameters, sampling, and the principal axis used to
  split a component.

Conventions shared by all methods (math in comments uses N, D, K):

* ``xc`` is a block of rows already shifted by the kernel's centre ``c0``
  (one vector for all components): ``xc = x - c0``. Working about ``c0`` keeps
  float32 data far from the origin from losing its digits.
* ``means_c = means - c0`` and ``shifts_c = c - c0`` are shifted the same way.
* ``precisions_cholesky`` follows scikit-learn: the precision is ``L @ L.T``.
* Second moments are about the per-component shift ``c_k``:
  ``sum_xx_k = sum_i r_ik (x_i - c_k)(x_i - c_k)^T`` (full; its diagonal for
  diag; its trace for spherical; summed over k for tied), always float64.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import scipy.linalg

__all__ = [
    "COVARIANCE_TYPES",
    "CovarianceModel",
    "Diag",
    "Full",
    "Spherical",
    "Tied",
    "get_covariance_model",
]

_LOG_2PI = math.log(2.0 * math.pi)
# The two halves of a Gaussian cut through its mean along an axis of variance
# lambda have means at +-sqrt(2/pi * lambda) and variance (1 - 2/pi) lambda.
_HALF_SHIFT = math.sqrt(2.0 / math.pi)
_HALF_VAR = 1.0 - 2.0 / math.pi


class CovarianceModel(ABC):
    """What a covariance type must provide; subclasses are stateless singletons."""

    name: ClassVar[str]

    # -- shapes and parameter counting ------------------------------------
    @abstractmethod
    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_`` (and ``precisions_``) for this type."""

    @abstractmethod
    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of the covariances alone."""

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of the mixture: covariances, means, weights - 1."""
        return int(
            self.n_covariance_parameters(n_components, n_features)
            + n_components * n_features
            + n_components
            - 1
        )

    # -- factorisations ---------------------------------------------------
    @abstractmethod
    def precisions_cholesky(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cholesky factors ``L`` of the precisions (precision = L L^T).

        Returns ``(precisions_cholesky, bad)`` where ``bad`` lists the indices
        of the components whose covariance is not positive definite; their
        factors are filled with the identity so the caller may decide to raise
        or to re-seed them.
        """

    @abstractmethod
    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Cholesky factors from user-given precisions (``precisions_init``)."""

    @abstractmethod
    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        """``precisions_`` from their Cholesky factors."""

    @abstractmethod
    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Covariances as the inverses of precisions."""

    @abstractmethod
    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        """``log det L_k`` of shape (n_components,) (or a scalar for tied)."""

    @abstractmethod
    def is_positive_definite(self, precisions: np.ndarray) -> np.ndarray:
        """Indices of the components whose precision is not positive definite."""

    # -- per-block kernels ------------------------------------------------
    @abstractmethod
    def mahalanobis(
        self, xc: np.ndarray, means_c: np.ndarray, precisions_cholesky: np.ndarray
    ) -> np.ndarray:
        """Squared Mahalanobis distances of shape (n_rows, n_components).

        ``xc`` and the factors share the data's dtype; the result does too.
        """

    def log_prob(
        self, xc: np.ndarray, means_c: np.ndarray, precisions_cholesky: np.ndarray
    ) -> np.ndarray:
        """``log N(x | mu_k, Sigma_k)`` of shape (n_rows, n_components)."""
        n_features = xc.shape[1]
        log_det = self.log_det_cholesky(precisions_cholesky, n_features).astype(xc.dtype)
        out = self.mahalanobis(xc, means_c, precisions_cholesky)
        out += n_features * _LOG_2PI
        out *= -0.5
        out += log_det
        return out

    @abstractmethod
    def block_sum_xx(
        self,
        xc: np.ndarray,
        resp: np.ndarray,
        shifts_c: np.ndarray,
        nk: np.ndarray,
        sum_rxc: np.ndarray,
    ) -> np.ndarray:
        """Second moment of one block about the shifts, float64.

        ``resp`` (n_rows, n_components) already carries sample weights;
        ``nk = resp.sum(0)`` and ``sum_rxc = resp.T @ xc`` are given in float64
        because the caller needs them anyway.
        """

    def zero_sum_xx(self, n_components: int, n_features: int) -> np.ndarray:
        """An all-zero ``sum_xx`` of the right shape (float64)."""
        return np.zeros(self.shape(n_components, n_features), dtype=np.float64)

    # -- M-step -----------------------------------------------------------
    @abstractmethod
    def m_step(
        self, nk: np.ndarray, delta: np.ndarray, sum_xx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        """Covariances from statistics about the shifts.

        ``nk`` (n_components,) are the (regularised) responsibility sums,
        ``delta = mean - shift`` (n_components, n_features). With
        ``S = sum_xx``: Sigma = S / N - delta delta^T + reg_covar I.
        """

    # -- component surgery (splitting, re-seeding) ------------------------
    @abstractmethod
    def take(self, covariances: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Covariances of the components ``index`` (tied: unchanged)."""

    @abstractmethod
    def principal_axis(
        self, covariances: np.ndarray, k: int, n_features: int, rng: np.random.Generator
    ) -> tuple[float, np.ndarray]:
        """Largest variance of component ``k`` and its unit axis."""

    @abstractmethod
    def halve_along(
        self, covariances: np.ndarray, k: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        """Covariance of either half of component ``k`` cut along ``axis``."""

    # -- sampling ---------------------------------------------------------
    @abstractmethod
    def sample_component(
        self,
        rng: np.random.Generator,
        mean: np.ndarray,
        covariances: np.ndarray,
        k: int,
        n_samples: int,
    ) -> np.ndarray:
        """``n_samples`` draws from component ``k``, shape (n_samples, n_features)."""


def _chol_inverse_transpose(cov: np.ndarray) -> np.ndarray:
    """``inv(chol(cov)).T``: the precision Cholesky factor of one covariance."""
    chol = scipy.linalg.cholesky(cov, lower=True, check_finite=False)
    return scipy.linalg.solve_triangular(
        chol, np.eye(cov.shape[0], dtype=cov.dtype), lower=True, check_finite=False
    ).T


def _flip(a: np.ndarray) -> np.ndarray:
    return a[::-1, ::-1]


def _precision_chol_from_precision(precision: np.ndarray) -> np.ndarray:
    # Upper factor U with U U^T = P, by Cholesky of the row/column-reversed
    # matrix (scikit-learn's _compute_precision_cholesky_from_precisions).
    return _flip(np.linalg.cholesky(_flip(precision)))


def _is_pd(matrix: np.ndarray) -> bool:
    if not np.all(np.isfinite(matrix)):
        return False
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


class Full(CovarianceModel):
    """Each component has its own full covariance matrix (n_features x n_features)."""

    name = "full"
    # Rows x (components x features) of the batched E-step product kept below
    # this many bytes per group of components.
    group_bytes: ClassVar[int] = 8 << 20

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        n_components, n_features, _ = covariances.shape
        out = np.empty_like(covariances)
        bad = []
        for k in range(n_components):
            try:
                if not np.all(np.isfinite(covariances[k])):
                    raise np.linalg.LinAlgError
                out[k] = _chol_inverse_transpose(covariances[k])
            except (np.linalg.LinAlgError, ValueError):
                bad.append(k)
                out[k] = np.eye(n_features, dtype=covariances.dtype)
        return out, np.asarray(bad, dtype=np.intp)

    def precisions_cholesky_from_precisions(self, precisions):
        return np.stack([_precision_chol_from_precision(p) for p in precisions])

    def precisions(self, precisions_cholesky):
        return np.matmul(precisions_cholesky, np.swapaxes(precisions_cholesky, 1, 2))

    def covariances_from_precisions(self, precisions):
        return np.stack([np.linalg.inv(p) for p in precisions])

    def log_det_cholesky(self, precisions_cholesky, n_features):
        diag = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return np.sum(np.log(diag), axis=1)

    def is_positive_definite(self, precisions):
        return np.asarray(
            [k for k in range(precisions.shape[0]) if not _is_pd(precisions[k])],
            dtype=np.intp,
        )

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        n_rows, n_features = xc.shape
        n_components = means_c.shape[0]
        out = np.empty((n_rows, n_components), dtype=xc.dtype)
        # One GEMM xc @ [L_1 ... L_g] per group of components instead of K
        # thin GEMMs: the (n_rows, g*D) product is the largest temporary.
        itemsize = xc.dtype.itemsize
        group = max(1, min(n_components, self.group_bytes // max(1, n_rows * n_features * itemsize)))
        for start in range(0, n_components, group):
            stop = min(n_components, start + group)
            chol = precisions_cholesky[start:stop]  # (g, D, D)
            stacked = np.ascontiguousarray(chol.transpose(1, 0, 2)).reshape(n_features, -1)
            mu_l = np.einsum("kd,kde->ke", means_c[start:stop], chol).reshape(-1)
            y = xc @ stacked
            y -= mu_l
            np.square(y, out=y)
            out[:, start:stop] = y.reshape(n_rows, stop - start, n_features).sum(axis=2)
        return out

    def block_sum_xx(self, xc, resp, shifts_c, nk, sum_rxc):
        n_components, n_features = shifts_c.shape
        out = np.empty((n_components, n_features, n_features), dtype=np.float64)
        sqrt_resp = np.sqrt(resp)
        shifts = shifts_c.astype(xc.dtype)
        for k in range(n_components):
            # sqrt(r) (x - c_k): Y^T Y is a symmetric rank-k update (half a GEMM).
            y = xc - shifts[k]
            y *= sqrt_resp[:, k : k + 1]
            out[k] = y.T @ y
        return out

    def m_step(self, nk, delta, sum_xx, reg_covar):
        n_features = delta.shape[1]
        cov = sum_xx / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[:, np.arange(n_features), np.arange(n_features)] += reg_covar
        return cov

    def take(self, covariances, index):
        return covariances[index]

    def principal_axis(self, covariances, k, n_features, rng):
        values, vectors = np.linalg.eigh(covariances[k])
        return float(max(values[-1], 0.0)), vectors[:, -1]

    def halve_along(self, covariances, k, variance, axis):
        cov = covariances[k] - (1.0 - _HALF_VAR) * variance * np.outer(axis, axis)
        return 0.5 * (cov + cov.T)

    def sample_component(self, rng, mean, covariances, k, n_samples):
        chol = np.linalg.cholesky(covariances[k])
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z @ chol.T


class Tied(CovarianceModel):
    """All components share one full covariance matrix (n_features x n_features)."""

    name = "tied"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_features, n_features)

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        return n_features * (n_features + 1) // 2

    def precisions_cholesky(self, covariances):
        try:
            if not np.all(np.isfinite(covariances)):
                raise np.linalg.LinAlgError
            return _chol_inverse_transpose(covariances), np.zeros(0, dtype=np.intp)
        except (np.linalg.LinAlgError, ValueError):
            return np.eye(covariances.shape[0], dtype=covariances.dtype), np.asarray([-1])

    def precisions_cholesky_from_precisions(self, precisions):
        return _precision_chol_from_precision(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return np.asarray(np.sum(np.log(np.diagonal(precisions_cholesky))))

    def is_positive_definite(self, precisions):
        return np.zeros(0, dtype=np.intp) if _is_pd(precisions) else np.asarray([-1])

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        # |L^T(x - mu_k)|^2 = |y|^2 - 2 y.m_k + |m_k|^2 with y = x L, m_k = mu_k L:
        # one GEMM against K means instead of K passes over the block.
        y = xc @ precisions_cholesky
        m = means_c @ precisions_cholesky
        out = y @ (-2.0 * m.T)
        out += np.einsum("ij,ij->i", y, y)[:, None]
        out += np.einsum("ij,ij->i", m, m)[None, :]
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(self, xc, resp, shifts_c, nk, sum_rxc):
        # sum_k sum_i r_ik (x'-a_k)(x'-a_k)^T = sum_i w_i x'x'^T
        #   - sum_k (a_k s_k^T + s_k a_k^T) + sum_k N_k a_k a_k^T,
        # with x' = x - c0, a_k = c_k - c0, s_k = sum_i r_ik x'_i, w_i = sum_k r_ik.
        # float64 throughout: the subtraction is the cancelling step.
        x64 = xc.astype(np.float64, copy=False)
        w = resp.sum(axis=1, dtype=np.float64)
        scatter = (x64 * w[:, None]).T @ x64
        cross = shifts_c.T @ sum_rxc
        scatter -= cross + cross.T
        scatter += (shifts_c * nk[:, None]).T @ shifts_c
        return scatter

    def m_step(self, nk, delta, sum_xx, reg_covar):
        between = (delta * nk[:, None]).T @ delta
        cov = (sum_xx - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] += reg_covar
        return cov

    def take(self, covariances, index):
        return covariances

    def principal_axis(self, covariances, k, n_features, rng):
        # Every component shares the axes: splitting all along the leading one
        # would put the children of neighbouring components on top of each
        # other. A direction drawn from N(0, Sigma) follows the spread without
        # such collisions.
        axis = np.linalg.cholesky(covariances) @ rng.standard_normal(n_features)
        axis /= np.linalg.norm(axis)
        return float(axis @ covariances @ axis), axis

    def halve_along(self, covariances, k, variance, axis):
        return covariances

    def sample_component(self, rng, mean, covariances, k, n_samples):
        chol = np.linalg.cholesky(covariances)
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z @ chol.T


class Diag(CovarianceModel):
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

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        # Expanded into two GEMMs (as scikit-learn); about c0 the cancellation
        # only costs eps * (distance from c0 in standard deviations)^2.
        prec = precisions_cholesky**2  # (K, D)
        out = (xc * xc) @ prec.T
        out -= xc @ (2.0 * means_c * prec).T
        out += np.sum(means_c * means_c * prec, axis=1)
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(self, xc, resp, shifts_c, nk, sum_rxc):
        # sum_i r_ik (x'-a_k)^2 = sum_i r_ik x'^2 - 2 a_k s_k + N_k a_k^2, per block in float64.
        q = (resp.T @ (xc * xc)).astype(np.float64)
        q -= 2.0 * shifts_c * sum_rxc
        q += nk[:, None] * shifts_c * shifts_c
        return q

    def m_step(self, nk, delta, sum_xx, reg_covar):
        return sum_xx / nk[:, None] - delta * delta + reg_covar

    def take(self, covariances, index):
        return covariances[index]

    def principal_axis(self, covariances, k, n_features, rng):
        j = int(np.argmax(covariances[k]))
        axis = np.zeros(covariances.shape[1])
        axis[j] = 1.0
        return float(covariances[k, j]), axis

    def halve_along(self, covariances, k, variance, axis):
        return covariances[k] - (1.0 - _HALF_VAR) * variance * axis * axis

    def sample_component(self, rng, mean, covariances, k, n_samples):
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z * np.sqrt(covariances[k])


class Spherical(CovarianceModel):
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

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        prec = precisions_cholesky**2  # (K,)
        out = xc @ (-2.0 * means_c.T)
        out += np.einsum("ij,ij->i", xc, xc)[:, None]
        out += np.einsum("ij,ij->i", means_c, means_c)[None, :]
        np.maximum(out, 0.0, out=out)
        out *= prec
        return out

    def block_sum_xx(self, xc, resp, shifts_c, nk, sum_rxc):
        sq = np.einsum("ij,ij->i", xc, xc)
        q = (sq @ resp).astype(np.float64)
        q -= 2.0 * np.einsum("kd,kd->k", shifts_c, sum_rxc)
        q += nk * np.einsum("kd,kd->k", shifts_c, shifts_c)
        return q

    def m_step(self, nk, delta, sum_xx, reg_covar):
        n_features = delta.shape[1]
        return (sum_xx / nk - np.einsum("kd,kd->k", delta, delta)) / n_features + reg_covar

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


COVARIANCE_TYPES: dict[str, CovarianceModel] = {
    model.name: model for model in (Full(), Tied(), Diag(), Spherical())
}


def get_covariance_model(covariance_type: str) -> CovarianceModel:
    """The model for a covariance type name ('full', 'tied', 'diag', 'spherical')."""
    try:
        return COVARIANCE_TYPES[covariance_type]
    except KeyError:
        raise ValueError(
            f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, "
            f"got {covariance_type!r}."
        ) from None
