"""The mixture of multinomials (documents as bags of words): numerics only.

Component k has a weight pi_k and a word distribution b_k over the n_features
words of the vocabulary. For a document with counts c_iw

    log p(x_i, k) = log pi_k + sum_w c_iw log b_wk          (E-step)
    pi_k = N_k / n,  b_wk = (sum_i r_ik c_iw + alpha) / (sum_w' ... )   (M-step)

with ``N_k = sum_i w_i r_ik``. The smoothing is exactly scikit-learn's
``MultinomialNB`` ``feature_log_prob_`` (add ``alpha`` to every feature count,
normalise per component), so an M-step equals ``MultinomialNB`` fitted on the
rows repeated once per component with ``sample_weight`` = responsibilities.

Sparse all the way: the E-step is the sparse x dense product ``X_block @ log
B^T`` and the statistics are ``X_block^T @ R``, so a CSR chunk is never
densified and a task's memory is bounded by a block's non-zeros, K and V,
never by rows x V. Float32 input runs float32 products (``log B^T`` is cast
once per pass, in :func:`prepare`); every sum across blocks and chunks is
float64, and ``feature_log_prob`` is always float64 (rare words need it).

Statistics come in two forms merged by the same ``+``:

* :class:`MultinomialStats`, dense ``(n_features, n_components)`` feature
  counts: V x K float64 is 160 MB at V=200,000 and K=100;
* :class:`SparseMultinomialStats`, only the rows of the words a chunk contains
  (sorted feature indices and an ``(n_seen, K)`` block): what a chunk of a
  large vocabulary sends to the reduction.

Merging either form gives bit-identical sums (an entry missing on one side
adds an exact zero), so which form a partial travels in never changes a fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from dgmm.core.kernels import log_prob_resp_into
from dgmm.errors import InvalidDataError, InvalidDtypeError, ShapeMismatchError

__all__ = [
    "MStepResult",
    "MultinomialParams",
    "MultinomialStats",
    "Prepared",
    "SparseMultinomialStats",
    "StatsKind",
    "as_count_block",
    "chunk_stats",
    "estimate_log_prob_resp",
    "m_step",
    "merge_stats",
    "n_parameters",
    "prepare",
    "sample",
    "score_samples",
]

#: Which form ``chunk_stats`` returns: dense V x K, only the words seen, or
#: chosen per chunk (sparse when it saw at most ``SPARSE_FRACTION`` of the words).
StatsKind = Literal["dense", "sparse", "auto"]
#: Above this fraction of the vocabulary seen, the sparse form's index and the
#: cost of the union in ``+`` outweigh the zero rows it saves.
SPARSE_FRACTION = 0.5

# log(0) (a word never seen by a component with alpha = 0) is floored here so
# that an explicitly stored zero count times log b stays 0 instead of NaN, and
# a document holding such a word keeps a finite, hugely negative score under
# that component. 1e30 times any realistic document length fits in float32.
LOG_PROB_FLOOR = -1e30

# exp() below these underflows on the slow path (see dgmm.core.kernels); the
# clamp changes a responsibility by less than exp(floor) absolute.
_EXP_FLOOR = {8: -500.0, 4: -80.0}
# Bytes of a block's (rows x K) temporaries; as the Gaussian kernels.
DEFAULT_BLOCK_BYTES = 4 << 20
# Rows of a sparse chunk's block at most (see ``sparse_block_rows``): float32
# data sums this many rows in float32 inside a block (relative error of
# non-negative sums below ~1e-3 in the worst case, ~1e-5 typically).
SPARSE_BLOCK_MAX_ROWS = 16384


# -- parameters ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MultinomialParams:
    """Parameters of a mixture of multinomials.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
        Mixture weights pi_k, non-negative, summing to 1.
    feature_log_prob : ndarray of shape (n_components, n_features)
        log b_wk, float64; each row's probabilities sum to 1 (``-inf`` allowed
        for a word a component never emits).

    Examples
    --------
    >>> import numpy as np
    >>> p = MultinomialParams.from_probabilities([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]])
    >>> p.n_components, p.n_features
    (2, 2)
    """

    weights: np.ndarray
    feature_log_prob: np.ndarray

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=np.float64)
        log_prob = np.asarray(self.feature_log_prob, dtype=np.float64)
        if weights.ndim != 1 or log_prob.ndim != 2 or log_prob.shape[0] != weights.shape[0]:
            raise ShapeMismatchError(
                f"weights must have shape (n_components,) and feature_log_prob shape "
                f"(n_components, n_features); got {weights.shape} and {log_prob.shape}. "
                "Pass one weight and one row of log-probabilities per component."
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or abs(weights.sum() - 1.0) > 1e-6:
            raise InvalidDataError(
                f"weights must be finite, non-negative and sum to 1; got {weights.tolist()} "
                f"(sum {weights.sum()!r}). Normalise them: w / w.sum()."
            )
        if np.isnan(log_prob).any() or np.isposinf(log_prob).any():
            k, w = np.argwhere(np.isnan(log_prob) | np.isposinf(log_prob))[0]
            raise InvalidDataError(
                f"feature_log_prob[{k}, {w}] is {log_prob[k, w]!r}; expected log-probabilities "
                "(finite or -inf). Pass log(feature probabilities)."
            )
        _require_rows_sum_to_one(np.exp(log_prob), "exp(feature_log_prob)")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "feature_log_prob", log_prob)

    @classmethod
    def from_probabilities(cls, weights: np.ndarray, feature_prob: np.ndarray) -> MultinomialParams:
        """Parameters from probabilities ``feature_prob`` (K, V) whose rows sum to 1
        (a user's ``feature_prob_init``)."""
        prob = np.asarray(feature_prob, dtype=np.float64)
        if prob.ndim == 2 and (not np.all(np.isfinite(prob)) or np.any(prob < 0)):
            k, w = np.argwhere(~np.isfinite(prob) | (prob < 0))[0]
            raise InvalidDataError(
                f"feature_prob[{k}, {w}] is {prob[k, w]!r}; expected probabilities in "
                "[0, 1]. Pass non-negative rows that sum to 1."
            )
        if prob.ndim == 2:
            _require_rows_sum_to_one(prob, "feature_prob")
        with np.errstate(divide="ignore"):
            return cls(weights, np.log(prob) if prob.ndim == 2 else prob)

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.feature_log_prob.shape[1])


