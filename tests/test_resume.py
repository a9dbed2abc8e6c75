"""Resuming a fit from its checkpoint: bit-identical to an uninterrupted fit.

In-process tests stop a fit by raising inside the EM pass after k passes
(as a crash would) or by delivering SIGINT; process tests run a fit script
in a subprocess and kill it (SIGINT, SIGKILL of the client, SIGKILL of the
scheduler), then run the same command again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import dgmm
from dgmm import graph as _graph
from dgmm.errors import CheckpointMismatchError, FitInterrupted
from dgmm.fit import loop as em
from dgmm.io.checkpoint import Checkpoint

from ._helpers import make_mixture

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


def fit_quietly(gmm: dgmm.GaussianMixture, X, **kwargs) -> dgmm.GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm.fit(X, **kwargs)


# A history entry's clock readings: different in any two runs.
TIMINGS = ("seconds", "rows_per_second", "gb_per_second")


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


def assert_identical(got: dgmm.GaussianMixture, want: dgmm.GaussianMixture) -> None:
    for name in FITTED:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.lower_bounds_, want.lower_bounds_)
    assert got.lower_bound_ == want.lower_bound_
    assert without_seconds(got.history_) == without_seconds(want.history_)
    assert (got.n_iter_, got.converged_) == (want.n_iter_, want.converged_)


class Crash(Exception):
    """Stands for the process dying in the middle of an EM pass."""


class PassHook:
    """``dgmm.fit.loop``'s view of ``_graph``: runs ``action`` at the start of EM pass ``at``."""

    def __init__(self, at: int, action) -> None:
        self.at, self.action, self.calls = at, action, 0

    def __getattr__(self, name: str):
        return getattr(_graph, name)

    def stats_pass(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            self.action()
        return _graph.stats_pass(*args, **kwargs)


def crash():
    raise Crash


def fit_interrupted_after(monkeypatch, gmm, X, k: int, **kwargs) -> None:
    """Fit until EM pass k + 1 starts, then 'die': iteration k is the last checkpointed."""
    with monkeypatch.context() as m:
        m.setattr(em, "_graph", PassHook(k + 1, crash))
        with pytest.raises(Crash):
            fit_quietly(gmm, X, **kwargs)


def checkpoint_iteration(path) -> int:
    return Checkpoint(path).read().iteration


@pytest.fixture(scope="module")
def data():
    return make_mixture(np.random.default_rng(11), n_samples=2400, n_features=3, n_components=3)


def settings(covariance_type: str = "full", **kw) -> dict:
    base = dict(
        n_components=3, covariance_type=covariance_type, n_init=2, init_params="random_from_data",
        tol=0.0, max_iter=6, random_state=5, chunks=500,
    )
    return {**base, **kw}


_REFERENCE: dict[str, dgmm.GaussianMixture] = {}


def reference(data, covariance_type: str) -> dgmm.GaussianMixture:
    """The uninterrupted fit with ``settings(covariance_type)`` (computed once)."""
    if covariance_type not in _REFERENCE:
        _REFERENCE[covariance_type] = fit_quietly(dgmm.GaussianMixture(**settings(covariance_type)), data.X)
    return _REFERENCE[covariance_type]


@pytest.mark.parametrize(
    "covariance_type, k",
    [("full", 0), ("full", 2), ("full", 5), ("tied", 1), ("diag", 3), ("spherical", 4)],
)
def test_resume_after_k_iterations_is_bit_identical(tmp_path, monkeypatch, data, covariance_type, k):
    want = reference(data, covariance_type)
    path = tmp_path / "ck"
    gmm = dgmm.GaussianMixture(**settings(covariance_type), checkpoint=str(path))
    fit_interrupted_after(monkeypatch, gmm, data.X, k)
    assert checkpoint_iteration(path) == k
    got = fit_quietly(dgmm.GaussianMixture(**settings(covariance_type), checkpoint=str(path)), data.X)
    assert_identical(got, want)
    assert checkpoint_iteration(path) == 6


def test_resume_twice_with_converging_restarts(tmp_path, monkeypatch, data):
    # tol > 0: restarts converge at different iterations and leave the lockstep.
    kw = settings(tol=1e-3, max_iter=30, n_init=3)
    want = fit_quietly(dgmm.GaussianMixture(**kw), data.X)
    path = str(tmp_path / "ck")
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**kw, checkpoint=path), data.X, 1)
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**kw, checkpoint=path), data.X, 2)
    assert checkpoint_iteration(path) == 3  # 1, then 2 more passes
    got = fit_quietly(dgmm.GaussianMixture(**kw, checkpoint=path), data.X)
    assert_identical(got, want)
    assert want.converged_


