"""Where fits run and what they report: ``cluster.connect``'s order of
precedence and errors, the estimator's ``client`` / ``scheduler_address``,
dgmm's own LocalCluster (in a clean subprocess: BLAS pinned, dashboard
logged, closed), the persist-or-stream decision, and the per-iteration log
lines and progress bar."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import time

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster, default_client, get_task_stream
from sklearn.base import clone

from dgmm import GaussianMixture
from dgmm.errors import ClusterConnectionError
from dgmm.fit import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fit_without_a_client_starts_a_pinned_local_cluster_logs_it_and_closes_it():
    # A clean interpreter, without the BLAS variables set: the workers must get
    # them from distributed's nanny (pre-spawn-environ), before NumPy loads BLAS.
    script = textwrap.dedent(
        """
        import logging, multiprocessing, os, sys
        import numpy as np
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        logging.getLogger("dgmm").setLevel(logging.INFO)
        import dgmm
        from dgmm.fit.cluster import connect
        from distributed import default_client

        def blas():
            from threadpoolctl import threadpool_info
            env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            return env, sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

        # What GaussianMixture.fit does without a client or address (one cluster
        # start instead of two: the fit runs inside on the current client).
        with connect() as client:
            print("workers", len(client.nthreads()))
            print("nthreads", sorted(set(client.nthreads().values())))
            for env, threads in client.run(blas).values():
                print("env", env)
                print("blas threads", threads)
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
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert f"workers {cores}" in out.stdout
    assert "nthreads [1]" in out.stdout
    assert out.stdout.count("blas threads [1]") == cores, out.stdout
    assert "'OMP_NUM_THREADS': '1'" in out.stdout and "'OPENBLAS_NUM_THREADS': '1'" in out.stdout
    # The dashboard link is logged when dgmm starts the cluster.
    links = re.findall(r"dashboard (http://\S+)", out.stderr)
    assert len(links) == 1, out.stderr
    assert "client left behind" not in out.stdout
    assert "children 0" in out.stdout and "means (2, 2)" in out.stdout


