"""The EM loop: lockstep restarts, convergence, re-seeding, history.

Every iteration is one ``stats_pass``: one read of the data that serves all
live restarts of ``n_init``. The M-step runs here, on the client, on K*D^2
numbers. Following scikit-learn, the lower bound recorded at iteration t is
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

from . import _graph
from ._kernels import EStep, frame_shifts
from .checkpoint import Checkpoint, CheckpointState, compare_fingerprints
from .errors import (
    CheckpointMismatchError,
    DegenerateComponentError,
    FitInterrupted,
    LikelihoodDecreaseWarning,
    degenerate_message,
)
from .params import GMMParams, split_component
from .suffstats import SuffStats, m_step

__all__ = [
    "EMConfig",
    "InterruptFlag",
    "LoopCheckpoint",
    "RestartState",
    "best_restart",
    "em_update",
    "params_from_stats",
    "restart_from_record",
    "restart_record",
    "run_em",
    "stop_on_interrupt",
]

logger = logging.getLogger("dgmm")


@dataclass(frozen=True)
class EMConfig:
    """What the loop needs to know besides data and starting parameters."""

    covariance_type: str
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    on_degenerate: str = "reseed"
    split_every: int = _graph.DEFAULT_SPLIT_EVERY
    block_rows: int | None = None


@dataclass
class RestartState:
    """One restart of ``n_init`` as the lockstep loop advances it."""

    index: int
    params: GMMParams
    rng: np.random.Generator
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    reseeded_last: bool = False


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
    }


def restart_from_record(record: dict[str, Any], params: GMMParams) -> RestartState:
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


def decrease_tolerance(params: GMMParams, reg_covar: float, dtype: np.dtype, lower_bound: float) -> float:
    """How far the mean log-likelihood may drop without a bug.

    Rounding of the mean (relative to its size) plus the effect of adding
    ``reg_covar`` to the covariances, which makes the M-step not exactly EM:
    at most ``reg_covar * sum_k w_k tr(P_k)`` per sample.
    """
    rounding = max(1e-12, 100 * np.finfo(dtype).eps) * (1.0 + abs(lower_bound))
    traces = params.model.precision_traces(
        params.precisions_cholesky, params.n_components, params.n_features
    )
    return float(rounding + reg_covar * np.dot(params.weights, traces))


def em_update(
    params: GMMParams,
    stats: SuffStats,
    config: EMConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[dict[str, Any]]]:
    """One M-step after an E-step with ``params`` (see ``params_from_stats``)."""
    return params_from_stats(stats, frame_shifts(params, dtype), config, dtype, rng)


def params_from_stats(
    stats: SuffStats,
    shifts: np.ndarray,
    config: EMConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[dict[str, Any]]]:
    """The M-step, with collapsed components re-seeded or reported.

    A component is degenerate when its covariance is not positive definite,
    or has a variance within rounding of zero (collapsed onto identical rows
    with ``reg_covar=0``), or (re-seeding only) when it holds less than one
    average row's weight.
    With ``on_degenerate="reseed"`` each is replaced by a split of the
    heaviest component along its principal axis; the events are returned.
    """
    n_components = shifts.shape[0]
    result = m_step(stats, shifts, config.covariance_type, config.reg_covar, dtype=dtype)
    bad = set(result.bad.tolist())
    unresolved = set(result.unresolved.tolist())
    if config.on_degenerate == "raise":
        if bad or unresolved:
            raise DegenerateComponentError(
                degenerate_message(
                    sorted(bad | unresolved), dtype,
                    reason="not positive definite, or a variance within rounding of zero",
                )
            )
        return GMMParams(
            result.weights, result.means, result.covariances, result.precisions_cholesky,
            config.covariance_type,
        ), []

    if config.covariance_type == "tied" and bad:
        # One shared covariance: nothing to split from, re-seeding cannot help.
        raise DegenerateComponentError(
            degenerate_message(
                list(range(n_components)), dtype,
                reason="the shared (tied) covariance is not positive definite",
            )
        )
    floor = stats.weight / max(stats.n_rows, 1)
    collapsed = set(np.flatnonzero(stats.nk < floor).tolist())
    degenerate = sorted(bad | unresolved | collapsed)
    if len(degenerate) == n_components:
        raise DegenerateComponentError(
            degenerate_message(degenerate, dtype, reason="every component collapsed")
        )
    # Factor the healthy components; degenerate ones get a placeholder first.
    covariances = result.covariances.copy()
    weights = result.weights.copy()
    means = result.means.copy()
    healthy = [k for k in range(n_components) if k not in degenerate]
    for k in degenerate:
        donor = healthy[0]
        covariances[k] = covariances[donor]
        means[k] = means[donor]
        weights[k] = 0.0
    new = GMMParams.from_covariances(weights / weights.sum(), means, covariances, config.covariance_type)
    events = []
    for k in degenerate:
        donor = max(healthy, key=lambda j: new.weights[j])
        new = split_component(new, donor, k, rng)
        healthy.append(k)
        if k in bad:
            reason = "covariance not positive definite"
        elif k in unresolved:
            reason = "variance within rounding of zero (collapsed onto identical rows)"
        else:
            reason = f"weight collapsed (nk={stats.nk[k]:.3g})"
        events.append({"event": "reseed", "component": int(k), "split_from": int(donor), "reason": reason})
    return new, events


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
) -> list[RestartState]:
    """Advance every restart until it converges or ``max_iter`` passes are done.

    Restarts that converge leave the lockstep; the data is read once per
    iteration for all those still live. ``start_iteration`` continues
    restarts restored from a checkpoint written after that iteration;
    ``on_checkpoint(iteration, restarts)`` writes one after every iteration,
    after which a Ctrl-C noted in ``interrupt`` raises ``FitInterrupted``.
    """
    dtype = x.dtype
    live = [r for r in restarts if not r.converged]
    for iteration in range(start_iteration + 1, config.max_iter + 1):
        if not live:
            break
        start = time.perf_counter()
        stats = _graph.stats_pass(
            x,
            tuple(EStep(r.params) for r in live),
            sample_weight,
            split_every=config.split_every,
            block_rows=config.block_rows,
            check_finite=check_finite and iteration == 1,
        )
        seconds = time.perf_counter() - start
        still_live = []
        for r, s in zip(live, stats):
            lower_bound = s.mean_loglik
            change = lower_bound - r.lower_bound
            events: list[dict[str, Any]] = []
            tolerance = decrease_tolerance(r.params, config.reg_covar, dtype, lower_bound)
            if change < -tolerance and not r.reseeded_last:
                message = (
                    f"EM decreased the mean log-likelihood of restart {r.index} at "
                    f"iteration {iteration} by {-change:.3g} (from {r.lower_bound:.12g} "
                    f"to {lower_bound:.12g}), more than rounding ({tolerance:.3g}) explains. "
                    "This is a bug or the data changed between passes; please report it."
                )
                warnings.warn(message, LikelihoodDecreaseWarning, stacklevel=2)
                events.append({"event": "likelihood_decrease", "amount": float(-change)})
            r.params, reseeds = em_update(r.params, s, config, dtype, r.rng)
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
                    "events": events,
                }
            )
            for e in reseeds:
                logger.info(
                    "restart %d iteration %d: re-seeded component %d from %d (%s)",
                    r.index, iteration, e["component"], e["split_from"], e["reason"],
                )
            # A re-seed changes the model: it can lower the likelihood and must
            # not count as convergence.
            r.reseeded_last = bool(reseeds)
            if abs(change) < config.tol and not reseeds:
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


def best_restart(restarts: list[RestartState]) -> RestartState:
    """The restart with the largest final lower bound (the first among ties)."""
    best = restarts[0]
    for r in restarts[1:]:
        if r.lower_bound > best.lower_bound:
            best = r
    return best
