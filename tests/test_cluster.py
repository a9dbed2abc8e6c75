"""Where fits run: dgmm's own LocalCluster (in a clean subprocess) and the
persist-or-stream decision."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np

from dgmm import cluster


def test_fit_without_a_client_starts_and_closes_a_local_cluster():
    script = textwrap.dedent(
        """
        import multiprocessing, numpy as np, warnings
        import dgmm
        from distributed import default_client
        X = np.random.default_rng(0).normal(size=(2000, 2))
        gmm = dgmm.GaussianMixture(2, random_state=0).fit(X)
        try:
            default_client()
            print("client left behind")
        except ValueError:
            pass
        print("children", len(multiprocessing.active_children()))
        print("means", gmm.means_.shape)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "client left behind" not in out.stdout
    assert "children 0" in out.stdout and "means (2, 2)" in out.stdout


def test_small_input_is_persisted_large_input_streamed(client, monkeypatch):
    x = da.ones((1000, 4), chunks=(100, 4))
    persisted = cluster.maybe_persist(x, client)
    assert all(hasattr(v, "key") for v in dict(persisted.__dask_graph__()).values())
    monkeypatch.setattr(cluster, "PERSIST_FRACTION", 0.0)
    streamed = cluster.maybe_persist(x, client)
    assert streamed is x


def test_total_threads_counts_every_worker(client):
    assert cluster.total_threads(client) == 2


def test_in_memory_input_is_scattered_not_embedded(client):
    from dgmm.sources import as_dask_array

    X = np.random.default_rng(0).normal(size=(10_000, 3))
    x = as_dask_array(X, chunks=2500, client=client)
    assert x.chunks[0] == (2500,) * 4
    assert not any(isinstance(v, np.ndarray) and v.size > 100 for v in dict(x.__dask_graph__()).values())
    np.testing.assert_array_equal(x.compute(), X)
