"""Fits without a cluster: in-memory input runs in this process, BLAS pinned.

Every test runs its fit in a subprocess: the session's autouse in-process
Client (conftest.py) would otherwise be the current client and hide the
no-client path. The scripts have no ``if __name__ == "__main__":`` guard, as
a newcomer's first script, and run with ``OMP_NUM_THREADS=2
OPENBLAS_NUM_THREADS=2`` set, as many clusters and HPC modules do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Data of every script: float32, two clusters, 3000 rows in 4 chunks.
DATA = """
import logging, multiprocessing, sys
import numpy as np
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
logging.getLogger("dgmm").setLevel(logging.INFO)
import dgmm
rng = np.random.default_rng(7)
X = np.vstack([rng.normal(-3, 1, (1500, 3)), rng.normal(3, 1, (1500, 3))]).astype(np.float32)
"""

IN_PROCESS = "runs in this process"
STARTED = "started a LocalCluster"


def run_script(body: str, tmp_path, name: str = "script.py") -> subprocess.CompletedProcess:
    """Run ``DATA + body`` as a file (no __main__ guard) with 2 BLAS threads in the environment."""
    path = tmp_path / name
    path.write_text(DATA + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def values(stdout: str, key: str) -> list[str]:
    return [line[len(key) + 1 :] for line in stdout.splitlines() if line.startswith(key + " ")]


def test_unguarded_script_fits_in_process_bit_identical_to_a_local_cluster(tmp_path):
    out = run_script(
        """
        gmm = dgmm.GaussianMixture(2, random_state=0, chunks=750).fit(X)
        print("children", len(multiprocessing.active_children()))
        print("dtype", X.dtype)
        np.save("in_process.npy", gmm.means_)
        print("means", gmm.means_.round(2).tolist())
        """,
        tmp_path,
    )
    assert out.stderr.count(IN_PROCESS) == 1, out.stderr
    assert STARTED not in out.stderr and "Nanny" not in out.stderr
    assert values(out.stdout, "children") == ["0"]
    assert values(out.stdout, "dtype") == ["float32"]
    # The same data and chunks on a LocalCluster, asked for explicitly (a guarded script).
    reference = run_script(
        """
        if __name__ == "__main__":
            gmm = dgmm.GaussianMixture(2, random_state=0, chunks=750, scheduler="processes").fit(X)
            np.save("cluster.npy", gmm.means_)
        """,
        tmp_path,
        name="guarded.py",
    )
    assert STARTED in reference.stderr and IN_PROCESS not in reference.stderr
    import numpy as np

    in_process, on_cluster = np.load(tmp_path / "in_process.npy"), np.load(tmp_path / "cluster.npy")
    assert in_process.shape == (2, 3)
    assert np.array_equal(in_process, on_cluster)


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_every_task_of_an_in_process_fit_has_one_blas_thread(tmp_path, scheduler):
    # Recorded from inside the graph layer's tasks; the environment asks for 2.
    out = run_script(
        f"""
        import threading
        from threadpoolctl import threadpool_info
        from dgmm.core.gaussian import GAUSSIAN
        seen, names = [], set()
        kernel = GAUSSIAN.chunk_stats  # what the graph layer's per-chunk tasks run

        def recording(*args, **kwargs):
            seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
            names.add(threading.current_thread().name)
            return kernel(*args, **kwargs)

        GAUSSIAN.chunk_stats = recording
        print("before", sorted({{i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}}))
        dgmm.GaussianMixture(2, random_state=0, chunks=750, scheduler="{scheduler}").fit(X)
        print("in tasks", sorted(set(seen)), len(seen))
        print("threads", "main" if names == {{"MainThread"}} else "pool")
        print("after", sorted({{i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}}))
        """,
        tmp_path,
    )
    assert values(out.stdout, "before") == ["[2]"]
    (in_tasks,) = values(out.stdout, "in tasks")
    threads, n_calls = in_tasks.rsplit(" ", 1)
    assert threads == "[1]" and int(n_calls) >= 4, out.stdout
    assert values(out.stdout, "threads") == ["main" if scheduler == "synchronous" else "pool"]
    # The user's own setting is back after the fit.
    assert values(out.stdout, "after") == ["[2]"]


def test_grid_search_starts_no_cluster(tmp_path):
    out = run_script(
        """
        from sklearn.model_selection import GridSearchCV
        X = X[::20].astype(np.float64)  # 150 rows, iris-sized
        search = GridSearchCV(dgmm.GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=3)
        search.fit(X)
        print("best", search.best_params_["n_components"])
        print("children", len(multiprocessing.active_children()))
        """,
        tmp_path,
    )
    assert values(out.stdout, "best") == ["2"]
    assert values(out.stdout, "children") == ["0"]
    # 3 candidates x 3 folds + the refit, each in this process; none started a cluster.
    assert out.stderr.count(IN_PROCESS) == 10, out.stderr
    assert STARTED not in out.stderr


def test_stored_input_starts_a_local_cluster_and_the_parameter_overrides_both_ways(tmp_path):
    out = run_script(
        """
        import zarr
        if __name__ == "__main__":
            zarr.create_array("x.zarr", shape=X.shape, chunks=(750, 3), dtype=X.dtype)[:] = X
            results = {}
            for label, source, scheduler in [
                ("stored-default", "x.zarr", None),
                ("stored-threads", "x.zarr", "threads"),
                ("memory-processes", X, "processes"),
                ("memory-default", X, None),
            ]:
                print("case", label, flush=True)
                print(label, file=sys.stderr, flush=True)
                gmm = dgmm.GaussianMixture(2, random_state=0, chunks=750, scheduler=scheduler).fit(source)
                results[label] = gmm.means_
            print("children", len(multiprocessing.active_children()))
            print("same", all(np.array_equal(m, results["memory-default"]) for m in results.values()))
        """,
        tmp_path,
    )
    log = out.stderr
    labels = ("stored-default", "stored-threads", "memory-processes", "memory-default")
    sections, rest = {}, log.split(labels[0] + "\n", 1)[1]
    for label, following in zip(labels, (*labels[1:], None)):
        sections[label], rest = rest.split(following + "\n", 1) if following else (rest, "")
    assert STARTED in sections["stored-default"], log
    assert IN_PROCESS in sections["stored-threads"], log
    assert STARTED in sections["memory-processes"], log
    assert IN_PROCESS in sections["memory-default"], log
    assert log.count(STARTED) == 2 and log.count(IN_PROCESS) == 2, log
    assert values(out.stdout, "children") == ["0"]
    # Same data, same chunks: the same bits wherever it ran.
    assert values(out.stdout, "same") == ["True"]


def test_checkpoint_resume_in_process_is_bit_identical(tmp_path):
    out = run_script(
        """
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        warnings.simplefilter("ignore", ConvergenceWarning)
        kw = dict(random_state=0, chunks=750, tol=0)
        whole = dgmm.GaussianMixture(2, max_iter=6, **kw).fit(X)
        dgmm.GaussianMixture(2, max_iter=3, checkpoint="ckpt", **kw).fit(X)
        resumed = dgmm.GaussianMixture(2, max_iter=6, checkpoint="ckpt", **kw).fit(X)
        print("n_iter", resumed.n_iter_)
        print("same", np.array_equal(whole.means_, resumed.means_)
              and np.array_equal(whole.covariances_, resumed.covariances_))
        print("children", len(multiprocessing.active_children()))
        """,
        tmp_path,
    )
    assert values(out.stdout, "n_iter") == ["6"]
    assert values(out.stdout, "same") == ["True"]
    assert values(out.stdout, "children") == ["0"]
    assert STARTED not in out.stderr


def test_predict_to_in_process_writes_what_predict_gives(tmp_path):
    out = run_script(
        """
        import zarr
        gmm = dgmm.GaussianMixture(2, random_state=0, chunks=750).fit(X)
        gmm.predict_to(X, "labels.zarr", output="labels")
        written = zarr.open_group("labels.zarr", mode="r")["label"][:]
        print("same", np.array_equal(written, gmm.predict(X)))
        print("children", len(multiprocessing.active_children()))
        """,
        tmp_path,
    )
    assert values(out.stdout, "same") == ["True"]
    assert values(out.stdout, "children") == ["0"]
    assert out.stderr.count(IN_PROCESS) == 2 and STARTED not in out.stderr
