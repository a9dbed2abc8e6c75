"""Numpy kernels of the initialisation's passes: a uniform row sample, nearest centres.

The sample pass gives every row a key, a hash of ``(seed, global row
index)`` (splitmix64, vectorised: no per-row Python, no per-row generator
call), and keeps the rows whose key falls below a threshold chosen on the
client so that, with overwhelming probability, at least the wanted number of
rows pass; the client then keeps the rows of the smallest keys. The sample
is therefore a uniform sample without replacement of an exact size, and it
depends only on the seed and the global row indices: not on the chunking,
not on the number of workers, not on the order chunks finish. Samples of
different sizes with the same seed are nested (the smaller is the start of
the larger), so fits that share a pass (restarts, a selection sweep) draw
the rows each would draw alone. Sparse (CSR) chunks give sparse samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ALL_ROWS",
    "RowSample",
    "concat_samples",
    "key_threshold",
    "nearest_center",
    "nearest_labels",
    "row_keys",
    "sample_chunk",
    "seed_key",
    "smallest_keys",
    "sum_lists",
]

_BLOCK = 8192

#: The threshold that keeps every row.
ALL_ROWS = np.iinfo(np.uint64).max

# Standard deviations of slack in the threshold: the number of rows under it
# is Binomial(n, p) with mean m + SLACK_SIGMAS * sqrt(m); it falls short of m
# with probability ~1e-9 (and then the caller draws again, with a larger one).
SLACK_SIGMAS = 6.0


def nearest_center(
    xc: np.ndarray, centers: np.ndarray, sq_norms: np.ndarray, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to, and index of, the nearest centre of every row.

    ``xc`` (n_rows, D) and ``centers`` (K, D) share a dtype and a frame (both
    shifted by the same origin, so the expansion below keeps its digits);
    ``sq_norms`` (K,) are the centres' squared norms; ``out`` (n_rows, K), if
    given, receives the partial distances. One GEMM:
    |x - c|^2 = |x|^2 - 2 x.c + |c|^2, clipped at 0 where it cancels below.
    The one nearest-centre kernel: hard assignment and the low-rank
    initialisation use it.
    """
    dist = np.matmul(xc, -2.0 * centers.T, out=out)
    dist += sq_norms
    label = np.argmin(dist, axis=1)
    best = dist[np.arange(xc.shape[0]), label] + np.einsum("ij,ij->i", xc, xc)
    return np.maximum(best, 0.0), label


# Up to this many centres ``nearest_labels`` keeps a running minimum over the
# centres (four vector passes over the block's rows per centre, uint8 labels)
# instead of ``np.argmin`` along rows of K values, one short loop per row:
# measured 6x faster at K=8, 2x at K=32, slower at K=64 (float32, 1e6 rows).
RUNNING_MIN_MAX_K = 32


