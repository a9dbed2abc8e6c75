"""Real processes, real faults: ``dask scheduler`` and ``dask worker``
subprocesses on 127.0.0.1 (tests/procs.py).

* Determinism: the same Zarr store (``dgmm.open_dataset``), chunking and
  seed give bit-identical parameters and lower bounds on 1, 2 and 4 worker
  processes.
* A worker killed with SIGKILL in the middle of a pass: the fit completes,
  bit-identical to an undisturbed one, with the loss in ``history_`` and the
  log. Store-backed input (streamed or persisted) is recomputed by Dask from
  storage; in-memory input, which only the client has, is sent again and the
  fit redone (from its checkpoint when it has one).
* The scheduler killed mid-fit: a ``ClusterLostError`` that names the
  scheduler, promptly (a hang guard, not a speed check).

One scheduler serves the module (process start-up dominates the cost): it
starts with one worker, grows to 4 for the determinism test, loses one
worker per fault test, and is killed by the last test.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture, open_dataset
from dgmm.errors import ClusterLostError
from dgmm.fit import cluster
from tests.procs import dask_processes, slow_rows

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_ROWS, N_FEATURES, CHUNK = 96_000, 4, 4_000  # 24 chunks
# tol=0: every fit runs exactly max_iter passes, so runs compare entry by entry.
FIT = dict(
    n_components=4, covariance_type="full", random_state=0, init_params="random_from_data",
    max_iter=6, tol=0.0,
)
# Parameters whose scattered copy dies with a worker (class name + uuid hex key).
_SCATTERED_OBJECT = re.compile(r"^[A-Z]\w*-[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(4)
    means = rng.normal(0, 5, (4, N_FEATURES))
    return means[rng.integers(0, 4, N_ROWS)] + rng.normal(size=(N_ROWS, N_FEATURES))


@pytest.fixture(scope="module")
def store(data, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("faults") / "x.zarr")
    da.to_zarr(da.from_array(data, chunks=(CHUNK, N_FEATURES)), path)
    return path


def _open(store: str, slow: float = 0.0) -> da.Array:
    x = open_dataset(store, chunks=CHUNK)
    assert x.chunks[0] == (CHUNK,) * (N_ROWS // CHUNK)
    # A pause per chunk read stretches a pass so a kill lands inside it.
    return x.map_blocks(slow_rows, slow, dtype=x.dtype) if slow else x


def _same_fit(a: GaussianMixture, b: GaussianMixture) -> None:
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.lower_bounds_, b.lower_bounds_)
    assert a.n_iter_ == b.n_iter_


def _events(gmm: GaussianMixture, kind: str) -> list[dict[str, Any]]:
    return [e for h in gmm.history_ for e in h["events"] if e["event"] == kind]


@pytest.fixture(scope="module")
def remote():
    with dask_processes(n_workers=1) as procs, procs.client(set_as_default=False) as client:
        yield procs, client


def _grow(procs: Any, client: Any, n_workers: int) -> None:
    """Start the missing workers together, then wait for all of them."""
    missing = n_workers - len(cluster.scheduler_workers(client))
    for _ in range(missing):
        procs.add_worker(wait=False)
    if missing > 0:
        procs.wait_for_workers(n_workers)


@pytest.fixture(scope="module")
def reference(remote, store) -> GaussianMixture:
    """An undisturbed fit of the store (on one worker when the module runs in order)."""
    _, client = remote
    return GaussianMixture(**FIT, client=client).fit(_open(store))


# -- determinism across worker counts -----------------------------------------


def test_bit_identical_on_1_2_and_4_worker_processes(remote, store):
    procs, client = remote
    fits = {}
    for n_workers in (1, 2, 4):
        if n_workers == 1:
            assert len(cluster.scheduler_workers(client)) == 1, "run the module in order"
        _grow(procs, client, n_workers)
        assert len(cluster.scheduler_workers(client)) == n_workers
        fits[n_workers] = GaussianMixture(**FIT, client=client).fit(_open(store))
        assert not _events(fits[n_workers], "worker_lost")
    _same_fit(fits[1], fits[2])
    _same_fit(fits[1], fits[4])


# -- a worker killed mid-pass ------------------------------------------------------


class KillWorkerMidPass(logging.Handler):
    """SIGKILL one worker while pass ``iteration`` has tasks running on it.

    Armed by the ``dgmm`` log line of iteration ``iteration - 1``; then polls
    the scheduler and kills the first worker that is processing tasks and
    satisfies ``choose(keys it holds)``.
    """

    def __init__(self, procs: Any, client: Any, iteration: int, choose: Any) -> None:
        super().__init__()
        self.procs, self.client, self.iteration, self.choose = procs, client, iteration, choose
        self.thread: threading.Thread | None = None
        self.killed: str | None = None
        self.processing = 0
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.thread is None and re.search(rf"\biteration {self.iteration - 1}\b", message) \
                and "log-likelihood" in message:
            self.thread = threading.Thread(target=self._kill, daemon=True)
            self.thread.start()

    def _kill(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                processing = self.client.processing()
                held = self.client.has_what()
                for address, keys in processing.items():
                    if keys and self.choose(held.get(address, ())):
                        self.procs.kill_worker(self.procs.worker_index(self.client, address))
                        self.killed, self.processing = address, len(keys)
                        return
                time.sleep(0.005)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> KillWorkerMidPass:
        logger = logging.getLogger("dgmm")
        self.level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("dgmm").removeHandler(self)
        logging.getLogger("dgmm").setLevel(self.level)
        if self.thread is not None:
            self.thread.join(60)


def _holds_no_scattered_parameters(keys: Any) -> bool:
    return not any(isinstance(k, str) and _SCATTERED_OBJECT.match(k) for k in keys)


@pytest.mark.parametrize("storage", ["streamed", "persisted"])
def test_worker_killed_mid_pass_store_backed(remote, store, reference, storage, monkeypatch, caplog):
    procs, client = remote
    _grow(procs, client, 2)
    if storage == "streamed":
        monkeypatch.setattr(cluster, "PERSIST_FRACTION", 0.0)
    caplog.set_level(logging.INFO, logger="dgmm")
    # Kill a worker that holds no scattered parameters: what it loses is
    # recomputable from the store, so Dask alone must recover the pass.
    with KillWorkerMidPass(procs, client, 3, _holds_no_scattered_parameters) as killer:
        gmm = GaussianMixture(**FIT, client=client).fit(_open(store, slow=0.05))
    assert killer.error is None, killer.error
    assert killer.killed is not None and killer.processing > 0, "no worker was killed mid-pass"
    _same_fit(gmm, reference)
    lost = _events(gmm, "worker_lost")
    assert [e["workers"] for e in lost] == [[killer.killed]]
    assert not _events(gmm, "refit_after_lost_data")
    assert any(killer.killed in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_worker_killed_mid_pass_in_memory_input_is_sent_again(remote, data, reference, caplog):
    procs, client = remote
    _grow(procs, client, 2)
    caplog.set_level(logging.INFO, logger="dgmm")
    with KillWorkerMidPass(procs, client, 3, lambda keys: len(keys) > 0) as killer:
        gmm = GaussianMixture(**FIT, chunks=CHUNK, client=client).fit(data)
    assert killer.error is None, killer.error
    assert killer.killed is not None and killer.processing > 0, "no worker was killed mid-pass"
    # Same rows, chunking and seed as the store: the same bits.
    _same_fit(gmm, reference)
    assert [e["workers"] for e in _events(gmm, "worker_lost")] == [[killer.killed]]
    assert len(_events(gmm, "refit_after_lost_data")) == 1
    assert any("lost" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_worker_killed_mid_pass_in_memory_with_checkpoint_resumes_not_restarts(
    remote, data, reference, tmp_path, caplog
):
    procs, client = remote
    _grow(procs, client, 2)
    caplog.set_level(logging.INFO, logger="dgmm")
    checkpoint = str(tmp_path / "ckpt")
    with KillWorkerMidPass(procs, client, 4, lambda keys: len(keys) > 0) as killer:
        gmm = GaussianMixture(**FIT, chunks=CHUNK, client=client, checkpoint=checkpoint).fit(data)
    assert killer.error is None, killer.error
    assert killer.killed is not None and killer.processing > 0, "no worker was killed mid-pass"
    _same_fit(gmm, reference)
    assert len(_events(gmm, "refit_after_lost_data")) == 1
    # The redone fit continued from the checkpoint of iteration 3: passes 1-3 ran once.
    first_pass = [
        r for r in caplog.records
        if re.search(r"\biteration 1\b", r.getMessage()) and "log-likelihood" in r.getMessage()
    ]
    assert len(first_pass) == 1


# -- the scheduler killed mid-fit -------------------------------------------------


def test_scheduler_killed_mid_fit_is_a_prompt_clear_error(remote, data):
    # Last in the module: it kills the module's scheduler.
    procs, client = remote
    timer: list[threading.Timer] = []

    class KillScheduler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not timer and re.search(r"\biteration 1\b", record.getMessage()):
                timer.append(threading.Timer(0.2, procs.kill_scheduler))
                timer[0].start()

    handler = KillScheduler()
    logger = logging.getLogger("dgmm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    start = time.monotonic()
    try:
        with pytest.raises(ClusterLostError) as info:
            GaussianMixture(**{**FIT, "max_iter": 1000}, chunks=CHUNK, scheduler_address=procs.address).fit(data)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # Hang guard: the error comes soon after the kill, it does not wait forever.
    assert time.monotonic() - start < 120
    assert timer and procs.scheduler.poll() is not None
    message = str(info.value)
    assert procs.address in message
    assert "scheduler" in message and "checkpoint" in message
    assert isinstance(info.value, ConnectionError)