def _require_rows_sum_to_one(prob: np.ndarray, what: str) -> None:
    sums = prob.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise InvalidDataError(
            f"Rows of {what} must sum to 1 (one word distribution per component); "
            f"component(s) {bad[:10].tolist()} sum to {sums[bad[:10]].tolist()}. "
            "Normalise each row: p / p.sum(axis=1, keepdims=True)."
        )


def n_parameters(n_components: int, n_features: int) -> int:
    """Free parameters: (K - 1) weights and K (V - 1) word probabilities (for BIC/AIC).

    >>> n_parameters(3, 10)
    29
    """
    return (n_components - 1) + n_components * (n_features - 1)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Per-pass constants shipped once to the workers.

    ``log_weights`` (K,) and ``log_prob_t`` = log B^T (V, K), C-ordered so a
    row of it (one word, all components) is contiguous for the sparse product,
    both in the data's dtype, floored at ``LOG_PROB_FLOOR``.
    """

    log_weights: np.ndarray
    log_prob_t: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.log_prob_t.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.log_prob_t.dtype


def prepare(params: MultinomialParams, dtype: np.dtype | type = np.float64) -> Prepared:
    """Cast log B^T and log pi once per pass to the data's dtype (float32 or float64)."""
    dtype = np.dtype(dtype)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    log_prob_t = np.ascontiguousarray(np.maximum(params.feature_log_prob, LOG_PROB_FLOOR).T, dtype=dtype)
    return Prepared(log_weights.astype(dtype), log_prob_t)


# -- input checks ------------------------------------------------------------------------


def _where(row: int, column: int, chunk_index: int | None) -> str:
    return f"row {row}, column {column}" + ("" if chunk_index is None else f" (chunk {chunk_index})")


