"""k-means|| seeding of a mixture of multinomials, in the Hellinger embedding (numpy + scipy).

A document's counts ``c`` become the unit vector ``phi = sqrt(c / sum(c))``
(an empty document: the zero vector, which is never sampled); the
Euclidean distance between two such vectors is twice the squared Hellinger
distance of the word distributions. Per-chunk kernels of the rounds of
k-means|| (Bahmani et al. 2012), the weights of the candidates, and the
hard assignment that turns the final centres into statistics. Candidates are
sparse rows (CSR), never a dense (candidates x V) matrix; distances are
computed by blocks of rows so a task holds at most a (block x candidates)
array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dgmm.core import multinomial as mn
from dgmm.core.seeding import sum_lists

__all__ = [
    "Candidates",
    "HellingerAssign",
    "candidate_weights",
    "hellinger_rows",
    "merge_candidates",
    "nearest",
    "sample_candidates",
    "sum_lists",
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
class Candidates:
    """Sampled rows of one round: keys (larger wins), global rows, their embeddings, the cost."""

    keys: np.ndarray
    rows: np.ndarray
    points: sp.csr_matrix
    phi: float


def sample_candidates(
    x: Any, shared: tuple[list[sp.csr_matrix], int, int, int], sample_weight: np.ndarray | None,
    *, chunk_index: int, row_offset: int,
) -> list[Candidates]:
    """One k-means|| round for every restart (``shared = (centres per restart, l, seed, round)``):
    the ``l`` rows of the chunk with the largest keys ``log(u) / cost`` (sampling by cost)."""
    centers_per_restart, oversampling, seed, round_index = shared
    phi = hellinger_rows(mn.as_count_block(x, row_offset=row_offset, chunk_index=chunk_index))
    out = []
    for restart, centers in enumerate(centers_per_restart):
        dist, _ = nearest(phi, centers)
        cost = dist if sample_weight is None else dist * sample_weight
        u = np.random.default_rng([seed, restart, round_index, chunk_index]).uniform(size=phi.shape[0])
        with np.errstate(divide="ignore"):
            keys = np.where(cost > 0.0, np.log(u) / np.where(cost > 0, cost, 1.0), -np.inf)
        idx = np.argsort(-keys, kind="stable")[: min(oversampling, phi.shape[0])]
        idx = idx[np.isfinite(keys[idx])]
        out.append(Candidates(keys[idx], row_offset + idx, phi[idx], float(cost.sum())))
    return out


def merge_candidates(parts: list[list[Candidates]], oversampling: int) -> list[Candidates]:
    """Keep the ``oversampling`` largest keys per restart (ties by row); add the costs."""
    merged = []
    for r in range(len(parts[0])):
        group = [p[r] for p in parts]
        keys = np.concatenate([g.keys for g in group])
        rows = np.concatenate([g.rows for g in group])
        points = sp.vstack([g.points for g in group]).tocsr()
        order = np.lexsort((rows, -keys))[:oversampling]
        merged.append(Candidates(keys[order], rows[order], points[order], float(sum(g.phi for g in group))))
    return merged


def candidate_weights(
    x: Any, centers_per_restart: list[sp.csr_matrix], sample_weight: np.ndarray | None,
    *, chunk_index: int, row_offset: int,
) -> list[np.ndarray]:
    """Weight of the (non-empty) rows nearest to each candidate, per restart."""
    phi = hellinger_rows(mn.as_count_block(x, row_offset=row_offset, chunk_index=chunk_index))
    nonempty = np.diff(phi.indptr) > 0
    out = []
    for centers in centers_per_restart:
        _, label = nearest(phi, centers)
        w = nonempty.astype(np.float64) if sample_weight is None else sample_weight * nonempty
        out.append(np.bincount(label, weights=w, minlength=centers.shape[0]).astype(np.float64))
    return out




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
