"""Shared fixtures: one in-process Dask cluster per test session, seeded data.

Fits use the current distributed client, so a session-wide in-process
cluster (two single-threaded workers, like the CI machine's two cores) keeps
the suite fast; tests of dgmm's own LocalCluster start it in a subprocess.
"""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client

from dgmm.fit import cluster

from ._helpers import COVARIANCE_TYPES, Mixture, make_mixture

# scikit-learn's own tests against dgmm run separately (tests/sklearn_conformance/README.md);
# tests/test_conformance_adapter.py runs a handful of them in a subprocess.
collect_ignore = ["sklearn_conformance"]


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


@pytest.fixture
def mixture(rng) -> Mixture:
    return make_mixture(rng)


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request) -> str:
    return request.param


@pytest.fixture
def streamed(monkeypatch):
    """Never persist: every pass reads from the (counting) source."""
    monkeypatch.setattr(cluster, "PERSIST_FRACTION", 0.0)