def as_count_block(
    x: object, n_features: int | None = None, *, row_offset: int = 0, chunk_index: int | None = None
) -> sp.csr_matrix | np.ndarray:
    """``x`` as a float32/float64 CSR matrix (sparse input) or C-ordered array (dense),
    its counts checked: finite and non-negative.

    The check is the one read of the chunk's values the statistics make anyway
    (no extra pass over the data); a bad value is named by its global row and
    column. CSC is converted to CSR here, once.
    """
    if sp.issparse(x):
        block = x.tocsr() if x.format != "csr" else x
        if not isinstance(block, sp.csr_matrix):
            block = sp.csr_matrix(block)
        values = block.data
    else:
        block = np.asarray(x)
        values = block
    if values.dtype.kind not in "fiub":
        raise InvalidDtypeError(
            f"Counts must be real numbers; got dtype {values.dtype}. Convert the data "
            "to integer or floating counts."
        )
    if block.ndim != 2:
        raise InvalidDataError(
            f"Expected a 2-D matrix of counts (n_samples, n_features); got shape "
            f"{block.shape}. For a single document use X.reshape(1, -1)."
        )
    if n_features is not None and block.shape[1] != n_features:
        raise ShapeMismatchError(
            f"X has {block.shape[1]} features (words), but the model has {n_features}. "
            "Build X with the vocabulary the model was fitted with (the same "
            "CountVectorizer, the same gene list)."
        )
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
        block = sp.csr_matrix((values, block.indices, block.indptr), shape=block.shape) if sp.issparse(block) else values
    elif not sp.issparse(block):
        block = np.ascontiguousarray(block)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        if sp.issparse(block):
            p = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(block.indptr, p, side="right") - 1)
            col = int(block.indices[p])
            value = float(values[p])
        else:
            row, col = (int(i) for i in np.argwhere(bad)[0])
            value = float(values[row, col])
        # scikit-learn's words ("Negative values in data", "NaN", "inf") lead the message.
        what = (
            "Negative values in data: input contains a negative count" if np.isfinite(value)
            else "Input contains NaN:" if np.isnan(value) else "Input contains inf:"
        )
        raise InvalidDataError(
            f"{what} {value!r} at {_where(row_offset + row, col, chunk_index)}; "
            f"{int(bad.sum())} such value(s) in this chunk. A multinomial mixture needs finite, "
            "non-negative counts (non-negative reals such as tf weights are fine): drop or fix "
            "those rows."
        )
    return block


# -- E-step ------------------------------------------------------------------------------


