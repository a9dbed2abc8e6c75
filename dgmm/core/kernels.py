"""Per-chunk numpy kernels: everything a worker runs on its rows.

A chunk (all columns, a range of rows) is processed in blocks of rows so a
task's memory is bounded by the block, not by the storage chunk: a 1e6-row
chunk with K=1024 never allocates a (1e6, 1024) matrix. Within a block the
arithmetic runs in the data's dtype (float32 kernels run at twice the BLAS
speed); every sum across blocks and chunks is float64.

Responsibilities come from one of three sources sharing the statistics code:
the E-step of a mixture (``EStep``), hard assignment to the nearest centre
(``HardAssign``: Lloyd iterations and the k-means initialisation), or random
draws (``RandomResp``: the "random" initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import scipy.sparse

from dgmm.core.covariance import Scratch, get_covariance_model
from dgmm.core.covariance.base import LOG_2PI, CovarianceModel, ExpandedGEMM
from dgmm.core.options import CovarianceType
from dgmm.core.params import GMMParams
from dgmm.core.seeding import nearest_labels
from dgmm.core.suffstats import SuffStats
from dgmm.errors import InvalidDataError

__all__ = [
    "log_prob_resp_into",
    "log_sum_exp_resp",
    "EStep",
    "require_finite",
    "require_valid_weights",
    "HardAssign",
    "RandomResp",
    "block_rows_for",
    "chunk_stats",
    "estimate_log_prob_resp",
    "float64_components",
    "float64_log_densities",
    "kernel_frame",
    "require_finite_rows",
]

# Bytes of the block's largest temporaries (a few (rows x K) arrays). Kernel
# throughput is flat from ~1024 to ~8192 rows per block on the benchmark
# shapes (fewer rows: Python overhead per block; more: temporaries leave L2/L3).
DEFAULT_BLOCK_BYTES = 4 << 20


def block_rows_for(
    n_components: int, n_features: int, itemsize: int, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> int:
    """Rows per block so the (rows x K) temporaries stay near ``block_bytes``."""
    per_row = itemsize * (3 * n_components + 2 * n_features)
    return int(min(65536, max(64, block_bytes // max(per_row, 1))))


def kernel_frame(params: GMMParams | np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The centre ``c0`` and per-component shifts ``a_k = c_k - c0`` a kernel uses.

    Both are rounded to the data's dtype (returned as float64) so that the
    kernel's ``x - c0`` and ``x - c0 - a_k`` are the exact frame the statistics
    describe; the M-step adds ``c0 + a_k`` back to get the shift c_k.
    ``params`` may be a mixture (c_k = its means) or an array of centres.
    """
    if isinstance(params, GMMParams):
        centers = params.means
        c0 = params.center()
    else:
        centers = np.asarray(params, dtype=np.float64)
        c0 = centers.mean(axis=0)
    c0 = c0.astype(dtype).astype(np.float64)
    shifts_c = (centers - c0).astype(dtype).astype(np.float64)
    return c0, shifts_c


