"""What a covariance type provides, and the helpers the types share.

One class per covariance type, one file each (``full``, ``tied``, ``diag``,
``spherical``); everything that depends on the type lives in its class.

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
from typing import ClassVar

import numpy as np
import scipy.linalg

__all__ = [
    "HALF_VAR",
    "CovarianceModel",
    "ExpandedGEMM",
    "Scratch",
    "chol_inverse_transpose",
    "feature_blocks",
    "is_pd",
    "log_constants",
    "precision_chol_from_precision",
]

LOG_2PI = math.log(2.0 * math.pi)
# The two halves of a Gaussian cut through its mean along an axis of variance
# lambda have means at +-sqrt(2/pi * lambda) and variance (1 - 2/pi) lambda.
HALF_SHIFT = math.sqrt(2.0 / math.pi)
HALF_VAR = 1.0 - 2.0 / math.pi


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
    #: One covariance shared by all components (tied): a collapse cannot be
    #: re-seeded from another component, and a split leaves it unchanged.
    shared: ClassVar[bool] = False

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

    def design_buffer(self, n_rows: int, n_features: int, dtype: np.dtype) -> np.ndarray:
        """An uninitialised design matrix by columns, its ones column filled.

        Shape (n_rows, 1 + D + extra), Fortran-ordered (see
        ``Scratch.get_columns``); a chunk allocates one and reuses it for
        every block, filling ``[:, 1:1 + D]`` then ``fill_extra``.
        """
        a = np.empty((1 + n_features + self.n_extra(n_features), n_rows), dtype=dtype).T
        a[:, 0] = 1.0
        return a

    def design(self, xc: np.ndarray) -> np.ndarray:
        """The design matrix ``[1, xc, extra]`` of a block (n_rows, 1 + D + extra)."""
        n_rows, n_features = xc.shape
        a = self.design_buffer(n_rows, n_features, xc.dtype)
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

    def split_covariances(
        self, covariances: np.ndarray, source: int, target: int, variance: float, axis: np.ndarray
    ) -> np.ndarray:
        """Covariances after ``source`` is cut along ``axis`` into ``source`` and ``target``."""
        child = self.halve_along(covariances, source, variance, axis)
        out = covariances.copy()
        out[source] = child
        out[target] = child
        return out

    # -- views (plots) ----------------------------------------------------
    @abstractmethod
    def weighted_covariance(self, weights: np.ndarray, covariances: np.ndarray, n_features: int) -> np.ndarray:
        """``sum_k w_k Sigma_k`` as a (D, D) matrix."""

    @abstractmethod
    def project(self, covariances: np.ndarray, axes: np.ndarray, n_components: int) -> np.ndarray:
        """``P Sigma_k P^T`` of every component (K, n_axes, n_axes) for ``axes`` P
        (n_axes, D), without forming a (D, D) matrix where the type need not."""

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


def chol_inverse_transpose(cov: np.ndarray) -> np.ndarray:
    """``inv(chol(cov)).T``: the precision Cholesky factor of one covariance."""
    chol = scipy.linalg.cholesky(cov, lower=True, check_finite=False)
    return scipy.linalg.solve_triangular(
        chol, np.eye(cov.shape[0], dtype=cov.dtype), lower=True, check_finite=False
    ).T


def _flip(a: np.ndarray) -> np.ndarray:
    return a[::-1, ::-1]


def precision_chol_from_precision(precision: np.ndarray) -> np.ndarray:
    """Upper-triangular ``U`` with ``U U^T = precision``."""
    # Upper factor U with U U^T = P, by Cholesky of the row/column-reversed
    # matrix (scikit-learn's _compute_precision_cholesky_from_precisions).
    return _flip(np.linalg.cholesky(_flip(precision)))


def is_pd(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` is finite and has a Cholesky factor."""
    if not np.all(np.isfinite(matrix)):
        return False
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def log_constants(
    log_det: np.ndarray, n_features: int, log_weights: np.ndarray | None
) -> np.ndarray:
    """``log w_k + log det L_k - D/2 log(2 pi)`` in float64 (K,)."""
    const = np.asarray(log_det, dtype=np.float64) - 0.5 * n_features * LOG_2PI
    if log_weights is not None:
        const = const + np.asarray(log_weights, dtype=np.float64)
    return const


def feature_blocks(precisions_cholesky: np.ndarray, width: int) -> list[tuple[int, int]]:
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


class ExpandedGEMM(CovarianceModel):
    """Types whose weighted log-density is one GEMM of the design matrix
    ``[1, x - c0, extra]`` against an expansion prepared once per chunk."""

    @abstractmethod
    def _expansion(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        const: np.ndarray | float,
        scale: float,
    ) -> np.ndarray:
        """The (design columns x K) matrix: ``scale * distance + const`` per component."""

    def prepare(
        self,
        means_c: np.ndarray,
        precisions_cholesky: np.ndarray,
        log_weights: np.ndarray | None = None,
    ) -> np.ndarray:
        n_features = means_c.shape[1]
        log_det = self.log_det_cholesky(precisions_cholesky.astype(np.float64), n_features)
        const = log_constants(log_det, n_features, log_weights)
        return self._expansion(means_c, precisions_cholesky, const, -0.5)

    def weighted_log_prob(
        self, a: np.ndarray, prepared: np.ndarray, scratch: Scratch | None = None
    ) -> np.ndarray:
        if scratch is None:
            return a @ prepared
        out = scratch.get_columns("wlp", (a.shape[0], prepared.shape[1]), a.dtype)
        np.matmul(prepared.T, a.T, out=out.T)
        return out

    def mahalanobis(
        self, xc: np.ndarray, means_c: np.ndarray, precisions_cholesky: np.ndarray
    ) -> np.ndarray:
        # The same expansion with no constant and scale 1: one GEMM, clipped
        # at 0 where the expanded square's cancellation dips below it.
        w = self._expansion(means_c, precisions_cholesky, 0.0, 1.0)
        out = self.design(xc) @ w
        np.maximum(out, 0.0, out=out)
        return out


