"""Where a fit runs: a given client, the current one, a scheduler address,
this process, or a LocalCluster of our own.

``connect`` picks, in this order: an explicit ``client``; an explicit
``scheduler_address``; an explicit ``scheduler`` name (or Dask's
``scheduler`` config set to one); the current default ``distributed.Client``;
Dask's ``scheduler-address`` config (``DASK_SCHEDULER_ADDRESS``); input already
in this process's memory runs here, on Dask's threaded scheduler
(synchronously when it is too small to split); else (stored sources) a
LocalCluster that dgmm starts and closes. Explicit arguments win over ambient
state, so a ``scheduler_address=`` given in code is never silently replaced by
a client created elsewhere in the session.

In this process the passes build the same graph (same chunks, same fixed
reduction tree, same kernels, BLAS pinned to one thread inside every task by
``dgmm.graph``), so the result is bit-identical to the same fit on a cluster.
Nothing is scattered or persisted, no worker can be lost, and the yielded
client is ``None``: every helper here accepts it.

A LocalCluster that dgmm starts has one worker process per core, one thread
each; distributed's nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in the workers
before they start (``distributed.nanny.pre-spawn-environ``, checked by
``tests/test_cluster.py``), so BLAS never oversubscribes the cores.
Data-parallelism comes from Dask splitting rows across workers, which is
where the speed-up is on BLAS-3 shapes this small.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from distributed import Client, LocalCluster, wait

from dgmm import graph
from dgmm.errors import ClusterConnectionError, ClusterLostError, InvalidOptionError
from dgmm.io.sources import is_in_memory
from dgmm.io.sparse import estimated_nbytes

__all__ = [
    "SCHEDULERS",
    "Scheduler",
    "WorkerWatch",
    "connect",
    "placement",
    "fit_client",
    "maybe_persist",
    "recoverable",
    "redo_while_recoverable",
    "scheduler_workers",
    "total_threads",
]

logger = logging.getLogger("dgmm")
_T = TypeVar("_T")

# Persist the input when it takes at most this fraction of the workers' memory.
PERSIST_FRACTION = 0.5
# Fits redone after losing data that only the client holds (scattered chunks).
MAX_RECOVERIES = 3

Scheduler = Literal["threads", "synchronous", "processes"]
SCHEDULERS: tuple[str, ...] = ("threads", "synchronous", "processes")
# Dask's other names of the same schedulers (``dask.config.set(scheduler=...)``).
_ALIASES = {
    "threading": "threads", "sync": "synchronous", "single-threaded": "synchronous",
    "multiprocessing": "processes",
}
# In-memory input of at most this many rows runs synchronously: default
# chunking gives it one chunk (``MIN_CHUNK_ROWS``), so there is nothing for a
# thread pool to split (benchmarks/README.md, "Small data, in process").
SYNCHRONOUS_MAX_ROWS = 4096
# In-memory input of more bytes than this goes to a LocalCluster instead of
# this process's threads. None: never (on 2 cores, threads beat a LocalCluster,
# start-up included, at 1e5 x 8 and 1e6 x 16; not settled at 4e5 x 16 under
# heavy load; benchmarks/README.md, "Small data, in process").
IN_PROCESS_MAX_BYTES: int | None = None


def _current_client() -> Client | None:
    """The running default client (:func:`dgmm.graph.current_client`, the one lookup)."""
    return graph.current_client()


def _configured_address() -> str | None:
    """Dask's ``scheduler-address`` config, or ``DASK_SCHEDULER_ADDRESS`` set after import."""
    return dask.config.get("scheduler-address", None) or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def _n_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _connect_timeout(timeout: float | str | None) -> float:
    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    return float(dask.utils.parse_timedelta(timeout, default="seconds"))