def test_a_plain_script_without_a_main_guard_fits_a_store(tmp_path):
    # multiprocessing's spawn runs an unguarded script again in every worker,
    # which would start a LocalCluster there too ("Nanny failed to start").
    import zarr

    store = tmp_path / "x.zarr"
    x = np.random.default_rng(0).normal(size=(3000, 2)).astype("float32")
    zarr.create_array(str(store), shape=x.shape, chunks=(1000, 2), dtype="float32")[:] = x
    script = tmp_path / "plain.py"
    script.write_text(
        "import dgmm\n"
        f"gmm = dgmm.GaussianMixture(2, random_state=0, max_iter=3).fit({str(store)!r})\n"
        "print('ran', __name__, gmm.means_.shape)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    # The script ran once, in the parent only.
    assert out.stdout.splitlines() == ["ran __main__ (2, 2)"], out.stdout
    assert "Nanny failed" not in out.stderr


def test_small_input_is_persisted_large_input_streamed(client, monkeypatch):
    x = da.ones((1000, 4), chunks=(100, 4))
    persisted = cluster.maybe_persist(x, client)
    assert all(hasattr(v, "key") for v in dict(persisted.__dask_graph__()).values())
    monkeypatch.setattr(cluster, "PERSIST_FRACTION", 0.0)
    streamed = cluster.maybe_persist(x, client)
    assert streamed is x


def test_memory_for_data_is_the_limits_less_what_the_processes_hold(client, monkeypatch):
    workers = {
        "a": {"memory_limit": 1000, "metrics": {"memory": 300}},
        "b": {"memory_limit": 1000, "metrics": {"memory": 1200}},  # already over: gives nothing
    }
    monkeypatch.setattr(cluster, "_workers", lambda c: workers)
    assert cluster.total_memory(client) == 700
    x = da.ones((50, 1), chunks=(10, 1))  # 400 bytes: more than half of 700
    assert cluster.maybe_persist(x, client) is x
    workers["c"] = {"memory_limit": 0, "metrics": {"memory": 10}}  # unlimited: unknown
    assert cluster.total_memory(client) == 0


def test_total_threads_counts_every_worker(client):
    assert cluster.total_threads(client) == 2


# test_in_memory_input_is_scattered_not_embedded: in test_dataset.py (open_for_fit).


# -- connect: which cluster, in which order ------------------------------------


@pytest.fixture(scope="module")
def other_cluster():
    """A second in-process cluster, never the default client."""
    with LocalCluster(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"
    ) as lc:
        yield lc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explicit_client_wins_and_is_current_inside(client, other_cluster):
    with Client(other_cluster, set_as_default=False) as other:
        with cluster.connect(client=other, scheduler_address="tcp://127.0.0.1:1") as used:
            assert used is other
            assert default_client() is other
        assert other.status == "running"  # not ours to close
    assert default_client() is client


def test_scheduler_address_wins_over_the_default_client_and_is_closed(client, other_cluster):
    with cluster.connect(scheduler_address=other_cluster.scheduler_address) as used:
        assert used is not client
        assert used.scheduler.address == other_cluster.scheduler_address
        assert default_client() is used
    assert used.status == "closed"
    assert default_client() is client


def test_default_client_is_used_without_arguments(client):
    with cluster.connect() as used:
        assert used is client


@pytest.mark.parametrize("how", ["config", "environment"])
def test_configured_scheduler_address_is_used_without_a_default_client(
    how, other_cluster, monkeypatch
):
    monkeypatch.setattr(cluster, "_current_client", lambda: None)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    if how == "config":
        monkeypatch.setitem(dask.config.config, "scheduler-address", other_cluster.scheduler_address)
    else:
        monkeypatch.setitem(dask.config.config, "scheduler-address", None)
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", other_cluster.scheduler_address)
    with cluster.connect() as used:
        assert used.scheduler.address == other_cluster.scheduler_address
    assert used.status == "closed"


def test_closed_client_is_a_clear_error(other_cluster):
    closed = Client(other_cluster, set_as_default=False)
    closed.close()
    with pytest.raises(ClusterConnectionError, match="(?i)closed.*open Client"):
        with cluster.connect(client=closed):
            pass


@pytest.mark.parametrize(
    "address, fragments",
    [
        pytest.param("tcp://127.0.0.1:{port}", ["127.0.0.1:{port}", "scheduler is running"], id="nothing-listening"),
        pytest.param("tls://127.0.0.1:{port}", ["127.0.0.1:{port}", "TLS", "tls_client_cert"], id="tls-without-certificates"),
        pytest.param("nonsense://somewhere:1", ["nonsense://somewhere:1", "tcp://host:8786"], id="unknown-scheme"),
    ],
)
def test_connection_failure_is_a_typed_error_naming_the_address(address, fragments):
    port = _free_port()
    address = address.format(port=port)
    start = time.monotonic()
    with pytest.raises(ClusterConnectionError) as info:
        with cluster.connect(scheduler_address=address, timeout=2):
            pass
    # Hang guard only (the timeout is 2 s): the error comes, it does not block.
    assert time.monotonic() - start < 60
    assert isinstance(info.value, ConnectionError)
    for fragment in fragments:
        assert fragment.format(port=port) in str(info.value)


# -- the estimator's client / scheduler_address --------------------------------


def test_estimator_runs_on_the_given_client_not_the_default(client, other_cluster, rng):
    X = rng.normal(size=(2000, 2))
    with Client(other_cluster, set_as_default=False) as other:
        with get_task_stream(client=other) as theirs, get_task_stream(client=client) as ours:
            gmm = GaussianMixture(2, random_state=0, max_iter=5, tol=0, client=other)
            with pytest.warns(Warning, match="did not converge"):
                gmm.fit(X)
        assert len(theirs.data) > 0
        assert len(ours.data) == 0
        reference = GaussianMixture(2, random_state=0, max_iter=5, tol=0)
        with pytest.warns(Warning, match="did not converge"):
            reference.fit(X)
        assert np.array_equal(gmm.means_, reference.means_)


def test_estimator_with_scheduler_address(other_cluster, rng):
    X = rng.normal(size=(2000, 2))
    address = other_cluster.scheduler_address
    gmm = GaussianMixture(2, random_state=0, scheduler_address=address).fit(X)
    assert gmm.get_params()["scheduler_address"] == address
    assert gmm.means_.shape == (2, 2)


def test_clone_shares_the_client_and_pickling_drops_it(client):
    gmm = GaussianMixture(3, client=client, scheduler_address="tcp://127.0.0.1:8786")
    twin = clone(gmm)
    assert twin.client is client
    assert twin.scheduler_address == "tcp://127.0.0.1:8786"
    assert gmm.client is client
    unpickled = pickle.loads(pickle.dumps(gmm))
    assert unpickled.client is None and unpickled.n_components == 3
    assert copy.deepcopy(gmm).client is None


@pytest.mark.parametrize(
    "params, name",
    [
        pytest.param({"client": "tcp://127.0.0.1:8786"}, "client", id="client-as-string"),
        pytest.param({"scheduler_address": 8786}, "scheduler_address", id="address-as-int"),
    ],
)
def test_bad_cluster_parameters(params, name, rng):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(2, **params).fit(rng.normal(size=(100, 2)))


# -- observability ---------------------------------------------------------------


def test_one_log_line_per_iteration_with_likelihood_change_and_seconds(rng, caplog):
    X = np.vstack([rng.normal(-4, 1, (1500, 2)), rng.normal(4, 1, (1500, 2))])
    caplog.set_level(logging.INFO, logger="dgmm")
    gmm = GaussianMixture(2, random_state=0, tol=1e-6).fit(X)
    lines = [r.getMessage() for r in caplog.records if r.name == "dgmm" and "log-likelihood" in r.getMessage()]
    assert len(lines) == gmm.n_iter_
    for i, (line, entry) in enumerate(zip(lines, gmm.history_), start=1):
        assert re.search(rf"\biteration {i}\b", line)
        numbers = [float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?|inf", line)]
        assert any(np.isclose(v, entry["lower_bound"], rtol=1e-8) for v in numbers), line
        assert "change" in line and re.search(r"\d+(\.\d+)?\s*s\b", line)


def test_verbose_1_shows_every_pass(rng, capsys):
    X = rng.normal(size=(2000, 2))
    gmm = GaussianMixture(2, random_state=0, verbose=1, max_iter=4, tol=0)
    with pytest.warns(Warning, match="did not converge"):
        gmm.fit(X)
    err = capsys.readouterr().err
    # stderr is no terminal here: one line per pass as it ends (the bar on a
    # terminal is tests/test_progress.py's), each EM iteration once, in order.
    em = re.findall(r"^EM iteration (\d) of 4: 1/1 chunks", err, flags=re.M)
    assert em == ["1", "2", "3", "4"], err
    assert re.search(r"^initialisation step 1 of \d, pass 1: 1/1 chunks", err, flags=re.M), err
