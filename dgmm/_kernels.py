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
from typing import Protocol

import numpy as np

from .covariance import get_covariance_model
from .errors import InvalidDataError
from .params import GMMParams
from .suffstats import SuffStats

__all__ = [
    "EStep",
    "HardAssign",
    "RandomResp",
    "block_rows_for",
    "chunk_stats",
    "estimate_log_prob_resp",
    "kernel_frame",
]

# Bytes of the block's largest temporaries (a few (rows x K) arrays).
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


class Responsibilities(Protocol):
    """A source of responsibilities for ``chunk_stats``."""

    covariance_type: str
    n_components: int

    def frame(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]: ...

    def start_chunk(self, dtype: np.dtype, chunk_index: int) -> object: ...

    def block(self, xc: np.ndarray, state: object) -> tuple[np.ndarray, np.ndarray]:
        """``(resp (rows, K) in xc's dtype, per-row score (rows,))``."""
        ...


def _log_sum_exp_resp(wlp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise weighted log-probabilities in place into responsibilities.

    Returns ``(resp, log_norm)``; ``resp`` is ``wlp``'s buffer. One ``exp``
    per entry: exp(wlp - max) / sum equals exp(wlp - logsumexp) to rounding.
    """
    top = wlp.max(axis=1)
    # A row where every component has -inf (zero weights) would give nan.
    top[~np.isfinite(top)] = 0.0
    wlp -= top[:, None]
    np.exp(wlp, out=wlp)
    total = wlp.sum(axis=1)
    wlp /= total[:, None]
    with np.errstate(divide="ignore"):
        log_norm = np.log(total)
    log_norm += top
    return wlp, log_norm


@dataclass(frozen=True)
class _PreparedEStep:
    means_c: np.ndarray
    precisions_cholesky: np.ndarray
    log_weights: np.ndarray


@dataclass(frozen=True)
class EStep:
    """Responsibilities of a mixture: the E-step. Score = log p(x)."""

    params: GMMParams

    @property
    def covariance_type(self) -> str:
        return self.params.covariance_type

    @property
    def n_components(self) -> int:
        return self.params.n_components

    def frame(self, dtype):
        return kernel_frame(self.params, dtype)

    def start_chunk(self, dtype, chunk_index):
        c0, shifts_c = self.frame(dtype)
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.params.weights)
        return _PreparedEStep(
            (self.params.means - c0).astype(dtype),
            self.params.precisions_cholesky.astype(dtype),
            log_weights.astype(dtype),
        )

    def block(self, xc, state):
        wlp = self.params.model.log_prob(xc, state.means_c, state.precisions_cholesky)
        wlp += state.log_weights
        return _log_sum_exp_resp(wlp)


@dataclass(frozen=True)
class HardAssign:
    """One-hot responsibilities to the nearest centre. Score = -squared distance."""

    centers: np.ndarray
    covariance_type: str

    @property
    def n_components(self) -> int:
        return self.centers.shape[0]

    def frame(self, dtype):
        return kernel_frame(self.centers, dtype)

    def start_chunk(self, dtype, chunk_index):
        c0, shifts_c = self.frame(dtype)
        centers_c = shifts_c.astype(dtype)
        return centers_c, np.einsum("kd,kd->k", centers_c, centers_c)

    def block(self, xc, state):
        centers_c, sq_norms = state
        dist = xc @ (-2.0 * centers_c.T)
        dist += sq_norms
        label = np.argmin(dist, axis=1)
        rows = np.arange(xc.shape[0])
        best = dist[rows, label] + np.einsum("ij,ij->i", xc, xc)
        resp = np.zeros_like(dist)
        resp[rows, label] = 1.0
        return resp, -np.maximum(best, 0.0)


@dataclass(frozen=True)
class RandomResp:
    """Uniform random responsibilities normalised per row (init "random").

    Draws come from a generator seeded by ``(seed, chunk index)`` so they do
    not depend on which worker runs the chunk. Score = 0.
    """

    n_components: int
    covariance_type: str
    seed: int
    center: np.ndarray = field(repr=False)

    def frame(self, dtype):
        c0 = self.center.astype(dtype).astype(np.float64)
        return c0, np.zeros((self.n_components, c0.shape[0]))

    def start_chunk(self, dtype, chunk_index):
        return np.random.default_rng([self.seed, chunk_index])

    def block(self, xc, rng):
        resp = rng.uniform(size=(xc.shape[0], self.n_components)).astype(xc.dtype)
        resp /= resp.sum(axis=1, keepdims=True)
        return resp, np.zeros(xc.shape[0], dtype=xc.dtype)


def _check_finite(block: np.ndarray, chunk_index: int, row_offset: int) -> None:
    finite = np.isfinite(block)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    value = block[row, col]
    n_bad = int(block.size - np.count_nonzero(finite))
    raise InvalidDataError(
        f"Input contains {value!r} at row {row_offset + int(row)} "
        f"(chunk {chunk_index}, column {int(col)}); {n_bad} non-finite value(s) in "
        "this block. Gaussian mixtures need finite data: drop or impute NaN/Inf "
        "rows before fitting (e.g. X[da.isfinite(X).all(axis=1)] with Dask)."
    )


def chunk_stats(
    x: np.ndarray,
    sources: tuple[Responsibilities, ...],
    sample_weight: np.ndarray | None = None,
    *,
    block_rows: int | None = None,
    chunk_index: int = 0,
    row_offset: int = 0,
    check_finite: bool = False,
) -> tuple[SuffStats, ...]:
    """Statistics of one row chunk, one ``SuffStats`` per responsibility source.

    ``x`` (n_rows, n_features) float32 or float64; ``sample_weight`` (n_rows,)
    or None. Every source (the lockstep restarts of ``n_init``) shares the one
    read of the chunk.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    dtype = x.dtype
    n_rows, n_features = x.shape
    if block_rows is None:
        k_max = max(s.n_components for s in sources)
        block_rows = block_rows_for(k_max, n_features, dtype.itemsize)

    acc = []
    for source in sources:
        n_components = source.n_components
        model = get_covariance_model(source.covariance_type)
        c0, shifts_c = source.frame(dtype)
        acc.append(
            dict(
                model=model,
                c0=c0.astype(dtype),
                shifts_c=shifts_c,
                state=source.start_chunk(dtype, chunk_index),
                nk=np.zeros(n_components),
                sum_rxc=np.zeros((n_components, n_features)),
                sum_xx=model.zero_sum_xx(n_components, n_features),
                loglik=0.0,
            )
        )

    for start in range(0, n_rows, block_rows):
        xb = x[start : start + block_rows]
        if check_finite:
            _check_finite(xb, chunk_index, row_offset + start)
        wb = None if sample_weight is None else sample_weight[start : start + block_rows]
        for source, a in zip(sources, acc):
            xc = xb - a["c0"]
            resp, score = source.block(xc, a["state"])
            if wb is None:
                a["loglik"] += float(np.sum(score, dtype=np.float64))
            else:
                a["loglik"] += float(np.dot(wb.astype(np.float64), score.astype(np.float64)))
                resp *= wb.astype(dtype)[:, None]
            nk = resp.sum(axis=0, dtype=np.float64)
            sum_rxc = (resp.T @ xc).astype(np.float64)
            a["sum_xx"] += a["model"].block_sum_xx(xc, resp, a["shifts_c"], nk, sum_rxc)
            a["nk"] += nk
            a["sum_rxc"] += sum_rxc

    weight = float(n_rows) if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))
    return tuple(
        SuffStats(
            a["nk"],
            a["sum_rxc"] - a["nk"][:, None] * a["shifts_c"],
            a["sum_xx"],
            a["loglik"],
            weight,
            n_rows,
        )
        for a in acc
    )


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
    n_rows = x.shape[0]
    if block_rows is None:
        block_rows = block_rows_for(params.n_components, params.n_features, x.dtype.itemsize)
    log_norm = np.empty(n_rows, dtype=x.dtype)
    log_resp = np.empty((n_rows, params.n_components), dtype=x.dtype)
    for start in range(0, n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        wlp = params.model.log_prob(x[start:stop] - c0, state.means_c, state.precisions_cholesky)
        wlp += state.log_weights
        # Here log-resp itself is wanted: subtract the log-sum-exp, no exp needed.
        top = wlp.max(axis=1)
        top[~np.isfinite(top)] = 0.0
        with np.errstate(divide="ignore"):
            norm = np.log(np.exp(wlp - top[:, None]).sum(axis=1)) + top
        log_norm[start:stop] = norm
        log_resp[start:stop] = wlp - norm[:, None]
    return log_norm, log_resp