def _open_client(
    address: str, *, security: Any = None, timeout: float | str | None = None, source: str = "argument"
) -> Client:
    """A new (non-default) client of the scheduler at ``address``, or a typed error.

    Failures (nothing listening, a TLS scheduler reached without certificates,
    a certificate the scheduler's CA did not sign, a malformed address) become
    ``ClusterConnectionError`` naming the address and what to check, after at
    most ``timeout`` seconds (default: ``distributed.comm.timeouts.connect``).
    """
    seconds = _connect_timeout(timeout)
    tls = str(address).startswith("tls://")
    if tls:
        check = (
            "that a scheduler is running there and that the client has TLS credentials "
            "the scheduler accepts: a distributed.security.Security(tls_ca_file=..., "
            "tls_client_cert=..., tls_client_key=..., require_encryption=True) passed as "
            "security=, or the distributed.comm.tls.* Dask config"
        )
    else:
        check = (
            "that a scheduler is running there (`dask scheduler`), that the host and port "
            "are reachable from this machine, and the protocol (tcp:// or tls://) it serves"
        )
    # Checked before Client(): a Client that fails in its constructor on these
    # lingers and times out in __del__.
    try:
        from distributed.comm.addressing import parse_address
        from distributed.comm.registry import get_backend

        scheme, _ = parse_address(str(address), strict=False)
        get_backend(scheme)
    except ValueError as exc:
        raise ClusterConnectionError(
            f"Could not connect to the Dask scheduler at {address!r} (from the {source}): "
            f"the address is malformed ({exc}). Expected an address like "
            "'tcp://host:8786' or 'tls://host:8786'."
        ) from None
    if tls:
        from distributed.security import Security

        credentials = security if security is not None else Security()
        if credentials.get_connection_args("client").get("ssl_context") is None:
            raise ClusterConnectionError(
                f"Could not connect to the Dask scheduler at {address!r} (from the {source}): "
                "a tls:// address needs TLS credentials, and none were given. Check "
                f"{check}."
            )
    try:
        return Client(address, security=security, timeout=seconds, set_as_default=False)
    except (OSError, TypeError, TimeoutError) as exc:
        # TypeError: distributed's "TLS expects a ssl_context" when no certificates are set.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterConnectionError(
            f"Could not connect to the Dask scheduler at {address!r} (from the {source}) "
            f"within {seconds:g} s: {reason}. Check {check}."
        ) from exc


def _named(scheduler: str | None) -> str | None:
    """``scheduler`` (or an alias Dask accepts) as one of ``SCHEDULERS``; None for anything else."""
    if not isinstance(scheduler, str):
        return None
    name = _ALIASES.get(scheduler.lower(), scheduler.lower())
    return name if name in SCHEDULERS else None


# Modules whose task functions read storage: a Dask array built on them is not in memory.
_READER_MODULES = ("dgmm.io", "zarr", "pyarrow", "fsspec", "h5py", "netCDF4", "tifffile", "xarray.backends")
# Dask graphs with more nodes than this are not walked (taken as not in memory).
_MAX_GRAPH_NODES = 20_000


def _memory_only_graph(x: da.Array) -> bool:
    """Whether every value of ``x``'s graph is a NumPy array, a scalar or a task of no reader module."""
    from dask._task_spec import DataNode, GraphNode, Task

    graph = x.__dask_graph__()
    if len(graph) > _MAX_GRAPH_NODES:
        return False
    for value in graph.values():
        if isinstance(value, DataNode):
            value = value.value
        elif isinstance(value, Task):
            module = getattr(value.func, "__module__", None) or ""
            if module.startswith(_READER_MODULES):
                return False
            continue
        elif isinstance(value, GraphNode):
            continue
        if not isinstance(value, (np.ndarray, np.generic, int, float, str, bytes, tuple, type(None))):
            return False  # a zarr.Array, an h5py dataset, a file handle: storage
    return True


