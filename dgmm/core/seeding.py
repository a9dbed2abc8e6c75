"""Numpy kernels of k-means|| seeding (Bahmani et al. 2012), one pass each.

A round of k-means|| samples points with probability proportional to
``w * D^2(x, C)``. Bahmani et al. sample each point independently with
probability ``l * D^2 / phi``, which needs ``phi`` (a pass) before sampling
(another pass). Here each round is one pass: every point gets the key
``log(u) / (w D^2)`` with ``u`` uniform (Efraimidis-Spirakis weighted
sampling without replacement) and a chunk returns its ``l`` largest keys;
merging keeps the ``l`` largest of the union, so the round's sample is the
same whatever the chunking of the reduction. ``phi`` comes out of the same
pass. Uniform draws are seeded by (seed, restart, round, chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Candidates", "candidate_weights", "merge_candidates", "nearest_center", "sample_candidates", "sum_lists"]

_BLOCK = 8192


def nearest_center(
    xc: np.ndarray, centers: np.ndarray, sq_norms: np.ndarray, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to, and index of, the nearest centre of every row.

    ``xc`` (n_rows, D) and ``centers`` (K, D) share a dtype and a frame (both
    shifted by the same origin, so the expansion below keeps its digits);
    ``sq_norms`` (K,) are the centres' squared norms; ``out`` (n_rows, K), if
    given, receives the partial distances. One GEMM:
    |x - c|^2 = |x|^2 - 2 x.c + |c|^2, clipped at 0 where it cancels below.
    The one nearest-centre kernel: hard assignment (Lloyd, k-means
    initialisation) and k-means|| seeding both use it.
    """
    dist = np.matmul(xc, -2.0 * centers.T, out=out)
    dist += sq_norms
    label = np.argmin(dist, axis=1)
    best = dist[np.arange(xc.shape[0]), label] + np.einsum("ij,ij->i", xc, xc)
    return np.maximum(best, 0.0), label


def _min_sq_dist(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to and index of the nearest centre, in float64 row blocks of x."""
    x64 = x.astype(np.float64, copy=False)
    sq_norms = np.einsum("kd,kd->k", centers, centers)
    dist = np.empty(x.shape[0])
    label = np.empty(x.shape[0], dtype=np.intp)
    for start in range(0, x.shape[0], _BLOCK):
        stop = start + _BLOCK
        dist[start:stop], label[start:stop] = nearest_center(x64[start:stop], centers, sq_norms)
    return dist, label


@dataclass(frozen=True)
class Candidates:
    """The best-keyed rows of a set of chunks, and their total cost ``phi``."""

    keys: np.ndarray  # (m,) larger is better
    rows: np.ndarray  # (m,) global row index, breaks ties deterministically
    points: np.ndarray  # (m, n_features) float64
    phi: float


def sample_candidates(
    x: np.ndarray,
    shared: tuple[list[np.ndarray], int, int, int],
    sample_weight: np.ndarray | None,
    *,
    chunk_index: int,
    row_offset: int,
) -> list[Candidates]:
    """One round for every restart: ``shared = (centers per restart, l, seed, round)``."""
    centers_per_restart, oversampling, seed, round_index = shared
    out = []
    for restart, centers in enumerate(centers_per_restart):
        # The centre is subtracted first so distances keep their digits far from the origin.
        origin = centers[0]
        dist, _ = _min_sq_dist(x.astype(np.float64) - origin, centers - origin)
        cost = dist if sample_weight is None else dist * sample_weight
        rng = np.random.default_rng([seed, restart, round_index, chunk_index])
        u = rng.uniform(size=x.shape[0])
        with np.errstate(divide="ignore"):
            keys = np.where(cost > 0.0, np.log(u) / np.where(cost > 0, cost, 1.0), -np.inf)
        take = min(oversampling, x.shape[0])
        idx = np.argsort(-keys, kind="stable")[:take]
        idx = idx[np.isfinite(keys[idx])]
        out.append(
            Candidates(keys[idx], row_offset + idx, x[idx].astype(np.float64), float(cost.sum()))
        )
    return out


def _top(c: Candidates, m: int) -> Candidates:
    order = np.lexsort((c.rows, -c.keys))[:m]
    return Candidates(c.keys[order], c.rows[order], c.points[order], c.phi)


def merge_candidates(parts: list[list[Candidates]], oversampling: int) -> list[Candidates]:
    """Keep the ``oversampling`` largest keys per restart; add the costs."""
    merged = []
    for r in range(len(parts[0])):
        group = [p[r] for p in parts]
        merged.append(
            _top(
                Candidates(
                    np.concatenate([g.keys for g in group]),
                    np.concatenate([g.rows for g in group]),
                    np.concatenate([g.points for g in group]),
                    float(sum(g.phi for g in group)),
                ),
                oversampling,
            )
        )
    return merged


def candidate_weights(
    x: np.ndarray,
    centers_per_restart: list[np.ndarray],
    sample_weight: np.ndarray | None,
    *,
    chunk_index: int,
    row_offset: int,
) -> list[np.ndarray]:
    """Weight of the rows nearest to each candidate, per restart."""
    out = []
    for centers in centers_per_restart:
        origin = centers[0]
        _, label = _min_sq_dist(x.astype(np.float64) - origin, centers - origin)
        out.append(np.bincount(label, weights=sample_weight, minlength=centers.shape[0]).astype(np.float64))
    return out


def sum_lists(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Elementwise sum of per-restart arrays, in order."""
    total = [p.copy() for p in parts[0]]
    for part in parts[1:]:
        for t, p in zip(total, part):
            t += p
    return total