def nearest_labels(
    xc: np.ndarray, minus_two: np.ndarray, sq_norms: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Index of the nearest centre of every row (n_rows,), without the distance.

    ``nearest_center``'s argmin, the distance left out: with ``minus_two =
    -2 centers`` (K, D) and ``sq_norms`` (K,) prepared once, |c|^2 - 2 x.c
    differs from |x - c|^2 by |x|^2, the same for every centre, so neither the
    row norms nor the gather of the nearest distance are needed. Ties go to
    the first centre, as ``np.argmin``. ``out``, if given, is a buffer of at
    least n_rows * K values of ``xc``'s dtype for the partial distances.
    """
    n_rows, n_components = xc.shape[0], minus_two.shape[0]
    buf = np.empty(n_rows * n_components, dtype=xc.dtype) if out is None else out.reshape(-1)
    if n_components > RUNNING_MIN_MAX_K:
        dist = np.matmul(xc, minus_two.T, out=buf[: n_rows * n_components].reshape(n_rows, n_components))
        dist += sq_norms
        return np.argmin(dist, axis=1)
    dist_t = np.matmul(minus_two, xc.T, out=buf[: n_rows * n_components].reshape(n_components, n_rows))
    dist_t += sq_norms[:, None]
    best = dist_t[0].copy()
    label = np.zeros(n_rows, dtype=np.uint8)
    better = np.empty(n_rows, dtype=bool)
    step = np.empty(n_rows, dtype=np.uint8)
    for k in range(1, n_components):
        np.less(dist_t[k], best, out=better)
        np.minimum(best, dist_t[k], out=best)
        # k exceeds every label so far: max(label, k * better) is where(better, k, label).
        np.multiply(better, np.uint8(k), out=step)
        np.maximum(label, step, out=label)
    return label


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


def seed_key(seed: int) -> int:
    """The 64-bit hash key of a sample seeded by ``seed``."""
    return int(np.random.SeedSequence([int(seed), 0x5A3]).generate_state(1, np.uint64)[0])


def row_keys(key: int, start: int, n_rows: int) -> np.ndarray:
    """uint64 keys of the global rows ``start .. start + n_rows - 1`` (splitmix64).

    splitmix64's output function applied to ``key + (row + 1) * golden``:
    eight vectorised integer operations per row (wrapping uint64 arithmetic).

    >>> k = row_keys(seed_key(0), 0, 5)
    >>> bool(np.array_equal(k[2:], row_keys(seed_key(0), 2, 3)))
    True
    """
    z = np.arange(start + 1, start + n_rows + 1, dtype=np.uint64)
    z *= np.uint64(0x9E3779B97F4A7C15)
    z += np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def key_threshold(n_rows: int, size: int, slack: float = SLACK_SIGMAS) -> int:
    """The key below which about ``size + slack * sqrt(size)`` of ``n_rows`` rows fall.

    ``ALL_ROWS`` when the sample is all rows (or nearly).
    """
    if size >= n_rows:
        return int(ALL_ROWS)
    fraction = (size + slack * math.sqrt(size) + 16.0) / n_rows
    if fraction >= 1.0:
        return int(ALL_ROWS)
    return min(int(ALL_ROWS), int(fraction * 2.0**64))


@dataclass(frozen=True)
class RowSample:
    """Rows of a set of chunks whose key is under a threshold, in global row order."""

    rows: np.ndarray  # (m,) int64 global row indices, increasing
    keys: np.ndarray  # (m,) uint64
    points: np.ndarray | sp.csr_matrix  # (m, n_features), the data's dtype; CSR for CSR chunks
    weights: np.ndarray | None  # (m,) float64 sample weights, or None


def sample_chunk(
    x: np.ndarray,
    shared: tuple[tuple[int, int], ...],
    sample_weight: np.ndarray | None,
    *,
    chunk_index: int,
    row_offset: int,
) -> list[RowSample]:
    """The chunk's rows under each ``(key, threshold)`` of ``shared``: one sample per seed."""
    out = []
    n_rows = x.shape[0]
    for key, threshold in shared:
        # Keys are kept even when every row is: a smaller sample of the same
        # seed (another request of the pass) takes the smallest of them.
        keys = row_keys(key, row_offset, n_rows)
        if threshold >= ALL_ROWS:
            idx = np.arange(n_rows)
        else:
            idx = np.flatnonzero(keys < np.uint64(threshold))
            keys = keys[idx]
        points = x[idx] if sp.issparse(x) else np.array(x[idx], copy=True)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[idx]
        out.append(RowSample(row_offset + idx.astype(np.int64), keys, points, w))
    return out


def concat_samples(parts: list[list[RowSample]]) -> list[RowSample]:
    """Concatenate per-seed samples of consecutive chunk ranges, in order."""
    merged = []
    for r in range(len(parts[0])):
        group = [p[r] for p in parts]
        weights = None if group[0].weights is None else np.concatenate([g.weights for g in group])
        points = [g.points for g in group]
        merged.append(
            RowSample(
                np.concatenate([g.rows for g in group]),
                np.concatenate([g.keys for g in group]),
                sp.vstack(points, format="csr") if sp.issparse(points[0]) else np.concatenate(points),
                weights,
            )
        )
    return merged


def smallest_keys(sample: RowSample, size: int) -> RowSample:
    """The ``size`` rows of ``sample`` with the smallest keys (ties by row), in row order."""
    if sample.rows.shape[0] <= size:
        return sample
    # The size-th smallest key, then the rows under it and, of the rows at it,
    # the first in row order (rows are increasing): the order (key, row)
    # without sorting the whole sample.
    kth = np.partition(sample.keys, size - 1)[size - 1]
    under = np.flatnonzero(sample.keys < kth)
    at = np.flatnonzero(sample.keys == kth)[: size - under.size]
    take = np.sort(np.concatenate([under, at]))
    return RowSample(
        sample.rows[take],
        sample.keys[take],
        sample.points[take],
        None if sample.weights is None else sample.weights[take],
    )


def sum_lists(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Elementwise sum of per-restart arrays, in order."""
    total = [p.copy() for p in parts[0]]
    for part in parts[1:]:
        for t, p in zip(total, part):
            t += p
    return total