def _log_sum_exp_resp(wlp: np.ndarray, zero_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise weighted log-probabilities (rows, K) in place; ``(resp, log_norm)``.

    ``zero_weight`` (K,) bool: components with pi_k = 0, whose responsibility
    is exactly 0 (the exp clamp would otherwise give them exp(floor)).
    """
    top = wlp.max(axis=1)
    dead = ~np.isfinite(top)
    if dead.any():
        top[dead] = 0.0
    wlp -= top[:, None]
    np.maximum(wlp, _EXP_FLOOR[wlp.dtype.itemsize], out=wlp)
    np.exp(wlp, out=wlp)
    if zero_weight.any():
        wlp[:, zero_weight] = 0.0
    total = wlp.sum(axis=1)
    log_norm = np.log(total) + top
    wlp /= total[:, None]
    return wlp, log_norm


def _weighted_log_prob(block: sp.csr_matrix | np.ndarray, prepared: Prepared) -> np.ndarray:
    """log pi_k + X_block . log B^T, (rows, K) in the data's dtype (a sparse x dense product)."""
    wlp = np.asarray(block @ prepared.log_prob_t)
    if wlp.dtype != prepared.dtype:
        wlp = wlp.astype(prepared.dtype)
    wlp += prepared.log_weights
    return wlp


def block_rows_for(n_components: int, itemsize: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Rows per block so the (rows x K) temporaries stay near ``block_bytes``."""
    return int(min(65536, max(256, block_bytes // max(3 * n_components * itemsize, 1))))


def sparse_block_rows(n_components: int, itemsize: int, n_seen: int) -> int:
    """Rows per block of a sparse chunk whose rows hold ``n_seen`` distinct words.

    Each block's ``X_block^T R`` is a dense (n_seen, K) product, zeroed and
    added to the accumulator whatever the block's non-zeros: at V=200,000 and
    K=100 that cost 40% of a chunk's time with blocks of 4 MB of (rows x K).
    The task holds the (n_seen, K) float64 accumulator anyway, so the blocks'
    (rows x K) temporaries may grow to its size without changing the order
    of the task's memory; at most ``SPARSE_BLOCK_MAX_ROWS`` rows, so the float32
    sums inside a block stay short.
    """
    default = block_rows_for(n_components, itemsize)
    by_accumulator = (n_seen * 8) // max(3 * itemsize, 1)
    return int(max(default, min(by_accumulator, SPARSE_BLOCK_MAX_ROWS)))


def _blocks(n_rows: int, block_rows: int) -> range:
    return range(0, n_rows, max(1, block_rows))


def estimate_log_prob_resp(
    x: object, params: MultinomialParams | Prepared, *, block_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log p(x_i) (n_rows,) float64 and log responsibilities (n_rows, K) float64.

    ``x`` (n_rows, n_features): CSR/CSC or dense counts. Blocks of rows bound
    the temporaries; a sparse ``x`` is never densified.
    """
    x = as_count_block(x, _n_features(params))
    prepared = params if isinstance(params, Prepared) else prepare(params, x.dtype)
    n_rows = x.shape[0]
    block_rows = block_rows or block_rows_for(prepared.n_components, x.dtype.itemsize)
    log_norm = np.empty(n_rows)
    log_resp = np.empty((n_rows, prepared.n_components))
    for start in _blocks(n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        wlp = _weighted_log_prob(x[start:stop], prepared)
        log_prob_resp_into(wlp, log_norm[start:stop], log_resp[start:stop])
    return log_norm, log_resp


def score_samples(x: object, params: MultinomialParams | Prepared, *, block_rows: int | None = None) -> np.ndarray:
    """log sum_k pi_k prod_w b_wk^{c_iw} per row, shape (n_rows,), float64.

    This is the log-probability of the document's word *sequence*: it has no
    multinomial coefficient log(L! / prod_w c_iw!), which does not depend on
    the parameters (and is undefined for real-valued counts). Add
    ``scipy.special.gammaln`` terms yourself for the probability of the counts.

    >>> import numpy as np
    >>> p = MultinomialParams.from_probabilities([1.0], [[0.5, 0.5]])
    >>> round(float(np.exp(score_samples(np.array([[2, 1]]), p))[0]), 12)  # 0.5 ** 3
    0.125
    """
    return estimate_log_prob_resp(x, params, block_rows=block_rows)[0]


def _n_features(params: MultinomialParams | Prepared) -> int:
    return params.n_features


# -- statistics --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MultinomialStats:
    """Partial statistics of a set of rows, dense form. Merging is ``+``.

    * ``nk[k] = sum_i w_i r_ik``                         (n_components,) float64
    * ``feature_counts[w, k] = sum_i w_i r_ik c_iw``     (n_features, n_components) float64: X^T R
    * ``loglik = sum_i w_i log p(x_i)``, ``weight = sum_i w_i``, ``n_rows``.
    """

    nk: np.ndarray
    feature_counts: np.ndarray
    loglik: float
    weight: float
    n_rows: int

    @classmethod
    def zeros(cls, n_components: int, n_features: int) -> MultinomialStats:
        return cls(np.zeros(n_components), np.zeros((n_features, n_components)), 0.0, 0.0, 0)

    @property
    def n_features(self) -> int:
        return int(self.feature_counts.shape[0])

    @property
    def mean_loglik(self) -> float:
        """Mean log-likelihood per (weighted) document."""
        return self.loglik / self.weight if self.weight > 0 else -np.inf

    @property
    def nbytes(self) -> int:
        return int(self.nk.nbytes + self.feature_counts.nbytes)

    def to_dense(self) -> MultinomialStats:
        return self

    @staticmethod
    def merge_many(parts: list[MultinomialStats | SparseMultinomialStats]) -> MultinomialStats | SparseMultinomialStats:
        """``parts[0] + parts[1] + ...`` in one buffer (:func:`merge_stats`)."""
        return merge_stats(parts)

    def __add__(self, other: MultinomialStats | SparseMultinomialStats) -> MultinomialStats:
        if isinstance(other, SparseMultinomialStats):
            return other + self
        if not isinstance(other, MultinomialStats):
            return NotImplemented
        return MultinomialStats(
            self.nk + other.nk,
            self.feature_counts + other.feature_counts,
            self.loglik + other.loglik,
            self.weight + other.weight,
            self.n_rows + other.n_rows,
        )


@dataclass(frozen=True, eq=False)
class SparseMultinomialStats:
    """Partial statistics holding only the rows of the words the rows contain.

    ``features`` (n_seen,) sorted unique int64 word indices; ``counts``
    (n_seen, n_components) float64 = the rows ``features`` of X^T R; the other
    fields as :class:`MultinomialStats`. ``+`` takes the union of the words
    (and returns the dense form when the union passes ``SPARSE_FRACTION`` of
    the vocabulary, or when the other side is dense); every entry is the same
    float64 sum the dense form computes.
    """

    nk: np.ndarray
    features: np.ndarray
    counts: np.ndarray
    n_features: int
    loglik: float
    weight: float
    n_rows: int

    @property
    def mean_loglik(self) -> float:
        return self.loglik / self.weight if self.weight > 0 else -np.inf

    @property
    def nbytes(self) -> int:
        return int(self.nk.nbytes + self.features.nbytes + self.counts.nbytes)

    @staticmethod
    def merge_many(parts: list[MultinomialStats | SparseMultinomialStats]) -> MultinomialStats | SparseMultinomialStats:
        """``parts[0] + parts[1] + ...`` in one buffer (:func:`merge_stats`)."""
        return merge_stats(parts)

    def to_dense(self) -> MultinomialStats:
        feature_counts = np.zeros((self.n_features, self.nk.shape[0]))
        feature_counts[self.features] = self.counts
        return MultinomialStats(self.nk, feature_counts, self.loglik, self.weight, self.n_rows)

    def __add__(self, other: MultinomialStats | SparseMultinomialStats) -> MultinomialStats | SparseMultinomialStats:
        if isinstance(other, MultinomialStats):
            if other.n_features != self.n_features:
                return NotImplemented
            feature_counts = other.feature_counts.copy()
            # features are unique, so the fancy-indexed += adds each row once.
            feature_counts[self.features] += self.counts
            return MultinomialStats(
                self.nk + other.nk, feature_counts, self.loglik + other.loglik,
                self.weight + other.weight, self.n_rows + other.n_rows,
            )
        if not isinstance(other, SparseMultinomialStats) or other.n_features != self.n_features:
            return NotImplemented
        features = np.union1d(self.features, other.features)
        if features.size > SPARSE_FRACTION * self.n_features:
            feature_counts = np.zeros((self.n_features, self.nk.shape[0]))
            feature_counts[self.features] = self.counts
            feature_counts[other.features] += other.counts
            return MultinomialStats(
                self.nk + other.nk, feature_counts, self.loglik + other.loglik,
                self.weight + other.weight, self.n_rows + other.n_rows,
            )
        counts = np.zeros((features.size, self.nk.shape[0]))
        counts[np.searchsorted(features, self.features)] = self.counts
        counts[np.searchsorted(features, other.features)] += other.counts
        return SparseMultinomialStats(
            self.nk + other.nk, features, counts, self.n_features, self.loglik + other.loglik,
            self.weight + other.weight, self.n_rows + other.n_rows,
        )


def merge_stats(
    parts: list[MultinomialStats | SparseMultinomialStats],
) -> MultinomialStats | SparseMultinomialStats:
    """Sum statistics left to right in one buffer: the bits and the form of ``p0 + p1 + ...``.

    The pairwise ``+`` copies a V x K buffer for every part once the union of
    the words passes ``SPARSE_FRACTION`` (160 MB at V=200,000, K=100); here
    each part is added in place into one accumulator, in the same order, so
    every entry is the same float64 sum (a word missing from a part adds
    nothing, as the pairwise sum adds an exact zero). The result is sparse
    when every part is and their union stays within ``SPARSE_FRACTION``, as
    the pairwise sum's.
    """
    first = parts[0]
    kinds = (MultinomialStats, SparseMultinomialStats)
    if len(parts) == 1 or not all(isinstance(p, kinds) and p.n_features == first.n_features for p in parts):
        total = first
        for p in parts[1:]:
            total = total + p
        return total
    n_features, n_components = first.n_features, first.nk.shape[0]
    nk = np.zeros(n_components)
    loglik, weight, n_rows = 0.0, 0.0, 0
    for p in parts:
        nk += p.nk
        loglik += p.loglik
        weight += p.weight
        n_rows += p.n_rows
    if all(isinstance(p, SparseMultinomialStats) for p in parts):
        # The union by a mask over the vocabulary: O(V + words) where repeated
        # union1d sorted ~10^5 indices per part (a third of a merge's time).
        seen = np.zeros(n_features, dtype=bool)
        for p in parts:
            seen[p.features] = True
        features = np.flatnonzero(seen)
        if features.size <= SPARSE_FRACTION * n_features:
            counts = np.zeros((features.size, n_components))
            for p in parts:
                counts[np.searchsorted(features, p.features)] += p.counts
            return SparseMultinomialStats(nk, features, counts, n_features, loglik, weight, n_rows)
    feature_counts = np.zeros((n_features, n_components))
    for p in parts:
        if isinstance(p, SparseMultinomialStats):
            # features are unique, so the fancy-indexed += adds each row once.
            feature_counts[p.features] += p.counts
        else:
            feature_counts += p.feature_counts
    return MultinomialStats(nk, feature_counts, loglik, weight, n_rows)


def chunk_stats(
    x: object,
    prepared: Prepared,
    sample_weight: np.ndarray | None = None,
    *,
    kind: StatsKind = "auto",
    block_rows: int | None = None,
    row_offset: int = 0,
    chunk_index: int | None = None,
) -> MultinomialStats | SparseMultinomialStats:
    """Statistics of one row chunk: E-step by blocks of rows, then X^T R and sum r.

    Parameters
    ----------
    x : CSR/CSC matrix or ndarray of shape (n_rows, n_features)
        Counts; float32 runs float32 products. Checked here (finite,
        non-negative) as it is read; errors name ``row_offset + row``.
    prepared : Prepared
        From :func:`prepare` with the data's dtype.
    sample_weight : ndarray of shape (n_rows,), optional
    kind : {"auto", "dense", "sparse"}
        "auto" is sparse when the chunk holds at most ``SPARSE_FRACTION`` of
        the vocabulary (a chunk of documents over a large vocabulary), else dense.

    Returns
    -------
    MultinomialStats or SparseMultinomialStats

    Notes
    -----
    A sparse chunk is never densified. Per block the temporaries are a few
    (rows, K) arrays and the block's X^T R over the chunk's words (in the
    data's dtype); the accumulator holds the chunk's words x K in float64
    (at most V x K); the chunk's indices are copied once, re-indexed.
    """
    x = as_count_block(x, prepared.n_features, row_offset=row_offset, chunk_index=chunk_index)
    if x.dtype != prepared.dtype:
        prepared = Prepared(prepared.log_weights.astype(x.dtype), prepared.log_prob_t.astype(x.dtype))
    n_rows, n_features = x.shape
    n_components = prepared.n_components
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(sample_weight) | (sample_weight < 0)
        if sample_weight.shape[0] != n_rows or bad.any():
            row = int(np.flatnonzero(bad)[0]) if bad.any() else None
            raise InvalidDataError(
                f"sample_weight must hold one finite, non-negative weight per row ({n_rows}); got "
                + (f"shape {sample_weight.shape}" if row is None else f"{sample_weight[row]!r} at row {row_offset + row}")
                + ". Give dropped rows weight 0."
            )
    is_sparse = sp.issparse(x)
    zero_weight = np.isneginf(prepared.log_weights)

    if is_sparse:
        # The chunk's words, found once (O(nnz + V)), and the chunk re-indexed
        # to them once: the accumulator and every block's X^T R hold only those
        # rows, added contiguously (a per-block scatter into the accumulator
        # cost as much as the products themselves at V=200,000, K=100).
        seen = np.flatnonzero(np.bincount(x.indices, minlength=n_features))
        position = np.empty(n_features, dtype=x.indices.dtype)
        position[seen] = np.arange(seen.size, dtype=position.dtype)
        compact = sp.csr_matrix((x.data, position[x.indices], x.indptr), shape=(n_rows, seen.size))
        acc = np.zeros((seen.size, n_components))
        block_rows = block_rows or sparse_block_rows(n_components, x.dtype.itemsize, seen.size)
    else:
        acc = np.zeros((n_features, n_components))
        block_rows = block_rows or block_rows_for(n_components, x.dtype.itemsize)
    nk = np.zeros(n_components)
    loglik = 0.0

    for start in _blocks(n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        xb = x[start:stop]
        wlp = _weighted_log_prob(xb, prepared)
        resp, log_norm = _log_sum_exp_resp(wlp, zero_weight)
        if sample_weight is None:
            loglik += float(np.sum(log_norm, dtype=np.float64))
        else:
            wb = sample_weight[start:stop]
            loglik += float(np.dot(wb, log_norm.astype(np.float64)))
            resp *= wb.astype(resp.dtype)[:, None]
        nk += resp.sum(axis=0, dtype=np.float64)
        if is_sparse:
            if xb.nnz:
                acc += compact[start:stop].T @ resp
        else:
            acc += (xb.T @ resp).astype(np.float64)

    weight = float(n_rows) if sample_weight is None else float(np.sum(sample_weight))
    if not is_sparse:
        dense = MultinomialStats(nk, acc, loglik, weight, n_rows)
        if kind == "sparse":
            seen = np.flatnonzero(np.any(acc != 0, axis=1))
            return SparseMultinomialStats(nk, seen, acc[seen], n_features, loglik, weight, n_rows)
        return dense
    if kind == "sparse" or (kind == "auto" and seen.size <= SPARSE_FRACTION * n_features):
        return SparseMultinomialStats(nk, seen.astype(np.int64), acc, n_features, loglik, weight, n_rows)
    feature_counts = np.zeros((n_features, n_components))
    feature_counts[seen] = acc
    return MultinomialStats(nk, feature_counts, loglik, weight, n_rows)


# -- M-step ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MStepResult:
    """New parameters, and the components whose weight collapsed (below one
    average row's weight), by index, for the loop's re-seed policy."""

    params: MultinomialParams
    collapsed: tuple[int, ...]


def m_step(stats: MultinomialStats | SparseMultinomialStats, alpha: float = 1.0) -> MStepResult:
    """pi_k = N_k / sum N, log b_k as scikit-learn's ``MultinomialNB.feature_log_prob_``.

    ``log b_wk = log(F_wk + alpha) - log(sum_w (F_wk + alpha))`` with F the
    feature counts; ``alpha`` >= 0 (0 gives -inf for unseen words).

    >>> import numpy as np
    >>> s = MultinomialStats(np.array([2.0]), np.array([[3.0], [1.0]]), 0.0, 2.0, 2)
    >>> np.exp(m_step(s, alpha=1.0).params.feature_log_prob).round(3).tolist()
    [[0.667, 0.333]]
    """
    if not np.isfinite(alpha) or alpha < 0:
        raise InvalidDataError(f"alpha must be a finite number >= 0; got {alpha!r}. Use e.g. alpha=1.0.")
    dense = stats.to_dense()
    nk = dense.nk
    total = nk.sum()
    if not total > 0:
        raise InvalidDataError(
            f"The statistics hold no weight (sum of responsibilities {total!r} over "
            f"{dense.n_rows} rows); expected rows with positive sample weight. Fit on data "
            "with at least one row of positive weight."
        )
    smoothed = dense.feature_counts.T + alpha  # (K, V)
    with np.errstate(divide="ignore"):
        feature_log_prob = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        if not np.all(np.isfinite(feature_log_prob).any(axis=1)):
            # A component with no counts and alpha = 0: uniform, it is collapsed anyway.
            empty = ~np.isfinite(feature_log_prob).any(axis=1)
            feature_log_prob[empty] = -np.log(dense.n_features)
    floor = dense.weight / max(dense.n_rows, 1)
    collapsed = tuple(int(k) for k in np.flatnonzero(nk < floor))
    return MStepResult(MultinomialParams(nk / total, feature_log_prob), collapsed)


# -- sampling ----------------------------------------------------------------------------


def sample(
    params: MultinomialParams,
    n_samples: int,
    doc_length: int | np.ndarray,
    rng: np.random.Generator,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Draw documents: ``(X (n_samples, n_features) CSR float64 counts, labels (n_samples,))``.

    ``doc_length`` is every document's number of words, or one per document.
    Words are drawn as tokens per component (memory O(tokens + V)), never as a
    dense (n_samples, V) matrix.
    """
    lengths = np.broadcast_to(np.asarray(doc_length, dtype=np.int64), (n_samples,))
    if np.any(lengths < 0):
        raise InvalidDataError(f"doc_length must be >= 0; got {int(lengths.min())}.")
    labels = rng.choice(params.n_components, size=n_samples, p=params.weights)
    rows_parts, cols_parts = [], []
    for k in range(params.n_components):
        docs = np.flatnonzero(labels == k)
        n_tokens = int(lengths[docs].sum())
        if n_tokens == 0:
            continue
        cdf = np.cumsum(np.exp(params.feature_log_prob[k]))
        words = np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], size=n_tokens), side="right")
        rows_parts.append(np.repeat(docs, lengths[docs]))
        cols_parts.append(np.minimum(words, params.n_features - 1))
    rows = np.concatenate(rows_parts) if rows_parts else np.zeros(0, dtype=np.int64)
    cols = np.concatenate(cols_parts) if cols_parts else np.zeros(0, dtype=np.int64)
    x = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n_samples, params.n_features)).tocsr()
    x.sum_duplicates()
    return x, labels