def placement(data: Any = None, scheduler: str | None = None) -> Scheduler | None:
    """Where a fit of ``data`` runs when no client or address is given or current.

    ``scheduler`` (or Dask's ``scheduler`` config naming one of
    ``SCHEDULERS``) decides when given. Otherwise input in this process's
    memory (NumPy, pandas, xarray of NumPy, a Dask array whose graph holds
    only NumPy data) runs here: ``"synchronous"`` up to
    ``SYNCHRONOUS_MAX_ROWS`` rows, ``"threads"`` beyond (and up to
    ``IN_PROCESS_MAX_BYTES``); stored sources get ``"processes"`` (a
    LocalCluster). ``None`` when a client or address takes precedence
    (``connect`` decides).
    """
    named = _named(scheduler) or _named(dask.config.get("scheduler", None))
    if named is not None:
        return named
    if _current_client() is not None or _configured_address() is not None:
        return None
    in_memory = data is not None and is_in_memory(data)
    if not in_memory and isinstance(data, da.Array):
        in_memory = _memory_only_graph(data)
    if not in_memory:
        return "processes"
    shape = getattr(data, "shape", None)
    if shape is None:
        shape = np.shape(data)
    n_rows = int(shape[0]) if len(shape) else 0
    nbytes = getattr(data, "nbytes", None)
    if IN_PROCESS_MAX_BYTES is not None and nbytes is not None and nbytes > IN_PROCESS_MAX_BYTES:
        return "processes"
    return "synchronous" if n_rows <= SYNCHRONOUS_MAX_ROWS else "threads"


@contextlib.contextmanager
def _as_current(client: Client) -> Iterator[Client]:
    """Make ``client`` the one dask.compute and dgmm's graph layer use, for the block."""
    if client.status != "running":
        raise ClusterConnectionError(
            f"The Dask client passed to dgmm is {client.status!r}, not running "
            f"(scheduler {getattr(client.scheduler, 'address', None)!r}). Pass an open "
            "Client, or no client to let dgmm find or start a cluster."
        )
    # dask.compute takes Dask's scheduler config before the current client.
    with client.as_current(), dask.config.set(scheduler="dask.distributed"):
        yield client


@contextlib.contextmanager
def _in_process(scheduler: str) -> Iterator[None]:
    """Dask's threaded (or synchronous) scheduler for the block; nothing started."""
    threads = 1 if scheduler == "synchronous" else _pool_size()
    logger.info(
        "dgmm runs in this process on Dask's %s scheduler (%d thread(s)); no cluster started",
        scheduler, threads,
    )
    with dask.config.set(scheduler=scheduler):
        yield None


def _pool_size() -> int:
    """Threads of Dask's threaded scheduler (``num_workers`` config, else the cores)."""
    from dask.system import CPU_COUNT

    return max(1, int(dask.config.get("num_workers", None) or CPU_COUNT))


@contextlib.contextmanager
def connect(
    *,
    client: Client | None = None,
    scheduler_address: str | None = None,
    scheduler: str | None = None,
    data: Any = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    security: Any = None,
    timeout: float | str | None = None,
) -> Iterator[Client | None]:
    """The Dask client a fit runs on (None in this process), current for the block.

    Parameters
    ----------
    client : distributed.Client, optional
        Use this client (never closed here).
    scheduler_address : str, optional
        Connect to this scheduler (``tcp://host:8786``, ``tls://host:8786``);
        the connection is closed on exit.
    scheduler : {"threads", "synchronous", "processes"}, optional
        Without ``client`` or ``scheduler_address``: run in this process on
        Dask's threaded or synchronous scheduler, or on a LocalCluster of
        worker processes started here. Default: Dask's ``scheduler`` config
        when it names one of these, else decided by ``data`` (:func:`placement`).
    data : any source ``open_dataset`` accepts, optional
        What the block will compute on, to decide where it runs. None (the
        CLI, which reads stored data): a LocalCluster.
    n_workers : int, optional
        Worker processes of a LocalCluster started here (default: one per core).
    threads_per_worker : int, default=1
        Threads per worker process of a LocalCluster started here.
    memory_limit : str or float, default="auto"
        Memory limit per worker of a LocalCluster started here.
    security : distributed.security.Security, optional
        TLS credentials for ``scheduler_address`` (or the configured address).
        Without it, distributed's ``distributed.comm.tls.*`` config applies.
    timeout : float or str, optional
        Seconds to wait for a scheduler before ``ClusterConnectionError``
        (default: ``distributed.comm.timeouts.connect``).

    Yields
    ------
    client : distributed.Client or None
        In order of precedence: ``client``; a connection to
        ``scheduler_address``; None with ``scheduler`` "threads" or
        "synchronous" (Dask's local scheduler set for the block); the current
        default client; a connection to Dask's ``scheduler-address`` config
        or ``DASK_SCHEDULER_ADDRESS``; None for in-memory ``data``; a client
        of a LocalCluster started here, closed on exit (its dashboard link is
        logged on the ``dgmm`` logger).

    Raises
    ------
    ValueError
        ``scheduler`` together with ``client`` or ``scheduler_address``.
    ClusterConnectionError
        No scheduler answered at the address, or TLS refused the connection.
    """
    from threadpoolctl import threadpool_limits

    # This process runs the M-step (and, in process, the tasks): one BLAS
    # thread, whatever OMP/OPENBLAS_NUM_THREADS say. OpenBLAS's threads cost
    # milliseconds per call on K small (d x d) triangular solves on busy cores.
    with threadpool_limits(limits=1, user_api="blas"), _connect(
        client=client, scheduler_address=scheduler_address, scheduler=scheduler, data=data,
        n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
        security=security, timeout=timeout,
    ) as found:
        yield found