def reseed_problem():
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(0, 0.1, (500, 2)), rng.normal(5, 0.1, (500, 2))])
    init = dict(
        weights_init=np.array([0.45, 0.45, 0.1]),
        means_init=np.array([[0.0, 0.0], [5.0, 5.0], [1e3, 1e3]]),
        precisions_init=np.stack([np.eye(2) * 100] * 3),
    )
    return X, dict(n_components=3, max_iter=8, tol=0.0, chunks=250, random_state=2, **init)


@pytest.mark.parametrize("k", [0, 1])
def test_resume_around_a_reseed(tmp_path, monkeypatch, k):
    X, kw = reseed_problem()
    want = fit_quietly(dgmm.GaussianMixture(**kw), X)
    reseeds = [h["iteration"] for h in want.history_ for e in h["events"] if e["event"] == "reseed"]
    # Interrupted before the re-seed (k=0) and just after it (k=1: reseeded_last is set).
    assert reseeds and reseeds[0] == 1
    path = str(tmp_path / "ck")
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**kw, checkpoint=path), X, k)
    got = fit_quietly(dgmm.GaussianMixture(**kw, checkpoint=path), X)
    assert_identical(got, want)


def test_sample_weight_and_float32(tmp_path, monkeypatch, data):
    X = data.X.astype(np.float32)
    w = np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0])
    want = fit_quietly(dgmm.GaussianMixture(**settings("diag")), X, sample_weight=w)
    path = str(tmp_path / "ck")
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**settings("diag"), checkpoint=path), X, 3, sample_weight=w)
    got = fit_quietly(dgmm.GaussianMixture(**settings("diag"), checkpoint=path), X, sample_weight=w)
    assert_identical(got, want)
    with pytest.raises(CheckpointMismatchError, match="sample_weight"):
        fit_quietly(dgmm.GaussianMixture(**settings("diag"), checkpoint=path), X, sample_weight=w[::-1].copy())


def test_a_finished_checkpoint_returns_its_model_without_a_pass(tmp_path, monkeypatch, data, caplog):
    path = str(tmp_path / "ck")
    want = fit_quietly(dgmm.GaussianMixture(**settings(max_iter=2), checkpoint=path), data.X)
    hook = PassHook(10**9, lambda: None)
    monkeypatch.setattr(em, "_graph", hook)
    with caplog.at_level(logging.INFO, logger="dgmm"):
        got = fit_quietly(dgmm.GaussianMixture(**settings(max_iter=2), checkpoint=path), data.X)
    assert hook.calls == 0
    assert_identical(got, want)
    assert any("finished" in r.getMessage() and "without" in r.getMessage() for r in caplog.records)


def test_a_larger_max_iter_continues_like_an_uninterrupted_fit(tmp_path, data):
    want = reference(data, "full")  # max_iter=6
    path = str(tmp_path / "ck")
    fit_quietly(dgmm.GaussianMixture(**settings(max_iter=3), checkpoint=path), data.X)
    got = fit_quietly(dgmm.GaussianMixture(**settings(max_iter=6), checkpoint=path), data.X)
    assert_identical(got, want)


def test_a_smaller_max_iter_than_done_is_refused(tmp_path, data):
    path = str(tmp_path / "ck")
    fit_quietly(dgmm.GaussianMixture(**settings(max_iter=4), checkpoint=path), data.X)
    with pytest.raises(CheckpointMismatchError) as info:
        fit_quietly(dgmm.GaussianMixture(**settings(max_iter=2), checkpoint=path), data.X)
    assert "max_iter" in str(info.value) and "4" in str(info.value)


def test_resume_logs_the_iteration(tmp_path, monkeypatch, data, caplog):
    path = str(tmp_path / "ck")
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**settings(), checkpoint=path), data.X, 2)
    with caplog.at_level(logging.INFO, logger="dgmm"):
        fit_quietly(dgmm.GaussianMixture(**settings(), checkpoint=path), data.X)
    messages = [r.getMessage() for r in caplog.records]
    assert any("resum" in m and "iteration 2" in m for m in messages)
    written = [m for m in messages if "written" in m]
    assert len(written) == 4 and all(path in m for m in written)  # iterations 3..6


