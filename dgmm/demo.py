"""The README's main job: a generated mixture fitted on the default LocalCluster.

``python -m dgmm`` runs it. The data are drawn in chunks from a known
mixture, so the fit can be checked against ground truth: the summary reports
how many rows land in the component matching their true one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import dask.array as da
import numpy as np
from scipy.optimize import linear_sum_assignment

from .estimator import GaussianMixture

__all__ = ["DemoSummary", "generate", "run_demo"]


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


def _chunk(seed: int, block_id: int, n_rows: int, weights, means, chols, dtype) -> np.ndarray:
    rng = np.random.default_rng([seed, block_id])
    labels = rng.choice(len(weights), size=n_rows, p=weights)
    z = rng.standard_normal((n_rows, means.shape[1]))
    x = means[labels] + np.einsum("nd,nkd->nk", z, chols[labels])
    return np.column_stack([x, labels]).astype(dtype)


def generate(
    n_samples: int, n_features: int, n_components: int, *, seed: int = 0, chunk_rows: int = 100_000
) -> tuple[da.Array, da.Array, dict[str, np.ndarray]]:
    """A lazy ``(X, labels, truth)``: every chunk is drawn from its own seeded generator."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 4.0))
    means = rng.normal(0.0, 5.0, size=(n_components, n_features))
    a = rng.normal(size=(n_components, n_features, n_features)) / np.sqrt(n_features)
    covariances = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(n_features)
    chols = np.linalg.cholesky(covariances)
    chunks = da.core.normalize_chunks((chunk_rows,), (n_samples,))[0]
    blocks = [
        da.from_delayed(
            __import__("dask").delayed(_chunk)(seed, i, n, weights, means, chols, np.float64),
            shape=(n, n_features + 1), dtype=np.float64,
        )
        for i, n in enumerate(chunks)
    ]
    both = da.concatenate(blocks, axis=0)
    truth = {"weights": weights, "means": means, "covariances": covariances}
    return both[:, :n_features], both[:, n_features].astype(np.int64), truth


def label_agreement(true_labels: np.ndarray, labels: np.ndarray, n_components: int) -> float:
    """Fraction of rows in the fitted component matched (Hungarian) to their true one."""
    confusion = np.zeros((n_components, n_components))
    np.add.at(confusion, (true_labels, labels), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / len(labels))


def run_demo(
    n_samples: int = 200_000,
    n_features: int = 8,
    n_components: int = 5,
    *,
    seed: int = 0,
    verbose: int = 1,
) -> DemoSummary:
    """Generate, fit with the default cluster, and summarise against the truth."""
    X, true_labels, _ = generate(n_samples, n_features, n_components, seed=seed)
    start = time.perf_counter()
    gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, verbose=verbose)
    gmm.fit(X)
    seconds = time.perf_counter() - start
    labels = np.asarray(gmm.predict(X).compute())
    score = gmm.score(X)
    return DemoSummary(
        n_samples=n_samples,
        n_features=n_features,
        n_components=n_components,
        n_iter=gmm.n_iter_,
        converged=bool(gmm.converged_),
        mean_log_likelihood=score,
        bic=-2.0 * score * n_samples + gmm._n_parameters() * np.log(n_samples),
        seconds=seconds,
        label_agreement=label_agreement(np.asarray(true_labels.compute()), labels, n_components),
    )