@contextlib.contextmanager
def _connect(
    *,
    client: Client | None,
    scheduler_address: str | None,
    scheduler: str | None,
    data: Any,
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    security: Any,
    timeout: float | str | None,
) -> Iterator[Client | None]:
    """``connect`` without the BLAS limit."""
    if scheduler is not None and (client is not None or scheduler_address is not None):
        given = "client" if client is not None else "scheduler_address"
        raise InvalidOptionError(
            f"scheduler={scheduler!r} chooses where a fit runs without a cluster, but "
            f"{given}= was given too. Pass one or the other."
        )
    if client is not None:
        with _as_current(client):
            yield client
        return
    address, source = scheduler_address, "scheduler_address argument"
    where = None if address is not None else placement(data, scheduler)
    if where in ("threads", "synchronous"):
        with _in_process(where):
            yield None
        return
    if address is None and where is None:
        current = _current_client()
        if current is not None:
            with _as_current(current):
                yield current
            return
        address, source = _configured_address(), "Dask config 'scheduler-address'"
    if address is not None:
        own = _open_client(str(address), security=security, timeout=timeout, source=source)
        logger.info("dgmm connected to the Dask scheduler at %s (%s)", address, source)
        try:
            with _as_current(own):
                yield own
        finally:
            own.close()
        return
    n_workers = n_workers or _n_cores()
    with _workers_skip_the_main_script(), LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=":0",
        security=security,
    ) as cluster, Client(cluster, set_as_default=False) as own:
        logger.info(
            "dgmm started a LocalCluster: %d workers x %d thread(s); dashboard %s",
            n_workers, threads_per_worker, own.dashboard_link,
        )
        with _as_current(own):
            yield own


@contextlib.contextmanager
def _workers_skip_the_main_script() -> Iterator[None]:
    """While dgmm's own LocalCluster lives, its worker processes do not run the user's script.

    multiprocessing's "spawn" (distributed's default start method) runs the
    parent's ``__main__`` again in every child, as ``__mp_main__``, from its
    file or its module name. A plain script without an ``if __name__ ==
    "__main__":`` guard that fits a stored source would then start a
    LocalCluster inside each worker it starts, and fail ("Nanny failed to
    start"). dgmm's tasks need nothing from ``__main__``, so the main module's
    ``__file__`` and ``__spec__`` are hidden (multiprocessing then prepares the
    children without it) while the cluster lives: workers that the nanny
    restarts later start the same way.
    """
    main = sys.modules.get("__main__")
    hidden = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    if main is None or not any(v is not None for v in hidden.values()):
        yield
        return
    for name in hidden:
        if name == "__spec__":
            main.__spec__ = None
        else:
            delattr(main, name)
    try:
        yield
    finally:
        for name, value in hidden.items():
            setattr(main, name, value)


def fit_client() -> contextlib.AbstractContextManager[Client]:
    """``connect()`` with its defaults (kept for older call sites)."""
    return connect()


