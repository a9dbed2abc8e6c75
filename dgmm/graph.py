"""The one module of the EM path that builds Dask graphs.

* ``stats_pass``: map the model family's ``chunk_stats`` over the row
  chunks, tree-reduce the statistics (merged by ``+``) with a fan-in of
  ``split_every``, compute. One read of every chunk per call, whatever the
  number of lockstep restarts.
* ``map_chunks`` / ``gather_chunks``: other per-chunk kernels of the
  initialisation (costs, samples) with a fixed-order reduction.
* ``lazy_*``: prediction as lazy Dask arrays.
* progress: a pass reports its chunks, rows and bytes done and its
  throughput (:class:`dgmm.core.progress.PassProgress`) to the listeners in
  the caller's context (``listen``), labelled with the phase it runs in
  (``phase``). Nobody listening costs nothing: the pass is the same single
  graph as without progress.

The parameters travel as one object per pass: scattered once when a
distributed client is present, one graph key otherwise, never a literal
repeated in every task. The reduction tree depends only on the chunking and
``split_every``, never on which worker ran what, so results are bit-identical
across worker counts.

Nothing here knows which model is fitted: statistics, the data check and
prediction come from the family of the sources or parameters
(:mod:`dgmm.core.family`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed, delayed

from dgmm.core.family import MixtureParams, ResponsibilitySource, Stats, family_of, merge
from dgmm.core.kernels import require_finite_rows, require_valid_weights
from dgmm.core.options import PassEvent, PredictOutput
from dgmm.core.progress import (
    REPORT_EVERY,
    PassProgress,
    ProgressListener,
    current_phase,
    listen,
    listeners,
    phase,
)
from dgmm.errors import InvalidDataError, InvalidOptionError

__all__ = [
    "DEFAULT_SPLIT_EVERY",
    "PassProgress",
    "ProgressListener",
    "chunk_offsets",
    "current_client",
    "lazy_predict",
    "lazy_predict_many",
    "listen",
    "map_chunks",
    "phase",
    "predict_block",
    "run_tasks",
    "scatter_rows",
    "stats_pass",
    "tree_reduce",
]

DEFAULT_SPLIT_EVERY = 8

#: What a lazy prediction computes per row: the component (``labels``), the
#: responsibilities (``proba``), their logarithms (``log_resp``), or log p(x)
#: (``score_samples``).
PredictWhat = Literal["labels", "proba", "log_resp", "score_samples"]


def chunk_offsets(x: da.Array) -> list[int]:
    """First global row of every row chunk."""
    return [0, *np.cumsum(x.chunks[0])[:-1].tolist()]


def current_client() -> Any:
    """The distributed client a pass runs on now, or None: dgmm's one client lookup.

    The current default ``distributed.Client`` while it is running, unless
    Dask's ``scheduler`` config names a local scheduler (threads,
    synchronous), which wins as it does for ``dask.compute``.
    """
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a core dependency
        return None
    try:
        client = default_client()
    except ValueError:
        return None
    return client if client.status == "running" else None


_BLAS_LOCK = threading.Lock()
_BLAS: dict[str, Any] = {"tasks": 0, "limiter": None, "controller": None}


def _release_openblas_control() -> None:
    """Let the next limit set on a pthreads OpenBLAS take effect, from whichever thread.

    threadpoolctl (3.8 here) lets only one "controlling" Python thread change
    that process-wide limit and silently ignores the others; a limit set outside
    a ``with`` block keeps the control for its thread for good. A Dask worker's
    second thread then ran its chunks with the user's BLAS threads and the first
    with one: a multi-threaded OpenBLAS GEMM sums ``resp.T @ design`` over the
    rows in another order, so identical passes differed in the last bits.
    """
    if "release" not in _BLAS:  # looked up once per process
        import threadpoolctl

        owner = getattr(threadpoolctl, "OpenBLASController", None)
        # None: a threadpoolctl without controlling threads, where any thread sets the limit.
        _BLAS["release"] = getattr(owner, "clear_controlling_thread", None)
    if _BLAS["release"] is not None:
        _BLAS["release"](force=True)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while any dgmm task runs in this process (threadpoolctl).

    Whatever OMP/OPENBLAS_NUM_THREADS say, each Dask thread gets one BLAS
    thread. Counted across threads: the first task in sets the limit and the
    last one out restores it, so a task never has the limit lifted under it.
    The limit is the same in every task: a GEMM's rounding depends on its BLAS
    threads, so chunks run with different limits would give different bits.
    Whichever threads they are, the first task's limit and the last one's
    restore both take effect, and neither keeps threadpoolctl's control.
    """
    with _BLAS_LOCK:
        if _BLAS["tasks"] == 0:
            if _BLAS["controller"] is None:  # found once per process: ~0.25 ms
                from threadpoolctl import ThreadpoolController

                _BLAS["controller"] = ThreadpoolController()
            _release_openblas_control()
            _BLAS["limiter"] = _BLAS["controller"].limit(limits=1, user_api="blas")
            _release_openblas_control()
        _BLAS["tasks"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["tasks"] -= 1
            if _BLAS["tasks"] == 0:
                _release_openblas_control()
                _BLAS["limiter"].restore_original_limits()
                _release_openblas_control()


def _pinned(kernel: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``kernel(*args, **kwargs)`` with one BLAS thread (the task of every per-chunk kernel)."""
    with _one_blas_thread():
        return kernel(*args, **kwargs)


def broadcast(obj: Any) -> Any:
    """One handle to ``obj`` that every task of a pass can depend on."""
    client = current_client()
    if client is not None:
        # hash=False: a new key every pass, so no stale object is reused.
        return client.scatter(obj, hash=False)
    return delayed(obj, pure=True, traverse=False)


def _check_split_every(split_every: int) -> None:
    if split_every < 2:
        raise InvalidOptionError(
            f"split_every must be an integer of at least 2 (the fan-in of the reduction "
            f"tree), got {split_every!r}. Pass split_every=8, the default."
        )


def tree_reduce(parts: Sequence[Any], combine: Callable[[list[Any]], Any], split_every: int) -> Any:
    """Reduce delayed ``parts`` in a fixed tree of fan-in ``split_every``."""
    _check_split_every(split_every)
    level = list(parts)
    while len(level) > 1:
        level = [
            delayed(combine, pure=True)(level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _merge_restarts(parts: list[tuple[Stats, ...]]) -> tuple[Stats, ...]:
    """Merge per-chunk tuples (one statistics object per restart) elementwise."""
    return tuple(merge([p[r] for p in parts]) for r in range(len(parts[0])))


# -- progress of a pass ----------------------------------------------------------------------


class _PassReport:
    """The progress of one pass, sent to the listeners of the caller's context."""

    def __init__(self, kind: str, x: da.Array, heard: tuple[tuple[ProgressListener, bool], ...]) -> None:
        state = current_phase()
        state.passes += 1
        self.head = (state.name, state.step, state.steps, state.passes, kind)
        self.everyone = [listener for listener, _ in heard]
        self.live = [listener for listener, is_live in heard if is_live]
        self.chunk_rows = [int(n) for n in x.chunks[0]]
        self.row_bytes = int(x.dtype.itemsize) * int(np.prod(x.shape[1:], dtype=np.int64))
        self.chunks_done = self.rows_done = 0
        self.start = self.last = time.perf_counter()
        if self.live:
            self._send("pass", self.live)

    def _send(self, event: PassEvent, targets: list[ProgressListener]) -> None:
        n_rows = sum(self.chunk_rows)
        report = PassProgress(
            event, *self.head, self.chunks_done, len(self.chunk_rows),
            self.rows_done, n_rows, self.rows_done * self.row_bytes, n_rows * self.row_bytes,
            time.perf_counter() - self.start,
        )
        for listener in targets:
            listener(report)

    def chunk_done(self, index: int) -> None:
        """Chunk ``index`` has been read and its kernel has run."""
        self.chunks_done += 1
        self.rows_done += self.chunk_rows[index]
        now = time.perf_counter()
        if now - self.last >= REPORT_EVERY and self.chunks_done < len(self.chunk_rows):
            self.last = now
            self._send("pass", self.live)

    def end(self) -> None:
        """The pass has finished: every listener hears it with the full counts."""
        self.chunks_done, self.rows_done = len(self.chunk_rows), sum(self.chunk_rows)
        self._send("end", self.everyone)


def _report(kind: str, x: da.Array) -> _PassReport | None:
    """A report of this pass, or None when nobody listens (then a pass costs nothing more)."""
    heard = listeners()
    return _PassReport(kind, x, heard) if heard else None


def _chunk_callback(keys: dict[Any, int], report: _PassReport) -> Any:
    """Dask's local-scheduler callback telling ``report`` when a per-chunk task (``keys``) finishes."""
    from dask.callbacks import Callback

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        index = keys.get(key)
        if index is not None:
            report.chunk_done(index)

    return Callback(posttask=posttask)


def _compute_followed(parts: list[Delayed], combine: Callable[[list[Any]], Any], split_every: int,
                      report: _PassReport) -> Any:
    """The fixed tree over ``parts`` computed while the chunks' tasks are followed.

    Here (Dask's threads): the one graph, with a callback on the chunks' keys.
    On a cluster: the chunks' results as futures, followed with
    ``distributed.as_completed``, and the same tree of ``combine`` over them
    submitted as futures (same inputs, same order: the same bits).
    """
    client = current_client()
    if client is None:
        with _chunk_callback({p.key: i for i, p in enumerate(parts)}, report):
            (result,) = dask.compute(tree_reduce(parts, combine, split_every))
        return result
    from distributed import as_completed

    _check_split_every(split_every)
    futures = client.compute(parts)
    index = {f.key: i for i, f in enumerate(futures)}
    follow = as_completed(futures)  # holds each chunk's future only until it is yielded
    level = futures
    while len(level) > 1:
        level = [
            client.submit(combine, level[i : i + split_every], pure=False)
            for i in range(0, len(level), split_every)
        ]
    root = level[0]
    # Only the root stays referenced here: the scheduler frees each chunk's (and each
    # combine's) statistics once merged, as in the one-graph pass, so a pass never
    # holds more partial statistics because someone listens.
    del futures, level
    try:
        for future in follow:
            if future.status != "finished":
                break  # the root's result raises the task's exception
            report.chunk_done(index[future.key])
        return root.result()
    except BaseException:
        client.cancel([root])
        raise


def _row_blocks(x: da.Array) -> list[Delayed]:
    """One delayed block per row chunk, all columns."""
    if len(x.chunks[1]) != 1:
        raise InvalidDataError(
            f"dgmm passes need all columns of a row in one chunk; got {len(x.chunks[1])} "
            "column chunks. Rechunk first: x.rechunk({1: -1})."
        )
    return list(x.to_delayed(optimize_graph=True).ravel())


def _weight_blocks(x: da.Array, sample_weight: da.Array | None) -> list[Any]:
    """The sample weights in ``x``'s row chunks (None per chunk without weights)."""
    if sample_weight is None:
        return [None] * len(x.chunks[0])
    if sample_weight.chunks[0] != x.chunks[0]:
        sample_weight = sample_weight.rechunk((x.chunks[0],))
    return list(sample_weight.to_delayed(optimize_graph=True).ravel())


def _families_chunk_stats(
    groups: tuple[tuple[Any, tuple[int, ...]], ...],
    x: Any,
    sources: tuple[ResponsibilitySource, ...],
    w: np.ndarray | None,
    *,
    block_rows: int | None,
    chunk_index: int,
    row_offset: int,
) -> tuple[Stats, ...]:
    """Every family's statistics of one chunk, in the order of ``sources``."""
    out: list[Any] = [None] * len(sources)
    for family, index in groups:
        stats = family.chunk_stats(
            x, tuple(sources[i] for i in index), w,
            block_rows=block_rows, chunk_index=chunk_index, row_offset=row_offset,
        )
        for i, st in zip(index, stats):
            out[i] = st
    return tuple(out)


def _check_all(checks: tuple[Callable[..., None], ...], x: Any, *, row_offset: int, chunk_index: int) -> None:
    for check in checks:
        check(x, row_offset=row_offset, chunk_index=chunk_index)


def _checked(
    kernel: Callable[..., Any],
    check_data: Callable[..., None],
    x: Any,
    shared: Any,
    w: np.ndarray | None,
    *,
    chunk_index: int,
    row_offset: int,
) -> Any:
    """Run ``kernel`` after checking the chunk: its sample weights, then its
    data with ``check_data(x, row_offset=, chunk_index=)``.

    The one NaN/Inf check of a fit, in its first pass only: the chunk is
    already in memory, so the check costs no read.
    """
    require_valid_weights(w, row_offset=row_offset, chunk_index=chunk_index)
    check_data(x, row_offset=row_offset, chunk_index=chunk_index)
    return kernel(x, shared, w, chunk_index=chunk_index, row_offset=row_offset)


def _map_reduce(
    x: da.Array,
    kernel: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    shared: Any,
    sample_weight: da.Array | None,
    split_every: int,
    kind: str = "map",
) -> Any:
    report = _report(kind, x)
    follow = report is not None and bool(report.live)
    if _synchronous() and x.nbytes <= _HERE_MAX_BYTES:
        chunks, chunk_weights = _chunks_here(x, sample_weight)
        result = _map_reduce_here(
            chunks, chunk_weights, chunk_offsets(x), kernel, combine, shared, split_every,
            on_chunk=report.chunk_done if follow else None,
        )
    else:
        blocks, weights = _row_blocks(x), _weight_blocks(x, sample_weight)
        handle = broadcast(shared)
        parts = [
            delayed(_pinned, pure=True)(kernel, block, handle, w, chunk_index=i, row_offset=offset)
            for i, (block, w, offset) in enumerate(zip(blocks, weights, chunk_offsets(x)))
        ]
        if follow:
            result = _compute_followed(parts, combine, split_every, report)
        else:
            (result,) = dask.compute(tree_reduce(parts, combine, split_every))
    if report is not None:
        report.end()
    return result


def _synchronous() -> bool:
    """Whether passes run on Dask's synchronous scheduler in this process (small in-memory data)."""
    return current_client() is None and dask.config.get("scheduler", None) in (
        "sync", "synchronous", "single-threaded",
    )


# The chunks of the last array a synchronous pass read, by the arrays' Dask names:
# a fit makes tens of passes over the same small in-memory array, and each
# ``dask.compute`` of it costs ~1 ms of graph optimisation, the size of the
# arithmetic itself. Dask names identify content, so equal names are equal chunks.
_HERE: dict[str, Any] = {"key": None, "chunks": None}
# Only data this small is held: a synchronous pass over anything larger (a store
# with Dask's scheduler set to "sync") streams its chunks through the graph as usual.
_HERE_MAX_BYTES = 64 << 20
_HERE_LOCK = threading.Lock()


def _chunks_here(x: da.Array, sample_weight: da.Array | None) -> tuple[list[Any], list[Any]]:
    """The row chunks of ``x`` and of the weights, as numpy arrays (one compute per array)."""
    key = (x.name, None if sample_weight is None else sample_weight.name, x.chunks)
    with _HERE_LOCK:
        if _HERE["key"] == key:
            return _HERE["chunks"]
    chunks = dask.compute(_row_blocks(x), _weight_blocks(x, sample_weight))
    with _HERE_LOCK:
        _HERE.update(key=key, chunks=chunks)
    return chunks


def _map_reduce_here(
    chunks: list[Any],
    chunk_weights: list[Any],
    offsets: list[int],
    kernel: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    shared: Any,
    split_every: int,
    on_chunk: Callable[[int], None] | None = None,
) -> Any:
    """``_map_reduce`` computed directly on the chunks: the same kernels and the same
    fixed tree as the graph, in the same order (so the same bits). A pass on data small
    enough to run synchronously is ~10 tasks, and building their graph (keys, tokens of
    the shared parameters) cost ~3 ms a pass, several times an iris-sized fit's arithmetic.
    ``on_chunk(i)`` is called after chunk ``i``'s kernel (progress)."""
    level = []
    for i, (block, w, offset) in enumerate(zip(chunks, chunk_weights, offsets)):
        level.append(_pinned(kernel, block, shared, w, chunk_index=i, row_offset=offset))
        if on_chunk is not None:
            on_chunk(i)
    while len(level) > 1:
        level = [combine(level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def stats_pass(
    x: da.Array,
    sources: tuple[ResponsibilitySource, ...],
    sample_weight: da.Array | None = None,
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    block_rows: int | None = None,
    check_finite: bool = False,
) -> tuple[Stats, ...]:
    """One pass over ``x``: statistics for every responsibility source.

    ``sources`` are the lockstep restarts' sources (``family.e_step(params)``,
    or the initialisation's), of one family or several (a selection sweep of
    Gaussian and low-rank candidates); each chunk is read once and serves all
    of them. ``check_finite`` (the first pass of a fit) finds invalid data
    (each family's ``check_block``) and bad sample weights, naming the chunk
    and the global row.
    """
    families = list(dict.fromkeys(family_of(s) for s in sources))
    if len(families) == 1:
        kernel: Callable[..., Any] = partial(families[0].chunk_stats, block_rows=block_rows)
    else:
        # Sources of several families (a selection sweep of Gaussian and low-rank
        # candidates): each family's kernel on the same chunk, one read for all.
        groups = tuple(
            (family, tuple(i for i, s in enumerate(sources) if family_of(s) is family)) for family in families
        )
        kernel = partial(_families_chunk_stats, groups, block_rows=block_rows)
    if check_finite:
        kernel = partial(_checked, kernel, partial(_check_all, tuple(f.check_block for f in families)))
    return _map_reduce(x, kernel, _merge_restarts, tuple(sources), sample_weight, split_every, "stats")


def map_chunks(
    x: da.Array,
    kernel: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    shared: Any = None,
    *,
    sample_weight: da.Array | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    check_finite: bool = False,
) -> Any:
    """Run ``kernel(block, shared, weights, chunk_index=, row_offset=)`` on every
    row chunk and reduce the results with ``combine`` in a fixed tree."""
    if check_finite:
        kernel = partial(_checked, kernel, require_finite_rows)
    return _map_reduce(x, kernel, combine, shared, sample_weight, split_every)


# -- prediction, lazily ------------------------------------------------------

def predict_block(x: Any, params: MixtureParams, what: PredictWhat) -> np.ndarray:
    """``what`` of one block's rows, from one E-step of the params' family."""
    with _one_blas_thread():
        log_norm, log_resp = family_of(params).log_prob_resp(x, params)
    if what == "labels":
        return log_resp.argmax(axis=1)
    if what == "proba":
        return np.exp(log_resp)
    if what == "log_resp":
        return log_resp
    return log_norm


def _predict_token(x: da.Array, params: MixtureParams, what: str | tuple[str, ...]) -> str:
    """Key prefix of a prediction: unique per data, parameters and output.

    A fixed ``name=`` would give two models' predictions of the same data the
    same keys, and computed together one would silently answer for both.
    """
    meta, arrays = family_of(params).to_arrays(params)
    return f"dgmm-{what if isinstance(what, str) else 'predict'}-" + tokenize(
        x.name, params.family, meta, arrays, what
    )


def lazy_predict(x: da.Array, params: MixtureParams, what: PredictWhat) -> da.Array:
    """A lazy array of labels, probabilities, log-responsibilities or log-densities."""
    handle = delayed(params, pure=True, traverse=False)
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    name = _predict_token(x, params, what)
    if what in ("labels", "score_samples"):
        dtype = np.int64 if what == "labels" else x.dtype
        return da.map_blocks(
            predict_block, x, handle, what, drop_axis=1, dtype=dtype, name=name,
            meta=np.empty((0,), dtype=dtype),
        )
    return da.map_blocks(
        predict_block, x, handle, what,
        chunks=(x.chunks[0], (params.n_components,)), dtype=x.dtype, name=name,
        meta=np.empty((0, 0), dtype=x.dtype),
    )


def _predict_record(x: Any, params: MixtureParams, outputs: tuple[PredictOutput, ...]) -> np.ndarray:
    """The requested outputs of one chunk side by side (n_rows, width), x's dtype: one E-step."""
    with _one_blas_thread():
        log_norm, log_resp = family_of(params).log_prob_resp(x, params)
    parts = {
        "labels": lambda: log_resp.argmax(axis=1)[:, None],
        "log_density": lambda: log_norm[:, None],
        "proba": lambda: np.exp(log_resp),
    }
    return np.concatenate([parts[o]().astype(x.dtype, copy=False) for o in outputs], axis=1)


def lazy_predict_many(
    x: da.Array, params: MixtureParams, outputs: Sequence[PredictOutput]
) -> dict[str, da.Array]:
    """Lazy ``labels`` / ``proba`` / ``log_density`` of ``x`` from one E-step per chunk.

    Returns one array per output, all with ``x``'s row chunks (labels int64).
    """
    outputs = tuple(outputs)
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    widths = [params.n_components if o == "proba" else 1 for o in outputs]
    record = x.map_blocks(
        _predict_record, delayed(params, pure=True, traverse=False), outputs,
        chunks=(x.chunks[0], (sum(widths),)), dtype=x.dtype,
        meta=np.empty((0, 0), dtype=x.dtype), name=_predict_token(x, params, outputs),
    )
    arrays: dict[str, da.Array] = {}
    start = 0
    for o, width in zip(outputs, widths):
        column = record[:, start] if o != "proba" else record[:, start : start + width]
        arrays[o] = column.astype(np.int64) if o == "labels" else column
        start += width
    return arrays


def scatter_rows(client: Any, rows: Any, row_chunks: tuple[int, ...]) -> da.Array:
    """In-memory ``rows`` (n_samples, ...) as a Dask array whose row chunks live on ``client``'s workers.

    ``rows`` is an ndarray, or a ``csr_matrix`` whose chunks are then CSR row
    ranges (the array's meta an empty CSR matrix), never densified.
    """
    from distributed import wait

    bounds = np.cumsum((0, *row_chunks))
    pieces = [rows[bounds[i] : bounds[i + 1]] for i in range(len(row_chunks))]
    # hash=False: fresh keys every time. With content-hashed keys, scattering
    # the same data again (a refit, GridSearchCV) can race the release of the
    # previous fit's identical keys and fail with "lost dependencies".
    futures = client.scatter(pieces, hash=False)
    blocks = [
        da.from_delayed(f, shape=p.shape, dtype=rows.dtype, meta=rows[:0])
        for f, p in zip(futures, pieces)
    ]
    # Persisting makes the array's graph hold futures of its own chunks; the
    # scattered futures alone would be released once this function returns.
    x = client.persist(da.concatenate(blocks, axis=0))
    wait(x)
    return x


# -- tasks run for their side effects (writing outputs) --------------------------------------

# Seconds to wait, after a write task failed, for the others still writing.
_DRAIN_TIMEOUT = 120.0


def run_tasks(out: da.Array, name: str) -> int:
    """Compute ``out`` (one int64 count per chunk, layer ``name``); returns the sum.

    Runs on the current client, else on a thread pool here. If a task fails,
    raises only once no task is running any more, so the caller can remove
    what they were writing for good (Dask's own schedulers raise at once and
    leave the others running).
    """
    client = current_client()
    if client is None:
        return _run_threads(out)
    return _run_distributed(client, out, name)


def _run_threads(out: da.Array) -> int:
    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        (counts,) = dask.compute(out, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return int(np.sum(counts))


def _run_distributed(client: Any, out: da.Array, name: str) -> int:
    from distributed import as_completed, futures_of

    persisted = client.persist(out)
    futures = futures_of(persisted)
    total = 0
    try:
        for future in as_completed(futures):
            if future.status != "finished":
                future.result()  # raises the task's exception with its traceback
            total += int(future.result()[0])
    except BaseException:
        client.cancel(futures)
        _drain(client, name)
        raise
    finally:
        del persisted, futures
    return total


def _executing(name: str, dask_worker: Any = None) -> int:
    """Tasks of layer ``name`` a worker's threads are still running."""
    state = dask_worker.state
    running = set(state.executing) | set(getattr(state, "long_running", ()))
    return sum(1 for ts in running if isinstance(ts.key, tuple) and ts.key[0] == name)


def _drain(client: Any, name: str) -> None:
    """Wait until no worker is running a task of layer ``name``."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            counts = client.run(_executing, name)
        except Exception:  # the cluster itself is failing: nothing more to wait for
            return
        if not any(counts.values()):
            return
        time.sleep(0.05)
