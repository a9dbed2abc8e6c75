"""Data drawn from a known mixture, chunk by chunk, and the demo fitted on it.

``dgmm demo`` (the README's main job) and ``dgmm generate`` use this module.
Every chunk is drawn from its own generator seeded by ``(seed, chunk index)``,
so any chunk can be drawn on any worker, in any order, and the data never has
to fit in memory; the same seed and chunking give the same bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from scipy.optimize import linear_sum_assignment

from dgmm.core import lowrank
from dgmm.core.lowrank import LowRankParams
from dgmm.core.params import GMMParams
from dgmm.estimator import GaussianMixture
from dgmm.fit.spec import FitResult

__all__ = [
    "DEMO_SPREAD",
    "DemoSummary",
    "confusion_matrix",
    "demo_separation",
    "generate",
    "label_agreement",
    "select_demo",
    "sample_mixture",
    "true_params",
    "truth_model",
]


#: Spread of the demo's means over all features (``separation * sqrt(n_features)``):
#: clusters about two standard deviations apart that overlap, so EM needs tens of
#: iterations and the BIC has a real choice to make (well-separated ones converge in two).
DEMO_SPREAD = 4.25


def demo_separation(n_features: int) -> float:
    """The ``separation`` of :func:`true_params` for the demo: the same overlap in any dimension."""
    return DEMO_SPREAD / float(np.sqrt(n_features))


@dataclass(frozen=True)
class DemoSummary:
    n_samples: int
    n_features: int
    n_components: int
    n_iter: int
    converged: bool
    mean_log_likelihood: float
    bic: float
    seconds: float
    label_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)


def true_params(n_features: int, n_components: int, *, seed: int = 0, separation: float = 5.0) -> GMMParams:
    """A random 'full' mixture: the ground truth of ``generate`` (well separated) and of the demo.

    The means are drawn with standard deviation ``separation`` per feature; the
    covariances have eigenvalues of about 1.3, so ``separation=5`` gives
    well-separated clusters and :func:`demo_separation` overlapping ones.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 4.0))
    means = rng.normal(0.0, separation, size=(n_components, n_features))
    a = rng.normal(size=(n_components, n_features, n_features)) / np.sqrt(n_features)
    covariances = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(n_features)
    return GMMParams.from_covariances(weights, means, covariances, "full")


def _draw_labels(rng: np.random.Generator, weights: np.ndarray, n_rows: int) -> np.ndarray:
    """Component of each of ``n_rows`` rows, shape (n_rows,); drawn first from ``rng``."""
    return rng.choice(len(weights), size=n_rows, p=weights / weights.sum())


def _chunk_rng(seed: int, block_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, block_id])


def _chunk_x(params: GMMParams, seed: int, block_id: int, n_rows: int, dtype: Any) -> np.ndarray:
    """Rows of chunk ``block_id``, shape (n_rows, n_features)."""
    rng = _chunk_rng(seed, block_id)
    labels = _draw_labels(rng, params.weights, n_rows)
    x = np.empty((n_rows, params.n_features), dtype=dtype)
    for k in range(params.n_components):
        rows = np.flatnonzero(labels == k)
        if rows.size:
            x[rows] = _component_draws(params, k, rows.size, rng)
    return x


