"""Low-rank-plus-diagonal covariances: mixtures of factor analysers (MFA) and of
probabilistic PCA (MPPCA), as small functions over plain arrays.

Component k has covariance ``C_k = A_k A_k^T + Psi_k`` with factors ``A_k``
(D x l) and noise ``Psi_k``: a variance per feature (``noise_type="diag"``,
MFA, Ghahramani & Hinton 1996) or one variance (``"spherical"``, MPPCA,
Tipping & Bishop 1999). Nothing here forms a D x D matrix: D runs to tens of
thousands and K to thousands, so K D^2 numbers do not fit anywhere.

Log-density (Woodbury identity and the matrix determinant lemma), with
``B_k = Psi_k^-1 A_k``, ``M_k = I_l + A_k^T B_k = L_k L_k^T`` and
``W_k = B_k L_k^-T`` (D x l)::

    (x - mu)^T C^-1 (x - mu) = sum_j (x_j - mu_j)^2 / psi_j - ||W^T (x - mu)||^2
    log det C               = 2 sum log diag(L) + sum_j log psi_j

The W_k of all components are stacked into one (D x K l) matrix, so a block
of rows meets every component in one GEMM (rows x D)(D x K l); the diagonal
part is a GEMM of the design ``[1, x - c0, (x - c0)^2]`` (diag noise) or
``[1, x - c0, ||x - c0||^2]`` (spherical) as for the ``diag`` and
``spherical`` types.

One pass gives, per component and about the shift ``c_k`` (the means that
entered the pass), in float64 and mergeable by ``+`` (:class:`LowRankStats`)::

    nk[k]       = sum_i r_ik
    sum_x[k]    = sum_i r_ik (x_i - c_k)                          (D,)
    sum_xxb[k]  = sum_i r_ik (x_i - c_k)(x_i - c_k)^T B_k          (D, l)
    sum_xx[k]   = sum_i r_ik (x_i - c_k)^2   (diag; its sum for spherical)

with the ``B_k = Psi_k^-1 A_k`` that entered the pass. The block computes
``(x - c_k)^T W_k`` for the log-density anyway; the statistic reuses it
(``S W_k L_k^T = S B_k``) so it costs one more GEMM, (D x rows)(rows x K l).

Why ``S B`` and not ``S A``: the factor-analysis update needs
``S beta^T = S B M^-1``; with a per-feature noise ``S A`` cannot give
``S Psi^-1 A`` (they are proportional only for spherical noise).

The M-step (:func:`m_step`) needs these statistics alone: one pass over the
data per iteration, where torch-mfa makes two (responsibilities and means
first, then ``S_k A_k`` about the new means).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> params = LowRankParams(
...     weights=np.array([0.5, 0.5]), means=np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]),
...     factors=rng.standard_normal((2, 3, 1)), noise_variances=np.ones((2, 3)))
>>> x = sample(params, 200, rng)[0]
>>> stats = chunk_stats(x, prepare(params, x.dtype))
>>> result = m_step(stats, params, reg_covar=1e-6)
>>> result.params.factors.shape, result.bad.size
((2, 3, 1), 0)
>>> bool(chunk_stats(x, prepare(result.params, x.dtype)).loglik >= stats.loglik)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from dgmm.core.covariance import Scratch
from dgmm.core.kernels import log_prob_resp_into, log_sum_exp_resp
from dgmm.core.options import NoiseType
from dgmm.errors import DenseCovarianceTooLargeError, InvalidDataError, ShapeMismatchError

__all__ = [
    "DenseCovarianceTooLargeError",
    "LowRankMStep",
    "LowRankParams",
    "LowRankStats",
    "NoiseType",
    "Prepared",
    "block_rows_for",
    "block_stats",
    "chunk_stats",
    "dense_covariances",
    "design",
    "estimate_log_prob_resp",
    "frame_shifts",
    "m_step",
    "n_parameters",
    "prepare",
    "sample",
    "sample_component",
    "score_samples",
    "weighted_log_prob",
]

LOG_2PI = math.log(2.0 * math.pi)
DEFAULT_DENSE_BYTES = 1 << 30
# Bytes of a block's largest temporaries: the design [1, x - c0, extra] and
# the (rows x K(l + 1)) projections; as ``kernels.block_rows_for``.
DEFAULT_BLOCK_BYTES = 32 << 20
# float64 temporaries of ``prepare`` per group of components.
_PREPARE_BYTES = 64 << 20
# float64 buffers of ``_finish`` per block of features (two of them).
_FINISH_BYTES = 8 << 20


# -- parameters ---------------------------------------------------------------


def _float_array(name: str, value: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != ndim:
        raise ShapeMismatchError(
            f"{name} must be a {ndim}-D array; got shape {arr.shape}. "
            "Pass weights (K,), means (K, D), factors (K, D, l), noise_variances (K, D) or (K,)."
        )
    if not np.all(np.isfinite(arr)):
        k = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise InvalidDataError(
            f"{name} must be finite; component {k} holds NaN or Inf. "
            "Re-initialise that component (or the whole model)."
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class LowRankParams:
    """Parameters of a mixture with covariances ``C_k = A_k A_k^T + Psi_k``.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
        Mixing weights, non-negative.
    means : ndarray of shape (n_components, n_features)
    factors : ndarray of shape (n_components, n_features, rank)
        The factor loadings ``A_k``; ``rank`` may be 0 (a diagonal mixture).
    noise_variances : ndarray of shape (n_components, n_features) or (n_components,)
        ``Psi_k``: per-feature noise (MFA, ``noise_type="diag"``) or one
        variance per component (MPPCA, ``"spherical"``); positive.
    """

    weights: np.ndarray
    means: np.ndarray
    factors: np.ndarray
    noise_variances: np.ndarray
    #: The model family (:mod:`dgmm.core.lowrank_family`) and covariance type.
    family: ClassVar[str] = "lowrank"
    covariance_type: ClassVar[str] = "lowrank"

    def __post_init__(self) -> None:
        weights = _float_array("weights", self.weights, 1)
        means = _float_array("means", self.means, 2)
        factors = _float_array("factors", self.factors, 3)
        noise = np.array(self.noise_variances, dtype=np.float64)
        if noise.ndim not in (1, 2):
            raise ShapeMismatchError(
                f"noise_variances must have shape (n_components, n_features) for diag noise "
                f"or (n_components,) for spherical noise; got shape {noise.shape}."
            )
        noise = _float_array("noise_variances", noise, noise.ndim)
        n_components, n_features = means.shape
        expected = {
            "weights": (weights.shape, (n_components,)),
            "factors": (factors.shape[:2], (n_components, n_features)),
            "noise_variances": (noise.shape, (n_components, n_features)[: noise.ndim]),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise ShapeMismatchError(
                    f"{name} does not match means of shape {means.shape}: expected leading "
                    f"shape {want}, got {got}. Give every array the same n_components "
                    "and n_features."
                )
        if np.any(weights < 0):
            k = int(np.flatnonzero(weights < 0)[0])
            raise InvalidDataError(
                f"weights must be non-negative; component {k} has {weights[k]!r}. "
                "Pass mixing proportions (they are normalised to sum to 1)."
            )
        if np.any(noise <= 0):
            k = int(np.argwhere(noise <= 0)[0][0])
            raise InvalidDataError(
                f"noise_variances must be positive; component {k} has "
                f"{float(noise.reshape(n_components, -1)[k].min())!r}. "
                "Add reg_covar (e.g. 1e-6) to the noise, or re-seed the component."
            )
        for name, arr in (("weights", weights), ("means", means), ("factors", factors),
                          ("noise_variances", noise)):
            object.__setattr__(self, name, arr)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def rank(self) -> int:
        return self.factors.shape[2]

    @property
    def noise_type(self) -> NoiseType:
        return "diag" if self.noise_variances.ndim == 2 else "spherical"

    def noise_diag(self) -> np.ndarray:
        """``Psi_k`` as (n_components, n_features) whatever the noise type."""
        if self.noise_type == "diag":
            return self.noise_variances
        return np.repeat(self.noise_variances[:, None], self.n_features, axis=1)

    def center(self) -> np.ndarray:
        """The mixture's mean ``sum_k w_k mu_k``: the kernels' centre c0."""
        return (self.weights / self.weights.sum()) @ self.means

    def n_parameters(self) -> int:
        """Free parameters (BIC / AIC); see :func:`n_parameters`."""
        return n_parameters(self.n_components, self.n_features, self.rank, self.noise_type)

    def equals(self, other: Any) -> bool:
        """Bit-for-bit equality of every array (determinism tests)."""
        return isinstance(other, LowRankParams) and all(
            a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(
                (self.weights, self.means, self.factors, self.noise_variances),
                (other.weights, other.means, other.factors, other.noise_variances),
            )
        )


def n_parameters(n_components: int, n_features: int, rank: int, noise_type: NoiseType) -> int:
    """Free parameters: weights - 1, means, factors modulo rotation, noise.

    A_k is identifiable up to an l x l rotation (l(l - 1)/2 numbers), so
    ``p = (K - 1) + K D + K (D l - l(l - 1)/2) + K D`` (diag) or ``+ K`` (spherical).

    >>> n_parameters(2, 5, 2, "diag")
    39
    """
    noise = n_components * n_features if noise_type == "diag" else n_components
    return int(
        (n_components - 1)
        + n_components * n_features
        + n_components * (n_features * rank - rank * (rank - 1) // 2)
        + noise
    )


# -- per-pass constants and the block kernel ----------------------------------


@dataclass(frozen=True, eq=False)
class Prepared:
    """Per-pass constants, in the data's dtype unless said otherwise.

    ``proj`` (1 + D, K l + K): rows ``[1, x - c0]`` against, per component, the
    columns of ``W_k`` (first K l columns, row 0 ``-(mu_k - c0)^T W_k``) and the
    linear and constant terms of ``-1/2 sum (x - mu)^2 / psi + log w + const``
    (last K columns). ``quad`` (extra, K): the squared terms, ``-1/2 / psi``.
    ``chol`` (K, l, l) float64: L_k, to turn ``S W_k`` into ``S B_k``.
    """

    c0: np.ndarray
    shifts_c: np.ndarray
    proj: np.ndarray
    quad: np.ndarray
    chol: np.ndarray
    noise_type: NoiseType
    rank: int
    dtype: np.dtype = field(repr=False)

    @property
    def n_components(self) -> int:
        return self.shifts_c.shape[0]

    @property
    def n_features(self) -> int:
        return self.shifts_c.shape[1]

    @property
    def n_extra(self) -> int:
        return self.n_features if self.noise_type == "diag" else 1


def _frame(params: LowRankParams, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    # c0 and the shifts c_k - c0 rounded to the data's dtype (as kernels.kernel_frame),
    # so the kernel's x - c0 - a_k is exactly the frame the statistics describe.
    c0 = params.center().astype(dtype).astype(np.float64)
    return c0, (params.means - c0).astype(dtype).astype(np.float64)


def frame_shifts(params: LowRankParams, dtype: np.dtype | type) -> np.ndarray:
    """The shifts c_k (n_components, n_features) a pass with ``params`` takes statistics about."""
    c0, shifts_c = _frame(params, np.dtype(dtype))
    return c0 + shifts_c


def prepare(params: LowRankParams, dtype: np.dtype | type) -> Prepared:
    """Per-pass constants for blocks of ``dtype`` (computed in float64, then cast).

    Cost O(K D l^2); nothing of size D^2.
    """
    dtype = np.dtype(dtype)
    n_components, n_features, rank = params.n_components, params.n_features, params.rank
    c0, shifts_c = _frame(params, dtype)
    noise = params.noise_diag()
    n_proj = n_components * rank
    # In the data's dtype at once: a float64 copy would be (1 + D) x K(l + 1) more.
    proj = np.empty((1 + n_features, n_proj + n_components), dtype=dtype)
    chol = np.empty((n_components, rank, rank))
    # Components in groups: float64 temporaries of ~_PREPARE_BYTES, not K x D x l
    # (1 GB each at K = 1000, D = 12288, l = 10; the batched form took 12.6 s there).
    group = max(1, _PREPARE_BYTES // (8 * n_features * max(rank, 1)))
    for start in range(0, n_components if rank else 0, group):
        ks = slice(start, min(n_components, start + group))
        b = params.factors[ks] / noise[ks, :, None]  # B = Psi^-1 A
        m = np.matmul(np.swapaxes(params.factors[ks], 1, 2), b)
        m += np.eye(rank)
        chol[ks] = np.linalg.cholesky(m)
        # W = B L^-T. M >= I, so ||L^-1|| <= 1: inverting the l x l factor is as
        # stable as a triangular solve, and B L^-T is then one batched GEMM
        # (a batched general solve cost 0.8 s at K = 300, D = 12288).
        w = np.matmul(b, np.swapaxes(np.linalg.inv(chol[ks]), 1, 2))  # (group, D, l)
        cols = slice(ks.start * rank, ks.stop * rank)
        proj[1:, cols] = w.transpose(1, 0, 2).reshape(n_features, -1)
        proj[0, cols] = -np.matmul(shifts_c[ks, None, :], w)[:, 0].reshape(-1)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1) + np.log(noise).sum(axis=1)
    with np.errstate(divide="ignore"):
        log_w = np.log(params.weights / params.weights.sum())
    const = log_w - 0.5 * (n_features * LOG_2PI + log_det)
    inv = 1.0 / noise
    # -1/2 (x - m)^2 / psi = -1/2 x^2 / psi + x m / psi - 1/2 m^2 / psi, about c0:
    # the cancellation costs eps * (distance from c0 in standard deviations)^2.
    proj[1:, n_proj:] = (shifts_c * inv).T
    proj[0, n_proj:] = const - 0.5 * np.sum(shifts_c * shifts_c * inv, axis=1)
    if params.noise_type == "diag":
        quad = -0.5 * inv.T
    else:
        quad = (-0.5 / params.noise_variances)[None, :]
    return Prepared(
        c0=c0, shifts_c=shifts_c, proj=proj, quad=quad.astype(dtype),
        chol=chol, noise_type=params.noise_type, rank=rank, dtype=dtype,
    )


def block_rows_for(prepared: Prepared, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Rows per block so the design and projections stay near ``block_bytes``.

    A pass holds the (1 + D) x K(l + 1) moments (float64, and one block's in
    the data's dtype) whatever the block, and adds each block's to them; the
    block's temporaries may take up to a quarter of that, so the add stays a
    few per cent of the GEMMs (at K = 1000, D = 12288, l = 10, 145-row blocks
    spent 27 % of the time on it).
    """
    k = prepared.n_components
    per_row = prepared.dtype.itemsize * (
        1 + prepared.n_features + prepared.n_extra + 3 * k * (prepared.rank + 1)
    )
    moments = (1 + prepared.n_features) * k * (prepared.rank + 1) * (8 + prepared.dtype.itemsize)
    block_bytes = max(block_bytes, moments // 4)
    return int(min(16384, max(64, block_bytes // max(per_row, 1))))


def design(xb: np.ndarray, prepared: Prepared, out: np.ndarray | None = None) -> np.ndarray:
    """The design matrix ``[1, x - c0, extra]`` (rows, 1 + D + extra) of a block, by rows.

    ``extra`` is ``(x - c0)^2`` (diag noise) or ``||x - c0||^2`` (spherical).
    ``x - c0`` is taken in the data's dtype: float32 data far from the origin
    keeps its digits. C order, unlike the other types' designs (by columns):
    with D in the thousands a row is a long vector already, and filling a
    column-ordered design from row-ordered data is a transpose that cost
    more than the GEMMs (1.0 s of 1.7 s at 4096 x 3072).
    """
    n_rows, n_features = xb.shape
    if out is None:
        out = np.empty((n_rows, 1 + n_features + prepared.n_extra), dtype=prepared.dtype)
    out[:, 0] = 1.0
    xc = out[:, 1 : 1 + n_features]
    np.subtract(xb, prepared.c0.astype(prepared.dtype), out=xc)
    if prepared.noise_type == "diag":
        np.square(xc, out=out[:, 1 + n_features :])
    else:
        out[:, 1 + n_features] = np.einsum("ij,ij->i", xc, xc)
    return out


def weighted_log_prob(
    a: np.ndarray, prepared: Prepared, scratch: Scratch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``log w_k + log N(x | mu_k, C_k)`` (rows, K) and the projections (rows, K l).

    ``a`` is a block's :func:`design`. The projections ``z_ik = W_k^T (x_i -
    mu_k)`` are what :func:`block_stats` needs; with ``scratch`` both results
    live in it until the next block. Cost: one GEMM (rows x (1+D))((1+D) x K(l+1))
    and one (rows x extra)(extra x K).
    """
    scratch = Scratch() if scratch is None else scratch
    n_rows = a.shape[0]
    n_features, n_components, rank = prepared.n_features, prepared.n_components, prepared.rank
    n_proj = n_components * rank
    g = scratch.get("proj", (n_rows, n_proj + n_components), a.dtype)
    np.matmul(a[:, : 1 + n_features], prepared.proj, out=g)
    wlp = scratch.get_columns("wlp", (n_rows, n_components), a.dtype)
    np.matmul(a[:, 1 + n_features :], prepared.quad, out=wlp)
    wlp += g[:, n_proj:]
    z = g[:, :n_proj]
    if rank:
        sq = scratch.get("sq", (n_rows, n_proj), a.dtype)
        np.square(z, out=sq)
        wlp += 0.5 * sq.reshape(n_rows, n_components, rank).sum(axis=2)
    return wlp, z


# -- statistics ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LowRankStats:
    """Statistics of a set of rows about the shifts c_k (see the module docstring).

    ``nk`` (K,), ``sum_x`` (K, D), ``sum_xxb`` (K, D, l), ``sum_xx`` (K, D)
    for diag noise or (K,) for spherical, ``loglik = sum_i w_i log p(x_i)``,
    ``weight = sum_i w_i``, ``n_rows``; all float64, merged by ``+``.
    """

    nk: np.ndarray
    sum_x: np.ndarray
    sum_xxb: np.ndarray
    sum_xx: np.ndarray
    loglik: float
    weight: float
    n_rows: int

    @classmethod
    def zeros(cls, n_components: int, n_features: int, rank: int, noise_type: NoiseType) -> LowRankStats:
        shape = (n_components, n_features) if noise_type == "diag" else (n_components,)
        return cls(np.zeros(n_components), np.zeros((n_components, n_features)),
                   np.zeros((n_components, n_features, rank)), np.zeros(shape), 0.0, 0.0, 0)

    @staticmethod
    def nbytes(n_components: int, n_features: int, rank: int, noise_type: NoiseType = "diag") -> int:
        """Bytes of one set of statistics (what every chunk sends to the reduction, whatever its rows)."""
        per_component = 1 + n_features * (rank + 1) + (n_features if noise_type == "diag" else 1)
        return 8 * n_components * per_component

    def __add__(self, other: LowRankStats) -> LowRankStats:
        if not isinstance(other, LowRankStats):
            return NotImplemented
        return LowRankStats(
            self.nk + other.nk, self.sum_x + other.sum_x, self.sum_xxb + other.sum_xxb,
            self.sum_xx + other.sum_xx, self.loglik + other.loglik,
            self.weight + other.weight, self.n_rows + other.n_rows,
        )

    @property
    def mean_loglik(self) -> float:
        """Mean log-likelihood per (weighted) sample."""
        return self.loglik / self.weight if self.weight > 0 else -np.inf


@dataclass
class _Moments:
    """float64 accumulators of a chunk: ``[1, x-c0]^T [r z | r]`` and ``extra^T r``."""

    lin: np.ndarray
    extra: np.ndarray
    loglik: float = 0.0


def block_stats(
    a: np.ndarray, z: np.ndarray, resp: np.ndarray, prepared: Prepared,
    acc: _Moments | None = None, scratch: Scratch | None = None,
) -> _Moments:
    """Add one block's moments to ``acc`` (float64); ``resp`` (rows, K) carries sample weights.

    Two GEMMs in the data's dtype, ``[1, x-c0]^T [r z | r]`` ((1+D) x K(l+1))
    and ``extra^T r`` (extra x K), summed in float64 across blocks.
    """
    scratch = Scratch() if scratch is None else scratch
    n_rows = a.shape[0]
    n_features, n_components, rank = prepared.n_features, prepared.n_components, prepared.rank
    n_proj = n_components * rank
    if acc is None:
        acc = _Moments(np.zeros((1 + n_features, n_proj + n_components)),
                       np.zeros((prepared.n_extra, n_components)))
    rz = scratch.get("rz", (n_rows, n_proj + n_components), a.dtype)
    np.multiply(z.reshape(n_rows, n_components, rank), resp[:, :, None],
                out=rz[:, :n_proj].reshape(n_rows, n_components, rank))
    rz[:, n_proj:] = resp
    # Into a reused buffer in the data's dtype, then added to float64 without a
    # float64 temporary: at K = 1000, D = 12288 each is (1 + D) x K(l + 1).
    lin = scratch.get("lin", acc.lin.shape, a.dtype)
    np.matmul(a[:, : 1 + n_features].T, rz, out=lin)
    acc.lin += lin
    extra = scratch.get("extra", acc.extra.shape, a.dtype)
    np.matmul(a[:, 1 + n_features :].T, resp, out=extra)
    acc.extra += extra
    return acc


def _finish(acc: _Moments, prepared: Prepared, weight: float, n_rows: int) -> LowRankStats:
    """Statistics about c_k from moments about c0 (float64, per chunk)."""
    n_features, n_components, rank = prepared.n_features, prepared.n_components, prepared.rank
    n_proj = n_components * rank
    a_k = prepared.shifts_c
    nk = acc.lin[0, n_proj:].copy()
    sum_xc = acc.lin[1:, n_proj:].T  # sum r (x - c0)
    sum_x = sum_xc - nk[:, None] * a_k
    if prepared.noise_type == "diag":
        sum_xx = acc.extra.T - 2.0 * a_k * sum_xc + nk[:, None] * a_k * a_k
    else:
        sum_xx = acc.extra[0] - 2.0 * np.sum(a_k * sum_xc, axis=1) + nk * np.sum(a_k * a_k, axis=1)
    # sum r (x - c_k) z^T = sum r (x - c0) z^T - a_k sum r z^T, then S W L^T = S B.
    sum_z = acc.lin[0, :n_proj].reshape(n_components, rank)
    # By blocks of features: a block of the moments is copied to (K, rows, l),
    # multiplied by L_k^T (one batched GEMM) and written into the C-ordered
    # result. A GEMM per component read its columns at a stride of K(l + 1),
    # and the batched form over (K, D, l) made three fresh K D l float64 arrays
    # (6.8 s per chunk at K = 1000, D = 12288, l = 10, mostly first-touch page
    # faults). C order because the statistics are pickled to other workers and
    # merged there: a transposed view would be gathered element-run by run.
    xz = acc.lin[1:, :n_proj].reshape(n_features, n_components, rank)
    sum_xxb = np.empty((n_components, n_features, rank))
    if rank:
        lt = np.swapaxes(prepared.chol, 1, 2)
        corr = np.matmul(sum_z[:, None, :], lt)[:, 0]  # (sum r z^T) L^T, (K, l)
        step = max(1, _FINISH_BYTES // (8 * n_components * rank))
        buf = np.empty((2, n_components, min(step, n_features), rank))
        for start in range(0, n_features, step):
            block = xz[start : start + step]
            rows = block.shape[0]
            moved, out = buf[0, :, :rows], buf[1, :, :rows]
            np.copyto(moved, block.transpose(1, 0, 2))
            np.matmul(moved, lt, out=out)
            out -= a_k[:, start : start + rows, None] * corr[:, None, :]
            sum_xxb[:, start : start + rows] = out
    return LowRankStats(nk, sum_x, sum_xxb, sum_xx, acc.loglik, weight, n_rows)


def chunk_stats(
    x: np.ndarray,
    prepared: Prepared,
    sample_weight: np.ndarray | None = None,
    *,
    block_rows: int | None = None,
) -> LowRankStats:
    """E-step and statistics of one row chunk ``x`` (n_rows, n_features).

    Blocks of ``block_rows`` bound the memory by rows, K and D l (never D^2);
    ``x`` should have ``prepared``'s dtype (float32 kernels for float32 data).
    """
    x = np.asarray(x)
    if x.dtype != prepared.dtype:
        x = x.astype(prepared.dtype)
    n_rows = x.shape[0]
    block_rows = block_rows_for(prepared) if block_rows is None else block_rows
    scratch = Scratch()
    buf = np.empty((min(block_rows, n_rows), 1 + prepared.n_features + prepared.n_extra),
                   dtype=prepared.dtype)
    acc = None
    loglik = 0.0
    for start in range(0, n_rows, block_rows):
        xb = x[start : start + block_rows]
        a = design(xb, prepared, buf[: xb.shape[0]])
        wlp, z = weighted_log_prob(a, prepared, scratch)
        resp, log_norm = log_sum_exp_resp(wlp)
        if sample_weight is None:
            loglik += float(np.sum(log_norm, dtype=np.float64))
        else:
            wb = np.asarray(sample_weight[start : start + block_rows])
            loglik += float(np.dot(wb.astype(np.float64), log_norm.astype(np.float64)))
            resp *= wb.astype(prepared.dtype)[:, None]
        acc = block_stats(a, z, resp, prepared, acc, scratch)
    if acc is None:
        return LowRankStats.zeros(prepared.n_components, prepared.n_features, prepared.rank,
                                  prepared.noise_type)
    acc.loglik = loglik
    weight = float(n_rows) if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))
    return _finish(acc, prepared, weight, n_rows)


def estimate_log_prob_resp(
    x: np.ndarray, params: LowRankParams, *, block_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``log p(x)`` (n_rows,) and ``log_resp`` (n_rows, K), in x's dtype."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    prepared = prepare(params, dtype)
    n_rows = x.shape[0]
    block_rows = block_rows_for(prepared) if block_rows is None else block_rows
    log_norm = np.empty(n_rows, dtype=dtype)
    log_resp = np.empty((n_rows, params.n_components), dtype=dtype)
    scratch = Scratch()
    for start in range(0, n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        wlp, _ = weighted_log_prob(design(x[start:stop].astype(dtype), prepared), prepared, scratch)
        log_prob_resp_into(wlp, log_norm[start:stop], log_resp[start:stop])
    return log_norm, log_resp


def score_samples(x: np.ndarray, params: LowRankParams, *, block_rows: int | None = None) -> np.ndarray:
    """``log p(x)`` of every row, shape (n_rows,)."""
    return estimate_log_prob_resp(x, params, block_rows=block_rows)[0]


# -- M-step -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LowRankMStep:
    """New parameters and ``bad``: components whose noise came out non-positive
    or non-finite, or whose ``nk`` collapsed. Those keep their previous means,
    factors and noise in ``params`` so it stays valid; the caller re-seeds
    them or raises."""

    params: LowRankParams
    bad: np.ndarray


def m_step(
    stats: LowRankStats,
    params: LowRankParams,
    *,
    reg_covar: float = 1e-6,
    dtype: np.dtype | type = np.float64,
    min_nk: float | None = None,
) -> LowRankMStep:
    r"""EM update of weights, means, factors and noise from one pass's statistics.

    ``params`` are the parameters that entered the pass (their means are the
    shifts, their ``B = Psi^-1 A`` the statistic's right factor), ``dtype``
    the data's. ``min_nk`` (default ``100 eps(dtype) * weight``): a component
    with ``nk <= min_nk`` has collapsed and is listed in ``bad``.

    Derivation. Treat the labels alone as missing data. With responsibilities
    r from the pass, the expected complete log-likelihood of component k is
    ``-N/2 [log det C + tr(C^-1 (S + (xbar - mu)(xbar - mu)^T))] + const``,
    S the weighted covariance about xbar. For any C it is maximised by
    ``mu = xbar``; then it is the factor-analysis likelihood of S, and one
    EM step of factor analysis from (A, Psi) increases it. Together a
    generalised EM step: the mixture likelihood never decreases.

    About the new mean, with ``delta = mu_new - c = sum_x / N``, exactly::

        P = S B = sum_xxb / N - delta (delta^T B)        (D x l)
        diag S  = sum_xx / N - delta^2                   (or the trace)

    Factor analysis EM (Ghahramani & Hinton 1996), ``beta = A^T C^-1``,
    ``E[z z^T] = I - beta A + beta S beta^T`` averaged over rows::

        A_new   = S beta^T E[z z^T]^-1,  Psi_new = diag(S - A_new beta S).

    Woodbury in l x l: ``beta = M^-1 B^T`` (M = I + A^T B), so
    ``I - beta A = M^-1``, ``S beta^T = P M^-1`` and, with ``H = B^T P``,
    ``E[z z^T] = M^-1 (M + H) M^-1``. Hence::

        A_new   = P (M + H)^-1 M
        Psi_new = diag S - rowsum((P R^-T)^2),  (M + H) = R R^T

    since ``A_new beta S = P (M + H)^-1 P^T``; this is ``diag`` of a PSD
    Schur-complement form, non-negative up to rounding. Spherical noise
    (MPPCA): ``sigma^2 = tr(S - A_new beta S) / D``. ``reg_covar`` is added
    to the noise, ``10 eps(dtype)`` to ``nk`` (as ``suffstats.m_step``).
    """
    eps = np.finfo(np.dtype(dtype)).eps
    nk = stats.nk + 10.0 * eps
    shifts = frame_shifts(params, dtype)
    delta = stats.sum_x / nk[:, None]
    means = shifts + delta
    n_features, rank = params.n_features, params.rank
    noise_old = params.noise_diag()
    if params.noise_type == "diag":
        diag_s = stats.sum_xx / nk[:, None] - delta * delta
    else:
        diag_s = stats.sum_xx / nk - np.sum(delta * delta, axis=1)
    n_components = params.n_components
    factors = np.zeros_like(params.factors)
    explained = np.zeros((n_components, n_features))
    bad_chol = np.zeros(n_components, dtype=bool)
    # One component at a time: temporaries of D x l, not K x D x l (1 GB in
    # float64 at K = 1000, D = 12288, l = 10).
    for k in range(n_components):
        if rank == 0:
            break
        b = params.factors[k] / noise_old[k][:, None]
        m = np.eye(rank) + params.factors[k].T @ b
        # S B about the new mean: rank-one correction of the moment about c_k.
        p = stats.sum_xxb[k] / nk[k] - np.outer(delta[k], delta[k] @ b)
        mh = m + b.T @ p
        mh = 0.5 * (mh + mh.T)
        try:
            r = scipy.linalg.cholesky(mh, lower=True, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            bad_chol[k] = True
            continue
        # A_new = P (M + H)^-1 M; rows of P R^-T give diag(P (M + H)^-1 P^T).
        pr = scipy.linalg.solve_triangular(r, p.T, lower=True, check_finite=False).T
        factors[k] = scipy.linalg.solve_triangular(r, pr.T, lower=True, trans="T",
                                                   check_finite=False).T @ m
        explained[k] = np.sum(pr * pr, axis=1)
    if params.noise_type == "diag":
        noise = diag_s - explained + reg_covar
        noise_ok = np.all(np.isfinite(noise) & (noise > 0), axis=1)
    else:
        noise = (diag_s - explained.sum(axis=1)) / n_features + reg_covar
        noise_ok = np.isfinite(noise) & (noise > 0)
    floor = 100.0 * eps * stats.weight if min_nk is None else min_nk
    bad = ~noise_ok | bad_chol | (stats.nk <= floor) | ~np.all(np.isfinite(factors), axis=(1, 2))
    bad |= ~np.all(np.isfinite(means), axis=1)
    means[bad] = params.means[bad]
    factors[bad] = params.factors[bad]
    noise[bad] = params.noise_variances[bad]
    weights = nk / nk.sum()
    return LowRankMStep(LowRankParams(weights, means, factors, noise), np.flatnonzero(bad))


# -- sampling and dense covariances ------------------------------------------


def sample(
    params: LowRankParams, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` draws ``x = mu_k + A_k z + sqrt(Psi_k) eps`` and their labels.

    Returns ``(X (n_samples, n_features), labels (n_samples,))``, grouped by
    component as scikit-learn's ``GaussianMixture.sample``.
    """
    counts = rng.multinomial(n_samples, params.weights / params.weights.sum())
    xs = [sample_component(params, k, int(count), rng) for k, count in enumerate(counts)]
    return np.concatenate(xs), np.repeat(np.arange(params.n_components), counts)


def sample_component(
    params: LowRankParams, k: int, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_samples`` draws of component ``k`` alone, shape (n_samples, n_features)."""
    z = rng.standard_normal((n_samples, params.rank))
    e = rng.standard_normal((n_samples, params.n_features))
    return params.means[k] + z @ params.factors[k].T + e * np.sqrt(params.noise_diag()[k])


def dense_covariances(params: LowRankParams, max_bytes: int = DEFAULT_DENSE_BYTES) -> np.ndarray:
    """``A_k A_k^T + Psi_k`` as (n_components, n_features, n_features) float64.

    Raises ``DenseCovarianceTooLargeError`` when K D^2 float64 exceed ``max_bytes``.
    """
    k, d = params.n_components, params.n_features
    need = 8 * k * d * d
    if need > max_bytes:
        raise DenseCovarianceTooLargeError(
            f"Dense covariances of a low-rank model need K*D^2 float64 = {k}*{d}^2*8 = "
            f"{need / 2**30:.3g} GiB, over the limit of {max_bytes / 2**30:.3g} GiB. "
            "Use factors_ and noise_variances_ (C_k = A_k A_k^T + diag(Psi_k)) instead, "
            "or raise max_bytes if that memory is really available."
        )
    cov = np.einsum("kil,kjl->kij", params.factors, params.factors)
    idx = np.arange(d)
    cov[:, idx, idx] += params.noise_diag()
    return cov