def _changed_value(X):
    X = X.copy()
    X[1234, 1] += 1e-9
    return X, {}


@pytest.fixture(scope="module")
def one_iteration(tmp_path_factory, data) -> str:
    """A checkpoint after one iteration of ``settings(max_iter=1)``."""
    path = str(tmp_path_factory.mktemp("one") / "ck")
    fit_quietly(dgmm.GaussianMixture(**settings(max_iter=1), checkpoint=path), data.X)
    return path


@pytest.mark.parametrize(
    "change, field",
    [
        pytest.param(lambda X: (X[:-1], {}), "data.X.shape", id="fewer-rows"),
        pytest.param(_changed_value, "data.X.content_sha256", id="one-value-changed"),
        pytest.param(lambda X: (X.astype(np.float32), {}), "data.X.dtype", id="dtype"),
        pytest.param(lambda X: (X, {"chunks": 600}), "data.X.row_chunks", id="chunks"),
        pytest.param(lambda X: (X, {"n_components": 4}), "config.n_components", id="n_components"),
        pytest.param(lambda X: (X, {"covariance_type": "diag"}), "config.covariance_type", id="covariance_type"),
        pytest.param(lambda X: (X, {"random_state": 6}), "config.random_state", id="random_state"),
        pytest.param(lambda X: (X, {"tol": 1e-3}), "config.tol", id="tol"),
        pytest.param(lambda X: (X, {"reg_covar": 1e-4}), "config.reg_covar", id="reg_covar"),
        pytest.param(lambda X: (X, {"init_params": "k-means++"}), "config.init_params", id="init_params"),
        pytest.param(lambda X: (X, {"means_init": X[:3]}), "config.means_init", id="means_init"),
        pytest.param(lambda X: (X, {"block_size": 100}), "config.block_size", id="block_size"),
    ],
)
def test_a_different_fit_is_refused_naming_the_field(one_iteration, data, change, field):
    path = one_iteration
    X, kw = change(data.X)
    with pytest.raises(CheckpointMismatchError) as info:
        fit_quietly(dgmm.GaussianMixture(**settings(max_iter=1, **kw), checkpoint=path), X)
    message = str(info.value)
    assert field in message
    assert path in message and "delet" in message  # how to start over
    assert checkpoint_iteration(path) == 1  # the checkpoint is untouched


def test_store_backed_data_resumes(tmp_path, monkeypatch, data):
    import zarr

    store = str(tmp_path / "data.zarr")
    z = zarr.create_array(store, shape=data.X.shape, chunks=(400, 3), dtype="float64")
    z[:] = data.X
    want = fit_quietly(dgmm.GaussianMixture(**settings(chunks=None)), dgmm.open_dataset(store))
    path = str(tmp_path / "ck")
    fit_interrupted_after(monkeypatch, dgmm.GaussianMixture(**settings(chunks=None), checkpoint=path), store, 2)
    fingerprint = Checkpoint(path).read().fingerprint["data"]["X"]
    assert "name" in fingerprint and "content_sha256" not in fingerprint
    got = fit_quietly(dgmm.GaussianMixture(**settings(chunks=None), checkpoint=path), store)
    assert_identical(got, want)


def test_s3_checkpoint(tmp_path, monkeypatch, data, s3_server):
    from tests.s3 import new_bucket

    url = f"s3://{new_bucket(s3_server)}/fits/run1"
    options = s3_server["storage_options"]
    kw = settings("tied")
    want = reference(data, "tied")
    gmm = dgmm.GaussianMixture(**kw, checkpoint=url, checkpoint_storage_options=options)
    fit_interrupted_after(monkeypatch, gmm, data.X, 3)
    assert Checkpoint(url, storage_options=options).read().iteration == 3
    got = fit_quietly(dgmm.GaussianMixture(**kw, checkpoint=url, checkpoint_storage_options=options), data.X)
    assert_identical(got, want)


# -- Ctrl-C ---------------------------------------------------------------------


def sigint():
    signal.raise_signal(signal.SIGINT)