def _component_draws(params: Any, k: int, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rows`` draws of component ``k`` of a Gaussian (any covariance form) mixture."""
    if isinstance(params, LowRankParams):
        return lowrank.sample_component(params, k, n_rows, rng)
    return params.model.sample_component(rng, params.means[k], params.covariances, k, n_rows)


def _chunk_labels(params: GMMParams, seed: int, block_id: int, n_rows: int) -> np.ndarray:
    """True component of every row of chunk ``block_id``, shape (n_rows,)."""
    return _draw_labels(_chunk_rng(seed, block_id), params.weights, n_rows).astype(np.int64)


def sample_mixture(
    params: GMMParams,
    n_samples: int,
    *,
    seed: int = 0,
    chunk_rows: int = 100_000,
    dtype: Any = np.float64,
) -> tuple[da.Array, da.Array]:
    """Lazy draws from a mixture, generated chunk by chunk on the workers.

    Parameters
    ----------
    params : GMMParams
        The mixture (any covariance type).
    n_samples : int
        Rows to draw.
    seed : int, default=0
        Chunk ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    chunk_rows : int, default=100_000
        Rows per chunk.
    dtype : {float32, float64}, default=float64

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
    labels : dask.array.Array of int64, shape (n_samples,)
        The component each row was drawn from.
    """
    dtype = np.dtype(dtype)
    chunks = da.core.normalize_chunks((chunk_rows,), (n_samples,))[0]
    # One graph key holds the parameters; every chunk task refers to it.
    shared = dask.delayed(params, pure=True)
    x_blocks, label_blocks = [], []
    for i, n in enumerate(chunks):
        x_blocks.append(
            da.from_delayed(
                dask.delayed(_chunk_x, pure=True)(shared, seed, i, n, dtype),
                shape=(n, params.n_features), dtype=dtype,
            )
        )
        label_blocks.append(
            da.from_delayed(
                dask.delayed(_chunk_labels, pure=True)(shared, seed, i, n),
                shape=(n,), dtype=np.int64,
            )
        )
    return da.concatenate(x_blocks, axis=0), da.concatenate(label_blocks, axis=0)


def generate(
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    seed: int = 0,
    chunk_rows: int = 100_000,
    dtype: Any = np.float64,
) -> tuple[da.Array, da.Array, dict[str, np.ndarray]]:
    """A lazy ``(X, labels, truth)`` drawn from ``true_params(n_features, n_components, seed)``.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
    labels : dask.array.Array of shape (n_samples,)
    truth : dict
        ``weights`` (n_components,), ``means`` (n_components, n_features) and
        ``covariances`` (n_components, n_features, n_features).
    """
    params = true_params(n_features, n_components, seed=seed)
    X, labels = sample_mixture(params, n_samples, seed=seed, chunk_rows=chunk_rows, dtype=dtype)
    truth = {"weights": params.weights, "means": params.means, "covariances": params.covariances}
    return X, labels, truth


def truth_model(params: GMMParams) -> GaussianMixture:
    """A ``GaussianMixture`` holding ``params`` as its fitted parameters (nothing fitted)."""
    known = FitResult(
        params=params,
        converged=True,
        n_iter=0,
        lower_bound=float("nan"),
        lower_bounds=(),
        history=(),
        n_features_in=params.n_features,
    )
    return GaussianMixture.from_result(known)


def confusion_matrix(true_labels: da.Array, labels: da.Array, n_components: int) -> np.ndarray:
    """Counts of (true, fitted) label pairs, shape (K, K), in one pass out of core."""
    counts = da.bincount(true_labels * n_components + labels, minlength=n_components**2)
    return np.asarray(counts.compute()).reshape(n_components, n_components)


def label_agreement(true_labels: Any, labels: Any, n_components: int) -> float:
    """Fraction of rows in the fitted component matched (Hungarian) to their true one."""
    if isinstance(true_labels, da.Array) or isinstance(labels, da.Array):
        confusion = confusion_matrix(
            da.asarray(true_labels), da.asarray(labels), n_components
        ).astype(np.float64)
    else:
        confusion = np.zeros((n_components, n_components))
        np.add.at(confusion, (np.asarray(true_labels), np.asarray(labels)), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / confusion.sum())


def select_demo(
    x: da.Array,
    true_labels: da.Array,
    n_components: int,
    *,
    max_components: int,
    covariance_types: tuple[str, ...] = ("full", "diag"),
    seed: int = 0,
    init_params: str = "kmeans",
    n_init: int = 1,
) -> tuple[Any, float, float]:
    """The demo's fit: a sweep of K = 1..max_components x ``covariance_types``, and the best's agreement.

    ``n_init`` restarts per candidate share the passes (they cost E-steps, not
    reads): one k-means++ start can land a candidate in a poor optimum whose
    BIC would then mislead the choice.

    Returns
    -------
    selection : dgmm.selection.SelectionResult
    agreement : float
        Fraction of rows whose best-model label matches (Hungarian) their true one.
    seconds : float
        Wall time of the sweep.
    """
    import time

    from dgmm.selection import select

    start = time.perf_counter()
    selection = select(
        x, range(1, max_components + 1), covariance_types, random_state=seed, init_params=init_params,
        n_init=n_init,
    )
    seconds = time.perf_counter() - start
    best = selection.best_estimator_
    # Room for either the true or the fitted number of labels (they differ when the BIC does).
    agreement = label_agreement(true_labels, best.predict(x), max(n_components, best.n_components))
    return selection, agreement, seconds
