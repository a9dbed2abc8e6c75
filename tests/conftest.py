"""Shared fixtures: one in-process Dask cluster per test session, seeded data.

Fits use the current distributed client, so a session-wide in-process
cluster (two single-threaded workers, like the CI machine's two cores) keeps
the suite fast; tests of dgmm's own LocalCluster start it in a subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from distributed import Client

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="session", autouse=True)
def client():
    with Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a subprocess), started once, only if asked for.

    Yields ``{"endpoint_url": ..., "storage_options": {...}}`` for s3fs (pass the
    storage_options to open_dataset, zarr, fsspec). Use ``tests.s3.new_bucket``
    for a bucket of your own: the server's state lasts the whole session.
    """
    from tests.s3 import CREDENTIALS, moto_server

    with pytest.MonkeyPatch.context() as mp, moto_server() as server:
        # Only for clients that ignore storage_options (botocore's own lookups).
        mp.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["key"])
        mp.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["secret"])
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield server


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@dataclass(frozen=True)
class Mixture:
    """Generated data with the parameters that generated it."""

    X: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray  # (K, D, D) full matrices


def make_mixture(
    rng: np.random.Generator,
    n_samples: int = 3000,
    n_features: int = 3,
    n_components: int = 3,
    separation: float = 6.0,
    offset: float = 0.0,
    dtype: type = np.float64,
) -> Mixture:
    """Well-separated Gaussian clusters with random full covariances."""
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(0.0, separation, size=(n_components, n_features)) + offset
    covariances = []
    for _ in range(n_components):
        a = rng.normal(size=(n_features, n_features)) * 0.5
        covariances.append(a @ a.T + 0.5 * np.eye(n_features))
    covariances = np.asarray(covariances)
    labels = rng.choice(n_components, size=n_samples, p=weights)
    X = np.empty((n_samples, n_features))
    for k in range(n_components):
        idx = labels == k
        X[idx] = rng.multivariate_normal(means[k], covariances[k], size=idx.sum())
    return Mixture(X.astype(dtype), labels, weights, means, covariances)


def dense_covariance(covariances: np.ndarray, covariance_type: str, k: int, n_features: int) -> np.ndarray:
    """Component k's covariance as a full (D, D) matrix, for any covariance type."""
    return {
        "full": lambda: covariances[k],
        "tied": lambda: covariances,
        "diag": lambda: np.diag(covariances[k]),
        "spherical": lambda: covariances[k] * np.eye(n_features),
    }[covariance_type]()


@pytest.fixture
def mixture(rng) -> Mixture:
    return make_mixture(rng)


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request) -> str:
    return request.param