def test_ctrl_c_stops_after_the_iteration_checkpoint(tmp_path, monkeypatch, data):
    want = reference(data, "full")
    path = str(tmp_path / "ck")
    before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        m.setattr(em, "_graph", PassHook(3, sigint))  # Ctrl-C during the 3rd pass
        with pytest.raises(FitInterrupted) as info:
            fit_quietly(dgmm.GaussianMixture(**settings(), checkpoint=path), data.X)
    assert signal.getsignal(signal.SIGINT) is before
    assert isinstance(info.value, KeyboardInterrupt) and not isinstance(info.value, Exception)
    message = str(info.value)
    assert "iteration 3" in message and f"checkpoint={path!r}" in message and "same" in message
    assert checkpoint_iteration(path) == 3  # the pass in progress was finished and saved
    got = fit_quietly(dgmm.GaussianMixture(**settings(), checkpoint=path), data.X)
    assert_identical(got, want)


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch, data):
    path = str(tmp_path / "ck")
    before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        m.setattr(em, "_graph", PassHook(3, lambda: (sigint(), sigint())))
        with pytest.raises(KeyboardInterrupt) as info:
            fit_quietly(dgmm.GaussianMixture(**settings(), checkpoint=path), data.X)
    assert type(info.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is before
    assert checkpoint_iteration(path) == 2


def test_without_checkpoint_ctrl_c_is_untouched(monkeypatch, data):
    before = signal.getsignal(signal.SIGINT)
    seen = []
    monkeypatch.setattr(em, "_graph", PassHook(2, lambda: seen.append(signal.getsignal(signal.SIGINT))))
    fit_quietly(dgmm.GaussianMixture(**settings(max_iter=2)), data.X)
    assert seen == [before]
    monkeypatch.setattr(em, "_graph", PassHook(2, sigint))
    with pytest.raises(KeyboardInterrupt) as info:
        fit_quietly(dgmm.GaussianMixture(**settings()), data.X)
    assert type(info.value) is KeyboardInterrupt


def test_the_handler_is_only_installed_in_the_main_thread(tmp_path, data):
    import threading

    before = signal.getsignal(signal.SIGINT)
    errors = []

    def run():
        try:
            fit_quietly(dgmm.GaussianMixture(**settings(max_iter=2), checkpoint=str(tmp_path / "ck")), data.X)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert not errors and signal.getsignal(signal.SIGINT) is before
    assert checkpoint_iteration(tmp_path / "ck") == 2


# -- real processes ---------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, logging, os, re, sys, time, warnings
    import numpy as np
    from distributed import Client
    import dgmm

    checkpoint, address, out = sys.argv[1:4]
    pause = float(os.environ.get("DGMM_TEST_PAUSE", "0"))

    class Progress(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            written = re.search(r"checkpoint .*: iteration (\\d+) written", message)
            if written:
                print("CHECKPOINT", written.group(1), flush=True)
            elif re.match(r"restart 0 iteration \\d+: mean log-likelihood", message):
                time.sleep(pause)  # inside an iteration: its pass done, its checkpoint not yet

    logger = logging.getLogger("dgmm")
    logger.setLevel(logging.INFO)
    logger.addHandler(Progress())
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 5, (4, 4))
    X = np.vstack([c + rng.normal(size=(4000, 4)) for c in centres])
    if address == "local":
        client = Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0")
    else:
        client = Client(address, timeout=float(os.environ.get("DGMM_TEST_CLIENT_TIMEOUT", "30")))
    gmm = dgmm.GaussianMixture(
        4, n_init=2, init_params="random_from_data", tol=0.0, max_iter=8, random_state=3,
        chunks=2000, checkpoint=None if checkpoint == "-" else checkpoint,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gmm.fit(X)
    np.savez(out, **{n: getattr(gmm, n) for n in
                     ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_")})
    with open(out + ".json", "w") as f:
        json.dump([{k: v for k, v in h.items() if k not in ("seconds", "rows_per_second", "gb_per_second")}
                   for h in gmm.history_], f)
    client.close()
    print("DONE", flush=True)
    """
)

PAUSE = 0.25  # seconds inside every iteration: a window to kill the process in


def _env(pause: float) -> dict[str, str]:
    from tests.procs import REPO_ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # One BLAS thread in the client, as distributed's nanny sets in every worker.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["DGMM_TEST_PAUSE"] = str(pause)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


class FitProcess:
    """The fit script in a subprocess; ``wait_for_checkpoint(k)`` follows its progress."""

    def __init__(
        self, tmp: Path, checkpoint: str, address: str, out: str, pause: float = PAUSE,
        env: dict[str, str] | None = None,
    ) -> None:
        script = tmp / "fit_script.py"
        script.write_text(SCRIPT)
        self.out = out
        self.stderr_path = Path(out + ".stderr")
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), checkpoint, address, out],
                stdout=subprocess.PIPE, stderr=stderr, env={**_env(pause), **(env or {})},
                text=True, start_new_session=True,
            )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_checkpoint(self, iteration: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.split() == ["CHECKPOINT", str(iteration)]:
                return
        raise AssertionError(f"no checkpoint {iteration}: {self.lines} {self.finish(10)[1]}")

    def finish(self, timeout: float = 120.0) -> tuple[int, str]:
        """Wait for the exit (killing it after ``timeout`` s): ``(returncode, stderr)``."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(30)
        self._reader.join(30)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode, self.stderr_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> FitProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.proc.wait(30)
        self.proc.stdout.close()


def run_fit(tmp: Path, checkpoint: str, address: str, name: str) -> dict:
    out = str(tmp / f"{name}.npz")
    with FitProcess(tmp, checkpoint, address, out, pause=0.0) as fit:
        code, err = fit.finish()
    assert code == 0, err
    return load_result(out)


def load_result(out: str) -> dict:
    with np.load(out, allow_pickle=False) as f:
        result = {k: f[k] for k in f.files}
    result["history"] = json.loads(Path(out + ".json").read_text())
    return result


def assert_same_result(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        if name == "history":
            assert got[name] == want[name]
        else:
            assert np.array_equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> dict:
    """The fit script run to the end without a checkpoint, in its own process."""
    tmp = tmp_path_factory.mktemp("undisturbed")
    return run_fit(tmp, "-", "local", "reference")


def test_sigint_in_a_real_process_then_the_same_command_resumes(tmp_path, undisturbed):
    path = str(tmp_path / "ck")
    with FitProcess(tmp_path, path, "local", str(tmp_path / "a.npz")) as fit:
        fit.wait_for_checkpoint(1)
        time.sleep(PAUSE / 2)  # inside iteration 2
        fit.kill(signal.SIGINT)
        code, err = fit.finish()
    assert code != 0, err
    assert "FitInterrupted" in err and f"checkpoint={path!r}" in err
    # The iteration in progress (2, unless this test was slow to read the
    # output) was finished and written, then the fit stopped.
    stopped = int(re.search(r"after iteration (\d+)", err).group(1))
    assert stopped >= 2 and checkpoint_iteration(path) == stopped
    assert ["CHECKPOINT", str(stopped + 1)] not in [line.split() for line in fit.lines]
    assert_same_result(run_fit(tmp_path, path, "local", "resumed"), undisturbed)


def test_client_then_scheduler_killed_mid_fit_then_the_same_command_resumes(tmp_path, undisturbed):
    """One cluster, three runs of the same command: the client is SIGKILLed inside
    iteration 3; the second run resumes and loses its scheduler (SIGKILL) after
    iteration 4; the third, on a new cluster, finishes identical to an
    undisturbed run."""
    from tests.procs import dask_processes

    path = str(tmp_path / "ck")
    # A user's choice too: give up on an unreachable scheduler after 5 s, not 30.
    env = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s", "DGMM_TEST_CLIENT_TIMEOUT": "5"}
    with dask_processes(n_workers=2) as procs:
        with FitProcess(tmp_path, path, procs.address, str(tmp_path / "a.npz"), env=env) as fit:
            fit.wait_for_checkpoint(2)
            time.sleep(PAUSE / 2)  # inside iteration 3: its pass done, its checkpoint not written
            fit.kill(signal.SIGKILL)
            code, _ = fit.finish()
        assert code == -signal.SIGKILL
        killed_after = checkpoint_iteration(path)
        assert killed_after >= 2

        with FitProcess(tmp_path, path, procs.address, str(tmp_path / "b.npz"), env=env) as fit:
            fit.wait_for_checkpoint(4)
            # Resumed: the first write is the iteration after the last checkpoint, not 0.
            assert fit.lines[0].split() == ["CHECKPOINT", str(killed_after + 1)]
            procs.kill_scheduler()
            code, err = fit.finish(timeout=120)
        assert code != 0 and "DONE" not in fit.lines, err
        assert checkpoint_iteration(path) >= 4

    # On a new cluster (here the script's own), the same command finishes the fit.
    assert_same_result(run_fit(tmp_path, path, "local", "resumed"), undisturbed)
