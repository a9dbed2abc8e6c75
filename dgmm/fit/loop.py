"""The EM loop: lockstep restarts, convergence, re-seeding, history.

Every iteration is one ``stats_pass``: one read of the data that serves all
live restarts of ``n_init``. The M-step runs here, on the client, on the
small statistics. The loop knows no model: the E-step source, the M-step
with its re-seed events, and the likelihood-decrease tolerance come from the
parameters' family (:mod:`dgmm.core.family`). Following scikit-learn, the lower bound recorded at iteration t is
the mean log-likelihood of the parameters that *entered* the E-step of t,
and convergence is ``|change| < tol`` on that mean (N-invariant).

With a checkpoint, the whole loop state is written after every iteration
(``on_checkpoint``), and ``run_em`` can continue from a written state
(``start_iteration``): the restarts' parameters, RNG states, lower bounds,
history and flags are restored exactly, so the continued fit makes the same
floating-point operations in the same order as an uninterrupted one.
Ctrl-C during a checkpointed fit (``stop_on_interrupt``) stops after the
current iteration's checkpoint is written.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from dgmm import graph as _graph
from dgmm.core.family import REASON_TEXT, DecreaseEvent, Event, MixtureParams, family_of
from dgmm.errors import (
    CheckpointMismatchError,
    DegenerateComponentError,
    FitInterrupted,
    LikelihoodDecreaseWarning,
)
from dgmm.fit.spec import EMConfig
from dgmm.io.checkpoint import Checkpoint, CheckpointState, compare_fingerprints

__all__ = [
    "EMConfig",
    "InterruptFlag",
    "LoopCheckpoint",
    "RestartState",
    "best_restart",
    "chain_iterations",
    "restart_from_record",
    "restart_record",
    "run_em",
    "stop_on_interrupt",
]

logger = logging.getLogger("dgmm")


@dataclass
class RestartState:
    """One restart of ``n_init`` as the lockstep loop advances it.

    ``config`` (a sweep's candidate, :mod:`dgmm.fit.select`) replaces the
    loop's ``EMConfig`` in this restart's M-step and convergence test, so
    restarts of different covariance types share the passes. ``error`` is
    set when the restart failed (``isolate_errors``); it then left the lockstep.
    """

    index: int
    params: MixtureParams
    rng: np.random.Generator
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    reseeded_last: bool = False
    config: EMConfig | None = None
    error: str | None = None


def restart_record(r: RestartState) -> dict[str, Any]:
    """The JSON-able loop state of a restart (everything but its parameters)."""
    return {
        "index": r.index,
        "rng": r.rng.bit_generator.state,
        "lower_bound": float(r.lower_bound),
        "lower_bounds": [float(v) for v in r.lower_bounds],
        "history": r.history,
        "converged": bool(r.converged),
        "n_iter": int(r.n_iter),
        "reseeded_last": bool(r.reseeded_last),
        # Only a failed sweep candidate has one: other checkpoints stay as they were.
        **({"error": r.error} if r.error is not None else {}),
    }


def restart_from_record(record: dict[str, Any], params: MixtureParams) -> RestartState:
    """The restart ``restart_record`` described, with its RNG exactly where it was."""
    state = record["rng"]
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return RestartState(
        index=int(record["index"]),
        params=params,
        rng=rng,
        lower_bound=float(record["lower_bound"]),
        lower_bounds=[float(v) for v in record["lower_bounds"]],
        history=list(record["history"]),
        converged=bool(record["converged"]),
        n_iter=int(record["n_iter"]),
        reseeded_last=bool(record["reseeded_last"]),
        error=record.get("error"),
    )


class LoopCheckpoint:
    """The loop state of one fit, saved to and resumed from a ``Checkpoint``.

    Parameters
    ----------
    store : Checkpoint
    fingerprint : dict
        ``{"data": ..., "config": ...}`` of this fit; a stored state is
        resumed only when its fingerprint is equal.
    seed : int
        This fit's seed; replaced by the stored one on resume.
    info : dict
        Recorded, not compared (``max_iter``).
    """

    def __init__(self, store: Checkpoint, fingerprint: dict[str, Any], seed: int, info: dict[str, Any]) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.seed = seed
        self.info = info

    @property
    def url(self) -> str:
        return self.store.url

    def save(self, iteration: int, restarts: list[RestartState]) -> None:
        """Write the state after ``iteration`` (0: after initialisation)."""
        self.store.write(
            CheckpointState(
                iteration=iteration,
                seed=self.seed,
                fingerprint=self.fingerprint,
                restarts=[restart_record(r) for r in restarts],
                params=[r.params for r in restarts],
                info=self.info,
            )
        )

    def load(self, max_iter: int) -> tuple[int, list[RestartState]] | None:
        """``(iteration, restarts)`` of the stored state, or None when there is none.

        A larger ``max_iter`` than the checkpoint's continues the restarts
        that had not converged, exactly as an uninterrupted fit with that
        ``max_iter`` would; a ``max_iter`` below the iterations already done
        cannot be honoured and raises ``CheckpointMismatchError``.
        """
        state = self.store.read()
        if state is None:
            return None
        compare_fingerprints(state.fingerprint, self.fingerprint, self.url)
        if state.iteration > max_iter:
            raise CheckpointMismatchError(
                f"The checkpoint at {self.url!r} has done {state.iteration} EM iterations, "
                f"more than this fit's max_iter={max_iter}. Pass max_iter >= "
                f"{state.iteration} to resume it, or start over by deleting that "
                "checkpoint or passing another checkpoint= path."
            )
        self.seed = state.seed
        restarts = [restart_from_record(rec, p) for rec, p in zip(state.restarts, state.params)]
        if state.iteration >= max_iter or all(r.converged for r in restarts):
            logger.info(
                "checkpoint %s: the fit finished after iteration %d (%s); returning its "
                "model without passes over the data",
                self.url, state.iteration,
                "converged" if all(r.converged for r in restarts) else f"max_iter={max_iter}",
            )
        else:
            logger.info(
                "checkpoint %s: resuming after iteration %d%s",
                self.url, state.iteration, " (initialisation)" if state.iteration == 0 else "",
            )
        return state.iteration, restarts


class InterruptFlag:
    """Set by the first Ctrl-C of a checkpointed fit; checked after each checkpoint."""

    def __init__(self) -> None:
        self.requested = False

    def check(self, iteration: int, checkpoint: str) -> None:
        """Raise ``FitInterrupted`` if Ctrl-C was pressed (the checkpoint is written)."""
        if not self.requested:
            return
        done = "initialisation" if iteration == 0 else f"iteration {iteration}"
        raise FitInterrupted(
            f"Fit interrupted (Ctrl-C) after {done}; the checkpoint at {checkpoint!r} "
            f"holds everything up to it. To resume from {done}, run the same fit "
            f"again with checkpoint={checkpoint!r} (the same command): it continues "
            "where it stopped and gives the same result as an uninterrupted fit."
        )


class stop_on_interrupt:
    """Context manager: the first SIGINT asks to stop after the next checkpoint.

    Only in the main thread (where Python delivers signals) and only when
    ``enabled``; the previous handler is restored on exit. A second Ctrl-C
    interrupts at once, as it would without a checkpoint.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.flag = InterruptFlag()
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag.requested:
            self._restore()
            raise KeyboardInterrupt
        self.flag.requested = True
        logger.warning(
            "Ctrl-C: stopping after this iteration's checkpoint is written "
            "(press Ctrl-C again to stop at once, losing the iteration in progress)"
        )

    def _restore(self) -> None:
        if self._installed:
            previous = self._previous
            # None: a handler not installed from Python; the default is the best guess.
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            self._installed = False

    def __enter__(self) -> InterruptFlag:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self.flag

    def __exit__(self, *exc: object) -> None:
        self._restore()


#: ``on_iteration(iteration, restarts)``: called after every pass.
IterationCallback = Callable[[int, list[RestartState]], None]


def chain_iterations(*callbacks: IterationCallback | None) -> IterationCallback | None:
    """One ``on_iteration(iteration, restarts)`` calling every non-None callback in order (None if none)."""
    live = [c for c in callbacks if c is not None]
    if not live:
        return None

    def call(iteration: int, restarts: list[RestartState]) -> None:
        for callback in live:
            callback(iteration, restarts)

    return call


def run_em(
    x: da.Array,
    restarts: list[RestartState],
    config: EMConfig,
    *,
    sample_weight: da.Array | None = None,
    check_finite: bool = True,
    on_iteration: Callable[[int, list[RestartState]], None] | None = None,
    start_iteration: int = 0,
    on_checkpoint: Callable[[int, list[RestartState]], None] | None = None,
    interrupt: InterruptFlag | None = None,
    checkpoint_url: str = "",
    isolate_errors: bool = False,
) -> list[RestartState]:
    """Advance every restart until it converges or ``max_iter`` passes are done.

    Restarts that converge leave the lockstep; the data is read once per
    iteration for all those still live. ``start_iteration`` continues
    restarts restored from a checkpoint written after that iteration;
    ``on_checkpoint(iteration, restarts)`` writes one after every iteration,
    after which a Ctrl-C noted in ``interrupt`` raises ``FitInterrupted``.
    With ``isolate_errors`` (a sweep), a restart whose M-step raises
    ``DegenerateComponentError`` records it in ``error`` and leaves; the others go on.
    """
    dtype = x.dtype
    live = [r for r in restarts if not r.converged and r.error is None]
    for iteration in range(start_iteration + 1, config.max_iter + 1):
        # A callback may have stopped restarts (a sweep's failed or pruned candidates).
        live = [r for r in live if r.error is None]
        if not live:
            break
        start = time.perf_counter()
        with _graph.phase("EM iteration", iteration, config.max_iter):
            stats = _graph.stats_pass(
                x,
                tuple(family_of(r.params).e_step(r.params) for r in live),
                sample_weight,
                split_every=config.split_every,
                block_rows=config.block_rows,
                check_finite=check_finite and iteration == 1,
            )
        seconds = time.perf_counter() - start
        read = _pass_read(x, seconds)
        still_live = []
        for r, s in zip(live, stats):
            family = family_of(r.params)
            own = config if r.config is None else r.config
            lower_bound = s.mean_loglik
            change = lower_bound - r.lower_bound
            events: list[Event] = []
            tolerance = family.decrease_tolerance(r.params, own, dtype, lower_bound)
            if change < -tolerance and not r.reseeded_last:
                message = (
                    f"EM decreased the mean log-likelihood of restart {r.index} at "
                    f"iteration {iteration} by {-change:.3g} (from {r.lower_bound:.12g} "
                    f"to {lower_bound:.12g}), more than rounding ({tolerance:.3g}) explains. "
                    "This is a bug or the data changed between passes; please report it."
                )
                warnings.warn(message, LikelihoodDecreaseWarning, stacklevel=2)
                decrease: DecreaseEvent = {"event": "likelihood_decrease", "amount": float(-change)}
                events.append(decrease)
            try:
                r.params, reseeds = family.m_step(s, r.params, own, dtype, r.rng)
            except DegenerateComponentError as exc:
                if not isolate_errors:
                    raise
                r.error, r.n_iter = f"{type(exc).__name__}: {exc}", iteration
                continue
            events.extend(reseeds)
            r.lower_bound = lower_bound
            r.lower_bounds.append(lower_bound)
            r.n_iter = iteration
            r.history.append(
                {
                    "iteration": iteration,
                    "lower_bound": lower_bound,
                    "change": change,
                    "seconds": seconds,
                    **read,
                    "events": events,
                }
            )
            for e in reseeds:
                logger.info(
                    "restart %d iteration %d: re-seeded component %d from %d (%s)",
                    r.index, iteration, e["component"], e["split_from"], REASON_TEXT[e["reason"]],
                )
            # A re-seed changes the model: it can lower the likelihood and must
            # not count as convergence.
            r.reseeded_last = bool(reseeds)
            if abs(change) < own.tol and not reseeds:
                r.converged = True
            else:
                still_live.append(r)
            logger.info(
                "restart %d iteration %d: mean log-likelihood %.10g, change %.3g, %.2fs",
                r.index, iteration, lower_bound, change, seconds,
            )
        live = still_live
        if on_checkpoint is not None:
            on_checkpoint(iteration, restarts)
        if on_iteration is not None:
            on_iteration(iteration, restarts)
        if interrupt is not None:
            interrupt.check(iteration, checkpoint_url)
    return restarts


def _pass_read(x: da.Array, seconds: float) -> dict[str, float]:
    """What one pass over ``x`` read, and how fast: a ``history_`` entry's throughput.

    Bytes are the rows' as the array declares them (n_rows * n_features * itemsize).
    """
    rows, nbytes = int(x.shape[0]), int(x.nbytes)
    seconds = max(seconds, 1e-9)
    return {
        "rows": rows, "bytes": nbytes,
        "rows_per_second": rows / seconds, "gb_per_second": nbytes / 1e9 / seconds,
    }


def best_restart(restarts: list[RestartState]) -> RestartState:
    """The restart with the largest final lower bound (the first among ties)."""
    best = restarts[0]
    for r in restarts[1:]:
        if r.lower_bound > best.lower_bound:
            best = r
    return best