def scheduler_workers(client: Client) -> set[str]:
    """Addresses of the workers the scheduler knows now (a fresh query)."""
    return set(_workers(client))


def _scheduler_address(client: Client) -> str:
    return str(getattr(client.scheduler, "address", None) or "unknown")


class WorkerWatch:
    """Workers lost or joined during a fit, found by asking the scheduler after each pass.

    Called as ``on_iteration(iteration, restarts)``; every change is logged on
    the ``dgmm`` logger at once (WARNING for a loss) and kept as an event
    ``{"event": "worker_lost" | "worker_joined" | "refit_after_lost_data", ...}``
    of the iteration whose pass it happened in, for ``attach`` to put into
    the fitted ``history_``.
    """

    def __init__(self, client: Client | None) -> None:
        self.client = client
        self.iteration = 0
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.known = self._workers()

    def _workers(self) -> set[str] | None:
        if self.client is None:
            return None
        try:
            return scheduler_workers(self.client)
        except Exception:  # a lost scheduler is reported by the pass that needs it
            return None

    def __call__(self, iteration: int, restarts: Any = None) -> None:
        self.check(iteration)
        self.iteration = iteration

    def check(self, iteration: int) -> None:
        """Compare the scheduler's workers now with the last look; record changes."""
        now = self._workers()
        if now is None or self.known is None:
            self.known = now if now is not None else self.known
            return
        lost, joined = sorted(self.known - now), sorted(now - self.known)
        self.known = now
        if lost:
            logger.warning(
                "iteration %d: lost %d worker(s) %s during the pass; %d left. Dask "
                "recomputes their tasks elsewhere.", iteration, len(lost), ", ".join(lost), len(now),
            )
            self.record(iteration, {"event": "worker_lost", "workers": lost, "n_workers": len(now)})
        if joined:
            logger.info("iteration %d: %d worker(s) joined: %s", iteration, len(joined), ", ".join(joined))
            self.record(iteration, {"event": "worker_joined", "workers": joined, "n_workers": len(now)})

    def record(self, iteration: int, event: dict[str, Any]) -> None:
        """Keep ``event`` for the history entry of ``iteration``."""
        self.events.append((iteration, event))

    def attach(self, history: list[dict[str, Any]]) -> None:
        """Add the recorded events to ``history`` (entries of iteration 1, 2, ...)."""
        if not history:
            return
        by_iteration = {h["iteration"]: h for h in history}
        for iteration, event in self.events:
            entry = by_iteration.get(iteration) or (history[0] if iteration < history[0]["iteration"] else history[-1])
            entry["events"].append(event)
        self.events = []


def redo_while_recoverable(client: Client | None, watch: WorkerWatch | None, attempt: Callable[[], _T]) -> _T:
    """``attempt()``, redone on the same cluster for as long as :func:`recoverable` says so.

    A lost worker took chunks only the client has (or the scattered
    parameters): the attempt sends them again and redoes the fit (bit-identical).
    """
    for n in itertools.count():
        try:
            return attempt()
        except Exception as exc:
            if not recoverable(client, exc, n, watch):
                raise
    raise AssertionError("unreachable")  # itertools.count() never ends


