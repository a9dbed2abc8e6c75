"""One class per covariance type: everything that depends on the type lives here.

Each class is stateless and knows, for its type,

* the shapes of its covariance / precision arrays,
* the log-density ``log N(x | mu_k, Sigma_k)`` through the Cholesky factor of
  the precision (as scikit-learn computes it), with its per-chunk constants
  prepared once (``prepare``) and applied to a block's design matrix
  ``[1, x - c0, extra]`` (``weighted_log_prob``),
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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

__all__ = [
    "COVARIANCE_TYPES",
    "CovarianceModel",
    "Diag",
    "Full",
    "Scratch",
    "Spherical",
    "Tied",
    "get_covariance_model",
]

_LOG_2PI = math.log(2.0 * math.pi)
# The two halves of a Gaussian cut through its mean along an axis of variance
# lambda have means at +-sqrt(2/pi * lambda) and variance (1 - 2/pi) lambda.
_HALF_SHIFT = math.sqrt(2.0 / math.pi)
_HALF_VAR = 1.0 - 2.0 / math.pi


class Scratch:
    """Named work arrays reused by every block of a chunk.

    A task allocates its block-sized temporaries once, not once per block:
    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``, which pins glibc's mmap
    threshold at 128 KiB, so every larger ``np.empty`` in a worker is a fresh
    mmap whose pages fault in on first touch (measured +30-50% per block).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        size = math.prod(shape)
        buf = self._arrays.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(size, dtype=dtype)
            self._arrays[name] = buf
        return buf[:size].reshape(shape)

    def get_columns(self, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """An uninitialised Fortran-ordered (rows, columns) array: each column contiguous.

        The kernels keep a block's design matrix and its (rows, K) log-densities
        this way: with K or D small, a C-ordered row holds only a few values and
        numpy runs every elementwise pass and row-wise reduction (``max``,
        ``sum`` over axis 1, broadcast of a per-row value) as one short inner
        loop per row; by columns they are long vector loops (measured 1.9x on
        a whole diag E-step at K=16, D=16). BLAS takes either order.
        """
        return self.get(name, shape[::-1], dtype).T


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
    # A block enters the kernels as its design matrix ``a = [1, xc, extra]`` of
    # shape (n_rows, 1 + D + n_extra(D)) in the data's dtype, Fortran-ordered
    # in the hot paths (``Scratch.get_columns``; any order is correct), and
    # ``weighted_log_prob`` answers (n_rows, K) by columns too. The ones column
    # lets a single GEMM add per-component constants (full: -mu_k L_k; diag and
    # spherical: the whole log-density is one GEMM), and the caller's one GEMM
    # ``moments = resp.T @ a`` yields nk, sum r (x - c0) and the extra moments
    # (diag: sum r (x - c0)^2) together, without a pass per statistic.

    def n_extra(self, n_features: int) -> int:
        """Columns of the design matrix after ``[1, xc]``."""
        return 0

    def fill_extra(self, a: np.ndarray, n_features: int) -> None:
        """Fill the extra columns of a design matrix from its ``xc`` columns."""

    def design(self, xc: np.ndarray) -> np.ndarray:
        """The design matrix ``[1, xc, extra]`` of a block (n_rows, 1 + D + extra)."""
        n_rows, n_features = xc.shape
        a = np.empty((1 + n_features + self.n_extra(n_features), n_rows), dtype=xc.dtype).T
        a[:, 0] = 1.0
        a[:, 1 : 1 + n_features] = xc
        self.fill_extra(a, n_features)
        return a

    @abstractmethod
    def prepare(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        log_weights: np.ndarray | None = None,
    ) -> object:
        """Per-chunk constants of the E-step, in ``means_c``'s dtype.

        Computed once per chunk (not per block): stacked factors, ``mu_k L_k``,
        and ``log w_k + log det L_k - D/2 log(2 pi)``. ``log_weights=None``
        gives plain log-densities.
        """

    @abstractmethod
    def weighted_log_prob(
        self, a: np.ndarray, prepared: object, scratch: Scratch | None = None
    ) -> np.ndarray:
        """``log w_k + log N(x | mu_k, Sigma_k)`` (n_rows, K) of a design matrix.

        With ``scratch`` the result lives in it (valid until the next block).
        """

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
        return self.weighted_log_prob(self.design(xc), self.prepare(means_c, precisions_cholesky))

    @abstractmethod
    def block_sum_xx(
        self,
        a: np.ndarray,
        resp: np.ndarray,
        moments: np.ndarray,
        shifts_c: np.ndarray,
        out: np.ndarray,
        scratch: Scratch | None = None,
    ) -> None:
        """Add the second moment of one block about the shifts to ``out`` (float64).

        ``a`` is the block's design matrix, ``resp`` (n_rows, K) already carries
        sample weights, ``moments = resp.T @ a`` in float64 (so ``nk =
        moments[:, 0]`` and ``sum_rxc = moments[:, 1:1 + D]``).
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

    @abstractmethod
    def precision_traces(
        self, precisions_cholesky: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        """``tr(P_k) = ||L_k||_F^2`` of every component, shape (n_components,)."""

    # -- numerical resolution ---------------------------------------------
    @abstractmethod
    def variance_extremes(
        self, covariances: np.ndarray, precisions_cholesky: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Per component, the smallest conditional variance (Cholesky pivot,
        an upper bound of the smallest eigenvalue that is tiny whenever the
        component collapses along some direction) and the largest variance of
        any feature, each (n_components,); None for tied, whose one shared
        covariance cannot collapse onto a single component."""

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


def _constants(
    log_det: np.ndarray, n_features: int, log_weights: np.ndarray | None
) -> np.ndarray:
    """``log w_k + log det L_k - D/2 log(2 pi)`` in float64 (K,)."""
    const = np.asarray(log_det, dtype=np.float64) - 0.5 * n_features * _LOG_2PI
    if log_weights is not None:
        const = const + np.asarray(log_weights, dtype=np.float64)
    return const


def _feature_blocks(precisions_cholesky: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Column blocks ``[lo, hi)`` of the upper-triangular factors L_k.

    Column block J of ``x L`` only needs features ``[0, hi)``: rows of L below
    the diagonal are zero. Skipping them saves (m - 1) / 2m of the E-step's
    flops for m blocks; ``width`` trades that against GEMM efficiency on thin
    operands. Factors that are not upper triangular get one block.
    """
    n_features = precisions_cholesky.shape[-1]
    if n_features < 2 * width or np.any(np.tril(precisions_cholesky, -1)):
        return [(0, n_features)]
    n_blocks = n_features // width
    bounds = np.linspace(0, n_features, n_blocks + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


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
    # Width of the column blocks of L_k by itemsize (see ``_feature_blocks``).
    feature_block_width: ClassVar[dict[int, int]] = {8: 16, 4: 32}
    # Below this many features ``block_sum_xx`` works on rows x^T (features, rows).
    transposed_below: ClassVar[int] = 32

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

    def prepare(self, means_c, precisions_cholesky, log_weights=None):
        dtype = means_c.dtype
        n_components, n_features = means_c.shape
        chol = precisions_cholesky.astype(dtype, copy=False)
        mu_l = np.einsum("kd,kde->ke", means_c, chol)
        width = self.feature_block_width[dtype.itemsize]
        blocks = _feature_blocks(chol, width)
        weights = []
        for lo, hi in blocks:
            w = np.empty((1 + hi, n_components, hi - lo), dtype=dtype)
            w[0] = -mu_l[:, lo:hi]
            w[1:] = chol[:, :hi, lo:hi].transpose(1, 0, 2)
            weights.append(w.reshape(1 + hi, -1))
        log_det = self.log_det_cholesky(chol.astype(np.float64), n_features)
        const = _constants(log_det, n_features, log_weights).astype(dtype)
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

    def weighted_log_prob(self, a, prepared, scratch=None):
        out = self._mahalanobis(a, prepared, scratch or Scratch())
        out *= -0.5
        out += prepared.const
        return out

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        return self._mahalanobis(self.design(xc), self.prepare(means_c, precisions_cholesky), Scratch())

    def block_sum_xx(self, a, resp, moments, shifts_c, out, scratch=None):
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

    def m_step(self, nk, delta, sum_xx, reg_covar):
        n_features = delta.shape[1]
        cov = sum_xx / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[:, np.arange(n_features), np.arange(n_features)] += reg_covar
        return cov

    def precision_traces(self, precisions_cholesky, n_components, n_features):
        return np.sum(precisions_cholesky**2, axis=(1, 2))

    def variance_extremes(self, covariances, precisions_cholesky):
        # Pivots of chol(Sigma) are 1 / diag(L): free, where eigvalsh would
        # cost as much again as the factorisation itself.
        pivots = 1.0 / np.diagonal(precisions_cholesky, axis1=1, axis2=2) ** 2
        return pivots.min(axis=1), np.diagonal(covariances, axis1=1, axis2=2).max(axis=1)

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

    def prepare(self, means_c, precisions_cholesky, log_weights=None):
        dtype = means_c.dtype
        chol = precisions_cholesky.astype(dtype, copy=False)
        m = means_c @ chol
        log_det = self.log_det_cholesky(chol.astype(np.float64), means_c.shape[1])
        const = _constants(log_det, means_c.shape[1], log_weights)
        const -= 0.5 * np.einsum("kd,kd->k", m, m, dtype=np.float64)
        return chol, m.T.copy(), const.astype(dtype)

    def weighted_log_prob(self, a, prepared, scratch=None):
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

    def mahalanobis(self, xc, means_c, precisions_cholesky):
        y = xc @ precisions_cholesky
        m = means_c @ precisions_cholesky
        out = y @ (-2.0 * m.T)
        out += np.einsum("ij,ij->i", y, y)[:, None]
        out += np.einsum("ij,ij->i", m, m)[None, :]
        np.maximum(out, 0.0, out=out)
        return out

    def block_sum_xx(self, a, resp, moments, shifts_c, out, scratch=None):
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

    def m_step(self, nk, delta, sum_xx, reg_covar):
        between = (delta * nk[:, None]).T @ delta
        cov = (sum_xx - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] += reg_covar
        return cov

    def precision_traces(self, precisions_cholesky, n_components, n_features):
        return np.full(n_components, np.sum(precisions_cholesky**2))

    def variance_extremes(self, covariances, precisions_cholesky):
        return None

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


class _ExpandedGEMM(CovarianceModel):
    """Types whose weighted log-density is one GEMM of the design matrix
    ``[1, x - c0, extra]`` against an expansion prepared once per chunk."""

    @abstractmethod
    def _expansion(
        self, means_c: np.ndarray, precisions_cholesky: np.ndarray, const: Any, scale: float
    ) -> np.ndarray:
        """The (design columns x K) matrix: ``scale * distance + const`` per component."""

    def prepare(self, means_c, precisions_cholesky, log_weights=None):
        n_features = means_c.shape[1]
        log_det = self.log_det_cholesky(precisions_cholesky.astype(np.float64), n_features)
        const = _constants(log_det, n_features, log_weights)
        return self._expansion(means_c, precisions_cholesky, const, -0.5)

    def weighted_log_prob(self, a, prepared, scratch=None):
        if scratch is None:
            return a @ prepared
        out = scratch.get_columns("wlp", (a.shape[0], prepared.shape[1]), a.dtype)
        np.matmul(prepared.T, a.T, out=out.T)
        return out


class Diag(_ExpandedGEMM):
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
        return covariances[k] - (1.0 - _HALF_VAR) * variance * axis * axis

    def sample_component(self, rng, mean, covariances, k, n_samples):
        z = rng.standard_normal((n_samples, mean.shape[0]))
        return mean + z * np.sqrt(covariances[k])


class Spherical(_ExpandedGEMM):
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
