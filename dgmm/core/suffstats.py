"""Sufficient statistics of one EM pass, and the M-step that consumes them.

A pass over the data with parameters theta (means c_k) produces, per row chunk,

* ``nk[k]      = sum_i r_ik``                              (float64, K)
* ``sum_x[k]   = sum_i r_ik (x_i - c_k)``                  (float64, K x D)
* ``sum_xx``   = ``sum_i r_ik (x_i - c_k)(x_i - c_k)^T``  in the covariance
  type's form (full K x D x D, tied D x D summed over k, diag K x D,
  spherical K: the trace)
* ``loglik     = sum_i w_i log p(x_i | theta)``            (float64)
* ``weight     = sum_i w_i``  (the number of rows without sample weights)
* ``n_rows``   rows seen

where ``r_ik`` already carries the sample weight ``w_i``. Merging is ``+``:
stats(A u B) == stats(A) + stats(B), associative up to rounding, and the
tree that merges chunks is fixed by the chunking alone.

Moments are taken about the shift c_k (the means that entered the pass), so
``Sigma_new = S / N - delta delta^T`` with ``delta = mu_new - c_k`` keeps its
digits on data far from the origin, where ``sum x x^T - N mu mu^T`` loses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dgmm.core.covariance import CovarianceModel, get_covariance_model
from dgmm.core.family import merge
from dgmm.core.options import CovarianceType

__all__ = ["MStepResult", "SuffStats", "m_step", "merge"]


@dataclass(frozen=True, eq=False)
class SuffStats:
    """Partial sufficient statistics of a set of rows (see the module docstring)."""

    nk: np.ndarray
    sum_x: np.ndarray
    sum_xx: np.ndarray
    loglik: float
    weight: float
    n_rows: int

    @classmethod
    def zeros(cls, covariance_type: CovarianceType, n_components: int, n_features: int) -> SuffStats:
        model = get_covariance_model(covariance_type)
        return cls(
            np.zeros(n_components),
            np.zeros((n_components, n_features)),
            model.zero_sum_xx(n_components, n_features),
            0.0,
            0.0,
            0,
        )

    def __add__(self, other: SuffStats) -> SuffStats:
        if not isinstance(other, SuffStats):
            return NotImplemented
        return SuffStats(
            self.nk + other.nk,
            self.sum_x + other.sum_x,
            self.sum_xx + other.sum_xx,
            self.loglik + other.loglik,
            self.weight + other.weight,
            self.n_rows + other.n_rows,
        )

    @property
    def mean_loglik(self) -> float:
        """Mean log-likelihood per (weighted) sample: scikit-learn's lower bound."""
        return self.loglik / self.weight if self.weight > 0 else -np.inf


@dataclass(frozen=True, eq=False)
class MStepResult:
    """New parameters and the components whose covariance is ill-defined:
    ``bad`` are not positive definite, ``unresolved`` have a variance no
    larger than the rounding of the statistics it came from."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    bad: np.ndarray
    unresolved: np.ndarray


def m_step(
    stats: SuffStats,
    shifts: np.ndarray,
    covariance_type: CovarianceType,
    reg_covar: float,
    *,
    dtype: np.dtype | type = np.float64,
) -> MStepResult:
    """Weights, means and covariances from statistics about ``shifts``.

    As scikit-learn, ``10 * eps`` (of the data's dtype) is added to ``nk`` so
    an empty component yields finite numbers; components whose covariance is
    then not positive definite are listed in ``bad`` for the caller to
    re-seed or report.
    """
    model = get_covariance_model(covariance_type)
    nk = stats.nk + 10.0 * np.finfo(dtype).eps
    delta = stats.sum_x / nk[:, None]
    means = shifts + delta
    covariances = model.m_step(nk, delta, stats.sum_xx, reg_covar)
    weights = nk / nk.sum()
    prec_chol, bad = model.precisions_cholesky(covariances)
    return MStepResult(
        weights, means, covariances, prec_chol, bad,
        _unresolved(model, covariances, prec_chol, shifts, delta, nk, bad),
    )


# Rounding of float64 moments about a shift a (from the kernels' centre c0)
# is about eps * a^2 per unit weight; a variance within this many times of
# it is noise. Collapsed onto identical rows with reg_covar=0, a component's
# computed variance is exactly such noise, and its log-likelihood (which
# grows like log 1/variance) then moves at random between iterations.
_RESOLUTION_FACTOR = 16.0


def _unresolved(
    model: CovarianceModel,
    covariances: np.ndarray,
    precisions_cholesky: np.ndarray,
    shifts: np.ndarray,
    delta: np.ndarray,
    nk: np.ndarray,
    bad: np.ndarray,
) -> np.ndarray:
    """Components whose smallest variance is within rounding of zero."""
    extremes = model.variance_extremes(covariances, precisions_cholesky)
    if extremes is None:
        return np.zeros(0, dtype=np.intp)
    smallest, largest = extremes
    center = (nk @ shifts) / nk.sum()
    scale = largest + ((shifts - center) ** 2).max(axis=1) + (delta**2).max(axis=1)
    floor = _RESOLUTION_FACTOR * np.finfo(np.float64).eps * scale
    unresolved = np.flatnonzero(smallest <= floor)
    return np.setdiff1d(unresolved, bad)