def recoverable(client: Client | None, exc: BaseException, attempt: int, watch: WorkerWatch | None = None) -> bool:
    """Whether a fit that raised ``exc`` should be redone on the same cluster.

    In this process (``client`` None) no worker can be lost: always False.

    True when data the cluster held was lost with a worker (Dask cancels the
    pass with "lost dependencies" or "already forgotten": scattered in-memory
    chunks or the scattered parameters have no recipe to recompute them) and
    the scheduler is still there, at most ``MAX_RECOVERIES`` times. Raises
    ``ClusterLostError`` when the scheduler connection itself is gone; False
    for any other error (re-raise it).
    """
    from concurrent.futures import CancelledError

    if client is None:
        return False
    lost_scheduler = client.status not in ("running", "connecting") or "scheduler-connection-lost" in str(exc)
    if not lost_scheduler and isinstance(exc, OSError):
        # A comm error on a live-looking client: ask the scheduler whether it is still there.
        try:
            client.sync(client.scheduler.identity, n_workers=0)  # cheap round trip
        except Exception:
            lost_scheduler = True
    if lost_scheduler:
        raise ClusterLostError(
            f"Lost the connection to the Dask scheduler at {_scheduler_address(client)} during "
            f"the fit ({type(exc).__name__}: {' '.join(str(exc).split())}). Check that the "
            "scheduler process is running and reachable, then run the fit again: with "
            "checkpoint= set it resumes from the last completed iteration."
        ) from exc
    if not isinstance(exc, CancelledError):
        return False
    if watch is not None:
        watch.check(watch.iteration + 1)
    if attempt >= MAX_RECOVERIES:
        raise ClusterLostError(
            f"The fit lost data held by Dask workers {attempt + 1} times ({' '.join(str(exc).split())}); "
            f"gave up after {MAX_RECOVERIES} recoveries. Check the workers' logs for why they die "
            "(memory limits, OOM killer), or pass data in storage (Zarr, Parquet) that Dask can "
            "re-read instead of an in-memory array."
        ) from exc
    logger.warning(
        "the pass was cancelled because data held by a lost worker is gone (%s); "
        "re-sending the in-memory data and redoing the fit (recovery %d of %d; it resumes "
        "from the checkpoint when checkpoint= is set)", " ".join(str(exc).split()), attempt + 1, MAX_RECOVERIES,
    )
    if watch is not None:
        watch.record(watch.iteration + 1, {"event": "refit_after_lost_data", "reason": " ".join(str(exc).split())})
    return True


def _workers(client: Client) -> dict[str, Any]:
    """The scheduler's workers, asked now.

    Not ``client.scheduler_info()``: it returns the client's cached identity,
    which its periodic refresh (fetched without per-worker details) can
    replace between the fetch and the return, showing no workers at all.
    """
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # releases whose identity() lists every worker and takes no n_workers
        info = client.sync(client.scheduler.identity)
    return dict(info.get("workers", {}))


def total_threads(client: Client | None) -> int:
    """Threads across the cluster's workers, or of this process's Dask pool (at least 1).

    Synchronous runs count the pool too: default chunks are then the same
    whichever way in-memory input runs here, and so are the results.
    """
    if client is None:
        return _pool_size()
    return max(1, sum(w.get("nthreads", 1) for w in _workers(client).values()))


def total_memory(client: Client) -> float:
    """Memory the workers can still give to data, in bytes (0 when unlimited or unknown).

    Each worker's memory limit less what its process already holds: an idle
    worker process is ~250 MB, a large share of a small limit, and data
    persisted into it would spill.
    """
    free = 0.0
    for w in _workers(client).values():
        limit = w.get("memory_limit", 0) or 0
        if not limit:
            return 0.0
        used = (w.get("metrics") or {}).get("memory", 0) or 0
        free += max(0.0, float(limit) - float(used))
    return free


def maybe_persist(x: da.Array, client: Client | None) -> da.Array:
    """Persist ``x`` once when it fits comfortably in the workers' memory.

    In this process (``client`` None) there are no workers: ``x`` unchanged,
    read from its source every pass. Either way the EM passes run the same graph code; a persisted array just
    has no storage reads in it.
    """
    if client is None:
        return x
    memory = total_memory(client)
    # Sparse chunks (CSR) hold their non-zeros, not rows x features; a sparse
    # array of unknown size (a user's Dask array of CSR chunks) is streamed.
    nbytes = estimated_nbytes(x) if isinstance(x._meta, sp.spmatrix) else x.nbytes
    if memory and nbytes is not None and nbytes <= PERSIST_FRACTION * memory:
        x = client.persist(x)
        wait(x)
        logger.info("input of %.3g GB persisted in cluster memory", nbytes / 1e9)
    else:
        logger.info(
            "input of %s streamed from storage every pass (workers have %.3g GB free)",
            "unknown size" if nbytes is None else f"{nbytes / 1e9:.3g} GB", memory / 1e9,
        )
    return x