def frame_shifts(params: GMMParams | np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The shifts c_k the statistics of a pass with ``params`` are taken about."""
    c0, shifts_c = kernel_frame(params, dtype)
    return c0 + shifts_c


# When float32 statistics are not enough. Summed in float32 within a block,
# a component's moments carry errors of about eps32 * sigma_i sigma_j per
# entry (and eps32 * (c_k - c0)^2 where the type takes them about c0 and
# shifts them: diag, spherical), so its computed covariance is indefinite
# once its smallest eigenvalue, relative to those scales, nears eps32 * D.
# That is the data's doing only in part: a component of fewer rows than
# features (3 cells in 50 dimensions) has a covariance of rank < D plus
# reg_covar, a condition number of variance / reg_covar (1e8 on scanpy's
# pbmc68k_reduced PCA); float32 moments make it indefinite and EM re-seeds
# it, where float64 keeps it. Such components get their statistics in
# float64 (``chunk_stats``); the rest stay in float32 at twice the speed.
#
# The test, per component of the parameters that enter the pass:
#   eps32 * (sum_d Sigma_dd P_dd + max_d (c_k - c0)_d^2 P_dd)  >  _FLOAT64_BELOW
# with P = Sigma^-1. sum_d Sigma_dd P_dd = tr(R^-1) for the correlation
# matrix R of Sigma bounds 1 / lambda_min(R) within a factor D and costs
# only diagonals. Well-conditioned components score about eps32 * D (5e-5 on
# 16-d blobs, 4e-5 to 2e-4 on the 50-d PCA); every rank-deficient one scores
# above 1 (eps32 * D * variance / reg_covar); the bound leaves a margin for a
# component that tightens between two iterations.
#
# The E-step has its own limit. diag and spherical expand
# (x - mu)^2 P = x^2 P - 2 x mu P + mu^2 P about c0 (one GEMM): in float32 the
# cancellation costs about eps32 * E_k nats per row, E_k = sum_d (c_k - c0)_d^2
# P_dd (summed over features, not their max). A diag component with a feature
# constant inside it (a pixel always 0 in a digit class) has P_dd = 1 / reg_covar:
# on digits that was up to 11 nats per row, wrong responsibilities, and a float32 fit
# that never converged. Its log-density is computed in float64 (``EStep``), and
# its statistics too, when eps32 * E_k passes _FLOAT64_BELOW and E_k passes
# _EXPANSION_OVER times the magnitude float32 rounds the log-density at anyway,
# |log det L_k - D/2 log 2 pi| + D/2 (on 12288-pixel images E_k is of that
# order: float64 would buy nothing there). A component routed for its
# statistics alone keeps its float32 log-density, which resolves it.
_FLOAT64_BELOW = 1e-3
_EXPANSION_OVER = 10.0
# Rows whose responsibilities for every such component are at most this
# keep their (tiny) part of its statistics in float32: their rounding,
# eps32 * r * |x - c_k|^2 per row, is far below reg_covar * N_k. A small,
# tight component then costs float64 work on its own few rows only.
_FLOAT64_MIN_RESP = 1e-12


def float64_components(params: GMMParams, dtype: np.dtype) -> np.ndarray:
    """Components whose statistics ``chunk_stats`` accumulates in float64 (indices).

    None for float64 data. For float32 data, the components whose covariance
    float32 moments may not resolve (see ``_FLOAT64_BELOW``), and those of
    ``float64_log_densities``; for a shared (tied) covariance, all of them or none.
    """
    if np.dtype(dtype) != np.float32:
        return np.zeros(0, dtype=np.intp)
    model = params.model
    _, shifts_c = kernel_frame(params, dtype)
    diagonals = _variances_and_precisions(params)
    if diagonals is None:
        # A type without diagonals here: the coarser bound
        # largest variance * tr(P) >= condition number.
        extremes = model.variance_extremes(params.covariances, params.precisions_cholesky)
        if extremes is None:
            return np.zeros(0, dtype=np.intp)
        traces = model.precision_traces(params.precisions_cholesky, params.n_components, params.n_features)
        score = (extremes[1] + (shifts_c**2).max(axis=1)) * traces
    else:
        variances, precisions = diagonals
        score = np.sum(variances * precisions, axis=1) + np.max(shifts_c**2 * precisions, axis=1)
    unresolved = float(np.finfo(np.float32).eps) * score > _FLOAT64_BELOW
    flagged = np.flatnonzero(unresolved | _expansion_unresolved(params, dtype))
    if model.shared and flagged.size:
        return np.arange(params.n_components)
    return flagged


def float64_log_densities(params: GMMParams, dtype: np.dtype) -> np.ndarray:
    """Components whose log-density the E-step computes in float64 (indices).

    None for float64 data and for types that do not expand the square (full,
    tied). For float32 data with diag or spherical covariances, the components
    whose expansion about c0 float32 cannot resolve (see ``_EXPANSION_OVER``).
    """
    return np.flatnonzero(_expansion_unresolved(params, dtype))


def _expansion_unresolved(params: GMMParams, dtype: np.dtype) -> np.ndarray:
    """Whether the E-step's expansion of each component loses more to float32
    cancellation than float32 rounds its log-density at anyway (bool (K,))."""
    diagonals = _variances_and_precisions(params)
    if np.dtype(dtype) != np.float32 or not isinstance(params.model, ExpandedGEMM) or diagonals is None:
        return np.zeros(params.n_components, dtype=bool)
    _, shifts_c = kernel_frame(params, dtype)
    expansion = np.sum(shifts_c**2 * diagonals[1], axis=1)
    n_features = params.n_features
    log_det = params.model.log_det_cholesky(params.precisions_cholesky, n_features)
    own = np.abs(log_det - 0.5 * n_features * LOG_2PI) + 0.5 * n_features
    eps32 = float(np.finfo(np.float32).eps)
    return (eps32 * expansion > _FLOAT64_BELOW) & (expansion > _EXPANSION_OVER * own)


def _variances_and_precisions(params: GMMParams) -> tuple[np.ndarray, np.ndarray] | None:
    """Diagonals of every covariance and precision, each (n_components, n_features)."""
    cov, chol = params.covariances, params.precisions_cholesky
    shape = (params.n_components, params.n_features)
    kind = params.covariance_type
    if kind == "full":
        return np.diagonal(cov, axis1=1, axis2=2), np.einsum("kdj,kdj->kd", chol, chol)
    if kind == "tied":
        return (
            np.broadcast_to(np.diagonal(cov), shape),
            np.broadcast_to(np.einsum("dj,dj->d", chol, chol), shape),
        )
    if kind == "diag":
        return cov, chol**2
    if kind == "spherical":
        return np.broadcast_to(cov[:, None], shape), np.broadcast_to(chol[:, None] ** 2, shape)
    return None


class Responsibilities(Protocol):
    """A source of responsibilities for ``chunk_stats``.

    A soft source (``one_hot`` False) gives each block's responsibilities
    through ``block``; a one-hot source (hard assignment) gives each row's
    component through ``labels``, and ``chunk_stats`` sums every statistic
    over the rows of one component only (``_OneHotStats``).
    """

    family: str
    covariance_type: CovarianceType
    n_components: int
    one_hot: bool

    def frame(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]: ...

    def float64_components(self, dtype: np.dtype) -> np.ndarray:
        """Components whose statistics are accumulated in float64 (indices)."""
        ...

    def start_chunk(self, dtype: np.dtype, chunk_index: int) -> object: ...

    def block(
        self, a: np.ndarray, state: object, scratch: Scratch, a64: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(resp (rows, K) in a's dtype, per-row score (rows,))`` (soft sources).

        ``a`` is the block's design matrix ``[1, x - c0, extra]`` (see
        ``CovarianceModel.design``); ``a64`` the same in float64, from the rows
        as read, when ``state`` computes some log-densities in float64 (an
        ``EStep``'s ``_SplitEStep``), else None.
        ``resp`` may live in ``scratch`` and may be modified by the caller
        until the next block.
        """
        ...

    def labels(self, xc: np.ndarray, state: object, scratch: Scratch) -> np.ndarray:
        """The component of every row of ``xc = x - c0`` (rows, D) (one-hot sources)."""
        ...


# exp() of arguments below these takes libm's (float64) or numpy's SIMD
# (float32) slow path for underflowing and subnormal results, 2-4x slower per
# value; well-separated components put most entries there. Clamping changes a
# responsibility by less than exp(floor) (1e-217 / 2e-35) absolute, far below
# the rounding of the row (its largest entry is 1 before normalising).
_EXP_FLOOR = {8: -500.0, 4: -80.0}


def log_sum_exp_resp(wlp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise weighted log-probabilities in place into responsibilities.

    Returns ``(resp, log_norm)``; ``resp`` is ``wlp``'s buffer. One ``exp``
    per entry: exp(wlp - max) / sum equals exp(wlp - logsumexp) to rounding.
    """
    top = wlp.max(axis=1)
    # A row where every component has -inf (zero weights, or an overflowing
    # distance) has no finite maximum; it keeps the nan / -inf it always had.
    dead = ~np.isfinite(top)
    any_dead = bool(dead.any())
    if any_dead:
        top[dead] = 0.0
    wlp -= top[:, None]
    np.maximum(wlp, _EXP_FLOOR[wlp.dtype.itemsize], out=wlp)
    np.exp(wlp, out=wlp)
    total = wlp.sum(axis=1)
    log_norm = np.log(total)
    np.reciprocal(total, out=total)
    wlp *= total[:, None]
    log_norm += top
    if any_dead:
        wlp[dead] = np.nan
        log_norm[dead] = -np.inf
    return wlp, log_norm


@dataclass(frozen=True)
class EStep:
    """Responsibilities of a mixture: the E-step. Score = log p(x)."""

    params: GMMParams
    family: ClassVar[str] = "gaussian"
    one_hot: ClassVar[bool] = False

    @property
    def covariance_type(self) -> CovarianceType:
        return self.params.covariance_type

    @property
    def n_components(self) -> int:
        return self.params.n_components

    def frame(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        return kernel_frame(self.params, dtype)

    def float64_components(self, dtype: np.dtype) -> np.ndarray:
        return float64_components(self.params, dtype)

    def start_chunk(self, dtype: np.dtype, chunk_index: int) -> object:
        """The model's prepared constants, or a ``_SplitEStep`` when some
        log-densities are computed in float64 (``float64_log_densities``)."""
        params = self.params
        c0, _ = self.frame(dtype)
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        precise = float64_log_densities(params, dtype)
        if precise.size == 0:
            return params.model.prepare(
                (params.means - c0).astype(dtype), params.precisions_cholesky.astype(dtype), log_weights
            )
        rest = np.setdiff1d(np.arange(params.n_components), precise)
        return _SplitEStep(
            rest,
            precise,
            _prepare_some(params, rest, c0, dtype, log_weights) if rest.size else None,
            _prepare_some(params, precise, c0, np.dtype(np.float64), log_weights),
            Scratch(),
        )

    def block(
        self, a: np.ndarray, state: object, scratch: Scratch, a64: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return log_sum_exp_resp(_weighted_log_prob(self.params.model, a, a64, state, scratch))


@dataclass(frozen=True)
class _SplitEStep:
    """Per-chunk E-step constants when components ``precise`` take the float64
    route: ``low`` prepared for the ``rest`` in the data's dtype (None when
    there is none), ``high`` for ``precise`` in float64, with its own work arrays."""

    rest: np.ndarray
    precise: np.ndarray
    low: object | None
    high: object
    scratch64: Scratch


def _prepare_some(
    params: GMMParams, index: np.ndarray, c0: np.ndarray, dtype: np.dtype, log_weights: np.ndarray
) -> object:
    """The model's prepared E-step constants of components ``index`` in ``dtype``."""
    chol = params.precisions_cholesky if params.model.shared else params.precisions_cholesky[index]
    means_c = (params.means[index] - c0).astype(dtype)
    return params.model.prepare(means_c, chol.astype(dtype), log_weights[index])


def _weighted_log_prob(
    model: CovarianceModel, a: np.ndarray, a64: np.ndarray | None, state: object, scratch: Scratch
) -> np.ndarray:
    """``log w_k + log N(x | mu_k, Sigma_k)`` (rows, K) in ``a``'s dtype; the
    columns of a ``_SplitEStep``'s ``precise`` components from the float64
    design ``a64``, rounded once at the end (relative to the value, not to
    the expansion's terms)."""
    if not isinstance(state, _SplitEStep):
        return model.weighted_log_prob(a, state, scratch)
    n_components = state.rest.size + state.precise.size
    out = scratch.get_columns("wlp_split", (a.shape[0], n_components), a.dtype)
    if state.low is not None:
        out[:, state.rest] = model.weighted_log_prob(a, state.low, scratch)
    out[:, state.precise] = model.weighted_log_prob(a64, state.high, state.scratch64)
    return out


@dataclass(frozen=True)
class HardAssign:
    """One-hot responsibilities to the nearest centre. Score = -squared distance.

    The statistics of each centre are those of its nearest rows, taken about
    the centre itself (see ``_OneHotStats``).
    """

    centers: np.ndarray
    covariance_type: CovarianceType
    family: ClassVar[str] = "gaussian"
    one_hot: ClassVar[bool] = True

    @property
    def n_components(self) -> int:
        return self.centers.shape[0]

    def frame(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        return kernel_frame(self.centers, dtype)

    def float64_components(self, dtype: np.dtype) -> np.ndarray:
        return np.zeros(0, dtype=np.intp)

    def start_chunk(self, dtype: np.dtype, chunk_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a_k = c_k - c0 (K, D), -2 a (K, D), |a_k|^2 (K,))`` in the data's dtype."""
        _, shifts_c = self.frame(dtype)
        shifts = shifts_c.astype(dtype)
        return shifts, -2.0 * shifts, np.einsum("kd,kd->k", shifts, shifts)

    def labels(self, xc: np.ndarray, state: tuple[np.ndarray, ...], scratch: Scratch) -> np.ndarray:
        _, minus_two, sq_norms = state
        out = scratch.get("dist", (xc.shape[0] * self.n_components,), xc.dtype)
        return nearest_labels(xc, minus_two, sq_norms, out=out)


@dataclass(frozen=True)
class RandomResp:
    """Uniform random responsibilities normalised per row (init "random").

    Draws come from a generator seeded by ``(seed, chunk index)`` so they do
    not depend on which worker runs the chunk. Score = 0.
    """

    n_components: int
    covariance_type: CovarianceType
    seed: int
    center: np.ndarray = field(repr=False)
    family: ClassVar[str] = "gaussian"
    one_hot: ClassVar[bool] = False

    def frame(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        c0 = self.center.astype(dtype).astype(np.float64)
        return c0, np.zeros((self.n_components, c0.shape[0]))

    def float64_components(self, dtype: np.dtype) -> np.ndarray:
        return np.zeros(0, dtype=np.intp)

    def start_chunk(self, dtype: np.dtype, chunk_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, chunk_index])

    def block(
        self, a: np.ndarray, rng: np.random.Generator, scratch: Scratch, a64: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        resp = rng.uniform(size=(a.shape[0], self.n_components)).astype(a.dtype)
        resp /= resp.sum(axis=1, keepdims=True)
        return resp, np.zeros(a.shape[0], dtype=a.dtype)


def _where(row_offset: int, row: int, chunk_index: int | None, column: int | None = None) -> str:
    """``row R (chunk C, column J)``: where a bad value is, for messages."""
    place = [] if chunk_index is None else [f"chunk {chunk_index}"]
    place += [] if column is None else [f"column {column}"]
    return f"row {row_offset + row}" + (f" ({', '.join(place)})" if place else "")


def require_finite(block: np.ndarray, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
    """Raise ``InvalidDataError`` naming the first NaN/Inf of ``block`` by its global row.

    The one check of the data, run by the first pass of a fit and by every
    prediction task.
    """
    finite = np.isfinite(block)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    value = float(block[row, col])
    n_bad = int(block.size - np.count_nonzero(finite))
    raise InvalidDataError(
        f"Input contains {value!r} at {_where(row_offset, int(row), chunk_index, int(col))}; "
        f"{n_bad} non-finite value(s) in this block. Gaussian mixtures need finite data: "
        "drop or impute NaN/Inf rows first (e.g. X[da.isfinite(X).all(axis=1)] with Dask)."
    )


# Rows per ``require_finite`` call: bounds its boolean temporary.
_CHECK_ROWS = 65536


def require_finite_rows(
    x: np.ndarray, *, row_offset: int = 0, chunk_index: int | None = None, block_rows: int = _CHECK_ROWS
) -> None:
    """``require_finite`` over a whole chunk, in row blocks (bounded temporaries)."""
    for start in range(0, x.shape[0], block_rows):
        require_finite(x[start : start + block_rows], row_offset=row_offset + start, chunk_index=chunk_index)


def require_valid_weights(w: np.ndarray | None, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
    """Raise ``InvalidDataError`` at the first sample weight that is not finite and >= 0."""
    if w is None:
        return
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidDataError(
            f"sample_weight must be finite and non-negative; {_where(row_offset, row, chunk_index)} "
            f"has {float(w[row])!r}. Drop those rows or give them weight 0."
        )


def chunk_stats(
    x: np.ndarray,
    sources: tuple[Responsibilities, ...],
    sample_weight: np.ndarray | None = None,
    *,
    block_rows: int | None = None,
    chunk_index: int = 0,
    row_offset: int = 0,
) -> tuple[SuffStats, ...]:
    """Statistics of one row chunk, one ``SuffStats`` per responsibility source.

    ``x`` (n_rows, n_features) float32 or float64; ``sample_weight`` (n_rows,)
    or None. Every source (the lockstep restarts of ``n_init``) shares the one
    read of the chunk. The data is not checked here: the first pass of a fit
    runs ``require_finite_rows`` on the chunk first (see ``dgmm.graph``).
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    dtype = x.dtype
    n_rows, n_features = x.shape
    if block_rows is None:
        k_max = max(s.n_components for s in sources)
        block_rows = block_rows_for(k_max, n_features, dtype.itemsize)

    acc: list[dict | _OneHotStats] = []
    for source in sources:
        if source.one_hot:
            acc.append(_OneHotStats(source, dtype, n_features, chunk_index))
            continue
        n_components = source.n_components
        model = get_covariance_model(source.covariance_type)
        c0, shifts_c = source.frame(dtype)
        # The block's design matrix [1, x - c0, extra], reused by every block.
        design = model.design_buffer(min(block_rows, n_rows), n_features, dtype)
        acc.append(
            dict(
                model=model,
                c0=c0.astype(dtype),
                shifts_c=shifts_c,
                design=design,
                scratch=Scratch(),
                scratch64=Scratch(),
                state=source.start_chunk(dtype, chunk_index),
                precise=source.float64_components(dtype),
                moments=np.zeros((n_components, design.shape[1])),
                sum_xx=model.zero_sum_xx(n_components, n_features),
                loglik=0.0,
            )
        )

    for start in range(0, n_rows, block_rows):
        xb = x[start : start + block_rows]
        wb = None if sample_weight is None else sample_weight[start : start + block_rows]
        for source, a in zip(sources, acc):
            if isinstance(a, _OneHotStats):
                a.add_block(xb, wb)
                continue
            design = a["design"][: xb.shape[0]]
            np.subtract(xb, a["c0"], out=design[:, 1 : 1 + n_features])
            a["model"].fill_extra(design, n_features)
            comps = a["precise"]
            split = isinstance(a["state"], _SplitEStep)
            design64 = _design64(a["model"], xb, a["c0"], a["scratch64"]) if split else None
            resp, score = source.block(design, a["state"], a["scratch"], design64)
            if wb is None:
                a["loglik"] += float(np.sum(score, dtype=np.float64))
            else:
                a["loglik"] += float(np.dot(wb.astype(np.float64), score.astype(np.float64)))
                resp *= wb.astype(dtype)[:, None]
            if comps.size:
                _float64_stats(xb, design64, resp, comps, a)
            # One GEMM: nk, sum r (x - c0) and the type's extra moments. Summed
            # in the data's dtype within the block, in float64 across blocks.
            moments = (resp.T @ design).astype(np.float64)
            a["model"].block_sum_xx(design, resp, moments, a["shifts_c"], a["sum_xx"], a["scratch"])
            a["moments"] += moments

    weight = float(n_rows) if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))
    stats = []
    for a in acc:
        if isinstance(a, _OneHotStats):
            stats.append(a.result(weight, n_rows))
            continue
        nk = a["moments"][:, 0].copy()
        sum_rxc = a["moments"][:, 1 : 1 + n_features]
        stats.append(
            SuffStats(nk, sum_rxc - nk[:, None] * a["shifts_c"], a["sum_xx"], a["loglik"], weight, n_rows)
        )
    return tuple(stats)


def _design64(model: CovarianceModel, xb: np.ndarray, c0: np.ndarray, scratch: Scratch) -> np.ndarray:
    """The design matrix ``[1, x - c0, extra]`` (rows, columns) of the block
    ``xb`` as read, in float64 (exact differences: c0 is a float32 value)."""
    n_rows, n_features = xb.shape
    width = 1 + n_features + model.n_extra(n_features)
    a64 = scratch.get_columns("design64", (n_rows, width), np.dtype(np.float64))
    a64[:, 0] = 1.0
    np.subtract(xb, c0.astype(np.float64), out=a64[:, 1 : 1 + n_features])
    model.fill_extra(a64, n_features)
    return a64


def _float64_stats(
    xb: np.ndarray, design64: np.ndarray | None, resp: np.ndarray, comps: np.ndarray, a: dict
) -> None:
    """Add the statistics of components ``comps`` over the block's rows they
    hold, in float64, to ``a``; zero those responsibilities so the float32
    GEMM that follows counts the other rows only.

    ``xb`` (rows, D) is the block as read, ``design64`` its float64 design
    when the E-step built one (``_design64``) and ``resp`` (rows, K) its
    weighted responsibilities. Runs on the block already in memory: no second
    read. Only rows with a responsibility above ``_FLOAT64_MIN_RESP`` for one
    of ``comps`` enter: a small component costs its own rows.
    """
    model = a["model"]
    sub = resp[:, comps]
    rows = np.flatnonzero(sub.max(axis=1) > _FLOAT64_MIN_RESP)
    if rows.size == 0:
        return
    r64 = sub[rows].astype(np.float64)
    if design64 is None:
        xc = xb[rows].astype(np.float64)
        xc -= a["c0"].astype(np.float64)  # exact: c0 is a float32 value
        design = model.design(xc)
    else:
        design = design64[rows]
    moments = r64.T @ design
    part = model.zero_sum_xx(comps.size, xb.shape[1])
    model.block_sum_xx(design, r64, moments, a["shifts_c"][comps], part, a["scratch64"])
    a["moments"][comps] += moments
    if model.shared:
        a["sum_xx"] += part
    else:
        a["sum_xx"][comps] += part
    resp[np.ix_(rows, comps)] = 0.0


# Columns of ``_OneHotStats.moments`` after [nk, sum y]: the diagonal second
# moments (diag: sum y^2; spherical: sum |y|^2).
_ONE_HOT_EXTRA = {"diag": lambda d: d, "spherical": lambda d: 1}


class _OneHotStats:
    """The statistics of a chunk under one-hot responsibilities, block by block.

    Each row counts for its own component k only, so every statistic is a sum
    over the rows of one cluster, of the row's deviation ``y = x - c_k`` from
    the centre itself: no shift afterwards, so no cancellation however far the
    centre is from ``c0``, and ``sum_xx``'s trace is the score ``-sum |y|^2``.
    Per block of rows:

    * ``nk`` by ``bincount``; ``sum y`` and the diagonal second moments (diag:
      ``y^2``; spherical: ``|y|^2``) by a scatter-add, a sparse one-hot
      (K, rows) matrix times them: O(rows D) where a dense one-hot GEMM costs
      O(rows K D); summed in the data's dtype within the block (as the soft
      path's GEMM), in float64 across blocks. Sums of squares are positive in
      any precision.
    * full: ``y_k^T W y_k`` per component on the rows sorted by label (a radix
      sort), O(rows D^2) where the soft path costs O(rows K D^2); tied: one
      ``y^T W y``. Products in float64: float32 rounding of a cluster of fewer
      rows than features (rank < D, only reg_covar from singular) makes its
      covariance indefinite, and float64 products of the float32 deviations
      cost little beside the pass. This replaces the soft path's float64
      route for small clusters.
    """

    def __init__(self, source: Responsibilities, dtype: np.dtype, n_features: int, chunk_index: int) -> None:
        self.source = source
        self.kind = source.covariance_type
        self.model = get_covariance_model(self.kind)
        self.dtype = dtype
        c0, _ = source.frame(dtype)
        self.c0 = c0.astype(dtype)
        self.state = source.start_chunk(dtype, chunk_index)
        self.shifts = self.state[0]
        n_components = source.n_components
        extra = _ONE_HOT_EXTRA.get(self.kind)
        self.width = 1 + n_features + (extra(n_features) if extra else 0)
        self.moments = np.zeros((n_components, self.width))
        self.sum_xx = None if extra else self.model.zero_sum_xx(n_components, n_features)
        self.scratch = Scratch()
        self.label_dtype = np.int16 if n_components <= np.iinfo(np.int16).max else np.intp
        # The sparse one-hot matrix's column pointers (one row per column) and
        # unit weights, built for the largest block seen.
        self.indptr = np.zeros(0, dtype=np.int32)
        self.ones = np.zeros(0, dtype=dtype)

    def add_block(self, xb: np.ndarray, wb: np.ndarray | None) -> None:
        """Add the statistics of the block ``xb`` (rows, D) with weights ``wb`` (rows,) or None."""
        n_rows, n_features = xb.shape
        n_components = self.shifts.shape[0]
        scratch = self.scratch
        # Contiguous (rows, D) operands: numpy runs an elementwise pass over a
        # strided (rows, 16) view as one short loop per row (measured 3-5x).
        y = scratch.get("y", (n_rows, n_features), self.dtype)
        np.subtract(xb, self.c0, out=y)
        # int32: the sparse matrix's own index type (no conversion inside scipy).
        label = self.source.labels(y, self.state, scratch).astype(np.int32)
        # mode="clip": labels are in range, and numpy buffers ``out`` for "raise" (4x slower).
        y -= np.take(self.shifts, label, axis=0, out=scratch.get("c", y.shape, self.dtype), mode="clip")
        if self.indptr.shape[0] < n_rows + 1:
            self.indptr = np.arange(n_rows + 1, dtype=np.int32)
            self.ones = np.ones(n_rows, dtype=self.dtype)
        if wb is None:
            w = self.ones[:n_rows]
            self.moments[:, 0] += np.bincount(label, minlength=n_components)
        else:
            w = wb.astype(self.dtype)
            self.moments[:, 0] += np.bincount(label, wb, minlength=n_components)
        one_hot = scipy.sparse.csc_array((w, label, self.indptr[: n_rows + 1]), shape=(n_components, n_rows))
        self.moments[:, 1 : 1 + n_features] += one_hot @ y
        if self.kind == "diag":
            self.moments[:, 1 + n_features :] += one_hot @ np.square(y, out=scratch.get("y2", y.shape, self.dtype))
        elif self.kind == "spherical":
            self.moments[:, 1 + n_features] += one_hot @ np.einsum("ij,ij->i", y, y)
        if self.kind == "full":
            self._full(y, label, wb)
        elif self.kind == "tied":
            y64 = scratch.get("y64", (n_rows, n_features), np.dtype(np.float64))
            y64[...] = y
            if wb is not None:
                y64 *= np.sqrt(wb.astype(np.float64))[:, None]
            self.sum_xx += y64.T @ y64

    def _full(self, y: np.ndarray, label: np.ndarray, wb: np.ndarray | None) -> None:
        n_rows, n_features = y.shape
        order = np.argsort(label.astype(self.label_dtype), kind="stable")  # a radix sort
        counts = np.bincount(label, minlength=self.shifts.shape[0])
        ys = self.scratch.get("y64", (n_rows, n_features), np.dtype(np.float64))
        ys[...] = np.take(y, order, axis=0, out=self.scratch.get("c", y.shape, self.dtype), mode="clip")
        if wb is not None:
            ys *= np.sqrt(wb[order].astype(np.float64))[:, None]
        stop = np.cumsum(counts)
        for k in np.flatnonzero(counts):
            yk = ys[stop[k] - counts[k] : stop[k]]
            self.sum_xx[k] += yk.T @ yk

    def result(self, weight: float, n_rows: int) -> SuffStats:
        """The chunk's ``SuffStats``; ``weight`` is its sum of sample weights."""
        n_features = self.shifts.shape[1]
        nk = self.moments[:, 0].copy()
        sum_x = self.moments[:, 1 : 1 + n_features].copy()
        if self.kind == "diag":
            sum_xx = self.moments[:, 1 + n_features :].copy()
            sq = sum_xx.sum()
        elif self.kind == "spherical":
            sum_xx = self.moments[:, 1 + n_features].copy()
            sq = sum_xx.sum()
        elif self.kind == "full":
            sum_xx = self.sum_xx
            sq = np.trace(sum_xx, axis1=1, axis2=2).sum()
        else:
            sum_xx = self.sum_xx
            sq = np.trace(sum_xx)
        return SuffStats(nk, sum_x, sum_xx, -float(sq), weight, n_rows)


def estimate_log_prob_resp(
    x: np.ndarray, params: GMMParams, *, block_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``log p(x)`` (n_rows,) and ``log_resp`` (n_rows, K) in x's dtype.

    The prediction kernel: blocks bound the temporaries as in ``chunk_stats``.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    source = EStep(params)
    state = source.start_chunk(x.dtype, 0)
    c0 = source.frame(x.dtype)[0].astype(x.dtype)
    model = params.model
    n_rows, n_features = x.shape
    if block_rows is None:
        block_rows = block_rows_for(params.n_components, n_features, x.dtype.itemsize)
    log_norm = np.empty(n_rows, dtype=x.dtype)
    log_resp = np.empty((n_rows, params.n_components), dtype=x.dtype)
    design = model.design_buffer(min(block_rows, n_rows), n_features, x.dtype)
    scratch = Scratch()
    for start in range(0, n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        a = design[: stop - start]
        np.subtract(x[start:stop], c0, out=a[:, 1 : 1 + n_features])
        model.fill_extra(a, n_features)
        # Log-densities float32 cannot resolve (``float64_log_densities``) in
        # float64, as the fit computed them.
        a64 = _design64(model, x[start:stop], c0, scratch) if isinstance(state, _SplitEStep) else None
        wlp = _weighted_log_prob(model, a, a64, state, scratch)
        log_prob_resp_into(wlp, log_norm[start:stop], log_resp[start:stop])
    return log_norm, log_resp


def log_prob_resp_into(wlp: np.ndarray, log_norm: np.ndarray, log_resp: np.ndarray) -> None:
    """``log p(x)`` (rows,) and log-responsibilities (rows, K) of a block's weighted
    log-probabilities ``wlp``, written into ``log_norm`` and ``log_resp`` (any family's
    prediction kernel). ``wlp`` is overwritten (normalised in place)."""
    # The E-step's log-sum-exp normalises wlp in place: keep wlp first.
    log_resp[...] = wlp
    _, norm = log_sum_exp_resp(wlp)
    log_norm[...] = norm
    log_resp -= norm[:, None]
