"""Seeding a mixture of multinomials in the Hellinger embedding (numpy + scipy).

A document's counts ``c`` become the unit vector ``phi = sqrt(c / sum(c))``
(an empty document: the zero vector, which k-means never sees); the
Euclidean distance between two such vectors is twice the squared Hellinger
distance of the word distributions. Per-chunk kernels of the two passes of
the "kmeans" initialisation: the sample pass (a uniform row sample of the
counts, kept sparse, capped in rows and in non-zeros; :mod:`dgmm.core.seeding`
draws it) and the hard assignment that turns the centres into statistics.
Samples are sparse rows (CSR), never a dense (rows x V) matrix; distances are
computed by blocks of rows so a task holds at most a (block x centres) array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dgmm.core import multinomial as mn
from dgmm.core import seeding
from dgmm.core.kernels import require_valid_weights

__all__ = [
    "CountSample",
    "HellingerAssign",
    "first_rows",
    "hellinger_rows",
    "merge_count_samples",
    "nearest",
    "sample_counts",
]

# Bytes of a block's (rows x candidates) distance array.
_BLOCK_BYTES = 8 << 20


def hellinger_rows(x: sp.csr_matrix | np.ndarray) -> sp.csr_matrix:
    """``sqrt(c / sum(c))`` per row as CSR float64 (empty rows stay empty).

    >>> hellinger_rows(np.array([[1.0, 3.0], [0.0, 0.0]])).toarray().round(3).tolist()
    [[0.5, 0.866], [0.0, 0.0]]
    """
    csr = sp.csr_matrix(x, dtype=np.float64, copy=True)
    totals = np.asarray(csr.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    with np.errstate(divide="ignore", invalid="ignore"):
        csr.data = np.sqrt(csr.data / totals[rows])
    csr.eliminate_zeros()
    return csr


def _sq_dist(phi: sp.csr_matrix, centers: sp.csr_matrix | np.ndarray) -> np.ndarray:
    """Squared distances (rows, n_centers), by blocks of rows; clipped at 0."""
    n_centers = centers.shape[0]
    center_sq = np.asarray(centers.multiply(centers).sum(axis=1)).ravel() if sp.issparse(centers) else (centers**2).sum(axis=1)
    row_sq = np.asarray(phi.multiply(phi).sum(axis=1)).ravel()
    centers_t = centers.T.tocsr() if sp.issparse(centers) else np.ascontiguousarray(centers.T)
    out = np.empty((phi.shape[0], n_centers))
    step = max(1, _BLOCK_BYTES // (8 * max(n_centers, 1)))
    for start in range(0, phi.shape[0], step):
        dots = phi[start : start + step] @ centers_t
        dots = dots.toarray() if sp.issparse(dots) else np.asarray(dots)
        out[start : start + step] = row_sq[start : start + step, None] + center_sq[None, :] - 2.0 * dots
    return np.maximum(out, 0.0)


def nearest(phi: sp.csr_matrix, centers: sp.csr_matrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(min squared distance, index of the nearest centre)`` per row; empty rows have distance 0."""
    dist = _sq_dist(phi, centers)
    label = dist.argmin(axis=1)
    best = dist[np.arange(dist.shape[0]), label]
    best[np.diff(phi.indptr) == 0] = 0.0
    return best, label


@dataclass(frozen=True, eq=False)
class CountSample:
    """A row sample of counts (CSR ``sample.points``) and whether a limit cut it.

    ``truncated`` is True when :func:`first_rows` dropped a row anywhere in
    the reduction tree: the sample then holds as many rows as its limits
    allow, and a sample short of the wanted size is not a threshold drawn too low.
    """

    sample: seeding.RowSample
    truncated: bool


def first_rows(sample: seeding.RowSample, size: int, max_nnz: int, min_rows: int) -> tuple[seeding.RowSample, bool]:
    """The rows of ``sample`` first in key order (ties by row) within the limits, in row order;
    and whether any row was dropped.

    A row is kept when fewer than ``size`` rows precede it and either fewer
    than ``min_rows`` precede it or the non-zeros of it and those before it
    add up to at most ``max_nnz``. A row kept from the whole data is kept
    from any part of it (its rank and its running total are no larger
    there), so cutting each chunk's and each merge's sample gives the cut of
    the whole: the same rows on any chunking and any reduction tree, and no
    task ever holds more than about ``max_nnz`` sampled non-zeros. The rows
    are a prefix of a uniformly random order, hence (up to whether the last
    row fits) a uniform sample.
    """
    n = sample.rows.shape[0]
    order = np.lexsort((sample.rows, sample.keys))[:size]
    nnz = np.diff(sample.points.indptr)[order]
    keep = (np.arange(order.size) < min_rows) | (np.cumsum(nnz) <= max_nnz)
    # cumsum is non-decreasing: ``keep`` is a prefix of ``order``.
    n_keep = int(np.count_nonzero(keep))
    if n_keep == n:
        return sample, False
    take = np.sort(order[:n_keep])
    weights = None if sample.weights is None else sample.weights[take]
    return seeding.RowSample(sample.rows[take], sample.keys[take], sample.points[take], weights), True


def sample_counts(
    x: Any,
    shared: tuple[int, int, int, int, int],
    sample_weight: np.ndarray | None,
    *,
    chunk_index: int,
    row_offset: int,
) -> CountSample:
    """The chunk's sampled rows (``shared = (key, threshold, size, max_nnz, min_rows)``), as CSR.

    The first pass of a fit: the counts (negative, NaN, Inf) and the sample
    weights of the whole chunk are checked here, naming the global row. The
    sample is the rows whose key is under the threshold
    (:func:`dgmm.core.seeding.sample_chunk`), cut by :func:`first_rows`.
    Dense chunks give the same CSR sample as their sparse form.
    """
    key, threshold, size, max_nnz, min_rows = shared
    require_valid_weights(sample_weight, row_offset=row_offset, chunk_index=chunk_index)
    block = mn.as_count_block(x, row_offset=row_offset, chunk_index=chunk_index)
    (sample,) = seeding.sample_chunk(
        block, ((key, threshold),), sample_weight, chunk_index=chunk_index, row_offset=row_offset
    )
    # Row indexing copied the rows (dense or CSR), so the chunk itself is never modified below.
    points = sp.csr_matrix(sample.points)
    # Stored zeros are no words: the dense and sparse forms of a chunk count the same non-zeros.
    points.eliminate_zeros()
    points.sort_indices()
    sample = seeding.RowSample(sample.rows, sample.keys, points, sample.weights)
    return CountSample(*first_rows(sample, size, max_nnz, min_rows))


def merge_count_samples(parts: list[CountSample], size: int, max_nnz: int, min_rows: int) -> CountSample:
    """Concatenate the samples of consecutive chunk ranges and cut them to the limits again."""
    (merged,) = seeding.concat_samples([[p.sample] for p in parts])
    sample, cut = first_rows(merged, size, max_nnz, min_rows)
    return CountSample(sample, cut or any(p.truncated for p in parts))


@dataclass(frozen=True, eq=False)
class HellingerAssign:
    """A responsibility source of the ``"multinomial"`` family: each row wholly to its nearest
    centre (``centers`` (K, V) in the Hellinger embedding); the statistics give the start."""

    centers: np.ndarray
    family: ClassVar[str] = "multinomial"

    @property
    def n_components(self) -> int:
        return int(self.centers.shape[0])

    def stats(self, x: sp.csr_matrix | np.ndarray, sample_weight: np.ndarray | None) -> mn.MultinomialStats:
        """nk and X^T R for one-hot R of the nearest centres; ``loglik`` 0 (no model yet)."""
        _, label = nearest(hellinger_rows(x), self.centers)
        w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        resp = sp.csr_matrix((w, (np.arange(x.shape[0]), label)), shape=(x.shape[0], self.n_components))
        counts = (resp.T @ x).T  # (V, K); sparse x sparse stays sparse, never rows x V
        counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
        nk = np.bincount(label, weights=w, minlength=self.n_components).astype(np.float64)
        return mn.MultinomialStats(nk, np.asarray(counts, dtype=np.float64), 0.0, float(w.sum()), x.shape[0])
